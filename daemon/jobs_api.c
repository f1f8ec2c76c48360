/* jobs_api: POST /v1/jobs (validated here, answered 202 once its record is durable),
 * GET /v1/jobs (?status=, ?limit=), GET and DELETE /v1/jobs/{id}. A key sees its own jobs. */
#include "daemon/jobs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/json_valid.h"
#include "daemon/jobs_impl.h"
#include "daemon/jobs_record.h"
#include "daemon/worker.h"

#define JOBS_PREFIX "/v1/jobs/"
#define LIST_DEFAULT 20
#define LIST_MAX 1000
#define QUEUE_FULL_RETRY_S 5

struct mem_pending {            /* a submission waiting for its journal record */
    struct jobs_pending base;   /* base.r: NULL once the request ended (client gone…) */
    struct job *job;
};

static void mem_detach(struct jobs_pending *p)
{
    p->r = NULL;        /* the job is durable or refused all the same; nobody to tell */
}

static void fail400(struct request *r, const char *param, const char *code, const char *msg)
{
    request_fail(r, 400, "invalid_request_error", code, param, msg, OUTCOME_REJECTED);
}

static void unavailable(struct request *r, const char *msg)
{
    request_fail(r, 503, "server_error", "jobs_unavailable", NULL, msg, OUTCOME_REJECTED);
}

static const char *key_name(const struct request *r)
{
    return r->key ? r->key->name : NULL;
}

void jobs_reply(struct request *r, int status, struct buf *b)
{
    request_respond(r, status, b->data, b->len);
    buf_free(b);
    request_end(r, OUTCOME_COMPLETED);
}

/* The chat body: checked as far as a request would be before it reaches an upstream, so a
 * typo is a 400 now rather than a failed job later. */
static int check_chat(struct request *r, json_t *b)
{
    json_t *model = json_object_get(b, "model");
    if (!json_is_object(b)) {
        fail400(r, "request", "invalid_job", "request must be a chat completion body (object)");
    } else if (!json_is_string(model) || !json_string_length(model)) {
        fail400(r, "request.model", "missing_model", "request.model must be a string");
    } else if (!json_is_array(json_object_get(b, "messages"))) {
        fail400(r, "request.messages", "missing_messages", "request.messages must be an array");
    } else if (json_is_true(json_object_get(b, "stream"))) {
        fail400(r, "request.stream", "invalid_job", "a job's answer is stored, not streamed: "
                "drop request.stream");
    } else if (r->key && !conf_key_allows_model(r->key, json_string_value(model))) {
        request_fail(r, 403, "permission_error", "model_not_allowed", NULL,
                     "this key may not use this model", OUTCOME_REJECTED);
    } else if (!conf_find_model(r->conf, json_string_value(model))) {
        char msg[160];
        snprintf(msg, sizeof msg, "the model '%.100s' does not exist", json_string_value(model));
        request_fail(r, 404, "invalid_request_error", "model_not_found", "request.model", msg,
                     OUTCOME_REJECTED);
    } else {
        return 0;
    }
    return -1;
}

static int check_gather(struct request *r, json_t *b)
{
    json_t *reqs = json_object_get(b, "requests");
    if (!json_is_object(b)) {
        fail400(r, "gather", "invalid_job", "gather must be a gather body (object)");
    } else if (!json_is_array(reqs) || json_array_size(reqs) == 0) {
        fail400(r, "gather.requests", "invalid_gather", "gather.requests must be a non-empty "
                "array");
    } else if (json_array_size(reqs) > r->conf->gather.max_items) {
        char msg[96];
        snprintf(msg, sizeof msg, "at most %u requests per gather", r->conf->gather.max_items);
        fail400(r, "gather.requests", "invalid_gather", msg);
    } else if (json_is_true(json_object_get(b, "stream"))) {
        fail400(r, "gather.stream", "invalid_job", "a job's answer is stored, not streamed: "
                "drop gather.stream");
    } else {
        return 0;
    }
    return -1;
}

