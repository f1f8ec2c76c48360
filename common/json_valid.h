/* json_valid: a strict RFC 8259 validator that allocates nothing, for every JSON text that
 * comes from outside (client bodies, upstream answers), and the parse budget built on it. */
#ifndef LLMUX_JSON_VALID_H
#define LLMUX_JSON_VALID_H

#include <jansson.h>
#include <stddef.h>

#define JSON_VALID_DEPTH 128        /* nesting allowed in any text from outside */

/* What one pass saw: enough to price a tree before building it. */
struct json_valid_stats {
    size_t containers;      /* objects and arrays */
    size_t members;         /* object members */
    size_t scalars;         /* strings, numbers, literals (member names excluded) */
};

/* 0 when p[0..len) is exactly one JSON value (surrounding whitespace allowed), UTF-8 valid,
 * nested at most max_depth deep; -1 otherwise, with *err_at (if given) the offset of the
 * first byte that is wrong. stats may be NULL. */
int json_valid(const char *p, size_t len, unsigned max_depth, struct json_valid_stats *stats,
               size_t *err_at);

/* json_valid with the default depth, and the value must be an object. 0 or -1. */
int json_valid_object(const char *p, size_t len);

/* Bytes a jansson tree of such a text may take (generous: glibc overhead included). */
size_t json_valid_tree_cost(const struct json_valid_stats *s, size_t len);
/* The budget of a tree built from len bytes of text: 4 × len + 2 MiB. */
size_t json_valid_tree_budget(size_t len);

/* Validates, prices and only then parses: NULL when the text is not valid JSON, or when its
 * tree would exceed the budget (*over set to 1 then, when over is given). */
json_t *json_valid_load(const char *p, size_t len, size_t flags, int *over);

#endif
