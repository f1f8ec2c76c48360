/* keylimit: between the router and the proxy. A limited key's request takes from the shared
 * state first; items of a gather and jobs (r->wait_for_key) wait for a slot within their
 * deadline instead of failing, woken early when a slot of their key frees on this worker. */
#include "daemon/keylimit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/budget.h"
#include "daemon/metrics_labels.h"
#include "daemon/state.h"
#include "daemon/worker.h"

#define WAIT_POLL_MIN_S 0.01    /* a waiter looks again this soon, then less often */
#define WAIT_POLL_MAX_S 0.2

struct keylimit {
    struct state_hold h;
    struct request *r;
    const struct conf_model *m;
    ev_timer wait;
    double poll_s;
    struct keylimit *wprev, *wnext;     /* in the worker's waiters while waiting */
    bool waiting, has_fig, decided;
};

static void on_taken(struct state_hold *h);
static void take(struct keylimit *kl);

static bool limited(const struct conf_key *k)
{
    return k && (k->rpm || k->tpm || k->max_concurrency);
}

static void waiter_unlink(struct keylimit *kl)
{
    struct worker *w = kl->r->w;
    if (!kl->waiting)
        return;
    kl->waiting = false;
    ev_timer_stop(w->loop, &kl->wait);
    if (kl->wprev)
        kl->wprev->wnext = kl->wnext;
    else
        w->key_waiters = kl->wnext;
    if (kl->wnext)
        kl->wnext->wprev = kl->wprev;
    kl->wprev = kl->wnext = NULL;
}

static void on_wait(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct keylimit *kl = t->data;
    waiter_unlink(kl);
    take(kl);
}

static void wait_for(struct keylimit *kl, double s)
{
    struct worker *w = kl->r->w;
    kl->waiting = true;
    kl->wnext = w->key_waiters;
    if (kl->wnext)
        kl->wnext->wprev = kl;
    w->key_waiters = kl;
    ev_timer_set(&kl->wait, s, 0.);
    ev_timer_start(w->loop, &kl->wait);
}

/* A slot of this key freed on this worker: the first waiter for it looks at once. */
static void wake_waiter(struct worker *w, const struct state_slot *slot)
{
    for (struct keylimit *kl = w->key_waiters; kl; kl = kl->wnext)
        if (kl->h.slot == slot) {
            ev_timer_stop(w->loop, &kl->wait);
            ev_timer_set(&kl->wait, 0., 0.);
            ev_timer_start(w->loop, &kl->wait);
            return;
        }
}

static void refuse(struct keylimit *kl)
{
    static const char *const msgs[] = {
        [STATE_RATE_LIMITED] = "this key's requests-per-minute limit is reached",
        [STATE_TOKENS_LIMITED] = "this key's tokens-per-minute limit is reached",
        [STATE_BUSY] = "this key has as many requests in flight as it may",
    };
    static const enum key_limit kinds[] = {
        [STATE_RATE_LIMITED] = KEY_LIMIT_RPM,
        [STATE_TOKENS_LIMITED] = KEY_LIMIT_TPM,
        [STATE_BUSY] = KEY_LIMIT_CONCURRENCY,
    };
    struct request *r = kl->r;
    double s = kl->h.retry_after_s;
    metrics_labels_key_limited(r->conf, r->w->id, r->key, kinds[kl->h.verdict]);
    r->retry_after_s = (int64_t)ceil(s < 1 ? 1 : s);
    request_fail(r, 429, "rate_limit_error", kl->h.verdict == STATE_BUSY
                 ? "concurrency_limit_exceeded" : "rate_limit_exceeded", NULL,
                 msgs[kl->h.verdict], OUTCOME_REJECTED);
}

/* Whether r may wait `s` more seconds for its key: only waiters, and only within the deadline. */
static bool may_wait(const struct request *r, double s)
{
    if (!r->wait_for_key)
        return false;
    return !r->deadline_at || ev_now(r->w->loop) + s < r->deadline_at;
}

static void go(struct keylimit *kl)
{
    kl->decided = true;
    budget_admit(kl->r, kl->m);
}

static void decide(struct keylimit *kl)
{
    struct request *r = kl->r;
    kl->has_fig |= kl->h.verdict != STATE_FAILED;
    switch (kl->h.verdict) {
    case STATE_TAKEN:
        go(kl);
        return;
    case STATE_FAILED:
        if (state_failed(r->w->state, kl->h.why)) {
            go(kl);             /* on_error: open */
            return;
        }
        r->retry_after_s = 1;
        request_fail(r, 503, "server_error", "state_unavailable", NULL,
                     "the shared limit state (redis) is unavailable; retry shortly",
                     OUTCOME_REJECTED);
        return;
    case STATE_BUSY:
        if (may_wait(r, 0)) {
            double s = kl->poll_s;
            kl->poll_s = fmin(kl->poll_s * 2, WAIT_POLL_MAX_S);
            wait_for(kl, s);
            return;
        }
        break;
    default:
        if (may_wait(r, kl->h.retry_after_s)) {
            wait_for(kl, kl->h.retry_after_s);
            return;
        }
        break;
    }
    refuse(kl);
}

static void take(struct keylimit *kl)
{
    kl->h.done = on_taken;
    if (state_take(kl->r->w->state, &kl->h, kl->r->key))
        decide(kl);
}

