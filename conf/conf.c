/* conf: loading entry points, defaults, the snapshot's lifetime (atomic refcount) and lookups.
 * The YAML tree is in conf_tree.c and the schema (keys, types, checks) in conf_schema.c. */
#include "conf/conf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "conf/conf_internal.h"

#define CONF_FILE_MAX (16u << 20)   /* a config larger than this is a mistake */

static int conf_defaults(struct conf *c);
static void conf_free(struct conf *c);

struct conf *conf_load(const char *path, char *err, size_t errlen)
{
    struct buf text = BUF_INIT;
    struct conf *c = NULL;
    char chunk[65536];
    size_t n;

    if (err && errlen)
        err[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (text.len + n > CONF_FILE_MAX || buf_append(&text, chunk, n) < 0) {
            if (err && errlen)
                snprintf(err, errlen, "%s: larger than %u MiB or out of memory", path,
                         CONF_FILE_MAX >> 20);
            goto out;
        }
    }
    if (ferror(f)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    c = conf_load_string(text.data ? text.data : "", text.len, path, err, errlen);
out:
    fclose(f);
    buf_free(&text);
    return c;
}

struct conf *conf_load_string(const char *yaml, size_t len, const char *name,
                              char *err, size_t errlen)
{
    struct conf_ctx x = {.file = name ? name : "<string>", .err = err, .errlen = errlen};
    struct ynode *root = NULL;

    if (err && errlen)
        err[0] = '\0';
    struct conf *c = calloc(1, sizeof(*c));
    x.c = c;
    if (!c || conf_defaults(c) < 0 || !(c->path = strdup(x.file))) {
        conf_fail(&x, NULL, NULL, "out of memory");
        goto fail;
    }
    if (ytree_parse(&x, yaml, len, &root) < 0 || conf_schema_apply(&x, root) < 0)
        goto fail;
    ytree_free(root);
    __atomic_store_n(&c->refs, 1, __ATOMIC_RELEASE);
    return c;
fail:
    ytree_free(root);
    conf_free(c);
    return NULL;
}

struct conf *conf_ref(struct conf *c)
{
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void conf_unref(struct conf *c)
{
    /* Release so this thread's reads finish before the free; acquire so the freeing thread
     * sees every other thread's last use. */
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        conf_free(c);
}

const struct conf_model *conf_find_model(const struct conf *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->nmodels; i++)
        if (c->models[i].name && !strcmp(c->models[i].name, name))
            return &c->models[i];
    return NULL;
}

const struct conf_upstream *conf_find_upstream(const struct conf *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->nupstreams; i++)
        if (c->upstreams[i].name && !strcmp(c->upstreams[i].name, name))
            return &c->upstreams[i];
    return NULL;
}

/* Every configured key is compared over its full length whatever matched before, and the
 * winner is picked with a mask, so the time depends on key lengths only, not on content. */
const struct conf_key *conf_find_key(const struct conf *c, const char *key, size_t len)
{
    uintptr_t found = 0;

    if (!c || !key || !len)
        return NULL;
    for (size_t i = 0; i < c->nkeys; i++) {
        const char *k = c->keys[i].key;
        if (!k)
            continue;           /* key_sha256: see conf_find_key_sha256 */
        size_t klen = strlen(k);
        unsigned char diff = klen != len;
        for (size_t j = 0; j < klen; j++)
            diff |= (unsigned char)(k[j] ^ (j < len ? key[j] : 0));
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)(diff == 0);
        found = (found & ~mask) | ((uintptr_t)&c->keys[i] & mask);
    }
    return (const struct conf_key *)found;
}

const struct conf_key *conf_find_key_sha256(const struct conf *c, const unsigned char d[32])
{
    uintptr_t found = 0;

    for (size_t i = 0; c && i < c->nkeys; i++) {
        unsigned char diff = !c->keys[i].hashed;
        for (size_t j = 0; j < 32; j++)
            diff |= (unsigned char)(c->keys[i].key_sha256[j] ^ d[j]);
        uintptr_t mask = (uintptr_t)0 - (uintptr_t)(diff == 0);
        found = (found & ~mask) | ((uintptr_t)&c->keys[i] & mask);
    }
    return (const struct conf_key *)found;
}

bool conf_key_allows_model(const struct conf_key *k, const char *model)
{
    if (!k || !k->models)
        return true;
    for (size_t i = 0; model && i < k->nmodels; i++)
        if (!strcmp(k->models[i], model))
            return true;
    return false;
}

static int scan_digits(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -2;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *s = p;
    *out = v;
    return 0;
}

int conf_uint_scan(const char *s, uint64_t *out)
{
    uint64_t v;
    int rc = scan_digits(&s, &v);

    if (rc < 0)
        return rc;
    if (*s)
        return -1;
    *out = v;
    return 0;
}

static int scan_unit(const char *s, uint64_t v, const char *const *units,
                     const uint64_t *mult, size_t nunits, uint64_t *out)
{
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(s, units[i]))
            continue;
        if (mult[i] && v > UINT64_MAX / mult[i])
            return -2;
        *out = v * mult[i];
        return 0;
    }
    return -1;
}

