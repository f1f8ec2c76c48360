/* hedge: delayed hedging. When no attempt has response headers `after` into the request, one
 * more attempt starts on the next target in routing order (the same one when it is alone); the
 * first 2xx head wins and every other attempt is cancelled at once. Hedges take a max_inflight
 * slot and a key slot each (a Redis-backed key's answer may come a round trip later: the hedge
 * waits for it), stop once a stream byte is out, and end with the request. */
#include <stdlib.h>

#include "daemon/breaker.h"
#include "daemon/keylimit.h"
#include "daemon/proxy_internal.h"
#include "daemon/worker.h"

static void on_hedge(struct ev_loop *loop, ev_timer *t, int revents);

/* X-Llmux-Hedge-Ms overrides `after` but never below hedge.min_after: a client can hedge later
 * or not at all, not make the model cost more upstream calls than its operator allows. */
void hedge_init(struct proxy *p)
{
    const struct conf_model *m = p->model;
    const struct request *r = p->r;
    uint64_t after = m->hedge_after_ms;
    if (after && r->hedge_ms >= 0) {
        after = (uint64_t)r->hedge_ms;
        if (after && after < m->hedge_min_after_ms)
            after = m->hedge_min_after_ms;
    }
    if (r->no_retry)
        after = 0;      /* one upstream call at most */
    p->hedge_after = (double)after / 1000.0;
    ev_timer_init(&p->hedge, on_hedge, 0., 0.);
    p->hedge.data = p;
}

void hedge_arm(struct proxy *p)
{
    struct request *r = p->r;
    if (p->hedge_after <= 0 || p->winner || r->streaming || p->hedges >= p->model->hedge_max ||
        ev_is_active(&p->hedge) || p->key_take)
        return;
    ev_timer_set(&p->hedge, p->hedge_after, 0.);
    ev_timer_start(r->w->loop, &p->hedge);
}

void hedge_stop(struct proxy *p)
{
    ev_timer_stop(p->r->w->loop, &p->hedge);
}

static bool target_running(const struct proxy *p, const struct conf_target *t)
{
    for (unsigned i = 0; i < p->nslots; i++)
        if (p->slots[i].call && p->slots[i].target == t)
            return true;
    return false;
}

/* The next target after the walk's position the breaker admits, preferring one with no attempt
 * out; the same target comes last, so a single-target model hedges on itself. */
static const struct conf_target *pick(struct proxy *p, bool *probe)
{
    int64_t now = breaker_now_ms();
    for (int pass = 0; pass < 2; pass++)
        for (unsigned k = 1; k <= p->norder; k++) {
            const struct conf_target *t = &p->model->targets[p->order[(p->pos + k) % p->norder]];
            if (pass == 0 && target_running(p, t))
                continue;
            if (health_admit(t->health, now, probe))
                return t;
        }
    return NULL;
}

static void give_slots(struct request *r, struct state_hold *key)
{
    proxy_slot_give(r->w);
    keylimit_give_extra(r, key);
}

void hedge_release(struct attempt *a)
{
    struct request *r = a->p->r;
    struct worker *w = r->w;
    METRIC_INC(w->m.hedges[a->hedge_outcome]);
    a->hedge = false;
    give_slots(r, a->key_hold);
    a->key_hold = NULL;
}

static struct attempt *free_slot(struct proxy *p)
{
    for (unsigned i = 0; i < p->nslots; i++)
        if (!p->slots[i].call)
            return &p->slots[i];
    return NULL;
}

/* Whether one more attempt may start now: nothing answered or streamed yet, an attempt is
 * running (not between retries), and the request has hedges and a slot left. */
static bool wanted(struct proxy *p)
{
    return free_slot(p) && !p->winner && !p->r->streaming && p->running &&
           p->hedges < p->model->hedge_max;
}

/* Starts the hedge with its slots held (max_inflight, key's hold); gives them back when no
 * target the breaker admits can take it. */
static void launch(struct proxy *p, struct state_hold *key)
{
    struct request *r = p->r;
    struct attempt *a = free_slot(p);
    bool probe = false;
    const struct conf_target *tg = pick(p, &probe);
    if (!tg || proxy_launch(p, a, tg, probe) < 0) {
        if (probe)
            health_release_probe(tg->health);
        give_slots(r, key);
        return;
    }
    a->hedge = true;
    a->key_hold = key;
    a->hedge_outcome = HEDGE_CANCELLED;
    p->hedges++;
    r->hedged = true;
    hedge_arm(p);
}

/* The key's answer came from Redis. Whatever changed meanwhile (a winner, a stream byte, the
 * walk between retries) decides: a hedge no longer wanted gives its take back at once. */
static void on_key_taken(void *arg, struct state_hold *key, bool taken)
{
    struct proxy *p = arg;
    p->key_take = NULL;
    if (!taken)
        proxy_slot_give(p->r->w);       /* refused or failed closed: skipped */
    else if (!wanted(p))
        give_slots(p->r, key);
    else
        launch(p, key);
}

/* The max_inflight slot first (never ahead of queued requests), then the key's take: now, or
 * a Redis round trip later with the hedge pending in p->key_take. */
static void on_hedge(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct proxy *p = t->data;
    struct request *r = p->r;
    struct state_hold *key = NULL;
    if (!wanted(p))     /* never armed while a take is pending (hedge_arm) */
        return;     /* answered, streaming, or between retries: nothing to hedge */
    if (r->w->queue_head || !proxy_slot_take(r->w))
        return;
    switch (keylimit_take_extra(r, &key, on_key_taken, p)) {
    case KEYLIMIT_EXTRA_TAKEN:
        launch(p, key);
        return;
    case KEYLIMIT_EXTRA_PENDING:
        p->key_take = key;
        return;
    case KEYLIMIT_EXTRA_REFUSED:
        proxy_slot_give(r->w);
        return;
    }
}

void hedge_end(struct proxy *p)
{
    hedge_stop(p);
    if (!p->key_take)
        return;
    keylimit_cancel_extra(p->key_take);
    p->key_take = NULL;
    proxy_slot_give(p->r->w);
}

void hedge_won(struct proxy *p, struct attempt *a)
{
    p->winner = a;
    p->r->hedge_winner = a->number;
    p->r->upstream = a->target->upstream->name;    /* X-Llmux-Upstream: the one that answers */
    p->r->label_pair = a->pair;
    hedge_stop(p);
    if (a->hedge)
        a->hedge_outcome = HEDGE_WON;
    for (unsigned i = 0; i < p->nslots; i++) {
        struct attempt *o = &p->slots[i];
        if (o == a || !o->call)
            continue;
        if (o->hedge)
            o->hedge_outcome = HEDGE_LOST;
        proxy_attempt_cancel(o, ABORT_CANCELLED);   /* the upstream sees its connection close */
    }
}
