/* budget: a request's spend budgets (its key's, its model's) — the estimate reserved at
 * admission, 429 budget_exceeded past a budget, the settle when the request ends, the
 * x-llmux-budget-remaining-usd header — and GET /v1/spend (budget_spend.c). */
#ifndef LLMUX_BUDGET_H
#define LLMUX_BUDGET_H

#include <stdint.h>

#include "common/buf.h"
#include "daemon/request.h"
#include "daemon/state.h"

/* What a request holds between admission and its end (r->budget). */
struct budget {
    struct state_budget_hold h;         /* first member: on_reserved casts back */
    struct request *r;
    const struct conf_model *m;
    struct state_spend_read rd;         /* GET /v1/spend: the read under way */
    bool reading;
};

/* Starts r's upstream work (proxy_start) once every budget that applies has room for its
 * estimate, now or when Redis answers; otherwise 429 budget_exceeded (or 503 when the shared
 * state is down and state.on_error is closed). No budget: proxy_start at once. */
void budget_admit(struct request *r, const struct conf_model *m);
/* Settles what r holds with its cost (request_end calls it once its calls are cancelled, so
 * every attempt's charge is in). Also cancels a /v1/spend read still under way. */
void budget_end(struct request *r);
/* x-llmux-budget-remaining-usd for an answer to a budgeted key (or a request a model budget
 * applied to): the tightest budget's remaining USD, less this answer's cost. */
void budget_headers(const struct request *r, struct buf *h);
/* The estimate reserved for a request to m: prompt tokens from body_bytes and completion
 * tokens max_tokens (< 0: m's default_max_tokens), priced by the dearest target. Nano-USD. */
int64_t budget_estimate(const struct conf_model *m, size_t body_bytes, long max_tokens);

/* GET /v1/spend (budget_spend.c). */
void budget_spend(struct request *r);
/* llmux_budget_spent_usd / llmux_budget_remaining_usd{key|model} for /metrics: exact with the
 * memory backend, the figures this instance last saw with Redis. Nothing without budgets. */
void budget_metrics(struct buf *out, const struct conf *c, struct state *st);

#endif
