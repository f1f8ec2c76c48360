/* jobs_redis: the jobs backend for several llmuxd sharing one Redis (state.backend: redis).
 * A hash per job (llmux:job:ID), a sorted set per key for lists, and a stream with one consumer
 * group (llmux:jobs:queue, group llmux) as the queue: each worker reads new entries while it
 * has room, marks its entries fresh every few seconds, and takes over (XAUTOCLAIM) entries an
 * instance left idle — a dead one's. Every transition is one Lua script (atomic, one round
 * trip). A DELETE anywhere marks the hash cancelled; the running worker polls its jobs'
 * statuses every 50 ms and ends a cancelled one's request, aborting its upstream calls. */
#include "daemon/jobs_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/jobs_record.h"
#include "daemon/redis.h"
#include "daemon/worker.h"

/* HMGET fields rendered as a job, in this order. */
#define JOB_FIELDS "'id','key','kind','status','created_ms','started_ms','completed_ms'," \
                   "'timeout_ms','output'"

static const char submit_lua[] =
    "if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end "
    "redis.call('HSET', KEYS[1], 'id', ARGV[2], 'key', ARGV[3], 'kind', ARGV[4], 'status', "
    "'queued', 'created_ms', ARGV[5], 'started_ms', 0, 'completed_ms', 0, 'timeout_ms', ARGV[6],"
    " 'input', ARGV[7]) "
    "redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2]) "
    "redis.call('XADD', KEYS[2], '*', 'id', ARGV[2]) return 1";

/* ARGV: key cancel(0/1) error now retention_ms → {found(0/1/2), fields…} */
static const char get_lua[] =
    "local f = redis.call('HMGET', KEYS[1], " JOB_FIELDS ") "
    "if not f[1] or f[2] ~= ARGV[1] then return {0} end "
    "if ARGV[2] == '1' then "
    "  if f[4] ~= 'queued' and f[4] ~= 'running' then return {2, f[4]} end "
    "  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'output', ARGV[3], 'completed_ms', "
    "ARGV[4]) redis.call('PEXPIRE', KEYS[1], ARGV[5]) "
    "  f = redis.call('HMGET', KEYS[1], " JOB_FIELDS ") end "
    "return {1, f}";

/* ARGV: status('' = any) limit → {has_more, {fields}…}; members whose hash expired go. */
static const char list_lua[] =
    "local out, more = {}, 0 "
    "for _, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do "
    "  local f = redis.call('HMGET', '" KEY_JOB "' .. id, " JOB_FIELDS ") "
    "  if not f[1] then redis.call('ZREM', KEYS[1], id) "
    "  elseif ARGV[1] == '' or f[4] == ARGV[1] then "
    "    if #out == tonumber(ARGV[2]) then more = 1 break end "
    "    out[#out + 1] = f end end "
    "return {more, out}";

struct rop {                        /* an HTTP request waiting for Redis */
    struct jobs_pending base;
    struct redis_cmd *cmd;
    struct job *job;                /* submit */
    char id[JOB_ID_LEN + 1];
};

bool jobs_redis_on(const struct worker *w)
{
    return w->jobs && w->jobs->redis;
}

/* ---- HTTP side: submit, get, cancel, list ------------------------------------------------ */

static void rop_detach(struct jobs_pending *p)
{
    struct rop *op = (struct rop *)p;
    redis_cancel(op->cmd);
    job_free(op->job);
    free(op);
}

static struct rop *rop_new(struct request *r)
{
    struct rop *op = calloc(1, sizeof *op);
    if (op) {
        op->base.r = r;
        op->base.detach = rop_detach;
    }
    return op;
}

