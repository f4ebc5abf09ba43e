/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "net-listen.h"
#include "strv.h"
#include "tests.h"

/* The socket-activation case re-executes this binary under systemd-socket-activate; with this variable set
 * it runs the helper below instead of the cases. */
#define HELPER_ENV "ZTNA_TEST_NET_LISTEN_HELPER"

static HostPort host_port(const char *host, uint16_t port) {
        HostPort hp = { .port = port };

        ASSERT_OK(parse_host_port(host, 1, &hp));
        hp.port = port;
        return hp;
}

static uint16_t local_port(int fd) {
        struct sockaddr_storage ss = {};
        socklen_t len = sizeof(ss);

        ASSERT_OK(getsockname(fd, (struct sockaddr *) &ss, &len));
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &ss)->sin_port);
        ASSERT_EQ(ss.ss_family, AF_INET6);
        return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
}

static int sockopt_int(int fd, int level, int name) {
        int v = -1;
        socklen_t len = sizeof(v);

        ASSERT_OK(getsockopt(fd, level, name, &v, &len));
        return v;
}

static void assert_nonblock_cloexec(int fd) {
        ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
        ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

static bool fd_is_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

/* IPv6 loopback may be missing in containers. */
static bool ipv6_available(void) {
        HostPort hp = host_port("[::1]", 0);
        int fd, r;

        r = listen_bind(&hp, 1, &fd);
        if (r < 0)
                return false;
        close(fd);
        return true;
}

/* A non-blocking connect to 127.0.0.1:port (or [::1]) that has completed the handshake: the kernel put it in
 * the listener's accept queue, whether or not the server accepted it. */
static int connect_completed(int family, uint16_t port) {
        struct sockaddr_storage ss = {};
        socklen_t len;
        struct pollfd pfd;
        int fd;

        if (family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) &ss;

                in->sin_family = AF_INET;
                in->sin_port = htons(port);
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                len = sizeof(*in);
        } else {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;

                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(port);
                in6->sin6_addr = in6addr_loopback;
                len = sizeof(*in6);
        }
        fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        if (connect(fd, (struct sockaddr *) &ss, len) < 0)
                ASSERT_EQ(errno, EINPROGRESS);
        pfd = (struct pollfd) { .fd = fd, .events = POLLOUT };
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        ASSERT_EQ(sockopt_int(fd, SOL_SOCKET, SO_ERROR), 0);
        return fd;
}

/* ---- listen_bind() and listen_get_local() ---- */

TEST(bind_ipv4_ephemeral) {
        HostPort hp = host_port("127.0.0.1", 0);
        char buf[LISTEN_ADDRESS_STRING_MAX], expected[64];
        int fd = -EBADF, c;

        ASSERT_OK(listen_bind(&hp, 16, &fd));
        ASSERT_TRUE(fd >= 0);
        ASSERT_GT(local_port(fd), 0);
        ASSERT_OK(listen_get_local(fd, buf, sizeof(buf)));
        snprintf(expected, sizeof(expected), "127.0.0.1:%u", local_port(fd));
        ASSERT_STREQ(buf, expected);

        assert_nonblock_cloexec(fd);
        ASSERT_EQ(sockopt_int(fd, SOL_SOCKET, SO_REUSEADDR), 1);
        ASSERT_EQ(sockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN), 1);
        ASSERT_EQ(sockopt_int(fd, SOL_SOCKET, SO_TYPE), SOCK_STREAM);

        c = connect_completed(AF_INET, local_port(fd));
        ASSERT_TRUE(accept4(fd, NULL, NULL, SOCK_CLOEXEC) >= 0);
        close(c);
        close(fd);
}

TEST(bind_ipv6_ephemeral) {
        HostPort hp = host_port("[::1]", 0);
        char buf[LISTEN_ADDRESS_STRING_MAX], expected[64];
        int fd = -EBADF;

        if (!ipv6_available())
                test_skip("no IPv6 loopback");
        ASSERT_OK(listen_bind(&hp, 16, &fd));
        ASSERT_OK(listen_get_local(fd, buf, sizeof(buf)));
        snprintf(expected, sizeof(expected), "[::1]:%u", local_port(fd));
        ASSERT_STREQ(buf, expected);
        ASSERT_EQ(sockopt_int(fd, SOL_SOCKET, SO_REUSEADDR), 1);
        assert_nonblock_cloexec(fd);
        close(connect_completed(AF_INET6, local_port(fd)));
        close(fd);
}

