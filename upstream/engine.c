/* engine: the curl_multi ↔ libev glue (one socket callback, one timer callback, one info loop,
 * as in curl's evhiperfifo.c), shards, the easy-handle pool, the gates' pump and a call's life
 * cycle (start, cancel, resume, end); its transfer options and callbacks are in call.c. */
#include "upstream/engine_int.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sock_watch {
    ev_io io;
    struct shard *sh;
};

static void check_multi_info(struct shard *sh);
static void on_pump(struct ev_loop *loop, ev_prepare *w, int revents);
static int call_launch(struct call *c);
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

static void shard_close(struct shard *sh)
{
    ev_timer_stop(sh->e->loop, &sh->timer);
    curl_multi_cleanup(sh->multi);      /* CURL_POLL_REMOVE frees the watchers */
    sh->multi = NULL;
}

/* Closes the top shards left idle for SHARD_IDLE_TRIMS periods (never the first: h2 lives
 * there), so the shards stay the lowest ones. */
static void shards_trim(struct engine *e)
{
    for (unsigned i = 1; i < e->nshards; i++) {
        struct shard *sh = &e->shards[i];
        sh->idle_trims = sh->active || sh->used ? 0 : sh->idle_trims + 1;
        sh->used = false;
    }
    while (e->nshards > 1 && e->shards[e->nshards - 1].idle_trims >= SHARD_IDLE_TRIMS)
        shard_close(&e->shards[--e->nshards]);
    if (e->shard_room > e->nshards)
        e->shard_room = e->nshards > 1 ? e->nshards : 1;
}

/* Handles that sat unused for a whole period go back to the allocator, then to the system;
 * so do shards. */
static void on_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct engine *e = t->data;
    shards_trim(e);
    unsigned spare = e->pool_low > POOL_KEEP ? e->pool_low - POOL_KEEP : 0;
    for (unsigned i = 0; i < spare; i++)
        curl_easy_cleanup(e->pool[--e->npool]);
    if (spare > 64)
        malloc_trim(0);
    e->pool_low = e->npool;
}

/* Creates shard i (the next one); -1 when curl cannot. */
static int shard_open(struct engine *e, unsigned i)
{
    struct shard *sh = &e->shards[i];
    *sh = (struct shard){.e = e};       /* it may be one closed by shards_trim */
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
    if (e->max_cached > 0)      /* else curl's default: 4 × the transfers added */
        curl_multi_setopt(sh->multi, CURLMOPT_MAXCONNECTS, e->max_cached);
    /* A backstop (the gates cap each upstream's calls); the first shard's h2 connections may
     * need all of it. */
    if (e->max_host > 0)
        curl_multi_setopt(sh->multi, CURLMOPT_MAX_HOST_CONNECTIONS, e->max_host);
    /* The gates count on it (curl's default; the smaller of it and the server's SETTINGS
     * applies). */
    curl_multi_setopt(sh->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)GATE_STREAMS);
    e->nshards = i + 1;
    return 0;
}

/* Connections stay per shard (a shared cache would bring back the bundle scan sharding
 * avoids); TLS sessions and DNS answers are worth sharing: a new connection resumes. */
static CURLSH *share_new(void)
{
    CURLSH *sh = curl_share_init();
    if (!sh)
        return NULL;
    if (curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        curl_share_cleanup(sh);
        return NULL;
    }
    return sh;
}

