"""Hedges of rate-limited keys on state.backend: redis: the hedge's take is a round trip away,
so the hedge waits for it; it counts against rpm and gives its lease back; a request that ends
while the take is on its way (Redis held by CLIENT PAUSE) cancels it and no hedge starts late;
Redis down mid-request with on_error open (hedged, uncharged) and closed (skipped)."""
import json
import socket
import threading
import time
import unittest

from harness import Daemon, Mock, RedisServer, chat_body
from test_state_redis import RedisCase, wait_until

CONFIG = """
listen: ["127.0.0.1:{port}"]
workers: 1
limits: {max_inflight: 2}
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
models:
  - {name: h, retries: 0, targets: [{upstream: mock, model: h}], hedge: {after: 200ms}}
keys:
  - {name: rated, key: key-rated-1, rpm: 6, max_concurrency: 2}
  - {name: solo, key: key-solo-1, max_concurrency: 1}
  - {name: wide, key: key-wide-1, rpm: 1000, max_concurrency: 10}
state:
  backend: redis
  redis: "%(url)s"
  on_error: %(on_error)s
  timeout: 5s
log:
  level: info
  format: json
"""


def auth(key, **more):
    """Authorization for key, and more headers (X_Llmux_Hedge_Ms for X-Llmux-Hedge-Ms)."""
    return dict({"Authorization": "Bearer " + key},
                **{k.replace("_", "-"): v for k, v in more.items()})


class HedgeRedisCase(RedisCase):
    """Two llmuxd (on_error open and closed) on one Redis; RedisCase's setUp between tests."""
    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        cls.redis = RedisServer(persist=False)
        cls.ds = []
        try:
            for on_error in ("open", "closed"):
                text = CONFIG % {"mock": cls.mock.port, "url": cls.redis.url,
                                 "on_error": on_error}
                cls.ds.append(Daemon(None, text=text))
        except Exception:
            cls.tearDownClass()
            raise
        cls.d, cls.dc = cls.ds

    @classmethod
    def tearDownClass(cls):
        rcs = [(d.stop(), d) for d in cls.ds]
        cls.redis.stop()
        cls.mock.stop()
        for rc, d in rcs:       # under ASan a leak or a bad access makes it exit non-zero
            if rc != 0:
                raise AssertionError("llmuxd exited with %s; log:\n%s" % (rc, d.logs()[-4000:]))

    def linked(self, d):
        """A limited request went through Redis (not around it)."""
        before = self.errors(d)
        st, _, _ = d.chat("probe", model="h", headers=auth("key-wide-1", X_Llmux_Hedge_Ms="0"))
        return st == 200 and self.errors(d) == before

    def leases(self, name):
        return self.redis.command("ZCARD", "llmux:key:{%s}:lease" % name)

    def timed_chat(self, d, content, key, **headers):
        t0 = time.monotonic()
        st, h, body = d.chat(content, model="h", headers=auth(key, **headers))
        return st, h, body, time.monotonic() - t0

    def hedged(self, d, tag):
        """Whether a request whose first attempt is slow is hedged (2 attempts, won)."""
        st, h, body, _ = self.timed_chat(d, "x @mock:slow=3000,slow_first=1,id=%s" % tag,
                                         "key-wide-1")
        self.assertEqual(st, 200, body)
        return h["x-llmux-attempts"] == "2"


