/* jobs_redis_run: the Redis backend's runner on each worker. A 50 ms tick: cancel checks of
 * the jobs running here (one script for all), new entries read from the consumer group while
 * there is room (this worker's share of jobs.workers), our entries marked fresh, entries idle
 * past 10 s taken over, and finished jobs' records (re)sent until Redis has them. */
#include "daemon/jobs_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/jobs_record.h"
#include "daemon/worker.h"

/* ARGV: group entry owner now allow_running expired_error retention_ms */
static const char claim_lua[] =
    "local st = redis.call('HGET', KEYS[1], 'status') "
    "local ok = st == 'queued' or (st == 'running' and ARGV[5] == '1') "
    "if ok and st == 'queued' then "
    "  local t = tonumber(redis.call('HGET', KEYS[1], 'timeout_ms')) "
    "  local c = tonumber(redis.call('HGET', KEYS[1], 'created_ms')) "
    "  if t > 0 and tonumber(ARGV[4]) >= c + t then "
    "    redis.call('HSET', KEYS[1], 'status', 'expired', 'completed_ms', ARGV[4], 'output', "
    "ARGV[6]) redis.call('PEXPIRE', KEYS[1], ARGV[7]) ok = false end end "
    "if not ok then redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) "
    "redis.call('XDEL', KEYS[2], ARGV[2]) return false end "
    "redis.call('HSET', KEYS[1], 'status', 'running', 'started_ms', ARGV[4], 'owner', ARGV[3]) "
    "return redis.call('HMGET', KEYS[1], 'id', 'key', 'kind', 'created_ms', 'timeout_ms', "
    "'input')";

/* ARGV: group entry owner status output now retention_ms requeue */
static const char finish_lua[] =
    "local f = redis.call('HMGET', KEYS[1], 'status', 'owner') "
    "if f[1] == 'running' and f[2] == ARGV[3] then "
    "  if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'status', 'queued', 'started_ms', 0) "
    "  return 1 end "
    "  redis.call('HSET', KEYS[1], 'status', ARGV[4], 'output', ARGV[5], 'completed_ms', ARGV[6])"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[7]) end "
    "redis.call('XACK', KEYS[2], ARGV[1], ARGV[2]) redis.call('XDEL', KEYS[2], ARGV[2]) "
    "return 1";

/* ARGV: job hashes' statuses, in order (cancel checks) */
static const char status_lua[] =
    "local out = {} for i, k in ipairs(KEYS) do "
    "out[i] = redis.call('HGET', k, 'status') or 'gone' end return out";

int64_t jobs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct redis_cmd *jobs_redis_eval(struct jobs_redis *jr, redis_cb cb, void *arg,
                                  const char *lua, int nkeys, int argc, const char **argv,
                                  const size_t *lens)
{
    const char *a[64];
    size_t l[64];
    char nk[12];
    if (argc > 61)
        return NULL;
    snprintf(nk, sizeof nk, "%d", nkeys);
    a[0] = "EVAL";
    a[1] = lua;
    a[2] = nk;
    l[0] = 4;
    l[1] = strlen(lua);
    l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        a[3 + i] = argv[i];
        l[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return redis_command(jr->rd, cb, arg, 3 + argc, a, l);
}

static unsigned share(const struct jobs_redis *jr)
{
    const struct worker *w = jr->w;
    unsigned n = w->srv->nworkers, total = w->conf->jobs.workers;
    return (total + n - 1) / n;
}

static unsigned busy(const struct jobs_redis *jr)
{
    return jr->w->jobs->running + jr->claiming;
}

/* ---- taking entries: new ones, and those a dead instance left ---------------------------- */

struct claim {
    struct jobs_redis *jr;
    char entry[48];
};

static void on_claimed(void *arg, const redisReply *reply, const char *err)
{
    struct claim *c = arg;
    struct jobs_redis *jr = c->jr;
    jr->claiming--;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 6 &&
        reply->element[0]->type == REDIS_REPLY_STRING) {
        const redisReply **e = (const redisReply **)reply->element;
        struct job *j = calloc(1, sizeof *j);
        const char *key = e[1]->type == REDIS_REPLY_STRING ? e[1]->str : "";
        if (j && e[5]->type == REDIS_REPLY_STRING && (j->input = strdup(e[5]->str)) &&
            (!*key || (j->key = strdup(key)))) {
            snprintf(j->id, sizeof j->id, "%s", e[0]->str);
            snprintf(j->entry, sizeof j->entry, "%s", c->entry);
            j->input_len = e[5]->len;
            j->kind = e[2]->str && strcmp(e[2]->str, "gather") == 0 ? JOB_GATHER : JOB_CHAT;
            j->created_ms = e[3]->str ? atoll(e[3]->str) : 0;
            j->timeout_ms = e[4]->str ? strtoull(e[4]->str, NULL, 10) : 0;
            j->status = JOB_RUNNING;
            jobs_run_start(jr->w, j, jr->w->conf->jobs.max_result_bytes);
        } else {
            job_free(j);
            log_error("jobs: out of memory starting a job from Redis; it runs elsewhere later");
        }
    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        log_error("jobs: Redis refused a claim: %s", reply->str);
    }
    free(c);
}

