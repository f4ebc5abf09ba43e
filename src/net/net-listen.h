/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Listening sockets: taken from the service manager by name (socket activation), or bound from a configured
 * address, then served by a Listener on sd-event.
 *
 *   r = listen_fds_take("grpc", &fds, &n);          the fds of the socket unit's FileDescriptorName=grpc
 *   if (r == 0)                                      no socket unit: bind the configured address
 *           r = listen_bind(&config->grpc_address, LISTEN_BACKLOG_DEFAULT, &fd);
 *   … listener_new() for each fd …
 *   listen_fds_unclaimed(&names);                    once every taker ran: warn about the rest
 *
 * A Listener accepts in batches and hands each connection to its owner. It never accepts more than its
 * connection cap: at the cap it stops polling the socket, so a burst waits in the kernel's backlog instead
 * of being accepted and closed, and it resumes as soon as the owner reports a connection closed. When the
 * process or the system runs out of file descriptors (or kernel memory) it stops polling and retries after
 * LISTENER_RETRY_USEC, never spinning on a socket that stays readable. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "parse-util.h"
#include "time-util.h"

/* Most fds accepted from the service manager (LISTEN_FDS); more makes listen_fds_take() fail with -E2BIG. */
#define LISTEN_FDS_MAX 1024
/* systemd's limit on a FileDescriptorName=. */
#define LISTEN_FDNAME_MAX 255
/* listen(2) backlog bounds for listen_bind(); the kernel further caps it at net.core.somaxconn. */
#define LISTEN_BACKLOG_DEFAULT 1024
#define LISTEN_BACKLOG_MAX 65535
/* "[v6]:port", "1.2.3.4:port", or an AF_UNIX path ("@name" for the abstract namespace), with the NUL. */
#define LISTEN_ADDRESS_STRING_MAX HOST_PORT_STRING_MAX

/* The fds the service manager passed under FDNAME name ("unknown" for fds passed without a name), in the
 * order they were passed, each checked to be a listening SOCK_STREAM socket and made CLOEXEC and
 * NONBLOCK. The caller owns them and the array (free()). Other names stay available to other takers; an
 * fd is handed out once, so a second call for the same name finds none.
 *
 * The environment is read on the first call of any listen_fds_*() function in the process and then
 * cleared (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), so that programs we spawn never see it; the list is
 * kept for later calls. Returns the number of fds (0 with *ret_fds = NULL, *ret_n = 0 when there are none,
 * including when the process was not socket-activated). Errors, with nothing handed out and the fds left
 * in the list (see listen_fds_unclaimed()):
 *   -EINVAL          name is empty, longer than LISTEN_FDNAME_MAX, or holds ':' or a control character;
 *                    or the environment is malformed (e.g. LISTEN_FDNAMES does not match LISTEN_FDS)
 *   -E2BIG           more than LISTEN_FDS_MAX fds were passed
 *   -ENOTSOCK        one of the fds is not a socket (e.g. a pipe)
 *   -ESOCKTNOSUPPORT one of them is a socket but not SOCK_STREAM (e.g. ListenDatagram=)
 *   -EBADFD          one of them is a stream socket that is not listening (e.g. Accept=yes)
 * Environment errors are remembered and returned by every later call. */
int listen_fds_take(const char *name, int **ret_fds, size_t *ret_n);

/* The names of the passed fds nobody has taken so far, one entry per fd, in passing order (a strv the
 * caller frees; NULL when none). Returns their number, or an environment error as above. Meant for a
 * warning once every taker ran, e.g. "Ignoring socket passed as '%s'." */
int listen_fds_unclaimed(char ***ret_names);

/* Closes every passed fd nobody has taken, so a stray socket does not keep its port bound with nobody
 * accepting. Returns how many were closed, or an environment error. */
int listen_fds_close_unclaimed(void);

