"""OpenTelemetry traces as a collector sees them: W3C traceparent accepted (and refused when
malformed), a child traceparent on every upstream attempt, the server span and one client span
per attempt with GenAI attributes, parent/child ids across a retry and a gather, sampling, no
prompt text unless capture_content, and a dead collector that does not slow requests."""
import json
import time

from harness import Case, chat_body, free_port
from otlp_receiver import OtlpReceiver

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def tracing(port, **opts):
    lines = ["tracing:", "  endpoint: http://127.0.0.1:%d" % port,
             "  headers: {Authorization: Bearer collector-token}",
             "  batch_delay: 50ms", "  service_name: gw-test"]
    lines += ["  %s: %s" % kv for kv in opts.items()]
    return "\n".join(lines) + "\n"


class TracingCase(Case):
    opts = {}

    @classmethod
    def setUpClass(cls):
        cls.rx = OtlpReceiver()
        cls.extra = tracing(cls.rx.port, **cls.opts)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.rx.stop()

    def setUp(self):
        super().setUp()
        self.rx.clear()

    def spans_of(self, trace_id, n, timeout=5.0):
        spans = self.rx.wait_spans(
            lambda s: len([x for x in s if x["traceId"] == trace_id]) >= n, timeout)
        return [x for x in spans if x["traceId"] == trace_id]


