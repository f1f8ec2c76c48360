"""Inbound Anthropic clients on /v1/messages (relayed to Anthropic upstreams, translated for
OpenAI-type ones, errors in Anthropic's shape) and OpenAI's Responses API on /v1/responses."""
import json
import socket
import time

import test_docs
from harness import Case, Daemon, Mock, read_chunked_events

# What the official Anthropic SDKs send besides the body (minus the x-stainless-* telemetry).
SDK_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-client",
               "content-type": "application/json", "accept": "application/json",
               "user-agent": "Anthropic/Python 0.40.0"}

MIXED = """
listen: ["127.0.0.1:{port}"]
upstreams:
  - name: mock
    provider: openai
    base_url: http://127.0.0.1:MOCK/v1
  - name: claude
    provider: anthropic
    base_url: http://127.0.0.1:MOCK
    api_key: sk-ant-1
models:
  - name: mixed
    strategy: fallback
    retries: 0
    targets: [{upstream: claude, model: claude-test}, {upstream: mock, model: mock-gpt}]
"""


def msg_body(text, model="m", **extra):
    body = {"model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


def post_stream(port, path, body, headers=None):
    """POSTs on a raw connection and reads the chunked body to its end, a clean last chunk or
    not: (status, events, clean)."""
    s = socket.create_connection(("127.0.0.1", port), 10)
    extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    data = json.dumps(body).encode()
    s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
               % (path, len(data), extra)).encode() + data)
    f = s.makefile("rb")
    status = int(f.readline().split()[1])
    while f.readline() not in (b"\r\n", b""):
        pass
    out, clean = b"", False
    for t, chunk in read_chunked_events(f):
        if t == "END":
            clean = True
        if chunk is None:
            break
        out += chunk
    s.close()
    return status, sse_events(out), clean


def abandon_stream(case, path, body, needle):
    """Starts a slow stream, closes the connection once `needle` arrived, and checks that the
    upstream saw its request aborted (not completed)."""
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", case.d.port), 10)
    s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
               % (path, len(data))).encode() + data)
    got = b""
    while needle not in got and len(got) < 1 << 20:
        part = s.recv(65536)
        if not part:
            break
        got += part
    case.assertIn(needle, got)
    s.close()
    st = case.mock.wait_stats(lambda st: st["aborted"] == 1, 5)
    case.assertEqual((st["aborted"], st["completed"]), (1, 0))


def sse_events(data):
    """Parses an SSE body into [(event name or None, parsed data)]."""
    out = []
    for block in data.decode().split("\n\n"):
        name, payload = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
        if payload is not None:
            out.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return out


