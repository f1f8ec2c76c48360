"""Per-target circuit breaker, delayed hedging and phase timeouts: what a client sees, what the
upstream saw, and what /readyz, /metrics and the log say."""
import json
import signal
import threading
import time
import unittest

from harness import Case, Daemon, Mock, chat_body, read_chunked_events
from test_lifecycle import stream_request

CONFIG = """
listen: ["127.0.0.1:{port}"]
workers: %(workers)d
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
  - name: mockb
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
  - name: slowish
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
    timeouts: {first_byte: 600ms, idle: 600ms}
models:
%(models)s
health:
  failures: %(failures)d
  cooldown: %(cooldown)s
log:
  level: info
  format: json
%(extra)s
"""


def model(name, *targets, **opts):
    """One `models:` entry; targets are (upstream, upstream model) pairs."""
    ts = ", ".join("{upstream: %s, model: %s}" % t for t in targets)
    extra = "".join(", %s: %s" % kv for kv in opts.items())
    return "  - {name: %s, retries: 0, strategy: fallback, targets: [%s]%s}" % (name, ts, extra)


class BreakerCase(Case):
    models = []
    failures = 5
    cooldown = "30s"
    extra = ""

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        text = CONFIG % {"workers": cls.workers, "mock": cls.mock.port,
                         "models": "\n".join(cls.models), "failures": cls.failures,
                         "cooldown": cls.cooldown, "extra": cls.extra}
        try:
            cls.d = Daemon(None, text=text)
        except Exception:
            cls.mock.stop()
            raise

    def state(self, upstream, upstream_model):
        key = ('llmux_target_state{upstream="%s",upstream_model="%s"}'
               % (upstream, upstream_model))
        return self.d.metrics().get(key)

    def gather(self, items):
        st, _, data = self.d.request("POST", "/v1/gather", {"requests": items})
        self.assertEqual(st, 200, data)
        return [r["status"] for r in json.loads(data)["results"]]


class TargetBreakerTest(BreakerCase):
    cooldown = "2s"
    models = [model("a", ("mock", "broken")), model("b", ("mock", "fine")),
              model("a2", ("mock", "broken")),
              model("s", ("mock", "shared")), model("s2", ("mock", "shared")),
              model("r", ("mock", "limited")),
              model("p", ("mock", "probed"))]

    def open_target(self, name, n=5):
        for _ in range(n):
            st, _, body = self.d.chat("x @mock:status=500", model=name)
            self.assertEqual(st, 502, body)

    def test_one_bad_model_keeps_away_from_its_neighbour(self):
        self.open_target("a")
        st, h, body = self.d.chat("x", model="a")
        self.assertEqual((st, body["error"]["code"]), (503, "no_healthy_upstream"))
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        self.assertEqual(self.mock.stats()["received"], 5)      # refused at once, not sent
        for _ in range(3):
            st, _, _ = self.d.chat("x", model="b")              # same upstream, other model
            self.assertEqual(st, 200)
        self.assertEqual(self.gather([chat_body("x", model="b"), chat_body("y", model="a"),
                                      chat_body("z", model="b")]), [200, 503, 200])
        st, _, data = self.d.request("GET", "/readyz")
        ready = json.loads(data)
        self.assertEqual((st, ready["status"]), (503, "not_ready"))
        self.assertIn({"upstream": "mock", "model": "broken"},
                      [{k: t[k] for k in ("upstream", "model")} for t in ready["open_targets"]])
        self.assertEqual(self.state("mock", "broken"), 1)
        self.assertEqual(self.state("mock", "fine"), 0)
        self.assertEqual(self.d.metrics()['llmux_target_opens_total{upstream="mock",'
                                          'upstream_model="broken"}'], 1)
        lines = self.d.wait_log('"upstream_model":"broken"')   # written by the log thread
        opened = [l for l in lines if '"breaker opened"' in l]
        self.assertEqual(len(opened), 1, lines)
        self.assertIn('"level":"warn"', opened[0])
        time.sleep(2.1)                                  # cooldown over: half-open
        self.assertEqual(self.state("mock", "broken"), 2)
        st, _, _ = self.d.chat("x", model="a")           # the probe succeeds: closed
        self.assertEqual(st, 200)
        self.assertEqual(self.state("mock", "broken"), 0)
        closed = self.d.wait_log('"breaker closed","upstream":"mock","upstream_model":"broken"')
        self.assertTrue(closed and '"level":"info"' in closed[0], closed)
        self.assertEqual(self.d.request("GET", "/readyz")[0], 200)

    def test_models_naming_one_target_share_its_state(self):
        self.open_target("s")
        st, _, body = self.d.chat("x", model="s2")
        self.assertEqual((st, body["error"]["code"]), (503, "no_healthy_upstream"))
        self.assertEqual(self.mock.stats()["received"], 5)
        # one series per target however many models name it
        self.assertEqual(len([k for k in self.d.metrics()
                              if k.startswith("llmux_target_state{") and "shared" in k]), 1)

    def test_a_429_storm_does_not_open_it(self):
        for _ in range(12):
            st, _, _ = self.d.chat("x @mock:status=429", model="r")
            self.assertEqual(st, 429)
        st, _, _ = self.d.chat("x", model="r")
        self.assertEqual(st, 200)
        self.assertEqual(self.state("mock", "limited"), 0)
        for _ in range(4):
            self.d.chat("x @mock:status=404", model="r")    # 4xx never count either
        self.assertEqual(self.state("mock", "limited"), 0)

    def test_half_open_lets_exactly_one_probe_through(self):
        self.open_target("p")
        time.sleep(2.1)
        self.mock.reset()
        results = []

        def one():
            st, _, body = self.d.chat("x @mock:delay=400", model="p")
            results.append((st, body.get("error", {}).get("code")))
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [(200, None)] + [(503, "no_healthy_upstream")] * 3)
        self.assertEqual(self.mock.stats()["received"], 1)
        self.assertEqual(self.state("mock", "probed"), 0)


