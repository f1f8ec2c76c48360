/* fdlimit: fits a configuration to RLIMIT_NOFILE before it serves — raises the soft limit
 * towards what the config needs, and sizes the default connection limits to what remains. */
#include <sys/resource.h>

#include "common/log.h"
#include "daemon/fdlimit.h"

/* Descriptors besides connections: listeners are added to this; curl's resolver threads,
 * each worker's epoll/eventfd pair, the log, the jobs journal. */
#define FDLIMIT_RESERVE 64

static rlim_t fdlimit_need(const struct conf *c)
{
    return (rlim_t)c->limits.max_connections + c->limits.max_inflight + c->nlisten +
           FDLIMIT_RESERVE;
}

/* The soft limit after raising it towards need (never lowered; under a unit whose
 * ~@resources filter refuses setrlimit, LimitNOFILE= has set it already). 0 when unknown. */
static rlim_t fdlimit_raise(rlim_t need, rlim_t *hard)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    *hard = rl.rlim_max;
    if (rl.rlim_cur >= need)
        return rl.rlim_cur;
    rlim_t want = need < rl.rlim_max ? need : rl.rlim_max;
    if (want > rl.rlim_cur) {
        struct rlimit nrl = {want, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nrl) == 0)
            rl.rlim_cur = want;
    }
    return rl.rlim_cur;
}

/* Splits what the limit leaves after the reserve 2:1 between connections and upstream
 * calls, the defaults' ratio (every call also holds the client's connection). */
static void fdlimit_size(struct conf *c, rlim_t have)
{
    rlim_t fixed = (rlim_t)c->nlisten + FDLIMIT_RESERVE;
    rlim_t budget = have > 2 * fixed ? have - fixed : have / 2;
    rlim_t conns = budget * 2 / 3;
    c->limits.max_connections = conns > 1 ? (unsigned)conns : 1;
    c->limits.max_inflight = budget - conns > 1 ? (unsigned)(budget - conns) : 1;
}

void fdlimit_fit(struct conf *c, bool at_start)
{
    rlim_t need = fdlimit_need(c), hard = 0;
    rlim_t have = fdlimit_raise(need, &hard);
    if (have == 0 || have >= need)
        return;
    if (c->limits.fds_explicit) {
        log_error("RLIMIT_NOFILE is %lu but limits.max_connections + limits.max_inflight "
                  "need %lu: raise LimitNOFILE= (or ulimit -n); past %lu descriptors new "
                  "connections wait in the backlog and upstream calls fail",
                  (unsigned long)have, (unsigned long)need, (unsigned long)have);
        return;
    }
    unsigned conns = c->limits.max_connections, inflight = c->limits.max_inflight;
    fdlimit_size(c, have);
    if (at_start)
        log_info("RLIMIT_NOFILE is %lu (hard %lu), below the %lu descriptors the default "
                 "limits need: limits.max_connections %u (default %u) and "
                 "limits.max_inflight %u (default %u); raise LimitNOFILE= for more",
                 (unsigned long)have, (unsigned long)hard, (unsigned long)need,
                 c->limits.max_connections, conns, c->limits.max_inflight, inflight);
}