/* The command is on its way: the request waits for it (or detaches if it ends first). */
static void rop_wait(struct request *r, struct rop *op, struct redis_cmd *cmd)
{
    if (!cmd) {
        job_free(op->job);
        free(op);
        r->retry_after_s = 1;
        request_fail(r, 503, "server_error", "jobs_unavailable", NULL, "background jobs are "
                     "unavailable: Redis (state.redis) is not reachable", OUTCOME_REJECTED);
        return;
    }
    op->cmd = cmd;
    r->jobs_pending = &op->base;
}

/* The request behind op, now that its answer came; NULL when it ended meanwhile. */
static struct request *rop_done(struct rop *op)
{
    struct request *r = op->base.r;
    r->jobs_pending = NULL;
    return r;
}

static void fail_redis(struct request *r, const redisReply *reply, const char *err)
{
    char msg[300];
    snprintf(msg, sizeof msg, "background jobs are unavailable: Redis: %.200s",
             reply ? reply->str : err);
    r->retry_after_s = 1;
    request_fail(r, 503, "server_error", "jobs_unavailable", NULL, msg, OUTCOME_REJECTED);
}

static void on_submitted(void *arg, const redisReply *reply, const char *err)
{
    struct rop *op = arg;
    struct request *r = rop_done(op);
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        fail_redis(r, reply && reply->type == REDIS_REPLY_ERROR ? reply : NULL,
                   err ? err : "unexpected answer");
    } else if (reply->integer == 0) {
        r->retry_after_s = 5;
        request_fail(r, 503, "server_error", "too_many_jobs", NULL, "jobs.max_queued jobs are "
                     "already waiting or running; retry later", OUTCOME_REJECTED);
    } else {
        struct buf out = BUF_INIT;
        job_render(op->job, &out, true);
        snprintf(r->location, sizeof r->location, "/v1/jobs/%s", op->job->id);
        jobs_reply(r, 202, &out);
    }
    job_free(op->job);
    free(op);
}

