/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "bytequeue.h"
#include "log.h"
#include "net-connect.h"

struct ConnectPipe {
        unsigned n_ref;
        H2Session *session;
        H2Stream *stream;            /* NULL once the stream is closed */
        sd_event *event;
        sd_event_source *io_source;
        sd_event_source *write_source; /* defer: writes what HTTP/2 delivered, after its batch */
        sd_event_source *idle_source;
        int fd;
        bool client;

        ConnectPipeCallbacks callbacks;
        void *userdata;

        ByteQueue up;                /* socket → peer */
        ByteQueue down;              /* peer → socket */

        bool established;            /* 2xx sent (server) or received (client): bytes may flow */
        bool read_paused;            /* up is full: the socket is not polled for input */
        bool write_blocked;          /* the socket refused more (EAGAIN): wait for EPOLLOUT */
        bool fd_eof;                 /* EOF read from the socket */
        bool up_ended;               /* read_body reported the end: END_STREAM is on its way */
        bool peer_ended;             /* END_STREAM received */
        bool fd_shut;                /* shutdown(SHUT_WR) done after the peer's END_STREAM */
        bool stream_done;            /* the stream closed cleanly, both ways ended */
        bool finished;               /* on_close delivered */
        int error_hint;              /* why we had HTTP/2 reset the stream: reported, not -ECONNRESET */

        uint32_t io_events;          /* epoll mask in effect; 0 = source off */
        usec_t idle_timeout;         /* 0 = none */
        usec_t last_activity;
        ConnectStats stats;
};

static ConnectPipe *pipe_ref(ConnectPipe *p) {
        assert(p);
        p->n_ref++;
        return p;
}

