/* sse: incremental parser for text/event-stream (WHATWG HTML "server-sent events"),
 * fed arbitrary byte slices, delivering complete events through a callback. */
#ifndef LLMUX_SSE_H
#define LLMUX_SSE_H

#include <stddef.h>
#include "common/buf.h"

/* Called once per dispatched event. event is "" (len 0) when no "event:" field was given,
 * data is the joined "data:" lines (without the final newline). Return 0 to go on, -1 to stop. */
typedef int (*sse_event_cb)(void *ud, const char *event, size_t event_len,
                            const char *data, size_t data_len);

struct sse_parser {
    struct buf line;    /* partial line carried between feeds */
    struct buf event;   /* current event name */
    struct buf data;    /* current data, lines joined by '\n' */
    size_t max_event;   /* cap on line+data bytes of one event; 0 = 1 MiB */
    int saw_cr;         /* last byte fed was '\r' (a following '\n' belongs to it) */
    int has_data;
};

void sse_init(struct sse_parser *p, size_t max_event);
/* Returns 0, or -1 when an event exceeds max_event or the callback asked to stop. */
int sse_feed(struct sse_parser *p, const char *in, size_t len, sse_event_cb cb, void *ud);
void sse_free(struct sse_parser *p);

#endif
