/* jobs_redis: what the Redis jobs backend's two files share — key names, a worker's link and
 * runner state, and EVAL. jobs_redis.c answers the API; jobs_redis_run.c runs jobs. */
#ifndef LLMUX_JOBS_REDIS_H
#define LLMUX_JOBS_REDIS_H

#include <ev.h>
#include <stdint.h>

#include "daemon/jobs_impl.h"
#include "daemon/redis.h"

#define KEY_JOB "llmux:job:"
#define KEY_QUEUE "llmux:jobs:queue"
#define KEY_BY_KEY "llmux:jobs:by_key:"
#define GROUP "llmux"
#define TICK_S 0.05                 /* cancel checks and new work */
#define REFRESH_S 2.0               /* our pending entries are marked fresh */
#define TAKEOVER_IDLE_MS "10000"    /* an entry idle that long belongs to a dead instance */
#define KEYLEN 128

struct finishing {
    struct finishing *next;
    char id[JOB_ID_LEN + 1], entry[48], status[16];
    char *output;
    size_t len;
    bool requeue, inflight;
};

struct jobs_redis {
    struct worker *w;
    struct redis *rd;
    char consumer[96];
    ev_timer tick;
    double last_refresh, last_takeover;
    bool group_ok, group_asked, reading, checking;
    unsigned claiming;              /* claim scripts in flight (they count as running) */
    struct finishing *finishing;
};

/* EVAL lua with nkeys keys first in argv (lens NULL: C strings). NULL: not sent. */
struct redis_cmd *jobs_redis_eval(struct jobs_redis *jr, redis_cb cb, void *arg,
                                  const char *lua, int nkeys, int argc, const char **argv,
                                  const size_t *lens);
int64_t jobs_now_ms(void);

#endif
