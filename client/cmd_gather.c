/* cmd_gather: `llmux gather` — many prompts through one streamed /v1/gather. Results leave as
 * JSON lines in input order (or as they complete) while a progress line ticks on stderr. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/gather.h"
#include "client/http.h"

enum {
    GATHER_OPT_FAIL_FAST = 0x200,
    GATHER_OPT_FIRST,
    GATHER_OPT_AS_COMPLETED,
    GATHER_OPT_JSON,
    GATHER_OPT_ITEM_TIMEOUT,
};

/* The request deadline trails the gather's own timeout_ms, so the gather's deadline fires first:
 * it reports unfinished items as 504 entries and still sends its summary. */
#define GATHER_DEADLINE_SLACK_MS 1000L

struct gather_opts {
    const char *model;
    const char *system;
    const char *file;       /* NULL or "-" = stdin */
    long concurrency;       /* 0 = the gateway's default */
    long item_timeout_ms;   /* 0 = the gateway's default */
    bool fail_fast, first, as_completed, json;
};

struct gather_run {
    const struct gather_opts *o;
    size_t total;
    json_t **held;          /* output lines waiting for their turn, by index */
    bool *seen;             /* a result arrived for this index */
    size_t next;            /* input order: the next index to print */
    size_t ok, failed;      /* results seen so far */
    bool winner;            /* --first: the winning line is out */
    bool done;              /* the summary arrived */
    json_t *summary;
    bool gather_failed;     /* the gather as a whole reported an error */
    long started_ms;
    bool progress;          /* stderr is a terminal: keep a live status line there */
    bool progress_drawn;
};

static const char gather_usage[] =
    "Usage: llmux gather [-m MODEL] [-c N] [--fail-fast | --first] [--timeout MS] [FILE]\n"
    "Send one request per line of FILE (or stdin) through POST /v1/gather at once and print\n"
    "one JSON line per item: {\"index\":i,\"status\":s,\"content\":\"...\"}, or \"error\" in\n"
    "place of \"content\" for a failed item. A line starting with '{' is a JSON chat body\n"
    "(\"model\" filled in when absent); any other line is a prompt; blank lines are skipped.\n"
    "Exits 2 when any item failed.\n"
    "  -m, --model MODEL     model for prompts and bodies without one (default $LLMUX_MODEL)\n"
    "  -s, --system TEXT     system message for the prompt lines\n"
    "  -c, --concurrency N   at most N items in flight (capped by the gateway)\n"
    "      --fail-fast       the first failure cancels the rest (return_exceptions: false)\n"
    "      --first           race: print the first item to succeed, cancel the rest\n"
    "      --timeout MS      deadline for the whole gather; items unfinished by then fail\n"
    "                        with status 504\n"
    "      --item-timeout MS deadline for each item, retries included\n"
    "      --as-completed    print each result as it completes instead of in input order\n"
    "      --json            print each result as the gateway sent it (with \"response\")\n"
    "A live progress line is kept on stderr when it is a terminal.\n";

static int gather_parse(struct cli *c, int argc, char **argv, struct gather_opts *o);
static int gather_load(const struct cli *c, const struct gather_opts *o, json_t *items);
static char *gather_body(const struct cli *c, const struct gather_opts *o, json_t *items);
static void drop_held(struct gather_run *run);
static int gather_send(const struct cli *c, struct gather_run *run, const char *body,
                       struct http_resp *rs);
static int gather_result(struct gather_run *run, json_t *data);
static int gather_finish(const struct cli *c, struct gather_run *run, int code);

int cmd_gather(struct cli *c, int argc, char **argv)
{
    struct gather_opts o = {0};
    struct gather_run run = {.o = &o};
    struct http_resp rs = {0};
    json_t *items = NULL;
    char *body = NULL;
    int code = gather_parse(c, argc, argv, &o);
    if (code != CLI_EXIT_OK)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    items = json_array();
    if (!items) {
        cli_err("out of memory");
        return CLI_EXIT_USAGE;
    }
    code = gather_load(c, &o, items);
    if (code != CLI_EXIT_OK)
        goto out;
    run.total = json_array_size(items);
    run.held = calloc(run.total, sizeof *run.held);
    run.seen = calloc(run.total, sizeof *run.seen);
    body = gather_body(c, &o, items);
    if (!run.held || !run.seen || !body) {
        cli_err("out of memory");
        code = CLI_EXIT_USAGE;
        goto out;
    }
    code = gather_send(c, &run, body, &rs);
out:
    if (run.held)
        drop_held(&run);
    free(run.held);
    free(run.seen);
    json_decref(run.summary);
    http_resp_free(&rs);
    free(body);
    json_decref(items);
    return code;
}

