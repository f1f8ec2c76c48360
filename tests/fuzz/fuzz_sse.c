/* fuzz_sse: libFuzzer target for the event-stream parser. The events must not depend on how
 * the bytes were split across feeds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/sse.h"

static int collect(void *ud, const char *ev, size_t elen, const char *data, size_t dlen)
{
    struct buf *out = ud;
    buf_append(out, ev, elen);
    buf_append(out, "\n", 1);
    buf_append(out, data, dlen);
    buf_append(out, "\n\n", 2);
    return 0;
}

static int run(const unsigned char *d, size_t n, size_t step, struct buf *out)
{
    struct sse_parser p;
    sse_init(&p, 4096);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += step)
        rc = sse_feed(&p, (const char *)d + i, n - i < step ? n - i : step, collect, out);
    sse_free(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct buf whole = BUF_INIT, pieces = BUF_INIT;
    size_t step = size ? (size_t)data[0] % 7 + 1 : 1;
    int a = run(data, size, size ? size : 1, &whole), b = run(data, size, step, &pieces);
    /* An oversize event fails both ways; otherwise the events are identical. */
    if (a == 0 && b == 0 && (whole.len != pieces.len ||
                             (whole.len && memcmp(whole.data, pieces.data, whole.len) != 0)))
        abort();
    buf_free(&whole);
    buf_free(&pieces);
    return 0;
}
