/* json_assert: JSON helpers shared by the codec unit tests — parse a literal, compare a tree
 * with expected text regardless of key order (printing both sides when they differ). */
#ifndef LLMUX_TEST_JSON_ASSERT_H
#define LLMUX_TEST_JSON_ASSERT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include <jansson.h>

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        fail_msg("test JSON does not parse (%s): %s", e.text, text);
    return v;
}

/* Compares regardless of key order; prints both sides when they differ. */
static void assert_json_eq(const json_t *got, const char *want_text)
{
    json_t *want = parse(want_text);
    int eq = json_equal(got, want);
    if (!eq) {
        char *g = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        print_error("got  %s\nwant %s\n", g ? g : "(null)", w);
        free(g);
        free(w);
    }
    json_decref(want);
    assert_true(eq);
}

#endif
