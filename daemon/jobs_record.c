/* jobs_record: a job as text — its journal record (full state, the latest record of an id
 * wins at replay) and its API object. Stored JSON (input, output) is spliced in as it is. */
#include "daemon/jobs_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/jobs_journal.h"

static const char *const status_names[JOB_NSTATUS] = {
    "queued", "running", "succeeded", "failed", "cancelled", "expired",
};

const char *job_status_name(enum job_status st)
{
    return status_names[st];
}

int job_status_parse(const char *s, size_t n)
{
    for (int i = 0; i < JOB_NSTATUS; i++)
        if (strlen(status_names[i]) == n && memcmp(status_names[i], s, n) == 0)
            return i;
    return -1;
}

void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->key);
    free(j->input);
    free(j->output);
    free(j);
}

static void put_string_or_null(struct buf *b, const char *s)
{
    if (!s) {
        buf_puts(b, "null");
        return;
    }
    buf_puts(b, "\"");
    buf_json_escape(b, s, strlen(s));
    buf_puts(b, "\"");
}

int job_record_encode(const struct job *j, struct buf *out)
{
    struct buf rec = BUF_INIT;
    buf_printf(&rec, "{\"id\":\"%s\",\"key\":", j->id);
    put_string_or_null(&rec, j->key);
    buf_printf(&rec, ",\"kind\":\"%s\",\"status\":\"%s\",\"created_ms\":%lld,"
               "\"started_ms\":%lld,\"completed_ms\":%lld,\"timeout_ms\":%llu,\"input\":",
               j->kind == JOB_GATHER ? "gather" : "chat", job_status_name(j->status),
               (long long)j->created_ms, (long long)j->started_ms, (long long)j->completed_ms,
               (unsigned long long)j->timeout_ms);
    buf_append(&rec, j->input, j->input_len);
    buf_puts(&rec, ",\"output\":");
    if (j->output)
        buf_append(&rec, j->output, j->output_len);
    else
        buf_puts(&rec, "null");
    int rc = buf_puts(&rec, "}");
    if (rc == 0)
        rc = journal_frame(out, rec.data, rec.len);
    buf_free(&rec);
    return rc;
}

static char *dump(json_t *v, size_t *len)
{
    char *s = v && !json_is_null(v) ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    *len = s ? strlen(s) : 0;
    return s;
}

struct job *job_record_decode(const char *p, size_t n)
{
    json_t *o = json_loadb(p, n, 0, NULL);
    struct job *j = calloc(1, sizeof *j);
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *kind = json_string_value(json_object_get(o, "kind"));
    const char *st = json_string_value(json_object_get(o, "status"));
    json_t *key = json_object_get(o, "key");
    int status = st ? job_status_parse(st, strlen(st)) : -1;
    if (!j || !id || strlen(id) != JOB_ID_LEN || !kind || status < 0 ||
        !json_is_object(json_object_get(o, "input")))
        goto fail;
    memcpy(j->id, id, JOB_ID_LEN + 1);
    j->kind = strcmp(kind, "gather") == 0 ? JOB_GATHER : JOB_CHAT;
    j->status = (enum job_status)status;
    j->created_ms = json_integer_value(json_object_get(o, "created_ms"));
    j->started_ms = json_integer_value(json_object_get(o, "started_ms"));
    j->completed_ms = json_integer_value(json_object_get(o, "completed_ms"));
    j->timeout_ms = (uint64_t)json_integer_value(json_object_get(o, "timeout_ms"));
    if (json_is_string(key) && !(j->key = strdup(json_string_value(key))))
        goto fail;
    if (!(j->input = dump(json_object_get(o, "input"), &j->input_len)))
        goto fail;
    j->output = dump(json_object_get(o, "output"), &j->output_len);
    j->record_len = n + JOURNAL_HEADER;
    json_decref(o);
    return j;
fail:
    json_decref(o);
    job_free(j);
    return NULL;
}

static void put_time(struct buf *b, const char *name, int64_t ms)
{
    if (ms)
        buf_printf(b, ",\"%s\":%lld", name, (long long)(ms / 1000));
    else
        buf_printf(b, ",\"%s\":null", name);
}

void job_render(const struct job *j, struct buf *out, bool with_result)
{
    buf_printf(out, "{\"id\":\"%s\",\"object\":\"job\",\"kind\":\"%s\",\"status\":\"%s\"",
               j->id, j->kind == JOB_GATHER ? "gather" : "chat", job_status_name(j->status));
    put_time(out, "created_at", j->created_ms);
    put_time(out, "started_at", j->started_ms);
    put_time(out, "completed_at", j->completed_ms);
    if (j->timeout_ms)
        buf_printf(out, ",\"timeout_ms\":%llu", (unsigned long long)j->timeout_ms);
    if (j->output && j->status == JOB_SUCCEEDED && with_result) {
        buf_puts(out, ",\"result\":");
        buf_append(out, j->output, j->output_len);
    } else if (j->output && j->status != JOB_SUCCEEDED) {
        buf_puts(out, ",\"error\":");
        buf_append(out, j->output, j->output_len);
    }
    buf_puts(out, "}");
}

char *job_error_text(const char *type, const char *code, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s, s:s, s:n, s:s}", "message", msg, "type", type, "param",
                          "code", code);
    char *text = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    return text;
}
