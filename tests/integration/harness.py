"""Integration harness: starts the mock upstream and llmuxd as real processes on free
127.0.0.1 ports, talks HTTP to them, and stops them by PID."""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

BUILD = os.environ.get("LLMUX_BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary(name):
    return os.path.join(ROOT, BUILD, name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("process exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d never opened" % port)


class Mock:
    """The mock upstream (tests/mock). Behaviour per request via '@mock:' in the body."""

    def __init__(self):
        self.proc = subprocess.Popen([binary("mock_upstream"), "--listen", "127.0.0.1:0",
                                      "--quiet"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "LISTENING":
            raise RuntimeError("mock did not start: %r" % line)
        self.port = int(line[1])

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", path)
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        return body

    def stats(self):
        return self.get("/__stats")

    def last(self):
        return self.get("/__last")

    def reset(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("POST", "/__reset", body=b"")
        c.getresponse().read()
        c.close()

    def wait_stats(self, pred, timeout=3.0):
        """Polls /__stats until pred(stats) holds; returns the last stats."""
        end = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s) or time.monotonic() > end:
                return s
            time.sleep(0.01)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RedisServer:
    """A real redis-server (Debian package) on a free 127.0.0.1 port with its own temporary
    directory, stopped by PID. stop() then start() again brings it back on the same port (Redis
    "killed mid-run"); with persist (the default) its data survives that, as with AOF on disk."""

    def __init__(self, password=None, persist=True):
        self.port = free_port()
        self.password = password
        self.persist = persist
        self.dir = tempfile.mkdtemp(prefix="llmux-redis-")
        self.proc = None
        self.start()

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--protected-mode", "no",
                "--appendonly", "yes" if self.persist else "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.log = open(os.path.join(self.dir, "redis.log"), "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self, *args, db=0):
        """One command over RESP on a new connection (database db); its reply, decoded."""
        parts = []
        if self.password:
            parts.append(["AUTH", self.password])
        parts.append(["SELECT", str(db)])
        parts.append([str(a) for a in args])
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            f = s.makefile("rb")
            reply = None
            for p in parts:
                msg = "*%d\r\n" % len(p) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a)
                                                  for a in p)
                s.sendall(msg.encode())
                reply = _resp_read(f)
            return reply

    def stop(self, kill=False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill(self):
        """As a crash would: SIGKILL, no goodbye to the clients."""
        self.stop(kill=True)


def _resp_read(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        return f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError("bad RESP line %r" % line)


DEFAULT_CONFIG = """
listen: ["127.0.0.1:{port}"]
workers: {workers}
limits:
  header_timeout: {header_timeout}
  body_timeout: {body_timeout}
  max_body_bytes: 64k
  max_header_bytes: 8k
  max_request_line: 2k
  max_headers: 50
{limits}
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:{mock}/v1
    api_key: sk-upstream-secret-123
  - name: claude
    provider: anthropic
    base_url: http://127.0.0.1:{mock}
    api_key: sk-ant-secret-456
  - name: dead
    provider: openai
    base_url: http://127.0.0.1:{dead}/v1
models:
  - name: m
    retries: 0
    targets: [{{upstream: mock, model: mock-gpt}}]
  - name: m-retry
    retries: 2
    backoff: {{base: 10ms, max: 50ms}}
    targets: [{{upstream: mock, model: mock-gpt}}]
  - name: claude
    retries: 0
    targets: [{{upstream: claude, model: claude-test}}]
  - name: dead
    retries: 1
    backoff: {{base: 10ms, max: 20ms}}
    targets: [{{upstream: dead}}]
  - name: fallback
    strategy: fallback
    retries: 0
    targets: [{{upstream: dead}}, {{upstream: mock, model: mock-gpt}}]
log:
  level: info
  format: json
{extra}
"""


class Daemon:
    """llmuxd on a free port with a config made from DEFAULT_CONFIG (or a given text)."""

    def __init__(self, mock, extra="", text=None, workers=1, header_timeout="10s",
                 body_timeout="30s", env=None, args=(), limits=""):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="llmux-it-")
        self.conf = os.path.join(self.dir, "llmux.yaml")
        self.logpath = os.path.join(self.dir, "llmuxd.log")
        if text is None and "jobs:" not in extra:    # hermetic: never the system's jobs dir
            extra += "\njobs:\n  dir: %s\n" % os.path.join(self.dir, "jobs")
        if text is None:
            text = DEFAULT_CONFIG.format(port=self.port, mock=mock.port if mock else 1,
                                         dead=free_port(), workers=workers,
                                         header_timeout=header_timeout,
                                         body_timeout=body_timeout, extra=extra,
                                         limits=limits)
        else:
            text = text.replace("{port}", str(self.port))
        self.write_config(text)
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([binary("llmuxd"), "-c", self.conf, *args],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        try:
            wait_port(self.port, self.proc)
        except RuntimeError as e:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("%s; llmuxd log:\n%s" % (e, self.logs()[-2000:]))

    def write_config(self, text):
        with open(self.conf, "w") as f:
            f.write(text)

    def logs(self):
        with open(self.logpath) as f:
            return f.read()

    def wait_log(self, needle, timeout=3.0):
        """The log lines containing needle, waiting for at least one to appear."""
        end = time.monotonic() + timeout
        while True:
            lines = [l for l in self.logs().splitlines() if needle in l]
            if lines or time.monotonic() > end:
                return lines
            time.sleep(0.01)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request on a new connection: (status, headers dict (lower-case), body bytes)."""
        c = self.conn(timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, data

    def chat(self, content, model="m", headers=None, **extra):
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        body.update(extra)
        st, h, data = self.request("POST", "/v1/chat/completions", body, headers)
        return st, h, json.loads(data) if data else None

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200
        return parse_metrics(data.decode())

    def raw(self, data, timeout=5, read=True, shut=False):
        """Sends raw bytes on a new connection; returns everything read until close/timeout."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout)
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        if read:
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
        s.close()
        return out

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def parse_metrics(text):
    """Prometheus text → {"name{labels}": value}; checks the syntax as it goes."""
    out = {}
    types = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = typ
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP "), line
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{", 1)[0]
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in types:
                base = name[: -len(suffix)]
        assert base in types, "sample without TYPE: " + line
        assert name.startswith("llmux_"), line
        if "{" in key:
            assert key.endswith("}"), line
        out[key] = float(value)
    return out


def chat_body(content, model="m", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def self_signed_cert(dir):
    """Writes dir/cert.pem and dir/key.pem for 127.0.0.1; returns (cert, key) paths."""
    cert, key = os.path.join(dir, "cert.pem"), os.path.join(dir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def burst(daemon, model, n, directives, prefix, timeout=20):
    """n concurrent chat calls tagged prefix-0 … prefix-(n-1) (X-Request-Id) with @mock:
    directives; returns their statuses."""
    statuses = [None] * n

    def one(i):
        body = chat_body("hi @mock:" + directives, model=model)
        statuses[i] = daemon.request("POST", "/v1/chat/completions", body, timeout=timeout,
                                     headers={"X-Request-Id": "%s-%d" % (prefix, i)})[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def read_chunked_events(resp_file):
    """Reads a chunked SSE response from a raw socket file; yields (time, chunk bytes).
    Ends with ('END', None) on a clean last-chunk and ('TRUNCATED', None) on EOF without it."""
    while True:
        line = resp_file.readline()
        if not line:
            yield ("TRUNCATED", None)
            return
        size = int(line.strip().split(b";")[0], 16)
        if size == 0:
            resp_file.readline()
            yield ("END", None)
            return
        data = resp_file.read(size)
        if len(data) < size:
            yield ("TRUNCATED", None)
            return
        resp_file.read(2)
        yield (time.monotonic(), data)


class Case(unittest.TestCase):
    """One mock and one daemon per test class; reset between tests. `limits` holds extra lines
    of the limits: section (indented two spaces), `extra` more top-level YAML."""
    extra = ""
    limits = ""
    workers = 1
    daemon_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        try:
            cls.d = Daemon(cls.mock, extra=cls.extra, workers=cls.workers, limits=cls.limits,
                           **cls.daemon_kwargs)
        except Exception:
            cls.mock.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        cls.mock.stop()
        if rc != 0:
            raise AssertionError("llmuxd exited with %s; log:\n%s" % (rc, cls.d.logs()[-4000:]))

    def setUp(self):
        # Let the previous test's aborted upstream calls land before the counters are zeroed.
        self.mock.wait_stats(lambda s: s["inflight"] == 0, 2)
        self.mock.reset()
