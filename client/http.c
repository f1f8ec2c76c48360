/* http: libcurl transfers for the CLI (see http.h). A curl_multi loop polls the socket and a
 * self-pipe together, so Ctrl-C ends the transfer at once rather than at curl's next progress
 * tick; closing the connection is what tells the gateway to cancel the work upstream. */
#include "client/http.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define HTTP_TICK_MS 200
#define HTTP_CONNECT_TIMEOUT_MS 10000L
/* Past --timeout the gateway answers 504 itself; our own limit is only a backstop for a
 * gateway that stopped answering, so it waits a little longer. */
#define HTTP_TIMEOUT_GRACE_MS 5000L
#define HTTP_MAX_BODY (256u << 20)
#define HTTP_MAX_EVENT (64u << 20)

struct xfer {
    const struct http_req *rq;
    struct http_resp *rs;
    CURL *easy;
    struct sse_parser sse;
    bool decided;       /* body routing (stream or buffer) chosen at the first body byte */
    bool cb_stopped;    /* on_event returned -1 */
    bool too_big;
};

static volatile sig_atomic_t http_sigint;
static int http_wake[2] = {-1, -1};

static void on_sigint(int sig)
{
    int saved = errno;
    http_sigint = 1;
    if (http_wake[1] >= 0 && write(http_wake[1], "x", 1) < 0) {
        /* pipe full: a wake-up is already pending, which is all we need */
    }
    errno = saved;
    (void)sig;
}

int http_setup(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    if (pipe2(http_wake, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    /* A SIGINT ignored on entry (nohup, a background job of a script) stays ignored. */
    struct sigaction sa, old;
    if (sigaction(SIGINT, NULL, &old) < 0)
        return -1;
    if (old.sa_handler == SIG_IGN)
        return 0;
    /* No SA_RESTART: a blocking read of the interactive prompt must return on Ctrl-C. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGINT, &sa, NULL);
}

void http_teardown(void)
{
    for (int i = 0; i < 2; i++) {
        if (http_wake[i] >= 0)
            close(http_wake[i]);
        http_wake[i] = -1;
    }
    curl_global_cleanup();
}

bool http_interrupted(void)
{
    return http_sigint != 0;
}

void http_clear_interrupt(void)
{
    char drain[64];
    while (http_wake[0] >= 0 && read(http_wake[0], drain, sizeof drain) > 0) {
    }
    http_sigint = 0;
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    struct http_resp *rs = ((struct xfer *)ud)->rs;
    size_t n = size * nitems, len = n;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
        /* a new header block (after 1xx): forget the previous one's fields */
        rs->content_type[0] = rs->request_id[0] = rs->upstream[0] = '\0';
        rs->attempts[0] = rs->retry_after[0] = '\0';
        return n;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return n;
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    static const struct { const char *name; size_t off, cap; } fields[] = {
        {"content-type", offsetof(struct http_resp, content_type), 128},
        {"x-request-id", offsetof(struct http_resp, request_id), 128},
        {"x-llmux-upstream", offsetof(struct http_resp, upstream), 128},
        {"x-llmux-attempts", offsetof(struct http_resp, attempts), 16},
        {"retry-after", offsetof(struct http_resp, retry_after), 32},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strlen(fields[i].name) == name_len && !strncasecmp(line, fields[i].name, name_len))
            copy_field((char *)rs + fields[i].off, fields[i].cap, v, (size_t)(end - v));
    }
    return n;
}

static int on_sse_event(void *ud, const char *event, size_t event_len, const char *data,
                        size_t data_len)
{
    struct xfer *x = ud;
    if (x->rq->on_event(x->rq->ud, event, event_len, data, data_len) < 0) {
        x->cb_stopped = true;
        return -1;
    }
    return 0;
}

/* Only a successful event stream is parsed as one: an error answer is JSON to be decoded. */
static void decide_routing(struct xfer *x)
{
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->rs->status);
    x->rs->streamed = x->rq->on_event && x->rs->status >= 200 && x->rs->status < 300
                      && !strncasecmp(x->rs->content_type, "text/event-stream", 17);
    x->decided = true;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;
    if (!x->decided)
        decide_routing(x);
    if (x->rs->streamed) {
        if (sse_feed(&x->sse, p, n, on_sse_event, x) == 0)
            return n;
        x->too_big = !x->cb_stopped;  /* the parser's other refusal: an oversized event */
        return 0;
    }
    if (x->rs->body.len + n > HTTP_MAX_BODY) {
        x->too_big = true;
        return 0;
    }
    return buf_append(&x->rs->body, p, n) < 0 ? 0 : n;
}

