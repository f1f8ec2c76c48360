/* engine: one curl multi handle per event loop (curl_multi_socket_action driven by libev), and
 * the call: one upstream HTTP attempt. A call reports through callbacks; it knows no client. */
#ifndef LLMUX_ENGINE_H
#define LLMUX_ENGINE_H

#include <curl/curl.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct engine;
struct call;

enum call_result {
    CALL_OK,            /* transfer complete; status tells the HTTP outcome */
    CALL_CONNECT,       /* could not connect / resolve: nothing reached the upstream */
    CALL_RESET,         /* connection reset or closed mid-answer */
    CALL_TIMEOUT,       /* the attempt's own timeout */
    CALL_TOO_LARGE,     /* answer over max_response_bytes */
    CALL_FIRST_BYTE_TIMEOUT,    /* no response headers within first_byte_timeout_ms of sending */
    CALL_IDLE_TIMEOUT,  /* a gap between body bytes longer than idle_timeout_ms */
    CALL_ERROR,         /* anything else (TLS, protocol, …) */
};

enum call_verdict { CALL_CONTINUE, CALL_PAUSE };

/* auto: h2 by ALPN on https (calls wait to share a connection), HTTP/1.1 on http;
 * 2: h2 only (prior knowledge on http, h2c); 1_1: HTTP/1.1 only. */
enum call_http { CALL_HTTP_AUTO, CALL_HTTP_1_1, CALL_HTTP_2 };

struct call_ops {
    /* Status line and headers are in; nothing of the body yet. retry_after_ms is -1 if absent. */
    void (*on_head)(void *ud, long status, int64_t retry_after_ms);
    /* Body bytes. CALL_PAUSE means "not consumed, hold them": they come again after resume. */
    enum call_verdict (*on_data)(void *ud, const char *p, size_t n);
    /* The call is over and already freed; ud may do anything now, including start new calls. */
    void (*on_done)(void *ud, enum call_result result, long status, const char *detail);
};

struct call_spec {
    const char *url;
    struct curl_slist *headers;     /* ownership passes to the call */
    char *body;                     /* ownership passes to the call (malloc'd) */
    size_t body_len;
    uint64_t connect_timeout_ms;
    uint64_t timeout_ms;            /* whole attempt; 0 = none */
    uint64_t first_byte_timeout_ms; /* request sent → response headers; 0 = none */
    uint64_t idle_timeout_ms;       /* longest gap between body bytes; 0 = none (a paused call
                                     * is waiting for its reader, which never counts) */
    uint64_t max_response_bytes;    /* 0 = none */
    const char *ca_file;            /* NULL: the system's CA store */
    bool tls_verify;                /* false: no certificate or host name check */
    enum call_http http;
    /* Calls with the same gate_key (the upstream's name) are admitted by one gate (gate.h):
     * HTTP/1.1 ones at most gate_cap at once, one connection each; HTTP/2 ones fill the open
     * connections, and a burst waits for the next connection rather than opening one per
     * call. The rest wait in a FIFO costing O(1) per start. NULL = no gate. */
    const char *gate_key;           /* copied */
    unsigned gate_cap;
};

/* max_host_connections: cap per upstream host (0 = none); max_cached: idle connections kept
 * for reuse (0 = curl's default). */
struct engine *engine_new(struct ev_loop *loop, long max_host_connections, long max_cached);
/* Every call must have ended or been cancelled before. */
void engine_free(struct engine *e);

/* NULL only when memory or curl refuse; spec's owned pieces are freed either way. A gated call
 * over its cap is queued: no callback runs before it has started. */
struct call *call_start(struct engine *e, const struct call_spec *spec,
                        const struct call_ops *ops, void *ud);
/* Synchronous and idempotent from the caller's view: no callback of this call runs afterwards
 * and the caller must forget the pointer. The transfer is aborted (its connection closed). */
void call_cancel(struct call *c);
/* Resumes a call whose on_data answered CALL_PAUSE; the held bytes may arrive at once. */
void call_resume(struct call *c);

#endif
