"""Spend budgets as a client and an operator see them: the estimate reserved at admission, 429
budget_exceeded with Retry-After to the window's reset and x-llmux-budget-remaining-usd, the
settle on every end (answer, upstream error, deadline, client gone mid-stream), model budgets,
spend kept across a restart (jobs.dir/budget.json), GET /v1/spend visibility, `llmux spend`,
and one budget held by two llmuxd on one Redis — with the overshoot of 200 concurrent requests
against a nearly spent budget measured and bounded by the estimates in flight."""
import calendar
import json
import math
import os
import re
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import Case, Daemon, Mock, RedisServer, free_port
from test_docs import Validate
from test_state_redis import wait_until

# 1000 USD per million tokens: one token costs a tenth of a cent, so budgets are small numbers.
PRICE = """
prices:
  - {model: "mock-gpt*", input: 1000, output: 1000}
  - {model: "claude-*", input: 1000, output: 1000}
"""
KEYS = """
keys:
  - {name: team-a, key: sk-a, budget: {usd: 0.1, window: 1d}}
  - {name: team-b, key: sk-b, budget: {usd: 5, window: calendar_month}}
  - {name: free, key: sk-free}
  - {name: boss, key: sk-boss, admin: true}
  - {name: team-g, key: sk-g, budget: {usd: 0.07, window: 1d}}
"""
NANO = 1e9


def auth(key):
    return {"Authorization": "Bearer " + key}


def body_of(content="hello", model="m", **extra):
    b = {"model": model, "messages": [{"role": "user", "content": content}]}
    b.update(extra)
    return b


