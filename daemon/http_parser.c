/* http_parser: strict request-head parser and in-place chunked decoder (RFC 9110/9112).
 * One pass over the bytes, no allocation, slices into the caller's buffer; libc only. */
#include "daemon/http_parser.h"

#include <limits.h>
#include <string.h>

/* RFC 9112 §2.2 asks servers to ignore at least one empty line before the request line; we
 * skip up to two and treat a third as a broken client (400). */
#define HTTP_LEADING_CRLF_MAX 2
/* Trailer fields are dropped, so they only need bounds: count, and bytes per line. */
#define HTTP_TRAILERS_MAX 16
#define HTTP_TRAILER_LINE_MAX HTTP_CHUNK_EXT_MAX
#define HTTP_CHUNK_DIGITS_MAX 16

/* Byte classes. T: tchar (RFC 9110 §5.6.2), field names and methods. V: field-value byte
 * (VCHAR, SP, HTAB, obs-text). U: request-target byte; anything visible but '#', since a
 * fragment never belongs in a request and raw non-ASCII must be percent-encoded (RFC 3986).
 * H: reg-name byte of a Host (unreserved, pct-encoded, sub-delims). */
enum { T = 1, V = 2, U = 4, H = 8 };

static const unsigned char http_class[256] = {
    /* 00 */ 0, 0, 0, 0, 0, 0, 0, 0,
    /* 08 */ 0, V, 0, 0, 0, 0, 0, 0,
    /* 10 */ 0, 0, 0, 0, 0, 0, 0, 0,
    /* 18 */ 0, 0, 0, 0, 0, 0, 0, 0,
    /* 20 */ V, T|V|U|H, V|U, T|V, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 28 */ V|U|H, V|U|H, T|V|U|H, T|V|U|H, V|U|H, T|V|U|H, T|V|U|H, V|U,
    /* 30 */ T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 38 */ T|V|U|H, T|V|U|H, V|U, V|U|H, V|U, V|U|H, V|U, V|U,
    /* 40 */ V|U, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 48 */ T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 50 */ T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 58 */ T|V|U|H, T|V|U|H, T|V|U|H, V|U, V|U, V|U, T|V|U, T|V|U|H,
    /* 60 */ T|V|U, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 68 */ T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 70 */ T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H, T|V|U|H,
    /* 78 */ T|V|U|H, T|V|U|H, T|V|U|H, V|U, T|V|U, V|U, T|V|U|H, 0,
    /* 80 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* 90 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* a0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* b0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* c0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* d0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* e0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
    /* f0 */ V, V, V, V, V, V, V, V, V, V, V, V, V, V, V, V,
};

/* Decoder states; the numbering is private, http_chunked_init() starts at CH_SIZE. */
enum {
    CH_SIZE, CH_SIZE_BWS, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF,
    CH_TRAILER, CH_TRAILER_NAME, CH_TRAILER_VALUE, CH_TRAILER_LF, CH_END_LF, CH_DONE
};

/* What the framing fields said so far, to catch duplicates and conflicts. */
struct http_seen {
    bool content_length, transfer_encoding, host, close, keep_alive;
};

static int head_parse(const char *buf, const char *end, const struct http_limits *lim,
                      struct http_head *h, int *status);
static int reqline_parse(const char **pp, const char *end, size_t cap, struct http_head *h,
                         int *status);
static int fields_parse(const char **pp, const char *end, const struct http_limits *lim,
                        struct http_head *h, struct http_seen *seen, int *status);
static int field_parse(const char **pp, const char *end, struct http_header *f, int *status);
static int field_apply(struct http_head *h, const struct http_header *f,
                       const struct http_limits *lim, struct http_seen *seen, int *status);
static const char *value_end(const char *p, const char *end);
static int chunked_step(struct http_chunked *d, unsigned char c, uint64_t max_body, int *status);

static int fail(int *status, int code)
{
    *status = code;
    return -1;
}

