/* gather: POST /v1/gather — a parent request whose children are ordinary upstream requests,
 * run with bounded concurrency; return_exceptions, fail-fast, first-wins, as-completed stream. */
#ifndef LLMUX_GATHER_H
#define LLMUX_GATHER_H

#include <jansson.h>

#include "daemon/request.h"

/* Validates the body (steals it) and starts the items; answers 400 itself on bad input. */
void gather_start(struct request *r, json_t *body);
/* The parent ended (client gone, deadline…): end every child still running. */
void gather_cancel(struct gather *g, enum outcome o);
void gather_free(struct gather *g);

#endif
