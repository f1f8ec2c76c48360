"""/metrics labelled by config names: requests, latency, attempts/retries/fallbacks/failures by
upstream and model, tokens by key and model, limit refusals by key; label values never come
from a request; counters of names that survive a reload keep counting. And the warn line per
failed attempt, at most one a second per target."""
import json
import re
import signal
import time

from harness import Case, Daemon, Mock, parse_metrics


class LabelledMetricsTest(Case):
    extra = """
keys:
  - {name: team-a, key: sk-a}
  - {name: slow-team, key: sk-slow, rpm: 1}
"""

    def chat(self, model, key="sk-a", content="x"):
        return self.d.chat(content, model=model, headers={"Authorization": "Bearer " + key})[0]

    def test_attempts_by_upstream_and_model(self):
        before = self.d.metrics()
        self.assertEqual(self.chat("m"), 200)
        self.assertEqual(self.chat("fallback"), 200)    # dead fails, mock answers
        after = self.d.metrics()

        def delta(k):
            return after.get(k, 0) - before.get(k, 0)
        self.assertEqual(delta('llmux_upstream_attempts_total{upstream="mock",model="m"}'), 1)
        self.assertEqual(delta('llmux_upstream_attempts_total{upstream="dead",model="fallback"}'),
                         1)
        self.assertEqual(delta('llmux_upstream_failures_total{upstream="dead",model="fallback"}'),
                         1)
        self.assertEqual(delta(
            'llmux_upstream_fallbacks_total{upstream="dead",model="fallback"}'), 1)
        self.assertEqual(delta(
            'llmux_upstream_attempts_total{upstream="mock",model="fallback"}'), 1)
        self.assertEqual(delta('llmux_model_requests_total{upstream="mock",model="fallback",'
                               'outcome="completed"}'), 1)
        self.assertEqual(delta(
            'llmux_upstream_duration_seconds_count{upstream="mock",model="m"}'), 1)
        self.assertEqual(delta('llmux_model_request_duration_seconds_count{model="m"}'), 1)
        self.assertGreater(delta('llmux_tokens_total{key="team-a",model="m",kind="prompt"}'), 0)
        self.assertEqual(delta('llmux_tokens_total{key="team-a",model="m",kind="completion"}'), 7)

    def test_retries_by_target(self):
        before = self.d.metrics()
        self.assertEqual(self.chat("dead"), 502)      # retries: 1, one target
        after = self.d.metrics()
        key = '{upstream="dead",model="dead"}'
        for name, n in (("attempts", 2), ("retries", 1), ("failures", 2), ("fallbacks", 0)):
            got = after["llmux_upstream_%s_total%s" % (name, key)] - before.get(
                "llmux_upstream_%s_total%s" % (name, key), 0)
            self.assertEqual(got, n, name)

    def test_limit_refusals_by_key(self):
        self.chat("m", key="sk-slow")
        codes = [self.chat("m", key="sk-slow") for _ in range(3)]
        self.assertIn(429, codes)
        m = self.d.metrics()
        self.assertEqual(m['llmux_key_limited_total{key="slow-team",limit="rpm"}'],
                         codes.count(429))

    def test_client_strings_never_become_labels(self):
        evil = 'gpt"} 1\nllmux_owned{x="'
        self.assertEqual(self.chat(evil), 404)
        self.assertEqual(self.chat("also-not-configured"), 404)
        st, _, data = self.d.request("GET", "/metrics")
        text = data.decode()
        parse_metrics(text)                         # still valid exposition text
        self.assertNotIn("owned", text)
        self.assertNotIn("also-not-configured", text)
        models = set(re.findall(r'[{,]model="([^"]*)"', text))   # not upstream_model
        self.assertLessEqual(models, {"m", "m-retry", "claude", "dead", "fallback"})
        keys = set(l.split('key="', 1)[1].split('"', 1)[0]
                   for l in text.splitlines() if 'key="' in l)
        self.assertLessEqual(keys, {"team-a", "slow-team"})


RELOAD_CONFIG = """listen: ["127.0.0.1:{port}"]
workers: 2
upstreams:
  - {name: mock, base_url: "http://127.0.0.1:MOCK/v1"}
models:
%s
"""


class ReloadCountersTest(Case):
    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        cls.text = RELOAD_CONFIG.replace("MOCK", str(cls.mock.port))
        cls.d = Daemon(cls.mock, text=cls.text % (
            "  - {name: keep, targets: [{upstream: mock}]}\n"
            "  - {name: gone, targets: [{upstream: mock}]}"))

    def reload(self, models):
        n = len(self.d.wait_log("configuration reloaded", 0))
        self.d.write_config(self.text.replace("{port}", str(self.d.port)) % models)
        self.d.signal(signal.SIGHUP)
        end = time.monotonic() + 5
        while len(self.d.wait_log("configuration reloaded", 0)) == n:
            self.assertLess(time.monotonic(), end, "no reload")
            time.sleep(0.02)

    def test_names_that_stay_keep_counting(self):
        key = 'llmux_upstream_attempts_total{upstream="mock",model="keep"}'
        for _ in range(3):
            self.assertEqual(self.d.chat("x", model="keep")[0], 200)
        self.assertEqual(self.d.chat("x", model="gone")[0], 200)
        self.assertEqual(self.d.metrics()[key], 3)
        self.reload("  - {name: keep, targets: [{upstream: mock}]}\n"
                    "  - {name: new, targets: [{upstream: mock}]}")
        self.assertEqual(self.d.chat("x", model="keep")[0], 200)
        self.assertEqual(self.d.chat("x", model="new")[0], 200)
        m = self.d.metrics()
        self.assertEqual(m[key], 4)                 # monotonic across the reload
        self.assertEqual(m['llmux_upstream_attempts_total{upstream="mock",model="new"}'], 1)
        self.assertFalse([k for k in m if 'model="gone"' in k])


class AttemptLogTest(Case):
    def attempt_lines(self):
        return [json.loads(l) for l in self.d.logs().splitlines()
                if '"msg":"upstream attempt failed"' in l]

    def test_one_line_per_failure_rate_limited_per_target(self):
        self.assertEqual(self.d.chat("x", model="fallback")[0], 200)
        line = self.d.wait_log("upstream attempt failed") and self.attempt_lines()[-1]
        self.assertEqual((line["upstream"], line["model"]), ("dead", "fallback"))
        self.assertEqual(line["next"], "fallback (next target)")
        self.assertIn("connect", line["error"].lower())
        # a burst of failures on one target: one line now, the rest counted in the next (kept
        # under health.failures, 5, so the breaker stays closed)
        n = len(self.attempt_lines())
        for _ in range(3):
            self.assertEqual(self.d.chat("x", model="dead", headers={
                "X-Llmux-No-Retry": "1"})[0], 502)
        time.sleep(1.1)
        self.assertEqual(self.d.chat("x", model="dead", headers={
            "X-Llmux-No-Retry": "1"})[0], 502)
        time.sleep(0.2)
        lines = [l for l in self.attempt_lines()[n:] if l["model"] == "dead"]
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual(lines[0]["next"], "give_up (no-retry asked)")
        self.assertEqual(lines[1]["suppressed"], 2)

    def test_upstream_error_status_is_named(self):
        self.assertEqual(self.d.chat("x @mock:status=503", model="m")[0], 502)
        time.sleep(0.2)
        line = [l for l in self.attempt_lines() if l["model"] == "m"][-1]
        self.assertEqual((line["upstream"], line["status"], line["error"]),
                         ("mock", 503, "status 503"))
        self.assertEqual(line["next"], "give_up (no target left)")
