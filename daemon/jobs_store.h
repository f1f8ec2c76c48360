/* jobs_store: the process-wide table of background jobs (embedded backend): state transitions,
 * the run queue and its bound (jobs.workers), retention, and the journal that makes each
 * transition durable. One mutex, taken on submit, transitions and reads — never per byte. */
#ifndef LLMUX_JOBS_STORE_H
#define LLMUX_JOBS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "conf/conf.h"

enum job_status {
    JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, JOB_EXPIRED, JOB_NSTATUS
};
enum job_kind { JOB_CHAT, JOB_GATHER };

#define JOB_ID_LEN 28       /* "job_" + 24 of [0-9a-z] */

struct job {
    char id[JOB_ID_LEN + 1];
    char *key;                  /* key name; NULL when the gateway is open */
    enum job_kind kind;
    enum job_status status;
    int64_t created_ms, started_ms, completed_ms;   /* unix ms; 0 = not yet */
    uint64_t timeout_ms;        /* budget from submission; 0 = none */
    char *input;                /* the chat or gather body, compact JSON */
    size_t input_len;
    char *output;               /* result (succeeded) or error object (other final states) */
    size_t output_len;
    size_t record_len;          /* bytes of its latest journal record */
    bool durable;               /* its submission record is on disk */
    bool attached;              /* a worker runs it (not freed by retention meanwhile) */
    unsigned worker;
    char entry[48];             /* Redis backend: its queue stream entry */
    struct job *hnext, *newer, *older, *qnext;
};

/* Messages from the store to a worker (its inbox), in order. */
enum jobs_msg_type { JOBS_MSG_SUBMITTED, JOBS_MSG_START, JOBS_MSG_CANCEL };
struct jobs_msg {
    struct jobs_msg *next;
    enum jobs_msg_type type;
    struct job *job;            /* SUBMITTED, START (NULL for CANCEL: it may be gone) */
    char id[JOB_ID_LEN + 1];    /* CANCEL: the job to end if it still runs here */
    void *ctx;                  /* SUBMITTED: the submitter's context */
    int err;                    /* SUBMITTED: 0 durable, else errno */
};

struct jobs_store;
typedef void (*jobs_wake_fn)(void *ctx, unsigned worker);

/* Replays and compacts dir's journal, then starts its writer. NULL with err when the journal
 * exists but cannot be read (the store is not started rather than overwriting it). */
struct jobs_store *jobs_store_open(const struct conf *c, unsigned nworkers, jobs_wake_fn wake,
                                   void *wake_ctx, char *err, size_t errlen);
void jobs_store_configure(struct jobs_store *s, const struct conf *c);
/* Starts what replay left queued (once the workers run). */
void jobs_store_kick(struct jobs_store *s);
/* No job starts any more (shutdown). */
void jobs_store_drain(struct jobs_store *s);
void jobs_store_close(struct jobs_store *s);

/* Takes the worker's inbox (FIFO). */
struct jobs_msg *jobs_store_take(struct jobs_store *s, unsigned worker);

/* Adds j (taken over) and queues its record; the worker later gets JOBS_MSG_SUBMITTED with
 * ctx. 0; -1 with a message in err (journal unusable); -2 when jobs.max_queued is reached. */
int jobs_store_submit(struct jobs_store *s, struct job *j, unsigned worker, void *ctx,
                      char *err, size_t errlen);
/* After JOBS_MSG_SUBMITTED: err 0 queues the job to run; else it is removed and freed. */
void jobs_store_submitted(struct jobs_store *s, struct job *j, int err);
/* A running job's request ended: final status and output (taken over). A job cancelled
 * meanwhile stays cancelled. requeue: shutdown interrupted it, it runs again after restart. */
void jobs_store_finish(struct jobs_store *s, struct job *j, enum job_status st, char *output,
                       size_t len, bool requeue);

enum jobs_lookup { JOBS_NOT_FOUND, JOBS_OK, JOBS_ALREADY_FINISHED };
/* Appends the job's JSON (the caller's own jobs only; key NULL = open gateway). */
enum jobs_lookup jobs_store_get(struct jobs_store *s, const char *key, const char *id,
                                struct buf *out);
/* Cancels a queued or running job and appends its JSON; JOBS_ALREADY_FINISHED names the
 * status in out instead (as a bare word). */
enum jobs_lookup jobs_store_cancel(struct jobs_store *s, const char *key, const char *id,
                                   struct buf *out);
/* {"object":"list","data":[…],"has_more":…}, newest first; status < 0 = any. */
void jobs_store_list(struct jobs_store *s, const char *key, int status, size_t limit,
                     struct buf *out);
uint64_t jobs_store_max_result(struct jobs_store *s);
/* The journal's last write error ("" when the last batch was written). */
void jobs_store_journal_error(struct jobs_store *s, char *out, size_t outlen);
/* Prometheus lines: jobs by status, queue depth. */
void jobs_store_metrics(struct jobs_store *s, struct buf *out);

#endif
