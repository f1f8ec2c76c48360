/* trace_span: a finished span as a fixed-size record (ids, times, attributes, their text packed
 * in place), filled on a worker from that thread's pool, encoded as OTLP JSON by the exporter
 * thread and handed back to its pool through a lock-free stack: no malloc, free or JSON on a
 * loop per span. The pools also cache the per-request `struct trace`. */
#ifndef LLMUX_TRACE_SPAN_H
#define LLMUX_TRACE_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "daemon/trace.h"

#define TRACE_SPAN_ATTRS 16     /* attributes a span can carry (server 13, client 13) */
#define TRACE_SPAN_TEXT 1280    /* bytes of attribute text; what does not fit is truncated */
#define TRACE_SPAN_HEAD_MAX 96  /* an attribute's JSON head (TRACE_ATTR_HEAD) at most */
#define TRACE_SPAN_LIT_MAX 64   /* a literal value (TRACE_SPAN_LIT) at most */

enum trace_kind { TRACE_KIND_INTERNAL = 1, TRACE_KIND_SERVER = 2, TRACE_KIND_CLIENT = 3 };
enum trace_attr_type {
    TRACE_ATTR_STR, TRACE_ATTR_LIT, TRACE_ATTR_INT, TRACE_ATTR_DOUBLE, TRACE_ATTR_CONTENT
};

/* A slice of the span's text (or, for TRACE_ATTR_CONTENT, of its content); len 0: none. */
struct trace_text {
    uint16_t off, len;
};

/* An attribute's OTLP JSON up to its value, put together from a literal key at build time so
 * the exporter writes it with one copy. */
#define TRACE_ATTR_HEAD(key, type) "{\"key\":\"" key "\",\"value\":{\"" type "\":"
#define TRACE_LIT_LEN(lit) (lit), (sizeof(lit) - 1)

struct trace_attr {
    const char *head;           /* TRACE_ATTR_HEAD(…), a literal: outlives the span */
    uint8_t head_len, type;
    union {
        int64_t i;
        double d;
        struct trace_text s;
        struct {
            const char *p;      /* TRACE_ATTR_LIT: a static string, JSON-plain */
            size_t len;
        } lit;
    } v;
};

struct trace_pool;

struct trace_span {
    struct trace_span *next;    /* its pool's free list, or the stack handing it back */
    struct trace_pool *pool;    /* the thread's pool it came from */
    uint8_t trace_id[16], span_id[8], parent_id[8];     /* parent all zero: a root span */
    uint8_t kind, nattrs;
    uint64_t start_ns, end_ns;
    struct trace_text name, state, event, error;
    struct trace_attr attrs[TRACE_SPAN_ATTRS];
    char *content;              /* capture_content's prompt/answer text, malloc'd; or NULL */
    size_t content_len, content_cap;
    uint16_t text_len;
    char text[TRACE_SPAN_TEXT];
};

/* "000102…ff": a byte's two lower-case hex digits at [2 * byte]. */
extern const char trace_hex_pairs[513];

/* A span from this thread's pool, its header reset; NULL when memory runs out. */
struct trace_span *trace_span_new(void);
/* Back to the pool it came from; any thread may call it (the exporter does). */
void trace_span_release(struct trace_span *s);
/* Copies n bytes of p (or of "a b" with the second call form) into the span's text. */
struct trace_text trace_span_text(struct trace_span *s, const char *p, size_t n);
struct trace_text trace_span_text2(struct trace_span *s, const char *a, const char *b);

/* Attributes, by a literal key; a NULL string value adds nothing. STR copies and escapes its
 * value; LIT keeps a pointer to a static string that needs no escaping (outcome names, the
 * operation, the provider); CONTENT keeps at most max bytes of prompt or answer text. */
#define TRACE_SPAN_STR(s, key, val) \
    trace_span_str_h((s), TRACE_LIT_LEN(TRACE_ATTR_HEAD(key, "stringValue") "\""), (val))
#define TRACE_SPAN_LIT(s, key, val) \
    trace_span_lit_h((s), TRACE_LIT_LEN(TRACE_ATTR_HEAD(key, "stringValue") "\""), (val))
#define TRACE_SPAN_INT(s, key, v) \
    trace_span_int_h((s), TRACE_LIT_LEN(TRACE_ATTR_HEAD(key, "intValue") "\""), (v))
#define TRACE_SPAN_DOUBLE(s, key, v) \
    trace_span_double_h((s), TRACE_LIT_LEN(TRACE_ATTR_HEAD(key, "doubleValue")), (v))
#define TRACE_SPAN_CONTENT(s, key, p, n, max) \
    trace_span_content_h((s), TRACE_LIT_LEN(TRACE_ATTR_HEAD(key, "stringValue") "\""), (p), \
                         (n), (max))

void trace_span_str_h(struct trace_span *s, const char *head, size_t hlen, const char *val);
void trace_span_lit_h(struct trace_span *s, const char *head, size_t hlen, const char *val);
void trace_span_int_h(struct trace_span *s, const char *head, size_t hlen, long v);
void trace_span_double_h(struct trace_span *s, const char *head, size_t hlen, double v);
void trace_span_content_h(struct trace_span *s, const char *head, size_t hlen, const char *p,
                          size_t n, size_t max);

/* Appends the span as one OTLP JSON span object. -1 when memory runs out (b unchanged). */
int trace_span_encode(struct buf *b, const struct trace_span *s);

/* A request's trace from this thread's cache (zeroed), and back. */
struct trace *trace_pool_trace(void);
void trace_pool_trace_free(struct trace *t);
/* How many free spans a thread's pool keeps (set before any is made): a batch comes back at
 * once, so fewer than two batches' worth would send every other span back to malloc. */
void trace_pools_keep(unsigned spans);
/* Frees every pool and what they hold; only once no thread makes or holds spans any more. */
void trace_pools_free(void);

#endif
