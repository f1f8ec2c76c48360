/* log: leveled stderr logging in JSON or text; one write(2) per line so threads never interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"

static enum log_level log_max = LOG_INFO;
static enum log_format log_fmt = LOG_FORMAT_TEXT;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Set by the main thread on reload while workers log: relaxed atomics, no lock. */
void log_setup(enum log_level level, enum log_format format)
{
    __atomic_store_n(&log_max, level, __ATOMIC_RELAXED);
    __atomic_store_n(&log_fmt, format, __ATOMIC_RELAXED);
}

bool log_enabled(enum log_level level)
{
    return level <= __atomic_load_n(&log_max, __ATOMIC_RELAXED);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = LOG_ERROR; i <= LOG_DEBUG; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Text values are escaped like JSON strings too: a client's CR/LF can't start a new line. */
static void put_value(struct buf *b, const char *v, bool quote)
{
    if (quote)
        buf_puts(b, "\"");
    buf_json_escape(b, v, strlen(v));
    if (quote)
        buf_puts(b, "\"");
}

static void put_prefix(struct buf *b, enum log_level level)
{
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);
    if (log_fmt == LOG_FORMAT_JSON)
        buf_printf(b, "{\"time\":\"%s\",\"level\":\"%s\"", when, level_names[level]);
    else
        buf_printf(b, "%s %-5s", when, level_names[level]);
}

static void put_field(struct buf *b, const char *name, const char *value)
{
    bool numeric = name[0] == '#';
    if (numeric)
        name++;
    if (log_fmt == LOG_FORMAT_JSON) {
        buf_printf(b, ",\"%s\":", name);
        put_value(b, value, !numeric);
    } else {
        buf_printf(b, " %s=", name);
        bool plain = value[0] && strcspn(value, " \"=\\") == strlen(value);
        put_value(b, value, !plain && !numeric);
    }
}

static void emit(struct buf *b)
{
    buf_puts(b, log_fmt == LOG_FORMAT_JSON ? "}\n" : "\n");
    if (b->data) {
        ssize_t rc = write(STDERR_FILENO, b->data, b->len);
        (void)rc;
    }
    buf_free(b);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct buf msg = BUF_INIT, line = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    put_prefix(&line, level);
    put_field(&line, "msg", msg.data ? msg.data : "");
    buf_free(&msg);
    emit(&line);
}

void log_fields(enum log_level level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    struct buf line = BUF_INIT;
    put_prefix(&line, level);
    put_field(&line, "msg", msg);
    va_list ap;
    va_start(ap, msg);
    for (const char *name; (name = va_arg(ap, const char *));) {
        const char *value = va_arg(ap, const char *);
        put_field(&line, name, value ? value : "");
    }
    va_end(ap);
    emit(&line);
}
