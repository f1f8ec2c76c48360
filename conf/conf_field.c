/* conf_field: how one configuration value is read and checked — counts, sizes, durations,
 * booleans, enums, strings and secrets, listen addresses, URLs, upstream headers. */
#include "conf/conf_internal.h"
#include "common/redis_url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool has_ctl(const char *s, bool space_too)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || (space_too && *s == ' '))
            return true;
    return false;
}

int conf_field_count(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base)
{
    char *s, want[64], q[128];
    uint64_t n = 0;

    if (f->max < UINT_MAX)
        snprintf(want, sizeof(want), "an integer from %llu to %llu",
                 (unsigned long long)f->min, (unsigned long long)f->max);
    else if (f->min)
        snprintf(want, sizeof(want), "an integer of at least %llu", (unsigned long long)f->min);
    else
        snprintf(want, sizeof(want), "a non-negative integer");
    if (conf_text(x, v, path, want, &s) < 0)
        return -1;
    bool bad = conf_uint_scan(s, &n) < 0 || n < f->min || n > f->max || n > UINT_MAX;
    if (bad)
        conf_fail(x, v, path, "expected %s, got \"%s\"", want, conf_quote(s, q, sizeof(q)));
    else
        *(unsigned *)FIELD_AT(base, f->off) = (unsigned)n;
    free(s);
    return bad ? -1 : 0;
}

int conf_field_size(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base)
{
    char *s, q[128];
    uint64_t n = 0;

    if (conf_text(x, v, path, "a size like 8m", &s) < 0)
        return -1;
    int rc = conf_size_scan(s, &n);
    if (rc == -2)
        conf_fail(x, v, path, "size \"%s\" is too large", conf_quote(s, q, sizeof(q)));
    else if (rc < 0)
        conf_fail(x, v, path, "expected a size like 8m, got \"%s\"", conf_quote(s, q, sizeof(q)));
    else if (n < f->min)
        rc = conf_fail(x, v, path, "expected a positive size, got \"%s\"",
                       conf_quote(s, q, sizeof(q)));
    else
        *(uint64_t *)FIELD_AT(base, f->off) = n;
    free(s);
    return rc < 0 ? -1 : 0;
}

/* A size, or "auto" (stored as 0: the caller picks the value). */
int conf_field_size_auto(struct conf_ctx *x, const struct ynode *v, const char *path,
                         const struct field *f, void *base)
{
    if (v && v->kind == YNODE_SCALAR && v->val && strcmp(v->val, "auto") == 0) {
        *(uint64_t *)FIELD_AT(base, f->off) = 0;
        return 0;
    }
    return conf_field_size(x, v, path, f, base);
}

int conf_field_duration(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    char *s, q[128];
    uint64_t n = 0;

    if (conf_text(x, v, path, "a duration like 30s", &s) < 0)
        return -1;
    int rc = conf_duration_scan(s, &n);
    conf_quote(s, q, sizeof(q));
    if (rc == -3)
        conf_fail(x, v, path, "expected a duration like 30s or 500ms, got \"%s\": a bare "
                  "number is ambiguous, add a unit (ms, s, m, h, d)", q);
    else if (rc == -2)
        conf_fail(x, v, path, "duration \"%s\" is too large", q);
    else if (rc < 0)
        conf_fail(x, v, path, "expected a duration like 30s or 500ms, got \"%s\"", q);
    else if (n < f->min)
        rc = conf_fail(x, v, path, "expected a positive duration, got \"%s\"", q);
    else
        *(uint64_t *)FIELD_AT(base, f->off) = n;
    free(s);
    return rc < 0 ? -1 : 0;
}

int conf_field_bool(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    char *s, q[128];
    int rc = -1;

    if (conf_text(x, v, path, "true or false", &s) < 0)
        return -1;
    for (size_t i = 0; i < 3 && rc < 0; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *(bool *)FIELD_AT(base, f->off) = !strcasecmp(s, yes[i]);
            rc = 0;
        }
    }
    if (rc < 0)
        conf_fail(x, v, path, "expected true or false (also yes/no, on/off), got \"%s\"",
                  conf_quote(s, q, sizeof(q)));
    free(s);
    return rc;
}

