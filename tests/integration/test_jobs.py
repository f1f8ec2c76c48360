"""Background jobs (/v1/jobs) as a client sees them: the lifecycle, results of chat and gather
jobs, validation, cancel aborting the upstream call, ?status/?limit, keys seeing only their own
jobs, the bounds (workers, max_queued, timeout_ms, max_result_bytes), an unwritable jobs.dir,
retention, and kill -9 in the middle of running jobs."""
import json
import os
import pty
import select
import socket
import subprocess
import tempfile
import time

import harness
from harness import Case, Daemon, chat_body


def submit(d, body, headers=None):
    st, h, data = d.request("POST", "/v1/jobs", body, headers)
    return st, h, json.loads(data)


def get(d, jid, headers=None):
    st, _, data = d.request("GET", "/v1/jobs/" + jid, None, headers)
    return st, json.loads(data)


def wait_status(d, jid, want, headers=None, timeout=10.0):
    """The job once its status is in want (a tuple); fails the caller's test when it never is."""
    end = time.monotonic() + timeout
    while True:
        st, job = get(d, jid, headers)
        if st == 200 and job["status"] in want or time.monotonic() > end:
            return job
        time.sleep(0.02)


def jobs_extra(tmp, **fields):
    lines = ["jobs:", "  dir: %s" % tmp] + ["  %s: %s" % kv for kv in fields.items()]
    return "\n".join(lines) + "\n"