TEST(bind_both_wildcards_on_one_port) {
        static const struct {
                const char *first, *second;
        } table[] = {
                { "[::]", "0.0.0.0" },
                { "0.0.0.0", "[::]" },
        };

        if (!ipv6_available())
                test_skip("no IPv6 loopback");
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                HostPort a = host_port(table[i].first, 0), b;
                char buf[LISTEN_ADDRESS_STRING_MAX], expected[64];
                int fa, fb;

                CASE("%s then %s", table[i].first, table[i].second);
                /* The ephemeral port the first bind gets may be listened on in the other family by another
                 * test running at the same time: then try another port (a few times; a product bug fails
                 * every time). */
                for (unsigned attempt = 0;; attempt++) {
                        int r;

                        ASSERT_OK(listen_bind(&a, 16, &fa));
                        if (streq(table[i].first, "[::]"))
                                ASSERT_EQ(sockopt_int(fa, IPPROTO_IPV6, IPV6_V6ONLY), 1);
                        /* Without IPV6_V6ONLY the second bind would fail with EADDRINUSE. */
                        b = host_port(table[i].second, local_port(fa));
                        r = listen_bind(&b, 16, &fb);
                        if (r == -EADDRINUSE && attempt < 4) {
                                close(fa);
                                continue;
                        }
                        ASSERT_OK(r);
                        break;
                }
                ASSERT_EQ(local_port(fb), local_port(fa));
                ASSERT_OK(listen_get_local(fb, buf, sizeof(buf)));
                snprintf(expected, sizeof(expected), "%s:%u", table[i].second, local_port(fa));
                ASSERT_STREQ(buf, expected);
                close(fa);
                close(fb);
        }
}

TEST(bind_refuses_names_and_bad_arguments) {
        static const struct {
                const char *what;
                HostPort hp;
                int backlog;
                int error;
        } table[] = {
                { "name", { .host = "localhost", .port = 8443, .family = AF_UNSPEC }, 16, EINVAL },
                { "name as v4", { .host = "localhost", .port = 8443, .family = AF_INET }, 16, EINVAL },
                { "v6 address as v4", { .host = "::1", .port = 8443, .family = AF_INET }, 16, EINVAL },
                { "v4 as v6", { .host = "127.0.0.1", .port = 8443, .family = AF_INET6 }, 16, EINVAL },
                { "AF_UNIX", { .host = "/run/x", .port = 0, .family = AF_UNIX }, 16, EINVAL },
                { "empty host", { .host = "", .port = 8443, .family = AF_INET }, 16, EINVAL },
                { "backlog 0", { .host = "127.0.0.1", .port = 0, .family = AF_INET }, 0, ERANGE },
                { "backlog -1", { .host = "127.0.0.1", .port = 0, .family = AF_INET }, -1, ERANGE },
                { "backlog too big", { .host = "127.0.0.1", .port = 0, .family = AF_INET },
                  LISTEN_BACKLOG_MAX + 1, ERANGE },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                int fd = -1234;

                CASE("%s", table[i].what);
                ASSERT_ERROR(listen_bind(&table[i].hp, table[i].backlog, &fd), table[i].error);
                ASSERT_EQ(fd, -1234);
        }

        /* A HostPort straight from the config parser: names parse, but are not listen addresses. */
        HostPort hp;
        int fd = -1234;
        ASSERT_OK(parse_host_port("controller.example.org:8443", 0, &hp));
        ASSERT_EQ(hp.family, AF_UNSPEC);
        ASSERT_ERROR(listen_bind(&hp, 16, &fd), EINVAL);
        ASSERT_EQ(fd, -1234);
}

TEST(bind_address_in_use) {
        HostPort hp = host_port("127.0.0.1", 0);
        int a, b = -1234;

        ASSERT_OK(listen_bind(&hp, 16, &a));
        hp.port = local_port(a);
        /* SO_REUSEADDR does not let two sockets listen on one address. */
        ASSERT_ERROR(listen_bind(&hp, 16, &b), EADDRINUSE);
        ASSERT_EQ(b, -1234);
        close(a);
}

TEST(bind_again_with_connections_in_time_wait) {
        HostPort hp = host_port("127.0.0.1", 0);
        struct pollfd pfd;
        int fd, c, s;

        ASSERT_OK(listen_bind(&hp, 16, &fd));
        hp.port = local_port(fd);
        c = connect_completed(AF_INET, hp.port);
        pfd = (struct pollfd) { .fd = fd, .events = POLLIN };
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        s = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        ASSERT_TRUE(s >= 0);
        /* The server closes first: its end of the connection stays in TIME_WAIT on our port. */
        close(s);
        pfd = (struct pollfd) { .fd = c, .events = POLLIN };
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        close(c);
        close(fd);

        ASSERT_OK(listen_bind(&hp, 16, &fd));
        ASSERT_EQ(local_port(fd), hp.port);
        close(fd);
}

TEST(get_local_formats) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        char buf[LISTEN_ADDRESS_STRING_MAX], small[8];
        int fd, p[2];

        /* AF_UNIX, a path. */
        snprintf(un.sun_path, sizeof(un.sun_path), "%s/s.sock", test_tmpdir());
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &un, sizeof(un)));
        ASSERT_OK(listen_get_local(fd, buf, sizeof(buf)));
        ASSERT_STREQ(buf, un.sun_path);

        /* Too small: -ENOBUFS, the buffer untouched. */
        memcpy(small, "unset", 6);
        ASSERT_ERROR(listen_get_local(fd, small, sizeof(small)), ENOBUFS);
        ASSERT_STREQ(small, "unset");
        close(fd);

        /* AF_UNIX, abstract. */
        memset(un.sun_path, 0, sizeof(un.sun_path));
        snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "ztna-test-%d", (int) getpid());
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &un,
                       (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1))));
        ASSERT_OK(listen_get_local(fd, buf, sizeof(buf)));
        ASSERT_TRUE(buf[0] == '@');
        ASSERT_STREQ(buf + 1, un.sun_path + 1);
        close(fd);

        /* IPv4 exactly fitting: "127.0.0.1:p" plus NUL, and one byte less. */
        HostPort hp = host_port("127.0.0.1", 0);
        char exact[32], expected[32];
        ASSERT_OK(listen_bind(&hp, 1, &fd));
        snprintf(expected, sizeof(expected), "127.0.0.1:%u", local_port(fd));
        ASSERT_OK(listen_get_local(fd, exact, strlen(expected) + 1));
        ASSERT_STREQ(exact, expected);
        ASSERT_ERROR(listen_get_local(fd, exact, strlen(expected)), ENOBUFS);
        close(fd);

        /* Not a socket, not an fd. */
        ASSERT_OK(pipe2(p, O_CLOEXEC));
        ASSERT_ERROR(listen_get_local(p[0], buf, sizeof(buf)), ENOTSOCK);
        close(p[0]);
        close(p[1]);
        ASSERT_ERROR(listen_get_local(-1, buf, sizeof(buf)), EBADF);
}

