/* json_write: jansson tree → compact JSON text with round-trip-shortest reals. */
#include "common/json_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int json_write_real(double d, char *out, size_t cap)
{
    if (!isfinite(d) || cap < 32)
        return -1;
    /* 17 significant digits always round-trip a double; fewer usually do, and the shortest is
     * what the client most likely wrote. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    if (!strpbrk(out, ".eE"))
        strcat(out, ".0");      /* stays a real for the reader, as jansson writes it */
    return 0;
}

static int write_string(struct buf *out, const char *s, size_t n)
{
    if (buf_append(out, "\"", 1) < 0 || buf_json_escape(out, s, n) < 0)
        return -1;
    return buf_append(out, "\"", 1);
}

static int write_object(const json_t *v, struct buf *out)
{
    const char *key;
    json_t *val;
    int first = 1;
    if (buf_append(out, "{", 1) < 0)
        return -1;
    json_object_foreach((json_t *)v, key, val) {
        if ((!first && buf_append(out, ",", 1) < 0) || write_string(out, key, strlen(key)) < 0 ||
            buf_append(out, ":", 1) < 0 || json_write(val, out) < 0)
            return -1;
        first = 0;
    }
    return buf_append(out, "}", 1);
}

static int write_array(const json_t *v, struct buf *out)
{
    size_t i;
    json_t *val;
    if (buf_append(out, "[", 1) < 0)
        return -1;
    json_array_foreach(v, i, val) {
        if ((i && buf_append(out, ",", 1) < 0) || json_write(val, out) < 0)
            return -1;
    }
    return buf_append(out, "]", 1);
}

int json_write(const json_t *v, struct buf *out)
{
    char num[48];
    switch (json_typeof(v)) {
    case JSON_OBJECT: return write_object(v, out);
    case JSON_ARRAY: return write_array(v, out);
    case JSON_STRING: return write_string(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return buf_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        if (json_write_real(json_real_value(v), num, sizeof num) < 0)
            return -1;
        return buf_puts(out, num);
    case JSON_TRUE: return buf_puts(out, "true");
    case JSON_FALSE: return buf_puts(out, "false");
    case JSON_NULL: return buf_puts(out, "null");
    }
    return -1;
}

char *json_write_text(const json_t *v)
{
    struct buf b = BUF_INIT;
    if (!v || json_write(v, &b) < 0) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}
