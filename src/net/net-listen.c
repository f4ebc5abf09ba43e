/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "net-listen.h"
#include "strv.h"

/* One fd passed by the service manager. */
typedef struct PassedFd {
        int fd;
        char *name;
        bool taken;
} PassedFd;

/* What sd_listen_fds_with_names() returned, read once per process: it clears the environment. */
static struct {
        bool loaded;
        int error;
        PassedFd *fds;
        size_t n;
} passed;

static int passed_load(void) {
        _cleanup_strv_free_ char **names = NULL;
        PassedFd *fds;
        int n;

        if (passed.loaded)
                return passed.error;
        passed.loaded = true;

        n = sd_listen_fds_with_names(/* unset_environment= */ true, &names);
        if (n < 0) {
                log_debug_errno(n, "Failed to read the fds passed by the service manager: %m");
                return (passed.error = n);
        }
        if (n == 0)
                return 0;
        if (n > LISTEN_FDS_MAX) {
                log_debug("The service manager passed %d fds, more than the %d we take.", n, LISTEN_FDS_MAX);
                return (passed.error = -E2BIG);
        }
        if (strv_length(names) != (size_t) n)
                return (passed.error = -EINVAL);

        fds = calloc((size_t) n, sizeof(PassedFd));
        if (!fds)
                return (passed.error = -ENOMEM);
        for (int i = 0; i < n; i++)
                fds[i] = (PassedFd) {
                        .fd = SD_LISTEN_FDS_START + i,
                        .name = TAKE_PTR(names[i]),
                };
        passed.fds = fds;
        passed.n = (size_t) n;
        log_debug("The service manager passed %d fds.", n);
        return 0;
}

/* systemd's rules for FileDescriptorName=: printable ASCII without ':', at most 255 characters. */
static bool fdname_is_valid(const char *name) {
        size_t n = 0;

        if (isempty(name))
                return false;
        for (const char *p = name; *p; p++, n++)
                if (*p < ' ' || *p > '~' || *p == ':')
                        return false;
        return n <= LISTEN_FDNAME_MAX;
}

/* A listening stream socket, with one error per way of not being one. */
static int socket_check_listening(int fd) {
        int r;

        r = sd_is_socket(fd, AF_UNSPEC, 0, -1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOTSOCK;
        r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, -1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ESOCKTNOSUPPORT;
        r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);
        if (r < 0)
                return r;
        if (r == 0)
                return -EBADFD;
        return 0;
}

static int fd_set_flags(int fd, bool nonblock, bool cloexec) {
        int flags;

        if (nonblock) {
                flags = fcntl(fd, F_GETFL);
                if (flags < 0)
                        return -errno;
                if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return -errno;
        }
        if (cloexec) {
                flags = fcntl(fd, F_GETFD);
                if (flags < 0)
                        return -errno;
                if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                        return -errno;
        }
        return 0;
}

int listen_fds_take(const char *name, int **ret_fds, size_t *ret_n) {
        _cleanup_free_ int *fds = NULL;
        size_t n = 0;
        int r;

        assert(name);
        assert(ret_fds);
        assert(ret_n);

        if (!fdname_is_valid(name))
                return -EINVAL;
        r = passed_load();
        if (r < 0)
                return r;

        /* Check all of them before handing out any, so that a failure leaves the list as it was. */
        for (size_t i = 0; i < passed.n; i++) {
                if (passed.fds[i].taken || !streq(passed.fds[i].name, name))
                        continue;
                r = socket_check_listening(passed.fds[i].fd);
                if (r < 0)
                        return log_debug_errno(r,
                                               "fd %d passed as '%s' is not a listening stream socket: %m",
                                               passed.fds[i].fd, name);
                n++;
        }
        if (n == 0) {
                *ret_fds = NULL;
                *ret_n = 0;
                return 0;
        }

        fds = calloc(n, sizeof(int));
        if (!fds)
                return -ENOMEM;
        n = 0;
        for (size_t i = 0; i < passed.n; i++) {
                if (passed.fds[i].taken || !streq(passed.fds[i].name, name))
                        continue;
                r = fd_set_flags(passed.fds[i].fd, /* nonblock= */ true, /* cloexec= */ true);
                if (r < 0)
                        return log_debug_errno(r, "Failed to set flags on fd %d passed as '%s': %m",
                                               passed.fds[i].fd, name);
                fds[n++] = passed.fds[i].fd;
        }
        for (size_t i = 0; i < passed.n; i++)
                if (!passed.fds[i].taken && streq(passed.fds[i].name, name))
                        passed.fds[i].taken = true;

        log_debug("Took %zu fd(s) passed as '%s'.", n, name);
        *ret_fds = TAKE_PTR(fds);
        *ret_n = n;
        return (int) n;
}