class MessagesTest(Case):
    def post(self, body, path="/v1/messages", headers=None):
        st, h, data = self.d.request("POST", path, body, dict(SDK_HEADERS, **(headers or {})))
        return st, h, data

    def post_json(self, body, **kw):
        st, h, data = self.post(body, **kw)
        return st, h, json.loads(data)

    def assert_anthropic_error(self, st, body, status, etype):
        self.assertEqual(st, status, body)
        self.assertEqual(body["type"], "error")
        self.assertEqual(body["error"]["type"], etype)
        self.assertIsInstance(body["error"]["message"], str)
        self.assertEqual(set(body), {"type", "error"})

    # --- OpenAI-type upstream: translated -------------------------------------------------

    def test_sdk_request_translated_for_openai_upstream(self):
        st, h, body = self.post_json({"max_tokens": 1024, "model": "m", "system": "be brief",
                                      "messages": [{"role": "user", "content": "Hello, Claude"}],
                                      "stop_sequences": ["END"], "temperature": 0.5,
                                      "metadata": {"user_id": "u-7"}})
        self.assertEqual(st, 200, body)
        self.assertEqual(body["type"], "message")
        self.assertEqual(body["role"], "assistant")
        self.assertEqual(body["model"], "mock-gpt")   # the upstream's own model string
        self.assertTrue(body["id"].startswith("msg_"))
        self.assertEqual(body["content"], [{"type": "text", "text": "echo: Hello, Claude"}])
        self.assertEqual((body["stop_reason"], body["stop_sequence"]), ("end_turn", None))
        self.assertGreater(body["usage"]["input_tokens"], 0)
        self.assertEqual(body["usage"]["output_tokens"], 7)
        self.assertEqual(h["x-llmux-upstream"], "mock")
        last = self.mock.last()
        self.assertEqual(last["path"], "/v1/chat/completions")
        sent = json.loads(last["body"])
        self.assertEqual(sent["model"], "mock-gpt")
        self.assertEqual(sent["messages"][0], {"role": "system", "content": "be brief"})
        self.assertEqual(sent["messages"][1], {"role": "user", "content": "Hello, Claude"})
        self.assertEqual((sent["max_tokens"], sent["stop"], sent["user"]), (1024, ["END"], "u-7"))
        self.assertEqual(last["headers"]["authorization"], "Bearer sk-upstream-secret-123")
        self.assertNotIn("sk-client", json.dumps(last["headers"]))

    def test_blocks_images_tools_and_results_translated(self):
        body = msg_body(None, system=[{"type": "text", "text": "a"}, {"type": "text",
                                                                          "text": "b"}],
                        tools=[{"name": "lookup", "description": "find",
                                "input_schema": {"type": "object"}}],
                        tool_choice={"type": "any", "disable_parallel_tool_use": True})
        body["messages"] = [
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "42"},
                {"type": "text", "text": "thanks"}]}]
        st, _, res = self.post_json(body)
        self.assertEqual(st, 200, res)
        self.assertEqual(res["content"][0]["text"], "echo: thanks")
        sent = json.loads(self.mock.last()["body"])
        msgs = sent["messages"]
        self.assertEqual(msgs[0], {"role": "system", "content": "a\nb"})
        self.assertEqual(msgs[1]["content"][1], {"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo="}})
        self.assertEqual(msgs[2]["content"], "calling")
        self.assertEqual(msgs[2]["tool_calls"], [{"id": "call_1", "type": "function", "function":
                                                  {"name": "lookup",
                                                   "arguments": '{"q":1}'}}])
        self.assertEqual(msgs[3], {"role": "tool", "tool_call_id": "call_1", "content": "42"})
        self.assertEqual(msgs[4], {"role": "user", "content": "thanks"})
        self.assertEqual(sent["tools"], [{"type": "function", "function": {
            "name": "lookup", "description": "find", "parameters": {"type": "object"}}}])
        self.assertEqual((sent["tool_choice"], sent["parallel_tool_calls"]), ("required", False))

    def test_tool_call_answer_becomes_tool_use(self):
        st, _, res = self.post_json(msg_body("weather @mock:tool"))
        self.assertEqual(st, 200, res)
        self.assertEqual(res["stop_reason"], "tool_use")
        block = res["content"][0]
        self.assertEqual((block["type"], block["name"]), ("tool_use", "lookup"))
        self.assertTrue(block["id"].startswith("call_mock_"))
        self.assertEqual(block["input"], {"text": "echo: weather @mock:tool"})

    def test_stream_translated_event_by_event(self):
        st, h, data = self.post(msg_body("hello stream @mock:stream=4", stream=True))
        self.assertEqual(st, 200, data)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        evs = sse_events(data)
        names = [n for n, _ in evs]
        self.assertEqual(names[:4], ["message_start", "ping", "content_block_start",
                                     "content_block_delta"])
        self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
        for n, d in evs:
            self.assertEqual(d["type"], n)
        self.assertEqual(evs[0][1]["message"]["model"], "mock-gpt")
        text = "".join(d["delta"]["text"] for n, d in evs if n == "content_block_delta")
        self.assertEqual(text, "echo: hello stream @mock:stream=4")
        delta = evs[-2][1]
        self.assertEqual(delta["delta"]["stop_reason"], "end_turn")
        self.assertEqual(delta["usage"]["output_tokens"], 7)
        self.assertGreater(delta["usage"]["input_tokens"], 0)
        sent = json.loads(self.mock.last()["body"])
        self.assertEqual(sent["stream_options"], {"include_usage": True})

    def test_stream_tool_use_with_input_json_delta(self):
        st, _, data = self.post(msg_body("w @mock:tool,stream=3", stream=True))
        self.assertEqual(st, 200, data)
        evs = sse_events(data)
        start = [d for n, d in evs if n == "content_block_start"]
        self.assertEqual(len(start), 1)
        self.assertEqual(start[0]["content_block"]["type"], "tool_use")
        self.assertEqual(start[0]["content_block"]["name"], "lookup")
        self.assertEqual(start[0]["content_block"]["input"], {})
        parts = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"]
        self.assertEqual(json.loads("".join(parts)), {"text": "echo: w @mock:tool,stream=3"})
        self.assertEqual([d for n, d in evs if n == "message_delta"][0]["delta"]["stop_reason"],
                         "tool_use")
        self.assertEqual(evs[-1][0], "message_stop")

    def test_missing_max_tokens_refused_for_openai_target(self):
        body = msg_body("x")
        del body["max_tokens"]
        st, _, res = self.post_json(body)
        self.assert_anthropic_error(st, res, 400, "invalid_request_error")
        self.assertIn("max_tokens", res["error"]["message"])
        self.assertEqual(self.mock.stats()["received"], 0)

    # --- Anthropic upstream: relayed --------------------------------------------------------

    def test_relayed_to_anthropic_upstream_with_version(self):
        st, h, res = self.post_json(msg_body("bonjour", model="claude", top_k=5),
                                    headers={"anthropic-version": "2023-01-01",
                                             "anthropic-beta": "tools-2024"})
        self.assertEqual(st, 200, res)
        self.assertEqual(res["content"][0]["text"], "echo: bonjour")
        self.assertEqual(h["x-llmux-upstream"], "claude")
        last = self.mock.last()
        self.assertEqual(last["path"], "/v1/messages")
        self.assertEqual(last["headers"]["anthropic-version"], "2023-01-01")
        self.assertEqual(last["headers"]["anthropic-beta"], "tools-2024")
        self.assertEqual(last["headers"]["x-api-key"], "sk-ant-secret-456")
        sent = json.loads(last["body"])
        self.assertEqual((sent["model"], sent["top_k"]), ("claude-test", 5))

    def test_relayed_stream_passes_events_through(self):
        st, _, data = self.post(msg_body("s @mock:stream=2", model="claude", stream=True))
        self.assertEqual(st, 200, data)
        names = [n for n, _ in sse_events(data)]
        self.assertEqual(names, ["message_start", "content_block_start", "ping",
                                 "content_block_delta", "content_block_delta",
                                 "content_block_stop", "message_delta", "message_stop"])

    def test_count_tokens_relayed_or_501(self):
        body = {"model": "claude", "messages": [{"role": "user", "content": "count me"}]}
        st, _, res = self.post_json(body, path="/v1/messages/count_tokens")
        self.assertEqual(st, 200, res)
        self.assertGreater(res["input_tokens"], 0)
        self.assertEqual(self.mock.last()["path"], "/v1/messages/count_tokens")
        body["model"] = "m"
        st, _, res = self.post_json(body, path="/v1/messages/count_tokens")
        self.assert_anthropic_error(st, res, 501, "api_error")
        self.assertEqual(self.mock.stats()["received"], 1)

    # --- errors in Anthropic's shape --------------------------------------------------------

    def test_unknown_model_is_not_found_error(self):
        st, _, res = self.post_json(msg_body("x", model="nope"))
        self.assert_anthropic_error(st, res, 404, "not_found_error")

    def test_invalid_json_and_unknown_method(self):
        st, _, data = self.post(b'{"model": ')
        self.assert_anthropic_error(st, json.loads(data), 400, "invalid_request_error")
        st, h, data = self.d.request("GET", "/v1/messages")
        self.assert_anthropic_error(st, json.loads(data), 405, "invalid_request_error")
        self.assertEqual(h["allow"], "POST")

    def test_body_over_limit_is_request_too_large(self):
        st, _, data = self.post(json.dumps(msg_body("x" * 70000)).encode())
        self.assert_anthropic_error(st, json.loads(data), 413, "request_too_large")
        st, _, data = self.d.request("POST", "/v1/chat/completions", b"x" * 70000)
        self.assertEqual((st, json.loads(data)["error"]["type"]), (413, "invalid_request_error"))

    def test_bad_anthropic_version_refused(self):
        st, _, data = self.post(msg_body("x"), headers={"anthropic-version": "2023-06-01; evil"})
        self.assert_anthropic_error(st, json.loads(data), 400, "invalid_request_error")
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_upstream_500_is_api_error_502(self):
        for model in ("m", "claude"):
            st, _, res = self.post_json(msg_body("x @mock:status=500", model=model))
            self.assert_anthropic_error(st, res, 502, "api_error")

    def test_upstream_4xx_relayed_in_anthropic_shape(self):
        st, _, res = self.post_json(msg_body("x @mock:status=400"))
        self.assert_anthropic_error(st, res, 400, "invalid_request_error")
        self.assertIn("mock: failure requested", res["error"]["message"])

    def test_deadline_is_api_error_504(self):
        st, _, res = self.post_json(msg_body("x @mock:delay=3000"),
                                    headers={"X-Llmux-Timeout-Ms": "200"})
        self.assert_anthropic_error(st, res, 504, "api_error")

    def test_mid_stream_failure_is_an_error_event(self):
        st, evs, clean = post_stream(self.d.port, "/v1/messages",
                                     msg_body("x @mock:stream=3,reset_after=1", stream=True))
        self.assertEqual((st, clean), (200, False))
        self.assertEqual(evs[0][0], "message_start")
        self.assertEqual(evs[-1][0], "error")
        self.assertEqual(evs[-1][1]["error"]["type"], "api_error")

    def test_fallback_applies_as_on_chat(self):
        st, h, res = self.post_json(msg_body("fb", model="fallback"))
        self.assertEqual(st, 200, res)
        self.assertEqual(h["x-llmux-attempts"], "2")
        self.assertEqual(res["content"][0]["text"], "echo: fb")

    def test_disconnect_cancels_upstream(self):
        abandon_stream(self, "/v1/messages",
                       msg_body("x @mock:stream=50,interval=100", stream=True), b"message_start")

    def test_gather_item_with_messages_endpoint(self):
        st, _, data = self.d.request("POST", "/v1/gather", {"requests": [
            {"endpoint": "/v1/messages", "body": msg_body("g1")},
            {"endpoint": "/v1/messages", "body": msg_body("g2", model="claude")},
            {"endpoint": "/v1/messages", "body": msg_body("g3", model="nope")}]})
        res = json.loads(data)
        self.assertEqual(st, 200, res)
        r = res["results"]
        self.assertEqual([e["status"] for e in r], [200, 200, 404])
        self.assertEqual(r[0]["response"]["type"], "message")
        self.assertEqual(r[0]["response"]["content"][0]["text"], "echo: g1")
        self.assertEqual(r[1]["response"]["content"][0]["text"], "echo: g2")
        self.assertIn("message", r[2]["error"])
        self.assertGreater(res["usage"]["completion_tokens"], 0)

    def test_answers_match_the_openapi_document(self):
        check = test_docs.Validate.check
        for model in ("m", "claude"):
            st, _, res = self.post_json(msg_body("doc", model=model))
            self.assertEqual(st, 200)
            check("Message", res)
        st, _, res = self.post_json(msg_body("doc", model="nope"))
        check("AnthropicErrorResponse", res)
        st, _, res = self.post_json({"model": "claude", "messages": []},
                                    path="/v1/messages/count_tokens")
        check("TokenCount", res)
        check("MessagesRequest", msg_body("doc"))

    def test_metrics_count_the_route(self):
        self.post_json(msg_body("count"))
        m = self.d.metrics()
        self.assertGreaterEqual(m['llmux_http_requests_total{route="messages",status="200"}'], 1)