static bool is_class(char c, unsigned cls)
{
    return (http_class[(unsigned char)c] & cls) != 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_token(struct http_slice s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_class(s.p[i], T))
            return false;
    return true;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

static bool caseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

/* Length first: most field names are rejected without looking at a byte. */
#define NAME_IS(s, lit) ((s).len == sizeof(lit) - 1 && caseeq((s).p, lit, sizeof(lit) - 1))

int http_parse_head(const char *buf, size_t len, const struct http_limits *lim,
                    struct http_head *head, int *status)
{
    /* Parsing only the first max_header_bytes means a head that has not ended by then is
     * known to be too long as soon as one more byte arrives, whatever follows. */
    size_t cap = lim->max_header_bytes < INT_MAX ? lim->max_header_bytes : INT_MAX;
    int r = len == 0 ? -2 : head_parse(buf, buf + (len < cap ? len : cap), lim, head, status);

    if (r == -2 && len > cap)
        return fail(status, 431);
    return r;
}

static int head_parse(const char *buf, const char *end, const struct http_limits *lim,
                      struct http_head *h, int *status)
{
    struct http_seen seen = {0};
    const char *p = buf;
    int r;

    h->nheaders = 0;
    h->content_length = -1;
    h->chunked = h->keep_alive = h->expect_continue = false;
    h->host = (struct http_slice){NULL, 0};
    for (int i = 0; i < HTTP_LEADING_CRLF_MAX && p < end && *p == '\r'; i++) {
        if (p + 1 == end)
            return -2;
        if (p[1] != '\n')
            return fail(status, 400);
        p += 2;
    }
    if ((r = reqline_parse(&p, end, lim->max_request_line, h, status)) != 0)
        return r;
    if ((r = fields_parse(&p, end, lim, h, &seen, status)) != 0)
        return r;
    if (h->minor_version == 1 && !seen.host)
        return fail(status, 400);           /* RFC 9112 §3.2 */
    h->keep_alive = !seen.close && (h->minor_version == 1 || seen.keep_alive);
    return (int)(p - buf);
}

/* The scan of the request line stopped at p, either at the end of the bytes or at the byte
 * that would make the line longer than allowed. A CR there ends a line that was cut short. */
static int reqline_cut(const char *p, const char *end, int *status)
{
    if (p == end)
        return -2;
    return fail(status, *p == '\r' ? 400 : 414);
}

/* Methods are case-sensitive (RFC 9110 §9.1): "get" is a valid token but not GET. */
static enum http_method method_lookup(struct http_slice m)
{
    static const struct { char name[8]; size_t len; enum http_method method; } known[] = {
        {"GET", 3, HTTP_GET}, {"POST", 4, HTTP_POST}, {"HEAD", 4, HTTP_HEAD},
        {"PUT", 3, HTTP_PUT}, {"DELETE", 6, HTTP_DELETE}, {"OPTIONS", 7, HTTP_OPTIONS},
        {"PATCH", 5, HTTP_PATCH},
    };

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (m.len == known[i].len && memcmp(m.p, known[i].name, m.len) == 0)
            return known[i].method;
    return HTTP_OTHER;
}

static void target_set(struct http_head *h, const char *t, const char *end)
{
    const char *q = memchr(t, '?', (size_t)(end - t));

    h->target = (struct http_slice){t, (size_t)(end - t)};
    if (!q) {
        h->path = h->target;
        h->query = (struct http_slice){end, 0};
        return;
    }
    h->path = (struct http_slice){t, (size_t)(q - t)};
    h->query = (struct http_slice){q + 1, (size_t)(end - q - 1)};
}

static bool version_byte_ok(int i, char c)
{
    if (i < 5)
        return c == "HTTP/"[i];
    return i == 6 ? c == '.' : is_digit(c);
}

/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 §3). `stop` caps the
 * bytes the line may have before its CR, so an over-long line is 414 before its CRLF comes. */
