/* engine: the curl_multi ↔ libev glue (one socket callback, one timer callback, one info loop,
 * as in curl's evhiperfifo.c) and the call object: one easy handle, its headers, body and state. */
#include "upstream/engine.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define EASY_POOL_MAX 1024  /* idle easy handles kept for reuse (curl_easy_reset is cheap) */
#define POOL_KEEP 16        /* handles kept however quiet it gets */
#define TRIM_SECONDS 2.0
#define RECV_BUFFER 4096    /* per transfer: curl's 16 KiB default, times 10k calls, is 160 MB */

/* libcurl 7.88 scans a host's whole connection bundle to find one to reuse: linear in the
 * connections to that host, quadratic under thousands of concurrent HTTP/1.1 calls. When
 * max_connections allows more than SHARD_CONNECTIONS, the engine has several multi handles
 * (shards), each with its own connection cache, and fills them in order: at low concurrency
 * everything stays on the first (one batch per loop turn), at high each scan covers a part. */
#define SHARD_CONNECTIONS 1024
#define MAX_SHARDS 16

struct shard {
    struct engine *e;
    CURLM *multi;
    ev_timer timer;
    unsigned active;
};

struct engine {
    struct ev_loop *loop;
    struct shard shards[MAX_SHARDS];
    unsigned nshards;
    unsigned shard_cap;     /* calls a shard takes before the next one is used */
    ev_timer trim;          /* gives back pooled handles a burst left behind */
    unsigned pool_low;      /* fewest pooled handles seen since the last trim */
    unsigned active;
    unsigned depth;         /* > 0 while a call's callback runs (inside curl) */
    struct call *deferred;  /* cancelled inside another call's callback: freed after it */
    CURL *pool[EASY_POOL_MAX];
    unsigned npool;
};

struct sock_watch {
    ev_io io;
    struct shard *sh;
};

struct call {
    struct engine *e;
    struct shard *sh;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    unsigned sends;
    const struct call_ops *ops;
    void *ud;
    uint64_t max_bytes;
    uint64_t received;
    int64_t retry_after_ms;
    ev_tstamp started;
    ev_timer phase;                 /* first_byte, then idle: one timer re-armed per phase */
    ev_tstamp last_byte;            /* when body bytes last came (loop clock, no syscall) */
    double first_byte_s, idle_s;
    bool head_sent, in_cb, cancelled, too_large, paused;
    struct call *next_deferred;
    char errbuf[CURL_ERROR_SIZE];
};

static void check_multi_info(struct shard *sh);
static void call_free(struct call *c);
static void on_phase(struct ev_loop *loop, ev_timer *t, int revents);

/* Frees the calls cancelled while curl was inside a callback: curl forbids removing a handle
 * there, so they wait until curl_multi_socket_action has returned (check_multi_info). */
