"""Issue 17: memory bounded by the configuration whatever clients and upstreams send, and
nothing of an upstream's secrets relayed. Memory cases read the daemon's peak RSS (VmHWM)
from /proc and hold it against the budget; each runs on a fresh daemon. Under ASan (a build
directory named *asan*) the peak RSS bounds are not checked — its quarantine keeps freed
memory resident — but every behaviour still is."""
import http.client
import json
import os
import socket
import threading
import time
import unittest

import harness
from harness import Daemon, Mock

SANITIZED = "asan" in harness.BUILD

CONF = """
listen: ["127.0.0.1:{port}"]
workers: 1
limits:
  header_timeout: {header_timeout}
  max_body_bytes: 16m
  max_inflight: 64
{limits}
gather:
  max_items: 1000
  max_concurrency: 64
{gather}
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
    api_key: sk-upstream-secret-123
    headers: {"X-Org-Token": "tok-org-secret-789"}
  - name: small
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
    max_response_bytes: 1m
  - name: claude
    provider: anthropic
    base_url: http://127.0.0.1:%(mock)d
    api_key: sk-ant-secret-456
models:
  - name: m
    retries: 0
    targets: [{upstream: mock, model: mock-gpt}]
  - name: small
    retries: 0
    targets: [{upstream: small}]
  - name: claude
    retries: 0
    targets: [{upstream: claude, model: claude-test}]
log:
  level: info
  format: json
"""
SECRETS = ("sk-upstream-secret-123", "tok-org-secret-789", "sk-ant-secret-456")
MB = 1 << 20


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def tiny_objects(model, mib=8, note=""):
    head = '{"model":"%s","messages":[{"role":"user","content":"hi %s"},' % (model, note)
    return (head + ",".join(["{}"] * ((mib * MB) // 3)) + "]}").encode()


def post(d, path, body, timeout=60):
    c = d.conn(timeout)
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    try:
        data = r.read()
    except http.client.IncompleteRead as e:     # a stream cut short on purpose after an error
        data = e.partial
    c.close()
    return r.status, data


def post_all(d, body, n, path="/v1/chat/completions"):
    """Starts n identical requests at once; returns (threads, statuses list filled as they end)."""
    out = []
    ts = [threading.Thread(target=lambda: out.append(post(d, path, body)[0])) for _ in range(n)]
    for t in ts:
        t.start()
    return ts, out


class HostileCase(unittest.TestCase):
    """A fresh daemon per test (peak RSS is per process)."""
    limits = ""
    gather = ""
    header_timeout = "10s"

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()

    def setUp(self):
        text = (CONF.replace("{limits}", self.limits).replace("{gather}", self.gather)
                .replace("{header_timeout}", self.header_timeout)) % {"mock": self.mock.port}
        self.mock.reset()
        self.d = Daemon(None, text=text)
        self.addCleanup(self.d.stop)
        time.sleep(0.2)
        self.base_kb = hwm_kb(self.d.proc.pid)

    def peak_over_base(self):
        return (hwm_kb(self.d.proc.pid) - self.base_kb) * 1024

    def assert_peak_over_base(self, bound):
        if not SANITIZED:
            self.assertLessEqual(self.peak_over_base(), bound)

    def assert_no_secret(self, data):
        text = data.decode() if isinstance(data, bytes) else data
        for s in SECRETS:
            self.assertNotIn(s, text)


class BodyBudgetTest(HostileCase):
    def test_tiny_objects_body_stays_within_4x(self):
        body = tiny_objects("m")
        st, data = post(self.d, "/v1/chat/completions", body)
        self.assertEqual(st, 200, data[:300])
        self.assert_peak_over_base(4 * len(body) + 8 * MB)
        sent = self.mock.last()["body"]
        self.assertEqual(len(sent), len(body) - 1 + len("mock-gpt"))   # "m" → "mock-gpt"

    def test_six_at_once_under_200_mb(self):
        ts, out = post_all(self.d, tiny_objects("m", note="@mock:delay=1500"), 6)
        for t in ts:
            t.join(60)
        self.assertEqual(out, [200] * 6)
        if not SANITIZED:
            self.assertLessEqual(hwm_kb(self.d.proc.pid) * 1024, 200 * MB)

    def test_translation_refuses_a_tree_over_budget(self):
        body = tiny_objects("claude", mib=2)
        st, data = post(self.d, "/v1/chat/completions", body)
        self.assertEqual(st, 413, data[:300])
        self.assertEqual(json.loads(data)["error"]["code"], "body_too_complex")
        self.assert_peak_over_base(4 * len(body) + 8 * MB)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_duplicate_model_is_refused(self):
        for body in ('{"model":"m","model":"claude","messages":[]}',
                     '{"model":"m","mo\\u0064el":"claude","messages":[]}'):
            st, data = post(self.d, "/v1/chat/completions", body)
            self.assertEqual(st, 400, body)
            err = json.loads(data)["error"]
            self.assertEqual((err["code"], err["param"]), ("duplicate_member", "model"))

    def test_escaped_model_name_is_read_and_replaced(self):
        st, data = post(self.d, "/v1/chat/completions",
                        '{"mo\\u0064el":"m","messages":[{"role":"user","content":"hi"}]}')
        self.assertEqual(st, 200, data)
        self.assertEqual(json.loads(self.mock.last()["body"])["model"], "mock-gpt")

    def test_strict_json_and_depth(self):
        for body in ('{"model":"m","messages":[}', '{"model":"m","messages":[01]}',
                     '{"model":"m","messages":[' + "[" * 200 + "]" * 200 + "]}"):
            st, data = post(self.d, "/v1/chat/completions", body)
            self.assertEqual(st, 400, body[:60])
            self.assertEqual(json.loads(data)["error"]["code"], "invalid_json")


class UpstreamCapTest(HostileCase):
    def test_streamed_error_body_is_not_buffered(self):
        body = json.dumps({"model": "m", "stream": True, "messages": [
            {"role": "user", "content": "x @mock:status=500,bytes=40000000"}]})
        st, data = post(self.d, "/v1/chat/completions", body)
        self.assertEqual(st, 502)
        self.assertEqual(json.loads(data)["error"]["code"], "upstream_status")
        self.assert_peak_over_base(12 * MB)

    def error_of(self, directive):
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": directive}]}))
        self.assertEqual(st, 400)
        err = json.loads(data)["error"]
        self.assertEqual(sorted(err), ["code", "message", "param", "type"])
        return err

    def test_4xx_error_is_reencoded_with_its_message_cut(self):
        err = self.error_of("@mock:status=400,bytes=5000")
        self.assertEqual(len(err["message"]), 1001)
        self.assertTrue(err["message"].endswith("\u2026"))
        self.assertEqual(err["type"], "invalid_request_error")

    def test_huge_4xx_error_is_read_to_64k_only(self):
        err = self.error_of("@mock:status=400,bytes=30000000")
        self.assertEqual(err["message"], "upstream returned status 400")
        self.assert_peak_over_base(8 * MB)

    def test_too_large_says_so(self):
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "small", "messages": [{"role": "user", "content": "@mock:bytes=2000000"}]}))
        self.assertEqual(st, 502)
        err = json.loads(data)["error"]
        self.assertEqual(err["code"], "upstream_response_too_large")
        self.assertIn("exceeded max_response_bytes (1 MiB)", err["message"])

    def test_stream_too_large_ends_with_an_error_event(self):
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "small", "stream": True, "messages": [
                {"role": "user", "content": "@mock:bytes=300000,stream=10"}]}))
        self.assertEqual(st, 200)
        last = [l for l in data.decode().split("\n") if l.startswith("data: ")][-1]
        self.assertEqual(json.loads(last[6:])["error"]["code"], "upstream_response_too_large")


