/* redis_url: the Redis URL grammar redis-cli accepts (userinfo split at the first ':',
 * percent-decoded; a lone userinfo is the password), with strict bounds on every part. */
#include "common/redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes p[0..n) into a new string; NULL on a bad escape, a NUL byte or no memory. */
static char *decode(const char *p, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            *o++ = p[i];
            continue;
        }
        int hi = i + 2 < n ? hexval(p[i + 1]) : -1;
        int lo = hi >= 0 ? hexval(p[i + 2]) : -1;
        if (lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi << 4 | lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

static int parse_uint(const char *p, size_t n, unsigned long max, unsigned *out)
{
    unsigned long v = 0;
    if (!n || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int fail(struct redis_url *u, char *err, size_t errlen, const char *what)
{
    redis_url_clear(u);
    snprintf(err, errlen, "%s", what);
    return -1;
}

static int parse_userinfo(const char *p, size_t n, struct redis_url *u)
{
    const char *colon = memchr(p, ':', n);
    if (colon) {
        size_t ulen = (size_t)(colon - p);
        if (ulen && !(u->user = decode(p, ulen)))
            return -1;
        p = colon + 1;
        n -= ulen + 1;
    }
    return (u->pass = decode(p, n)) ? 0 : -1;
}

/* host[:port] or [v6]:port; an empty host is 127.0.0.1, as in redis-cli. */
static int parse_hostport(const char *p, const char *end, struct redis_url *u)
{
    const char *host = p, *hend, *port = NULL;
    if (p < end && *p == '[') {
        host = p + 1;
        if (!(hend = memchr(host, ']', (size_t)(end - host))))
            return -1;
        if (hend + 1 < end && hend[1] != ':')
            return -1;
        port = hend + 1 < end ? hend + 2 : NULL;
    } else {
        hend = memchr(p, ':', (size_t)(end - p));
        if (hend)
            port = hend + 1;
        else
            hend = end;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen > REDIS_URL_HOST_MAX)
        return -1;
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    if (!hlen)
        strcpy(u->host, "127.0.0.1");
    for (const char *q = u->host; *q; q++)
        if (strchr("@/%[]?#", *q) || (unsigned char)*q <= ' ')
            return -1;
    if (port && (parse_uint(port, (size_t)(end - port), 65535, &u->port) || !u->port))
        return -1;
    return 0;
}

int redis_url_parse(const char *s, struct redis_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!strncmp(s, "redis://", 8)) {
        s += 8;
    } else if (!strncmp(s, "rediss://", 9)) {
        s += 9;
        u->tls = true;
    } else {
        return fail(u, err, errlen, "expected a redis:// or rediss:// URL");
    }
    const char *end = s + strlen(s), *slash = memchr(s, '/', (size_t)(end - s));
    const char *aend = slash ? slash : end, *at = NULL;
    for (const char *q = s; q < aend; q++)
        if (*q == '@')
            at = q;             /* the last '@': a password may hold an unescaped one */
    if (at && parse_userinfo(s, (size_t)(at - s), u) < 0)
        return fail(u, err, errlen, "bad user or password in the URL (use %XX escapes)");
    if (parse_hostport(at ? at + 1 : s, aend, u) < 0)
        return fail(u, err, errlen, "expected host[:port] (port 1-65535) after redis://");
    if (slash && slash + 1 < end && parse_uint(slash + 1, (size_t)(end - slash - 1),
                                               0x7fffffff, &u->db) < 0)
        return fail(u, err, errlen, "expected a database number after the host, e.g. /0");
    return 0;
}

void redis_url_clear(struct redis_url *u)
{
    if (u->pass)
        memset(u->pass, 0, strlen(u->pass));
    free(u->user);
    free(u->pass);
    u->user = u->pass = NULL;
}
