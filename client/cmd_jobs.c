/* cmd_jobs: `llmux jobs submit|get|wait|cancel|list` — background jobs (/v1/jobs). submit takes
 * the input of chat (a prompt) or gather (--gather: lines); wait polls until the job is done
 * and prints its answer the way chat (or gather --json) would, exiting as they do. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/gather.h"
#include "client/http.h"

enum {
    JOBS_OPT_GATHER = 0x200, JOBS_OPT_JOB_TIMEOUT, JOBS_OPT_WAIT, JOBS_OPT_JSON,
    JOBS_OPT_STATUS, JOBS_OPT_LIMIT,
};

#define POLL_MIN_MS 100
#define POLL_MAX_MS 1000
#define ID_MAX 64

struct jobs_opts {
    const char *model, *system, *status;
    long job_timeout_ms, limit;
    bool gather, wait, json;
};

static const char jobs_usage[] =
    "Usage: llmux jobs COMMAND [OPTIONS] [ARGS]\n"
    "Background jobs: work the gateway records durably and runs whether or not you stay.\n"
    "  submit [-m MODEL] [-s SYSTEM] [--job-timeout MS] [--wait] [PROMPT...]\n"
    "         a chat job: the prompt is the arguments, else all of stdin (as 'llmux chat');\n"
    "         prints the job id\n"
    "  submit --gather [-m MODEL] [-s SYSTEM] [--job-timeout MS] [--wait] [FILE]\n"
    "         a gather job: one item per line of FILE or stdin (as 'llmux gather')\n"
    "  get ID        print the job as JSON (status, times, result or error)\n"
    "  wait ID       wait until the job is done and print its answer: a chat job's text, a\n"
    "                gather job's result; the status and elapsed time tick on stderr when it\n"
    "                is a terminal. Ctrl-C stops waiting, not the job\n"
    "  cancel ID     cancel a queued or running job (its upstream calls are aborted)\n"
    "  list [--status S] [--limit N]   your jobs, newest first, one per line\n"
    "Options:\n"
    "      --job-timeout MS  the job's own deadline, counted from submission; a job still\n"
    "                        queued by then expires\n"
    "      --wait            submit: then wait as 'jobs wait' does\n"
    "      --json            print the gateway's JSON (wait: the whole job)\n"
    "      --status S        list: queued, running, succeeded, failed, cancelled or expired\n"
    "      --limit N         list: at most N jobs (1-1000, default 20)\n"
    "Exit status: as 'llmux chat'; a job that failed, was cancelled or expired exits 2.\n"
    "Global options (--url, --key, --timeout MS, -v) may come before or after the command.\n";

static int jobs_parse(struct cli *c, int argc, char **argv, struct jobs_opts *o)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"model", required_argument, NULL, 'm'},
        {"system", required_argument, NULL, 's'},
        {"gather", no_argument, NULL, JOBS_OPT_GATHER},
        {"job-timeout", required_argument, NULL, JOBS_OPT_JOB_TIMEOUT},
        {"wait", no_argument, NULL, JOBS_OPT_WAIT},
        {"json", no_argument, NULL, JOBS_OPT_JSON},
        {"status", required_argument, NULL, JOBS_OPT_STATUS},
        {"limit", required_argument, NULL, JOBS_OPT_LIMIT},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "m:s:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': o->model = optarg; continue;
        case 's': o->system = optarg; continue;
        case JOBS_OPT_GATHER: o->gather = true; continue;
        case JOBS_OPT_WAIT: o->wait = true; continue;
        case JOBS_OPT_JSON: o->json = true; continue;
        case JOBS_OPT_STATUS: o->status = optarg; continue;
        case JOBS_OPT_JOB_TIMEOUT:
            if (cli_parse_long(c, "--job-timeout", optarg, 1, 86400000L * 30,
                               &o->job_timeout_ms) < 0)
                return CLI_EXIT_USAGE;
            continue;
        case JOBS_OPT_LIMIT:
            if (cli_parse_long(c, "--limit", optarg, 1, 1000, &o->limit) < 0)
                return CLI_EXIT_USAGE;
            continue;
        default: break;
        }
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE: break;
        case CLI_OPT_HELP: fputs(jobs_usage, stdout); return CLI_HANDLED;
        case CLI_OPT_EXIT: return CLI_HANDLED;
        case CLI_OPT_BAD: return CLI_EXIT_USAGE;
        }
    }
    return cli_check(c) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
}

static int call(const struct cli *c, const char *method, const char *path, const char *body,
                struct http_resp *rs)
{
    struct http_req rq = {.method = method, .path = path, .body = body,
                          .body_len = body ? strlen(body) : 0, .deadline_ms = c->timeout_ms};
    return http_call(c, &rq, rs);
}

static json_t *load_json(const struct http_resp *rs)
{
    json_t *v = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, NULL);
    if (!v)
        cli_err("the gateway's answer is not JSON");
    return v;
}

/* The prompt: the arguments joined by spaces, else all of stdin without its last newline. */
static int read_prompt(const struct cli *c, int argc, char **argv, struct buf *out)
{
    for (int i = optind; i < argc; i++)
        if ((i > optind && buf_puts(out, " ") < 0) || buf_puts(out, argv[i]) < 0)
            return -1;
    if (optind == argc) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
            if (buf_append(out, chunk, n) < 0)
                return -1;
        while (out->len && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r'))
            out->data[--out->len] = '\0';
    }
    return 0;
}