static void flush_deferred(struct engine *e)
{
    while (e->deferred && !e->depth) {
        struct call *c = e->deferred;
        e->deferred = c->next_deferred;
        call_free(c);
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct shard *sh = w->data;
    int running;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(sh);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct shard *sh = userp;
    struct ev_loop *loop = sh->e->loop;
    ev_timer_stop(loop, &sh->timer);
    if (timeout_ms >= 0) {
        /* 0 means "as soon as possible": never call socket_action from inside this callback. */
        ev_timer_set(&sh->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(loop, &sh->timer);
    }
    return 0;
}

static void on_sock_event(struct ev_loop *loop, ev_io *w, int revents)
{
    struct sock_watch *sw = (struct sock_watch *)w;
    struct shard *sh = sw->sh;
    int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
                (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(sh->multi, w->fd, flags, &running);
    check_multi_info(sh);
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
    struct shard *sh = userp;
    struct ev_loop *loop = sh->e->loop;
    struct sock_watch *sw = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (sw) {
            ev_io_stop(loop, &sw->io);
            free(sw);
        }
        return 0;
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!sw) {
        sw = calloc(1, sizeof *sw);
        if (!sw)
            return -1;
        sw->sh = sh;
        ev_io_init(&sw->io, on_sock_event, s, events);
        curl_multi_assign(sh->multi, s, sw);
    } else {
        ev_io_stop(loop, &sw->io);
        ev_io_set(&sw->io, s, events);
    }
    ev_io_start(loop, &sw->io);
    return 0;
}

/* Handles that sat unused for a whole period go back to the allocator, then to the system. */
static void on_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct engine *e = t->data;
    unsigned spare = e->pool_low > POOL_KEEP ? e->pool_low - POOL_KEEP : 0;
    for (unsigned i = 0; i < spare; i++)
        curl_easy_cleanup(e->pool[--e->npool]);
    if (spare > 64)
        malloc_trim(0);
    e->pool_low = e->npool;
}

static int shard_init(struct shard *sh, struct engine *e, long max_host, long max_cached)
{
    sh->e = e;
    sh->multi = curl_multi_init();
    if (!sh->multi)
        return -1;
    ev_timer_init(&sh->timer, on_timer, 0., 0.);
    sh->timer.data = sh;
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(sh->multi, CURLMOPT_SOCKETDATA, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(sh->multi, CURLMOPT_TIMERDATA, sh);
    curl_multi_setopt(sh->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    if (max_cached > 0)     /* else curl's default: 4 × the transfers added */
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, max_cached);
    if (max_host > 0)
        curl_multi_setopt(sh->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_host);
    return 0;
}

struct engine *engine_new(struct ev_loop *loop, long max_host_connections, long max_cached)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->loop = loop;
    long n = (max_host_connections + SHARD_CONNECTIONS - 1) / SHARD_CONNECTIONS;
    e->nshards = n < 1 ? 1 : n > MAX_SHARDS ? MAX_SHARDS : (unsigned)n;
    long per_host = (max_host_connections + e->nshards - 1) / e->nshards;
    e->shard_cap = per_host > 0 ? (unsigned)per_host : UINT32_MAX;
    for (unsigned i = 0; i < e->nshards; i++) {
        long per_cache = max_cached ? (max_cached + e->nshards - 1) / e->nshards : 0;
        if (shard_init(&e->shards[i], e, per_host, per_cache) < 0) {
            e->nshards = i;
            engine_free(e);
            return NULL;
        }
    }
    ev_timer_init(&e->trim, on_trim, TRIM_SECONDS, TRIM_SECONDS);
    e->trim.data = e;
    ev_timer_start(loop, &e->trim);
    ev_unref(loop);         /* the trim timer alone doesn't keep the loop running */
    return e;
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    if (ev_is_active(&e->trim)) {
        ev_ref(e->loop);
        ev_timer_stop(e->loop, &e->trim);
    }
    for (unsigned i = 0; i < e->npool; i++)
        curl_easy_cleanup(e->pool[i]);
    for (unsigned i = 0; i < e->nshards; i++) {
        ev_timer_stop(e->loop, &e->shards[i].timer);
        curl_multi_cleanup(e->shards[i].multi);   /* CURL_POLL_REMOVE frees the watchers */
    }
    free(e);
}

static CURL *easy_get(struct engine *e)
{
    if (e->npool) {
        CURL *easy = e->pool[--e->npool];
        if (e->npool < e->pool_low)
            e->pool_low = e->npool;
        curl_easy_reset(easy);
        return easy;
    }
    return curl_easy_init();
}

static void easy_put(struct engine *e, CURL *easy)
{
    if (e->npool < EASY_POOL_MAX)
        e->pool[e->npool++] = easy;
    else
        curl_easy_cleanup(easy);
}

/* Removes the handle (closing its connection if the transfer was unfinished) and frees. */
static void call_free(struct call *c)
{
    struct engine *e = c->e;
    ev_timer_stop(e->loop, &c->phase);
    curl_multi_remove_handle(c->sh->multi, c->easy);
    c->sh->active--;
    easy_put(e, c->easy);
    curl_slist_free_all(c->headers);
    free(c->body);
    e->active--;
    free(c);
}

static int64_t parse_retry_after(const char *v, size_t n)
{
    int64_t secs = 0;
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i == n || v[i] < '0' || v[i] > '9')
        return -1;      /* HTTP-date form: treated as absent, backoff applies */
    for (; i < n && v[i] >= '0' && v[i] <= '9' && secs < 86400; i++)
        secs = secs * 10 + (v[i] - '0');
    return secs * 1000;
}

