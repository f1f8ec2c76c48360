/* keylimit: token bucket per key for `rpm`, a counter for `max_concurrency`. */
#include "daemon/keylimit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics_labels.h"
#include "daemon/worker.h"

struct key_state {
    char *name;
    double tokens;
    double last;            /* loop time of the last refill */
    unsigned inflight;
    struct key_state *next;
};

static struct key_state *state_of(struct worker *w, const char *name)
{
    struct key_state *k;
    for (k = w->keys; k; k = k->next)
        if (strcmp(k->name, name) == 0)
            return k;
    k = calloc(1, sizeof *k);
    if (!k || !(k->name = strdup(name))) {
        free(k);
        return NULL;
    }
    k->tokens = -1;         /* filled on first use */
    k->next = w->keys;
    w->keys = k;
    return k;
}

static double share(unsigned total, const struct worker *w)
{
    double s = (double)total / w->srv->nworkers;
    return s < 1 ? 1 : s;
}

static void refuse(struct request *r, double retry_s, const char *code, const char *msg,
                   enum key_limit l)
{
    metrics_labels_key_limited(r->conf, r->w->id, r->key, l);
    r->retry_after_s = (int64_t)ceil(retry_s < 1 ? 1 : retry_s);
    request_fail(r, 429, "rate_limit_error", code, NULL, msg, OUTCOME_REJECTED);
}

int keylimit_acquire(struct request *r)
{
    const struct conf_key *key = r->key;
    if (!key || (!key->rpm && !key->max_concurrency))
        return 0;
    struct key_state *k = state_of(r->w, key->name);
    if (!k)
        return 0;           /* out of memory: fail open rather than refuse everyone */
    double now = ev_now(r->w->loop);
    if (key->rpm) {
        double cap = share(key->rpm, r->w), rate = cap / 60.0;
        k->tokens = k->tokens < 0 ? cap : fmin(cap, k->tokens + (now - k->last) * rate);
        k->last = now;
        if (k->tokens < 1) {
            refuse(r, (1 - k->tokens) / rate, "rate_limit_exceeded",
                   "this key's requests-per-minute limit is reached", KEY_LIMIT_RPM);
            return -1;
        }
    }
    if (key->max_concurrency && k->inflight >= (unsigned)share(key->max_concurrency, r->w)) {
        refuse(r, 1, "concurrency_limit_exceeded",
               "this key has as many requests in flight as it may", KEY_LIMIT_CONCURRENCY);
        return -1;
    }
    if (key->rpm)
        k->tokens -= 1;
    k->inflight++;
    r->key_slot = true;
    return 0;
}

void keylimit_release(struct request *r)
{
    if (!r->key_slot)
        return;
    r->key_slot = false;
    struct key_state *k = state_of(r->w, r->key->name);
    if (k && k->inflight)
        k->inflight--;
}

void keylimit_free_all(struct worker *w)
{
    for (struct key_state *k = w->keys, *next; k; k = next) {
        next = k->next;
        free(k->name);
        free(k);
    }
    w->keys = NULL;
}

int keylimit_take_extra(struct request *r)
{
    const struct conf_key *key = r->key;
    if (!key || !r->key_slot || (!key->rpm && !key->max_concurrency))
        return 0;
    struct key_state *k = state_of(r->w, key->name);
    if (!k)
        return 0;
    if (key->rpm && k->tokens < 1)
        return -1;      /* refilled by the next keylimit_acquire; a hedge never waits */
    if (key->max_concurrency && k->inflight >= (unsigned)share(key->max_concurrency, r->w))
        return -1;
    if (key->rpm)
        k->tokens -= 1;
    k->inflight++;
    return 1;
}

void keylimit_give_extra(struct request *r)
{
    struct key_state *k = state_of(r->w, r->key->name);
    if (k && k->inflight)
        k->inflight--;
}
