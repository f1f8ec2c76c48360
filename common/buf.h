/* buf: a growable byte buffer with a read offset, the one buffer type both programs use.
 * Storage is allocated on first append and released by buf_free(); data[len] is always NUL. */
#ifndef LLMUX_BUF_H
#define LLMUX_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;   /* NULL until the first append */
    size_t len;   /* bytes held, from data[0] */
    size_t cap;   /* bytes allocated (excluding the NUL slot) */
};

#define BUF_INIT {NULL, 0, 0}

/* All appenders return 0, or -1 when memory runs out (the buffer is left unchanged). */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends v in decimal (the hot path's numbers, without a printf). */
int buf_put_u64(struct buf *b, unsigned long long v);
/* Appends s as the inside of a JSON string (quotes not included). */
int buf_json_escape(struct buf *b, const char *s, size_t n);

/* Drops the first n bytes (memmove of the rest). */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);                 /* len = 0, keeps storage */
void buf_free(struct buf *b);                  /* releases storage, back to BUF_INIT */
/* Hands the storage to the caller (NUL-terminated, may be NULL when empty); b is emptied. */
char *buf_steal(struct buf *b);

#endif
