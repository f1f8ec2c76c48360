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
#define TRACE_SPAN_KEY_MAX 48   /* attribute keys are string literals at most this long */

enum trace_kind { TRACE_KIND_INTERNAL = 1, TRACE_KIND_SERVER = 2, TRACE_KIND_CLIENT = 3 };
enum trace_attr_type { TRACE_ATTR_STR, TRACE_ATTR_INT, TRACE_ATTR_DOUBLE, TRACE_ATTR_CONTENT };

/* A slice of the span's text (or, for TRACE_ATTR_CONTENT, of its content); len 0: none. */
struct trace_text {
    uint16_t off, len;
};

struct trace_attr {
    const char *key;            /* a string literal: outlives the span */
    uint8_t type;
    union {
        int64_t i;
        double d;
        struct trace_text s;
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

/* A span from this thread's pool, its header reset; NULL when memory runs out. */
struct trace_span *trace_span_new(void);
/* Back to the pool it came from; any thread may call it (the exporter does). */
void trace_span_release(struct trace_span *s);
/* Copies n bytes of p (or of "a b" with the second call form) into the span's text. */
struct trace_text trace_span_text(struct trace_span *s, const char *p, size_t n);
struct trace_text trace_span_text2(struct trace_span *s, const char *a, const char *b);

/* Attributes; a NULL string value adds nothing. */
void trace_span_str(struct trace_span *s, const char *key, const char *val);
void trace_span_int(struct trace_span *s, const char *key, long v);
void trace_span_double(struct trace_span *s, const char *key, double v);
/* Prompt or answer text (at most max bytes), kept in the span's content buffer. */
void trace_span_content(struct trace_span *s, const char *key, const char *p, size_t n,
                        size_t max);

/* Appends the span as one OTLP JSON span object. -1 when memory runs out (b unchanged). */
int trace_span_encode(struct buf *b, const struct trace_span *s);

/* A request's trace from this thread's cache (zeroed), and back. */
struct trace *trace_pool_trace(void);
void trace_pool_trace_free(struct trace *t);
/* Frees every pool and what they hold; only once no thread makes or holds spans any more. */
void trace_pools_free(void);

#endif
