/* health: the passive circuit breaker per target = (upstream, upstream model), one state for
 * the whole process, shared by every worker through atomics; and the table that owns them. */
#ifndef LLMUX_HEALTH_H
#define LLMUX_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "upstream/engine.h"

enum health_state { HEALTH_CLOSED, HEALTH_OPEN, HEALTH_HALF_OPEN };   /* metric values */
enum health_verdict { HEALTH_PASS, HEALTH_FAIL, HEALTH_NEUTRAL };
enum health_change { HEALTH_SAME, HEALTH_OPENED, HEALTH_CLOSED_AGAIN };

/* Every mutable field is read and written with __atomic builtins: workers never lock. */
struct target_health {
    char *upstream, *model;         /* the key, as written in the config */
    uint32_t failures;              /* consecutive failures while closed */
    uint32_t probing;               /* 1 while the half-open probe is out */
    uint32_t inflight;              /* calls out now (strategy least_inflight) */
    int64_t open_until_ms;          /* 0: closed; else monotonic ms from which one probe may go */
    uint64_t opens;                 /* transitions to open (closed→open and half-open→open) */
    struct target_health *next;     /* the table's list: main thread only */
};

/* Entries are created when a config is bound and live until the table is freed, so a request
 * on an older snapshot never holds a dangling pointer; a reload finds existing ones by key. */
struct health_table {
    struct target_health *head;
};

/* The upstream model a target sends: its own `model`, else the client's (the model's name). */
const char *health_target_model(const struct conf_model *m, const struct conf_target *t);
/* Points every target of c at its entry, creating missing ones. Main thread, before c is
 * published. -1 when out of memory (c is then left partly bound and must not be used). */
int health_bind(struct health_table *t, struct conf *c);
void health_table_free(struct health_table *t);

enum health_state health_state(const struct target_health *h, int64_t now_ms);
/* May an attempt go to this target now? In half-open it claims the single probe (*probe set). */
bool health_admit(struct target_health *h, int64_t now_ms, bool *probe);
/* How the breaker counts an attempt's end: transport errors, timeouts and 5xx fail; 429 is
 * neutral (the upstream's rate answer); any other answer passes (the target works). */
enum health_verdict health_verdict(enum call_result r, long status);
enum health_change health_report(struct target_health *h, enum health_verdict v, bool probe,
                                 int64_t now_ms, unsigned failures, uint64_t cooldown_ms);
/* An abandoned probe (cancelled, hedge loser) gives its turn to the next request. */
void health_release_probe(struct target_health *h);
/* Milliseconds until an open target may be probed; 0 when it may be tried now. */
int64_t health_wait_ms(const struct target_health *h, int64_t now_ms);
void health_inflight_add(struct target_health *h, int delta);

#endif