class InvalidAnswerTest(HostileCase):
    def test_invalid_json_answer_is_502(self):
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "@mock:invalid"}]}))
        self.assertEqual(st, 502)
        self.assertEqual(json.loads(data)["error"]["code"], "upstream_invalid_response")

    def test_invalid_answer_in_gather_keeps_the_document_valid(self):
        items = [{"model": "m", "messages": [{"role": "user", "content": c}]}
                 for c in ("ok", "@mock:invalid", "ok too")]
        st, data = post(self.d, "/v1/gather", json.dumps({"requests": items}))
        self.assertEqual(st, 200)
        doc = json.loads(data)
        self.assertEqual([r["status"] for r in doc["results"]], [200, 502, 200])
        self.assertEqual(doc["results"][1]["error"]["code"], "upstream_invalid_response")


class SecretTest(HostileCase):
    def chat(self, model, content, stream=False):
        return post(self.d, "/v1/chat/completions", json.dumps(
            {"model": model, "stream": stream,
             "messages": [{"role": "user", "content": content}]}))

    def test_echoed_headers_are_redacted(self):
        for model in ("m", "claude"):
            for status in (400, 429, 404):
                st, data = self.chat(model, "@mock:status=%d,echo_head" % status)
                self.assertEqual(st, status, data)
                self.assert_no_secret(data)
                self.assertIn("[redacted]", json.loads(data)["error"]["message"])
        self.assert_no_secret(self.d.logs())

    def test_stream_request_error_redacted(self):
        st, data = self.chat("m", "@mock:status=400,echo_head", stream=True)
        self.assertEqual(st, 400)
        self.assert_no_secret(data)


