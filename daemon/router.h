/* router: the endpoint table — authentication, method checks, and the small handlers
 * (models, health, readiness, metrics); chat-like endpoints go to the proxy, gather to gather. */
#ifndef LLMUX_ROUTER_H
#define LLMUX_ROUTER_H

#include <stddef.h>
#include <stdio.h>

#include "daemon/http_parser.h"
#include "daemon/request.h"

/* Handles the request; answers are produced through the request (now or later). The head and
 * body are only valid during this call. */
void router_dispatch(struct request *r, const struct http_head *head, const char *body,
                     size_t len);

/* Shared with gather items: checks the chat-like body in r->body_raw (valid JSON text, an
 * object) against the request's key and config and starts it. param is the prefix used in error messages ("" or "requests[3]."). */
void router_start_upstream(struct request *r, const char *param_prefix);

/* Prints the route table, one "METHOD PATH" line per route (llmuxd --routes). */
void router_print_routes(FILE *f);

#endif
