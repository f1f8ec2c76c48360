/* json_scan: byte-level helpers over JSON text that is already known to be valid (jansson
 * parsed it), for the hot path: find a top-level member's value without building a tree. */
#ifndef LLMUX_JSON_SCAN_H
#define LLMUX_JSON_SCAN_H

#include <stddef.h>

/* Finds the value of top-level member `key` (matched byte for byte, so a key written with
 * escapes is not found) in the object text p[0..len). On success sets [*start, *end) to the
 * value's bytes and returns 0; -1 when absent or the text is not an object. */
int json_scan_member(const char *p, size_t len, const char *key, size_t *start, size_t *end);

/* A structural check of an object's text: members, bracket nesting and string ends line up and
 * nothing follows the closing brace. Cheaper than a parse; catches garbage and truncation, not
 * every grammar error inside a value. 0 when it looks like one object, -1 otherwise. */
int json_scan_object(const char *p, size_t len);

#endif
