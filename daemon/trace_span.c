/* trace_span: span records and their per-thread pools (owner thread takes, exporter gives back
 * through a lock-free stack), and the OTLP JSON encoder the exporter thread runs on them. */
#include "daemon/trace_span.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_POOL_TRACES 64    /* struct trace kept free per thread */

/* One per thread that makes spans. free and traces are the owner's alone; returned is pushed
 * by the exporter and taken whole by the owner (an exchange, so no ABA). */
struct trace_pool {
    struct trace_span *free;
    unsigned nfree;
    struct trace_span *returned;        /* atomic */
    struct trace *traces;
    unsigned ntraces;
    struct trace_pool *next;            /* every pool, for trace_pools_free */
};

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned pool_keep = 1024;       /* spans a thread keeps free (trace_pools_keep) */
static struct trace_pool *pools;
static unsigned pools_gen = 1;          /* bumped when the pools are freed */
static __thread struct trace_pool *my_pool;
static __thread unsigned my_gen;

static struct trace_pool *pool_mine(void)
{
    unsigned gen = __atomic_load_n(&pools_gen, __ATOMIC_ACQUIRE);
    if (my_pool && my_gen == gen)
        return my_pool;
    struct trace_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_lock(&pools_lock);
    p->next = pools;
    pools = p;
    pthread_mutex_unlock(&pools_lock);
    my_pool = p;
    my_gen = gen;
    return p;
}

/* What the exporter handed back becomes free again, up to pool_keep; the rest is freed. */
static void pool_take_returned(struct trace_pool *p)
{
    struct trace_span *s = __atomic_exchange_n(&p->returned, NULL, __ATOMIC_ACQUIRE);
    while (s) {
        struct trace_span *next = s->next;
        if (p->nfree < __atomic_load_n(&pool_keep, __ATOMIC_RELAXED)) {
            s->next = p->free;
            p->free = s;
            p->nfree++;
        } else {
            free(s);
        }
        s = next;
    }
}

struct trace_span *trace_span_new(void)
{
    struct trace_pool *p = pool_mine();
    if (!p)
        return NULL;
    if (!p->free)
        pool_take_returned(p);
    struct trace_span *s = p->free;
    if (s) {
        p->free = s->next;
        p->nfree--;
    } else if (!(s = malloc(sizeof *s))) {
        return NULL;
    }
    /* the header only: text and attributes are written before they are read */
    memset(s, 0, offsetof(struct trace_span, attrs));
    s->pool = p;
    s->content = NULL;
    s->content_len = s->content_cap = 0;
    s->text_len = 0;
    return s;
}