/* {"request": {…}} or {"gather": {…}}, optional timeout_ms; nothing else. */
static int check_body(struct request *r, json_t *body, json_t **inner, enum job_kind *kind,
                      uint64_t *timeout_ms)
{
    const char *name;
    json_t *v;
    char msg[160];
    json_object_foreach(body, name, v) {
        if (strcmp(name, "request") && strcmp(name, "gather") && strcmp(name, "timeout_ms")) {
            snprintf(msg, sizeof msg, "unknown field '%.60s': a job takes request or gather, "
                     "and timeout_ms", name);
            fail400(r, name, "unknown_field", msg);
            return -1;
        }
    }
    json_t *req = json_object_get(body, "request"), *g = json_object_get(body, "gather");
    json_t *t = json_object_get(body, "timeout_ms");
    if ((req != NULL) == (g != NULL)) {
        fail400(r, NULL, "invalid_job", "a job needs exactly one of request (a chat body) or "
                "gather (a gather body)");
        return -1;
    }
    if (t && (!json_is_integer(t) || json_integer_value(t) <= 0)) {
        fail400(r, "timeout_ms", "invalid_type", "timeout_ms must be a positive integer");
        return -1;
    }
    *timeout_ms = t ? (uint64_t)json_integer_value(t) : 0;
    *kind = g ? JOB_GATHER : JOB_CHAT;
    *inner = g ? g : req;
    return g ? check_gather(r, g) : check_chat(r, req);
}

static struct job *job_make(struct request *r, json_t *inner, enum job_kind kind,
                            uint64_t timeout_ms)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    memcpy(j->id, "job_", 4);
    for (int i = 4; i < JOB_ID_LEN; i++)
        j->id[i] = alphabet[route_rand(&r->w->rng) % 36];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    j->created_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    j->kind = kind;
    j->timeout_ms = timeout_ms;
    j->input = json_dumps(inner, JSON_COMPACT);
    j->input_len = j->input ? strlen(j->input) : 0;
    if (!j->input || (r->key && !(j->key = strdup(r->key->name)))) {
        job_free(j);
        return NULL;
    }
    return j;
}

static void submit(struct request *r, const char *body, size_t len)
{
    struct jobs_store *s = r->w->srv->jobs;
    size_t at = 0;
    int over = 0;       /* validated and priced before any tree is built */
    json_t *j = json_valid(body, len, JSON_VALID_DEPTH, NULL, &at) == 0
                    ? json_valid_load(body, len, 0, &over) : NULL, *inner;
    enum job_kind kind;
    uint64_t timeout_ms;
    char msg[320];
    if (over) {
        request_fail(r, 413, "invalid_request_error", "body_too_complex", NULL,
                     "the body has too many JSON values for its size", OUTCOME_REJECTED);
    } else if (!json_is_object(j)) {
        if (j)
            snprintf(msg, sizeof msg, "the body must be a JSON object");
        else
            snprintf(msg, sizeof msg, "invalid JSON body (at byte %zu; nesting is limited to "
                     "%d levels)", at, JSON_VALID_DEPTH);
        fail400(r, NULL, "invalid_json", msg);
    } else if (check_body(r, j, &inner, &kind, &timeout_ms) == 0) {
        struct job *job = job_make(r, inner, kind, timeout_ms);
        struct mem_pending *p = job && !s ? NULL : job ? malloc(sizeof *p) : NULL;
        int rc = p ? jobs_store_submit(s, job, r->w->id, p, msg, sizeof msg) : -1;
        if (job && !s) {
            jobs_redis_submit(r, job);
        } else if (rc == 0) {
            *p = (struct mem_pending){{r, mem_detach}, job};
            r->jobs_pending = &p->base;
        } else {
            free(p);
            job_free(job);
            if (rc == -2)
                r->retry_after_s = QUEUE_FULL_RETRY_S;
            request_fail(r, 503, "server_error", rc == -2 ? "too_many_jobs" : "jobs_unavailable",
                         NULL, rc == -2 ? "jobs.max_queued jobs are already waiting or running;"
                         " retry later" : "out of memory", OUTCOME_REJECTED);
        }
    }
    json_decref(j);
}

