/* redis: the connection state machine (resolve → connect → AUTH/SELECT/PING → ready → lost →
 * backoff), per-command timers and the helper thread that resolves host names off the loop. */
#include "daemon/redis.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <netdb.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/redis_url.h"

#define REDIS_MAX_PENDING 65536
#define BACKOFF_BASE_S 0.1
#define BACKOFF_MAX_S 5.0

enum link_state { LINK_IDLE, LINK_RESOLVING, LINK_CONNECTING, LINK_HANDSHAKE, LINK_READY };

struct resolve;

struct redis {
    struct ev_loop *loop;
    struct redis_url url;
    double timeout_s, connect_timeout_s;
    char name[48];
    redisAsyncContext *ac;
    enum link_state state;
    ev_timer timer;                 /* connect/handshake deadline, or the backoff wait */
    ev_async resolved;              /* the resolver thread's answer is in */
    struct resolve *resolving;
    unsigned attempt;               /* failed attempts since the last ready link */
    unsigned handshake_left;
    struct redis_cmd *pending;      /* commands waiting for a reply, doubly linked */
    unsigned npending;
    double last_reply;              /* loop time of the last reply on this link */
    bool down_logged, closing;
    unsigned seed;
    unsigned long timeouts, connects;
};

struct redis_cmd {
    struct redis *rd;
    redis_cb cb;                    /* NULL once finished or cancelled */
    void *arg;
    double sent;
    ev_timer timer;
    struct redis_cmd *prev, *next;
    bool linked;
    const char *script;             /* redis_eval's text until it was sent again as EVAL */
    int argc;                       /* redis_eval: argv[0..1] = EVALSHA sha, then copies */
    const char **argv;              /* in the same allocation */
};

struct resolve {
    pthread_mutex_t lock;
    int refs;                       /* under lock: the thread's and the connection's */
    bool cancelled;                 /* the connection is gone: don't signal it */
    struct ev_loop *loop;
    ev_async *done;
    char addr[INET6_ADDRSTRLEN];    /* "" = not found */
    char host[REDIS_URL_HOST_MAX + 1];
};

static void link_start(struct redis *rd);
static void link_down(struct redis *rd, const redisAsyncContext *ac, const char *why);

/* ---- resolver: getaddrinfo may block for seconds, so it never runs on a loop ---- */

static void resolve_unref(struct resolve *q)
{
    pthread_mutex_lock(&q->lock);
    bool last = --q->refs == 0;
    pthread_mutex_unlock(&q->lock);
    if (last) {
        pthread_mutex_destroy(&q->lock);
        free(q);
    }
}

static void *resolve_main(void *arg)
{
    struct resolve *q = arg;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char addr[INET6_ADDRSTRLEN] = "";
    if (getaddrinfo(q->host, NULL, &hints, &ai) == 0 && ai)
        getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof addr, NULL, 0, NI_NUMERICHOST);
    if (ai)
        freeaddrinfo(ai);
    pthread_mutex_lock(&q->lock);
    memcpy(q->addr, addr, sizeof addr);
    if (!q->cancelled)
        ev_async_send(q->loop, q->done);
    pthread_mutex_unlock(&q->lock);
    resolve_unref(q);
    return NULL;
}

static int resolve_start(struct redis *rd)
{
    struct resolve *q = calloc(1, sizeof *q);
    pthread_t t;
    pthread_attr_t attr;
    if (!q)
        return -1;
    pthread_mutex_init(&q->lock, NULL);
    q->refs = 2;
    q->loop = rd->loop;
    q->done = &rd->resolved;
    memcpy(q->host, rd->url.host, sizeof q->host);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, resolve_main, q);
    pthread_attr_destroy(&attr);
    if (rc) {
        pthread_mutex_destroy(&q->lock);
        free(q);
        return -1;
    }
    rd->resolving = q;
    return 0;
}

static void resolve_cancel(struct redis *rd)
{
    struct resolve *q = rd->resolving;
    if (!q)
        return;
    rd->resolving = NULL;
    pthread_mutex_lock(&q->lock);
    q->cancelled = true;
    pthread_mutex_unlock(&q->lock);
    resolve_unref(q);
}

/* ---- commands ---- */

