/* json_scan: skip-based scanning of valid JSON text (see json_scan.h). */
#include "common/json_scan.h"

#include <string.h>

static size_t skip_ws(const char *p, size_t len, size_t i)
{
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* p[i] is '"': returns the index just past the closing quote, or len. Quotes are found with
 * memchr (most of a body is long strings); one preceded by an odd run of backslashes is
 * escaped. */
static size_t skip_string(const char *p, size_t len, size_t i)
{
    for (i++; i < len;) {
        const char *q = memchr(p + i, '"', len - i);
        if (!q)
            return len;
        size_t j = (size_t)(q - p), k = j;
        while (k > i && p[k - 1] == '\\')
            k--;
        if ((j - k) % 2 == 0)
            return j + 1;
        i = j + 1;
    }
    return len;
}

/* Returns the index just past the value starting at p[i], or len when it runs off the end. */
static size_t skip_value(const char *p, size_t len, size_t i)
{
    if (i >= len)
        return len;
    if (p[i] == '"')
        return skip_string(p, len, i);
    if (p[i] != '{' && p[i] != '[') {
        while (i < len && p[i] != ',' && p[i] != '}' && p[i] != ']' && p[i] != ' ' &&
               p[i] != '\n' && p[i] != '\r' && p[i] != '\t')
            i++;
        return i;
    }
    unsigned depth = 0;
    for (; i < len; i++) {
        if (p[i] == '"') {
            i = skip_string(p, len, i) - 1;
        } else if (p[i] == '{' || p[i] == '[') {
            depth++;
        } else if (p[i] == '}' || p[i] == ']') {
            if (--depth == 0)
                return i + 1;
        }
    }
    return len;
}

/* Walks the members of the object at p[*i]; calls back on each; leaves *i past the '}'. */
static int walk_object(const char *p, size_t len, size_t *pos, const char *key, size_t *start,
                       size_t *end)
{
    size_t klen = key ? strlen(key) : 0, i = skip_ws(p, len, *pos);
    if (i >= len || p[i] != '{')
        return -1;
    i = skip_ws(p, len, i + 1);
    if (i < len && p[i] == '}') {
        *pos = i + 1;
        return key ? -1 : 0;
    }
    while (i < len && p[i] == '"') {
        size_t kend = skip_string(p, len, i);
        if (kend >= len)
            return -1;
        int match = key && kend - i - 2 == klen && memcmp(p + i + 1, key, klen) == 0;
        i = skip_ws(p, len, kend);
        if (i >= len || p[i] != ':')
            return -1;
        i = skip_ws(p, len, i + 1);
        size_t vend = skip_value(p, len, i);
        if (vend >= len || vend == i)
            return -1;
        if (match) {
            *start = i;
            *end = vend;
            return 0;
        }
        i = skip_ws(p, len, vend);
        if (i < len && p[i] == '}') {
            *pos = i + 1;
            return key ? -1 : 0;
        }
        if (i >= len || p[i] != ',')
            return -1;
        i = skip_ws(p, len, i + 1);
    }
    return -1;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes a short ASCII member name p[0..n) (no quotes) into out; -1 when it is longer than
 * outlen - 1 or not ASCII, which none of the names we look for are. */
static int key_decode(const char *p, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            c = p[++i];
            if (c == 'u' && i + 4 < n) {
                int v = 0;
                for (int k = 1; k <= 4; k++)
                    v = hexval(p[i + k]) < 0 ? 0x100 : v * 16 + hexval(p[i + k]);
                if (v >= 0x80 || v == 0)
                    return -1;
                c = (char)v;
                i += 4;
            } else if (c != '"' && c != '\\' && c != '/') {
                return -1;      /* \n, \t… can't be in our names */
            }
        } else if ((unsigned char)c >= 0x80) {
            return -1;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* Which of picks the name key[0..klen) (raw, escapes allowed) is: its index, or -1. */
static int pick_index(const char *key, size_t klen, const struct json_pick *picks, size_t n)
{
    char name[40];
    const char *k = key;
    if (memchr(key, '\\', klen)) {
        if (key_decode(key, klen, name, sizeof name) < 0)
            return -1;
        k = name;
        klen = strlen(name);
    }
    for (size_t i = 0; i < n; i++)
        if (strlen(picks[i].name) == klen && memcmp(picks[i].name, k, klen) == 0)
            return (int)i;
    return -1;
}

/* Walks the members of an object text: each one's name slice (no quotes) and value slice go
 * to visit, which returns non-zero to stop (that value is returned); -1 not an object. */
static int walk_members(const char *p, size_t len,
                        int (*visit)(void *ud, size_t ks, size_t ke, size_t vs, size_t ve),
                        void *ud)
{
    size_t i = skip_ws(p, len, 0);
    if (i >= len || p[i] != '{')
        return -1;
    for (i = skip_ws(p, len, i + 1); i < len && p[i] == '"';) {
        size_t kend = skip_string(p, len, i);
        size_t vs = skip_ws(p, len, skip_ws(p, len, kend) + 1);
        size_t ve = skip_value(p, len, vs);
        int rc = visit(ud, i + 1, kend - 1, vs, ve);
        if (rc)
            return rc;
        i = skip_ws(p, len, ve);
        if (i >= len || p[i] != ',')
            break;
        i = skip_ws(p, len, i + 1);
    }
    return 0;
}

struct pick_walk {
    const char *p;
    struct json_pick *picks;
    size_t n, ks, ke;
};

static int on_pick(void *ud, size_t ks, size_t ke, size_t vs, size_t ve)
{
    struct pick_walk *w = ud;
    int k = pick_index(w->p + ks, ke - ks, w->picks, w->n);
    if (k < 0)
        return 0;
    if (w->picks[k].found)
        return k + 1;
    w->picks[k].found = true;
    w->picks[k].start = vs;
    w->picks[k].end = ve;
    return 0;
}

static int on_other(void *ud, size_t ks, size_t ke, size_t vs, size_t ve)
{
    struct pick_walk *w = ud;
    if (pick_index(w->p + ks, ke - ks, w->picks, w->n) >= 0)
        return 0;
    w->ks = ks;
    w->ke = ke;
    return 1;
}

int json_scan_pick(const char *p, size_t len, struct json_pick *picks, size_t n)
{
    struct pick_walk w = {p, picks, n, 0, 0};
    for (size_t k = 0; k < n; k++)
        picks[k].found = false;
    return walk_members(p, len, on_pick, &w);
}

int json_scan_other(const char *p, size_t len, const struct json_pick *picks, size_t n,
                    size_t *ks, size_t *ke)
{
    struct pick_walk w = {p, (struct json_pick *)picks, n, 0, 0};
    int rc = walk_members(p, len, on_other, &w);
    *ks = w.ks;
    *ke = w.ke;
    return rc;
}

int json_scan_next(const char *p, size_t len, size_t *pos, size_t *start, size_t *end)
{
    size_t i = skip_ws(p, len, *pos);
    if (i >= len || (p[i] != '[' && p[i] != ','))
        return i < len && p[i] == ']' ? 0 : -1;
    i = skip_ws(p, len, i + 1);
    if (i >= len || p[i] == ']')
        return 0;
    *start = i;
    *end = skip_value(p, len, i);
    *pos = *end;
    return 1;
}

int json_scan_member(const char *p, size_t len, const char *key, size_t *start, size_t *end)
{
    size_t pos = 0;
    return walk_object(p, len, &pos, key, start, end);
}

bool json_scan_may_have(const char *p, size_t len, const char *name)
{
    char quoted[64];
    size_t n = strlen(name);
    if (n + 2 > sizeof quoted || memmem(p, len, "\\u", 2))
        return true;
    quoted[0] = '"';
    memcpy(quoted + 1, name, n);
    quoted[n + 1] = '"';
    return memmem(p, len, quoted, n + 2) != NULL;
}