/* ---- Listener ---- */

#define ACCEPTED_MAX 256

typedef struct Server {
        int fds[ACCEPTED_MAX];
        struct sockaddr_storage peers[ACCEPTED_MAX];
        size_t n_accepted;
        int errors[16];
        size_t n_errors;
        bool refuse;            /* on_accept drops the connection (returns < 0) */
        bool free_in_callback;  /* on_accept frees the listener */
        Listener *listener;
} Server;

static int server_on_accept(Listener *l, int fd, const struct sockaddr_storage *peer, void *userdata) {
        Server *s = userdata;

        ASSERT_TRUE(s->listener == l);
        ASSERT_TRUE(listener_get_userdata(l) == s);
        ASSERT_LT(s->n_accepted, ACCEPTED_MAX);
        s->fds[s->n_accepted] = fd;
        s->peers[s->n_accepted] = *peer;
        s->n_accepted++;
        if (s->free_in_callback)
                s->listener = listener_free(l);
        if (s->refuse) {
                close(fd);
                s->fds[s->n_accepted - 1] = -EBADF;
                return -ENOMEM;
        }
        return 0;
}

static void server_on_error(Listener *l, int error, void *userdata) {
        Server *s = userdata;

        ASSERT_LT(s->n_errors, ELEMENTSOF(s->errors));
        s->errors[s->n_errors++] = error;
}

static const ListenerCallbacks server_callbacks = {
        .on_accept = server_on_accept,
        .on_error = server_on_error,
};

static void server_done(Server *s) {
        for (size_t i = 0; i < s->n_accepted; i++)
                if (s->fds[i] >= 0)
                        close(s->fds[i]);
        s->listener = listener_free(s->listener);
}

/* Binds 127.0.0.1:0 and serves it; returns the port. */
static uint16_t server_start(Server *s, sd_event *e, int backlog) {
        HostPort hp = host_port("127.0.0.1", 0);
        uint16_t port;
        int fd;

        ASSERT_OK(listen_bind(&hp, backlog, &fd));
        port = local_port(fd);
        ASSERT_OK(listener_new(e, fd, &server_callbacks, s, &s->listener));
        ASSERT_EQ(listener_get_fd(s->listener), fd);
        return port;
}

/* Runs the loop until *counter reaches want or timeout passes; returns the number of dispatches. */
static unsigned run_until(sd_event *e, const size_t *counter, size_t want, usec_t timeout) {
        usec_t end = now(CLOCK_MONOTONIC) + timeout;
        unsigned dispatched = 0;

        while ((!counter || *counter < want) && now(CLOCK_MONOTONIC) < end)
                if (ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC)) > 0)
                        dispatched++;
        return dispatched;
}

TEST(listener_accepts_many_in_bounded_batches) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = {};
        int clients[100];
        uint16_t port;
        char expected[64];

        ASSERT_OK(sd_event_new(&e));
        port = server_start(&s, e, 128);
        snprintf(expected, sizeof(expected), "127.0.0.1:%u", port);
        ASSERT_STREQ(listener_get_address(s.listener), expected);
        ASSERT_EQ(listener_get_max_connections(s.listener), LISTENER_CONNECTIONS_DEFAULT);

        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                clients[i] = connect_completed(AF_INET, port);

        /* One wakeup accepts one batch, then other sources get their turn. */
        ASSERT_EQ(sd_event_run(e, 1000 * USEC_PER_MSEC), 1);
        ASSERT_EQ(s.n_accepted, LISTENER_ACCEPT_BATCH);
        run_until(e, &s.n_accepted, ELEMENTSOF(clients), 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, ELEMENTSOF(clients));
        ASSERT_EQ(listener_get_connections(s.listener), ELEMENTSOF(clients));
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_ACTIVE);
        ASSERT_EQ(s.n_errors, 0);

        for (size_t i = 0; i < s.n_accepted; i++) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) &s.peers[i];

                CASE("connection %zu", i);
                assert_nonblock_cloexec(s.fds[i]);
                ASSERT_EQ(in->sin_family, AF_INET);
                ASSERT_EQ(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
                ASSERT_GT(ntohs(in->sin_port), 0);
        }
        /* Each peer address is that of one client. */
        for (size_t i = 0; i < ELEMENTSOF(clients); i++) {
                struct sockaddr_in me = {};
                socklen_t len = sizeof(me);
                bool found = false;

                ASSERT_OK(getsockname(clients[i], (struct sockaddr *) &me, &len));
                for (size_t j = 0; j < s.n_accepted; j++)
                        if (((struct sockaddr_in *) &s.peers[j])->sin_port == me.sin_port)
                                found = true;
                ASSERT_TRUE(found);
                close(clients[i]);
        }

        for (size_t i = 0; i < s.n_accepted; i++)
                listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_connections(s.listener), 0);
        /* One close too many is ignored, not an underflow. */
        listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_connections(s.listener), 0);
        server_done(&s);
}

