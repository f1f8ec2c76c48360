/* conf_redact: the configured upstream secrets (api_key values, secret-looking header values)
 * and their removal from any text that leaves the gateway (errors, stream events, logs). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"

#define SECRET_MIN 4            /* shorter values would blank ordinary words */
#define REDACTED "[redacted]"

bool conf_header_is_secret(const char *name)
{
    static const char *const words[] = {"auth", "key", "token", "secret", "cookie", "password",
                                        "credential", "signature"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcasestr(name, words[i]))
            return true;
    return false;
}

/* Replaces every occurrence of s in b; 0, or -1 out of memory (b then holds the text cut
 * before the first occurrence, so a secret never survives a failure). */
static int redact_one(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < SECRET_MIN || !b->len || !memmem(b->data, b->len, s, n))
        return 0;
    struct buf out = BUF_INIT;
    const char *p = b->data, *end = b->data + b->len, *hit;
    int rc = 0;
    while (rc == 0 && (hit = memmem(p, (size_t)(end - p), s, n))) {
        rc = buf_append(&out, p, (size_t)(hit - p));
        rc = rc < 0 ? rc : buf_puts(&out, REDACTED);
        p = hit + n;
    }
    rc = rc < 0 ? rc : buf_append(&out, p, (size_t)(end - p));
    if (rc < 0) {
        b->len = (size_t)((const char *)memmem(b->data, b->len, s, n) - b->data);
        b->data[b->len] = '\0';
        buf_free(&out);
        return -1;
    }
    buf_free(b);
    *b = out;
    return 0;
}

int conf_redact(const struct conf *c, struct buf *b)
{
    int rc = 0;
    for (size_t i = 0; c && i < c->nupstreams; i++) {
        const struct conf_upstream *u = &c->upstreams[i];
        if (redact_one(b, u->api_key) < 0)
            rc = -1;
        for (size_t h = 0; h < u->nheaders; h++)
            if (conf_header_is_secret(u->headers[h].name) &&
                redact_one(b, u->headers[h].value) < 0)
                rc = -1;
    }
    return rc;
}
