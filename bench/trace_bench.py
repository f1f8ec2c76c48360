#!/usr/bin/env python3
"""Tracing cost benchmark (run by hand, not a test; bounded: runs x rows x --seconds): llmuxd
CPU per request with tracing off, on at sample_ratio 1.0 (every request exported to a local
OTLP receiver) and on at 0.0 (ids made and propagated, nothing exported). Rows alternate within
each run, each against a fresh mock and daemon (workers 1, no access log), so a noisy box
spreads over all rows alike; the median over the runs is reported.

  python3 bench/trace_bench.py [--build build] [--seconds 3] [--clients 8] [--runs 3]
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))

import messages_bench as mb                     # noqa: E402  (client loop and CPU reading)
from otlp_receiver import OtlpReceiver          # noqa: E402

TRACING = """tracing:
  endpoint: http://127.0.0.1:%(otlp)d
  sample_ratio: %(ratio)s
  batch_delay: 200ms
"""

ROWS = [("off", None), ("on, ratio 1.0", "1.0"), ("on, ratio 0.0", "0.0")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    rx = OtlpReceiver()
    base = mb.CONFIG
    results = {(name, s): [] for name, _ in ROWS for s in (False, True)}
    try:
        for _ in range(a.runs):
            for stream in (False, True):
                path, body = mb.chat(stream)
                for name, ratio in ROWS:
                    mb.CONFIG = base + (TRACING % {"otlp": rx.port, "ratio": ratio}
                                        if ratio else "")
                    r = mb.run_row(a.build, path, body, a.seconds, a.clients)
                    results[(name, stream)].append(r["cpu_ms_per_1k"])
                    rx.clear()
    finally:
        rx.stop()
    print("%-22s %8s %28s %10s" % ("row", "stream", "CPU-ms/1k req (median, runs)",
                                   "vs off"))
    for stream in (False, True):
        off = statistics.median(results[("off", stream)])
        for name, _ in ROWS:
            v = results[(name, stream)]
            med = statistics.median(v)
            print("%-22s %8s %10.1f %17s %+9.1f%%" % (
                name, "yes" if stream else "no", med,
                "(" + ", ".join("%.0f" % x for x in v) + ")", (med / off - 1) * 100))


if __name__ == "__main__":
    main()
