/* mock: declarations shared by the mock upstream's files — body scanners (mock_scan.c), the
 * HTTP request reader (mock_http.c), reply builders (mock_reply.c) and the server loop
 * (mock_upstream.c). Reference: tests/mock/README.md. */
#ifndef LLMUX_MOCK_H
#define LLMUX_MOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <ev.h>

#include "common/buf.h"

#define MOCK_DIRS_MAX 256            /* longest directive list kept; the rest is cut */
#define MOCK_BYTES_MAX (64L << 20)   /* ceiling of bytes=N */
#define MOCK_STREAM_MAX 10000000L    /* ceiling of stream=N */
#define MOCK_ECHO_CHARS 200          /* code points of the last message echoed back */

enum mock_api {
    MOCK_API_NONE,                   /* unknown path: 404 */
    MOCK_API_CHAT,
    MOCK_API_COMPLETIONS,
    MOCK_API_EMBEDDINGS,
    MOCK_API_MODELS,
    MOCK_API_MESSAGES,               /* Anthropic: its own error shape and stream events */
    MOCK_API_COUNT_TOKENS,           /* Anthropic /v1/messages/count_tokens */
    MOCK_API_RESPONSES,              /* OpenAI Responses API: typed stream events */
};

/* Behaviour directives of one request; a field left at -1 (or false) was not given. */
struct mock_dirs {
    char raw[MOCK_DIRS_MAX + 1];     /* the list as written: fail_first counts per this string */
    size_t raw_len;
    long delay_ms, status, retry_after, stream_n, interval_ms, reset_after, bytes, fail_first;
    long slow_ms, slow_first, slow_pct;  /* wait slow_ms instead of delay: first K / P % */
    long cache_read, cache_write;
    bool reset, garbage, stall, tool, no_usage;
    bool invalid, echo_head;         /* hostile answers: bad JSON, the request head echoed */
    int usage;                       /* 0 normal, 1 negative prompt tokens, 2 near 2^62 */
};

/* What a successful answer says, derived once from the request body. */
struct mock_reply {
    enum mock_api api;
    bool stream;
    bool sized;                      /* bytes=N: every chunk carries the whole text */
    bool tool;                       /* chat: answer with a tool call whose arguments are text */
    unsigned long id;
    long created;
    long prompt_tokens, completion_tokens;
    long cache_read, cache_write;    /* cache_read=, cache_write= directives (0 = none) */
    bool no_usage;                   /* no_usage directive: answers carry no usage */
    bool include_usage;              /* stream_options.include_usage: a usage-only last chunk */
    long inputs;                     /* embeddings: how many vectors */
    long chunks;                     /* content chunks of a stream */
    struct buf model;                /* raw UTF-8 */
    struct buf text;                 /* raw UTF-8 content of the answer */
    struct buf text_esc;             /* text JSON-escaped, kept for sized streams */
    struct buf scratch;              /* one SSE event before it is framed as an HTTP chunk */
};

/* Fail-first counters, keyed by the exact directive string. */
struct mock_fail_entry;
struct mock_fails {
    struct mock_fail_entry *slot[256];
};

/* Parse state of the request at the front of a connection's input. Offsets, not pointers:
 * the input buffer may move while the request waits out a delay. */
struct mock_req {
    size_t head_len;                 /* 0 until the head is complete */
    size_t method_len, target_off, target_len, xmock_off, xmock_len;
    bool xmock, chunked, keep_alive, http10, expect, api_key, version;
    long long content_length;
    size_t chunk_pos;                /* chunked: where decoding goes on in the input */
    size_t total;                    /* bytes of input the whole request spans, once complete */
};

struct mock_stats {
    unsigned long received, completed, aborted, accepted, resets;
    unsigned long long last_abort_ns;   /* CLOCK_MONOTONIC of the latest abort (for benches) */
    long inflight, connections;      /* gauges: /__reset leaves them alone */
};