class MessagesKeysTest(Case):
    extra = """
keys:
  - name: team
    key: sk-team-1
  - name: limited
    key: sk-limited-1
    rpm: 1
"""

    def post(self, headers):
        st, h, data = self.d.request("POST", "/v1/messages", msg_body("k"), headers)
        return st, h, json.loads(data)

    def test_x_api_key_and_bearer_accepted(self):
        st, _, res = self.post(dict(SDK_HEADERS, **{"x-api-key": "sk-team-1"}))
        self.assertEqual(st, 200, res)
        st, _, res = self.post({"Authorization": "Bearer sk-team-1"})
        self.assertEqual(st, 200, res)

    def test_missing_or_wrong_key_is_authentication_error(self):
        for headers in ({}, {"x-api-key": "sk-wrong"}):
            st, _, res = self.post(headers)
            self.assertEqual((st, res["type"], res["error"]["type"]),
                             (401, "error", "authentication_error"))
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_key_rate_limit_is_rate_limit_error(self):
        st, _, _ = self.post({"x-api-key": "sk-limited-1"})
        self.assertEqual(st, 200)
        st, h, res = self.post({"x-api-key": "sk-limited-1"})
        self.assertEqual((st, res["error"]["type"]), (429, "rate_limit_error"))
        self.assertIn("retry-after", h)


