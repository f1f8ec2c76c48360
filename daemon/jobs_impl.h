/* jobs_impl: what the jobs files share inside daemon/ — a worker's running jobs and the two
 * backends' entry points (embedded store: jobs_store.h; Redis: jobs_redis.c). */
#ifndef LLMUX_JOBS_IMPL_H
#define LLMUX_JOBS_IMPL_H

#include "daemon/jobs.h"
#include "daemon/jobs_store.h"

struct redis;
struct jobs_redis;

struct job_run {
    struct job *job;                /* embedded store: the store's; Redis: owned by the run */
    struct request *req;
    struct buf out;
    int status;
    bool too_big;
    uint64_t max;
    struct job_run *prev, *next;    /* the worker's running jobs */
};

struct jobs_worker {
    ev_async wake;
    struct job_run *runs;
    unsigned running;
    struct request **reap;          /* ended, freed on the next wake */
    size_t nreap, capreap;
    struct jobs_redis *redis;       /* state.backend redis: this worker's link and timers */
};

/* A request waiting for the backend (a submission's record, a Redis answer). detach runs when
 * the request ends first: the answer, when it comes, has nobody to go to. */
struct jobs_pending {
    struct request *r;
    void (*detach)(struct jobs_pending *p);
};

/* jobs_api.c: the embedded store's answer to a submission. */
void jobs_submitted(struct worker *w, struct jobs_msg *m);
/* jobs_run.c: runs j (already marked running by the backend) on w. */
void jobs_run_start(struct worker *w, struct job *j, uint64_t max_result);
/* jobs_api.c: answers a request with a JSON text body. */
void jobs_reply(struct request *r, int status, struct buf *body);

/* jobs_redis.c — NULL/-1 when the backend is not redis. */
int jobs_redis_init(struct worker *w, char *err, size_t errlen);
void jobs_redis_free(struct worker *w);
bool jobs_redis_on(const struct worker *w);
void jobs_redis_submit(struct request *r, struct job *j);      /* takes j */
void jobs_redis_get(struct request *r, const char *id, bool cancel);
void jobs_redis_list(struct request *r, int status, size_t limit);
/* A run ended: its final state (or requeue) goes to Redis; takes output. */
void jobs_redis_finish(struct worker *w, struct job *j, enum job_status st, char *output,
                       size_t len, bool requeue);

#endif
