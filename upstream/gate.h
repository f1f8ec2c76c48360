/* gate: how many calls to one upstream may run on one engine, and the FIFO of those waiting.
 * Pure bookkeeping (no curl, no loop), so the engine decides in O(1) per call start. */
#ifndef LLMUX_GATE_H
#define LLMUX_GATE_H

#include <stdbool.h>

/* Streams we put on one HTTP/2 connection (curl's own default cap, and RFC 9113's
 * recommended minimum for a server's SETTINGS_MAX_CONCURRENT_STREAMS). */
#define GATE_STREAMS 100

/* TLS connections one HTTP/1.1 gate sets up at once. A handshake costs libcurl 7.88 with
 * OpenSSL 3 ~1 ms of CPU (an SSL_CTX per connection): ten thousand calls starting together
 * would all be mid-handshake at once, none finishing before the connect timeout; in batches
 * they finish in turn and their connections are reused. */
#define GATE_HANDSHAKES 128

/* Embedded in a waiting call. */
struct gate_wait {
    struct gate_wait *next;
};

/* HTTP/1.1 (multiplex false): at most cap calls, one connection each; over TLS, a call that
 * finds no idle connection is an opener, and at most GATE_HANDSHAKES openers run at once.
 * HTTP/2 (multiplex true): calls fill the connections open, per_conn streams each; when all are
 * full, a call opens the next connection (an opener) and the rest wait until it is ready — one
 * opener per per_conn waiting calls, so a burst opens one connection per per_conn calls, in
 * parallel, instead of one per call. */
struct gate {
    struct gate *next;
    bool multiplex;
    bool tls;                   /* HTTP/1.1 over TLS: openers are limited (GATE_HANDSHAKES) */
    unsigned openers;           /* connections being set up for openers */
    unsigned waiting;           /* calls in the line */
    unsigned cap, active;       /* active: calls running (h2: streams, including openers) */
    unsigned conns;             /* multiplex, tls: connections open (sockets curl opened) */
    unsigned per_conn;          /* multiplex: streams per connection (learned, ≤ GATE_STREAMS) */
    struct gate_wait *head, *tail;
    char key[];
};

/* The gate of (key, multiplex) in *list, created on first use with cap and tls (NULL: out of
 * memory); a reload's new cap takes effect at restart, like the connection pools'. */
struct gate *gate_get(struct gate **list, const char *key, bool multiplex, bool tls,
                      unsigned cap);
void gate_free_all(struct gate **list);

/* May a new call start now (nobody waits before it and there is room)? *opener is set when
 * the call is to open a new HTTP/2 connection. */
bool gate_admit(struct gate *g, bool *opener);
void gate_push(struct gate *g, struct gate_wait *w);
/* Unlinks w (a waiting call that ended); false if it was not waiting. */
bool gate_remove(struct gate *g, struct gate_wait *w);
/* The first waiting call if it may start now (unlinked), else NULL. */
struct gate_wait *gate_pop(struct gate *g, bool *opener);

/* A call starts; opener as gate_admit/gate_pop said. */
void gate_started(struct gate *g, bool opener);
/* A call that had started ended; opener: before its connection was ready. */
void gate_ended(struct gate *g, bool opener);
/* The opener's connection is ready (its request is about to leave). */
void gate_ready(struct gate *g);
/* Does the gate count this call's connections (multiplex or tls)? */
bool gate_counts_conns(const struct gate *g);
/* curl opened a connection; by_opener false: for a call the gate thought would fit, so the
 * server allows fewer streams than assumed — the gate learns how many, and that call becomes
 * an opener (the others wait for its connection). */
void gate_conn_opened(struct gate *g, bool by_opener);
/* HTTP/1.1 over TLS: curl opened a connection for a call; one the gate expected to reuse an
 * idle connection (*opener false) becomes an opener, so its handshake is counted too. */
void gate_h1_conn_opened(struct gate *g, bool *opener);
void gate_conn_closed(struct gate *g);

#endif
