"""Proxying through llmuxd: OpenAI pass-through, Anthropic translation, headers, errors, retries,
fallbacks, models, health — what a client of the gateway sees, and what the upstream saw."""
import json

from harness import Case, chat_body


class ProxyTest(Case):
    def test_chat_is_proxied_with_usage(self):
        st, h, body = self.d.chat("hello there")
        self.assertEqual(st, 200)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["choices"][0]["message"]["content"], "echo: hello there")
        self.assertGreater(body["usage"]["total_tokens"], 0)
        self.assertEqual(h["x-llmux-upstream"], "mock")
        self.assertEqual(h["x-llmux-attempts"], "1")
        self.assertEqual(h["content-type"], "application/json")

    def test_upstream_gets_target_model_key_and_request_id(self):
        st, h, _ = self.d.chat("hi", headers={"X-Request-Id": "abc-123",
                                              "Authorization": "Bearer client-key"})
        self.assertEqual(st, 200)
        self.assertEqual(h["x-request-id"], "abc-123")
        last = self.mock.last()
        self.assertEqual(json.loads(last["body"])["model"], "mock-gpt")
        self.assertEqual(last["headers"]["authorization"], "Bearer sk-upstream-secret-123")
        self.assertEqual(last["headers"]["x-request-id"], "abc-123")

    def test_only_allow_listed_client_headers_reach_the_upstream(self):
        st, _, _ = self.d.chat("hi", headers={"OpenAI-Beta": "assistants=v2",
                                              "Cookie": "session=1", "X-Secret": "s",
                                              "Authorization": "Bearer client-key"})
        self.assertEqual(st, 200)
        sent = self.mock.last()["headers"]
        self.assertEqual(sent["openai-beta"], "assistants=v2")
        for name in ("cookie", "x-secret"):
            self.assertNotIn(name, sent)
        self.assertNotIn("client-key", json.dumps(sent))

    def test_request_id_generated_when_absent_or_unsafe(self):
        _, h1, _ = self.d.chat("a")
        _, h2, _ = self.d.chat("b", headers={"X-Request-Id": "bad id\twith junk"})
        self.assertRegex(h1["x-request-id"], r"^[A-Za-z0-9_.:-]{8,}$")
        self.assertNotEqual(h1["x-request-id"], h2["x-request-id"])
        self.assertNotIn(" ", h2["x-request-id"])

    def test_anthropic_translation(self):
        st, h, body = self.d.chat("bonjour", model="claude")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["object"], "chat.completion")
        self.assertEqual(body["model"], "claude-test")     # the upstream's, as OpenAI answers
        self.assertEqual(body["choices"][0]["message"]["content"], "echo: bonjour")
        self.assertEqual(body["choices"][0]["finish_reason"], "stop")
        last = self.mock.last()
        self.assertEqual(last["path"], "/v1/messages")
        self.assertEqual(last["headers"]["x-api-key"], "sk-ant-secret-456")
        self.assertIn("anthropic-version", last["headers"])
        sent = json.loads(last["body"])
        self.assertEqual(sent["model"], "claude-test")
        self.assertIn("max_tokens", sent)

    def test_anthropic_error_is_translated(self):
        st, _, body = self.d.chat("x @mock:status=400", model="claude")
        self.assertEqual(st, 400)
        self.assertIn("message", body["error"])
        self.assertIn("type", body["error"])

    def test_unknown_model_404(self):
        st, _, body = self.d.chat("hi", model="nope")
        self.assertEqual(st, 404)
        self.assertEqual(body["error"]["code"], "model_not_found")
        self.assertEqual(self.mock.stats()["received"], 0)

    def test_invalid_json_400(self):
        st, _, data = self.d.request("POST", "/v1/chat/completions", b'{"model": ')
        body = json.loads(data)
        self.assertEqual(st, 400)
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        self.assertEqual(body["error"]["code"], "invalid_json")

    def test_missing_fields_name_param(self):
        st, _, data = self.d.request("POST", "/v1/chat/completions", {"messages": []})
        self.assertEqual((st, json.loads(data)["error"]["param"]), (400, "model"))
        st, _, data = self.d.request("POST", "/v1/chat/completions", {"model": "m"})
        self.assertEqual((st, json.loads(data)["error"]["param"]), (400, "messages"))
        st, _, data = self.d.request("POST", "/v1/chat/completions", [1, 2])
        self.assertEqual(st, 400)
        st, _, data = self.d.request("POST", "/v1/chat/completions",
                                     chat_body("x", stream="yes"))
        self.assertEqual((st, json.loads(data)["error"]["param"]), (400, "stream"))

    def test_unknown_path_and_method(self):
        st, _, data = self.d.request("GET", "/v1/nothing")
        self.assertEqual(st, 404)
        self.assertIn("error", json.loads(data))
        st, h, data = self.d.request("GET", "/v1/chat/completions")
        self.assertEqual(st, 405)
        self.assertEqual(h["allow"], "POST")
        self.assertIn("error", json.loads(data))

    def test_upstream_5xx_is_502(self):
        st, _, body = self.d.chat("x @mock:status=500")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["type"], "upstream_error")
        self.assertIsNone(body["error"]["param"])

    def test_upstream_4xx_relayed_as_is(self):
        st, _, body = self.d.chat("x @mock:status=422")
        self.assertEqual(st, 422)
        self.assertIn("message", body["error"])

    def test_upstream_reset_is_502(self):
        st, _, body = self.d.chat("x @mock:reset")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["code"], "upstream_reset")

    def test_upstream_garbage_is_502(self):
        st, _, body = self.d.chat("x @mock:garbage")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["type"], "upstream_error")

    def test_upstream_unreachable_is_502_after_retries(self):
        st, h, body = self.d.chat("x", model="dead")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["code"], "upstream_unreachable")
        self.assertEqual(h["x-llmux-attempts"], "2")

    def test_429_with_retry_after(self):
        st, h, body = self.d.chat("x @mock:status=429,retry_after=7")
        self.assertEqual(st, 429)
        self.assertEqual(h["retry-after"], "7")

    def test_retry_recovers(self):
        st, h, body = self.d.chat("x @mock:fail_first=2,status=503", model="m-retry")
        self.assertEqual(st, 200, body)
        self.assertEqual(h["x-llmux-attempts"], "3")
        self.assertEqual(self.mock.stats()["received"], 3)

    def test_no_retry_header(self):
        st, h, _ = self.d.chat("x @mock:fail_first=2,status=503,nr", model="m-retry",
                               headers={"X-Llmux-No-Retry": "1"})
        self.assertEqual(st, 502)
        self.assertEqual(h["x-llmux-attempts"], "1")

    def test_fallback_to_next_target(self):
        st, h, body = self.d.chat("x", model="fallback")
        self.assertEqual(st, 200, body)
        self.assertEqual(h["x-llmux-upstream"], "mock")
        self.assertEqual(h["x-llmux-attempts"], "2")

    def test_completions_and_embeddings(self):
        st, _, data = self.d.request("POST", "/v1/embeddings", {"model": "m", "input": "hi"})
        self.assertEqual(st, 200, data)
        self.assertEqual(json.loads(data)["object"], "list")
        self.assertEqual(self.mock.last()["path"], "/v1/embeddings")
        st, _, data = self.d.request("POST", "/v1/completions", {"model": "m", "prompt": "x"})
        self.assertEqual(st, 200, data)
        st, _, data = self.d.request("POST", "/v1/embeddings",
                                     {"model": "claude", "input": "hi"})
        self.assertEqual(st, 400)

    def test_models_health_ready(self):
        st, _, data = self.d.request("GET", "/v1/models")
        ids = [m["id"] for m in json.loads(data)["data"]]
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(data)["object"], "list")
        self.assertIn("m", ids)
        self.assertIn("claude", ids)
        st, _, data = self.d.request("GET", "/healthz")
        self.assertEqual((st, json.loads(data)), (200, {"status": "ok"}))

    def test_upstream_auth_failure_is_not_relayed(self):
        st, _, body = self.d.chat("x @mock:status=401")
        self.assertEqual(st, 502)
        self.assertEqual(body["error"]["code"], "upstream_auth_failed")
        st, _, body = self.d.chat("x @mock:status=403", model="claude")
        self.assertEqual((st, body["error"]["code"]), (502, "upstream_auth_failed"))

    def test_secrets_never_logged_or_returned(self):
        self.d.chat("x @mock:status=401")
        self.d.chat("x", model="dead")
        self.d.chat("x", model="claude")
        st, _, metrics = self.d.request("GET", "/metrics")
        logs = self.d.logs()
        for secret in ("sk-upstream-secret-123", "sk-ant-secret-456"):
            self.assertNotIn(secret, logs)
            self.assertNotIn(secret, metrics.decode())

    def test_access_log_escapes_client_text(self):
        self.d.chat("x", headers={"X-Request-Id": "ok-id"}, model='evil"\nmodel')
        lines = self.d.wait_log('"ok-id"')
        self.assertEqual(len(lines), 1)
        entry = json.loads(lines[0])
        self.assertEqual(entry["model"], 'evil"\nmodel')
        self.assertEqual(entry["status"], 404)


