/* state: the backend-neutral half — the process-wide slot table (insert-only lock-free hash),
 * GCRA maths, figures for the headers, the on_error policy and dispatch to the backends. */
#include "daemon/state_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

#define LOG_BURST_US 10000000LL         /* one line per 10 s of failures */

int64_t state_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- GCRA ---- */

static void gcra_figures(struct gcra *g, int64_t now, double T, int64_t W)
{
    int64_t ahead = g->tat > now ? g->tat - now : 0;
    g->reset_us = ahead;
    g->remaining = W > ahead ? (long)floor((double)(W - ahead) / T + 1e-9) : 0;
}

struct gcra gcra_admit(int64_t tat, int64_t now, double T, int64_t W, double cost)
{
    struct gcra g = {.tat = tat};
    /* rounded down: T × limit must not exceed W by a rounding error (7 × 60e6/7) */
    int64_t next = (tat > now ? tat : now) + (int64_t)(T * cost);
    g.ok = next - now <= W;
    if (g.ok)
        g.tat = next;
    else
        g.retry_us = next - now - W;
    gcra_figures(&g, now, T, W);
    return g;
}

struct gcra gcra_check(int64_t tat, int64_t now, double T, int64_t W)
{
    struct gcra g = gcra_admit(tat, now, T, W, 1);
    g.tat = tat;                        /* only a look: nothing is spent */
    gcra_figures(&g, now, T, W);
    return g;
}

struct gcra gcra_charge(int64_t tat, int64_t now, double T, int64_t W, double cost)
{
    struct gcra g = {.ok = true};
    g.tat = (tat > now ? tat : now) + (int64_t)(T * cost);
    if (g.tat > now + 2 * W)
        g.tat = now + 2 * W;
    gcra_figures(&g, now, T, W);
    return g;
}

/* ---- slots ---- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;           /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

struct state_slot *state_slot_get(struct state *st, const char *name)
{
    struct state_slot **head = &st->buckets[name_hash(name) % STATE_BUCKETS];
    struct state_slot *first = __atomic_load_n(head, __ATOMIC_ACQUIRE), *fresh = NULL;
    for (;;) {
        for (struct state_slot *s = first; s; s = s->next)
            if (!strcmp(s->name, name)) {
                free(fresh);            /* another worker inserted it meanwhile */
                return s;
            }
        if (!fresh) {
            size_t n = strlen(name) + 1;
            if (!(fresh = calloc(1, sizeof *fresh + n)))
                return NULL;
            memcpy(fresh->name, name, n);
        }
        fresh->next = first;
        if (__atomic_compare_exchange_n(head, &first, fresh, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return fresh;
        /* lost the race: first now holds the new head; look again */
    }
}

void state_figures_fill(struct state_figures *f, const struct conf_key *k, int64_t req_tat,
                        int64_t tok_tat, int64_t now)
{
    memset(f, 0, sizeof *f);
    if (k->rpm) {
        struct gcra g = {.tat = req_tat};
        gcra_figures(&g, now, (double)STATE_WINDOW_US / k->rpm, STATE_WINDOW_US);
        f->limit_req = k->rpm;
        f->remaining_req = g.remaining;
        f->reset_req_s = (double)g.reset_us / 1e6;
    }
    if (k->tpm) {
        struct gcra g = {.tat = tok_tat};
        gcra_figures(&g, now, (double)STATE_WINDOW_US / k->tpm, STATE_WINDOW_US);
        f->limit_tok = k->tpm;
        f->remaining_tok = g.remaining;
        f->reset_tok_s = (double)g.reset_us / 1e6;
    }
}

void state_peek(struct state *st, const struct conf_key *k, struct state_figures *out)
{
    struct state_slot *s = state_slot_get(st, k->name);
    int64_t now = state_now_us();
    if (!s) {
        memset(out, 0, sizeof *out);
        return;
    }
    const int64_t *r = st->redis ? &s->seen_req_tat_us : &s->req_tat_us;
    const int64_t *t = st->redis ? &s->seen_tok_tat_us : &s->tok_tat_us;
    state_figures_fill(out, k, __atomic_load_n(r, __ATOMIC_RELAXED),
                       __atomic_load_n(t, __ATOMIC_RELAXED), now);
}

/* ---- policy ---- */

