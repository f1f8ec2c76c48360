/* conn: client connection state machine. One request at a time per connection: pipelined
 * requests wait, unparsed, in the read buffer, so answers leave strictly in order. While a
 * request runs the socket stays watched for EOF, so a client that goes away cancels its work. */
#include "daemon/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/http_status.h"
#include "common/log.h"
#include "daemon/budget.h"
#include "daemon/cost.h"
#include "daemon/http_parser.h"
#include "daemon/keylimit.h"
#include "daemon/request.h"
#include "daemon/router.h"
#include "daemon/worker.h"

#define READ_CHUNK 4096
#define PIPELINE_SLACK 65536    /* bytes read ahead while a request runs */
#define LINGER_SECONDS 2.0

enum conn_state { CONN_IDLE, CONN_HEAD, CONN_BODY, CONN_BUSY, CONN_LINGER };

struct conn {
    struct worker *w;
    struct conn *prev, *next;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    struct buf in, out;
    size_t out_sent;
    struct request *req;
    size_t head_len;
    uint64_t body_len;              /* Content-Length, or chunked bytes decoded so far */
    struct http_chunked chunked;
    unsigned char state;
    bool close_after, above_high, chunked_body, reading, broken;
    char peer[REQUEST_CLIENT_MAX];  /* "addr:port", "[v6]:port" or "unix" */
    bool anthropic_errors;      /* the request being read is for /v1/messages*: conn_error
                                 * answers in Anthropic's error shape */
    bool fresh;                     /* no head yet since accept: header_timeout runs from then */
};

static void on_read(struct ev_loop *loop, ev_io *io, int revents);
static void on_write(struct ev_loop *loop, ev_io *io, int revents);
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents);
static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static struct buf *out_buf(struct conn *c);
static void out_commit(struct conn *c, int rc);

static void sink_respond(struct request *r, int status, const char *body, size_t len);
static void sink_stream_start(struct request *r, int status);
static bool sink_stream_data(struct request *r, const char *p, size_t n);
static void sink_stream_end(struct request *r, bool complete);
static void sink_ended(struct request *r);

static const struct sink_ops conn_sink = {
    sink_respond, sink_stream_start, sink_stream_data, sink_stream_end, sink_ended,
};

static const struct conf_limits *limits(const struct conn *c)
{
    return &c->w->conf->limits;
}

/* One timer per connection, re-armed at each phase change (never per byte). */
static void set_timer(struct conn *c, uint64_t ms)
{
    ev_timer_stop(c->w->loop, &c->timer);
    if (ms) {
        ev_timer_set(&c->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(c->w->loop, &c->timer);
    }
}

static void enter(struct conn *c, enum conn_state s)
{
    const struct conf_limits *l = limits(c);
    c->state = (unsigned char)s;
    switch (s) {
    case CONN_IDLE: set_timer(c, l->idle_timeout_ms); break;
    case CONN_HEAD: set_timer(c, l->header_timeout_ms); break;
    case CONN_BODY: set_timer(c, l->body_timeout_ms); break;
    case CONN_BUSY: set_timer(c, 0); break;
    case CONN_LINGER: set_timer(c, (uint64_t)(LINGER_SECONDS * 1000)); break;
    }
}

static void reading(struct conn *c, bool on)
{
    if (on == c->reading)
        return;
    c->reading = on;
    if (on)
        ev_io_start(c->w->loop, &c->rio);
    else
        ev_io_stop(c->w->loop, &c->rio);
}

/* Formatted once per connection, so each access-log line costs nothing more. */
static void peer_format(char *out, size_t cap, const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN] = "";
    if (sa && len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
    } else if (sa && len >= sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(out, cap, "unix");
    }
}

void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->fd = fd;
    peer_format(c->peer, sizeof c->peer, peer, peer_len);
    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    ev_timer_init(&c->timer, on_timer, 0., 0.);
    c->rio.data = c->wio.data = c->timer.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    METRIC_INC(w->m.conns_open);
    METRIC_INC(w->m.conns_accepted);
    /* A connection that says nothing must not hold a slot for idle_timeout: header_timeout
     * runs from accept until its first head is complete (slow bytes don't re-arm it). */
    enter(c, CONN_IDLE);
    c->fresh = true;
    set_timer(c, limits(c)->header_timeout_ms);
    reading(c, true);
}

