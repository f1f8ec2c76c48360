"""state.backend: redis — two llmuxd on one real redis-server share rpm and max_concurrency;
Redis killed mid-test (on_error: open serves, closed answers 503) and limits resume when it is
back; Redis down at start; leases of a crashed instance come back; AUTH and SELECT."""
import json
import signal
import threading
import time
import unittest

from harness import Daemon, Mock, RedisServer

KEYS = """
keys:
  - {name: shared, key: key-shared-1, rpm: 6}
  - {name: duo, key: key-duo-1, max_concurrency: 2}
  - {name: tok, key: key-tok-1, tpm: 60}
"""


def state_conf(redis_url, on_error="open"):
    return KEYS + """
state:
  backend: redis
  redis: "%s"
  on_error: %s
  timeout: 1s
""" % (redis_url, on_error)


def auth(key):
    return {"Authorization": "Bearer " + key}


def wait_until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


class RedisCase(unittest.TestCase):
    password = "redis-pass-42"
    on_error = "open"
    ndaemons = 2
    workers = 2

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        cls.redis = RedisServer(password=cls.password, persist=False)
        cls.url = cls.redis.url.replace("/0", "/3")     # SELECT 3
        cls.ds = []
        try:
            for _ in range(cls.ndaemons):
                cls.ds.append(Daemon(cls.mock, extra=state_conf(cls.url, cls.on_error),
                                     workers=cls.workers))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for d in cls.ds:
            d.stop()
        cls.redis.stop()
        cls.mock.stop()

    def setUp(self):
        if not self.redis.running():
            self.redis.start()
        self.mock.wait_stats(lambda s: s["inflight"] == 0, 2)
        self.redis.command("FLUSHALL", db=0)
        for d in self.ds:        # every link (re)connected
            self.assertTrue(wait_until(lambda: self.linked(d)), d.logs()[-2000:])
        self.redis.command("FLUSHALL")
        self.mock.reset()

    @staticmethod
    def errors(d):
        return d.metrics().get("llmux_state_errors_total", 0)

    def linked(self, d):
        """A limited request went through Redis (not around it)."""
        before = self.errors(d)
        st, _, _ = d.chat("probe", headers=auth("key-tok-1"))
        return st == 200 and self.errors(d) == before


class SharedLimitsTest(RedisCase):
    def test_two_instances_share_rpm(self):
        a, b = self.ds
        codes = []
        for i in range(5):
            codes.append(a.chat("a%d" % i, headers=auth("key-shared-1"))[0])
            codes.append(b.chat("b%d" % i, headers=auth("key-shared-1"))[0])
        self.assertEqual(codes.count(200), 6, codes)
        self.assertEqual(codes.count(429), 4, codes)
        st, h, body = b.chat("more", headers=auth("key-shared-1"))
        self.assertEqual(st, 429)
        self.assertEqual(body["error"]["code"], "rate_limit_exceeded")
        self.assertEqual(h["x-ratelimit-limit-requests"], "6")
        self.assertEqual(h["x-ratelimit-remaining-requests"], "0")
        self.assertGreaterEqual(int(h["retry-after"]), 1)
        # the figures live in the database the URL selected
        self.assertIsNotNone(self.redis.command("GET", "llmux:key:{shared}:req", db=3))
        self.assertIsNone(self.redis.command("GET", "llmux:key:{shared}:req", db=0))

    def test_two_instances_share_concurrency(self):
        a, b = self.ds
        out = []
        ts = [threading.Thread(target=lambda d=d, i=i: out.append(
            d.chat("c%d @mock:delay=500" % i, headers=auth("key-duo-1"))[0]))
            for i, d in enumerate([a, b])]
        for t in ts:
            t.start()
        self.mock.wait_stats(lambda s: s["inflight"] == 2)
        for d in (a, b):
            st, _, body = d.chat("third", headers=auth("key-duo-1"))
            self.assertEqual((st, body["error"]["code"]), (429, "concurrency_limit_exceeded"))
        for t in ts:
            t.join(10)
        self.assertEqual(out, [200, 200])
        self.assertEqual(b.chat("after", headers=auth("key-duo-1"))[0], 200)   # leases released

    def test_tpm_shared(self):
        a, b = self.ds
        self.assertEqual(a.chat("x" * 60, headers=auth("key-tok-1"))[0], 200)
        self.assertEqual(b.chat("y" * 60, headers=auth("key-tok-1"))[0], 200)
        # tokens are charged when an answer ends, after it was sent: b's charge reaches Redis a
        # moment after its client has the answer (one request more would pass on a's own charge)
        time.sleep(0.5)
        st, h, body = a.chat("z", headers=auth("key-tok-1"))
        self.assertEqual(st, 429, h)
        self.assertIn("tokens-per-minute", body["error"]["message"])

    def test_stale_leases_expire(self):
        # Leases nobody renews (their instance died) stop counting once they expire.
        sec, usec = self.redis.command("TIME")
        now_ms = int(sec) * 1000 + int(usec) // 1000
        key = "llmux:key:{duo}:lease"
        self.assertEqual(self.redis.command("ZADD", key, now_ms + 400, "dead.0.1", db=3), 1)
        self.assertEqual(self.redis.command("ZADD", key, now_ms + 400, "dead.0.2", db=3), 1)
        st, _, body = self.ds[0].chat("x", headers=auth("key-duo-1"))
        self.assertEqual((st, body["error"]["code"]), (429, "concurrency_limit_exceeded"))
        time.sleep(0.5)
        self.assertEqual(self.ds[0].chat("x", headers=auth("key-duo-1"))[0], 200)
        self.assertEqual(self.redis.command("ZCARD", key, db=3), 0)

    def test_slot_of_killed_instance_comes_back(self):
        extra = Daemon(self.mock, extra=state_conf(self.url), workers=1)
        try:
            # its link up first: before it, on_error: open serves the held calls without leases
            self.assertTrue(wait_until(lambda: self.linked(extra)), extra.logs()[-2000:])
            threading.Thread(target=lambda: extra.chat("held @mock:delay=10000",
                                                       headers=auth("key-duo-1")),
                             daemon=True).start()
            threading.Thread(target=lambda: extra.chat("held2 @mock:delay=10000",
                                                       headers=auth("key-duo-1")),
                             daemon=True).start()
            # both held before the probe (generous: a loaded box starts them slowly)
            self.assertEqual(self.mock.wait_stats(lambda s: s["inflight"] == 2, 15)["inflight"],
                             2)
            self.assertEqual(self.ds[0].chat("x", headers=auth("key-duo-1"))[0], 429)
            extra.proc.send_signal(signal.SIGKILL)
            extra.proc.wait()
        finally:
            extra.stop()
        # its two leases are not renewed: they lapse within the lease TTL (15 s)
        self.assertTrue(wait_until(
            lambda: self.ds[0].chat("x", headers=auth("key-duo-1"))[0] == 200, 25))


