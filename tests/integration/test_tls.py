"""https upstreams: certificates are verified (system store or upstreams[].ca_file), a failed
verification is a 502, and tls_verify: false is honoured."""
import http.server
import json
import shutil
import ssl
import tempfile
import threading
import unittest

import harness


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        model = json.loads(body).get("model")
        out = json.dumps({"id": "chatcmpl-tls", "object": "chat.completion", "model": model,
                          "choices": [{"index": 0, "finish_reason": "stop", "message":
                                       {"role": "assistant", "content": "over tls"}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                                    "total_tokens": 3}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="llmux-tls-")
        cert, key = harness.self_signed_cert(cls.dir)
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        url = "https://127.0.0.1:%d/v1" % cls.server.server_address[1]
        text = """listen: ["127.0.0.1:{port}"]
upstreams:
  - {name: trusted, provider: openai, base_url: "%(url)s", ca_file: "%(cert)s"}
  - {name: unknown-ca, provider: openai, base_url: "%(url)s"}
  - {name: unchecked, provider: openai, base_url: "%(url)s", tls_verify: false}
models:
  - {name: trusted, retries: 0, targets: [{upstream: trusted}]}
  - {name: unknown-ca, retries: 0, targets: [{upstream: unknown-ca}]}
  - {name: unchecked, retries: 0, targets: [{upstream: unchecked}]}
""" % {"url": url, "cert": cert}
        cls.d = harness.Daemon(None, text=text)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        cls.server.shutdown()
        shutil.rmtree(cls.dir, True)
        if rc != 0:
            raise AssertionError("llmuxd exited with %s" % rc)

    def test_verified_with_ca_file(self):
        st, h, body = self.d.chat("hi", model="trusted")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["choices"][0]["message"]["content"], "over tls")

    def test_unknown_ca_is_refused(self):
        st, _, body = self.d.chat("hi", model="unknown-ca")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["type"], "upstream_error")

    def test_tls_verify_false(self):
        st, _, body = self.d.chat("hi", model="unchecked")
        self.assertEqual(st, 200, body)