class TracingTest(TracingCase):
    def test_client_trace_continues_upstream(self):
        tp = "00-%s-%s-01" % (TRACE, PARENT)
        st, h, body = self.d.chat("hi", headers={"traceparent": tp, "tracestate": "k=v"},
                                  max_tokens=33)
        self.assertEqual(st, 200)
        sent = self.mock.last()["headers"]["traceparent"]
        version, trace_id, span_id, flags = sent.split("-")
        self.assertEqual((version, trace_id, flags), ("00", TRACE, "01"))
        self.assertEqual(self.mock.last()["headers"]["tracestate"], "k=v")
        spans = self.spans_of(TRACE, 2)
        server = [s for s in spans if s["kind"] == 2]
        client = [s for s in spans if s["kind"] == 3]
        self.assertEqual(len(server), 1)
        self.assertEqual(len(client), 1)
        self.assertEqual(server[0]["parentSpanId"], PARENT)
        self.assertEqual(client[0]["parentSpanId"], server[0]["spanId"])
        self.assertEqual(client[0]["spanId"], span_id)
        self.assertEqual(server[0]["service"], "gw-test")
        self.assertEqual(server[0]["traceState"], "k=v")
        a = client[0]["attrs"]
        self.assertEqual(a["gen_ai.system"], "openai")
        self.assertEqual(a["gen_ai.operation.name"], "chat")
        self.assertEqual(a["gen_ai.request.model"], "mock-gpt")
        self.assertEqual(a["gen_ai.response.model"], "mock-gpt")
        self.assertEqual(a["gen_ai.request.max_tokens"], "33")
        self.assertEqual(a["gen_ai.usage.input_tokens"], str(body["usage"]["prompt_tokens"]))
        self.assertEqual(a["gen_ai.usage.output_tokens"], "7")
        self.assertEqual(a["llmux.upstream"], "mock")
        self.assertNotIn("gen_ai.prompt", a)            # no content unless asked
        s = server[0]["attrs"]
        self.assertEqual(s["http.route"], "/v1/chat/completions")
        self.assertEqual(s["http.response.status_code"], "200")
        self.assertEqual(s["llmux.model"], "m")
        self.assertEqual(s["llmux.outcome"], "completed")
        self.assertLessEqual(int(server[0]["startTimeUnixNano"]),
                             int(client[0]["startTimeUnixNano"]))
        self.assertEqual(self.rx.posts[0]["headers"]["authorization"], "Bearer collector-token")
        self.assertEqual(self.rx.posts[0]["path"], "/v1/traces")

    def test_invalid_traceparent_starts_a_new_trace(self):
        for bad in ("00-%s-%s-01" % (TRACE.upper(), PARENT),        # upper-case hex
                    "00-%s-%s-01" % ("0" * 32, PARENT),             # all-zero trace id
                    "00-%s-%s-01" % (TRACE, "0" * 16),              # all-zero parent
                    "ff-%s-%s-01" % (TRACE, PARENT),                # version ff
                    "00-%s-%s-01-x" % (TRACE, PARENT),              # 00 with extra fields
                    "00-%s-%s-1" % (TRACE, PARENT)):                # short flags
            st, _, _ = self.d.chat("x", headers={"traceparent": bad, "tracestate": "a=b"})
            self.assertEqual(st, 200)
            sent = self.mock.last()["headers"]
            self.assertNotIn(TRACE, sent["traceparent"], bad)
            self.assertNotIn("tracestate", sent, bad)

    def test_max_tokens_from_the_top_level_only(self):
        """The token cap is the body's own member, not a same-named key nested in a tool's
        schema or quoted in a message; with several caps, the largest (what a budget reserves
        by), and a cap given twice is refused before any span."""
        cases = [("3" * 32, {"max_tokens": 9, "tools": [{"type": "function", "function": {
                     "name": "f", "parameters": {"max_tokens": 5}}}]}, "9"),
                 ("4" * 32, {"metadata": {"max_tokens": 5}}, None),
                 ("5" * 32, {"max_tokens": 40, "max_completion_tokens": 12}, "40")]
        for trace_id, extra, want in cases:
            st, _, _ = self.d.chat('say "max_tokens": 7 \\ "', headers={
                "traceparent": "00-%s-%s-01" % (trace_id, PARENT)}, **extra)
            self.assertEqual(st, 200)
            client = [s for s in self.spans_of(trace_id, 2) if s["kind"] == 3][0]
            self.assertEqual(client["attrs"].get("gen_ai.request.max_tokens"), want, extra)
        st, _, data = self.d.request(
            "POST", "/v1/chat/completions",
            b'{"model":"m","messages":[],"max_tokens":1,"max_tokens":900}')
        self.assertEqual((st, json.loads(data)["error"]["code"]), (400, "duplicate_member"))

    def test_later_version_accepted(self):
        st, _, _ = self.d.chat("x", headers={"traceparent": "01-%s-%s-01-extra" % (TRACE, PARENT)})
        self.assertEqual(st, 200)
        self.assertIn(TRACE, self.mock.last()["headers"]["traceparent"])

    def test_new_trace_when_absent(self):
        st, _, _ = self.d.chat("x")
        tp = self.mock.last()["headers"]["traceparent"]
        trace_id = tp.split("-")[1]
        spans = self.spans_of(trace_id, 2)
        server = [s for s in spans if s["kind"] == 2][0]
        self.assertNotIn("parentSpanId", server)

    def test_each_retry_its_own_span(self):
        tp = "00-%s-%s-01" % ("1" * 32, PARENT)
        st, _, _ = self.d.chat("r @mock:fail_first=1,id=trace-retry", model="m-retry",
                               headers={"traceparent": tp})
        self.assertEqual(st, 200)
        spans = self.spans_of("1" * 32, 3)
        server = [s for s in spans if s["kind"] == 2][0]
        attempts = sorted([s for s in spans if s["kind"] == 3],
                          key=lambda s: int(s["attrs"]["llmux.attempt"]))
        self.assertEqual(len(attempts), 2)
        self.assertEqual({a["parentSpanId"] for a in attempts}, {server["spanId"]})
        self.assertNotEqual(attempts[0]["spanId"], attempts[1]["spanId"])
        self.assertEqual(attempts[0]["attrs"]["error.type"], "503")
        self.assertEqual(attempts[0]["status"]["code"], 2)
        self.assertNotIn("error.type", attempts[1]["attrs"])
        sent = self.mock.last()["headers"]["traceparent"]
        self.assertEqual(sent.split("-")[2], attempts[1]["spanId"])

    def test_gather_items_under_the_gather(self):
        tp = "00-%s-%s-01" % ("2" * 32, PARENT)
        body = {"requests": [chat_body("a"), chat_body("b", model="claude")]}
        st, _, _ = self.d.request("POST", "/v1/gather", body, {"traceparent": tp})
        self.assertEqual(st, 200)
        spans = self.spans_of("2" * 32, 5)
        gather = [s for s in spans if s["kind"] == 2]
        items = [s for s in spans if s["kind"] == 1]
        calls = [s for s in spans if s["kind"] == 3]
        self.assertEqual(len(gather), 1)
        self.assertEqual(len(items), 2)
        self.assertEqual(len(calls), 2)
        self.assertEqual({i["parentSpanId"] for i in items}, {gather[0]["spanId"]})
        self.assertEqual({c["parentSpanId"] for c in calls}, {i["spanId"] for i in items})
        self.assertEqual(sorted(c["attrs"]["gen_ai.system"] for c in calls),
                         ["anthropic", "openai"])

    def test_deadline_is_an_event(self):
        tp = "00-%s-%s-01" % ("3" * 32, PARENT)
        st, _, _ = self.d.chat("slow @mock:delay=2000", headers={"traceparent": tp,
                                                                 "X-Llmux-Timeout-Ms": "100"})
        self.assertEqual(st, 504)
        spans = self.spans_of("3" * 32, 2)
        call = [s for s in spans if s["kind"] == 3][0]
        server = [s for s in spans if s["kind"] == 2][0]
        self.assertEqual([e["name"] for e in call["events"]], ["deadline_exceeded"])
        self.assertEqual([e["name"] for e in server["events"]], ["deadline_exceeded"])
        self.assertEqual(server["status"]["code"], 2)

    def test_exporter_metrics(self):
        self.d.chat("m")
        self.rx.wait_spans(lambda s: len(s) >= 2)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            m = self.d.metrics()
            if m.get("llmux_trace_spans_exported_total", 0) >= 2:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(m["llmux_trace_spans_exported_total"], 2)
        self.assertEqual(m['llmux_trace_spans_dropped_total{reason="queue_full"}'], 0)


