/* state_impl: what the state backends (state_memory.c, state_redis.c) share with state.c;
 * nothing outside the state files includes it. */
#ifndef LLMUX_STATE_IMPL_H
#define LLMUX_STATE_IMPL_H

#include <pthread.h>

#include "daemon/redis.h"
#include "daemon/state.h"

#define STATE_BUCKETS 1024

struct state {
    bool redis;                         /* backend: redis (else memory) */
    bool fail_closed;                   /* on_error: closed */
    char *url;                          /* state.redis; holds a password: never logged */
    double timeout_s, connect_timeout_s;
    struct state_slot *buckets[STATE_BUCKETS];  /* atomic heads, insert-only lists */
    int64_t last_log_us;                /* atomic: when a backend failure was last logged */
    uint64_t unlogged;                  /* atomic: failures since */
    char instance[17];                  /* random, names this process's leases */
    struct redis_script take_script;    /* the limits' step (state_redis.c) */
    struct redis_script budget_script;  /* the budgets' steps (state_budget_redis.c) */
    /* budgets: accounts (insert-only; created under accts_mu, read without it) */
    struct state_acct *accts[STATE_BUCKETS];
    pthread_mutex_t accts_mu;
    struct state_saver *saver;          /* memory backend: the snapshot file's writer */
};

/* A budget's counters for its current window (memory backend), or the last figures Redis
 * gave (redis backend, for headers of answers that reserve nothing). */
struct acct_model {
    struct acct_model *next;
    int64_t spent;
    char name[];
};

struct state_acct {
    struct state_acct *next;            /* in its bucket; insert-only */
    pthread_mutex_t mu;                 /* a budgeted request's only lock, held for arithmetic */
    enum conf_budget_window wkind;
    int64_t window;                     /* the figures' window; another one starts at 0 */
    int64_t spent, reserved;            /* nano-USD */
    struct acct_model *models;          /* keys: spend per model in this window */
    char name[];                        /* "k:NAME" or "m:NAME" */
};

struct state_link {
    struct state *st;
    struct ev_loop *loop;
    struct redis *rd;                   /* redis backend only */
    uint64_t *errors;
    uint64_t lease_seq;
    unsigned worker_id;
};

bool state_memory_take(struct state *st, struct state_hold *h, const struct conf_key *k);
void state_memory_release(struct state_hold *h, long tokens);

/* state_budget.c */
struct state_acct *state_acct_get(struct state *st, enum state_budget_kind kind,
                                  const char *name);
/* Starts the window holding now when the account's is over (or of another kind). mu held. */
void state_acct_roll(struct state_acct *a, enum conf_budget_window w, int64_t window);
void state_acct_add_model(struct state_acct *a, const char *model, int64_t nusd);
void state_accts_free(struct state *st);

/* state_budget_file.c: memory backend, DIR/budget.json — loaded at start, written by a helper
 * thread at most once a second after a change, and at exit. */
void state_saver_start(struct state *st, const char *dir);
void state_saver_touch(struct state *st);
void state_saver_stop(struct state *st);

/* state_budget_redis.c */
void state_budget_redis_init(struct state *st);
bool state_budget_redis_reserve(struct state_link *l, struct state_budget_hold *h);
void state_budget_redis_settle(struct state_budget_hold *h, int64_t cost);
bool state_budget_redis_read(struct state_link *l, struct state_spend_read *rd);

void state_redis_init(struct state *st);
bool state_redis_take(struct state_link *l, struct state_hold *h, const struct conf_key *k);
void state_redis_cancel(struct state_hold *h);
void state_redis_release(struct state_hold *h, long tokens);

#endif
