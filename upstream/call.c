/* call: one upstream transfer's easy-handle options and curl callbacks (head, body, the
 * request leaving, sockets of h2 connections); its life cycle is in engine.c. */
#include "upstream/engine_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define RECV_BUFFER 4096    /* per transfer: curl's 16 KiB default, times 10k calls, is 160 MB */
/* h2 calls keep curl's default, for two reasons found with ASan and a debug libcurl 7.88.1:
 * its multi_done stops early while the h2 connection carries other streams, so a pooled
 * handle keeps its receive buffer, curl_easy_reset sets the size back to 16 KiB and a smaller
 * CURLOPT_BUFFERSIZE is then refused (a heap overflow); and with a smaller buffer a DATA frame
 * that doesn't fit pauses nghttp2's whole session until that stream is read, so a stream its
 * reader paused would stall its siblings. */
#define RECV_BUFFER_H2 16384
/* libcurl 7.88 pauses its whole h2 session while one paused stream holds unread bytes, which
 * would stall every sibling stream. A multiplexed call therefore keeps what its reader refused,
 * up to this much (a typical LLM answer fits whole), and only past it pauses curl. */
#define HOLD_MAX (1u << 20)
/* libcurl 7.88 sends an h2 request body (and, over HTTP/1.1, any body over TLS or of
 * UPLOAD_VIA_BUFFER bytes and more) through an upload buffer it keeps until the transfer ends:
 * 64 KiB by default; 16 KiB is the least it takes. */
#define SEND_BUFFER 16384
#define UPLOAD_VIA_BUFFER 65536         /* 7.88's MAX_INITIAL_POST_SIZE */
#define PRIOR_KNOWLEDGE_OK 0x080100    /* libcurl 8.1.0 */

static int64_t parse_retry_after(const char *v, size_t n)
{
    int64_t secs = 0;
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    if (i == n || v[i] < '0' || v[i] > '9')
        return -1;      /* HTTP-date form: treated as absent, backoff applies */
    for (; i < n && v[i] >= '0' && v[i] <= '9' && secs < 86400; i++)
        secs = secs * 10 + (v[i] - '0');
    return secs * 1000;
}

static void opener_ready(struct call *c);

