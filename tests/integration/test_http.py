"""The HTTP/1.1 layer as a client sees it: keep-alive, pipelining, Expect, Connection: close,
every limit's status code, smuggling shapes refused, slow clients timed out."""
import json
import re
import socket
import time

from harness import Case, chat_body

CHAT = json.dumps(chat_body("hi")).encode()


def post(body=CHAT, extra=b"", path=b"/v1/chat/completions"):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def statuses(raw):
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) [A-Za-z]", raw)]


def status_of(raw):
    s = statuses(raw)
    return s[0] if s else None


class HttpTest(Case):
    daemon_kwargs = {"header_timeout": "300ms", "body_timeout": "300ms"}

    def test_keepalive_reuses_connection(self):
        before = self.d.metrics()["llmux_connections_accepted_total"]
        c = self.d.conn()
        for i in range(3):
            c.request("POST", "/v1/chat/completions", body=CHAT)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertNotIn("connection", {k.lower() for k, _ in r.getheaders()})
            r.read()
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        after = [l for l in text.splitlines() if l.startswith("llmux_connections_accepted_total")]
        # the first scrape counted its own connection; all four requests here share one more
        self.assertEqual(float(after[0].split()[1]), before + 1)

    def test_pipelined_requests_answered_in_order(self):
        bodies = [json.dumps(chat_body("n%d @mock:delay=%d" % (i, d))).encode()
                  for i, d in enumerate((150, 0, 60))]
        raw = b"".join(post(b) for b in bodies)
        raw += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        out = self.d.raw(raw)
        self.assertEqual(statuses(out), [200, 200, 200, 200])
        self.assertLess(out.index(b"echo: n0"), out.index(b"echo: n1"))
        self.assertLess(out.index(b"echo: n1"), out.index(b"echo: n2"))
        self.assertIn(b'"status":"ok"', out)

    def test_connection_close_stops_processing(self):
        raw = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        out = self.d.raw(raw)
        self.assertEqual(statuses(out), [200])
        self.assertIn(b"Connection: close", out)

    def test_http10_closes_by_default(self):
        out = self.d.raw(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(statuses(out), [200])

    def test_expect_100_continue(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        head = post(extra=b"Expect: 100-continue\r\n")
        s.sendall(head[: len(head) - len(CHAT)])
        interim = s.recv(100)
        self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
        s.sendall(CHAT)
        s.settimeout(5)
        data = b""
        while b"echo: hi" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertIn(b"HTTP/1.1 200 OK", data)

    def test_chunked_request_body(self):
        body = CHAT
        chunked = (b"%x\r\n" % 10) + body[:10] + b"\r\n" + (b"%x\r\n" % (len(body) - 10)) + \
            body[10:] + b"\r\n0\r\n\r\n"
        raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + chunked)
        out = self.d.raw(raw)
        self.assertEqual(status_of(out), 200, out)
        self.assertIn(b"echo: hi", out)

    def assertRefused(self, raw, status):
        out = self.d.raw(raw)
        self.assertEqual(status_of(out), status, out[:200])
        self.assertIn(b"Connection: close", out)
        body = out.split(b"\r\n\r\n", 1)[1]
        self.assertIn("error", json.loads(body))
        return out

    def test_smuggling_shapes_refused(self):
        cases = [
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Content-Length: 5\r\n\r\nhello",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET /healthz HTTP/1.1\nHost: x\n\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad[Name]: 1\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhelloXX0\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n",
        ]
        for raw in cases:
            with self.subTest(raw=raw[:60]):
                self.assertRefused(raw, 400)
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_bad_version_505(self):
        self.assertRefused(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    def test_limits(self):
        self.assertRefused(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)
        self.assertRefused(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 +
                           b"\r\n\r\n", 431)
        many = b"".join(b"X-H%d: 1\r\n" % i for i in range(60))
        self.assertRefused(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", 431)
        self.assertRefused(post(b"x" * 70000), 413)
        big = b"10000\r\n" + b"x" * 0x10000 + b"\r\n" + b"10000\r\n" + b"x" * 0x10000 + b"\r\n0\r\n\r\n"
        self.assertRefused(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n" + big, 413)

    def test_413_before_body_arrives(self):
        """A Content-Length over the limit is refused without waiting for the body."""
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        s.settimeout(2)
        self.assertEqual(status_of(s.recv(4096)), 413)
        s.close()

    def test_slow_headers_408(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        t0 = time.monotonic()
        s.settimeout(3)
        data = s.recv(4096)
        self.assertEqual(status_of(data), 408)
        self.assertLess(time.monotonic() - t0, 1.5)
        s.close()

    def test_slow_body_408(self):
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.sendall(post()[:-5])
        s.settimeout(3)
        self.assertEqual(status_of(s.recv(4096)), 408)
        s.close()
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_idle_connection_closed_after_idle_timeout_only(self):
        """An idle keep-alive connection (after its first request) is not closed by the (short)
        header timeout; a new one that says nothing is (test_hostile.HeaderTimeoutTest)."""
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.settimeout(3)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status_of(s.recv(4096)), 200)
        time.sleep(0.5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status_of(s.recv(4096)), 200)
        s.close()

    def test_bad_timeout_header(self):
        st, _, body = self.d.chat("x", headers={"X-Llmux-Timeout-Ms": "soon"})
        self.assertEqual(st, 400)
        self.assertEqual(body["error"]["param"], "X-Llmux-Timeout-Ms")
