/* metrics: Prometheus text rendering of the per-worker counters (summed at scrape time). */
#include "daemon/metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const int status_codes[METRICS_STATUS_SLOTS] = {
    0, 200, 202, 400, 401, 403, 404, 405, 408, 413, 414, 429, 431, 502, 503, 504,
};
/* Slot 0 collects every status not listed (rendered as its class, e.g. "5xx"). */

static const char *const route_names[ROUTE_COUNT] = {
    "chat", "completions", "embeddings", "models", "gather", "jobs",
    "messages", "messages_count_tokens", "responses", "spend",
    "healthz", "readyz", "metrics", "other",
};
static const char *const outcome_names[OUTCOME_COUNT] = {
    "completed", "rejected", "upstream_error", "deadline", "client_disconnect", "cancelled",
    "shutdown",
};
static const char *const abort_names[ABORT_COUNT] = {
    "deadline", "client_disconnect", "cancelled", "shutdown",
};
static const double bucket_bounds[METRICS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

const char *outcome_name(enum outcome o)
{
    return outcome_names[o];
}

unsigned metrics_status_slot(int status)
{
    for (unsigned i = 1; i < METRICS_STATUS_SLOTS; i++)
        if (status_codes[i] == status)
            return i;
    return 0;
}

void metrics_observe(struct histogram *h, double seconds)
{
    for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
        if (seconds <= bucket_bounds[i]) {
            METRIC_INC(h->buckets[i]);
            break;
        }
    }
    METRIC_INC(h->count);
    METRIC_ADD(h->sum_us, (uint64_t)(seconds * 1e6));
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Sum of one field across workers, addressed by its offset in struct metrics. */
static uint64_t sum_at(struct metrics *const *w, unsigned n, size_t off)
{
    uint64_t s = 0;
    for (unsigned i = 0; i < n; i++)
        s += load((const uint64_t *)((const char *)w[i] + off));
    return s;
}

#define SUM(field) sum_at(w, n, offsetof(struct metrics, field))
#define SUM_AT(field, i) sum_at(w, n, offsetof(struct metrics, field) + (i) * sizeof(uint64_t))

void metrics_header(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP llmux_%s %s\n# TYPE llmux_%s %s\n", name, help, name, type);
}

void metrics_histogram_series(struct buf *out, const char *name, const char *labels,
                              const struct histogram *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        cum += h->buckets[b];
        buf_printf(out, "llmux_%s_bucket{%s%sle=\"%g\"} %lu\n", name, labels, sep,
                   bucket_bounds[b], (unsigned long)cum);
    }
    buf_printf(out, "llmux_%s_bucket{%s%sle=\"+Inf\"} %lu\n", name, labels, sep,
               (unsigned long)h->count);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    buf_printf(out, "llmux_%s_sum%s%s%s %.6f\nllmux_%s_count%s%s%s %lu\n", name, open, labels,
               close, (double)h->sum_us / 1e6, name, open, labels, close,
               (unsigned long)h->count);
}

/* Hedge attempts by what became of them, and calls ended by a phase timeout. */
static void render_hedges(struct buf *out, struct metrics *const *w, unsigned n)
{
    static const char *const hedge_names[HEDGE_OUTCOMES] = {"won", "lost", "failed",
                                                            "cancelled"};
    metrics_header(out, "hedges_total", "counter",
                   "Hedged attempts started, by what became of them.");
    for (unsigned h = 0; h < HEDGE_OUTCOMES; h++)
        buf_printf(out, "llmux_hedges_total{outcome=\"%s\"} %lu\n", hedge_names[h],
                   (unsigned long)SUM_AT(hedges, h));
    metrics_header(out, "upstream_timeouts_total", "counter",
                   "Upstream calls ended by a phase timeout.");
    buf_printf(out, "llmux_upstream_timeouts_total{phase=\"first_byte\"} %lu\n"
               "llmux_upstream_timeouts_total{phase=\"idle\"} %lu\n",
               (unsigned long)SUM_AT(phase_timeouts, PHASE_FIRST_BYTE),
               (unsigned long)SUM_AT(phase_timeouts, PHASE_IDLE));
}