class SamplingTest(TracingCase):
    opts = {"sample_ratio": "0"}

    def test_unsampled_roots_propagate_but_are_not_exported(self):
        for _ in range(5):
            self.assertEqual(self.d.chat("x")[0], 200)
            self.assertTrue(self.mock.last()["headers"]["traceparent"].endswith("-00"))
        # the parent's decision wins over the ratio
        tp = "00-%s-%s-01" % ("4" * 32, PARENT)
        self.assertEqual(self.d.chat("y", headers={"traceparent": tp})[0], 200)
        spans = self.spans_of("4" * 32, 2)
        self.assertEqual(len(spans), 2)
        time.sleep(0.2)
        self.assertEqual({s["traceId"] for s in self.rx.spans()}, {"4" * 32})


class CaptureContentTest(TracingCase):
    opts = {"capture_content": "true"}

    def test_prompt_and_answer_in_span(self):
        tp = "00-%s-%s-01" % ("5" * 32, PARENT)
        self.assertEqual(self.d.chat("secret-words", headers={"traceparent": tp})[0], 200)
        call = [s for s in self.spans_of("5" * 32, 2) if s["kind"] == 3][0]
        self.assertIn("secret-words", call["attrs"]["gen_ai.prompt"])
        self.assertIn("echo: secret-words", call["attrs"]["gen_ai.completion"])

    def test_upstream_error_body_not_exported(self):
        # an upstream's error body may reflect its secrets: the span keeps the prompt only
        tp = "00-%s-%s-01" % ("6" * 32, PARENT)
        st = self.d.chat("boom @mock:status=400", headers={"traceparent": tp})[0]
        self.assertEqual(st, 400)
        call = [s for s in self.spans_of("6" * 32, 2) if s["kind"] == 3][0]
        self.assertIn("boom", call["attrs"]["gen_ai.prompt"])
        self.assertNotIn("gen_ai.completion", call["attrs"])


class DeadCollectorTest(Case):
    """Nothing listens at the endpoint: requests are served as fast as ever."""

    @classmethod
    def setUpClass(cls):
        cls.extra = tracing(free_port()).replace("batch_delay: 50ms", "batch_delay: 10ms") + \
            "  queue_size: 16\n  batch_size: 4\n"
        super().setUpClass()

    def test_requests_unaffected(self):
        t0 = time.monotonic()
        for i in range(60):
            self.assertEqual(self.d.chat("x%d" % i)[0], 200)
        self.assertLess(time.monotonic() - t0, 30)      # generous: behaviour, not speed
        end = time.monotonic() + 10
        while time.monotonic() < end:
            m = self.d.metrics()
            full = m['llmux_trace_spans_dropped_total{reason="queue_full"}']
            failed = m['llmux_trace_spans_dropped_total{reason="export_failed"}']
            if full > 0 and failed > 0:
                break
            time.sleep(0.05)
        # 120 spans against a queue of 16 drained 4 per 3.5 s of retries: most are dropped
        self.assertGreater(full, 0)
        self.assertGreater(failed, 0)
        self.assertEqual(m["llmux_trace_spans_exported_total"], 0)
        self.assertTrue(self.d.wait_log("tracing: cannot export spans", timeout=15))
