"""The official Anthropic and OpenAI TypeScript SDKs (pinned in tests/sdk, installed by
scripts/deps.sh) pointed at llmuxd: what an unchanged client of either API sees on
/v1/messages, /v1/messages/count_tokens and /v1/responses, against both upstream kinds."""
import json
import os
import subprocess

from harness import ROOT, Case

DRIVER = os.path.join(ROOT, "tests/sdk/drive.mjs")
MODULES = os.path.join(ROOT, "tests/sdk/node_modules/@anthropic-ai/sdk")


class SdkTest(Case):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seen = None
        if os.path.isdir(MODULES):
            r = subprocess.run(["node", DRIVER, str(cls.d.port)], capture_output=True,
                               text=True, timeout=120)
            cls.seen = json.loads(r.stdout) if r.returncode == 0 else r.stderr[-3000:]

    def setUp(self):
        self.assertTrue(os.path.isdir(MODULES), "the SDKs are missing: run `make test-deps`")
        self.assertIsInstance(self.seen, dict, "the SDK driver failed:\n%s" % self.seen)

    def test_create_and_stream_on_both_upstreams(self):
        for model in ("m", "claude"):
            msg = self.seen["create_" + model]
            self.assertEqual(msg["content"], [{"type": "text", "text": "echo: Hello SDK"}])
            self.assertEqual(msg["stop_reason"], "end_turn")
            stream = self.seen["stream_" + model]
            self.assertEqual(stream["text"], "echo: streamed hi @mock:stream=4")
            self.assertEqual(stream["stop_reason"], "end_turn")
            self.assertGreater(stream["usage"]["input_tokens"], 0)
            self.assertEqual(stream["usage"]["output_tokens"], 7)

    def test_streamed_tool_use_and_round_trip(self):
        first = self.seen["tool_stream"]
        self.assertEqual(first["stop_reason"], "tool_use")
        block = first["content"][0]
        self.assertEqual((block["type"], block["name"]), ("tool_use", "lookup"))
        self.assertEqual(block["input"], {"text": "echo: weather @mock:tool,stream=5"})
        # The history still carries the directive, so the mock calls the tool again; what it
        # echoes is the last message it got: the tool result, sent back as a "tool" message.
        again = self.seen["tool_round_trip"]["content"][0]
        self.assertEqual(again["input"], {"text": "echo: sunny"})

    def test_count_tokens(self):
        self.assertGreater(self.seen["count_claude"]["input_tokens"], 0)
        self.assertEqual(self.seen["count_m"]["status"], 501)
        self.assertEqual(self.seen["count_m"]["error"]["error"]["type"], "api_error")

    def test_errors_become_the_sdk_exceptions(self):
        nf, up = self.seen["not_found"], self.seen["upstream_500"]
        self.assertEqual((nf["cls"], nf["status"]), ("NotFoundError", 404))
        self.assertEqual(nf["error"]["error"]["type"], "not_found_error")
        self.assertEqual((up["cls"], up["status"]), ("InternalServerError", 502))
        self.assertEqual(up["error"]["error"]["type"], "api_error")
        self.assertIn("mid-stream", json.dumps(self.seen["mid_stream"]))

    def test_openai_responses(self):
        self.assertEqual(self.seen["responses"]["text"], "echo: responses hi")
        self.assertEqual(self.seen["responses"]["usage"]["output_tokens"], 7)
        rs = self.seen["responses_stream"]
        self.assertEqual(rs["types"], ["response.created"] + ["response.output_text.delta"] * 3 +
                         ["response.completed"])
        self.assertEqual(rs["text"], "echo: rs @mock:stream=3")