static json_t *chat_input(const struct cli *c, const struct jobs_opts *o, int argc,
                          char **argv)
{
    struct buf prompt = BUF_INIT;
    json_t *body = NULL;
    if (read_prompt(c, argc, argv, &prompt) < 0) {
        cli_err("out of memory");
    } else if (!prompt.len) {
        cli_usage_error(c, "the prompt is empty");
    } else {
        json_t *msgs = json_array();
        if (o->system)
            json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content",
                                                  o->system));
        json_array_append_new(msgs, json_pack("{s:s, s:s%}", "role", "user", "content",
                                              prompt.data, prompt.len));
        body = json_pack("{s:s, s:o}", "model", o->model, "messages", msgs);
    }
    buf_free(&prompt);
    return body;
}

static json_t *gather_input(const struct cli *c, const struct jobs_opts *o, int argc,
                            char **argv)
{
    const char *file = optind < argc ? argv[optind] : "-";
    if (optind + 1 < argc) {
        cli_usage_error(c, "submit --gather takes one FILE");
        return NULL;
    }
    FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
    if (!f) {
        cli_err("%s: %s", file, strerror(errno));
        return NULL;
    }
    json_t *items = json_array();
    int rc = gather_input_read(c, f, strcmp(file, "-") ? file : "stdin", o->model, o->system,
                               items);
    if (f != stdin)
        fclose(f);
    if (rc == 0 && json_array_size(items) == 0) {
        cli_usage_error(c, "no requests in %s", strcmp(file, "-") ? file : "stdin");
        rc = -1;
    }
    if (rc < 0) {
        json_decref(items);
        return NULL;
    }
    return json_pack("{s:o}", "requests", items);
}

static int wait_job(struct cli *c, const struct jobs_opts *o, const char *id);

static int submit(struct cli *c, const struct jobs_opts *o, int argc, char **argv)
{
    if (!o->model && !o->gather)
        return cli_no_model(c);
    json_t *inner = o->gather ? gather_input(c, o, argc, argv) : chat_input(c, o, argc, argv);
    if (!inner)
        return CLI_EXIT_USAGE;
    json_t *job = json_pack("{s:o}", o->gather ? "gather" : "request", inner);
    if (o->job_timeout_ms)
        json_object_set_new(job, "timeout_ms", json_integer(o->job_timeout_ms));
    char *body = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    struct http_resp rs = {0};
    int code = body ? call(c, "POST", "/v1/jobs", body, &rs) : CLI_EXIT_USAGE;
    free(body);
    json_t *answer = code == CLI_EXIT_OK ? load_json(&rs) : NULL;
    const char *id = json_string_value(json_object_get(answer, "id"));
    char idbuf[ID_MAX + 1] = "";
    if (code == CLI_EXIT_OK && !id)
        code = CLI_EXIT_API;
    else if (id)
        snprintf(idbuf, sizeof idbuf, "%s", id);
    if (code == CLI_EXIT_OK && o->wait)
        fprintf(stderr, "llmux: submitted %s\n", idbuf);   /* stdout is for the answer */
    else if (code == CLI_EXIT_OK && o->json)
        cli_print_json_line(answer);
    else if (code == CLI_EXIT_OK)
        printf("%s\n", idbuf);
    json_decref(answer);
    http_resp_free(&rs);
    if (code == CLI_EXIT_OK && o->wait)
        code = wait_job(c, o, idbuf);
    return code;
}

