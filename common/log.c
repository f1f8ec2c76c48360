/* log: leveled stderr logging in JSON or text; one write(2) per line so threads never interleave. */
#include "common/log.h"

#include <errno.h>
#include <pthread.h>
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

/* Field values can be the client's (a model name, a path, later a user agent): past
 * LOG_FIELD_MAX bytes they are cut on a UTF-8 boundary and marked, so no client can write a
 * megabyte into the log with one request. */
static const char *field_cut(const char *value, char *tmp)
{
    size_t n = strnlen(value, LOG_FIELD_MAX + 1);
    if (n <= LOG_FIELD_MAX)
        return value;
    n = LOG_FIELD_MAX;
    while (n > 0 && ((unsigned char)value[n] & 0xc0) == 0x80)
        n--;
    memcpy(tmp, value, n);
    memcpy(tmp + n, "\xe2\x80\xa6", 4);          /* "…" and the NUL */
    return tmp;
}

static void put_field(struct buf *b, const char *name, const char *value)
{
    char tmp[LOG_FIELD_MAX + 4];
    value = field_cut(value, tmp);
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

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(STDERR_FILENO, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return;     /* stderr gone: nothing better to do with a log line */
        p += k;
        n -= (size_t)k;
    }
}

/* Asynchronous mode (the daemon): lines go to a buffer that a writer thread drains, so a slow
 * stderr reader (journald under load, a full pipe) never stalls an event loop. Past
 * LOG_BACKLOG_MAX unwritten bytes, lines are dropped and counted, never waited for. */
#define LOG_BACKLOG_MAX (4u << 20)

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t writer;
    struct buf pending;
    unsigned long dropped;
    bool running, stopping;
} async_log = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void *log_writer(void *arg)
{
    struct buf out = BUF_INIT;
    pthread_mutex_lock(&async_log.lock);
    for (;;) {
        while (!async_log.pending.len && !async_log.dropped && !async_log.stopping)
            pthread_cond_wait(&async_log.wake, &async_log.lock);
        if (!async_log.pending.len && !async_log.dropped && async_log.stopping)
            break;
        struct buf take = async_log.pending;      /* swap: write without the lock */
        async_log.pending = out;
        out = take;
        unsigned long dropped = async_log.dropped;
        async_log.dropped = 0;
        pthread_mutex_unlock(&async_log.lock);
        if (dropped) {
            char note[96];
            int n = snprintf(note, sizeof note, "log: %lu line(s) dropped: stderr too slow\n",
                             dropped);
            write_all(note, (size_t)n);
        }
        write_all(out.data, out.len);
        buf_reset(&out);
        pthread_mutex_lock(&async_log.lock);
    }
    pthread_mutex_unlock(&async_log.lock);
    buf_free(&out);
    return NULL;
}

int log_start_async(void)
{
    pthread_mutex_lock(&async_log.lock);
    int rc = async_log.running ? 0 : pthread_create(&async_log.writer, NULL, log_writer, NULL);
    async_log.running = async_log.running || rc == 0;
    pthread_mutex_unlock(&async_log.lock);
    return rc == 0 ? 0 : -1;
}

void log_stop_async(void)
{
    pthread_mutex_lock(&async_log.lock);
    bool running = async_log.running;
    async_log.stopping = true;
    pthread_cond_signal(&async_log.wake);
    pthread_mutex_unlock(&async_log.lock);
    if (running)
        pthread_join(async_log.writer, NULL);
    async_log.running = async_log.stopping = false;
    buf_free(&async_log.pending);
}

static void emit(struct buf *b)
{
    buf_puts(b, log_fmt == LOG_FORMAT_JSON ? "}\n" : "\n");
    if (!b->data) {
        buf_free(b);
        return;
    }
    pthread_mutex_lock(&async_log.lock);
    if (async_log.running) {
        if (async_log.pending.len + b->len <= LOG_BACKLOG_MAX &&
            buf_append(&async_log.pending, b->data, b->len) == 0)
            pthread_cond_signal(&async_log.wake);
        else
            async_log.dropped++;
        pthread_mutex_unlock(&async_log.lock);
    } else {
        pthread_mutex_unlock(&async_log.lock);
        write_all(b->data, b->len);   /* start-up, -t, tests: one write(2) per line */
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
