#!/usr/bin/env python3
"""Gather benchmark (run by hand, not a test): one POST /v1/gather of N items against the mock
upstream with a fixed delay, timed from the client, with llmuxd's RSS before and after.

Each run starts a fresh mock and daemon (the test harness's, tests/integration/harness.py) and
sends --gathers gathers in a row: the first finds no pooled upstream connection (cold), the next
reuse the pool (warm). RSS comes from /proc/PID/status VmRSS: before = just before the gather,
after = --settle seconds after its answer.

  python3 bench/gather_bench.py [--build build] [--runs 3] [--items 1000] [--delay-ms 100]
                                [--perf /tmp/gather]   # then: perf report -i /tmp/gather-1.data
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

TARGET_MS = 150

CONFIG = """
listen: ["127.0.0.1:{port}"]
workers: %(workers)d
limits:
  max_body_bytes: 8m
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:%(mock)d/v1
    api_key: sk-bench
    max_connections: %(conns)d
models:
  - name: m
    retries: 0
    targets: [{upstream: mock, model: mock-gpt}]
gather:
  max_items: %(items)d
  max_concurrency: %(conc)d
log:
  level: warn
  access: %(access)s
"""


def gather_body(a):
    reqs = [{"model": "m", "messages": [{"role": "user",
                                         "content": "item %d @mock:delay=%d" % (i, a.delay_ms)}]}
            for i in range(a.items)]
    return json.dumps({"requests": reqs, "max_concurrency": a.concurrency}).encode()


def timed_mock():
    """The harness's mock without --quiet: a thread stamps each 'completed' line on arrival, so
    a gather's upstream answers can be placed in time (--phases)."""
    import harness

    class TimedMock(harness.Mock):
        def __init__(self):
            self.proc = subprocess.Popen([harness.binary("mock_upstream"), "--listen",
                                          "127.0.0.1:0"], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "LISTENING":
                raise RuntimeError("mock did not start: %r" % line)
            self.port = int(line[1])
            self.answers = []
            threading.Thread(target=self.read_log, daemon=True).start()

        def read_log(self):
            for line in self.proc.stderr:
                if " completed" in line:
                    self.answers.append(time.monotonic())
    return TimedMock()


def cpu_ms(pid):
    """utime + stime of a process so far, in ms (fields 14 and 15 of /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def one_gather(d, body, timeout, t0_out=None):
    """(client wall ms, parsed answer) of one gather on a new connection."""
    c = d.conn(timeout)
    t0 = time.monotonic()
    if t0_out is not None:
        t0_out.append(t0)
    c.request("POST", "/v1/gather", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    wall = (time.monotonic() - t0) * 1000.0
    c.close()
    if r.status != 200:
        raise RuntimeError("gather answered %d: %r" % (r.status, data[:300]))
    return wall, json.loads(data)


def perf_start(a, pid, n):
    """perf record on llmuxd for the whole run, when asked (--perf PREFIX); dwarf call graphs
    by default, since libcurl, jansson and libc are built without frame pointers."""
    if not a.perf:
        return None
    out = "%s-%d.data" % (a.perf, n)
    p = subprocess.Popen(["perf", "record", "--call-graph", a.callgraph, "-F", "1999",
                          "-p", str(pid), "-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)     # perf attaches asynchronously
    return p


def perf_stop(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(30)


def print_phases(mock, t0, wall, delay_ms):
    """Where the wall time went, from the mock's side: each answer leaves delay_ms after its
    request arrived, so first/last answer - delay = first/last request seen upstream."""
    time.sleep(0.2)     # the log reader may trail the answer a little
    ans = sorted((t - t0) * 1000.0 for t in mock.answers)
    if not ans:
        return
    print("  phases: requests reached the mock from +%.0f to +%.0f ms; answers left from +%.0f "
          "to +%.0f ms; the gather's answer was read at +%.0f ms (%.0f ms after the last upstream "
          "answer)" % (ans[0] - delay_ms, ans[-1] - delay_ms, ans[0], ans[-1], wall,
                        wall - ans[-1]), flush=True)


def run(a, n):
    import harness
    mock = timed_mock() if a.phases else harness.Mock()
    text = CONFIG % {"workers": a.workers, "mock": mock.port, "conns": max(a.concurrency, 1) * 2,
                     "items": a.items, "conc": a.concurrency,
                     "access": "true" if a.access_log else "false"}
    d = harness.Daemon(None, text=text)
    rows = []
    try:
        body = gather_body(a)
        time.sleep(a.settle)    # let the daemon finish starting before the baseline
        baseline = d.rss_kb()
        perf = perf_start(a, d.proc.pid, n)
        for g in range(a.gathers):
            before = d.rss_kb()
            dcpu, mcpu = cpu_ms(d.proc.pid), cpu_ms(mock.proc.pid)
            t0 = []
            if a.phases:
                del mock.answers[:]
            wall, ans = one_gather(d, body, timeout=60, t0_out=t0)
            dcpu, mcpu = cpu_ms(d.proc.pid) - dcpu, cpu_ms(mock.proc.pid) - mcpu
            peak = d.rss_kb()
            time.sleep(a.settle)
            after = d.rss_kb()
            stats = mock.stats()
            rows.append((wall, ans["elapsed_ms"], ans["succeeded"], ans["failed"], before, peak,
                         after))
            print("run %d gather %d (%s): wall %.1f ms, daemon elapsed %d ms, ok %d, failed %d; "
                  "RSS before %d kB, at answer %d kB, after %.1f s %d kB (baseline %d kB); "
                  "CPU llmuxd %.0f ms, mock %.0f ms; mock received %d, new connections %d" %
                  (n, g + 1, "cold" if g == 0 else "warm", wall, ans["elapsed_ms"],
                   ans["succeeded"], ans["failed"], before, peak, a.settle, after, baseline,
                   dcpu, mcpu, stats["received"], stats["accepted"]), flush=True)
            if a.phases:
                print_phases(mock, t0[0], wall, a.delay_ms)
            mock.reset()
        perf_stop(perf)
    finally:
        rc = d.stop()
        mock.stop()
        if rc != 0:
            print("llmuxd exited with %s; log tail:\n%s" % (rc, d.logs()[-2000:]))
    return baseline, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="build directory (relative to the repo)")
    ap.add_argument("--runs", type=int, default=3, help="fresh daemon + mock per run")
    ap.add_argument("--gathers", type=int, default=2, help="gathers per run (1st is cold)")
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--delay-ms", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before 'after' RSS")
    ap.add_argument("--access-log", action="store_true", help="keep per-item access logs on")
    ap.add_argument("--phases", action="store_true",
                    help="time the upstream side from the mock's log (costs the mock a little)")
    ap.add_argument("--perf", metavar="PREFIX", help="perf record llmuxd into PREFIX-RUN.data")
    ap.add_argument("--callgraph", default="dwarf", help="perf --call-graph mode (dwarf, fp)")
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    import harness
    harness.BUILD = a.build
    results = [run(a, n + 1) for n in range(a.runs)]
    for g in range(a.gathers):
        walls = sorted(rows[g][0] for _, rows in results)
        grow = [rows[g][6] - base for base, rows in results]
        print("gather %d (%s): wall min %.1f / median %.1f / max %.1f ms (target <= %d ms: %s); "
              "RSS after - baseline: %s kB" %
              (g + 1, "cold" if g == 0 else "warm", walls[0], walls[len(walls) // 2], walls[-1],
               TARGET_MS, "met" if walls[-1] <= TARGET_MS else "MISSED",
               ", ".join("%+d" % x for x in grow)))


if __name__ == "__main__":
    main()