static ConnectPipe *pipe_unref(ConnectPipe *p) {
        if (!p || --p->n_ref > 0)
                return NULL;
        sd_event_source_disable_unref(p->io_source);
        sd_event_source_disable_unref(p->write_source);
        sd_event_source_disable_unref(p->idle_source);
        safe_close(p->fd);
        byte_queue_done(&p->up, false);
        byte_queue_done(&p->down, false);
        sd_event_unref(p->event);
        h2_session_unref(p->session);
        return mfree(p);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(ConnectPipe *, pipe_unref);

/* A stream whose pipe is gone: DATA credit goes straight back (on_data unset), nothing is called. */
static const H2StreamCallbacks detached_callbacks = {};

static void socket_set_linger_zero(int fd) {
        /* SO_LINGER 0 turns close() into a TCP RST: the application sees the reset, not a clean EOF. */
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

/* Ends the pipe once: resets the stream if it is still open, tells the owner, closes the socket (with a
 * reset when abortive), and drops the pipe's own reference. */
static void pipe_finish(ConnectPipe *p, int error, bool abortive) {
        if (p->finished)
                return;
        p->finished = true;
        p->stats.end = now(CLOCK_MONOTONIC);
        p->io_source = sd_event_source_disable_unref(p->io_source);
        p->write_source = sd_event_source_disable_unref(p->write_source);
        p->idle_source = sd_event_source_disable_unref(p->idle_source);

        if (p->stream) {
                (void) h2_stream_reset(p->stream, H2_CANCEL);
                h2_stream_set_callbacks(p->stream, &detached_callbacks, NULL);
                p->stream = NULL;
        }
        log_debug("CONNECT pipe closed: %s, %" PRIu64 " bytes up, %" PRIu64 " bytes down",
                  error < 0 ? strerror(-error) : "done", p->stats.bytes_up, p->stats.bytes_down);

        pipe_ref(p);
        if (p->callbacks.on_close)
                p->callbacks.on_close(p, error, &p->stats, p->userdata);
        if (abortive && p->fd >= 0)
                socket_set_linger_zero(p->fd);
        p->fd = safe_close(p->fd);
        byte_queue_done(&p->up, false);
        byte_queue_done(&p->down, false);
        pipe_unref(p);
        pipe_unref(p);
}

static void pipe_activity(ConnectPipe *p) {
        if (p->idle_timeout > 0)
                (void) sd_event_now(p->event, CLOCK_MONOTONIC, &p->last_activity);
}

/* Polls the socket for what we can use: input while established, not at EOF and with room in up; output
 * only after the socket refused bytes (otherwise the write source writes without asking epoll). */
static void pipe_update_io(ConnectPipe *p) {
        uint32_t events = 0;
        int r;

        if (p->finished || !p->io_source)
                return;
        if (p->established && !p->fd_eof && !p->read_paused)
                events |= EPOLLIN;
        if (p->write_blocked && !byte_queue_is_empty(&p->down))
                events |= EPOLLOUT;
        if (events == p->io_events)
                return;

        if (events == 0)
                r = sd_event_source_set_enabled(p->io_source, SD_EVENT_OFF);
        else {
                r = sd_event_source_set_io_events(p->io_source, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(p->io_source, SD_EVENT_ON);
        }
        if (r < 0) {
                log_debug("CONNECT pipe: cannot poll the socket: %s", strerror(-r));
                pipe_finish(p, r, true);
                return;
        }
        p->io_events = events;
}

static void pipe_check_done(ConnectPipe *p) {
        /* stream_done: both END_STREAMs exchanged (so our socket hit EOF); fd_shut: everything the peer sent
         * was written before SHUT_WR. */
        if (p->stream_done && p->fd_shut)
                pipe_finish(p, 0, false);
}

/* Writes queued peer bytes to the socket and gives HTTP/2 credit back only for what was written. */
static void pipe_write(ConnectPipe *p) {
        int r;

        while (!byte_queue_is_empty(&p->down)) {
                ssize_t n = byte_queue_write_fd(&p->down, p->fd);

                if (n == -EAGAIN) {
                        p->write_blocked = true;
                        break;
                }
                if (n == -EINTR)
                        continue;
                if (n < 0) {
                        log_debug("CONNECT pipe: write to socket failed: %s", strerror((int) -n));
                        pipe_finish(p, (int) n, false);
                        return;
                }
                p->stats.bytes_down += (uint64_t) n;
                pipe_activity(p);
                if (p->stream) {
                        r = h2_stream_consume(p->stream, (size_t) n);
                        if (r < 0) {
                                pipe_finish(p, r, true);
                                return;
                        }
                }
        }

        if (byte_queue_is_empty(&p->down))
                p->write_blocked = false;
        if (byte_queue_is_empty(&p->down) && p->peer_ended && !p->fd_shut) {
                if (shutdown(p->fd, SHUT_WR) < 0) {
                        r = -errno;
                        log_debug("CONNECT pipe: shutdown(SHUT_WR) failed: %s", strerror(-r));
                        pipe_finish(p, r, false);
                        return;
                }
                p->fd_shut = true;
        }
        pipe_check_done(p);
        pipe_update_io(p);
}

/* Reads from the socket into up, once per wakeup so that other sources get their turn. */
static void pipe_read(ConnectPipe *p) {
        ssize_t n;

        /* Read in chunks: a queue holding a few bytes must not pin a CONNECT_BUFFER_MAX allocation. */
        n = byte_queue_read_fd(&p->up, p->fd, CONNECT_READ_CHUNK);
        if (n == -EAGAIN || n == -EINTR)
                return;
        if (n == -ENOBUFS)
                p->read_paused = true;
        else if (n < 0) {
                log_debug("CONNECT pipe: read from socket failed: %s", strerror((int) -n));
                pipe_finish(p, (int) n, false);
                return;
        } else if (n == 0)
                p->fd_eof = true;
        else {
                pipe_activity(p);
                if (byte_queue_space(&p->up) == 0)
                        p->read_paused = true;
        }
        if (p->stream)
                (void) h2_stream_resume(p->stream);
        pipe_update_io(p);
}

static int pipe_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);

        /* Errors and hangups surface through the read or write they make fail. */
        if ((revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && !byte_queue_is_empty(&p->down))
                pipe_write(p);
        if (!p->finished && (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) && (p->io_events & EPOLLIN))
                pipe_read(p);
        return 0;
}

static int pipe_on_write(sd_event_source *source, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);

        if (!p->write_blocked)
                pipe_write(p);
        return 0;
}

static int pipe_on_idle(sd_event_source *source, uint64_t usec, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);
        usec_t deadline = usec_add(p->last_activity, p->idle_timeout);
        int r;

        if (usec >= deadline) {
                log_debug("CONNECT pipe: idle for %" PRIu64 " ms, resetting",
                          p->idle_timeout / USEC_PER_MSEC);
                pipe_finish(p, -ETIMEDOUT, true);
                return 0;
        }
        r = sd_event_source_set_time(source, deadline);
        if (r >= 0)
                r = sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        if (r < 0)
                pipe_finish(p, r, true);
        return 0;
}