class RetryAfterTest(BreakerCase):
    failures = 2
    models = [model("x1", ("mock", "x1")), model("x2", ("mock", "x2")),
              model("both", ("mock", "x1"), ("mock", "x2")), model("y1", ("mock", "y1"))]

    def test_state_survives_a_reload_and_reaches_new_models(self):
        for _ in range(2):
            self.d.chat("x @mock:status=500", model="y1")
        self.assertEqual(self.d.chat("x", model="y1")[0], 503)
        text = CONFIG % {"workers": 1, "mock": self.mock.port, "failures": 2,
                         "cooldown": "30s", "extra": "",
                         "models": "\n".join(self.models + [model("y1b", ("mock", "y1"))])}
        self.d.write_config(text.replace("{port}", str(self.d.port)))
        self.d.signal(signal.SIGHUP)
        self.assertTrue(self.d.wait_log("configuration reloaded", 5))
        st, _, body = self.d.chat("x", model="y1b")    # a new model naming the open target
        self.assertEqual((st, body["error"]["code"]), (503, "no_healthy_upstream"))
        self.assertEqual(self.d.chat("x", model="y1")[0], 503)
        self.assertEqual(self.mock.stats()["received"], 2)

    def test_retry_after_is_the_shortest_remaining_cooldown(self):
        for name in ("x1", "x2"):
            for _ in range(2):
                self.d.chat("x @mock:status=503", model=name)
            if name == "x1":
                time.sleep(1.6)
        st, h, body = self.d.chat("x", model="both")
        self.assertEqual((st, body["error"]["code"]), (503, "no_healthy_upstream"))
        # x1 opened ~1.6 s before x2, so its cooldown ends first: ≤ 29 s of 30 remain
        self.assertIn(int(h["retry-after"]), range(20, 30))
        st, h, body = self.d.chat("x", model="x2")
        self.assertEqual(int(h["retry-after"]), 30)


class ReadyzAcrossWorkersTest(BreakerCase):
    workers = 2
    failures = 2
    models = [model("a", ("mock", "broken")), model("b", ("mock", "fine"))]

    def probe_many(self, n=30):
        seen = set()
        for _ in range(n):
            st, _, data = self.d.request("GET", "/readyz")
            seen.add((st, json.dumps(json.loads(data)["open_targets"])))
        return seen

    def test_one_answer_for_the_process(self):
        end = time.monotonic() + 10     # /readyz is 503 while the process is still starting
        while self.d.request("GET", "/readyz")[0] != 200 and time.monotonic() < end:
            time.sleep(0.05)
        self.assertEqual(self.probe_many(), {(200, "[]")})
        for _ in range(4):      # whichever worker serves them, the state is the process's
            self.d.chat("x @mock:status=500", model="a")
        seen = self.probe_many()
        self.assertEqual(len(seen), 1, seen)
        st, targets = seen.pop()
        self.assertEqual(st, 503)
        self.assertEqual([(t["upstream"], t["model"]) for t in json.loads(targets)],
                         [("mock", "broken")])


