/* Unit tests for server_listeners_local (daemon/listener.c): which listening sockets count as
 * reachable from this host only — the line between the info and the warn of an open gateway. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/worker.h"

static int bound_inet(const char *ip)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static bool local(int *fds, unsigned n)
{
    struct server s = {.listen_fds = fds, .nlisten = n};
    return server_listeners_local(&s);
}

static void test_loopback_and_unix_are_local(void **state)
{
    int pair[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
    int fds[] = {bound_inet("127.0.0.1"), bound_inet("127.1.2.3"), pair[0]};
    assert_true(local(fds, 3));
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    close(pair[1]);
}

static void test_any_other_address_is_not(void **state)
{
    /* Unbound: 0.0.0.0, what listen: ["0.0.0.0:8420"] would give; nothing listens. */
    int any = socket(AF_INET, SOCK_STREAM, 0), lo = bound_inet("127.0.0.1");
    int any6 = socket(AF_INET6, SOCK_STREAM, 0);
    int fds[] = {lo, any}, fds6[] = {any6};
    assert_false(local(fds, 2));
    assert_false(local(fds6, 1));
    int bad[] = {-1};
    assert_false(local(bad, 1));
    close(any);
    close(lo);
    close(any6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_and_unix_are_local),
        cmocka_unit_test(test_any_other_address_is_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
