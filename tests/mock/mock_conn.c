/* mock_conn: one client connection of the mock upstream — reading requests, counting them,
 * and playing out each one's directives (delay, errors, streams, stalls, resets) on libev. */
#include "tests/mock/mock.h"
#include "common/http_status.h"

#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define READ_CHUNK 16384
#define OUT_HIGH (64 * 1024)        /* stream steps are queued while less than this is unsent */
#define OUT_COMPACT (256 * 1024)    /* sent bytes dropped from the queue past this much */
#define READ_AHEAD_MAX (1 << 20)    /* bytes read past a busy request before reading pauses */
#define BUF_KEEP (1 << 20)          /* a buffer grown past this is released between requests */

enum conn_state { CONN_IDLE, CONN_DELAY, CONN_WRITE, CONN_STREAM, CONN_STALL };

struct mock_conn {
    struct mock_conn *prev, *next;
    struct mock_server *srv;
    int fd;
    ev_io rio, wio;
    ev_timer timer;                 /* delay, then stream interval */
    enum conn_state state;
    bool counted;                   /* in accepted/connections (a control conn is taken out) */
    bool used;                      /* has carried a request */
    bool api;                       /* the current request counts in stats */
    struct buf in, dechunked;
    struct mock_req req;
    struct buf head, body;          /* queued output, sent together by one sendmsg */
    size_t out_off;
    int status;
    enum mock_api kind;
    int route_status;               /* 404/405 when the path or method is not served */
    struct mock_dirs dirs;
    bool fail;                      /* failure directives apply (fail_first not yet used up) */
    struct mock_reply reply;
    long step, stop_step;           /* next stream step; step where reset_after cuts, or -1 */
};

static int conn_process(struct mock_conn *c);
static int conn_answer(struct mock_conn *c);
static int conn_pump(struct mock_conn *c);
static int conn_done(struct mock_conn *c);

static void conn_log(struct mock_conn *c, const char *outcome)
{
    int tlen = c->req.target_len > 200 ? 200 : (int)c->req.target_len;
    mock_log(c->srv, "mock: %.*s %.*s %d %s%s%s\n", (int)c->req.method_len, c->in.data, tlen,
             c->in.data + c->req.target_off, c->status, outcome, c->dirs.raw_len ? " @mock:" : "",
             c->dirs.raw);
}

static void buf_trim(struct buf *b)
{
    if (b->cap > BUF_KEEP)
        buf_free(b);
    else
        buf_reset(b);
}

void mock_conn_free(struct mock_conn *c, bool rst)
{
    struct mock_server *s = c->srv;
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->timer);
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->counted)
        s->st.connections--;
    buf_free(&c->in);
    buf_free(&c->dechunked);
    buf_free(&c->head);
    buf_free(&c->body);
    reply_free(&c->reply);
    free(c);
}

/* The peer closed or reset: a request it was waiting for counts as aborted. */
static int conn_gone(struct mock_conn *c)
{
    if (c->state != CONN_IDLE && c->api) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        c->srv->st.last_abort_ns = (unsigned long long)ts.tv_sec * 1000000000ull +
                                   (unsigned long long)ts.tv_nsec;
        c->srv->st.aborted++;
        c->srv->st.inflight--;
        conn_log(c, "aborted");
    }
    mock_conn_free(c, false);
    return -1;
}

/* The reset directive: the mock ends the exchange itself, which counts as completed. */
static int conn_reset(struct mock_conn *c)
{
    if (c->api) {
        c->srv->st.completed++;
        c->srv->st.resets++;
        c->srv->st.inflight--;
        conn_log(c, "reset");
    }
    mock_conn_free(c, true);
    return -1;
}

static size_t out_pending(const struct mock_conn *c)
{
    return c->head.len + c->body.len - c->out_off;
}

/* Sends queued output; 1 when all is out, 0 when the socket is full, -1 on error. */
static int out_send(struct mock_conn *c)
{
    for (;;) {
        size_t hl = c->head.len, bo = c->out_off > hl ? c->out_off - hl : 0;
        if (out_pending(c) == 0) {
            buf_reset(&c->head);
            buf_reset(&c->body);
            c->out_off = 0;
            return 1;
        }
        struct iovec iov[2];
        struct msghdr m = {.msg_iov = iov};
        if (c->out_off < hl)
            iov[m.msg_iovlen++] = (struct iovec){c->head.data + c->out_off, hl - c->out_off};
        if (c->body.len > bo)
            iov[m.msg_iovlen++] = (struct iovec){c->body.data + bo, c->body.len - bo};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->out_off >= hl && c->out_off > OUT_COMPACT) {
                buf_consume(&c->body, bo);
                buf_reset(&c->head);
                c->out_off = 0;
            }
            return 0;
        }
        if (n < 0)
            return -1;
        c->out_off += (size_t)n;
    }
}

