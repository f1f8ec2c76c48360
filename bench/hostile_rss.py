#!/usr/bin/env python3
"""Peak RSS (VmHWM) of llmuxd under the hostile inputs of issue 17: a body of tiny empty
objects, a huge upstream error body on a stream, a gather of big answers, a gather stream
nobody reads. Each case runs on a fresh daemon with the config of tests/integration/
test_hostile.py; prints one line per case. Usage: bench/hostile_rss.py [--build B] [--only S]"""
import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    os.environ["LLMUX_BUILD"] = a.build
    import harness
    import test_hostile as th
    harness.BUILD = a.build

    def tiny(d, model, n=1):
        body = th.tiny_objects(model, note="@mock:delay=2000" if n > 1 else "")
        ts, out = th.post_all(d, body, n)
        for t in ts:
            t.join()
        return "statuses %s, body %.1f MB" % (sorted(set(out)), len(body) / 1e6)

    def error_stream(d):
        msg = {"role": "user", "content": "@mock:status=500,bytes=60000000"}
        st, _ = th.post(d, "/v1/chat/completions",
                        json.dumps({"model": "m", "stream": True, "messages": [msg]}))
        return "status %d, 60 MB error body" % st

    def gather(d):
        st, data = th.post(d, "/v1/gather", th.gather_body(300, 1000000), timeout=120)
        return "status %d, answer %.1f MB" % (st, len(data) / 1e6)

    def gather_noread(d):
        s = socket.create_connection(("127.0.0.1", d.port))
        b = th.gather_body(300, 1000000, stream=True).encode()
        s.sendall(b"POST /v1/gather HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(b)
                  + b)
        time.sleep(8)
        s.close()
        return "client never reads, 300 x 1 MB"

    cases = [
        ("tiny-objects 8 MiB, openai", lambda d: tiny(d, "m")),
        ("tiny-objects 8 MiB, anthropic", lambda d: tiny(d, "claude")),
        ("tiny-objects 8 MiB x 6 at once", lambda d: tiny(d, "m", 6)),
        ("stream, upstream 500 with 60 MB body", error_stream),
        ("gather 300 x 1 MB", gather),
        ("gather stream, client not reading", gather_noread),
    ]
    mock = harness.Mock()
    try:
        for name, fn in cases:
            if a.only and a.only not in name:
                continue
            text = (th.CONF.replace("{limits}", "").replace("{gather}", "  max_result_bytes: 1g")
                    .replace("{header_timeout}", "10s")) % {"mock": mock.port}
            d = harness.Daemon(None, text=text)
            time.sleep(0.3)
            base = th.hwm_kb(d.proc.pid)
            what = fn(d)
            peak = th.hwm_kb(d.proc.pid)
            d.stop()
            print("%-40s peak %7.1f MB (baseline %.1f MB, +%.1f MB)  %s"
                  % (name, peak / 1024, base / 1024, (peak - base) / 1024, what), flush=True)
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
