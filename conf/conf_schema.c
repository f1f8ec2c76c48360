/* conf_schema: the shape of llmux.yaml — every key, its type, range and checks — walked over the
 * YAML tree into struct conf. Tables say what a mapping may hold; cross-field checks run last. */
#include "conf/conf_internal.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A list of mappings into a calloc'd array of size-byte items, each set up by init first. */

static const char *where(const char *path)
{
    return *path ? path : "the top level";
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];

    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Keeps in *best the closest candidate within two edits of s: a typo, not another word. */
static void suggest(const char *s, const char *cand, const char **best, size_t *bestd)
{
    size_t d = edit_distance(s, cand);
    if (d <= 2 && d < *bestd && d < strlen(cand)) {
        *best = cand;
        *bestd = d;
    }
}

/* " (did you mean "x"?)" or "" */
static const char *hint(const char *best, char *out, size_t outlen)
{
    if (!best)
        return "";
    snprintf(out, outlen, " (did you mean \"%s\"?)", best);
    return out;
}

/* A duration as the file wrote it ("5m"), or for a default or a ${VAR} the value in its
 * largest exact unit, so messages speak the user's units rather than milliseconds. */
static const char *duration_text(const struct ynode *v, uint64_t ms, char *out, size_t outlen)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        {"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000},
    };
    if (v && v->kind == YNODE_SCALAR && !strchr(v->val, '$') && v->len < 32)
        return conf_quote(v->val, out, outlen);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (ms && ms % units[i].ms == 0) {
            snprintf(out, outlen, "%llu%s", (unsigned long long)(ms / units[i].ms),
                     units[i].unit);
            return out;
        }
    snprintf(out, outlen, "%llums", (unsigned long long)ms);
    return out;
}

/* Every key of m is a string, appears once, and is one of fields. */
static int check_keys(struct conf_ctx *x, const struct ynode *m, const char *path,
                      const struct field *fields, size_t n)
{
    char kpath[CONF_PATH_MAX], q[128], h[96];

    for (size_t i = 0; i + 1 < m->nkids; i += 2) {
        const struct ynode *k = m->kids[i];
        if (k->kind != YNODE_SCALAR)
            return conf_fail(x, k, path, "expected a string key, got %s", ynode_kind_name(k));
        conf_path_key(kpath, path, k->val);
        for (size_t j = 0; j < i; j += 2)
            if (!strcmp(m->kids[j]->val, k->val))
                return conf_fail(x, k, kpath, "duplicate key \"%s\" (first at line %d)",
                                 conf_quote(k->val, q, sizeof(q)), m->kids[j]->line);
        const char *best = NULL;
        size_t bestd = SIZE_MAX, f;
        for (f = 0; f < n && strcmp(fields[f].key, k->val); f++)
            suggest(k->val, fields[f].key, &best, &bestd);
        if (f == n)
            return conf_fail(x, k, kpath, "unknown key \"%s\" %s%s%s",
                             conf_quote(k->val, q, sizeof(q)), *path ? "in " : "at ",
                             where(path), hint(best, h, sizeof(h)));
    }
    return 0;
}

/* Fields are applied in table order, not file order, so a table can put what others refer to
 * (upstreams before models before keys) first. A key with no value keeps its default. */
