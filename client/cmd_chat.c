/* cmd_chat: `llmux chat` — one chat completion from arguments or stdin, or a multi-turn session
 * when stdin is a terminal. Streamed and whole answers print the same bytes: content + "\n". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/http.h"

enum { CHAT_OPT_STREAM = 0x200, CHAT_OPT_NO_STREAM, CHAT_OPT_JSON };

struct chat_opts {
    const char *model;
    const char *system;
    int stream;             /* 1, 0, or -1 = decide from stdout being a terminal */
    bool json;
};

/* State of one streamed answer. */
struct chat_stream {
    const struct chat_opts *o;
    struct buf *reply;      /* the assistant's text, kept for the next turn */
    bool done;              /* "data: [DONE]" seen */
    bool midline;           /* stdout's last byte is content, not a newline */
    char finish[32];        /* last finish_reason */
    json_t *usage;          /* from the last chunk that carried one */
};

static const char chat_usage[] =
    "Usage: llmux chat [-m MODEL] [-s SYSTEM] [--stream|--no-stream] [--json] [PROMPT...]\n"
    "Send a chat completion and print the answer. The prompt is the arguments joined by\n"
    "spaces, else all of stdin; with neither and stdin a terminal, start a multi-turn\n"
    "session (Ctrl-C stops a reply, Ctrl-D ends the session).\n"
    "  -m, --model MODEL    model to use (default $LLMUX_MODEL; 'llmux models' lists them)\n"
    "  -s, --system TEXT    system message sent before the conversation\n"
    "      --stream         print tokens as they arrive (default when stdout is a terminal)\n"
    "      --no-stream      wait for the whole answer\n"
    "      --json           print the raw response (streamed: one chunk per line); implies\n"
    "                       --no-stream unless --stream is given\n"
    "Global options (--url, --key, --timeout MS, -v) may come before or after the command.\n";

static int chat_parse(struct cli *c, int argc, char **argv, struct chat_opts *o);
static int chat_once(struct cli *c, const struct chat_opts *o, const char *prompt);
static int chat_session(struct cli *c, const struct chat_opts *o);
static int chat_send(struct cli *c, const struct chat_opts *o, json_t *messages,
                     struct buf *reply);

int cmd_chat(struct cli *c, int argc, char **argv)
{
    struct chat_opts o = {.stream = -1};
    struct buf prompt = BUF_INIT;
    int code = chat_parse(c, argc, argv, &o);
    if (code != CLI_EXIT_OK)
        return code == CLI_HANDLED ? CLI_EXIT_OK : code;
    if (o.stream < 0)
        o.stream = !o.json && isatty(STDOUT_FILENO);
    if (optind == argc && isatty(STDIN_FILENO))
        return chat_session(c, &o);
    for (int i = optind; i < argc; i++) {
        if ((i > optind && buf_puts(&prompt, " ") < 0) || buf_puts(&prompt, argv[i]) < 0)
            goto oom;
    }
    if (optind == argc) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
            if (buf_append(&prompt, chunk, n) < 0)
                goto oom;
        if (ferror(stdin)) {
            code = http_interrupted() ? CLI_EXIT_INTERRUPTED : CLI_EXIT_USAGE;
            cli_err("reading the prompt from stdin: %s", http_interrupted() ? "interrupted"
                                                                           : strerror(errno));
            goto out;
        }
        /* the newline that ends a file or an echo is not part of the question */
        while (prompt.len && (prompt.data[prompt.len - 1] == '\n'
                              || prompt.data[prompt.len - 1] == '\r'))
            prompt.data[--prompt.len] = '\0';
    }
    if (!prompt.len) {
        code = cli_usage_error(c, "the prompt is empty");
        goto out;
    }
    code = chat_once(c, &o, prompt.data);
    goto out;
oom:
    cli_err("out of memory");
    code = CLI_EXIT_USAGE;
out:
    buf_free(&prompt);
    return code;
}

