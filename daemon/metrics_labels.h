/* metrics_labels: counters labelled by configuration names — upstream, model, key — for
 * /metrics. Label values only ever come from names in the config (never from a request), so the
 * number of series is bounded by the config. Updates are lock-free per-worker stores, as in
 * struct metrics; a scrape sums the workers. */
#ifndef LLMUX_METRICS_LABELS_H
#define LLMUX_METRICS_LABELS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "conf/conf.h"
#include "daemon/metrics.h"
#include "upstream/usage.h"

enum key_limit { KEY_LIMIT_RPM, KEY_LIMIT_TPM, KEY_LIMIT_CONCURRENCY, KEY_LIMIT_BUDGET,
                 KEY_LIMIT_COUNT };
enum pair_event { PAIR_ATTEMPT, PAIR_RETRY, PAIR_FALLBACK, PAIR_FAILURE, PAIR_EVENT_COUNT };

/* Counter storage for the process, indexed by name: a name that stays in the config across
 * reloads keeps its counters (they stay monotonic); see docs/design.md. Main thread creates it
 * before the workers and frees it after they have stopped. */
struct metrics_registry;
struct metrics_registry *metrics_registry_new(unsigned nworkers);
void metrics_registry_free(struct metrics_registry *reg);

/* Gives snapshot c its index into reg (c->ext), on the main thread, before any worker sees c.
 * -1 when out of memory: c then counts nothing labelled. */
int metrics_labels_attach(struct metrics_registry *reg, struct conf *c);

/* The (model, upstream) pair of model m's target t: what attempts are labelled with. -1 when c
 * has no index. */
int metrics_labels_pair(const struct conf *c, const struct conf_model *m, size_t t);

/* Updates, by the worker that owns the request (worker = its id). Each is a no-op when c has no
 * index or an argument is "none" (pair < 0, m NULL). */
void metrics_labels_event(const struct conf *c, unsigned worker, int pair, enum pair_event e);
void metrics_labels_attempt_time(const struct conf *c, unsigned worker, int pair, double sec);
/* A request for model m ended with outcome o after sec; pair is the target that served it
 * last (or -1 when none was tried). */
void metrics_labels_request(const struct conf *c, unsigned worker, const struct conf_model *m,
                            int pair, enum outcome o, double sec);
/* What a request was charged: tokens by kind, USD, and whether by estimate. key NULL: the
 * gateway has no keys. */
void metrics_labels_usage(const struct conf *c, unsigned worker, const struct conf_key *key,
                          const struct conf_model *m, const struct usage *u, double usd,
                          bool estimated);
/* name="value" with the exposition format's escapes (names may hold '"' or '\'). */
void metrics_label(struct buf *out, const char *name, const char *value);
void metrics_labels_key_limited(const struct conf *c, unsigned worker,
                                const struct conf_key *key, enum key_limit l);

/* Appends the labelled families for the names in c (summed over every worker). */
void metrics_labels_render(struct buf *out, const struct conf *c);

/* Per-target rate limit of event log lines: true when a line may be written now (at most one
 * a second per pair, across workers); *suppressed then holds how many were held back since
 * the last one. */
bool metrics_labels_log_allowed(const struct conf *c, int pair, uint64_t now_ms,
                                uint64_t *suppressed);

#endif
