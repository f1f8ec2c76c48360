/* breaker: reads and reports the process-wide per-target breaker entries for requests, readiness
 * and metrics. Every view walks the request's config snapshot, so labels come from config only. */
#include "daemon/breaker.h"

#include <stdio.h>
#include <time.h>

#include "common/log.h"
#include "daemon/metrics.h"

int64_t breaker_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void breaker_report(const struct conf *c, const struct conf_target *t, enum health_verdict v,
                    bool probe, const char *request_id)
{
    struct target_health *h = t->health;
    enum health_change ch = health_report(h, v, probe, breaker_now_ms(), c->health.failures,
                                          c->health.cooldown_ms);
    if (ch == HEALTH_SAME || !h)
        return;
    char cooldown[24];
    snprintf(cooldown, sizeof cooldown, "%llu", (unsigned long long)c->health.cooldown_ms);
    if (ch == HEALTH_OPENED)
        log_fields(LOG_WARN, "breaker opened", "upstream", h->upstream, "upstream_model",
                   h->model, "after", probe ? "failed probe" : "consecutive failures",
                   "#cooldown_ms", cooldown, "request_id", request_id, (char *)NULL);
    else
        log_fields(LOG_INFO, "breaker closed", "upstream", h->upstream, "upstream_model",
                   h->model, "request_id", request_id, (char *)NULL);
}

int64_t breaker_retry_after_s(const struct conf_model *m, int64_t now_ms)
{
    int64_t least = -1;
    for (size_t i = 0; i < m->ntargets; i++) {
        int64_t wait = health_wait_ms(m->targets[i].health, now_ms);
        if (least < 0 || wait < least)
            least = wait;
    }
    int64_t s = least > 0 ? (least + 999) / 1000 : 1;
    return s < 1 ? 1 : s;
}

/* Is h already listed by an earlier target of c (two models naming the same pair)? */
static bool seen_before(const struct conf *c, size_t mi, size_t ti)
{
    const struct target_health *h = c->models[mi].targets[ti].health;
    for (size_t i = 0; i <= mi; i++)
        for (size_t j = 0; j < (i == mi ? ti : c->models[i].ntargets); j++)
            if (c->models[i].targets[j].health == h)
                return true;
    return false;
}

bool breaker_ready(const struct conf *c, json_t *open_targets)
{
    int64_t now = breaker_now_ms();
    bool ready = true;
    for (size_t i = 0; i < c->nmodels; i++) {
        const struct conf_model *m = &c->models[i];
        bool any = false;
        for (size_t j = 0; j < m->ntargets; j++) {
            const struct target_health *h = m->targets[j].health;
            if (health_state(h, now) != HEALTH_OPEN) {
                any = true;
                continue;
            }
            if (open_targets && !seen_before(c, i, j))
                json_array_append_new(open_targets, json_pack(
                    "{s:s, s:s, s:I}", "upstream", h->upstream, "model", h->model,
                    "retry_after_s", (json_int_t)((health_wait_ms(h, now) + 999) / 1000)));
        }
        ready = ready && any;
    }
    return ready;
}

/* Prometheus label value: backslash, quote and newline escaped. */
static void label(struct buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_printf(out, "\\%c", *s);
        else if (*s == '\n')
            buf_append(out, "\\n", 2);
        else
            buf_append(out, s, 1);
    }
}

static void series(struct buf *out, const char *name, const struct target_health *h,
                   unsigned long long value)
{
    buf_printf(out, "llmux_%s{upstream=\"", name);
    label(out, h->upstream);
    buf_append(out, "\",upstream_model=\"", 18);
    label(out, h->model);
    buf_printf(out, "\"} %llu\n", value);
}

static void render(struct buf *out, const struct conf *c, bool opens, int64_t now)
{
    for (size_t i = 0; i < c->nmodels; i++)
        for (size_t j = 0; j < c->models[i].ntargets; j++) {
            const struct target_health *h = c->models[i].targets[j].health;
            if (!h || seen_before(c, i, j))
                continue;
            if (opens)
                series(out, "target_opens_total", h,
                       __atomic_load_n(&h->opens, __ATOMIC_RELAXED));
            else
                series(out, "target_state", h, health_state(h, now));
        }
}

void breaker_metrics(struct buf *out, const struct conf *c)
{
    int64_t now = breaker_now_ms();
    metrics_header(out, "target_state", "gauge",
                   "Circuit breaker per target: 0 closed, 1 open, 2 half-open.");
    render(out, c, false, now);
    metrics_header(out, "target_opens_total", "counter",
                   "Circuit breaker transitions to open, per target.");
    render(out, c, true, now);
}