class HedgeOnRedisTest(HedgeRedisCase):
    def test_limited_key_hedges_and_pays_for_it(self):
        won = self.d.metrics().get('llmux_hedges_total{outcome="won"}', 0)
        st, h, body, took = self.timed_chat(self.d, "x @mock:slow=4000,slow_first=1,id=a",
                                            "key-rated-1", X_Request_Id="hr-1")
        self.assertEqual(st, 200, body)
        self.assertEqual(h["x-llmux-attempts"], "2")
        self.assertLess(took, 3.5)                      # the hedge answered, not the slow one
        self.assertEqual(h["x-ratelimit-remaining-requests"], "5")
        self.assertEqual(self.d.metrics()['llmux_hedges_total{outcome="won"}'], won + 1)
        line = [l for l in self.d.wait_log('"request_id":"hr-1"') if '"access"' in l]
        self.assertTrue(line and '"hedge_winner":2' in line[0], self.d.logs()[-2000:])
        # both leases (the request's and the hedge's) are back in Redis
        self.assertTrue(wait_until(lambda: self.leases("rated") == 0))
        # the hedge counted against rpm: 6 - 3 takes
        st, h, _, _ = self.timed_chat(self.d, "after", "key-rated-1", X_Llmux_Hedge_Ms="0")
        self.assertEqual((st, h["x-ratelimit-remaining-requests"]), (200, "3"))
        # and its concurrency slot is free again: the key runs two at once
        out = []
        ts = [threading.Thread(target=lambda i=i: out.append(self.timed_chat(
            self.d, "c%d @mock:delay=300" % i, "key-rated-1", X_Llmux_Hedge_Ms="0")[0]))
            for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        self.assertEqual(out, [200, 200])

    def test_a_refused_take_skips_the_hedge(self):
        # key solo runs one request at a time: its hedge's take is BUSY, so no hedge
        hedges = sum(v for k, v in self.d.metrics().items() if k.startswith("llmux_hedges"))
        st, h, body, _ = self.timed_chat(self.d, "x @mock:slow=1000,slow_first=1,id=b",
                                         "key-solo-1")
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"), body)
        self.assertEqual(self.mock.stats()["received"], 1)
        self.assertEqual(sum(v for k, v in self.d.metrics().items()
                             if k.startswith("llmux_hedges")), hedges)
        self.assertTrue(wait_until(lambda: self.leases("solo") == 0))


class HedgeTakeInFlightTest(HedgeRedisCase):
    """The request ends while its hedge's take waits in a paused Redis: the take is cancelled,
    its max_inflight slot comes back, and no hedge starts when Redis answers."""

    def hold_redis_after_first_take(self):
        self.assertTrue(wait_until(lambda: self.mock.stats()["inflight"] == 1, 5))
        self.redis.command("CLIENT", "PAUSE", "3000", "ALL")
        return time.monotonic()

    def no_late_hedge(self, paused_at):
        time.sleep(max(0, paused_at + 3.5 - time.monotonic()))      # Redis answered meanwhile
        self.assertTrue(wait_until(lambda: self.linked(self.d)))
        s = self.mock.stats()
        self.assertEqual(s["received"], 2, s)          # the request and the probe, no hedge
        # the cancelled take still ran in Redis; the end sent behind it removed its lease
        self.assertTrue(wait_until(lambda: self.leases("wide") == 0, 5))
        self.mock.reset()

    def test_win_deadline_and_disconnect(self):
        hedge = {"X_Llmux_Hedge_Ms": "800"}            # after the pause has begun
        out = []
        t = threading.Thread(target=lambda: out.append(self.timed_chat(
            self.d, "x @mock:delay=1600,id=w", "key-wide-1", **hedge)))
        t.start()
        paused_at = self.hold_redis_after_first_take()
        t.join(10)
        self.assertEqual((out[0][0], out[0][1]["x-llmux-attempts"]), (200, "1"))
        self.assertLess(time.monotonic(), paused_at + 3.0)     # ended while Redis was paused
        self.no_late_hedge(paused_at)

        t = threading.Thread(target=lambda: out.append(self.timed_chat(
            self.d, "x @mock:delay=3000,id=d", "key-wide-1",
            X_Llmux_Timeout_Ms="1600", **hedge)))
        t.start()
        paused_at = self.hold_redis_after_first_take()
        t.join(10)
        self.assertEqual(out[1][0], 504)
        self.no_late_hedge(paused_at)

        body = json.dumps(chat_body("x @mock:delay=3000,id=c", model="h")).encode()
        s = socket.create_connection(("127.0.0.1", self.d.port), 10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer key-wide-1\r\nX-Llmux-Hedge-Ms: 800\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        paused_at = self.hold_redis_after_first_take()
        time.sleep(max(0, paused_at + 1.6 - time.monotonic()))   # the hedge's take is out
        s.close()
        self.assertTrue(wait_until(lambda: self.mock.stats()["aborted"] == 1, 5))
        self.no_late_hedge(paused_at)
        # every max_inflight slot came back: a request and its hedge still fit in two
        self.assertTrue(self.hedged(self.d, "after"))


class HedgeRedisDownTest(HedgeRedisCase):
    def test_on_error_open_hedges_closed_skips(self):
        out = {}

        def one(d, tag):
            out[tag] = self.timed_chat(d, "x @mock:slow=2500,slow_first=1,id=%s" % tag,
                                       "key-rated-1", X_Llmux_Hedge_Ms="1000")
        ts = [threading.Thread(target=one, args=a) for a in ((self.d, "o"), (self.dc, "c"))]
        for t in ts:
            t.start()
        self.assertTrue(wait_until(lambda: self.mock.stats()["inflight"] == 2, 5))
        self.redis.kill()                               # before either hedge's take
        for t in ts:
            t.join(10)
        st, h, body, took = out["o"]
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "2"), body)     # open: hedged
        self.assertLess(took, 2.4)
        st, h, body, took = out["c"]
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"), body)     # closed: skipped
        self.assertGreaterEqual(self.errors(self.dc), 1)


if __name__ == "__main__":
    unittest.main()