struct mock_conn;
struct mock_server {
    struct ev_loop *loop;
    int lfd;
    ev_io accept_w;
    ev_timer accept_pause;           /* accepting rests a moment after EMFILE */
    ev_signal sig_term, sig_int;
    bool quiet;
    struct mock_conn *conns;         /* every open connection, to free them at exit */
    struct mock_stats st;
    unsigned long seq;               /* ids of answers: never reset, so ids never repeat */
    struct buf last_head, last_body; /* the last API request, for /__last */
    bool have_last;
    struct mock_fails fails;
    uint32_t rng;                    /* slow_pct draws (xorshift, fixed seed: reproducible) */
};

/* mock_upstream.c */
/* One line to stderr unless --quiet; dropped rather than blocking when stderr is full. */
void mock_log(const struct mock_server *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Answers a /__ endpoint into out; returns the HTTP status. */
int mock_control(struct mock_server *s, const char *method, size_t method_len,
                 const char *target, size_t target_len, struct buf *out);

/* mock_conn.c */
void mock_conn_new(struct mock_server *s, int fd);
/* Closes and frees c; rst sends a TCP RST instead of a FIN. */
void mock_conn_free(struct mock_conn *c, bool rst);

/* mock_http.c */
/* 1 when the request is complete (chunked bodies decoded into dechunked), 0 when more input is
 * needed, or minus the HTTP status to refuse it with (400, 413, 431). */
int mock_req_parse(struct mock_req *q, struct buf *in, struct buf *dechunked);
/* Walks "Name: value\r\n" lines; returns false at the end of the head. */
bool http_next_header(const char **p, const char *end, const char **name, size_t *name_len,
                      const char **val, size_t *val_len);
bool http_name_is(const char *name, size_t len, const char *lower);
/* True when the request target is path, with or without a query string. */
bool http_target_is(const char *target, size_t len, const char *path);
/* Renders a stored request head and body as the /__last JSON object. */
int mock_last_json(struct buf *out, const struct buf *head, const struct buf *body);

/* mock_scan.c: directives, a zero-allocation JSON scanner, fail counters. */
void mock_dirs_init(struct mock_dirs *d);
/* Header list wins over the body's first "@mock:" marker; returns true when either was found. */
bool mock_dirs_find(struct mock_dirs *d, const char *hdr, size_t hdr_len,
                    const char *body, size_t body_len);

const char *json_ws(const char *p, const char *end);
/* Returns the end of the JSON value at p, or NULL when it is not well-formed. */
const char *json_skip(const char *p, const char *end, int depth);
/* Returns the start of member key's value in the object at p, or NULL. */
const char *json_member(const char *p, const char *end, const char *key);
struct json_iter {
    const char *p, *end;
    bool first;
};
bool json_iter_init(struct json_iter *it, const char *p, const char *end);
const char *json_iter_next(struct json_iter *it);
/* Appends the string at p decoded, spending at most *budget code points; -1 if p is no string. */
int json_decode_str(const char *p, const char *end, struct buf *out, long *budget);

/* Counts one more request for key; returns true while it is among the first k. */
bool mock_fails_hit(struct mock_fails *f, const char *key, size_t len, long k);
void mock_fails_clear(struct mock_fails *f);

/* mock_reply.c */
void reply_init(struct mock_reply *r);
void reply_free(struct mock_reply *r);
/* Reads the request body; -1 when it is not a JSON object (the caller answers 400). */
int reply_prepare(struct mock_reply *r, enum mock_api api, const char *body, size_t len,
                  const struct mock_dirs *d);
/* Appends the non-streamed JSON body of a successful answer. */
int reply_body(struct mock_reply *r, struct buf *out);
/* Appends stream step 0..chunks (the last one closes the chunked body) framed as HTTP chunks. */
int reply_stream_step(struct mock_reply *r, struct buf *out, long step);
int reply_error_body(struct buf *out, bool anthropic, int status, const char *msg);
int reply_models(struct buf *out, long created);

#endif
