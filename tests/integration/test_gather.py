"""POST /v1/gather: fan-out with real concurrency and limits, error entries and fail-fast, timeouts,
mode first, streaming in completion order, client disconnect, validation, metrics — as a client of
the gateway sees it and as the mock upstream's /__stats counts it."""
import json
import socket
import threading
import time

from harness import Case, chat_body, read_chunked_events


item = chat_body    # one gather item: a chat-completion body


def delays(*ms, tag="d"):
    """Chat items that the mock answers after each delay; content names index and delay."""
    return [item("%s%d @mock:delay=%d" % (tag, i, d)) for i, d in enumerate(ms)]


class GatherMixin:
    warm = True

    def setUp(self):
        super().setUp()
        if self.warm:
            # One pooled upstream connection before each test: the first request to a host with
            # none makes libcurl hold every other one back (see GatherColdStartTest), and the
            # tests here measure the rest of the gather, whatever the test order.
            self.assertEqual(self.d.chat("warm")[0], 200)
            self.mock.reset()

    def gather(self, body, headers=None, timeout=15):
        """(status, headers, parsed body, wall seconds) of one POST /v1/gather."""
        t0 = time.monotonic()
        st, h, data = self.d.request("POST", "/v1/gather", body, headers, timeout=timeout)
        wall = time.monotonic() - t0
        try:
            parsed = json.loads(data)
        except ValueError:
            self.fail("gather answered %d with a body that is not JSON: %r" % (st, data[:200]))
        return st, h, parsed, wall

    def settle(self, pred=lambda s: s["inflight"] == 0, timeout=3.0):
        """The mock's stats once pred holds (fails the test if it never does)."""
        s = self.mock.wait_stats(pred, timeout)
        self.assertTrue(pred(s), "mock stats never settled: %r" % s)
        return s

    def send_raw(self, body, headers=""):
        """Opens a connection and sends a gather request on it; returns the socket."""
        data = json.dumps(body).encode()
        s = socket.create_connection(("127.0.0.1", self.d.port), 10)
        s.sendall(b"POST /v1/gather HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  + headers.encode() + b"Content-Length: %d\r\n\r\n" % len(data) + data)
        return s

    def stream(self, body):
        """A streamed gather: (headers, [(seconds since send, event, data dict)], ending)."""
        t0 = time.monotonic()
        s = self.send_raw(body)
        f = s.makefile("rb")
        status = f.readline()
        self.assertIn(b" 200 ", status)
        hdrs = {}
        while True:
            line = f.readline().strip()
            if not line:
                break
            k, v = line.decode().split(":", 1)
            hdrs[k.lower()] = v.strip()
        self.assertEqual(hdrs.get("transfer-encoding"), "chunked", hdrs)
        events, pending, ending = [], b"", None
        for when, chunk in read_chunked_events(f):
            if chunk is None:
                ending = when
                break
            pending += chunk
            while b"\n\n" in pending:
                raw, pending = pending.split(b"\n\n", 1)
                fields = dict(l.split(": ", 1) for l in raw.decode().split("\n") if l)
                events.append((when - t0, fields.get("event"), json.loads(fields["data"])))
        s.close()
        return hdrs, events, ending

    def metric(self, name):
        return self.d.metrics().get(name, 0.0)


class GatherTest(GatherMixin, Case):
    extra = "gather: {max_concurrency: 1000}\n"

    def test_results_in_request_order_with_usage(self):
        body = {"requests": [item("a @mock:delay=150"), item("b @mock:status=500"),
                             {"endpoint": "/v1/embeddings", "body": {"model": "m", "input": "x"}},
                             item("d @mock:delay=50")]}
        st, h, g, _ = self.gather(body)
        self.assertEqual(st, 200, g)
        self.assertEqual(g["object"], "gather.result")
        self.assertEqual([e["index"] for e in g["results"]], [0, 1, 2, 3])
        self.assertEqual([e["status"] for e in g["results"]], [200, 502, 200, 200])
        self.assertEqual(g["results"][0]["response"]["choices"][0]["message"]["content"],
                         "echo: a @mock:delay=150")
        self.assertEqual(g["results"][1]["error"]["type"], "upstream_error")
        self.assertNotIn("response", g["results"][1])
        self.assertEqual(g["results"][2]["response"]["object"], "list")
        self.assertEqual((g["succeeded"], g["failed"]), (3, 1))
        ok = [e["response"]["usage"] for e in g["results"] if e["status"] == 200]
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.assertEqual(g["usage"][k], sum(u.get(k, 0) for u in ok), k)
        self.assertGreater(g["usage"]["total_tokens"], 0)
        self.assertGreaterEqual(g["elapsed_ms"], 150)
        self.assertLess(g["elapsed_ms"], 1000)
        self.assertRegex(h["x-request-id"], r"^[A-Za-z0-9_.:-]{8,}$")
        self.assertEqual(self.mock.stats()["received"], 4)

    def test_item_request_ids_carry_the_index(self):
        st, h, g, _ = self.gather({"requests": delays(0, 0, 0), "max_concurrency": 1},
                                  headers={"X-Request-Id": "gth-abc"})
        self.assertEqual(st, 200, g)
        self.assertEqual(h["x-request-id"], "gth-abc")
        # One at a time, so the mock's last request is the last item's.
        self.assertEqual(self.mock.last()["headers"]["x-request-id"], "gth-abc.2")
        st, h, g, _ = self.gather({"requests": delays(0)})
        self.assertEqual(self.mock.last()["headers"]["x-request-id"], h["x-request-id"] + ".0")

    def test_concurrency_is_real(self):
        st, _, g, wall = self.gather({"requests": delays(*[200] * 100), "max_concurrency": 100})
        self.assertEqual((st, g["succeeded"], g["failed"]), (200, 100, 0))
        self.assertLess(wall, 0.4)
        self.assertEqual(self.mock.stats()["received"], 100)

    def test_concurrency_limit_is_real(self):
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], self.mock.stats()["inflight"])
                time.sleep(0.005)
        t = threading.Thread(target=sample)
        t.start()
        try:
            st, _, g, wall = self.gather({"requests": delays(*[200] * 100),
                                          "max_concurrency": 10})
        finally:
            stop.set()
            t.join()
        self.assertEqual((st, g["succeeded"]), (200, 100))
        self.assertGreaterEqual(wall, 2.0)
        self.assertLess(wall, 4.0)
        self.assertLessEqual(peak[0], 10)
        self.assertGreaterEqual(peak[0], 5)

    def test_waiting_items_start_in_request_order(self):
        # Two slots: item 0 holds one for 400 ms, items 1..3 pass through the other in turn.
        _, events, _ = self.stream({"requests": delays(400, 100, 100, 100), "stream": True,
                                    "max_concurrency": 2})
        order = [d["index"] for _, ev, d in events if ev == "result"]
        self.assertEqual(order, [1, 2, 3, 0])

    def test_mixed_failures_are_entries(self):
        body = {"requests": [item("ok @mock:delay=100"), item("x @mock:status=500"),
                             item("x @mock:status=429,retry_after=3"), item("x @mock:garbage"),
                             item("x @mock:reset"), item("x", model="nope"),
                             item("ok2 @mock:delay=30")]}
        st, _, g, _ = self.gather(body)
        self.assertEqual(st, 200, g)
        statuses = [e["status"] for e in g["results"]]
        self.assertEqual(statuses, [200, 502, 429, 502, 502, 404, 200])
        codes = [e.get("error", {}).get("code") for e in g["results"]]
        self.assertEqual(codes[4], "upstream_reset")
        self.assertEqual(codes[5], "model_not_found")
        for e in g["results"][1:6]:
            self.assertEqual(set(e), {"index", "status", "error"}, e)
            self.assertIn("message", e["error"])
        self.assertEqual((g["succeeded"], g["failed"]), (2, 5))

    def test_reset_item_is_not_sent_again_and_again(self):
        # Eight pooled connections, then one item the upstream resets. model m has retries: 0;
        # one resend on a fresh connection (the reset looks like a stale keep-alive) is the most
        # a client should pay for.
        self.gather({"requests": delays(*[50] * 8)})
        self.mock.reset()
        st, _, g, _ = self.gather({"requests": [item("x @mock:reset")]})
        self.assertEqual((st, g["results"][0]["status"]), (200, 502), g)
        self.assertLessEqual(self.mock.stats()["received"], 2)

    def test_fail_fast_answers_first_failure_and_cancels_the_rest(self):
        # In time the 500 (index 2, 100 ms) fails before the 429 (index 1, 300 ms).
        reqs = [item("a @mock:delay=1000"), item("b @mock:delay=300,status=429"),
                item("c @mock:delay=100,status=500"), item("d @mock:delay=1000")]
        reqs += delays(50, 50, 50, tag="waiting")
        st, _, g, wall = self.gather({"requests": reqs, "return_exceptions": False,
                                      "max_concurrency": 4})
        self.assertEqual(st, 502, g)
        self.assertEqual(g["index"], 2)
        self.assertEqual(g["error"]["type"], "upstream_error")
        self.assertNotIn("results", g)
        self.assertLess(wall, 0.29)
        s = self.settle()
        self.assertEqual((s["received"], s["completed"], s["aborted"]), (4, 1, 3), s)
        time.sleep(0.1)     # the waiting items would have started by now
        self.assertEqual(self.mock.stats()["received"], 4)

    def test_fail_fast_relays_the_failure_status(self):
        reqs = [item("a @mock:delay=1000"), item("b @mock:delay=50,status=429,retry_after=3")]
        st, _, g, _ = self.gather({"requests": reqs, "return_exceptions": False})
        self.assertEqual((st, g["index"]), (429, 1), g)
        self.assertIn("message", g["error"])
        s = self.settle()
        self.assertEqual((s["completed"], s["aborted"]), (1, 1), s)

    def test_fail_fast_on_an_item_refused_before_sending(self):
        reqs = [item("a @mock:delay=500"), item("x", model="nope")] + delays(500, 500)
        st, _, g, wall = self.gather({"requests": reqs, "return_exceptions": False})
        self.assertEqual((st, g["index"]), (404, 1), g)
        self.assertEqual(g["error"]["code"], "model_not_found")
        self.assertLess(wall, 0.3)
        s = self.settle()
        self.assertEqual(s["completed"], 0, s)
        self.assertEqual(s["received"], s["aborted"], s)

    def test_mode_first_fastest_wins_and_others_are_aborted(self):
        reqs = [item("slow0 @mock:delay=1000"), item("slow1 @mock:delay=600"),
                item("fast @mock:delay=50"), item("slow3 @mock:delay=300"),
                item("slow4 @mock:delay=800")]
        st, _, g, wall = self.gather({"requests": reqs, "mode": "first"})
        self.assertEqual(st, 200, g)
        self.assertEqual(g["object"], "chat.completion")
        self.assertEqual(g["choices"][0]["message"]["content"], "echo: fast @mock:delay=50")
        self.assertLess(wall, 0.2)
        s = self.settle(timeout=0.5)    # well before the 300 ms item would have finished
        self.assertEqual((s["received"], s["completed"], s["aborted"]), (5, 1, 4), s)

    def test_mode_first_skips_failures(self):
        reqs = [item("x @mock:status=500"), item("y @mock:reset"), item("ok @mock:delay=100")]
        st, _, g, _ = self.gather({"requests": reqs, "mode": "first"})
        self.assertEqual(st, 200, g)
        self.assertEqual(g["choices"][0]["message"]["content"], "echo: ok @mock:delay=100")

    def test_mode_first_none_succeeds_carries_the_last_error(self):
        # The reset (index 0) is the last to fail in time; the 500 fails first.
        reqs = [item("x @mock:delay=200,reset"), item("y @mock:delay=50,status=500")]
        st, _, g, wall = self.gather({"requests": reqs, "mode": "first"})
        self.assertEqual(st, 502, g)
        self.assertEqual(g["error"]["code"], "upstream_reset", g)
        self.assertEqual(g["index"], 0)
        self.assertGreaterEqual(wall, 0.2)

    def test_mode_first_timeout_is_504(self):
        st, _, g, wall = self.gather({"requests": delays(1000, 1000, 1000), "mode": "first",
                                      "timeout_ms": 200})
        self.assertEqual(st, 504, g)
        self.assertEqual(g["error"]["type"], "timeout_error")
        self.assertGreaterEqual(wall, 0.19)
        self.assertLess(wall, 0.6)
        s = self.settle()
        self.assertEqual((s["completed"], s["aborted"]), (0, 3), s)

    def test_gather_timeout_reports_unfinished_items_as_504(self):
        # Two slots: 0 ends at 50 ms, then 2 starts; at 300 ms 1 and 2 run and 3 never started.
        st, _, g, wall = self.gather({"requests": delays(50, 1000, 1000, 1000),
                                      "max_concurrency": 2, "timeout_ms": 300})
        self.assertEqual(st, 200, g)
        self.assertGreaterEqual(wall, 0.29)
        self.assertLess(wall, 0.7)
        self.assertEqual([e["status"] for e in g["results"]], [200, 504, 504, 504])
        for e in g["results"][1:]:
            self.assertEqual(e["error"]["type"], "timeout_error")
            self.assertEqual(e["error"]["code"], "gather_timeout")
        self.assertEqual((g["succeeded"], g["failed"]), (1, 3))
        s = self.settle()
        self.assertEqual((s["received"], s["completed"], s["aborted"]), (3, 1, 2), s)

    def test_gather_timeout_fail_fast_is_504_with_index(self):
        st, _, g, wall = self.gather({"requests": delays(50, 1000), "timeout_ms": 200,
                                      "return_exceptions": False})
        self.assertEqual((st, g["index"]), (504, 1), g)
        self.assertLess(wall, 0.6)
        self.assertEqual(self.settle()["aborted"], 1)

    def test_item_timeout_reports_504_entry(self):
        st, _, g, wall = self.gather({"requests": delays(50, 1000, 100), "item_timeout_ms": 200})
        self.assertEqual(st, 200, g)
        self.assertGreaterEqual(wall, 0.19)
        self.assertLess(wall, 0.6)
        self.assertEqual([e["status"] for e in g["results"]], [200, 504, 200])
        self.assertEqual(g["results"][1]["error"]["code"], "item_timeout")
        s = self.settle()
        self.assertEqual((s["completed"], s["aborted"]), (2, 1), s)

    def test_item_timeout_runs_from_each_item_start(self):
        # One at a time, 3 × 150 ms: each fits its own 250 ms though the gather takes 450 ms.
        st, _, g, wall = self.gather({"requests": delays(150, 150, 150), "max_concurrency": 1,
                                      "item_timeout_ms": 250})
        self.assertEqual((st, g["succeeded"], g["failed"]), (200, 3, 0), g)
        self.assertGreaterEqual(wall, 0.45)

    def test_item_timeout_includes_retries(self):
        # m-retry: 3 attempts of 80 ms with backoff ≤ 10, ≤ 20 ms would answer 502 at ~250 ms;
        # the third attempt starts before 190 ms and is still running at the 200 ms item deadline.
        reqs = [item("x @mock:delay=80,status=500", model="m-retry")]
        st, _, g, wall = self.gather({"requests": reqs, "item_timeout_ms": 200})
        self.assertEqual(st, 200, g)
        self.assertEqual(g["results"][0]["status"], 504, g)
        self.assertEqual(g["results"][0]["error"]["code"], "item_timeout")
        self.assertGreaterEqual(wall, 0.19)
        self.assertLess(wall, 0.5)      # answered at the item deadline (the 502 comes later)
        s = self.settle()
        self.assertEqual((s["received"], s["completed"], s["aborted"]), (3, 2, 1), s)

    def test_stream_results_in_completion_order(self):
        hdrs, events, ending = self.stream({"requests": delays(300, 100, 200) +
                                            [item("x @mock:delay=50,status=500")],
                                            "stream": True})
        self.assertEqual(ending, "END")
        self.assertTrue(hdrs["content-type"].startswith("text/event-stream"), hdrs)
        kinds = [ev for _, ev, _ in events]
        self.assertEqual(kinds, ["result"] * 4 + ["done"])
        results = [(t, d) for t, ev, d in events if ev == "result"]
        self.assertEqual([d["index"] for _, d in results], [3, 1, 2, 0])
        self.assertEqual([d["status"] for _, d in results], [502, 200, 200, 200])
        self.assertIn("error", results[0][1])
        self.assertEqual(results[1][1]["response"]["object"], "chat.completion")
        # Each result is sent when its item ends, not held back for the others.
        self.assertLess(results[1][0], 0.25)
        self.assertGreaterEqual(results[3][0], 0.29)
        done = events[-1][2]
        self.assertEqual((done["succeeded"], done["failed"]), (3, 1))
        self.assertGreater(done["usage"]["total_tokens"], 0)
        self.assertGreaterEqual(done["elapsed_ms"], 300)

    def test_client_disconnect_aborts_every_item(self):
        before = self.metric('llmux_gather_items_total{outcome="client_disconnect"}')
        s = self.send_raw({"requests": delays(*[3000] * 8), "max_concurrency": 4})
        self.settle(lambda st: st["inflight"] == 4)
        s.close()
        st = self.settle(lambda st: st["aborted"] == 4, timeout=1.0)
        self.assertEqual((st["received"], st["completed"], st["inflight"]), (4, 0, 0), st)
        time.sleep(0.1)
        self.assertEqual(self.mock.stats()["received"], 4)   # the waiting 4 never start
        after = self.metric('llmux_gather_items_total{outcome="client_disconnect"}')
        self.assertEqual(after - before, 4)

    def test_client_disconnect_mid_stream_aborts_every_item(self):
        s = self.send_raw({"requests": delays(50, 3000, 3000, 3000), "stream": True})
        f = s.makefile("rb")
        self.assertIn(b" 200 ", f.readline())
        self.settle(lambda st: st["completed"] == 1 and st["inflight"] == 3)
        f.close()
        s.close()
        st = self.settle(lambda st: st["aborted"] == 3, timeout=1.0)
        self.assertEqual((st["received"], st["completed"], st["inflight"]), (4, 1, 0), st)

    def test_metrics_count_items_and_duration(self):
        def snap():
            m = self.d.metrics()
            return (m.get('llmux_gather_items_total{outcome="completed"}', 0),
                    m.get('llmux_gather_items_total{outcome="upstream_error"}', 0),
                    m.get('llmux_gather_items_total{outcome="cancelled"}', 0),
                    m.get("llmux_gather_duration_seconds_count", 0))
        b = snap()
        self.gather({"requests": [item("a"), item("b @mock:status=500"), item("c")]})
        self.gather({"requests": [item("d @mock:delay=1000"), item("e @mock:status=500")],
                     "return_exceptions": False})
        a = snap()
        self.assertEqual(tuple(x - y for x, y in zip(a, b)), (2, 2, 1, 2))
        m = self.d.metrics()
        self.assertIn('llmux_gather_duration_seconds_bucket{le="+Inf"}', m)

    def test_item_stream_true_is_refused_naming_the_item(self):
        reqs = delays(0, 0, 0) + [item("x", stream=True)]
        st, _, g, _ = self.gather({"requests": reqs})
        self.assertEqual(st, 400, g)
        self.assertEqual(g["error"]["param"], "requests[3].stream")
        self.assertEqual(g["error"]["type"], "invalid_request_error")
        st, _, g, _ = self.gather({"requests": [{"endpoint": "/v1/embeddings",
                                                 "body": {"model": "m", "input": "x",
                                                          "stream": True}}]})
        self.assertEqual((st, g["error"]["param"]), (400, "requests[0].stream"), g)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_bad_bodies_are_400(self):
        for raw in (b"[1, 2]", b'"requests"', b"42", b"null", b'{"requests": '):
            st, _, data = self.d.request("POST", "/v1/gather", raw)
            self.assertEqual(st, 400, raw)
            self.assertEqual(json.loads(data)["error"]["type"], "invalid_request_error", raw)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_bad_requests_and_items_name_the_param(self):
        ok = item("x")
        cases = [
            ({}, "requests"),
            ({"requests": None}, "requests"),
            ({"requests": []}, "requests"),
            ({"requests": "x"}, "requests"),
            ({"requests": {"0": ok}}, "requests"),
            ({"requests": [ok] * 1001}, "requests"),
            ({"requests": [ok, "x"]}, "requests[1]"),
            ({"requests": [ok, ok, [ok]]}, "requests[2]"),
            ({"requests": [ok, None]}, "requests[1]"),
            ({"requests": [{"endpoint": "/v1/nothing", "body": ok}]}, "requests[0].endpoint"),
            ({"requests": [{"endpoint": 7, "body": ok}]}, "requests[0].endpoint"),
            ({"requests": [ok, {"endpoint": "/v1/embeddings", "body": "x"}]},
             "requests[1].body"),
            ({"requests": [ok, {"endpoint": "/v1/embeddings"}]}, "requests[1].body"),
        ]
        for body, param in cases:
            st, _, g, _ = self.gather(body)
            self.assertEqual((st, g["error"]["param"]), (400, param), str(body)[:80])
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_bad_option_types_name_the_param(self):
        reqs = [item("x")]
        bad = {
            "return_exceptions": ["yes", 1, [], {}],
            "stream": ["true", 0, {}],
            "timeout_ms": ["100", -1, 1.5, True, []],
            "item_timeout_ms": ["100", -5, 2.5, False],
            "max_concurrency": ["10", -1, 1.5, True, {}],
            "mode": ["fastest", 1, True, ["first"], ""],
        }
        for name, values in bad.items():
            for v in values:
                st, _, g, _ = self.gather({"requests": reqs, name: v})
                self.assertEqual((st, g["error"]["param"]), (400, name), "%s=%r" % (name, v))
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_invalid_item_fields_name_the_item(self):
        reqs = [item("a"), {"messages": []}, {"model": "m"}, {"model": 5, "messages": []}]
        st, _, g, _ = self.gather({"requests": reqs})
        self.assertEqual(st, 200, g)
        self.assertEqual([e["status"] for e in g["results"]], [200, 400, 400, 400])
        self.assertEqual([e.get("error", {}).get("param") for e in g["results"]],
                         [None, "requests[1].model", "requests[2].messages",
                          "requests[3].model"])


