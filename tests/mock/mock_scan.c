/* mock_scan: reading what a request body asks for without allocating — "@mock:" directives and
 * a JSON scanner that walks the raw body in place — plus the fail_first counters. */
#include "tests/mock/mock.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_DEPTH_MAX 64

static bool dir_char(char c);
static void dirs_item(struct mock_dirs *d, const char *k, size_t klen, const char *v, size_t vlen);
static const char *json_str_end(const char *p, const char *end);
static int hex4(const char *p, const char *end);
static void utf8_put(struct buf *out, uint32_t cp);

void mock_dirs_init(struct mock_dirs *d)
{
    d->raw[0] = '\0';
    d->raw_len = 0;
    d->delay_ms = d->status = d->retry_after = d->interval_ms = -1;
    d->reset_after = d->bytes = d->fail_first = -1;
    d->slow_ms = d->slow_first = d->slow_pct = -1;
    d->stream_n = 3;
    d->cache_read = d->cache_write = 0;
    d->reset = d->garbage = d->stall = d->tool = d->no_usage = false;
    d->invalid = d->echo_head = false;
    d->usage = 0;
}

static bool dir_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '=' || c == '.' || c == ',' || c == '-';
}

/* Parses a decimal value; a key whose value is no number is ignored, like an unknown key. */
static bool dir_num(const char *v, size_t vlen, long max, long *out)
{
    long n = 0;
    if (vlen == 0)
        return false;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        n = n * 10 + (v[i] - '0');
        if (n > max)
            n = max;
    }
    *out = n;
    return true;
}

static void dirs_item(struct mock_dirs *d, const char *k, size_t klen, const char *v, size_t vlen)
{
    static const struct { const char *key; size_t off; long max; } nums[] = {
        {"delay", offsetof(struct mock_dirs, delay_ms), 3600000},
        {"status", offsetof(struct mock_dirs, status), 599},
        {"retry_after", offsetof(struct mock_dirs, retry_after), 86400},
        {"stream", offsetof(struct mock_dirs, stream_n), MOCK_STREAM_MAX},
        {"interval", offsetof(struct mock_dirs, interval_ms), 3600000},
        {"reset_after", offsetof(struct mock_dirs, reset_after), MOCK_STREAM_MAX},
        {"bytes", offsetof(struct mock_dirs, bytes), MOCK_BYTES_MAX},
        {"fail_first", offsetof(struct mock_dirs, fail_first), 1000000000},
        {"slow", offsetof(struct mock_dirs, slow_ms), 3600000},
        {"slow_first", offsetof(struct mock_dirs, slow_first), 1000000000},
        {"slow_pct", offsetof(struct mock_dirs, slow_pct), 100},
        {"cache_read", offsetof(struct mock_dirs, cache_read), 1000000000},
        {"cache_write", offsetof(struct mock_dirs, cache_write), 1000000000},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strlen(nums[i].key) == klen && memcmp(nums[i].key, k, klen) == 0) {
            long n;
            if (dir_num(v, vlen, nums[i].max, &n))
                *(long *)(void *)((char *)d + nums[i].off) = n;
            return;
        }
    }
    if (klen == 5 && memcmp(k, "reset", 5) == 0)
        d->reset = true;
    else if (klen == 7 && memcmp(k, "garbage", 7) == 0)
        d->garbage = true;
    else if (klen == 5 && memcmp(k, "stall", 5) == 0)
        d->stall = true;
    else if (klen == 4 && memcmp(k, "tool", 4) == 0)
        d->tool = true;
    else if (klen == 8 && memcmp(k, "no_usage", 8) == 0)
        d->no_usage = true;
    else if (klen == 7 && memcmp(k, "invalid", 7) == 0)
        d->invalid = true;
    else if (klen == 9 && memcmp(k, "echo_head", 9) == 0)
        d->echo_head = true;
    else if (klen == 9 && memcmp(k, "neg_usage", 9) == 0)
        d->usage = 1;
    else if (klen == 10 && memcmp(k, "huge_usage", 10) == 0)
        d->usage = 2;
}

static void dirs_parse(struct mock_dirs *d, const char *s, const char *end)
{
    const char *stop = s;
    while (stop < end && dir_char(*stop))
        stop++;
    d->raw_len = (size_t)(stop - s) > MOCK_DIRS_MAX ? MOCK_DIRS_MAX : (size_t)(stop - s);
    memcpy(d->raw, s, d->raw_len);
    d->raw[d->raw_len] = '\0';
    while (s < stop) {
        const char *item_end = memchr(s, ',', (size_t)(stop - s));
        if (!item_end)
            item_end = stop;
        const char *eq = memchr(s, '=', (size_t)(item_end - s));
        if (eq)
            dirs_item(d, s, (size_t)(eq - s), eq + 1, (size_t)(item_end - eq - 1));
        else
            dirs_item(d, s, (size_t)(item_end - s), "", 0);
        s = item_end + 1;
    }
}

bool mock_dirs_find(struct mock_dirs *d, const char *hdr, size_t hdr_len,
                    const char *body, size_t body_len)
{
    mock_dirs_init(d);
    if (hdr) {
        dirs_parse(d, hdr, hdr + hdr_len);
        return true;
    }
    const char *m = body_len ? memmem(body, body_len, "@mock:", 6) : NULL;
    if (!m)
        return false;
    dirs_parse(d, m + 6, body + body_len);
    return true;
}

