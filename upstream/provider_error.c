/* provider_error: re-encoding of upstream error answers (see provider_error.h). */
#include "upstream/provider_error.h"

#include <stdio.h>
#include <string.h>

void provider_error_cut(const char *msg, char *out, size_t cap)
{
    size_t i = 0, chars = 0, o = 0;
    for (; msg[i] && chars < PROVIDER_ERROR_CHARS; chars++) {
        size_t n = 1;
        while (((unsigned char)msg[i + n] & 0xc0) == 0x80)
            n++;
        if (o + n + 4 > cap)
            break;
        memcpy(out + o, msg + i, n);
        o += n;
        i += n;
    }
    if (msg[i] && o + 4 <= cap) {
        memcpy(out + o, "\xe2\x80\xa6", 3);      /* … */
        o += 3;
    }
    out[o] = '\0';
}

/* A short field: a string cut to fit (on a UTF-8 boundary), an integer in decimal, else "". */
static void take_field(const json_t *v, char *out, size_t cap)
{
    out[0] = '\0';
    if (json_is_integer(v)) {
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
        return;
    }
    const char *s = json_string_value(v);
    if (!s)
        return;
    size_t n = strlen(s) < cap - 1 ? strlen(s) : cap - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    memcpy(out, s, n);
    out[n] = '\0';
}

void provider_error_take(const json_t *doc, struct provider_error *e)
{
    const json_t *err = json_object_get(doc, "error");
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (!msg)
        msg = json_string_value(err);       /* {"error": "text"} */
    provider_error_cut(msg ? msg : "the upstream answered with an error", e->message,
                       sizeof e->message);
    take_field(json_object_get(err, "type"), e->type, sizeof e->type);
    if (!e->type[0])
        snprintf(e->type, sizeof e->type, "upstream_error");
    take_field(json_object_get(err, "code"), e->code, sizeof e->code);
    take_field(json_object_get(err, "param"), e->param, sizeof e->param);
}
