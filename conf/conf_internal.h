/* conf_internal: what the conf/ files share and nothing outside conf/ sees: the YAML node tree
 * and error plumbing (conf_tree.c), field parsers (conf_field.c), the schema (conf_schema.c). */
#ifndef LLMUX_CONF_INTERNAL_H
#define LLMUX_CONF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

#define CONF_PATH_MAX 256       /* dotted key path, e.g. "models[3].targets[1].upstream" */

enum ynode_kind { YNODE_SCALAR, YNODE_SEQ, YNODE_MAP };

/* One YAML node with its 1-based position. A mapping's kids alternate key, value. */
struct ynode {
    enum ynode_kind kind;
    int line, col;
    char *val;                  /* scalars: bytes as libyaml decoded them, NUL-terminated */
    size_t len;                 /* scalars: may differ from strlen(val) when "\0" was escaped */
    bool plain;                 /* scalars: unquoted, so "", "~" and "null" mean "no value" */
    struct ynode **kids;
    size_t nkids, cap;
};

/* State of one load: where errors go, and the snapshot being filled. */
struct conf_ctx {
    const char *file;
    char *err;
    size_t errlen;
    bool failed;                /* the first error wins; later ones would only be consequences */
    struct conf *c;
};

/* conf_tree.c */
int ytree_parse(struct conf_ctx *x, const char *yaml, size_t len, struct ynode **root);
void ytree_free(struct ynode *n);
bool ynode_is_null(const struct ynode *n);
const char *ynode_kind_name(const struct ynode *n);
/* Value of key in mapping m (NULL when absent or m is not a mapping). */
const struct ynode *ynode_get(const struct ynode *m, const char *key);

/* Writes "FILE:LINE:COL: PATH: message" (no PATH part when path is NULL or empty) and
 * returns -1, so callers can `return conf_fail(...)`. */
int conf_fail(struct conf_ctx *x, const struct ynode *n, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Text of a scalar with ${VAR} expanded, malloc'd into *out. Fails with an error on a
 * non-scalar ("expected WHAT, got a mapping"), an embedded NUL or a missing variable.
 * No error here ever echoes the value, so it is safe for secrets. */
int conf_text(struct conf_ctx *x, const struct ynode *n, const char *path, const char *what,
              char **out);
/* Expands ${VAR}, ${VAR:-default} and $$ in s; on failure writes the reason to why (for a
 * secret, without suggesting a default). */
char *conf_expand_env(const char *s, bool secret, char *why, size_t whylen);
#define CONF_WHAT_SECRET "a secret string"     /* conf_text's `what` for secrets */
/* s made safe to print inside "..." in an error: escaped, and shortened when long. */
const char *conf_quote(const char *s, char *out, size_t outlen);
/* "parent.key", "parent[i]" into out (CONF_PATH_MAX); key is escaped as conf_quote would. */
void conf_path_key(char *out, const char *parent, const char *key);
void conf_path_index(char *out, const char *parent, size_t i);

/* conf.c: 0, -1 bad syntax, -2 too large. Decimal digits only, nothing else. */
int conf_uint_scan(const char *s, uint64_t *out);
/* conf.c: 0, -1 bad syntax, -2 too large, -3 (durations) bare number without a unit. */
int conf_size_scan(const char *s, uint64_t *out);
int conf_duration_scan(const char *s, uint64_t *out);

/* conf_schema.c / conf_field.c: one key of a mapping — its parser, where the value goes
 * (offset into the struct being filled, base), and its bounds. */
struct field;
typedef int (*field_fn)(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);

struct field {
    const char *key;
    field_fn parse;
    size_t off;
    uint64_t min, max;          /* counts: inclusive range; sizes, durations: min 0 or 1 */
    bool required;
    const struct field *sub;    /* nested mapping (field_section): its keys */
    size_t nsub;
};

#define FIELDS(t) t, sizeof(t) / sizeof((t)[0])

/* A list of mappings, each item filled by walking fields. */
struct list_spec {
    const char *what;           /* plural, for messages: "targets" */
    size_t min, size;           /* min is 0 or 1 */
    const struct field *fields;
    size_t nfields;
    void (*init)(void *item);   /* defaults */
};
/* conf_schema.c: parses list v into *arr (n items); both are set before the items are filled,
 * so a failure midway frees what was set. An empty list is as if absent (NULL, 0). */
int conf_list_parse(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct list_spec *spec, void **arr, size_t *n);
/* conf_schema.c: a nested mapping walked with f->sub (for sections defined in other files). */
int conf_field_section(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base);
/* conf_tracing.c: the `tracing:` section. */
int conf_field_tracing(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base);
/* conf_price.c: a plain decimal number from 0 to max into *out ("expected WANT" otherwise). */
int conf_field_decimal(struct conf_ctx *x, const struct ynode *v, const char *path,
                       double max, const char *want, double *out);
/* conf_budget.c: `budget: {usd, window}` of a key or a model entry (f->off: its conf_budget). */
int conf_field_budget(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
int conf_field_budget_window(struct conf_ctx *x, const struct ynode *v, const char *path,
                             const struct field *f, void *base);
/* conf_price.c: `prices:` — rows, overlap check, and each target's price resolved. */
int conf_field_prices(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
#define FIELD_AT(base, off) ((void *)((char *)(base) + (off)))

/* conf_field.c: parsers of single values; each writes its type at FIELD_AT(base, f->off):
 * count → unsigned in min..max; size → uint64_t bytes; duration → uint64_t ms; string → char *
 * (non-empty); secret → char * (min 0: empty gives NULL; min 1: must be non-empty); enums →
 * their enum; workers → unsigned ("auto" = 0). listen takes base = struct conf, headers
 * base = struct conf_upstream. */
int conf_field_count(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base);
int conf_field_size_auto(struct conf_ctx *x, const struct ynode *v, const char *path,
                         const struct field *f, void *base);
int conf_field_size(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base);
int conf_field_duration(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);
int conf_field_bool(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base);
int conf_field_string(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
int conf_field_secret(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
/* conf_secret.c: reads the secret from the named file into the char * at f->off (which its
 * inline twin, e.g. api_key, must not have set); trailing newlines are stripped. */
int conf_field_secret_file(struct conf_ctx *x, const struct ynode *v, const char *path,
                           const struct field *f, void *base);
int conf_field_provider(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);
int conf_field_http(struct conf_ctx *x, const struct ynode *v, const char *path,
                    const struct field *f, void *base);
int conf_field_strategy(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);
int conf_field_backend(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base);
int conf_field_level(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base);
int conf_field_format(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
int conf_field_workers(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base);
int conf_field_listen(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
int conf_field_base_url(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);
#define CONF_HEADERS_CREDENTIALS 1     /* conf_field_headers' f->max: Authorization allowed */
int conf_field_headers(struct conf_ctx *x, const struct ynode *v, const char *path,
                       const struct field *f, void *base);
int conf_field_sha256(struct conf_ctx *x, const struct ynode *v, const char *path,
                      const struct field *f, void *base);
int conf_field_on_error(struct conf_ctx *x, const struct ynode *v, const char *path,
                        const struct field *f, void *base);
int conf_field_redis(struct conf_ctx *x, const struct ynode *v, const char *path,
                     const struct field *f, void *base);

/* conf_schema.c: fills x->c (already holding defaults) from the root node (NULL = empty). */
int conf_schema_apply(struct conf_ctx *x, const struct ynode *root);

#endif
