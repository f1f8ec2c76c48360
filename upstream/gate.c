/* gate: the per-upstream admission of calls on one engine (see gate.h); our own FIFO rather
 * than libcurl's pending list, which 7.88 rescans per finished transfer and releases one at a
 * time, and whose HTTP/2 bundle logic opens a connection per call once the first is full. */
#include "upstream/gate.h"

#include <stdlib.h>
#include <string.h>

struct gate *gate_get(struct gate **list, const char *key, bool multiplex, bool tls,
                      unsigned cap)
{
    struct gate *g;
    for (g = *list; g; g = g->next)
        if (g->multiplex == multiplex && strcmp(g->key, key) == 0)
            break;
    if (!g) {
        size_t n = strlen(key) + 1;
        if (!(g = calloc(1, sizeof *g + n)))
            return NULL;
        memcpy(g->key, key, n);
        g->multiplex = multiplex;
        g->tls = tls && !multiplex;
        g->per_conn = GATE_STREAMS;
        g->cap = cap;   /* from the first config that used it: pools are sized at start */
        g->next = *list;
        *list = g;
    }
    return g;
}

void gate_free_all(struct gate **list)
{
    while (*list) {
        struct gate *g = *list;
        *list = g->next;
        free(g);
    }
}

/* HTTP/1.1: a free slot; over TLS, when no idle connection is left, a free handshake too. */
static bool gate_room_h1(struct gate *g, bool *opener)
{
    if (g->active >= g->cap)
        return false;
    if (!g->tls || g->active < g->conns)
        return true;
    if (g->openers >= GATE_HANDSHAKES)
        return false;
    *opener = true;
    return true;
}

/* Room for one more call; queued: it is the head of the line (counted in waiting). */
static bool gate_room(struct gate *g, bool queued, bool *opener)
{
    *opener = false;
    if (!g->multiplex)
        return gate_room_h1(g, opener);
    unsigned ready = g->conns > g->openers ? g->conns - g->openers : 0;
    if (g->active < ready * g->per_conn)
        return true;
    /* Connections on the way take per_conn calls each: another only for calls beyond those. */
    unsigned want = g->waiting + (queued ? 0 : 1);
    if (g->openers * g->per_conn >= want)
        return false;
    *opener = true;
    return true;
}

bool gate_admit(struct gate *g, bool *opener)
{
    *opener = false;
    return !g->head && gate_room(g, false, opener);
}

void gate_push(struct gate *g, struct gate_wait *w)
{
    g->waiting++;
    w->next = NULL;
    if (g->tail)
        g->tail->next = w;
    else
        g->head = w;
    g->tail = w;
}

/* Singly linked: a cancel from the middle walks the line, which only cancels ever pay. */
bool gate_remove(struct gate *g, struct gate_wait *w)
{
    struct gate_wait **pp = &g->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return false;
    *pp = w->next;
    if (g->tail == w)
        g->tail = prev;
    g->waiting--;
    return true;
}

struct gate_wait *gate_pop(struct gate *g, bool *opener)
{
    struct gate_wait *w = g->head;
    if (!w || !gate_room(g, true, opener))
        return NULL;
    g->waiting--;
    g->head = w->next;
    if (!g->head)
        g->tail = NULL;
    return w;
}

void gate_started(struct gate *g, bool opener)
{
    g->active++;
    if (opener)
        g->openers++;
}

void gate_ended(struct gate *g, bool opener)
{
    g->active--;
    if (opener && g->openers)
        g->openers--;
}

void gate_ready(struct gate *g)
{
    if (g->openers)
        g->openers--;
}

void gate_conn_opened(struct gate *g, bool by_opener)
{
    if (!by_opener) {
        unsigned ready = g->conns > g->openers ? g->conns - g->openers : 1;
        unsigned seen = (g->active - 1) / ready;         /* what the others carry */
        g->per_conn = seen ? seen : 1;
        g->openers++;
    }
    g->conns++;
}

bool gate_counts_conns(const struct gate *g)
{
    return g->multiplex || g->tls;
}

void gate_h1_conn_opened(struct gate *g, bool *opener)
{
    g->conns++;
    if (!*opener) {
        *opener = true;
        g->openers++;
    }
}

void gate_conn_closed(struct gate *g)
{
    if (g->conns)
        g->conns--;
}