class HedgeTest(BreakerCase):
    models = [model("h", ("mock", "h"), hedge="{after: 200ms, max: 1}"),
              model("h2", ("mock", "p1"), ("mockb", "p2"), hedge="{after: 200ms}"),
              model("hm", ("mock", "m"), hedge="{after: 3s, min_after: 1s}")]

    def timed_chat(self, content, model="h", headers=None):
        t0 = time.monotonic()
        st, h, body = self.d.chat(content, model=model, headers=headers)
        return st, h, body, time.monotonic() - t0

    def test_slow_first_attempt_loses_to_the_hedge(self):
        st, h, body, took = self.timed_chat("x @mock:slow=4000,slow_first=1,id=a",
                                            headers={"X-Request-Id": "hedge-won-1"})
        self.assertEqual(st, 200, body)
        self.assertEqual(h["x-llmux-attempts"], "2")
        self.assertLess(took, 3.5)
        # the loser's connection was closed: the mock saw it abort, not complete
        self.mock.wait_stats(lambda s: s["aborted"] == 1)
        s = self.mock.stats()
        self.assertEqual((s["received"], s["completed"], s["aborted"]), (2, 1, 1))
        line = [l for l in self.d.wait_log('"request_id":"hedge-won-1"') if '"access"' in l]
        self.assertTrue(line, self.d.logs()[-2000:])
        self.assertIn('"hedged":true', line[0])
        self.assertIn('"hedge_winner":2', line[0])
        self.assertGreaterEqual(self.d.metrics()['llmux_hedges_total{outcome="won"}'], 1)

    def test_hedge_goes_to_the_next_target_in_order(self):
        st, h, _, _ = self.timed_chat("x @mock:slow=4000,slow_first=1,id=b", model="h2")
        self.assertEqual((st, h["x-llmux-attempts"], h["x-llmux-upstream"]), (200, "2", "mockb"))

    def test_first_attempt_winning_cancels_the_hedge(self):
        # both slow: the first started first and so answers first; the hedge is cancelled
        st, h, _, _ = self.timed_chat("x @mock:delay=600,id=c", model="h2")
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "2"))
        self.assertEqual(h["x-llmux-upstream"], "mock")     # the first attempt's, not the hedge's
        self.mock.wait_stats(lambda s: s["aborted"] == 1)
        self.assertEqual(self.mock.stats()["aborted"], 1)
        self.assertGreaterEqual(self.d.metrics()['llmux_hedges_total{outcome="lost"}'], 1)

    def test_no_hedge_once_headers_arrived(self):
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=3,interval=300",
                                            model="h")
        self.assertEqual(status, 200)
        chunks = list(read_chunked_events(f))
        s.close()
        self.assertEqual(chunks[-1][0], "END")
        self.assertEqual(head["x-llmux-attempts"], "1")
        self.assertEqual(self.mock.stats()["received"], 1)
        st, h, _, _ = self.timed_chat("x @mock:bytes=10")     # fast answers are never hedged
        self.assertEqual(h["x-llmux-attempts"], "1")

    def test_header_turns_it_off_or_later(self):
        st, h, _, took = self.timed_chat("x @mock:delay=500,id=d",
                                         headers={"X-Llmux-Hedge-Ms": "0"})
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"))
        st, h, _, took = self.timed_chat("x @mock:delay=500,id=e",
                                         headers={"X-Llmux-Hedge-Ms": "5000"})
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"))
        self.assertEqual(self.mock.stats()["received"], 2)
        st, h, _, _ = self.timed_chat("x @mock:delay=500,id=f",
                                      headers={"X-Llmux-No-Retry": "1"})
        self.assertEqual(h["x-llmux-attempts"], "1")
        st, _, body = self.d.chat("x", model="h", headers={"X-Llmux-Hedge-Ms": "soon"})
        self.assertEqual((st, body["error"]["param"]), (400, "X-Llmux-Hedge-Ms"))

    def test_header_can_hedge_earlier_down_to_min_after(self):
        # model hm: after 3s, min_after 1s; a header may hedge earlier, down to 1 s
        st, h, _, took = self.timed_chat("x @mock:slow=5000,slow_first=1,id=g", model="hm",
                                         headers={"X-Llmux-Hedge-Ms": "1"})
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "2"))
        self.assertLess(took, 2.9)                      # hedged before the model's 3 s
        st, h, _, _ = self.timed_chat("x @mock:delay=300,id=h", model="hm",
                                      headers={"X-Llmux-Hedge-Ms": "1"})
        self.assertEqual(h["x-llmux-attempts"], "1")    # 1 ms was raised to 1 s

    def test_hedges_never_outlive_the_deadline(self):
        st, _, body, took = self.timed_chat("x @mock:delay=3000,id=i",
                                            headers={"X-Llmux-Timeout-Ms": "500"})
        self.assertEqual(st, 504)
        self.mock.wait_stats(lambda s: s["aborted"] == 2)
        self.assertEqual(self.mock.stats()["aborted"], 2)