void jobs_redis_submit(struct request *r, struct job *j)
{
    struct jobs_redis *jr = r->w->jobs->redis;
    struct rop *op = rop_new(r);
    if (!op) {
        job_free(j);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    op->job = j;
    char hash[KEYLEN], by_key[KEYLEN], maxq[24], created[24], timeout[24];
    snprintf(hash, sizeof hash, KEY_JOB "%s", j->id);
    snprintf(by_key, sizeof by_key, KEY_BY_KEY "%.100s", j->key ? j->key : "");
    snprintf(maxq, sizeof maxq, "%u", r->conf->jobs.max_queued);
    snprintf(created, sizeof created, "%lld", (long long)j->created_ms);
    snprintf(timeout, sizeof timeout, "%llu", (unsigned long long)j->timeout_ms);
    const char *argv[] = {hash, KEY_QUEUE, by_key, maxq, j->id, j->key ? j->key : "",
                          j->kind == JOB_GATHER ? "gather" : "chat", created, timeout, j->input};
    size_t lens[10];
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    lens[9] = j->input_len;
    rop_wait(r, op, jobs_redis_eval(jr, on_submitted, op, submit_lua, 3, 10, argv, lens));
}

static const char *field(const redisReply *f, size_t i)
{
    return i < f->elements && f->element[i]->type == REDIS_REPLY_STRING ? f->element[i]->str
                                                                        : NULL;
}

/* HMGET of JOB_FIELDS → the API object (pointers into the reply, used at once). */
static void render_fields(const redisReply *f, struct buf *out, bool with_result)
{
    struct job j = {0};
    const char *kind = field(f, 2), *st = field(f, 3), *key = field(f, 1);
    snprintf(j.id, sizeof j.id, "%s", field(f, 0) ? field(f, 0) : "");
    j.key = key && *key ? (char *)key : NULL;
    j.kind = kind && strcmp(kind, "gather") == 0 ? JOB_GATHER : JOB_CHAT;
    int s = st ? job_status_parse(st, strlen(st)) : -1;
    j.status = s < 0 ? JOB_QUEUED : (enum job_status)s;
    j.created_ms = field(f, 4) ? atoll(field(f, 4)) : 0;
    j.started_ms = field(f, 5) ? atoll(field(f, 5)) : 0;
    j.completed_ms = field(f, 6) ? atoll(field(f, 6)) : 0;
    j.timeout_ms = field(f, 7) ? strtoull(field(f, 7), NULL, 10) : 0;
    j.output = (char *)field(f, 8);
    j.output_len = j.output ? f->element[8]->len : 0;
    job_render(&j, out, with_result);
}

static void on_got(void *arg, const redisReply *reply, const char *err)
{
    struct rop *op = arg;
    struct request *r = rop_done(op);
    long long found = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 ?
                      reply->element[0]->integer : -1;
    char msg[160];
    if (found < 0) {
        fail_redis(r, reply && reply->type == REDIS_REPLY_ERROR ? reply : NULL,
                   err ? err : "unexpected answer");
    } else if (found == 0) {
        snprintf(msg, sizeof msg, "no job with id '%.40s'", op->id);
        request_fail(r, 404, "invalid_request_error", "job_not_found", NULL, msg,
                     OUTCOME_REJECTED);
    } else if (found == 2) {
        snprintf(msg, sizeof msg, "job %s already %.16s; cancelling it changes nothing", op->id,
                 reply->elements > 1 && reply->element[1]->str ? reply->element[1]->str : "");
        request_fail(r, 409, "invalid_request_error", "job_finished", NULL, msg,
                     OUTCOME_REJECTED);
    } else {
        struct buf out = BUF_INIT;
        render_fields(reply->element[1], &out, true);
        jobs_reply(r, 200, &out);
    }
    free(op);
}

void jobs_redis_get(struct request *r, const char *id, bool cancel)
{
    struct rop *op = rop_new(r);
    if (!op) {
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    snprintf(op->id, sizeof op->id, "%s", id);
    char hash[KEYLEN], now[24], ret[24];
    snprintf(hash, sizeof hash, KEY_JOB "%.60s", id);
    snprintf(now, sizeof now, "%lld", (long long)jobs_now_ms());
    snprintf(ret, sizeof ret, "%llu", (unsigned long long)r->conf->jobs.retention_ms);
    char *e = job_error_text("cancelled", "cancelled", "cancelled by DELETE /v1/jobs/%.40s", id);
    const char *argv[] = {hash, r->key ? r->key->name : "", cancel ? "1" : "0", e ? e : "{}",
                          now, ret};
    rop_wait(r, op, jobs_redis_eval(r->w->jobs->redis, on_got, op, get_lua, 1, 6, argv, NULL));
    free(e);
}

static void on_listed(void *arg, const redisReply *reply, const char *err)
{
    struct rop *op = arg;
    struct request *r = rop_done(op);
    free(op);
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        fail_redis(r, reply && reply->type == REDIS_REPLY_ERROR ? reply : NULL,
                   err ? err : "unexpected answer");
        return;
    }
    struct buf out = BUF_INIT;
    const redisReply *items = reply->element[1];
    buf_puts(&out, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < items->elements; i++) {
        if (i)
            buf_puts(&out, ",");
        render_fields(items->element[i], &out, false);
    }
    buf_printf(&out, "],\"has_more\":%s}", reply->element[0]->integer ? "true" : "false");
    jobs_reply(r, 200, &out);
}

void jobs_redis_list(struct request *r, int status, size_t limit)
{
    struct rop *op = rop_new(r);
    if (!op) {
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    char by_key[KEYLEN], lim[16];
    snprintf(by_key, sizeof by_key, KEY_BY_KEY "%.100s", r->key ? r->key->name : "");
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *argv[] = {by_key, status < 0 ? "" : job_status_name((enum job_status)status),
                          lim};
    rop_wait(r, op, jobs_redis_eval(r->w->jobs->redis, on_listed, op, list_lua, 1, 3, argv, NULL));
}