static int pipe_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);
        int r;

        if (!p->established)
                return (p->error_hint = -EPROTO);
        r = byte_queue_push(&p->down, data, size);
        if (r < 0) {
                /* Only a peer ignoring our window (or a window above CONNECT_RECEIVE_MAX) gets here. */
                log_debug("CONNECT pipe: %zu bytes from the peer do not fit: %s", size, strerror(-r));
                return (p->error_hint = r);
        }
        /* Written once HTTP/2 has handed over all it read in this round: fewer, larger writes. While the
         * socket is full, EPOLLOUT takes over. */
        if (!p->write_blocked) {
                r = sd_event_source_set_enabled(p->write_source, SD_EVENT_ONESHOT);
                if (r < 0)
                        return (p->error_hint = r);
        }
        return 0;
}

/* Parses a :status value: exactly three digits. */
static int parse_status(const char *s, unsigned *ret) {
        if (!s || strlen(s) != 3 || s[0] < '1' || s[0] > '9' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
            s[2] > '9')
                return -EBADMSG;
        *ret = (unsigned) (s[0] - '0') * 100 + (unsigned) (s[1] - '0') * 10 + (unsigned) (s[2] - '0');
        return 0;
}

static int pipe_on_headers(H2Stream *st, const H2Headers *h, bool trailers, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);
        unsigned status;
        int r;

        /* Only the client waits for a response; trailers and repeated headers carry nothing for a tunnel. */
        if (!p->client || trailers || p->established || p->finished)
                return 0;

        r = parse_status(h2_headers_get(h, ":status"), &status);
        if (r < 0) {
                log_debug("CONNECT pipe: response without a valid :status");
                pipe_finish(p, r, false);
                return 0;
        }
        if (status < 200)
                return 0; /* interim, the final response follows */

        if (status < 300) {
                p->established = true;
                if (p->callbacks.on_response)
                        p->callbacks.on_response(p, status, p->userdata);
                pipe_update_io(p);
                return 0;
        }

        log_debug("CONNECT pipe: refused with status %u", status);
        if (p->callbacks.on_response)
                p->callbacks.on_response(p, status, p->userdata);
        pipe_finish(p, connect_status_to_errno(status), false);
        return 0;
}

static void pipe_on_end(H2Stream *st, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);

        if (p->finished)
                return;
        p->peer_ended = true;
        pipe_write(p);
}

static ssize_t pipe_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);
        size_t n;

        if (!p->established)
                return -EAGAIN;

        n = byte_queue_pop(&p->up, buf, size);
        p->stats.bytes_up += n;
        if (p->read_paused && byte_queue_size(&p->up) < CONNECT_BUFFER_MAX / 2) {
                p->read_paused = false;
                pipe_update_io(p);
                if (p->finished)
                        return -ECANCELED;
        }
        if (byte_queue_is_empty(&p->up) && p->fd_eof) {
                p->up_ended = true;
                *ret_eof = true;
                return (ssize_t) n;
        }
        return n > 0 ? (ssize_t) n : -EAGAIN;
}

static void pipe_on_stream_close(H2Stream *st, uint32_t error_code, void *userdata) {
        _cleanup_(pipe_unrefp) ConnectPipe *p = pipe_ref(userdata);

        p->stream = NULL;
        if (p->finished)
                return;
        if (error_code == H2_NO_ERROR && p->established && p->up_ended && p->peer_ended) {
                /* Both directions ended cleanly on the wire; what is still queued goes to the socket. */
                p->stream_done = true;
                pipe_write(p);
                return;
        }

        log_debug("CONNECT pipe: stream closed with HTTP/2 error %" PRIu32 "%s", error_code,
                  p->established ? "" : " before the response");
        /* Before the response the socket carried nothing (a front-end may have written a refusal to it):
         * close it normally. After, a reset must look like one to the local application. */
        pipe_finish(p, p->error_hint < 0 ? p->error_hint : -ECONNRESET, p->established);
}