static void on_taken(struct state_hold *h)
{
    decide((struct keylimit *)h);       /* h is the first member */
}

void keylimit_admit(struct request *r, const struct conf_model *m)
{
    if (!limited(r->key) || !r->w->state) {
        budget_admit(r, m);
        return;
    }
    struct keylimit *kl = calloc(1, sizeof *kl);
    if (!kl) {
        budget_admit(r, m);             /* out of memory: fail open rather than refuse all */
        return;
    }
    kl->r = r;
    kl->m = m;
    kl->poll_s = WAIT_POLL_MIN_S;
    ev_timer_init(&kl->wait, on_wait, 0., 0.);
    kl->wait.data = kl;
    r->keylimit = kl;
    take(kl);
}

void keylimit_release(struct request *r)
{
    struct keylimit *kl = r->keylimit;
    if (!kl)
        return;
    r->keylimit = NULL;
    waiter_unlink(kl);
    bool freed_slot = kl->h.taken && r->key->max_concurrency;
    state_release(&kl->h, usage_total(&r->usage));
    if (freed_slot && r->w->key_waiters)
        wake_waiter(r->w, kl->h.slot);
    free(kl);
}

/* Go's duration format, as OpenAI writes these headers: "1s", "6m0s", "0.5s". */
static void put_duration(struct buf *h, const char *name, double s)
{
    if (s < 60) {
        buf_printf(h, "%s: %.3gs\r\n", name, s < 0.001 ? 0 : s);
        return;
    }
    long whole = (long)ceil(s);
    buf_printf(h, "%s: %ldm%lds\r\n", name, whole / 60, whole % 60);
}

void keylimit_headers(const struct request *r, struct buf *h)
{
    const struct conf_key *k = r->key;
    struct state_figures f;
    if (!k || (!k->rpm && !k->tpm))
        return;
    const struct keylimit *kl = r->keylimit;
    if (kl && kl->has_fig)
        f = kl->h.fig;
    else if (r->w->srv->state)
        state_peek(r->w->srv->state, k, &f);
    else
        return;
    if (k->rpm) {
        buf_printf(h, "x-ratelimit-limit-requests: %u\r\nx-ratelimit-remaining-requests: %ld\r\n",
                   f.limit_req, f.remaining_req);
        put_duration(h, "x-ratelimit-reset-requests", f.reset_req_s);
    }
    if (k->tpm) {
        buf_printf(h, "x-ratelimit-limit-tokens: %u\r\nx-ratelimit-remaining-tokens: %ld\r\n",
                   f.limit_tok, f.remaining_tok);
        put_duration(h, "x-ratelimit-reset-tokens", f.reset_tok_s);
    }
}

/* A hedge's take: the hold first, so the hold given out is the whole record. */
struct extra {
    struct state_hold h;
    struct request *r;
    keylimit_extra_done *done;
    void *arg;
};

/* What an answered take comes to: TAKEN with *hold kept (NULL when the backend failed and
 * on_error is open: nothing charged), or REFUSED (rate, concurrency, or failed closed). */
static enum keylimit_extra extra_decide(struct extra *e, struct state_hold **hold)
{
    struct state_hold *h = &e->h;
    if (h->verdict == STATE_TAKEN) {
        *hold = h;
        return KEYLIMIT_EXTRA_TAKEN;
    }
    bool open = h->verdict == STATE_FAILED && state_failed(e->r->w->state, h->why);
    free(e);
    *hold = NULL;
    return open ? KEYLIMIT_EXTRA_TAKEN : KEYLIMIT_EXTRA_REFUSED;
}

static void on_extra_taken(struct state_hold *h)
{
    struct extra *e = (struct extra *)h;       /* h is the first member */
    keylimit_extra_done *done = e->done;
    void *arg = e->arg;
    struct state_hold *hold;
    bool taken = extra_decide(e, &hold) == KEYLIMIT_EXTRA_TAKEN;
    done(arg, hold, taken);
}

enum keylimit_extra keylimit_take_extra(struct request *r, struct state_hold **hold,
                                        keylimit_extra_done *done, void *arg)
{
    *hold = NULL;
    if (!limited(r->key) || !r->w->state || !r->keylimit)
        return KEYLIMIT_EXTRA_TAKEN;
    struct extra *e = calloc(1, sizeof *e);
    if (!e)
        return KEYLIMIT_EXTRA_REFUSED;
    e->r = r;
    e->done = done;
    e->arg = arg;
    e->h.done = on_extra_taken;
    if (state_take(r->w->state, &e->h, r->key))
        return extra_decide(e, hold);
    *hold = &e->h;
    return KEYLIMIT_EXTRA_PENDING;
}

void keylimit_cancel_extra(struct state_hold *hold)
{
    /* A take that reached Redis keeps its rpm; its lease, if any, expires by itself. */
    state_cancel(hold);
    free(hold);
}

void keylimit_give_extra(struct request *r, struct state_hold *hold)
{
    if (!hold)
        return;
    bool freed_slot = hold->taken && r->key->max_concurrency;
    state_release(hold, 0);
    if (freed_slot && r->w->key_waiters)
        wake_waiter(r->w, hold->slot);
    free(hold);
}
