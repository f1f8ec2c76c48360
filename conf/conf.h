/* conf: the configuration snapshot. Loaded from YAML (libyaml), validated with FILE:LINE:COL
 * errors, then immutable and reference counted so a reload never changes a request mid-flight. */
#ifndef LLMUX_CONF_H
#define LLMUX_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/log.h"

enum conf_provider { PROVIDER_OPENAI, PROVIDER_ANTHROPIC };
enum conf_strategy { STRATEGY_WEIGHTED, STRATEGY_FALLBACK, STRATEGY_LEAST_INFLIGHT };
enum conf_state_backend { STATE_MEMORY, STATE_REDIS };
/* Upstream HTTP version: auto = ALPN on https (h2 when offered), HTTP/1.1 on http; 2 on http
 * is prior knowledge (h2c), on https h2 only. */
enum conf_http { CONF_HTTP_AUTO, CONF_HTTP_1_1, CONF_HTTP_2 };

struct target_health;               /* runtime breaker state (upstream/health.h), not config */

#define CONF_HEDGE_MAX 3            /* hedges per request at most (4 attempts at once) */

struct conf_header {
    char *name;
    char *value;
};

struct conf_upstream {
    char *name;
    enum conf_provider provider;
    char *base_url;                 /* http:// or https://, trailing '/' removed */
    char *api_key;                  /* NULL when absent; never logged or shown */
    struct conf_header *headers;    /* extra headers sent upstream */
    size_t nheaders;
    unsigned max_connections;       /* default 512 */
    uint64_t timeout_ms;            /* default 120s */
    uint64_t connect_ms;            /* timeouts.connect; 0 = the global timeouts.connect */
    uint64_t first_byte_ms;         /* timeouts.first_byte: request sent → headers; 0 = none */
    uint64_t idle_ms;               /* timeouts.idle: longest gap between body bytes; 0 = none */
    uint64_t max_response_bytes;    /* default 64m: cap on a buffered upstream answer */
    char *ca_file;                  /* PEM bundle to verify https upstreams; NULL = system's */
    bool tls_verify;                /* default true; false only for a lab upstream */
    enum conf_http http;            /* default auto */
};

/* One row of `prices:`: USD per `per` tokens of each kind, for upstream model names matching
 * the glob (`*` any run, `?` one character). */
struct conf_price {
    char *model;                    /* the glob */
    double input, output;           /* uncached prompt tokens, completion tokens */
    double cache_read, cache_write; /* default: the input price */
    uint64_t per;                   /* 1000000 (default, "1M") or 1000 ("1K") */
};

/* `budget:` of a key or a model entry: spend in USD per fixed UTC window. */
enum conf_budget_window { BUDGET_1D, BUDGET_7D, BUDGET_30D, BUDGET_CALENDAR_MONTH };
#define CONF_BUDGET_WINDOWS 4
/* The window's name as written in the config (also in /v1/spend, budget.json, Redis keys). */
extern const char *const conf_budget_window_names[CONF_BUDGET_WINDOWS];
#define CONF_BUDGET_USD_MAX 1e6         /* kept in nano-dollars: exact in a Lua number too */

struct conf_budget {
    double usd;                     /* 0 = no budget */
    enum conf_budget_window window; /* default 30d */
};

struct conf_target {
    const struct conf_upstream *upstream;   /* points into conf->upstreams */
    char *model;                            /* NULL: the client's model name is relayed as is */
    unsigned weight;                        /* default 1 */
    struct target_health *health;           /* bound by the daemon before the snapshot is
                                             * published; shared by equal (upstream, model) */
    const struct conf_price *price;         /* the most specific price row for the upstream
                                             * model name; NULL: no price (cost unknown) */
};

