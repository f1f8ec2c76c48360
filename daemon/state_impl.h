/* state_impl: what the state backends (state_memory.c, state_redis.c) share with state.c;
 * nothing outside the state files includes it. */
#ifndef LLMUX_STATE_IMPL_H
#define LLMUX_STATE_IMPL_H

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
    char script_sha[41];                /* SHA-1 of the Lua script, for EVALSHA */
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

void state_redis_init(struct state *st);
bool state_redis_take(struct state_link *l, struct state_hold *h, const struct conf_key *k);
void state_redis_cancel(struct state_hold *h);
void state_redis_release(struct state_hold *h, long tokens);

#endif