static void cmd_unlink(struct redis_cmd *c)
{
    struct redis *rd = c->rd;
    if (!c->linked)
        return;
    c->linked = false;
    if (c->prev)
        c->prev->next = c->next;
    else
        rd->pending = c->next;
    if (c->next)
        c->next->prev = c->prev;
    rd->npending--;
    ev_timer_stop(rd->loop, &c->timer);
}

/* Runs the user's callback once; the record itself lives until hiredis lets go of it. */
static void cmd_finish(struct redis_cmd *c, const redisReply *reply, const char *err)
{
    redis_cb cb = c->cb;
    cmd_unlink(c);
    c->cb = NULL;
    if (cb)
        cb(c->arg, reply, err);
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv);

/* NOSCRIPT to an EVALSHA: the same command once more as EVAL (Redis loads the script). */
static bool eval_again(struct redis_cmd *c, const redisReply *r)
{
    struct redis *rd = c->rd;
    if (!c->script || !r || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOSCRIPT", 8))
        return false;
    c->argv[0] = "EVAL";
    c->argv[1] = c->script;
    c->script = NULL;
    return rd->state == LINK_READY && !rd->closing &&
           redisAsyncCommandArgv(rd->ac, on_reply, c, c->argc, c->argv, NULL) == REDIS_OK;
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis_cmd *c = priv;
    struct redis *rd = c->rd;
    if (eval_again(c, r))
        return;
    if (r)
        rd->last_reply = ev_now(rd->loop);
    if (c->cb)
        cmd_finish(c, r, r ? NULL : rd->closing ? "shutting down" : "connection lost");
    cmd_unlink(c);              /* a command sent without a callback is still linked */
    free(c);
}

static void drop_link(struct redis *rd, const char *why)
{
    redisAsyncContext *ac = rd->ac;
    if (!ac)
        return;
    /* Down first, so callbacks run by the free below see no link to send on. */
    link_down(rd, ac, why);
    redisAsyncFree(ac);         /* fails pending replies; deferred when inside a callback */
}

static void on_cmd_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct redis_cmd *c = t->data;
    struct redis *rd = c->rd;
    bool silent = rd->last_reply < c->sent;
    rd->timeouts++;
    cmd_finish(c, NULL, "timed out");
    /* Nothing at all came back while it waited: the link (or Redis) is stuck. Dropping it
     * fails the rest at once instead of one timeout after another. */
    if (silent)
        drop_link(rd, "no answer in time");
}

/* A command record with room for extra bytes after it; NULL when none may be sent now. */
static struct redis_cmd *cmd_new(struct redis *rd, redis_cb cb, void *arg, size_t extra)
{
    if (rd->state != LINK_READY || rd->npending >= REDIS_MAX_PENDING)
        return NULL;
    struct redis_cmd *c = calloc(1, sizeof *c + extra);
    if (!c)
        return NULL;
    c->rd = rd;
    c->cb = cb;
    c->arg = arg;
    c->sent = ev_now(rd->loop);
    return c;
}

