#!/usr/bin/env python3
"""Budget overshoot (run by hand, not a test; bounded: a few seconds per row): N requests at once
against a budget with room for about ten estimates, on one llmuxd (state.backend: memory,
workers 2) and on two llmuxd sharing one Redis. Answers are longer than each request's
max_tokens, so every admitted request costs more than it reserved: the overshoot is what those
extras add up to, and the bound is the sum of the admitted estimates (the in-flight
reservations). Prints one line per row; the figures go in the closing note.

  python3 bench/budget_overshoot.py [--build build] [-n 200] [--room 0.4]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=200, help="requests sent at once")
    ap.add_argument("--room", type=float, default=0.4, help="USD left before the race")
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    import test_budget as tb                    # after LLMUX_BUILD: the harness reads it
    from harness import Daemon, Mock, RedisServer

    def row(name, daemons):
        f = tb.race(daemons, "sk-b", "team-b", room=a.room, n=a.n)
        print("%-28s %s" % (name, tb.describe(f)), flush=True)

    mock = Mock()
    try:
        d = Daemon(mock, extra=tb.PRICE + tb.KEYS, workers=2)
        try:
            row("memory, 1 llmuxd, 2 workers", [d])
        finally:
            d.stop()
        redis = RedisServer(persist=False)
        state = "\nstate:\n  backend: redis\n  redis: %s\n  timeout: 2s\n" % redis.url
        ds = []
        try:
            ds = [Daemon(mock, extra=tb.PRICE + tb.KEYS + state, workers=2) for _ in range(2)]
            tb.wait_until(lambda: all(x.request("GET", "/v1/spend", headers=tb.auth("sk-b"))[0]
                                      == 200 for x in ds))
            row("redis, 2 llmuxd, 2 workers", ds)
        finally:
            for x in ds:
                x.stop()
            redis.stop()
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
