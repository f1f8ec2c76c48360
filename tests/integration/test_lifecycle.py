"""Request lifecycle: deadlines, cancellation when the client goes away, SSE streaming relayed
chunk by chunk with backpressure, and errors mid-stream — checked from both ends."""
import json
import socket
import time

from harness import Case, chat_body, read_chunked_events


def stream_request(port, content, model="m", headers=b""):
    """Opens a raw connection and sends a streaming chat request; returns (socket, file)."""
    body = json.dumps(chat_body(content, model=model, stream=True)).encode()
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
              % (len(body), headers) + body)
    f = s.makefile("rb")
    status = f.readline()
    head = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode().split(":", 1)
        head[k.strip().lower()] = v.strip()
    return s, f, int(status.split()[1]), head


def open_and_abandon(port, content, after):
    body = json.dumps(chat_body(content)).encode()
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body)
    time.sleep(after)
    s.close()


class DeadlineTest(Case):
    def test_deadline_504_and_upstream_aborted(self):
        t0 = time.monotonic()
        st, _, body = self.d.chat("x @mock:delay=2000", headers={"X-Llmux-Timeout-Ms": "100"})
        wall = time.monotonic() - t0
        self.assertEqual(st, 504)
        self.assertEqual(body["error"]["type"], "timeout_error")
        self.assertEqual(body["error"]["code"], "deadline_exceeded")
        self.assertLess(wall, 0.5)
        self.assertGreaterEqual(wall, 0.09)
        s = self.mock.wait_stats(lambda s: s["aborted"] == 1)
        self.assertEqual((s["aborted"], s["completed"]), (1, 0))
        m = self.d.metrics()
        self.assertGreaterEqual(m['llmux_requests_total{outcome="deadline"}'], 1)
        self.assertGreaterEqual(m['llmux_upstream_aborted_total{reason="deadline"}'], 1)

    def test_deadline_capped_by_timeouts_max(self):
        st, _, _ = self.d.chat("x @mock:delay=1500", headers={"X-Llmux-Timeout-Ms": "999999"})
        self.assertEqual(st, 504)   # timeouts.max is 1s in this class

    def test_retries_fit_inside_deadline(self):
        t0 = time.monotonic()
        st, h, _ = self.d.chat("x @mock:status=503,retry_after=5", model="m-retry",
                               headers={"X-Llmux-Timeout-Ms": "300"})
        self.assertLess(time.monotonic() - t0, 0.45)
        self.assertIn(st, (502, 503, 504))
        self.assertEqual(self.mock.stats()["received"], 1)   # Retry-After 5s can't fit

    def test_deadline_mid_stream_sends_error_event_and_truncates(self):
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=20,interval=100",
                                            headers=b"X-Llmux-Timeout-Ms: 350\r\n")
        self.assertEqual(status, 200)
        chunks = list(read_chunked_events(f))
        s.close()
        self.assertEqual(chunks[-1][0], "TRUNCATED")
        last = chunks[-2][1]
        self.assertIn(b'"deadline_exceeded"', last)
        self.assertNotIn(b"[DONE]", b"".join(c for _, c in chunks[:-1]))
        self.mock.wait_stats(lambda s: s["aborted"] == 1)
        self.assertEqual(self.mock.stats()["aborted"], 1)

    extra = """
timeouts:
  default: 800ms
  max: 1s
"""


