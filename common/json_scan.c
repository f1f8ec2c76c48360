/* json_scan: skip-based scanning of valid JSON text (see json_scan.h). */
#include "common/json_scan.h"

#include <string.h>

static size_t skip_ws(const char *p, size_t len, size_t i)
{
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* p[i] is '"': returns the index just past the closing quote, or len. */
static size_t skip_string(const char *p, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (p[i] == '\\')
            i++;
        else if (p[i] == '"')
            return i + 1;
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

int json_scan_object(const char *p, size_t len)
{
    size_t pos = 0;
    if (walk_object(p, len, &pos, NULL, NULL, NULL) < 0)
        return -1;
    return skip_ws(p, len, pos) == len ? 0 : -1;
}

int json_scan_member(const char *p, size_t len, const char *key, size_t *start, size_t *end)
{
    size_t pos = 0;
    return walk_object(p, len, &pos, key, start, end);
}
