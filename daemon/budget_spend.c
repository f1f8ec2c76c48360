/* budget_spend: GET /v1/spend — spend, budget and remaining of the caller's key (an admin key,
 * or an open gateway: every key, and the model budgets), read through the state interface in
 * one step (one Lua call with Redis) so the figures are of one instant. */
#include "daemon/budget.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/metrics_labels.h"
#include "daemon/worker.h"

static void on_read(struct state_spend_read *rd);

static json_t *usd(int64_t nusd)
{
    return json_real((double)nusd / STATE_NUSD);
}

static json_t *iso_time(int64_t t)
{
    char s[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(s);
}

static json_t *budget_json(const struct state_budget_ref *ref)
{
    return json_pack("{s:o, s:s, s:o}", "usd", json_real(ref->b->usd),
                     "window", conf_budget_window_names[ref->b->window],
                     "resets_at", iso_time(ref->reset_at));
}

/* Figures of one budgeted row: spent, reserved, remaining, and the key's lines per model. */
static void put_figures(json_t *o, const struct state_spend_row *row)
{
    const struct state_budget_ref *ref = &row->ref;
    int64_t left = (int64_t)(ref->b->usd * STATE_NUSD + 0.5) - ref->spent - ref->reserved;
    json_object_set_new(o, "budget", budget_json(ref));
    json_object_set_new(o, "spent_usd", usd(ref->spent));
    json_object_set_new(o, "reserved_usd", usd(ref->reserved));
    json_object_set_new(o, "remaining_usd", usd(left > 0 ? left : 0));
    if (ref->kind != BUDGET_OF_KEY)
        return;
    json_t *models = json_array(), *v;
    const char *m;
    json_object_foreach(row->models, m, v)
        json_array_append_new(models, json_pack("{s:s, s:o}", "model", m, "spent_usd",
                                                usd(json_integer_value(v))));
    json_object_set_new(o, "models", models);
}

static bool sees_all(const struct request *r)
{
    return !r->key || r->key->admin;
}

/* The answer: every visible key (budgeted or not, in config order), then model budgets. */
static json_t *answer(const struct request *r, const struct state_spend_row *rows, size_t n)
{
    json_t *keys = json_array(), *models = json_array();
    size_t at = 0;
    for (size_t i = 0; i < r->conf->nkeys; i++) {
        const struct conf_key *k = &r->conf->keys[i];
        if (!sees_all(r) && k != r->key)
            continue;
        json_t *o = json_pack("{s:s, s:b}", "key", k->name, "admin", k->admin);
        if (k->budget.usd > 0 && at < n) {
            put_figures(o, &rows[at++]);
        } else {
            json_object_set_new(o, "budget", json_null());
            json_object_set_new(o, "spent_usd", json_null());
            json_object_set_new(o, "reserved_usd", json_null());
            json_object_set_new(o, "remaining_usd", json_null());
            json_object_set_new(o, "models", json_array());
        }
        json_array_append_new(keys, o);
    }
    for (; at < n; at++) {
        json_t *o = json_pack("{s:s}", "model", rows[at].ref.name);
        put_figures(o, &rows[at]);
        json_array_append_new(models, o);
    }
    return json_pack("{s:s, s:o, s:o}", "object", "spend", "keys", keys, "models", models);
}

/* Rows to read, in answer order: visible budgeted keys, then (admin) budgeted models. */
static size_t rows_of(const struct request *r, struct state_spend_row *rows)
{
    size_t n = 0;
    for (size_t i = 0; i < r->conf->nkeys; i++) {
        const struct conf_key *k = &r->conf->keys[i];
        if ((sees_all(r) || k == r->key) && k->budget.usd > 0 && rows)
            rows[n].ref = (struct state_budget_ref){.kind = BUDGET_OF_KEY, .name = k->name,
                                                    .b = &k->budget};
        n += (sees_all(r) || k == r->key) && k->budget.usd > 0;
    }
    for (size_t i = 0; sees_all(r) && i < r->conf->nmodels; i++) {
        const struct conf_model *m = &r->conf->models[i];
        if (m->budget.usd > 0 && rows)
            rows[n].ref = (struct state_budget_ref){.kind = BUDGET_OF_MODEL, .name = m->name,
                                                    .b = &m->budget};
        n += m->budget.usd > 0;
    }
    return n;
}

static void reply(struct request *r, struct budget *b)
{
    json_t *body = answer(r, b->rd.rows, b->rd.n);
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(body);
    if (text)
        request_respond(r, 200, text, strlen(text));
    else
        request_fail(r, 500, "server_error", NULL, NULL, "out of memory", OUTCOME_REJECTED);
    free(text);
    request_end(r, OUTCOME_COMPLETED);
}

static void on_read(struct state_spend_read *rd)
{
    struct budget *b = (struct budget *)((char *)rd - offsetof(struct budget, rd));
    struct request *r = b->r;
    if (!rd->failed) {
        reply(r, b);
        return;
    }
    r->retry_after_s = 1;
    request_fail(r, 503, "server_error", "state_unavailable", NULL,
                 "the shared budget state (redis) is unavailable; retry shortly",
                 OUTCOME_REJECTED);
}

void budget_spend(struct request *r)
{
    size_t n = rows_of(r, NULL);
    struct budget *b = calloc(1, sizeof *b);
    struct state_spend_row *rows = calloc(n ? n : 1, sizeof *rows);
    if (!b || !rows || !r->w->state) {
        free(b);
        free(rows);
        request_fail(r, 503, "server_error", "overloaded", NULL, "out of memory",
                     OUTCOME_REJECTED);
        return;
    }
    rows_of(r, rows);
    b->r = r;
    b->reading = true;
    b->rd.rows = rows;
    b->rd.n = n;
    b->rd.done = on_read;
    r->budget = b;                      /* request_end frees it (and cancels the read) */
    if (state_spend_read(r->w->state, &b->rd))
        on_read(&b->rd);
}

/* One budget's two gauges. */
static void metric_rows(struct buf *spent, struct buf *left, struct state *st,
                        struct state_budget_ref *ref)
{
    struct buf l = BUF_INIT;
    state_budget_peek(st, ref);
    metrics_label(&l, ref->kind == BUDGET_OF_KEY ? "key" : "model", ref->name);
    int64_t rem = (int64_t)(ref->b->usd * STATE_NUSD + 0.5) - ref->spent - ref->reserved;
    buf_printf(spent, "llmux_budget_spent_usd{%s} %.9f\n", l.data,
               (double)ref->spent / STATE_NUSD);
    buf_printf(left, "llmux_budget_remaining_usd{%s} %.9f\n", l.data,
               rem > 0 ? (double)rem / STATE_NUSD : 0);
    buf_free(&l);
}

void budget_metrics(struct buf *out, const struct conf *c, struct state *st)
{
    struct buf spent = BUF_INIT, left = BUF_INIT;
    for (size_t i = 0; st && i < c->nkeys; i++)
        if (c->keys[i].budget.usd > 0)
            metric_rows(&spent, &left, st, &(struct state_budget_ref){
                .kind = BUDGET_OF_KEY, .name = c->keys[i].name, .b = &c->keys[i].budget});
    for (size_t i = 0; st && i < c->nmodels; i++)
        if (c->models[i].budget.usd > 0)
            metric_rows(&spent, &left, st, &(struct state_budget_ref){
                .kind = BUDGET_OF_MODEL, .name = c->models[i].name, .b = &c->models[i].budget});
    if (spent.len) {
        metrics_header(out, "budget_spent_usd", "gauge", "Spend in the current budget window "
                       "(USD), by key or model (redis: as this instance last saw it).");
        buf_append(out, spent.data, spent.len);
        metrics_header(out, "budget_remaining_usd", "gauge", "Budget left in the current "
                       "window (USD): amount less spent and reserved, at least 0.");
        buf_append(out, left.data, left.len);
    }
    buf_free(&spent);
    buf_free(&left);
}
