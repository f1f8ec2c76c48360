/* route: target ordering, retry classification and backoff decisions. */
#include "upstream/route.h"

#include "upstream/health.h"

uint32_t route_rand(uint32_t *s)
{
    uint32_t x = *s ? *s : 0x9e3779b9u;     /* xorshift32: cheap, per worker, not for secrets */
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static unsigned load_of(const struct conf_model *m, unsigned i)
{
    const struct target_health *h = m->targets[i].health;
    return h ? __atomic_load_n(&h->inflight, __ATOMIC_RELAXED) : 0;
}

unsigned route_order(const struct conf_model *m, uint32_t *rng, unsigned *order)
{
    unsigned n = m->ntargets > ROUTE_MAX_TARGETS ? ROUTE_MAX_TARGETS : (unsigned)m->ntargets;
    for (unsigned i = 0; i < n; i++)
        order[i] = i;
    if (m->strategy == STRATEGY_FALLBACK || n < 2)
        return n;
    if (m->strategy == STRATEGY_LEAST_INFLIGHT) {
        for (unsigned i = 1; i < n; i++) {          /* insertion sort: stable, n is tiny */
            unsigned t = order[i], j = i;
            for (; j > 0 && load_of(m, order[j - 1]) > load_of(m, t); j--)
                order[j] = order[j - 1];
            order[j] = t;
        }
        return n;
    }
    /* weighted: draw without replacement, so fallbacks also follow the weights */
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += m->targets[i].weight;
    for (unsigned k = 0; k < n - 1 && total > 0; k++) {
        uint64_t r = route_rand(rng) % total, acc = 0;
        unsigned pick = k;
        for (unsigned i = k; i < n; i++) {
            acc += m->targets[order[i]].weight;
            if (r < acc) {
                pick = i;
                break;
            }
        }
        unsigned t = order[k];
        order[k] = order[pick];
        order[pick] = t;
        total -= m->targets[order[k]].weight;
    }
    return n;
}

bool route_retryable(enum call_result r, long status)
{
    switch (r) {
    case CALL_CONNECT:
    case CALL_RESET:
    case CALL_TIMEOUT:
    case CALL_FIRST_BYTE_TIMEOUT:
    case CALL_IDLE_TIMEOUT:     /* before any byte reached the client, like a reset */
        return true;
    case CALL_OK:
        return status == 429 || status >= 500;
    default:
        return false;
    }
}

uint64_t route_backoff_ms(const struct conf_model *m, unsigned retry, int64_t retry_after_ms,
                          uint32_t *rng)
{
    uint64_t cap = m->backoff_base_ms;
    for (unsigned i = 0; i < retry && cap < m->backoff_max_ms; i++)
        cap *= 2;
    if (cap > m->backoff_max_ms)
        cap = m->backoff_max_ms;
    uint64_t wait = cap ? route_rand(rng) % (cap + 1) : 0;
    if (retry_after_ms > 0 && (uint64_t)retry_after_ms > wait)
        wait = (uint64_t)retry_after_ms;
    return wait;
}
