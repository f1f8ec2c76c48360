/* proxy: the upstream side of one request — target order, attempts (calls), retries with
 * backoff, fallbacks, health, and translating answers into the request's sink. */
#ifndef LLMUX_PROXY_H
#define LLMUX_PROXY_H

#include <jansson.h>

#include "daemon/request.h"

/* Starts the work on the body in r->body_raw, or queues it when limits.max_inflight requests
 * already hold upstream slots. Returns 0, or -1 when the request was answered with an error (503 when the queue
 * is full too) and ended. */
int proxy_start(struct request *r, const struct conf_model *m);
/* A queued request ended before its turn: leave the queue. */
void proxy_unqueue(struct request *r);
void proxy_worker_init(struct worker *w);
/* Aborts any call in flight (counted under why) and frees. */
void proxy_cancel(struct proxy *p, enum abort_reason why);
void proxy_resume(struct proxy *p);

#endif