struct engine *engine_new(struct ev_loop *loop, long max_host_connections, long max_cached)
{
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->loop = loop;
    ev_prepare_init(&e->pump, on_pump);
    e->pump.data = e;
    if (!(e->share = share_new())) {
        free(e);
        return NULL;
    }
    e->max_host = max_host_connections;
    e->max_cached = max_cached;
    e->shard_room = 1;          /* the first shard is the multiplexed calls' */
    if (shard_open(e, 0) < 0) {
        engine_free(e);
        return NULL;
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
    ev_prepare_stop(e->loop, &e->pump);
    for (unsigned i = 0; i < e->npool; i++)
        curl_easy_cleanup(e->pool[i]);
    for (unsigned i = 0; i < e->nshards; i++)
        shard_close(&e->shards[i]);
    curl_share_cleanup(e->share);
    gate_free_all(&e->gates);   /* after the multi handles: their sockets close into them */
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

/* Runs once the loop is outside curl and every callback: starts what the freed slots allow.
 * A call curl refuses ends here with CALL_ERROR. */
static void on_pump(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct engine *e = w->data;
    ev_prepare_stop(loop, w);
    for (struct gate *g = e->gates; g; g = g->next) {
        struct gate_wait *w;
        bool opener;
        while ((w = gate_pop(g, &opener))) {
            struct call *c = (struct call *)((char *)w - offsetof(struct call, wait));
            c->queued = false;
            c->opener = opener;
            if (call_launch(c) == 0) {
                free((char *)c->spec.url);
                c->spec.url = NULL;
                continue;
            }
            const struct call_ops *ops = c->ops;
            void *ud = c->ud;
            c->gate = NULL;
            call_free(c);
            ops->on_done(ud, CALL_ERROR, 0, "out of memory starting the upstream call");
        }
    }
}

/* An HTTP/1.1 call left its shard: that one has room again. */
static void shard_left(struct engine *e, struct shard *sh)
{
    unsigned i = (unsigned)(sh - e->shards);
    sh->active--;
    if (i && i < e->shard_room)
        e->shard_room = i;
}

/* Takes the call off curl (closing its connection if the transfer was unfinished) or out of
 * its queue; a freed slot starts the next queued call. */
static void call_release(struct call *c)
{
    struct engine *e = c->e;
    ev_timer_stop(e->loop, &c->phase);
    if (c->queued) {
        gate_remove(c->gate, &c->wait);
        c->queued = false;
        return;
    }
    if (!c->easy)
        return;
    curl_multi_remove_handle(c->sh->multi, c->easy);
    if (!c->multiplex)
        shard_left(e, c->sh);
    easy_put(e, c->easy);
    c->easy = NULL;
    e->active--;
    if (c->gate) {
        gate_ended(c->gate, c->opener);
        c->opener = false;
        if (c->gate->head)
            ev_prepare_start(e->loop, &e->pump);    /* room again: start the next there */
    }
}

static void call_free(struct call *c)
{
    call_release(c);
    free((char *)c->spec.url);
    curl_slist_free_all(c->headers);
    free(c->body);
    buf_free(&c->held);
    free(c);
}

/* Multiplexed calls all go to the first shard, where they share its connections, and never
 * meet an HTTP/1.1 connection there: libcurl 7.88 lets a transfer that wants h2 take an idle
 * HTTP/1.1 connection to the same origin, where a burst of them stalls. An HTTP/1.1 call goes
 * to the lowest shard above it with room, opening the next one when all open ones are full,
 * and once MAX_SHARDS are full to the least busy. */
static struct shard *pick_shard(struct engine *e, bool multiplex)
{
    if (multiplex)
        return &e->shards[0];
    for (unsigned i = e->shard_room; i < MAX_SHARDS; i++) {
        if (i == e->nshards && shard_open(e, i) < 0)
            break;
        if (e->shards[i].active < SHARD_CONNECTIONS) {
            e->shard_room = i;
            return &e->shards[i];
        }
    }
    e->shard_room = e->nshards;     /* all full: no scan until one has room again */
    if (e->nshards < 2)
        return &e->shards[0];       /* curl could not make a second multi handle */
    struct shard *least = &e->shards[1];
    for (unsigned i = 2; i < e->nshards; i++)
        if (e->shards[i].active < least->active)
            least = &e->shards[i];
    return least;
}

/* Hands a call to curl; -1 (nothing owned changed) when curl refuses. */
static int call_launch(struct call *c)
{
    struct engine *e = c->e;
    CURL *easy = easy_get(e);
    if (!easy)
        return -1;
    c->easy = easy;
    c->sh = pick_shard(e, c->multiplex);
    c->started = ev_now(e->loop);
    call_set_options(c, &c->spec);
    if (curl_multi_add_handle(c->sh->multi, easy) != CURLM_OK) {
        easy_put(e, easy);
        c->easy = NULL;
        return -1;
    }
    if (!c->multiplex)
        c->sh->active++;
    c->sh->used = true;
    if (c->gate)
        gate_started(c->gate, c->opener);
    e->active++;
    return 0;
}

struct call *call_start(struct engine *e, const struct call_spec *spec,
                        const struct call_ops *ops, void *ud)
{
    struct call *c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    c->e = e;
    c->spec = *spec;
    c->spec.url = NULL;     /* owned only while queued */
    c->headers = spec->headers;
    c->body = spec->body;
    c->ops = ops;
    c->ud = ud;
    c->max_bytes = spec->max_response_bytes;
    c->retry_after_ms = -1;
    c->first_byte_s = (double)spec->first_byte_timeout_ms / 1000.0;
    c->idle_s = (double)spec->idle_timeout_ms / 1000.0;
    ev_init(&c->phase, on_phase);
    c->phase.data = c;
    c->multiplex = spec->http == CALL_HTTP_2 ||
                   (spec->http == CALL_HTTP_AUTO && call_url_https(spec->url));
    if (spec->gate_key && !(c->gate = gate_get(&e->gates, spec->gate_key, c->multiplex,
                                                   call_url_https(spec->url),
                                                   spec->gate_cap)))
        goto fail_owned;
    if (c->gate && !gate_admit(c->gate, &c->opener)) {
        if (!(c->spec.url = strdup(spec->url)))
            goto fail_owned;
        c->queued = true;
        gate_push(c->gate, &c->wait);
        if (c->multiplex)       /* a longer line may warrant another connection */
            ev_prepare_start(e->loop, &e->pump);
        return c;
    }
    c->spec.url = spec->url;
    int rc = call_launch(c);
    c->spec.url = NULL;
    if (rc == 0)
        return c;
fail_owned:
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

static void report_done(struct call *c, CURLcode rc, long status);

/* Hands the reader what was held; false when the call ended meanwhile (freed). */
static bool deliver_held(struct call *c)
{
    c->in_cb = true;
    enum call_verdict v = c->ops->on_data(c->ud, c->held.data, c->held.len);
    c->in_cb = false;
    if (c->cancelled) {
        call_free(c);
        return false;
    }
    if (v == CALL_CONTINUE)
        buf_reset(&c->held);
    else
        c->paused = true;
    return true;
}

void call_resume(struct call *c)
{
    struct engine *e = c->e;
    c->paused = false;
    c->last_byte = ev_now(e->loop);     /* the wait for the reader was not the upstream's */
    if (c->held.len && (!deliver_held(c) || c->held.len))
        return;
    if (c->finished) {
        report_done(c, c->done_rc, c->done_status);
        return;
    }
    if (c->curl_paused || !c->multiplex) {
        c->curl_paused = false;
        curl_easy_pause(c->easy, CURLPAUSE_CONT);   /* may run this call's callbacks at once */
        flush_deferred(e);
    }
}

/* (Re)arms the phase timer to fire after s seconds; 0 stops it. */
void call_phase_arm(struct call *c, double s)
{
    c->phase.repeat = s;
    ev_timer_again(c->e->loop, &c->phase);
}

/* Ends a call from outside curl's callbacks (a phase timer) and reports result. */
static void call_abort(struct call *c, enum call_result result, const char *detail)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    const struct call_ops *ops = c->ops;
    void *ud = c->ud;
    call_free(c);       /* removing the unfinished transfer resets its stream or connection */
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
        call_phase_arm(c, left);
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

/* Reports the end and frees the call (the reader may start new calls from on_done). */
static void report_done(struct call *c, CURLcode rc, long status)
{
    char detail[CURL_ERROR_SIZE];
    enum call_result result = map_result(c, rc);
    if (result == CALL_TOO_LARGE)   /* curl's own words ("Recv failure…") would mislead */
        engine_too_large(detail, sizeof detail, c->max_bytes);
    else
        snprintf(detail, sizeof detail, "%s", c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
    const struct call_ops *ops = c->ops;
    void *ud = c->ud;
    call_free(c);
    ops->on_done(ud, result, status, detail);
}

static void finish(struct call *c, CURLcode rc)
{
    if (c->cancelled) {
        call_free(c);
        return;
    }
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && !c->head_sent) {
        call_deliver_head(c);
        if (c->cancelled) {
            call_free(c);
            return;
        }
    }
    if (c->held.len) {      /* the end waits for the reader to take the rest (call_resume) */
        c->finished = true;
        c->done_rc = rc;
        c->done_status = status;
        call_release(c);
        return;
    }
    report_done(c, rc, status);
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
