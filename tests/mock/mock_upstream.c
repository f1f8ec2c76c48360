/* mock_upstream: the mock LLM upstream used by llmux's tests and benchmarks — main, the
 * 127.0.0.1 listener, signals, logging and the /__ control endpoints (stats, reset, last
 * request). Connections live in mock_conn.c. Reference: tests/mock/README.md. */
#include "tests/mock/mock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_PAUSE 0.1            /* seconds without accepting after EMFILE */

/* A stderr nobody reads must never stall the loop: a line that can't go out at once is lost. */
void mock_log(const struct mock_server *s, const char *fmt, ...)
{
    char line[512];
    if (s->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    for (int i = 0; i < n - 1; i++)  /* request bytes must not split or forge lines */
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    struct pollfd p = {.fd = 2, .events = POLLOUT};
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLOUT)) {
        ssize_t w = write(2, line, (size_t)n);
        (void)w;
    }
}

int mock_control(struct mock_server *s, const char *method, size_t method_len,
                 const char *target, size_t target_len, struct buf *out)
{
    struct mock_stats *st = &s->st;
    bool post = method_len == 4 && memcmp(method, "POST", 4) == 0;
    if (http_target_is(target, target_len, "/__stats")) {
        buf_printf(out, "{\"received\":%lu,\"completed\":%lu,\"aborted\":%lu,"
                   "\"inflight\":%ld,\"connections\":%ld,\"accepted\":%lu,\"resets\":%lu,"
                   "\"last_abort_ns\":%llu}",
                   st->received, st->completed, st->aborted, st->inflight, st->connections,
                   st->accepted, st->resets, st->last_abort_ns);
        return 200;
    }
    if (http_target_is(target, target_len, "/__reset") && post) {
        st->received = st->completed = st->aborted = st->accepted = st->resets = 0;
        mock_fails_clear(&s->fails);
        s->have_last = false;
        buf_puts(out, "{\"reset\":true}");
        return 200;
    }
    if (http_target_is(target, target_len, "/__last") && s->have_last) {
        mock_last_json(out, &s->last_head, &s->last_body);
        return 200;
    }
    if (http_target_is(target, target_len, "/__last")) {
        buf_puts(out, "{\"error\":\"mock: no API request received yet\"}");
        return 404;
    }
    buf_puts(out, "{\"error\":\"mock: unknown control endpoint\"}");
    return 404;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mock_server *s = w->data;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            mock_conn_new(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Level-triggered accept would fire again at once: pause instead of spinning. */
            ev_io_stop(loop, &s->accept_w);
            ev_timer_set(&s->accept_pause, ACCEPT_PAUSE, 0.);
            ev_timer_start(loop, &s->accept_pause);
            mock_log(s, "mock: accept: %s, pausing\n", strerror(errno));
        }
        return;
    }
}

static void on_accept_pause(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct mock_server *s = w->data;
    ev_io_start(loop, &s->accept_w);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* Accepts "127.0.0.1:PORT", "localhost:PORT", ":PORT", "PORT" or "0". */
static int parse_listen(const char *arg, int *port)
{
    const char *colon = strrchr(arg, ':'), *p = colon ? colon + 1 : arg;
    if (colon) {
        size_t hl = (size_t)(colon - arg);
        if (hl && !(hl == 9 && !memcmp(arg, "127.0.0.1", 9)) &&
            !(hl == 9 && !memcmp(arg, "localhost", 9)))
            return -1;
    }
    char *end;
    long v = strtol(p, &end, 10);
    if (*p == '\0' || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

static int server_listen(struct mock_server *s, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t alen = sizeof a;
    int one = 1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0)
        return -1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(s->lfd, SOMAXCONN) < 0 ||
        getsockname(s->lfd, (struct sockaddr *)&a, &alen) < 0) {
        close(s->lfd);
        return -1;
    }
    return ntohs(a.sin_port);
}

static void server_run(struct mock_server *s)
{
    ev_io_init(&s->accept_w, on_accept, s->lfd, EV_READ);
    ev_init(&s->accept_pause, on_accept_pause);
    ev_signal_init(&s->sig_term, on_signal, SIGTERM);
    ev_signal_init(&s->sig_int, on_signal, SIGINT);
    s->accept_w.data = s->accept_pause.data = s;
    ev_io_start(s->loop, &s->accept_w);
    ev_signal_start(s->loop, &s->sig_term);
    ev_signal_start(s->loop, &s->sig_int);
    ev_run(s->loop, 0);
    while (s->conns)
        mock_conn_free(s->conns, false);
    ev_io_stop(s->loop, &s->accept_w);
    ev_timer_stop(s->loop, &s->accept_pause);
    ev_signal_stop(s->loop, &s->sig_term);
    ev_signal_stop(s->loop, &s->sig_int);
    close(s->lfd);
}

static void usage(void)
{
    fputs("usage: mock_upstream [--listen 127.0.0.1:PORT|PORT|0] [--quiet]\n"
          "Serves mock OpenAI and Anthropic APIs on 127.0.0.1; prints 'LISTENING <port>'.\n"
          "See tests/mock/README.md for endpoints and @mock: directives.\n", stderr);
}

int main(int argc, char **argv)
{
    struct mock_server s = {.lfd = -1};
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quiet")) {
            s.quiet = true;
        } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            if (parse_listen(argv[++i], &port) < 0) {
                fprintf(stderr, "mock_upstream: bad --listen '%s' (want 127.0.0.1:PORT, PORT "
                        "or 0)\n", argv[i]);
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    s.loop = ev_default_loop(0);
    if (!s.loop) {
        fputs("mock_upstream: cannot start libev\n", stderr);
        return 1;
    }
    port = server_listen(&s, port);
    if (port < 0) {
        fprintf(stderr, "mock_upstream: listen: %s\n", strerror(errno));
        return 1;
    }
    printf("LISTENING %d\n", port);
    fflush(stdout);
    server_run(&s);
    buf_free(&s.last_head);
    buf_free(&s.last_body);
    mock_fails_clear(&s.fails);
    ev_loop_destroy(s.loop);
    return 0;
}
