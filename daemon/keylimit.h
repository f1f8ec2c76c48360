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
/* A hedge's own take of its key: one more request of rpm and one more concurrency slot, at
 * once (memory) or a Redis round trip later (PENDING: done runs then, unless the take is
 * cancelled first); a refused hedge is skipped, never queued. With state.on_error open a
 * failed backend charges nothing and lets it go, as for the request itself. */
enum keylimit_extra {
    KEYLIMIT_EXTRA_TAKEN,       /* *hold to give back (NULL: nothing was charged) */
    KEYLIMIT_EXTRA_REFUSED,     /* nothing held */
    KEYLIMIT_EXTRA_PENDING,     /* the answer is a Redis round trip away: done runs later */
};
/* The pending take's answer, from the loop: taken with hold (or NULL, as above), or refused. */
typedef void keylimit_extra_done(void *arg, struct state_hold *hold, bool taken);
/* PENDING: *hold is the take on its way; until done runs, only keylimit_cancel_extra ends it. */
enum keylimit_extra keylimit_take_extra(struct request *r, struct state_hold **hold,
                                        keylimit_extra_done *done, void *arg);
/* Ends a pending take (its owner goes away): done never runs, the take is freed. */
void keylimit_cancel_extra(struct state_hold *hold);
void keylimit_give_extra(struct request *r, struct state_hold *hold);

#endif
