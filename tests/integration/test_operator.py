"""What an operator and a client see: access-log fields (client, user agent, upstream time of
aborted requests), model allow-list answers that name the model, unknown gather options."""
import json
import signal
import time

from harness import Case, Daemon, Mock, chat_body


def access_lines(d, request_id, timeout=3.0):
    """The parsed access-log lines of one request id (waits for the first)."""
    lines = d.wait_log('"request_id":"%s"' % request_id, timeout)
    return [json.loads(l) for l in lines if '"msg":"access"' in l]


class AccessLogTest(Case):
    def test_client_address_and_user_agent(self):
        ua = "probe/1.0 " + "x" * 400
        st, _, _ = self.d.chat("hi", headers={"X-Request-Id": "ua-1", "User-Agent": ua})
        self.assertEqual(st, 200)
        line = access_lines(self.d, "ua-1")[0]
        self.assertRegex(line["client"], r"^127\.0\.0\.1:\d+$")
        self.assertEqual(line["user_agent"], ua[:256])

    def test_no_user_agent_is_a_dash(self):
        out = self.d.raw(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: ua-2\r\n"
                         b"Connection: close\r\n\r\n")
        self.assertIn(b"200", out.split(b"\r\n")[0])
        self.assertEqual(access_lines(self.d, "ua-2")[0]["user_agent"], "-")

    def test_deadline_line_counts_upstream_time(self):
        st, _, body = self.d.chat("slow @mock:delay=2000", headers={
            "X-Request-Id": "dl-1", "X-Llmux-Timeout-Ms": "300"})
        self.assertEqual(st, 504)
        line = access_lines(self.d, "dl-1")[0]
        self.assertEqual(line["outcome"], "deadline")
        self.assertGreater(line["upstream_ms"], 200)   # the upstream had been working 300 ms


class AllowListTest(Case):
    extra = """
keys:
  - name: narrow
    key: sk-narrow
    models: [m]
"""

    def test_existing_model_outside_the_list_is_403_naming_it(self):
        st, _, body = self.d.chat("x", model="claude",
                                  headers={"Authorization": "Bearer sk-narrow"})
        self.assertEqual(st, 403)
        self.assertEqual(body["error"]["code"], "model_not_allowed")
        self.assertIn("'claude'", body["error"]["message"])

    def test_model_that_does_not_exist_is_404_even_with_a_list(self):
        st, _, body = self.d.chat("x", model="no-such-model",
                                  headers={"Authorization": "Bearer sk-narrow"})
        self.assertEqual(st, 404)
        self.assertEqual(body["error"]["code"], "model_not_found")
        self.assertIn("'no-such-model'", body["error"]["message"])

    def test_allowed_model_works(self):
        st, _, _ = self.d.chat("x", model="m", headers={"Authorization": "Bearer sk-narrow"})
        self.assertEqual(st, 200)


class GatherOptionsTest(Case):
    def test_misspelt_option_is_400_naming_it(self):
        st, _, data = self.d.request("POST", "/v1/gather", {
            "requests": [chat_body("a")], "max_concurency": 4})
        self.assertEqual(st, 400)
        err = json.loads(data)["error"]
        self.assertEqual(err["param"], "max_concurency")
        self.assertIn("max_concurency", err["message"])
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_known_options_pass(self):
        st, _, data = self.d.request("POST", "/v1/gather", {
            "requests": [chat_body("a")], "max_concurrency": 4, "mode": "all",
            "return_exceptions": True, "stream": False, "timeout_ms": 5000,
            "item_timeout_ms": 5000})
        self.assertEqual(st, 200, data)


class AnswersTest(Case):
    """One `model` rule for every provider; what reaches an Anthropic upstream."""
    def test_model_is_the_upstreams_for_both_providers(self):
        st, _, body = self.d.chat("x", model="m")
        self.assertEqual((st, body["model"]), (200, "mock-gpt"))
        st, _, body = self.d.chat("x", model="claude")
        self.assertEqual((st, body["model"]), (200, "claude-test"))

    def test_streamed_model_is_the_upstreams(self):
        st, _, data = self.d.request("POST", "/v1/chat/completions",
                                     chat_body("x", model="claude", stream=True))
        self.assertEqual(st, 200)
        chunks = [json.loads(l[6:]) for l in data.decode().splitlines()
                  if l.startswith("data: {")]
        self.assertTrue(chunks)
        self.assertEqual({c["model"] for c in chunks}, {"claude-test"})

    def test_numbers_reach_anthropic_as_written(self):
        raw = ('{"model":"claude","messages":[{"role":"user","content":"x"}],'
               '"temperature":0.2,"top_p":0.7}')
        st, _, _ = self.d.request("POST", "/v1/chat/completions", raw,
                                  {"Content-Type": "application/json"})
        self.assertEqual(st, 200)
        sent = self.mock.last()["body"]
        self.assertIn('"temperature":0.2,', sent)
        self.assertIn('"top_p":0.7', sent)
        self.assertIn('"max_tokens":4096', sent)      # the default when unset


MAX_TOKENS_CONFIG = """
listen: ["127.0.0.1:{port}"]
upstreams:
  - {name: claude, provider: anthropic, base_url: "http://127.0.0.1:MOCK", api_key: sk-a}
models:
  - name: long
    default_max_tokens: 16000
    targets: [{upstream: claude, model: claude-test}]
"""


class DefaultMaxTokensTest(Case):
    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        cls.d = Daemon(cls.mock, text=MAX_TOKENS_CONFIG.replace("MOCK", str(cls.mock.port)))

    def test_model_default_max_tokens(self):
        self.assertEqual(self.d.chat("x", model="long")[0], 200)
        self.assertIn('"max_tokens":16000', self.mock.last()["body"])
        self.assertEqual(self.d.chat("x", model="long", max_tokens=5)[0], 200)
        self.assertIn('"max_tokens":5', self.mock.last()["body"])


class NumbersTest(Case):
    def test_gather_items_keep_numbers(self):
        raw = ('{"requests":[{"model":"m","messages":[{"role":"user","content":"x"}],'
               '"temperature":0.2,"top_p":0.7}]}')
        st, _, data = self.d.request("POST", "/v1/gather", raw)
        self.assertEqual(st, 200, data)
        sent = self.mock.last()["body"]
        self.assertIn('"temperature":0.2,', sent)
        self.assertIn('"top_p":0.7', sent)


class ShutdownUpstreamTimeTest(Case):
    extra = "shutdown_grace: 300ms\n"

    def test_shutdown_line_counts_upstream_time(self):
        import threading
        out = []
        t = threading.Thread(target=lambda: out.append(self.d.chat(
            "slow @mock:delay=3000", headers={"X-Request-Id": "sd-1"})))
        t.start()
        self.mock.wait_stats(lambda s: s["inflight"] == 1)
        self.d.signal(signal.SIGTERM)
        t.join(10)
        self.assertEqual(out[0][0], 503)
        line = access_lines(self.d, "sd-1")[0]
        self.assertEqual(line["outcome"], "shutdown")
        self.assertGreater(line["upstream_ms"], 200)