/* On the submitting worker, once the record is on disk (or could not be written). */
void jobs_submitted(struct worker *w, struct jobs_msg *m)
{
    struct mem_pending *p = m->ctx;
    struct request *r = p->base.r;
    struct buf out = BUF_INIT;
    char msg[320], why[256];
    if (r)
        r->jobs_pending = NULL;
    if (r && !m->err)
        job_render(p->job, &out, true);     /* before the store may start it */
    jobs_store_submitted(w->srv->jobs, p->job, m->err);
    free(p);
    if (!r)
        return;     /* the client left; the job runs all the same (it is durable) */
    if (m->err) {
        jobs_store_journal_error(w->srv->jobs, why, sizeof why);
        snprintf(msg, sizeof msg, "the job could not be recorded durably, so it was not "
                 "accepted: %s", why[0] ? why : strerror(m->err));
        r->retry_after_s = 1;
        unavailable(r, msg);
        return;
    }
    snprintf(r->location, sizeof r->location, JOBS_PREFIX "%s", m->id);
    jobs_reply(r, 202, &out);
}

void jobs_pending_detach(struct request *r)
{
    struct jobs_pending *p = r->jobs_pending;
    r->jobs_pending = NULL;
    p->detach(p);
}

/* ?status=…&limit=… (anything else is refused: a typo should not list everything). */
static int parse_query(struct request *r, struct http_slice q, int *status, size_t *limit)
{
    const char *p = q.p, *end = q.p + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        size_t nlen = (size_t)((eq ? eq : stop) - p), vlen = eq ? (size_t)(stop - eq - 1) : 0;
        const char *v = eq ? eq + 1 : stop;
        if (nlen == 6 && memcmp(p, "status", 6) == 0) {
            if ((*status = job_status_parse(v, vlen)) < 0) {
                fail400(r, "status", "invalid_status", "status must be one of queued, running, "
                        "succeeded, failed, cancelled, expired");
                return -1;
            }
        } else if (nlen == 5 && memcmp(p, "limit", 5) == 0) {
            size_t n = 0, i = 0;
            for (; i < vlen && i < 5 && v[i] >= '0' && v[i] <= '9'; i++)
                n = n * 10 + (size_t)(v[i] - '0');
            if (i == 0 || i != vlen || n < 1 || n > LIST_MAX) {
                fail400(r, "limit", "invalid_limit", "limit must be an integer from 1 to 1000");
                return -1;
            }
            *limit = n;
        } else if (nlen) {
            fail400(r, NULL, "unknown_parameter", "GET /v1/jobs takes status and limit");
            return -1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}

static void by_id(struct request *r, const struct http_head *h)
{
    struct jobs_store *s = r->w->srv->jobs;
    char id[JOB_ID_LEN + 2], msg[160];
    size_t n = h->path.len - strlen(JOBS_PREFIX);
    snprintf(id, sizeof id, "%.*s", (int)(n < sizeof id - 1 ? n : sizeof id - 1),
             h->path.p + strlen(JOBS_PREFIX));
    if (!s) {
        jobs_redis_get(r, id, h->method == HTTP_DELETE);
        return;
    }
    struct buf out = BUF_INIT;
    enum jobs_lookup rc = h->method == HTTP_DELETE ? jobs_store_cancel(s, key_name(r), id, &out)
                                                   : jobs_store_get(s, key_name(r), id, &out);
    if (rc == JOBS_OK) {
        jobs_reply(r, 200, &out);
        return;
    }
    if (rc == JOBS_NOT_FOUND) {
        snprintf(msg, sizeof msg, "no job with id '%.40s'", id);
        request_fail(r, 404, "invalid_request_error", "job_not_found", NULL, msg,
                     OUTCOME_REJECTED);
    } else {
        snprintf(msg, sizeof msg, "job %s already %s; cancelling it changes nothing", id,
                 out.data);
        request_fail(r, 409, "invalid_request_error", "job_finished", NULL, msg,
                     OUTCOME_REJECTED);
    }
    buf_free(&out);
}

void jobs_handle(struct request *r, const struct http_head *h, const char *body, size_t len)
{
    struct jobs_store *s = r->w->srv->jobs;
    if (!s && !jobs_redis_on(r->w)) {
        unavailable(r, r->w->srv->jobs_error);
        return;
    }
    if (h->path.len > strlen(JOBS_PREFIX)) {
        by_id(r, h);
    } else if (h->method == HTTP_POST) {
        submit(r, body, len);
    } else {
        int status = -1;
        size_t limit = LIST_DEFAULT;
        if (parse_query(r, h->query, &status, &limit) < 0)
            return;
        if (!s) {
            jobs_redis_list(r, status, limit);
            return;
        }
        struct buf out = BUF_INIT;
        jobs_store_list(s, key_name(r), status, limit, &out);
        jobs_reply(r, 200, &out);
    }
}