int listen_fds_unclaimed(char ***ret_names) {
        _cleanup_strv_free_ char **names = NULL;
        size_t n = 0, k = 0;
        int r;

        assert(ret_names);

        r = passed_load();
        if (r < 0)
                return r;
        for (size_t i = 0; i < passed.n; i++)
                if (!passed.fds[i].taken)
                        n++;
        if (n == 0) {
                *ret_names = NULL;
                return 0;
        }

        names = calloc(n + 1, sizeof(char *));
        if (!names)
                return -ENOMEM;
        for (size_t i = 0; i < passed.n; i++) {
                if (passed.fds[i].taken)
                        continue;
                names[k] = strdup(passed.fds[i].name);
                if (!names[k])
                        return -ENOMEM;
                k++;
        }
        *ret_names = TAKE_PTR(names);
        return (int) n;
}

int listen_fds_close_unclaimed(void) {
        int r, n = 0;

        r = passed_load();
        if (r < 0)
                return r;
        for (size_t i = 0; i < passed.n; i++) {
                if (passed.fds[i].taken)
                        continue;
                log_debug("Closing fd %d passed as '%s': nobody took it.", passed.fds[i].fd,
                          passed.fds[i].name);
                passed.fds[i].fd = safe_close(passed.fds[i].fd);
                passed.fds[i].taken = true;
                n++;
        }
        return n;
}

int listen_bind(const HostPort *addr, int backlog, int *ret_fd) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        _cleanup_close_ int fd = -EBADF;
        socklen_t salen;
        const int one = 1;
        char buf[LISTEN_ADDRESS_STRING_MAX];
        int r;

        assert(addr);
        assert(ret_fd);

        /* Listen addresses are literal: resolving a name here would bind whatever DNS says at start-up. */
        if (addr->family != AF_INET && addr->family != AF_INET6)
                return -EINVAL;
        if (!memchr(addr->host, '\0', sizeof(addr->host)))
                return -EINVAL;
        if (backlog < 1 || backlog > LISTEN_BACKLOG_MAX)
                return -ERANGE;

        if (addr->family == AF_INET) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(addr->port);
                if (inet_pton(AF_INET, addr->host, &sa.in.sin_addr) != 1)
                        return -EINVAL;
                salen = sizeof(sa.in);
        } else {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(addr->port);
                if (inet_pton(AF_INET6, addr->host, &sa.in6.sin6_addr) != 1)
                        return -EINVAL;
                salen = sizeof(sa.in6);
        }

        fd = socket(addr->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
        if (fd < 0)
                return -errno;
        /* Restarting while old connections sit in TIME_WAIT must not fail with EADDRINUSE. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        /* "[::]:p" must not also take 0.0.0.0:p, which may be configured separately. */
        if (addr->family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, &sa.sa, salen) < 0)
                return -errno;
        if (listen(fd, backlog) < 0)
                return -errno;

        r = listen_get_local(fd, buf, sizeof(buf));
        if (r >= 0)
                log_debug("Listening on %s.", buf);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int listen_get_local(int fd, char *buf, size_t size) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_un un;
                struct sockaddr_storage storage;
        } sa = {};
        socklen_t salen = sizeof(sa);
        char host[INET6_ADDRSTRLEN], out[LISTEN_ADDRESS_STRING_MAX];
        size_t len;

        assert(buf || size == 0);

        if (fd < 0)
                return -EBADF;
        if (getsockname(fd, &sa.sa, &salen) < 0)
                return -errno;

        switch (sa.sa.sa_family) {
        case AF_INET:
                if (!inet_ntop(AF_INET, &sa.in.sin_addr, host, sizeof(host)))
                        return -errno;
                (void) snprintf(out, sizeof(out), "%s:%u", host, ntohs(sa.in.sin_port));
                break;
        case AF_INET6:
                if (!inet_ntop(AF_INET6, &sa.in6.sin6_addr, host, sizeof(host)))
                        return -errno;
                (void) snprintf(out, sizeof(out), "[%s]:%u", host, ntohs(sa.in6.sin6_port));
                break;
        case AF_UNIX: {
                size_t path_len = salen > offsetof(struct sockaddr_un, sun_path)
                                          ? MIN((size_t) salen - offsetof(struct sockaddr_un, sun_path),
                                                sizeof(sa.un.sun_path))
                                          : 0;

                if (path_len == 0)
                        out[0] = '\0';  /* unnamed */
                else if (sa.un.sun_path[0] == '\0')
                        (void) snprintf(out, sizeof(out), "@%.*s",
                                        (int) strnlen(sa.un.sun_path + 1, path_len - 1), sa.un.sun_path + 1);
                else
                        (void) snprintf(out, sizeof(out), "%.*s", (int) strnlen(sa.un.sun_path, path_len),
                                        sa.un.sun_path);
                break;
        }
        default:
                return -EAFNOSUPPORT;
        }

        len = strlen(out);
        if (len >= size)
                return -ENOBUFS;
        memcpy(buf, out, len + 1);
        return 0;
}