int conf_field_string(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    char *s, **dst = FIELD_AT(base, f->off);

    if (conf_text(x, v, path, "a string", &s) < 0)
        return -1;
    if (!*s || has_ctl(s, false)) {
        free(s);
        return conf_fail(x, v, path, "expected a non-empty string without control characters");
    }
    free(*dst);
    *dst = s;
    return 0;
}

/* api_key (min 0: empty means none, so "${KEY:-}" makes a key optional) and keys[].key
 * (min 1). Nothing here echoes the value. */
int conf_field_secret(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    char *s, **dst = FIELD_AT(base, f->off);

    if (conf_text(x, v, path, CONF_WHAT_SECRET, &s) < 0)
        return -1;
    if (has_ctl(s, true)) {
        explicit_bzero(s, strlen(s));
        free(s);
        return conf_fail(x, v, path, "must not contain spaces or control characters "
                         "(value not shown: it is a secret)");
    }
    if (!*s) {
        free(s);
        if (f->min)
            return conf_fail(x, v, path, "expected a non-empty secret, got an empty string");
        s = NULL;
    }
    free(*dst);
    *dst = s;
    return 0;
}

/* Index of the scalar in names, or -1 after an error listing them as `expect`. */
static int pick(struct conf_ctx *x, const struct ynode *v, const char *path,
                const char *const *names, size_t n, const char *expect)
{
    char *s, q[128];
    int idx = -1;

    if (conf_text(x, v, path, expect, &s) < 0)
        return -1;
    for (size_t i = 0; i < n && idx < 0; i++)
        if (!strcmp(s, names[i]))
            idx = (int)i;
    if (idx < 0)
        conf_fail(x, v, path, "expected %s, got \"%s\"", expect, conf_quote(s, q, sizeof(q)));
    free(s);
    return idx;
}