class JobsTest(Case):
    workers = 2

    def test_chat_job_lifecycle(self):
        st, h, job = submit(self.d, {"request": chat_body("hello job")})
        self.assertEqual(st, 202)
        self.assertEqual(h["location"], "/v1/jobs/" + job["id"])
        self.assertTrue(job["id"].startswith("job_"))
        self.assertEqual((job["object"], job["status"]), ("job", "queued"))
        self.assertIsInstance(job["created_at"], int)
        self.assertIsNone(job["started_at"])
        done = wait_status(self.d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "succeeded", done)
        self.assertEqual(done["result"]["object"], "chat.completion")
        self.assertEqual(done["result"]["choices"][0]["message"]["content"], "echo: hello job")
        self.assertLessEqual(done["created_at"], done["started_at"])
        self.assertLessEqual(done["started_at"], done["completed_at"])
        self.assertNotIn("error", done)

    def test_gather_job_result_is_the_gather_answer(self):
        st, _, job = submit(self.d, {"gather": {"requests": [chat_body("a"), chat_body("b")]}})
        self.assertEqual(st, 202)
        done = wait_status(self.d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "succeeded", done)
        res = done["result"]
        self.assertEqual(res["object"], "gather.result")
        self.assertEqual(res["succeeded"], 2)
        self.assertEqual([r["response"]["choices"][0]["message"]["content"]
                          for r in res["results"]], ["echo: a", "echo: b"])

    def test_failed_job_carries_the_error(self):
        _, _, job = submit(self.d, {"request": chat_body("x @mock:status=400")})
        done = wait_status(self.d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "failed")
        self.assertIn("message", done["error"])
        self.assertIn("type", done["error"])
        self.assertNotIn("result", done)

    def test_bad_bodies(self):
        cases = [
            ({"request": chat_body("x"), "priority": 1}, 400, "unknown_field", "priority"),
            ({"request": chat_body("x"), "gather": {"requests": []}}, 400, "invalid_job", None),
            ({}, 400, "invalid_job", None),
            ({"request": "hello"}, 400, "invalid_job", "request"),
            ({"request": {"messages": []}}, 400, "missing_model", "request.model"),
            ({"request": {"model": "m"}}, 400, "missing_messages", "request.messages"),
            ({"request": chat_body("x", stream=True)}, 400, "invalid_job", "request.stream"),
            ({"request": chat_body("x", model="nope")}, 404, "model_not_found", "request.model"),
            ({"gather": {"requests": []}}, 400, "invalid_gather", "gather.requests"),
            ({"request": chat_body("x"), "timeout_ms": -5}, 400, "invalid_type", "timeout_ms"),
            ({"request": chat_body("x"), "timeout_ms": "5s"}, 400, "invalid_type", "timeout_ms"),
        ]
        for body, status, code, param in cases:
            st, _, err = submit(self.d, body)
            self.assertEqual(st, status, body)
            self.assertEqual(err["error"]["code"], code, body)
            self.assertEqual(err["error"]["param"], param, body)
        for raw in ('{"request":', "[]", "null"):
            st, _, data = self.d.request("POST", "/v1/jobs", raw)
            self.assertEqual(st, 400)
            self.assertEqual(json.loads(data)["error"]["code"], "invalid_json")
        st, _, listed = self.d.request("GET", "/v1/jobs?limit=1000")
        for j in json.loads(listed)["data"]:
            self.assertNotIn(j["status"], ("queued", "running"), "a refused body left a job")

    def test_unknown_ids_and_methods(self):
        for jid in ("job_nope", "job_" + "a" * 24, "x" * 300):
            st, err = get(self.d, jid)
            self.assertEqual(st, 404)
            self.assertEqual(err["error"]["code"], "job_not_found")
            st, _, data = self.d.request("DELETE", "/v1/jobs/" + jid)
            self.assertEqual(st, 404)
        st, h, _ = self.d.request("PUT", "/v1/jobs/job_x")
        self.assertEqual((st, h.get("allow")), (405, "GET, DELETE"))
        st, h, _ = self.d.request("DELETE", "/v1/jobs")
        self.assertEqual((st, h.get("allow")), (405, "GET, POST"))

    def test_cancel_aborts_the_upstream_call(self):
        _, _, job = submit(self.d, {"request": chat_body("slow @mock:delay=20000")})
        wait_status(self.d, job["id"], ("running",))
        self.mock.wait_stats(lambda s: s["inflight"] == 1, 5)
        st, _, data = self.d.request("DELETE", "/v1/jobs/" + job["id"])
        self.assertEqual(st, 200)
        cancelled = json.loads(data)
        self.assertEqual(cancelled["status"], "cancelled")
        self.assertEqual(cancelled["error"]["code"], "cancelled")
        s = self.mock.wait_stats(lambda s: s["aborted"] == 1, 5)
        self.assertEqual((s["aborted"], s["inflight"]), (1, 0), "the upstream call went on")
        self.assertEqual(get(self.d, job["id"])[1]["status"], "cancelled")
        st, _, data = self.d.request("DELETE", "/v1/jobs/" + job["id"])
        self.assertEqual(st, 409)
        err = json.loads(data)["error"]
        self.assertEqual(err["code"], "job_finished")
        self.assertIn("already cancelled", err["message"])

    def test_closing_the_submitting_connection_cancels_nothing(self):
        body = json.dumps({"request": chat_body("left @mock:delay=200")}).encode()
        s = socket.create_connection(("127.0.0.1", self.d.port), 5)
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        s.close()           # before the 202
        self.mock.wait_stats(lambda s: s["completed"] == 1, 5)
        st, _, data = self.d.request("GET", "/v1/jobs?status=succeeded&limit=1000")
        texts = [j["id"] for j in json.loads(data)["data"]]
        found = [get(self.d, jid)[1] for jid in texts]
        self.assertTrue(any(j["result"]["choices"][0]["message"]["content"] ==
                            "echo: left @mock:delay=200" for j in found))

    def test_list_filters_and_limits(self):
        ids = []
        for i in range(3):
            ids.append(submit(self.d, {"request": chat_body("list %d" % i)})[2]["id"])
        failing = submit(self.d, {"request": chat_body("boom @mock:status=400")})[2]["id"]
        for jid in ids + [failing]:
            wait_status(self.d, jid, ("succeeded", "failed"))
        st, _, data = self.d.request("GET", "/v1/jobs?limit=2")
        page = json.loads(data)
        self.assertEqual((st, page["object"], page["has_more"]), (200, "list", True))
        self.assertEqual([j["id"] for j in page["data"]], [failing, ids[2]])   # newest first
        self.assertNotIn("result", page["data"][1])
        st, _, data = self.d.request("GET", "/v1/jobs?status=failed&limit=1000")
        failed = [j["id"] for j in json.loads(data)["data"]]
        self.assertIn(failing, failed)
        self.assertFalse(set(ids) & set(failed))
        for q, code in (("limit=0", "invalid_limit"), ("limit=1001", "invalid_limit"),
                        ("limit=x", "invalid_limit"), ("status=done", "invalid_status"),
                        ("colour=red", "unknown_parameter")):
            st, _, data = self.d.request("GET", "/v1/jobs?" + q)
            self.assertEqual(st, 400, q)
            self.assertEqual(json.loads(data)["error"]["code"], code, q)

    def test_metrics_count_jobs_and_group_commit(self):
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            codes = list(ex.map(lambda i: submit(self.d, {"request": chat_body("m%d" % i)})[0],
                                range(200)))
        self.assertEqual(codes, [202] * 200)
        m = self.d.metrics()
        self.assertGreaterEqual(m["llmux_jobs_journal_records_total"], 200)
        self.assertLess(m["llmux_jobs_journal_syncs_total"],
                        m["llmux_jobs_journal_records_total"], "no fsync was shared")
        total = sum(v for k, v in m.items() if k.startswith("llmux_jobs{"))
        self.assertGreaterEqual(total, 200)


