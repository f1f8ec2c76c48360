/* llmuxd: command line, config check (-t), signals (reload, drain, stop), and the systemd
 * conversation (READY, RELOADING, STOPPING, STATUS, WATCHDOG). Workers do the serving. */
#include <curl/curl.h>
#include <ev.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "conf/conf.h"
#include "daemon/fdlimit.h"
#include "daemon/router.h"
#include "daemon/settings.h"
#include "daemon/jobs.h"
#include "daemon/jobs_store.h"
#include "daemon/trace_export.h"
#include "daemon/worker.h"

struct daemon_state {
    struct server srv;
    const char *path;
    struct ev_loop *loop;
    ev_signal sighup, sigterm, sigint;
    ev_async worker_exit;
    ev_timer watchdog, status;
    unsigned terms;
    char last_reload_error[512];
    struct conf *boot;              /* the configuration at start: what start-only settings are */
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: llmuxd [-c FILE] [-t] [-h] [-V]\n"
               "  -c, --config FILE  configuration (default /etc/llmux/llmux.yaml)\n"
               "  -t, --test         check the configuration and exit (0 valid, 1 invalid)\n"
               "  -h, --help         print this help and exit\n"
               "  -V, --version      print the version and exit\n");
}

enum { OPT_ROUTES = 0x100 };

/* Returns -1 to go on and serve (or check), else the exit status. --routes is for the docs
 * test and tools (see llmuxd(8)); it needs no configuration. */
static int parse_args(int argc, char **argv, struct daemon_state *d, bool *test_only)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {"routes", no_argument, NULL, OPT_ROUTES}, {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:thV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': d->path = optarg; break;
        case 't': *test_only = true; break;
        case 'V': printf("llmuxd %s\n", LLMUX_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        case OPT_ROUTES: router_print_routes(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "llmuxd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    return -1;
}

static unsigned worker_count(const struct conf *c)
{
    if (c->workers)
        return c->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static void notify_status(struct daemon_state *d)
{
    sd_notifyf(0, "STATUS=%u connections, %u requests in flight%s%s",
               server_connections(&d->srv), server_inflight(&d->srv),
               d->last_reload_error[0] ? "; last reload failed: " : "", d->last_reload_error);
}

static void on_status(struct ev_loop *loop, ev_timer *t, int revents)
{
    notify_status(t->data);
}

static uint64_t monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void on_sighup(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct daemon_state *d = s->data;
    char err[512];
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)monotonic_usec());
    struct conf *c = conf_load(d->path, err, sizeof err);   /* a small file, read once */
    if (c && server_update_listeners(&d->srv, c, err, sizeof err) < 0)
        log_error("reload: %s; listen: keeps its old value", err);
    if (c) {
        log_setup(c->log.level, c->log.format);
        fdlimit_fit(c, false);
        settings_reload_report(d->boot, c, d->srv.nworkers, worker_count(c),
                               d->srv.listen_inherited);
        if (d->srv.jobs)
            jobs_store_configure(d->srv.jobs, c);
        server_reload(&d->srv, c);
        d->last_reload_error[0] = '\0';
        log_info("configuration reloaded from %s", d->path);
    } else {
        pthread_mutex_lock(&d->srv.lock);
        d->srv.reloads_failed++;
        pthread_mutex_unlock(&d->srv.lock);
        snprintf(d->last_reload_error, sizeof d->last_reload_error, "%s", err);
        log_error("reload failed, keeping the running configuration: %s", err);
    }
    sd_notify(0, "READY=1");
    notify_status(d);
}

static void on_term(struct ev_loop *loop, ev_signal *s, int revents)
{
    struct daemon_state *d = s->data;
    bool now = ++d->terms > 1;
    log_info(now ? "second stop signal: aborting in-flight requests"
                 : "stop signal: draining (new connections refused)");
    sd_notify(0, "STOPPING=1");
    if (d->srv.jobs)
        jobs_store_drain(d->srv.jobs);  /* queued jobs wait for the next start */
    server_drain(&d->srv, now);
}

static void on_worker_exit(struct ev_loop *loop, ev_async *a, int revents)
{
    struct daemon_state *d = a->data;
    if (server_all_exited(&d->srv))
        ev_break(loop, EVBREAK_ALL);
}

/* Pings only while every worker's loop turns: a wedged loop gets the service restarted. */
static void on_watchdog(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct daemon_state *d = t->data;
    if (server_alive(&d->srv, 5000))
        sd_notify(0, "WATCHDOG=1");
    else
        log_error("a worker loop is not turning; withholding the watchdog ping");
}

static void watch_signals(struct daemon_state *d)
{
    ev_signal_init(&d->sighup, on_sighup, SIGHUP);
    ev_signal_init(&d->sigterm, on_term, SIGTERM);
    ev_signal_init(&d->sigint, on_term, SIGINT);
    d->sighup.data = d->sigterm.data = d->sigint.data = d;
    ev_signal_start(d->loop, &d->sighup);
    ev_signal_start(d->loop, &d->sigterm);
    ev_signal_start(d->loop, &d->sigint);
    ev_async_init(&d->worker_exit, on_worker_exit);
    d->worker_exit.data = d;
    ev_async_start(d->loop, &d->worker_exit);
    uint64_t wd_usec = 0;
    if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec) {
        ev_timer_init(&d->watchdog, on_watchdog, 0., (double)wd_usec / 2e6);
        d->watchdog.data = d;
        ev_timer_again(d->loop, &d->watchdog);
    }
    ev_timer_init(&d->status, on_status, 5., 5.);
    d->status.data = d;
    ev_timer_start(d->loop, &d->status);
}

