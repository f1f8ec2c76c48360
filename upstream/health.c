/* health: breaker state transitions on atomics (no lock on the hot path) and the table of
 * per-target entries, keyed by (upstream, upstream model) and carried across reloads. */
#include "upstream/health.h"

#include <stdlib.h>
#include <string.h>

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

const char *health_target_model(const struct conf_model *m, const struct conf_target *t)
{
    return t->model ? t->model : m->name;
}

static struct target_health *table_find(struct health_table *t, const char *up,
                                        const char *model)
{
    for (struct target_health *h = t->head; h; h = h->next)
        if (strcmp(h->upstream, up) == 0 && strcmp(h->model, model) == 0)
            return h;
    struct target_health *h = calloc(1, sizeof *h);
    if (!h || !(h->upstream = strdup(up)) || !(h->model = strdup(model))) {
        if (h)
            free(h->upstream);
        free(h);
        return NULL;
    }
    h->next = t->head;
    t->head = h;
    return h;
}

int health_bind(struct health_table *t, struct conf *c)
{
    for (size_t i = 0; i < c->nmodels; i++) {
        struct conf_model *m = &c->models[i];
        for (size_t j = 0; j < m->ntargets; j++) {
            struct conf_target *tg = &m->targets[j];
            tg->health = table_find(t, tg->upstream->name, health_target_model(m, tg));
            if (!tg->health)
                return -1;
        }
    }
    return 0;
}

void health_table_free(struct health_table *t)
{
    for (struct target_health *h = t->head, *next; h; h = next) {
        next = h->next;
        free(h->upstream);
        free(h->model);
        free(h);
    }
    t->head = NULL;
}

enum health_state health_state(const struct target_health *h, int64_t now_ms)
{
    int64_t until = h ? LOAD(h->open_until_ms) : 0;
    if (until == 0)
        return HEALTH_CLOSED;
    return now_ms < until ? HEALTH_OPEN : HEALTH_HALF_OPEN;
}

bool health_admit(struct target_health *h, int64_t now_ms, bool *probe)
{
    *probe = false;
    switch (health_state(h, now_ms)) {
    case HEALTH_CLOSED:
        return true;
    case HEALTH_OPEN:
        return false;
    default: {
        uint32_t idle = 0;      /* whoever flips probing 0 → 1 is the one probe */
        *probe = __atomic_compare_exchange_n(&h->probing, &idle, 1, false, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE);
        return *probe;
    }
    }
}

enum health_verdict health_verdict(enum call_result r, long status)
{
    if (r == CALL_TOO_LARGE)
        return HEALTH_NEUTRAL;      /* the answer's size is the request's doing */
    if (r != CALL_OK)
        return HEALTH_FAIL;
    if (status == 429)
        return HEALTH_NEUTRAL;
    return status >= 500 ? HEALTH_FAIL : HEALTH_PASS;
}

static enum health_change report_probe(struct target_health *h, enum health_verdict v,
                                       int64_t now_ms, uint64_t cooldown_ms)
{
    enum health_change change = HEALTH_SAME;
    if (v == HEALTH_PASS) {
        STORE(h->failures, 0);
        STORE(h->open_until_ms, 0);
        change = HEALTH_CLOSED_AGAIN;
    } else if (v == HEALTH_FAIL) {
        STORE(h->open_until_ms, now_ms + (int64_t)cooldown_ms);
        __atomic_add_fetch(&h->opens, 1, __ATOMIC_RELAXED);
        change = HEALTH_OPENED;
    }   /* neutral (429): still half-open, the next request probes */
    STORE(h->probing, 0);
    return change;
}

enum health_change health_report(struct target_health *h, enum health_verdict v, bool probe,
                                 int64_t now_ms, unsigned failures, uint64_t cooldown_ms)
{
    if (!h)
        return HEALTH_SAME;
    if (probe)
        return report_probe(h, v, now_ms, cooldown_ms);
    if (v == HEALTH_PASS) {
        if (LOAD(h->failures))
            STORE(h->failures, 0);      /* no write (no cache-line bounce) while all is well */
        return HEALTH_SAME;
    }
    if (v == HEALTH_NEUTRAL)
        return HEALTH_SAME;
    if (__atomic_add_fetch(&h->failures, 1, __ATOMIC_ACQ_REL) < failures || failures == 0)
        return HEALTH_SAME;
    /* Only a closed breaker opens here: late failures of attempts that started before it
     * opened (or during a probe) change nothing, and exactly one thread sees the transition. */
    int64_t closed = 0;
    if (!__atomic_compare_exchange_n(&h->open_until_ms, &closed, now_ms + (int64_t)cooldown_ms,
                                     false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return HEALTH_SAME;
    __atomic_add_fetch(&h->opens, 1, __ATOMIC_RELAXED);
    return HEALTH_OPENED;
}

void health_release_probe(struct target_health *h)
{
    if (h)
        STORE(h->probing, 0);
}

int64_t health_wait_ms(const struct target_health *h, int64_t now_ms)
{
    int64_t until = h ? LOAD(h->open_until_ms) : 0;
    return until > now_ms ? until - now_ms : 0;
}

void health_inflight_add(struct target_health *h, int delta)
{
    if (h)
        __atomic_add_fetch(&h->inflight, (uint32_t)delta, __ATOMIC_RELAXED);
}
