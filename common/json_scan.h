/* json_scan: byte-level helpers over JSON text that is already known to be valid (jansson
 * parsed it), for the hot path: find a top-level member's value without building a tree. */
#ifndef LLMUX_JSON_SCAN_H
#define LLMUX_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

/* Finds the value of top-level member `key` (matched byte for byte, so a key written with
 * escapes is not found) in the object text p[0..len). On success sets [*start, *end) to the
 * value's bytes and returns 0; -1 when absent or the text is not an object. */
int json_scan_member(const char *p, size_t len, const char *key, size_t *start, size_t *end);

/* false when the text can't hold a member named `name` anywhere: it has no "\u" (the only
 * escape that can spell a name of letters, digits and '_', which `name` must be) and not the
 * bytes "name" with their quotes. A cheap test before a walk that would find nothing; most
 * chat bodies hold a \n or \" somewhere, so a plain backslash must not defeat it. */
bool json_scan_may_have(const char *p, size_t len, const char *name);

/* One member json_scan_pick looks for; start/end are set when found. */
struct json_pick {
    const char *name;
    size_t start, end;
    bool found;
};

/* Walks the members of the object text p[0..len) (already validated) once and sets each named
 * member's value slice. A name written with escapes (\u006d…) is decoded before comparing, as
 * every JSON parser upstream would. Returns 0; -1 when the text is not an object; k + 1 when
 * picks[k] appears twice (parsers disagree on which copy wins, so the caller refuses). */
int json_scan_pick(const char *p, size_t len, struct json_pick *picks, size_t n);

/* The first member whose (decoded) name is none of picks' names: its name's slice (without
 * the quotes, as written), 1; 0 when every member is one of them; -1 not an object. */
int json_scan_other(const char *p, size_t len, const struct json_pick *picks, size_t n,
                    size_t *ks, size_t *ke);

/* The next element of the array whose text starts at p[*pos] ('[' on the first call, then
 * where the last call left off): its value slice, 1; 0 at the end; -1 not an array. */
int json_scan_next(const char *p, size_t len, size_t *pos, size_t *start, size_t *end);

#endif
