/* conf_price: the `prices:` table — USD per token kind for upstream model names matched by
 * globs — its validation (no two equally specific globs may claim one name) and each target's
 * price, resolved once at load so a request never searches the table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf_internal.h"

#define PRICE_GLOB_MAX 200      /* bytes; bounds the overlap check's table */
#define PRICE_MAX 1e6           /* USD per `per` tokens: anything above is a typo */

bool conf_glob_match(const char *g, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*g == '*') {
            star = g++;
            resume = s;
        } else if (*g && (*g == '?' || *g == *s)) {
            g++;
            s++;
        } else if (star) {
            g = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*g == '*')
        g++;
    return *g == '\0';
}

size_t conf_glob_specificity(const char *g)
{
    size_t n = 0;
    for (; *g; g++)
        n += *g != '*' && *g != '?';
    return n;
}

/* Is there a string both a[i..] and b[j..] match? memo: 0 unknown, 1 no, 2 yes. */
static bool overlap_at(const char *a, size_t na, const char *b, size_t nb, size_t i, size_t j,
                       unsigned char *memo)
{
    unsigned char *m = &memo[i * (nb + 1) + j];
    if (*m)
        return *m == 2;
    bool r;
    if (i < na && a[i] == '*')
        r = overlap_at(a, na, b, nb, i + 1, j, memo) ||
            (j < nb && overlap_at(a, na, b, nb, i, j + 1, memo));
    else if (j < nb && b[j] == '*')
        r = overlap_at(a, na, b, nb, i, j + 1, memo) ||
            (i < na && overlap_at(a, na, b, nb, i + 1, j, memo));
    else if (i == na || j == nb)
        r = i == na && j == nb;
    else
        r = (a[i] == '?' || b[j] == '?' || a[i] == b[j]) &&
            overlap_at(a, na, b, nb, i + 1, j + 1, memo);
    *m = r ? 2 : 1;
    return r;
}

bool conf_glob_overlap(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    unsigned char *memo = calloc((na + 1) * (nb + 1), 1);
    if (!memo)
        return true;        /* can't tell: the caller refuses, which is the safe side */
    bool r = overlap_at(a, na, b, nb, 0, 0, memo);
    free(memo);
    return r;
}

const struct conf_price *conf_find_price(const struct conf *c, const char *model)
{
    const struct conf_price *best = NULL;
    size_t best_spec = 0;
    for (size_t i = 0; c && model && i < c->nprices; i++) {
        const struct conf_price *p = &c->prices[i];
        size_t spec = conf_glob_specificity(p->model);
        if ((!best || spec > best_spec) && conf_glob_match(p->model, model)) {
            best = p;
            best_spec = spec;
        }
    }
    return best;
}

int conf_field_decimal(struct conf_ctx *x, const struct ynode *v, const char *path,
                       double max, const char *want, double *out)
{
    char *s, *end, q[128];
    if (conf_text(x, v, path, want, &s) < 0)
        return -1;
    double d = strtod(s, &end);
    /* strtod also takes hex, inf and nan: none is a plain decimal */
    bool bad = !*s || *end || !isfinite(d) || d < 0 || d > max || strpbrk(s, "xX");
    if (bad)
        conf_fail(x, v, path, "expected %s, got \"%s\"", want, conf_quote(s, q, sizeof(q)));
    else
        *out = d;
    free(s);
    return bad ? -1 : 0;
}

/* A price: a plain decimal number of USD, 0 or more. */
static int field_amount(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    return conf_field_decimal(x, v, path, PRICE_MAX,
                              "a price in USD from 0 to 1e+06 (like 2.50)",
                              (double *)FIELD_AT(base, f->off));
}

static int field_per(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base)
{
    char *s, q[128];
    if (conf_text(x, v, path, "1M or 1K", &s) < 0)
        return -1;
    struct conf_price *p = base;
    int rc = 0;
    if (!strcasecmp(s, "1M") || !strcmp(s, "1000000"))
        p->per = 1000000;
    else if (!strcasecmp(s, "1K") || !strcmp(s, "1000"))
        p->per = 1000;
    else
        rc = conf_fail(x, v, path, "expected 1M or 1K (tokens the prices are for), got \"%s\"",
                       conf_quote(s, q, sizeof(q)));
    free(s);
    return rc;
}

static int field_glob(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    struct conf_price *p = base;
    if (conf_field_string(x, v, path, f, base) < 0)
        return -1;
    if (strlen(p->model) > PRICE_GLOB_MAX)
        return conf_fail(x, v, path, "a model glob of at most %d bytes", PRICE_GLOB_MAX);
    return 0;
}

static bool ynode_is_null_or_absent(const struct ynode *n)
{
    return !n || ynode_is_null(n);
}

#define P(member) offsetof(struct conf_price, member)

static const struct field price_fields[] = {
    {"model", field_glob, P(model), 0, 0, true, NULL, 0},
    {"input", field_amount, P(input), 0, 0, true, NULL, 0},
    {"output", field_amount, P(output), 0, 0, true, NULL, 0},
    {"cache_read", field_amount, P(cache_read), 0, 0, false, NULL, 0},
    {"cache_write", field_amount, P(cache_write), 0, 0, false, NULL, 0},
    {"per", field_per, 0, 0, 0, false, NULL, 0},
};

static void price_init(void *item)
{
    ((struct conf_price *)item)->per = 1000000;
}

/* Two equally specific globs that some name matches both would make the price depend on the
 * table's order: refused, naming both rows. */
static int prices_check(struct conf_ctx *x, const struct ynode *v, const char *path)
{
    const struct conf *c = x->c;
    char ipath[CONF_PATH_MAX], mpath[CONF_PATH_MAX], qa[128], qb[128];
    for (size_t j = 1; j < c->nprices; j++) {
        const char *b = c->prices[j].model;
        for (size_t i = 0; i < j; i++) {
            const char *a = c->prices[i].model;
            if (conf_glob_specificity(a) != conf_glob_specificity(b) || !conf_glob_overlap(a, b))
                continue;
            conf_path_index(ipath, path, j);
            conf_path_key(mpath, ipath, "model");
            return conf_fail(x, ynode_get(v->kids[j], "model"), mpath,
                             "\"%s\" overlaps %s[%zu] \"%s\" with the same specificity (some "
                             "model name matches both); make one more specific",
                             conf_quote(b, qb, sizeof(qb)), path, i,
                             conf_quote(a, qa, sizeof(qa)));
        }
    }
    return 0;
}

int conf_field_prices(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    static const struct list_spec spec = {"prices", 0, sizeof(struct conf_price),
                                          FIELDS(price_fields), price_init};
    struct conf *c = base;
    if (conf_list_parse(x, v, path, &spec, (void **)&c->prices, &c->nprices) < 0)
        return -1;
    for (size_t i = 0; i < c->nprices; i++) {
        struct conf_price *p = &c->prices[i];
        const struct ynode *item = v->kids[i];
        /* unpriced cache tokens cost what any prompt token costs */
        if (ynode_is_null_or_absent(ynode_get(item, "cache_read")))
            p->cache_read = p->input;
        if (ynode_is_null_or_absent(ynode_get(item, "cache_write")))
            p->cache_write = p->input;
    }
    if (prices_check(x, v, path) < 0)
        return -1;
    for (size_t m = 0; m < c->nmodels; m++) {
        struct conf_model *cm = &c->models[m];
        for (size_t t = 0; t < cm->ntargets; t++) {
            struct conf_target *tg = &cm->targets[t];
            tg->price = conf_find_price(c, tg->model ? tg->model : cm->name);
        }
    }
    return 0;
}