static int reqline_parse(const char **pp, const char *end, size_t cap, struct http_head *h,
                         int *status)
{
    const char *s = *pp, *p = s, *t;
    const char *stop = (size_t)(end - s) > cap ? s + cap : end;

    while (p < stop && is_class(*p, T))
        p++;
    if (p == stop)
        return reqline_cut(p, end, status);
    if (*p != ' ' || p == s)
        return fail(status, 400);
    h->method_name = (struct http_slice){s, (size_t)(p - s)};
    h->method = method_lookup(h->method_name);
    t = ++p;
    if (p == stop)
        return reqline_cut(p, end, status);
    if (*p == '*' && h->method == HTTP_OPTIONS) {
        p++;                                /* asterisk-form, RFC 9112 §3.2.4 */
    } else if (*p == '/') {
        while (++p < stop && is_class(*p, U))
            ;
    } else {
        return fail(status, 400);           /* absolute- and authority-form are for proxies */
    }
    if (p == stop)
        return reqline_cut(p, end, status);
    if (*p != ' ')
        return fail(status, 400);
    target_set(h, t, p++);
    for (int i = 0; i < 8; i++, p++) {
        if (p == stop)
            return reqline_cut(p, end, status);
        if (!version_byte_ok(i, *p))
            return fail(status, 400);
    }
    if (p == end)
        return -2;
    if (*p != '\r')
        return fail(status, p == stop ? 414 : 400);
    if (p[-3] != '1' || (p[-1] != '0' && p[-1] != '1'))
        return fail(status, 505);           /* well-formed, but not a version we speak */
    if (p + 1 == end)
        return -2;
    if (p[1] != '\n')
        return fail(status, 400);
    h->minor_version = p[-1] - '0';
    *pp = p + 2;
    return 0;
}

static int fields_parse(const char **pp, const char *end, const struct http_limits *lim,
                        struct http_head *h, struct http_seen *seen, int *status)
{
    unsigned max = lim->max_headers < HTTP_MAX_HEADERS ? lim->max_headers : HTTP_MAX_HEADERS;
    const char *p = *pp;
    int r;

    for (;;) {
        if (p == end)
            return -2;
        if (*p == '\r')
            break;
        if (h->nheaders == max)
            return fail(status, 431);
        if ((r = field_parse(&p, end, &h->headers[h->nheaders], status)) != 0)
            return r;
        if (field_apply(h, &h->headers[h->nheaders++], lim, seen, status) < 0)
            return -1;
    }
    if (p + 1 == end)
        return -2;
    if (p[1] != '\n')
        return fail(status, 400);
    *pp = p + 2;
    return 0;
}

/* field-line = field-name ":" OWS field-value OWS CRLF (RFC 9112 §5). A name that does not
 * run straight into its colon (whitespace, obs-fold, empty, non-token byte) is 400. */
static int field_parse(const char **pp, const char *end, struct http_header *f, int *status)
{
    const char *s = *pp, *p = s, *v, *e;

    while (p < end && is_class(*p, T))
        p++;
    if (p == end)
        return -2;
    if (*p != ':' || p == s)
        return fail(status, 400);
    f->name = (struct http_slice){s, (size_t)(p - s)};
    while (++p < end && is_ows(*p))
        ;
    v = p;
    p = value_end(p, end);
    if (p == end)
        return -2;
    if (*p != '\r')
        return fail(status, 400);           /* bare LF or a control byte */
    if (p + 1 == end)
        return -2;
    if (p[1] != '\n')
        return fail(status, 400);
    for (e = p; e > v && is_ows(e[-1]); e--)
        ;
    f->value = (struct http_slice){v, (size_t)(e - v)};
    *pp = p + 2;
    return 0;
}

/* Returns the first byte at or after p that may not appear in a field value. Values are the
 * bulk of a head (tokens, cookies), so eight bytes are checked at once for anything below
 * 0x20 or equal to 0x7f; a word holding such a byte (usually the CR) is finished bytewise. */
static const char *value_end(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;

    while (end - p >= 8) {
        uint64_t x, del;

        memcpy(&x, p, 8);
        del = x ^ (ones * 0x7f);
        if (((x - ones * 0x20) & ~x & highs) | ((del - ones) & ~del & highs))
            break;
        p += 8;
    }
    while (p < end && is_class(*p, V))
        p++;
    return p;
}

static int content_length_apply(struct http_head *h, struct http_slice v, uint64_t max_body,
                                int *status)
{
    uint64_t n = 0;

    if (v.len == 0)
        return fail(status, 400);
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned)(v.p[i] - '0');

        if (!is_digit(v.p[i]) || n > ((uint64_t)INT64_MAX - d) / 10)
            return fail(status, 400);
        n = n * 10 + d;
    }
    if (n > max_body)
        return fail(status, 413);
    h->content_length = (int64_t)n;
    return 0;
}

/* Only a lone `chunked` frames a request we can read; a list could hide a coding applied
 * after chunked (RFC 9112 §6.3), and a single unknown coding is 501 (§6.1). */