TEST(listener_cap_leaves_connections_in_the_backlog) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = {};
        int clients[5];
        uint16_t port;

        ASSERT_OK(sd_event_new(&e));
        port = server_start(&s, e, 16);
        ASSERT_OK(listener_set_max_connections(s.listener, 3));
        ASSERT_EQ(listener_get_max_connections(s.listener), 3);

        for (size_t i = 0; i < 4; i++)
                clients[i] = connect_completed(AF_INET, port);
        run_until(e, &s.n_accepted, 4, 300 * USEC_PER_MSEC);
        /* The fourth completed its handshake (it sits in the backlog) but is not accepted. */
        ASSERT_EQ(s.n_accepted, 3);
        ASSERT_EQ(listener_get_connections(s.listener), 3);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FULL);
        /* Nor closed: the client sees no EOF or reset. */
        struct pollfd pfd = { .fd = clients[3], .events = POLLIN };
        ASSERT_EQ(poll(&pfd, 1, 0), 0);
        /* And the loop is idle, not spinning on the readable socket. */
        ASSERT_EQ(run_until(e, NULL, 0, 100 * USEC_PER_MSEC), 0);

        /* One ends: the fourth is accepted, and the listener is full again. */
        close(s.fds[0]);
        s.fds[0] = -EBADF;
        listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_ACTIVE);
        run_until(e, &s.n_accepted, 4, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, 4);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FULL);

        /* Raising the cap resumes at once; lowering it below the count closes nothing. */
        clients[4] = connect_completed(AF_INET, port);
        ASSERT_OK(listener_set_max_connections(s.listener, 4));
        run_until(e, &s.n_accepted, 5, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, 5);
        ASSERT_OK(listener_set_max_connections(s.listener, 1));
        ASSERT_EQ(listener_get_connections(s.listener), 4);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FULL);
        for (size_t i = 0; i < 3; i++)
                listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FULL);
        listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_ACTIVE);

        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                close(clients[i]);
        server_done(&s);
}

TEST(listener_dropped_connections_do_not_count) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = { .refuse = true };
        int clients[3];
        uint16_t port;

        ASSERT_OK(sd_event_new(&e));
        port = server_start(&s, e, 16);
        ASSERT_OK(listener_set_max_connections(s.listener, 1));
        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                clients[i] = connect_completed(AF_INET, port);
        run_until(e, &s.n_accepted, ELEMENTSOF(clients), 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, ELEMENTSOF(clients));
        ASSERT_EQ(listener_get_connections(s.listener), 0);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_ACTIVE);
        for (size_t i = 0; i < ELEMENTSOF(clients); i++)
                close(clients[i]);
        server_done(&s);
}

TEST(listener_max_connections_range) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = {};

        ASSERT_OK(sd_event_new(&e));
        (void) server_start(&s, e, 16);
        ASSERT_ERROR(listener_set_max_connections(s.listener, 0), ERANGE);
        ASSERT_ERROR(listener_set_max_connections(s.listener, LISTENER_CONNECTIONS_MAX + 1), ERANGE);
        ASSERT_EQ(listener_get_max_connections(s.listener), LISTENER_CONNECTIONS_DEFAULT);
        ASSERT_OK(listener_set_max_connections(s.listener, LISTENER_CONNECTIONS_MAX));
        ASSERT_EQ(listener_get_max_connections(s.listener), LISTENER_CONNECTIONS_MAX);
        server_done(&s);
}

TEST(listener_out_of_fds_retries_on_a_timer) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct rlimit saved, low;
        Server s = {};
        unsigned dispatched;
        uint16_t port;
        int c, probe;

        ASSERT_OK(sd_event_new(&e));
        port = server_start(&s, e, 16);
        c = connect_completed(AF_INET, port);

        /* No fd left for accept4(): the limit is the lowest free fd number. */
        probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
        ASSERT_TRUE(probe >= 0);
        close(probe);
        ASSERT_OK(getrlimit(RLIMIT_NOFILE, &saved));
        low = (struct rlimit) { .rlim_cur = (rlim_t) probe, .rlim_max = saved.rlim_max };
        ASSERT_OK(setrlimit(RLIMIT_NOFILE, &low));

        run_until(e, &s.n_errors, 1, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_errors, 1);
        ASSERT_EQ(s.errors[0], -EMFILE);
        ASSERT_EQ(s.n_accepted, 0);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_THROTTLED);

        /* 350 ms: a few retries (each a timer and one accept attempt), reported once, no busy loop. */
        dispatched = run_until(e, NULL, 0, 350 * USEC_PER_MSEC);
        ASSERT_GE(dispatched, 2);
        ASSERT_LE(dispatched, 20);
        ASSERT_EQ(s.n_errors, 1);
        ASSERT_EQ(s.n_accepted, 0);

        /* Fds again: the next retry accepts. */
        ASSERT_OK(setrlimit(RLIMIT_NOFILE, &saved));
        run_until(e, &s.n_accepted, 1, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, 1);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_ACTIVE);
        ASSERT_EQ(s.n_errors, 1);
        close(c);
        server_done(&s);
}

