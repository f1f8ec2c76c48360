/* trace_export: the OTLP/HTTP JSON exporter — one helper thread that batches the span records
 * workers hand it (by size and delay), encodes them and POSTs them to
 * {tracing.endpoint}/v1/traces with libcurl, retrying with backoff. Workers never wait on it:
 * the queue is bounded and a span that finds it full is dropped and counted. Process-wide,
 * like the log writer. */
#ifndef LLMUX_TRACE_EXPORT_H
#define LLMUX_TRACE_EXPORT_H

#include <stdbool.h>

#include "common/buf.h"
#include "conf/conf.h"

/* Starts the thread when c has tracing.endpoint (else does nothing); the endpoint, headers,
 * service name, batch and queue sizes are taken now (a reload does not change them). -1 when
 * the thread could not start (tracing then stays off). */
int trace_export_start(const struct conf *c);
/* Sends what is queued (one try each), stops the thread. */
void trace_export_stop(void);
bool trace_export_running(void);
struct trace_span;
/* Queues one span record, taking it (a full queue releases it and counts a drop). Wakes the
 * thread only when a batch fills: once per batch, not per span. */
void trace_export_push(struct trace_span *span);
/* Counts a span that could not be recorded (no memory) as dropped. */
void trace_export_drop(void);
/* The exporter's counters, Prometheus text (nothing when it never ran). */
void trace_export_render(struct buf *out);

#endif