void trace_span_release(struct trace_span *s)
{
    free(s->content);
    s->content = NULL;
    struct trace_pool *p = s->pool;
    s->next = __atomic_load_n(&p->returned, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&p->returned, &s->next, s, true, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
        ;
}

struct trace *trace_pool_trace(void)
{
    struct trace_pool *p = pool_mine();
    struct trace *t = p ? p->traces : NULL;
    if (t) {
        p->traces = t->next_free;
        p->ntraces--;
    } else if (!(t = malloc(sizeof *t))) {
        return NULL;
    }
    memset(t, 0, offsetof(struct trace, state_buf));
    return t;
}

void trace_pool_trace_free(struct trace *t)
{
    struct trace_pool *p = pool_mine();
    if (!p || p->ntraces >= TRACE_POOL_TRACES) {
        free(t);
        return;
    }
    t->next_free = p->traces;
    p->traces = t;
    p->ntraces++;
}

void trace_pools_keep(unsigned spans)
{
    __atomic_store_n(&pool_keep, spans, __ATOMIC_RELAXED);
}

void trace_pools_free(void)
{
    pthread_mutex_lock(&pools_lock);
    struct trace_pool *p = pools;
    pools = NULL;
    __atomic_add_fetch(&pools_gen, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pools_lock);
    while (p) {
        struct trace_pool *next = p->next;
        pool_take_returned(p);
        for (struct trace_span *s = p->free, *n; s; s = n) {
            n = s->next;
            free(s);
        }
        for (struct trace *t = p->traces, *n; t; t = n) {
            n = t->next_free;
            free(t);
        }
        free(p);
        p = next;
    }
}

/* ---- filling ------------------------------------------------------------------------------- */

/* n bytes, cut back to a UTF-8 character boundary when they must be cut to fit room. */
static size_t fit_utf8(const char *p, size_t n, size_t room)
{
    if (n <= room)
        return n;
    while (room > 0 && ((unsigned char)p[room] & 0xc0) == 0x80)
        room--;
    return room;
}

struct trace_text trace_span_text(struct trace_span *s, const char *p, size_t n)
{
    n = fit_utf8(p, n, TRACE_SPAN_TEXT - s->text_len);
    struct trace_text t = {s->text_len, (uint16_t)n};
    memcpy(s->text + s->text_len, p, n);
    s->text_len = (uint16_t)(s->text_len + n);
    return t;
}

struct trace_text trace_span_text2(struct trace_span *s, const char *a, const char *b)
{
    struct trace_text t = trace_span_text(s, a, strlen(a));
    struct trace_text sp = trace_span_text(s, " ", 1);
    struct trace_text tb = trace_span_text(s, b, strlen(b));
    t.len = (uint16_t)(t.len + sp.len + tb.len);
    return t;
}

static struct trace_attr *attr_add(struct trace_span *s, const char *head, size_t hlen,
                                   uint8_t type)
{
    if (s->nattrs == TRACE_SPAN_ATTRS || hlen > TRACE_SPAN_HEAD_MAX)
        return NULL;
    struct trace_attr *a = &s->attrs[s->nattrs++];
    a->head = head;
    a->head_len = (uint8_t)hlen;
    a->type = type;
    return a;
}

void trace_span_str_h(struct trace_span *s, const char *head, size_t hlen, const char *val)
{
    struct trace_attr *a = val ? attr_add(s, head, hlen, TRACE_ATTR_STR) : NULL;
    if (a)
        a->v.s = trace_span_text(s, val, strlen(val));
}

void trace_span_lit_h(struct trace_span *s, const char *head, size_t hlen, const char *val)
{
    size_t n = val ? strlen(val) : 0;
    struct trace_attr *a = val && n <= TRACE_SPAN_LIT_MAX ? attr_add(s, head, hlen,
                                                                      TRACE_ATTR_LIT) : NULL;
    if (a) {
        a->v.lit.p = val;
        a->v.lit.len = n;
    }
}

void trace_span_int_h(struct trace_span *s, const char *head, size_t hlen, long v)
{
    struct trace_attr *a = attr_add(s, head, hlen, TRACE_ATTR_INT);
    if (a)
        a->v.i = v;
}

void trace_span_double_h(struct trace_span *s, const char *head, size_t hlen, double v)
{
    struct trace_attr *a = attr_add(s, head, hlen, TRACE_ATTR_DOUBLE);
    if (a)
        a->v.d = v;
}

void trace_span_content_h(struct trace_span *s, const char *head, size_t hlen, const char *p,
                          size_t n, size_t max)
{
    if (max > UINT16_MAX - s->content_len)
        max = UINT16_MAX - s->content_len;     /* offsets are 16 bits */
    n = fit_utf8(p, n, max);
    if (s->content_len + n > s->content_cap) {
        size_t cap = s->content_len + n;
        char *c = realloc(s->content, cap);
        if (!c)
            return;     /* the attribute is left out rather than the span */
        s->content = c;
        s->content_cap = cap;
    }
    struct trace_attr *a = attr_add(s, head, hlen, TRACE_ATTR_CONTENT);
    if (!a)
        return;
    a->v.s = (struct trace_text){(uint16_t)s->content_len, (uint16_t)n};
    memcpy(s->content + s->content_len, p, n);
    s->content_len += n;
}

/* ---- OTLP JSON (the exporter thread's) ------------------------------------------------------ */

/* Writers into room reserved up front by span_bound: no per-piece checks. */
#define PUT(w, lit) (memcpy((w), (lit), sizeof(lit) - 1), (w) + sizeof(lit) - 1)

/* Every byte the span's JSON can take: fixed parts, attribute heads and values, and text at
 * most 6x escaped. */
static size_t span_bound(const struct trace_span *s)
{
    return 512 + (size_t)s->nattrs * (TRACE_SPAN_HEAD_MAX + TRACE_SPAN_LIT_MAX + 40) +
           6 * ((size_t)s->text_len + s->content_len);
}

const char trace_hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* n (a multiple of 4: ids are 8 and 16 bytes) bytes in hex, four a turn. */
static char *put_hex(char *w, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 4, w += 8) {
        memcpy(w, trace_hex_pairs + 2 * p[i], 2);
        memcpy(w + 2, trace_hex_pairs + 2 * p[i + 1], 2);
        memcpy(w + 4, trace_hex_pairs + 2 * p[i + 2], 2);
        memcpy(w + 6, trace_hex_pairs + 2 * p[i + 3], 2);
    }
    return w;
}

