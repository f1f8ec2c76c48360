"""HTTP/1.1 upstream calls at a concurrency beyond one connection shard (64) and beyond one
batch of TLS handshakes (128): every call succeeds on a connection of its own, and the next
burst reuses those connections instead of opening (and handshaking) new ones."""
import shutil
import tempfile
import unittest

import harness
from test_http2 import Nghttpx

CONFIG = """listen: ["127.0.0.1:{port}"]
workers: 1
log: {level: warn, format: json}
upstreams:
  - {name: plain, base_url: "http://127.0.0.1:%(mock)d/v1", http: 1.1, max_connections: 400}
  - name: tls
    base_url: "https://127.0.0.1:%(tls)d/v1"
    ca_file: "%(cert)s"
    http: 1.1
    max_connections: 400
models:
  - {name: plain, retries: 0, targets: [{upstream: plain}]}
  - {name: tls, retries: 0, targets: [{upstream: tls}]}
"""


@unittest.skipUnless(shutil.which("nghttpx") and shutil.which("openssl"),
                     "nghttpx (nghttp2-proxy) or openssl is not installed")
class UpstreamScaleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="llmux-scale-")
        cert = harness.self_signed_cert(cls.dir)[0]
        cls.mock = harness.Mock()
        cls.ng = Nghttpx(cls.dir, cls.mock.port, "scale")
        cls.d = harness.Daemon(None, text=CONFIG % {"mock": cls.mock.port, "tls": cls.ng.tls,
                                                    "cert": cert})

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        cls.ng.kill()
        cls.mock.stop()
        shutil.rmtree(cls.dir, True)
        if rc != 0:
            raise AssertionError("llmuxd exited with %s" % rc)

    def burst(self, model, n, prefix):
        """n concurrent calls of 800 ms tagged prefix-i; returns their statuses."""
        return harness.burst(self.d, model, n, "delay=800", prefix, timeout=30)

    def test_plain_calls_over_several_shards(self):
        self.mock.reset()
        self.assertEqual(self.burst("plain", 150, "plain-a"), [200] * 150)
        opened = self.mock.stats()["accepted"]
        self.assertLessEqual(opened, 150)
        self.assertEqual(self.burst("plain", 150, "plain-b"), [200] * 150)
        self.assertEqual(self.mock.stats()["accepted"], opened)    # all reused

    def test_tls_burst_beyond_one_handshake_batch(self):
        self.assertEqual(self.burst("tls", 200, "tls-a"), [200] * 200)
        first = {v[0] for v in self.ng.wait_requests("tls-a-", 200).values()}
        self.assertEqual(self.burst("tls", 200, "tls-b"), [200] * 200)
        second = {v[0] for v in self.ng.wait_requests("tls-b-", 200).values()}
        self.assertLessEqual(second, first)                 # no new connection, no handshake


if __name__ == "__main__":
    unittest.main()
