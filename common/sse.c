/* sse: text/event-stream parser after the WHATWG HTML "event stream interpretation" algorithm.
 * Owns the partial line and the event being built; any split of the input gives the same events. */
#include "common/sse.h"

#include <string.h>

#define SSE_DEFAULT_MAX_EVENT ((size_t)1 << 20)

/* saw_cr also carries one state of its own: SSE_AT_START while nothing but a prefix of a UTF-8
 * BOM has been fed (those bytes wait in p->line, since a BOM may be split across feeds too). */
enum { SSE_AT_START = -1 };

static const char sse_bom[] = "\xEF\xBB\xBF";

static int sse_skip_bom(struct sse_parser *p, const char *in, size_t len, size_t *pos);
static int sse_line(struct sse_parser *p, const char *s, size_t n, sse_event_cb cb, void *ud);
static int sse_field(struct sse_parser *p, const char *name, size_t nlen, const char *val,
                     size_t vlen);
static int sse_dispatch(struct sse_parser *p, sse_event_cb cb, void *ud);

void sse_init(struct sse_parser *p, size_t max_event)
{
    memset(p, 0, sizeof *p);
    p->line = (struct buf)BUF_INIT;
    p->event = (struct buf)BUF_INIT;
    p->data = (struct buf)BUF_INIT;
    p->max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    p->saw_cr = SSE_AT_START;
}

int sse_feed(struct sse_parser *p, const char *in, size_t len, sse_event_cb cb, void *ud)
{
    size_t i = 0;
    if (p->saw_cr == SSE_AT_START && sse_skip_bom(p, in, len, &i) < 0)
        return -1;
    while (i < len) {
        /* A CR ended the previous line; an LF right after it is part of the same line end,
         * even when it arrives in the next feed. */
        if (p->saw_cr) {
            p->saw_cr = 0;
            if (in[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t k = i;
        while (k < len && in[k] != '\n' && in[k] != '\r')
            k++;
        size_t n = k - i;
        /* The cap counts the line being read plus the data already held, so neither one long
         * line nor many short data lines can grow memory past max_event. */
        if (p->line.len + n + p->data.len > p->max_event)
            return -1;
        if (k == len)
            return buf_append(&p->line, in + i, n);
        p->saw_cr = in[k] == '\r';
        int rc;
        if (p->line.len == 0) {
            rc = sse_line(p, in + i, n, cb, ud);
        } else {
            if (buf_append(&p->line, in + i, n) < 0)
                return -1;
            rc = sse_line(p, p->line.data, p->line.len, cb, ud);
            buf_reset(&p->line);
        }
        if (rc < 0)
            return -1;
        i = k + 1;
    }
    return 0;
}

void sse_free(struct sse_parser *p)
{
    buf_free(&p->line);
    buf_free(&p->event);
    buf_free(&p->data);
    p->has_data = 0;
    p->saw_cr = 0;
}

/* Matches the start of the stream against the BOM, keeping matched bytes in p->line until all
 * three are seen (then they are dropped) or a byte differs (then they start an ordinary line). */
static int sse_skip_bom(struct sse_parser *p, const char *in, size_t len, size_t *pos)
{
    size_t i = *pos;
    while (i < len && p->saw_cr == SSE_AT_START) {
        if (in[i] != sse_bom[p->line.len]) {
            p->saw_cr = 0;
            break;
        }
        if (buf_append(&p->line, &in[i], 1) < 0)
            return -1;
        i++;
        if (p->line.len == sizeof sse_bom - 1) {
            buf_reset(&p->line);
            p->saw_cr = 0;
        }
    }
    *pos = i;
    return 0;
}

/* One complete line, without its line end. */
static int sse_line(struct sse_parser *p, const char *s, size_t n, sse_event_cb cb, void *ud)
{
    if (n == 0)
        return sse_dispatch(p, cb, ud);
    if (s[0] == ':')
        return 0;
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return sse_field(p, s, n, "", 0);
    size_t nlen = (size_t)(colon - s);
    const char *val = colon + 1;
    size_t vlen = n - nlen - 1;
    if (vlen && val[0] == ' ') {
        val++;
        vlen--;
    }
    return sse_field(p, s, nlen, val, vlen);
}

/* id and retry only matter to a reconnecting EventSource; a proxy relaying one response has no
 * use for them, and unknown fields are ignored by the spec. */
static int sse_field(struct sse_parser *p, const char *name, size_t nlen, const char *val,
                     size_t vlen)
{
    if (nlen == 4 && memcmp(name, "data", 4) == 0) {
        if (p->has_data && buf_append(&p->data, "\n", 1) < 0)
            return -1;
        if (buf_append(&p->data, val, vlen) < 0)
            return -1;
        p->has_data = 1;
        return 0;
    }
    if (nlen == 5 && memcmp(name, "event", 5) == 0) {
        buf_reset(&p->event);
        return buf_append(&p->event, val, vlen);
    }
    return 0;
}

/* A blank line: dispatch when at least one data line was seen, then start a fresh event either
 * way (the spec drops an event type that came without data). */
static int sse_dispatch(struct sse_parser *p, sse_event_cb cb, void *ud)
{
    int rc = 0;
    if (p->has_data) {
        const char *ev = p->event.data ? p->event.data : "";
        const char *data = p->data.data ? p->data.data : "";
        rc = cb(ud, ev, p->event.len, data, p->data.len) < 0 ? -1 : 0;
    }
    buf_reset(&p->event);
    buf_reset(&p->data);
    p->has_data = 0;
    return rc;
}
