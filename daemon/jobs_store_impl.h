/* jobs_store_impl: the embedded store's insides, shared by jobs_store.c (table, transitions,
 * reads) and jobs_store_life.c (open and replay, retention, compaction, close). Every function
 * here expects the store's mutex held, except store_now_ms and store_wake_owed. */
#ifndef LLMUX_JOBS_STORE_IMPL_H
#define LLMUX_JOBS_STORE_IMPL_H

#include <pthread.h>

#include "daemon/jobs_journal.h"
#include "daemon/jobs_store.h"

#define COMPACT_MIN_DEAD (1u << 20)

struct inbox {
    struct jobs_msg *head, **tail;
    bool wake;                      /* a wake is owed once the lock is released */
};

struct jobs_store {
    pthread_mutex_t mu;
    struct journal *journal;
    struct job **buckets;
    size_t nbuckets, njobs;
    struct job *newest, *oldest;
    struct job *qhead, *qtail;      /* durable, queued, in submission order */
    unsigned counts[JOB_NSTATUS];
    unsigned unfinished;            /* accepted (durable or not) and not final */
    unsigned running, max_running, max_queued;
    uint64_t retention_ms, max_result;
    size_t live_bytes, dead_bytes;  /* journal bytes of latest records / superseded ones */
    struct inbox *inboxes;
    unsigned nworkers, rr;
    jobs_wake_fn wake;
    void *wake_ctx;
    bool stopping;
};

int64_t store_now_ms(void);
struct job **store_slot(struct jobs_store *s, const char *id);
void store_link(struct jobs_store *s, struct job *j);     /* as the newest, or replacing */
void store_unlink(struct jobs_store *s, struct job *j);
void store_enqueue(struct jobs_store *s, struct job *j);
void store_dequeue(struct jobs_store *s, struct job *j);
void store_set_status(struct jobs_store *s, struct job *j, enum job_status st);
void store_expire(struct jobs_store *s, struct job *j, int64_t now);
void store_dispatch_locked(struct jobs_store *s);
/* Wakes the workers whose inbox got messages; takes the lock itself (call without it). */
void store_wake_owed(struct jobs_store *s);

#endif