void call_deliver_head(struct call *c)
{
    long status = 0;
    c->head_sent = true;
    c->last_byte = ev_now(c->e->loop);
    call_phase_arm(c, c->idle_s);  /* first_byte is over; idle watches the body from here */
    if (c->opener)
        opener_ready(c);
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    c->in_cb = true;
    c->e->depth++;
    c->ops->on_head(c->ud, status, c->retry_after_ms);
    c->e->depth--;
    c->in_cb = false;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct call *c = ud;
    static const char ra[] = "retry-after:";
    if (c->cancelled)
        return 0;
    if (n > sizeof ra - 1 && strncasecmp(p, ra, sizeof ra - 1) == 0)
        c->retry_after_ms = parse_retry_after(p + sizeof ra - 1, n - (sizeof ra - 1));
    if (n <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !c->head_sent)
            call_deliver_head(c);
    }
    return c->cancelled ? 0 : n;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct call *c = ud;
    if (!c->head_sent && !c->cancelled)
        call_deliver_head(c);
    if (c->cancelled)
        return 0;
    if (c->max_bytes && c->received + n > c->max_bytes) {
        c->too_large = true;
        return 0;
    }
    if (c->held.len) {      /* the reader is behind: keep the order, hold these too */
        if (c->held.len + n > HOLD_MAX || buf_append(&c->held, p, n) < 0) {
            c->curl_paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
        c->last_byte = ev_now(c->e->loop);
        c->received += n;
        return n;
    }
    c->in_cb = true;
    c->e->depth++;
    enum call_verdict v = c->ops->on_data(c->ud, p, n);
    c->e->depth--;
    c->in_cb = false;
    if (c->cancelled)
        return 0;
    c->last_byte = ev_now(c->e->loop);  /* the idle timer checks it when it fires: no re-arm */
    if (v == CALL_PAUSE) {
        c->paused = true;
        if (!c->multiplex || n > HOLD_MAX || buf_append(&c->held, p, n) < 0) {
            c->curl_paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
    }
    c->received += n;
    return n;
}

/* The opener's connection is up (for an h2c upgrade: its answer came over h2): the calls
 * waiting for it may start. */
static void opener_ready(struct call *c)
{
    c->opener = false;
    gate_ready(c->gate);
    if (c->gate->head)
        ev_prepare_start(c->e->loop, &c->e->pump);
}

static unsigned curl_version_num(void)
{
    static _Atomic unsigned num;    /* curl_version_info formats strings: asked once */
    unsigned v = atomic_load_explicit(&num, memory_order_relaxed);
    if (!v) {
        v = curl_version_info(CURLVERSION_NOW)->version_num;
        atomic_store_explicit(&num, v, memory_order_relaxed);
    }
    return v;
}

/* libcurl 7.88 keeps a transfer's upload buffer (16 KiB) until the transfer ends, or past it
 * when its h2 connection carries other streams, though the request (h2: its body; HTTP/1.1:
 * a copy of the whole request) leaves in the first moments of a call that then waits. Once
 * every body byte is with the connection (curl counts a byte only when its connection took
 * it) nothing refers to the buffer, and setting its size frees it (curl allocates a new one if
 * a re-send needs it). The progress callback is how a call learns of it; it is switched off
 * again at once. Only where that code was read: 7.88.x. */
static bool ulbuf_free_ok(void)
{
    return curl_version_num() >> 8 == 0x0758;
}

/* Whether this call's request goes through curl's upload buffer at all (see SEND_BUFFER). */
static bool ulbuf_used(const struct call *c, const struct call_spec *spec)
{
    return c->body && (c->multiplex || call_url_https(spec->url) ||
                       spec->body_len >= UPLOAD_VIA_BUFFER);
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct call *c = ud;
    if (ultotal > 0 && ulnow >= ultotal) {
        curl_easy_setopt(c->easy, CURLOPT_UPLOAD_BUFFERSIZE, (long)SEND_BUFFER);
        curl_easy_setopt(c->easy, CURLOPT_NOPROGRESS, 1L);
    }
    return 0;
}

/* Runs before each send of the request. curl re-sends silently when a reused connection turns
 * out dead before any answer: once is right (a keep-alive connection the upstream had closed),
 * more would multiply one prompt into many, so a third send fails the attempt instead and the
 * model's retry policy decides. */
static int on_prereq(void *ud, char *ip, char *local_ip, int port, int local_port)
{
    struct call *c = ud;
    if (c->opener && !c->upgrade)
        opener_ready(c);
    if (++c->sends > 2)
        return CURL_PREREQFUNC_ABORT;
    if (!c->head_sent)
        call_phase_arm(c, c->first_byte_s);    /* the request leaves now: first_byte from here */
    return CURL_PREREQFUNC_OK;
}

bool call_url_https(const char *url)
{
    return strncmp(url, "https:", 6) == 0;
}

/* h2 on http: prior knowledge where libcurl can reuse such a connection; libcurl 7.88
 * (Debian 12) fails every stream after the first on one, so there the first request
 * upgrades (HTTP/1.1 "Upgrade: h2c") and the rest multiplex on the upgraded connection. */
static long http_version(const struct call_spec *spec)
{
    if (spec->http != CALL_HTTP_2 || call_url_https(spec->url))
        return spec->http == CALL_HTTP_2 ? (long)CURL_HTTP_VERSION_2_0
                                         : (long)CURL_HTTP_VERSION_2TLS;
    return curl_version_num() >= PRIOR_KNOWLEDGE_OK ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                                    : (long)CURL_HTTP_VERSION_2_0;
}

/* A multiplexed (or HTTP/1.1 over TLS) call's gate counts its upstream's connections: curl
 * hands the close callback to the connection, so it reaches the gate (which outlives every
 * multi handle) even when the connection outlives the call. */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    struct call *c = ud;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKOPT_OK;
    if (!c->multiplex) {
        gate_h1_conn_opened(c->gate, &c->opener);   /* its handshake counts from here */
        return CURL_SOCKOPT_OK;
    }
    /* A connection for a call the gate thought would fit: the server takes fewer streams. */
    bool surprise = !c->opener && c->gate->conns > c->gate->openers;
    gate_conn_opened(c->gate, !surprise);
    if (surprise)
        c->opener = true;       /* the others wait for its connection */
    return CURL_SOCKOPT_OK;
}

static int on_closesocket(void *ud, curl_socket_t fd)
{
    gate_conn_closed(ud);
    return close(fd);
}

void call_set_options(struct call *c, const struct call_spec *spec)
{
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_URL, spec->url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, c);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    if (c->body) {     /* POSTFIELDS: headers and body leave in one send */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_len);
    }
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)(c->multiplex ? RECV_BUFFER_H2 : RECV_BUFFER));
    curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, (long)SEND_BUFFER);
    if (ulbuf_used(c, spec) && ulbuf_free_ok()) {
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    }
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)spec->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)spec->timeout_ms);
    curl_easy_setopt(h, CURLOPT_SHARE, c->e->share);
    long version = c->multiplex ? http_version(spec) : (long)CURL_HTTP_VERSION_1_1;
    c->upgrade = version == CURL_HTTP_VERSION_2_0 && !call_url_https(spec->url);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, version);
    /* A call that may multiplex waits for a connection being set up rather than opening
     * its own: a burst shares one handshake. HTTP/1.1 calls never wait for that. */
    if (c->multiplex)
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
    if (c->gate && gate_counts_conns(c->gate)) {
        curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
        curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, c);
        curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
        curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, c->gate);
    }
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* CA certificates from the file alone (Debian's curl adds the /etc/ssl/certs directory):
     * libcurl 7.88 then loads them once per multi handle, not per TLS connection (6M
     * instructions each with one certificate, far more with the system bundle). */
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    if (spec->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, spec->ca_file);
    if (!spec->tls_verify) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (spec->max_response_bytes)
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)spec->max_response_bytes);
}
