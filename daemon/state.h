/* state: where per-key limit state lives — one interface (take / release with a token charge)
 * and two backends: `memory` (this process, exact across its workers with atomics) and `redis`
 * (several llmuxd sharing one Redis; async on each worker's loop). The jobs store is a separate
 * interface (daemon/jobs*.h) that uses daemon/redis.h for its Redis backend; a job that runs
 * upstream calls goes through keylimit.c like any request, so it counts against its key. */
#ifndef LLMUX_STATE_H
#define LLMUX_STATE_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"

struct redis_cmd;
struct state_link;

/* Budgets of one key right after a take, for x-ratelimit-* and Retry-After. */
struct state_figures {
    unsigned limit_req, limit_tok;      /* the key's rpm / tpm; 0 = not limited */
    long remaining_req, remaining_tok;
    double reset_req_s, reset_tok_s;    /* until the budget is whole again */
};

enum state_verdict {
    STATE_TAKEN,            /* admitted; release it when the request ends */
    STATE_RATE_LIMITED,     /* rpm spent */
    STATE_TOKENS_LIMITED,   /* tpm spent */
    STATE_BUSY,             /* max_concurrency requests already run */
    STATE_FAILED,           /* the backend could not answer (on_error decides) */
    STATE_BUDGET_EXCEEDED,  /* a spend budget has no room for the estimate */
};

/* Process-wide entry for one key name, created on first use and never freed before exit,
 * so a pointer to it stays valid across reloads. The memory backend keeps its counters here;
 * both backends keep the last figures seen, for answers that take nothing (a gather's own). */
struct state_slot {
    struct state_slot *next;        /* in its hash bucket; insert-only */
    int64_t req_tat_us;             /* atomic: GCRA theoretical arrival time, requests */
    int64_t tok_tat_us;             /* atomic: same, tokens */
    uint32_t inflight;              /* atomic: concurrency slots taken */
    int64_t seen_req_tat_us, seen_tok_tat_us;  /* atomic: redis backend's last answer */
    char name[];
};

/* What one request holds between its take and its release. Embedded in the request. */
struct state_hold {
    struct state_slot *slot;
    const struct conf_key *key;
    struct state_link *link;
    bool taken;                     /* holds what a take gave (lease, concurrency slot) */
    bool pending;                   /* a take is on its way to Redis */
    enum state_verdict verdict;
    double retry_after_s;
    struct state_figures fig;
    /* redis backend */
    struct redis_cmd *cmd;
    const char *why;                /* STATE_FAILED: a static reason, for the log */
    char lease[32];
    ev_timer renew;                 /* keeps the lease alive while the request runs */
    void (*done)(struct state_hold *h);     /* a pending take's answer is in h */
};

struct state;

/* Whole process (the server owns it); backend and Redis URL come from c and stay until exit
 * (a reload that changes them says so in the log). NULL with err filled on failure. */
struct state *state_new(const struct conf *c, char *err, size_t errlen);
void state_free(struct state *st);
bool state_is_redis(const struct state *st);
/* Whether c's state section differs from what st was made from (a reload cannot switch it). */
bool state_differs(const struct state *st, const struct conf *c);
/* Per worker: its Redis link when the backend is redis. errors: the worker's counter of
 * backend failures (llmux_state_errors_total). */
struct state_link *state_link_new(struct state *st, struct ev_loop *loop, unsigned worker_id,
                                  uint64_t *errors);
void state_link_free(struct state_link *l);

/* Takes one request's worth for key k (rpm, max_concurrency; tpm is checked, not charged).
 * Returns true when h holds the answer now, false when h->done(h) will run later from the
 * loop (cancel with state_cancel). Never calls h->done from inside the call. */
bool state_take(struct state_link *l, struct state_hold *h, const struct conf_key *k);
void state_cancel(struct state_hold *h);
/* Gives back what h holds and charges `tokens` to the key's tpm (async for redis: fire and
 * forget, never waited on). Safe on a hold that took nothing. */
void state_release(struct state_hold *h, long tokens);
/* Figures for a key without taking anything (answers like a gather's own, /v1/models). */
void state_peek(struct state *st, const struct conf_key *k, struct state_figures *out);
/* Whether requests go through while the backend fails (state.on_error: open). The failure is
 * counted and logged at most once per burst. */
bool state_failed(struct state_link *l, const char *why);

/* Shared by the backends (state.c). */
struct state_slot *state_slot_get(struct state *st, const char *name);
int64_t state_now_us(void);         /* monotonic */
void state_figures_fill(struct state_figures *f, const struct conf_key *k, int64_t req_tat,
                        int64_t tok_tat, int64_t now);

