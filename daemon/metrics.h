/* metrics: per-worker counters (written only by their worker, read by any scrape with relaxed
 * atomics, so the hot path takes no lock) and the Prometheus text renderer that sums them. */
#ifndef LLMUX_METRICS_H
#define LLMUX_METRICS_H

#include <stdint.h>

#include "common/buf.h"

enum route_id {
    ROUTE_CHAT, ROUTE_COMPLETIONS, ROUTE_EMBEDDINGS, ROUTE_MODELS, ROUTE_GATHER, ROUTE_JOBS,
    ROUTE_MESSAGES, ROUTE_COUNT_TOKENS, ROUTE_RESPONSES, ROUTE_SPEND,
    ROUTE_HEALTHZ, ROUTE_READYZ, ROUTE_METRICS, ROUTE_OTHER, ROUTE_COUNT
};

enum outcome {
    OUTCOME_COMPLETED,          /* answered (any status the gateway or upstream chose) */
    OUTCOME_REJECTED,           /* refused by the gateway: bad input, auth, limits */
    OUTCOME_UPSTREAM_ERROR,     /* upstreams failed (after retries) */
    OUTCOME_DEADLINE,
    OUTCOME_CLIENT_DISCONNECT,
    OUTCOME_CANCELLED,          /* by a sibling (fail-fast / first-wins) or a job cancel */
    OUTCOME_SHUTDOWN,
    OUTCOME_COUNT
};

enum abort_reason { ABORT_DEADLINE, ABORT_CLIENT_DISCONNECT, ABORT_CANCELLED, ABORT_SHUTDOWN,
                    ABORT_COUNT };

/* What became of a hedge attempt (llmux_hedges_total{outcome}). */
enum hedge_outcome { HEDGE_WON, HEDGE_LOST, HEDGE_FAILED, HEDGE_CANCELLED, HEDGE_OUTCOMES };
/* Which phase timeout ended an upstream call (llmux_upstream_timeouts_total{phase}). */
enum phase_timeout { PHASE_FIRST_BYTE, PHASE_IDLE, PHASE_TIMEOUTS };

#define METRICS_STATUS_SLOTS 16     /* see metrics_status_slot() */
#define METRICS_BUCKETS 14

struct histogram {
    uint64_t buckets[METRICS_BUCKETS];  /* cumulative at render time, not here */
    uint64_t count;
    uint64_t sum_us;
};

struct metrics {
    uint64_t requests[ROUTE_COUNT][METRICS_STATUS_SLOTS];
    uint64_t outcomes[OUTCOME_COUNT];
    uint64_t aborted[ABORT_COUNT];
    uint64_t inflight_requests;         /* gauge */
    uint64_t upstream_inflight;         /* gauge */
    uint64_t usage_invalid;             /* upstream token counts refused */
    uint64_t bytes_in, bytes_out;
    uint64_t conns_open;                /* gauge */
    uint64_t conns_accepted, conns_rejected;
    uint64_t gather_items[OUTCOME_COUNT];
    uint64_t hedges[HEDGE_OUTCOMES];
    uint64_t phase_timeouts[PHASE_TIMEOUTS];
    uint64_t state_errors;              /* shared-state backend failures */
    struct histogram request_latency, gather_duration;
    /* attempts, retries, fallbacks, failures, upstream latency and tokens are labelled by
     * config names: metrics_labels.h */
};

/* Owner-thread updates: a plain add published with a relaxed store, no lock prefix. */
#define METRIC_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define METRIC_INC(field) METRIC_ADD(field, 1)
#define METRIC_DEC(field) METRIC_ADD(field, (uint64_t)-1)

unsigned metrics_status_slot(int status);
void metrics_observe(struct histogram *h, double seconds);

/* Renders the sum of n per-worker blocks; extra gauges come from the caller. */
struct metrics_extra {
    uint64_t reloads_ok, reloads_failed;
    int ready, draining;
    uint64_t mem_used, mem_max;     /* limits.max_memory accounting */
};
void metrics_render(struct buf *out, struct metrics *const *workers, unsigned n,
                    const struct metrics_extra *extra);

const char *outcome_name(enum outcome o);

/* Pieces for other renderers: a family's # HELP/# TYPE lines (name without "llmux_"), and one
 * histogram's series with labels (`a="x",b="y"`, or "" for none). */
void metrics_header(struct buf *out, const char *name, const char *type, const char *help);
void metrics_histogram_series(struct buf *out, const char *name, const char *labels,
                              const struct histogram *h);

#endif