struct conf_model {
    char *name;                     /* what clients send as "model" */
    enum conf_strategy strategy;    /* default weighted */
    unsigned retries;               /* per target; default 2 */
    uint64_t backoff_base_ms;       /* default 100ms */
    uint64_t backoff_max_ms;        /* default 2s */
    uint64_t hedge_after_ms;        /* hedge.after; 0 = no hedging */
    uint64_t hedge_min_after_ms;    /* hedge.min_after: floor for X-Llmux-Hedge-Ms (default after) */
    unsigned hedge_max;             /* hedge.max: extra attempts, 1 … CONF_HEDGE_MAX (default 1) */
    struct conf_target *targets;    /* at least one */
    size_t ntargets;
    unsigned default_max_tokens;    /* default 4096: max_tokens sent to providers that require
                                     * one (Anthropic) when the client gave none */
    struct conf_budget budget;      /* this model's spend across all keys; usd 0 = none */
};

struct conf_key {
    char *name;
    char *key;                      /* secret; NULL when given as key_sha256 */
    unsigned char key_sha256[32];   /* SHA-256 of the key, when key_sha256 was given */
    bool hashed;                    /* key_sha256 (not key) identifies it */
    char **models;                  /* NULL = all models */
    size_t nmodels;
    unsigned rpm;                   /* 0 = unlimited */
    unsigned tpm;                   /* tokens per minute, 0 = unlimited */
    unsigned max_concurrency;       /* 0 = unlimited */
    struct conf_budget budget;      /* usd 0 = none */
    bool admin;                     /* may read every key's spend (GET /v1/spend) */
};

struct conf_limits {
    unsigned max_connections;       /* default 20000 */
    unsigned max_inflight;          /* default 10000 */
    unsigned queue;                 /* default 1000 */
    bool fds_explicit;              /* max_connections or max_inflight written in the file */
    uint64_t max_request_line;      /* default 8k   (414) */
    uint64_t max_header_bytes;      /* default 16k  (431) */
    unsigned max_headers;           /* default 100  (431) */
    uint64_t max_body_bytes;        /* default 8m   (413) */
    uint64_t header_timeout_ms;     /* default 10s  (408) */
    uint64_t body_timeout_ms;       /* default 30s  (408) */
    uint64_t idle_timeout_ms;       /* default 75s */
    uint64_t send_timeout_ms;       /* default 60s: client reads nothing that long → closed */
    uint64_t stream_high_water;     /* default 64k: pause the upstream above it */
    uint64_t stream_low_water;      /* default 16k: resume below it */
    uint64_t max_memory;            /* default auto: bodies, answers, gather entries summed */
    bool max_memory_auto;           /* from the cgroup limit or RAM (conf_memory_auto) */
};

struct conf {
    char *path;                     /* file it came from ("<string>" for conf_load_string) */
    char **listen;                  /* "127.0.0.1:8420", "[::1]:8420", "unix:/run/llmux.sock" */
    size_t nlisten;
    unsigned workers;               /* 0 = auto (one per core) */
    struct conf_limits limits;
    struct {
        uint64_t default_ms;        /* default 60s */
        uint64_t max_ms;            /* default 10m */
        uint64_t connect_ms;        /* default 5s */
    } timeouts;
    struct conf_upstream *upstreams;
    size_t nupstreams;
    struct conf_model *models;
    size_t nmodels;
    struct {
        unsigned failures;          /* default 5 */
        uint64_t cooldown_ms;       /* default 30s */
    } health;
    struct conf_price *prices;      /* NULL/0 = no cost accounting */
    size_t nprices;
    struct conf_key *keys;          /* NULL/0 = no auth */
    size_t nkeys;
    bool hashed_keys;               /* some key is given as key_sha256 */
    struct {
        unsigned max_items;         /* default 1000 */
        unsigned max_concurrency;   /* default 64 */
        uint64_t max_result_bytes;  /* default 32m: the answers of one gather, summed */
    } gather;
    struct {
        char *dir;                  /* default /var/lib/llmux/jobs */
        unsigned max_queued;        /* default 10000 */
        uint64_t retention_ms;      /* default 24h */
        unsigned workers;           /* default 64 */
        uint64_t max_result_bytes;  /* default 16m: a larger answer fails the job */
    } jobs;
    struct {
        enum conf_state_backend backend;  /* default memory */
        char *redis;                      /* default redis://127.0.0.1:6379/0 */
        bool fail_closed;                 /* on_error: closed (503) rather than open */
        uint64_t timeout_ms;              /* default 500ms: a Redis answer later fails */
    } state;
    struct {
        char *endpoint;             /* OTLP/HTTP base URL; NULL = tracing off */
        struct conf_header *headers;    /* sent with every export (credentials allowed) */
        size_t nheaders;
        double sample_ratio;        /* default 1.0: share of new (root) traces recorded */
        char *service_name;         /* default NULL: "llmux" */
        bool capture_content;       /* default false: no prompt or answer text in spans */
        unsigned batch_size;        /* default 512 spans per export */
        uint64_t batch_delay_ms;    /* default 1s: a partial batch waits at most this */
        unsigned queue_size;        /* default 8192 spans; past it spans are dropped */
    } tracing;
    struct {
        enum log_level level;       /* default info */
        enum log_format format;     /* default json */
        bool access;                /* default true */
    } log;
    uint64_t shutdown_grace_ms;     /* default 30s */

