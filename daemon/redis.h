/* redis: one asynchronous Redis connection per worker loop (hiredis on libev). It connects,
 * authenticates (AUTH [user] password) and selects the database by itself, reconnects with
 * exponential backoff when the link drops, and fails every command not answered in time, so
 * nothing on the loop ever waits on Redis. Users: the shared limit state and the job store. */
#ifndef LLMUX_REDIS_H
#define LLMUX_REDIS_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct redis;
struct redis_cmd;

/* A command's outcome, exactly once: reply is Redis's answer (which may itself be an error reply:
 * reply->type == REDIS_REPLY_ERROR), or NULL with err saying why there is none ("timed out",
 * "connection lost", "shutting down"). The reply belongs to hiredis: copy what you keep. */
typedef void (*redis_cb)(void *arg, const redisReply *reply, const char *err);

struct redis_opts {
    const char *url;            /* redis://[user:password@]host[:port][/db] */
    double timeout_s;           /* per command; also how long a silent link may stay up */
    double connect_timeout_s;   /* connect + AUTH + SELECT */
    const char *name;           /* for log lines, e.g. "worker 2" */
};

/* NULL with a reason in err for a URL that cannot be used (rediss://: see docs/design.md).
 * The first connection attempt starts at once; redis_ready() says when commands may be sent. */
struct redis *redis_new(struct ev_loop *loop, const struct redis_opts *o, char *err,
                        size_t errlen);
/* Clean shutdown: every command still pending gets its callback with err "shutting down",
 * the link is closed and all memory is freed. */
void redis_free(struct redis *rd);
bool redis_ready(const struct redis *rd);

/* Sends one command (binary-safe arguments). Returns a handle, after which the callback runs
 * exactly once from the loop (never from inside this call) unless redis_cancel is called first;
 * NULL when the link is not ready or too many commands are pending (the callback never runs). */
struct redis_cmd *redis_command(struct redis *rd, redis_cb cb, void *arg, int argc,
                                const char **argv, const size_t *argvlen);
/* The callback of cmd will not run; the command itself may still reach Redis. */
void redis_cancel(struct redis_cmd *cmd);

/* A Lua script Redis runs by its SHA-1. */
struct redis_script {
    const char *text;           /* static: it must outlive every command sent with it */
    char sha[41];
};
void redis_script_init(struct redis_script *s, const char *text);

/* EVALSHA of s with argv = numkeys, keys…, args… (C strings), as redis_command otherwise.
 * When Redis answers NOSCRIPT (restarted, failed over, SCRIPT FLUSH) the same command goes
 * again once as EVAL with the text, with a callback or without one and after redis_cancel
 * too: no caller sees NOSCRIPT, and no fire-and-forget step (a release, a settle) is lost. */
struct redis_cmd *redis_eval(struct redis *rd, redis_cb cb, void *arg,
                             const struct redis_script *s, int argc, const char **argv);

/* Counters for tests and metrics: commands failed by timeout, links established. */
unsigned long redis_timeouts(const struct redis *rd);
unsigned long redis_connects(const struct redis *rd);

#endif
