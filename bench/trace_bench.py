#!/usr/bin/env python3
"""Tracing cost benchmark (run by hand, not a test): what tracing adds to llmuxd's CPU per
request. Rows, each against a fresh mock and daemon (workers 1, no access log):

  off               no tracing section
  off + 1 header    no tracing, a 68-byte header added to every upstream request (what libcurl
                    alone spends on one more header, as a traceparent is)
  ratio 0.0         ids made and a traceparent sent upstream, nothing exported
  ratio 1.0         two spans per request exported to a local OTLP receiver (Python, in this
                    process: its CPU is not counted; the exporter thread's is)
  ratio 1.0 dead    the same with the collector's port closed (every POST refused, retried)

… each not streamed and streamed (10 chunks). Two measures:

  instr  instructions per request, all llmuxd threads, counted by valgrind's callgrind over
         --requests requests from --instr-clients clients after a warm-up (load-independent:
         the figure to compare on a shared box; a row takes ~20 s)
  cpu    llmuxd CPU-ms per 1,000 requests (utime+stime) under --clients keep-alive clients for
         --seconds, native; rows alternate within each of --runs runs, median shown

  python3 bench/trace_bench.py [--build build] [--mode instr,cpu] [--requests 1000]
                               [--instr-runs 1] [--instr-clients 1] [--seconds 3]
                               [--clients 8] [--runs 3]
Bounded: instr ~ 8 rows x (start + --requests under callgrind); cpu = runs x 8 x --seconds.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))

import harness                                  # noqa: E402
import messages_bench as mb                     # noqa: E402  (client loop and CPU reading)
from otlp_receiver import OtlpReceiver          # noqa: E402

# batch_delay 3s: the spans of a loaded gateway (batch_size / batch_delay = 512 a second or
# more) go out in full batches of 512; callgrind slows llmuxd below that rate, so the delay
# is raised to keep its batches as full.
TRACING = """tracing:
  endpoint: http://127.0.0.1:%(otlp)d
  sample_ratio: %(ratio)s
  batch_delay: 3s
