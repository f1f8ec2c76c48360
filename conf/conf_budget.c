/* conf_budget: the `budget:` mapping of a key or a model entry — a spend ceiling in USD
 * (more than 0, at most CONF_BUDGET_USD_MAX) over a fixed UTC window (default 30d). */
#include <stdio.h>

#include "conf/conf_internal.h"

static int field_usd(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base)
{
    static const char want[] = "an amount in USD above 0, at most 1e+06 (like 50)";
    double *usd = FIELD_AT(base, f->off);
    if (conf_field_decimal(x, v, path, CONF_BUDGET_USD_MAX, want, usd) < 0)
        return -1;
    if (*usd <= 0)
        return conf_fail(x, v, path, "expected %s, got 0", want);
    return 0;
}

#define B(member) offsetof(struct conf_budget, member)

static const struct field budget_fields[] = {
    {"usd", field_usd, B(usd), 0, 0, true, NULL, 0},
    {"window", conf_field_budget_window, B(window), 0, 0, false, NULL, 0},
};

int conf_field_budget(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    struct conf_budget *b = FIELD_AT(base, f->off);
    const struct field section = {"budget", NULL, 0, 0, 0, false, FIELDS(budget_fields)};
    b->window = BUDGET_30D;
    return conf_field_section(x, v, path, &section, b);
}