/* The jobs store replays its journal before any worker runs. A journal that cannot be read
 * leaves /v1/jobs answering 503 (never overwritten), the rest of the gateway serves. */
static void open_jobs(struct daemon_state *d, struct conf *c, unsigned nworkers)
{
    char err[256];
    if (c->state.backend == STATE_REDIS)
        return;     /* jobs live in Redis (daemon/jobs_redis*.c) */
    d->srv.jobs = jobs_store_open(c, nworkers, jobs_wake_worker, &d->srv, err, sizeof err);
    if (!d->srv.jobs) {
        snprintf(d->srv.jobs_error, sizeof d->srv.jobs_error, "background jobs are "
                 "unavailable: %s", err);
        log_error("%s", d->srv.jobs_error);
    }
}

static int run(struct daemon_state *d, struct conf *c)
{
    char err[512];
    fdlimit_fit(c, true);
    if (server_open_listeners(&d->srv, c, err, sizeof err) < 0) {
        log_error("%s", err);
        return 1;
    }
    /* Workers inherit a blocked mask; only the main loop takes signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    log_start_async();      /* after the mask: the writer thread never takes a signal */
    trace_export_start(c);  /* likewise */
    d->loop = ev_default_loop(EVFLAG_AUTO);
    unsigned n = worker_count(c);
    open_jobs(d, c, n);
    if (server_start(&d->srv, c, n, d->loop, &d->worker_exit) < 0) {
        log_error("cannot start %u worker(s)", n);
        return 1;
    }
    if (d->srv.jobs)
        jobs_store_kick(d->srv.jobs);   /* what the journal left queued runs again */
    watch_signals(d);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    /* Open to this host only is how the package ships; open to a network deserves a warning. */
    if (c->nkeys == 0 && server_listeners_local(&d->srv))
        log_info("no keys configured: open to clients on this host (every listener is "
                 "loopback or unix)");
    else if (c->nkeys == 0)
        log_warn("no keys configured: the gateway is open to anyone who can reach it");
    log_info("llmuxd %s ready: %u worker(s), %zu model(s)", LLMUX_VERSION, n, c->nmodels);
    sd_notify(0, "READY=1");
    notify_status(d);
    ev_run(d->loop, 0);
    server_join(&d->srv);
    jobs_store_close(d->srv.jobs);      /* after the workers: what they recorded is written */
    d->srv.jobs = NULL;
    log_info("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    struct daemon_state d;
    memset(&d, 0, sizeof d);
    d.path = "/etc/llmux/llmux.yaml";
    bool test_only = false;
    int done = parse_args(argc, argv, &d, &test_only);
    if (done >= 0)
        return done;
    char err[512];
    struct conf *c = conf_load(d.path, err, sizeof err);
    if (!c) {
        fprintf(stderr, "llmuxd: %s\n", err);
        return 1;
    }
    if (test_only) {
        settings_check_report(c, stderr);
        printf("llmuxd: %s: configuration OK\n", d.path);
        conf_unref(c);
        return 0;
    }
    log_setup(c->log.level, c->log.format);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    d.boot = c;
    int rc = run(&d, c);
    trace_export_stop();    /* after the workers: what their last requests left is sent */
    server_free(&d.srv);
    conf_unref(c);
    curl_global_cleanup();
    log_stop_async();
    return rc;
}