TEST(listener_fails_once_when_the_socket_is_shut_down) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = {};

        ASSERT_OK(sd_event_new(&e));
        (void) server_start(&s, e, 16);
        /* A listening socket shut down accepts nothing any more (accept() → EINVAL) but stays "ready". */
        ASSERT_OK(shutdown(listener_get_fd(s.listener), SHUT_RDWR));
        run_until(e, &s.n_errors, 1, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_errors, 1);
        ASSERT_EQ(s.errors[0], -EINVAL);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FAILED);
        ASSERT_EQ(run_until(e, NULL, 0, 100 * USEC_PER_MSEC), 0);
        ASSERT_EQ(s.n_errors, 1);
        /* Connections closing do not revive it. */
        listener_connection_closed(s.listener);
        ASSERT_EQ(listener_get_state(s.listener), LISTENER_FAILED);
        server_done(&s);
}

TEST(listener_freed_from_on_accept) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = { .free_in_callback = true };
        int c1, c2;
        uint16_t port;

        ASSERT_OK(sd_event_new(&e));
        port = server_start(&s, e, 16);
        c1 = connect_completed(AF_INET, port);
        c2 = connect_completed(AF_INET, port);
        run_until(e, &s.n_accepted, 1, 5 * USEC_PER_SEC);
        /* The batch stopped with the listener: the second connection was never accepted. */
        ASSERT_EQ(run_until(e, NULL, 0, 50 * USEC_PER_MSEC), 0);
        ASSERT_EQ(s.n_accepted, 1);
        ASSERT_NULL(s.listener);
        /* The listening socket is closed: the backlog went with it. */
        struct pollfd pfd = { .fd = c2, .events = POLLIN };
        ASSERT_EQ(poll(&pfd, 1, 5000), 1);
        close(c1);
        close(c2);
        server_done(&s);
}

TEST(listener_refuses_what_is_not_a_listening_stream_socket) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Listener *l = NULL;
        int p[2], fd;

        ASSERT_OK(sd_event_new(&e));

        ASSERT_OK(pipe2(p, O_CLOEXEC));
        close(p[1]);
        ASSERT_ERROR(listener_new(e, p[0], &server_callbacks, NULL, &l), ENOTSOCK);
        ASSERT_FALSE(fd_is_open(p[0]));

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_ERROR(listener_new(e, fd, &server_callbacks, NULL, &l), ESOCKTNOSUPPORT);
        ASSERT_FALSE(fd_is_open(fd));

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_ERROR(listener_new(e, fd, &server_callbacks, NULL, &l), EBADFD);
        ASSERT_FALSE(fd_is_open(fd));

        HostPort hp = host_port("127.0.0.1", 0);
        ASSERT_OK(listen_bind(&hp, 1, &fd));
        ASSERT_ERROR(listener_new(e, fd, &(const ListenerCallbacks) {}, NULL, &l), EINVAL);
        ASSERT_FALSE(fd_is_open(fd));

        ASSERT_ERROR(listener_new(e, -1, &server_callbacks, NULL, &l), EBADF);
        ASSERT_NULL(l);
}

TEST(listener_makes_a_blocking_socket_nonblocking) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        Server s = {};
        int fd;

        ASSERT_OK(sd_event_new(&e));
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &in, sizeof(in)));
        ASSERT_OK(listen(fd, 4));
        ASSERT_FALSE(fcntl(fd, F_GETFL) & O_NONBLOCK);
        ASSERT_OK(listener_new(e, fd, &server_callbacks, &s, &s.listener));
        /* Otherwise the last accept4() of a batch would block the whole loop. */
        ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
        server_done(&s);
        ASSERT_FALSE(fd_is_open(fd));
}

/* ---- listen_fds_*(): socket activation ---- */

/* Makes this process look socket-activated: fds moved to 3, 4, …, LISTEN_* set for our pid. */
static void fake_activation(int *fds, size_t n, const char *names) {
        int high[16];
        char buf[32];

        ASSERT_LE(n, ELEMENTSOF(high));
        for (size_t i = 0; i < n; i++) {
                high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
                ASSERT_TRUE(high[i] >= 100);
                close(fds[i]);
        }
        for (size_t i = 0; i < n; i++) {
                ASSERT_EQ(dup2(high[i], SD_LISTEN_FDS_START + (int) i), SD_LISTEN_FDS_START + (int) i);
                close(high[i]);
                fds[i] = SD_LISTEN_FDS_START + (int) i;
        }
        snprintf(buf, sizeof(buf), "%d", (int) getpid());
        ASSERT_OK(setenv("LISTEN_PID", buf, 1));
        snprintf(buf, sizeof(buf), "%zu", n);
        ASSERT_OK(setenv("LISTEN_FDS", buf, 1));
        if (names)
                ASSERT_OK(setenv("LISTEN_FDNAMES", names, 1));
        else
                ASSERT_OK(unsetenv("LISTEN_FDNAMES"));
}