static const H2StreamCallbacks pipe_stream_callbacks = {
        .on_data = pipe_on_data,
        .on_headers = pipe_on_headers,
        .on_end = pipe_on_end,
        .read_body = pipe_read_body,
        .on_close = pipe_on_stream_close,
};

static int socket_check(int fd) {
        socklen_t l = sizeof(int);
        int type = 0, flags;

        if (fd < 0)
                return -EBADF;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
                return -errno;
        if (type != SOCK_STREAM)
                return -ESOCKTNOSUPPORT;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

static int pipe_new(H2Session *session, int fd, bool client, const ConnectPipeCallbacks *callbacks,
                    void *userdata, ConnectPipe **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(pipe_unrefp) ConnectPipe *p = NULL;
        int r;

        r = socket_check(fd);
        if (r < 0)
                return r;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (ConnectPipe) {
                .n_ref = 1,
                .session = h2_session_ref(session),
                .event = sd_event_ref(h2_session_get_event(session)),
                .fd = TAKE_FD(owned),
                .client = client,
                .callbacks = *callbacks,
                .userdata = userdata,
                /* A server pipe exists only once it has answered 200; a client waits for the answer. */
                .established = !client,
                .stats.start = now(CLOCK_MONOTONIC),
        };
        byte_queue_init(&p->up, CONNECT_BUFFER_MAX);
        byte_queue_init(&p->down, CONNECT_RECEIVE_MAX);

        r = sd_event_add_io(p->event, &p->io_source, p->fd, EPOLLIN, pipe_on_io, p);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(p->io_source, "connect-io");
        r = sd_event_add_defer(p->event, &p->write_source, pipe_on_write, p);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(p->write_source, "connect-write");
        r = sd_event_source_set_enabled(p->write_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        if (client) {
                r = sd_event_source_set_enabled(p->io_source, SD_EVENT_OFF);
                if (r < 0)
                        return r;
        } else
                p->io_events = EPOLLIN;

        *ret = TAKE_PTR(p);
        return 0;
}

int connect_pipe_open(H2Session *session, const char *authority, int fd,
                      const ConnectPipeCallbacks *callbacks, void *userdata, ConnectPipe **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(pipe_unrefp) ConnectPipe *p = NULL;
        int r;

        assert(session);
        assert(callbacks);

        r = connect_authority_parse(authority, NULL);
        if (r < 0)
                return r;
        r = pipe_new(session, TAKE_FD(owned), true, callbacks, userdata, &p);
        if (r < 0)
                return r;

        /* RFC 9113 §8.5: only :method and :authority; the body is the tunnel. */
        const H2Header headers[] = {
                { ":method", "CONNECT" },
                { ":authority", authority },
        };
        r = h2_session_open_stream(session, headers, ELEMENTSOF(headers), false, &pipe_stream_callbacks, p,
                                   &p->stream);
        if (r < 0)
                return r;

        if (ret)
                *ret = p;
        TAKE_PTR(p); /* owned by the event loop until on_close */
        return 0;
}

int connect_pipe_accept(H2Stream *stream, int fd, const ConnectPipeCallbacks *callbacks, void *userdata,
                        ConnectPipe **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(pipe_unrefp) ConnectPipe *p = NULL;
        int r;

        assert(stream);
        assert(callbacks);

        r = pipe_new(h2_stream_get_session(stream), TAKE_FD(owned), false, callbacks, userdata, &p);
        if (r < 0)
                return r;
        r = h2_stream_respond(stream, (const H2Header[]) { { ":status", "200" } }, 1, true);
        if (r < 0)
                return r;
        /* The response is only queued: no callback can run before the stream is ours. */
        h2_stream_set_callbacks(stream, &pipe_stream_callbacks, p);
        p->stream = stream;
        /* END_STREAM may have come while the target was being dialed: the target gets its FIN now. */
        if (h2_stream_is_peer_ended(stream)) {
                p->peer_ended = true;
                pipe_write(p);
        }

        if (ret)
                *ret = p;
        TAKE_PTR(p);
        return 0;
}

int connect_reject(H2Stream *stream, unsigned http_status) {
        char status[4];
        int r;

        assert(stream);

        if (http_status < 400 || http_status > 599)
                return -EINVAL;
        (void) snprintf(status, sizeof(status), "%u", http_status);
        r = h2_stream_respond(stream, (const H2Header[]) { { ":status", status } }, 1, false);
        if (r < 0)
                return r;
        /* The client's half stays open until it resets the stream, as ours does on any refusal. (A
         * RST_STREAM(NO_ERROR) here, RFC 9113 §8.1, would make nghttp2 drop the queued response.) */
        h2_stream_set_callbacks(stream, &detached_callbacks, NULL);
        return 0;
}

void connect_pipe_abort(ConnectPipe *p) {
        if (!p || p->finished)
                return;
        pipe_ref(p);
        pipe_finish(p, -ECANCELED, true);
        pipe_unref(p);
}

int connect_pipe_set_idle_timeout(ConnectPipe *p, usec_t timeout) {
        int r;

        assert(p);

        if (p->finished)
                return -ESTALE;
        if (timeout == 0 || timeout == USEC_INFINITY) {
                p->idle_timeout = 0;
                p->idle_source = sd_event_source_disable_unref(p->idle_source);
                return 0;
        }

        (void) sd_event_now(p->event, CLOCK_MONOTONIC, &p->last_activity);
        if (!p->idle_source) {
                r = sd_event_add_time(p->event, &p->idle_source, CLOCK_MONOTONIC,
                                      usec_add(p->last_activity, timeout), 0, pipe_on_idle, p);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(p->idle_source, "connect-idle");
        } else {
                r = sd_event_source_set_time(p->idle_source, usec_add(p->last_activity, timeout));
                if (r < 0)
                        return r;
                r = sd_event_source_set_enabled(p->idle_source, SD_EVENT_ONESHOT);
                if (r < 0)
                        return r;
        }
        p->idle_timeout = timeout;
        return 0;
}

int connect_pipe_get_fd(const ConnectPipe *p) {
        assert(p);
        return p->fd;
}

H2Stream *connect_pipe_get_stream(const ConnectPipe *p) {
        assert(p);
        return p->stream;
}

void *connect_pipe_get_userdata(const ConnectPipe *p) {
        assert(p);
        return p->userdata;
}

void connect_pipe_get_stats(const ConnectPipe *p, ConnectStats *ret) {
        assert(p);
        assert(ret);
        *ret = p->stats;
}

void connect_pipe_get_queued(const ConnectPipe *p, size_t *ret_up, size_t *ret_down) {
        assert(p);
        if (ret_up)
                *ret_up = byte_queue_size(&p->up);
        if (ret_down)
                *ret_down = byte_queue_size(&p->down);
}

int connect_authority_parse(const char *authority, HostPort *ret) {
        HostPort hp;
        int r;

        if (!authority || strnlen(authority, CONNECT_AUTHORITY_MAX + 1) > CONNECT_AUTHORITY_MAX)
                return -EINVAL;
        r = parse_host_port(authority, 0, &hp);
        if (r < 0)
                return -EINVAL; /* a bad port (-ERANGE) is as malformed as the rest */
        if (ret)
                *ret = hp;
        return 0;
}

int connect_request_parse(const H2Headers *h, const char **ret_authority) {
        const char *method, *authority;
        int r;

        assert(h);

        method = h2_headers_get(h, ":method");
        if (!method || !streq(method, "CONNECT") || h2_headers_get(h, ":protocol"))
                return -EOPNOTSUPP;
        if (h2_headers_get(h, ":scheme") || h2_headers_get(h, ":path"))
                return -EBADMSG;
        authority = h2_headers_get(h, ":authority");
        r = connect_authority_parse(authority, NULL);
        if (r < 0)
                return r;
        if (ret_authority)
                *ret_authority = authority;
        return 0;
}

int connect_status_to_errno(unsigned status) {
        if (status >= 200 && status < 300)
                return 0;
        switch (status) {
        case 403:
                return -EACCES;
        case 502:
                return -ECONNREFUSED;
        case 504:
                return -ETIMEDOUT;
        default:
                return -EPROTO;
        }
}
