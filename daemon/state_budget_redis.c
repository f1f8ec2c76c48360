/* state_budget_redis: budgets shared by every llmuxd on one Redis. One Lua script does each
 * step atomically: a reserve checks and reserves in every budget that applies (all or none), a
 * settle gives back exactly the reservation its lease names and adds the cost, so N instances
 * enforce one budget. A budget's window is one hash, expiring an hour after the window ends. */
#include "daemon/state_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPIRE_AFTER_S 3600             /* a window's hash outlives its end by this */
#define ARGV_MAX 16

/* KEYS: one hash per budget (key's first). ARGV[1] = op. Amounts go to HINCRBY as the
 * decimal strings they came as: a Lua number would be printed with 14 digits ("1e+14").
 * reserve: estimate lease {limit expire_at}… → {refused index or 0, spent, reserved, …}
 * settle: - lease cost model {expire_at}…  (model: the key's per-model line, or '')
 * read: → {HGETALL of each}. Amounts in nano-USD. */
static const char script[] =
    "local op = ARGV[1]\n"
    "if op == 'read' then\n"
    "  local out = {}\n"
    "  for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end\n"
    "  return out\n"
    "end\n"
    "local lease = 'r:' .. ARGV[3]\n"
    "if op == 'reserve' then\n"
    "  local est, out = tonumber(ARGV[2]), {0}\n"
    "  for i = 1, #KEYS do\n"
    "    local s = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')\n"
    "    local r = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')\n"
    "    local limit = tonumber(ARGV[2 + 2 * i])\n"
    "    out[2 * i], out[2 * i + 1] = s, r\n"
    "    if out[1] == 0 and (s + r >= limit or s + r + est > limit) then out[1] = i end\n"
    "  end\n"
    "  if out[1] == 0 then\n"
    "    for i = 1, #KEYS do\n"
    "      redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[2])\n"
    "      redis.call('HSET', KEYS[i], lease, ARGV[2])\n"
    "      redis.call('EXPIREAT', KEYS[i], ARGV[3 + 2 * i])\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local cost, model = tonumber(ARGV[4]), ARGV[5]\n"
    "for i = 1, #KEYS do\n"
    "  local held = redis.call('HGET', KEYS[i], lease)\n"
    "  if held then\n"
    "    redis.call('HDEL', KEYS[i], lease)\n"
    "    if held ~= '0' and redis.call('HINCRBY', KEYS[i], 'reserved', '-' .. held) < 0 then\n"
    "      redis.call('HSET', KEYS[i], 'reserved', '0')\n"
    "    end\n"
    "    if cost > 0 then\n"
    "      redis.call('HINCRBY', KEYS[i], 'spent', ARGV[4])\n"
    "      if i == 1 and model ~= '' then\n"
    "        redis.call('HINCRBY', KEYS[i], 'm:' .. model, ARGV[4])\n"
    "      end\n"
    "    end\n"
    "    redis.call('EXPIREAT', KEYS[i], ARGV[5 + i])\n"
    "  end\n"
    "end\n"
    "return 0\n";

void state_budget_redis_init(struct state *st)
{
    redis_script_init(&st->budget_script, script);
}

/* {b} is a hash tag: every budget lives on one node, so one script can touch several. */
static void hash_key(const struct state_budget_ref *ref, char *out, size_t n)
{
    snprintf(out, n, "llmux:budget:{b}:%c:%.250s:%s:%lld", ref->kind == BUDGET_OF_KEY ? 'k' : 'm',
             ref->name, conf_budget_window_names[ref->b->window], (long long)ref->window);
}

struct script_args {
    char keys[STATE_BUDGET_MAX][300];
    char nums[ARGV_MAX][24];
    const char *argv[ARGV_MAX + 8];
    int argc, nnums;
};

static void put_num(struct script_args *a, int64_t v)
{
    char *s = a->nums[a->nnums++];
    snprintf(s, sizeof a->nums[0], "%lld", (long long)v);
    a->argv[a->argc++] = s;
}

/* The number and names of the keys of refs; the caller appends ARGV. */
static void args_begin(struct script_args *a, const struct state_budget_ref *refs, size_t n)
{
    static const char *const nkeys[] = {"0", "1", "2"};
    a->argc = a->nnums = 0;
    a->argv[a->argc++] = nkeys[n];
    for (size_t i = 0; i < n; i++) {
        hash_key(&refs[i], a->keys[i], sizeof a->keys[0]);
        a->argv[a->argc++] = a->keys[i];
    }
}

static void on_reserve_reply(void *arg, const redisReply *reply, const char *err);

static bool send_reserve(struct state_budget_hold *h)
{
    struct script_args a;
    args_begin(&a, h->ref, h->n);
    a.argv[a.argc++] = "reserve";
    put_num(&a, h->estimate);
    a.argv[a.argc++] = h->lease;
    for (unsigned i = 0; i < h->n; i++) {
        put_num(&a, (int64_t)(h->ref[i].b->usd * STATE_NUSD + 0.5));
        put_num(&a, h->ref[i].reset_at + EXPIRE_AFTER_S);
    }
    h->cmd = redis_eval(h->link->rd, on_reserve_reply, h, &h->link->st->budget_script, a.argc,
                        a.argv);
    return h->cmd != NULL;
}