static int transfer_encoding_apply(struct http_head *h, struct http_slice v, int *status)
{
    if (http_slice_caseeq(v, "chunked")) {
        h->chunked = true;
        return 0;
    }
    return fail(status, is_token(v) ? 501 : 400);
}

/* Host = uri-host [ ":" port ] (RFC 9110 §7.2); the uri-host may be empty (RFC 9112 §3.2). */
static bool host_valid(struct http_slice v)
{
    const char *p = v.p, *end = v.p + v.len;

    if (p < end && *p == '[') {
        const char *q = memchr(p, ']', v.len);

        if (!q || q == p + 1)
            return false;
        while (++p < q)
            if (!is_class(*p, H) && *p != ':')
                return false;
        p++;
    } else {
        while (p < end && is_class(*p, H))
            p++;
    }
    if (p == end)
        return true;
    if (*p != ':')
        return false;
    while (++p < end)
        if (!is_digit(*p))
            return false;
    return true;
}

/* Connection = #connection-option; empty list elements are allowed (RFC 9110 §5.6.1). */
static int connection_apply(struct http_slice v, struct http_seen *seen, int *status)
{
    const char *p = v.p, *end = v.p + v.len;

    while (p < end) {
        struct http_slice tok;

        if (*p == ',' || is_ows(*p)) {
            p++;
            continue;
        }
        tok.p = p;
        while (p < end && is_class(*p, T))
            p++;
        tok.len = (size_t)(p - tok.p);
        while (p < end && is_ows(*p))
            p++;
        if (p < end && *p != ',')
            return fail(status, 400);       /* also a non-token byte, which stopped the scan */
        if (http_slice_caseeq(tok, "close"))
            seen->close = true;
        else if (http_slice_caseeq(tok, "keep-alive"))
            seen->keep_alive = true;
    }
    return 0;
}

/* The fields that decide framing and routing are checked as soon as their line is complete;
 * every duplicate or conflict among them is a smuggling shape and ends the request. */
static int field_apply(struct http_head *h, const struct http_header *f,
                       const struct http_limits *lim, struct http_seen *seen, int *status)
{
    struct http_slice n = f->name, v = f->value;

    if (NAME_IS(n, "content-length")) {
        if (seen->content_length || seen->transfer_encoding)
            return fail(status, 400);
        seen->content_length = true;
        return content_length_apply(h, v, lim->max_body, status);
    }
    if (NAME_IS(n, "transfer-encoding")) {
        if (seen->transfer_encoding || seen->content_length || h->minor_version == 0)
            return fail(status, 400);
        seen->transfer_encoding = true;
        return transfer_encoding_apply(h, v, status);
    }
    if (NAME_IS(n, "host")) {
        if (seen->host || !host_valid(v))
            return fail(status, 400);
        seen->host = true;
        h->host = v;
        return 0;
    }
    if (NAME_IS(n, "connection"))
        return connection_apply(v, seen, status);
    if (NAME_IS(n, "expect")) {
        /* 417 for any other expectation; an HTTP/1.0 client cannot mean 100-continue
         * (RFC 9110 §10.1.1), so it is ignored there. */
        if (!http_slice_caseeq(v, "100-continue"))
            return fail(status, 417);
        h->expect_continue = h->minor_version == 1;
    }
    return 0;
}

const struct http_header *http_find_header(const struct http_head *head, const char *name)
{
    for (unsigned i = 0; i < head->nheaders; i++)
        if (http_slice_caseeq(head->headers[i].name, name))
            return &head->headers[i];
    return NULL;
}

bool http_slice_eq(struct http_slice s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && (n == 0 || memcmp(s.p, lit, n) == 0);
}

bool http_slice_caseeq(struct http_slice s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && caseeq(s.p, lit, n);
}

void http_chunked_init(struct http_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->state = CH_SIZE;
}

/* Data bytes move to the front with one memmove per chunk piece; only the framing bytes go
 * through the per-byte state machine. */