static void claim(struct jobs_redis *jr, const char *entry, const char *id, bool takeover)
{
    struct claim *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->jr = jr;
    snprintf(c->entry, sizeof c->entry, "%s", entry);
    char hash[KEYLEN], now[24], ret[24];
    snprintf(hash, sizeof hash, KEY_JOB "%.60s", id);
    snprintf(now, sizeof now, "%lld", (long long)jobs_now_ms());
    snprintf(ret, sizeof ret, "%llu", (unsigned long long)jr->w->conf->jobs.retention_ms);
    char *e = job_error_text("timeout_error", "job_expired", "the job's timeout_ms passed "
                             "before it could start");
    const char *argv[] = {hash, KEY_QUEUE, GROUP, entry, jr->consumer, now, takeover ? "1" : "0",
                          e ? e : "{}", ret};
    if (jobs_redis_eval(jr, on_claimed, c, claim_lua, 2, 9, argv, NULL))
        jr->claiming++;
    else
        free(c);
    free(e);
}

/* [[entry id, [field, value, …]], …] → a claim per entry. */
static void claim_entries(struct jobs_redis *jr, const redisReply *entries, bool takeover)
{
    for (size_t i = 0; entries && i < entries->elements; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
            en->element[0]->type != REDIS_REPLY_STRING)
            continue;
        const redisReply *kv = en->element[1];
        for (size_t k = 0; kv->type == REDIS_REPLY_ARRAY && k + 1 < kv->elements; k += 2)
            if (kv->element[k]->str && strcmp(kv->element[k]->str, "id") == 0 &&
                kv->element[k + 1]->str)
                claim(jr, en->element[0]->str, kv->element[k + 1]->str, takeover);
    }
}

static void on_read(void *arg, const redisReply *reply, const char *err)
{
    struct jobs_redis *jr = arg;
    jr->reading = false;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
        const redisReply *stream = reply->element[0];
        if (stream->type == REDIS_REPLY_ARRAY && stream->elements == 2)
            claim_entries(jr, stream->element[1], false);
    } else if (reply && reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "NOGROUP")) {
        jr->group_ok = jr->group_asked = false;     /* the stream was deleted: make it again */
    }
}

static void on_autoclaimed(void *arg, const redisReply *reply, const char *err)
{
    struct jobs_redis *jr = arg;
    jr->reading = false;
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
        if (reply->element[1]->elements)
            log_info("jobs: taking over %zu job(s) an instance left idle",
                     reply->element[1]->elements);
        claim_entries(jr, reply->element[1], true);
    }
}

static void read_work(struct jobs_redis *jr, double now)
{
    unsigned room = share(jr) > busy(jr) ? share(jr) - busy(jr) : 0;
    char count[16];
    if (!room || jr->reading || jr->w->draining)
        return;
    snprintf(count, sizeof count, "%u", room);
    if (now - jr->last_takeover >= REFRESH_S) {
        jr->last_takeover = now;
        const char *a[] = {"XAUTOCLAIM", KEY_QUEUE, GROUP, jr->consumer, TAKEOVER_IDLE_MS, "0",
                           "COUNT", count};
        jr->reading = redis_command(jr->rd, on_autoclaimed, jr, 8, a, NULL) != NULL;
        return;
    }
    const char *a[] = {"XREADGROUP", "GROUP", GROUP, jr->consumer, "COUNT", count, "STREAMS",
                       KEY_QUEUE, ">"};
    jr->reading = redis_command(jr->rd, on_read, jr, 9, a, NULL) != NULL;
}

