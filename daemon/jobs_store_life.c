/* jobs_store_life: the embedded store's life — replay of the journal at open, retention and
 * expiry on the journal thread's tick, compaction snapshots, reconfiguration, close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/jobs_record.h"
#include "daemon/jobs_store_impl.h"

/* Journal thread, about once a second: finished jobs past retention are dropped, queued ones
 * past their own timeout expire; compaction follows once dead records outweigh live ones. */
static void on_tick(void *ctx)
{
    struct jobs_store *s = ctx;
    int64_t now = store_now_ms();
    bool removed = false;
    pthread_mutex_lock(&s->mu);
    for (struct job *j = s->oldest, *newer; j; j = newer) {
        newer = j->newer;
        if (j->status == JOB_QUEUED && j->durable && j->timeout_ms &&
            now >= j->created_ms + (int64_t)j->timeout_ms) {
            store_dequeue(s, j);
            store_expire(s, j, now);
        }
        if (j->status < JOB_SUCCEEDED || j->attached ||
            now < j->completed_ms + (int64_t)s->retention_ms)
            continue;
        store_unlink(s, j);
        s->live_bytes -= j->record_len;
        s->dead_bytes += j->record_len;
        job_free(j);
        removed = true;
    }
    bool compact = s->dead_bytes > s->live_bytes &&
                   (s->dead_bytes > COMPACT_MIN_DEAD || removed);
    pthread_mutex_unlock(&s->mu);
    if (compact)
        journal_compact_soon(s->journal);
}

/* Journal thread: the live state as framed records, oldest first (so replay rebuilds the
 * newest-first list). Jobs whose submission is not durable yet are left to their own record. */
static int on_snapshot(void *ctx, struct buf *out)
{
    struct jobs_store *s = ctx;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    size_t live = 0;
    for (struct job *j = s->oldest; j && rc == 0; j = j->newer) {
        if (!j->durable)
            continue;
        size_t before = out->len;
        rc = job_record_encode(j, out);
        j->record_len = out->len - before;
        live += j->record_len;
    }
    if (rc == 0) {
        s->live_bytes = live;
        s->dead_bytes = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int on_replayed(void *ctx, const char *p, size_t n)
{
    struct jobs_store *s = ctx;
    struct job *j = job_record_decode(p, n);
    if (!j) {
        log_warn("jobs journal: a record that is not a job was skipped (%zu bytes)", n);
        return 0;
    }
    struct job *old = *store_slot(s, j->id);
    if (old) {          /* the latest record wins; the job keeps its place in the list */
        s->dead_bytes += old->record_len;
        s->live_bytes -= old->record_len;
        store_unlink(s, old);
        j->created_ms = old->created_ms;
        job_free(old);
    }
    j->durable = true;
    s->live_bytes += j->record_len;
    store_link(s, j);
    return 0;
}

/* After replay: what was running when the process died runs again; expired results go. */
static void settle_replayed(struct jobs_store *s)
{
    int64_t now = store_now_ms();
    unsigned requeued = 0;
    for (struct job *j = s->oldest, *newer; j; j = newer) {
        newer = j->newer;
        if (j->status == JOB_RUNNING) {
            store_set_status(s, j, JOB_QUEUED);
            j->started_ms = 0;
            requeued++;
        }
        if (j->status == JOB_QUEUED) {
            s->unfinished++;
            store_enqueue(s, j);
        } else if (now >= j->completed_ms + (int64_t)s->retention_ms) {
            s->live_bytes -= j->record_len;
            s->dead_bytes += j->record_len;
            store_unlink(s, j);
            job_free(j);
        }
    }
    log_info("jobs: %zu job(s) recovered from %s, %u queued (%u were running)", s->njobs,
             JOURNAL_FILE, s->counts[JOB_QUEUED], requeued);
}

void jobs_store_configure(struct jobs_store *s, const struct conf *c)
{
    pthread_mutex_lock(&s->mu);
    s->max_running = c->jobs.workers;
    s->max_queued = c->jobs.max_queued;
    s->retention_ms = c->jobs.retention_ms;
    s->max_result = c->jobs.max_result_bytes;
    store_dispatch_locked(s);     /* more workers may start more now */
    pthread_mutex_unlock(&s->mu);
    store_wake_owed(s);
}

static struct jobs_store *store_new(const struct conf *c, unsigned nworkers)
{
    struct jobs_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->nbuckets = 1024;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    s->inboxes = calloc(nworkers, sizeof *s->inboxes);
    if (!s->buckets || !s->inboxes) {
        free(s->buckets);
        free(s->inboxes);
        free(s);
        return NULL;
    }
    for (unsigned i = 0; i < nworkers; i++)
        s->inboxes[i].tail = &s->inboxes[i].head;
    s->nworkers = nworkers;
    s->max_running = c->jobs.workers;
    s->max_queued = c->jobs.max_queued;
    s->retention_ms = c->jobs.retention_ms;
    s->max_result = c->jobs.max_result_bytes;
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

struct jobs_store *jobs_store_open(const struct conf *c, unsigned nworkers, jobs_wake_fn wake,
                                   void *wake_ctx, char *err, size_t errlen)
{
    struct jobs_store *s = store_new(c, nworkers);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->wake = wake;
    s->wake_ctx = wake_ctx;
    size_t skipped = 0;
    if (journal_replay(c->jobs.dir, on_replayed, s, &skipped, err, errlen) < 0) {
        jobs_store_close(s);
        return NULL;
    }
    settle_replayed(s);
    struct journal_hooks hooks = {s, on_snapshot, on_tick};
    if (!(s->journal = journal_start(c->jobs.dir, &hooks))) {
        snprintf(err, errlen, "cannot start the jobs journal thread");
        jobs_store_close(s);
        return NULL;
    }
    if (skipped || s->dead_bytes)       /* drops the torn tail and superseded records */
        journal_compact_soon(s->journal);
    return s;
}

void jobs_store_close(struct jobs_store *s)
{
    if (!s)
        return;
    journal_stop(s->journal);       /* what is queued is written first */
    for (struct job *j = s->newest, *older; j; j = older) {
        older = j->older;
        job_free(j);
    }
    for (unsigned i = 0; i < s->nworkers; i++)
        for (struct jobs_msg *m = s->inboxes[i].head, *next; m; m = next) {
            next = m->next;
            free(m);
        }
    pthread_mutex_destroy(&s->mu);
    free(s->buckets);
    free(s->inboxes);
    free(s);
}

uint64_t jobs_store_max_result(struct jobs_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->max_result;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void jobs_store_journal_error(struct jobs_store *s, char *out, size_t outlen)
{
    journal_last_error(s->journal, out, outlen);
}