static void conn_close(struct conn *c)
{
    struct worker *w = c->w;
    if (c->req) {
        request_end(c->req, OUTCOME_CLIENT_DISCONNECT);  /* no-op when it already ended */
        request_free(c->req);
    }
    ev_io_stop(w->loop, &c->rio);
    ev_io_stop(w->loop, &c->wio);
    ev_timer_stop(w->loop, &c->timer);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    METRIC_DEC(w->m.conns_open);
    free(c);
    worker_conn_closed(w);
}

/* After the last byte of a "close" answer: stop sending, read and drop what the client still
 * sends for a moment, so closing doesn't RST the answer away (nginx's lingering close). */
static void start_linger(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    buf_free(&c->in);
    enter(c, CONN_LINGER);
    reading(c, true);
}

/* Writes what it can. Returns -1 when the socket is dead. */
static int flush(struct conn *c)
{
    while (c->out_sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_sent += (size_t)n;
        METRIC_ADD(c->w->m.bytes_out, (uint64_t)n);
        if (c->state == CONN_BUSY)      /* progress re-arms the send timeout */
            set_timer(c, limits(c)->send_timeout_ms);
    }
    if (c->out_sent == c->out.len) {
        buf_free(&c->out);
        c->out_sent = 0;
        ev_io_stop(c->w->loop, &c->wio);
        if (c->state == CONN_BUSY)
            set_timer(c, 0);
    } else {
        ev_io_start(c->w->loop, &c->wio);
        if (!ev_is_active(&c->timer))
            set_timer(c, limits(c)->send_timeout_ms);
    }
    return 0;
}

static size_t pending(const struct conn *c)
{
    return c->out.len - c->out_sent;
}

/* Queues bytes and tries to send at once (one syscall in the common case). A write error is
 * handled by on_write, never here: this runs inside other objects' callbacks. */
static void queue(struct conn *c, const char *p, size_t n)
{
    out_commit(c, buf_append(out_buf(c), p, n));
}

/* The output buffer to append to, emptied first when everything in it was sent. */
static struct buf *out_buf(struct conn *c)
{
    if (c->out_sent > 0 && c->out_sent == c->out.len) {
        buf_reset(&c->out);
        c->out_sent = 0;
    }
    return &c->out;
}

/* After appending to out_buf (rc: the appends' result): sends what it can at once. */
static void out_commit(struct conn *c, int rc)
{
    if (rc < 0) {
        c->broken = true;       /* an answer with a hole can't be sent: on_write closes */
        ev_io_start(c->w->loop, &c->wio);
        return;
    }
    if (flush(c) < 0)
        ev_io_start(c->w->loop, &c->wio);
}

static const char *http_date(void)
{
    static __thread char date[40];
    static __thread time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return date;
}

/* Appends "Name: value\r\n". */
static int put_field(struct buf *h, const char *name, const char *value)
{
    return buf_puts(h, name) | buf_puts(h, ": ") | buf_puts(h, value) | buf_puts(h, "\r\n");
}

/* The head's first lines and the request's own fields, appended without a printf (this runs
 * for every answer); -1 when memory ran out. */
