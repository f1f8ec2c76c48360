/* http: the CLI's one way to the gateway — a libcurl transfer that Ctrl-C stops at once (so the
 * gateway sees the connection close and cancels upstream), SSE bodies handed to common/sse. */
#ifndef LLMUX_CLIENT_HTTP_H
#define LLMUX_CLIENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "client/cli.h"
#include "common/buf.h"
#include "common/sse.h"

struct http_req {
    const char *method;         /* "GET" or "POST" */
    const char *path;           /* appended to the base URL, e.g. "/v1/models" */
    const char *body;           /* JSON body, or NULL */
    size_t body_len;
    long deadline_ms;           /* sent as X-Llmux-Timeout-Ms when > 0 */
    /* When set, a 2xx text/event-stream answer goes event by event to on_event instead of
     * being buffered; a -1 from it ends the transfer with HTTP_STOPPED. */
    sse_event_cb on_event;
    void (*on_tick)(void *ud);  /* when set, called a few times a second while waiting */
    /* when set, called by http_call once the transfer is over and before it reports anything,
     * so a half-written stdout line can be ended first */
    void (*on_end)(void *ud);
    void *ud;
};

struct http_resp {
    long status;                /* 0 when no status line arrived */
    bool streamed;              /* the body went to on_event, not to body */
    struct buf body;
    char content_type[128];
    char request_id[128];       /* X-Request-Id */
    char upstream[128];         /* X-Llmux-Upstream */
    char attempts[16];          /* X-Llmux-Attempts */
    char retry_after[32];       /* Retry-After */
    long total_ms, first_byte_ms;
    char error[256];            /* what went wrong when the result is not HTTP_OK */
};

enum http_result {
    HTTP_OK,                    /* an answer arrived, whatever its status */
    HTTP_CONN_FAILED,           /* refused, unresolvable, reset, timed out, cut short */
    HTTP_INTERRUPTED,           /* Ctrl-C */
    HTTP_STOPPED,               /* on_event asked to stop (it has said why) */
    HTTP_BAD_URL,               /* --url unusable */
    HTTP_LOCAL_ERROR,           /* out of memory, or curl could not be set up */
};

/* Process-wide set-up: libcurl and the SIGINT handler. -1 on failure. */
int http_setup(void);
void http_teardown(void);
/* Ctrl-C was pressed since the last http_clear_interrupt(). */
bool http_interrupted(void);
void http_clear_interrupt(void);

/* Runs one request to completion (or Ctrl-C). rs is filled in; free it with http_resp_free. */
enum http_result http_perform(const struct cli *c, const struct http_req *rq,
                              struct http_resp *rs);
void http_resp_free(struct http_resp *rs);

/* http_perform, then -v report and diagnostics: returns CLI_EXIT_OK for a 2xx answer,
 * otherwise the exit code after saying on stderr what went wrong (the gateway's error message
 * for a non-2xx status). */
int http_call(const struct cli *c, const struct http_req *rq, struct http_resp *rs);

/* Prints the error a non-2xx answer carries; returns CLI_EXIT_API. */
int http_api_error(const struct http_resp *rs);

#endif