class UsageTest(HostileCase):
    def test_negative_and_huge_usage_are_ignored_and_counted(self):
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "@mock:neg_usage"}]}))
        self.assertEqual(st, 200)
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": "claude", "messages": [{"role": "user", "content": "@mock:huge_usage"}]}))
        self.assertEqual(st, 200)
        usage = json.loads(data)["usage"]
        self.assertEqual(usage["prompt_tokens"], 0)
        m = self.d.metrics()
        self.assertGreaterEqual(m["llmux_usage_invalid_total"], 3)
        prompt = [v for k, v in m.items()
                  if k.startswith("llmux_tokens_total{") and 'kind="prompt"' in k]
        self.assertTrue(prompt)
        for v in prompt:
            self.assertGreaterEqual(v, 0)
            self.assertLess(v, 1 << 40)


class LogCutTest(HostileCase):
    def test_long_model_name_is_cut_in_the_access_log(self):
        model = "x" * 600000
        st, data = post(self.d, "/v1/chat/completions", json.dumps(
            {"model": model, "messages": []}))
        self.assertEqual(st, 404)
        lines = self.d.wait_log('"access"')
        self.assertTrue(lines)
        self.assertLess(max(len(l) for l in lines), 2000)
        self.assertIn("x" * 256 + "\u2026", "\n".join(json.loads(l)["model"] for l in lines))


class HeaderTimeoutTest(HostileCase):
    header_timeout = "500ms"
    limits = "  idle_timeout: 60s"

    def test_silent_connection_closed_after_header_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.d.port))
        s.settimeout(10)
        t0 = time.monotonic()
        self.assertEqual(s.recv(100), b"")
        self.assertLess(time.monotonic() - t0, 5)
        s.close()

    def test_slow_head_is_not_rearmed(self):
        s = socket.create_connection(("127.0.0.1", self.d.port))
        s.settimeout(10)
        time.sleep(0.3)
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        data = s.recv(1000)
        self.assertIn(b"408", data)
        self.assertLess(time.monotonic() - t0, 0.45)
        s.close()


if __name__ == "__main__":
    unittest.main()


def gather_body(n, size, stream=False, **opts):
    body = {"stream": stream, "requests": [
        {"model": "m", "messages": [{"role": "user", "content": "@mock:bytes=%d,id=%d"
                                     % (size, i)}]} for i in range(n)]}
    body.update(opts)
    return json.dumps(body)


class GatherMemoryTest(HostileCase):
    gather = "  max_result_bytes: 1g"

    def test_300_answers_of_1mb_peak_under_1_5x(self):
        st, data = post(self.d, "/v1/gather", gather_body(300, 1000000), timeout=120)
        self.assertEqual(st, 200)
        doc = json.loads(data)
        self.assertEqual(doc["succeeded"], 300)
        self.assertEqual([r["index"] for r in doc["results"]], list(range(300)))
        self.assert_peak_over_base(1.5 * len(data))
        self.assertEqual(self.d.metrics()["llmux_memory_accounted_bytes"], 0)