class RedisFaultsOpenTest(RedisCase):
    ndaemons = 1
    workers = 1         # one link: "back" is one reconnect to wait for

    def test_killed_mid_test_serves_then_limits_resume(self):
        d = self.ds[0]
        for _ in range(6):
            self.assertEqual(d.chat("x", headers=auth("key-shared-1"))[0], 200)
        self.assertEqual(d.chat("x", headers=auth("key-shared-1"))[0], 429)
        self.redis.kill()
        # on_error: open — served without limits, counted, logged once
        codes = [d.chat("down%d" % i, headers=auth("key-shared-1"))[0] for i in range(5)]
        self.assertEqual(codes, [200] * 5)
        m = d.metrics()
        self.assertGreaterEqual(m["llmux_state_errors_total"], 5)
        lines = d.wait_log("serving without limits (on_error: open)")
        self.assertEqual(len(lines), 1, lines)
        self.assertNotIn(self.password, d.logs())
        # back (empty: its data went with it): limits apply again once the link is rebuilt
        self.redis.start()
        self.assertTrue(wait_until(
            lambda: d.chat("probe", headers=auth("key-shared-1"))[1].get(
                "x-ratelimit-remaining-requests") == "5", 15))
        codes = [d.chat("up%d" % i, headers=auth("key-shared-1"))[0] for i in range(6)]
        self.assertEqual(codes.count(429), 1, codes)
        self.assertTrue(d.wait_log("connected to 127.0.0.1"))

    def test_slow_redis_times_out(self):
        d = self.ds[0]
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            st, _, _ = d.chat("slow", headers=auth("key-shared-1"))
            self.assertEqual(st, 200)               # state.timeout 1s, then open
            self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)


class RedisFaultsClosedTest(RedisCase):
    ndaemons = 1
    on_error = "closed"

    def test_closed_answers_503(self):
        d = self.ds[0]
        self.redis.kill()
        st, h, body = d.chat("x", headers=auth("key-shared-1"))
        self.assertEqual(st, 503)
        self.assertEqual(body["error"]["code"], "state_unavailable")
        self.assertEqual(h["retry-after"], "1")
        self.assertEqual(self.mock.stats()["received"], 0)
        # a key without limits does not need the shared state
        self.redis.start()
        self.assertTrue(wait_until(lambda: d.chat("x", headers=auth("key-shared-1"))[0] == 200,
                                   15))


class RedisDownAtStartTest(unittest.TestCase):
    def test_starts_serves_and_connects_later(self):
        mock = Mock()
        redis = RedisServer(persist=False)
        redis.stop()
        d = Daemon(mock, extra=state_conf(redis.url), workers=2)
        try:
            st, _, _ = d.chat("x", headers=auth("key-shared-1"))
            self.assertEqual(st, 200)
            self.assertTrue(d.wait_log("cannot reach 127.0.0.1:%d" % redis.port))
            redis.start()
            self.assertTrue(wait_until(
                lambda: d.chat("x", headers=auth("key-shared-1"))[0] == 429, 20))
        finally:
            self.assertEqual(d.stop(), 0)
            redis.stop()
            mock.stop()