static void conn_head(struct mock_conn *c, int status, const char *ctype, long long clen,
                      long retry_after)
{
    struct buf *h = &c->head;
    c->status = status;
    buf_printf(h, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, http_status_reason(status), ctype);
    if (clen >= 0)
        buf_printf(h, "Content-Length: %lld\r\n", clen);
    else
        buf_puts(h, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    if (retry_after >= 0)
        buf_printf(h, "Retry-After: %ld\r\n", retry_after);
    if (!c->req.keep_alive)
        buf_puts(h, "Connection: close\r\n");
    else if (c->req.http10)
        buf_puts(h, "Connection: keep-alive\r\n");
    buf_puts(h, "\r\n");
}

/* Queues a whole response whose body is already in c->body, and starts sending it. */
static int answer_body(struct mock_conn *c, int status, const char *ctype, long retry_after)
{
    conn_head(c, status, ctype, (long long)c->body.len, retry_after);
    c->state = CONN_WRITE;
    return conn_pump(c);
}

static bool target_is(const struct mock_conn *c, const char *path)
{
    return http_target_is(c->in.data + c->req.target_off, c->req.target_len, path);
}

/* Errors take the Anthropic shape on its path, whatever went wrong, and OpenAI's elsewhere. */
static int answer_error(struct mock_conn *c, int status, const char *msg, long retry_after)
{
    reply_error_body(&c->body, c->kind == MOCK_API_MESSAGES || c->kind == MOCK_API_COUNT_TOKENS,
                     status, msg);
    return answer_body(c, status, "application/json", retry_after);
}

/* status=S: the message says so, or echoes the request head (echo_head), padded to bytes=N. */
static int answer_status(struct mock_conn *c, int status)
{
    const struct mock_dirs *d = &c->dirs;
    long ra = d->retry_after >= 0 ? d->retry_after : status == 429 || status == 503 ? 1 : -1;
    struct buf msg = BUF_INIT;
    if (d->echo_head)
        buf_append(&msg, c->in.data, c->req.head_len < 4096 ? c->req.head_len : 4096);
    else
        buf_puts(&msg, "mock: failure requested by status directive");
    for (size_t i = 0; d->bytes > 0 && msg.len < (size_t)d->bytes; i++)
        buf_append(&msg, &"abcdefghijklmnopqrstuvwxyz"[i % 26], 1);
    buf_append(&msg, "", 1);
    int rc = answer_error(c, status, msg.data, ra);
    buf_free(&msg);
    return rc;
}

/* Stream steps are produced all at once up to OUT_HIGH, or one per tick with interval=MS. */
static void stream_produce(struct mock_conn *c, bool one)
{
    while (c->step <= c->reply.chunks && c->step != c->stop_step) {
        reply_stream_step(&c->reply, &c->body, c->step++);
        if (one || out_pending(c) >= OUT_HIGH)
            break;
    }
}

static int answer_stream(struct mock_conn *c)
{
    const struct mock_dirs *d = &c->dirs;
    conn_head(c, 200, "text/event-stream", -1, -1);
    c->step = 0;
    c->stop_step = c->fail && d->reset_after >= 0
                   ? (d->reset_after < c->reply.chunks ? d->reset_after : c->reply.chunks) : -1;
    c->state = c->fail && d->stall ? CONN_STALL : CONN_STREAM;
    stream_produce(c, c->state == CONN_STALL || d->interval_ms > 0);
    if (c->state == CONN_STREAM && d->interval_ms > 0) {
        double iv = (double)d->interval_ms / 1000.0;
        ev_timer_set(&c->timer, iv, iv);
        ev_timer_start(c->srv->loop, &c->timer);
    }
    return conn_pump(c);
}

static const char *req_body(const struct mock_conn *c, size_t *len)
{
    if (c->req.chunked) {
        *len = c->dechunked.len;
        return c->dechunked.data ? c->dechunked.data : "";
    }
    *len = (size_t)c->req.content_length;
    return c->in.data + c->req.head_len;
}

/* Runs once the delay (if any) is over: the directives pick the answer. */
static int conn_answer(struct mock_conn *c)
{
    struct mock_server *s = c->srv;
    const struct mock_dirs *d = &c->dirs;
    size_t len;
    const char *body = req_body(c, &len);
    long status = c->fail ? d->status : -1;
    if (c->fail && d->fail_first >= 0 && status < 0 && !d->reset && !d->garbage && !d->stall &&
        d->reset_after < 0)
        status = 503;
    if (c->fail && d->reset)
        return conn_reset(c);
    if (c->route_status)
        return answer_error(c, c->route_status, c->route_status == 404 ? "mock: no such endpoint"
                            : "mock: method not allowed", -1);
    bool anthropic = c->kind == MOCK_API_MESSAGES || c->kind == MOCK_API_COUNT_TOKENS;
    if (anthropic && (!c->req.api_key || !c->req.version))
        return answer_error(c, 401, "mock: x-api-key and anthropic-version headers required", -1);
    if (status >= 300)
        return answer_status(c, (int)status);
    if (c->fail && d->garbage) {
        buf_puts(&c->body, "<html>mock garbage: this is not JSON {\"");
        return answer_body(c, 200, "application/json", -1);
    }
    if (c->fail && d->invalid) {    /* brackets line up, the grammar does not */
        buf_puts(&c->body, "{\"id\":\"x\",\"choices\":[},\"object\": tru}");
        return answer_body(c, 200, "application/json", -1);
    }
    c->reply.id = ++s->seq;
    c->reply.created = (long)ev_now(s->loop);
    if (reply_prepare(&c->reply, c->kind, body, len, d) < 0)
        return answer_error(c, 400, "mock: request body is not a JSON object", -1);
    if (c->reply.stream)
        return answer_stream(c);
    if (c->kind == MOCK_API_MODELS)
        reply_models(&c->body, c->reply.created);
    else
        reply_body(&c->reply, &c->body);
    conn_head(c, status >= 200 ? (int)status : 200, "application/json", (long long)c->body.len,
              -1);
    if (c->fail && d->stall) {
        buf_reset(&c->body);
        c->state = CONN_STALL;
    } else {
        c->state = CONN_WRITE;
    }
    return conn_pump(c);
}

/* Sends what is queued and moves the exchange on when it is out; -1 once c is freed. */
static int conn_pump(struct mock_conn *c)
{
    for (;;) {
        int r = out_send(c);
        if (r < 0)
            return conn_gone(c);
        if (r == 0) {
            ev_io_start(c->srv->loop, &c->wio);
            return 0;
        }
        ev_io_stop(c->srv->loop, &c->wio);
        if (c->state == CONN_WRITE)
            return conn_done(c);
        if (c->state != CONN_STREAM)
            return 0;
        if (c->step > c->reply.chunks)
            return conn_done(c);
        if (c->dirs.interval_ms > 0)
            return 0;
        if (c->step == c->stop_step)
            return conn_reset(c);
        stream_produce(c, false);
    }
}

/* The response is fully written: count it, then wait for the next request or close. */
static int conn_done(struct mock_conn *c)
{
    struct mock_server *s = c->srv;
    bool keep = c->req.keep_alive;
    ev_timer_stop(s->loop, &c->timer);
    if (c->api) {
        s->st.completed++;
        s->st.inflight--;
        conn_log(c, "completed");
    }
    buf_consume(&c->in, c->req.total);
    if (c->in.len == 0)
        buf_trim(&c->in);
    memset(&c->req, 0, sizeof c->req);
    buf_trim(&c->dechunked);
    buf_trim(&c->body);
    buf_trim(&c->reply.text);
    buf_trim(&c->reply.text_esc);
    buf_trim(&c->reply.scratch);
    c->state = CONN_IDLE;
    c->api = false;
    c->dirs.raw_len = 0;
    c->dirs.raw[0] = '\0';
    if (!keep) {
        mock_conn_free(c, false);
        return -1;
    }
    ev_io_start(s->loop, &c->rio);
    return 0;
}

static void conn_route(struct mock_conn *c)
{
    static const struct { const char *path, *method; enum mock_api api; } routes[] = {
        {"/v1/chat/completions", "POST", MOCK_API_CHAT},
        {"/v1/completions", "POST", MOCK_API_COMPLETIONS},
        {"/v1/embeddings", "POST", MOCK_API_EMBEDDINGS},
        {"/v1/models", "GET", MOCK_API_MODELS},
        {"/v1/messages", "POST", MOCK_API_MESSAGES},
        {"/v1/messages/count_tokens", "POST", MOCK_API_COUNT_TOKENS},
        {"/v1/responses", "POST", MOCK_API_RESPONSES},
    };
    c->kind = MOCK_API_NONE;
    c->route_status = 404;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!target_is(c, routes[i].path))
            continue;
        bool method_ok = c->req.method_len == strlen(routes[i].method) &&
                         memcmp(c->in.data, routes[i].method, c->req.method_len) == 0;
        c->kind = routes[i].api;
        c->route_status = method_ok ? 0 : 405;
        return;
    }
}

