/* server: listening sockets (systemd-inherited or from config), worker threads each running
 * its own libev loop and curl engine, and the main → worker hand-offs: reload, drain, stop. */
#include "daemon/worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/conn.h"
#include "daemon/jobs.h"
#include "daemon/metrics_labels.h"
#include "daemon/state.h"
#include "daemon/proxy.h"

#define ACCEPTS_PER_EVENT 64        /* fairness between listeners and other work */
#define EMFILE_PAUSE 0.1

static void accepting(struct worker *w, bool on)
{
    if (on == w->accepting)
        return;
    w->accepting = on;
    for (unsigned i = 0; i < w->naccept; i++) {
        if (on)
            ev_io_start(w->loop, &w->accept_io[i]);
        else
            ev_io_stop(w->loop, &w->accept_io[i]);
    }
}

static unsigned conn_cap(const struct worker *w)
{
    unsigned cap = w->conf->limits.max_connections / w->srv->nworkers;
    return cap ? cap : 1;
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    struct worker *w = io->data;
    for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
        if (w->nconns >= conn_cap(w)) {
            accepting(w, false);    /* the rest wait in the kernel backlog */
            return;
        }
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &peer_len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: pause instead of spinning on a ready listener. */
                if (ev_now(loop) - w->accept_warned >= 1.0) {     /* one line a second */
                    w->accept_warned = ev_now(loop);
                    log_warn("accept: %s; pausing accepts for %.0f ms", strerror(errno),
                             EMFILE_PAUSE * 1000);
                }
                accepting(w, false);
                if (!ev_is_active(&w->accept_pause)) {
                    /* set again each time: a one-shot timer that fired keeps ~0 s left */
                    ev_timer_set(&w->accept_pause, EMFILE_PAUSE, 0.);
                    ev_timer_start(loop, &w->accept_pause);
                }
            }
            return;     /* EAGAIN (another worker took it), ECONNABORTED, … */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);     /* fails on unix: ok */
        conn_accept(w, fd, (const struct sockaddr *)&peer, peer_len);
    }
}

/* Builds this worker's accept watchers over the server's current listening set. */
static int watch_listeners(struct worker *w)
{
    struct server *s = w->srv;
    pthread_mutex_lock(&s->lock);
    unsigned n = s->nlisten;
    ev_io *io = calloc(n ? n : 1, sizeof(ev_io));
    for (unsigned i = 0; io && i < n; i++) {
        ev_io_init(&io[i], on_accept, s->listen_fds[i], EV_READ);
        io[i].data = w;
    }
    w->listen_generation = s->listen_generation;
    pthread_mutex_unlock(&s->lock);
    if (!io)
        return -1;
    w->accept_io = io;
    w->naccept = n;
    return 0;
}

/* Reload changed listen:: stop watching the old set, watch the new one. */
static void rebind(struct worker *w)
{
    bool was = w->accepting;
    accepting(w, false);
    ev_io *old = w->accept_io;
    unsigned n = w->naccept;
    if (watch_listeners(w) < 0) {
        w->accept_io = old;     /* keep serving on the old set rather than none */
        w->naccept = n;
    } else {
        free(old);
    }
    server_listeners_switched(w->srv);
    if (was)
        accepting(w, true);
}

static void on_accept_pause(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    if (!w->draining)
        accepting(w, true);
}

void worker_conn_closed(struct worker *w)
{
    w->nconns--;
    if (!w->accepting && !w->draining && !ev_is_active(&w->accept_pause) &&
        w->nconns < conn_cap(w))
        accepting(w, true);
    worker_maybe_finished(w);
}

void worker_maybe_finished(struct worker *w)
{
    if (w->draining && w->nconns == 0 && jobs_worker_idle(w))
        ev_break(w->loop, EVBREAK_ALL);
}

static void on_drain_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    log_warn("worker %u: shutdown grace over, aborting %u connection(s)", w->id, w->nconns);
    conn_abort_all(w);
    jobs_worker_abort(w);       /* they run again at the next start */
    worker_maybe_finished(w);
}

