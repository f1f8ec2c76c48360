"""Upstreams over HTTP/2 (nghttpx in front of the mock: TLS with ALPN, and h2c on plain http)
next to HTTP/1.1: calls share connections, a cancelled call resets only its stream, a paused
stream doesn't stall its siblings, deadlines, GOAWAY and a lost connection retry, the breaker;
HTTP/1.1 calls beyond max_connections wait in llmuxd's queue. nghttpx's access log tells which
connection (client port) and TLS session each request used."""
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness

LOG_FORMAT = "$http_x_request_id $remote_port $alpn $tls_session_reused $status"


class Nghttpx:
    """nghttpx with a TLS frontend and an h2c one, both relaying to backend_port."""

    def __init__(self, dir, backend_port, name, *opts):
        self.tls, self.plain = harness.free_port(), harness.free_port()
        self.log = os.path.join(dir, name + "-access.log")
        err = os.path.join(dir, name + "-error.log")
        self.proc = subprocess.Popen(
            ["nghttpx", "--conf=/dev/null", "--workers=1", "--no-ocsp",
             "-f127.0.0.1,%d" % self.tls, "-f127.0.0.1,%d;no-tls" % self.plain,
             "-b127.0.0.1,%d" % backend_port, "--accesslog-file=" + self.log,
             "--accesslog-format=" + LOG_FORMAT, "--errorlog-file=" + err, *opts,
             os.path.join(dir, "key.pem"), os.path.join(dir, "cert.pem")],
            stderr=subprocess.DEVNULL, start_new_session=True)     # its start-up notice
        harness.wait_port(self.tls, self.proc)
        harness.wait_port(self.plain, self.proc)

    def requests(self, prefix):
        """{request id: (client port, alpn, tls session reused, status)} for ids with prefix."""
        out = {}
        with open(self.log) as f:
            for line in f:
                rid, port, alpn, reused, status = line.split()
                if rid.startswith(prefix):
                    out[rid] = (port, alpn, reused, status)
        return out

    def wait_requests(self, prefix, n, timeout=5.0):
        end = time.monotonic() + timeout
        while True:
            got = self.requests(prefix)
            if len(got) >= n or time.monotonic() > end:
                return got
            time.sleep(0.02)

    def kill(self):
        """Ends nghttpx and its worker at once: every connection is lost mid-way."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


CONFIG = """listen: ["127.0.0.1:{port}"]
workers: 1
health: {failures: 2, cooldown: 30s}
log: {level: info, format: json}
upstreams:
  - {name: h2, base_url: "https://127.0.0.1:%(tls)d/v1", ca_file: "%(cert)s"}
  - {name: h2c, base_url: "http://127.0.0.1:%(plain)d/v1", http: 2}
  - {name: h1, base_url: "http://127.0.0.1:%(plain)d/v1", http: 1.1, max_connections: 2}
  - {name: short, base_url: "https://127.0.0.1:%(short)d/v1", ca_file: "%(cert)s", http: 2}
  - {name: fragile, base_url: "https://127.0.0.1:%(fragile)d/v1", ca_file: "%(cert)s"}
  - {name: tls1, base_url: "https://127.0.0.1:%(tls1)d/v1", ca_file: "%(cert)s", http: 1.1}
  - {name: same1, base_url: "https://127.0.0.1:%(tls)d/v1", ca_file: "%(cert)s", http: 1.1}
models:
  - {name: h2, retries: 2, backoff: {base: 10ms, max: 20ms}, targets: [{upstream: h2}]}
  - {name: h2c, retries: 2, backoff: {base: 10ms, max: 20ms}, targets: [{upstream: h2c}]}
  - {name: h1, retries: 2, backoff: {base: 10ms, max: 20ms}, targets: [{upstream: h1}]}
  - {name: short, retries: 2, backoff: {base: 10ms, max: 20ms}, targets: [{upstream: short}]}
  - {name: tls1, retries: 2, backoff: {base: 10ms, max: 20ms}, targets: [{upstream: tls1}]}
  - {name: same1, retries: 0, targets: [{upstream: same1}]}
  - name: fragile
    strategy: fallback
    retries: 0
    targets: [{upstream: fragile}, {upstream: h2}]
