/* conn: one accepted client socket — read buffer, write queue, the header/body/idle/send timer,
 * strict in-order handling of pipelined requests, and its close. Owned by its worker. */
#ifndef LLMUX_CONN_H
#define LLMUX_CONN_H

#include <stdbool.h>
#include <sys/socket.h>

struct worker;
struct conn;

/* Takes a non-blocking accepted socket and its peer's address (for the access log); closes
 * the socket when out of memory. */
void conn_accept(struct worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len);
/* Draining: closes connections with no request in flight (at their next idle moment). */
void conn_drain_idle(struct worker *w);
/* Grace expired: ends every request still running with 503 and closes everything. */
void conn_abort_all(struct worker *w);

#endif