class JobKeysTest(Case):
    extra = """
keys:
  - name: alice
    key: key-alice
  - name: bob
    key: key-bob
    models: [claude]
"""
    A = {"Authorization": "Bearer key-alice"}
    B = {"Authorization": "Bearer key-bob"}

    def test_a_key_sees_only_its_own_jobs(self):
        st, _, job = submit(self.d, {"request": chat_body("mine")}, self.A)
        self.assertEqual(st, 202)
        wait_status(self.d, job["id"], ("succeeded",), self.A)
        st, err = get(self.d, job["id"], self.B)
        self.assertEqual((st, err["error"]["code"]), (404, "job_not_found"))
        st, _, _ = self.d.request("DELETE", "/v1/jobs/" + job["id"], None, self.B)
        self.assertEqual(st, 404)
        st, _, data = self.d.request("GET", "/v1/jobs", None, self.B)
        self.assertEqual(json.loads(data)["data"], [])
        st, _, data = self.d.request("GET", "/v1/jobs", None, self.A)
        self.assertEqual([j["id"] for j in json.loads(data)["data"]], [job["id"]])
        self.assertEqual(self.d.request("GET", "/v1/jobs")[0], 401)

    def test_model_allow_list_applies_at_submission(self):
        st, _, err = submit(self.d, {"request": chat_body("x")}, self.B)
        self.assertEqual((st, err["error"]["code"]), (403, "model_not_allowed"))


class JobBoundsTest(Case):
    @classmethod
    def setUpClass(cls):
        cls.extra = jobs_extra(tempfile.mkdtemp(prefix="llmux-jobs-"), workers=1, max_queued=3,
                               max_result_bytes=300)
        super().setUpClass()

    def test_workers_bound_running_jobs(self):
        slow = [submit(self.d, {"request": chat_body("w%d @mock:delay=400" % i)})[2]["id"]
                for i in range(2)]
        wait_status(self.d, slow[0], ("running",))
        self.assertEqual(get(self.d, slow[1])[1]["status"], "queued")
        self.assertEqual(self.mock.stats()["inflight"], 1)
        for jid in slow:
            self.assertEqual(wait_status(self.d, jid, ("succeeded",))["status"], "succeeded")

    def test_max_queued_refuses_with_retry_after(self):
        ids = [submit(self.d, {"request": chat_body("q%d @mock:delay=500" % i)})[2]["id"]
               for i in range(3)]
        st, h, err = submit(self.d, {"request": chat_body("one too many")})
        self.assertEqual(st, 503)
        self.assertEqual(err["error"]["code"], "too_many_jobs")
        self.assertIn("retry-after", h)
        for jid in ids:
            wait_status(self.d, jid, ("succeeded",))

    def test_queued_job_past_its_timeout_expires(self):
        first = submit(self.d, {"request": chat_body("hog @mock:delay=1500")})[2]["id"]
        st, _, job = submit(self.d, {"request": chat_body("late"), "timeout_ms": 300})
        self.assertEqual(st, 202)
        done = wait_status(self.d, job["id"], ("expired", "succeeded", "failed"))
        self.assertEqual(done["status"], "expired")
        self.assertEqual(done["error"]["code"], "job_expired")
        self.assertIsNone(done["started_at"])
        wait_status(self.d, first, ("succeeded",))

    def test_oversized_result_fails_the_job(self):
        _, _, job = submit(self.d, {"request": chat_body("big @mock:bytes=2000")})
        done = wait_status(self.d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "failed")
        self.assertEqual(done["error"]["code"], "result_too_large")
        self.assertIn("jobs.max_result_bytes", done["error"]["message"])


