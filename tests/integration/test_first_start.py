"""First start: the config the package ships starts with no warning or error on a host with a
low descriptor limit. Default limits are sized to fit the limit (one info line); limits the file
sets explicitly keep their values and get the error line."""
import json
import os
import resource
import signal
import subprocess
import tempfile
import unittest

import harness

CONFIG = """listen: ["127.0.0.1:%(port)d"]
upstreams:
  - {name: mock, provider: openai, base_url: "http://127.0.0.1:%(mock)d/v1"}
models:
  - {name: m, targets: [{upstream: mock}]}
log: {access: false, format: json}
%(limits)s"""


class FdLimitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = harness.Mock()

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()

    def start(self, limits, nofile=256, text=None):
        """llmuxd under RLIMIT_NOFILE=nofile (soft and hard), on CONFIG with limits or on
        text ({port} replaced); returns the daemon."""
        d = harness.Daemon.__new__(harness.Daemon)     # own process, the harness's helpers
        d.port = harness.free_port()
        d.dir = tempfile.mkdtemp(prefix="llmux-fdlimit-")
        d.conf = os.path.join(d.dir, "llmux.yaml")
        d.logpath = os.path.join(d.dir, "llmuxd.log")
        if text is None:
            text = CONFIG % {"port": d.port, "mock": self.mock.port, "limits": limits}
        d.write_config(text.replace("{port}", str(d.port)))
        d.log = open(d.logpath, "w")

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        d.proc = subprocess.Popen([harness.binary("llmuxd"), "-c", d.conf], preexec_fn=limit,
                                  stdout=d.log, stderr=subprocess.STDOUT)
        self.addCleanup(d.stop)
        harness.wait_port(d.port, d.proc)
        return d

    def lines(self, d, level):
        out = []
        for line in d.logs().splitlines():
            rec = json.loads(line)
            if rec["level"] == level:
                out.append(rec["msg"])
        return out

    def test_the_shipped_config_starts_without_warnings(self):
        with open(os.path.join(harness.ROOT, "conf", "llmux.yaml")) as f:
            text = f.read()
        self.assertIn('listen: ["127.0.0.1:8420"]', text)
        d = self.start(None, nofile=1024,
                       text=text.replace("127.0.0.1:8420", "127.0.0.1:{port}"))
        d.wait_log("ready")
        levels = [json.loads(l)["level"] for l in d.logs().splitlines()]
        self.assertNotIn("warn", levels, d.logs())
        self.assertNotIn("error", levels, d.logs())
        self.assertEqual(len([m for m in self.lines(d, "info") if "RLIMIT_NOFILE" in m]), 1)
        self.assertEqual(len([m for m in self.lines(d, "info")
                              if m.startswith("no keys configured: open to clients on this host")]),
                         1, d.logs())
        self.assertEqual(d.stop(), 0)

    def test_default_limits_are_sized_to_the_limit_once_at_info(self):
        d = self.start("")
        st, _, _ = d.chat("fits")
        self.assertEqual(st, 200)
        d.signal(signal.SIGHUP)
        d.wait_log("configuration reloaded")
        self.assertEqual(self.lines(d, "error"), [])
        sized = [m for m in self.lines(d, "info") if "RLIMIT_NOFILE is 256" in m]
        self.assertEqual(len(sized), 1, d.logs())
        # 256 - 1 listener - 64 reserve = 191, split 2:1
        self.assertIn("limits.max_connections 127 (default 20000)", sized[0])
        self.assertIn("limits.max_inflight 64 (default 10000)", sized[0])
        self.assertEqual(d.stop(), 0)

    def test_explicit_limits_over_the_host_limit_keep_the_error(self):
        d = self.start("limits: {max_connections: 20000}\n")
        errors = [m for m in self.lines(d, "error") if "RLIMIT_NOFILE is 256" in m]
        self.assertEqual(len(errors), 1, d.logs())
        self.assertIn("raise LimitNOFILE=", errors[0])
        self.assertFalse([m for m in self.lines(d, "info") if "RLIMIT_NOFILE" in m])
        st, _, _ = d.chat("still serves")
        self.assertEqual(st, 200)

    def test_explicit_limits_that_fit_say_nothing(self):
        d = self.start("limits: {max_connections: 100, max_inflight: 50}\n")
        st, _, _ = d.chat("fits")
        self.assertEqual(st, 200)
        self.assertFalse([l for l in d.logs().splitlines() if "RLIMIT_NOFILE" in l])
        self.assertEqual(self.lines(d, "error"), [])


if __name__ == "__main__":
    unittest.main()
