/* route: pure routing decisions — the order targets are tried in, which failures are retried,
 * how long to back off, and the passive circuit breaker. No sockets, no clocks: unit-testable. */
#ifndef LLMUX_ROUTE_H
#define LLMUX_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "upstream/engine.h"

#define ROUTE_MAX_TARGETS 64

/* Per-upstream health, kept by each worker (never shared between threads). */
struct route_health {
    unsigned inflight;
    unsigned failures;          /* consecutive */
    double open_until;          /* breaker open until this time (seconds, loop clock) */
    bool probing;               /* the single half-open probe is out */
};

uint32_t route_rand(uint32_t *state);

/* Fills order[] with target indexes in the order to try them; returns the count.
 * weighted: weighted-random first pick, then the rest by weight; fallback: config order;
 * least_inflight: by in-flight count (ties by config order). health[i] belongs to target i. */
unsigned route_order(const struct conf_model *m, const struct route_health *const *health,
                     uint32_t *rng, unsigned *order);

/* Is this outcome worth another attempt? Only before any byte reached the client. */
bool route_retryable(enum call_result r, long status);

/* Exponential backoff with full jitter, at least Retry-After when the upstream gave one. */
uint64_t route_backoff_ms(const struct conf_model *m, unsigned retry, int64_t retry_after_ms,
                          uint32_t *rng);

/* Circuit breaker: may a request go to this target now? */
bool route_health_allows(const struct route_health *h, double now);
void route_health_result(struct route_health *h, bool ok, double now, unsigned failures,
                         double cooldown_s);

#endif