class JobStorageTest(Case):
    """Each test starts its own daemons on its own jobs.dir."""

    def start(self, jobs_dir, **fields):
        d = Daemon(self.mock, extra=jobs_extra(jobs_dir, **fields), workers=2)
        self.addCleanup(d.stop)
        return d

    def test_unwritable_dir_answers_503_and_keeps_serving(self):
        plain = os.path.join(self.d.dir, "plain-file")
        open(plain, "w").close()
        d = self.start(os.path.join(plain, "jobs"))     # a directory under a file
        st, h, err = submit(d, {"request": chat_body("x")})
        self.assertEqual(st, 503)
        self.assertEqual(err["error"]["code"], "jobs_unavailable")
        self.assertIn("jobs.dir", err["error"]["message"])
        self.assertIn("Not a directory", err["error"]["message"])
        self.assertEqual(json.loads(d.request("GET", "/v1/jobs")[2])["data"], [])
        self.assertEqual(d.chat("still serving")[0], 200)

    def test_kill_9_during_running_jobs_then_they_finish(self):
        jobs_dir = os.path.join(self.d.dir, "k9")
        d = self.start(jobs_dir)
        ids = [submit(d, {"request": chat_body("survive %d @mock:delay=2500" % i)})[2]["id"]
               for i in range(3)]
        done = submit(d, {"request": chat_body("finished before")})[2]["id"]
        wait_status(d, done, ("succeeded",))
        for jid in ids:
            wait_status(d, jid, ("running",))
        # 4 submissions, 4 starts, 1 success: a kill before the success is durable would
        # rightly run "finished before" again, which is not what this test is about.
        end = time.monotonic() + 10
        while (d.metrics().get("llmux_jobs_journal_records_total", 0) < 9
               and time.monotonic() < end):
            time.sleep(0.02)
        d.proc.kill()
        d.proc.wait()
        self.mock.wait_stats(lambda s: s["inflight"] == 0, 5)
        self.mock.reset()
        d2 = self.start(jobs_dir)
        kept = get(d2, done)[1]
        self.assertEqual(kept["status"], "succeeded")
        self.assertEqual(kept["result"]["choices"][0]["message"]["content"],
                         "echo: finished before")
        for jid in ids:
            self.assertIn(get(d2, jid)[1]["status"], ("queued", "running"))
        for jid in ids:
            again = wait_status(d2, jid, ("succeeded", "failed"))
            self.assertEqual(again["status"], "succeeded")
            self.assertTrue(again["result"]["choices"][0]["message"]["content"]
                            .startswith("echo: survive"))
        self.assertEqual(self.mock.stats()["completed"], 3)     # each ran once more
        self.assertTrue(d2.wait_log("3 queued (3 were running)"))

    def test_retention_removes_finished_jobs(self):
        jobs_dir = os.path.join(self.d.dir, "ret")
        d = self.start(jobs_dir, retention="1s")
        _, _, job = submit(d, {"request": chat_body("short-lived")})
        wait_status(d, job["id"], ("succeeded",))
        end = time.monotonic() + 10
        while get(d, job["id"])[0] == 200 and time.monotonic() < end:
            time.sleep(0.1)
        self.assertEqual(get(d, job["id"])[0], 404)
        path = os.path.join(jobs_dir, "jobs.journal")
        end = time.monotonic() + 10
        while os.path.getsize(path) > 0 and time.monotonic() < end:
            time.sleep(0.1)
        self.assertEqual(os.path.getsize(path), 0, "the journal was not compacted")