/* Keeps the figures Redis gave in the process's account, for answers that reserve nothing. */
static void remember(struct state_budget_ref *ref)
{
    struct state_acct *a = ref->acct;
    pthread_mutex_lock(&a->mu);
    a->wkind = ref->b->window;
    a->window = ref->window;
    a->spent = ref->spent;
    a->reserved = ref->reserved;
    pthread_mutex_unlock(&a->mu);
}

static bool read_reserve(struct state_budget_hold *h, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 + 2 * h->n)
        return false;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    long long refused = r->element[0]->integer;
    if (refused < 0 || refused > h->n)
        return false;
    for (unsigned i = 0; i < h->n; i++) {
        h->ref[i].spent = r->element[1 + 2 * i]->integer;
        h->ref[i].reserved = r->element[2 + 2 * i]->integer;
        remember(&h->ref[i]);
    }
    h->refused = (int)refused - 1;
    h->verdict = refused ? STATE_BUDGET_EXCEEDED : STATE_TAKEN;
    h->reserved = !refused;
    return true;
}

static void on_reserve_reply(void *arg, const redisReply *reply, const char *err)
{
    struct state_budget_hold *h = arg;
    h->cmd = NULL;
    h->pending = false;
    h->verdict = STATE_FAILED;
    if (!reply)
        h->why = err;
    else if (reply->type == REDIS_REPLY_ERROR)
        h->why = "error answer from redis";
    else if (!read_reserve(h, reply))
        h->why = "unexpected answer from the budget script";
    h->done(h);
}

bool state_budget_redis_reserve(struct state_link *l, struct state_budget_hold *h)
{
    int64_t now = state_unix_now();
    snprintf(h->lease, sizeof h->lease, "%s.%u.%llu", l->st->instance, l->worker_id,
             (unsigned long long)++l->lease_seq);
    for (unsigned i = 0; i < h->n; i++)
        h->ref[i].window = state_budget_window(h->ref[i].b->window, now, &h->ref[i].reset_at);
    h->verdict = STATE_FAILED;
    if (!redis_ready(l->rd)) {
        h->why = "not connected";
        return true;
    }
    if (!send_reserve(h)) {
        h->why = "too many commands pending";
        return true;
    }
    h->pending = true;
    return false;
}

/* Also after a reserve still on its way: the lease makes the settle a no-op in Redis when the
 * reserve never ran or refused, and exact when it did (commands of a link run in order). */
void state_budget_redis_settle(struct state_budget_hold *h, int64_t cost)
{
    struct script_args a;
    if (h->pending) {
        redis_cancel(h->cmd);
        h->cmd = NULL;
        cost = 0;
    }
    args_begin(&a, h->ref, h->n);
    a.argv[a.argc++] = "settle";
    a.argv[a.argc++] = "-";
    a.argv[a.argc++] = h->lease;
    put_num(&a, cost);
    a.argv[a.argc++] = h->model && h->ref[0].kind == BUDGET_OF_KEY ? h->model : "";
    for (unsigned i = 0; i < h->n; i++)
        put_num(&a, h->ref[i].reset_at + EXPIRE_AFTER_S);
    if (!redis_eval(h->link->rd, NULL, NULL, &h->link->st->budget_script, a.argc, a.argv))
        state_failed(h->link, "not connected");
}

/* ---- GET /v1/spend ---- */

static void read_row(struct state_spend_row *row, const redisReply *r)
{
    row->ref.spent = row->ref.reserved = 0;
    if (row->ref.kind == BUDGET_OF_KEY)
        row->models = json_object();
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        long long n = strtoll(v->str, NULL, 10);
        if (!strcmp(f->str, "spent"))
            row->ref.spent = n;
        else if (!strcmp(f->str, "reserved"))
            row->ref.reserved = n;
        else if (!strncmp(f->str, "m:", 2) && row->models)
            json_object_set_new(row->models, f->str + 2, json_integer(n));
    }
}

static void on_read_reply(void *arg, const redisReply *reply, const char *err)
{
    struct state_spend_read *rd = arg;
    rd->cmd = NULL;
    rd->failed = !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != rd->n;
    for (size_t i = 0; !rd->failed && i < rd->n; i++)
        read_row(&rd->rows[i], reply->element[i]);
    if (rd->failed)
        state_failed(rd->link, reply ? "unexpected answer from the budget script" : err);
    rd->done(rd);
}

bool state_budget_redis_read(struct state_link *l, struct state_spend_read *rd)
{
    size_t n = 0;
    int64_t now = state_unix_now();
    char count[24];
    for (size_t i = 0; i < rd->n; i++) {
        struct state_budget_ref *ref = &rd->rows[i].ref;
        ref->window = state_budget_window(ref->b->window, now, &ref->reset_at);
    }
    /* One script call per read, so the figures of all rows are of one instant. */
    char (*keys)[300] = calloc(rd->n ? rd->n : 1, sizeof *keys);
    const char **v = calloc(rd->n + 2, sizeof *v);
    bool sent = false;
    if (keys && v && redis_ready(l->rd)) {
        snprintf(count, sizeof count, "%zu", rd->n);
        v[n++] = count;
        for (size_t i = 0; i < rd->n; i++) {
            hash_key(&rd->rows[i].ref, keys[i], sizeof keys[i]);
            v[n++] = keys[i];
        }
        v[n++] = "read";
        rd->cmd = redis_eval(l->rd, on_read_reply, rd, &l->st->budget_script, (int)n, v);
        sent = rd->cmd != NULL;
    }
    free(keys);
    free(v);
    if (!sent) {
        rd->failed = true;
        state_failed(l, "not connected");
    }
    return !sent;
}