int conf_field_provider(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    static const char *const names[] = {"openai", "anthropic"};
    static const enum conf_provider vals[] = {PROVIDER_OPENAI, PROVIDER_ANTHROPIC};
    int i = pick(x, v, path, names, 2, "openai or anthropic");
    if (i >= 0)
        *(enum conf_provider *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

int conf_field_http(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base)
{
    static const char *const names[] = {"auto", "1.1", "2"};
    static const enum conf_http vals[] = {CONF_HTTP_AUTO, CONF_HTTP_1_1, CONF_HTTP_2};
    int i = pick(x, v, path, names, 3, "auto, 1.1 or 2");
    if (i >= 0)
        *(enum conf_http *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

int conf_field_strategy(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    static const char *const names[] = {"weighted", "fallback", "least_inflight"};
    static const enum conf_strategy vals[] = {STRATEGY_WEIGHTED, STRATEGY_FALLBACK,
                                              STRATEGY_LEAST_INFLIGHT};
    int i = pick(x, v, path, names, 3, "weighted, fallback or least_inflight");
    if (i >= 0)
        *(enum conf_strategy *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

const char *const conf_budget_window_names[CONF_BUDGET_WINDOWS] = {
    [BUDGET_1D] = "1d", [BUDGET_7D] = "7d", [BUDGET_30D] = "30d",
    [BUDGET_CALENDAR_MONTH] = "calendar_month",
};

int conf_field_budget_window(struct conf_ctx *x, const struct ynode *v, const char *path,
                             const struct field *f, void *base)
{
    int i = pick(x, v, path, conf_budget_window_names, CONF_BUDGET_WINDOWS,
                 "1d, 7d, 30d or calendar_month");
    if (i >= 0)
        *(enum conf_budget_window *)FIELD_AT(base, f->off) = (enum conf_budget_window)i;
    return i < 0 ? -1 : 0;
}

int conf_field_backend(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    static const char *const names[] = {"memory", "redis"};
    static const enum conf_state_backend vals[] = {STATE_MEMORY, STATE_REDIS};
    int i = pick(x, v, path, names, 2, "memory or redis");
    if (i >= 0)
        *(enum conf_state_backend *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

int conf_field_on_error(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    static const char *const names[] = {"open", "closed"};
    int i = pick(x, v, path, names, 2, "open or closed");
    if (i >= 0)
        *(bool *)FIELD_AT(base, f->off) = i == 1;
    return i < 0 ? -1 : 0;
}

/* 64 hex digits → 32 bytes. The digest is no secret, but it is not echoed either. */
int conf_field_sha256(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    unsigned char *dst = FIELD_AT(base, f->off);
    char *s;

    if (conf_text(x, v, path, "64 hex digits (the key's SHA-256)", &s) < 0)
        return -1;
    size_t n = strlen(s);
    for (size_t i = 0; n == 64 && i < 32; i++) {
        unsigned hi = (unsigned)s[2 * i], lo = (unsigned)s[2 * i + 1];
        if (!isxdigit(hi) || !isxdigit(lo)) {
            n = 0;
            break;
        }
        hi = isdigit(hi) ? hi - '0' : (unsigned)tolower((int)hi) - 'a' + 10;
        lo = isdigit(lo) ? lo - '0' : (unsigned)tolower((int)lo) - 'a' + 10;
        dst[i] = (unsigned char)(hi << 4 | lo);
    }
    free(s);
    if (n != 64)
        return conf_fail(x, v, path, "expected 64 hex digits (the SHA-256 of the key, "
                         "e.g. from: printf %%s KEY | sha256sum)");
    return 0;
}

int conf_field_level(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    static const enum log_level vals[] = {LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG};
    int i = pick(x, v, path, names, 4, "error, warn, info or debug");
    if (i >= 0)
        *(enum log_level *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

int conf_field_format(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    static const char *const names[] = {"json", "text"};
    static const enum log_format vals[] = {LOG_FORMAT_JSON, LOG_FORMAT_TEXT};
    int i = pick(x, v, path, names, 2, "json or text");
    if (i >= 0)
        *(enum log_format *)FIELD_AT(base, f->off) = vals[i];
    return i < 0 ? -1 : 0;
}

int conf_field_workers(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    char *s, q[128];
    uint64_t n = 0;
    int rc = 0;

    if (conf_text(x, v, path, "an integer from 1 to 256 or \"auto\"", &s) < 0)
        return -1;
    if (!strcmp(s, "auto"))
        n = 0;
    else if (conf_uint_scan(s, &n) < 0 || n < 1 || n > 256)
        rc = conf_fail(x, v, path, "expected an integer from 1 to 256 or \"auto\", got \"%s\"",
                       conf_quote(s, q, sizeof(q)));
    if (!rc)
        *(unsigned *)FIELD_AT(base, f->off) = (unsigned)n;
    free(s);
    return rc;
}

/* NULL when port is a decimal 1..65535, else why not. */
static const char *port_check(const char *port)
{
    uint64_t n;
    if (conf_uint_scan(port, &n) < 0 || n < 1 || n > 65535)
        return "the port must be 1..65535";
    return NULL;
}

/* NULL when s is a listen address we can bind, else why not. */
static const char *listen_check(const char *s)
{
    char host[64];

    if (!strncmp(s, "unix:", 5)) {
        if (s[5] != '/')
            return "a unix socket path must be absolute";
        if (strlen(s + 5) >= 108)   /* sizeof(sun_path) on Linux */
            return "the unix socket path is longer than 107 bytes";
        return has_ctl(s, false) ? "the path has control characters" : NULL;
    }
    const char *colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');
    if (!colon)
        return "missing :PORT";
    const char *h = s[0] == '[' ? s + 1 : s;
    size_t hlen = (size_t)(colon - h);
    if (hlen >= sizeof(host))
        return "the host is too long";
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (s[0] == '[') {
        if (inet_pton(AF_INET6, host, &(struct in6_addr){0}) != 1)
            return "not an IPv6 address";
        colon++;
    } else if (strcmp(host, "localhost") && inet_pton(AF_INET, host, &(struct in_addr){0}) != 1) {
        return strchr(host, ':') ? "an IPv6 address needs brackets"
                                 : "the host must be an IPv4 address or localhost";
    }
    return port_check(colon + 1);
}

int conf_field_listen(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base)
{
    struct conf *c = base;
    const struct ynode *const *items = (const struct ynode *const *)v->kids;
    size_t n = v->nkids;
    char ipath[CONF_PATH_MAX], q[128], **list = NULL;
    int rc = -1;

    if (v->kind == YNODE_SCALAR) {
        items = &v;
        n = 1;
    } else if (v->kind != YNODE_SEQ) {
        return conf_fail(x, v, path, "expected an address or a list of them, got %s",
                         ynode_kind_name(v));
    }
    if (!n)
        return conf_fail(x, v, path, "expected at least one address, got an empty list");
    if (!(list = calloc(n, sizeof(*list))))
        return conf_fail(x, v, path, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *why;
        if (v->kind == YNODE_SEQ)
            conf_path_index(ipath, path, i);
        else
            snprintf(ipath, sizeof(ipath), "%s", path);
        if (conf_text(x, items[i], ipath, "an address like 127.0.0.1:8420", &list[i]) < 0)
            goto out;
        if ((why = listen_check(list[i]))) {
            conf_fail(x, items[i], ipath, "expected \"HOST:PORT\" (IPv4 or localhost), "
                      "\"[IPv6]:PORT\" or \"unix:/abs/path\", got \"%s\": %s",
                      conf_quote(list[i], q, sizeof(q)), why);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(list[i], list[j])) {
                conf_fail(x, items[i], ipath, "duplicate address \"%s\"",
                          conf_quote(list[i], q, sizeof(q)));
                goto out;
            }
    }
    for (size_t i = 0; i < c->nlisten; i++)
        free(c->listen[i]);
    free(c->listen);
    c->listen = list;
    c->nlisten = n;
    list = NULL;
    rc = 0;
out:
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}

/* NULL when url is http(s)://host[:port][/path], else why not. The URL is never echoed: a
 * mistyped one may hold credentials or a token in its query. */
static const char *base_url_check(const char *url)
{
    const char *a = !strncmp(url, "http://", 7) ? url + 7
                    : !strncmp(url, "https://", 8) ? url + 8 : NULL;
    if (!a)
        return "expected an http:// or https:// URL";
    if (has_ctl(url, true))
        return "expected a URL without spaces or control characters";
    if (strpbrk(url, "?#"))
        return "expected a URL without a query or fragment";
    size_t alen = strcspn(a, "/");
    if (memchr(a, '@', alen))
        return "expected a URL without credentials (use api_key or headers)";
    const char *port = a[0] == '[' ? memchr(a, ']', alen) : memchr(a, ':', alen);
    if (a[0] == '[' && !port)
        return "expected a closing ']' after an IPv6 host";
    if (a[0] == '[') {
        if (port + 1 < a + alen && port[1] != ':')
            return "expected ':' or '/' after an IPv6 host";
        port = port + 1 < a + alen ? port + 1 : NULL;
    }
    size_t hlen = port ? (size_t)(port - a) : alen;
    if (hlen == 0 || (a[0] == '[' && hlen <= 2))
        return "expected a URL with a host";
    if (port) {
        char p[8];
        size_t plen = alen - hlen - 1;
        if (plen >= sizeof(p))
            return "the port must be 1..65535";
        memcpy(p, port + 1, plen);
        p[plen] = '\0';
        return port_check(p);
    }
    return NULL;
}

int conf_field_base_url(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base)
{
    char *s, **dst = FIELD_AT(base, f->off);
    const char *why;

    if (conf_text(x, v, path, "a URL", &s) < 0)
        return -1;
    if ((why = base_url_check(s))) {
        free(s);
        return conf_fail(x, v, path, "%s", why);
    }
    /* The host is non-empty, so this stops before "://". */
    for (size_t n = strlen(s); s[n - 1] == '/'; n--)
        s[n - 1] = '\0';
    free(*dst);
    *dst = s;
    return 0;
}

static bool header_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

/* Headers llmux owns: framing, routing, and (for upstreams) the credentials that belong in
 * api_key; a collector's headers may carry credentials (they have no other place). */
static bool header_reserved(const char *s, bool credentials_ok)
{
    static const char *const names[] = {"host", "content-length", "transfer-encoding",
                                        "authorization", "x-api-key"};
    for (size_t i = 0; i < (credentials_ok ? 3 : sizeof(names) / sizeof(names[0])); i++)
        if (!strcasecmp(s, names[i]))
            return true;
    return false;
}

int conf_field_headers(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base)
{
    struct conf_upstream *u = base;
    char hpath[CONF_PATH_MAX], q[128];

    if (v->kind != YNODE_MAP)
        return conf_fail(x, v, path, "expected a mapping of header names to values, got %s",
                         ynode_kind_name(v));
    u->nheaders = v->nkids / 2;
    if (!(u->headers = calloc(u->nheaders ? u->nheaders : 1, sizeof(*u->headers))))
        return conf_fail(x, v, path, "out of memory");
    for (size_t i = 0; i < u->nheaders; i++) {
        const struct ynode *k = v->kids[2 * i], *val = v->kids[2 * i + 1];
        if (k->kind != YNODE_SCALAR)
            return conf_fail(x, k, path, "expected a header name, got %s", ynode_kind_name(k));
        conf_path_key(hpath, path, k->val);
        conf_quote(k->val, q, sizeof(q));
        if (strlen(k->val) != k->len || !header_name_ok(k->val))
            return conf_fail(x, k, hpath, "expected a header name (letters, digits, -), "
                             "got \"%s\"", q);
        if (header_reserved(k->val, f && f->max == CONF_HEADERS_CREDENTIALS))
            return conf_fail(x, k, hpath, "\"%s\" cannot be configured: llmux sets it "
                             "(put credentials in api_key)", q);
        for (size_t j = 0; j < i; j++)
            if (!strcasecmp(u->headers[j].name, k->val))
                return conf_fail(x, k, hpath, "duplicate header \"%s\" (first at line %d)", q,
                                 v->kids[2 * j]->line);
        if (ynode_is_null(val))
            return conf_fail(x, val, hpath, "expected a header value, got nothing");
        if (conf_text(x, val, hpath, "a header value", &u->headers[i].value) < 0)
            return -1;
        /* Not echoed: header values are often tokens. */
        for (const char *p = u->headers[i].value; *p; p++)
            if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
                return conf_fail(x, val, hpath, "expected a header value without CR, LF or "
                                 "other control characters");
        if (!(u->headers[i].name = strdup(k->val)))
            return conf_fail(x, k, hpath, "out of memory");
    }
    return 0;
}

int conf_field_redis(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base)
{
    char *s, **dst = FIELD_AT(base, f->off);

    struct redis_url u;
    char why[128];

    if (conf_text(x, v, path, "a redis:// URL", &s) < 0)
        return -1;
    bool ctl = has_ctl(s, true);
    if (ctl || redis_url_parse(s, &u, why, sizeof why) < 0) {
        explicit_bzero(s, strlen(s));
        free(s);
        if (ctl)
            snprintf(why, sizeof why, "expected a redis:// URL without spaces");
        return conf_fail(x, v, path, "%s (value not shown: it may hold a password)", why);
    }
    bool tls = u.tls;
    redis_url_clear(&u);
    if (tls) {
        explicit_bzero(s, strlen(s));
        free(s);
        return conf_fail(x, v, path, "rediss:// (TLS) is not available: Debian 12's hiredis "
                         "0.14 has no TLS; reach Redis through a TLS tunnel (stunnel, "
                         "spiped) and use redis://");
    }
    free(*dst);
    *dst = s;
    return 0;
}
