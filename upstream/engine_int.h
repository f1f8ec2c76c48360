/* engine internals shared by engine.c (the curl_multi glue, shards, pool, gates) and call.c
 * (one transfer's options and callbacks). Nothing outside upstream/engine*.c and call.c. */
#ifndef LLMUX_ENGINE_INT_H
#define LLMUX_ENGINE_INT_H

#include "upstream/engine.h"

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "upstream/gate.h"

#define EASY_POOL_MAX 1024  /* idle easy handles kept for reuse (curl_easy_reset is cheap) */
#define POOL_KEEP 16        /* handles kept however quiet it gets */
#define TRIM_SECONDS 2.0

/* libcurl 7.88 walks a host's connection bundle to find one to reuse (ConnectionExists: every
 * busy connection before the first idle one) and walks the whole cache again in every
 * curl_multi_remove_handle (close_connect_only, until it meets the connection just used):
 * two walks per transfer, linear in the connections of one multi handle, so CPU per request
 * grew with concurrency. The engine therefore spreads HTTP/1.1 calls over shards (multi handles
 * with their own connection caches), made when needed and filled lowest first up to
 * SHARD_CONNECTIONS calls each (the first shard is the multiplexed calls'): at low concurrency
 * every HTTP/1.1 call stays on the second (one batch per loop turn), up to 960 calls no walk
 * covers more than 64 connections, and past that the calls go to the least busy shard. Each multi handle holds a socketpair (curl's wakeup), so
 * their number stays small. */
#define SHARD_CONNECTIONS 64
#define MAX_SHARDS 16
/* A shard above the first that no call used for this many trim periods (30 s) is closed with
 * its idle connections: curl only prunes a cache when a transfer connects through it, so a
 * burst's connections would otherwise hold descriptors and TLS state, and stay counted by the
 * gates, until traffic reached that shard again. */
#define SHARD_IDLE_TRIMS 15

struct shard {
    struct engine *e;
    CURLM *multi;
    ev_timer timer;
    unsigned active;        /* HTTP/1.1 calls (one connection each); h2 calls don't count */
    bool used;              /* a call started here since the last trim */
    unsigned idle_trims;    /* trim periods in a row without a call */
};

struct engine {
    struct ev_loop *loop;
    struct shard shards[MAX_SHARDS];
    unsigned nshards;       /* created so far (the first at start, the others when needed) */
    unsigned shard_room;    /* no shard below this one (≥ 1) has room for an HTTP/1.1 call */
    long max_host;          /* curl's per-host cap in each shard (the gates cap the calls) */
    long max_cached;        /* connections a shard's cache keeps (0: curl's default) */
    CURLSH *share;          /* TLS sessions and DNS answers, for every shard of this loop */
    ev_timer trim;          /* gives back pooled handles a burst left behind */
    ev_prepare pump;        /* starts queued calls once the loop is back outside curl */
    struct gate *gates;     /* one per upstream (and protocol) seen; kept until engine_free */
    unsigned pool_low;      /* fewest pooled handles seen since the last trim */
    unsigned active;
    unsigned depth;         /* > 0 while a call's callback runs (inside curl) */
    struct call *deferred;  /* cancelled inside another call's callback: freed after it */
    CURL *pool[EASY_POOL_MAX];
    unsigned npool;
};

struct call {
    struct engine *e;
    struct shard *sh;
    struct gate *gate;
    struct gate_wait wait;          /* in gate's line while queued */
    struct call_spec spec;          /* kept for a queued call: url is then its own copy */
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
    struct call *next_deferred;
    struct buf held;                /* multiplexed: body bytes the reader refused, in order */
    CURLcode done_rc;               /* finished while bytes were held: reported once drained */
    long done_status;
    bool head_sent, in_cb, cancelled, too_large, queued, multiplex, curl_paused, finished;
    bool paused;                    /* its reader refused bytes (held or curl paused) */
    bool opener;                    /* opening its gate's next h2 connection, not yet ready */
    bool upgrade;                   /* h2c by "Upgrade:": the connection is h2 after the answer */
    char errbuf[CURL_ERROR_SIZE];
};

/* engine.c */
void call_phase_arm(struct call *c, double s);

/* call.c */
void call_set_options(struct call *c, const struct call_spec *spec);
void call_deliver_head(struct call *c);
bool call_url_https(const char *url);

#endif