static int gather_parse(struct cli *c, int argc, char **argv, struct gather_opts *o)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"model", required_argument, NULL, 'm'},
        {"system", required_argument, NULL, 's'},
        {"concurrency", required_argument, NULL, 'c'},
        {"fail-fast", no_argument, NULL, GATHER_OPT_FAIL_FAST},
        {"first", no_argument, NULL, GATHER_OPT_FIRST},
        {"as-completed", no_argument, NULL, GATHER_OPT_AS_COMPLETED},
        {"json", no_argument, NULL, GATHER_OPT_JSON},
        {"item-timeout", required_argument, NULL, GATHER_OPT_ITEM_TIMEOUT},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "m:s:c:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': o->model = optarg; continue;
        case 's': o->system = optarg; continue;
        case GATHER_OPT_FAIL_FAST: o->fail_fast = true; continue;
        case GATHER_OPT_FIRST: o->first = true; continue;
        case GATHER_OPT_AS_COMPLETED: o->as_completed = true; continue;
        case GATHER_OPT_JSON: o->json = true; continue;
        case 'c':
            if (cli_parse_long(c, "-c", optarg, 1, 1000000, &o->concurrency) < 0)
                return CLI_EXIT_USAGE;
            continue;
        case GATHER_OPT_ITEM_TIMEOUT:
            if (cli_parse_long(c, "--item-timeout", optarg, 1, 86400000L,
                               &o->item_timeout_ms) < 0)
                return CLI_EXIT_USAGE;
            continue;
        default:
            break;
        }
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE:
            break;
        case CLI_OPT_HELP:
            fputs(gather_usage, stdout);
            return CLI_HANDLED;
        case CLI_OPT_EXIT:
            return CLI_HANDLED;
        case CLI_OPT_BAD:
            return CLI_EXIT_USAGE;
        }
    }
    if (o->first && o->fail_fast)
        return cli_usage_error(c, "--first races the items; it does not combine with --fail-fast");
    if (argc - optind > 1)
        return cli_usage_error(c, "one input file at most ('%s' is extra)", argv[optind + 1]);
    o->file = optind < argc ? argv[optind] : NULL;
    o->model = cli_model(o->model);
    return cli_check(c) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
}

