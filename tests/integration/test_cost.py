"""Token and cost accounting as a client and an operator see it: X-Llmux-Cost-Usd on answers, a
last `: cost_usd=` SSE comment on streams, usage asked of OpenAI-type streams and its extra chunk
kept from clients that did not ask, Anthropic cache tokens each at their own rate, calls without
usage charged by estimate, the access log, /metrics and the gather summary; `llmuxd -t` refusing
overlapping price globs."""
import json
import math
import os
import socket
import subprocess
import tempfile
import time

from harness import Case, binary, chat_body

PRICES = """
keys:
  - {name: team-a, key: sk-a}
prices:
  - {model: "mock-gpt*", input: 2.5, output: 10, cache_read: 1.25}
  - {model: "mock-*", input: 100, output: 100}
  - {model: "claude-*", input: 3, output: 15, cache_read: 0.3, cache_write: 3.75, per: 1M}
"""
AUTH = {"Authorization": "Bearer sk-a"}


def gpt_cost(prompt, completion, cached=0):
    return ((prompt - cached) * 2.5 + cached * 1.25 + completion * 10) / 1e6


class CostTest(Case):
    extra = PRICES

    def sent_prompt_tokens(self):
        """What the mock counts as prompt tokens: the bytes it received / 4."""
        return len(self.mock.last()["body"].encode()) // 4

    def assertCost(self, text, want):
        self.assertTrue(math.isclose(float(text), want, rel_tol=1e-6, abs_tol=1e-10),
                        "%s != %r" % (text, want))

    def stream(self, content, model="m", **extra):
        """A streamed chat over a raw socket: the SSE body as text."""
        body = json.dumps(chat_body(content, model=model, stream=True, **extra)).encode()
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  b"Authorization: Bearer sk-a\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        head, _, rest = out.partition(b"\r\n\r\n")
        self.assertNotIn(b"x-llmux-cost-usd", head.lower())    # streams: the comment instead
        text, pos = b"", 0
        while pos < len(rest):                                 # de-chunk
            eol = rest.index(b"\r\n", pos)
            size = int(rest[pos:eol], 16)
            text += rest[eol + 2:eol + 2 + size]
            pos = eol + 4 + size
            if size == 0:
                break
        return text.decode()

    def test_answer_carries_its_cost(self):
        before = self.d.metrics()
        st, h, body = self.d.chat("hello", headers=AUTH)
        self.assertEqual(st, 200)
        u = body["usage"]
        self.assertEqual(u["prompt_tokens"], self.sent_prompt_tokens())
        self.assertCost(h["x-llmux-cost-usd"], gpt_cost(u["prompt_tokens"], 7))
        after = self.d.metrics()
        key = '{key="team-a",model="m"}'
        self.assertAlmostEqual(after["llmux_cost_usd_total" + key] -
                               before.get("llmux_cost_usd_total" + key, 0),
                               gpt_cost(u["prompt_tokens"], 7), places=9)
        self.assertTrue(self.d.wait_log('"cost_usd":%s' % h["x-llmux-cost-usd"]))

    def test_most_specific_price_wins(self):
        # mock-gpt matches both "mock-gpt*" and "mock-*": the longer one prices it
        st, h, body = self.d.chat("x", headers=AUTH)
        self.assertLess(float(h["x-llmux-cost-usd"]), 0.01)

    def test_openai_cached_tokens_at_their_rate(self):
        st, h, body = self.d.chat("cached @mock:cache_read=8", headers=AUTH)
        self.assertEqual(st, 200)
        p = body["usage"]["prompt_tokens"]
        self.assertEqual(body["usage"]["prompt_tokens_details"]["cached_tokens"], 8)
        self.assertCost(h["x-llmux-cost-usd"], gpt_cost(p, 7, cached=8))

    def test_anthropic_cache_kinds_each_once(self):
        before = self.d.metrics()
        st, h, body = self.d.chat("c @mock:cache_read=100,cache_write=50", model="claude",
                                  headers=AUTH)
        self.assertEqual(st, 200)
        inp = self.sent_prompt_tokens()
        self.assertEqual(body["usage"]["prompt_tokens"], inp + 150)
        want = (inp * 3 + 100 * 0.3 + 50 * 3.75 + 7 * 15) / 1e6
        self.assertCost(h["x-llmux-cost-usd"], want)
        after = self.d.metrics()
        for kind, n in (("prompt", inp + 150), ("cache_read", 100), ("cache_write", 50),
                        ("completion", 7)):
            k = 'llmux_tokens_total{key="team-a",model="claude",kind="%s"}' % kind
            self.assertEqual(after[k] - before.get(k, 0), n, kind)

    def test_anthropic_stream_cost(self):
        text = self.stream("s @mock:cache_read=10,cache_write=4", model="claude")
        inp = self.sent_prompt_tokens()
        self.assertTrue(text.rstrip().endswith("data: [DONE]") or "data: [DONE]" in text)
        cost = [l for l in text.splitlines() if l.startswith(": cost_usd=")]
        self.assertEqual(len(cost), 1, text)
        self.assertCost(cost[0].split("=", 1)[1],
                        (inp * 3 + 10 * 0.3 + 4 * 3.75 + 7 * 15) / 1e6)

    def test_stream_usage_asked_upstream_and_kept_from_client(self):
        text = self.stream("hi there")
        sent = json.loads(self.mock.last()["body"])
        self.assertEqual(sent["stream_options"], {"include_usage": True})
        chunks = [json.loads(l[6:]) for l in text.splitlines()
                  if l.startswith("data: {")]
        self.assertTrue(chunks)
        self.assertFalse([c for c in chunks if c.get("choices") == []], text)
        self.assertFalse([c for c in chunks if c.get("usage")], text)
        cost = [l for l in text.splitlines() if l.startswith(": cost_usd=")]
        self.assertEqual(len(cost), 1, text)
        self.assertCost(cost[0].split("=", 1)[1], gpt_cost(self.sent_prompt_tokens(), 7))
        self.assertTrue(text.rstrip("\n").splitlines()[-1].startswith(": cost_usd="), text)

    def test_stream_usage_the_client_asked_for_is_relayed(self):
        text = self.stream("hi", stream_options={"include_usage": True})
        chunks = [json.loads(l[6:]) for l in text.splitlines() if l.startswith("data: {")]
        last = [c for c in chunks if c.get("choices") == []]
        self.assertEqual(len(last), 1, text)
        self.assertEqual(last[0]["usage"]["completion_tokens"], 7)

    def test_no_usage_is_estimated(self):
        before = self.d.metrics()
        st, h, body = self.d.chat("e" * 400 + " @mock:no_usage", headers=AUTH)
        self.assertEqual(st, 200)
        self.assertNotIn("usage", body)
        sent = len(self.mock.last()["body"].encode())
        self.assertCost(h["x-llmux-cost-usd"], gpt_cost(math.ceil(sent / 4), 0))
        after = self.d.metrics()
        k = 'llmux_usage_estimated_total{key="team-a",model="m"}'
        self.assertEqual(after[k] - before.get(k, 0), 1)
        self.assertTrue(self.d.wait_log('"usage":"estimated"'))

    def test_aborted_stream_is_estimated(self):
        before = self.d.metrics()
        text = self.stream("cut @mock:stream=5,reset_after=2")
        self.assertIn("upstream_stream_truncated", text)
        self.assertIn(": cost_usd=", text)
        after = self.d.metrics()
        k = 'llmux_usage_estimated_total{key="team-a",model="m"}'
        self.assertEqual(after[k] - before.get(k, 0), 1)

    def test_gather_sums_usage_and_cost(self):
        body = {"requests": [chat_body("a"), chat_body("bb @mock:cache_read=2"),
                             chat_body("c", model="claude")]}
        st, h, data = self.d.request("POST", "/v1/gather", body, AUTH)
        self.assertEqual(st, 200)
        g = json.loads(data)
        want, prompt = 0.0, 0
        for r in g["results"]:
            u = r["response"]["usage"]
            prompt += u["prompt_tokens"]
            cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
            if r["index"] == 2:
                want += (u["prompt_tokens"] * 3 + 7 * 15) / 1e6
            else:
                want += gpt_cost(u["prompt_tokens"], 7, cached)
        self.assertEqual(g["usage"]["prompt_tokens"], prompt)
        self.assertEqual(g["usage"]["completion_tokens"], 21)
        self.assertCost(str(g["cost_usd"]), want)


class NoPricesTest(Case):
    def test_no_price_no_cost(self):
        st, h, body = self.d.chat("x")
        self.assertEqual(st, 200)
        self.assertNotIn("x-llmux-cost-usd", h)
        self.assertTrue(self.d.wait_log('"cost_usd":"-"'))


class PriceCheckTest(Case):
    def test_overlapping_globs_refused(self):
        d = tempfile.mkdtemp(prefix="llmux-price-")
        path = os.path.join(d, "llmux.yaml")
        with open(path, "w") as f:
            f.write("upstreams: [{name: u, base_url: \"http://127.0.0.1:1/v1\"}]\n"
                    "models: [{name: m, targets: [{upstream: u}]}]\n"
                    "prices:\n"
                    "  - {model: \"gpt-*\", input: 1, output: 1}\n"
                    "  - {model: \"*-4oo\", input: 2, output: 2}\n")
        p = subprocess.run([binary("llmuxd"), "-t", "-c", path], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("%s:5:" % path, p.stderr)
        self.assertIn('prices[1].model: "*-4oo" overlaps prices[0] "gpt-*"', p.stderr)
