/* metrics_labels: labelled counters. Each name (a model/upstream pair, a model, a key, a
 * key/model pair) gets a process-wide id the first time a config names it; every worker has a
 * stripe of counters per id, in fixed-size chunks that are never moved or freed, so a worker
 * writes and a scrape reads without a lock. A snapshot only maps its entries to ids. */
#include "daemon/metrics_labels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define CHUNK 64                    /* ids per chunk */
#define MAX_CHUNKS 1024             /* so at most 65536 names per dimension */
#define ID_NONE UINT32_MAX

enum dim { DIM_PAIR, DIM_MODEL, DIM_KEY, DIM_KEYMODEL, DIM_COUNT };

struct pair_counters {
    uint64_t events[PAIR_EVENT_COUNT];
    struct histogram latency;
    uint64_t outcomes[OUTCOME_COUNT];
};
struct model_counters {
    struct histogram latency;
    uint64_t no_upstream[OUTCOME_COUNT];    /* ended before any target was tried */
};
struct key_counters {
    uint64_t limited[KEY_LIMIT_COUNT];
};
struct km_counters {
    uint64_t prompt, completion, cache_read, cache_write;
    uint64_t nano_usd;              /* 1e-9 USD: integer, so workers add without a lock */
    uint64_t estimated;             /* requests charged by estimate */
};

static const size_t dim_size[DIM_COUNT] = {
    sizeof(struct pair_counters), sizeof(struct model_counters), sizeof(struct key_counters),
    sizeof(struct km_counters),
};
static const char *const dim_name[DIM_COUNT] = {"targets", "models", "keys", "key/model pairs"};
static const char *const limit_names[KEY_LIMIT_COUNT] = {"rpm", "tpm", "concurrency",
                                                         "budget"};
static const char *const event_names[PAIR_EVENT_COUNT] = {
    "upstream_attempts_total", "upstream_retries_total", "upstream_fallbacks_total",
    "upstream_failures_total",
};
static const char *const event_help[PAIR_EVENT_COUNT] = {
    "Upstream attempts made.", "Retries on the same target.",
    "Moves to another target after a failure.", "Failed upstream attempts.",
};

/* Name → id, for one dimension; main thread only (open addressing, grown at half full). */
struct names {
    char **key;
    uint32_t *id;
    size_t cap, n;
};

struct metrics_registry {
    unsigned nworkers;
    struct names names[DIM_COUNT];
    void **chunks[DIM_COUNT];       /* [worker * MAX_CHUNKS + chunk], published atomically */
    bool full_warned[DIM_COUNT];
};

/* A snapshot's view: its entries' ids, and its per-target log limiter. c->ext. */
struct label_index {
    struct metrics_registry *reg;
    size_t npairs;
    uint32_t *pair_id;              /* [local pair] */
    uint32_t *pair_model;           /* [local pair] → model index */
    const char **pair_upstream;     /* [local pair] → upstream name (in the conf) */
    uint32_t *target_pair;          /* [model_toff[m] + t] → local pair */
    size_t *model_toff;
    uint32_t *model_id, *key_id;
    uint32_t *km_id;                /* [key * nmodels + m]; key = nkeys: no key */
    uint64_t *log_last_ms, *log_suppressed;     /* [local pair], atomics */
};

static uint64_t names_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int names_grow(struct names *t)
{
    size_t cap = t->cap ? t->cap * 2 : 64;
    char **key = calloc(cap, sizeof *key);
    uint32_t *id = calloc(cap, sizeof *id);
    if (!key || !id) {
        free(key);
        free(id);
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->key[i])
            continue;
        size_t j = names_hash(t->key[i]) & (cap - 1);
        while (key[j])
            j = (j + 1) & (cap - 1);
        key[j] = t->key[i];
        id[j] = t->id[i];
    }
    free(t->key);
    free(t->id);
    t->key = key;
    t->id = id;
    t->cap = cap;
    return 0;
}

static void chunk_publish(struct metrics_registry *reg, enum dim d, size_t slot, void *p)
{
    __atomic_store_n(&reg->chunks[d][slot], p, __ATOMIC_RELEASE);
}

