"""Out of file descriptors: llmuxd pauses accepting instead of spinning on a ready listener,
and serves again once descriptors are free."""
import os
import resource
import socket
import subprocess
import time
import unittest

import harness


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmfileTest(unittest.TestCase):
    def test_no_spin_at_the_descriptor_limit_and_recovery(self):
        mock = harness.Mock()
        self.addCleanup(mock.stop)
        port = harness.free_port()
        conf = os.path.join(harness.tempfile.mkdtemp(prefix="llmux-emfile-"), "llmux.yaml")
        with open(conf, "w") as f:
            f.write('listen: ["127.0.0.1:%d"]\nupstreams:\n  - {name: mock, provider: openai, '
                    'base_url: "http://127.0.0.1:%d/v1"}\nmodels:\n  - {name: m, targets: '
                    '[{upstream: mock}]}\nlog: {access: false}\n'
                    # explicit, so it is not sized down to fit the limit below
                    'limits: {max_connections: 1000}\n' % (port, mock.port))

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
        log = open(conf + ".log", "w+")
        self.addCleanup(log.close)
        proc = subprocess.Popen([harness.binary("llmuxd"), "-c", conf], preexec_fn=limit,
                                stdout=subprocess.DEVNULL, stderr=log)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))
        harness.wait_port(port, proc)
        clients = []
        for _ in range(60):     # more than the daemon can hold: the rest wait in the backlog
            clients.append(socket.create_connection(("127.0.0.1", port), 2))
        time.sleep(0.3)
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        spent = cpu_seconds(proc.pid) - before
        self.assertLess(spent, 0.2, "llmuxd used %.2f CPU-s in 1 s at EMFILE" % spent)
        for c in clients:
            c.close()
        time.sleep(0.3)
        d = harness.Daemon.__new__(harness.Daemon)     # reuse the request helpers only
        d.port = port
        st, _, body = d.chat("back again")
        self.assertEqual(st, 200, body)
        proc.terminate()
        self.assertEqual(proc.wait(10), 0)
        log.seek(0)
        warnings = [l for l in log if "pausing accepts" in l]
        self.assertGreaterEqual(len(warnings), 1)
        self.assertLessEqual(len(warnings), 3)      # rate-limited, not one per attempt
