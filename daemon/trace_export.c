/* trace_export: bounded queue of span records → batches → OTLP/HTTP JSON POSTs from a helper
 * thread. The lock is held by a worker only to store one pointer, and by the thread only to
 * take a batch out; encoding and HTTP happen outside it. */
#include "daemon/trace_export.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "daemon/trace_span.h"

#define EXPORT_RETRIES 3            /* after the first try; backoff 0.5 s, 1 s, 2 s */
#define EXPORT_TIMEOUT_MS 10000
#define EXPORT_CONNECT_MS 2000
#define EXPORT_BODY_KEEP (4u << 20)    /* a POST body larger than this is not reused */

struct exporter {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct trace_span **q;          /* ring of span records, cap entries */
    size_t cap, head, n;
    bool stop;
    bool running;                   /* atomic: read by workers */
    bool ever;                      /* started once: /metrics shows the counters */
    unsigned batch;
    uint64_t delay_ms;
    char *url;
    char *envelope;                 /* {"resourceSpans":[…"spans":[ */
    struct curl_slist *headers;
    uint64_t exported, dropped, failed, batches_failed;     /* atomics */
};

static struct exporter ex = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *exporter_main(void *arg);

bool trace_export_running(void)
{
    return __atomic_load_n(&ex.running, __ATOMIC_ACQUIRE);
}

void trace_export_drop(void)
{
    __atomic_add_fetch(&ex.dropped, 1, __ATOMIC_RELAXED);
}

void trace_export_push(struct trace_span *span)
{
    pthread_mutex_lock(&ex.lock);
    bool full = ex.n == ex.cap;
    if (!full) {
        ex.q[(ex.head + ex.n) % ex.cap] = span;
        if (++ex.n == ex.batch)
            pthread_cond_signal(&ex.cond);
    }
    pthread_mutex_unlock(&ex.lock);
    if (full) {
        trace_span_release(span);
        trace_export_drop();
    }
}

static char *export_envelope(const struct conf *c)
{
    struct buf b = BUF_INIT;
    buf_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                 "\"value\":{\"stringValue\":\"");
    const char *name = c->tracing.service_name ? c->tracing.service_name : "llmux";
    buf_json_escape(&b, name, strlen(name));
    buf_puts(&b, "\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"llmux\",\"version\":\""
                 LLMUX_VERSION "\"},\"spans\":[");
    return buf_steal(&b);
}

static struct curl_slist *export_headers(const struct conf *c)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    /* a batch is larger than curl's 100-continue threshold: no round trip (or a 1 s wait for
     * a collector that never says "100") before every POST */
    h = curl_slist_append(h, "Expect:");
    for (size_t i = 0; i < c->tracing.nheaders; i++) {
        struct buf line = BUF_INIT;
        buf_printf(&line, "%s: %s", c->tracing.headers[i].name, c->tracing.headers[i].value);
        if (line.data)
            h = curl_slist_append(h, line.data);
        buf_free(&line);
    }
    return h;
}

int trace_export_start(const struct conf *c)
{
    if (!c->tracing.endpoint)
        return 0;
    struct buf url = BUF_INIT;
    buf_printf(&url, "%s/v1/traces", c->tracing.endpoint);
    ex.url = buf_steal(&url);
    ex.envelope = export_envelope(c);
    ex.headers = export_headers(c);
    ex.cap = c->tracing.queue_size;
    ex.batch = c->tracing.batch_size;
    ex.delay_ms = c->tracing.batch_delay_ms;
    ex.q = calloc(ex.cap, sizeof *ex.q);
    trace_pools_keep(2 * ex.batch < ex.cap ? 2 * ex.batch : ex.cap);
    ex.stop = false;
    if (!ex.url || !ex.envelope || !ex.q || pthread_create(&ex.thread, NULL, exporter_main, NULL)) {
        log_error("tracing: cannot start the exporter thread; traces are off");
        free(ex.q);
        free(ex.url);
        free(ex.envelope);
        curl_slist_free_all(ex.headers);
        ex.q = NULL;
        ex.url = ex.envelope = NULL;
        ex.headers = NULL;
        return -1;
    }
    ex.ever = true;
    __atomic_store_n(&ex.running, true, __ATOMIC_RELEASE);
    return 0;
}

void trace_export_stop(void)
{
    if (!trace_export_running())
        return;
    __atomic_store_n(&ex.running, false, __ATOMIC_RELEASE);
    pthread_mutex_lock(&ex.lock);
    ex.stop = true;
    pthread_cond_signal(&ex.cond);
    pthread_mutex_unlock(&ex.lock);
    pthread_join(ex.thread, NULL);
    for (size_t i = 0; i < ex.n; i++)
        trace_span_release(ex.q[(ex.head + i) % ex.cap]);
    trace_pools_free();     /* the workers are gone: nothing makes or holds a span now */
    free(ex.q);
    free(ex.url);
    free(ex.envelope);
    curl_slist_free_all(ex.headers);
    ex.q = NULL;
    ex.n = ex.head = 0;
}

