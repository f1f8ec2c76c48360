"""Keys and limits on the memory backend: exact for the whole process with several workers
(rpm, max_concurrency, limits.max_inflight), x-ratelimit-* headers, tpm charged from usage
(streams included), key_sha256, and gather items waiting for their key's slots."""
import hashlib
import json
import threading
import time

from harness import Case

HASHED_KEY = "key-hashed-secret-7"


def parallel(n, fn):
    """Runs fn(i) for i < n in threads at once; the results in order."""
    out = [None] * n
    start = threading.Event()

    def run(i):
        start.wait()
        out[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(30)
    return out


def watch_inflight(mock):
    """Samples the mock's in-flight gauge every 10 ms: (samples, stop function)."""
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append(mock.stats()["inflight"])
            time.sleep(0.01)
    t = threading.Thread(target=watch)
    t.start()

    def stop():
        done.set()
        t.join()
    return seen, stop


class ProcessWideTest(Case):
    """workers: 4 — the figures hold for the process, not per worker."""
    workers = 4
    extra = """
keys:
  - {name: rated, key: key-rated-1, rpm: 10}
  - {name: narrow, key: key-narrow-1, max_concurrency: 2}
  - {name: open, key: key-open-1}
"""

    def test_rpm_exact(self):
        t0 = time.monotonic()
        codes = parallel(24, lambda i: self.d.chat("r%d" % i, headers={
            "Authorization": "Bearer key-rated-1"})[0])
        elapsed = time.monotonic() - t0
        ok = codes.count(200)
        self.assertEqual(ok + codes.count(429), 24, codes)
        # 10 at once, then one more per 6 s: with 1 worker's share (old behaviour) 4 workers
        # would have let through 4 × 3 = 12 or fewer in uneven ways.
        self.assertGreaterEqual(ok, 10)
        self.assertLessEqual(ok, 10 + int(elapsed / 6))
        self.assertEqual(self.mock.stats()["received"], ok)

    def test_concurrency_exact(self):
        auth = {"Authorization": "Bearer key-narrow-1"}
        seen, stop = watch_inflight(self.mock)
        res = parallel(8, lambda i: self.d.chat("c%d @mock:delay=400" % i, headers=auth))
        stop()
        codes = [r[0] for r in res]
        self.assertEqual(codes.count(200), 2, codes)
        self.assertEqual(codes.count(429), 6, codes)
        for st, h, body in res:
            if st == 429:
                self.assertEqual(body["error"]["code"], "concurrency_limit_exceeded")
                self.assertEqual(h["retry-after"], "1")
        self.assertLessEqual(max(seen), 2)
        self.assertEqual(self.d.chat("after", headers=auth)[0], 200)   # the slots came back



class InflightProcessWideTest(Case):
    workers = 4
    limits = """
  max_inflight: 3
  queue: 0
"""
    extra = """
keys:
  - {name: open, key: key-open-1}
"""

    def test_max_inflight_exact(self):
        auth = {"Authorization": "Bearer key-open-1"}
        res = parallel(9, lambda i: self.d.chat("i%d @mock:delay=400" % i, headers=auth))
        codes = [r[0] for r in res]
        self.assertEqual(codes.count(200), 3, codes)
        self.assertEqual(codes.count(503), 6, codes)
        self.assertEqual(self.mock.stats()["received"], 3)


class HeadersAndTokensTest(Case):
    extra = """
keys:
  - {name: both, key: key-both-1, rpm: 5, tpm: 100}
  - {name: tok, key: key-tok-1, tpm: 60}
  - {name: plain, key: key-plain-1, max_concurrency: 5}
  - name: hashed
    key_sha256: "%s"
    rpm: 50
""" % hashlib.sha256(HASHED_KEY.encode()).hexdigest()

    def test_request_headers(self):
        auth = {"Authorization": "Bearer key-both-1"}
        st, h, _ = self.d.chat("x", headers=auth)
        self.assertEqual(st, 200)
        self.assertEqual(h["x-ratelimit-limit-requests"], "5")
        self.assertEqual(h["x-ratelimit-remaining-requests"], "4")
        self.assertRegex(h["x-ratelimit-reset-requests"], r"^\d+(\.\d+)?s$")
        self.assertEqual(h["x-ratelimit-limit-tokens"], "100")
        self.assertEqual(h["x-ratelimit-remaining-tokens"], "100")   # charged at the end
        st, h, _ = self.d.chat("x", headers=auth)
        self.assertEqual(h["x-ratelimit-remaining-requests"], "3")
        self.assertLess(int(h["x-ratelimit-remaining-tokens"]), 100)
        # a key without rpm/tpm gets none of them
        st, h, _ = self.d.chat("x", headers={"Authorization": "Bearer key-plain-1"})
        self.assertEqual(st, 200)
        self.assertNotIn("x-ratelimit-limit-requests", h)
        # the refusal carries them too
        for _ in range(3):
            self.d.chat("x", headers=auth)
        st, h, body = self.d.chat("x", headers=auth)
        self.assertEqual((st, body["error"]["code"]), (429, "rate_limit_exceeded"))
        self.assertEqual(h["x-ratelimit-remaining-requests"], "0")
        self.assertGreaterEqual(int(h["retry-after"]), 1)

    def test_tpm_charged_from_usage_streams_too(self):
        auth = {"Authorization": "Bearer key-tok-1"}
        # the mock's usage: prompt = body bytes / 4, completion = 7; a ~160-byte body ≈ 47
        st, _, body = self.d.chat("a" * 40, headers=auth)
        self.assertEqual(st, 200)
        used = body["usage"]["total_tokens"]
        self.assertGreater(used, 20)
        st, h, data = self.d.request("POST", "/v1/chat/completions", {
            "model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "b" * 40}]}, auth)
        self.assertEqual(st, 200)
        self.assertIn(b"[DONE]", data)
        # 60 tokens a minute are spent now (two answers of ~45): the next is refused
        st, h, body = self.d.chat("c", headers=auth)
        self.assertEqual(st, 429, h)
        self.assertIn("tokens-per-minute", body["error"]["message"])
        self.assertEqual(h["x-ratelimit-remaining-tokens"], "0")
        self.assertEqual(self.mock.stats()["received"], 2)

    def test_key_sha256(self):
        st, h, _ = self.d.chat("x", headers={"Authorization": "Bearer " + HASHED_KEY})
        self.assertEqual(st, 200)
        self.assertEqual(h["x-ratelimit-limit-requests"], "50")
        st, _, body = self.d.chat("x", headers={"Authorization": "Bearer " + HASHED_KEY + "x"})
        self.assertEqual((st, body["error"]["code"]), (401, "invalid_api_key"))
        digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
        st, _, _ = self.d.chat("x", headers={"Authorization": "Bearer " + digest})
        self.assertEqual(st, 401)       # the digest itself is not a key
        self.assertNotIn(HASHED_KEY, self.d.logs())


class GatherWaitsTest(Case):
    workers = 2
    extra = """
keys:
  - {name: four, key: key-four-1, max_concurrency: 4, rpm: 100}
"""

    def test_gather_items_wait_for_slots(self):
        auth = {"Authorization": "Bearer key-four-1"}
        seen, stop = watch_inflight(self.mock)
        # return_exceptions false: the answer (and its x-ratelimit-* head) comes at the end; a
        # return_exceptions gather sends its head first and writes its document as items end.
        body = {"max_concurrency": 8, "return_exceptions": False, "requests": [
            {"model": "m", "messages": [{"role": "user", "content": "g%d @mock:delay=300" % i}]}
            for i in range(8)]}
        t0 = time.monotonic()
        st, h, data = self.d.request("POST", "/v1/gather", body, auth, timeout=20)
        elapsed = time.monotonic() - t0
        stop()
        self.assertEqual(st, 200, data)
        out = json.loads(data)
        self.assertEqual(out["succeeded"], 8, out)
        self.assertLessEqual(max(seen), 4)
        self.assertGreaterEqual(elapsed, 0.6)       # two waves of four
        self.assertEqual(h["x-ratelimit-limit-requests"], "100")
        self.assertLessEqual(int(h["x-ratelimit-remaining-requests"]), 92 + int(elapsed / 0.6))

    def test_waiting_item_keeps_its_deadline(self):
        auth = {"Authorization": "Bearer key-four-1"}
        body = {"item_timeout_ms": 400, "requests": [
            {"model": "m", "messages": [{"role": "user", "content": "w%d @mock:delay=1500" % i}]}
            for i in range(6)]}
        st, _, data = self.d.request("POST", "/v1/gather", body, auth, timeout=20)
        self.assertEqual(st, 200)
        out = json.loads(data)
        self.assertEqual([r["status"] for r in out["results"]], [504] * 6)
        self.assertEqual(self.mock.stats()["received"], 4)   # two never got a slot