class GatherBackpressureTest(HostileCase):
    gather = "  max_result_bytes: 1g"
    limits = "  stream_high_water: 64k\n  stream_low_water: 16k"

    def test_client_that_does_not_read_holds_little(self):
        s = socket.create_connection(("127.0.0.1", self.d.port))
        b = gather_body(60, 300000, stream=True, max_concurrency=16).encode()
        s.sendall(b"POST /v1/gather HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(b)
                  + b)
        time.sleep(2)
        # The kernel's socket buffers take a few answers; then no new item starts and the
        # answers in flight wait upstream, unread.
        self.assertLess(self.mock.wait_stats(lambda s: True)["received"], 60)
        self.assert_peak_over_base(64 * 1024 + 300000 + 6 * MB)
        data = b""
        s.settimeout(30)
        while b"event: done" not in data:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertEqual(data.count(b"event: result"), 60)


class GatherResultCapTest(HostileCase):
    gather = "  max_result_bytes: 1m"

    def test_ordered_document_ends_with_an_error(self):
        st, data = post(self.d, "/v1/gather", gather_body(8, 300000, max_concurrency=1))
        self.assertEqual(st, 200)
        doc = json.loads(data)
        self.assertEqual(doc["error"]["code"], "gather_result_too_large")
        self.assertIn("max_result_bytes (1 MiB)", doc["error"]["message"])
        self.assertLess(len(doc["results"]), 8)

    def test_stream_ends_with_error_then_done(self):
        st, data = post(self.d, "/v1/gather", gather_body(8, 300000, stream=True,
                                                           max_concurrency=1))
        events = [l[7:] for l in data.decode().split("\n") if l.startswith("event: ")]
        self.assertEqual(events[-2:], ["error", "done"])

    def test_fail_fast_is_502(self):
        st, data = post(self.d, "/v1/gather", gather_body(8, 300000, max_concurrency=1,
                                                           return_exceptions=False))
        self.assertEqual(st, 502)
        self.assertEqual(json.loads(data)["error"]["code"], "gather_result_too_large")


class SecondStopTest(HostileCase):
    def test_second_sigterm_ends_a_streamed_gather_in_its_shape(self):
        import signal
        c = self.d.conn(15)
        c.request("POST", "/v1/gather", body=json.dumps({"stream": True, "requests": [
            {"model": "m", "messages": [{"role": "user", "content": "@mock:delay=8000,id=%d" % i}]}
            for i in range(2)]}))
        r = c.getresponse()
        self.mock.wait_stats(lambda s: s["received"] == 2)
        self.d.signal(signal.SIGTERM)
        time.sleep(0.3)
        self.d.signal(signal.SIGTERM)
        data = r.read().decode()
        events = [l[7:] for l in data.split("\n") if l.startswith("event: ")]
        self.assertEqual(events, ["error", "done"])
        err = json.loads(data.split("data: ")[1].split("\n")[0])
        self.assertEqual(err["error"]["code"], "shutting_down")
        self.d.proc.wait(10)


class MaxMemoryTest(HostileCase):
    limits = "  max_memory: 20m"

    def test_new_work_past_max_memory_gets_503(self):
        body = tiny_objects("m", note="@mock:delay=1500")
        ts, out = post_all(self.d, body, 2)
        self.mock.wait_stats(lambda s: s["received"] == 2, 10)
        c = self.d.conn(30)
        c.request("POST", "/v1/chat/completions", body=body)
        r = c.getresponse()
        err = json.loads(r.read())["error"]
        self.assertEqual((r.status, r.getheader("Retry-After")), (503, "1"))
        self.assertIn("max_memory", err["message"])
        for t in ts:
            t.join(30)
        self.assertEqual(out, [200, 200])
        m = self.d.metrics()
        self.assertEqual(m["llmux_memory_accounted_bytes"], 0)
        self.assertEqual(m["llmux_memory_limit_bytes"], 20 * MB)
        st, _ = post(self.d, "/v1/chat/completions", body.replace(b"delay=1500", b"delay=1"))
        self.assertEqual(st, 200)

    def test_auto_is_accepted(self):
        d = Daemon(None, text=(CONF.replace("{limits}", "  max_memory: auto")
                               .replace("{gather}", "").replace("{header_timeout}", "10s"))
                   % {"mock": self.mock.port})
        try:
            self.assertGreater(d.metrics()["llmux_memory_limit_bytes"], 64 * MB)
        finally:
            d.stop()