def estimate(body, max_tokens):
    """What the gateway reserves: ceil(bytes / 4) prompt tokens + max_tokens, at 1e-3 USD each."""
    n = len(json.dumps(body).encode())
    return ((n + 3) // 4 + max_tokens) / 1000.0


def next_midnight():
    now = time.time()
    return (int(now) // 86400 + 1) * 86400 - now


def spend_of(d, key, who="sk-boss"):
    st, _, data = d.request("GET", "/v1/spend", headers=auth(who))
    assert st == 200, data
    for k in json.loads(data)["keys"]:
        if k["key"] == key:
            return k
    raise AssertionError("no key %s in %s" % (key, data))


def stopped(d):
    """Stops d (again is harmless) and fails when it did not exit cleanly (ASan included)."""
    rc = d.stop()
    assert rc == 0, "llmuxd exited with %s; log:\n%s" % (rc, d.logs()[-4000:])


def config_text(mock, models_extra, extra):
    """The harness's default config with lines added under model m (e.g. a budget)."""
    models_extra = models_extra.replace("{", "{{").replace("}", "}}")
    text = harness.DEFAULT_CONFIG.replace(
        "  - name: m\n    retries: 0\n", "  - name: m\n    retries: 0\n" + models_extra)
    return text.format(port="{port}", mock=mock.port, dead=free_port(), workers=1,
                       header_timeout="10s", body_timeout="30s", limits="", extra=extra)


class BudgetTest(Case):
    extra = PRICE + KEYS

    def test_reserve_settle_and_refuse(self):
        spent = 0.0
        body = body_of(max_tokens=10)
        est = estimate(body, 10)
        for _ in range(20):
            st, h, data = self.d.request("POST", "/v1/chat/completions", body, auth("sk-a"))
            if st != 200:
                break
            cost = float(h["x-llmux-cost-usd"])
            self.assertLess(cost, est + 1e-9, "the estimate covers an answer within max_tokens")
            spent += cost
            self.assertAlmostEqual(float(h["x-llmux-budget-remaining-usd"]), 0.1 - spent,
                                   places=6)
        self.assertEqual(st, 429, data)
        err = json.loads(data)["error"]
        self.assertEqual(err["code"], "budget_exceeded")
        self.assertIn("team-a", err["message"])
        # refused because spent + this estimate would pass the budget, not before
        self.assertGreater(spent + est, 0.1 - 1e-9)
        self.assertLessEqual(spent, 0.1 + 1e-9)
        self.assertAlmostEqual(int(h["retry-after"]), next_midnight(), delta=5)
        self.assertAlmostEqual(float(h["x-llmux-budget-remaining-usd"]), 0.1 - spent, places=6)
        k = spend_of(self.d, "team-a")
        self.assertAlmostEqual(k["spent_usd"], spent, places=6)
        self.assertEqual(k["reserved_usd"], 0)
        self.assertEqual(k["models"], [{"model": "m", "spent_usd": k["spent_usd"]}])
        m = self.d.metrics()
        self.assertGreaterEqual(m['llmux_key_limited_total{key="team-a",limit="budget"}'], 1)
        self.assertAlmostEqual(m['llmux_budget_spent_usd{key="team-a"}'], spent, places=6)
        self.assertAlmostEqual(m['llmux_budget_remaining_usd{key="team-a"}'], 0.1 - spent,
                               places=6)
        self.assertNotIn('llmux_budget_spent_usd{key="free"}', m)
        # an answer that reserves nothing still tells the budgeted key what is left
        st, h, _ = self.d.request("GET", "/v1/models", headers=auth("sk-a"))
        self.assertEqual(st, 200)
        self.assertAlmostEqual(float(h["x-llmux-budget-remaining-usd"]), 0.1 - spent, places=6)

    def test_estimate_uses_max_tokens_then_the_model_default(self):
        # team-b has 5 USD: an estimate over it is refused before any upstream call
        st, h, data = self.d.request("POST", "/v1/chat/completions",
                                     body_of(max_completion_tokens=6000), auth("sk-b"))
        self.assertEqual(st, 429, data)
        self.assertEqual(self.mock.stats()["received"], 0)
        # no cap in the body: default_max_tokens (4096) tokens of completion, 4.1 USD, fits
        st, h, data = self.d.request("POST", "/v1/chat/completions", body_of(), auth("sk-b"))
        self.assertEqual(st, 200, data)
        self.assertIn("x-llmux-budget-remaining-usd", h)
        # calendar month: the reset is the first of next month, UTC
        st, h, _ = self.d.request("POST", "/v1/chat/completions", body_of(max_tokens=9000),
                                  auth("sk-b"))
        self.assertEqual(st, 429)
        t = time.gmtime()
        y, mo = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        reset = calendar.timegm((y, mo, 1, 0, 0, 0))
        self.assertAlmostEqual(int(h["retry-after"]), reset - time.time(), delta=5)

    def test_anthropic_shape_on_messages(self):
        body = {"model": "claude", "max_tokens": 100000,
                "messages": [{"role": "user", "content": "hi"}]}
        st, h, data = self.d.request("POST", "/v1/messages", body, auth("sk-a"))
        self.assertEqual(st, 429, data)
        err = json.loads(data)
        self.assertEqual(err["type"], "error")
        self.assertEqual(err["error"]["type"], "rate_limit_error")
        self.assertIn("retry-after", h)

    def test_keys_without_budget_have_no_header(self):
        st, h, _ = self.d.chat("hello", headers=auth("sk-free"))
        self.assertEqual(st, 200)
        self.assertNotIn("x-llmux-budget-remaining-usd", h)
        self.assertIn("x-llmux-cost-usd", h)

    def test_every_end_settles_exactly_once(self):
        before = spend_of(self.d, "team-b")["spent_usd"]
        # upstream error: nothing was billed, the reservation goes back
        st, _, _ = self.d.chat("boom @mock:status=500", headers=auth("sk-b"), max_tokens=5)
        self.assertEqual(st, 502)
        # deadline before any byte
        st, _, _ = self.d.chat("slow @mock:delay=3000", max_tokens=5,
                               headers=dict(auth("sk-b"), **{"X-Llmux-Timeout-Ms": "200"}))
        self.assertEqual(st, 504)
        k = spend_of(self.d, "team-b")
        self.assertEqual(k["reserved_usd"], 0)
        self.assertAlmostEqual(k["spent_usd"], before, places=9)
        # the client leaves mid-stream: the answer under way is charged, the reservation freed
        body = json.dumps(body_of("stream @mock:stream=50,interval=100", stream=True,
                                  max_tokens=5)).encode()
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                  b"sk-b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        self.assertIn(b"200", s.recv(4096))
        self.assertTrue(wait_until(lambda: spend_of(self.d, "team-b")["reserved_usd"] > 0))
        s.close()
        self.assertTrue(wait_until(lambda: spend_of(self.d, "team-b")["reserved_usd"] == 0))
        self.assertGreater(spend_of(self.d, "team-b")["spent_usd"], before)

    def test_gather_items_and_jobs_reserve_each(self):
        item = body_of("item @mock:delay=200", max_tokens=10)
        est = estimate(item, 10)
        self.assertTrue(2 * est <= 0.07 < 3 * est, est)     # room for two items, not three
        st, _, data = self.d.request("POST", "/v1/gather", {"requests": [item] * 3},
                                     auth("sk-g"))
        self.assertEqual(st, 200, data)
        results = json.loads(data)["results"]
        self.assertEqual([r["status"] for r in results], [200, 200, 429])
        self.assertEqual(results[2]["error"]["code"], "budget_exceeded")
        k = spend_of(self.d, "team-g")
        self.assertEqual(k["reserved_usd"], 0)
        self.assertAlmostEqual(k["spent_usd"], json.loads(data)["cost_usd"], places=9)
        # a job runs through the same admission: refused once the rest does not fit
        st, _, data = self.d.request("POST", "/v1/jobs", {"request": item}, auth("sk-g"))
        self.assertEqual(st, 202, data)
        jid = json.loads(data)["id"]
        job = {}
        self.assertTrue(wait_until(lambda: job.update(json.loads(self.d.request(
            "GET", "/v1/jobs/" + jid, headers=auth("sk-g"))[2])) or
            job["status"] in ("succeeded", "failed")))
        self.assertEqual(job["status"], "failed")
        self.assertEqual(job["error"]["code"], "budget_exceeded")

    def test_spend_visibility(self):
        st, _, data = self.d.request("GET", "/v1/spend", headers=auth("sk-a"))
        self.assertEqual(st, 200)
        own = json.loads(data)
        Validate.check("SpendReport", own)
        self.assertEqual([k["key"] for k in own["keys"]], ["team-a"])
        self.assertEqual(own["models"], [])
        self.assertEqual(own["keys"][0]["budget"]["window"], "1d")
        st, _, data = self.d.request("GET", "/v1/spend", headers=auth("sk-free"))
        self.assertEqual(json.loads(data)["keys"][0]["budget"], None)
        Validate.check("SpendReport", json.loads(data))
        st, _, data = self.d.request("GET", "/v1/spend", headers=auth("sk-boss"))
        Validate.check("SpendReport", json.loads(data))
        self.assertEqual([k["key"] for k in json.loads(data)["keys"]],
                         ["team-a", "team-b", "free", "boss", "team-g"])
        for h in ({}, auth("sk-nope")):
            st, _, data = self.d.request("GET", "/v1/spend", headers=h)
            self.assertEqual(st, 401)
            self.assertNotIn(b"sk-nope", data)
        st, h, _ = self.d.request("POST", "/v1/spend", {}, auth("sk-a"))
        self.assertEqual(st, 405)
        self.assertEqual(h["allow"], "GET")

    def run_cli(self, *args, key="sk-boss"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        env.update(LLMUX_URL="http://127.0.0.1:%d" % self.d.port, LLMUX_API_KEY=key)
        return subprocess.run([harness.binary("llmux"), *args], env=env, capture_output=True,
                              text=True, timeout=30)

    def test_cli(self):
        self.d.chat("hello", headers=auth("sk-b"), max_tokens=5)
        r = self.run_cli("spend")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("KEY / MODEL"), lines)
        row = next(l for l in lines if l.startswith("team-b"))
        spent = spend_of(self.d, "team-b")["spent_usd"]
        self.assertAlmostEqual(float(row.split()[1]), spent, places=6)
        self.assertIn("calendar_month", row)
        self.assertIn("  m ", "\n".join(lines))
        self.assertTrue(any(l.startswith("free") and " - " in l for l in lines))
        r = self.run_cli("spend", "--name", "team-b")
        self.assertEqual([l.split()[0] for l in r.stdout.splitlines()[1:]], ["team-b", "m"])
        r = self.run_cli("spend", "--json", key="sk-a")
        self.assertEqual([k["key"] for k in json.loads(r.stdout)["keys"]], ["team-a"])
        r = self.run_cli("spend", "--json", "--name", "team-b")      # the admin sees all
        self.assertEqual([k["key"] for k in json.loads(r.stdout)["keys"]], ["team-b"])
        r = self.run_cli("spend", "--name", "team-b", key="sk-a")
        self.assertEqual(r.returncode, 2)
        r = self.run_cli("spend", key="sk-nope")
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("sk-nope", r.stderr)


class ModelBudgetTest(unittest.TestCase):
    """A model's budget caps its spend across keys; a request must fit both budgets."""

    @classmethod
    def setUpClass(cls):
        cls.mock = Mock()
        try:
            text = config_text(cls.mock, "    budget: {usd: 0.05, window: 7d}\n", PRICE + KEYS)
            cls.d = Daemon(cls.mock, text=text)
        except Exception:
            cls.mock.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        stopped(cls.d)
        cls.mock.stop()

    def test_model_budget_across_keys(self):
        statuses = []
        for key in ["sk-free", "sk-b"] * 10:
            st, h, data = self.d.request("POST", "/v1/chat/completions", body_of(max_tokens=5),
                                         auth(key))
            statuses.append(st)
            if st == 429:
                break
        self.assertEqual(statuses[-1], 429)
        self.assertIn("the model 'm'", json.loads(data)["error"]["message"])
        week = 7 * 86400
        self.assertAlmostEqual(int(h["retry-after"]), week - time.time() % week, delta=5)
        st, _, data = self.d.request("GET", "/v1/spend", headers=auth("sk-boss"))
        Validate.check("SpendReport", json.loads(data))
        model = json.loads(data)["models"][0]
        self.assertEqual(model["model"], "m")
        self.assertLessEqual(model["spent_usd"], 0.05 + 1e-9)
        self.assertEqual(model["budget"]["window"], "7d")
        # another model is not capped by m's budget
        st, _, _ = self.d.request("POST", "/v1/chat/completions",
                                  body_of(model="m-retry", max_tokens=5), auth("sk-free"))
        self.assertEqual(st, 200)


class RestartTest(unittest.TestCase):
    def test_spend_survives_a_crash(self):
        mock = Mock()
        d = Daemon(mock, extra=PRICE + KEYS)
        try:
            for _ in range(3):
                self.assertEqual(d.chat("hi", headers=auth("sk-a"), max_tokens=5)[0], 200)
            before = spend_of(d, "team-a")
            self.assertGreater(before["spent_usd"], 0)
            jobs = os.path.join(d.dir, "jobs")

            def saved():
                try:
                    with open(os.path.join(jobs, "budget.json")) as f:
                        accts = json.load(f)["accounts"]
                except (OSError, ValueError):
                    return None
                return sum(a["spent"] for a in accts if a["name"] == "k:team-a")

            # written by the helper thread within about a second: a crash then loses nothing
            self.assertTrue(wait_until(lambda: saved() == round(before["spent_usd"] * NANO)))
            d.proc.kill()
            d.proc.wait()
            d2 = Daemon(mock, extra=PRICE + KEYS + "\njobs:\n  dir: %s\n" % jobs)
            try:
                after = spend_of(d2, "team-a")
                self.assertAlmostEqual(after["spent_usd"], before["spent_usd"], places=9)
                self.assertEqual(after["models"], before["models"])
            finally:
                stopped(d2)
        finally:
            if d.proc.poll() is None:
                stopped(d)
            mock.stop()

    def test_config_is_checked(self):
        bad = [("budget: {usd: 0}", "above 0"), ("budget: {usd: -3}", "above 0"),
               ("budget: {usd: 5, window: 2d}", "1d, 7d, 30d or calendar_month"),
               ("budget: {window: 1d}", "missing required key"),
               ("budget: {usd: 5, windw: 1d}", "did you mean"), ("admin: maybe", "")]
        for line, want in bad:
            with self.subTest(line=line):
                path = os.path.join(harness.tempfile.mkdtemp(), "c.yaml")
                with open(path, "w") as f:
                    f.write("keys:\n  - name: a\n    key: sk-1\n    %s\n" % line)
                r = subprocess.run([harness.binary("llmuxd"), "-t", "-c", path],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn("keys[0]", r.stderr)
                self.assertIn(want, r.stderr)

    def test_budget_without_prices_is_warned(self):
        path = os.path.join(harness.tempfile.mkdtemp(), "c.yaml")
        for prices, warned in (("", True), (PRICE, False)):
            with open(path, "w") as f:
                f.write("keys:\n  - {name: a, key: sk-1, budget: {usd: 5}}\n" + prices)
            r = subprocess.run([harness.binary("llmuxd"), "-t", "-c", path],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual("no budget is ever spent" in r.stderr, warned, r.stderr)


def overshoot(daemons, secret, n=200, max_tokens=5):
    """n requests at once with the key secret, spread over daemons: their statuses, and the
    estimate each reserves."""
    body = body_of("race @mock:delay=300", max_tokens=max_tokens)
    est = estimate(body, max_tokens)
    results = [None] * n
    go = threading.Barrier(n)

    def one(i):
        d = daemons[i % len(daemons)]
        go.wait()
        try:
            results[i] = d.request("POST", "/v1/chat/completions", body, auth(secret),
                                   timeout=60)[0]
        except OSError as e:
            results[i] = str(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, est


def race(daemons, secret, key, room=0.4, max_tokens=1, n=200):
    """Spends key's budget down to about `room` USD (big prompts), then sends 200 requests at
    once over daemons. max_tokens=1 while the mock answers 7 tokens: each answer costs more than
    its estimate, so the overshoot is not trivially 0. Returns the figures of the race."""
    d = daemons[0]
    big = "x" * 2000                    # about 500 tokens: 0.5 USD an answer
    while spend_of(d, key)["remaining_usd"] > room + 0.6:
        assert d.chat(big, headers=auth(secret), max_tokens=1)[0] == 200
    while spend_of(d, key)["remaining_usd"] > room:
        assert d.chat("x" * 100, headers=auth(secret), max_tokens=1)[0] == 200
    settled = lambda: spend_of(d, key)["reserved_usd"] == 0     # redis: settles land async
    assert wait_until(settled)
    before = spend_of(d, key)
    results, est = overshoot(daemons, secret, n=n, max_tokens=max_tokens)
    assert wait_until(settled)
    after = spend_of(d, key)
    usd = after["budget"]["usd"]
    return {"n": len(results), "admitted": results.count(200), "refused": results.count(429),
            "other": [r for r in results if r not in (200, 429)], "estimate": est,
            "room": before["remaining_usd"], "spent": after["spent_usd"], "usd": usd,
            "overshoot": max(after["spent_usd"] - usd, 0), "reserved": after["reserved_usd"],
            "bound": results.count(200) * est}


def describe(f):
    return ("%(n)d requests at once, %(admitted)d admitted (room %(room).4f USD for estimates "
            "of %(estimate).4f), spent %(spent).6f of %(usd).2f USD: overshoot %(overshoot).6f "
            "USD, bound (estimates in flight) %(bound).6f USD" % f)


class OvershootCheck:
    """200 concurrent requests against a budget with room for about ten: the requests admitted
    are those whose estimates fit the room, so the spend passes the budget by no more than the
    estimates in flight."""

    def check(self, f):
        print("\n  overshoot: " + describe(f))
        self.assertEqual(f["other"], [])
        self.assertEqual(f["admitted"] + f["refused"], f["n"])
        self.assertGreaterEqual(f["admitted"], 1)
        self.assertLessEqual(f["admitted"], math.floor(f["room"] / f["estimate"] + 1e-9))
        self.assertLessEqual(f["overshoot"], f["bound"] + 1e-9)
        self.assertEqual(f["reserved"], 0)



class OvershootTest(OvershootCheck, unittest.TestCase):
    def test_overshoot_memory_two_workers(self):
        mock = Mock()
        d = Daemon(mock, extra=PRICE + KEYS, workers=2)
        try:
            self.check(race([d], "sk-b", "team-b"))
        finally:
            stopped(d)
            mock.stop()


def slow_request(d, secret):
    """A request that stays in flight (mock delay 5 s) on its own thread; returns the thread."""
    t = threading.Thread(target=lambda: d.request(
        "POST", "/v1/chat/completions", body_of("slow @mock:delay=5000", max_tokens=5),
        auth(secret), timeout=30), daemon=True)
    t.start()
    return t


class ShutdownTest(unittest.TestCase):
    """A request cut by shutdown settles: its reservation does not outlive the process."""

    def test_memory(self):
        mock = Mock()
        d = Daemon(mock, extra=PRICE + KEYS + "shutdown_grace: 200ms\n")
        try:
            self.assertEqual(d.chat("hi", headers=auth("sk-b"), max_tokens=5)[0], 200)
            spent = spend_of(d, "team-b")["spent_usd"]
            t = slow_request(d, "sk-b")
            self.assertTrue(wait_until(lambda: spend_of(d, "team-b")["reserved_usd"] > 0))
            self.assertEqual(d.stop(), 0)       # cut after 200 ms: 503, no answer, no charge
            t.join(10)
            with open(os.path.join(d.dir, "jobs", "budget.json")) as f:
                saved = json.load(f)
            acct = [a for a in saved["accounts"] if a["name"] == "k:team-b"]
            self.assertEqual(acct[0]["spent"], round(spent * NANO))
            self.assertNotIn("reserved", acct[0])       # reservations are never saved
        finally:
            stopped(d)
            mock.stop()

    def test_redis(self):
        mock = Mock()
        redis = RedisServer(persist=False)
        state = "\nstate:\n  backend: redis\n  redis: %s\n  timeout: 2s\n" % redis.url
        d = None
        try:
            d = Daemon(mock, extra=PRICE + KEYS + state + "shutdown_grace: 200ms\n")
            self.assertTrue(wait_until(lambda: d.request("GET", "/v1/spend",
                                                         headers=auth("sk-b"))[0] == 200))
            t = slow_request(d, "sk-b")
            self.assertTrue(wait_until(lambda: spend_of(d, "team-b")["reserved_usd"] > 0))
            self.assertEqual(d.stop(), 0)
            t.join(10)
            key = redis.command("KEYS", "llmux:budget:*")[0]
            fields = redis.command("HGETALL", key)
            h = dict(zip(fields[::2], fields[1::2]))
            self.assertEqual(h["reserved"], "0", h)
            self.assertEqual([f for f in h if f.startswith("r:")], [])
        finally:
            if d:
                stopped(d)
            redis.stop()
            mock.stop()


class RedisBudgetTest(OvershootCheck, unittest.TestCase):
    """Two llmuxd on one Redis hold one budget, not two."""

    def test_settle_after_script_flush(self):
        # Redis lost its scripts (restart, failover, SCRIPT FLUSH) while a request was in
        # flight: its settle, sent without waiting for an answer, still lands.
        mock = Mock()
        redis = RedisServer(persist=False)
        state = "\nstate:\n  backend: redis\n  redis: %s\n  timeout: 2s\n" % redis.url
        d = None
        try:
            d = Daemon(mock, extra=PRICE + KEYS + state)
            self.assertTrue(wait_until(lambda: d.request("GET", "/v1/spend",
                                                         headers=auth("sk-b"))[0] == 200))
            t = threading.Thread(target=lambda: d.request(
                "POST", "/v1/chat/completions", body_of("x @mock:delay=1500", max_tokens=5),
                auth("sk-b"), timeout=30), daemon=True)
            t.start()
            self.assertTrue(wait_until(lambda: spend_of(d, "team-b")["reserved_usd"] > 0))
            self.assertEqual(redis.command("SCRIPT", "FLUSH"), "OK")
            t.join(10)
            self.assertTrue(wait_until(lambda: spend_of(d, "team-b")["reserved_usd"] == 0))
            self.assertGreater(spend_of(d, "team-b")["spent_usd"], 0)
        finally:
            if d:
                stopped(d)
            redis.stop()
            mock.stop()

    def test_two_instances_one_budget(self):
        mock = Mock()
        redis = RedisServer(persist=False)
        state = "\nstate:\n  backend: redis\n  redis: %s\n  timeout: 2s\n" % redis.url
        ds = []
        try:
            ds = [Daemon(mock, extra=PRICE + KEYS + state, workers=2) for _ in range(2)]
            for d in ds:
                self.assertTrue(wait_until(lambda: d.request("GET", "/v1/spend",
                                                             headers=auth("sk-a"))[0] == 200))
            # alternate: each instance sees the other's spend
            spent = 0.0
            for i in range(10):
                st, h, _ = ds[i % 2].chat("hi", headers=auth("sk-a"), max_tokens=5)
                if st != 200:
                    break
                spent += float(h["x-llmux-cost-usd"])
                # the settle follows the answer out: the other instance sees it a moment later
                other = ds[(i + 1) % 2]
                self.assertTrue(wait_until(lambda: abs(spend_of(other, "team-a")["spent_usd"] -
                                                       spent) < 1e-6), (i, spent))
            keys = redis.command("KEYS", "llmux:budget:*")
            self.assertEqual(len(keys), 1, keys)
            # an unpriced model reserves 0 and settles 0 without a script error
            def errors():   # "ERR" answers (a script's HINCRBY of a non-integer would be one)
                m = re.search(r"errorstat_ERR:count=(\d+)", redis.command("INFO", "errorstats"))
                return int(m.group(1)) if m else 0
            before = errors()
            self.assertEqual(ds[0].chat("x", model="dead", headers=auth("sk-a"))[0], 502)
            fields = lambda: redis.command("HGETALL", keys[0])
            self.assertTrue(wait_until(lambda: not any(f.startswith("r:") for f in fields())))
            time.sleep(0.2)
            self.assertEqual(errors(), before)
            ttl = redis.command("TTL", keys[0])
            self.assertGreater(ttl, next_midnight())        # kept past the window's end
            self.assertLess(ttl, next_midnight() + 7200)
            self.check(race(ds, "sk-b", "team-b"))
        finally:
            for d in ds:
                stopped(d)
            redis.stop()
            mock.stop()


    def test_redis_down_follows_on_error(self):
        mock = Mock()
        redis = RedisServer(persist=False)
        ds = {}
        try:
            for policy in ("open", "closed"):
                state = ("\nstate:\n  backend: redis\n  redis: %s\n  timeout: 300ms\n"
                         "  on_error: %s\n" % (redis.url, policy))
                ds[policy] = Daemon(mock, extra=PRICE + KEYS + state)
                self.assertTrue(wait_until(lambda: ds[policy].request(
                    "GET", "/v1/spend", headers=auth("sk-b"))[0] == 200))
            redis.stop()
            st, _, _ = ds["open"].chat("hi", headers=auth("sk-b"), max_tokens=5)
            self.assertEqual(st, 200)
            st, h, data = ds["closed"].chat("hi", headers=auth("sk-b"), max_tokens=5)
            self.assertEqual(st, 503)
            self.assertEqual(data["error"]["code"], "state_unavailable")
            self.assertEqual(h["retry-after"], "1")
            st, _, data = ds["closed"].request("GET", "/v1/spend", headers=auth("sk-b"))
            self.assertEqual(st, 503)
            self.assertNotIn(b"redis://", data)
            # unbudgeted keys never touch the budget state
            self.assertEqual(ds["closed"].chat("hi", headers=auth("sk-free"))[0], 200)
        finally:
            for d in ds.values():
                stopped(d)
            redis.stop()
            mock.stop()

if __name__ == "__main__":
    unittest.main()