/* A fresh id gets its chunk in every worker's stripe before anyone can see the id. */
static int names_new_id(struct metrics_registry *reg, enum dim d, uint32_t id)
{
    if (id % CHUNK)
        return 0;
    for (unsigned w = 0; w < reg->nworkers; w++) {
        size_t slot = (size_t)w * MAX_CHUNKS + id / CHUNK;
        if (reg->chunks[d][slot])
            continue;       /* left by an earlier try that ran out of memory */
        void *p = calloc(CHUNK, dim_size[d]);
        if (!p)
            return -1;      /* the chunks made so far stay published; freed with reg */
        chunk_publish(reg, d, slot, p);
    }
    return 0;
}

/* The id of name in dimension d, made on first sight; ID_NONE when the dimension is full. */
static uint32_t names_intern(struct metrics_registry *reg, enum dim d, const char *name)
{
    struct names *t = &reg->names[d];
    if ((t->n + 1) * 2 > t->cap && names_grow(t) < 0)
        return ID_NONE;
    size_t j = names_hash(name) & (t->cap - 1);
    for (; t->key[j]; j = (j + 1) & (t->cap - 1))
        if (!strcmp(t->key[j], name))
            return t->id[j];
    if (t->n >= (size_t)CHUNK * MAX_CHUNKS) {
        if (!reg->full_warned[d])
            log_warn("metrics: more than %d %s named over this process's life: new ones are "
                     "not counted in labelled metrics until a restart", CHUNK * MAX_CHUNKS,
                     dim_name[d]);
        reg->full_warned[d] = true;
        return ID_NONE;
    }
    uint32_t id = (uint32_t)t->n;
    char *copy = strdup(name);
    if (!copy || names_new_id(reg, d, id) < 0) {
        free(copy);
        return ID_NONE;
    }
    t->key[j] = copy;
    t->id[j] = id;
    t->n++;
    return id;
}

struct metrics_registry *metrics_registry_new(unsigned nworkers)
{
    struct metrics_registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return NULL;
    reg->nworkers = nworkers;
    for (int d = 0; d < DIM_COUNT; d++) {
        reg->chunks[d] = calloc((size_t)nworkers * MAX_CHUNKS, sizeof(void *));
        if (!reg->chunks[d]) {
            metrics_registry_free(reg);
            return NULL;
        }
    }
    return reg;
}

void metrics_registry_free(struct metrics_registry *reg)
{
    if (!reg)
        return;
    for (int d = 0; d < DIM_COUNT; d++) {
        for (size_t i = 0; reg->chunks[d] && i < (size_t)reg->nworkers * MAX_CHUNKS; i++)
            free(reg->chunks[d][i]);
        free(reg->chunks[d]);
        for (size_t i = 0; i < reg->names[d].cap; i++)
            free(reg->names[d].key[i]);
        free(reg->names[d].key);
        free(reg->names[d].id);
    }
    free(reg);
}

/* Counters of id in worker w's stripe of dimension d (NULL for ID_NONE). */
static uint64_t *counters(const struct metrics_registry *reg, enum dim d, unsigned w,
                          uint32_t id)
{
    if (id == ID_NONE || w >= reg->nworkers)
        return NULL;
    char *chunk = __atomic_load_n(&reg->chunks[d][(size_t)w * MAX_CHUNKS + id / CHUNK],
                                  __ATOMIC_ACQUIRE);
    return chunk ? (uint64_t *)(chunk + (size_t)(id % CHUNK) * dim_size[d]) : NULL;
}

static void index_free(void *p)
{
    struct label_index *x = p;
    if (!x)
        return;
    free(x->pair_id);
    free(x->pair_model);
    free(x->pair_upstream);
    free(x->target_pair);
    free(x->model_toff);
    free(x->model_id);
    free(x->key_id);
    free(x->km_id);
    free(x->log_last_ms);
    free(x->log_suppressed);
    free(x);
}