/* (Re)arms the phase timer to fire after s seconds; 0 stops it. */
static void phase_arm(struct call *c, double s)
{
    c->phase.repeat = s;
    ev_timer_again(c->e->loop, &c->phase);
}

static void deliver_head(struct call *c)
{
    long status = 0;
    c->head_sent = true;
    c->last_byte = ev_now(c->e->loop);
    phase_arm(c, c->idle_s);     /* first_byte is over; idle watches the body from here */
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    c->in_cb = true;
    c->e->depth++;
    c->ops->on_head(c->ud, status, c->retry_after_ms);
    c->e->depth--;
    c->in_cb = false;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct call *c = ud;
    static const char ra[] = "retry-after:";
    if (c->cancelled)
        return 0;
    if (n > sizeof ra - 1 && strncasecmp(p, ra, sizeof ra - 1) == 0)
        c->retry_after_ms = parse_retry_after(p + sizeof ra - 1, n - (sizeof ra - 1));
    if (n <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !c->head_sent)
            deliver_head(c);
    }
    return c->cancelled ? 0 : n;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct call *c = ud;
    if (!c->head_sent && !c->cancelled)
        deliver_head(c);
    if (c->cancelled)
        return 0;
    if (c->max_bytes && c->received + n > c->max_bytes) {
        c->too_large = true;
        return 0;
    }
    c->in_cb = true;
    c->e->depth++;
    enum call_verdict v = c->ops->on_data(c->ud, p, n);
    c->e->depth--;
    c->in_cb = false;
    if (c->cancelled)
        return 0;
    c->last_byte = ev_now(c->e->loop);  /* the idle timer checks it when it fires: no re-arm */
    if (v == CALL_PAUSE) {
        c->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    c->received += n;
    return n;
}

/* Runs before each send of the request. curl re-sends silently when a reused connection turns
 * out dead before any answer: once is right (a keep-alive connection the upstream had closed),
 * more would multiply one prompt into many, so a third send fails the attempt instead and the
 * model's retry policy decides. */
static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port)
{
    struct call *c = ud;
    if (++c->sends > 2)
        return CURL_PREREQFUNC_ABORT;
    if (!c->head_sent)
        phase_arm(c, c->first_byte_s);  /* the request leaves now: first_byte counts from here */
    return CURL_PREREQFUNC_OK;
}

static void set_options(struct call *c, const struct call_spec *spec)
{
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_URL, spec->url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    if (c->body) {     /* POSTFIELDS: headers and body leave in one send */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_len);
    }
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)RECV_BUFFER);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)spec->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)spec->timeout_ms);
    /* Waiting to learn whether a connection multiplexes only pays off over TLS (h2 via ALPN);
     * on plain http it would serialise the first burst behind one round trip. */
    if (strncmp(spec->url, "https:", 6) == 0)
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    if (spec->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, spec->ca_file);
    if (!spec->tls_verify) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (spec->max_response_bytes)
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)spec->max_response_bytes);
}

static struct shard *pick_shard(struct engine *e)
{
    struct shard *least = &e->shards[0];
    for (unsigned i = 0; i < e->nshards; i++) {
        if (e->shards[i].active < e->shard_cap)
            return &e->shards[i];
        if (e->shards[i].active < least->active)
            least = &e->shards[i];
    }
    return least;
}

struct call *call_start(struct engine *e, const struct call_spec *spec,
                        const struct call_ops *ops, void *ud)
{
    struct call *c = calloc(1, sizeof *c);
    CURL *easy = c ? easy_get(e) : NULL;
    if (!easy)
        goto fail;
    c->e = e;
    c->sh = pick_shard(e);
    c->easy = easy;
    c->headers = spec->headers;
    c->body = spec->body;
    c->ops = ops;
    c->ud = ud;
    c->max_bytes = spec->max_response_bytes;
    c->retry_after_ms = -1;
    c->started = ev_now(e->loop);
    c->first_byte_s = (double)spec->first_byte_timeout_ms / 1000.0;
    c->idle_s = (double)spec->idle_timeout_ms / 1000.0;
    ev_init(&c->phase, on_phase);
    c->phase.data = c;
    set_options(c, spec);
    if (curl_multi_add_handle(c->sh->multi, easy) != CURLM_OK) {
        easy_put(e, easy);
        goto fail;
    }
    c->sh->active++;
    e->active++;
    return c;
fail:
    curl_slist_free_all(spec->headers);
    free(spec->body);
    free(c);
    return NULL;
}

