/* state_memory: the embedded backend. Each key's counters are atomics in its process-wide slot:
 * a CAS loop for the GCRA arrival times and a counter for concurrency, so the limits are exact
 * for the whole process however many workers run, with no lock on the hot path. */
#include "daemon/state_impl.h"

static bool conc_take(struct state_slot *s, unsigned max)
{
    uint32_t n = __atomic_load_n(&s->inflight, __ATOMIC_RELAXED);
    do {
        if (n >= max)
            return false;
    } while (!__atomic_compare_exchange_n(&s->inflight, &n, n + 1, true, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    return true;
}

/* One request against the rpm budget; false (with the retry delay) when it does not fit. */
static bool rate_take(int64_t *tat_at, unsigned rpm, int64_t now, struct gcra *g)
{
    double T = (double)STATE_WINDOW_US / rpm;
    int64_t tat = __atomic_load_n(tat_at, __ATOMIC_RELAXED);
    for (;;) {
        *g = gcra_admit(tat, now, T, STATE_WINDOW_US, 1);
        if (!g->ok)
            return false;
        if (__atomic_compare_exchange_n(tat_at, &tat, g->tat, true, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return true;
    }
}

bool state_memory_take(struct state *st, struct state_hold *h, const struct conf_key *k)
{
    struct state_slot *s = h->slot;
    int64_t now = state_now_us();
    struct gcra g;
    if (k->tpm) {
        g = gcra_check(__atomic_load_n(&s->tok_tat_us, __ATOMIC_RELAXED), now,
                       (double)STATE_WINDOW_US / k->tpm, STATE_WINDOW_US);
        if (!g.ok) {
            h->verdict = STATE_TOKENS_LIMITED;
            h->retry_after_s = (double)g.retry_us / 1e6;
            goto figures;
        }
    }
    if (k->max_concurrency && !conc_take(s, k->max_concurrency)) {
        h->verdict = STATE_BUSY;
        goto figures;
    }
    if (k->rpm && !rate_take(&s->req_tat_us, k->rpm, now, &g)) {
        if (k->max_concurrency)
            __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
        h->verdict = STATE_RATE_LIMITED;
        h->retry_after_s = (double)g.retry_us / 1e6;
        goto figures;
    }
    h->verdict = STATE_TAKEN;
    h->taken = true;
figures:
    state_figures_fill(&h->fig, k, __atomic_load_n(&s->req_tat_us, __ATOMIC_RELAXED),
                       __atomic_load_n(&s->tok_tat_us, __ATOMIC_RELAXED), now);
    return true;
}

void state_memory_release(struct state_hold *h, long tokens)
{
    struct state_slot *s = h->slot;
    const struct conf_key *k = h->key;
    if (!s)
        return;
    if (h->taken && k->max_concurrency)
        __atomic_sub_fetch(&s->inflight, 1, __ATOMIC_ACQ_REL);
    if (!k->tpm || tokens <= 0)
        return;
    int64_t now = state_now_us(), tat = __atomic_load_n(&s->tok_tat_us, __ATOMIC_RELAXED);
    double T = (double)STATE_WINDOW_US / k->tpm;
    struct gcra g;
    do {
        g = gcra_charge(tat, now, T, STATE_WINDOW_US, (double)tokens);
    } while (!__atomic_compare_exchange_n(&s->tok_tat_us, &tat, g.tat, true, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
}