/* Binary multiples whichever spelling: "k", "kb", "KiB" all mean 1024 (as nginx reads "k"). */
int conf_size_scan(const char *s, uint64_t *out)
{
    static const char *const units[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib",
                                        "g", "gb", "gib"};
    static const uint64_t mult[] = {1, 1, 1ull << 10, 1ull << 10, 1ull << 10, 1ull << 20,
                                    1ull << 20, 1ull << 20, 1ull << 30, 1ull << 30, 1ull << 30};
    uint64_t v;
    int rc = scan_digits(&s, &v);

    if (rc < 0)
        return rc;
    return scan_unit(s, v, units, mult, sizeof(mult) / sizeof(mult[0]), out);
}

/* Units are lowercase only: "M" next to "m" would read as a typo for months or megabytes. */
int conf_duration_scan(const char *s, uint64_t *out)
{
    static const char *const units[] = {"ms", "s", "m", "h", "d"};
    static const uint64_t mult[] = {1, 1000, 60000, 3600000, 86400000};
    uint64_t v;
    int rc = scan_digits(&s, &v);

    if (rc < 0)
        return rc;
    if (!*s)
        return -3;
    for (const char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            return -1;
    return scan_unit(s, v, units, mult, sizeof(mult) / sizeof(mult[0]), out);
}

int conf_parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    if (!s || conf_size_scan(s, &v) < 0)
        return -1;
    *out = v;
    return 0;
}

int conf_parse_duration(const char *s, uint64_t *out)
{
    uint64_t v;
    if (!s || conf_duration_scan(s, &v) < 0)
        return -1;
    *out = v;
    return 0;
}

static int conf_defaults(struct conf *c)
{
    static const struct conf_limits limits = {
        .max_connections = 20000, .max_inflight = 10000, .queue = 1000,
        .max_request_line = 8u << 10, .max_header_bytes = 16u << 10, .max_headers = 100,
        .max_body_bytes = 8u << 20, .header_timeout_ms = 10000, .body_timeout_ms = 30000,
        .idle_timeout_ms = 75000, .send_timeout_ms = 60000,
        .stream_high_water = 64u << 10, .stream_low_water = 16u << 10,
    };

    c->limits = limits;
    c->workers = 1;
    c->timeouts.default_ms = 60000;
    c->timeouts.max_ms = 600000;
    c->timeouts.connect_ms = 5000;
    c->health.failures = 5;
    c->health.cooldown_ms = 30000;
    c->gather.max_items = 1000;
    c->gather.max_concurrency = 64;
    c->gather.max_result_bytes = 32u << 20;
    c->jobs.max_queued = 10000;
    c->jobs.retention_ms = 24ull * 3600 * 1000;
    c->jobs.workers = 64;
    c->jobs.max_result_bytes = 16u << 20;
    c->state.backend = STATE_MEMORY;
    c->state.timeout_ms = 500;
    c->tracing.sample_ratio = 1.0;
    c->tracing.batch_size = 512;
    c->tracing.batch_delay_ms = 1000;
    c->tracing.queue_size = 8192;
    c->log.level = LOG_INFO;
    c->log.format = LOG_FORMAT_JSON;
    c->log.access = true;
    c->shutdown_grace_ms = 30000;
    if (!(c->listen = calloc(1, sizeof(*c->listen))))
        return -1;
    c->nlisten = 1;
    if (!(c->listen[0] = strdup("127.0.0.1:8420")) ||
        !(c->jobs.dir = strdup("/var/lib/llmux/jobs")) ||
        !(c->state.redis = strdup("redis://127.0.0.1:6379/0")))
        return -1;
    return 0;
}

static void conf_free_strings(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* Also frees a half-built snapshot: arrays are calloc'd with their count set up front. */
static void conf_free(struct conf *c)
{
    if (!c)
        return;
    if (c->ext_free)
        c->ext_free(c->ext);
    for (size_t i = 0; c->keys && i < c->nkeys; i++) {
        struct conf_key *k = &c->keys[i];
        free(k->name);
        if (k->key) {
            /* Best effort: the secret should not linger in freed heap memory. */
            explicit_bzero(k->key, strlen(k->key));
            free(k->key);
        }
        conf_free_strings(k->models, k->nmodels);
    }
    free(c->keys);
    for (size_t i = 0; i < c->nprices; i++)
        free(c->prices[i].model);
    free(c->prices);
    free(c->tracing.endpoint);
    free(c->tracing.service_name);
    for (size_t i = 0; i < c->tracing.nheaders; i++) {
        free(c->tracing.headers[i].name);
        if (c->tracing.headers[i].value)
            explicit_bzero(c->tracing.headers[i].value, strlen(c->tracing.headers[i].value));
        free(c->tracing.headers[i].value);
    }
    free(c->tracing.headers);
    for (size_t i = 0; c->models && i < c->nmodels; i++) {
        struct conf_model *m = &c->models[i];
        free(m->name);
        for (size_t j = 0; m->targets && j < m->ntargets; j++)
            free(m->targets[j].model);
        free(m->targets);
    }
    free(c->models);
    for (size_t i = 0; c->upstreams && i < c->nupstreams; i++) {
        struct conf_upstream *u = &c->upstreams[i];
        free(u->name);
        free(u->base_url);
        free(u->ca_file);
        if (u->api_key) {
            explicit_bzero(u->api_key, strlen(u->api_key));
            free(u->api_key);
        }
        for (size_t j = 0; u->headers && j < u->nheaders; j++) {
            free(u->headers[j].name);
            free(u->headers[j].value);
        }
        free(u->headers);
    }
    free(c->upstreams);
    conf_free_strings(c->listen, c->nlisten);
    free(c->jobs.dir);
    free(c->state.redis);
    free(c->path);
    free(c);
}