static int listening_socket(uint16_t *ret_port) {
        HostPort hp = host_port("127.0.0.1", 0);
        int fd;

        ASSERT_OK(listen_bind(&hp, 4, &fd));
        /* As the service manager passes them: blocking. */
        ASSERT_OK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK));
        if (ret_port)
                *ret_port = local_port(fd);
        return fd;
}

TEST(listen_fds_none_without_activation) {
        _cleanup_strv_free_ char **names = NULL;
        int *fds = (int *) 0x1;
        size_t n = 99;

        ASSERT_OK(unsetenv("LISTEN_PID"));
        ASSERT_OK(unsetenv("LISTEN_FDS"));
        ASSERT_EQ(listen_fds_take("grpc", &fds, &n), 0);
        ASSERT_NULL(fds);
        ASSERT_EQ(n, 0);
        ASSERT_EQ(listen_fds_unclaimed(&names), 0);
        ASSERT_NULL(names);
        ASSERT_EQ(listen_fds_close_unclaimed(), 0);
}

TEST(listen_fds_for_another_pid_are_ignored) {
        int fd = listening_socket(NULL);
        int *fds = NULL;
        size_t n = 99;

        fake_activation(&fd, 1, "grpc");
        ASSERT_OK(setenv("LISTEN_PID", "1", 1));
        ASSERT_EQ(listen_fds_take("grpc", &fds, &n), 0);
        ASSERT_EQ(n, 0);
        /* Not ours: left alone. */
        ASSERT_TRUE(fd_is_open(fd));
}

TEST(listen_fds_take_by_name_in_order) {
        int socks[4];
        uint16_t ports[4];
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ int *grpc = NULL, *admin = NULL, *again = NULL;
        size_t n_grpc = 0, n_admin = 0, n_again = 99;

        for (size_t i = 0; i < ELEMENTSOF(socks); i++)
                socks[i] = listening_socket(&ports[i]);
        fake_activation(socks, ELEMENTSOF(socks), "grpc:admin:grpc:metrics");

        ASSERT_EQ(listen_fds_take("grpc", &grpc, &n_grpc), 2);
        ASSERT_EQ(n_grpc, 2);
        ASSERT_EQ(grpc[0], SD_LISTEN_FDS_START);
        ASSERT_EQ(grpc[1], SD_LISTEN_FDS_START + 2);
        ASSERT_EQ(local_port(grpc[0]), ports[0]);
        ASSERT_EQ(local_port(grpc[1]), ports[2]);
        assert_nonblock_cloexec(grpc[0]);
        assert_nonblock_cloexec(grpc[1]);
        /* Not taken yet: its flags are untouched. */
        ASSERT_FALSE(fcntl(SD_LISTEN_FDS_START + 1, F_GETFL) & O_NONBLOCK);
        /* Read once, then cleared for programs we spawn. */
        ASSERT_NULL(getenv("LISTEN_FDS"));
        ASSERT_NULL(getenv("LISTEN_PID"));
        ASSERT_NULL(getenv("LISTEN_FDNAMES"));

        ASSERT_EQ(listen_fds_take("admin", &admin, &n_admin), 1);
        ASSERT_EQ(admin[0], SD_LISTEN_FDS_START + 1);
        ASSERT_EQ(local_port(admin[0]), ports[1]);
        assert_nonblock_cloexec(admin[0]);

        /* Handed out once. */
        ASSERT_EQ(listen_fds_take("grpc", &again, &n_again), 0);
        ASSERT_EQ(n_again, 0);
        ASSERT_NULL(again);

        ASSERT_EQ(listen_fds_unclaimed(&names), 1);
        ASSERT_EQ(strv_length(names), 1);
        ASSERT_STREQ(names[0], "metrics");
        ASSERT_EQ(listen_fds_close_unclaimed(), 1);
        ASSERT_FALSE(fd_is_open(SD_LISTEN_FDS_START + 3));
        ASSERT_TRUE(fd_is_open(SD_LISTEN_FDS_START));
        names = strv_free(names);
        ASSERT_EQ(listen_fds_unclaimed(&names), 0);
        ASSERT_NULL(names);
        ASSERT_EQ(listen_fds_close_unclaimed(), 0);

        /* Taken fds serve. */
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Server s = {};
        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(listener_new(e, admin[0], &server_callbacks, &s, &s.listener));
        int c = connect_completed(AF_INET, ports[1]);
        run_until(e, &s.n_accepted, 1, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.n_accepted, 1);
        close(c);
        server_done(&s);
        close(grpc[0]);
        close(grpc[1]);
}

TEST(listen_fds_without_names_are_unknown) {
        int fd = listening_socket(NULL);
        _cleanup_free_ int *fds = NULL;
        _cleanup_strv_free_ char **names = NULL;
        size_t n = 0;

        fake_activation(&fd, 1, NULL);
        ASSERT_EQ(listen_fds_take("grpc", &fds, &n), 0);
        ASSERT_EQ(listen_fds_unclaimed(&names), 1);
        ASSERT_STREQ(names[0], "unknown");
        ASSERT_EQ(listen_fds_take("unknown", &fds, &n), 1);
        ASSERT_EQ(fds[0], SD_LISTEN_FDS_START);
        close(fds[0]);
}

