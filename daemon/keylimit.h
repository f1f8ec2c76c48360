/* keylimit: a request's admission against its key's limits (rpm, tpm, max_concurrency) through
 * the state interface, the wait of gather items and jobs for their key's slot, the release and
 * token charge when the request ends, and the x-ratelimit-* response headers. */
#ifndef LLMUX_KEYLIMIT_H
#define LLMUX_KEYLIMIT_H

#include <jansson.h>

#include "common/buf.h"
#include "daemon/request.h"

struct state_hold;

/* Starts r's upstream work (proxy_start) once its key admits it, now or after a wait (when
 * r->wait_for_key) or a Redis answer; otherwise answers 429 (or 503 when the shared state is
 * down and state.on_error is closed). The body is r->body_raw. */
void keylimit_admit(struct request *r, const struct conf_model *m);
/* Gives back what the request holds and charges its tokens (request_end calls it). */
void keylimit_release(struct request *r);
/* Appends the x-ratelimit-* lines for a limited key (nothing otherwise). */
void keylimit_headers(const struct request *r, struct buf *h);
/* A hedge: one more call for a request its key admitted. Takes one more request of rpm and one
 * more concurrency slot now or never (a hedge does not wait): 1 with *hold to give back,
 * 0 when the key has nothing to charge, -1 refused. */
int keylimit_take_extra(struct request *r, struct state_hold **hold);
void keylimit_give_extra(struct request *r, struct state_hold *hold);

#endif