static struct redis_cmd *cmd_send(struct redis_cmd *c, int argc, const char **argv,
                                  const size_t *argvlen)
{
    struct redis *rd = c->rd;
    if (redisAsyncCommandArgv(rd->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK) {
        free(c);
        return NULL;
    }
    c->linked = true;
    c->next = rd->pending;
    if (c->next)
        c->next->prev = c;
    rd->pending = c;
    rd->npending++;
    ev_timer_init(&c->timer, on_cmd_timeout, rd->timeout_s, 0.);
    c->timer.data = c;
    ev_timer_start(rd->loop, &c->timer);
    return c;
}

struct redis_cmd *redis_command(struct redis *rd, redis_cb cb, void *arg, int argc,
                                const char **argv, const size_t *argvlen)
{
    struct redis_cmd *c = cmd_new(rd, cb, arg, 0);
    return c ? cmd_send(c, argc, argv, argvlen) : NULL;
}

void redis_script_init(struct redis_script *s, const char *text)
{
    unsigned char d[SHA_DIGEST_LENGTH];
    s->text = text;
    SHA1((const unsigned char *)text, strlen(text), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", d[i]);
}

/* The arguments are copied behind the record, so the command can go again after NOSCRIPT. */
struct redis_cmd *redis_eval(struct redis *rd, redis_cb cb, void *arg,
                             const struct redis_script *s, int argc, const char **argv)
{
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += strlen(argv[i]) + 1;
    size_t nptr = (size_t)argc + 2;
    struct redis_cmd *c = cmd_new(rd, cb, arg, nptr * sizeof(char *) + bytes);
    if (!c)
        return NULL;
    c->argv = (const char **)(c + 1);
    char *p = (char *)(c->argv + nptr);
    c->argv[0] = "EVALSHA";
    c->argv[1] = s->sha;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        c->argv[2 + i] = memcpy(p, argv[i], n);
        p += n;
    }
    c->argc = (int)nptr;
    c->script = s->text;
    return cmd_send(c, c->argc, c->argv, NULL);
}

void redis_cancel(struct redis_cmd *c)
{
    if (!c)
        return;
    cmd_unlink(c);
    c->cb = NULL;
}

/* ---- link life ---- */

static double backoff(struct redis *rd)
{
    double d = BACKOFF_BASE_S;
    for (unsigned i = 0; i < rd->attempt && d < BACKOFF_MAX_S; i++)
        d *= 2;
    if (d > BACKOFF_MAX_S)
        d = BACKOFF_MAX_S;
    return d / 2 + d / 2 * ((double)rand_r(&rd->seed) / RAND_MAX);    /* jitter */
}

static void link_down(struct redis *rd, const redisAsyncContext *ac, const char *why)
{
    if (rd->ac != ac || rd->state == LINK_IDLE)
        return;
    bool was_ready = rd->state == LINK_READY;
    rd->ac = NULL;
    rd->state = LINK_IDLE;
    if (rd->closing)
        return;
    if (!rd->down_logged) {
        rd->down_logged = true;
        log_warn("redis (%s): %s %s:%u: %s; retrying in the background", rd->name,
                 was_ready ? "lost the link to" : "cannot reach", rd->url.host, rd->url.port,
                 why);
    } else {
        log_debug("redis (%s): attempt %u failed: %s", rd->name, rd->attempt, why);
    }
    ev_timer_stop(rd->loop, &rd->timer);
    ev_timer_set(&rd->timer, backoff(rd), 0.);
    ev_timer_start(rd->loop, &rd->timer);
    rd->attempt++;
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct redis *rd = t->data;
    if (rd->state == LINK_IDLE)
        link_start(rd);
    else if (rd->state != LINK_READY)
        drop_link(rd, "connect timed out");
}

static void on_handshake(redisAsyncContext *ac, void *r, void *priv)
{
    struct redis *rd = priv;
    redisReply *reply = r;
    if (!reply || rd->ac != ac || rd->state != LINK_HANDSHAKE)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "refused the handshake: %.120s", reply->str);
        drop_link(rd, why);
        return;
    }
    if (--rd->handshake_left)
        return;
    ev_timer_stop(rd->loop, &rd->timer);
    rd->state = LINK_READY;
    rd->attempt = 0;
    rd->connects++;
    rd->last_reply = ev_now(rd->loop);
    if (rd->down_logged)
        log_info("redis (%s): connected to %s:%u", rd->name, rd->url.host, rd->url.port);
    rd->down_logged = false;
}

static void handshake_send(struct redis *rd, int argc, const char **argv)
{
    if (redisAsyncCommandArgv(rd->ac, on_handshake, rd, argc, argv, NULL) == REDIS_OK)
        rd->handshake_left++;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *rd = ac->data;
    if (status != REDIS_OK) {
        link_down(rd, ac, ac->errstr);     /* hiredis frees ac after this returns */
        return;
    }
    char db[16];
    const char *auth[3] = {"AUTH", rd->url.user, rd->url.pass};
    const char *select[2] = {"SELECT", db}, *ping[1] = {"PING"};
    rd->state = LINK_HANDSHAKE;
    if (rd->url.pass && rd->url.user)
        handshake_send(rd, 3, auth);
    else if (rd->url.pass)
        handshake_send(rd, 2, (const char *[]){"AUTH", rd->url.pass});
    snprintf(db, sizeof db, "%u", rd->url.db);
    if (rd->url.db)
        handshake_send(rd, 2, select);
    handshake_send(rd, 1, ping);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis *rd = ac->data;
    link_down(rd, ac, ac->err ? ac->errstr : "connection closed");
}