static void render_requests(struct buf *out, struct metrics *const *w, unsigned n)
{
    metrics_header(out, "http_requests_total", "counter", "Client requests by route and status.");
    for (unsigned r = 0; r < ROUTE_COUNT; r++) {
        for (unsigned s = 0; s < METRICS_STATUS_SLOTS; s++) {
            uint64_t v = SUM_AT(requests, r * METRICS_STATUS_SLOTS + s);
            if (!v)
                continue;
            if (s)
                buf_printf(out, "llmux_http_requests_total{route=\"%s\",status=\"%d\"} %lu\n",
                           route_names[r], status_codes[s], (unsigned long)v);
            else
                buf_printf(out, "llmux_http_requests_total{route=\"%s\",status=\"other\"} %lu\n",
                           route_names[r], (unsigned long)v);
        }
    }
    metrics_header(out, "requests_total", "counter", "Requests ended, by outcome.");
    for (unsigned o = 0; o < OUTCOME_COUNT; o++)
        buf_printf(out, "llmux_requests_total{outcome=\"%s\"} %lu\n", outcome_names[o],
                   (unsigned long)SUM_AT(outcomes, o));
    metrics_header(out, "upstream_aborted_total", "counter",
                   "Upstream transfers aborted, by reason.");
    for (unsigned a = 0; a < ABORT_COUNT; a++)
        buf_printf(out, "llmux_upstream_aborted_total{reason=\"%s\"} %lu\n", abort_names[a],
                   (unsigned long)SUM_AT(aborted, a));
    metrics_header(out, "gather_items_total", "counter", "Gather items ended, by outcome.");
    for (unsigned o = 0; o < OUTCOME_COUNT; o++)
        buf_printf(out, "llmux_gather_items_total{outcome=\"%s\"} %lu\n", outcome_names[o],
                   (unsigned long)SUM_AT(gather_items, o));
    render_hedges(out, w, n);
}

static void render_histogram(struct buf *out, struct metrics *const *w, unsigned n,
                             size_t off, const char *name, const char *help)
{
    struct histogram h;
    metrics_header(out, name, "histogram", help);
    for (unsigned b = 0; b < METRICS_BUCKETS; b++)
        h.buckets[b] = sum_at(w, n, off + offsetof(struct histogram, buckets) +
                                        b * sizeof(uint64_t));
    h.count = sum_at(w, n, off + offsetof(struct histogram, count));
    h.sum_us = sum_at(w, n, off + offsetof(struct histogram, sum_us));
    metrics_histogram_series(out, name, "", &h);
}

static void simple(struct buf *out, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    metrics_header(out, name, type, help);
    buf_printf(out, "llmux_%s %lu\n", name, (unsigned long)v);
}

void metrics_render(struct buf *out, struct metrics *const *w, unsigned n,
                    const struct metrics_extra *x)
{
    metrics_header(out, "build_info", "gauge", "Build information.");
    buf_printf(out, "llmux_build_info{version=\"%s\"} 1\n", LLMUX_VERSION);
    render_requests(out, w, n);
    simple(out, "inflight_requests", "gauge", "Requests in flight.", SUM(inflight_requests));
    simple(out, "upstream_inflight", "gauge", "Upstream calls in flight.",
           SUM(upstream_inflight));
    simple(out, "state_errors_total", "counter", "Limit checks the shared state (redis) "
           "could not answer.", SUM(state_errors));
    simple(out, "usage_invalid_total", "counter",
           "Upstream token counts ignored (negative, above 2^40 or not integers).",
           SUM(usage_invalid));
    simple(out, "response_bytes_total", "counter", "Bytes sent to clients.", SUM(bytes_out));
    simple(out, "connections_open", "gauge", "Client connections open.", SUM(conns_open));
    simple(out, "connections_accepted_total", "counter", "Client connections accepted.",
           SUM(conns_accepted));
    render_histogram(out, w, n, offsetof(struct metrics, request_latency),
                     "request_duration_seconds", "Gateway latency, request to last byte.");
    render_histogram(out, w, n, offsetof(struct metrics, gather_duration),
                     "gather_duration_seconds", "Gather latency, start to last item.");
    metrics_header(out, "config_reloads_total", "counter", "Configuration reloads.");
    buf_printf(out, "llmux_config_reloads_total{result=\"ok\"} %lu\n",
               (unsigned long)x->reloads_ok);
    buf_printf(out, "llmux_config_reloads_total{result=\"failed\"} %lu\n",
               (unsigned long)x->reloads_failed);
    simple(out, "ready", "gauge", "1 when ready to serve.", (uint64_t)x->ready);
    simple(out, "draining", "gauge", "1 while shutting down.", (uint64_t)x->draining);
    simple(out, "memory_accounted_bytes", "gauge",
           "Bodies, upstream answers and gather entries held (limits.max_memory).", x->mem_used);
    simple(out, "memory_limit_bytes", "gauge", "limits.max_memory.", x->mem_max);
}
