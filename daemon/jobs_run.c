/* jobs_run: the worker side of jobs. The store posts messages to a worker's inbox and wakes
 * it (ev_async); the worker starts jobs as requests whose sink collects the answer, ends them
 * on cancel, answers submissions once their record is durable, and frees ended requests at a
 * safe point (never inside their own callbacks). */
#include "daemon/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "common/log.h"
#include "daemon/gather.h"
#include "daemon/jobs_impl.h"
#include "daemon/jobs_record.h"
#include "daemon/jobs_store.h"
#include "daemon/router.h"
#include "daemon/worker.h"


static void run_respond(struct request *r, int status, const char *body, size_t len);
static void run_stream_start(struct request *r, int status);
static bool run_stream_data(struct request *r, const char *p, size_t n);
static void run_stream_end(struct request *r, bool complete) {}
static void run_ended(struct request *r);

static const struct sink_ops job_sink = {
    run_respond, run_stream_start, run_stream_data, run_stream_end, run_ended,
};

static void collect(struct job_run *run, const char *p, size_t n)
{
    if (run->too_big || run->out.len + n > run->max || buf_append(&run->out, p, n) < 0) {
        run->too_big = true;
        buf_free(&run->out);
    }
}

static void run_respond(struct request *r, int status, const char *body, size_t len)
{
    struct job_run *run = r->owner;
    run->status = status;
    collect(run, body, len);
}

static void run_stream_start(struct request *r, int status)
{
    ((struct job_run *)r->owner)->status = status;
}

static bool run_stream_data(struct request *r, const char *p, size_t n)
{
    collect(r->owner, p, n);
    return false;       /* the store never pushes back */
}

/* The answer decides the job: a 2xx JSON object is its result; otherwise the answer's error
 * object (or one naming the status) is its error. */
static enum job_status verdict(struct job_run *run, char **out, size_t *len)
{
    size_t start, end;
    const char *b = run->out.data;
    if (run->too_big) {
        *out = job_error_text("server_error", "result_too_large", "the job's answer is larger "
                              "than jobs.max_result_bytes (%llu bytes)",
                              (unsigned long long)run->max);
    } else if (run->status >= 200 && run->status < 300 && b &&
               json_valid_object(b, run->out.len) == 0) {
        *len = run->out.len;
        *out = buf_steal(&run->out);
        return JOB_SUCCEEDED;
    } else if (b && json_scan_member(b, run->out.len, "error", &start, &end) == 0 &&
               b[start] == '{') {
        *out = strndup(b + start, end - start);
    } else {
        *out = job_error_text("upstream_error", "bad_answer", "the job's request ended with "
                              "status %d and no error object", run->status);
    }
    *len = *out ? strlen(*out) : 0;
    return JOB_FAILED;
}

/* The run's end goes to its backend; a Redis job's struct is the run's own. */
static void finish(struct worker *w, struct job *j, enum job_status st, char *out, size_t len,
                   bool requeue)
{
    if (jobs_redis_on(w))
        jobs_redis_finish(w, j, st, out, len, requeue);
    else
        jobs_store_finish(w->srv->jobs, j, st, out, len, requeue);
}

static void reap_later(struct worker *w, struct request *r)
{
    struct jobs_worker *jw = w->jobs;
    if (jw->nreap == jw->capreap) {
        size_t cap = jw->capreap ? jw->capreap * 2 : 16;
        struct request **p = realloc(jw->reap, cap * sizeof *p);
        if (!p) {
            log_error("jobs: out of memory; a finished job's request is leaked");
            return;
        }
        jw->reap = p;
        jw->capreap = cap;
    }
    jw->reap[jw->nreap++] = r;
    ev_async_send(w->loop, &jw->wake);
}

static void run_ended(struct request *r)
{
    struct job_run *run = r->owner;
    struct jobs_worker *jw = r->w->jobs;
    char *out = NULL;
    size_t len = 0;
    bool requeue = r->outcome == OUTCOME_SHUTDOWN;
    enum job_status st = requeue ? JOB_QUEUED : verdict(run, &out, &len);
    finish(r->w, run->job, st, out, len, requeue);
    if (run->prev)
        run->prev->next = run->next;
    else
        jw->runs = run->next;
    if (run->next)
        run->next->prev = run->prev;
    jw->running--;
    reap_later(r->w, r);
    worker_maybe_finished(r->w);
}

static const struct conf_key *key_named(const struct conf *c, const char *name)
{
    for (size_t i = 0; name && i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0)
            return &c->keys[i];
    return NULL;
}

/* The job's deadline: what is left of its own timeout_ms, else timeouts.default; both capped
 * by timeouts.max like any request's. */
static uint64_t deadline_ms(const struct conf *c, const struct job *j)
{
    uint64_t ms = c->timeouts.default_ms;
    if (j->timeout_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        int64_t left = j->created_ms + (int64_t)j->timeout_ms - now;
        ms = left > 1 ? (uint64_t)left : 1;
    }
    if (c->timeouts.max_ms && ms > c->timeouts.max_ms)
        ms = c->timeouts.max_ms;
    return ms;
}