static int walk_map(struct conf_ctx *x, const struct ynode *m, const char *path,
                    const struct field *fields, size_t n, void *base)
{
    char kpath[CONF_PATH_MAX];
    const struct ynode *at = m;

    if (!m || ynode_is_null(m))
        m = NULL;
    else if (m->kind != YNODE_MAP)
        return conf_fail(x, m, path, "expected a mapping, got %s", ynode_kind_name(m));
    if (m && check_keys(x, m, path, fields, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const struct field *f = &fields[i];
        const struct ynode *v = ynode_get(m, f->key);
        conf_path_key(kpath, path, f->key);
        if (!v || ynode_is_null(v)) {
            if (f->required)
                return conf_fail(x, v ? v : at, kpath, v ? "expected a value"
                                                        : "missing required key");
            continue;
        }
        if (f->parse(x, v, kpath, f, base) < 0)
            return -1;
    }
    return 0;
}

/* The array for list v, once v is checked to be a list of at least spec->min items. The
 * caller stores it in the snapshot before list_walk fills it, so a failure midway frees what
 * was set. */
static void *list_alloc(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct list_spec *spec)
{
    void *arr;

    if (v->kind != YNODE_SEQ) {
        conf_fail(x, v, path, "expected a list of %s, got %s", spec->what, ynode_kind_name(v));
        return NULL;
    }
    if (v->nkids < spec->min) {
        conf_fail(x, v, path, "expected a non-empty list of %s", spec->what);
        return NULL;
    }
    if (!(arr = calloc(v->nkids ? v->nkids : 1, spec->size)))
        conf_fail(x, v, path, "out of memory");
    return arr;
}

static int list_walk(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct list_spec *spec, void *arr)
{
    char ipath[CONF_PATH_MAX];

    for (size_t i = 0; i < v->nkids; i++) {
        void *item = FIELD_AT(arr, i * spec->size);
        conf_path_index(ipath, path, i);
        if (spec->init)
            spec->init(item);
        if (walk_map(x, v->kids[i], ipath, spec->fields, spec->nfields, item) < 0)
            return -1;
    }
    return 0;
}

int conf_list_parse(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct list_spec *spec, void **arr, size_t *n)
{
    if (v->kind == YNODE_SEQ && !v->nkids)
        return 0;               /* as if absent: NULL, 0 */
    if (!(*arr = list_alloc(x, v, path, spec)))
        return -1;
    *n = v->nkids;
    return list_walk(x, v, path, spec, *arr);
}

static int field_section(struct conf_ctx *x, const struct ynode *v, const char *path,
                         const struct field *f, void *base)
{
    return walk_map(x, v, path, f->sub, f->nsub, base);
}

int conf_field_section(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    return field_section(x, v, path, f, base);
}

static int field_target_upstream(struct conf_ctx *x, const struct ynode *v, const char *path,
                                 const struct field *f, void *base)
{
    struct conf_target *t = base;
    const struct conf *c = x->c;
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    char *s, q[128], h[96], names[256];

    if (conf_text(x, v, path, "an upstream name", &s) < 0)
        return -1;
    t->upstream = conf_find_upstream(c, s);
    if (!t->upstream) {
        size_t o = 0;
        for (size_t i = 0; i < c->nupstreams; i++) {
            suggest(s, c->upstreams[i].name, &best, &bestd);
            if (o < sizeof(names))
                o += (size_t)snprintf(names + o, sizeof(names) - o, "%s\"%s\"", i ? ", " : "",
                                      c->upstreams[i].name);
        }
        if (o >= sizeof(names))
            memcpy(names + sizeof(names) - 4, "...", 4);
        if (c->nupstreams)
            conf_fail(x, v, path, "unknown upstream \"%s\"%s; the upstreams are: %s",
                      conf_quote(s, q, sizeof(q)), hint(best, h, sizeof(h)), names);
        else
            conf_fail(x, v, path, "unknown upstream \"%s\" (no upstreams are configured)",
                      conf_quote(s, q, sizeof(q)));
    }
    free(s);
    return t->upstream ? 0 : -1;
}

static int field_key_models(struct conf_ctx *x, const struct ynode *v, const char *path,
                            const struct field *f, void *base)
{
    struct conf_key *k = base;
    char ipath[CONF_PATH_MAX], q[128], h[96];

    if (v->kind != YNODE_SEQ)
        return conf_fail(x, v, path, "expected a list of model names, got %s",
                         ynode_kind_name(v));
    if (!v->nkids)
        return conf_fail(x, v, path, "expected at least one model name (leave models out to "
                         "allow every model)");
    if (!(k->models = calloc(v->nkids, sizeof(*k->models))))
        return conf_fail(x, v, path, "out of memory");
    k->nmodels = v->nkids;
    for (size_t i = 0; i < v->nkids; i++) {
        const struct ynode *item = v->kids[i];
        conf_path_index(ipath, path, i);
        if (conf_text(x, item, ipath, "a model name", &k->models[i]) < 0)
            return -1;
        if (!conf_find_model(x->c, k->models[i])) {
            const char *best = NULL;
            size_t bestd = SIZE_MAX;
            for (size_t j = 0; j < x->c->nmodels; j++)
                suggest(k->models[i], x->c->models[j].name, &best, &bestd);
            return conf_fail(x, item, ipath, "unknown model \"%s\"%s",
                             conf_quote(k->models[i], q, sizeof(q)), hint(best, h, sizeof(h)));
        }
    }
    return 0;
}

/* Later duplicates of the "name" (or other string) member of list items, named at the node. */
static int check_unique(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const char *member, const char *what, const void *arr, size_t size,
                        size_t off, bool secret)
{
    char npath[CONF_PATH_MAX], ipath[CONF_PATH_MAX], q[128];

    for (size_t j = 1; j < v->nkids; j++) {
        const char *b = *(char *const *)((const char *)arr + j * size + off);
        for (size_t i = 0; i < j; i++) {
            const char *a = *(char *const *)((const char *)arr + i * size + off);
            if (!a || !b || strcmp(a, b))
                continue;
            const struct ynode *at = ynode_get(v->kids[j], member);
            conf_path_index(ipath, path, j);
            conf_path_key(npath, ipath, member);
            if (secret)
                return conf_fail(x, at, npath, "the same %s as %s[%zu] (%ss must be unique)",
                                 what, path, i, what);
            return conf_fail(x, at, npath, "duplicate %s \"%s\" (first at line %d)", what,
                             conf_quote(b, q, sizeof(q)), ynode_get(v->kids[i], member)->line);
        }
    }
    return 0;
}

/* Offsets of members in the structs the tables fill. */
#define C(member) offsetof(struct conf, member)
#define U(member) offsetof(struct conf_upstream, member)
#define M(member) offsetof(struct conf_model, member)
#define T(member) offsetof(struct conf_target, member)
#define K(member) offsetof(struct conf_key, member)

static const struct field upstream_timeout_fields[] = {
    {"connect", conf_field_duration, U(connect_ms), 1, 0, false, NULL, 0},
    {"first_byte", conf_field_duration, U(first_byte_ms), 0, 0, false, NULL, 0},
    {"idle", conf_field_duration, U(idle_ms), 0, 0, false, NULL, 0},
};

static const struct field upstream_fields[] = {
    {"name", conf_field_string, U(name), 0, 0, true, NULL, 0},
    {"provider", conf_field_provider, U(provider), 0, 0, false, NULL, 0},
    {"base_url", conf_field_base_url, U(base_url), 0, 0, true, NULL, 0},
    {"api_key", conf_field_secret, U(api_key), 0, 0, false, NULL, 0},
    {"api_key_file", conf_field_secret_file, U(api_key), 0, 0, false, NULL, 0},
    {"headers", conf_field_headers, 0, 0, 0, false, NULL, 0},
    {"max_connections", conf_field_count, U(max_connections), 1, UINT_MAX, false, NULL, 0},
    {"timeout", conf_field_duration, U(timeout_ms), 1, 0, false, NULL, 0},
    {"timeouts", field_section, 0, 0, 0, false, FIELDS(upstream_timeout_fields)},
    {"max_response_bytes", conf_field_size, U(max_response_bytes), 1, 0, false, NULL, 0},
    {"ca_file", conf_field_string, U(ca_file), 0, 0, false, NULL, 0},
    {"tls_verify", conf_field_bool, U(tls_verify), 0, 0, false, NULL, 0},
    {"http", conf_field_http, U(http), 0, 0, false, NULL, 0},
};

static void upstream_init(void *item)
{
    struct conf_upstream *u = item;
    u->provider = PROVIDER_OPENAI;
    u->max_connections = 512;
    u->timeout_ms = 120000;
    u->idle_ms = 60000;
    u->max_response_bytes = 64u << 20;
    u->tls_verify = true;
}

static int field_upstreams(struct conf_ctx *x, const struct ynode *v, const char *path,
                           const struct field *f, void *base)
{
    static const struct list_spec spec = {"upstreams", 0, sizeof(struct conf_upstream),
                                          FIELDS(upstream_fields), upstream_init};
    struct conf *c = base;

    if (v->kind == YNODE_SEQ && !v->nkids)
        return 0;               /* as if absent: NULL, 0 */
    if (!(c->upstreams = list_alloc(x, v, path, &spec)))
        return -1;
    c->nupstreams = v->nkids;
    if (list_walk(x, v, path, &spec, c->upstreams) < 0)
        return -1;
    return check_unique(x, v, path, "name", "upstream name", c->upstreams,
                        sizeof(*c->upstreams), U(name), false);
}

static void target_init(void *item)
{
    ((struct conf_target *)item)->weight = 1;
}

static const struct field target_fields[] = {
    {"upstream", field_target_upstream, 0, 0, 0, true, NULL, 0},
    {"model", conf_field_string, T(model), 0, 0, false, NULL, 0},
    {"weight", conf_field_count, T(weight), 1, 1000, false, NULL, 0},
};

static int field_targets(struct conf_ctx *x, const struct ynode *v, const char *path,
                         const struct field *f, void *base)
{
    static const struct list_spec spec = {"targets", 1, sizeof(struct conf_target),
                                          FIELDS(target_fields), target_init};
    struct conf_model *m = base;

    if (!(m->targets = list_alloc(x, v, path, &spec)))
        return -1;
    m->ntargets = v->nkids;
    return list_walk(x, v, path, &spec, m->targets);
}

static const struct field backoff_fields[] = {
    {"base", conf_field_duration, M(backoff_base_ms), 0, 0, false, NULL, 0},
    {"max", conf_field_duration, M(backoff_max_ms), 0, 0, false, NULL, 0},
};

static const struct field hedge_fields[] = {
    {"after", conf_field_duration, M(hedge_after_ms), 1, 0, true, NULL, 0},
    {"max", conf_field_count, M(hedge_max), 1, CONF_HEDGE_MAX, false, NULL, 0},
    {"min_after", conf_field_duration, M(hedge_min_after_ms), 0, 0, false, NULL, 0},
};

static const struct field model_fields[] = {
    {"name", conf_field_string, M(name), 0, 0, true, NULL, 0},
    {"strategy", conf_field_strategy, M(strategy), 0, 0, false, NULL, 0},
    {"retries", conf_field_count, M(retries), 0, 10, false, NULL, 0},
    {"default_max_tokens", conf_field_count, M(default_max_tokens), 1, 1000000, false, NULL, 0},
    {"backoff", field_section, 0, 0, 0, false, FIELDS(backoff_fields)},
    {"hedge", field_section, 0, 0, 0, false, FIELDS(hedge_fields)},
    {"targets", field_targets, 0, 0, 0, true, NULL, 0},
    {"budget", conf_field_budget, M(budget), 0, 0, false, NULL, 0},
};

static void model_init(void *item)
{
    struct conf_model *m = item;
    m->strategy = STRATEGY_WEIGHTED;
    m->retries = 2;
    m->backoff_base_ms = 100;
    m->backoff_max_ms = 2000;
    m->default_max_tokens = 4096;
    m->hedge_max = 1;
    m->hedge_min_after_ms = UINT64_MAX;     /* absent: the model's own `after` */
}

/* hedge.min_after defaults to after and may not exceed it (it only lowers the floor). */
static int check_hedge(struct conf_ctx *x, const struct ynode *item, const char *path, size_t i,
                       struct conf_model *m)
{
    char mpath[CONF_PATH_MAX], hpath[CONF_PATH_MAX];
    if (m->hedge_min_after_ms == UINT64_MAX) {
        m->hedge_min_after_ms = m->hedge_after_ms;
        return 0;
    }
    if (m->hedge_min_after_ms <= m->hedge_after_ms)
        return 0;
    const struct ynode *at = ynode_get(item, "hedge");
    conf_path_index(mpath, path, i);
    conf_path_key(hpath, mpath, "hedge");
    return conf_fail(x, at ? at : item, hpath, "min_after (%llums) must not exceed after "
                     "(%llums)", (unsigned long long)m->hedge_min_after_ms,
                     (unsigned long long)m->hedge_after_ms);
}

static int field_models(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    static const struct list_spec spec = {"models", 0, sizeof(struct conf_model),
                                          FIELDS(model_fields), model_init};
    struct conf *c = base;
    char mpath[CONF_PATH_MAX], bpath[CONF_PATH_MAX];

    if (v->kind == YNODE_SEQ && !v->nkids)
        return 0;               /* as if absent: NULL, 0 */
    if (!(c->models = list_alloc(x, v, path, &spec)))
        return -1;
    c->nmodels = v->nkids;
    if (list_walk(x, v, path, &spec, c->models) < 0)
        return -1;
    for (size_t i = 0; i < c->nmodels; i++) {
        if (check_hedge(x, v->kids[i], path, i, &c->models[i]) < 0)
            return -1;
        const struct conf_model *m = &c->models[i];
        if (m->backoff_base_ms <= m->backoff_max_ms)
            continue;
        const struct ynode *at = ynode_get(v->kids[i], "backoff");
        char b[64], mx[64];
        conf_path_index(mpath, path, i);
        conf_path_key(bpath, mpath, "backoff");
        return conf_fail(x, at ? at : v->kids[i], bpath, "base (%s) must not exceed max (%s)",
                         duration_text(ynode_get(at, "base"), m->backoff_base_ms, b, sizeof(b)),
                         duration_text(ynode_get(at, "max"), m->backoff_max_ms, mx, sizeof(mx)));
    }
    return check_unique(x, v, path, "name", "model name", c->models, sizeof(*c->models),
                        M(name), false);
}

static const struct field key_fields[] = {
    {"name", conf_field_string, K(name), 0, 0, true, NULL, 0},
    {"key", conf_field_secret, K(key), 1, 0, false, NULL, 0},   /* or key_file: see field_keys */
    {"key_file", conf_field_secret_file, K(key), 0, 0, false, NULL, 0},
    {"key_sha256", conf_field_sha256, K(key_sha256), 0, 0, false, NULL, 0},
    {"models", field_key_models, 0, 0, 0, false, NULL, 0},
    {"rpm", conf_field_count, K(rpm), 0, UINT_MAX, false, NULL, 0},
    {"tpm", conf_field_count, K(tpm), 0, UINT_MAX, false, NULL, 0},
    {"max_concurrency", conf_field_count, K(max_concurrency), 0, UINT_MAX, false, NULL, 0},
    {"budget", conf_field_budget, K(budget), 0, 0, false, NULL, 0},
    {"admin", conf_field_bool, K(admin), 0, 0, false, NULL, 0},
};

/* Each key has exactly one of key / key_sha256, and no two keys share a digest. */
static int check_key_ids(struct conf_ctx *x, const struct ynode *v, const char *path,
                         struct conf *c)
{
    char ipath[CONF_PATH_MAX];

    for (size_t i = 0; i < c->nkeys; i++) {
        struct conf_key *k = &c->keys[i];
        k->hashed = ynode_get(v->kids[i], "key_sha256") != NULL;
        c->hashed_keys |= k->hashed;
        conf_path_index(ipath, path, i);
        if (k->hashed == (k->key != NULL))
            return conf_fail(x, v->kids[i], ipath, "expected exactly one of key or key_sha256");
        for (size_t j = 0; k->hashed && j < i; j++)
            if (c->keys[j].hashed && !memcmp(c->keys[j].key_sha256, k->key_sha256, 32))
                return conf_fail(x, ynode_get(v->kids[i], "key_sha256"), ipath,
                                 "the same key_sha256 as %s[%zu] (keys must be unique)", path, j);
    }
    return 0;
}

static int field_keys(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    static const struct list_spec spec = {"keys", 0, sizeof(struct conf_key),
                                          FIELDS(key_fields), NULL};
    struct conf *c = base;

    if (v->kind == YNODE_SEQ && !v->nkids)
        return 0;               /* as if absent: NULL, 0 */
    if (!(c->keys = list_alloc(x, v, path, &spec)))
        return -1;
    c->nkeys = v->nkids;
    if (list_walk(x, v, path, &spec, c->keys) < 0)
        return -1;
    for (size_t i = 0; i < c->nkeys; i++) {
        if (c->keys[i].key || ynode_get(v->kids[i], "key_sha256"))
            continue;
        char ipath[CONF_PATH_MAX], kpath[CONF_PATH_MAX];
        conf_path_index(ipath, path, i);
        conf_path_key(kpath, ipath, "key");
        return conf_fail(x, v->kids[i], kpath, "missing required key (or key_file, or "
                         "key_sha256)");
    }
    if (check_unique(x, v, path, "name", "key name", c->keys, sizeof(*c->keys),
                     K(name), false) < 0 || check_key_ids(x, v, path, c) < 0)
        return -1;
    return check_unique(x, v, path, "key", "key", c->keys, sizeof(*c->keys),
                        K(key), true);
}

static const struct field limits_fields[] = {
    {"max_connections", conf_field_count, C(limits.max_connections), 1, UINT_MAX, false, NULL, 0},
    {"max_inflight", conf_field_count, C(limits.max_inflight), 1, UINT_MAX, false, NULL, 0},
    {"queue", conf_field_count, C(limits.queue), 0, UINT_MAX, false, NULL, 0},
    {"max_request_line", conf_field_size, C(limits.max_request_line), 1, 0, false, NULL, 0},
    {"max_header_bytes", conf_field_size, C(limits.max_header_bytes), 1, 0, false, NULL, 0},
    {"max_headers", conf_field_count, C(limits.max_headers), 1, UINT_MAX, false, NULL, 0},
    {"max_body_bytes", conf_field_size, C(limits.max_body_bytes), 1, 0, false, NULL, 0},
    {"header_timeout", conf_field_duration, C(limits.header_timeout_ms), 1, 0, false, NULL, 0},
    {"body_timeout", conf_field_duration, C(limits.body_timeout_ms), 1, 0, false, NULL, 0},
    {"idle_timeout", conf_field_duration, C(limits.idle_timeout_ms), 1, 0, false, NULL, 0},
    {"send_timeout", conf_field_duration, C(limits.send_timeout_ms), 1, 0, false, NULL, 0},
    {"stream_high_water", conf_field_size, C(limits.stream_high_water), 1, 0, false, NULL, 0},
    {"stream_low_water", conf_field_size, C(limits.stream_low_water), 1, 0, false, NULL, 0},
    {"max_memory", conf_field_size_auto, C(limits.max_memory), 1, 0, false, NULL, 0},
};

static const struct field timeouts_fields[] = {
    {"default", conf_field_duration, C(timeouts.default_ms), 1, 0, false, NULL, 0},
    {"max", conf_field_duration, C(timeouts.max_ms), 1, 0, false, NULL, 0},
    {"connect", conf_field_duration, C(timeouts.connect_ms), 1, 0, false, NULL, 0},
};

static const struct field health_fields[] = {
    {"failures", conf_field_count, C(health.failures), 1, UINT_MAX, false, NULL, 0},
    {"cooldown", conf_field_duration, C(health.cooldown_ms), 1, 0, false, NULL, 0},
};

static const struct field gather_fields[] = {
    {"max_items", conf_field_count, C(gather.max_items), 1, UINT_MAX, false, NULL, 0},
    {"max_concurrency", conf_field_count, C(gather.max_concurrency), 1, UINT_MAX, false, NULL, 0},
    {"max_result_bytes", conf_field_size, C(gather.max_result_bytes), 1, 0, false, NULL, 0},
};

static const struct field jobs_fields[] = {
    {"dir", conf_field_string, C(jobs.dir), 0, 0, false, NULL, 0},
    {"max_queued", conf_field_count, C(jobs.max_queued), 1, UINT_MAX, false, NULL, 0},
    {"retention", conf_field_duration, C(jobs.retention_ms), 1, 0, false, NULL, 0},
    {"workers", conf_field_count, C(jobs.workers), 1, UINT_MAX, false, NULL, 0},
    {"max_result_bytes", conf_field_size, C(jobs.max_result_bytes), 1, 0, false, NULL, 0},
};

static const struct field state_fields[] = {
    {"backend", conf_field_backend, C(state.backend), 0, 0, false, NULL, 0},
    {"redis", conf_field_redis, C(state.redis), 0, 0, false, NULL, 0},
    {"on_error", conf_field_on_error, C(state.fail_closed), 0, 0, false, NULL, 0},
    {"timeout", conf_field_duration, C(state.timeout_ms), 1, 0, false, NULL, 0},
};

static const struct field logging_fields[] = {
    {"level", conf_field_level, C(log.level), 0, 0, false, NULL, 0},
    {"format", conf_field_format, C(log.format), 0, 0, false, NULL, 0},
    {"access", conf_field_bool, C(log.access), 0, 0, false, NULL, 0},
};

/* Order matters: targets look up upstreams, prices and keys look up models. */
static const struct field top_fields[] = {
    {"listen", conf_field_listen, 0, 0, 0, false, NULL, 0},
    {"workers", conf_field_workers, C(workers), 0, 0, false, NULL, 0},
    {"limits", field_section, 0, 0, 0, false, FIELDS(limits_fields)},
    {"timeouts", field_section, 0, 0, 0, false, FIELDS(timeouts_fields)},
    {"upstreams", field_upstreams, 0, 0, 0, false, NULL, 0},
    {"models", field_models, 0, 0, 0, false, NULL, 0},
    {"prices", conf_field_prices, 0, 0, 0, false, NULL, 0},
    {"health", field_section, 0, 0, 0, false, FIELDS(health_fields)},
    {"keys", field_keys, 0, 0, 0, false, NULL, 0},
    {"gather", field_section, 0, 0, 0, false, FIELDS(gather_fields)},
    {"jobs", field_section, 0, 0, 0, false, FIELDS(jobs_fields)},
    {"state", field_section, 0, 0, 0, false, FIELDS(state_fields)},
    {"log", field_section, 0, 0, 0, false, FIELDS(logging_fields)},
    {"tracing", conf_field_tracing, 0, 0, 0, false, NULL, 0},
    {"shutdown_grace", conf_field_duration, C(shutdown_grace_ms), 0, 0, false, NULL, 0},
};

/* The node to blame for a cross-field error: the key's value if written, else its section. */
static const struct ynode *blame(const struct ynode *root, const char *section, const char *key)
{
    const struct ynode *s = ynode_get(root, section), *v = ynode_get(s, key);
    return v ? v : s ? s : root;
}

static int cross_check(struct conf_ctx *x, const struct ynode *root)
{
    const struct conf *c = x->c;
    const struct ynode *t = ynode_get(root, "timeouts");
    char d[64], m[64];

    if (c->timeouts.default_ms > c->timeouts.max_ms)
        return conf_fail(x, blame(root, "timeouts", "default"), "timeouts.default",
                         "%s must not exceed timeouts.max (%s)",
                         duration_text(ynode_get(t, "default"), c->timeouts.default_ms, d,
                                       sizeof(d)),
                         duration_text(ynode_get(t, "max"), c->timeouts.max_ms, m, sizeof(m)));
    if (c->limits.max_memory == 0) {
        x->c->limits.max_memory_auto = true;
        x->c->limits.max_memory = conf_memory_auto();
    }
    if (c->limits.stream_low_water >= c->limits.stream_high_water)
        return conf_fail(x, blame(root, "limits", "stream_low_water"), "limits.stream_low_water",
                         "%llu bytes must be below limits.stream_high_water (%llu bytes)",
                         (unsigned long long)c->limits.stream_low_water,
                         (unsigned long long)c->limits.stream_high_water);
    return 0;
}

int conf_schema_apply(struct conf_ctx *x, const struct ynode *root)
{
    if (root && !ynode_is_null(root) && root->kind != YNODE_MAP)
        return conf_fail(x, root, NULL, "expected a mapping of settings at the top level, "
                         "got %s", ynode_kind_name(root));
    if (walk_map(x, root, "", FIELDS(top_fields), x->c) < 0)
        return -1;
    const struct ynode *limits = ynode_get(root, "limits");
    x->c->limits.fds_explicit = ynode_get(limits, "max_connections") ||
                                ynode_get(limits, "max_inflight");
    return cross_check(x, root);
}
