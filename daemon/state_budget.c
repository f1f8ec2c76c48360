/* state_budget: spend budgets behind the state interface — UTC windows, the process-wide
 * accounts (one mutex each, taken only by requests a budget applies to), the memory backend's
 * reserve / settle / read, and dispatch to the Redis backend (state_budget_redis.c). */
#include "daemon/state_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_S 86400

int64_t state_unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* Days from 1970-01-01 to y-m-01 (proleptic Gregorian; m 1..12). */
static int64_t days_from_civil(int64_t y, int64_t m)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t state_budget_window(enum conf_budget_window w, int64_t t, int64_t *end)
{
    static const int64_t span[] = {[BUDGET_1D] = DAY_S, [BUDGET_7D] = 7 * DAY_S,
                                   [BUDGET_30D] = 30 * DAY_S};
    if (w != BUDGET_CALENDAR_MONTH) {
        int64_t n = t / span[w];
        *end = (n + 1) * span[w];
        return n;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    int64_t y = tm.tm_year + 1900, m = tm.tm_mon + 1;
    *end = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1) * DAY_S;
    return y * 12 + (m - 1);
}

/* ---- accounts ---- */

static uint32_t acct_hash(char kind, const char *s)
{
    uint32_t h = (2166136261u ^ (unsigned char)kind) * 16777619u;     /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct state_acct *acct_find(struct state_acct *a, char kind, const char *name)
{
    for (; a; a = a->next)
        if (a->name[0] == kind && !strcmp(a->name + 2, name))
            return a;
    return NULL;
}

struct state_acct *state_acct_get(struct state *st, enum state_budget_kind kind,
                                  const char *name)
{
    char k = kind == BUDGET_OF_KEY ? 'k' : 'm';
    struct state_acct **head = &st->accts[acct_hash(k, name) % STATE_BUCKETS];
    struct state_acct *a = acct_find(__atomic_load_n(head, __ATOMIC_ACQUIRE), k, name);
    if (a)
        return a;
    pthread_mutex_lock(&st->accts_mu);      /* first use of a name: rare */
    if (!(a = acct_find(*head, k, name))) {
        size_t n = strlen(name) + 1;
        if ((a = calloc(1, sizeof *a + n + 2))) {
            pthread_mutex_init(&a->mu, NULL);
            a->window = -1;
            a->name[0] = k;
            a->name[1] = ':';
            memcpy(a->name + 2, name, n);
            a->next = *head;
            __atomic_store_n(head, a, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&st->accts_mu);
    return a;
}

static void models_free(struct acct_model *m)
{
    for (struct acct_model *next; m; m = next) {
        next = m->next;
        free(m);
    }
}

void state_acct_roll(struct state_acct *a, enum conf_budget_window w, int64_t window)
{
    if (a->window == window && a->wkind == w)
        return;
    /* Reservations of requests still running stay: their settle gives them back. */
    a->wkind = w;
    a->window = window;
    a->spent = 0;
    models_free(a->models);
    a->models = NULL;
}

void state_acct_add_model(struct state_acct *a, const char *model, int64_t nusd)
{
    struct acct_model *m = a->models;
    while (m && strcmp(m->name, model))
        m = m->next;
    if (!m) {
        size_t n = strlen(model) + 1;
        if (!(m = calloc(1, sizeof *m + n)))
            return;
        memcpy(m->name, model, n);
        m->next = a->models;
        a->models = m;
    }
    m->spent += nusd;
}

void state_accts_free(struct state *st)
{
    for (size_t i = 0; i < STATE_BUCKETS; i++)
        for (struct state_acct *a = st->accts[i], *next; a; a = next) {
            next = a->next;
            models_free(a->models);
            pthread_mutex_destroy(&a->mu);
            free(a);
        }
}

/* ---- memory backend ---- */

/* Whether est fits in ref's budget beside what is spent and reserved: nothing is admitted
 * once the budget is used up, even a request estimated at 0 (an unpriced model). */
static bool fits(const struct state_budget_ref *ref, int64_t est)
{
    int64_t limit = (int64_t)(ref->b->usd * STATE_NUSD + 0.5), used = ref->spent + ref->reserved;
    return used < limit && used + est <= limit;
}

static void ref_window(struct state_budget_ref *ref, int64_t now)
{
    ref->window = state_budget_window(ref->b->window, now, &ref->reset_at);
}

static void memory_reserve(struct state *st, struct state_budget_hold *h)
{
    int64_t now = state_unix_now();
    unsigned locked = 0;
    h->verdict = STATE_TAKEN;
    for (; locked < h->n; locked++) {       /* always key before model: no lock order cycle */
        struct state_budget_ref *ref = &h->ref[locked];
        pthread_mutex_lock(&ref->acct->mu);
        ref_window(ref, now);
        state_acct_roll(ref->acct, ref->b->window, ref->window);
        ref->spent = ref->acct->spent;
        ref->reserved = ref->acct->reserved;
        if (!fits(ref, h->estimate)) {
            h->verdict = STATE_BUDGET_EXCEEDED;
            h->refused = (int)locked;
            locked++;
            break;
        }
    }
    for (unsigned i = 0; i < locked; i++) {
        if (h->verdict == STATE_TAKEN)
            h->ref[i].acct->reserved += h->estimate;
        pthread_mutex_unlock(&h->ref[i].acct->mu);
    }
    h->reserved = h->verdict == STATE_TAKEN;
}

static void memory_settle(struct state *st, struct state_budget_hold *h, int64_t cost)
{
    for (unsigned i = 0; i < h->n; i++) {
        struct state_budget_ref *ref = &h->ref[i];
        struct state_acct *a = ref->acct;
        pthread_mutex_lock(&a->mu);
        a->reserved -= h->estimate;
        /* charged to the window of admission; once it is over, its figures are gone */
        if (a->window == ref->window && a->wkind == ref->b->window) {
            a->spent += cost;
            if (ref->kind == BUDGET_OF_KEY && h->model)
                state_acct_add_model(a, h->model, cost);
        }
        pthread_mutex_unlock(&a->mu);
    }
    if (cost)
        state_saver_touch(st);
}

static void memory_read(struct state *st, struct state_spend_read *rd)
{
    int64_t now = state_unix_now();
    for (size_t i = 0; i < rd->n; i++) {
        struct state_spend_row *row = &rd->rows[i];
        state_budget_peek(st, &row->ref);
        if (row->ref.kind != BUDGET_OF_KEY || !row->ref.acct)
            continue;
        struct state_acct *a = row->ref.acct;
        row->models = json_object();
        pthread_mutex_lock(&a->mu);
        if (a->window == state_budget_window(row->ref.b->window, now, &(int64_t){0}))
            for (struct acct_model *m = a->models; m; m = m->next)
                json_object_set_new(row->models, m->name, json_integer(m->spent));
        pthread_mutex_unlock(&a->mu);
    }
}

/* ---- dispatch ---- */

static bool bind_accts(struct state *st, struct state_budget_ref *ref, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(ref[i].acct = state_acct_get(st, ref[i].kind, ref[i].name)))
            return false;
    return true;
}

bool state_budget_reserve(struct state_link *l, struct state_budget_hold *h)
{
    h->link = l;
    h->reserved = h->pending = false;
    h->refused = -1;
    if (!bind_accts(l->st, h->ref, h->n)) {
        h->verdict = STATE_FAILED;
        h->why = "out of memory";
        return true;
    }
    if (l->st->redis)
        return state_budget_redis_reserve(l, h);
    memory_reserve(l->st, h);
    return true;
}

void state_budget_settle(struct state_budget_hold *h, int64_t cost)
{
    if (!h->link || (!h->reserved && !h->pending))
        return;
    if (h->link->st->redis)
        state_budget_redis_settle(h, cost);
    else
        memory_settle(h->link->st, h, cost);
    h->reserved = h->pending = false;
}

void state_budget_peek(struct state *st, struct state_budget_ref *ref)
{
    int64_t now = state_unix_now();
    ref_window(ref, now);
    ref->spent = ref->reserved = 0;
    if (!ref->acct && !(ref->acct = state_acct_get(st, ref->kind, ref->name)))
        return;
    pthread_mutex_lock(&ref->acct->mu);
    if (!st->redis)
        state_acct_roll(ref->acct, ref->b->window, ref->window);
    if (ref->acct->window == ref->window && ref->acct->wkind == ref->b->window) {
        ref->spent = ref->acct->spent;
        ref->reserved = ref->acct->reserved;
    }
    pthread_mutex_unlock(&ref->acct->mu);
}

bool state_spend_read(struct state_link *l, struct state_spend_read *rd)
{
    rd->link = l;
    rd->failed = false;
    if (!rd->n)
        return true;
    for (size_t i = 0; i < rd->n; i++)
        rd->rows[i].ref.acct = NULL;
    if (l->st->redis)
        return state_budget_redis_read(l, rd);
    memory_read(l->st, rd);
    return true;
}

void state_spend_cancel(struct state_spend_read *rd)
{
    redis_cancel(rd->cmd);
    rd->cmd = NULL;
}