/* The stored request is read like a client's body: validated in one pass, no tree. */
static void start_request(struct request *r, struct job *j)
{
    r->wait_for_key = true;             /* a job waits for its key's slot, never a 429 */
    if (j->key && !(r->key = key_named(r->conf, j->key))) {
        request_fail(r, 403, "permission_error", "key_removed", NULL, "the key that submitted "
                     "this job is no longer configured", OUTCOME_REJECTED);
    } else if (json_valid_object(j->input, j->input_len) < 0) {
        request_fail(r, 500, "server_error", "bad_record", NULL, "the job's stored request "
                     "is not JSON", OUTCOME_REJECTED);
    } else if (j->kind == JOB_GATHER) {
        gather_start(r, j->input, j->input_len);
    } else {
        r->ep = EP_CHAT;
        request_charge(r, j->input_len);
        if (buf_append(&r->body_raw, j->input, j->input_len) < 0)   /* spliced, not re-encoded */
            request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                         OUTCOME_REJECTED);
        else
            router_start_upstream(r, "request.");
    }
}

void jobs_run_start(struct worker *w, struct job *j, uint64_t max_result)
{
    struct jobs_worker *jw = w->jobs;
    struct job_run *run = calloc(1, sizeof *run);
    struct request *r = run ? request_new(w, w->conf, &job_sink, run,
                                          j->kind == JOB_GATHER ? ROUTE_GATHER : ROUTE_CHAT)
                            : NULL;
    if (!r) {
        free(run);
        char *e = job_error_text("server_error", "overloaded", "out of memory");
        finish(w, j, JOB_FAILED, e, e ? strlen(e) : 0, false);
        if (jw->redis)
            job_free(j);
        return;
    }
    run->job = j;
    run->req = r;
    run->max = max_result;
    run->next = jw->runs;
    if (jw->runs)
        jw->runs->prev = run;
    jw->runs = run;
    jw->running++;
    snprintf(r->id, sizeof r->id, "%s", j->id);
    snprintf(r->method, sizeof r->method, "JOB");
    snprintf(r->path, sizeof r->path, "/v1/jobs/%s", j->id);
    request_set_deadline(r, deadline_ms(r->conf, j));
    if (w->draining)
        request_end(r, OUTCOME_SHUTDOWN);   /* runs again at the next start */
    else
        start_request(r, j);
}

static void reap(struct jobs_worker *jw)
{
    for (size_t i = 0; i < jw->nreap; i++) {
        struct job_run *run = jw->reap[i]->owner;
        request_free(jw->reap[i]);
        buf_free(&run->out);
        if (jw->redis)
            job_free(run->job);     /* a Redis job's copy belongs to its run */
        free(run);
    }
    jw->nreap = 0;
}

/* DELETE of a job running here: its request ends now, aborting its upstream calls. */
static void cancel_run(struct jobs_worker *jw, const char *id)
{
    for (struct job_run *run = jw->runs; run; run = run->next)
        if (strcmp(run->job->id, id) == 0) {
            request_end(run->req, OUTCOME_CANCELLED);
            return;
        }
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct jobs_msg *m = w->srv->jobs ? jobs_store_take(w->srv->jobs, w->id) : NULL;
    while (m) {
        struct jobs_msg *next = m->next;
        if (m->type == JOBS_MSG_SUBMITTED)
            jobs_submitted(w, m);
        else if (m->type == JOBS_MSG_START)
            jobs_run_start(w, m->job, jobs_store_max_result(w->srv->jobs));
        else
            cancel_run(w->jobs, m->id);
        free(m);
        m = next;
    }
    reap(w->jobs);
}

int jobs_worker_init(struct worker *w)
{
    struct jobs_worker *jw = calloc(1, sizeof *jw);
    if (!jw)
        return -1;
    ev_async_init(&jw->wake, on_wake);
    jw->wake.data = w;
    ev_async_start(w->loop, &jw->wake);
    ev_unref(w->loop);      /* a worker with no connections may stop; jobs hold it otherwise */
    w->jobs = jw;
    char err[256];
    if (jobs_redis_init(w, err, sizeof err) < 0) {
        log_error("jobs: %s", err);
        return -1;
    }
    return 0;
}

void jobs_worker_free(struct worker *w)
{
    struct jobs_worker *jw = w->jobs;
    if (!jw)
        return;
    reap(jw);       /* what ended last; the loop has stopped */
    jobs_redis_free(w);
    free(jw->reap);
    free(jw);
    w->jobs = NULL;
}

bool jobs_worker_idle(const struct worker *w)
{
    return !w->jobs || w->jobs->running == 0;
}

void jobs_worker_abort(struct worker *w)
{
    struct jobs_worker *jw = w->jobs;
    while (jw && jw->runs)
        request_end(jw->runs->req, OUTCOME_SHUTDOWN);
}

void jobs_wake_worker(void *ctx, unsigned worker)
{
    struct server *s = ctx;
    struct worker *w = &s->workers[worker];
    ev_async_send(w->loop, &w->jobs->wake);
}