/* The last worker to stop watching the listeners closes them, so new connections are refused
 * (not queued to die at exit). Sockets from systemd stay open: they queue for the next start. */
static void release_listeners(struct server *s)
{
    if (__atomic_add_fetch(&s->stopped_accepting, 1, __ATOMIC_ACQ_REL) != s->nworkers ||
        s->listen_inherited)
        return;
    for (unsigned i = 0; i < s->nlisten; i++) {
        close(s->listen_fds[i]);
        s->listen_fds[i] = -1;
    }
}

static void start_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    accepting(w, false);
    ev_timer_stop(w->loop, &w->accept_pause);
    release_listeners(w->srv);
    conn_drain_idle(w);
    ev_timer_set(&w->drain_timer, (double)w->conf->shutdown_grace_ms / 1000.0, 0.);
    ev_timer_start(w->loop, &w->drain_timer);
    worker_maybe_finished(w);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    struct worker *w = a->data;
    struct server *s = w->srv;
    struct conf *fresh = NULL;
    pthread_mutex_lock(&s->lock);
    if (w->generation != s->conf_generation) {
        fresh = conf_ref(s->current);
        w->generation = s->conf_generation;
    }
    bool drain = s->drain, now = s->stop_now;
    bool relisten = w->listen_generation != s->listen_generation;
    pthread_mutex_unlock(&s->lock);
    if (fresh) {
        conf_unref(w->conf);    /* requests in flight keep their own reference */
        w->conf = fresh;
    }
    if (relisten)
        rebind(w);
    if (drain)
        start_drain(w);
    if (now) {
        conn_abort_all(w);
        jobs_worker_abort(w);
        worker_maybe_finished(w);
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct worker *w = t->data;
    __atomic_store_n(&w->heartbeat_ms, mono_ms(), __ATOMIC_RELAXED);
}

/* curl caps connections per host for the whole multi handle: the largest upstream's share.
 * The cache of idle connections holds every upstream's share, so a busy worker keeps reusing
 * its connections instead of reconnecting. */
static void connection_caps(const struct conf *c, unsigned nworkers, long *host, long *cached)
{
    unsigned long max = 0, sum = 0;
    for (size_t i = 0; i < c->nupstreams; i++) {
        unsigned long m = c->upstreams[i].max_connections;
        max = m > max ? m : max;
        sum += m;
    }
    *host = max ? (long)((max + nworkers - 1) / nworkers) : 0;
    *cached = (long)((sum + nworkers - 1) / nworkers);
    if (*cached < 64)
        *cached = 64;
}

static int worker_init(struct worker *w)
{
    long host, cached;
    connection_caps(w->conf, w->srv->nworkers, &host, &cached);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    w->engine = w->loop ? engine_new(w->loop, host, cached) : NULL;
    if (!w->engine || watch_listeners(w) < 0 || jobs_worker_init(w) < 0)
        return -1;
    proxy_worker_init(w);
    if (!(w->state = state_link_new(w->srv->state, w->loop, w->id, &w->m.state_errors)))
        return -1;
    ev_async_init(&w->wake, on_wake);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    ev_timer_init(&w->accept_pause, on_accept_pause, EMFILE_PAUSE, 0.);
    ev_timer_init(&w->drain_timer, on_drain_timeout, 0., 0.);
    ev_timer_init(&w->heartbeat, on_heartbeat, 0., 1.);
    w->accept_pause.data = w->drain_timer.data = w->heartbeat.data = w;
    ev_timer_start(w->loop, &w->heartbeat);
    ev_unref(w->loop);      /* the heartbeat alone doesn't keep the loop alive */
    on_heartbeat(w->loop, &w->heartbeat, 0);
    w->rng = (uint32_t)mono_ms() ^ (uint32_t)(w->id * 2654435761u) ^ (uint32_t)getpid();
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    accepting(w, true);
    ev_run(w->loop, 0);
    __atomic_store_n(&w->exited, true, __ATOMIC_RELEASE);
    ev_async_send(w->srv->main_loop, w->srv->main_wake);
    return NULL;
}