/* ---- the jobs running here: cancel checks, freshness ------------------------------------- */

struct check {
    struct jobs_redis *jr;
    size_t n;
    char ids[][JOB_ID_LEN + 1];
};

static void on_checked(void *arg, const redisReply *reply, const char *err)
{
    struct check *c = arg;
    struct jobs_worker *jw = c->jr->w->jobs;
    c->jr->checking = false;
    for (size_t i = 0; reply && reply->type == REDIS_REPLY_ARRAY && i < reply->elements &&
                       i < c->n; i++) {
        const char *st = reply->element[i]->str;
        if (!st || strcmp(st, "running") == 0)
            continue;
        for (struct job_run *run = jw->runs; run; run = run->next)
            if (strcmp(run->job->id, c->ids[i]) == 0) {
                request_end(run->req, OUTCOME_CANCELLED);   /* aborts its upstream calls */
                break;
            }
    }
    free(c);
}

/* One script for every job running here: which were cancelled (or removed) elsewhere. */
static void check_cancels(struct jobs_redis *jr)
{
    struct jobs_worker *jw = jr->w->jobs;
    size_t n = 0;
    for (struct job_run *run = jw->runs; run && n < 60; run = run->next)
        n++;
    if (!n || jr->checking)
        return;
    struct check *c = malloc(sizeof *c + n * sizeof c->ids[0]);
    char (*keys)[KEYLEN] = malloc(n * KEYLEN);
    const char *argv[60];
    if (!c || !keys) {
        free(c);
        free(keys);
        return;
    }
    c->jr = jr;
    c->n = 0;
    for (struct job_run *run = jw->runs; run && c->n < n; run = run->next) {
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s", run->job->id);
        snprintf(keys[c->n], KEYLEN, KEY_JOB "%s", run->job->id);
        argv[c->n] = keys[c->n];
        c->n++;
    }
    if (jobs_redis_eval(jr, on_checked, c, status_lua, (int)n, (int)n, argv, NULL))
        jr->checking = true;
    else
        free(c);
    free(keys);
}

static void on_ignored(void *arg, const redisReply *reply, const char *err) {}

/* XCLAIM with min-idle 0 resets our entries' idle time: alive, not to be taken over. */
static void refresh(struct jobs_redis *jr)
{
    const char *a[64] = {"XCLAIM", KEY_QUEUE, GROUP, jr->consumer, "0"};
    int n = 5;
    for (struct job_run *run = jr->w->jobs->runs; run && n < 63; run = run->next)
        a[n++] = run->job->entry;
    a[n++] = "JUSTID";
    if (n > 6)
        redis_command(jr->rd, on_ignored, NULL, n, a, NULL);
}

/* ---- finished jobs: their record goes to Redis, retried until it is there ----------------- */

static void send_finish(struct jobs_redis *jr, struct finishing *f);

static void on_finished(void *arg, const redisReply *reply, const char *err)
{
    struct finishing *f = arg;
    f->inflight = false;
    if (!reply)
        return;         /* not answered: the next tick sends it again */
    if (reply->type == REDIS_REPLY_ERROR)
        log_error("jobs: Redis refused the end of %s: %s", f->id, reply->str);
    f->len = (size_t)-1;    /* done: dropped at the next tick */
}