void call_cancel(struct call *c)
{
    if (!c || c->cancelled)
        return;
    c->cancelled = true;
    /* Inside one of its own curl callbacks the handle can't be removed: the callback returns 0,
     * curl ends the transfer, and check_multi_info frees it without telling anyone. Inside
     * another call's callback (a hedge winner cancelling the losers) it is freed right after. */
    if (c->in_cb)
        return;
    if (c->e->depth) {
        c->next_deferred = c->e->deferred;
        c->e->deferred = c;
        return;
    }
    call_free(c);
}

void call_resume(struct call *c)
{
    c->paused = false;
    c->last_byte = ev_now(c->e->loop);   /* the wait for the reader was not the upstream's */
    struct engine *e = c->e;
    curl_easy_pause(c->easy, CURLPAUSE_CONT);   /* may run this call's callbacks at once */
    flush_deferred(e);
}

/* Ends a call from outside curl's callbacks (a phase timer) and reports result. */
static void call_abort(struct call *c, enum call_result result, const char *detail)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    const struct call_ops *ops = c->ops;
    void *ud = c->ud;
    call_free(c);       /* removing the unfinished transfer closes its connection */
    ops->on_done(ud, result, status, detail);
}

/* libev's "again" pattern for the idle phase: bytes only record their time, and the timer,
 * when it fires, either re-arms for the rest of the gap or ends the call. */
static void on_phase(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct call *c = t->data;
    char detail[96];
    if (c->cancelled)
        return;         /* curl ends it on this turn; nothing more is reported */
    if (!c->head_sent) {
        snprintf(detail, sizeof detail, "no response headers within %.0f ms of sending",
                 c->first_byte_s * 1000.0);
        call_abort(c, CALL_FIRST_BYTE_TIMEOUT, detail);
        return;
    }
    ev_tstamp now = ev_now(loop);
    if (c->paused)
        c->last_byte = now;
    double left = c->last_byte + c->idle_s - now;
    if (left > 0.001) {
        phase_arm(c, left);
        return;
    }
    snprintf(detail, sizeof detail, "no body bytes for %.0f ms", c->idle_s * 1000.0);
    call_abort(c, CALL_IDLE_TIMEOUT, detail);
}

static enum call_result map_result(const struct call *c, CURLcode rc)
{
    if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return CALL_TOO_LARGE;
    switch (rc) {
    case CURLE_OK: return CALL_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return CALL_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return CALL_TIMEOUT;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_ABORTED_BY_CALLBACK: return CALL_RESET;     /* on_prereq refused a 3rd send */
    default: return CALL_ERROR;
    }
}

static void engine_too_large(char *out, size_t cap, uint64_t max)
{
    if (max && max % (1u << 20) == 0)
        snprintf(out, cap, "the upstream's answer exceeded max_response_bytes (%llu MiB)",
                 (unsigned long long)(max >> 20));
    else
        snprintf(out, cap, "the upstream's answer exceeded max_response_bytes (%llu bytes)",
                 (unsigned long long)max);
}

static void finish(struct call *c, CURLcode rc)
{
    if (c->cancelled) {
        call_free(c);
        return;
    }
    long status = 0;
    char detail[CURL_ERROR_SIZE];
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    enum call_result result = map_result(c, rc);
    if (result == CALL_TOO_LARGE)   /* curl's own words ("Recv failure…") would mislead */
        engine_too_large(detail, sizeof detail, c->max_bytes);
    else
        snprintf(detail, sizeof detail, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
    const struct call_ops *ops = c->ops;
    void *ud = c->ud;
    if (result == CALL_OK && !c->head_sent)
        deliver_head(c);
    bool cancelled = c->cancelled;
    call_free(c);
    if (!cancelled)
        ops->on_done(ud, result, status, detail);
}

/* A finished call's head can decide a hedge and cancel others (deferred, being inside
 * deliver_head): they are freed before the next message, which also drops any of theirs. */
static void check_multi_info(struct shard *sh)
{
    CURLMsg *msg;
    int left;
    while (flush_deferred(sh->e), (msg = curl_multi_info_read(sh->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct call *c;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        finish(c, rc);
    }
}
