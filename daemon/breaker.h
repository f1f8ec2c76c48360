/* breaker: the daemon's side of the per-target circuit breaker (upstream/health.h) — the clock,
 * transition log lines, Retry-After when every target is open, /readyz and /metrics views. */
#ifndef LLMUX_BREAKER_H
#define LLMUX_BREAKER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "conf/conf.h"
#include "upstream/health.h"

/* The breaker's clock: monotonic milliseconds (a vDSO read, no syscall), the same for every
 * worker, so one target's cooldown ends at one moment for the whole process. */
int64_t breaker_now_ms(void);

/* Counts an attempt's end on its target, logging a transition (warn on open, info on close). */
void breaker_report(const struct conf *c, const struct conf_target *t, enum health_verdict v,
                    bool probe, const char *request_id);

/* Seconds (rounded up, at least 1) until the first of m's targets may be tried again. */
int64_t breaker_retry_after_s(const struct conf_model *m, int64_t now_ms);

/* /readyz: true when every model has a target that is not open. open_targets (may be NULL)
 * receives {"upstream","model","retry_after_s"} for each open target, once per target. */
bool breaker_ready(const struct conf *c, json_t *open_targets);

/* /metrics: llmux_target_state and llmux_target_opens_total, {upstream,upstream_model}. */
void breaker_metrics(struct buf *out, const struct conf *c);

#endif
