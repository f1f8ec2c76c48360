"""Cancellation latency: time from a client's close (or a request deadline) to the moment the
upstream sees its connection close, measured on one CLOCK_MONOTONIC shared by both processes
(the mock records the abort's time in /__stats last_abort_ns). Also deadline → 504 lateness.
Usage: python3 bench/cancel_latency.py [--build build] [--tries 100]"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402


def disconnect_once(d, mock, body):
    before = mock.stats()["aborted"]
    s = socket.create_connection(("127.0.0.1", d.port), 5)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body)
    mock.wait_stats(lambda st: st["inflight"] >= 1, 2)
    t0 = time.monotonic_ns()
    s.close()
    st = mock.wait_stats(lambda st: st["aborted"] > before, 2)
    return (st["last_abort_ns"] - t0) / 1e6


def deadline_once(d, mock, deadline_ms):
    before = mock.stats()["aborted"]
    t0 = time.monotonic_ns()
    st, _, _ = d.chat("x @mock:delay=2000", headers={"X-Llmux-Timeout-Ms": str(deadline_ms)})
    t1 = time.monotonic_ns()
    assert st == 504
    ab = mock.wait_stats(lambda s: s["aborted"] > before, 2)
    due = t0 + deadline_ms * 1_000_000
    return (t1 - due) / 1e6, (ab["last_abort_ns"] - due) / 1e6


def summary(xs):
    xs = sorted(xs)
    return "median %.3f ms, p90 %.3f ms, worst %.3f ms (n=%d)" % (
        statistics.median(xs), xs[int(len(xs) * 0.9) - 1], xs[-1], len(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--tries", type=int, default=100)
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    harness.BUILD = a.build
    mock = harness.Mock()
    d = harness.Daemon(mock)
    try:
        body = json.dumps(harness.chat_body("x @mock:delay=5000")).encode()
        disc = [disconnect_once(d, mock, body) for _ in range(a.tries)]
        dl = [deadline_once(d, mock, 50) for _ in range(a.tries)]
        print("client close -> upstream connection closed:", summary(disc))
        print("deadline -> 504 at the client (lateness):  ", summary([x for x, _ in dl]))
        print("deadline -> upstream connection closed:     ", summary([y for _, y in dl]))
    finally:
        d.stop()
        mock.stop()


if __name__ == "__main__":
    main()