static uint32_t intern2(struct metrics_registry *reg, enum dim d, const char *a, const char *b)
{
    struct buf s = BUF_INIT;
    /* 0x1f (unit separator) can't be in a config name: they have no control characters. */
    uint32_t id = buf_printf(&s, "%s\x1f%s", a, b) == 0 ? names_intern(reg, d, s.data) : ID_NONE;
    buf_free(&s);
    return id;
}

/* Pairs: a model's targets on the same upstream (say two of its models) share one series. */
static void index_pairs(struct label_index *x, struct metrics_registry *reg,
                        const struct conf *c)
{
    size_t flat = 0;
    for (size_t m = 0; m < c->nmodels; m++) {
        const struct conf_model *model = &c->models[m];
        size_t first = x->npairs;
        x->model_toff[m] = flat;
        for (size_t t = 0; t < model->ntargets; t++, flat++) {
            const char *up = model->targets[t].upstream->name;
            size_t p = first;
            while (p < x->npairs && strcmp(x->pair_upstream[p], up) != 0)
                p++;
            if (p == x->npairs) {
                x->pair_id[p] = intern2(reg, DIM_PAIR, model->name, up);
                x->pair_model[p] = (uint32_t)m;
                x->pair_upstream[p] = up;
                x->npairs++;
            }
            x->target_pair[flat] = (uint32_t)p;
        }
    }
}

static void index_names(struct label_index *x, struct metrics_registry *reg,
                        const struct conf *c)
{
    for (size_t m = 0; m < c->nmodels; m++)
        x->model_id[m] = names_intern(reg, DIM_MODEL, c->models[m].name);
    for (size_t k = 0; k < c->nkeys; k++)
        x->key_id[k] = names_intern(reg, DIM_KEY, c->keys[k].name);
    for (size_t k = 0; k <= c->nkeys; k++)
        for (size_t m = 0; m < c->nmodels; m++)
            x->km_id[k * c->nmodels + m] = intern2(reg, DIM_KEYMODEL,
                                                   k < c->nkeys ? c->keys[k].name : "",
                                                   c->models[m].name);
}

int metrics_labels_attach(struct metrics_registry *reg, struct conf *c)
{
    size_t nt = 0;
    for (size_t m = 0; m < c->nmodels; m++)
        nt += c->models[m].ntargets;
    struct label_index *x = calloc(1, sizeof *x);
    if (!x || !reg)
        goto fail;
    x->reg = reg;
    size_t n1 = nt ? nt : 1, nm = c->nmodels ? c->nmodels : 1;
    x->pair_id = calloc(n1, sizeof *x->pair_id);
    x->pair_model = calloc(n1, sizeof *x->pair_model);
    x->pair_upstream = calloc(n1, sizeof *x->pair_upstream);
    x->target_pair = calloc(n1, sizeof *x->target_pair);
    x->log_last_ms = calloc(n1, sizeof *x->log_last_ms);
    x->log_suppressed = calloc(n1, sizeof *x->log_suppressed);
    x->model_toff = calloc(nm, sizeof *x->model_toff);
    x->model_id = calloc(nm, sizeof *x->model_id);
    x->key_id = calloc(c->nkeys ? c->nkeys : 1, sizeof *x->key_id);
    x->km_id = calloc((c->nkeys + 1) * nm, sizeof *x->km_id);
    if (!x->pair_id || !x->pair_model || !x->pair_upstream || !x->target_pair ||
        !x->log_last_ms || !x->log_suppressed || !x->model_toff || !x->model_id ||
        !x->key_id || !x->km_id)
        goto fail;
    index_pairs(x, reg, c);
    index_names(x, reg, c);
    c->ext = x;
    c->ext_free = index_free;
    return 0;
fail:
    index_free(x);
    log_error("metrics: out of memory: labelled metrics are off for this configuration");
    return -1;
}

static const struct label_index *index_of(const struct conf *c)
{
    return c && c->ext_free == index_free ? c->ext : NULL;
}

int metrics_labels_pair(const struct conf *c, const struct conf_model *m, size_t t)
{
    const struct label_index *x = index_of(c);
    if (!x || !m || t >= m->ntargets)
        return -1;
    return (int)x->target_pair[x->model_toff[m - c->models] + t];
}