static void send_finish(struct jobs_redis *jr, struct finishing *f)
{
    char hash[KEYLEN], now[24], ret[24];
    snprintf(hash, sizeof hash, KEY_JOB "%s", f->id);
    snprintf(now, sizeof now, "%lld", (long long)jobs_now_ms());
    snprintf(ret, sizeof ret, "%llu", (unsigned long long)jr->w->conf->jobs.retention_ms);
    const char *argv[] = {hash, KEY_QUEUE, GROUP, f->entry, jr->consumer, f->status,
                          f->output ? f->output : "null", now, ret, f->requeue ? "1" : "0"};
    size_t lens[10];
    for (int i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    lens[6] = f->output ? f->len : 4;
    f->inflight = jobs_redis_eval(jr, on_finished, f, finish_lua, 2, 10, argv, lens) != NULL;
}

static void flush_finished(struct jobs_redis *jr)
{
    for (struct finishing **p = &jr->finishing, *f; (f = *p);) {
        if (f->len == (size_t)-1 && !f->inflight) {
            *p = f->next;
            free(f->output);
            free(f);
            continue;
        }
        if (!f->inflight)
            send_finish(jr, f);
        p = &f->next;
    }
}

void jobs_redis_finish(struct worker *w, struct job *j, enum job_status st, char *output,
                       size_t len, bool requeue)
{
    struct jobs_redis *jr = w->jobs->redis;
    struct finishing *f = calloc(1, sizeof *f);
    if (!f) {
        free(output);
        log_error("jobs: out of memory recording the end of %s; another instance reruns it",
                  j->id);
        return;
    }
    snprintf(f->id, sizeof f->id, "%s", j->id);
    snprintf(f->entry, sizeof f->entry, "%s", j->entry);
    snprintf(f->status, sizeof f->status, "%s", job_status_name(st));
    f->output = output;
    f->len = output ? len : 0;
    f->requeue = requeue;
    f->next = jr->finishing;
    jr->finishing = f;
    send_finish(jr, f);
}

/* ---- the tick, set-up, teardown ---------------------------------------------------------- */

static void on_group(void *arg, const redisReply *reply, const char *err)
{
    struct jobs_redis *jr = arg;
    jr->group_asked = false;
    if (reply && (reply->type != REDIS_REPLY_ERROR || strstr(reply->str, "BUSYGROUP")))
        jr->group_ok = true;
    else if (reply)
        log_error("jobs: cannot create the Redis consumer group: %s", reply->str);
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct jobs_redis *jr = t->data;
    double now = ev_now(loop);
    if (!redis_ready(jr->rd))
        return;
    if (!jr->group_ok) {
        const char *a[] = {"XGROUP", "CREATE", KEY_QUEUE, GROUP, "0", "MKSTREAM"};
        if (!jr->group_asked)
            jr->group_asked = redis_command(jr->rd, on_group, jr, 6, a, NULL) != NULL;
        return;
    }
    flush_finished(jr);
    check_cancels(jr);
    if (now - jr->last_refresh >= REFRESH_S) {
        jr->last_refresh = now;
        refresh(jr);
    }
    read_work(jr, now);
}

int jobs_redis_init(struct worker *w, char *err, size_t errlen)
{
    const struct conf *c = w->conf;
    if (c->state.backend != STATE_REDIS)
        return 0;
    struct jobs_redis *jr = calloc(1, sizeof *jr);
    if (!jr) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char name[32], host[64] = "";
    snprintf(name, sizeof name, "jobs, worker %u", w->id);
    struct redis_opts o = {c->state.redis, (double)c->state.timeout_ms / 1000.0,
                           (double)c->timeouts.connect_ms / 1000.0, name};
    if (!(jr->rd = redis_new(w->loop, &o, err, errlen))) {
        free(jr);
        return -1;
    }
    gethostname(host, sizeof host - 1);
    snprintf(jr->consumer, sizeof jr->consumer, "%s:%d:%u:%u", host, (int)getpid(), w->id,
             (unsigned)jobs_now_ms());
    jr->w = w;
    ev_timer_init(&jr->tick, on_tick, TICK_S, TICK_S);
    jr->tick.data = jr;
    ev_timer_start(w->loop, &jr->tick);
    ev_unref(w->loop);      /* polling alone does not keep a stopping worker alive */
    w->jobs->redis = jr;
    return 0;
}

void jobs_redis_free(struct worker *w)
{
    struct jobs_redis *jr = w->jobs ? w->jobs->redis : NULL;
    if (!jr)
        return;
    ev_ref(w->loop);
    ev_timer_stop(w->loop, &jr->tick);
    redis_free(jr->rd);     /* pending callbacks run now with "shutting down" */
    for (struct finishing *f = jr->finishing, *next; f; f = next) {
        next = f->next;
        if (f->len != (size_t)-1)
            log_warn("jobs: the end of %s did not reach Redis; another instance reruns it",
                     f->id);
        free(f->output);
        free(f);
    }
    free(jr);
    w->jobs->redis = NULL;
}