static void last_record(struct mock_conn *c, const char *body, size_t len)
{
    struct mock_server *s = c->srv;
    buf_reset(&s->last_head);
    buf_reset(&s->last_body);
    buf_append(&s->last_head, c->in.data, c->req.head_len);
    buf_append(&s->last_body, body, len);
    s->have_last = true;
}

/* slow=MS replaces delay for the first slow_first=K requests with this directive string, or
 * for slow_pct=P % of them (a slow tail), or for every one when neither is given. */
static bool slow_applies(struct mock_server *s, const struct mock_dirs *d)
{
    if (d->slow_ms < 0)
        return false;
    if (d->slow_first >= 0) {
        char key[MOCK_DIRS_MAX + 6] = "slow:";      /* counted apart from fail_first */
        memcpy(key + 5, d->raw, d->raw_len);
        return mock_fails_hit(&s->fails, key, d->raw_len + 5, d->slow_first);
    }
    if (d->slow_pct < 0)
        return true;
    uint32_t x = s->rng ? s->rng : (uint32_t)2463534242u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s->rng = x;
    return (long)(x % 100) < d->slow_pct;
}

/* A complete request is in: control endpoints answer at once, API requests are counted and
 * wait out their delay before conn_answer picks the behaviour. */
static int conn_start(struct mock_conn *c)
{
    struct mock_server *s = c->srv;
    struct mock_req *q = &c->req;
    size_t len;
    const char *body = req_body(c, &len);
    bool first = !c->used;
    c->used = true;
    c->status = 0;
    if (q->target_len >= 3 && memcmp(c->in.data + q->target_off, "/__", 3) == 0) {
        if (first && c->counted) {
            c->counted = false;
            s->st.accepted -= s->st.accepted > 0;
            s->st.connections--;
        }
        int status = mock_control(s, c->in.data, q->method_len, c->in.data + q->target_off,
                                  q->target_len, &c->body);
        return answer_body(c, status, "application/json", -1);
    }
    c->api = true;
    s->st.received++;
    s->st.inflight++;
    last_record(c, body, len);
    conn_route(c);
    mock_dirs_find(&c->dirs, q->xmock ? c->in.data + q->xmock_off : NULL, q->xmock_len,
                   body, len);
    c->fail = c->dirs.fail_first < 0 ||
              mock_fails_hit(&s->fails, c->dirs.raw, c->dirs.raw_len, c->dirs.fail_first);
    long wait = slow_applies(s, &c->dirs) ? c->dirs.slow_ms : c->dirs.delay_ms;
    if (wait > 0) {
        c->state = CONN_DELAY;
        ev_timer_set(&c->timer, (double)wait / 1000.0, 0.);
        ev_timer_start(s->loop, &c->timer);
        return 0;
    }
    return conn_answer(c);
}