/* GCRA (generic cell rate algorithm) maths, pure, in microseconds. T is the emission interval
 * (window / limit) and W the window: a key may spend its whole limit at once, then one unit
 * every T. */
struct gcra {
    int64_t tat;            /* the new theoretical arrival time */
    bool ok;
    int64_t retry_us;       /* when refused: how long until one unit fits */
    long remaining;         /* units that would still fit now */
    int64_t reset_us;       /* until the budget is whole again */
};
struct gcra gcra_admit(int64_t tat, int64_t now, double T, int64_t W, double cost);
struct gcra gcra_check(int64_t tat, int64_t now, double T, int64_t W);
/* Charges cost units whether they fit or not (tokens already spent); the debt is capped at one
 * more window so a single huge answer cannot block a key for hours. */
struct gcra gcra_charge(int64_t tat, int64_t now, double T, int64_t W, double cost);

#define STATE_WINDOW_US 60000000LL      /* rpm and tpm are per minute */

/* ---- budgets (state_budget*.c) ----
 * Spend in nano-dollars (integers: exact sums across workers and in Redis's Lua) per fixed UTC
 * window. Admission reserves an estimate in every budget that applies (the key's, the model's)
 * at once or in none; the answer settles: the reservation goes, the real cost is added to the
 * window the request was admitted in. Keys and models without a budget never get here. */
#define STATE_BUDGET_MAX 2              /* a key's budget and its model's */
#define STATE_NUSD 1e9                  /* nano-dollars per dollar */

enum state_budget_kind { BUDGET_OF_KEY, BUDGET_OF_MODEL };

struct state_acct;

/* One budget that applies: whose, its terms, and its figures when last read. */
struct state_budget_ref {
    enum state_budget_kind kind;
    const char *name;                   /* the key's or model's name (held by the caller) */
    const struct conf_budget *b;
    struct state_acct *acct;            /* memory: the counters; redis: last figures seen */
    int64_t window, reset_at;           /* window number and its end (Unix seconds) */
    int64_t spent, reserved;            /* nano-USD, before this request's reservation */
};

struct state_budget_hold {
    struct state_link *link;
    struct state_budget_ref ref[STATE_BUDGET_MAX];
    unsigned n;
    int64_t estimate;                   /* nano-USD reserved in each budget */
    const char *model;                  /* the key's per-model breakdown line */
    bool reserved;                      /* holds a reservation: settle it */
    bool pending;                       /* a reserve is on its way to Redis */
    enum state_verdict verdict;         /* TAKEN, BUDGET_EXCEEDED or FAILED */
    int refused;                        /* ref index that refused; -1 */
    const char *why;                    /* STATE_FAILED: a static reason, for the log */
    char lease[32];                     /* redis: names the reservation, so settle is exact */
    struct redis_cmd *cmd;
    void (*done)(struct state_budget_hold *h);
};

/* The window of kind w that holds Unix time t: its number, and its end in *end. Fixed
 * windows from the epoch (1d, 7d, 30d) or UTC calendar months. Pure. */
int64_t state_budget_window(enum conf_budget_window w, int64_t t, int64_t *end);
int64_t state_unix_now(void);
/* Reserves h->estimate in each of h->ref[0..n) (filled by the caller: kind, name, b), all or
 * none. Like state_take: true when h holds the answer now, else h->done(h) runs later. */
bool state_budget_reserve(struct state_link *l, struct state_budget_hold *h);
/* Gives back the reservation (or the one still on its way) and adds cost (nano-USD) to each
 * budget's window of admission; once per hold (redis: fire and forget). */
void state_budget_settle(struct state_budget_hold *h, int64_t cost);
/* Fills ref's window and figures now (redis: as this process last saw them). */
void state_budget_peek(struct state *st, struct state_budget_ref *ref);

/* GET /v1/spend: current figures of several budgets, with each key's spend per model. */
struct state_spend_row {
    struct state_budget_ref ref;
    json_t *models;                     /* {"model": nano-USD, …}, owned; keys only */
};
struct state_spend_read {
    struct state_link *link;
    struct state_spend_row *rows;       /* the caller's; kind, name, b filled */
    size_t n;
    bool failed;
    struct redis_cmd *cmd;
    void (*done)(struct state_spend_read *rd);
};
bool state_spend_read(struct state_link *l, struct state_spend_read *rd);
void state_spend_cancel(struct state_spend_read *rd);

#endif
