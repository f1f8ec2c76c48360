/* fuzz_messages: libFuzzer target for the Anthropic-clients codec. The first byte picks the
 * direction: a client's Messages body, an upstream chat.completion, or a stream of chunks (one
 * per line). Whatever comes in, every event written must be a well-formed SSE frame whose data
 * is valid JSON, and a translated body must be a chat body. An answer's usage read in place
 * (openai_usage_text) must equal the same usage read from jansson's tree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_scan.h"
#include "common/json_valid.h"
#include "upstream/provider.h"
#include "upstream/provider_messages.h"

/* The tree reading openai_usage_text replaces: the usage member parsed alone by jansson. */
static unsigned usage_by_tree(const char *d, size_t n, struct usage *u)
{
    size_t s, e;
    if (json_scan_member(d, n, "usage", &s, &e) < 0)
        return 0;
    json_t *v = json_valid_load(d + s, e - s, 0, NULL);
    json_t *wrap = json_pack("{s:o}", "usage", v ? v : json_null());
    unsigned bad = openai_usage(wrap, u);
    json_decref(wrap);
    return bad;
}

static void check_usage(const char *d, size_t n)
{
    struct usage a = {.prompt = 1}, b = {.prompt = 1};
    if (json_valid_object(d, n) < 0)
        return;
    if (openai_usage_text(d, n, &a) != usage_by_tree(d, n, &b) || a.prompt != b.prompt ||
        a.completion != b.completion || a.cache_read != b.cache_read || a.seen != b.seen)
        abort();
}

/* Each frame: "event: NAME\ndata: JSON\n\n". */
static void check_frames(const struct buf *out)
{
    const char *p = out->data, *end = out->data + out->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (strncmp(p, "event: ", 7) != 0 || !nl || strncmp(nl + 1, "data: ", 6) != 0)
            abort();
        const char *data = nl + 7, *stop = strstr(data, "\n\n");
        if (!stop)
            abort();
        json_t *j = json_loadb(data, (size_t)(stop - data), 0, NULL);
        if (!json_is_object(j))
            abort();
        json_decref(j);
        p = stop + 2;
    }
}

static void run_stream(const char *d, size_t n)
{
    struct messages_stream s;
    struct buf out = BUF_INIT;
    messages_stream_init(&s, "fuzz-model");
    for (const char *p = d, *end = d + n; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        buf_reset(&out);
        if (messages_stream_event(&s, p, len, &out) == 0) {
            check_frames(&out);
        } else {
            json_t *err = json_loadb(out.data ? out.data : "", out.len, 0, NULL);
            if (!json_is_object(json_object_get(err, "error")))
                abort();    /* a failure leaves exactly one OpenAI error object */
            json_decref(err);
        }
        p += len + 1;
    }
    messages_stream_free(&s);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *d = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] % 3 == 0) {
        char err[256], param[64];
        json_t *in = json_loadb(d, n, 0, NULL), *out = NULL;
        if (json_is_object(in))
            out = messages_to_chat(in, "m", err, sizeof err, param, sizeof param);
        if (out && !json_is_array(json_object_get(out, "messages")))
            abort();
        json_decref(out);
        json_decref(in);
    } else if (data[0] % 3 == 1) {
        struct buf out = BUF_INIT;
        struct usage u = {0};
        check_usage(d, n);
        if (messages_from_completion(d, n, "m", &out, &u) == 0) {
            json_t *j = json_loadb(out.data, out.len, 0, NULL);
            if (!json_is_array(json_object_get(j, "content")))
                abort();
            json_decref(j);
        }
        buf_free(&out);
    } else {
        run_stream(d, n);
    }
    return 0;
}