TEST(listen_fds_refuse_what_is_not_a_listening_stream_socket) {
        static const struct {
                const char *name;
                int error;
        } table[] = {
                { "pipe", ENOTSOCK },
                { "udp", ESOCKTNOSUPPORT },
                { "unlistened", EBADFD },
                { "mixed", ENOTSOCK }, /* a good socket and a pipe under one name: none handed out */
        };
        _cleanup_strv_free_ char **names = NULL;
        int fds[5], p[2];

        ASSERT_OK(pipe2(p, O_CLOEXEC));
        fds[0] = p[0];
        close(p[1]);
        fds[1] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        fds[2] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        fds[3] = listening_socket(NULL);
        ASSERT_OK(pipe2(p, O_CLOEXEC));
        fds[4] = p[0];
        close(p[1]);
        ASSERT_TRUE(fds[1] >= 0 && fds[2] >= 0);
        fake_activation(fds, ELEMENTSOF(fds), "pipe:udp:unlistened:mixed:mixed");

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                int *got = (int *) 0x1;
                size_t n = 99;

                CASE("%s", table[i].name);
                ASSERT_ERROR(listen_fds_take(table[i].name, &got, &n), table[i].error);
                ASSERT_TRUE(got == (int *) 0x1);
                ASSERT_EQ(n, 99);
        }
        /* Nothing was handed out, nothing closed: all of them are reported. */
        ASSERT_EQ(listen_fds_unclaimed(&names), 5);
        ASSERT_STREQ(names[3], "mixed");
        ASSERT_FALSE(fcntl(fds[3], F_GETFL) & O_NONBLOCK);
        ASSERT_EQ(listen_fds_close_unclaimed(), 5);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                ASSERT_FALSE(fd_is_open(fds[i]));
}

TEST(listen_fds_names_are_validated) {
        static const char *const bad[] = {
                "", "grpc:admin", "tab\there", "new\nline", "\x7f", "caf\xc3\xa9",
        };
        char longest[LISTEN_FDNAME_MAX + 2];
        int *fds = NULL;
        size_t n = 0;

        ASSERT_OK(unsetenv("LISTEN_FDS"));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("bad name %zu", i);
                ASSERT_ERROR(listen_fds_take(bad[i], &fds, &n), EINVAL);
        }
        memset(longest, 'a', sizeof(longest));
        longest[LISTEN_FDNAME_MAX + 1] = '\0';
        ASSERT_ERROR(listen_fds_take(longest, &fds, &n), EINVAL);
        longest[LISTEN_FDNAME_MAX] = '\0';
        ASSERT_EQ(listen_fds_take(longest, &fds, &n), 0);
        ASSERT_EQ(listen_fds_take("with space", &fds, &n), 0);
}

TEST(listen_fds_malformed_environment_is_an_error_every_time) {
        static const struct {
                const char *what, *fds, *names;
        } table[] = {
                { "fewer names than fds", "2", "grpc" },
                { "junk count", "two", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                pid_t pid;
                int status;

                CASE("%s", table[i].what);
                /* The list is read once per process: each row in its own. */
                pid = fork();
                ASSERT_TRUE(pid >= 0);
                if (pid == 0) {
                        int fd[2] = { listening_socket(NULL), listening_socket(NULL) };
                        _cleanup_strv_free_ char **names = NULL;
                        int *fds = NULL;
                        size_t n = 0;

                        fake_activation(fd, 2, table[i].names);
                        ASSERT_OK(setenv("LISTEN_FDS", table[i].fds, 1));
                        ASSERT_ERROR(listen_fds_take("grpc", &fds, &n), EINVAL);
                        ASSERT_ERROR(listen_fds_take("grpc", &fds, &n), EINVAL);
                        ASSERT_ERROR(listen_fds_unclaimed(&names), EINVAL);
                        ASSERT_ERROR(listen_fds_close_unclaimed(), EINVAL);
                        _exit(0);
                }
                ASSERT_EQ(waitpid(pid, &status, 0), pid);
                ASSERT_TRUE(WIFEXITED(status));
                ASSERT_EQ(WEXITSTATUS(status), 0);
        }
}

/* Runs under systemd-socket-activate: takes what it was given and prints it for the case below. */
static int helper_activation(void) {
        _cleanup_free_ int *grpc = NULL, *admin = NULL, *again = NULL;
        _cleanup_strv_free_ char **names = NULL;
        size_t n_grpc = 0, n_admin = 0, n_again = 0;
        char a[LISTEN_ADDRESS_STRING_MAX], b[LISTEN_ADDRESS_STRING_MAX], c[LISTEN_ADDRESS_STRING_MAX];
        struct pollfd pfd;
        int r, conn;

        r = listen_fds_take("grpc", &grpc, &n_grpc);
        if (r != 2 || n_grpc != 2) {
                printf("helper: take grpc → %d, %zu fds\n", r, n_grpc);
                return 1;
        }
        r = listen_fds_take("admin", &admin, &n_admin);
        if (r != 1 || n_admin != 1) {
                printf("helper: take admin → %d, %zu fds\n", r, n_admin);
                return 1;
        }
        if (listen_get_local(grpc[0], a, sizeof(a)) < 0 || listen_get_local(grpc[1], b, sizeof(b)) < 0 ||
            listen_get_local(admin[0], c, sizeof(c)) < 0)
                return 1;
        for (size_t i = 0; i < 3; i++) {
                int fd = i < 2 ? grpc[i] : admin[0];

                if (!(fcntl(fd, F_GETFL) & O_NONBLOCK) || !(fcntl(fd, F_GETFD) & FD_CLOEXEC)) {
                        printf("helper: fd %d lacks O_NONBLOCK or FD_CLOEXEC\n", fd);
                        return 1;
                }
        }
        r = listen_fds_take("grpc", &again, &n_again);
        if (listen_fds_unclaimed(&names) != 1)
                return 1;

        /* The connection that made systemd-socket-activate start us waits on the admin socket. */
        pfd = (struct pollfd) { .fd = admin[0], .events = POLLIN };
        conn = poll(&pfd, 1, 5000) == 1 ? accept4(admin[0], NULL, NULL, SOCK_CLOEXEC) : -1;

        printf("helper: grpc=%d,%d %s %s admin=%d %s again=%d unclaimed=%s env=%s accepted=%s\n", grpc[0],
               grpc[1], a, b, admin[0], c, r, names[0], getenv("LISTEN_FDS") ? "set" : "cleared",
               conn >= 0 ? "yes" : "no");
        fflush(stdout);
        if (conn >= 0)
                close(conn);
        (void) listen_fds_close_unclaimed();
        close(grpc[0]);
        close(grpc[1]);
        close(admin[0]);
        return 0;
}

__attribute__((constructor)) static void helper_main(void) {
        const char *mode = getenv(HELPER_ENV);

        if (!mode)
                return;
        exit(streq(mode, "activation") ? helper_activation() : 2);
}

/* Reads the child's output into buf until it contains want (want == NULL: until EOF); false on timeout. */
static bool read_output_until(int fd, char *buf, size_t size, size_t *len, const char *want, usec_t end) {
        for (;;) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                usec_t t = now(CLOCK_MONOTONIC);
                ssize_t k;

                if (want && strstr(buf, want))
                        return true;
                if (t >= end)
                        return false;
                if (poll(&pfd, 1, (int) ((end - t) / USEC_PER_MSEC) + 1) < 0) {
                        ASSERT_EQ(errno, EINTR);
                        continue;
                }
                if (pfd.revents == 0)
                        continue;
                ASSERT_LT(*len, size - 1);
                k = read(fd, buf + *len, size - 1 - *len);
                ASSERT_TRUE(k >= 0);
                if (k == 0)
                        return !want;
                *len += (size_t) k;
                buf[*len] = '\0';
        }
}

