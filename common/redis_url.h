/* redis_url: parses redis://[user:password@]host[:port][/db] (and rediss://) the way redis-cli
 * reads its -u URL, so a URL that works there works here. Pure: no I/O, no DNS. */
#ifndef LLMUX_REDIS_URL_H
#define LLMUX_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_URL_HOST_MAX 255

struct redis_url {
    char host[REDIS_URL_HOST_MAX + 1];  /* name or address; an IPv6 one without brackets */
    unsigned port;                      /* default 6379 */
    char *user;                         /* NULL: AUTH with the password only (or no AUTH) */
    char *pass;                         /* NULL: no AUTH; percent-decoded */
    unsigned db;                        /* default 0: no SELECT */
    bool tls;                           /* rediss:// */
};

/* 0, or -1 with a reason in err that never contains the password or the user. */
int redis_url_parse(const char *s, struct redis_url *u, char *err, size_t errlen);
void redis_url_clear(struct redis_url *u);

#endif