static const char digit_pairs[] = "000102030405060708091011121314151617181920212223242526272829"
                                     "303132333435363738394041424344454647484950515253545556575859"
                                     "606162636465666768697071727374757677787980818283848586878889"
                                     "90919293949596979899";

/* Exactly eight digits of v (< 10^8), zero-padded, with 32-bit arithmetic. */
static char *put_8digits(char *w, uint32_t v)
{
    for (int i = 6; i >= 0; i -= 2) {
        memcpy(w + i, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    return w + 8;
}

/* Decimal digits of v, written from the right two at a time. */
static char *put_u32(char *w, uint32_t v)
{
    size_t d = v < 10 ? 1 : v < 100 ? 2 : v < 1000 ? 3 : v < 10000 ? 4 : v < 100000 ? 5
             : v < 1000000 ? 6 : v < 10000000 ? 7 : v < 100000000 ? 8 : v < 1000000000 ? 9
             : 10;
    char *p = w + d;
    while (v >= 100) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(p - 2, digit_pairs + 2 * v, 2);
    else
        p[-1] = (char)('0' + v);
    return w + d;
}

/* In 8-digit groups: a nanosecond timestamp (19 digits) costs three 64-bit divisions. */
static char *put_u64(char *w, uint64_t v)
{
    if (v <= UINT32_MAX)
        return put_u32(w, (uint32_t)v);
    uint64_t hi = v / 100000000u;
    if (hi <= UINT32_MAX) {
        w = put_u32(w, (uint32_t)hi);
    } else {
        w = put_u32(w, (uint32_t)(hi / 100000000u));
        w = put_8digits(w, (uint32_t)(hi % 100000000u));
    }
    return put_8digits(w, (uint32_t)(v % 100000000u));
}

/* A span's timestamp (nanoseconds since 1970, 19 digits). Spans of a batch are close in time:
 * the digits above the last eight (0.1 s) are kept from the previous call and reused when
 * they are the same, so a timestamp usually costs one division and eight digits. */
static char *put_time(char *w, uint64_t ns)
{
    static __thread uint64_t last_hi = UINT64_MAX;
    static __thread char last_digits[24];
    static __thread size_t last_len;
    uint64_t hi = ns / 100000000u;
    if (hi != last_hi) {
        last_len = (size_t)(put_u64(last_digits, hi) - last_digits);
        last_hi = hi;
    }
    if (hi) {
        memcpy(w, last_digits, last_len);
        return put_8digits(w + last_len, (uint32_t)(ns % 100000000u));
    }
    return put_u64(w, ns);
}

static char *put_i64(char *w, int64_t v)
{
    if (v >= 0)
        return put_u64(w, (uint64_t)v);
    *w++ = '-';
    return put_u64(w, (uint64_t)0 - (uint64_t)v);
}

/* Bytes a JSON string holds as they are (not '"', '\\', controls or DEL). */
static const uint8_t json_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* The inside of a JSON string, escaped as buf_json_escape does, a byte a table look-up. */
static char *put_esc(char *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        /* four plain bytes at a time: attribute text rarely needs an escape */
        while (i + 4 <= n && json_plain[u[i]] & json_plain[u[i + 1]] & json_plain[u[i + 2]] &
                                 json_plain[u[i + 3]]) {
            memcpy(w, s + i, 4);
            w += 4;
            i += 4;
        }
        if (i == n)
            break;
        unsigned char c = u[i];
        if (json_plain[c]) {
            *w++ = (char)c;
            continue;
        }
        *w++ = '\\';
        if (c == '"' || c == '\\') {
            *w++ = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            *w++ = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else {
            w = PUT(w, "u00");
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    return w;
}

static char *put_text(char *w, const struct trace_span *s, struct trace_text t)
{
    return put_esc(w, s->text + t.off, t.len);
}

static char *put_attr(char *w, const struct trace_span *s, const struct trace_attr *a)
{
    memcpy(w, a->head, a->head_len);
    w += a->head_len;
    switch (a->type) {
    case TRACE_ATTR_INT:
        w = put_i64(w, a->v.i);
        return PUT(w, "\"}}");
    case TRACE_ATTR_DOUBLE:
        w += snprintf(w, 32, "%.10g", a->v.d);
        return PUT(w, "}}");
    case TRACE_ATTR_LIT:
        memcpy(w, a->v.lit.p, a->v.lit.len);
        w += a->v.lit.len;
        return PUT(w, "\"}}");
    case TRACE_ATTR_CONTENT:
        w = put_esc(w, s->content + a->v.s.off, a->v.s.len);
        return PUT(w, "\"}}");
    default:
        w = put_text(w, s, a->v.s);
        return PUT(w, "\"}}");
    }
}

/* {"traceId":…,"attributes":[ */
static char *put_head(char *w, const struct trace_span *s)
{
    static const uint8_t zero[8];
    w = PUT(w, "{\"traceId\":\"");
    w = put_hex(w, s->trace_id, 16);
    w = PUT(w, "\",\"spanId\":\"");
    w = put_hex(w, s->span_id, 8);
    w = PUT(w, "\",");
    if (memcmp(s->parent_id, zero, 8)) {
        w = PUT(w, "\"parentSpanId\":\"");
        w = put_hex(w, s->parent_id, 8);
        w = PUT(w, "\",");
    }
    if (s->state.len) {
        w = PUT(w, "\"traceState\":\"");
        w = put_text(w, s, s->state);
        w = PUT(w, "\",");
    }
    w = PUT(w, "\"name\":\"");
    w = put_text(w, s, s->name);
    w = PUT(w, "\",\"kind\":");
    *w++ = (char)('0' + s->kind);
    w = PUT(w, ",\"startTimeUnixNano\":\"");
    w = put_time(w, s->start_ns);
    w = PUT(w, "\",\"endTimeUnixNano\":\"");
    w = put_time(w, s->end_ns);
    return PUT(w, "\",\"attributes\":[");
}

int trace_span_encode(struct buf *b, const struct trace_span *s)
{
    if (buf_reserve(b, span_bound(s)) < 0)
        return -1;
    char *w = put_head(b->data + b->len, s);
    for (unsigned i = 0; i < s->nattrs; i++) {
        if (i)
            *w++ = ',';
        w = put_attr(w, s, &s->attrs[i]);
    }
    w = PUT(w, "],\"events\":[");
    if (s->event.len) {
        w = PUT(w, "{\"timeUnixNano\":\"");
        w = put_time(w, s->end_ns);
        w = PUT(w, "\",\"name\":\"");
        w = put_text(w, s, s->event);
        w = PUT(w, "\"}");
    }
    w = PUT(w, "],\"status\":{");
    if (s->error.len) {
        w = PUT(w, "\"code\":2,\"message\":\"");
        w = put_text(w, s, s->error);
        *w++ = '"';
    }
    w = PUT(w, "}}");
    b->len = (size_t)(w - b->data);
    b->data[b->len] = '\0';
    return 0;
}
