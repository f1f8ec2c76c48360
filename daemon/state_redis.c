/* state_redis: the shared backend. One Lua script does each step atomically inside Redis with
 * Redis's own clock (so instances' clocks need not agree): a take is GCRA for rpm, a look at
 * the tpm debt and a lease for max_concurrency (a ZSET of lease → expiry, renewed while the
 * request runs, so a crashed instance's slots come back by themselves) in one round trip. */
#include "daemon/state_impl.h"

#include <stdio.h>
#include <string.h>

#define LEASE_TTL_MS 15000              /* a dead instance's slots come back after this */
#define LEASE_RENEW_S 5.0

/* ARGV[1] = op; take: rpm tpm max_concurrency lease ttl_ms; end: tpm tokens lease;
 * renew: lease ttl_ms. KEYS = request tat, token tat, lease ZSET. Times in ms. */
static const char script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local W = 60000\n"
    "local op = ARGV[1]\n"
    "if op == 'renew' then\n"
    "  return redis.call('ZADD', KEYS[3], 'XX', now + tonumber(ARGV[3]), ARGV[2])\n"
    "end\n"
    "local ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)\n"
    "if op == 'end' then\n"
    "  if ARGV[4] ~= '' then redis.call('ZREM', KEYS[3], ARGV[4]) end\n"
    "  local tpm, n = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "  if tpm > 0 and n > 0 then\n"
    "    ttat = math.min(ttat + n * W / tpm, now + 2 * W)\n"
    "    redis.call('SET', KEYS[2], tostring(ttat), 'PX', math.ceil(ttat - now) + 1000)\n"
    "  end\n"
    "  return 0\n"
    "end\n"
    "local rpm, tpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local rtat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)\n"
    "local function answer(v, retry)\n"
    "  return {v, math.ceil(retry), math.floor(rtat - now), math.floor(ttat - now)}\n"
    "end\n"
    "if tpm > 0 and ttat + W / tpm - now > W then\n"
    "  return answer(2, ttat + W / tpm - now - W)\n"
    "end\n"
    "if conc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[3]) >= conc then return answer(3, 0) end\n"
    "end\n"
    "if rpm > 0 then\n"
    "  local nxt = rtat + W / rpm\n"
    "  if nxt - now > W then return answer(1, nxt - now - W) end\n"
    "  rtat = nxt\n"
    "  redis.call('SET', KEYS[1], tostring(rtat), 'PX', math.ceil(rtat - now) + 1000)\n"
    "end\n"
    "if conc > 0 then\n"
    "  local ttl = tonumber(ARGV[6])\n"
    "  redis.call('ZADD', KEYS[3], now + ttl, ARGV[5])\n"
    "  redis.call('PEXPIRE', KEYS[3], ttl * 2)\n"
    "end\n"
    "return answer(0, 0)\n";

static void on_take_reply(void *arg, const redisReply *reply, const char *err);

void state_redis_init(struct state *st)
{
    redis_script_init(&st->take_script, script);
}

struct keys {
    char req[300], tok[300], lease[300];
};

/* {name} is a hash tag: one key's three entries live on one Redis Cluster node. */
static void keys_of(const char *name, struct keys *k)
{
    snprintf(k->req, sizeof k->req, "llmux:key:{%.250s}:req", name);
    snprintf(k->tok, sizeof k->tok, "llmux:key:{%.250s}:tok", name);
    snprintf(k->lease, sizeof k->lease, "llmux:key:{%.250s}:lease", name);
}

/* The script with op and up to 5 more arguments. */
static struct redis_cmd *run(struct state_link *l, const char *name, redis_cb cb, void *arg,
                             int nargs, const char **args)
{
    struct keys k;
    const char *argv[10];
    int argc = 0;
    keys_of(name, &k);
    argv[argc++] = "3";
    argv[argc++] = k.req;
    argv[argc++] = k.tok;
    argv[argc++] = k.lease;
    for (int i = 0; i < nargs && argc < 10; i++)
        argv[argc++] = args[i];
    return redis_eval(l->rd, cb, arg, &l->st->take_script, argc, argv);
}

static bool send_take(struct state_hold *h)
{
    const struct conf_key *k = h->key;
    char rpm[16], tpm[16], conc[16], ttl[16];
    snprintf(rpm, sizeof rpm, "%u", k->rpm);
    snprintf(tpm, sizeof tpm, "%u", k->tpm);
    snprintf(conc, sizeof conc, "%u", k->max_concurrency);
    snprintf(ttl, sizeof ttl, "%d", LEASE_TTL_MS);
    const char *args[] = {"take", rpm, tpm, conc, h->lease, ttl};
    h->cmd = run(h->link, k->name, on_take_reply, h, 6, args);
    return h->cmd != NULL;
}