static int check_id(const struct cli *c, int argc, char **argv, char *path, size_t cap)
{
    if (optind + 1 != argc)
        return cli_usage_error(c, optind < argc ? "one job id, please" : "which job? (an id "
                               "from 'llmux jobs submit' or 'llmux jobs list')");
    const char *id = argv[optind];
    if (!*id || strlen(id) > ID_MAX || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789_") !=
                                           strlen(id))
        return cli_usage_error(c, "'%s' is not a job id", id);
    snprintf(path, cap, "/v1/jobs/%s", id);
    return CLI_EXIT_OK;
}

/* The answer of a finished job, as chat (the text) or gather --json (one line per item). */
static int print_result(const json_t *job, const struct jobs_opts *o)
{
    const json_t *res = json_object_get(job, "result");
    if (o->json)
        return cli_print_json_line(job) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    if (strcmp(json_string_value(json_object_get(job, "kind")) ?: "", "gather") == 0) {
        const json_t *items = json_object_get(res, "results"), *it;
        size_t i;
        int code = CLI_EXIT_OK;
        json_array_foreach(items, i, it) {
            if (cli_print_json_line(it) < 0)
                return CLI_EXIT_USAGE;
            if (json_object_get(it, "error"))
                code = CLI_EXIT_API;
        }
        return items ? code : (cli_print_json_line(res) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK);
    }
    const json_t *choice = json_array_get(json_object_get(res, "choices"), 0);
    const char *text = json_string_value(json_object_get(json_object_get(choice, "message"),
                                                         "content"));
    if (!text)
        return cli_print_json_line(res) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    printf("%s\n", text);
    return CLI_EXIT_OK;
}

/* A final status: the answer (succeeded) or the job's error on stderr (exit 2). */
static int finished(const json_t *job, const struct jobs_opts *o, const char *status)
{
    if (strcmp(status, "succeeded") == 0)
        return print_result(job, o);
    if (o->json)
        cli_print_json_line(job);
    char what[96];
    snprintf(what, sizeof what, "job %s", status);
    cli_api_error(what, 0, json_object_get(job, "error"));
    return CLI_EXIT_API;
}

static bool is_final(const char *status)
{
    return strcmp(status, "queued") != 0 && strcmp(status, "running") != 0;
}

static void progress(const char *id, const char *status, const json_t *job, bool *drawn)
{
    long created = (long)json_integer_value(json_object_get(job, "created_at"));
    long elapsed = created ? (long)time(NULL) - created : 0;
    fprintf(stderr, "\r\033[K%s %s %lds", id, status, elapsed < 0 ? 0 : elapsed);
    fflush(stderr);
    *drawn = true;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);       /* Ctrl-C ends it early; the loop then sees the interrupt */
}

static int wait_job(struct cli *c, const struct jobs_opts *o, const char *id)
{
    char path[ID_MAX + 16];
    bool tty = isatty(STDERR_FILENO), drawn = false;
    long delay = POLL_MIN_MS;
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    for (;;) {
        struct http_resp rs = {0};
        int code = call(c, "GET", path, NULL, &rs);
        json_t *job = code == CLI_EXIT_OK ? load_json(&rs) : NULL;
        http_resp_free(&rs);
        const char *status = json_string_value(json_object_get(job, "status"));
        if (code == CLI_EXIT_OK && !status)
            code = CLI_EXIT_API;
        bool done = code != CLI_EXIT_OK || is_final(status);
        if (drawn && done)
            fputs("\r\033[K", stderr);
        if (code == CLI_EXIT_OK && done)
            code = finished(job, o, status);
        else if (code == CLI_EXIT_OK && tty)
            progress(id, status, job, &drawn);
        json_decref(job);
        if (done)
            return code;
        pause_ms(delay);
        delay = delay * 2 > POLL_MAX_MS ? POLL_MAX_MS : delay * 2;
        if (http_interrupted()) {
            if (drawn)
                fputs("\r\033[K", stderr);
            cli_err("stopped waiting; the job goes on (llmux jobs cancel %s stops it)", id);
            return CLI_EXIT_INTERRUPTED;
        }
    }
}

