/* jobs_store: the embedded job table. Jobs live in memory (hash by id, a list newest first, a
 * FIFO run queue) and every transition is appended to the journal; the journal thread also
 * runs retention and compaction. Workers get work through per-worker inboxes + a wake hook. */
#include "daemon/jobs_store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "daemon/jobs_journal.h"
#include "daemon/jobs_record.h"
#include "daemon/jobs_store_impl.h"

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t hash_id(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

struct job **store_slot(struct jobs_store *s, const char *id)
{
    struct job **p = &s->buckets[hash_id(id) & (s->nbuckets - 1)];
    while (*p && strcmp((*p)->id, id) != 0)
        p = &(*p)->hnext;
    return p;
}

static void grow(struct jobs_store *s)
{
    size_t n = s->nbuckets * 2;
    struct job **b = calloc(n, sizeof *b);
    if (!b)
        return;     /* longer chains, still correct */
    for (size_t i = 0; i < s->nbuckets; i++)
        for (struct job *j = s->buckets[i], *next; j; j = next) {
            next = j->hnext;
            j->hnext = b[hash_id(j->id) & (n - 1)];
            b[hash_id(j->id) & (n - 1)] = j;
        }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

/* Inserts as the newest job (or replaces the job of the same id, for replay). */
void store_link(struct jobs_store *s, struct job *j)
{
    if (s->njobs >= s->nbuckets)
        grow(s);
    struct job **p = store_slot(s, j->id);
    j->hnext = NULL;
    *p = j;
    j->older = s->newest;
    j->newer = NULL;
    if (s->newest)
        s->newest->newer = j;
    s->newest = j;
    if (!s->oldest)
        s->oldest = j;
    s->njobs++;
    s->counts[j->status]++;
}

void store_unlink(struct jobs_store *s, struct job *j)
{
    struct job **p = store_slot(s, j->id);
    if (*p == j)
        *p = j->hnext;
    if (j->newer)
        j->newer->older = j->older;
    else
        s->newest = j->older;
    if (j->older)
        j->older->newer = j->newer;
    else
        s->oldest = j->newer;
    s->njobs--;
    s->counts[j->status]--;
}

void store_enqueue(struct jobs_store *s, struct job *j)
{
    j->qnext = NULL;
    if (s->qtail)
        s->qtail->qnext = j;
    else
        s->qhead = j;
    s->qtail = j;
}

void store_dequeue(struct jobs_store *s, struct job *j)
{
    struct job *prev = NULL;
    for (struct job *q = s->qhead; q; prev = q, q = q->qnext) {
        if (q != j)
            continue;
        if (prev)
            prev->qnext = q->qnext;
        else
            s->qhead = q->qnext;
        if (s->qtail == q)
            s->qtail = prev;
        return;
    }
}

void store_set_status(struct jobs_store *s, struct job *j, enum job_status st)
{
    s->counts[j->status]--;
    j->status = st;
    s->counts[st]++;
}

/* Appends the job's current state to the journal (no one waits for it). */
static void record(struct jobs_store *s, struct job *j, journal_done_fn done, void *ctx)
{
    struct buf rec = BUF_INIT;
    if (job_record_encode(j, &rec) < 0) {
        buf_free(&rec);
        log_error("jobs: out of memory writing the record of %s", j->id);
        if (done)
            done(ctx, 12 /* ENOMEM */);
        return;
    }
    s->dead_bytes += j->record_len;
    s->live_bytes += rec.len - j->record_len;
    j->record_len = rec.len;
    size_t len = rec.len;
    journal_append(s->journal, buf_steal(&rec), len, done, ctx);
}

static void post(struct jobs_store *s, unsigned worker, enum jobs_msg_type type,
                 struct job *j, void *ctx, int err)
{
    struct jobs_msg *m = malloc(sizeof *m);
    if (!m) {
        log_error("jobs: out of memory passing %s to worker %u", j->id, worker);
        return;
    }
    *m = (struct jobs_msg){.type = type, .job = type == JOBS_MSG_CANCEL ? NULL : j,
                           .ctx = ctx, .err = err};
    memcpy(m->id, j->id, sizeof m->id);
    struct inbox *in = &s->inboxes[worker];
    *in->tail = m;
    in->tail = &m->next;
    in->wake = true;
}

void store_wake_owed(struct jobs_store *s)
{
    bool owed[256] = {false};
    unsigned n = s->nworkers < 256 ? s->nworkers : 256;
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < n; i++) {
        owed[i] = s->inboxes[i].wake;
        s->inboxes[i].wake = false;
    }
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < n; i++)
        if (owed[i])
            s->wake(s->wake_ctx, i);
}

