/* settings: start-only settings noticed at reload, and the -t warnings. */
#include "daemon/settings.h"

#include <string.h>

#include "common/log.h"

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_listen(const struct conf *a, const struct conf *b)
{
    if (a->nlisten != b->nlisten)
        return false;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i], b->listen[i]) != 0)
            return false;
    return true;
}

/* Each upstream's connection cap sizes the worker's curl pools when they are made (at start). */
static unsigned report_connections(const struct conf *boot, const struct conf *next)
{
    unsigned n = 0, boot_max = 0;
    for (size_t i = 0; i < boot->nupstreams; i++)
        if (boot->upstreams[i].max_connections > boot_max)
            boot_max = boot->upstreams[i].max_connections;
    for (size_t i = 0; i < next->nupstreams; i++) {
        const struct conf_upstream *u = &next->upstreams[i];
        const struct conf_upstream *was = conf_find_upstream(boot, u->name);
        if (was ? was->max_connections == u->max_connections : u->max_connections <= boot_max)
            continue;
        log_warn("reload: upstreams[%s].max_connections: %u takes effect at restart (the "
                 "connection pools were sized at start for %u)", u->name, u->max_connections,
                 was ? was->max_connections : boot_max);
        n++;
    }
    return n;
}

unsigned settings_reload_report(const struct conf *boot, const struct conf *next,
                                unsigned running, unsigned next_workers, bool inherited)
{
    unsigned n = 0;
    if (next_workers != running) {
        log_warn("reload: workers: %u%s takes effect at restart (running with %u)",
                 next_workers, next->workers ? "" : " (auto)", running);
        n++;
    }
    if (inherited && !same_listen(boot, next)) {
        log_warn("reload: listen: not applied: the listening sockets come from systemd "
                 "(change llmux.socket instead)");
        n++;
    }
    if (!same_string(boot->tracing.endpoint, next->tracing.endpoint)) {
        /* the exporter thread and its queue are made at start, for the endpoint then */
        log_warn("reload: tracing.endpoint (and its headers, service_name, batch and queue "
                 "sizes) take effect at restart");
        n++;
    }
    return n + report_connections(boot, next);
}

static bool loopback_only(const struct conf *c)
{
    for (size_t i = 0; i < c->nlisten; i++) {
        const char *a = c->listen[i];
        if (strncmp(a, "unix:", 5) != 0 && strncmp(a, "127.", 4) != 0 &&
            strncmp(a, "localhost:", 10) != 0 && strncmp(a, "[::1]:", 6) != 0)
            return false;
    }
    return true;
}

/* Whether some key or model has a budget. */
static bool has_budget(const struct conf *c)
{
    for (size_t i = 0; i < c->nkeys; i++)
        if (c->keys[i].budget.usd > 0)
            return true;
    for (size_t i = 0; i < c->nmodels; i++)
        if (c->models[i].budget.usd > 0)
            return true;
    return false;
}

unsigned settings_check_report(const struct conf *c, FILE *f)
{
    unsigned n = 0;
    if (c->nkeys == 0) {
        /* Always said: a loopback address can still be reached through a local proxy, and
         * systemd's socket unit may listen elsewhere than listen: says. */
        if (loopback_only(c))
            fprintf(f, "llmuxd: warning: no keys are configured: any local process may use "
                       "the upstreams through the gateway (add keys: before exposing it)\n");
        else
            fprintf(f, "llmuxd: warning: no keys are configured and listen: is not loopback "
                       "only: anyone who can reach it may use the upstreams (add keys:)\n");
        n++;
    }
    if (c->nmodels == 0) {
        fprintf(f, "llmuxd: warning: no models are configured: every request will be 404\n");
        n++;
    }
    if (c->nprices == 0 && has_budget(c)) {
        fprintf(f, "llmuxd: warning: budgets are configured but prices: is empty: every "
                   "answer costs 0, so no budget is ever spent\n");
        n++;
    }
    return n;
}
