/* json_valid: one iterative pass over the text with the container kinds kept in a bit stack,
 * so depth costs bits, not frames, and nothing is allocated (see json_valid.h). */
#include "common/json_valid.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define STACK_WORDS 8               /* 512 levels of bits; the caller's max_depth is lower */

struct scan {
    const unsigned char *p;
    size_t len, i;
    unsigned depth, max_depth;
    uint64_t kinds[STACK_WORDS];    /* bit set: object, clear: array */
    struct json_valid_stats st;
};

static void skip_ws(struct scan *s)
{
    while (s->i < s->len) {
        unsigned char c = s->p[s->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        s->i++;
    }
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One UTF-8 sequence of 2–4 bytes at s->i (RFC 3629: no overlongs, no surrogates). */
static int utf8_seq(struct scan *s)
{
    const unsigned char *p = s->p + s->i;
    size_t left = s->len - s->i;
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return -1;
    if (left < n || p[1] < lo || p[1] > hi)
        return -1;
    for (size_t k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xbf)
            return -1;
    s->i += n;
    return 0;
}

static int scan_escape(struct scan *s)
{
    if (++s->i >= s->len)
        return -1;
    switch (s->p[s->i]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        s->i++;
        return 0;
    case 'u':
        if (s->len - s->i < 5)
            return -1;
        for (size_t k = 1; k <= 4; k++)
            if (!is_hex(s->p[s->i + k]))
                return -1;
        s->i += 5;
        return 0;
    default:
        return -1;
    }
}

#define LITTLE_ENDIAN_LOAD (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

/* The end of the run of bytes from p[i] that need no check in a string (printable ASCII other
 * than '"' and '\\'), eight at a time: most of a body is such runs. */
static size_t plain_run(const unsigned char *p, size_t len, size_t i)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    while (len - i >= 8) {
        uint64_t w, q, b, stop;
        memcpy(&w, p + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        /* high bit set for a byte >= 0x80, < 0x20, '"' or '\\'; a borrow can only mark bytes
         * after a true one, so the lowest mark is exact (bytes are loaded little-endian) */
        stop = (w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high;
        if (stop && LITTLE_ENDIAN_LOAD)
            return i + (size_t)(__builtin_ctzll(stop) >> 3);
        if (stop)
            break;
        i += 8;
    }
    while (i < len && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
        i++;
    return i;
}

/* s->p[s->i] is '"'; leaves s->i past the closing quote, or at the first wrong byte. */
static int scan_string(struct scan *s)
{
    for (s->i++; (s->i = plain_run(s->p, s->len, s->i)) < s->len;) {
        unsigned char c = s->p[s->i];
        if (c == '"') {
            s->i++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if ((c == '\\' ? scan_escape(s) : utf8_seq(s)) < 0)
            return -1;
    }
    return -1;
}

static size_t digits(struct scan *s)
{
    size_t start = s->i;
    while (s->i < s->len && s->p[s->i] >= '0' && s->p[s->i] <= '9')
        s->i++;
    return s->i - start;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(struct scan *s)
{
    if (s->p[s->i] == '-')
        s->i++;
    if (s->i < s->len && s->p[s->i] == '0')
        s->i++;
    else if (digits(s) == 0)
        return -1;
    if (s->i < s->len && s->p[s->i] == '.') {
        s->i++;
        if (digits(s) == 0)
            return -1;
    }
    if (s->i < s->len && (s->p[s->i] == 'e' || s->p[s->i] == 'E')) {
        s->i++;
        if (s->i < s->len && (s->p[s->i] == '+' || s->p[s->i] == '-'))
            s->i++;
        if (digits(s) == 0)
            return -1;
    }
    return 0;
}

static int scan_literal(struct scan *s, const char *word, size_t n)
{
    if (s->len - s->i < n || memcmp(s->p + s->i, word, n) != 0)
        return -1;
    s->i += n;
    return 0;
}

static int push(struct scan *s, bool object)
{
    if (s->depth >= s->max_depth || s->depth >= STACK_WORDS * 64)
        return -1;
    uint64_t bit = (uint64_t)1 << (s->depth % 64);
    if (object)
        s->kinds[s->depth / 64] |= bit;
    else
        s->kinds[s->depth / 64] &= ~bit;
    s->depth++;
    s->st.containers++;
    return 0;
}

static bool top_is_object(const struct scan *s)
{
    unsigned d = s->depth - 1;
    return (s->kinds[d / 64] >> (d % 64)) & 1;
}

/* A member name and its colon; leaves s->i at the value. */
static int scan_key(struct scan *s)
{
    skip_ws(s);
    if (s->i >= s->len || s->p[s->i] != '"' || scan_string(s) < 0)
        return -1;
    skip_ws(s);
    if (s->i >= s->len || s->p[s->i] != ':')
        return -1;
    s->i++;
    s->st.members++;
    return 0;
}

/* One value at s->i, or the opening of a container (then *opened is set and the caller goes
 * on with its first element, or finds it empty). */
static int scan_value(struct scan *s, bool *opened)
{
    *opened = false;
    skip_ws(s);
    if (s->i >= s->len)
        return -1;
    unsigned char c = s->p[s->i];
    if (c == '{' || c == '[') {
        if (push(s, c == '{') < 0)
            return -1;
        s->i++;
        *opened = true;
        return 0;
    }
    s->st.scalars++;
    switch (c) {
    case '"': return scan_string(s);
    case 't': return scan_literal(s, "true", 4);
    case 'f': return scan_literal(s, "false", 5);
    case 'n': return scan_literal(s, "null", 4);
    default: return c == '-' || (c >= '0' && c <= '9') ? scan_number(s) : -1;
    }
}

/* After a value inside a container: ',' then the next element, or the closing bracket(s). */
static int scan_after(struct scan *s, bool *need_value)
{
    for (;;) {
        *need_value = false;
        if (s->depth == 0)
            return 0;
        skip_ws(s);
        if (s->i >= s->len)
            return -1;
        bool object = top_is_object(s);
        unsigned char c = s->p[s->i];
        if (c == ',') {
            s->i++;
            *need_value = true;
            return object ? scan_key(s) : 0;
        }
        if (c != (object ? '}' : ']'))
            return -1;
        s->i++;
        s->depth--;
    }
}

static int scan_all(struct scan *s)
{
    bool need = true;
    while (need) {
        bool opened;
        if (scan_value(s, &opened) < 0)
            return -1;
        if (opened) {
            skip_ws(s);
            if (s->i < s->len && s->p[s->i] == (top_is_object(s) ? '}' : ']')) {
                s->i++;
                s->depth--;
            } else {
                if (top_is_object(s) && scan_key(s) < 0)
                    return -1;
                continue;
            }
        }
        if (scan_after(s, &need) < 0)
            return -1;
    }
    skip_ws(s);
    return s->i == s->len ? 0 : -1;
}

int json_valid(const char *p, size_t len, unsigned max_depth, struct json_valid_stats *stats,
               size_t *err_at)
{
    struct scan s = {.p = (const unsigned char *)p, .len = len, .max_depth = max_depth};
    int rc = p ? scan_all(&s) : -1;
    if (rc < 0 && err_at)
        *err_at = s.i;
    if (stats)
        *stats = s.st;
    return rc;
}

int json_valid_object(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    if (i == len || p[i] != '{')
        return -1;
    return json_valid(p + i, len - i, JSON_VALID_DEPTH, NULL, NULL);
}

/* Measured on jansson 2.14 with glibc (malloc overhead included): an empty object 234 bytes,
 * an empty array 138, a member up to 96 with its name, an empty string 90, a number 42. */
size_t json_valid_tree_cost(const struct json_valid_stats *s, size_t len)
{
    return s->containers * 240 + s->members * 96 + s->scalars * 96 + len;
}

size_t json_valid_tree_budget(size_t len)
{
    return 4 * len + ((size_t)2 << 20);
}

json_t *json_valid_load(const char *p, size_t len, size_t flags, int *over)
{
    struct json_valid_stats st;
    if (over)
        *over = 0;
    if (json_valid(p, len, JSON_VALID_DEPTH, &st, NULL) < 0)
        return NULL;
    if (json_valid_tree_cost(&st, len) > json_valid_tree_budget(len)) {
        if (over)
            *over = 1;
        return NULL;
    }
    return json_loadb(p, len, flags, NULL);
}
