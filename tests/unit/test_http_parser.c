/* test_http_parser: the request-head parser and chunked decoder, rule by rule (RFC 9112),
 * with every split point of the input, since the parser is re-run on each read. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http_parser.h"

#define HEAD11 "GET / HTTP/1.1\r\nHost: a\r\n"
#define HEAD10 "GET / HTTP/1.0\r\n"

static const struct http_limits test_limits = {
    .max_request_line = 8192, .max_header_bytes = 16384, .max_headers = 64,
    .max_body = 1 << 20,
};

static struct http_head head;     /* 4 KiB of slices; shared, each test starts afresh */

/* Parses a copy of req[0..n) in a buffer of exactly n bytes, so that ASan sees a read past
 * the end. Slices in `head` are only valid until the next call. */
static char *copy;

static int parse_n_lim(const char *req, size_t n, const struct http_limits *lim, int *status)
{
    free(copy);
    copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, req, n);
    return http_parse_head(copy, n, lim, &head, status);
}

static int parse_lim(const char *req, const struct http_limits *lim, int *status)
{
    return parse_n_lim(req, strlen(req), lim, status);
}

/* Every strict prefix of a complete head needs more bytes; the whole returns its length. */
static void assert_accepts_lim(const char *req, const struct http_limits *lim)
{
    size_t n = strlen(req);
    int status = 0;

    for (size_t k = 0; k < n; k++) {
        assert_int_equal(parse_n_lim(req, k, lim, &status), -2);
        assert_int_equal(status, 0);
    }
    assert_int_equal(parse_n_lim(req, n, lim, &status), (int)n);
    assert_int_equal(status, 0);
}

static void assert_accepts(const char *req)
{
    assert_accepts_lim(req, &test_limits);
}

/* The whole is rejected with `want`; a prefix is either still undecided or already rejected
 * with the same status, so the answer never depends on how the bytes were split. */
static void assert_rejects_n_lim(const char *req, size_t n, const struct http_limits *lim,
                                 int want)
{
    int status = 0, r;

    for (size_t k = 0; k < n; k++) {
        status = 0;
        r = parse_n_lim(req, k, lim, &status);
        if (r != -2) {
            assert_int_equal(r, -1);
            assert_int_equal(status, want);
        }
    }
    status = 0;
    assert_int_equal(parse_n_lim(req, n, lim, &status), -1);
    assert_int_equal(status, want);
}

static void assert_rejects(const char *req, int want)
{
    assert_rejects_n_lim(req, strlen(req), &test_limits, want);
}

static void assert_rejects_n(const char *req, size_t n, int want)
{
    assert_rejects_n_lim(req, n, &test_limits, want);
}

/* Parses a head that must be complete, for tests that look at the parsed fields. */
static void parse_ok(const char *req)
{
    int status = 0;

    assert_int_equal(parse_lim(req, &test_limits, &status), (int)strlen(req));
}

