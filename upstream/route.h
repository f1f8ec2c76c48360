/* route: pure routing decisions — the order targets are tried in, which failures are retried,
 * how long to back off (the breaker is in health.h). No sockets, no clocks: unit-testable. */
#ifndef LLMUX_ROUTE_H
#define LLMUX_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "upstream/engine.h"

#define ROUTE_MAX_TARGETS 64

uint32_t route_rand(uint32_t *state);

/* Fills order[] with target indexes in the order to try them; returns the count.
 * weighted: weighted-random first pick, then the rest by weight; fallback: config order;
 * least_inflight: by in-flight count of the targets' health entries (ties by config order). */
unsigned route_order(const struct conf_model *m, uint32_t *rng, unsigned *order);

/* Is this outcome worth another attempt? Only before any byte reached the client. */
bool route_retryable(enum call_result r, long status);

/* Exponential backoff with full jitter, at least Retry-After when the upstream gave one. */
uint64_t route_backoff_ms(const struct conf_model *m, unsigned retry, int64_t retry_after_ms,
                          uint32_t *rng);

#endif
