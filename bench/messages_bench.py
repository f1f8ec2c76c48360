#!/usr/bin/env python3
"""Translation cost benchmark (run by hand, not a test, bounded: rows x --seconds): what serving
an Anthropic client costs llmuxd compared with relaying. Rows, each against a fresh mock and
daemon (workers 1, no access log), keep-alive clients in threads:

  chat relay        POST /v1/chat/completions  → OpenAI-type upstream (bytes relayed)
  messages xlate    POST /v1/messages          → OpenAI-type upstream (translated both ways)
  messages relay    POST /v1/messages          → Anthropic upstream (bytes relayed)
  … and the same three streamed (10 content chunks each).

Reported per row: requests, req/s (bounded by the Python clients, so compare the CPU column),
llmuxd CPU-ms per 1,000 requests (utime+stime from /proc/PID/stat) and client-side p50/p99.

  python3 bench/messages_bench.py [--build build] [--seconds 4] [--clients 8]
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
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
  - name: claude
    provider: anthropic
    base_url: http://127.0.0.1:%(mock)d
    api_key: sk-bench
models:
  - name: gpt
    retries: 0
    targets: [{upstream: mock, model: mock-gpt}]
  - name: claude
    retries: 0
    targets: [{upstream: claude, model: mock-claude}]
log:
  level: warn
  access: false
"""

TEXT = "Summarise this benchmark run in one line, please. " * 4


def chat(stream):
    return "/v1/chat/completions", {"model": "gpt", "stream": stream, "max_tokens": 64,
                                    "messages": [{"role": "user", "content": TEXT +
                                                  "@mock:stream=10"}]}


def messages(model, stream):
    return "/v1/messages", {"model": model, "stream": stream, "max_tokens": 64,
                            "system": "You are terse.",
                            "messages": [{"role": "user", "content": TEXT + "@mock:stream=10"}]}


ROWS = [("chat relay", chat(False)), ("messages xlate", messages("gpt", False)),
        ("messages relay", messages("claude", False)), ("chat relay stream", chat(True)),
        ("messages xlate stream", messages("gpt", True)),
        ("messages relay stream", messages("claude", True))]


def cpu_ms(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def client(port, path, body, until, lat, errors):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body)
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    while time.monotonic() < until:
        t = time.monotonic()
        conn.request("POST", path, data, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            errors.append(r.status)
        lat.append(time.monotonic() - t)
    conn.close()


def run_row(build, path, body, seconds, clients):
    import harness
    harness.BUILD = build
    mock = harness.Mock()
    d = harness.Daemon(mock, text=CONFIG % {"mock": mock.port})
    try:
        lat, errors = [], []
        warm = time.monotonic() + 0.5
        client(d.port, path, body, warm, [], [])
        c0, t0 = cpu_ms(d.proc.pid), time.monotonic()
        until = t0 + seconds
        threads = [threading.Thread(target=client, args=(d.port, path, body, until, lat,
                                                          errors)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed, cpu = time.monotonic() - t0, cpu_ms(d.proc.pid) - c0
        lat.sort()
        n = len(lat)
        return {"requests": n, "rps": n / elapsed, "cpu_ms_per_1k": cpu * 1000.0 / max(n, 1),
                "p50_ms": lat[n // 2] * 1000 if n else 0,
                "p99_ms": lat[min(n - 1, n * 99 // 100)] * 1000 if n else 0,
                "errors": len(errors)}
    finally:
        d.stop()
        mock.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    print("%-24s %9s %9s %14s %8s %8s %6s" % ("row", "requests", "req/s", "CPU-ms/1k req",
                                               "p50 ms", "p99 ms", "errors"))
    for name, (path, body) in ROWS:
        r = run_row(a.build, path, body, a.seconds, a.clients)
        print("%-24s %9d %9.0f %14.1f %8.2f %8.2f %6d" % (
            name, r["requests"], r["rps"], r["cpu_ms_per_1k"], r["p50_ms"], r["p99_ms"],
            r["errors"]))


if __name__ == "__main__":
    main()