struct Listener {
        unsigned n_ref;
        sd_event *event;
        sd_event_source *io_source;
        sd_event_source *retry_source;
        int fd;
        ListenerCallbacks callbacks;
        void *userdata;

        unsigned n_connections;
        unsigned max_connections;
        ListenerState state;
        bool freed;             /* listener_free() ran; only references from callbacks on the stack remain */
        bool error_reported;    /* on_error heard about the current run of resource errors */
        char address[LISTEN_ADDRESS_STRING_MAX];
};

static Listener *listener_ref(Listener *l) {
        assert(l);
        l->n_ref++;
        return l;
}

static Listener *listener_unref(Listener *l) {
        if (!l || --l->n_ref > 0)
                return NULL;
        sd_event_source_disable_unref(l->io_source);
        sd_event_source_disable_unref(l->retry_source);
        safe_close(l->fd);
        sd_event_unref(l->event);
        return mfree(l);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Listener *, listener_unref);

/* Polls the socket exactly when we would accept: active and below the cap. */
static void listener_update(Listener *l) {
        int r;

        if (l->freed)
                return;
        if (l->state == LISTENER_ACTIVE || l->state == LISTENER_FULL)
                l->state = l->n_connections >= l->max_connections ? LISTENER_FULL : LISTENER_ACTIVE;

        r = sd_event_source_set_enabled(l->io_source,
                                        l->state == LISTENER_ACTIVE ? SD_EVENT_ON : SD_EVENT_OFF);
        if (r < 0)
                log_debug_errno(r, "Listener %s: failed to %s polling: %m", l->address,
                                l->state == LISTENER_ACTIVE ? "resume" : "pause");
}

static void listener_fail(Listener *l, int error) {
        l->state = LISTENER_FAILED;
        listener_update(l);
        (void) sd_event_source_set_enabled(l->retry_source, SD_EVENT_OFF);
        log_debug_errno(error, "Listener %s: accept() failed, giving up: %m", l->address);
        if (l->callbacks.on_error)
                l->callbacks.on_error(l, error, l->userdata);
}

/* Out of fds or memory: accept() would fail again at once while the socket stays readable, so stop polling
 * and try again a little later. */
static void listener_throttle(Listener *l, int error) {
        usec_t t;
        int r;

        r = sd_event_now(l->event, CLOCK_MONOTONIC, &t);
        if (r >= 0)
                r = sd_event_source_set_time(l->retry_source, t + LISTENER_RETRY_USEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(l->retry_source, SD_EVENT_ONESHOT);
        if (r < 0) {
                listener_fail(l, r);
                return;
        }

        l->state = LISTENER_THROTTLED;
        listener_update(l);
        if (l->error_reported)
                return;
        l->error_reported = true;
        log_debug_errno(error, "Listener %s: accept() failed, retrying in %llu ms: %m", l->address,
                        (unsigned long long) (LISTENER_RETRY_USEC / USEC_PER_MSEC));
        if (l->callbacks.on_error)
                l->callbacks.on_error(l, error, l->userdata);
}

static bool accept_error_is_resource(int r) {
        switch (-r) {
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
                return true;
        default:
                return false;
        }
}

/* Errors about one connection, not the socket: accept(2) says Linux passes pending network errors of the
 * new connection on, to be treated like EAGAIN, i.e. by trying the next one. */
static bool accept_error_is_transient(int r) {
        switch (-r) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
        case EPERM:     /* firewall rules refused the connection */
        case ETIMEDOUT:
                return true;
        default:
                return false;
        }
}