static void link_connect(struct redis *rd, const char *addr)
{
    redisAsyncContext *ac = redisAsyncConnect(addr, (int)rd->url.port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        rd->ac = NULL;
        rd->state = LINK_CONNECTING;
        link_down(rd, NULL, why);
        return;
    }
    ac->data = rd;
    rd->ac = ac;
    rd->state = LINK_CONNECTING;
    rd->handshake_left = 0;
    redisLibevAttach(rd->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    ev_timer_stop(rd->loop, &rd->timer);
    ev_timer_set(&rd->timer, rd->connect_timeout_s, 0.);
    ev_timer_start(rd->loop, &rd->timer);
}

static void on_resolved(struct ev_loop *loop, ev_async *a, int revents)
{
    struct redis *rd = a->data;
    struct resolve *q = rd->resolving;
    char addr[INET6_ADDRSTRLEN];
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    memcpy(addr, q->addr, sizeof addr);
    pthread_mutex_unlock(&q->lock);
    resolve_cancel(rd);
    if (!addr[0]) {
        rd->state = LINK_CONNECTING;
        link_down(rd, NULL, "host name not found");
        return;
    }
    link_connect(rd, addr);
}

static bool is_address(const char *host)
{
    unsigned char b[16];
    return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

static void link_start(struct redis *rd)
{
    if (is_address(rd->url.host)) {
        link_connect(rd, rd->url.host);
    } else if (resolve_start(rd) == 0) {
        rd->state = LINK_RESOLVING;
        ev_timer_stop(rd->loop, &rd->timer);
        ev_timer_set(&rd->timer, rd->connect_timeout_s, 0.);
        ev_timer_start(rd->loop, &rd->timer);
    } else {
        rd->state = LINK_CONNECTING;
        link_down(rd, NULL, "cannot start the resolver");
    }
}

struct redis *redis_new(struct ev_loop *loop, const struct redis_opts *o, char *err,
                        size_t errlen)
{
    struct redis *rd = calloc(1, sizeof *rd);
    if (!rd) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (redis_url_parse(o->url, &rd->url, err, errlen) < 0)
        goto fail;
    if (rd->url.tls) {
        snprintf(err, errlen, "rediss:// (TLS) needs hiredis 1.0 or later; this build has "
                 "hiredis %d.%d: reach Redis over a TLS tunnel and use redis://",
                 HIREDIS_MAJOR, HIREDIS_MINOR);
        goto fail;
    }
    rd->loop = loop;
    rd->timeout_s = o->timeout_s > 0 ? o->timeout_s : 0.5;
    rd->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : 5.0;
    snprintf(rd->name, sizeof rd->name, "%s", o->name ? o->name : "redis");
    rd->seed = (unsigned)(uintptr_t)rd ^ (unsigned)ev_time();
    ev_timer_init(&rd->timer, on_timer, 0., 0.);
    rd->timer.data = rd;
    ev_async_init(&rd->resolved, on_resolved);
    rd->resolved.data = rd;
    ev_async_start(loop, &rd->resolved);
    link_start(rd);
    return rd;
fail:
    redis_url_clear(&rd->url);
    free(rd);
    return NULL;
}

/* Commands sent in the loop's last turn (a request's settle at shutdown) may still sit in
 * hiredis's buffer: hand them to the kernel before the link goes. The socket is non-blocking,
 * so this never waits; what it does not take at once is lost, as on a crash. */
static void flush_out(struct redis *rd)
{
    int done = 0;
    for (int i = 0; rd->ac && rd->state == LINK_READY && !done && i < 8; i++)
        if (redisBufferWrite(&rd->ac->c, &done) != REDIS_OK)
            return;
}

void redis_free(struct redis *rd)
{
    if (!rd)
        return;
    flush_out(rd);
    rd->closing = true;
    ev_timer_stop(rd->loop, &rd->timer);
    resolve_cancel(rd);
    ev_async_stop(rd->loop, &rd->resolved);
    drop_link(rd, "shutting down");     /* pending callbacks run with "shutting down" */
    redis_url_clear(&rd->url);
    free(rd);
}

bool redis_ready(const struct redis *rd)
{
    return rd && rd->state == LINK_READY;
}

unsigned long redis_timeouts(const struct redis *rd)
{
    return rd->timeouts;
}

unsigned long redis_connects(const struct redis *rd)
{
    return rd->connects;
}
