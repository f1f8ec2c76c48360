/* fuzz_http_parser: libFuzzer target for the request-head parser and the chunked decoder.
 * Beyond memory safety it checks the contract: bounds of every slice, answers that do not
 * depend on how the bytes were split across reads, and limits that hold. */
#include "daemon/http_parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Small limits, so that short inputs reach every limit. */
static const struct http_limits fuzz_small = {
    .max_request_line = 96, .max_header_bytes = 512, .max_headers = 8, .max_body = 2048,
};
static const struct http_limits fuzz_large = {
    .max_request_line = 1 << 20, .max_header_bytes = 1 << 20, .max_headers = HTTP_MAX_HEADERS,
    .max_body = UINT64_MAX,
};

#define CHECK(c) \
    do { \
        if (!(c)) { \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
            abort(); \
        } \
    } while (0)

/* Deterministic per input, as libFuzzer needs to reproduce a crash. */
static uint64_t fuzz_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t fuzz_seed(const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 0x100000001b3ull;
    return h | 1;
}

static bool status_ok(int status)
{
    return status == 400 || status == 413 || status == 414 || status == 417 ||
           status == 431 || status == 501 || status == 505;
}

static bool inside(struct http_slice s, const char *buf, size_t len)
{
    return s.p >= buf && s.len <= len && s.p - buf <= (ptrdiff_t)(len - s.len);
}

/* Parses data[0..n) from a buffer of exactly n bytes, so ASan sees any read past the end. */
static int parse_copy(const uint8_t *data, size_t n, const struct http_limits *lim,
                      struct http_head *h, int *status)
{
    char *copy = malloc(n ? n : 1);
    int r;

    CHECK(copy);
    memcpy(copy, data, n);
    r = http_parse_head(copy, n, lim, h, status);
    free(copy);
    return r;
}

/* Strictness, checked independently of the parser's tables: each line of an accepted head
 * ends in CRLF, and no control byte but HTAB is anywhere else. */
static void check_bytes(const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];

        if (c == '\r')
            CHECK(i + 1 < n && buf[i + 1] == '\n');
        else if (c == '\n')
            CHECK(i > 0 && buf[i - 1] == '\r');
        else
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
    }
}

