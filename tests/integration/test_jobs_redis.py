"""Background jobs on Redis (state.backend: redis): two llmuxd on one real redis-server see each
other's jobs, a DELETE on one aborts the upstream call running on the other, an instance that
dies leaves its job to the other (XAUTOCLAIM), and Redis down means a clear 503, not a lost
job."""
import json
import time

from harness import Case, Daemon, RedisServer, chat_body
from test_jobs import get, submit, wait_status


def redis_extra(redis, workers=8):
    return "state:\n  backend: redis\n  redis: %s\njobs:\n  workers: %d\n" % (redis.url, workers)


class RedisJobsTest(Case):
    @classmethod
    def setUpClass(cls):
        cls.redis = RedisServer()
        cls.extra = redis_extra(cls.redis)
        try:
            super().setUpClass()
            cls.d2 = Daemon(cls.mock, extra=cls.extra, workers=2)
        except Exception:
            cls.redis.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.d2.stop()
            super().tearDownClass()
        finally:
            cls.redis.stop()

    def wait_ready(self, d):
        end = time.monotonic() + 10
        while time.monotonic() < end:
            st, _, _ = d.request("GET", "/v1/jobs")
            if st == 200:
                return
            time.sleep(0.05)
        self.fail("jobs on Redis never became available")

    def setUp(self):
        super().setUp()
        self.wait_ready(self.d)
        self.wait_ready(self.d2)

    def test_instances_see_each_others_jobs(self):
        st, h, job = submit(self.d, {"request": chat_body("shared")})
        self.assertEqual(st, 202)
        self.assertEqual(h["location"], "/v1/jobs/" + job["id"])
        done = wait_status(self.d2, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "succeeded", done)
        self.assertEqual(done["result"]["choices"][0]["message"]["content"], "echo: shared")
        st, _, data = self.d2.request("GET", "/v1/jobs?status=succeeded&limit=1000")
        self.assertIn(job["id"], [j["id"] for j in json.loads(data)["data"]])
        st, _, _ = self.d.request("DELETE", "/v1/jobs/" + job["id"])
        self.assertEqual(st, 409)
        self.assertEqual(get(self.d2, "job_" + "q" * 24)[0], 404)

    def test_gather_job_and_validation(self):
        st, _, job = submit(self.d2, {"gather": {"requests": [chat_body("x"), chat_body("y")]}})
        self.assertEqual(st, 202)
        done = wait_status(self.d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["result"]["succeeded"], 2)
        st, _, err = submit(self.d, {"request": chat_body("x"), "extra": True})
        self.assertEqual((st, err["error"]["param"]), (400, "extra"))

    def test_cancel_on_one_instance_aborts_the_call_on_the_other(self):
        for _ in range(3):      # whichever instance runs it, cancel from the other
            self.mock.reset()
            _, _, job = submit(self.d, {"request": chat_body("long @mock:delay=20000")})
            wait_status(self.d, job["id"], ("running",))
            self.mock.wait_stats(lambda s: s["inflight"] == 1, 5)
            t0 = time.monotonic()
            st, _, data = self.d2.request("DELETE", "/v1/jobs/" + job["id"])
            self.assertEqual(st, 200)
            self.assertEqual(json.loads(data)["status"], "cancelled")
            s = self.mock.wait_stats(lambda s: s["aborted"] == 1, 5)
            self.assertEqual(s["aborted"], 1, "the upstream call went on")
            self.assertLess(time.monotonic() - t0, 2.0)
            self.assertEqual(get(self.d, job["id"])[1]["status"], "cancelled")


class RedisTakeoverTest(Case):
    """An instance killed with its job running: after the takeover idle time the other
    instance runs it (XAUTOCLAIM)."""

    def test_dead_instance_job_is_taken_over(self):
        redis = RedisServer()
        self.addCleanup(redis.stop)
        a = Daemon(self.mock, extra=redis_extra(redis, workers=1), workers=1)
        self.addCleanup(a.stop)
        RedisJobsTest.wait_ready(self, a)
        _, _, job = submit(a, {"request": chat_body("orphan @mock:delay=2000")})
        wait_status(a, job["id"], ("running",))
        a.proc.kill()
        a.proc.wait()
        b = Daemon(self.mock, extra=redis_extra(redis, workers=1), workers=1)
        self.addCleanup(b.stop)
        RedisJobsTest.wait_ready(self, b)
        self.assertEqual(get(b, job["id"])[1]["status"], "running")
        done = wait_status(b, job["id"], ("succeeded", "failed"), timeout=60)
        self.assertEqual(done["status"], "succeeded")
        self.assertTrue(b.wait_log("taking over"))


class RedisDownTest(Case):
    def test_redis_down_answers_503_and_chat_still_serves(self):
        redis = RedisServer()
        redis.stop()
        d = Daemon(self.mock, extra=redis_extra(redis), workers=1)
        self.addCleanup(d.stop)
        st, h, err = submit(d, {"request": chat_body("nowhere")})
        self.assertEqual(st, 503)
        self.assertEqual(err["error"]["code"], "jobs_unavailable")
        self.assertIn("Redis", err["error"]["message"])
        self.assertIn("retry-after", h)
        self.assertEqual(d.chat("still")[0], 200)
        redis.start()
        self.addCleanup(redis.stop)
        RedisJobsTest.wait_ready(self, d)
        st, _, job = submit(d, {"request": chat_body("back")})
        self.assertEqual(st, 202)
        self.assertEqual(wait_status(d, job["id"], ("succeeded",))["status"], "succeeded")


class RedisRestartTest(Case):
    def test_redis_stopped_mid_run_loses_no_job(self):
        redis = RedisServer()
        self.addCleanup(redis.stop)
        d = Daemon(self.mock, extra=redis_extra(redis), workers=1)
        self.addCleanup(d.stop)
        RedisJobsTest.wait_ready(self, d)
        _, _, job = submit(d, {"request": chat_body("through it @mock:delay=1000")})
        wait_status(d, job["id"], ("running",))
        redis.stop()            # the job ends while Redis is away
        self.mock.wait_stats(lambda s: s["completed"] == 1, 5)
        st, _, err = submit(d, {"request": chat_body("meanwhile")})
        self.assertEqual((st, err["error"]["code"]), (503, "jobs_unavailable"))
        redis.start()           # same port, same data (append-only file)
        RedisJobsTest.wait_ready(self, d)
        done = wait_status(d, job["id"], ("succeeded", "failed"))
        self.assertEqual(done["status"], "succeeded", "the end was not written once Redis came "
                         "back")