class KeysTest(Case):
    extra = """
keys:
  - name: team-a
    key: key-aaaaaaaa
    models: [m]
  - name: team-b
    key: key-bbbbbbbb
"""

    def test_missing_and_unknown_key_401(self):
        st, _, body = self.d.chat("hi")
        self.assertEqual((st, body["error"]["code"]), (401, "missing_api_key"))
        st, _, body = self.d.chat("hi", headers={"Authorization": "Bearer nope"})
        self.assertEqual((st, body["error"]["code"]), (401, "invalid_api_key"))

    def test_key_model_permission(self):
        st, _, _ = self.d.chat("hi", headers={"Authorization": "Bearer key-aaaaaaaa"})
        self.assertEqual(st, 200)
        st, _, body = self.d.chat("hi", model="claude",
                                  headers={"Authorization": "Bearer key-aaaaaaaa"})
        self.assertEqual(st, 403)
        st, _, _ = self.d.chat("hi", model="claude", headers={"x-api-key": "key-bbbbbbbb"})
        self.assertEqual(st, 200)

    def test_models_list_filtered_by_key(self):
        st, _, data = self.d.request("GET", "/v1/models",
                                     headers={"Authorization": "Bearer key-aaaaaaaa"})
        self.assertEqual([m["id"] for m in json.loads(data)["data"]], ["m"])

    def test_key_name_logged_never_key(self):
        self.d.chat("hi", headers={"Authorization": "Bearer key-aaaaaaaa",
                                   "X-Request-Id": "keyed-1"})
        line = self.d.wait_log("keyed-1")[0]
        self.assertEqual(json.loads(line)["key"], "team-a")
        self.assertNotIn("key-aaaaaaaa", self.d.logs())

    def test_health_needs_no_key(self):
        self.assertEqual(self.d.request("GET", "/healthz")[0], 200)


class BreakerTest(Case):
    extra = """
health:
  failures: 2
  cooldown: 400ms
"""

    def test_breaker_opens_skips_then_probes(self):
        attempts = [self.d.chat("x", model="fallback")[1]["x-llmux-attempts"] for _ in range(2)]
        self.assertEqual(attempts, ["2", "2"])          # dead fails, mock answers
        st, h, _ = self.d.chat("x", model="fallback")
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "1"))   # dead's circuit is open
        st, _, data = self.d.request("GET", "/readyz")
        # per target: "fallback" still has mock, and "dead" sends another upstream model
        self.assertEqual(st, 200)
        self.assertEqual([(t["upstream"], t["model"]) for t in json.loads(data)["open_targets"]],
                         [("dead", "fallback")])
        import time
        time.sleep(0.45)
        st, h, _ = self.d.chat("x", model="fallback")
        self.assertEqual((st, h["x-llmux-attempts"]), (200, "2"))   # one probe after cooldown
        st, h, _ = self.d.chat("x", model="fallback")
        self.assertEqual(h["x-llmux-attempts"], "1")     # the probe failed: open again
