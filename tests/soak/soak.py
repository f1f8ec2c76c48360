#!/usr/bin/env python3
"""Fault soak (`make soak`): llmuxd with `workers: auto` in front of the mock upstream, driven for
SOAK_SECONDS by a mix of healthy and faulty answers with short deadlines, clients that drop
requests mid-flight, and a SIGHUP every two seconds alternating two configs. Accounts for
every request and checks that nothing hangs, leaks in-flight state or grows in memory."""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

DEADLINE_MS = 1500          # X-Llmux-Timeout-Ms of every request but the "deadline" kind
SLACK_MS = 100              # an answer may come this late past its deadline, no later

# kind: (@mock directives, stream, deadline ms, expected outcome classes). 503 is expected
# everywhere: a target's breaker opens under the faults, and then any kind may meet it.
KINDS = {
    "healthy": ("", False, DEADLINE_MS, {"2xx"}),
    "slow": ("delay=300", False, DEADLINE_MS, {"2xx"}),
    "deadline": ("delay=3000", False, 600, {"504"}),
    "5xx": ("status=500", False, DEADLINE_MS, {"502"}),
    "429": ("status=429", False, DEADLINE_MS, {"4xx", "504"}),
    "400": ("status=400", False, DEADLINE_MS, {"4xx"}),
    "reset": ("reset", False, DEADLINE_MS, {"502"}),
    "garbage": ("garbage", False, DEADLINE_MS, {"502"}),
    "stalled": ("stall", False, 800, {"504"}),
    "stream": ("stream=8,interval=10", True, DEADLINE_MS, {"2xx"}),
    "stream-reset": ("stream=8,interval=10,reset_after=3", True, DEADLINE_MS,
                     {"2xx-cut", "502"}),
    "stream-stall": ("stream=8,stall", True, 800, {"2xx-cut", "504"}),
}
WEIGHTS = {"healthy": 6, "slow": 2, "stream": 3}     # the rest weigh 1 each

CONFIG = """listen: ["127.0.0.1:{port}"]
workers: auto
limits: {{max_body_bytes: 64k}}
upstreams:
  - {{name: a, provider: openai, base_url: "http://127.0.0.1:{mock}/v1", timeout: 5s}}
  - {{name: b, provider: openai, base_url: "http://127.0.0.1:{mock}/v1", timeout: 5s}}
models:
  - name: soak
    strategy: {strategy}
    retries: {retries}
    backoff: {{base: 10ms, max: 100ms}}
    targets: [{{upstream: a, model: mock-a}}, {{upstream: b, model: mock-b}}]
health: {{failures: {failures}, cooldown: 1s}}
log: {{level: info, access: {access}}}
shutdown_grace: 5s
"""
CONFIGS = [dict(strategy="fallback", retries=1, failures=20, access="true"),
           dict(strategy="weighted", retries=2, failures=50, access="false")]


