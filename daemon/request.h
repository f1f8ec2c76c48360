/* request: one unit of client-visible work (an HTTP request, a gather item, later a job).
 * It owns its deadline, its upstream work and its config reference, and ends exactly once
 * through request_end(), which cancels all it still owns and records the outcome. */
#ifndef LLMUX_REQUEST_H
#define LLMUX_REQUEST_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "conf/conf.h"
#include "daemon/metrics.h"
#include "upstream/provider.h"

struct request;
struct worker;
struct proxy;
struct gather;
struct jobs_pending;

/* Where a request's answer goes: a client connection, a gather parent, a job record.
 * stream_data returns true when the consumer is above its high-water mark (pause upstream);
 * it later calls request_drained(). `ended` runs once, from request_end. */
struct sink_ops {
    void (*respond)(struct request *r, int status, const char *body, size_t len);
    void (*stream_start)(struct request *r, int status);
    bool (*stream_data)(struct request *r, const char *p, size_t n);
    void (*stream_end)(struct request *r, bool complete);
    void (*ended)(struct request *r);
};

#define REQUEST_ID_MAX 64
#define REQUEST_CLIENT_MAX 56           /* "[v6 address]:port" */
#define REQUEST_UA_MAX 256              /* user agents are cut to this many bytes in the log */

/* The error shape a request's client expects, a property of the endpoint it came in on. */
enum error_shape { ERROR_SHAPE_OPENAI, ERROR_SHAPE_ANTHROPIC };

struct request {
    struct worker *w;
    struct conf *conf;                  /* reference held for the request's whole life */
    const struct sink_ops *sink;
    void *owner;                        /* conn, gather, … (the sink's context) */
    char id[REQUEST_ID_MAX + 1];
    enum route_id route;
    enum endpoint ep;
    enum error_shape error_shape;       /* how request_fail words errors */
    char anthropic_version[32];         /* the client's anthropic-version header, or "" */
    const struct conf_key *key;         /* NULL when the gateway is open */
    char *model;                        /* client's model name (for logs), owned */
    const struct conf_model *cmodel;    /* the configured model it resolved to, or NULL */
    int label_pair;                     /* metric labels of the last target tried; -1 none */
    char method[8];
    char path[48];                      /* truncated copy, for logs */
    char client[REQUEST_CLIENT_MAX];    /* peer address, for logs; "" when not a connection's */
    char *user_agent;                   /* owned, cut to REQUEST_UA_MAX bytes; NULL = none */
    double started;                     /* ev_now at creation (the deadline's clock) */
    double t0;                          /* ev_time at creation, for latency figures */
    ev_timer deadline;
    double deadline_at;                 /* absolute, loop clock; 0 = none */
    bool no_retry, stream, ended, responded, streaming;
    long max_tokens;                    /* the client's completion cap (router.c); -1 none */
    int status;
    enum outcome outcome;
    const char *upstream;               /* name of the upstream that served it (in conf) */
    const char *content_type;           /* of a complete answer; NULL = JSON */
    const char *allow;                  /* Allow header of a 405 */
    char location[48];                  /* Location header of a 202 (a job); "" = none */
    unsigned attempts;
    unsigned hedge_winner;              /* number of the attempt whose head won; 0 none */
    bool hedged;                        /* a hedge attempt was started */
    int64_t hedge_ms;                   /* X-Llmux-Hedge-Ms; -1 absent */
    const char *phase_timeout;          /* error code of the phase timeout that fired, or NULL */
    int64_t retry_after_s;              /* -1 none */
    struct usage usage;                 /* tokens charged: the upstream's usage, or estimated */
    double cost_usd;                    /* what they cost by the price table */
    bool priced;                        /* a price row applied (else the cost is unknown) */
    bool usage_estimated;               /* a call gave no usage and was charged by estimate */
    uint64_t bytes_out;
    double upstream_ms;
    struct proxy *proxy;                /* upstream work of chat-like requests */
    struct buf body_raw;                /* the client's body text, when it is the upstream's */
    struct buf fwd_headers;             /* allow-listed client headers, "Name: value" each
                                         * followed by a NUL, sent upstream as they came */
    struct request *qnext, *qprev;      /* in the worker's slot queue while queued */
    const struct conf_model *qmodel;
    bool queued;
    struct keylimit *keylimit;          /* its key's admission and what it holds (keylimit.c) */
    struct budget *budget;              /* its spend reservation, or a /v1/spend read */
    bool wait_for_key;                  /* waits for its key's slot within its deadline instead
                                         * of a 429 (gather items, jobs) */
    struct trace *trace;                /* its trace context and span; NULL: tracing off */
    size_t mem;                         /* bytes charged to limits.max_memory, given back
                                         * by request_free */
    struct gather *gather;              /* work of a gather */
    unsigned gather_index;              /* item index when owned by a gather */
    struct jobs_pending *jobs_pending;  /* a job submission waiting for its record */
};

/* conf: a reference is taken. deadline_ms 0 = none. */
struct request *request_new(struct worker *w, struct conf *conf, const struct sink_ops *sink,
                            void *owner, enum route_id route);
void request_set_deadline(struct request *r, uint64_t ms);
/* Who asked, for the access log: the peer address and the User-Agent (ua may be NULL). */
void request_set_client(struct request *r, const char *client, const char *ua, size_t ualen);
/* Ends the request once: cancels its work, stops its timer, counts and logs it, tells the sink. */
void request_end(struct request *r, enum outcome o);
void request_free(struct request *r);

/* Answers with an error in the request's error shape (or, mid-stream, an SSE error event and a
 * truncated end) and ends the request with outcome o. The one place errors are worded:
 * Anthropic's shape keeps the message and names its type after the status. */
void request_fail(struct request *r, int status, const char *type, const char *code,
                  const char *param, const char *message, enum outcome o);
/* Answers with a complete JSON body and ends the request as completed. */
void request_reply_json(struct request *r, int status, json_t *body);   /* steals body */
/* The sink drained below its low-water mark: resume paused upstream reads. */
void request_drained(struct request *r);

/* Response production, for the request's worker (proxy, handlers). Each tracks state so that
 * request_fail knows whether a head already went out. */
void request_respond(struct request *r, int status, const char *body, size_t len);
void request_stream_start(struct request *r, int status);
bool request_stream_data(struct request *r, const char *p, size_t n);  /* true: above high water */
void request_stream_end(struct request *r, bool complete);

/* limits.max_memory: the big buffers (client bodies, upstream answers, gather entries) are
 * counted process-wide with relaxed atomics, so new work is refused before the kernel's OOM
 * killer acts. mem_add/mem_sub move the count; request_charge also remembers the bytes on r
 * (given back when it is freed); request_mem_admits says whether n more bytes of new work fit. */
void mem_add(struct worker *w, size_t n);
void mem_sub(struct worker *w, size_t n);
void request_charge(struct request *r, size_t n);
bool request_mem_admits(const struct request *r, size_t n);

/* Request ids: unique, URL-safe. Client-supplied ids are kept when they are safe. */
void request_make_id(char *out, uint32_t *rng);
bool request_id_acceptable(const char *p, size_t n);

#endif
