"""Logging never stalls serving: with a stderr pipe nobody reads, requests keep being answered
(log lines wait in a bounded backlog written by a helper thread), and nothing is lost."""
import os
import subprocess
import tempfile
import unittest

import harness


class SlowStderrTest(unittest.TestCase):
    def test_unread_stderr_does_not_block_requests(self):
        mock = harness.Mock()
        self.addCleanup(mock.stop)
        port = harness.free_port()
        conf = os.path.join(tempfile.mkdtemp(prefix="llmux-log-"), "llmux.yaml")
        with open(conf, "w") as f:
            f.write('listen: ["127.0.0.1:%d"]\nupstreams:\n  - {name: mock, provider: openai, '
                    'base_url: "http://127.0.0.1:%d/v1"}\nmodels:\n  - {name: m, targets: '
                    '[{upstream: mock}]}\nlog: {access: true, format: json}\n' % (port, mock.port))
        proc = subprocess.Popen([harness.binary("llmuxd"), "-c", conf], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        harness.wait_port(port, proc)
        d = harness.Daemon.__new__(harness.Daemon)
        d.port = port
        c = d.conn(timeout=5)
        n = 1500        # ~500 KB of access lines: far past a 64 KiB pipe nobody drains
        for i in range(n):
            c.request("GET", "/healthz", headers={"X-Request-Id": "line-%d" % i})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        proc.terminate()
        out, _ = proc.communicate(timeout=10)   # drains the pipe; the writer flushes at exit
        self.assertEqual(proc.returncode, 0)
        text = out.decode()
        self.assertIn('"line-%d"' % (n - 1), text)
        self.assertEqual(text.count('"msg":"access"'), n)