int server_start(struct server *s, struct conf *c, unsigned nworkers, struct ev_loop *main_loop,
                 ev_async *main_wake)
{
    s->workers = calloc(nworkers, sizeof *s->workers);
    if (!s->workers || health_bind(&s->health, c) < 0)
        return -1;
    s->nworkers = nworkers;
    s->labels = metrics_registry_new(nworkers);
    metrics_labels_attach(s->labels, c);
    s->current = conf_ref(c);
    s->main_loop = main_loop;
    s->main_wake = main_wake;
    pthread_mutex_init(&s->lock, NULL);
    char err[256];
    if (!(s->state = state_new(c, err, sizeof err))) {
        log_error("state: %s", err);
        return -1;
    }
    for (unsigned i = 0; i < nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->id = i;
        w->srv = s;
        w->conf = conf_ref(c);
        if (worker_init(w) < 0)
            return -1;
    }
    for (unsigned i = 0; i < nworkers; i++)
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0)
            return -1;
    __atomic_store_n(&s->ready, 1, __ATOMIC_RELAXED);
    return 0;
}

static void wake_all(struct server *s)
{
    for (unsigned i = 0; i < s->nworkers; i++)
        ev_async_send(s->workers[i].loop, &s->workers[i].wake);
}

void server_reload(struct server *s, struct conf *c)
{
    if (health_bind(&s->health, c) < 0) {
        log_error("reload: out of memory binding breaker state; the running config stays");
        conf_unref(c);
        pthread_mutex_lock(&s->lock);
        s->reloads_failed++;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    metrics_labels_attach(s->labels, c);    /* before any worker can see c */
    if (state_differs(s->state, c))
        log_warn("reload: state: takes effect at restart (the keys' limits keep the backend "
                 "and settings they started with)");
    pthread_mutex_lock(&s->lock);
    conf_unref(s->current);
    s->current = c;
    s->conf_generation++;
    s->reloads_ok++;
    pthread_mutex_unlock(&s->lock);
    wake_all(s);
}

void server_drain(struct server *s, bool now)
{
    pthread_mutex_lock(&s->lock);
    s->drain = true;
    s->stop_now = s->stop_now || now;
    s->ready = 0;
    pthread_mutex_unlock(&s->lock);
    wake_all(s);
}

bool server_all_exited(struct server *s)
{
    for (unsigned i = 0; i < s->nworkers; i++)
        if (!__atomic_load_n(&s->workers[i].exited, __ATOMIC_ACQUIRE))
            return false;
    return true;
}

bool server_alive(struct server *s, uint64_t max_age_ms)
{
    uint64_t now = mono_ms();
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        if (__atomic_load_n(&w->exited, __ATOMIC_ACQUIRE))
            continue;   /* a drained worker is done, not wedged */
        if (now - __atomic_load_n(&w->heartbeat_ms, __ATOMIC_RELAXED) > max_age_ms)
            return false;
    }
    return true;
}

unsigned server_inflight(struct server *s)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += __atomic_load_n(&s->workers[i].m.inflight_requests, __ATOMIC_RELAXED);
    return (unsigned)n;
}

unsigned server_connections(struct server *s)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += __atomic_load_n(&s->workers[i].m.conns_open, __ATOMIC_RELAXED);
    return (unsigned)n;
}

void server_join(struct server *s)
{
    for (unsigned i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i].thread, NULL);
}

void server_free(struct server *s)
{
    for (unsigned i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        jobs_worker_free(w);
        state_link_free(w->state);     /* before its loop goes */
        engine_free(w->engine);
        if (w->loop)
            ev_loop_destroy(w->loop);
        free(w->accept_io);
        conf_unref(w->conf);
    }
    free(s->workers);
    state_free(s->state);
    server_close_listeners(s);
    if (s->current)
        conf_unref(s->current);
    health_table_free(&s->health);
    pthread_mutex_destroy(&s->lock);
    /* The workers have stopped; snapshots still held elsewhere only free their index. */
    metrics_registry_free(s->labels);
    s->labels = NULL;
}