static int gather_load(const struct cli *c, const struct gather_opts *o, json_t *items)
{
    bool use_stdin = !o->file || !strcmp(o->file, "-");
    const char *name = use_stdin ? "stdin" : o->file;
    FILE *f = use_stdin ? stdin : fopen(o->file, "r");
    if (!f) {
        cli_err("cannot open %s: %s", o->file, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    if (use_stdin && isatty(STDIN_FILENO))
        fputs("llmux: reading prompts from the terminal, one per line; Ctrl-D sends them\n",
              stderr);
    int rc = gather_input_read(c, f, name, o->model, o->system, items);
    if (!use_stdin)
        fclose(f);
    if (rc < 0)
        return http_interrupted() ? CLI_EXIT_INTERRUPTED : CLI_EXIT_USAGE;
    if (json_array_size(items) == 0)
        return cli_usage_error(c, "%s has no requests (blank lines are skipped)", name);
    return CLI_EXIT_OK;
}

static char *gather_body(const struct cli *c, const struct gather_opts *o, json_t *items)
{
    json_t *body = json_pack("{s:O, s:b, s:b}", "requests", items, "stream", 1,
                             "return_exceptions", !o->fail_fast);
    int rc = body ? 0 : -1;
    if (o->first)
        rc |= json_object_set_new(body, "mode", json_string("first"));
    if (o->concurrency)
        rc |= json_object_set_new(body, "max_concurrency", json_integer(o->concurrency));
    if (c->timeout_ms)
        rc |= json_object_set_new(body, "timeout_ms", json_integer(c->timeout_ms));
    if (o->item_timeout_ms)
        rc |= json_object_set_new(body, "item_timeout_ms", json_integer(o->item_timeout_ms));
    char *text = rc == 0 ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void progress_clear(struct gather_run *run)
{
    if (run->progress_drawn)
        fputs("\r\033[K", stderr);
    run->progress_drawn = false;
}

/* "in flight" is what the client can know: items without a result, at most -c of them. */
static void progress_draw(struct gather_run *run)
{
    if (!run->progress)
        return;
    size_t left = run->total - run->ok - run->failed, flying = left;
    if (run->o->concurrency && (size_t)run->o->concurrency < left)
        flying = (size_t)run->o->concurrency;
    fprintf(stderr, "\r\033[Kgather: %zu/%zu done, %zu failed, %zu in flight",
            run->ok + run->failed, run->total, run->failed, flying);
    if (left > flying)
        fprintf(stderr, ", %zu queued", left - flying);
    fprintf(stderr, ", %.1f s", (double)(now_ms() - run->started_ms) / 1000.0);
    fflush(stderr);
    run->progress_drawn = true;
}

static void on_tick(void *ud)
{
    progress_draw(ud);
}

static void emit(struct gather_run *run, json_t *line)
{
    progress_clear(run);
    if (cli_print_json_line(line) < 0)
        cli_err("writing output: %s", strerror(errno));
}

/* Input order: print every held line whose predecessors are all out. At the end (all set), print
 * what is left too, still in order; an item the gateway never reported leaves a gap. */
static void release_held(struct gather_run *run, bool all)
{
    for (size_t i = run->next; i < run->total; i++) {
        if (!run->held[i] && !all)
            break;
        if (run->held[i])
            emit(run, run->held[i]);
        json_decref(run->held[i]);
        run->held[i] = NULL;
        run->next = i + 1;
    }
}

static void drop_held(struct gather_run *run)
{
    for (size_t i = 0; i < run->total; i++) {
        json_decref(run->held[i]);
        run->held[i] = NULL;
    }
}

static json_t *output_line(const struct gather_opts *o, json_t *data, json_int_t index,
                           json_int_t status)
{
    if (o->json)
        return json_incref(data);
    json_t *line = json_pack("{s:I, s:I}", "index", index, "status", status);
    json_t *err = json_object_get(data, "error");
    json_t *resp = json_object_get(data, "response");
    json_t *choice = json_array_get(json_object_get(resp, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "message"), "content");
    /* not a chat answer (an embeddings item, a tool call): the response goes out whole */
    int rc = err ? json_object_set(line, "error", err)
             : json_is_string(content) ? json_object_set(line, "content", content)
             : json_object_set(line, "response", resp ? resp : json_null());
    if (rc < 0) {
        json_decref(line);
        return NULL;
    }
    return line;
}

/* One {"index","status","response"|"error"} entry, from the stream or a whole answer. */
static int gather_result(struct gather_run *run, json_t *data)
{
    json_t *jidx = json_object_get(data, "index");
    json_int_t idx = json_is_integer(jidx) ? json_integer_value(jidx) : -1;
    json_int_t status = json_integer_value(json_object_get(data, "status"));
    if (idx < 0 || (size_t)idx >= run->total || run->seen[idx]) {
        progress_clear(run);
        cli_err("ignoring a result with an unknown or repeated index");
        return 0;
    }
    run->seen[idx] = true;
    bool ok = status >= 200 && status < 300 && !json_object_get(data, "error");
    if (ok)
        run->ok++;
    else
        run->failed++;
    json_t *line = output_line(run->o, data, idx, status);
    if (!line) {
        cli_err("out of memory");
        return -1;
    }
    if (run->o->first) {
        /* the winner goes out at once; failures wait in case nothing wins */
        if (ok && !run->winner) {
            emit(run, line);
            run->winner = true;
            drop_held(run);
        }
        if (run->winner)
            json_decref(line);
        else
            run->held[idx] = line;
    } else if (run->o->as_completed) {
        emit(run, line);
        json_decref(line);
    } else {
        run->held[idx] = line;
        release_held(run, false);
    }
    progress_draw(run);
    return 0;
}

/* The gather as a whole failed (--fail-fast): {"error":{…}, "index"?, "status"?}. */
static void gather_error(struct gather_run *run, json_t *data)
{
    json_t *idx = json_object_get(data, "index");
    char what[48] = "gather";
    if (json_is_integer(idx))
        snprintf(what, sizeof what, "item %lld", (long long)json_integer_value(idx));
    progress_clear(run);
    cli_api_error(what, json_integer_value(json_object_get(data, "status")),
                  json_object_get(data, "error"));
    run->gather_failed = true;
}

static int on_event(void *ud, const char *event, size_t event_len, const char *data,
                    size_t data_len)
{
    struct gather_run *run = ud;
    json_t *root = json_loadb(data, data_len, 0, NULL);
    int rc = 0;
    if (!json_is_object(root)) {
        progress_clear(run);
        cli_err("the gateway sent a gather event that is not a JSON object");
        rc = -1;
    } else if (event_len == 6 && !memcmp(event, "result", 6)) {
        rc = gather_result(run, root);
    } else if (event_len == 4 && !memcmp(event, "done", 4)) {
        run->done = true;
        run->summary = json_incref(root);
    } else if (json_is_object(json_object_get(root, "error"))) {
        gather_error(run, root);
    }
    /* other events are for newer clients */
    json_decref(root);
    return rc;
}

/* A gateway may answer with the whole gather.result at once; it reads the same way. */
static int gather_whole(struct gather_run *run, const struct http_resp *rs)
{
    json_t *root = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, NULL);
    json_t *results = json_object_get(root, "results"), *r;
    size_t i;
    if (!json_is_array(results)) {
        cli_err("the gateway's answer is not a gather result");
        json_decref(root);
        return CLI_EXIT_API;
    }
    json_array_foreach(results, i, r) {
        if (gather_result(run, r) < 0)
            break;
    }
    run->done = true;
    run->summary = root;
    return CLI_EXIT_OK;
}

static int gather_send(const struct cli *c, struct gather_run *run, const char *body,
                       struct http_resp *rs)
{
    struct http_req rq = {
        .method = "POST", .path = "/v1/gather", .body = body, .body_len = strlen(body),
        .deadline_ms = c->timeout_ms ? c->timeout_ms + GATHER_DEADLINE_SLACK_MS : 0,
        .on_event = on_event, .on_tick = on_tick, .ud = run,
    };
    run->progress = isatty(STDERR_FILENO);
    run->started_ms = now_ms();
    progress_draw(run);
    int code = http_call(c, &rq, rs);
    if (code == CLI_EXIT_OK && !rs->streamed)
        code = gather_whole(run, rs);
    return gather_finish(c, run, code);
}

static void report_summary(const struct gather_run *run)
{
    /* wall time as the user lived it, like the progress line; the gateway's elapsed_ms
     * leaves out the network */
    long elapsed = now_ms() - run->started_ms;
    json_t *tokens = json_object_get(json_object_get(run->summary, "usage"), "total_tokens");
    fprintf(stderr, "gather: %zu ok, %zu failed of %zu in %.1f s", run->ok, run->failed,
            run->total, (double)elapsed / 1000.0);
    if (json_is_integer(tokens))
        fprintf(stderr, ", %lld tokens", (long long)json_integer_value(tokens));
    fputc('\n', stderr);
}

/* Prints what is still held, says why the exit code is not 0, and picks it. */
static int gather_finish(const struct cli *c, struct gather_run *run, int code)
{
    release_held(run, true);
    progress_clear(run);
    if (run->done && (run->progress || c->verbose))
        report_summary(run);
    if (code != CLI_EXIT_OK)
        return code;
    if (run->gather_failed)
        return CLI_EXIT_API;
    if (!run->done) {
        cli_err("the gather stream ended before its summary");
        return CLI_EXIT_API;
    }
    if (run->o->first) {
        if (run->winner)
            return CLI_EXIT_OK;
        cli_err("no item succeeded");
        return CLI_EXIT_API;
    }
    json_t *failed = json_object_get(run->summary, "failed");
    size_t n = run->failed;
    if (json_is_integer(failed) && (size_t)json_integer_value(failed) > n)
        n = (size_t)json_integer_value(failed);
    if (n == 0)
        return CLI_EXIT_OK;
    cli_err("%zu of %zu items failed", n, run->total);
    return CLI_EXIT_API;
}