TEST(socket_activation_for_real) {
        char exe[PATH_MAX], l[4][32], env_asan[512], expected[512], line[64];
        static char out[64 * 1024];
        posix_spawn_file_actions_t fa;
        usec_t end = now(CLOCK_MONOTONIC) + 20 * USEC_PER_SEC;
        size_t len = 0;
        int socks[4], pipefd[2], status, c;
        uint16_t ports[4];
        pid_t pid;
        ssize_t k;

        k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        ASSERT_GT(k, 0);
        exe[k] = '\0';

        /* Free ports: bound all at once (so they differ), released just before the service manager binds. */
        for (size_t i = 0; i < 4; i++)
                socks[i] = listening_socket(&ports[i]);
        for (size_t i = 0; i < 4; i++) {
                snprintf(l[i], sizeof(l[i]), "127.0.0.1:%u", ports[i]);
                close(socks[i]);
        }
        snprintf(env_asan, sizeof(env_asan), "ASAN_OPTIONS=%s", getenv("ASAN_OPTIONS") ?: "");

        /* Without --accept, systemd-socket-activate binds, waits for the first connection, then executes the
         * program with the sockets: run it in the background, connect once it listens, read the output. */
        const char *const argv[] = {
                "systemd-socket-activate", "-l", l[0], "-l", l[1], "-l", l[2], "-l", l[3],
                "--fdname=grpc:admin:grpc:metrics", "-E", HELPER_ENV "=activation", "-E", env_asan, exe,
                NULL,
        };
        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        ASSERT_EQ(posix_spawn_file_actions_init(&fa), 0);
        ASSERT_EQ(posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0), 0);
        ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO), 0);
        ASSERT_EQ(posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO), 0);
        if (posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *) argv, environ) != 0)
                test_skip("systemd-socket-activate not available");
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);
        out[0] = '\0';

        snprintf(line, sizeof(line), "Listening on %s as 6.", l[3]);
        if (!read_output_until(pipefd[0], out, sizeof(out), &len, line, end)) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                test_fail(__FILE__, __LINE__, "systemd-socket-activate did not listen: %s", out);
        }
        c = connect_completed(AF_INET, ports[1]);
        if (!read_output_until(pipefd[0], out, sizeof(out), &len, NULL, end)) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                test_fail(__FILE__, __LINE__, "helper did not finish: %s", out);
        }
        close(pipefd[0]);
        close(c);
        ASSERT_EQ(waitpid(pid, &status, 0), pid);

        snprintf(expected, sizeof(expected),
                 "helper: grpc=3,5 %s %s admin=4 %s again=0 unclaimed=metrics env=cleared accepted=yes\n",
                 l[0], l[2], l[1]);
        ASSERT_STRSTR(out, expected);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);
}
