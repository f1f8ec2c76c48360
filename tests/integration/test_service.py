"""llmuxd as a service: reload on SIGHUP, drain on SIGTERM and shutdown_grace, the sd_notify
conversation, socket activation, metrics, `-t`, and the systemd units (verify, security score,
the daemon under the unit's system-call filter)."""
import ctypes
import errno
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from harness import Daemon, Mock, binary, chat_body, free_port, parse_metrics, wait_port

UNITS = os.path.join(harness.ROOT, "systemd")
SERVICE = harness.binary("llmux.service")     # made by `make` from systemd/llmux.service.in
FRESH_MODEL = ("  - name: fresh\n    retries: 0\n"
               "    targets: [{upstream: mock, model: mock-fresh}]\n")


def wait_until(pred, timeout=3.0, step=0.01):
    """Polls pred() until it is truthy; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


class _Blank(dict):
    def __missing__(self, key):
        return ""       # a placeholder harness.DEFAULT_CONFIG gained later: its default


def config_text(mock, port, workers=1, extra=""):
    """harness.DEFAULT_CONFIG for a daemon on port in front of mock."""
    return harness.DEFAULT_CONFIG.format_map(_Blank(
        port=port, mock=mock.port, dead=free_port(), workers=workers, header_timeout="10s",
        body_timeout="30s", extra=extra))


class Svc(Daemon):
    """llmuxd as harness.Daemon runs it, but started through an optional wrapper argv (for
    LISTEN_PID=$$ / WATCHDOG_PID=$$ tricks) with extra fds, and with its config text kept."""

    def __init__(self, mock, extra="", text=None, env=None, wrap=(), pass_fds=(), port=None,
                 readable=False, workers=1):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="llmux-svc-")
        self.conf = os.path.join(self.dir, "llmux.yaml")
        self.logpath = os.path.join(self.dir, "llmuxd.log")
        if text is None:
            text = config_text(mock, self.port, workers, extra)
        self.text = text
        self.write_config(text)
        if readable:        # for a daemon that runs as another uid
            os.chmod(self.dir, 0o755)
            os.chmod(self.conf, 0o644)
        self.log = open(self.logpath, "w")
        argv = [*wrap, binary("llmuxd"), "-c", self.conf]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})), pass_fds=pass_fds)

    def wait_serving(self):
        try:
            wait_port(self.port, self.proc)
        except RuntimeError as e:
            raise RuntimeError("%s; log:\n%s" % (e, self.logs()[-3000:])) from None

    def reload_with(self, text):
        """Writes text as the config, sends SIGHUP, waits for the outcome in the log."""
        before = len(self.wait_log("reload", 0))
        self.write_config(text)
        self.signal(signal.SIGHUP)
        wait_until(lambda: len(self.wait_log("reload", 0)) > before, 5)
        return self.wait_log("reload", 0)[before:]

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def finish(self):
        """Stops a daemon still running with SIGTERM (SIGKILL after 10 s) and removes its
        files; raises when that stop was not clean (e.g. an ASan report at exit)."""
        rc = 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(10)
            if rc is None:
                self.proc.kill()
                self.proc.wait()
        log = self.logs()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if rc != 0:
            raise AssertionError("llmuxd stopped with %s; log:\n%s" % (rc, log[-3000:]))


class Stream:
    """A streaming chat request on a raw socket, read in a thread while the test does things.
    After join(): status, events (data chunks), end ('END' clean, 'TRUNCATED' cut), elapsed."""

    def __init__(self, port, content, model="m"):
        body = json.dumps(chat_body(content, model=model, stream=True)).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), 10)
        self.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(body) + body)
        self.t0 = time.monotonic()
        self.status, self.events, self.end, self.elapsed = None, [], None, None
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        f = self.sock.makefile("rb")
        try:
            line = f.readline()
            self.status = int(line.split()[1]) if line else None
            while line not in (b"\r\n", b""):
                line = f.readline()
            for t, data in harness.read_chunked_events(f):
                if data is None:
                    self.end = t
                    break
                self.events.append(data)
                self.first.set()
        except (OSError, ValueError, IndexError):
            self.end = "TRUNCATED"
        self.elapsed = time.monotonic() - self.t0
        self.first.set()
        self.sock.close()     # no lingering: the daemon's drain must not wait for us

    def join(self, timeout=10):
        self.thread.join(timeout)
        return self

    def text(self):
        return b"".join(self.events).decode("utf-8", "replace")


def stream_content(stream):
    """The assistant text a streamed answer carried (every delta.content, in order)."""
    out = []
    for line in stream.text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                out.append(choice.get("delta", {}).get("content") or "")
    return "".join(out)


class Call:
    """One non-streaming chat request in a thread: (status, headers, body) or the exception."""

    def __init__(self, port, content, model="m", timeout=15):
        self.result, self.error, self.elapsed = None, None, None
        self.t0 = time.monotonic()

        def run():
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                c.request("POST", "/v1/chat/completions", json.dumps(chat_body(content, model)))
                r = c.getresponse()
                data = r.read()
                self.result = (r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                c.close()
            except (OSError, http.client.HTTPException) as e:
                self.error = e
            self.elapsed = time.monotonic() - self.t0
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout=15):
        self.thread.join(timeout)
        return self


class ServiceCase(unittest.TestCase):
    """One mock per class; each test starts its own daemon(s), killed at cleanup if alive."""

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()

    def setUp(self):
        self.mock.reset()

    def start(self, wait=True, **kw):
        """A daemon; with wait, serving and past its first upstream call. The warm-up call
        matters: a worker's first calls to an upstream are serialized until one answers (see
        test_first_calls_to_an_upstream_run_concurrently)."""
        d = Svc(self.mock, **kw)
        self.addCleanup(d.finish)
        if wait:
            d.wait_serving()
            st, _, body = d.chat("warm-up")
            self.assertEqual(st, 200, body)
            self.mock.reset()
        return d

    def assert_clean_exit(self, d, timeout=10):
        rc = d.wait_exit(timeout)
        self.assertEqual(rc, 0, "llmuxd exit status %s; log:\n%s" % (rc, d.logs()[-3000:]))

    def wait_mock_inflight(self, n, timeout=3):
        s = self.mock.wait_stats(lambda s: s["inflight"] >= n, timeout)
        self.assertGreaterEqual(s["inflight"], n, s)


class ReloadTest(ServiceCase):
    def test_reload_adds_model_without_dropping_a_stream(self):
        d = self.start(workers=2)
        st, _, body = d.chat("before", model="fresh")
        self.assertEqual(st, 404, body)
        stream = Stream(d.port, "slow @mock:stream=10,interval=100")
        self.assertTrue(stream.first.wait(3), "the stream never started")
        lines = d.reload_with(d.text.replace("models:\n", "models:\n" + FRESH_MODEL, 1))
        self.assertTrue(any("configuration reloaded" in l for l in lines), d.logs())
        self.assertIsNone(stream.end, "the stream did not span the reload")
        for i in range(4):      # on new connections: whichever worker takes them
            st, h, body = d.chat("after %d" % i, model="fresh")
            self.assertEqual(st, 200, body)
            self.assertEqual(json.loads(self.mock.last()["body"])["model"], "mock-fresh")
        st, _, data = d.request("GET", "/v1/models")
        self.assertIn("fresh", [m["id"] for m in json.loads(data)["data"]])
        stream.join()
        self.assertEqual(stream.status, 200)
        self.assertEqual(stream.end, "END", stream.text())
        self.assertEqual(stream_content(stream), "echo: slow @mock:stream=10,interval=100")
        self.assertTrue(stream.events[-1].startswith(b"data: [DONE]"), stream.text())
        m = d.metrics()
        self.assertEqual(m['llmux_config_reloads_total{result="ok"}'], 1)
        self.assertEqual(m['llmux_config_reloads_total{result="failed"}'], 0)

    def test_broken_file_keeps_the_running_config(self):
        d = self.start()
        broken = d.text.replace("  - name: m\n    retries: 0\n",
                                "  - name: m\n    retries: lots\n", 1)
        self.assertNotEqual(broken, d.text)
        line = broken.splitlines().index("    retries: lots") + 1
        lines = d.reload_with(broken)
        self.assertTrue(lines, d.logs())
        self.assertIn("reload failed", lines[-1])
        self.assertRegex(lines[-1], r"llmux\.yaml:%d:\d+: models\[0\]\.retries" % line)
        st, _, body = d.chat("still served")
        self.assertEqual(st, 200, body)
        m = d.metrics()
        self.assertEqual(m['llmux_config_reloads_total{result="failed"}'], 1)
        self.assertEqual(m['llmux_config_reloads_total{result="ok"}'], 0)
        # A good file afterwards is taken again.
        lines = d.reload_with(d.text.replace("models:\n", "models:\n" + FRESH_MODEL, 1))
        self.assertIn("configuration reloaded", lines[-1])
        self.assertEqual(d.chat("x", model="fresh")[0], 200)
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d)


class StopTest(ServiceCase):
    def test_sigterm_lets_inflight_requests_finish(self):
        d = self.start()
        idle = socket.create_connection(("127.0.0.1", d.port), 5)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertIn(b" 200 ", idle.recv(4096))      # now an idle keep-alive connection
        calls = [Call(d.port, "slow %d @mock:delay=800" % i) for i in range(3)]
        stream = Stream(d.port, "s @mock:stream=8,interval=100")
        self.wait_mock_inflight(4)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        idle.settimeout(2)
        self.assertEqual(idle.recv(4096), b"", "the idle connection was not closed")
        idle.close()
        for c in calls:
            c.join()
            self.assertIsNone(c.error)
            self.assertEqual(c.result[0], 200, c.result)
            self.assertEqual(c.result[1].get("connection"), "close")
        stream.join()
        self.assertEqual((stream.status, stream.end), (200, "END"), stream.text())
        self.assert_clean_exit(d)
        self.assertLess(time.monotonic() - t0, 3.0, "exit was not prompt after the drain")

    def test_sigterm_refuses_new_connections(self):
        d = self.start()
        call = Call(d.port, "slow @mock:delay=1500")
        self.wait_mock_inflight(1)
        d.signal(signal.SIGTERM)
        self.assertTrue(d.wait_log("draining"), d.logs())
        t0 = time.monotonic()
        # The workers close the listeners a moment after the main thread logs the signal.
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", d.port), 1)
            except ConnectionRefusedError:
                s = None
            if s is None or time.monotonic() - t0 > 0.5:
                break
            s.close()
            time.sleep(0.01)
        if s is not None:
            # Accepted by the kernel: does the client get anything before the daemon exits?
            s.settimeout(3)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                got = s.recv(4096)
            except OSError as e:
                got = repr(e).encode()
            s.close()
            self.fail("a connection made while draining was accepted, not refused; it got %r "
                      "after %.1f s" % (got, time.monotonic() - t0))
        self.assertEqual(call.join().result[0], 200)
        self.assert_clean_exit(d)

    def test_second_sigterm_aborts_at_once(self):
        d = self.start()
        call = Call(d.port, "very slow @mock:delay=5000")
        stream = Stream(d.port, "long @mock:stream=100,interval=100")
        self.wait_mock_inflight(2)
        self.assertTrue(stream.first.wait(3))
        d.signal(signal.SIGTERM)
        self.assertTrue(d.wait_log("draining"))
        time.sleep(0.2)
        self.assertIsNone(d.proc.poll(), "exited on the first SIGTERM with requests in flight")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d, 3)
        self.assertLess(time.monotonic() - t0, 1.0)
        call.join(3)
        if call.error is None:
            st, h, body = call.result
            self.assertEqual(st, 503, body)
            self.assertEqual(json.loads(body)["error"]["code"], "shutting_down")
        stream.join(3)
        self.assertFalse(stream.text().rstrip().endswith("data: [DONE]"), stream.text())
        self.assertLess(len(stream.events), 50)
        s = self.mock.wait_stats(lambda s: s["aborted"] >= 2)
        self.assertEqual(s["aborted"], 2, "upstream calls were not cancelled: %s" % s)

    def test_shutdown_grace_then_503(self):
        d = self.start(extra="shutdown_grace: 500ms\n")
        call = Call(d.port, "five seconds @mock:delay=5000")
        stream = Stream(d.port, "five seconds @mock:stream=50,interval=100")
        self.wait_mock_inflight(2)
        self.assertTrue(stream.first.wait(3))
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        call.join(5)
        waited = time.monotonic() - t0
        self.assertIsNone(call.error, call.error)
        st, h, body = call.result
        self.assertEqual(st, 503, body)
        self.assertEqual(json.loads(body)["error"]["code"], "shutting_down")
        self.assertEqual(h.get("retry-after"), "1")
        self.assertGreater(waited, 0.4)
        self.assertLess(waited, 1.5)
        # A stream already under way cannot change its status: it gets an error event, cut.
        stream.join(3)
        self.assertEqual((stream.status, stream.end), (200, "TRUNCATED"))
        last = [l for l in stream.text().splitlines() if l.startswith("data: ")][-1]
        last = json.loads(last[len("data: "):])
        self.assertEqual(last["error"]["code"], "shutting_down", stream.text()[-500:])
        self.assert_clean_exit(d, 3)
        self.assertLess(time.monotonic() - t0, 2.0)
        s = self.mock.wait_stats(lambda s: s["aborted"] >= 2)
        self.assertEqual(s["aborted"], 2, "the upstream calls were not cancelled: %s" % s)


class UpstreamConcurrencyTest(ServiceCase):
    def test_first_calls_to_an_upstream_run_concurrently(self):
        """Requests in flight at once reach the upstream at once, from the daemon's start on
        (the other tests warm the upstream up first so that drains are tested on their own)."""
        d = self.start(wait=False)
        d.wait_serving()
        calls = [Call(d.port, "first %d @mock:delay=1000" % i) for i in range(3)]
        s = self.mock.wait_stats(lambda s: s["received"] >= 3, 0.8)
        self.assertEqual(s["received"], 3, "only %d of 3 concurrent requests reached the "
                         "upstream within 0.8 s" % s["received"])
        for c in calls:
            self.assertEqual(c.join().result[0], 200)
            self.assertLess(c.elapsed, 1.6)
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d)


class Notify:
    """A NOTIFY_SOCKET: an AF_UNIX datagram socket the daemon's sd_notify() writes to. Like
    systemd, it reads continuously (a full queue would block the daemon's sendmsg)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.msgs = []      # (monotonic time, {key: value}, raw text)
        self.cond = threading.Condition()
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while not self.closed:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return
            kv = dict(l.split("=", 1) for l in data.splitlines() if "=" in l)
            with self.cond:
                self.msgs.append((time.monotonic(), kv, data))
                self.cond.notify_all()

    def wait(self, key, value=None, timeout=3.0):
        """The first message (from those not yet consumed) with key[=value]; consumes up to it."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (t, kv, raw) in enumerate(self.msgs):
                    if key in kv and (value is None or kv[key] == value):
                        del self.msgs[:i + 1]
                        return t, kv, raw
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.closed = True
        self.reader.join(1)
        self.sock.close()


class NotifyTest(ServiceCase):
    def test_sd_notify_conversation(self):
        tmp = tempfile.mkdtemp(prefix="llmux-notify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        n = Notify(tmp)
        self.addCleanup(n.close)
        d = self.start(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000"},
                       wrap=("sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh"), wait=False)
        ready = n.wait("READY", "1", 5)
        self.assertIsNotNone(ready, "no READY=1; log:\n" + d.logs())
        # READY means serving: the port accepts and answers right now.
        self.assertEqual(d.request("GET", "/healthz", timeout=2)[0], 200)
        self.assertIsNotNone(n.wait("STATUS", timeout=1))
        # WATCHDOG_USEC=200000: pings at about 100 ms.
        first = n.wait("WATCHDOG", "1", 1)
        self.assertIsNotNone(first, "no WATCHDOG=1 with WATCHDOG_PID set to the daemon's pid")
        pings = [first[0]]
        while len(pings) < 5:
            p = n.wait("WATCHDOG", "1", 1)
            self.assertIsNotNone(p, "watchdog pings stopped")
            pings.append(p[0])
        gap = (pings[-1] - pings[0]) / 4
        self.assertLess(gap, 0.2, "pings every %.3f s, WATCHDOG_USEC is 0.2 s" % gap)
        self.assertGreater(gap, 0.03)

        hup_at = time.clock_gettime(time.CLOCK_MONOTONIC)
        d.signal(signal.SIGHUP)
        r = n.wait("RELOADING", "1", 3)
        self.assertIsNotNone(r, "no RELOADING=1 on SIGHUP")
        usec = int(r[1].get("MONOTONIC_USEC", "0"))
        self.assertLess(abs(usec / 1e6 - hup_at), 1.0, r[2])
        self.assertIsNotNone(n.wait("READY", "1", 3), "no READY=1 after the reload")
        st = n.wait("STATUS", timeout=1)
        self.assertIsNotNone(st)
        self.assertRegex(st[1]["STATUS"], r"^\d+ connections, \d+ requests in flight")

        # A failed reload: still READY (the old config serves), and the status line says so.
        d.write_config("models: [\n")
        d.signal(signal.SIGHUP)
        self.assertIsNotNone(n.wait("RELOADING", "1", 3))
        self.assertIsNotNone(n.wait("READY", "1", 3))
        st = n.wait("STATUS", timeout=1)
        self.assertIsNotNone(st, "no STATUS= after a failed reload")
        self.assertIn("last reload failed", st[1]["STATUS"])
        self.assertRegex(st[1]["STATUS"], r"llmux\.yaml:\d+:\d+")

        d.signal(signal.SIGTERM)
        self.assertIsNotNone(n.wait("STOPPING", "1", 3), "no STOPPING=1 on SIGTERM")
        self.assert_clean_exit(d)

    def test_a_long_drain_is_not_taken_for_a_wedged_worker(self):
        """Two workers, one request longer than the 5 s heartbeat limit, SIGTERM: the idle
        worker finishes at once, the other drains; the watchdog must keep seeing a live daemon."""
        tmp = tempfile.mkdtemp(prefix="llmux-notify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        n = Notify(tmp)
        self.addCleanup(n.close)
        d = self.start(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "1000000"}, workers=2,
                       wrap=("sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh"))
        call = Call(d.port, "six seconds @mock:delay=6000")
        self.wait_mock_inflight(1)
        d.signal(signal.SIGTERM)
        self.assertIsNotNone(n.wait("STOPPING", "1", 3))
        self.assertEqual(call.join(10).result[0], 200)
        self.assert_clean_exit(d)
        wedged = [l for l in d.logs().splitlines() if "not turning" in l]
        self.assertEqual(wedged, [], "a healthy drain reported as a wedged worker loop")

    def test_no_watchdog_pings_for_another_pid(self):
        tmp = tempfile.mkdtemp(prefix="llmux-notify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        n = Notify(tmp)
        self.addCleanup(n.close)
        d = self.start(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000",
                            "WATCHDOG_PID": "1"}, wait=False)
        self.assertIsNotNone(n.wait("READY", "1", 5))
        self.assertIsNone(n.wait("WATCHDOG", timeout=0.5))
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d)


# Puts the listening socket passed as argv[1] at fd 3 and execs argv[2:] with LISTEN_FDS=1 and
# LISTEN_PID set to its own pid (which exec keeps), as systemd does.
ACTIVATE = ("import os, sys\n"
            "fd = int(sys.argv[1])\n"
            "os.dup2(fd, 3)\n"
            "if fd != 3: os.close(fd)\n"
            "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
            "os.execv(sys.argv[2], sys.argv[2:])\n")


class SocketActivationTest(ServiceCase):
    def listener(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        self.addCleanup(s.close)
        return s

    def activated(self, sock, config_port):
        fd = sock.fileno()
        return self.start(port=config_port, wait=False, pass_fds=(fd,),
                          wrap=(sys.executable, "-c", ACTIVATE, str(fd)))

    def test_serves_on_the_passed_socket_and_ignores_listen(self):
        sock = self.listener()
        config_port = free_port()
        d = self.activated(sock, config_port)
        d.port = sock.getsockname()[1]
        self.assertTrue(d.wait_log("socket(s) from systemd", 5), d.logs())
        st, _, body = d.chat("activated")
        self.assertEqual(st, 200, body)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", config_port), 1).close()
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d)

    def test_connections_wait_across_a_restart(self):
        """The socket outlives the daemon: a request made while it is down is answered by the
        next one instead of being refused."""
        sock = self.listener()
        port = sock.getsockname()[1]
        d1 = self.activated(sock, free_port())
        d1.port = port
        self.assertEqual(d1.chat("one")[0], 200)
        d1.signal(signal.SIGTERM)
        self.assert_clean_exit(d1)
        waiting = Call(port, "made while no daemon runs")
        time.sleep(0.2)
        self.assertIsNone(waiting.result)
        self.assertIsNone(waiting.error, waiting.error)
        d2 = self.activated(sock, free_port())
        d2.port = port
        waiting.join(5)
        self.assertIsNone(waiting.error, waiting.error)
        self.assertEqual(waiting.result[0], 200)
        d2.signal(signal.SIGTERM)
        self.assert_clean_exit(d2)

    @unittest.skipUnless(shutil.which("systemd-socket-activate"),
                         "systemd-socket-activate (package systemd) is not installed")
    def test_systemd_socket_activate(self):
        port, config_port = free_port(), free_port()
        d = self.start(port=config_port, wait=False,
                       wrap=("systemd-socket-activate", "-l", "127.0.0.1:%d" % port))
        d.port = port
        wait_port(port, d.proc)
        st, _, body = d.chat("via systemd-socket-activate")
        self.assertEqual(st, 200, body)
        self.assertTrue(d.wait_log("socket(s) from systemd"), d.logs())
        self.assertFalse(d.wait_log("listening on", 0), d.logs())
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", config_port), 1).close()
        d.signal(signal.SIGTERM)
        self.assert_clean_exit(d)


class MetricsAndCheckTest(ServiceCase):
    def test_metrics_parse_and_counters_move(self):
        d = self.start()
        before = d.metrics()
        for i in range(2):
            self.assertEqual(d.chat("count %d" % i)[0], 200)
        self.assertEqual(d.chat("x", model="nope")[0], 404)
        after = d.metrics()

        def delta(key):
            return after.get(key, 0) - before.get(key, 0)
        self.assertEqual(delta('llmux_http_requests_total{route="chat",status="200"}'), 2)
        self.assertEqual(delta('llmux_http_requests_total{route="chat",status="404"}'), 1)
        # A scrape counts once it is answered: the first one shows in the second.
        self.assertEqual(delta('llmux_http_requests_total{route="metrics",status="200"}'), 1)
        self.assertEqual(delta('llmux_requests_total{outcome="completed"}'), 3)
        self.assertEqual(delta('llmux_requests_total{outcome="rejected"}'), 1)
        self.assertEqual(delta("llmux_connections_accepted_total"), 4)  # 3 chats + this scrape
        self.assertEqual(delta('llmux_upstream_attempts_total{upstream="mock",model="m"}'), 2)
        self.assertEqual(delta("llmux_request_duration_seconds_count"), 4)
        self.assertGreater(delta('llmux_tokens_total{key="",model="m",kind="completion"}'), 0)
        self.assertEqual(after["llmux_ready"], 1)
        self.assertEqual(after["llmux_draining"], 0)

    def check(self, text, env=None):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        self.addCleanup(os.unlink, f.name)
        base = {k: v for k, v in os.environ.items() if k != "LLMUX_TEST_SECRET"}
        p = subprocess.run([binary("llmuxd"), "-t", "-c", f.name], capture_output=True,
                           text=True, timeout=10, env=dict(base, **(env or {})))
        return p, f.name

    def test_check_mode(self):
        good = config_text(self.mock, free_port())
        p, path = self.check(good)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration OK", p.stdout)
        bad = good.replace("    retries: 0\n", "    retries: lots\n", 1)
        line = bad.splitlines().index("    retries: lots") + 1
        p, path = self.check(bad)
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"%s:%d:\d+: " % (re.escape(path), line))
        p, path = self.check("models: [\n")
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"%s:\d+:\d+: " % re.escape(path))

    def test_check_mode_while_the_daemon_holds_the_port(self):
        """ExecReload= runs `llmuxd -t` next to the running daemon: it must not bind."""
        d = self.start()
        p = subprocess.run([binary("llmuxd"), "-t", "-c", d.conf], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_check_mode_reads_secrets_from_the_environment(self):
        text = config_text(self.mock, free_port()).replace(
            "api_key: sk-upstream-secret-123", "api_key: ${LLMUX_TEST_SECRET}")
        p, path = self.check(text)
        self.assertEqual(p.returncode, 1)
        self.assertIn("LLMUX_TEST_SECRET", p.stderr)
        p, path = self.check(text, env={"LLMUX_TEST_SECRET": "sk-from-env"})
        self.assertEqual(p.returncode, 0, p.stderr)


def unit_settings(path):
    """[Service] settings of a unit file: {key: [values in order]}."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif line and not line.startswith("#") and "=" in line and section == "[Service]":
                k, v = line.split("=", 1)
                out.setdefault(k, []).append(v)
    return out


@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
class UnitTest(unittest.TestCase):
    def staged_units(self):
        """The units in a temp dir with the binary paths pointing at this build, and a MANPATH
        holding llmuxd.8, so that verify checks them as an installed system would."""
        tmp = tempfile.mkdtemp(prefix="llmux-units-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for name, path in (("llmux.service", SERVICE),
                           ("llmux.socket", os.path.join(UNITS, "llmux.socket"))):
            with open(path) as f:
                text = re.sub(r"=\S*/llmuxd ", "=%s " % os.path.abspath(binary("llmuxd")),
                              f.read())
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        os.makedirs(os.path.join(tmp, "man", "man8"))
        shutil.copy(os.path.join(harness.ROOT, "daemon", "llmuxd.8"),
                    os.path.join(tmp, "man", "man8"))
        return tmp

    def test_verify(self):
        tmp = self.staged_units()
        p = subprocess.run(["systemd-analyze", "verify", "--man=yes",
                            os.path.join(tmp, "llmux.service"), os.path.join(tmp, "llmux.socket")],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANPATH=os.path.join(tmp, "man")))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stderr.strip(), "", p.stderr)

    def test_security_exposure_at_most_1_5(self):
        p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                            SERVICE],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for llmux\.service: ([0-9.]+) (\w+)", p.stdout)
        self.assertIsNotNone(m, p.stdout + p.stderr)
        self.assertLessEqual(float(m.group(1)), 1.5, p.stdout)
        self.assertEqual(m.group(2), "OK")

    def test_service_shape(self):
        s = unit_settings(SERVICE)
        self.assertEqual(s["Type"], ["notify"])
        self.assertEqual(s["ExecReload"][-1], "/bin/kill -HUP $MAINPID")
        self.assertEqual(s["EnvironmentFile"], ["-/etc/llmux/llmux.env"])
        self.assertNotIn("Environment", s, "secrets belong in the EnvironmentFile")
        # Enough descriptors for the default limits.max_connections (20000) and upstreams.
        self.assertGreaterEqual(int(s["LimitNOFILE"][0].split(":")[-1]), 20000 + 4096)
        grace = float(re.match(r"(\d+)s$", s["TimeoutStopSec"][0]).group(1))
        self.assertGreater(grace, 30, "TimeoutStopSec must exceed the default shutdown_grace")