const char *json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *json_str_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
        else if ((unsigned char)*p < 0x20)
            return NULL;
    }
    return NULL;
}

static const char *json_scalar_end(const char *p, const char *end)
{
    static const char *const lits[] = {"true", "false", "null"};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(lits[i]);
        if ((size_t)(end - p) >= n && memcmp(p, lits[i], n) == 0)
            return p + n;
    }
    if (*p != '-' && (*p < '0' || *p > '9'))
        return NULL;
    const char *q = p + 1;
    while (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                       *q == '+' || *q == '-'))
        q++;
    return q;
}

const char *json_skip(const char *p, const char *end, int depth)
{
    p = json_ws(p, end);
    if (p >= end || depth > JSON_DEPTH_MAX)
        return NULL;
    if (*p == '"')
        return json_str_end(p, end);
    if (*p != '{' && *p != '[')
        return json_scalar_end(p, end);
    bool obj = *p == '{';
    char close = obj ? '}' : ']';
    p = json_ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (obj) {
            p = json_ws(p, end);
            if (p >= end || *p != '"' || !(p = json_str_end(p, end)))
                return NULL;
            p = json_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p++;
        }
        if (!(p = json_skip(p, end, depth + 1)))
            return NULL;
        p = json_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
}

/* Keys are compared as written: a key spelled with escapes never matches, which is fine for
 * the plain ASCII names the mock looks for. */
const char *json_member(const char *p, const char *end, const char *key)
{
    size_t klen = strlen(key);
    p = json_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = json_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *kend = json_str_end(p, end);
        if (!kend)
            return NULL;
        bool match = (size_t)(kend - p) == klen + 2 && memcmp(p + 1, key, klen) == 0;
        p = json_ws(kend, end);
        if (p >= end || *p != ':')
            return NULL;
        p = json_ws(p + 1, end);
        if (match)
            return p;
        if (!(p = json_skip(p, end, 1)))
            return NULL;
        p = json_ws(p, end);
        if (p >= end || *p != ',')
            return NULL;
        p = json_ws(p + 1, end);
    }
    return NULL;
}

bool json_iter_init(struct json_iter *it, const char *p, const char *end)
{
    p = p ? json_ws(p, end) : end;
    if (p >= end || *p != '[')
        return false;
    it->p = p + 1;
    it->end = end;
    it->first = true;
    return true;
}

const char *json_iter_next(struct json_iter *it)
{
    const char *p = json_ws(it->p, it->end);
    if (p >= it->end || *p == ']')
        return NULL;
    if (!it->first) {
        if (*p != ',')
            return NULL;
        p = json_ws(p + 1, it->end);
    }
    it->first = false;
    const char *next = json_skip(p, it->end, 1);
    if (!next)
        return NULL;
    it->p = next;
    return p;
}

static int hex4(const char *p, const char *end)
{
    int v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static void utf8_put(struct buf *out, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_append(out, u, n);
}

/* Decodes one escape at p (just after the backslash); returns the bytes consumed or -1. */
static int json_unescape(const char *p, const char *end, struct buf *out)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *e = p < end ? strchr(from, *p) : NULL;
    if (e && *e) {
        buf_append(out, &to[e - from], 1);
        return 1;
    }
    if (p >= end || *p != 'u')
        return -1;
    int hi = hex4(p + 1, end);
    if (hi < 0)
        return -1;
    if (hi >= 0xd800 && hi < 0xdc00 && end - p >= 11 && p[5] == '\\' && p[6] == 'u') {
        int lo = hex4(p + 7, end);
        if (lo >= 0xdc00 && lo < 0xe000) {
            utf8_put(out, 0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00));
            return 11;
        }
    }
    utf8_put(out, hi >= 0xd800 && hi < 0xe000 ? 0xfffd : (uint32_t)hi);
    return 5;
}

int json_decode_str(const char *p, const char *end, struct buf *out, long *budget)
{
    p = json_ws(p, end);
    if (p >= end || *p != '"')
        return -1;
    for (p++; p < end && *p != '"'; ) {
        bool starts_char = ((unsigned char)*p & 0xc0) != 0x80;
        if (starts_char && *budget <= 0)
            return 0;
        if (starts_char)
            (*budget)--;
        if (*p != '\\') {
            buf_append(out, p++, 1);
            continue;
        }
        int n = json_unescape(p + 1, end, out);
        if (n < 0)
            return -1;
        p += 1 + n;
    }
    return 0;
}

struct mock_fail_entry {
    struct mock_fail_entry *next;
    long count;
    size_t len;
    char key[];
};

static unsigned fail_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h % 256;
}

bool mock_fails_hit(struct mock_fails *f, const char *key, size_t len, long k)
{
    struct mock_fail_entry **slot = &f->slot[fail_hash(key, len)], *e;
    for (e = *slot; e; e = e->next)
        if (e->len == len && memcmp(e->key, key, len) == 0)
            break;
    if (!e) {
        e = malloc(sizeof *e + len);
        if (!e)
            return true;  /* out of memory: failing is the safe reading of "first K" */
        memcpy(e->key, key, len);
        e->len = len;
        e->count = 0;
        e->next = *slot;
        *slot = e;
    }
    return e->count++ < k;
}

void mock_fails_clear(struct mock_fails *f)
{
    for (size_t i = 0; i < 256; i++) {
        while (f->slot[i]) {
            struct mock_fail_entry *e = f->slot[i];
            f->slot[i] = e->next;
            free(e);
        }
    }
}