/* A new socket(AF_INET or AF_INET6, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK) with SO_REUSEADDR, and
 * IPV6_V6ONLY for IPv6 so that "[::]:p" and "0.0.0.0:p" can both be configured, bound to addr and
 * listening. addr must be an address literal: a name (family AF_UNSPEC) gives -EINVAL, as does a host
 * that is not an address of the given family. Port 0 binds an ephemeral port (see listen_get_local()).
 * backlog outside 1–LISTEN_BACKLOG_MAX gives -ERANGE. Other errors are those of the system calls
 * (-EADDRINUSE, -EADDRNOTAVAIL, -EACCES, -EAFNOSUPPORT, …). */
int listen_bind(const HostPort *addr, int backlog, int *ret_fd);

/* Formats the address fd is bound to: "127.0.0.1:8443", "[::1]:8443", "/run/x.sock" or "@abstract" for
 * AF_UNIX ("" unnamed). LISTEN_ADDRESS_STRING_MAX bytes are always enough; a smaller buffer that cannot
 * hold the result gives -ENOBUFS and is left untouched. -EAFNOSUPPORT for other families. */
int listen_get_local(int fd, char *buf, size_t size);

/* Default and largest connection caps of a Listener. */
#define LISTENER_CONNECTIONS_DEFAULT 4096U
#define LISTENER_CONNECTIONS_MAX (1024U * 1024U)
/* Most connections accepted per wakeup before other event sources get their turn. */
#define LISTENER_ACCEPT_BATCH 64U
/* Delay before accepting again after running out of fds or memory. */
#define LISTENER_RETRY_USEC (100 * USEC_PER_MSEC)

typedef struct Listener Listener;

typedef enum ListenerState {
        LISTENER_ACTIVE,        /* polling the socket */
        LISTENER_FULL,          /* at the connection cap: not polling until a connection closes */
        LISTENER_THROTTLED,     /* out of fds or memory: not polling until the retry timer fires */
        LISTENER_FAILED,        /* accept() failed for good (e.g. the socket was shut down); see on_error */
} ListenerState;

typedef struct ListenerCallbacks {
        /* A new connection, fd owned by the callee (NONBLOCK, CLOEXEC), peer its address. Return >= 0 when
         * the connection is kept: it counts towards the cap until listener_connection_closed(). Return < 0
         * when it was dropped (fd closed by the callee): it does not count — so do not ALSO call
         * listener_connection_closed() for it, or the count is decremented twice and the cap drifts up.
         * The listener may be freed from here. Required. */
        int (*on_accept)(Listener *l, int fd, const struct sockaddr_storage *peer, void *userdata);
        /* Accepting failed: called once when the listener becomes THROTTLED (-EMFILE, -ENFILE, -ENOBUFS,
         * -ENOMEM; not again until an accept succeeds) so the owner can warn, and once when it becomes
         * FAILED (any other error). Optional. The listener may be freed from here. */
        void (*on_error)(Listener *l, int error, void *userdata);
} ListenerCallbacks;

/* Serves fd, a listening stream socket (made NONBLOCK here), on event. Takes ownership of fd in every case,
 * also on failure: -ENOTSOCK/-ESOCKTNOSUPPORT/-EBADFD as for listen_fds_take(), -EINVAL without on_accept.
 * The event sources are described "listener:<local address>" and "listener-retry:<local address>". */
int listener_new(sd_event *event, int fd, const ListenerCallbacks *callbacks, void *userdata,
                 Listener **ret);
/* Stops accepting and closes the socket. Connections already accepted are the owner's. */
Listener *listener_free(Listener *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(Listener *, listener_free);

/* The cap on open connections, 1–LISTENER_CONNECTIONS_MAX (-ERANGE otherwise). Lowering it below the
 * current count closes nothing: the listener just waits until enough have closed. */
int listener_set_max_connections(Listener *l, unsigned max);
/* The owner's connection (one on_accept returned >= 0 for) has ended. */
void listener_connection_closed(Listener *l);

unsigned listener_get_connections(const Listener *l);
unsigned listener_get_max_connections(const Listener *l);
ListenerState listener_get_state(const Listener *l);
int listener_get_fd(const Listener *l);
/* "127.0.0.1:8443", for logs. */
const char *listener_get_address(const Listener *l);
void *listener_get_userdata(const Listener *l);
