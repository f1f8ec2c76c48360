#!/usr/bin/env python3
"""What a budget costs per request (run by hand; bounded: four short valgrind runs): llmuxd under
callgrind (instructions counted, so a busy box does not change the figure) answers N and then
3N chat requests for a key without a budget and for a key with one; the difference between the
two runs, divided by 2N, is the instructions per request without the start-up.

  python3 bench/budget_cpu.py [--build build] [-n 200]
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

CONFIG = """listen: ["127.0.0.1:%(port)d"]
workers: 1
upstreams:
  - {name: mock, base_url: "http://127.0.0.1:%(mock)d/v1"}
models:
  - {name: m, retries: 0, targets: [{upstream: mock, model: mock-gpt}]}
keys:
  - {name: free, key: sk-free}
  - {name: capped, key: sk-capped, budget: {usd: 1000000, window: 30d}}
prices:
  - {model: "mock-gpt*", input: 1, output: 1}
jobs: {dir: %(dir)s/jobs}
log: {access: false}
"""


def instructions(build, mock, key, n):
    import harness
    d = tempfile.mkdtemp(prefix="llmux-bcpu-")
    port = harness.free_port()
    conf = os.path.join(d, "llmux.yaml")
    with open(conf, "w") as f:
        f.write(CONFIG % {"port": port, "mock": mock.port, "dir": d})
    out = os.path.join(d, "cg.out")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                          os.path.join(ROOT, build, "llmuxd"), "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_port(port, p, timeout=60)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"model": "m", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hello"}]})
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body, {"Authorization": "Bearer " + key})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    c.close()
    p.terminate()
    p.wait(60)
    with open(out) as f:
        return int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    import harness
    mock = harness.Mock()
    try:
        for name, key in (("key without a budget", "sk-free"), ("key with a budget", "sk-capped")):
            lo = instructions(a.build, mock, key, a.n)
            hi = instructions(a.build, mock, key, 3 * a.n)
            print("%-22s %8.0f instructions per request" % (name, (hi - lo) / (2 * a.n)),
                  flush=True)
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
