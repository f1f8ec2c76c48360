/* budget: between the key's limits and the proxy. A request a budget applies to reserves its
 * estimate first; its end settles the reservation with the real cost. Requests without a
 * budget pass straight through: no allocation, no lock. */
#include "daemon/budget.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "daemon/cost.h"
#include "daemon/metrics_labels.h"
#include "daemon/proxy.h"
#include "daemon/worker.h"

static void on_reserved(struct state_budget_hold *h);

static int64_t to_nusd(double usd)
{
    return usd > 0 ? (int64_t)ceil(usd * STATE_NUSD - 1e-6) : 0;
}

int64_t budget_estimate(const struct conf_model *m, size_t body_bytes, long max_tokens)
{
    struct usage u;
    cost_estimate(&u, body_bytes, max_tokens >= 0 ? max_tokens : (long)m->default_max_tokens);
    double dearest = 0;
    for (size_t i = 0; i < m->ntargets; i++) {
        double usd = cost_of(m->targets[i].price, &u);
        if (usd > dearest)
            dearest = usd;
    }
    return to_nusd(dearest);
}

/* The budgets that apply to r on m, key's first; 0 when none. */
static unsigned refs_of(const struct request *r, const struct conf_model *m,
                        struct state_budget_ref *ref)
{
    unsigned n = 0;
    if (r->key && r->key->budget.usd > 0)
        ref[n++] = (struct state_budget_ref){.kind = BUDGET_OF_KEY, .name = r->key->name,
                                             .b = &r->key->budget};
    if (m && m->budget.usd > 0)
        ref[n++] = (struct state_budget_ref){.kind = BUDGET_OF_MODEL, .name = m->name,
                                             .b = &m->budget};
    return n;
}

static void refuse(struct budget *b)
{
    struct request *r = b->r;
    const struct state_budget_ref *ref = &b->h.ref[b->h.refused];
    char msg[200];
    int64_t wait = ref->reset_at - state_unix_now();
    r->retry_after_s = wait < 1 ? 1 : wait;
    metrics_labels_key_limited(r->conf, r->w->id, r->key, KEY_LIMIT_BUDGET);
    snprintf(msg, sizeof msg, "the spend budget of %s '%.80s' is used up until its window "
             "resets", ref->kind == BUDGET_OF_KEY ? "this key" : "the model", ref->name);
    request_fail(r, 429, "insufficient_quota", "budget_exceeded", NULL, msg, OUTCOME_REJECTED);
}

static void decide(struct budget *b)
{
    struct request *r = b->r;
    switch (b->h.verdict) {
    case STATE_TAKEN:
        proxy_start(r, b->m);
        return;
    case STATE_BUDGET_EXCEEDED:
        refuse(b);
        return;
    default:
        b->h.n = 0;             /* nothing reserved, no figures for the header */
        if (state_failed(r->w->state, b->h.why)) {
            proxy_start(r, b->m);       /* on_error: open */
            return;
        }
        r->retry_after_s = 1;
        request_fail(r, 503, "server_error", "state_unavailable", NULL,
                     "the shared budget state (redis) is unavailable; retry shortly",
                     OUTCOME_REJECTED);
    }
}

static void on_reserved(struct state_budget_hold *h)
{
    decide((struct budget *)h);
}

void budget_admit(struct request *r, const struct conf_model *m)
{
    struct state_budget_ref ref[STATE_BUDGET_MAX];
    unsigned n = r->ep == EP_COUNT_TOKENS ? 0 : refs_of(r, m, ref);
    struct budget *b = n && r->w->state ? calloc(1, sizeof *b) : NULL;
    if (!b) {
        proxy_start(r, m);      /* no budget applies (or out of memory: fail open) */
        return;
    }
    b->r = r;
    b->m = m;
    memcpy(b->h.ref, ref, sizeof ref);
    b->h.n = n;
    b->h.model = m->name;
    b->h.estimate = budget_estimate(m, r->body_raw.len, r->max_tokens);
    b->h.done = on_reserved;
    r->budget = b;
    if (state_budget_reserve(r->w->state, &b->h))
        decide(b);
}

void budget_end(struct request *r)
{
    struct budget *b = r->budget;
    if (!b)
        return;
    r->budget = NULL;
    if (b->reading) {
        state_spend_cancel(&b->rd);
        for (size_t i = 0; i < b->rd.n; i++)
            json_decref(b->rd.rows[i].models);
        free(b->rd.rows);
    } else {
        state_budget_settle(&b->h, to_nusd(r->cost_usd));
    }
    free(b);
}

static int64_t remaining(const struct state_budget_ref *ref)
{
    int64_t left = to_nusd(ref->b->usd) - ref->spent - ref->reserved;
    return left > 0 ? left : 0;
}

void budget_headers(const struct request *r, struct buf *h)
{
    const struct budget *b = r->budget;
    int64_t left = INT64_MAX;
    char usd[32];
    if (b && !b->reading && b->h.n) {
        for (unsigned i = 0; i < b->h.n; i++)
            if (remaining(&b->h.ref[i]) < left)
                left = remaining(&b->h.ref[i]);
        left -= to_nusd(r->cost_usd);
    } else if (r->key && r->key->budget.usd > 0 && r->w->srv->state) {
        struct state_budget_ref ref = {.kind = BUDGET_OF_KEY, .name = r->key->name,
                                       .b = &r->key->budget};
        state_budget_peek(r->w->srv->state, &ref);
        left = remaining(&ref);
    } else {
        return;
    }
    cost_format(usd, sizeof usd, left > 0 ? (double)left / STATE_NUSD : 0);
    buf_printf(h, "x-llmux-budget-remaining-usd: %s\r\n", usd);
}
