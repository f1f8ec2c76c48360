/* cost: pure pricing of usage and estimates for calls without usage. */
#include "daemon/cost.h"

#include <stdio.h>
#include <string.h>

#include "daemon/request.h"

double cost_of(const struct conf_price *p, const struct usage *u)
{
    if (!p || !p->per)
        return 0;
    long cached = u->cache_read + u->cache_write;
    long uncached = u->prompt > cached ? u->prompt - cached : 0;
    double usd = (double)uncached * p->input + (double)u->cache_read * p->cache_read +
                 (double)u->cache_write * p->cache_write + (double)u->completion * p->output;
    return usd / (double)p->per;
}

void cost_estimate(struct usage *u, size_t prompt_bytes, long completion_events)
{
    memset(u, 0, sizeof *u);
    u->prompt = (long)((prompt_bytes + COST_BYTES_PER_TOKEN - 1) / COST_BYTES_PER_TOKEN);
    u->completion = completion_events > 0 ? completion_events : 0;
}

void cost_format(char *out, size_t n, double usd)
{
    if (usd < 0) {
        snprintf(out, n, "-");
        return;
    }
    int k = snprintf(out, n, "%.10f", usd);
    if (k <= 0 || (size_t)k >= n)
        return;
    while (k > 1 && out[k - 1] == '0' && out[k - 2] != '.')
        out[--k] = '\0';
}

void cost_charge(struct request *r, const struct usage *got, const struct conf_price *price,
                 size_t sent_bytes, long events)
{
    struct usage u = *got;
    if (!u.seen) {
        cost_estimate(&u, sent_bytes, events);
        r->usage_estimated = true;
    }
    usage_add(&r->usage, &u);
    if (price) {
        r->priced = true;
        r->cost_usd += cost_of(price, &u);
    }
}

void cost_stream_comment(struct request *r)
{
    char cost[32], line[48];
    if (!r->priced)
        return;
    cost_format(cost, sizeof cost, r->cost_usd);
    int n = snprintf(line, sizeof line, ": cost_usd=%s\n\n", cost);
    request_stream_data(r, line, (size_t)n);
}
