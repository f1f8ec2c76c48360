/* listener: the listening sockets — inherited from systemd (sd_listen_fds) or opened from
 * conf->listen — and their change on reload: kept by address, new ones opened, removed ones
 * closed once every worker has stopped watching them. Runs on the main thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/worker.h"

#define LISTEN_BACKLOG 4096

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);       /* a stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(err, errlen, "listen on unix:%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int listen_inet(const char *addr, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "bad listen address: %s", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen(h) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    int rc = getaddrinfo(h, colon + 1, &hints, &res);  /* start-up only: may block */
    if (rc) {
        snprintf(err, errlen, "listen on %s: %s", addr, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(err, errlen, "listen on %s: %s", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int listen_on(const char *addr, char *err, size_t errlen)
{
    return strncmp(addr, "unix:", 5) == 0 ? listen_unix(addr + 5, err, errlen)
                                          : listen_inet(addr, err, errlen);
}

static void free_addrs(char **addrs, unsigned n)
{
    for (unsigned i = 0; addrs && i < n; i++)
        free(addrs[i]);
    free(addrs);
}

int server_open_listeners(struct server *s, const struct conf *c, char *err, size_t errlen)
{
    int n = sd_listen_fds(1);
    if (n > 0) {
        s->listen_fds = calloc((size_t)n, sizeof(int));
        if (!s->listen_fds)
            return -1;
        for (int i = 0; i < n; i++) {
            s->listen_fds[i] = SD_LISTEN_FDS_START + i;
            set_nonblock(s->listen_fds[i]);
            fcntl(s->listen_fds[i], F_SETFD, FD_CLOEXEC);
        }
        s->nlisten = (unsigned)n;
        s->listen_inherited = true;
        log_info("using %d socket(s) from systemd; listen: is ignored", n);
        return 0;
    }
    s->listen_fds = calloc(c->nlisten ? c->nlisten : 1, sizeof(int));
    s->listen_addrs = calloc(c->nlisten ? c->nlisten : 1, sizeof(char *));
    if (!s->listen_fds || !s->listen_addrs)
        return -1;
    for (size_t i = 0; i < c->nlisten; i++) {
        int fd = listen_on(c->listen[i], err, errlen);
        if (fd < 0)
            return -1;
        s->listen_addrs[s->nlisten] = strdup(c->listen[i]);
        s->listen_fds[s->nlisten++] = fd;
        log_info("listening on %s", c->listen[i]);
    }
    return 0;
}

static int find_addr(char **addrs, unsigned n, const char *a)
{
    for (unsigned i = 0; i < n; i++)
        if (addrs[i] && strcmp(addrs[i], a) == 0)
            return (int)i;
    return -1;
}

/* Builds the new set: sockets whose address stays are kept open (no connection is dropped). */
static int build_set(struct server *s, const struct conf *c, int *fds, char **addrs,
                     char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nlisten; i++) {
        int k = find_addr(s->listen_addrs, s->nlisten, c->listen[i]);
        fds[i] = k >= 0 ? s->listen_fds[k] : listen_on(c->listen[i], err, errlen);
        addrs[i] = strdup(c->listen[i]);
        if (fds[i] < 0 || !addrs[i]) {
            for (size_t j = 0; j <= i; j++)     /* close only what this attempt opened */
                if (fds[j] >= 0 && find_addr(s->listen_addrs, s->nlisten, c->listen[j]) < 0)
                    close(fds[j]);
            return -1;
        }
        if (k < 0)
            log_info("listening on %s", c->listen[i]);
    }
    return 0;
}

static bool same_set(const struct server *s, const struct conf *c)
{
    if (c->nlisten != s->nlisten)
        return false;
    for (size_t i = 0; i < c->nlisten; i++)
        if (strcmp(c->listen[i], s->listen_addrs[i]) != 0)
            return false;
    return true;
}

int server_update_listeners(struct server *s, const struct conf *c, char *err, size_t errlen)
{
    if (s->listen_inherited || same_set(s, c))
        return 0;
    pthread_mutex_lock(&s->lock);
    bool busy = s->old_fds != NULL || s->drain;
    pthread_mutex_unlock(&s->lock);
    if (busy) {
        snprintf(err, errlen, "listeners are still being switched; listen: change not applied");
        return -1;
    }
    int *fds = calloc(c->nlisten ? c->nlisten : 1, sizeof(int));
    char **addrs = calloc(c->nlisten ? c->nlisten : 1, sizeof(char *));
    if (!fds || !addrs || build_set(s, c, fds, addrs, err, errlen) < 0) {
        free(fds);
        free_addrs(addrs, (unsigned)c->nlisten);
        return -1;
    }
    pthread_mutex_lock(&s->lock);
    s->old_fds = s->listen_fds;
    s->old_addrs = s->listen_addrs;
    s->old_n = s->nlisten;
    s->listen_fds = fds;
    s->listen_addrs = addrs;
    s->nlisten = (unsigned)c->nlisten;
    s->listen_switched = 0;
    s->listen_generation++;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* Called by each worker once it watches the new set; the last one closes what was removed. */
void server_listeners_switched(struct server *s)
{
    if (__atomic_add_fetch(&s->listen_switched, 1, __ATOMIC_ACQ_REL) != s->nworkers)
        return;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->old_n; i++) {
        if (find_addr(s->listen_addrs, s->nlisten, s->old_addrs[i]) >= 0)
            continue;
        log_info("no longer listening on %s", s->old_addrs[i]);
        if (strncmp(s->old_addrs[i], "unix:", 5) == 0)
            unlink(s->old_addrs[i] + 5);
        close(s->old_fds[i]);
    }
    free(s->old_fds);
    free_addrs(s->old_addrs, s->old_n);
    s->old_fds = NULL;
    s->old_addrs = NULL;
    s->old_n = 0;
    pthread_mutex_unlock(&s->lock);
}

void server_close_listeners(struct server *s)
{
    for (unsigned i = 0; i < s->nlisten && !s->listen_inherited; i++)
        if (s->listen_fds[i] >= 0)
            close(s->listen_fds[i]);
    free(s->listen_fds);
    free_addrs(s->listen_addrs, s->nlisten);
    s->listen_fds = NULL;
    s->listen_addrs = NULL;
    s->nlisten = 0;
}

/* True when every listening socket is a unix socket or bound to a loopback address, so only
 * clients on this host can connect (asked of the sockets: inherited ones have no address). */
bool server_listeners_local(const struct server *s)
{
    for (unsigned i = 0; i < s->nlisten; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(s->listen_fds[i], (struct sockaddr *)&ss, &len) < 0)
            return false;
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)&ss;
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&ss;
        bool local = ss.ss_family == AF_UNIX ||
                     (ss.ss_family == AF_INET && (ntohl(v4->sin_addr.s_addr) >> 24) == 127) ||
                     (ss.ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
        if (!local)
            return false;
    }
    return true;
}
