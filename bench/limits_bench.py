#!/usr/bin/env python3
"""Limits benchmark (a figure, not a test; about 75 s): what keys with rpm cost per request on
the memory backend and on Redis, against the same load with no keys.

For each row a fresh mock upstream, llmuxd (workers 1, access log off) and, for the Redis rows,
a redis-server on a free port are started (tests/integration/harness.py); wrk posts bench/chat.lua's
300-byte chat body with 64 connections for --seconds, then with 1 connection for --seconds / 2
(the unloaded p99: what a hop adds). CPU = llmuxd's utime+stime from /proc during the 64-conn run,
per request; Redis round trips per request = Redis's own command count (INFO commandstats)
divided by the requests llmuxd answered.

  python3 bench/limits_bench.py [--build build] [--seconds 8] [--out FILE]

Rows: none (no keys section), memory (one key, rpm 1e9), redis (same, state.backend: redis),
redis+conc (rpm and max_concurrency 100000: a lease taken and dropped per request).
Needs wrk (apt-get install wrk) and redis-server.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402

KEY = "bench-key-0123456789"
ROWS = {
    "none": "",
    "memory": "keys:\n  - {name: b, key: %s, rpm: 1000000000}\n" % KEY,
    "redis": "keys:\n  - {name: b, key: %s, rpm: 1000000000}\n"
             "state: {backend: redis, redis: \"%%s\"}\n" % KEY,
    "redis+conc": "keys:\n  - {name: b, key: %s, rpm: 1000000000, max_concurrency: 100000}\n"
                  "state: {backend: redis, redis: \"%%s\"}\n" % KEY,
}


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port, conns, seconds, auth):
    args = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s",
            "-s", os.path.join(ROOT, "bench", "chat.lua")]
    if auth:
        args += ["-H", "Authorization: Bearer " + KEY]
    args += ["http://127.0.0.1:%d/v1/chat/completions" % port, "--", "0"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise RuntimeError("wrk gave no result:\n" + out[-1000:])
    r = dict(kv.split("=") for kv in m.group(1).split())
    return {k: int(v) for k, v in r.items()}


def redis_calls(redis):
    stats = redis.command("INFO", "commandstats")
    return sum(int(n) for n in re.findall(r"cmdstat_(?:evalsha|eval):calls=(\d+)", stats))


def row(name, seconds):
    mock = harness.Mock()
    redis = harness.RedisServer() if "redis" in name else None
    extra = ROWS[name] % redis.url if redis else ROWS[name]
    cfg = harness.DEFAULT_CONFIG.replace("log:\n  level: info\n  format: json\n",
                                         "log: {{level: warn, access: false}}\n")
    text = cfg.format(port="{port}", mock=mock.port, dead=harness.free_port(), workers=1,
                      header_timeout="10s", body_timeout="30s", extra=extra, limits="")
    d = harness.Daemon(mock, text=text)
    try:
        auth = name != "none"
        wrk(d.port, 8, 1, auth)                                 # warm-up
        calls0 = redis_calls(redis) if redis else 0
        c0 = cpu_seconds(d.proc.pid)
        loaded = wrk(d.port, 64, seconds, auth)
        cpu = cpu_seconds(d.proc.pid) - c0
        calls = (redis_calls(redis) - calls0) if redis else 0
        single = wrk(d.port, 1, max(2, seconds // 2), auth)
        n = loaded["requests"]
        errors = sum(loaded[k] for k in ("connect", "read", "write", "status", "timeout"))
        return {"rps": n / (loaded["duration_us"] / 1e6), "p99_ms": loaded["p99_us"] / 1000,
                "p99_1c_ms": single["p99_us"] / 1000, "cpu_us": cpu / n * 1e6 if n else 0,
                "rt": calls / n if n and redis else 0, "errors": errors}
    finally:
        d.stop()
        mock.stop()
        if redis:
            redis.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--out")
    a = ap.parse_args()
    harness.BUILD = a.build
    if not shutil.which("wrk") or not shutil.which("redis-server"):
        sys.exit("needs wrk and redis-server (apt-get install wrk redis-server)")
    res = {}
    for name in ROWS:
        res[name] = row(name, a.seconds)
        print("%-11s done" % name, file=sys.stderr)
    base = res["none"]
    lines = ["| keys | req/s (64 conns) | p99 64 conns | p99 1 conn | llmuxd CPU µs/req | "
             "CPU vs none | Redis round trips/req | errors |", "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append("| %s | %.0f | %.2f ms | %.3f ms | %.1f | %+.1f %% | %s | %d |" % (
            name, r["rps"], r["p99_ms"], r["p99_1c_ms"], r["cpu_us"],
            (r["cpu_us"] / base["cpu_us"] - 1) * 100 if base["cpu_us"] else 0,
            "%.2f" % r["rt"] if "redis" in name else "-", r["errors"]))
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