class JobsCliTest(Case):
    """llmux jobs submit|get|wait|cancel|list as a user runs them."""

    def llmux(self, *args, stdin=None, stderr_tty=False):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        env.update(LLMUX_URL="http://127.0.0.1:%d" % self.d.port, LLMUX_MODEL="m")
        if not stderr_tty:
            p = subprocess.run([harness.binary("llmux"), *args], input=stdin, env=env,
                               capture_output=True, text=True, timeout=30)
            return p.returncode, p.stdout, p.stderr
        master, slave = pty.openpty()
        p = subprocess.Popen([harness.binary("llmux"), *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
        os.close(slave)
        out, _ = p.communicate(timeout=30)
        err = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
        os.close(master)
        return p.returncode, out, err.decode(errors="replace")

    def test_submit_then_wait_prints_the_answer(self):
        code, out, err = self.llmux("jobs", "submit", "hello", "cli")
        self.assertEqual(code, 0, err)
        jid = out.strip()
        self.assertRegex(jid, r"^job_[0-9a-z]{24}$")
        code, out, err = self.llmux("jobs", "wait", jid)
        self.assertEqual((code, out), (0, "echo: hello cli\n"), err)
        code, out, _ = self.llmux("jobs", "get", jid)
        self.assertEqual(json.loads(out)["status"], "succeeded")
        code, out, _ = self.llmux("jobs", "list")
        self.assertIn(jid + "\tsucceeded\tchat\t", out)

    def test_submit_wait_from_stdin_and_gather(self):
        code, out, err = self.llmux("jobs", "submit", "--wait", stdin="from stdin\n")
        self.assertEqual((code, out), (0, "echo: from stdin\n"), err)
        self.assertIn("submitted job_", err)
        code, out, err = self.llmux("jobs", "submit", "--gather", "--wait", stdin="a\nb\n")
        self.assertEqual(code, 0, err)
        lines = [json.loads(l) for l in out.splitlines()]
        self.assertEqual([l["index"] for l in lines], [0, 1])
        self.assertEqual(lines[1]["response"]["choices"][0]["message"]["content"], "echo: b")

    def test_wait_shows_progress_on_a_tty_and_exits_2_on_failure(self):
        code, out, err = self.llmux("jobs", "submit", "--wait",
                                    "slow @mock:delay=1500,status=400", stderr_tty=True)
        self.assertEqual(code, 2)
        self.assertEqual(out, "")
        self.assertRegex(err, r"job_[0-9a-z]{24} (queued|running) \d+s")
        self.assertIn("job failed", err)

    def test_cancel_and_errors(self):
        code, out, _ = self.llmux("jobs", "submit", "long @mock:delay=10000")
        jid = out.strip()
        code, out, err = self.llmux("jobs", "cancel", jid)
        self.assertEqual((code, out), (0, jid + " cancelled\n"), err)
        code, _, err = self.llmux("jobs", "cancel", jid)
        self.assertEqual(code, 2)
        self.assertIn("already cancelled", err)
        code, _, err = self.llmux("jobs", "wait", jid)
        self.assertEqual(code, 2)
        self.assertIn("job cancelled", err)
        self.assertEqual(self.llmux("jobs", "get", "job_" + "z" * 24)[0], 2)
        self.assertEqual(self.llmux("jobs", "frobnicate")[0], 1)
        self.assertEqual(self.llmux("jobs", "get")[0], 1)
        self.assertEqual(self.llmux("jobs", "get", "../metrics")[0], 1)
        self.assertEqual(self.llmux("jobs", "list", "--limit", "0")[0], 1)
        code, out, _ = self.llmux("jobs", "list", "--status", "cancelled", "--json")
        self.assertEqual([json.loads(l)["id"] for l in out.splitlines()], [jid])