static int add_header(struct curl_slist **h, const char *line)
{
    struct curl_slist *t = curl_slist_append(*h, line);
    if (!t)
        return -1;
    *h = t;
    return 0;
}

static struct curl_slist *build_headers(const struct cli *c, const struct http_req *rq)
{
    char line[64];
    struct buf auth = BUF_INIT;
    struct curl_slist *h = NULL;
    /* "Expect:" turns off 100-continue: bodies are small and the gateway answers directly. */
    if (add_header(&h, "Expect:") < 0)
        goto fail;
    if (rq->body && add_header(&h, "Content-Type: application/json") < 0)
        goto fail;
    snprintf(line, sizeof line, "X-Llmux-Timeout-Ms: %ld", rq->deadline_ms);
    if (rq->deadline_ms > 0 && add_header(&h, line) < 0)
        goto fail;
    if (c->key && (buf_printf(&auth, "Authorization: Bearer %s", c->key) < 0
                   || add_header(&h, auth.data) < 0))
        goto fail;
    goto out;
fail:
    curl_slist_free_all(h);
    h = NULL;
out:
    /* the key is wiped before the memory goes back to the allocator */
    if (auth.data)
        memset(auth.data, 0, auth.len);
    buf_free(&auth);
    return h;
}

static int setup_easy(const struct cli *c, const struct http_req *rq, struct xfer *x,
                      struct curl_slist *headers, struct buf *url, char *errbuf)
{
    size_t base = strlen(c->url);
    while (base && c->url[base - 1] == '/')
        base--;
    if (buf_append(url, c->url, base) < 0 || buf_puts(url, rq->path) < 0)
        return -1;
    CURL *e = x->easy;
    long connect_ms = HTTP_CONNECT_TIMEOUT_MS;
    if (c->timeout_ms && c->timeout_ms < connect_ms)
        connect_ms = c->timeout_ms;
    curl_easy_setopt(e, CURLOPT_URL, url->data);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "llmux/" LLMUX_VERSION);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (c->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms + HTTP_TIMEOUT_GRACE_MS);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    if (rq->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    } else if (rq->method && strcmp(rq->method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Drives the transfer until it ends or Ctrl-C; returns its CURLcode or -1 when interrupted. */
static int run_multi(CURLM *m, const struct http_req *rq)
{
    struct curl_waitfd wake = {.fd = http_wake[0], .events = CURL_WAIT_POLLIN};
    long last_tick = now_ms();
    for (;;) {
        int running = 0;
        if (curl_multi_perform(m, &running) != CURLM_OK)
            return CURLE_OUT_OF_MEMORY;
        if (http_sigint)
            return -1;
        if (!running)
            break;
        if (rq->on_tick && now_ms() - last_tick >= HTTP_TICK_MS) {
            rq->on_tick(rq->ud);
            last_tick = now_ms();
        }
        if (curl_multi_poll(m, &wake, 1, HTTP_TICK_MS, NULL) != CURLM_OK)
            return CURLE_OUT_OF_MEMORY;
    }
    int left;
    CURLMsg *msg = curl_multi_info_read(m, &left);
    return msg && msg->msg == CURLMSG_DONE ? (int)msg->data.result : CURLE_OK;
}

static enum http_result classify(struct xfer *x, int code, const char *errbuf)
{
    struct http_resp *rs = x->rs;
    if (code == -1)
        return HTTP_INTERRUPTED;
    if (code == CURLE_OK)
        return HTTP_OK;
    if (x->cb_stopped)
        return HTTP_STOPPED;
    if (x->too_big) {
        snprintf(rs->error, sizeof rs->error, "the answer is larger than the client accepts");
        return HTTP_LOCAL_ERROR;
    }
    snprintf(rs->error, sizeof rs->error, "%s",
             *errbuf ? errbuf : curl_easy_strerror((CURLcode)code));
    switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return HTTP_BAD_URL;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_WRITE_ERROR:
    case CURLE_FAILED_INIT:
        return HTTP_LOCAL_ERROR;
    default:
        return HTTP_CONN_FAILED;
    }
}

enum http_result http_perform(const struct cli *c, const struct http_req *rq,
                              struct http_resp *rs)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct buf url = BUF_INIT;
    struct xfer x = {.rq = rq, .rs = rs};
    struct curl_slist *headers = NULL;
    CURLM *m = NULL;
    enum http_result res = HTTP_LOCAL_ERROR;

    memset(rs, 0, sizeof *rs);
    sse_init(&x.sse, HTTP_MAX_EVENT);
    x.easy = curl_easy_init();
    m = curl_multi_init();
    headers = build_headers(c, rq);
    if (!x.easy || !m || !headers || setup_easy(c, rq, &x, headers, &url, errbuf) < 0) {
        snprintf(rs->error, sizeof rs->error, "cannot set up the transfer");
        goto out;
    }
    curl_multi_add_handle(m, x.easy);
    int code = run_multi(m, rq);
    if (!x.decided)
        decide_routing(&x);
    curl_off_t total = 0, first = 0;
    curl_easy_getinfo(x.easy, CURLINFO_TOTAL_TIME_T, &total);
    curl_easy_getinfo(x.easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
    rs->total_ms = (long)(total / 1000);
    rs->first_byte_ms = (long)(first / 1000);
    res = classify(&x, code, errbuf);
    /* Removing an unfinished transfer closes its connection: the gateway's cue to cancel. */
    curl_multi_remove_handle(m, x.easy);
out:
    if (x.easy)
        curl_easy_cleanup(x.easy);
    if (m)
        curl_multi_cleanup(m);
    curl_slist_free_all(headers);
    buf_free(&url);
    sse_free(&x.sse);
    return res;
}

void http_resp_free(struct http_resp *rs)
{
    buf_free(&rs->body);
}

static void put_field(const char *name, const char *v)
{
    if (!*v)
        return;
    fprintf(stderr, "* %s: ", name);
    cli_put_clean(stderr, v, strlen(v));
    fputc('\n', stderr);
}

static void report_verbose(const struct http_resp *rs)
{
    if (rs->status)
        fprintf(stderr, "* status: %ld\n", rs->status);
    put_field("request id", rs->request_id);
    put_field("upstream", rs->upstream);
    put_field("attempts", rs->attempts);
    fprintf(stderr, "* time: %ld ms (first byte %ld ms)\n", rs->total_ms, rs->first_byte_ms);
}

int http_api_error(const struct http_resp *rs)
{
    json_t *root = rs->body.len ? json_loadb(rs->body.data, rs->body.len, 0, NULL) : NULL;
    json_t *err = json_object_get(root, "error");
    if (json_is_object(err)) {
        json_t *idx = json_object_get(root, "index");
        char what[48];
        if (json_is_integer(idx))
            snprintf(what, sizeof what, "item %lld", (long long)json_integer_value(idx));
        cli_api_error(json_is_integer(idx) ? what : NULL, rs->status, err);
    } else {
        /* not the documented shape (a proxy in between?): show the start of what came */
        const char *b = rs->body.data ? rs->body.data : "";
        size_t n = strcspn(b, "\r\n");
        fprintf(stderr, "llmux: HTTP %ld%s", rs->status, n ? ": " : "");
        cli_put_clean(stderr, b, n > 200 ? 200 : n);
        fputc('\n', stderr);
    }
    if (rs->retry_after[0]) {
        fputs("llmux: the gateway asks to retry after ", stderr);
        cli_put_clean(stderr, rs->retry_after, strlen(rs->retry_after));
        fputs(" s\n", stderr);
    }
    json_decref(root);
    return CLI_EXIT_API;
}

int http_call(const struct cli *c, const struct http_req *rq, struct http_resp *rs)
{
    if (c->verbose) {
        fprintf(stderr, "* %s ", rq->method);
        cli_put_clean(stderr, c->url, strlen(c->url));
        fprintf(stderr, "%s\n* key: %s\n", rq->path, c->key ? "set" : "none");
        if (rq->deadline_ms > 0)
            fprintf(stderr, "* deadline: %ld ms\n", rq->deadline_ms);
    }
    enum http_result res = http_perform(c, rq, rs);
    if (rq->on_end)
        rq->on_end(rq->ud);
    if (c->verbose)
        report_verbose(rs);
    switch (res) {
    case HTTP_OK:
        return rs->status >= 200 && rs->status < 300 ? CLI_EXIT_OK : http_api_error(rs);
    case HTTP_INTERRUPTED:
        cli_err("interrupted");
        return CLI_EXIT_INTERRUPTED;
    case HTTP_STOPPED:
        return CLI_EXIT_API;
    case HTTP_CONN_FAILED:
        fputs("llmux: ", stderr);
        cli_put_clean(stderr, c->url, strlen(c->url));
        fputs(rs->status ? ": the answer was cut short: " : ": cannot reach the gateway: ", stderr);
        cli_put_clean(stderr, rs->error, strlen(rs->error));
        fputc('\n', stderr);
        return CLI_EXIT_CONN;
    case HTTP_BAD_URL:
        fputs("llmux: bad --url '", stderr);
        cli_put_clean(stderr, c->url, strlen(c->url));
        fprintf(stderr, "': %s\n", rs->error);
        return CLI_EXIT_USAGE;
    default:
        cli_err("%s", rs->error);
        return CLI_EXIT_USAGE;
    }
}