class CancelTest(Case):
    limits = """
  send_timeout: 1s
  stream_high_water: 64k
  stream_low_water: 16k
"""

    def test_client_disconnect_aborts_upstream(self):
        open_and_abandon(self.d.port, "x @mock:delay=2000", 0.1)
        s = self.mock.wait_stats(lambda s: s["aborted"] == 1)
        self.assertEqual(s["aborted"], 1)
        m = self.d.metrics()
        self.assertEqual(m["llmux_inflight_requests"], 1)   # the scrape itself
        self.assertGreaterEqual(m['llmux_upstream_aborted_total{reason="client_disconnect"}'], 1)

    def test_200_disconnects_leave_nothing_behind(self):
        for i in range(200):
            open_and_abandon(self.d.port, "x @mock:delay=2000", 0.005)
        s = self.mock.wait_stats(lambda s: s["inflight"] == 0 and s["received"] >= 190, 5)
        self.assertEqual(s["inflight"], 0)
        self.assertEqual(s["completed"], 0)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = self.d.metrics()
            if m["llmux_upstream_inflight"] == 0 and m["llmux_connections_open"] == 1:
                break
            time.sleep(0.02)
        self.assertEqual(m["llmux_inflight_requests"], 1)
        self.assertEqual(m["llmux_upstream_inflight"], 0)
        self.assertEqual(m["llmux_connections_open"], 1)

    def test_pipelined_behind_cancelled_never_sent(self):
        body = json.dumps(chat_body("x @mock:delay=2000")).encode()
        one = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % len(body) + body)
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.sendall(one * 3)
        time.sleep(0.15)
        s.close()
        st = self.mock.wait_stats(lambda s: s["aborted"] == 1)
        time.sleep(0.1)
        st = self.mock.stats()
        self.assertEqual((st["received"], st["aborted"]), (1, 1))

    def test_stream_relayed_as_produced(self):
        t0 = time.monotonic()
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=5,interval=200")
        self.assertEqual(status, 200)
        self.assertEqual(head["content-type"], "text/event-stream")
        self.assertEqual(head["transfer-encoding"], "chunked")
        events = list(read_chunked_events(f))
        s.close()
        self.assertEqual(events[-1][0], "END")
        data = [(t - t0, c) for t, c in events[:-1]]
        self.assertLess(data[0][0], 0.15)           # first chunk long before the last is made
        self.assertGreater(data[-1][0], 0.75)
        self.assertIn(b"data: [DONE]\n\n", data[-1][1])
        content = b"".join(c for _, c in data)
        self.assertEqual(content.count(b"data: "), 7)  # 5 deltas + final + [DONE]
        s = self.mock.stats()
        self.assertEqual((s["completed"], s["aborted"]), (1, 0))

    def test_anthropic_stream_translated(self):
        s, f, status, head = stream_request(self.d.port, "hey @mock:stream=3", model="claude")
        events = list(read_chunked_events(f))
        s.close()
        text = b"".join(c for _, c in events[:-1]).decode()
        self.assertEqual(events[-1][0], "END")
        self.assertIn("chat.completion.chunk", text)
        self.assertTrue(text.endswith("data: [DONE]\n\n"))

    def test_reset_mid_stream_error_event_and_truncation(self):
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=10,reset_after=2")
        self.assertEqual(status, 200)
        events = list(read_chunked_events(f))
        s.close()
        self.assertEqual(events[-1][0], "TRUNCATED")
        self.assertIn(b'"error"', events[-2][1])
        self.assertNotIn(b"[DONE]", b"".join(c for _, c in events[:-1]))

    def test_upstream_error_before_stream_is_json(self):
        body = json.dumps(chat_body("x @mock:status=500", stream=True))
        st, h, data = self.d.request("POST", "/v1/chat/completions", body)
        self.assertEqual(st, 502)
        self.assertEqual(h["content-type"], "application/json")
        self.assertIn("error", json.loads(data))

    def test_slow_reader_backpressure_bounds_memory(self):
        base = self.d.rss_kb()
        # 32 MB of stream from the mock; the client reads nothing for a while.
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=2000,bytes=16000")
        time.sleep(0.7)
        grown = self.d.rss_kb() - base
        self.assertLess(grown, 8 * 1024, "RSS grew %d KiB with a stalled reader" % grown)
        self.assertEqual(self.mock.stats()["completed"], 0)
        total = 0
        for t, c in read_chunked_events(f):     # now drain it: everything arrives
            if c is None:
                self.assertEqual(t, "END")
                break
            total += len(c)
        s.close()
        self.assertGreater(total, 32_000_000)

    def test_reader_that_never_reads_is_dropped_after_send_timeout(self):
        s, f, status, head = stream_request(self.d.port, "x @mock:stream=5000,bytes=16000")
        t0 = time.monotonic()
        st = self.mock.wait_stats(lambda s: s["aborted"] == 1, 4)
        self.assertEqual(st["aborted"], 1)
        self.assertLess(time.monotonic() - t0, 3.5)
        s.close()
