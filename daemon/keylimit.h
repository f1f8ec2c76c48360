/* keylimit: per-key request rate (rpm, token bucket) and concurrency limits. State is per worker
 * (no lock on the hot path); with N workers each enforces 1/N of the configured figure. */
#ifndef LLMUX_KEYLIMIT_H
#define LLMUX_KEYLIMIT_H

#include "daemon/request.h"

/* Admits one upstream-bound request for r->key: 0, or -1 after answering 429 (Retry-After). */
int keylimit_acquire(struct request *r);
/* Gives back the concurrency slot taken by keylimit_acquire (called by request_end). */
void keylimit_release(struct request *r);
void keylimit_free_all(struct worker *w);
/* A hedge: one more call for a request that holds its slot. Charges one request of rpm and one
 * concurrency slot (1), has nothing to charge (0), or refuses (-1) without answering anything;
 * give_extra returns a slot charged with 1. */
int keylimit_take_extra(struct request *r);
void keylimit_give_extra(struct request *r);

#endif
