/* http_parser: strict, zero-copy HTTP/1.1 request parser (RFC 9110/9112). Depends on libc only.
 * The head is parsed into slices of the caller's buffer; bodies are framed by the chunked decoder.
 * Anything ambiguous (smuggling shapes) is an error: the caller answers *status and closes. */
#ifndef LLMUX_HTTP_PARSER_H
#define LLMUX_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 128    /* hard ceiling; the configured limit is below it */

enum http_method {
    HTTP_OTHER = 0, HTTP_GET, HTTP_HEAD, HTTP_POST, HTTP_PUT, HTTP_DELETE, HTTP_OPTIONS, HTTP_PATCH
};

struct http_slice {
    const char *p;
    size_t len;
};

struct http_header {
    struct http_slice name;     /* as sent; compare case-insensitively */
    struct http_slice value;    /* leading/trailing OWS stripped */
};

struct http_limits {
    size_t max_request_line;    /* longer request line → 414 */
    size_t max_header_bytes;    /* whole head (request line + fields + CRLFs) longer → 431 */
    unsigned max_headers;       /* more fields → 431 (≤ HTTP_MAX_HEADERS) */
    uint64_t max_body;          /* Content-Length above it → 413 */
};

struct http_head {
    enum http_method method;
    struct http_slice method_name;
    struct http_slice target;   /* request-target as sent (origin-form "/path?query") */
    struct http_slice path;     /* target up to '?' */
    struct http_slice query;    /* after '?', may be empty */
    int minor_version;          /* 0 or 1 */
    struct http_header headers[HTTP_MAX_HEADERS];
    unsigned nheaders;

    /* Derived from the fields, validated: */
    int64_t content_length;     /* -1 when absent */
    bool chunked;               /* Transfer-Encoding: chunked */
    bool keep_alive;            /* from version and Connection */
    bool expect_continue;       /* Expect: 100-continue */
    struct http_slice host;
};

/* Parses a request head from buf[0..len).
 * Returns the head's length in bytes (> 0) when complete, -2 when more bytes are needed,
 * -1 on error with *status set to 400, 413, 414, 417 (an Expect other than 100-continue),
 * 431, 501 (a single unknown transfer coding) or 505.
 * Errors are reported as early as the bytes allow: an over-long request line gives 414 before
 * its CRLF arrives, an over-long head 431 before its blank line, a bad byte 400 at once.
 * Up to two empty lines before the request line are skipped (counted in the head's length). */
int http_parse_head(const char *buf, size_t len, const struct http_limits *lim,
                    struct http_head *head, int *status);

/* Finds a header (case-insensitive name); NULL when absent. */
const struct http_header *http_find_header(const struct http_head *head, const char *name);
bool http_slice_eq(struct http_slice s, const char *lit);            /* exact */
bool http_slice_caseeq(struct http_slice s, const char *lit);        /* ASCII case-insensitive */

/* Chunked body decoder (RFC 9112 §7.1). Decodes in place: the data bytes of buf[0..*len) are
 * moved to the front and *len is set to their count. Returns -2 when it needs more input (all of
 * it was consumed), -1 on error with *status (400 malformed, 413 body over max_body), or, when the
 * last chunk and trailers are complete, the number of bytes that followed the message; those are
 * moved to buf + *len (the next pipelined request). Trailer fields are checked and dropped. */
struct http_chunked {
    int state;
    uint64_t remaining;         /* bytes left in the current chunk */
    uint64_t total;             /* data bytes decoded so far */
    size_t ext_len;             /* bytes of the current chunk-ext / trailer line */
    unsigned trailers;
};
#define HTTP_CHUNK_EXT_MAX 1024     /* longer chunk extension → 400 */

void http_chunked_init(struct http_chunked *d);
long http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, uint64_t max_body,
                         int *status);

#endif
