/* proxy: the upstream side of one request — target order, attempts (calls), retries with
 * backoff, fallbacks, health, and translating answers into the request's sink. */
#ifndef LLMUX_PROXY_H
#define LLMUX_PROXY_H

#include <jansson.h>

#include "daemon/request.h"

/* Starts the work; steals body. Returns 0, or -1 when the request was already answered with an
 * error (and ended). */
int proxy_start(struct request *r, json_t *body, const struct conf_model *m);
/* Aborts any call in flight (counted under why) and frees. */
void proxy_cancel(struct proxy *p, enum abort_reason why);
void proxy_resume(struct proxy *p);

#endif