static int chat_parse(struct cli *c, int argc, char **argv, struct chat_opts *o)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"model", required_argument, NULL, 'm'},
        {"system", required_argument, NULL, 's'},
        {"stream", no_argument, NULL, CHAT_OPT_STREAM},
        {"no-stream", no_argument, NULL, CHAT_OPT_NO_STREAM},
        {"json", no_argument, NULL, CHAT_OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "m:s:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': o->model = optarg; continue;
        case 's': o->system = optarg; continue;
        case CHAT_OPT_STREAM: o->stream = 1; continue;
        case CHAT_OPT_NO_STREAM: o->stream = 0; continue;
        case CHAT_OPT_JSON: o->json = true; continue;
        default: break;
        }
        switch (cli_common_opt(c, opt, optarg, argv)) {
        case CLI_OPT_DONE:
            break;
        case CLI_OPT_HELP:
            fputs(chat_usage, stdout);
            return CLI_HANDLED;
        case CLI_OPT_EXIT:
            return CLI_HANDLED;
        case CLI_OPT_BAD:
            return CLI_EXIT_USAGE;
        }
    }
    o->model = cli_model(o->model);
    if (!o->model)
        return cli_no_model(c);
    return cli_check(c) < 0 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
}

static int add_message(json_t *messages, const char *role, const char *content, size_t len)
{
    return json_array_append_new(messages, json_pack("{s:s, s:s%}", "role", role, "content",
                                                     content, len));
}

static json_t *start_messages(const struct chat_opts *o)
{
    json_t *messages = json_array();
    if (messages && o->system && add_message(messages, "system", o->system,
                                             strlen(o->system)) < 0) {
        json_decref(messages);
        return NULL;
    }
    return messages;
}

static int chat_once(struct cli *c, const struct chat_opts *o, const char *prompt)
{
    struct buf reply = BUF_INIT;
    json_t *messages = start_messages(o);
    int code = CLI_EXIT_USAGE;
    if (!messages || add_message(messages, "user", prompt, strlen(prompt)) < 0)
        cli_err("out of memory");
    else
        code = chat_send(c, o, messages, &reply);
    json_decref(messages);
    buf_free(&reply);
    return code;
}

/* One turn per line read; a failed or interrupted turn is dropped from the history, so the
 * next question is asked as if it had not happened. Ctrl-C at the prompt ends the session. */
static int chat_session(struct cli *c, const struct chat_opts *o)
{
    json_t *messages = start_messages(o);
    struct buf reply = BUF_INIT;
    char *line = NULL;
    size_t cap = 0;
    int code = CLI_EXIT_OK;
    if (!messages)
        goto oom;
    fprintf(stderr, "llmux chat with %s. Ctrl-C stops a reply, Ctrl-D ends.\n", o->model);
    for (;;) {
        fputs("> ", stderr);
        fflush(stderr);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            fputc('\n', stderr);
            code = http_interrupted() ? CLI_EXIT_INTERRUPTED : CLI_EXIT_OK;
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strspn(line, " \t") == (size_t)n)
            continue;
        if (add_message(messages, "user", line, (size_t)n) < 0)
            goto oom;
        buf_reset(&reply);
        if (chat_send(c, o, messages, &reply) != CLI_EXIT_OK) {
            json_array_remove(messages, json_array_size(messages) - 1);
            http_clear_interrupt();
            continue;
        }
        if (add_message(messages, "assistant", reply.data ? reply.data : "", reply.len) < 0)
            goto oom;
    }
    goto out;
oom:
    cli_err("out of memory");
    code = CLI_EXIT_USAGE;
out:
    free(line);
    buf_free(&reply);
    json_decref(messages);
    return code;
}

/* Prints a "data:" payload as one line: raw newlines in JSON can only sit between tokens, so
 * turning them into spaces keeps the text valid and the output one chunk per line. */
static void print_chunk_line(const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        fputc(data[i] == '\n' || data[i] == '\r' ? ' ' : data[i], stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void note_finish(struct chat_stream *st, const json_t *choice, const json_t *root)
{
    const char *fin = json_string_value(json_object_get(choice, "finish_reason"));
    if (fin)
        snprintf(st->finish, sizeof st->finish, "%s", fin);
    json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage)) {
        json_decref(st->usage);
        st->usage = json_incref(usage);
    }
}

/* Ends a half-printed answer before a diagnostic, so the two don't share a terminal line. */
static void end_line(struct chat_stream *st)
{
    if (st->midline)
        fputc('\n', stdout);
    fflush(stdout);
    st->midline = false;
}

