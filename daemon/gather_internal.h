/* gather_internal: the gather's state, shared by gather.c (running it, writing its answer)
 * and gather_parse.c (reading its body). */
#ifndef LLMUX_GATHER_INTERNAL_H
#define LLMUX_GATHER_INTERNAL_H

#include <sys/types.h>

#include "daemon/gather.h"

enum gather_mode { MODE_ALL, MODE_FIRST };

struct gather_item {
    struct request *req;        /* NULL until started */
    size_t body_off, body_len;  /* the item's chat body inside the gather's text */
    enum endpoint ep;
    struct buf entry;           /* {"index","status","response"|"error"} as JSON text, once
                                 * done: answers are spliced in as they came, never re-parsed */
    size_t value_off, value_len;    /* the response or error object inside entry */
    int status;
    bool done;
};

struct gather {
    struct request *parent;
    struct buf text;            /* the client's body: items are started from slices of it */
    struct gather_item *items;
    size_t n, next, ndone, succeeded, failed;
    unsigned running, max_concurrency;
    enum gather_mode mode;
    bool return_exceptions, stream, advancing, finished;
    bool timed;                 /* the timeout timer is set */
    uint64_t item_timeout_ms;
    struct usage usage;         /* summed over the items, estimates included */
    double cost_usd;
    bool priced;                /* some item had a price */
    ev_timer timeout;           /* the gather's own timeout_ms */
    ssize_t failure;            /* index of the fail-fast failure, -1 none */
    ssize_t winner;             /* mode first: index of the winner, -1 none */
    ssize_t last_failed;        /* the item that failed last in time, -1 none */
    /* Output as items complete, each entry written once and then freed: a streamed mode-all
     * gather sends `result` events in completion order (fifo); a non-streamed one whose
     * status can only be 200 (mode all, return_exceptions) writes its JSON document in index
     * order (ordered). Both stop starting items while the client is above its high water. */
    bool ordered, blocked, too_large;
    size_t emitted;             /* ordered: entries [0, emitted) are out */
    size_t *fifo, fifo_head, fifo_tail;
    uint64_t result_bytes;      /* entries' bytes so far, against gather.max_result_bytes */
};

/* Reads the options and the items from g->text (valid JSON, an object) without a tree; 0, or
 * -1 when answered (400, 503). */
int gather_parse(struct request *r, struct gather *g);

#endif