static int put_head(struct conn *c, struct buf *h, int status, const struct request *r)
{
    int rc = buf_puts(h, "HTTP/1.1 ") | buf_put_u64(h, (unsigned)status) | buf_puts(h, " ") |
             buf_puts(h, http_status_reason(status)) | buf_puts(h, "\r\nServer: llmux\r\n") |
             put_field(h, "Date", http_date());
    if (r) {
        rc |= put_field(h, "X-Request-Id", r->id);
        if (r->upstream)
            rc |= put_field(h, "X-Llmux-Upstream", r->upstream) |
                  buf_puts(h, "X-Llmux-Attempts: ") | buf_put_u64(h, r->attempts) |
                  buf_puts(h, "\r\n");
        if (r->retry_after_s >= 0 && (status == 429 || status == 503))
            rc |= buf_printf(h, "Retry-After: %ld\r\n", (long)r->retry_after_s);
        if (r->allow)
            rc |= put_field(h, "Allow", r->allow);
        if (r->location[0])
            rc |= put_field(h, "Location", r->location);
        keylimit_headers(r, h);
        budget_headers(r, h);
        if (r->priced && !r->streaming) {     /* a stream's comes last, in an SSE comment */
            char cost[32];
            cost_format(cost, sizeof cost, r->cost_usd);
            rc |= put_field(h, "X-Llmux-Cost-Usd", cost);
        }
    }
    if (c->close_after || c->w->draining)
        rc |= buf_puts(h, "Connection: close\r\n");
    return rc;
}

/* Head and body go straight into the connection's output buffer: one copy, one flush. */
static void sink_respond(struct request *r, int status, const char *body, size_t len)
{
    struct conn *c = r->owner;
    struct buf *o = out_buf(c);
    size_t mark = o->len;
    /* room for a usual head and the body at once: one allocation, not a doubling series */
    int rc = buf_reserve(o, 512 + len);
    rc |= put_head(c, o, status, r) | buf_puts(o, "Content-Type: ") |
             buf_puts(o, r->content_type ? r->content_type : "application/json") |
             buf_puts(o, "\r\nContent-Length: ") | buf_put_u64(o, len) |
             buf_puts(o, "\r\n\r\n") | buf_append(o, body, len);
    if (rc < 0 && o->data) {
        o->len = mark;      /* no half answer: out_commit marks the connection broken */
        o->data[mark] = '\0';
    }
    out_commit(c, rc);
}

static void sink_stream_start(struct request *r, int status)
{
    struct conn *c = r->owner;
    struct buf h = BUF_INIT;
    put_head(c, &h, status, r);
    buf_printf(&h, "Content-Type: %s\r\nCache-Control: no-cache\r\n"
               "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n",
               r->content_type ? r->content_type : "text/event-stream");
    queue(c, h.data, h.len);
    buf_free(&h);
}

static bool sink_stream_data(struct request *r, const char *p, size_t n)
{
    struct conn *c = r->owner;
    char size[24];
    int k = snprintf(size, sizeof size, "%zx\r\n", n);
    if (n) {
        buf_append(&c->out, size, (size_t)k);
        buf_append(&c->out, p, n);
        queue(c, "\r\n", 2);
    }
    c->above_high = pending(c) > limits(c)->stream_high_water;
    return c->above_high;
}

static void sink_stream_end(struct request *r, bool complete)
{
    struct conn *c = r->owner;
    if (complete) {
        queue(c, "0\r\n\r\n", 5);
    } else {
        /* No last-chunk: the client sees a truncated body, never a clean end. */
        c->close_after = true;
        ev_io_start(c->w->loop, &c->wio);
    }
}

static void sink_ended(struct request *r)
{
    struct conn *c = r->owner;
    /* on_write moves on to the next request. With nothing left to send, feeding the event
     * runs it in this loop iteration without an epoll_ctl round trip. */
    if (pending(c))
        ev_io_start(c->w->loop, &c->wio);
    else
        ev_feed_event(c->w->loop, &c->wio, EV_WRITE);
}

/* An error found before a request object exists (parse errors, limits, timeouts): answer it
 * and close, since the byte stream can no longer be trusted. */