    int refs;                       /* atomic; use conf_ref/conf_unref */
    /* What the daemon keeps per snapshot (its labelled-metric index), freed with it. conf/
     * knows nothing of it beyond calling ext_free. */
    void *ext;
    void (*ext_free)(void *ext);
};

/* Load and validate. On error returns NULL and writes "FILE:LINE:COL: key: what was expected"
 * (or "FILE: reason" when there is no position) into err. The result has one reference. */
struct conf *conf_load(const char *path, char *err, size_t errlen);
/* Same, from memory; name is used in error messages in place of a file name. */
struct conf *conf_load_string(const char *yaml, size_t len, const char *name,
                              char *err, size_t errlen);

struct conf *conf_ref(struct conf *c);     /* thread-safe */
void conf_unref(struct conf *c);           /* thread-safe; frees at zero */

const struct conf_model *conf_find_model(const struct conf *c, const char *name);
const struct conf_upstream *conf_find_upstream(const struct conf *c, const char *name);
/* Constant-time key lookup; NULL when not found. */
const struct conf_key *conf_find_key(const struct conf *c, const char *key, size_t len);
/* Constant-time lookup of a key_sha256 key by the digest of the presented key. */
const struct conf_key *conf_find_key_sha256(const struct conf *c, const unsigned char d[32]);
bool conf_key_allows_model(const struct conf_key *k, const char *model);
/* Glob match (`*`, `?`), and the most specific row of c's price table for an upstream model
 * name (more literal characters win; NULL when none matches). */
bool conf_glob_match(const char *glob, const char *s);
const struct conf_price *conf_find_price(const struct conf *c, const char *model);
/* Two globs some name matches both ways; and a glob's specificity (its literal characters). */
bool conf_glob_overlap(const char *a, const char *b);
size_t conf_glob_specificity(const char *glob);
/* A header whose value is a credential by its name (Authorization, *-Key, *Token…). */
bool conf_header_is_secret(const char *name);
/* Replaces every configured upstream secret (api_key values, secret headers' values) in b
 * with "[redacted]". 0, or -1 out of memory (b is then cut before the first secret). */
int conf_redact(const struct conf *c, struct buf *b);
/* limits.max_memory: auto: 3/4 of the cgroup's memory limit when there is one, else half of
 * the RAM. Reads /sys and /proc: call at load time only, never on an event loop. */
uint64_t conf_memory_auto(void);

/* Parsers shared with tests: "16k" "4m" "1g" → bytes; "500ms" "30s" "5m" "1h" "2d" → ms. */
int conf_parse_size(const char *s, uint64_t *out);
int conf_parse_duration(const char *s, uint64_t *out);

#endif