long http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, uint64_t max_body,
                         int *status)
{
    size_t src = 0, dst = 0, n = *len, rest;

    while (src < n && d->state != CH_DONE) {
        if (d->state == CH_DATA) {
            size_t k = n - src < d->remaining ? n - src : (size_t)d->remaining;

            memmove(buf + dst, buf + src, k);
            dst += k;
            src += k;
            d->remaining -= k;
            d->total += k;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
        } else if (chunked_step(d, (unsigned char)buf[src++], max_body, status) < 0) {
            *len = dst;
            return -1;
        }
    }
    *len = dst;
    if (d->state != CH_DONE)
        return -2;
    rest = n - src;
    if (rest > 0)
        memmove(buf + dst, buf + src, rest);
    return (long)rest;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)lower((char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* chunk-size = 1*HEXDIG, below 2^63; the body limit is checked with every digit, since more
 * digits only make the size larger. In this state ext_len counts the digits. */
static int chunk_size_step(struct http_chunked *d, unsigned char c, uint64_t max_body,
                           int *status)
{
    int x = hex_value(c);

    if (x >= 0) {
        if (d->ext_len == HTTP_CHUNK_DIGITS_MAX || d->remaining >> 59)
            return fail(status, 400);
        d->remaining = d->remaining << 4 | (unsigned)x;
        d->ext_len++;
        if (d->total > max_body || d->remaining > max_body - d->total)
            return fail(status, 413);
        return 0;
    }
    if (d->ext_len == 0)
        return fail(status, 400);
    d->ext_len = 1;
    if (c == ';')
        d->state = CH_EXT;
    else if (is_ows((char)c))
        d->state = CH_SIZE_BWS;
    else if (c == '\r')
        d->state = CH_SIZE_LF;
    else
        return fail(status, 400);
    return 0;
}

/* Trailer lines: field-name ":" field-value CRLF, bounded in count and length, then dropped. */
static int trailer_step(struct http_chunked *d, unsigned char c, int *status)
{
    switch (d->state) {
    case CH_TRAILER:
        if (c == '\r') {
            d->state = CH_END_LF;
            return 0;
        }
        if (!is_class((char)c, T) || ++d->trailers > HTTP_TRAILERS_MAX)
            return fail(status, 400);
        d->ext_len = 1;
        d->state = CH_TRAILER_NAME;
        return 0;
    case CH_TRAILER_NAME:
        if (c == ':')
            d->state = CH_TRAILER_VALUE;
        else if (!is_class((char)c, T))
            return fail(status, 400);
        break;
    default:                                /* CH_TRAILER_VALUE */
        if (c == '\r') {
            d->state = CH_TRAILER_LF;
            return 0;
        }
        if (!is_class((char)c, V))
            return fail(status, 400);
        break;
    }
    return ++d->ext_len > HTTP_TRAILER_LINE_MAX ? fail(status, 400) : 0;
}

/* Every framing byte must be exactly where RFC 9112 §7.1 puts it: the CRLF after chunk data
 * is checked, never skipped, and a bare LF or CR anywhere is 400. */
static int chunked_step(struct http_chunked *d, unsigned char c, uint64_t max_body, int *status)
{
    switch (d->state) {
    case CH_SIZE:
        return chunk_size_step(d, c, max_body, status);
    case CH_SIZE_BWS:                       /* BWS is allowed only before a ';' */
        if (c == ';')
            d->state = CH_EXT;
        else if (!is_ows((char)c))
            return fail(status, 400);
        return ++d->ext_len > HTTP_CHUNK_EXT_MAX ? fail(status, 400) : 0;
    case CH_EXT:                            /* chunk-ext is ignored (§7.1.1), only bounded */
        if (c == '\r') {
            d->state = CH_SIZE_LF;
            return 0;
        }
        if (!is_class((char)c, V) || ++d->ext_len > HTTP_CHUNK_EXT_MAX)
            return fail(status, 400);
        return 0;
    case CH_SIZE_LF:
        if (c != '\n')
            return fail(status, 400);
        d->ext_len = 0;
        d->state = d->remaining ? CH_DATA : CH_TRAILER;
        return 0;
    case CH_DATA_CR:
        d->state = CH_DATA_LF;
        return c == '\r' ? 0 : fail(status, 400);
    case CH_DATA_LF:
        d->state = CH_SIZE;
        return c == '\n' ? 0 : fail(status, 400);
    case CH_TRAILER_LF:
        d->state = CH_TRAILER;
        return c == '\n' ? 0 : fail(status, 400);
    case CH_END_LF:
        d->state = CH_DONE;
        return c == '\n' ? 0 : fail(status, 400);
    default:
        return trailer_step(d, c, status);
    }
}
