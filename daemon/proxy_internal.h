/* proxy_internal: one request's upstream state, shared by proxy.c (attempts, retries, answers)
 * and hedge.c (delayed extra attempts, the winner). Not for other files. */
#ifndef LLMUX_PROXY_INTERNAL_H
#define LLMUX_PROXY_INTERNAL_H

#include "common/sse.h"
#include "daemon/proxy.h"
#include "daemon/trace.h"
#include "upstream/engine.h"
#include "upstream/provider.h"
#include "upstream/provider_error.h"
#include "upstream/route.h"

/* One upstream call and what it has received. A free slot has call == NULL. */
struct state_hold;

struct attempt {
    struct proxy *p;
    struct call *call;
    const struct conf_target *target;
    struct codec codec;
    struct buf resp;                /* non-streamed answer, or an error body */
    size_t mem;                     /* resp's bytes charged to limits.max_memory */
    struct sse_parser sse;
    long status;
    int64_t retry_after_ms;
    double started;                 /* ev_time the call began */
    unsigned number;                /* 1-based among the request's attempts */
    int pair;                       /* the target's metric labels (metrics_labels_pair) */
    bool probe;                     /* the half-open breaker's single probe */
    bool hedge;                     /* started by the hedge timer: holds an extra slot */
    struct state_hold *key_hold;    /* the hedge's own take of its key's limits, or NULL */
    enum hedge_outcome hedge_outcome;   /* what to count when a hedge attempt ends */
    size_t sent_bytes;              /* of its body: the prompt estimate when usage is missing */
    long events;                    /* stream events relayed: the completion estimate */
    struct trace_attempt span;      /* its span, when the request is traced */
    struct buf sent;                /* its body, kept only for tracing.capture_content */
};

struct proxy {
    struct request *r;
    const struct conf_model *model;
    unsigned order[ROUTE_MAX_TARGETS];
    unsigned norder, pos, retry;    /* the retry/fallback walk through order[] */
    unsigned nslots;                /* 1, or 1 + hedge.max when the model hedges */
    unsigned running;               /* slots with a call out */
    struct attempt *winner;         /* its head was 2xx: the answer comes from it alone */
    ev_timer backoff;
    ev_timer hedge;
    double hedge_after;             /* seconds; 0 = no hedging */
    unsigned hedges;                /* hedges started */
    struct state_hold *key_take;    /* a hedge's key take on its way to Redis (hedge.c) */
    struct buf frames;              /* translated stream output, reused */
    bool paused, stream_failed;
    int64_t retry_after_ms;         /* of the last failed attempt */
    int64_t all_open_retry_s;       /* > 0: every target was open, Retry-After for the 503 */
    /* the last failure, reported when no attempt is left */
    int fail_status;
    const char *fail_type, *fail_code;
    char fail_msg[200];
    char fail_param[64];            /* the client field a 400 names */
    bool fail_upstream;             /* the failure is the upstream's 4xx, in uerr */
    struct provider_error *uerr;    /* its four fields, re-encoded in the gateway's shape;
                                     * allocated when first needed (4 KiB no answer uses) */
    /* Last, sized per request: a waiting call holds one attempt, not 1 + CONF_HEDGE_MAX. */
    struct attempt slots[];
};

/* proxy.c: starts a call for target t in slot a; -1 when t can't take the request. */
/* One process-wide limits.max_inflight slot more (a hedge), and its return. */
bool proxy_slot_take(struct worker *w);
void proxy_slot_give(struct worker *w);
int proxy_launch(struct proxy *p, struct attempt *a, const struct conf_target *t, bool probe);
/* Ends a's call early (a loser, or the request ended) and releases what it held. */
void proxy_attempt_cancel(struct attempt *a, enum abort_reason why);

/* hedge.c */
void hedge_init(struct proxy *p);           /* after from the model and X-Llmux-Hedge-Ms */
void hedge_arm(struct proxy *p);            /* a first attempt just started */
void hedge_won(struct proxy *p, struct attempt *a);    /* a's head is 2xx: cancel the rest */
void hedge_release(struct attempt *a);      /* a hedge attempt ended: give back its slots */
void hedge_stop(struct proxy *p);
void hedge_end(struct proxy *p);            /* the request ended: a pending take is cancelled */

#endif