bool state_failed(struct state_link *l, const char *why)
{
    struct state *st = l->st;
    int64_t now = state_now_us(), last = __atomic_load_n(&st->last_log_us, __ATOMIC_RELAXED);
    __atomic_add_fetch(l->errors, 1, __ATOMIC_RELAXED);
    if (now - last >= LOG_BURST_US &&
        __atomic_compare_exchange_n(&st->last_log_us, &last, now, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        uint64_t more = __atomic_exchange_n(&st->unlogged, 0, __ATOMIC_RELAXED);
        log_warn("state: redis unavailable (%s): %s requests (%llu more failures since the "
                 "last line)", why, st->fail_closed ? "refusing (on_error: closed)"
                 : "serving without limits (on_error: open)", (unsigned long long)more);
    } else {
        __atomic_add_fetch(&st->unlogged, 1, __ATOMIC_RELAXED);
    }
    return !st->fail_closed;
}

/* ---- life and dispatch ---- */

struct state *state_new(const struct conf *c, char *err, size_t errlen)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st || !(st->url = strdup(c->state.redis))) {
        free(st);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->redis = c->state.backend == STATE_REDIS;
    st->fail_closed = c->state.fail_closed;
    st->timeout_s = (double)c->state.timeout_ms / 1000.0;
    st->connect_timeout_s = (double)c->timeouts.connect_ms / 1000.0;
    st->last_log_us = -LOG_BURST_US;
    unsigned seed = (unsigned)state_now_us() ^ (unsigned)(uintptr_t)st;
    for (int i = 0; i < 16; i++)
        st->instance[i] = "0123456789abcdef"[rand_r(&seed) % 16];
    state_redis_init(st);
    state_budget_redis_init(st);
    pthread_mutex_init(&st->accts_mu, NULL);
    if (!st->redis && c->jobs.dir)
        state_saver_start(st, c->jobs.dir);
    return st;
}

void state_free(struct state *st)
{
    if (!st)
        return;
    state_saver_stop(st);
    state_accts_free(st);
    pthread_mutex_destroy(&st->accts_mu);
    for (size_t i = 0; i < STATE_BUCKETS; i++)
        for (struct state_slot *s = st->buckets[i], *next; s; s = next) {
            next = s->next;
            free(s);
        }
    explicit_bzero(st->url, strlen(st->url));
    free(st->url);
    free(st);
}

bool state_is_redis(const struct state *st)
{
    return st->redis;
}

bool state_differs(const struct state *st, const struct conf *c)
{
    return st->redis != (c->state.backend == STATE_REDIS) ||
           st->fail_closed != c->state.fail_closed ||
           st->timeout_s != (double)c->state.timeout_ms / 1000.0 ||
           strcmp(st->url, c->state.redis) != 0;
}

struct state_link *state_link_new(struct state *st, struct ev_loop *loop, unsigned worker_id,
                                  uint64_t *errors)
{
    struct state_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->st = st;
    l->loop = loop;
    l->errors = errors;
    l->worker_id = worker_id;
    if (st->redis) {
        char err[256], name[32];
        snprintf(name, sizeof name, "worker %u", worker_id);
        struct redis_opts o = {st->url, st->timeout_s, st->connect_timeout_s, name};
        if (!(l->rd = redis_new(loop, &o, err, sizeof err))) {
            log_error("state: %s", err);
            free(l);
            return NULL;
        }
    }
    return l;
}

void state_link_free(struct state_link *l)
{
    if (!l)
        return;
    redis_free(l->rd);
    free(l);
}

bool state_take(struct state_link *l, struct state_hold *h, const struct conf_key *k)
{
    h->key = k;
    h->link = l;
    h->taken = h->pending = false;
    h->retry_after_s = 0;
    if (!(h->slot = state_slot_get(l->st, k->name))) {
        h->verdict = STATE_FAILED;
        h->why = "out of memory";
        return true;
    }
    if (l->st->redis)
        return state_redis_take(l, h, k);
    return state_memory_take(l->st, h, k);
}

void state_cancel(struct state_hold *h)
{
    if (h->pending)
        state_redis_cancel(h);
}

void state_release(struct state_hold *h, long tokens)
{
    if (!h->link)
        return;
    state_cancel(h);
    if (h->link->st->redis)
        state_redis_release(h, tokens);
    else
        state_memory_release(h, tokens);
    h->taken = false;
}