static bool is_tchar(char c)
{
    return c > 0 && ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
                     strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_field(const struct http_header *f)
{
    for (size_t i = 0; i < f->name.len; i++)
        CHECK(is_tchar(f->name.p[i]));
    CHECK(f->name.p[f->name.len] == ':');
    for (size_t i = 0; i < f->value.len; i++)
        CHECK(f->value.p[i] != '\r' && f->value.p[i] != '\n');
    if (f->value.len > 0) {
        CHECK(f->value.p[0] != ' ' && f->value.p[0] != '\t');
        CHECK(f->value.p[f->value.len - 1] != ' ' && f->value.p[f->value.len - 1] != '\t');
    }
}

static void check_head(const char *buf, int r, const struct http_head *h,
                       const struct http_limits *lim)
{
    size_t n = (size_t)r;

    CHECK(n <= lim->max_header_bytes && n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(h->minor_version == 0 || h->minor_version == 1);
    check_bytes(buf, n);
    CHECK(h->nheaders <= lim->max_headers && h->nheaders <= HTTP_MAX_HEADERS);
    CHECK(inside(h->method_name, buf, n) && h->method_name.len > 0);
    CHECK(inside(h->target, buf, n) && h->target.len > 0);
    CHECK(h->method_name.len + h->target.len + 10 <= lim->max_request_line);
    CHECK(inside(h->path, buf, n) && h->path.p == h->target.p);
    CHECK(inside(h->query, buf, n) && h->path.len + h->query.len <= h->target.len);
    CHECK(h->target.p[0] == '/' || (h->target.len == 1 && h->method == HTTP_OPTIONS));
    CHECK(h->content_length == -1 ||
          (h->content_length >= 0 && (uint64_t)h->content_length <= lim->max_body));
    CHECK(!h->chunked || (h->content_length == -1 && h->minor_version == 1));
    CHECK(h->minor_version == 0 || inside(h->host, buf, n));
    CHECK(!h->expect_continue || h->minor_version == 1);
    for (unsigned i = 0; i < h->nheaders; i++) {
        const struct http_header *f = &h->headers[i], *found;
        char name[512];

        CHECK(inside(f->name, buf, n) && f->name.len > 0 && inside(f->value, buf, n));
        check_field(f);
        CHECK(f->name.len < sizeof(name));
        memcpy(name, f->name.p, f->name.len);
        name[f->name.len] = '\0';
        found = http_find_header(h, name);
        CHECK(found && found <= f && http_slice_caseeq(found->name, name));
    }
    CHECK((http_find_header(h, "Host") != NULL) == (h->host.p != NULL));
}

/* A prefix of the input is what an earlier read would have seen: it must need more bytes,
 * or give the same answer as the whole (a complete head, or the same error). */
static void check_prefix(const uint8_t *data, size_t k, int r, int status)
{
    struct http_head h;
    int st = 0, rk = parse_copy(data, k, &fuzz_small, &h, &st);

    if (r > 0)
        CHECK(k < (size_t)r ? rk == -2 : rk == r);
    else if (r == -2)
        CHECK(rk == -2);
    else
        CHECK(rk == -2 || (rk == -1 && st == status));
}

/* Looser limits accept whatever the small ones accept, and reject what is malformed. */
static void check_large(const uint8_t *data, size_t size, int r)
{
    static struct http_head h;
    int st = 0, rl = http_parse_head((const char *)data, size, &fuzz_large, &h, &st);

    CHECK(rl == -2 || rl == -1 || (rl > 0 && (size_t)rl <= size));
    if (r > 0)
        CHECK(rl == r);
    if (rl == -1 && st != 413 && st != 414 && st != 431)
        CHECK(r == -1);
}

struct fuzz_decoded {
    long ret;
    int status;
    char *out;
    size_t out_len;
    size_t rest_len;
    uint64_t total;
};

/* Runs a fresh decoder over body[0..n) in pieces (sizes from rng; n at once when rng is NULL),
 * each in a buffer of its own exact size, and checks every call's bounds. */
static void decode_pieces(const uint8_t *body, size_t n, uint64_t *rng, struct fuzz_decoded *res)
{
    struct http_chunked d;
    size_t off = 0;
    bool started = false;

    http_chunked_init(&d);
    res->ret = -2;
    res->out_len = res->rest_len = 0;
    while ((off < n || !started) && res->ret == -2) {
        size_t k = rng ? (size_t)(fuzz_rand(rng) % (n - off + 1)) : n;
        char *piece = malloc(k ? k : 1);
        size_t len = k;

        CHECK(piece);
        memcpy(piece, body + off, k);
        res->ret = http_chunked_decode(&d, piece, &len, fuzz_small.max_body, &res->status);
        CHECK(len <= k && d.total <= fuzz_small.max_body);
        CHECK(res->ret >= -2 && (res->ret < 0 || len + (size_t)res->ret <= k));
        CHECK(res->ret != -1 || res->status == 400 || res->status == 413);
        memcpy(res->out + res->out_len, piece, len);
        res->out_len += len;
        if (res->ret >= 0) {
            CHECK(memcmp(piece + len, body + off + k - (size_t)res->ret, (size_t)res->ret) == 0);
            res->rest_len = (size_t)res->ret + (n - off - k);
        }
        free(piece);
        off += k;
        started = true;
    }
    res->total = d.total;
}

/* Decoding must not depend on where reads split the body. */
static void check_chunked(const uint8_t *body, size_t n, uint64_t seed)
{
    struct fuzz_decoded whole, split;

    whole.out = malloc(n + 1);
    split.out = malloc(n + 1);
    CHECK(whole.out && split.out);
    decode_pieces(body, n, NULL, &whole);
    decode_pieces(body, n, &seed, &split);
    if (whole.ret == -1)
        CHECK(split.ret == -1 && split.status == whole.status);
    else
        CHECK(whole.ret == -2 ? split.ret == -2 : split.ret >= 0);
    CHECK(whole.out_len <= n && whole.out_len == split.out_len);
    CHECK(memcmp(whole.out, split.out, whole.out_len) == 0);
    CHECK(whole.ret < 0 || (size_t)whole.ret == split.rest_len);
    CHECK(whole.total == whole.out_len);
    free(whole.out);
    free(split.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http_head h;
    uint64_t seed = fuzz_seed(data, size);
    int status = 0;
    int r = http_parse_head((const char *)data, size, &fuzz_small, &h, &status);

    CHECK(r == -2 || (r == -1 && status_ok(status)) || (r > 0 && (size_t)r <= size));
    if (r > 0)
        check_head((const char *)data, r, &h, &fuzz_small);
    if (size > 0)
        check_prefix(data, size - 1, r, status);
    if (r > 0)
        check_prefix(data, (size_t)r - 1, r, status);
    for (int i = 0; i < 3; i++)
        check_prefix(data, (size_t)(fuzz_rand(&seed) % (size + 1)), r, status);
    check_large(data, size, r);
    /* A chunked body follows its head; other inputs go to the decoder whole, so that it is
     * fuzzed on every input, not only behind a valid head. */
    if (r > 0 && h.chunked)
        check_chunked(data + r, size - (size_t)r, seed);
    else
        check_chunked(data, size, seed);
    return 0;
}