static int show(struct cli *c, const struct jobs_opts *o, const char *method, const char *path)
{
    struct http_resp rs = {0};
    int code = call(c, method, path, NULL, &rs);
    json_t *job = code == CLI_EXIT_OK ? load_json(&rs) : NULL;
    if (code == CLI_EXIT_OK && !job)
        code = CLI_EXIT_API;
    else if (job && (o->json || strcmp(method, "GET") == 0))
        code = cli_print_json_line(job) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    else if (job)
        printf("%s %s\n", json_string_value(json_object_get(job, "id")) ?: "",
               json_string_value(json_object_get(job, "status")) ?: "");
    json_decref(job);
    http_resp_free(&rs);
    return code;
}

static int list(struct cli *c, const struct jobs_opts *o)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs?limit=%ld%s%s", o->limit ? o->limit : 20,
             o->status ? "&status=" : "", o->status ? o->status : "");
    if (o->status && strspn(o->status, "abcdefghijklmnopqrstuvwxyz") != strlen(o->status))
        return cli_usage_error(c, "--status takes a status name such as running");
    struct http_resp rs = {0};
    int code = call(c, "GET", path, NULL, &rs);
    json_t *page = code == CLI_EXIT_OK ? load_json(&rs) : NULL, *job;
    size_t i;
    json_array_foreach(json_object_get(page, "data"), i, job) {
        if (o->json) {
            cli_print_json_line(job);
            continue;
        }
        time_t t = (time_t)json_integer_value(json_object_get(job, "created_at"));
        char when[32];
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        printf("%s\t%s\t%s\t%s\n", json_string_value(json_object_get(job, "id")) ?: "",
               json_string_value(json_object_get(job, "status")) ?: "",
               json_string_value(json_object_get(job, "kind")) ?: "", when);
    }
    if (code == CLI_EXIT_OK && !page)
        code = CLI_EXIT_API;
    json_decref(page);
    http_resp_free(&rs);
    return code;
}

int cmd_jobs(struct cli *c, int argc, char **argv)
{
    struct jobs_opts o = {0};
    char path[ID_MAX + 16];
    if (argc < 2 || argv[1][0] == '-') {
        int code = jobs_parse(c, argc, argv, &o);
        if (code != CLI_EXIT_OK)
            return code == CLI_HANDLED ? CLI_EXIT_OK : code;
        return cli_usage_error(c, "which jobs command? submit, get, wait, cancel or list");
    }
    const char *sub = argv[1];
    int code = jobs_parse(c, argc - 1, argv + 1, &o);
    if (code != CLI_EXIT_OK)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    argc--;
    argv++;
    o.model = cli_model(o.model);
    if (strcmp(sub, "submit") == 0)
        return submit(c, &o, argc, argv);
    if (strcmp(sub, "list") == 0)
        return optind < argc ? cli_usage_error(c, "unexpected argument '%s'", argv[optind])
                             : list(c, &o);
    if (strcmp(sub, "get") && strcmp(sub, "wait") && strcmp(sub, "cancel"))
        return cli_usage_error(c, "unknown jobs command '%s'", sub);
    if ((code = check_id(c, argc, argv, path, sizeof path)) != CLI_EXIT_OK)
        return code;
    if (strcmp(sub, "wait") == 0)
        return wait_job(c, &o, argv[optind]);
    return show(c, &o, strcmp(sub, "get") == 0 ? "GET" : "DELETE", path);
}
