/* json_write: compact JSON text of a jansson tree whose numbers keep the shortest text that reads
 * back as the same double (0.2 stays 0.2; jansson's %.17g would send 0.20000000000000001). */
#ifndef LLMUX_JSON_WRITE_H
#define LLMUX_JSON_WRITE_H

#include <jansson.h>
#include <stddef.h>

#include "common/buf.h"

/* Appends v (any JSON value, object keys in jansson's insertion order) to out. 0, or -1 when
 * memory runs out or v holds a non-finite real (out is then left with a partial value). */
int json_write(const json_t *v, struct buf *out);
/* The same as a malloc'd NUL-terminated string (free()), or NULL. */
char *json_write_text(const json_t *v);
/* The shortest of %.15g/%.16g/%.17g that reads back as d, kept a real ("1.0", not "1").
 * -1 for NaN and infinities, which JSON cannot carry. */
int json_write_real(double d, char *out, size_t cap);

#endif