static void deadline_after(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits ms unless stop (or, with for_batch, a full batch) comes first; lock held. true when
 * stopping. */
static bool wait_or_stop(uint64_t ms, bool for_batch)
{
    struct timespec ts;
    deadline_after(&ts, ms);
    while (!ex.stop && !(for_batch && ex.n >= ex.batch) &&
           pthread_cond_timedwait(&ex.cond, &ex.lock, &ts) != ETIMEDOUT)
        ;
    return ex.stop;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    return size * n;    /* the collector's answer is not needed */
}

/* One POST; 0 sent, 1 worth retrying (connection, 429, 502-504), -1 refused for good. */
static int export_post(CURL *easy, const struct buf *body)
{
    curl_easy_setopt(easy, CURLOPT_URL, ex.url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, ex.headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)EXPORT_TIMEOUT_MS);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)EXPORT_CONNECT_MS);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    if (curl_easy_perform(easy) != CURLE_OK)
        return 1;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return 0;
    return status == 429 || status == 502 || status == 503 || status == 504 ? 1 : -1;
}

/* Encodes k spans into body (the thread's, reused: a batch is written in place, with no
 * regrowth once the first ones sized it), and hands them back to their pools. -1 when memory
 * ran out. */
static int export_body(struct buf *body, struct trace_span **spans, size_t k)
{
    buf_reset(body);
    int rc = buf_puts(body, ex.envelope);
    for (size_t i = 0; i < k; i++) {
        if (i && rc == 0)
            rc = buf_append(body, ",", 1);
        if (rc == 0)
            rc = trace_span_encode(body, spans[i]);
        trace_span_release(spans[i]);
    }
    return rc == 0 ? buf_puts(body, "]}]}]}") : -1;
}

/* Sends k spans as one request, retrying with backoff (not once stopping); releases them. */
static void export_batch(CURL *easy, struct buf *body, struct trace_span **spans, size_t k)
{
    int rc = export_body(body, spans, k) == 0 ? export_post(easy, body) : -1;
    for (unsigned i = 0; rc > 0 && i < EXPORT_RETRIES; i++) {
        pthread_mutex_lock(&ex.lock);
        bool stopping = ex.stop || wait_or_stop(500u << i, false);
        pthread_mutex_unlock(&ex.lock);
        if (stopping)
            break;
        rc = export_post(easy, body);
    }
    if (rc == 0) {
        __atomic_add_fetch(&ex.exported, k, __ATOMIC_RELAXED);
    } else {
        __atomic_add_fetch(&ex.failed, k, __ATOMIC_RELAXED);
        if (__atomic_add_fetch(&ex.batches_failed, 1, __ATOMIC_RELAXED) == 1)
            log_warn("tracing: cannot export spans to %s (counted in "
                     "llmux_trace_spans_dropped_total{reason=\"export_failed\"})", ex.url);
    }
    if (body->cap > EXPORT_BODY_KEEP)
        buf_free(body);     /* a batch of captured prompts: not kept for the next one */
}

static void *exporter_main(void *arg)
{
    CURL *easy = curl_easy_init();
    struct trace_span **batch = calloc(ex.batch, sizeof *batch);
    struct buf body = BUF_INIT;
    pthread_mutex_lock(&ex.lock);
    for (;;) {
        if (ex.n < ex.batch && !ex.stop)
            wait_or_stop(ex.delay_ms, true);
        size_t k = ex.n < ex.batch ? ex.n : ex.batch;
        for (size_t i = 0; batch && i < k; i++) {
            batch[i] = ex.q[ex.head];
            ex.head = (ex.head + 1) % ex.cap;
        }
        ex.n -= batch ? k : 0;
        bool stopping = ex.stop;
        pthread_mutex_unlock(&ex.lock);
        if (k && batch && easy)
            export_batch(easy, &body, batch, k);
        else if (k && batch)
            for (size_t i = 0; i < k; i++)
                trace_span_release(batch[i]);
        pthread_mutex_lock(&ex.lock);
        if (stopping && ex.n == 0)
            break;
    }
    pthread_mutex_unlock(&ex.lock);
    buf_free(&body);
    free(batch);
    if (easy)
        curl_easy_cleanup(easy);
    return NULL;
}

void trace_export_render(struct buf *out)
{
    if (!ex.ever)
        return;
    buf_printf(out, "# HELP llmux_trace_spans_exported_total Spans the collector accepted.\n"
               "# TYPE llmux_trace_spans_exported_total counter\n"
               "llmux_trace_spans_exported_total %lu\n"
               "# HELP llmux_trace_spans_dropped_total Spans not exported, by reason.\n"
               "# TYPE llmux_trace_spans_dropped_total counter\n"
               "llmux_trace_spans_dropped_total{reason=\"queue_full\"} %lu\n"
               "llmux_trace_spans_dropped_total{reason=\"export_failed\"} %lu\n",
               (unsigned long)__atomic_load_n(&ex.exported, __ATOMIC_RELAXED),
               (unsigned long)__atomic_load_n(&ex.dropped, __ATOMIC_RELAXED),
               (unsigned long)__atomic_load_n(&ex.failed, __ATOMIC_RELAXED));
}