static int on_listener_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(listener_unrefp) Listener *l = listener_ref(userdata);
        int r;

        for (unsigned i = 0; i < LISTENER_ACCEPT_BATCH; i++) {
                struct sockaddr_storage peer = {};
                socklen_t peer_len = sizeof(peer);
                int cfd;

                if (l->freed || l->state != LISTENER_ACTIVE)
                        break;

                cfd = accept4(l->fd, (struct sockaddr *) &peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        r = -errno;
                        if (r == -EAGAIN)
                                break;
                        if (accept_error_is_transient(r))
                                continue;
                        if (accept_error_is_resource(r))
                                listener_throttle(l, r);
                        else
                                listener_fail(l, r);
                        break;
                }

                l->error_reported = false;
                /* Counted before the call, so that a connection the owner ends from within on_accept is
                 * balanced by its listener_connection_closed(). */
                l->n_connections++;
                r = l->callbacks.on_accept(l, cfd, &peer, l->userdata);
                if (l->freed)
                        break;
                if (r < 0 && l->n_connections > 0)
                        l->n_connections--;
                listener_update(l);
        }
        return 0;
}

static int on_listener_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Listener *l = userdata;

        if (l->state == LISTENER_THROTTLED) {
                /* Polling again: a still pending connection wakes us up at once and accept() is retried. */
                l->state = LISTENER_ACTIVE;
                listener_update(l);
        }
        return 0;
}

int listener_new(sd_event *event, int fd, const ListenerCallbacks *callbacks, void *userdata,
                 Listener **ret) {
        _cleanup_close_ int owned_fd = fd;
        _cleanup_(listener_unrefp) Listener *l = NULL;
        char description[STRLEN("listener-retry:") + LISTEN_ADDRESS_STRING_MAX];
        int r;

        assert(event);
        assert(callbacks);
        assert(ret);

        if (!callbacks->on_accept)
                return -EINVAL;
        if (fd < 0)
                return -EBADF;
        r = socket_check_listening(fd);
        if (r < 0)
                return r;
        r = fd_set_flags(fd, /* nonblock= */ true, /* cloexec= */ false);
        if (r < 0)
                return r;

        l = calloc(1, sizeof(Listener));
        if (!l)
                return -ENOMEM;
        *l = (Listener) {
                .n_ref = 1,
                .event = sd_event_ref(event),
                .fd = TAKE_FD(owned_fd),
                .callbacks = *callbacks,
                .userdata = userdata,
                .max_connections = LISTENER_CONNECTIONS_DEFAULT,
                .state = LISTENER_ACTIVE,
        };
        if (listen_get_local(l->fd, l->address, sizeof(l->address)) < 0)
                (void) snprintf(l->address, sizeof(l->address), "fd %d", l->fd);

        r = sd_event_add_io(event, &l->io_source, l->fd, EPOLLIN, on_listener_io, l);
        if (r < 0)
                return r;
        (void) snprintf(description, sizeof(description), "listener:%s", l->address);
        (void) sd_event_source_set_description(l->io_source, description);

        /* Created now, while fds are plentiful: adding the first CLOCK_MONOTONIC timer makes sd-event open a
         * timerfd, which is exactly what would fail when we need the timer because of EMFILE. */
        r = sd_event_add_time(event, &l->retry_source, CLOCK_MONOTONIC, 0, 0, on_listener_retry, l);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(l->retry_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) snprintf(description, sizeof(description), "listener-retry:%s", l->address);
        (void) sd_event_source_set_description(l->retry_source, description);

        log_debug("Listener %s: accepting.", l->address);
        *ret = TAKE_PTR(l);
        return 0;
}

Listener *listener_free(Listener *l) {
        if (!l)
                return NULL;
        l->freed = true;
        l->io_source = sd_event_source_disable_unref(l->io_source);
        l->retry_source = sd_event_source_disable_unref(l->retry_source);
        l->fd = safe_close(l->fd);
        listener_unref(l);
        return NULL;
}

int listener_set_max_connections(Listener *l, unsigned max) {
        assert(l);

        if (max < 1 || max > LISTENER_CONNECTIONS_MAX)
                return -ERANGE;
        l->max_connections = max;
        listener_update(l);
        return 0;
}

void listener_connection_closed(Listener *l) {
        assert(l);

        if (l->n_connections == 0) {
                log_debug("Listener %s: more connections reported closed than were accepted, ignoring.",
                          l->address);
                return;
        }
        l->n_connections--;
        listener_update(l);
}

unsigned listener_get_connections(const Listener *l) {
        assert(l);
        return l->n_connections;
}

unsigned listener_get_max_connections(const Listener *l) {
        assert(l);
        return l->max_connections;
}

ListenerState listener_get_state(const Listener *l) {
        assert(l);
        return l->state;
}

int listener_get_fd(const Listener *l) {
        assert(l);
        return l->fd;
}

const char *listener_get_address(const Listener *l) {
        assert(l);
        return l->address;
}

void *listener_get_userdata(const Listener *l) {
        assert(l);
        return l->userdata;
}
