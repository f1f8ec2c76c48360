/* log: leveled logging to stderr (journald captures it) as JSON or text lines.
 * Every string that came from a client must go through the escaping helpers here. */
#ifndef LLMUX_LOG_H
#define LLMUX_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

void log_setup(enum log_level level, enum log_format format);
bool log_enabled(enum log_level level);
/* Message text is escaped before it is written, so a client-controlled byte can't forge a line. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

/* One structured line: fields are name/value string pairs, ended by NULL. Values are escaped.
 * A value that looks numeric is written unquoted in JSON when num is true for it: pass names
 * prefixed with '#' (e.g. "#status") to mark numeric fields. */
#define LOG_FIELD_MAX 256       /* bytes of one field's value; longer ones are cut, "…" marked */
void log_fields(enum log_level level, const char *msg, ...) __attribute__((sentinel));

int log_level_parse(const char *s, enum log_level *out);

/* From now on lines are written by a helper thread (the daemon's loops never block on
 * stderr); log_stop_async flushes what is pending and joins it. */
int log_start_async(void);
void log_stop_async(void);
#endif