class GatherColdStartTest(GatherMixin, Case):
    """The very first gather of a fresh daemon: no upstream connection is pooled yet."""
    extra = "gather: {max_concurrency: 1000}\n"
    warm = False

    def test_first_gather_runs_items_at_once(self):
        st, _, g, wall = self.gather({"requests": delays(*[200] * 100), "max_concurrency": 100})
        self.assertEqual((st, g["succeeded"]), (200, 100), g)
        self.assertLess(wall, 0.4)


class GatherCapTest(GatherMixin, Case):
    extra = "gather: {max_items: 3, max_concurrency: 2}\n"

    def test_max_items_from_config(self):
        st, _, g, _ = self.gather({"requests": delays(0, 0, 0)})
        self.assertEqual((st, g["succeeded"]), (200, 3), g)
        st, _, g, _ = self.gather({"requests": delays(0, 0, 0, 0)})
        self.assertEqual((st, g["error"]["param"]), (400, "requests"), g)
        self.assertEqual(self.mock.stats()["received"], 3)

    def test_max_concurrency_capped_by_config(self):
        # Asked for 100 at once, allowed 2: three 200 ms items take two rounds.
        st, _, g, wall = self.gather({"requests": delays(200, 200, 200), "max_concurrency": 100})
        self.assertEqual((st, g["succeeded"]), (200, 3), g)
        self.assertGreaterEqual(wall, 0.4)
        self.assertLess(wall, 0.8)
