/* jobs_record: a job as text — its journal record and its API object. */
#ifndef LLMUX_JOBS_RECORD_H
#define LLMUX_JOBS_RECORD_H

#include <stdarg.h>
#include <stdbool.h>

#include "daemon/jobs_store.h"

const char *job_status_name(enum job_status st);
int job_status_parse(const char *s, size_t n);     /* -1 when unknown */
void job_free(struct job *j);

/* Appends the job's framed journal record (its whole state). 0 or -1 (out of memory). */
int job_record_encode(const struct job *j, struct buf *out);
/* A record's payload back into a job (NULL when malformed). */
struct job *job_record_decode(const char *p, size_t n);
/* The API object; lists leave the result out (GET /v1/jobs/{id} has it). */
void job_render(const struct job *j, struct buf *out, bool with_result);
/* An error object in the API's shape, as compact JSON text (malloc'd; NULL out of memory). */
char *job_error_text(const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