"""

# A header as long as a traceparent on every upstream request, tracing off: what libcurl alone
# spends on one more request header (its printf formats custom headers a byte at a time).
HEADER = "    headers: {X-Bench-Pad: 00-0123456789abcdef0123456789abcdef-0123456789abcdef-01}\n"

# name, sample ratio (None: off; "hdr": off with HEADER), collector alive
ROWS = [("off", None, True), ("off + 1 header", "hdr", True), ("ratio 0.0", "0.0", True),
        ("ratio 1.0", "1.0", True), ("ratio 1.0 dead", "1.0", False)]
# callgrind counts every iteration of a `rep movsb`/`rep stosb` as an instruction, so glibc's
# memcpy/memset of large blocks (curl copying a 500 KB POST body, for one) would count a byte
# each; natively they run at tens of bytes a cycle. These tunables keep glibc on its vector
# loops, whose instruction counts track their real cost, in every row alike.
NO_REP_STRINGS = ("glibc.cpu.x86_rep_movsb_threshold=%d:glibc.cpu.x86_rep_stosb_threshold=%d"
                  % (1 << 40, 1 << 40))
EXTRA_VG = os.environ.get("TRACE_BENCH_VG", "").split()
# Warm-up requests before counting: over two batches of spans (2 x 512), so each worker's pool
# holds what one batch cycle needs and the count sees the steady state, not the pools filling.
WARM_UP = 600
FLUSH_S = 3.5                           # batch_delay and a margin


def config(ratio, port):
    if ratio == "hdr":
        anchor = "    base_url: http://127.0.0.1:%(mock)d/v1\n"
        return mb.CONFIG.replace(anchor, anchor + HEADER, 1)
    return mb.CONFIG + (TRACING % {"otlp": port, "ratio": ratio} if ratio else "")


def post_n(port, path, body, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body)
    for _ in range(n):
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError("status %d" % r.status)
    conn.close()


def post_parallel(port, path, body, n, clients):
    threads = [threading.Thread(target=post_n, args=(port, path, body, n // clients))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n // clients * clients


def callgrind_total(out):
    """Instructions in the last dump (callgrind's "totals:" line), 0 when none."""
    files = sorted(glob.glob(out + "*"), key=os.path.getmtime)
    for path in reversed(files):
        with open(path) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
    return 0


def instr_row(build, text, path, body, requests, clients, keep=None):
    """llmuxd under callgrind: counters zeroed after a warm-up, dumped after requests."""
    harness.BUILD = build
    mock = harness.Mock()
    tmp = tempfile.mkdtemp(prefix="llmux-tb-")
    port = harness.free_port()
    conf = os.path.join(tmp, "llmux.yaml")
    with open(conf, "w") as f:
        f.write(text.replace("{port}", str(port)) % {"mock": mock.port})
    out = os.path.join(tmp, "cg.out")
    log = open(os.path.join(tmp, "log"), "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             "--dump-instr=no", "--compress-strings=no"] + EXTRA_VG + [
                             harness.binary("llmuxd"), "-c", conf],
                            stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, GLIBC_TUNABLES=NO_REP_STRINGS))
    try:
        harness.wait_port(port, proc, timeout=60)
        post_parallel(port, path, body, WARM_UP, clients)
        time.sleep(FLUSH_S)             # the warm-up's spans exported before counting
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        n = post_parallel(port, path, body, requests, clients)
        time.sleep(FLUSH_S)             # this run's last spans encoded and posted
        for f in glob.glob(out + "*"):
            os.unlink(f)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if keep:                        # the profile, for callgrind_annotate
            for f in glob.glob(out + "*"):
                shutil.copy(f, keep)
        return callgrind_total(out) / n
    finally:
        proc.terminate()
        proc.wait()
        log.close()
        mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def mode_instr(a, rx, dead):
    print("instructions per request (callgrind, all llmuxd threads, %d requests, %d client%s)"
          % (a.requests, a.instr_clients, "" if a.instr_clients == 1 else "s"))
    print("%-16s %8s %14s %9s" % ("row", "stream", "instr/req", "vs off"))
    for stream in (False, True):
        path, body = mb.chat(stream)
        off = None
        for name, ratio, alive in ROWS:
            runs = []
            for _ in range(a.instr_runs):
                runs.append(instr_row(a.build, config(ratio, rx.port if alive else dead), path,
                                      body, a.requests, a.instr_clients))
                rx.clear()
            v = statistics.median(runs)
            off = off or v
            print("%-16s %8s %14.0f %+8.1f%% %s" % (
                name, "yes" if stream else "no", v, (v / off - 1) * 100,
                "(" + ", ".join("%.0f" % x for x in runs) + ")" if len(runs) > 1 else ""),
                flush=True)


def mode_cpu(a, rx, dead):
    results = {(name, s): [] for name, _, _ in ROWS for s in (False, True)}
    for _ in range(a.runs):
        for stream in (False, True):
            path, body = mb.chat(stream)
            for name, ratio, alive in ROWS:
                mb.CONFIG, base = config(ratio, rx.port if alive else dead), mb.CONFIG
                try:
                    r = mb.run_row(a.build, path, body, a.seconds, a.clients)
                finally:
                    mb.CONFIG = base
                results[(name, stream)].append(r["cpu_ms_per_1k"])
                rx.clear()
    print("CPU-ms per 1,000 requests (utime+stime, %d clients, %.0f s, median of %d runs)"
          % (a.clients, a.seconds, a.runs))
    print("%-16s %8s %10s %20s %9s" % ("row", "stream", "CPU-ms/1k", "(runs)", "vs off"))
    for stream in (False, True):
        off = statistics.median(results[("off", stream)])
        for name, _, _ in ROWS:
            v = results[(name, stream)]
            med = statistics.median(v)
            print("%-16s %8s %10.1f %20s %+8.1f%%" % (
                name, "yes" if stream else "no", med,
                "(" + ", ".join("%.0f" % x for x in v) + ")", (med / off - 1) * 100))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--mode", default="instr,cpu")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--instr-runs", type=int, default=1, help="instr mode: median of these")
    ap.add_argument("--instr-clients", type=int, default=1,
                    help="clients in instr mode (1: every request takes the same path)")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    rx = OtlpReceiver()
    dead = harness.free_port()          # nothing listens there: the collector is down
    try:
        if "instr" in a.mode:
            mode_instr(a, rx, dead)
        if "cpu" in a.mode:
            mode_cpu(a, rx, dead)
    finally:
        rx.stop()


if __name__ == "__main__":
    main()
