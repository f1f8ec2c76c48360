"""limits.max_inflight and limits.queue: requests past the in-flight cap wait in order, and past
the queue they get 503 with Retry-After; queued requests still honour their deadlines."""
import threading
import time

from harness import Case


class InflightQueueTest(Case):
    limits = """
  max_inflight: 2
  queue: 1
"""

    def chat_in_thread(self, content, out, headers=None):
        t = threading.Thread(target=lambda: out.append(
            (content, time.monotonic(), self.d.chat(content, headers=headers))))
        t.start()
        return t

    def test_cap_then_queue_then_503(self):
        out = []
        threads = [self.chat_in_thread("slot%d @mock:delay=400" % i, out) for i in range(2)]
        self.mock.wait_stats(lambda s: s["inflight"] == 2)
        threads.append(self.chat_in_thread("queued @mock:delay=10", out))
        time.sleep(0.1)
        self.assertEqual(self.mock.stats()["received"], 2)   # the third waits, unsent
        t0 = time.monotonic()
        st, h, body = self.d.chat("refused")
        self.assertEqual(st, 503)
        self.assertEqual(h["retry-after"], "1")
        self.assertEqual(body["error"]["code"], "overloaded")
        self.assertLess(time.monotonic() - t0, 0.2)
        for t in threads:
            t.join(5)
        results = {c: (when, r[0]) for c, when, r in out}
        self.assertEqual(sorted(r for _, r in results.values()), [200, 200, 200])
        self.assertGreater(results["queued @mock:delay=10"][0], results["slot0 @mock:delay=400"][0])

    def test_queued_request_deadline(self):
        out = []
        threads = [self.chat_in_thread("slot%d @mock:delay=500" % i, out) for i in range(2)]
        self.mock.wait_stats(lambda s: s["inflight"] == 2)
        st, _, body = self.d.chat("late", headers={"X-Llmux-Timeout-Ms": "100"})
        self.assertEqual(st, 504)
        for t in threads:
            t.join(5)
        self.assertEqual(self.mock.stats()["received"], 2)   # never sent upstream


class KeyLimitTest(Case):
    extra = """
keys:
  - name: metered
    key: key-metered-1
    rpm: 3
  - name: single
    key: key-single-1
    max_concurrency: 1
  - name: free
    key: key-free-1
"""

    def test_rpm_token_bucket(self):
        auth = {"Authorization": "Bearer key-metered-1"}
        codes = [self.d.chat("x", headers=auth)[0] for _ in range(3)]
        self.assertEqual(codes, [200, 200, 200])
        st, h, body = self.d.chat("x", headers=auth)
        self.assertEqual(st, 429)
        self.assertEqual(body["error"]["code"], "rate_limit_exceeded")
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        self.assertEqual(self.d.chat("x", headers={"Authorization": "Bearer key-free-1"})[0],
                         200)
        self.assertEqual(self.mock.stats()["received"], 4)

    def test_max_concurrency(self):
        auth = {"Authorization": "Bearer key-single-1"}
        out = []
        t = threading.Thread(target=lambda: out.append(self.d.chat("a @mock:delay=300",
                                                                   headers=auth)[0]))
        t.start()
        self.mock.wait_stats(lambda s: s["inflight"] == 1)
        st, _, body = self.d.chat("b", headers=auth)
        self.assertEqual((st, body["error"]["code"]), (429, "concurrency_limit_exceeded"))
        t.join(5)
        self.assertEqual(out, [200])
        self.assertEqual(self.d.chat("c", headers=auth)[0], 200)   # the slot came back
