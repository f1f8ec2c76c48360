/* trace: OpenTelemetry traces of requests — W3C Trace Context in (traceparent/tracestate) and
 * out (a child traceparent on every upstream attempt), a server span per request and a client
 * span per attempt (GenAI semantic conventions), recorded as fixed-size span records
 * (trace_span.c) that the exporter thread (trace_export.c) encodes. Off (no `tracing.endpoint`):
 * every call returns at once and nothing is allocated; unsampled: ids and a header, no span. */
#ifndef LLMUX_TRACE_H
#define LLMUX_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "conf/conf.h"
#include "daemon/metrics.h"
#include "upstream/engine.h"
#include "upstream/provider.h"

struct request;
struct http_head;

#define TRACE_STATE_MAX 512     /* W3C: tracestate is at most 512 characters */
#define TRACE_PARENT_LEN 55     /* "00-" 32 hex "-" 16 hex "-" 2 hex */

/* A request's trace: its ids and, when sampled, its span's start. */
struct trace {
    uint8_t trace_id[16];
    uint8_t span_id[8];         /* this request's span */
    uint8_t parent_id[8];       /* all zero: a root span */
    bool sampled;
    bool child;                 /* a gather item's: an internal span under the gather's */
    double start;               /* wall clock, seconds */
    char *tracestate;           /* the client's, relayed as is (in state_buf); NULL none */
    struct trace *next_free;    /* the thread's cache of free traces (trace_span.c) */
    char state_buf[TRACE_STATE_MAX + 1];
};

/* One upstream attempt's span (embedded in the proxy; zeroed means "none"). */
struct trace_attempt {
    uint8_t span_id[8];
    double start;
    bool active;
};

/* Parses a traceparent value; false when it is not a valid version-00 (or later, by the
 * spec's forward-compatibility rule) header: wrong length or separators, upper-case or
 * non-hex digits, all-zero ids, version ff. */
bool trace_parse_parent(const char *s, size_t n, uint8_t trace_id[16], uint8_t parent[8],
                        bool *sampled);
/* tracestate accepted as is when it is printable ASCII of at most TRACE_STATE_MAX bytes. */
bool trace_state_ok(const char *s, size_t n);
/* The sampling decision for a new root trace: ratio of the id space below the threshold. */
bool trace_sample_root(const uint8_t trace_id[16], double ratio);

/* A request starts its trace: from the client's headers (head may be NULL), or as a child of
 * parent (a gather item), or a new root. No-op when tracing is off. */
void trace_begin(struct request *r, const struct http_head *head, const struct trace *parent);
/* The request ended: its server span is exported (when sampled) and the trace freed. */
void trace_end(struct request *r);

/* An attempt begins: its span id, and its "traceparent: …" header line in line (NUL-ended, len
 * at least 72). false when the request has no trace (nothing to send). The attempt's span is
 * active (trace_attempt_end records it) only when the trace is sampled. */
bool trace_attempt_begin(struct request *r, struct trace_attempt *a, char *line, size_t len);
/* The attempt ended; event names an interruption ("cancelled", "deadline", …) or is NULL. */
struct trace_attempt_info {
    const char *system;             /* gen_ai.system: "openai", "anthropic" */
    const char *upstream;           /* config name */
    const char *request_model, *response_model;
    long status;                    /* HTTP status, 0 none */
    const char *error;              /* error.type, NULL when it succeeded */
    const char *event;              /* span event: cancelled, deadline_exceeded, … */
    long input_tokens, output_tokens;   /* -1: unknown */
    long max_tokens;                /* gen_ai.request.max_tokens, -1: not asked */
    unsigned attempt;
    const char *prompt;             /* capture_content only: text sent, and the answer */
    size_t prompt_len;
    const char *answer;
    size_t answer_len;
    char response_model_buf[128];  /* response_model's storage */
};
void trace_attempt_end(struct request *r, struct trace_attempt *a,
                       const struct trace_attempt_info *info);
/* What the proxy knows of an attempt on target t: provider, models, usage so far, the asked
 * max_tokens (r->max_tokens, read by the router); the body sent (sent, kept only for
 * capture_content) and a whole answer (resp). status, error and event are left for the
 * caller. */
void trace_attempt_info_fill(struct trace_attempt_info *in, const struct request *r,
                             const struct conf_target *t, const struct codec *c,
                             const struct buf *resp, const struct buf *sent);
/* The span event of an attempt cut short for why. */
const char *trace_abort_event(enum abort_reason why);
/* error.type of a failed attempt: the HTTP status text given, or what failed below HTTP. */
const char *trace_error_type(enum call_result result, const char *status);

/* Random span/trace ids from a per-thread generator seeded by getrandom. */
void trace_random_id(uint8_t *out, size_t n);
/* Lower-case hex of n bytes into out (2n+1). */
void trace_hex(char *out, const uint8_t *p, size_t n);

#endif
