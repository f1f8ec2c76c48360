#!/usr/bin/env python3
"""Hedging benchmark (run by hand, bounded to about a minute): latency percentiles against a mock
upstream with a slow tail — slow_pct % of answers take slow_ms, the rest delay_ms — for the same
load on a model without hedging and on one with `hedge: {after: AFTER}`, and the extra upstream
calls hedging cost (from the mock's own request counter).

  python3 bench/hedge_bench.py [--build build] [--requests 1000] [--concurrency 25]
                               [--after-ms 200] [--slow-pct 5] [--slow-ms 2000] [--delay-ms 50]
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

CONFIG = """
listen: ["127.0.0.1:{port}"]
workers: 1
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
models:
  - name: plain
    retries: 0
    targets: [{upstream: mock, model: tail}]
  - name: hedged
    retries: 0
    hedge: {after: %(after)dms, max: 1}
    targets: [{upstream: mock, model: tail}]
log:
  level: warn
  access: false
"""


def percentile(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p / 100.0))]


def run(d, model, a, deadline):
    """a.requests chat calls over a.concurrency keep-alive connections; latencies in ms."""
    content = "x @mock:delay=%d,slow=%d,slow_pct=%d" % (a.delay_ms, a.slow_ms, a.slow_pct)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
    lat, errors, lock = [], [0], threading.Lock()
    left = [a.requests]

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            t0 = time.monotonic()
            c.request("POST", "/v1/chat/completions", body,
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            ms = (time.monotonic() - t0) * 1000.0
            with lock:
                lat.append(ms)
                errors[0] += r.status != 200
        c.close()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(lat), errors[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=25)
    ap.add_argument("--after-ms", type=int, default=200)
    ap.add_argument("--slow-pct", type=int, default=5)
    ap.add_argument("--slow-ms", type=int, default=2000)
    ap.add_argument("--delay-ms", type=int, default=50)
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = os.path.abspath(os.path.join(ROOT, a.build))
    import harness
    mock = harness.Mock()
    d = harness.Daemon(None, text=CONFIG % {"mock": mock.port, "after": a.after_ms})
    deadline = time.monotonic() + 55     # the whole run stays under a minute
    try:
        print("%d requests x 2, concurrency %d; upstream: %d%% at %d ms, the rest at %d ms"
              % (a.requests, a.concurrency, a.slow_pct, a.slow_ms, a.delay_ms))
        print("%-22s %8s %8s %8s %8s %8s %14s" % ("model", "n", "p50 ms", "p90 ms", "p99 ms",
                                                  "max ms", "upstream calls"))
        for model in ("plain", "hedged"):
            mock.reset()
            lat, errors = run(d, model, a, deadline)
            mock.wait_stats(lambda s: s["inflight"] == 0, 5)
            calls = mock.stats()["received"]
            label = model if model == "plain" else "hedged (after %d ms)" % a.after_ms
            print("%-22s %8d %8.0f %8.0f %8.0f %8.0f %8d (%+.1f%%)%s"
                  % (label, len(lat), percentile(lat, 50), percentile(lat, 90),
                     percentile(lat, 99), lat[-1], calls,
                     100.0 * (calls - len(lat)) / max(1, len(lat)),
                     "  errors: %d" % errors if errors else ""))
    finally:
        d.stop()
        mock.stop()


if __name__ == "__main__":
    main()