class HedgeLimitsTest(BreakerCase):
    """A hedge takes a key slot and an in-flight slot like any call; refused, it is skipped."""
    models = [model("h", ("mock", "h"), hedge="{after: 150ms}")]
    extra = """keys:
  - {name: one, key: sk-one, max_concurrency: 1}
  - {name: two, key: sk-two, max_concurrency: 2}
"""

    def test_key_concurrency_bounds_hedges(self):
        st, h, _ = self.d.chat("x @mock:delay=500,id=k1", model="h",
                               headers={"Authorization": "Bearer sk-one"})
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"))
        st, h, _ = self.d.chat("x @mock:delay=500,id=k2", model="h",
                               headers={"Authorization": "Bearer sk-two"})
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "2"))
        # the hedge's slot came back: the key can again run two requests at once
        statuses = []

        def one(i):
            statuses.append(self.d.chat("x @mock:delay=300,id=k3%d" % i, model="h",
                                        headers={"Authorization": "Bearer sk-two",
                                                 "X-Llmux-Hedge-Ms": "0"})[0])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(statuses, [200, 200])


class PhaseTimeoutTest(BreakerCase):
    models = [model("t", ("slowish", "t")),
              model("tf", ("slowish", "t"), ("mock", "t2"))]

    def test_first_byte_timeout(self):
        st, _, body = self.d.chat("x @mock:delay=3000", model="t")
        self.assertEqual((st, body["error"]["code"]), (504, "upstream_first_byte_timeout"))
        self.assertEqual(body["error"]["type"], "timeout_error")
        self.mock.wait_stats(lambda s: s["aborted"] == 1)
        line = self.d.wait_log('"phase_timeout":"upstream_first_byte_timeout"')
        self.assertTrue(line)
        m = self.d.metrics()
        self.assertGreaterEqual(m['llmux_upstream_timeouts_total{phase="first_byte"}'], 1)

    def test_first_byte_timeout_falls_back(self):
        st, h, _ = self.d.chat("x @mock:slow=3000,slow_first=1,id=fb", model="tf")
        self.assertEqual((st, h["x-llmux-attempts"], h["x-llmux-upstream"]), (200, "2", "mock"))

    def test_idle_timeout_cuts_a_stalled_body(self):
        st, _, body = self.d.chat("x @mock:stall", model="t")
        self.assertEqual((st, body["error"]["code"]), (504, "upstream_idle_timeout"))

    def test_idle_timeout_mid_stream_ends_it_with_an_error_event(self):
        s, f, status, _ = stream_request(self.d.port, "x @mock:stream=4,interval=150",
                                         model="t")
        chunks = list(read_chunked_events(f))           # 150 ms gaps: under the 600 ms idle
        self.assertEqual(chunks[-1][0], "END")
        s.close()
        s, f, status, _ = stream_request(self.d.port, "x @mock:stream=4,interval=1000",
                                         model="t", headers=b"X-Llmux-Timeout-Ms: 60000\r\n")
        self.assertEqual(status, 200)
        t0 = time.monotonic()
        chunks = list(read_chunked_events(f))
        s.close()
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(chunks[-1][0], "TRUNCATED")
        self.assertIn(b'"upstream_idle_timeout"', chunks[-2][1])
        self.assertNotIn(b"[DONE]", b"".join(c for _, c in chunks[:-1]))


if __name__ == "__main__":
    unittest.main()