static void on_renew(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct state_hold *h = t->data;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", LEASE_TTL_MS);
    const char *args[] = {"renew", h->lease, ttl};
    /* Best effort: a renewal lost while Redis is away only shortens the lease. */
    run(h->link, h->key->name, NULL, NULL, 3, args);
}

static void fail(struct state_hold *h, const char *why)
{
    h->verdict = STATE_FAILED;
    h->why = why;
}

/* {verdict, retry_ms, request tat - now, token tat - now}, all integers. */
static void read_answer(struct state_hold *h, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        fail(h, "unexpected answer from the script");
        return;
    }
    long long v[4];
    for (int i = 0; i < 4; i++) {
        if (r->element[i]->type != REDIS_REPLY_INTEGER) {
            fail(h, "unexpected answer from the script");
            return;
        }
        v[i] = r->element[i]->integer;
    }
    static const enum state_verdict verdicts[] = {STATE_TAKEN, STATE_RATE_LIMITED,
                                                  STATE_TOKENS_LIMITED, STATE_BUSY};
    if (v[0] < 0 || v[0] > 3) {
        fail(h, "unexpected answer from the script");
        return;
    }
    int64_t now = state_now_us(), req = now + v[2] * 1000, tok = now + v[3] * 1000;
    h->verdict = verdicts[v[0]];
    h->retry_after_s = (double)v[1] / 1000.0;
    __atomic_store_n(&h->slot->seen_req_tat_us, req, __ATOMIC_RELAXED);
    __atomic_store_n(&h->slot->seen_tok_tat_us, tok, __ATOMIC_RELAXED);
    state_figures_fill(&h->fig, h->key, req, tok, now);
}

static void on_take_reply(void *arg, const redisReply *reply, const char *err)
{
    struct state_hold *h = arg;
    h->cmd = NULL;
    h->pending = false;
    if (!reply)
        fail(h, err);
    else if (reply->type == REDIS_REPLY_ERROR)
        fail(h, "error answer from redis");
    else
        read_answer(h, reply);
    if (h->verdict == STATE_TAKEN) {
        h->taken = true;
        if (h->key->max_concurrency) {
            ev_timer_init(&h->renew, on_renew, LEASE_RENEW_S, LEASE_RENEW_S);
            h->renew.data = h;
            ev_timer_start(h->link->loop, &h->renew);
        }
    }
    h->done(h);
}

bool state_redis_take(struct state_link *l, struct state_hold *h, const struct conf_key *k)
{
    snprintf(h->lease, sizeof h->lease, "%s.%u.%llu", l->st->instance, l->worker_id,
             (unsigned long long)++l->lease_seq);
    if (!redis_ready(l->rd)) {
        fail(h, "not connected");
        return true;
    }
    if (!send_take(h)) {
        fail(h, "too many commands pending");
        return true;
    }
    h->pending = true;
    return false;
}

/* A take already on its way still runs in Redis: an `end` sent behind it (a link runs its
 * commands in order) removes the lease it may get, so a slot of max_concurrency is not held
 * for LEASE_TTL_MS by a request that is gone; its rpm stays spent. */
void state_redis_cancel(struct state_hold *h)
{
    bool sent = h->pending;
    redis_cancel(h->cmd);
    h->cmd = NULL;
    h->pending = false;
    if (sent && h->key->max_concurrency) {
        const char *args[] = {"end", "0", "0", h->lease};
        run(h->link, h->key->name, NULL, NULL, 4, args);
    }
}

void state_redis_release(struct state_hold *h, long tokens)
{
    const struct conf_key *k = h->key;
    bool lease = h->taken && k->max_concurrency;
    if (lease)
        ev_timer_stop(h->link->loop, &h->renew);
    if (!lease && !(k->tpm && tokens > 0))
        return;
    char tpm[16], n[24];
    snprintf(tpm, sizeof tpm, "%u", k->tpm);
    snprintf(n, sizeof n, "%ld", tokens > 0 ? tokens : 0);
    const char *args[] = {"end", tpm, n, lease ? h->lease : ""};
    if (!run(h->link, k->name, NULL, NULL, 4, args))
        state_failed(h->link, "not connected");
}