/* Serves each complete request in the input in turn; -1 once c is freed. */
static int conn_process(struct mock_conn *c)
{
    while (c->state == CONN_IDLE) {
        int rc = mock_req_parse(&c->req, &c->in, &c->dechunked);
        if (rc == 0 && c->req.expect) {
            /* The output queue is empty between requests, so this tiny write goes straight out. */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            ssize_t n = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
            (void)n;
            c->req.expect = false;
        }
        if (rc == 0)
            return 0;
        if (rc < 0) {
            int status = -rc;
            c->req.keep_alive = false;
            return answer_error(c, status, status == 413 ? "mock: request body too large"
                                : status == 431 ? "mock: request head too large"
                                : "mock: malformed request", -1);
        }
        if (conn_start(c) < 0)
            return -1;
    }
    return 0;
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mock_conn *c = w->data;
    if (buf_reserve(&c->in, READ_CHUNK) < 0) {
        conn_gone(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_gone(c);
        return;
    }
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = '\0';
    if (c->state == CONN_IDLE)
        conn_process(c);
    else if (c->in.len > c->req.total + READ_AHEAD_MAX)
        ev_io_stop(loop, &c->rio);  /* a flood while busy: stop buffering, lose EOF watch */
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mock_conn *c = w->data;
    if (conn_pump(c) == 0 && c->state == CONN_IDLE)
        conn_process(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mock_conn *c = w->data;
    int rc;
    if (c->state == CONN_DELAY) {
        rc = conn_answer(c);
    } else {
        if (out_pending(c) >= OUT_HIGH || c->step > c->reply.chunks)
            return;
        if (c->step == c->stop_step) {
            if (out_pending(c) == 0)
                conn_reset(c);
            return;
        }
        stream_produce(c, true);
        rc = conn_pump(c);
    }
    if (rc == 0 && c->state == CONN_IDLE)
        conn_process(c);
}

void mock_conn_new(struct mock_server *s, int fd)
{
    struct mock_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = s;
    c->fd = fd;
    c->counted = true;
    mock_dirs_init(&c->dirs);
    reply_init(&c->reply);
    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    ev_init(&c->timer, on_timer);
    c->rio.data = c->wio.data = c->timer.data = c;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->st.accepted++;
    s->st.connections++;
    ev_io_start(s->loop, &c->rio);
}

