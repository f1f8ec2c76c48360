/* gather: POST /v1/gather — a parent request whose children are ordinary upstream requests,
 * run with bounded concurrency; return_exceptions, fail-fast, first-wins, as-completed stream. */
#ifndef LLMUX_GATHER_H
#define LLMUX_GATHER_H

#include <jansson.h>

#include "daemon/request.h"

/* Checks the body (valid JSON text, an object; copied) and starts the items; answers 400
 * itself on bad input. */
void gather_start(struct request *r, const char *body, size_t len);
/* The parent ended (client gone, deadline…): end every child still running. */
void gather_cancel(struct gather *g, enum outcome o);
void gather_free(struct gather *g);
/* The parent fails mid-stream (shutdown, deadline): a streamed gather ends in its own shape,
 * `event: error` with error_body ({"error":…}) then `event: done`. false: not streamed. */
bool gather_stream_fail(struct gather *g, const char *error_body);
/* r is an item of a gather whose client is above its high water: its answer's upstream read
 * waits (the proxy pauses the call) until the client drains. */
bool gather_item_blocked(const struct request *r);
/* The client's connection drained below its low-water mark: emit what waits, start more. */
void gather_drained(struct gather *g);

#endif