static void assert_slice(struct http_slice s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

static void test_get_basic(void **state)
{
    (void)state;
    assert_accepts("GET /v1/models?limit=2 HTTP/1.1\r\nHost: gw.example:8420\r\n"
                   "User-Agent: curl/8.0\r\nAccept: */*\r\n\r\n");
    assert_int_equal(head.method, HTTP_GET);
    assert_slice(head.method_name, "GET");
    assert_slice(head.target, "/v1/models?limit=2");
    assert_slice(head.path, "/v1/models");
    assert_slice(head.query, "limit=2");
    assert_int_equal(head.minor_version, 1);
    assert_int_equal(head.nheaders, 3);
    assert_slice(head.headers[1].name, "User-Agent");
    assert_slice(head.headers[1].value, "curl/8.0");
    assert_slice(head.host, "gw.example:8420");
    assert_int_equal(head.content_length, -1);
    assert_false(head.chunked);
    assert_true(head.keep_alive);
    assert_false(head.expect_continue);
    /* The slices point into the caller's buffer, not into copies. */
    assert_ptr_equal(head.target.p, copy + 4);
}

static void test_methods(void **state)
{
    static const struct { const char *name; enum http_method m; } cases[] = {
        {"GET", HTTP_GET}, {"HEAD", HTTP_HEAD}, {"POST", HTTP_POST}, {"PUT", HTTP_PUT},
        {"DELETE", HTTP_DELETE}, {"OPTIONS", HTTP_OPTIONS}, {"PATCH", HTTP_PATCH},
        {"PURGE", HTTP_OTHER}, {"get", HTTP_OTHER}, {"GETS", HTTP_OTHER}, {"M-SEARCH", HTTP_OTHER},
    };
    char req[128];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req), "%s /x HTTP/1.1\r\nHost: a\r\n\r\n", cases[i].name);
        parse_ok(req);
        assert_int_equal(head.method, cases[i].m);
        assert_slice(head.method_name, cases[i].name);
    }
    assert_rejects(" / HTTP/1.1\r\nHost: a\r\n\r\n", 400);            /* empty method */
    assert_rejects("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);        /* not a token */
    assert_rejects("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);        /* HTAB is not SP */
    assert_rejects("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);        /* two SPs */
}

static void test_target_forms(void **state)
{
    (void)state;
    parse_ok("GET /a/b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_slice(head.path, "/a/b");
    assert_int_equal(head.query.len, 0);
    parse_ok("GET /a? HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_slice(head.path, "/a");
    assert_int_equal(head.query.len, 0);
    assert_ptr_equal(head.query.p, head.target.p + 3);
    parse_ok("GET /?q=1?2&%41 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_slice(head.path, "/");
    assert_slice(head.query, "q=1?2&%41");
    parse_ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_slice(head.target, "*");
    assert_rejects("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_target_bytes(void **state)
{
    (void)state;
    assert_rejects("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects_n("GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n", 30, 400);
}

static void test_version(void **state)
{
    (void)state;
    parse_ok("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(head.minor_version, 0);
    assert_null(head.host.p);
    parse_ok(HEAD11 "\r\n");
    assert_int_equal(head.minor_version, 1);
    assert_rejects("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    assert_rejects("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    assert_rejects("GET / HTTP/0.9\r\n\r\n", 505);
    assert_rejects("GET / HTTP/1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / http/1.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET /\r\nHost: a\r\n\r\n", 400);                  /* HTTP/0.9 shape */
}

static void test_leading_crlf(void **state)
{
    (void)state;
    assert_accepts("\r\n" HEAD11 "\r\n");
    assert_accepts("\r\n\r\n" HEAD11 "\r\n");
    assert_slice(head.method_name, "GET");
    assert_rejects("\r\n\r\n\r\n" HEAD11 "\r\n", 400);
    assert_rejects("\n" HEAD11 "\r\n", 400);
    assert_rejects("\r" HEAD11 "\r\n", 400);
}

static void test_bare_lf_and_cr(void **state)
{
    (void)state;
    assert_rejects("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
    assert_rejects(HEAD11 "\n", 400);
    assert_rejects("GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\n", 400);
    assert_rejects("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);
    assert_rejects(HEAD11 "X: a\rb\r\n\r\n", 400);
    assert_rejects(HEAD11 "X: a\r\r\n\r\n", 400);
    assert_rejects(HEAD11 "\rX\r\n", 400);
    assert_rejects("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_space_before_colon(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "Content-Length : 5\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding\t: chunked\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
}

static void test_obs_fold(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "X-A: 1\r\n 2\r\n\r\n", 400);
    assert_rejects(HEAD11 "X-A: 1\r\n\t2\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400);       /* first line, too */
}

static void test_field_name(void **state)
{
    (void)state;
    assert_rejects(HEAD11 ": x\r\n\r\n", 400);
    assert_rejects(HEAD11 "X-A\r\n\r\n", 400);                        /* no colon */
    assert_rejects(HEAD11 "X(A): x\r\n\r\n", 400);
    assert_rejects(HEAD11 "X@A: x\r\n\r\n", 400);
    assert_rejects(HEAD11 "X\"A: x\r\n\r\n", 400);
    assert_rejects(HEAD11 "X\xc3\xa9: x\r\n\r\n", 400);
    assert_rejects(HEAD11 "X\x7f: x\r\n\r\n", 400);
    assert_rejects_n(HEAD11 "X\0: x\r\n\r\n", sizeof(HEAD11 "X\0: x\r\n\r\n") - 1, 400);
    parse_ok(HEAD11 "x!#$%&'*+-.^_`|~09AZaz: y\r\n\r\n");
    assert_slice(head.headers[1].name, "x!#$%&'*+-.^_`|~09AZaz");
}

static void test_field_value_controls(void **state)
{
    static const char bad[] = {0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f};
    char req[64];

    (void)state;
    for (size_t i = 0; i < sizeof(bad); i++) {
        snprintf(req, sizeof(req), HEAD11 "X: a%cb\r\n\r\n", bad[i]);
        assert_rejects(req, 400);
    }
    assert_rejects_n(HEAD11 "X: a\0b\r\n\r\n", sizeof(HEAD11 "X: a\0b\r\n\r\n") - 1, 400);
    /* A control byte far into a long value, past the word-at-a-time scan's first words. */
    assert_rejects(HEAD11 "X: 0123456789abcdef0123456789abcdef\x01xyz\r\n\r\n", 400);
    assert_rejects(HEAD11 "X: 0123456789abcdef0123456789abcdef\x7fxyz\r\n\r\n", 400);
    assert_rejects(HEAD11 "X: 0123456789abcdef\x7f" "0123456789abcdef0123456789\r\n\r\n", 400);
    assert_rejects(HEAD11 "X: 0123456789abcdef\x01\x02\x03\x04\x05\x06\x07\x08" "abcd\r\n\r\n",
                   400);
}

static void test_field_value_ows(void **state)
{
    (void)state;
    parse_ok(HEAD11 "X-A: \t a\tb c \t \r\nX-B:\r\nX-C:   \r\nX-D:v\r\n"
             "X-E: caf\xc3\xa9 0123456789abcdef0123456789\r\n\r\n");
    assert_slice(head.headers[1].value, "a\tb c");
    assert_slice(head.headers[2].value, "");
    assert_slice(head.headers[3].value, "");
    assert_slice(head.headers[4].value, "v");
    assert_slice(head.headers[5].value, "caf\xc3\xa9 0123456789abcdef0123456789");
}

static void test_host_required_and_unique(void **state)
{
    (void)state;
    assert_rejects("GET / HTTP/1.1\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400);
    parse_ok("GET / HTTP/1.0\r\n\r\n");
    assert_rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", 400);
    assert_rejects("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    parse_ok("GET / HTTP/1.1\r\nhoST: a\r\n\r\n");
    assert_slice(head.host, "a");
}

static void test_host_value(void **state)
{
    static const char *good[] = {"example.com", "example.com:8420", "127.0.0.1:1", "[::1]",
                                 "[::1]:8420", "", "a-b_c~d%41", "a:"};
    static const char *bad[] = {"a b", "a/b", "a@b", "a:b", "[::1", "[]", "[::1]x", "a:1:2"};
    char req[128];

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        parse_ok(req);
        assert_slice(head.host, good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        assert_rejects(req, 400);
    }
}

static void test_content_length_valid(void **state)
{
    (void)state;
    parse_ok("POST /v1/chat HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    assert_int_equal(head.method, HTTP_POST);
    assert_int_equal(head.content_length, 42);
    parse_ok(HEAD11 "content-length:0\r\n\r\n");
    assert_int_equal(head.content_length, 0);
    parse_ok(HEAD11 "Content-Length: 007 \r\n\r\n");
    assert_int_equal(head.content_length, 7);
}

static void test_content_length_duplicate(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
    assert_rejects(HEAD11 "Content-Length: 5\r\ncontent-length: 6\r\n\r\n", 400);
}

static void test_content_length_malformed(void **state)
{
    static const char *bad[] = {"", "-1", "+1", "1 2", "abc", "1,1", "0x10", "1.0", "5a"};
    char req[128];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(req, sizeof(req), HEAD11 "Content-Length: %s\r\n\r\n", bad[i]);
        assert_rejects(req, 400);
    }
}

static void test_content_length_overflow(void **state)
{
    struct http_limits lim = test_limits;
    const char *max = HEAD11 "Content-Length: 9223372036854775807\r\n\r\n";
    const char *over = HEAD11 "Content-Length: 9223372036854775808\r\n\r\n";
    const char *huge = HEAD11 "Content-Length: 99999999999999999999999\r\n\r\n";

    (void)state;
    lim.max_body = UINT64_MAX;
    assert_accepts_lim(max, &lim);
    assert_int_equal(head.content_length, INT64_MAX);
    assert_rejects_n_lim(over, strlen(over), &lim, 400);
    assert_rejects_n_lim(huge, strlen(huge), &lim, 400);
    /* Leading zeros do not overflow: only the value counts. */
    parse_ok(HEAD11 "Content-Length: 000000000000000000000001\r\n\r\n");
    assert_int_equal(head.content_length, 1);
}

static void test_content_length_max_body(void **state)
{
    struct http_limits lim = test_limits;
    const char *at = HEAD11 "Content-Length: 1000\r\n\r\n";
    const char *over = HEAD11 "Content-Length: 1001\r\n\r\n";
    int status = 0;

    (void)state;
    lim.max_body = 1000;
    assert_int_equal(parse_lim(at, &lim, &status), (int)strlen(at));
    assert_int_equal(head.content_length, 1000);
    assert_rejects_n_lim(over, strlen(over), &lim, 413);
}

static void test_transfer_encoding_chunked(void **state)
{
    (void)state;
    parse_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_true(head.chunked);
    assert_int_equal(head.content_length, -1);
    parse_ok(HEAD11 "transfer-encoding:  CHUNKED \r\n\r\n");
    assert_true(head.chunked);
    parse_ok(HEAD11 "Transfer-Encoding: Chunked\r\n\r\n");
    assert_true(head.chunked);
}

static void test_transfer_encoding_with_content_length(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
}

static void test_transfer_encoding_http10(void **state)
{
    (void)state;
    assert_rejects(HEAD10 "Transfer-Encoding: chunked\r\n\r\n", 400);
    assert_rejects(HEAD10 "Transfer-Encoding: gzip\r\n\r\n", 400);
}

static void test_transfer_encoding_list_or_duplicate(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                   400);
    assert_rejects(HEAD11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
    assert_rejects(HEAD11 "Transfer-Encoding: chunked, chunked\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding: gzip, chunked\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding: chunked,\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding:\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding: chunked;q=1\r\n\r\n", 400);
    assert_rejects(HEAD11 "Transfer-Encoding: chun ked\r\n\r\n", 400);
}

static void test_transfer_encoding_unknown_501(void **state)
{
    (void)state;
    assert_rejects(HEAD11 "Transfer-Encoding: gzip\r\n\r\n", 501);
    assert_rejects(HEAD11 "Transfer-Encoding: identity\r\n\r\n", 501);
    assert_rejects(HEAD11 "Transfer-Encoding: xchunked\r\n\r\n", 501);
}

static void check_keep_alive(const char *req, bool want)
{
    parse_ok(req);
    assert_int_equal(head.keep_alive, want);
}

static void test_connection(void **state)
{
    (void)state;
    check_keep_alive(HEAD11 "\r\n", true);
    check_keep_alive(HEAD11 "Connection: close\r\n\r\n", false);
    check_keep_alive(HEAD11 "Connection: CLOSE\r\n\r\n", false);
    check_keep_alive(HEAD11 "Connection: keep-alive, close\r\n\r\n", false);
    check_keep_alive(HEAD11 "Connection: Upgrade\r\nConnection:close\r\n\r\n", false);
    check_keep_alive(HEAD11 "Connection: ,, te ,\r\n\r\n", true);
    check_keep_alive(HEAD11 "Connection: closed\r\n\r\n", true);
    check_keep_alive(HEAD10 "\r\n", false);
    check_keep_alive(HEAD10 "Connection: keep-alive\r\n\r\n", true);
    check_keep_alive(HEAD10 "Connection: Keep-Alive\r\n\r\n", true);
    check_keep_alive(HEAD10 "Connection: upgrade,keep-alive\r\n\r\n", true);
    check_keep_alive(HEAD10 "Connection: keep-alive\r\nConnection: close\r\n\r\n", false);
    assert_rejects(HEAD11 "Connection: clo se\r\n\r\n", 400);
    assert_rejects(HEAD11 "Connection: close;x\r\n\r\n", 400);
    assert_rejects(HEAD11 "Connection: \"close\"\r\n\r\n", 400);
}

static void test_expect(void **state)
{
    (void)state;
    parse_ok(HEAD11 "Expect: 100-continue\r\n\r\n");
    assert_true(head.expect_continue);
    parse_ok(HEAD11 "Expect: 100-Continue\r\n\r\n");
    assert_true(head.expect_continue);
    parse_ok(HEAD11 "\r\n");
    assert_false(head.expect_continue);
    parse_ok(HEAD10 "Expect: 100-continue\r\n\r\n");
    assert_false(head.expect_continue);                                 /* RFC 9110 §10.1.1 */
    assert_rejects(HEAD11 "Expect: 200-ok\r\n\r\n", 417);
    assert_rejects(HEAD11 "Expect:\r\n\r\n", 417);
    assert_rejects(HEAD11 "Expect: 100-continue, foo\r\n\r\n", 417);
}

/* A request line of exactly n bytes before its CRLF. */
static void make_line(char *out, size_t n)
{
    size_t fill = n - strlen("GET / HTTP/1.1");

    memcpy(out, "GET /", 5);
    memset(out + 5, 'a', fill);
    strcpy(out + 5 + fill, " HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_limit_request_line(void **state)
{
    struct http_limits lim = test_limits;
    char req[256];
    int status = 0;

    (void)state;
    lim.max_request_line = 100;
    make_line(req, 100);
    assert_accepts_lim(req, &lim);
    /* The CR of a line of exactly the limit is not one byte too many. */
    assert_int_equal(parse_n_lim(req, 101, &lim, &status), -2);
    make_line(req, 101);
    assert_rejects_n_lim(req, strlen(req), &lim, 414);
    /* 414 as soon as the byte past the limit arrives, long before any CRLF. */
    assert_int_equal(parse_n_lim(req, 100, &lim, &status), -2);
    assert_int_equal(parse_n_lim(req, 101, &lim, &status), -1);
    assert_int_equal(status, 414);
    memset(req, 'A', sizeof(req));
    status = 0;
    assert_int_equal(parse_n_lim(req, 101, &lim, &status), -1);
    assert_int_equal(status, 414);
    /* A bad byte before the limit is still a bad byte. */
    memcpy(req, "GET /\x01", 6);
    assert_rejects_n_lim(req, sizeof(req), &lim, 400);
    /* Leading empty lines are not part of the request line. */
    req[0] = '\r';
    req[1] = '\n';
    make_line(req + 2, 100);
    assert_accepts_lim(req, &lim);
}

static void test_limit_header_bytes(void **state)
{
    struct http_limits lim = test_limits;
    const char *req = HEAD11 "X-Pad: 0123456789\r\n\r\n";
    size_t n = strlen(req);
    int status = 0;

    (void)state;
    lim.max_header_bytes = n;
    assert_accepts_lim(req, &lim);
    lim.max_header_bytes = n - 1;
    assert_rejects_n_lim(req, n, &lim, 431);
    /* 431 as soon as the head outgrows the limit, without waiting for its blank line. */
    lim.max_header_bytes = 30;
    assert_int_equal(parse_n_lim(req, 30, &lim, &status), -2);
    assert_int_equal(parse_n_lim(req, 31, &lim, &status), -1);
    assert_int_equal(status, 431);
    /* A complete head followed by body bytes past the limit is still fine. */
    lim.max_header_bytes = strlen(HEAD11 "\r\n");
    assert_int_equal(parse_lim(HEAD11 "\r\nbody bytes", &lim, &status),
                     (int)strlen(HEAD11 "\r\n"));
}

static char *many_fields(unsigned n)
{
    char *req = malloc(64 + (size_t)n * 16);
    size_t off;

    assert_non_null(req);
    off = (size_t)sprintf(req, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (unsigned i = 1; i < n; i++)
        off += (size_t)sprintf(req + off, "X-%u: v\r\n", i);
    strcpy(req + off, "\r\n");
    return req;
}

static void test_limit_header_count(void **state)
{
    struct http_limits lim = test_limits;
    char *req;

    (void)state;
    lim.max_headers = 3;
    req = many_fields(3);
    assert_accepts_lim(req, &lim);
    assert_int_equal(head.nheaders, 3);
    free(req);
    req = many_fields(4);
    assert_rejects_n_lim(req, strlen(req), &lim, 431);
    free(req);
    /* A configured limit above the array is clamped to HTTP_MAX_HEADERS. */
    lim.max_headers = 1000;
    req = many_fields(HTTP_MAX_HEADERS);
    assert_accepts_lim(req, &lim);
    assert_int_equal(head.nheaders, HTTP_MAX_HEADERS);
    free(req);
    req = many_fields(HTTP_MAX_HEADERS + 1);
    assert_rejects_n_lim(req, strlen(req), &lim, 431);
    free(req);
}

/* An error is reported by the prefix that ends at the offending byte, not later. */
static void test_error_at_first_bad_byte(void **state)
{
    static const struct { const char *prefix; int status; } cases[] = {
        {"GET /\x01", 400}, {"GET / HTTX", 400}, {"GET / HTTP/1.1\n", 400},
        {"GET / HTTP/1.1\r\nX ", 400}, {"GET / HTTP/1.1\r\nX: \x01", 400},
        {"GET / HTTP/1.1\r\n ", 400}, {"GET / HTTP/3.0\r", 505},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n", 417},
    };
    int status;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].prefix);

        status = 0;
        assert_int_equal(parse_n_lim(cases[i].prefix, n - 1, &test_limits, &status), -2);
        assert_int_equal(parse_n_lim(cases[i].prefix, n, &test_limits, &status), -1);
        assert_int_equal(status, cases[i].status);
    }
}

static void test_incremental_valid(void **state)
{
    (void)state;
    assert_accepts("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8420\r\n"
                   "Content-Type: application/json\r\nContent-Length: 17\r\n"
                   "Authorization: Bearer sk-0123456789abcdefghijklmnopqrstuvwxyz\r\n\r\n");
    assert_int_equal(head.content_length, 17);
    assert_accepts("PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                   "Expect: 100-continue\r\n\r\n");
    assert_true(head.chunked);
    assert_accepts("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
}

static void test_pipelined(void **state)
{
    const char *two = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n";
    const char *body = "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /d";
    int status = 0, r;

    (void)state;
    r = http_parse_head(two, strlen(two), &test_limits, &head, &status);
    assert_int_equal(r, (int)(strstr(two, "GET /b") - two));
    assert_slice(head.path, "/a");
    assert_int_equal(http_parse_head(two + r, strlen(two) - (size_t)r, &test_limits, &head,
                                     &status), (int)strlen(two) - r);
    assert_slice(head.path, "/b");
    assert_slice(head.host, "b");
    r = http_parse_head(body, strlen(body), &test_limits, &head, &status);
    assert_int_equal(r, (int)(strstr(body, "hello") - body));
    assert_int_equal(head.content_length, 5);
    assert_int_equal(http_parse_head(body + r + 5, strlen(body) - (size_t)r - 5, &test_limits,
                                     &head, &status), -2);
}

static void test_find_header_and_slices(void **state)
{
    struct http_slice s = {"Keep-Alive", 10};

    (void)state;
    parse_ok(HEAD11 "X-Llmux-Timeout-Ms: 500\r\nx-empty:\r\n\r\n");
    assert_ptr_equal(http_find_header(&head, "x-llmux-timeout-ms"), &head.headers[1]);
    assert_ptr_equal(http_find_header(&head, "HOST"), &head.headers[0]);
    assert_ptr_equal(http_find_header(&head, "X-Empty"), &head.headers[2]);
    assert_null(http_find_header(&head, "X-Llmux"));
    assert_true(http_slice_eq(s, "Keep-Alive"));
    assert_false(http_slice_eq(s, "keep-alive"));
    assert_false(http_slice_eq(s, "Keep-Aliv"));
    assert_true(http_slice_caseeq(s, "keep-ALIVE"));
    assert_false(http_slice_caseeq(s, "keep-alive "));
    assert_true(http_slice_eq((struct http_slice){NULL, 0}, ""));
}

/* ---- chunked decoder ---- */

struct feed_result {
    long ret;
    int status;
    char out[4096];
    size_t out_len;
    char rest[4096];
    size_t rest_len;
};

/* Feeds in[0..n) to a fresh decoder, first `first` bytes, then pieces of `step` bytes, each
 * piece in a buffer of its own exact size; collects decoded data and the bytes after. */
static void feed(const char *in, size_t n, size_t first, size_t step, uint64_t max_body,
                 struct feed_result *res)
{
    struct http_chunked d;
    size_t off = 0;
    bool started = false;

    http_chunked_init(&d);
    memset(res, 0, sizeof(*res));
    res->ret = -2;
    while ((off < n || !started) && res->ret == -2) {
        size_t k = started ? step : first;
        char *piece;
        size_t len;

        k = k > n - off ? n - off : k;
        piece = malloc(k ? k : 1);
        assert_non_null(piece);
        memcpy(piece, in + off, k);
        len = k;
        res->ret = http_chunked_decode(&d, piece, &len, max_body, &res->status);
        assert_true(len <= k);
        if (res->ret != -1) {
            memcpy(res->out + res->out_len, piece, len);
            res->out_len += len;
        }
        if (res->ret >= 0) {
            assert_true(len + (size_t)res->ret <= k);
            memcpy(res->rest, piece + len, (size_t)res->ret);
            res->rest_len = (size_t)res->ret;
            memcpy(res->rest + res->rest_len, in + off + k, n - off - k);
            res->rest_len += n - off - k;
        }
        free(piece);
        off += k;
        started = true;
    }
}

static void test_chunked_basic(void **state)
{
    char buf[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    size_t len = sizeof(buf) - 1;
    struct http_chunked d;
    int status = 0;

    (void)state;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, buf, &len, 100, &status), 0);
    assert_int_equal(len, 11);
    assert_memory_equal(buf, "hello world", 11);
    assert_int_equal(d.total, 11);
    assert_int_equal(status, 0);
}

static void assert_chunked_every_split(const char *in, const char *data, const char *after)
{
    size_t n = strlen(in);
    struct feed_result res;

    for (size_t first = 0; first <= n; first++) {
        feed(in, n, first, n, 1 << 20, &res);     /* two pieces split at `first` */
        assert_int_equal(res.ret >= 0, 1);
        assert_int_equal(res.out_len, strlen(data));
        assert_memory_equal(res.out, data, res.out_len);
        assert_int_equal(res.rest_len, strlen(after));
        assert_memory_equal(res.rest, after, res.rest_len);
    }
    feed(in, n, 1, 1, 1 << 20, &res);            /* byte by byte */
    assert_int_equal(res.ret, 0);
    assert_int_equal(res.out_len, strlen(data));
    assert_memory_equal(res.out, data, res.out_len);
    assert_int_equal(res.rest_len, strlen(after));
    assert_memory_equal(res.rest, after, res.rest_len);
}

static void test_chunked_every_split(void **state)
{
    (void)state;
    assert_chunked_every_split("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "");
    assert_chunked_every_split("a;name=value;q=\"x y\"\r\n0123456789\r\n1 ; n\r\n!\r\n"
                               "0\r\nX-Trailer: 1\r\nX-B:\r\n\r\nGET / HTTP/1.1\r\n",
                               "0123456789!", "GET / HTTP/1.1\r\n");
    assert_chunked_every_split("0\r\n\r\n", "", "");
    assert_chunked_every_split("00A\r\n0123456789\r\n000\r\n\r\nnext", "0123456789", "next");
}

static void assert_chunked_rejects(const char *in, size_t n, uint64_t max_body, int want)
{
    struct feed_result res;

    feed(in, n, n, n, max_body, &res);
    assert_int_equal(res.ret, -1);
    assert_int_equal(res.status, want);
    feed(in, n, 1, 1, max_body, &res);
    assert_int_equal(res.ret, -1);
    assert_int_equal(res.status, want);
}

#define REJECTS(s, want) assert_chunked_rejects(s, sizeof(s) - 1, 1 << 20, want)

static void test_chunked_size_malformed(void **state)
{
    (void)state;
    REJECTS(" 5\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("0x5\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("+5\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("-5\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("g\r\n", 400);
    REJECTS("5\nhello\r\n0\r\n\r\n", 400);                  /* bare LF after the size */
    REJECTS("5\rhello\r\n0\r\n\r\n", 400);                  /* bare CR */
    REJECTS("5 \r\nhello\r\n0\r\n\r\n", 400);               /* BWS only before ';' */
    REJECTS("5\t\r\nhello\r\n0\r\n\r\n", 400);
}

static void test_chunked_size_overflow(void **state)
{
    struct feed_result res;
    const char *ok = "0000000000000001\r\nx\r\n0\r\n\r\n";

    (void)state;
    assert_chunked_rejects("00000000000000001\r\nx\r\n0\r\n\r\n", 27, UINT64_MAX, 400);
    assert_chunked_rejects("8000000000000000\r\n", 18, UINT64_MAX, 400);
    assert_chunked_rejects("ffffffffffffffffff\r\n", 20, UINT64_MAX, 400);
    feed(ok, strlen(ok), strlen(ok), 1, UINT64_MAX, &res);
    assert_int_equal(res.ret, 0);
    assert_int_equal(res.out_len, 1);
    /* 2^63 - 1 is a legal size: the decoder needs more, it does not fail. */
    feed("7fffffffffffffff\r\nabc", 21, 21, 1, UINT64_MAX, &res);
    assert_int_equal(res.ret, -2);
    assert_int_equal(res.out_len, 3);
}

static void test_chunked_crlf_after_data(void **state)
{
    (void)state;
    REJECTS("5\r\nhelloX\r\n0\r\n\r\n", 400);
    REJECTS("5\r\nhelloX\n0\r\n\r\n", 400);                  /* any 2 bytes are not a CRLF */
    REJECTS("5\r\nhello\rX0\r\n\r\n", 400);
    REJECTS("5\r\nhello\n0\r\n\r\n", 400);
    REJECTS("5\r\nhello\rX0\r\n\r\n", 400);
    REJECTS("5\r\nhello0\r\n\r\n", 400);
    REJECTS("5\r\nhello\r\n0\r\n\n", 400);                  /* bare LF ends the message */
    REJECTS("5\r\nhello\r\n0\r\n\rX", 400);
    REJECTS("5\r\nhello\r\n0\n\r\n", 400);
}

static void test_chunked_ext(void **state)
{
    char in[2 * HTTP_CHUNK_EXT_MAX];
    struct feed_result res;
    size_t n;

    (void)state;
    REJECTS("5;a\x01\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("5;a\nb\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("5;a\x7f\r\nhello\r\n0\r\n\r\n", 400);
    REJECTS("5 x;a\r\nhello\r\n0\r\n\r\n", 400);
    /* The extension, from its ';' to the CR, may be HTTP_CHUNK_EXT_MAX bytes and no more. */
    n = (size_t)sprintf(in, "1;");
    memset(in + n, 'e', HTTP_CHUNK_EXT_MAX - 1);
    n += HTTP_CHUNK_EXT_MAX - 1;
    n += (size_t)sprintf(in + n, "\r\nx\r\n0\r\n\r\n");
    feed(in, n, n, n, 100, &res);
    assert_int_equal(res.ret, 0);
    assert_int_equal(res.out_len, 1);
    memmove(in + 3, in + 2, n - 2);
    assert_chunked_rejects(in, n + 1, 100, 400);
}

static void test_chunked_trailers(void **state)
{
    char in[64 + 20 * 8];
    struct feed_result res;
    size_t n;

    (void)state;
    /* Sixteen trailer fields are accepted, a seventeenth is not. */
    n = (size_t)sprintf(in, "0\r\n");
    for (int i = 0; i < 16; i++)
        n += (size_t)sprintf(in + n, "T%02d: v\r\n", i);
    strcpy(in + n, "\r\n");
    feed(in, n + 2, n + 2, 1, 100, &res);
    assert_int_equal(res.ret, 0);
    strcpy(in + n, "T16: v\r\n\r\n");
    assert_chunked_rejects(in, n + 10, 100, 400);
}

static void test_chunked_trailers_invalid(void **state)
{
    char in[2 * HTTP_CHUNK_EXT_MAX];
    struct feed_result res;
    size_t n;

    (void)state;
    REJECTS("0\r\nX : v\r\n\r\n", 400);
    REJECTS("0\r\n X: v\r\n\r\n", 400);
    REJECTS("0\r\nX: v\r\n w\r\n\r\n", 400);
    REJECTS("0\r\n: v\r\n\r\n", 400);
    REJECTS("0\r\nX v\r\n\r\n", 400);
    REJECTS("0\r\nX: v\n\r\n", 400);
    REJECTS("0\r\nX: a\x01\r\n\r\n", 400);
    /* A trailer line of HTTP_CHUNK_EXT_MAX bytes before its CRLF passes, one more fails. */
    n = (size_t)sprintf(in, "0\r\nX:");
    memset(in + n, 'v', HTTP_CHUNK_EXT_MAX - 2);
    n += HTTP_CHUNK_EXT_MAX - 2;
    n += (size_t)sprintf(in + n, "\r\n\r\n");
    feed(in, n, n, n, 100, &res);
    assert_int_equal(res.ret, 0);
    memmove(in + 6, in + 5, n - 5);
    assert_chunked_rejects(in, n + 1, 100, 400);
}

static void test_chunked_max_body(void **state)
{
    char in[3000];
    struct feed_result res;
    size_t n;

    (void)state;
    n = (size_t)sprintf(in, "400\r\n");
    memset(in + n, 'x', 0x400);
    n += 0x400;
    n += (size_t)sprintf(in + n, "\r\n0\r\n\r\n");
    feed(in, n, n, n, 0x400, &res);
    assert_int_equal(res.ret, 0);
    assert_int_equal(res.out_len, 0x400);
    assert_chunked_rejects(in, n, 0x3ff, 413);
    /* The size alone says so: no need for its CRLF, let alone its data. */
    assert_chunked_rejects("401", 3, 0x400, 413);
    /* Over the limit across chunks. */
    n = (size_t)sprintf(in, "200\r\n");
    memset(in + n, 'x', 0x200);
    n += 0x200;
    n += (size_t)sprintf(in + n, "\r\n201\r\n");
    assert_chunked_rejects(in, n, 0x400, 413);
    in[n - 3] = '0';
    feed(in, n, n, 7, 0x400, &res);
    assert_int_equal(res.ret, -2);
}

static void test_chunked_need_more(void **state)
{
    char buf[] = "5\r\nhel";
    size_t len = sizeof(buf) - 1;
    struct http_chunked d;
    int status = 0;
    char more[] = "lo\r\n0\r\n";

    (void)state;
    http_chunked_init(&d);
    assert_int_equal(http_chunked_decode(&d, buf, &len, 100, &status), -2);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "hel", 3);
    len = sizeof(more) - 1;
    assert_int_equal(http_chunked_decode(&d, more, &len, 100, &status), -2);
    assert_int_equal(len, 2);
    assert_memory_equal(more, "lo", 2);
    assert_int_equal(d.total, 5);
    assert_int_equal(status, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_basic),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_target_forms),
        cmocka_unit_test(test_target_bytes),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_leading_crlf),
        cmocka_unit_test(test_bare_lf_and_cr),
        cmocka_unit_test(test_space_before_colon),
        cmocka_unit_test(test_obs_fold),
        cmocka_unit_test(test_field_name),
        cmocka_unit_test(test_field_value_controls),
        cmocka_unit_test(test_field_value_ows),
        cmocka_unit_test(test_host_required_and_unique),
        cmocka_unit_test(test_host_value),
        cmocka_unit_test(test_content_length_valid),
        cmocka_unit_test(test_content_length_duplicate),
        cmocka_unit_test(test_content_length_malformed),
        cmocka_unit_test(test_content_length_overflow),
        cmocka_unit_test(test_content_length_max_body),
        cmocka_unit_test(test_transfer_encoding_chunked),
        cmocka_unit_test(test_transfer_encoding_with_content_length),
        cmocka_unit_test(test_transfer_encoding_http10),
        cmocka_unit_test(test_transfer_encoding_list_or_duplicate),
        cmocka_unit_test(test_transfer_encoding_unknown_501),
        cmocka_unit_test(test_connection),
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_limit_request_line),
        cmocka_unit_test(test_limit_header_bytes),
        cmocka_unit_test(test_limit_header_count),
        cmocka_unit_test(test_error_at_first_bad_byte),
        cmocka_unit_test(test_incremental_valid),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_find_header_and_slices),
        cmocka_unit_test(test_chunked_basic),
        cmocka_unit_test(test_chunked_every_split),
        cmocka_unit_test(test_chunked_size_malformed),
        cmocka_unit_test(test_chunked_size_overflow),
        cmocka_unit_test(test_chunked_crlf_after_data),
        cmocka_unit_test(test_chunked_ext),
        cmocka_unit_test(test_chunked_trailers),
        cmocka_unit_test(test_chunked_trailers_invalid),
        cmocka_unit_test(test_chunked_max_body),
        cmocka_unit_test(test_chunked_need_more),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);

    free(copy);
    return failed;
}
