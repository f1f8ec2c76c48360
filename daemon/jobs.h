/* jobs: background jobs on the workers — the /v1/jobs handlers (jobs_api.c) and the runner
 * (jobs_run.c): a job runs as a request whose sink is the job store, on the worker the store
 * picked, through the same routing, limits, deadlines and metrics as any request. */
#ifndef LLMUX_JOBS_H
#define LLMUX_JOBS_H

#include <stdbool.h>

#include "daemon/http_parser.h"
#include "daemon/request.h"

struct worker;
struct server;
struct jobs_pending;

/* POST/GET /v1/jobs and GET/DELETE /v1/jobs/{id}. */
void jobs_handle(struct request *r, const struct http_head *head, const char *body,
                 size_t len);
/* request_end of a POST /v1/jobs still waiting for its record: forget the request. */
void jobs_pending_detach(struct request *r);

int jobs_worker_init(struct worker *w);
void jobs_worker_free(struct worker *w);
/* No job runs on this worker (a draining worker may stop). */
bool jobs_worker_idle(const struct worker *w);
/* Shutdown grace is over: jobs still running stop and run again at the next start. */
void jobs_worker_abort(struct worker *w);
/* The store's wake hook (ctx = the server). */
void jobs_wake_worker(void *ctx, unsigned worker);

#endif
