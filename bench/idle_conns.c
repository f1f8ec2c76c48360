/* idle_conns: bench/run.sh's idle keep-alive load — opens COUNT connections to 127.0.0.1:PORT,
 * sends one GET PATH on each and reads the answer, then holds them idle until SIGTERM. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FD_SPARE 32                 /* descriptors a child keeps for stdio and its pipe */
#define PER_SOURCE 16000            /* connections per loopback source address */
#define IO_TIMEOUT_S 10
#define SETTLE_MS 300               /* wait before counting connections the server closed */
#define MAX_CHILDREN 64

struct idle_job {
    int port;
    const char *path;
    long first, count;              /* this child's slice of the connection numbers */
    long nsources;
};

static volatile sig_atomic_t idle_stop;

static void on_stop(int sig)
{
    (void)sig;
    idle_stop = 1;
}

/* Sleeps until SIGTERM or SIGINT; blocking them first means one that arrives between the
 * check and the sleep is not lost. */
static void idle_wait_stop(void)
{
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, &old);
    while (!idle_stop)
        sigsuspend(&old);
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* Bind before connect spreads connections over 127.0.0.1..N; IP_BIND_ADDRESS_NO_PORT defers
 * the port choice to connect(), so each source has the whole ephemeral range per 4-tuple. */
static int idle_connect(const struct idle_job *j, long n)
{
    struct sockaddr_in src = {.sin_family = AF_INET};
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->port)};
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    int one = 1;
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)(n % j->nsources));
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one response: headers, then Content-Length bytes or chunks up to the last one.
 * Returns the status code, or -1 when the connection failed or closed first. */
static int idle_read_response(int fd)
{
    char b[16384];
    size_t len = 0;
    char *hend = NULL;
    while (!hend) {
        if (len == sizeof b - 1)
            return -1;
        ssize_t r = read(fd, b + len, sizeof b - 1 - len);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        b[len] = '\0';
        hend = strstr(b, "\r\n\r\n");
    }
    int status = (int)strtol(b + 9, NULL, 10);
    size_t have = len - (size_t)(hend + 4 - b);
    const char *cl = strcasestr(b, "\r\ncontent-length:");
    int chunked = strcasestr(b, "\r\ntransfer-encoding: chunked") != NULL;
    if (cl && cl < hend) {
        size_t want = strtoul(cl + 17, NULL, 10);
        while (have < want) {
            ssize_t r = read(fd, b, sizeof b);
            if (r <= 0)
                return -1;
            have += (size_t)r;
        }
    } else if (chunked) {
        /* The tail of what was read so far ends with the last chunk once the body is done. */
        while (len < 5 || memcmp(b + len - 5, "0\r\n\r\n", 5) != 0) {
            ssize_t r = read(fd, b, sizeof b);
            if (r <= 0)
                return -1;
            len = (size_t)r;
        }
    }
    return status;
}

/* One child: opens its slice, then counts the connections still open after a short settle.
 * Writes "open failed\n" to out, then holds them until SIGTERM. */
static void idle_child(const struct idle_job *j, int out)
{
    int *fds = calloc((size_t)j->count, sizeof *fds);
    long open = 0, failed = 0;
    char req[512];
    int rlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", j->path);
    for (long i = 0; fds && i < j->count && !idle_stop; i++) {
        int fd = idle_connect(j, j->first + i);
        int st = -1;
        if (fd >= 0 && write(fd, req, (size_t)rlen) == rlen)
            st = idle_read_response(fd);
        if (st < 200 || st > 299) {
            if (!failed)
                fprintf(stderr, "idle_conns: connection %ld: %s\n", j->first + i,
                        fd < 0 ? strerror(errno) : st < 0 ? "no response" : "not 2xx");
            if (fd >= 0)
                close(fd);
            failed++;
            continue;
        }
        fds[open++] = fd;
    }
    struct timespec settle = {.tv_nsec = SETTLE_MS * 1000000L};
    nanosleep(&settle, NULL);
    long still = 0;
    for (long i = 0; i < open; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) == 0)
            still++;
    }
    dprintf(out, "%ld %ld\n", still, failed + (open - still));
    close(out);
    idle_wait_stop();
    _exit(0);
}

static long idle_fd_budget(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur <= FD_SPARE * 2)
        return 1000;
    return (long)rl.rlim_cur - FD_SPARE;
}

static void idle_usage(void)
{
    fputs("usage: idle_conns PORT COUNT PATH\n"
          "Opens COUNT keep-alive connections to 127.0.0.1:PORT, one GET PATH on each, prints\n"
          "'READY <open> <failed>' and holds them until SIGTERM or SIGINT.\n", stderr);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        idle_usage();
        return 2;
    }
    struct idle_job j = {.port = atoi(argv[1]), .path = argv[3]};
    long total = atol(argv[2]), per_child = idle_fd_budget();
    long nchildren = (total + per_child - 1) / per_child;
    if (j.port <= 0 || j.port > 65535 || total <= 0 || nchildren > MAX_CHILDREN) {
        idle_usage();
        return 2;
    }
    j.nsources = (total + PER_SOURCE - 1) / PER_SOURCE;
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pid_t kids[MAX_CHILDREN];
    int pipes[MAX_CHILDREN];
    long n = 0;
    for (; n < nchildren; n++) {
        int p[2];
        if (pipe(p) < 0)
            break;
        j.first = n * per_child;
        j.count = total - j.first < per_child ? total - j.first : per_child;
        kids[n] = fork();
        if (kids[n] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            close(p[0]);
            idle_child(&j, p[1]);
        }
        close(p[1]);
        if (kids[n] < 0) {
            close(p[0]);
            break;
        }
        pipes[n] = p[0];
    }
    long open = 0;
    for (long i = 0; i < n; i++) {
        char line[64] = "";
        long o = 0, f = 0;
        FILE *in = fdopen(pipes[i], "r");
        if (in && fgets(line, sizeof line, in) && sscanf(line, "%ld %ld", &o, &f) == 2)
            open += o;
        if (in)
            fclose(in);
    }
    printf("READY %ld %ld\n", open, total - open);
    fflush(stdout);
    idle_wait_stop();
    for (long i = 0; i < n; i++)
        kill(kids[i], SIGTERM);
    for (long i = 0; i < n; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}