static struct pair_counters *pair_of(const struct conf *c, unsigned w, int pair)
{
    const struct label_index *x = index_of(c);
    if (!x || pair < 0 || (size_t)pair >= x->npairs)
        return NULL;
    return (struct pair_counters *)counters(x->reg, DIM_PAIR, w, x->pair_id[pair]);
}

void metrics_labels_event(const struct conf *c, unsigned worker, int pair, enum pair_event e)
{
    struct pair_counters *p = pair_of(c, worker, pair);
    if (p)
        METRIC_INC(p->events[e]);
}

void metrics_labels_attempt_time(const struct conf *c, unsigned worker, int pair, double sec)
{
    struct pair_counters *p = pair_of(c, worker, pair);
    if (p)
        metrics_observe(&p->latency, sec);
}

void metrics_labels_request(const struct conf *c, unsigned worker, const struct conf_model *m,
                            int pair, enum outcome o, double sec)
{
    const struct label_index *x = index_of(c);
    if (!x || !m)
        return;
    struct model_counters *mc = (struct model_counters *)counters(x->reg, DIM_MODEL, worker,
                                                                  x->model_id[m - c->models]);
    struct pair_counters *p = pair_of(c, worker, pair);
    if (mc)
        metrics_observe(&mc->latency, sec);
    if (p)
        METRIC_INC(p->outcomes[o]);
    else if (mc)
        METRIC_INC(mc->no_upstream[o]);
}

static uint64_t positive(long n)
{
    return n > 0 ? (uint64_t)n : 0;
}

void metrics_labels_usage(const struct conf *c, unsigned worker, const struct conf_key *key,
                          const struct conf_model *m, const struct usage *u, double usd,
                          bool estimated)
{
    const struct label_index *x = index_of(c);
    if (!x || !m || (u->prompt <= 0 && u->completion <= 0 && !estimated))
        return;
    size_t k = key ? (size_t)(key - c->keys) : c->nkeys;
    struct km_counters *t = (struct km_counters *)counters(
        x->reg, DIM_KEYMODEL, worker, x->km_id[k * c->nmodels + (size_t)(m - c->models)]);
    if (!t)
        return;
    METRIC_ADD(t->prompt, positive(u->prompt));
    METRIC_ADD(t->completion, positive(u->completion));
    METRIC_ADD(t->cache_read, positive(u->cache_read));
    METRIC_ADD(t->cache_write, positive(u->cache_write));
    METRIC_ADD(t->nano_usd, (uint64_t)(usd > 0 ? usd * 1e9 + 0.5 : 0));
    if (estimated)
        METRIC_INC(t->estimated);
}

void metrics_labels_key_limited(const struct conf *c, unsigned worker,
                                const struct conf_key *key, enum key_limit l)
{
    const struct label_index *x = index_of(c);
    if (!x || !key)
        return;
    struct key_counters *k = (struct key_counters *)counters(x->reg, DIM_KEY, worker,
                                                             x->key_id[key - c->keys]);
    if (k)
        METRIC_INC(k->limited[l]);
}

