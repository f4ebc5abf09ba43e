/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* CONNECT byte streams (RFC 9113 §8.5): a ConnectPipe relays bytes between one HTTP/2 CONNECT stream and
 * one local stream socket, both ways, inside the session's sd-event loop.
 *
 *   tunneler:  connect_pipe_open(session, "db.internal:5432", app_fd, …)  sends CONNECT, waits for 2xx
 *   connector: connect_pipe_accept(stream, target_fd, …)                  answers 200 and relays
 *              connect_reject(stream, 403 | 502 | 504)                     answers with no body
 *
 * Backpressure is the point. HTTP/2 → socket: received DATA is queued and h2_stream_consume() is called
 * only for bytes the socket has accepted, so a local reader that stops reading stalls the remote sender
 * through flow control; the queue never holds more than our stream window. It is written out once HTTP/2
 * has handed over what it read in one round (fewer, larger writes), by EPOLLOUT while the socket is full.
 * Socket → HTTP/2: we read into a queue of at most CONNECT_BUFFER_MAX bytes that HTTP/2 drains as the
 * peer's window allows; when it is full we stop polling the socket and resume once it has drained below
 * half.
 *
 * Half-close: EOF on the socket ends our side of the stream (END_STREAM) while the other direction keeps
 * flowing; the peer's END_STREAM becomes shutdown(SHUT_WR) once everything before it was written. The pipe
 * ends when both directions are done, or on the first error: a socket error resets the stream (CANCEL); a
 * stream reset, or the session going away, closes the socket with SO_LINGER 0 so the local application
 * sees a reset rather than a clean end of data (TCP; an AF_UNIX peer just sees the close).
 *
 * A pipe holds a reference on its session. on_close is called exactly once, from the event loop (or from
 * connect_pipe_abort()); the socket is closed and the pipe freed right after it returns. */

#include <stdbool.h>
#include <stdint.h>

#include "net-h2.h"
#include "parse-util.h"
#include "time-util.h"

/* Most bytes read from the socket and not yet taken by HTTP/2 (socket → peer direction). */
#define CONNECT_BUFFER_MAX (256U * 1024U)
/* Most bytes read from the socket at once. */
#define CONNECT_READ_CHUNK (64U * 1024U)
/* Most bytes received from the peer and not yet written to the socket. Flow control keeps this at or below
 * our stream window, so sessions carrying CONNECT streams must not advertise a larger stream window; a
 * peer overrunning it has its stream reset. */
#define CONNECT_RECEIVE_MAX (16U * 1024U * 1024U)
/* Longest ":authority" accepted: a host name, an IPv4 or a bracketed IPv6 address, ':', a port. */
#define CONNECT_AUTHORITY_MAX (HOST_PORT_STRING_MAX - 1)

typedef struct ConnectPipe ConnectPipe;

typedef struct ConnectStats {
        uint64_t bytes_up;   /* read from the socket and handed to HTTP/2 for the peer */
        uint64_t bytes_down; /* received from the peer and written to the socket */
        usec_t start, end;   /* CLOCK_MONOTONIC; end is set when the pipe closes */
} ConnectStats;

typedef struct ConnectPipeCallbacks {
        /* Client only: the response status. Called for 2xx before any byte is relayed, and for any other
         * status right before on_close, both while the socket is still open (a SOCKS front-end writes its
         * reply to it here, see connect_pipe_get_fd()). Optional. */
        void (*on_response)(ConnectPipe *p, unsigned status, void *userdata);
        /* The pipe is over: 0 after a clean close of both directions, else why (the socket's error,
         * -ECONNRESET when the peer reset the stream or the session went away, -ETIMEDOUT on the idle
         * timeout, -ECANCELED from connect_pipe_abort(), connect_status_to_errno() of a refusal).
         * Called exactly once; the socket is closed and the pipe freed after it returns. */
        void (*on_close)(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata);
} ConnectPipeCallbacks;

/* Client (tunneler): sends CONNECT for authority ("host:port", "[v6]:port") on a new stream of session and
 * relays fd once the response is 2xx. Takes ownership of fd (a connected stream socket, made non-blocking
 * here) in every case, also on failure. -EINVAL for a bad authority, -EBADF/-ENOTSOCK/-ESOCKTNOSUPPORT for a
 * bad fd, -ENOTCONN/-EBUSY from the session. ret may be NULL. */
int connect_pipe_open(H2Session *session, const char *authority, int fd,
                      const ConnectPipeCallbacks *callbacks, void *userdata, ConnectPipe **ret);

/* Server (connector): answers the CONNECT request on stream (still open, from on_request or later) with
 * :status 200 and relays fd. Takes ownership of fd in every case; on failure the stream is left to the
 * caller (connect_reject() or h2_stream_reset() it). ret may be NULL. */
int connect_pipe_accept(H2Stream *stream, int fd, const ConnectPipeCallbacks *callbacks, void *userdata,
                        ConnectPipe **ret);

/* Server: answers the CONNECT request with a 4xx/5xx status and no body (403 denied by policy, 502 target
 * refused, 504 target timed out); -EINVAL for other statuses. The stream's callbacks are detached: the
 * caller hears nothing more about it. */
int connect_reject(H2Stream *stream, unsigned http_status);

/* Ends the pipe now: resets the stream, closes the socket with SO_LINGER 0, calls on_close(-ECANCELED).
 * Safe from within the pipe's own callbacks; a no-op once on_close has run. */
void connect_pipe_abort(ConnectPipe *p);

/* Resets the pipe (on_close -ETIMEDOUT) after no byte moved either way for timeout; 0 or USEC_INFINITY
 * turns it off. On a client pipe the clock also runs while the response is awaited. */
int connect_pipe_set_idle_timeout(ConnectPipe *p, usec_t timeout);

/* The local socket, valid until on_close returns. */
int connect_pipe_get_fd(const ConnectPipe *p);
/* The stream, or NULL once it is closed. */
H2Stream *connect_pipe_get_stream(const ConnectPipe *p);
void *connect_pipe_get_userdata(const ConnectPipe *p);
/* Counters so far (end is 0 while the pipe is open). */
void connect_pipe_get_stats(const ConnectPipe *p, ConnectStats *ret);
/* Bytes waiting in each direction right now: up (socket → peer) and down (peer → socket). */
void connect_pipe_get_queued(const ConnectPipe *p, size_t *ret_up, size_t *ret_down);

/* Parses a CONNECT target: "name:port", "1.2.3.4:port" or "[v6-address]:port" by parse_host_port()'s rules,
 * the port mandatory. -EINVAL for anything malformed, a port out of range included. ret may be NULL. */
int connect_authority_parse(const char *authority, HostPort *ret);

/* Server: checks that a request header block is a plain CONNECT (RFC 9113 §8.5) and returns its
 * :authority (borrowed from h). -EOPNOTSUPP for other methods and extended CONNECT (:protocol), -EBADMSG
 * when :scheme or :path is present, -EINVAL for a missing or malformed :authority. */
int connect_request_parse(const H2Headers *h, const char **ret_authority);

/* Client: the errno a CONNECT response status stands for: 0 for 2xx, -EACCES for 403, -ECONNREFUSED for
 * 502, -ETIMEDOUT for 504, -EPROTO for anything else. */
int connect_status_to_errno(unsigned status);
