#!/usr/bin/env python3
"""jobs_bench: background-job submissions per second with the durable journal (bounded: about
BENCH_SECONDS, default 5, plus start-up). Starts the mock upstream and llmuxd on free 127.0.0.1
ports with jobs.dir in a temporary directory on disk, then keeps CONNS keep-alive connections
each with DEPTH pipelined POST /v1/jobs in flight, counting 202s. The jobs themselves wait on a
slow mock answer, so the figure is the submission path: parse, validate, journal record, group
commit, 202. Prints submissions/s and how many records shared each fdatasync.

With --redis the jobs live in a redis-server started for the run (state.backend: redis,
append-only file with Redis's default fsync once a second): the 202 then follows Redis's
answer to one script.

usage: python3 bench/jobs_bench.py [BUILD] [--redis]
       (env: BENCH_SECONDS, BENCH_CONNS, BENCH_DEPTH)
"""
import json
import os
import selectors
import shutil
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
ARGS = [a for a in sys.argv[1:] if a != "--redis"]
REDIS = "--redis" in sys.argv[1:]
BUILD = ARGS[0] if ARGS else "build"
os.environ["LLMUX_BUILD"] = BUILD
import harness  # noqa: E402  (needs LLMUX_BUILD first)

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
DEPTH = int(os.environ.get("BENCH_DEPTH", "8"))


def request_bytes():
    body = json.dumps({"request": {"model": "m", "messages": [
        {"role": "user", "content": "benchmark job @mock:delay=600000"}]}}).encode()
    return (b"POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def run(port):
    """Pipelined submissions for SECONDS; returns (accepted, other answers, seconds)."""
    req = request_bytes()
    sel = selectors.DefaultSelector()
    state = {}
    for _ in range(CONNS):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.sendall(req * DEPTH)
        state[s] = {"buf": b"", "out": DEPTH}
        sel.register(s, selectors.EVENT_READ)
    ok = other = 0
    t0 = time.monotonic()
    end = t0 + SECONDS
    while time.monotonic() < end:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            st = state[s]
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("llmuxd closed a connection")
            st["buf"] += chunk
            done = 0
            while True:         # whole answers: head + Content-Length body
                head_end = st["buf"].find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = st["buf"][:head_end]
                i = head.lower().find(b"content-length:")
                n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0
                              else len(head)])
                if len(st["buf"]) < head_end + 4 + n:
                    break
                if head.startswith(b"HTTP/1.1 202"):
                    ok += 1
                else:
                    other += 1
                st["buf"] = st["buf"][head_end + 4 + n:]
                done += 1
            if done:
                s.sendall(req * done)
    elapsed = time.monotonic() - t0
    for s in state:
        s.close()
    return ok, other, elapsed


def main():
    jobs_dir = tempfile.mkdtemp(prefix="llmux-jobs-bench-", dir="/var/tmp")
    mock = harness.Mock()
    redis = harness.RedisServer() if REDIS else None
    d = None
    extra = "jobs:\n  dir: %s\n  max_queued: 10000000\n  workers: 64\n" % jobs_dir
    if redis:
        extra += "state:\n  backend: redis\n  redis: %s\n" % redis.url
    try:
        d = harness.Daemon(mock, workers=2, extra=extra)
        end = time.monotonic() + 10
        while d.request("GET", "/v1/jobs")[0] != 200 and time.monotonic() < end:
            time.sleep(0.05)    # the Redis link connects
        ok, other, secs = run(d.port)
        m = d.metrics()
        syncs = m.get("llmux_jobs_journal_syncs_total", 0)
        records = m.get("llmux_jobs_journal_records_total", 0)
        print("jobs bench (%s): %d conns x %d pipelined, %.1f s"
              % ("redis" if redis else "journal", CONNS, DEPTH, secs))
        print("  accepted (202): %d  other answers: %d" % (ok, other))
        print("  submissions/s: %.0f" % (ok / secs))
        if not redis:
            print("  journal: %d records in %d fdatasyncs (%.1f records per sync)"
                  % (records, syncs, records / syncs if syncs else 0))
    finally:
        if d:
            d.stop(30)
        if redis:
            redis.stop()
        mock.stop()
        shutil.rmtree(jobs_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