"""

KINDS = ("h1", "h2", "h2c")


def libcurl_version():
    """The libcurl llmuxd links, e.g. "7.88.1"."""
    lib = ctypes.CDLL(ctypes.util.find_library("curl") or "libcurl.so.4")
    lib.curl_version.restype = ctypes.c_char_p
    return lib.curl_version().decode().split()[0].partition("/")[2]


@unittest.skipUnless(shutil.which("nghttpx") and shutil.which("openssl"),
                     "nghttpx (nghttp2-proxy) or openssl is not installed")
class Http2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="llmux-h2-")
        cls.cert = harness.self_signed_cert(cls.dir)[0]
        cls.mock = harness.Mock()
        cls.ng = Nghttpx(cls.dir, cls.mock.port, "main")
        # Closes a connection idle for 1 s: the next one resumes the TLS session.
        cls.short = Nghttpx(cls.dir, cls.mock.port, "short", "--frontend-http2-read-timeout=1s")
        cls.fragile = Nghttpx(cls.dir, cls.mock.port, "fragile")
        # HTTP/1.1 over TLS on an origin of its own (same1 shares the h2 one).
        cls.tls1 = Nghttpx(cls.dir, cls.mock.port, "tls1")
        text = CONFIG % {"tls": cls.ng.tls, "plain": cls.ng.plain, "cert": cls.cert,
                         "short": cls.short.tls, "fragile": cls.fragile.tls,
                         "tls1": cls.tls1.tls}
        cls.d = harness.Daemon(None, text=text)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        for ng in (cls.ng, cls.short, cls.fragile, cls.tls1):
            ng.kill()
        cls.mock.stop()
        shutil.rmtree(cls.dir, True)
        if rc != 0:
            raise AssertionError("llmuxd exited with %s" % rc)

    def setUp(self):
        self.mock.wait_stats(lambda s: s["inflight"] == 0, 3)
        self.mock.reset()

    def burst(self, model, n, directives, prefix, timeout=20):
        return harness.burst(self.d, model, n, directives, prefix, timeout)

    def stream_open(self, model, directives, rid, timeout=10):
        """Sends a streaming call and reads its response head; returns (socket, file)."""
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=timeout)
        body = json.dumps(harness.chat_body("hi @mock:" + directives, model=model,
                                            stream=True)).encode()
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: %s\r\n"
                   "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                   % (rid, len(body))).encode() + body)
        f = s.makefile("rb")
        self.assertIn(b" 200 ", f.readline())
        while f.readline() not in (b"\r\n", b""):
            pass
        return s, f

    def test_calls_share_few_connections(self):
        for kind in KINDS:
            with self.subTest(kind):
                prefix = "share-" + kind
                self.assertEqual(self.burst(kind, 24, "delay=300", prefix), [200] * 24)
                seen = self.ng.wait_requests(prefix, 24)
                ports = {v[0] for v in seen.values()}
                alpns = {v[1] for v in seen.values()}
                if kind == "h1":
                    # max_connections 2: the other 22 calls waited in llmuxd's queue.
                    self.assertLessEqual(len(ports), 2)
                    self.assertEqual(alpns, {"http/1.1"})
                else:
                    # The burst waited for the first connection and shared it (the server
                    # takes 100 streams on one).
                    self.assertEqual(len(ports), 1, (kind, seen))
                    self.assertEqual(alpns, {"h2"} if kind == "h2" else {"h2c"})

    def test_h2_calls_after_http11_calls_to_the_same_origin(self):
        # libcurl 7.88 lets a transfer that wants h2 take an idle HTTP/1.1 connection to the
        # same origin, where a burst of them stalled to its deadline: they never meet.
        self.assertEqual(self.burst("same1", 8, "delay=300", "same-h1"), [200] * 8)
        self.assertEqual({v[1] for v in self.ng.wait_requests("same-h1-", 8).values()},
                         {"http/1.1"})
        self.assertEqual(self.burst("h2", 150, "delay=300", "same-h2", timeout=15), [200] * 150)
        seen = self.ng.wait_requests("same-h2-", 150)
        self.assertEqual({v[1] for v in seen.values()}, {"h2"})

    def test_large_bodies_arrive_whole(self):
        # Prompts of 16 KiB to 300 KB: several fills of libcurl's 16 KiB upload buffer and
        # (h2) several flow-control windows. llmuxd frees that buffer once a body has left, on
        # connections the concurrent calls share; the next round reuses the freed handles.
        def prompt(tag, size):
            return "".join("%s-%d " % (tag, k) for k in range(size // 7))[:size]

        for kind in ("h2", "h2c", "tls1"):
            with self.subTest(kind):
                for rnd in range(2):
                    sizes = (16384, 70000, 300000)
                    got = [None] * len(sizes)

                    def one(i):
                        text = prompt("%s%d%d" % (kind, rnd, i), sizes[i])
                        st, _, body = self.d.request(
                            "POST", "/v1/chat/completions", harness.chat_body(text, model=kind),
                            timeout=20)
                        ans = json.loads(body) if st == 200 else {}
                        got[i] = (st, ans.get("usage", {}).get("prompt_tokens", 0) * 4 >= len(text)
                                  and text.startswith(ans["choices"][0]["message"]["content"][6:]))

                    threads = [threading.Thread(target=one, args=(i,))
                               for i in range(len(sizes))]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    self.assertEqual(got, [(200, True)] * len(sizes), (kind, rnd))
                text = prompt(kind + "-last", 100000)
                st, _, _ = self.d.request("POST", "/v1/chat/completions",
                                          harness.chat_body(text, model=kind), timeout=20)
                self.assertEqual(st, 200)
                sent = json.loads(self.mock.last()["body"])
                self.assertEqual(sent["messages"][0]["content"], text)

    def test_memory_per_waiting_call(self):
        # 600 calls of 1.5 s in flight over h2: what each holds while it waits (libcurl's
        # receive buffer and easy handle, llmuxd's request) is ~22 KB; 42 KB before the
        # upload buffer was freed once sent and the request's proxy sized to its attempts.
        n = 600
        body = json.dumps(harness.chat_body("hi @mock:delay=1500", model="h2")).encode()
        head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                "application/json\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
        base = self.d.rss_kb()
        socks = []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", self.d.port), timeout=20)
                s.sendall(head + body)
                socks.append(s)
            self.mock.wait_stats(lambda st: st["inflight"] >= n, 10)
            grown = self.d.rss_kb() - base
            statuses = [s.makefile("rb").readline().split()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        self.assertEqual(statuses, [b"200"] * n)
        # The bound holds where llmuxd frees curl's upload buffer (7.88.x, whose code was read);
        # ASan's redzones and quarantine weigh more.
        if "asan" not in harness.BUILD and libcurl_version().startswith("7.88."):
            self.assertLess(grown / n, 30, "KB per in-flight call")

    def test_cancel_resets_only_its_stream(self):
        for kind in KINDS[1:]:
            with self.subTest(kind):
                self.mock.reset()
                prefix = "cancel-" + kind
                conns = [self.stream_open(kind, "stream=20,interval=100", "%s-%d" % (prefix, i))
                         for i in range(3)]
                conns[0][1].close()                     # the client goes: its call is cancelled
                conns[0][0].close()
                for s, f in conns[1:]:
                    events = list(harness.read_chunked_events(f))
                    self.assertEqual(events[-1][0], "END")
                    self.assertIn(b"[DONE]", events[-2][1])
                    f.close()
                    s.close()
                # nghttpx got the stream's RST_STREAM: it aborted that backend request only.
                st = self.mock.wait_stats(lambda s: s["aborted"] >= 1 and s["inflight"] == 0)
                self.assertEqual((st["aborted"], st["completed"]), (1, 2))
                self.assertEqual(self.burst(kind, 1, "delay=0", prefix + "-after"), [200])
                seen = self.ng.wait_requests(prefix, 4)
                # One connection carried all four: the cancel reset a stream, not the connection.
                self.assertEqual(len({v[0] for v in seen.values()}), 1, seen)

    def test_paused_stream_does_not_stall_siblings(self):
        for kind in KINDS:
            with self.subTest(kind):
                # 200 chunks of 60 KB that nobody reads: llmuxd pauses this call.
                s, f = self.stream_open(kind, "stream=200,bytes=60000", "paused-" + kind)
                time.sleep(0.3)
                self.assertEqual(self.burst(kind, 3, "delay=0", "sibling-" + kind, timeout=10),
                                 [200] * 3)
                f.close()
                s.close()

    def test_deadline_ends_only_its_call(self):
        for kind in KINDS:
            with self.subTest(kind):
                out = {}
                t = threading.Thread(target=lambda: out.update(
                    sibling=self.burst(kind, 1, "delay=600", "deadline-sib-" + kind)))
                t.start()
                st, _, body = self.d.chat("hi @mock:delay=5000", model=kind,
                                          headers={"X-Llmux-Timeout-Ms": "300"})
                t.join()
                self.assertEqual(st, 504, body)
                self.assertEqual(out["sibling"], [200])

    def test_goaway_during_calls(self):
        # SIGHUP: nghttpx reloads, its old worker sends GOAWAY and finishes what it accepted;
        # calls in flight and calls after all succeed.
        out = {}
        t = threading.Thread(target=lambda: out.update(
            first=self.burst("short", 6, "delay=800", "goaway-a")))
        t.start()
        self.mock.wait_stats(lambda s: s["inflight"] >= 6, 5)
        self.short.proc.send_signal(signal.SIGHUP)
        time.sleep(0.1)
        self.assertEqual(self.burst("short", 6, "delay=100", "goaway-b"), [200] * 6)
        t.join()
        self.assertEqual(out["first"], [200] * 6)

    def test_tls_session_resumed(self):
        self.assertEqual(self.burst("short", 1, "delay=0", "resume-a"), [200])
        time.sleep(1.5)                                 # the server closes the idle connection
        self.assertEqual(self.burst("short", 1, "delay=0", "resume-b"), [200])
        first, second = self.short.wait_requests("resume-", 2).values()
        self.assertNotEqual(first[0], second[0])        # a new connection …
        self.assertEqual(second[2], "r")                # … that resumed the TLS session

    def test_lost_connection_fails_only_its_streams(self):
        out = {}
        t1 = threading.Thread(target=lambda: out.update(
            fragile=self.burst("fragile", 4, "delay=1500", "lost")))
        t2 = threading.Thread(target=lambda: out.update(
            other=self.burst("h2", 4, "delay=1500", "kept")))
        t1.start()
        t2.start()
        self.mock.wait_stats(lambda s: s["inflight"] >= 8, 5)
        self.fragile.kill()
        t1.join()
        t2.join()
        self.assertEqual(out["other"], [200] * 4)       # the other upstream's streams went on
        self.assertEqual(out["fragile"], [200] * 4)     # the lost streams fell back to h2
        # The dead upstream's breaker is open now: the next call goes straight to h2.
        st, h, _ = self.d.chat("hi", model="fragile")
        self.assertEqual((st, h["x-llmux-attempts"], h["x-llmux-upstream"]), (200, "1", "h2"))


if __name__ == "__main__":
    unittest.main()