/* A complete streamed answer gets the one newline a whole answer is printed with. */
static void on_stream_end(void *ud)
{
    struct chat_stream *st = ud;
    if (st->done && !st->o->json) {
        fputc('\n', stdout);
        st->midline = false;
    }
    end_line(st);
}

static int on_chunk(void *ud, const char *event, size_t event_len, const char *data,
                    size_t data_len)
{
    struct chat_stream *st = ud;
    if (data_len == 6 && !memcmp(data, "[DONE]", 6)) {
        st->done = true;
        return 0;
    }
    json_t *root = json_loadb(data, data_len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    if (!root || json_is_object(err) || (event_len == 5 && !memcmp(event, "error", 5))) {
        end_line(st);
        if (json_is_object(err))
            cli_api_error("the stream ended with an error", 0, err);
        else
            cli_err("the gateway sent a stream event that is not a chat chunk");
        json_decref(root);
        return -1;
    }
    if (st->o->json)
        print_chunk_line(data, data_len);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
    if (json_is_string(content)) {
        size_t n = json_string_length(content);
        if (!st->o->json && n) {
            fwrite(json_string_value(content), 1, n, stdout);
            fflush(stdout);
            st->midline = json_string_value(content)[n - 1] != '\n';
        }
        if (buf_append(st->reply, json_string_value(content), n) < 0) {
            end_line(st);
            cli_err("out of memory");
            json_decref(root);
            return -1;
        }
    }
    note_finish(st, choice, root);
    json_decref(root);
    return 0;
}

/* A whole (non-streamed) answer: the content, or the body itself with --json. */
static int print_whole(const struct chat_opts *o, const struct http_resp *rs,
                       struct chat_stream *st)
{
    json_t *root = json_loadb(rs->body.data ? rs->body.data : "", rs->body.len, 0, NULL);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "message"), "content");
    if (!json_is_object(root)) {
        cli_err("the gateway's answer is not a chat completion");
        json_decref(root);
        return CLI_EXIT_API;
    }
    if (o->json) {
        fwrite(rs->body.data, 1, rs->body.len, stdout);
        if (rs->body.data[rs->body.len - 1] != '\n')
            fputc('\n', stdout);
    }
    if (json_is_string(content)
        && buf_append(st->reply, json_string_value(content), json_string_length(content)) < 0) {
        cli_err("out of memory");
        json_decref(root);
        return CLI_EXIT_USAGE;
    }
    if (!o->json)
        printf("%s\n", st->reply->data ? st->reply->data : "");
    note_finish(st, choice, root);
    json_decref(root);
    return CLI_EXIT_OK;
}

static void report_finish(const struct chat_stream *st)
{
    if (st->finish[0]) {
        fputs("* finish: ", stderr);
        cli_put_clean(stderr, st->finish, strlen(st->finish));
        fputc('\n', stderr);
    }
    json_t *p = json_object_get(st->usage, "prompt_tokens");
    json_t *k = json_object_get(st->usage, "completion_tokens");
    if (json_is_integer(p) && json_is_integer(k))
        fprintf(stderr, "* tokens: %lld prompt, %lld completion\n",
                (long long)json_integer_value(p), (long long)json_integer_value(k));
}

static int chat_send(struct cli *c, const struct chat_opts *o, json_t *messages,
                     struct buf *reply)
{
    struct chat_stream st = {.o = o, .reply = reply};
    struct http_resp rs;
    json_t *body = json_pack("{s:s, s:O, s:b}", "model", o->model, "messages", messages,
                             "stream", o->stream);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        cli_err("out of memory");
        return CLI_EXIT_USAGE;
    }
    struct http_req rq = {
        .method = "POST", .path = "/v1/chat/completions", .body = text,
        .body_len = strlen(text), .deadline_ms = c->timeout_ms,
        .on_event = o->stream ? on_chunk : NULL, .on_end = on_stream_end, .ud = &st,
    };
    int code = http_call(c, &rq, &rs);
    if (code == CLI_EXIT_OK && !rs.streamed) {
        code = print_whole(o, &rs, &st);
    } else if (code == CLI_EXIT_OK && !st.done) {
        cli_err("the answer stopped before its end (no [DONE] from the gateway)");
        code = CLI_EXIT_API;
    }
    if (c->verbose)
        report_finish(&st);
    json_decref(st.usage);
    http_resp_free(&rs);
    free(text);
    return code;
}