void store_expire(struct jobs_store *s, struct job *j, int64_t now)
{
    free(j->output);
    j->output = job_error_text("timeout_error", "job_expired", "the job's timeout_ms of %llu "
                               "ms passed before it could start",
                               (unsigned long long)j->timeout_ms);
    j->output_len = j->output ? strlen(j->output) : 0;
    j->completed_ms = now;
    store_set_status(s, j, JOB_EXPIRED);
    s->unfinished--;
    record(s, j, NULL, NULL);
}

/* Under the lock: starts queued jobs while fewer than jobs.workers run, round-robin over the
 * workers; a job whose own timeout passed while it waited is expired instead. */
void store_dispatch_locked(struct jobs_store *s)
{
    int64_t now = store_now_ms();
    while (!s->stopping && s->qhead && s->running < s->max_running) {
        struct job *j = s->qhead;
        s->qhead = j->qnext;
        if (!s->qhead)
            s->qtail = NULL;
        if (j->timeout_ms && now >= j->created_ms + (int64_t)j->timeout_ms) {
            store_expire(s, j, now);
            continue;
        }
        store_set_status(s, j, JOB_RUNNING);
        j->started_ms = now;
        j->attached = true;
        j->worker = s->rr++ % s->nworkers;
        s->running++;
        record(s, j, NULL, NULL);
        post(s, j->worker, JOBS_MSG_START, j, NULL, 0);
    }
}

static void dispatch(struct jobs_store *s)
{
    pthread_mutex_lock(&s->mu);
    store_dispatch_locked(s);
    pthread_mutex_unlock(&s->mu);
    store_wake_owed(s);
}

void jobs_store_kick(struct jobs_store *s)
{
    dispatch(s);
}

void jobs_store_drain(struct jobs_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
}

struct jobs_msg *jobs_store_take(struct jobs_store *s, unsigned worker)
{
    pthread_mutex_lock(&s->mu);
    struct inbox *in = &s->inboxes[worker];
    struct jobs_msg *m = in->head;
    in->head = NULL;
    in->tail = &in->head;
    pthread_mutex_unlock(&s->mu);
    return m;
}

struct submit_ctx {
    struct jobs_store *s;
    struct job *job;
    unsigned worker;
    void *ctx;
};

static void on_submit_durable(void *arg, int err)
{
    struct submit_ctx *c = arg;
    struct jobs_store *s = c->s;
    pthread_mutex_lock(&s->mu);
    post(s, c->worker, JOBS_MSG_SUBMITTED, c->job, c->ctx, err);
    pthread_mutex_unlock(&s->mu);
    free(c);
    store_wake_owed(s);
}