static void conn_error(struct conn *c, int status, const char *message)
{
    struct buf b = BUF_INIT, body = BUF_INIT;
    c->close_after = true;
    if (c->anthropic_errors) {
        buf_printf(&body, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"",
                   anthropic_error_type(status));
        buf_json_escape(&body, message, strlen(message));
        buf_puts(&body, "\"}}");
    } else {
        buf_puts(&body, "{\"error\":{\"message\":\"");
        buf_json_escape(&body, message, strlen(message));
        buf_printf(&body, "\",\"type\":\"%s\",\"param\":null,\"code\":null}}",
                   status == 408 ? "timeout_error" : "invalid_request_error");
    }
    put_head(c, &b, status, NULL);
    buf_printf(&b, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", body.len,
               body.data);
    METRIC_INC(c->w->m.requests[ROUTE_OTHER][metrics_status_slot(status)]);
    METRIC_INC(c->w->m.outcomes[OUTCOME_REJECTED]);
    queue(c, b.data, b.len);
    buf_free(&b);
    buf_free(&body);
    reading(c, false);
    enter(c, CONN_BUSY);
    if (pending(c) == 0)
        start_linger(c);
}

static const char *parse_error_message(int status)
{
    switch (status) {
    case 413: return "request body too large";
    case 414: return "request line too long";
    case 431: return "request header fields too large";
    case 417: return "unsupported expectation";
    case 501: return "unsupported transfer coding";
    case 505: return "HTTP version not supported";
    default: return "malformed HTTP request";
    }
}

static struct http_limits parser_limits(const struct conn *c)
{
    const struct conf_limits *l = limits(c);
    struct http_limits lim = {
        .max_request_line = l->max_request_line,
        .max_header_bytes = l->max_header_bytes,
        .max_headers = l->max_headers < HTTP_MAX_HEADERS ? l->max_headers : HTTP_MAX_HEADERS,
        .max_body = l->max_body_bytes,
    };
    return lim;
}

/* parsed: the head as conn_process parsed it in this same call, its slices still in place;
 * NULL when the body came later or the buffer moved, and the head is parsed again (its
 * slices must point into the buffer as it is now). */
static void dispatch(struct conn *c, const struct http_head *parsed)
{
    struct http_head again;
    if (!parsed) {
        struct http_limits lim = parser_limits(c);
        int status = 0;
        http_parse_head(c->in.data, c->head_len, &lim, &again, &status);
        parsed = &again;
    }
    const struct http_head *h = parsed;
    c->close_after = c->close_after || !h->keep_alive;
    struct request *r = request_new(c->w, c->w->conf, &conn_sink, c, ROUTE_OTHER);
    if (!r) {
        conn_error(c, 503, "out of memory");
        return;
    }
    c->req = r;
    const struct http_header *ua = http_find_header(h, "user-agent");
    request_set_client(r, c->peer, ua ? ua->value.p : NULL, ua ? ua->value.len : 0);
    enter(c, CONN_BUSY);
    const char *body = c->in.data + c->head_len;
    size_t body_len = (size_t)c->body_len;
    router_dispatch(r, h, body, body_len);
    /* The request copied what it needs; drop its bytes, keep any pipelined ones. */
    buf_consume(&c->in, c->head_len + body_len);
    if (c->in.len == 0)
        buf_free(&c->in);       /* nothing pipelined: don't hold 4 KiB+ while the upstream works */
    else if (c->in.len > PIPELINE_SLACK)
        reading(c, false);
}