class MessagesBreakerTest(Case):
    """The circuit breaker guards /v1/messages as it guards chat; its 503 is overloaded_error."""
    extra = """
health:
  failures: 2
  cooldown: 30s
"""

    def test_open_breaker_is_overloaded_error_with_retry_after(self):
        for _ in range(2):
            st, _, data = self.d.request("POST", "/v1/messages",
                                         msg_body("x @mock:status=500", model="claude"),
                                         SDK_HEADERS)
            self.assertEqual(st, 502, data)
        st, h, data = self.d.request("POST", "/v1/messages", msg_body("x", model="claude"),
                                     SDK_HEADERS)
        res = json.loads(data)
        self.assertEqual((st, res["error"]["type"]), (503, "overloaded_error"))
        self.assertIn("retry-after", h)
        self.assertEqual(self.mock.stats()["received"], 2)


class ResponsesTest(Case):
    def post(self, body, headers=None):
        return self.d.request("POST", "/v1/responses", body, headers)

    def test_relayed_with_model_spliced(self):
        st, h, data = self.post({"model": "m", "input": "hi there", "store": False})
        res = json.loads(data)
        self.assertEqual(st, 200, res)
        self.assertEqual(res["object"], "response")
        self.assertEqual(res["output"][0]["content"][0]["text"], "echo: hi there")
        last = self.mock.last()
        self.assertEqual(last["path"], "/v1/responses")
        sent = json.loads(last["body"])
        self.assertEqual((sent["model"], sent["store"]), ("mock-gpt", False))
        self.assertEqual(h["x-llmux-upstream"], "mock")

    def test_stream_typed_events_pass_through(self):
        st, h, data = self.post({"model": "m", "input": "abc @mock:stream=3", "stream": True})
        self.assertEqual(st, 200, data)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        evs = sse_events(data)
        self.assertEqual([n for n, _ in evs], ["response.created"] +
                         ["response.output_text.delta"] * 3 + ["response.completed"])
        self.assertEqual("".join(d["delta"] for n, d in evs[1:4]), "echo: abc @mock:stream=3")
        self.assertEqual(evs[-1][1]["response"]["usage"]["output_tokens"], 7)

    def test_anthropic_only_model_is_400(self):
        st, _, data = self.post({"model": "claude", "input": "x"})
        res = json.loads(data)
        self.assertEqual(st, 400, res)
        self.assertIn("OpenAI-type", res["error"]["message"])
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_retries_apply(self):
        st, h, data = self.post({"model": "m-retry", "input": "r @mock:fail_first=1,id=resp1"})
        self.assertEqual(st, 200, data)
        self.assertEqual(h["x-llmux-attempts"], "2")

    def test_deadline_504(self):
        st, _, data = self.post({"model": "m", "input": "x @mock:delay=3000"},
                                {"X-Llmux-Timeout-Ms": "200"})
        self.assertEqual(st, 504)
        self.assertEqual(json.loads(data)["error"]["code"], "deadline_exceeded")

    def test_mid_stream_cut_is_truncated(self):
        st, evs, clean = post_stream(self.d.port, "/v1/responses",
                                     {"model": "m", "input": "x @mock:stream=3,reset_after=1",
                                      "stream": True})
        self.assertEqual((st, clean), (200, False))
        self.assertEqual(evs[0][0], "response.created")
        self.assertIn("error", evs[-1][1])

    def test_disconnect_cancels_upstream(self):
        abandon_stream(self, "/v1/responses", {"model": "m", "stream": True,
                                               "input": "x @mock:stream=50,interval=100"},
                       b"response.created")


class MixedTargetsTest(Case):
    """A model with an Anthropic and an OpenAI-type target serves /v1/responses from the latter,
    and /v1/messages from both (relayed to one, translated for the other)."""

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        try:
            cls.d = Daemon(cls.mock, text=MIXED.replace("MOCK", str(cls.mock.port)))
        except Exception:
            cls.mock.stop()
            raise

    def test_only_openai_targets_used(self):
        st, h, data = self.d.request("POST", "/v1/responses", {"model": "mixed", "input": "x"})
        self.assertEqual(st, 200, data)
        self.assertEqual((h["x-llmux-upstream"], h["x-llmux-attempts"]), ("mock", "1"))
        self.assertEqual(self.mock.last()["path"], "/v1/responses")

    def test_messages_fall_back_from_anthropic_to_openai_target(self):
        st, h, data = self.d.request("POST", "/v1/messages",
                                     msg_body("x @mock:fail_first=1,status=500,id=mx1",
                                              model="mixed"), SDK_HEADERS)
        res = json.loads(data)
        self.assertEqual(st, 200, res)
        self.assertEqual((h["x-llmux-upstream"], h["x-llmux-attempts"]), ("mock", "2"))
        self.assertEqual(res["type"], "message")
