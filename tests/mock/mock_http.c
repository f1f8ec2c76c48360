/* mock_http: the mock's lenient HTTP/1.1 request reader — request line, the few headers it
 * acts on, Content-Length or chunked bodies — and the /__last rendering of a stored head. */
#include "tests/mock/mock.h"

#include <string.h>

#define HEAD_MAX (64 * 1024)
#define BODY_MAX (64LL << 20)

bool http_name_is(const char *name, size_t len, const char *lower)
{
    if (strlen(lower) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lower[i])
            return false;
    }
    return true;
}

bool http_target_is(const char *target, size_t len, const char *path)
{
    size_t n = strlen(path);
    return len >= n && memcmp(target, path, n) == 0 && (len == n || target[n] == '?');
}

bool http_next_header(const char **p, const char *end, const char **name, size_t *name_len,
                      const char **val, size_t *val_len)
{
    for (;;) {
        const char *line = *p;
        const char *eol = line < end ? memchr(line, '\n', (size_t)(end - line)) : NULL;
        if (!eol)
            return false;
        *p = eol + 1;
        const char *stop = eol > line && eol[-1] == '\r' ? eol - 1 : eol;
        if (stop == line)
            return false;
        const char *colon = memchr(line, ':', (size_t)(stop - line));
        if (!colon)
            continue;
        const char *v = colon + 1;
        while (v < stop && (*v == ' ' || *v == '\t'))
            v++;
        while (stop > v && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        *name = line;
        *name_len = (size_t)(colon - line);
        *val = v;
        *val_len = (size_t)(stop - v);
        return true;
    }
}

static int parse_content_length(const char *v, size_t n, long long *out)
{
    long long x = 0;
    if (n == 0)
        return -400;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -400;
        x = x * 10 + (v[i] - '0');
        if (x > BODY_MAX)
            return -413;
    }
    *out = x;
    return 0;
}

static int req_headers(struct mock_req *q, const char *d, const char *p, const char *end)
{
    const char *name, *v;
    size_t nlen, vlen;
    while (http_next_header(&p, end, &name, &nlen, &v, &vlen)) {
        int rc = 0;
        if (http_name_is(name, nlen, "content-length"))
            rc = parse_content_length(v, vlen, &q->content_length);
        else if (http_name_is(name, nlen, "transfer-encoding"))
            q->chunked = vlen >= 7 && http_name_is(v + vlen - 7, 7, "chunked");
        else if (http_name_is(name, nlen, "connection"))
            q->keep_alive = http_name_is(v, vlen, "keep-alive") ||
                            (q->keep_alive && !http_name_is(v, vlen, "close"));
        else if (http_name_is(name, nlen, "expect"))
            q->expect = http_name_is(v, vlen, "100-continue");
        else if (http_name_is(name, nlen, "x-mock")) {
            q->xmock = true;
            q->xmock_off = (size_t)(v - d);
            q->xmock_len = vlen;
        } else if (http_name_is(name, nlen, "x-api-key"))
            q->api_key = vlen > 0;
        else if (http_name_is(name, nlen, "anthropic-version"))
            q->version = vlen > 0;
        if (rc < 0)
            return rc;
    }
    return 1;
}

/* Parses the request line and headers once the blank line is in; >0 done, 0 more, <0 status. */
static int req_head(struct mock_req *q, struct buf *in)
{
    while (in->len >= 2 && in->data[0] == '\r' && in->data[1] == '\n')
        buf_consume(in, 2);  /* RFC 9112 2.2: ignore empty lines before a request */
    const char *d = in->data, *e = in->len ? memmem(d, in->len, "\r\n\r\n", 4) : NULL;
    if (!e)
        return in->len > HEAD_MAX ? -431 : 0;
    q->head_len = (size_t)(e + 4 - d);
    if (q->head_len > HEAD_MAX)
        return -431;
    const char *eol = memchr(d, '\r', q->head_len);
    const char *sp1 = memchr(d, ' ', (size_t)(eol - d));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2 || sp1 == d || sp2 == sp1 + 1 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7))
        return -400;
    q->method_len = (size_t)(sp1 - d);
    q->target_off = (size_t)(sp1 + 1 - d);
    q->target_len = (size_t)(sp2 - sp1 - 1);
    q->http10 = sp2[8] == '0';
    q->keep_alive = !q->http10;
    int rc = req_headers(q, d, eol + 2, d + q->head_len);
    if (q->chunked) {
        q->content_length = 0;
        q->chunk_pos = q->head_len;
    }
    return rc;
}

/* Decodes the chunks that are complete; 1 when the last chunk and trailers are in. */
static int req_chunked(struct mock_req *q, struct buf *in, struct buf *out)
{
    for (;;) {
        const char *d = in->data, *p = d + q->chunk_pos, *end = d + in->len;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return end - p > 1024 ? -400 : 0;
        size_t size = 0, digits = 0;
        for (; p < eol && digits < 16; p++, digits++) {
            int h = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
                  : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
            if (h < 0)
                break;
            size = size * 16 + (size_t)h;
        }
        if (digits == 0 || digits == 16 || (*p != '\r' && *p != ';'))
            return -400;
        if (size == 0) {
            for (const char *t = eol + 1; ; t = eol + 1) {
                eol = memchr(t, '\n', (size_t)(end - t));
                if (!eol)
                    return 0;
                if (eol == t || (eol == t + 1 && *t == '\r')) {
                    q->total = (size_t)(eol + 1 - d);
                    return 1;
                }
            }
        }
        if (size > (size_t)BODY_MAX || out->len + size > (size_t)BODY_MAX)
            return -413;
        if ((size_t)(end - eol - 1) < size + 2)
            return 0;
        if (buf_append(out, eol + 1, size) < 0)
            return -413;
        q->chunk_pos = (size_t)(eol + 1 + size + 2 - d);
    }
}

int mock_req_parse(struct mock_req *q, struct buf *in, struct buf *dechunked)
{
    if (!q->head_len) {
        int rc = req_head(q, in);
        if (rc <= 0)
            return rc;
    }
    if (q->chunked)
        return req_chunked(q, in, dechunked);
    if (in->len - q->head_len < (size_t)q->content_length)
        return 0;
    q->total = q->head_len + (size_t)q->content_length;
    q->expect = false;
    return 1;
}

int mock_last_json(struct buf *b, const struct buf *head, const struct buf *body)
{
    const char *h = head->data, *end = h + head->len, *name, *v;
    const char *sp1 = memchr(h, ' ', head->len);
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    const char *p = (const char *)memchr(h, '\n', head->len) + 1;
    size_t nlen, vlen;
    buf_puts(b, "{\"method\":\"");
    buf_json_escape(b, h, (size_t)(sp1 - h));
    buf_puts(b, "\",\"path\":\"");
    buf_json_escape(b, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    buf_puts(b, "\",\"headers\":{");
    for (bool first = true; http_next_header(&p, end, &name, &nlen, &v, &vlen); first = false) {
        buf_puts(b, first ? "\"" : ",\"");
        for (size_t i = 0; i < nlen; i++) {
            char ch = name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] - 'A' + 'a') : name[i];
            buf_json_escape(b, &ch, 1);
        }
        buf_puts(b, "\":\"");
        buf_json_escape(b, v, vlen);
        buf_puts(b, "\"");
    }
    buf_puts(b, "},\"body\":\"");
    buf_json_escape(b, body->data ? body->data : "", body->len);
    return buf_puts(b, "\"}");
}