bool metrics_labels_log_allowed(const struct conf *c, int pair, uint64_t now_ms,
                                uint64_t *suppressed)
{
    const struct label_index *x = index_of(c);
    *suppressed = 0;
    if (!x || pair < 0 || (size_t)pair >= x->npairs)
        return true;
    uint64_t *last = &x->log_last_ms[pair];
    uint64_t seen = __atomic_load_n(last, __ATOMIC_RELAXED);
    /* One worker wins the second; the others count what they held back. */
    if ((seen == 0 || now_ms - seen >= 1000) &&
        __atomic_compare_exchange_n(last, &seen, now_ms, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        *suppressed = __atomic_exchange_n(&x->log_suppressed[pair], 0, __ATOMIC_RELAXED);
        return true;
    }
    __atomic_add_fetch(&x->log_suppressed[pair], 1, __ATOMIC_RELAXED);
    return false;
}

/* ---- rendering --------------------------------------------------------------------------- */

/* Sum over the workers of id's counters in dimension d; out holds dim_size[d] bytes. */
static void sum_id(const struct metrics_registry *reg, enum dim d, uint32_t id, void *out)
{
    uint64_t *o = out;
    memset(out, 0, dim_size[d]);
    for (unsigned w = 0; w < reg->nworkers; w++) {
        const uint64_t *v = counters(reg, d, w, id);
        for (size_t i = 0; v && i < dim_size[d] / sizeof(uint64_t); i++)
            o[i] += __atomic_load_n(&v[i], __ATOMIC_RELAXED);
    }
}

void metrics_label(struct buf *out, const char *name, const char *value)
{
    buf_printf(out, "%s=\"", name);
    for (const char *s = value; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_append(out, "\\", 1);
        if (*s == '\n')
            buf_puts(out, "\\n");
        else
            buf_append(out, s, 1);
    }
    buf_append(out, "\"", 1);
}

static void pair_labels(struct buf *l, const struct conf *c, const struct label_index *x,
                        size_t p)
{
    buf_reset(l);
    metrics_label(l, "upstream", x->pair_upstream[p]);
    buf_append(l, ",", 1);
    metrics_label(l, "model", c->models[x->pair_model[p]].name);
}

static void render_pairs(struct buf *out, const struct conf *c, const struct label_index *x,
                         const struct pair_counters *sum)
{
    struct buf l = BUF_INIT;
    for (int e = 0; e < PAIR_EVENT_COUNT; e++) {
        metrics_header(out, event_names[e], "counter", event_help[e]);
        for (size_t p = 0; p < x->npairs; p++) {
            pair_labels(&l, c, x, p);
            buf_printf(out, "llmux_%s{%s} %lu\n", event_names[e], l.data,
                       (unsigned long)sum[p].events[e]);
        }
    }
    metrics_header(out, "upstream_duration_seconds", "histogram",
                   "Upstream attempt latency, by target.");
    for (size_t p = 0; p < x->npairs; p++) {
        pair_labels(&l, c, x, p);
        metrics_histogram_series(out, "upstream_duration_seconds", l.data, &sum[p].latency);
    }
    buf_free(&l);
}

/* Requests for a configured model, by the upstream that served them last ("" = none). */
static void render_models(struct buf *out, const struct conf *c, const struct label_index *x,
                          const struct pair_counters *psum, const struct model_counters *msum)
{
    struct buf l = BUF_INIT;
    metrics_header(out, "model_requests_total", "counter",
                   "Requests for a configured model, by upstream and outcome.");
    for (size_t m = 0; m < c->nmodels; m++) {
        for (size_t p = 0; p < x->npairs; p++) {
            if (x->pair_model[p] != m)
                continue;
            pair_labels(&l, c, x, p);
            for (int o = 0; o < OUTCOME_COUNT; o++)
                buf_printf(out, "llmux_model_requests_total{%s,outcome=\"%s\"} %lu\n", l.data,
                           outcome_name((enum outcome)o), (unsigned long)psum[p].outcomes[o]);
        }
        buf_reset(&l);
        metrics_label(&l, "model", c->models[m].name);
        for (int o = 0; o < OUTCOME_COUNT; o++)
            if (msum[m].no_upstream[o])
                buf_printf(out, "llmux_model_requests_total{upstream=\"\",%s,outcome=\"%s\"} "
                           "%lu\n", l.data, outcome_name((enum outcome)o),
                           (unsigned long)msum[m].no_upstream[o]);
    }
    metrics_header(out, "model_request_duration_seconds", "histogram",
                   "Latency of requests for a configured model, request to last byte.");
    for (size_t m = 0; m < c->nmodels; m++) {
        buf_reset(&l);
        metrics_label(&l, "model", c->models[m].name);
        metrics_histogram_series(out, "model_request_duration_seconds", l.data,
                                 &msum[m].latency);
    }
    buf_free(&l);
}

/* The usage families, each over the key × model pairs that saw usage. */
enum km_family { KM_TOKENS, KM_COST, KM_ESTIMATED, KM_FAMILY_COUNT };

static void render_km_pair(struct buf *out, const char *l, const struct km_counters *t,
                           enum km_family f)
{
    static const char *const kinds[] = {"prompt", "completion", "cache_read", "cache_write"};
    const uint64_t tok[] = {t->prompt, t->completion, t->cache_read, t->cache_write};
    if (f == KM_COST)
        buf_printf(out, "llmux_cost_usd_total{%s} %.9f\n", l, (double)t->nano_usd / 1e9);
    else if (f == KM_ESTIMATED && t->estimated)
        buf_printf(out, "llmux_usage_estimated_total{%s} %lu\n", l,
                   (unsigned long)t->estimated);
    for (size_t i = 0; f == KM_TOKENS && i < sizeof tok / sizeof tok[0]; i++)
        if (i < 2 || tok[i])
            buf_printf(out, "llmux_tokens_total{%s,kind=\"%s\"} %lu\n", l, kinds[i],
                       (unsigned long)tok[i]);
}

static void render_usage(struct buf *out, const struct conf *c, const struct label_index *x)
{
    static const char *const name[KM_FAMILY_COUNT] = {
        "tokens_total", "cost_usd_total", "usage_estimated_total",
    };
    static const char *const help[KM_FAMILY_COUNT] = {
        ("Tokens charged, by key (\"\" without keys), model and kind (prompt includes "
         "cache_read and cache_write)."),
        "USD charged by the price table, by key and model.",
        "Requests charged by estimate (the upstream gave no usage), by key and model.",
    };
    struct buf l = BUF_INIT;
    for (int f = 0; f < KM_FAMILY_COUNT; f++) {
        metrics_header(out, name[f], "counter", help[f]);
        for (size_t k = 0; k <= c->nkeys; k++) {
            for (size_t m = 0; m < c->nmodels; m++) {
                struct km_counters t;
                sum_id(x->reg, DIM_KEYMODEL, x->km_id[k * c->nmodels + m], &t);
                if (!t.prompt && !t.completion && !t.estimated)
                    continue;
                buf_reset(&l);
                metrics_label(&l, "key", k < c->nkeys ? c->keys[k].name : "");
                buf_append(&l, ",", 1);
                metrics_label(&l, "model", c->models[m].name);
                render_km_pair(out, l.data, &t, (enum km_family)f);
            }
        }
    }
    buf_free(&l);
}

/* Key families list only what happened: keys × models can be large. */
static void render_keys(struct buf *out, const struct conf *c, const struct label_index *x)
{
    struct buf l = BUF_INIT;
    render_usage(out, c, x);
    metrics_header(out, "key_limited_total", "counter",
                   "Requests refused by a key's limit (429), by key and limit.");
    for (size_t k = 0; k < c->nkeys; k++) {
        struct key_counters kc;
        sum_id(x->reg, DIM_KEY, x->key_id[k], &kc);
        buf_reset(&l);
        metrics_label(&l, "key", c->keys[k].name);
        for (int i = 0; i < KEY_LIMIT_COUNT; i++)
            if (kc.limited[i])
                buf_printf(out, "llmux_key_limited_total{%s,limit=\"%s\"} %lu\n", l.data,
                           limit_names[i], (unsigned long)kc.limited[i]);
    }
    buf_free(&l);
}

void metrics_labels_render(struct buf *out, const struct conf *c)
{
    const struct label_index *x = index_of(c);
    if (!x)
        return;
    struct pair_counters *psum = calloc(x->npairs ? x->npairs : 1, sizeof *psum);
    struct model_counters *msum = calloc(c->nmodels ? c->nmodels : 1, sizeof *msum);
    if (psum && msum) {
        for (size_t p = 0; p < x->npairs; p++)
            sum_id(x->reg, DIM_PAIR, x->pair_id[p], &psum[p]);
        for (size_t m = 0; m < c->nmodels; m++)
            sum_id(x->reg, DIM_MODEL, x->model_id[m], &msum[m]);
        render_models(out, c, x, psum, msum);
        render_pairs(out, c, x, psum);
        render_keys(out, c, x);
    }
    free(psum);
    free(msum);
}
