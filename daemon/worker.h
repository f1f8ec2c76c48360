/* worker: one event-loop thread and everything it owns — its loop, curl engine, connections,
 * config snapshot reference and counters. server: the set of workers and the process-wide
 * breaker table. */
#ifndef LLMUX_WORKER_H
#define LLMUX_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

#include "conf/conf.h"
#include "daemon/metrics.h"
#include "upstream/engine.h"
#include "upstream/health.h"
#include "upstream/route.h"

struct conn;
struct server;
struct metrics_registry;
struct jobs_worker;
struct jobs_store;
struct keylimit;
struct state;
struct state_link;

struct worker {
    unsigned id;
    struct server *srv;
    pthread_t thread;
    struct ev_loop *loop;
    struct engine *engine;
    struct conf *conf;              /* snapshot new requests take a reference to */
    ev_async wake;                  /* main → worker: new config, drain, stop */
    ev_io *accept_io;               /* one per listening socket */
    unsigned naccept;
    ev_timer accept_pause;          /* EMFILE: accepting resumes after it */
    double accept_warned;           /* when EMFILE was last logged */
    ev_timer drain_timer;           /* shutdown grace */
    ev_timer heartbeat;             /* proves the loop turns (systemd watchdog) */
    uint64_t heartbeat_ms;          /* atomic: last turn, monotonic ms */
    unsigned generation;            /* of the config snapshot it holds */
    unsigned listen_generation;     /* of the listening set it watches */
    bool exited;                    /* atomic: the thread's loop returned */
    struct conn *conns;             /* all open connections (doubly linked) */
    unsigned nconns;
    unsigned inflight;              /* of the process-wide limits.max_inflight slots, held here */
    struct request *queue_head;     /* waiting for a slot, FIFO (limits.queue) */
    struct request *queue_tail;
    unsigned queued;                /* atomic: read by other workers */
    ev_prepare admit;               /* starts queued requests, outside anyone's callback */
    ev_async admit_wake;            /* another worker freed an in-flight slot */
    bool draining, accepting;
    uint32_t rng;
    struct jobs_worker *jobs;       /* jobs_run.c: jobs running here, the store's inbox wake */
    struct state_link *state;       /* limit state: this worker's Redis link, if any */
    struct keylimit *key_waiters;   /* requests waiting for a key's slot (keylimit.c) */
    struct metrics m;
};

struct server {
    struct worker *workers;
    unsigned nworkers;
    int *listen_fds;                /* the current set (guarded by lock while it changes) */
    char **listen_addrs;            /* their conf->listen strings; NULL when inherited */
    unsigned nlisten;
    unsigned listen_generation;
    int *old_fds;                   /* the set being replaced, until every worker switched */
    char **old_addrs;
    unsigned old_n;
    unsigned listen_switched;       /* atomic */
    bool listen_inherited;          /* from systemd: never closed or unlinked by us */
    pthread_mutex_t lock;           /* guards current and the flags below */
    struct conf *current;           /* the snapshot workers pick up on wake */
    struct state *state;            /* per-key limit state, whole process (state.h) */
    ev_async *main_wake;            /* worker → main: a worker exited */
    struct ev_loop *main_loop;
    unsigned conf_generation;
    bool drain, stop_now;
    unsigned stopped_accepting;     /* atomic: workers whose accept watchers are stopped */
    unsigned inflight_slots;        /* atomic: limits.max_inflight slots taken, all workers */
    unsigned queued_total;          /* atomic: requests queued for a slot, all workers */
    uint64_t reloads_ok, reloads_failed;
    int ready;
    struct metrics_registry *labels;    /* labelled counters; every snapshot gets an index */
    struct jobs_store *jobs;        /* process-wide; NULL when the journal could not be read */
    char jobs_error[320];           /* why jobs is NULL */
    struct health_table health;     /* breaker entries; grown by the main thread only */
    uint64_t mem_used;              /* atomic: big buffers held, against limits.max_memory */
};

/* Listening sockets: from systemd (sd_listen_fds) or opened from conf->listen. */
int server_open_listeners(struct server *s, const struct conf *c, char *err, size_t errlen);
/* Reload: makes the listening set match c (main thread); workers switch on their next wake. */
int server_update_listeners(struct server *s, const struct conf *c, char *err, size_t errlen);
void server_listeners_switched(struct server *s);
void server_close_listeners(struct server *s);
/* Every listener is a unix socket or on a loopback address. */
bool server_listeners_local(const struct server *s);
int server_start(struct server *s, struct conf *c, unsigned nworkers, struct ev_loop *main_loop,
                 ev_async *main_wake);
void server_reload(struct server *s, struct conf *c);       /* takes the reference */
void server_drain(struct server *s, bool now);
void server_join(struct server *s);
bool server_all_exited(struct server *s);
bool server_alive(struct server *s, uint64_t max_age_ms);  /* every loop turned recently */
unsigned server_connections(struct server *s);
void server_free(struct server *s);
unsigned server_inflight(struct server *s);

/* Worker-side helpers. */
void worker_conn_closed(struct worker *w);
/* Called by a request when it ends: lets a draining worker notice it is done. */
void worker_maybe_finished(struct worker *w);

#endif