int jobs_store_submit(struct jobs_store *s, struct job *j, unsigned worker, void *ctx,
                      char *err, size_t errlen)
{
    struct submit_ctx *c = malloc(sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *c = (struct submit_ctx){s, j, worker, ctx};
    pthread_mutex_lock(&s->mu);
    if (s->unfinished >= s->max_queued) {
        pthread_mutex_unlock(&s->mu);
        free(c);
        return -2;
    }
    while (*store_slot(s, j->id))       /* 124 random bits: never in practice, but be sure */
        j->id[JOB_ID_LEN - 1] = (char)('a' + (j->id[JOB_ID_LEN - 1] - 'a' + 1) % 26);
    j->status = JOB_QUEUED;
    store_link(s, j);
    s->unfinished++;
    record(s, j, on_submit_durable, c);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void jobs_store_submitted(struct jobs_store *s, struct job *j, int err)
{
    pthread_mutex_lock(&s->mu);
    if (err) {
        store_unlink(s, j);
        s->unfinished--;
        s->live_bytes -= j->record_len;
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        return;
    }
    j->durable = true;
    if (j->status == JOB_QUEUED)        /* not cancelled while its record was written */
        store_enqueue(s, j);
    store_dispatch_locked(s);
    pthread_mutex_unlock(&s->mu);
    store_wake_owed(s);
}

void jobs_store_finish(struct jobs_store *s, struct job *j, enum job_status st, char *output,
                       size_t len, bool requeue)
{
    pthread_mutex_lock(&s->mu);
    j->attached = false;
    s->running--;
    if (j->status == JOB_RUNNING) {
        free(j->output);
        j->output = output;
        j->output_len = len;
        output = NULL;
        if (requeue) {
            store_set_status(s, j, JOB_QUEUED);
            j->started_ms = 0;
        } else {
            store_set_status(s, j, st);
            j->completed_ms = store_now_ms();
            s->unfinished--;
        }
        record(s, j, NULL, NULL);
    }
    store_dispatch_locked(s);
    pthread_mutex_unlock(&s->mu);
    free(output);
    store_wake_owed(s);
}

static bool same_key(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static struct job *find(struct jobs_store *s, const char *key, const char *id)
{
    if (strlen(id) != JOB_ID_LEN)
        return NULL;
    struct job *j = *store_slot(s, id);     /* not before its 202: it may still be refused */
    return j && j->durable && same_key(j->key, key) ? j : NULL;
}

enum jobs_lookup jobs_store_get(struct jobs_store *s, const char *key, const char *id,
                                struct buf *out)
{
    pthread_mutex_lock(&s->mu);
    struct job *j = find(s, key, id);
    if (j)
        job_render(j, out, true);
    pthread_mutex_unlock(&s->mu);
    return j ? JOBS_OK : JOBS_NOT_FOUND;
}

enum jobs_lookup jobs_store_cancel(struct jobs_store *s, const char *key, const char *id,
                                   struct buf *out)
{
    enum jobs_lookup rc = JOBS_OK;
    pthread_mutex_lock(&s->mu);
    struct job *j = find(s, key, id);
    if (!j) {
        rc = JOBS_NOT_FOUND;
    } else if (j->status != JOB_QUEUED && j->status != JOB_RUNNING) {
        rc = JOBS_ALREADY_FINISHED;
        buf_puts(out, job_status_name(j->status));
    } else {
        if (j->status == JOB_QUEUED)
            store_dequeue(s, j);
        else
            post(s, j->worker, JOBS_MSG_CANCEL, j, NULL, 0);   /* aborts its upstream calls */
        free(j->output);
        j->output = job_error_text("cancelled", "cancelled", "cancelled by DELETE /v1/jobs/%s",
                                   j->id);
        j->output_len = j->output ? strlen(j->output) : 0;
        j->completed_ms = store_now_ms();
        store_set_status(s, j, JOB_CANCELLED);
        s->unfinished--;
        record(s, j, NULL, NULL);
        job_render(j, out, true);
    }
    pthread_mutex_unlock(&s->mu);
    store_wake_owed(s);
    return rc;
}

void jobs_store_list(struct jobs_store *s, const char *key, int status, size_t limit,
                     struct buf *out)
{
    size_t n = 0;
    bool more = false;
    buf_puts(out, "{\"object\":\"list\",\"data\":[");
    pthread_mutex_lock(&s->mu);
    for (struct job *j = s->newest; j; j = j->older) {
        if (!j->durable || !same_key(j->key, key) || (status >= 0 && (int)j->status != status))
            continue;
        if (n == limit) {
            more = true;
            break;
        }
        if (n++)
            buf_puts(out, ",");
        job_render(j, out, false);
    }
    pthread_mutex_unlock(&s->mu);
    buf_printf(out, "],\"has_more\":%s}", more ? "true" : "false");
}

void jobs_store_metrics(struct jobs_store *s, struct buf *out)
{
    buf_puts(out, "# HELP llmux_jobs Background jobs held, by status.\n"
                  "# TYPE llmux_jobs gauge\n");
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < JOB_NSTATUS; i++)
        buf_printf(out, "llmux_jobs{status=\"%s\"} %u\n", job_status_name((enum job_status)i),
                   s->counts[i]);
    size_t bytes = s->live_bytes + s->dead_bytes;
    pthread_mutex_unlock(&s->mu);
    uint64_t syncs, records;
    journal_counts(s->journal, &syncs, &records);
    buf_printf(out, "# HELP llmux_jobs_journal_bytes Size of the jobs journal.\n"
                    "# TYPE llmux_jobs_journal_bytes gauge\nllmux_jobs_journal_bytes %zu\n"
                    "# HELP llmux_jobs_journal_records_total Records made durable.\n"
                    "# TYPE llmux_jobs_journal_records_total counter\n"
                    "llmux_jobs_journal_records_total %llu\n"
                    "# HELP llmux_jobs_journal_syncs_total fdatasync calls (one per batch).\n"
                    "# TYPE llmux_jobs_journal_syncs_total counter\n"
                    "llmux_jobs_journal_syncs_total %llu\n",
               bytes, (unsigned long long)records, (unsigned long long)syncs);
}