/* Parses what is buffered; leaves the connection waiting for bytes, busy, or closing. */
static void conn_process(struct conn *c)
{
    struct http_limits lim = parser_limits(c);
    struct http_head head;
    int status = 0;
    bool head_kept = false;     /* head's slices still point into c->in */
    if (c->state == CONN_IDLE || c->state == CONN_HEAD) {
        head.path.len = 0;
        int n = http_parse_head(c->in.data, c->in.len, &lim, &head, &status);
        c->anthropic_errors = head.path.len >= 12 && !memcmp(head.path.p, "/v1/messages", 12);
        if (n == -2) {
            if (c->state == CONN_IDLE && c->in.len && c->fresh)
                c->state = CONN_HEAD;       /* the timer since accept keeps running */
            else if (c->state == CONN_IDLE && c->in.len)
                enter(c, CONN_HEAD);
            return;
        }
        if (n < 0) {
            conn_error(c, status, parse_error_message(status));
            return;
        }
        c->fresh = false;
        head_kept = true;
        c->head_len = (size_t)n;
        c->body_len = head.content_length > 0 ? (uint64_t)head.content_length : 0;
        c->chunked_body = head.chunked;
        http_chunked_init(&c->chunked);
        if (c->w->draining)
            c->close_after = true;
        enter(c, CONN_BODY);
        if (head.expect_continue && c->in.len == c->head_len && (head.chunked || c->body_len))
            queue(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        size_t arrived = c->in.len - c->head_len;
        size_t missing = c->body_len > arrived ? (size_t)(c->body_len - arrived) : 0;
        if (c->in.cap - c->in.len < missing)
            head_kept = false;          /* the reserve moves the buffer the head points into */
        if (missing && buf_reserve(&c->in, missing) < 0) {
            conn_error(c, 413, "request body too large");
            return;
        }
    }
    if (c->state != CONN_BODY)
        return;
    if (c->chunked_body) {
        size_t have = c->in.len - c->head_len - (size_t)c->body_len;
        char *start = c->in.data + c->head_len + c->body_len;
        long rest = http_chunked_decode(&c->chunked, start, &have, lim.max_body, &status);
        if (rest == -1) {
            conn_error(c, status, parse_error_message(status));
            return;
        }
        c->body_len += have;
        c->in.len = c->head_len + (size_t)c->body_len + (rest >= 0 ? (size_t)rest : 0);
        if (rest == -2)
            return;
        c->chunked_body = false;
    } else if (c->in.len - c->head_len < c->body_len) {
        return;
    }
    dispatch(c, head_kept ? &head : NULL);
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = io->data;
    if (buf_reserve(&c->in, READ_CHUNK) < 0) {
        conn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        /* EOF or reset: a request still running is cancelled with everything it owns. */
        conn_close(c);
        return;
    }
    if (c->state == CONN_LINGER)
        return;     /* discarded */
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    if (c->state == CONN_BUSY) {
        if (c->in.len > PIPELINE_SLACK)
            reading(c, false);  /* resumes when the current answer is done */
        return;
    }
    conn_process(c);
}

/* The current request ended and its answer is flushed: go on with the next, or close. */
static void next_request(struct conn *c)
{
    request_free(c->req);
    c->req = NULL;
    c->above_high = false;
    if (c->close_after) {
        start_linger(c);
        return;
    }
    if (c->in.len == 0)
        buf_free(&c->in);   /* an idle keep-alive connection holds no buffer */
    enter(c, CONN_IDLE);
    reading(c, true);
    if (c->in.len)
        conn_process(c);
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents)
{
    struct conn *c = io->data;
    if (c->broken || flush(c) < 0) {
        conn_close(c);
        return;
    }
    if (c->req && !c->req->ended && c->above_high &&
        pending(c) < limits(c)->stream_low_water) {
        c->above_high = false;
        request_drained(c->req);
        return;
    }
    if (pending(c) || (c->req && !c->req->ended))
        return;
    if (c->req) {
        next_request(c);
    } else if (c->close_after && c->state == CONN_BUSY) {
        start_linger(c);        /* a conn_error answer is out */
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct conn *c = t->data;
    switch (c->state) {
    case CONN_HEAD:
        conn_error(c, 408, "timed out waiting for the request headers");
        break;
    case CONN_BODY:
        conn_error(c, 408, "timed out waiting for the request body");
        break;
    default:    /* idle keep-alive, linger over, or a client that stopped reading */
        conn_close(c);
    }
}

void conn_drain_idle(struct worker *w)
{
    struct conn *c = w->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (!c->req && (c->state == CONN_IDLE))
            conn_close(c);
        else
            c->close_after = true;
    }
}

void conn_abort_all(struct worker *w)
{
    struct conn *c = w->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->req && !c->req->ended) {
            c->req->retry_after_s = 1;
            request_fail(c->req, 503, "server_error", "shutting_down", NULL,
                         "the gateway is shutting down", OUTCOME_SHUTDOWN);
            flush(c);
        }
        conn_close(c);
    }
}