# --- The daemon under the unit's sandbox, without a running systemd -----------------------------
# systemd-run needs PID 1 to be systemd. Instead: the unit's SystemCallFilter= sets, expanded by
# `systemd-analyze syscall-filter`, are loaded with libseccomp (ctypes) in a wrapper that then
# execs llmuxd as an unprivileged uid with no capabilities, no_new_privs and the unit's
# LimitNOFILE. Stricter than the unit: a call outside the list kills (SIGSYS) instead of EPERM,
# so any use of a filtered call shows. MemoryDenyWriteExecute= and RestrictAddressFamilies= are
# emulated as systemd does (a second filter); the file-system protections are not.

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ = 4, 5, 7
PROT_WRITE, PROT_EXEC, SHM_EXEC, AF_MAX = 0x2, 0x4, 0o100000, 46


def scmp_errno(e):
    return 0x00050000 | (e & 0xFFFF)


class ScmpArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64),
                ("b", ctypes.c_uint64)]


def syscall_groups():
    """{"@group": [entries]} from `systemd-analyze syscall-filter`."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and cur is not None and not line.strip().startswith("#"):
            cur.append(line.strip())
        elif not line.strip():
            cur = None
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        if n.startswith("@"):
            out |= expand(groups[n], groups)
        else:
            out.add(n)
    return out


def unit_syscalls(service):
    """The allowed system calls of SystemCallFilter= lines (allow list, then ~ removals)."""
    groups = syscall_groups()
    allowed = set()
    for v in unit_settings(service)["SystemCallFilter"]:
        if v.startswith("~"):
            allowed -= expand(v[1:].split(), groups)
        else:
            allowed |= expand(v.split(), groups)
    return allowed


def sandbox_exec(allowed, families, mdwe, argv):
    """In the wrapper process: load the filters, then exec argv (never returns)."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ScmpArg)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def nr(name):
        return lib.seccomp_syscall_resolve_name(name.encode())

    def rule(ctx, action, name, *cmps):
        n = nr(name)
        if n < 0:
            return      # not a system call on this architecture
        arr = (ScmpArg * max(1, len(cmps)))(*[ScmpArg(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(ctx, action, n, len(cmps), arr)
        if rc < 0:
            raise OSError(-rc, "seccomp_rule_add %s" % name)

    allow = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    for name in sorted(allowed):
        rule(allow, SCMP_ACT_ALLOW, name)
    extra = lib.seccomp_init(SCMP_ACT_ALLOW)
    if mdwe:
        wx = PROT_WRITE | PROT_EXEC
        rule(extra, scmp_errno(errno.EPERM), "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
        for name in ("mprotect", "pkey_mprotect"):
            rule(extra, scmp_errno(errno.EPERM), name,
                 (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
        rule(extra, scmp_errno(errno.EPERM), "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    if families:
        for af in range(AF_MAX):
            if af not in families:
                rule(extra, scmp_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, af, 0))
        rule(extra, scmp_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_GE, AF_MAX, 0))
    for ctx in (extra, allow):
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")
    os.execv(argv[0], argv)


def seccomp_available():
    try:
        ctypes.CDLL("libseccomp.so.2")
        return True
    except OSError:
        return False


@unittest.skipUnless(shutil.which("systemd-analyze") and seccomp_available() and
                     shutil.which("setpriv") and shutil.which("prlimit") and os.geteuid() == 0,
                     "needs systemd-analyze, libseccomp.so.2, setpriv, prlimit and root")
class SandboxTest(ServiceCase):
    def test_serves_reloads_and_stops_under_the_unit_filter(self):
        service = SERVICE
        s = unit_settings(service)
        allowed = unit_syscalls(service)
        self.assertIn("epoll_wait", allowed)
        self.assertNotIn("setrlimit", allowed)
        families = [getattr(socket, f) for f in s["RestrictAddressFamilies"][0].split()]
        # The unit's LimitNOFILE=, or this machine's hard limit when that is lower and we may
        # not raise it (no CAP_SYS_RESOURCE in a container).
        nofile = min(int(s["LimitNOFILE"][0]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        uid = 61000 + os.getpid() % 1000     # a uid nobody owns, like DynamicUser's
        spec = json.dumps({"allowed": sorted(allowed), "families": families,
                           "mdwe": s.get("MemoryDenyWriteExecute") == ["yes"]})
        wrap = ("prlimit", "--nofile=%s:%s" % (nofile, nofile), "--",
                "setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
                sys.executable, os.path.abspath(__file__), "--sandbox", spec)
        # An ASan build's leak check at exit ptrace()s the process, which no service filter
        # allows; the other tests check leaks.
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "detect_leaks=0"}
        d = self.start(wrap=wrap, readable=True, env=env)
        self.assertEqual(d.chat("sandboxed")[0], 200)
        stream = Stream(d.port, "sandboxed @mock:stream=5,interval=20")
        self.assertEqual(stream.join().end, "END", d.logs())
        st, _, data = d.request("GET", "/metrics")
        self.assertEqual(st, 200)
        parse_metrics(data.decode())
        with open("/proc/%d/status" % d.proc.pid) as f:
            status = f.read()
        self.assertRegex(status, r"Uid:\s+%d\s" % uid)
        self.assertRegex(status, r"Seccomp:\s+2")
        self.assertRegex(status, r"CapEff:\s+0+\n")
        with open("/proc/%d/limits" % d.proc.pid) as f:
            self.assertRegex(f.read(), r"Max open files\s+%s\s+%s" % (nofile, nofile))
        lines = d.reload_with(d.text.replace("models:\n", "models:\n" + FRESH_MODEL, 1))
        self.assertIn("configuration reloaded", lines[-1])
        self.assertEqual(d.chat("x", model="fresh")[0], 200)
        d.signal(signal.SIGTERM)
        rc = d.wait_exit(10)
        self.assertEqual(rc, 0, "exit %s (-31 = SIGSYS: a filtered system call); log:\n%s"
                         % (rc, d.logs()[-3000:]))


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--sandbox":
    spec = json.loads(sys.argv[2])
    sandbox_exec(set(spec["allowed"]), spec["families"], spec["mdwe"], sys.argv[3:])