class Tally:
    """Outcome counts per kind, the worst lateness seen, and the failures in detail."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows = {k: {} for k in list(KINDS) + ["dropped"]}
        self.late_ms = 0.0
        self.problems = []

    def add(self, kind, outcome, late_ms=0.0, problem=None):
        with self.lock:
            self.rows[kind][outcome] = self.rows[kind].get(outcome, 0) + 1
            self.late_ms = max(self.late_ms, late_ms)
            if problem and len(self.problems) < 50:
                self.problems.append("%s: %s" % (kind, problem))


def status_class(status):
    if 200 <= status < 300:
        return "2xx"
    if status in (502, 503, 504):
        return str(status)
    return "4xx" if 400 <= status < 500 else "other %d" % status


def chat_body(directives, stream, tag):
    text = "soak %s @mock:%s,id=%s" % (tag, directives, tag) if directives else "soak " + tag
    body = {"model": "soak", "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def stream_outcome(resp):
    """2xx for a stream that ends with [DONE], 2xx-cut for one that ends with an error event."""
    try:
        data = resp.read()
    except http.client.IncompleteRead as e:
        data = e.partial
    text = data.decode("utf-8", "replace")
    if text.rstrip().endswith("data: [DONE]"):
        return "2xx"
    return "2xx-cut" if '"error"' in text else "2xx-broken"


def one_request(port, kind, tally, rng):
    directives, stream, deadline, expected = KINDS[kind]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline / 1000 + 3)
    body = chat_body(directives, stream, "%08x" % rng.getrandbits(32))
    t0 = time.monotonic()
    try:
        c.request("POST", "/v1/chat/completions", body,
                  {"Content-Type": "application/json", "X-Llmux-Timeout-Ms": str(deadline)})
        r = c.getresponse()
        outcome = status_class(r.status)
        if outcome == "2xx" and stream:
            outcome = stream_outcome(r)
        else:
            r.read()
    except (OSError, http.client.HTTPException) as e:
        outcome = "hang" if isinstance(e, socket.timeout) else "error"
        tally.add(kind, outcome, problem=repr(e))
        return
    finally:
        c.close()
    late = (time.monotonic() - t0) * 1000 - deadline
    problem = None
    if outcome not in expected and outcome != "503":
        problem = "unexpected %s" % outcome
    elif late > SLACK_MS:
        problem = "answered %.0f ms past its deadline" % late
    tally.add(kind, outcome if not problem or outcome not in expected else outcome + " late",
              late, problem)


def loader(port, stop, tally, seed):
    rng = random.Random(seed)
    kinds = [k for k in KINDS for _ in range(WEIGHTS.get(k, 1))]
    while not stop.is_set():
        one_request(port, rng.choice(kinds), tally, rng)


def dropper(port, stop, tally, seed):
    """Sends a slow or streamed request, takes what arrived in 10-400 ms, then closes
    (half of them with RST)."""
    rng = random.Random(seed)
    while not stop.is_set():
        stream = rng.random() < 0.5
        directives = "stream=50,interval=20" if stream else "delay=%d" % rng.randint(50, 800)
        body = chat_body(directives, stream, "%08x" % rng.getrandbits(32)).encode()
        try:
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"X-Llmux-Timeout-Ms: 5000\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(rng.uniform(0.01, 0.4))
            s.setblocking(False)
            try:
                s.recv(65536)
            except BlockingIOError:
                pass
            if rng.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError as e:
            tally.add("dropped", "error", problem=repr(e))
            continue
        tally.add("dropped", "dropped")


def reloader(daemon, mock, stop, counts):
    i = 0
    while not stop.wait(2.0):
        i += 1
        text = CONFIG.format(port=daemon.port, mock=mock.port, **CONFIGS[i % 2])
        tmp = daemon.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, daemon.conf)       # never a half-written file for the daemon to read
        daemon.signal(signal.SIGHUP)
        counts["sighup"] += 1


def wait_zero(read, timeout=10.0):
    """Polls read() until it returns 0 or timeout passes; returns the last value."""
    end = time.monotonic() + timeout
    while True:
        v = read()
        if v == 0 or time.monotonic() > end:
            return v
        time.sleep(0.1)


def sanitizer_reports(log_text):
    marks = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
    return [l for l in log_text.splitlines() if any(m in l for m in marks)]


def print_table(tally, elapsed):
    cols = ["2xx", "2xx-cut", "4xx", "502", "503", "504", "dropped"]
    print("\nllmux soak: %.0f s" % elapsed)
    print("%-13s %8s" % ("kind", "sent") + "".join("%9s" % c for c in cols) + "  other")
    total = 0
    for kind, row in tally.rows.items():
        n = sum(row.values())
        total += n
        other = ", ".join("%s %d" % (k, v) for k, v in row.items() if k not in cols)
        print("%-13s %8d" % (kind, n) + "".join("%9d" % row.get(c, 0) for c in cols) +
              "  " + (other or "-"))
    print("%-13s %8d  (%.0f requests/s)" % ("total", total, total / max(elapsed, 1)))


def run(args):
    harness.BUILD = args.build
    mock = harness.Mock()
    daemon = None
    checks = []
    try:
        text = CONFIG.format(port="{port}", mock=mock.port, **CONFIGS[0])
        env = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=32"} if args.san else None
        daemon = harness.Daemon(mock, text=text, env=env)
        checks = drive(args, daemon, mock)
    finally:
        rc = daemon.stop(timeout=20) if daemon else None
        mock.stop()
    checks.append(("exit status on SIGTERM", rc, rc == 0))
    if args.san:
        reports = sanitizer_reports(daemon.logs())
        checks.append(("sanitizer reports", len(reports), not reports))
        for line in reports[:20]:
            print("  " + line)
    print("\n%-40s %14s  %s" % ("check", "value", "result"))
    for name, value, ok in checks:
        print("%-40s %14s  %s" % (name, value, "ok" if ok else "FAIL"))
    return 0 if all(ok for _, _, ok in checks) else 1


def drive(args, daemon, mock):
    """The load itself; returns the checks made once it is over."""
    tally, stop, counts = Tally(), threading.Event(), {"sighup": 0}
    threads = [threading.Thread(target=loader, args=(daemon.port, stop, tally, i))
               for i in range(args.clients)]
    threads += [threading.Thread(target=dropper, args=(daemon.port, stop, tally, 100 + i))
                for i in range(2)]
    threads.append(threading.Thread(target=reloader, args=(daemon, mock, stop, counts)))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    warm = min(30.0, args.seconds / 3)
    time.sleep(warm)
    rss_warm = daemon.rss_kb()
    while not stop.wait(min(60.0, max(0.0, t0 + args.seconds - time.monotonic()))):
        if time.monotonic() >= t0 + args.seconds:
            break
        done = sum(n for row in tally.rows.values() for n in row.values())
        print("soak: %4.0f/%.0f s, %d requests, RSS %d KiB" % (
            time.monotonic() - t0, args.seconds, done, daemon.rss_kb()), flush=True)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    mock_inflight = wait_zero(lambda: mock.stats()["inflight"])
    gauges = {}
    # the scrape is a request in flight itself: idle reads 1
    gauges["llmux_inflight_requests"] = 1 + wait_zero(
        lambda: daemon.metrics().get("llmux_inflight_requests", -1) - 1)
    gauges["llmux_upstream_inflight"] = wait_zero(
        lambda: daemon.metrics().get("llmux_upstream_inflight", -1))
    rss_end = daemon.rss_kb()
    m = daemon.metrics()
    print_table(tally, elapsed)
    for p in tally.problems:
        print("  problem: " + p)
    bad = sum(n for row in tally.rows.values() for k, n in row.items()
              if k not in ("2xx", "2xx-cut", "4xx", "502", "503", "504", "dropped"))
    growth = (rss_end - rss_warm) * 100.0 / max(rss_warm, 1)
    reloads = m.get('llmux_config_reloads_total{result="ok"}', 0)
    return [
        ("requests with the wrong class or none", bad, bad == 0 and not tally.problems),
        ("worst answer past its deadline (ms)", "%.0f" % tally.late_ms,
         tally.late_ms <= SLACK_MS),
        ("mock in flight at the end", mock_inflight, mock_inflight == 0),
        ("llmux_inflight_requests (scrape = 1)", gauges["llmux_inflight_requests"],
         gauges["llmux_inflight_requests"] == 1),
        ("llmux_upstream_inflight at the end", gauges["llmux_upstream_inflight"],
         gauges["llmux_upstream_inflight"] == 0),
        ("RSS after %.0f s / at the end (KiB)" % warm, "%d/%d" % (rss_warm, rss_end),
         growth <= 10.0),
        ("RSS growth (%)", "%+.1f" % growth, growth <= 10.0),
        ("reloads ok / SIGHUPs sent", "%d/%d" % (reloads, counts["sighup"]),
         reloads == counts["sighup"]),
        ("upstream attempts", int(m.get("llmux_upstream_attempts_total", 0)), True),
        ("connections open at the end", int(m.get("llmux_connections_open", -1)), True),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("SOAK_SECONDS", "300")))
    ap.add_argument("--clients", type=int, default=16, help="load threads (default 16)")
    ap.add_argument("--san", action="store_true", help="the build has ASan+UBSan: check its log")
    sys.exit(run(ap.parse_args()))


if __name__ == "__main__":
    main()
