/* SPDX-License-Identifier: Apache-2.0 */

/* CONNECT byte streams over HTTP/2 over TLS on loopback, both ends in this process's loop: a tunneler
 * pipe (connect_pipe_open) and a connector pipe (connect_pipe_accept), with the applications at either end
 * played by this process or by forked children. Covers integrity of a large transfer both ways at once,
 * half-close, backpressure with flat memory against a slow reader, resets in both directions, refusals,
 * the session going away, the idle timeout, and the parsers. */

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net-connect.h"
#include "net-fixture.h"
#include "tests.h"

#if defined(__SANITIZE_ADDRESS__)
#  define UNDER_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define UNDER_ASAN 1
#  endif
#endif
#ifndef UNDER_ASAN
#  define UNDER_ASAN 0
#endif

/* What the tunneler asks for; the connector in these tests "dials" a socket it was handed. */
#define TARGET "db.internal:5432"

#define KIB (UINT64_C(1024))
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

/* ---- one pipe's view, as its owner sees it through the callbacks ------------------------------------ */

typedef struct Side {
        ConnectPipe *pipe;
        unsigned n_responses;
        unsigned status;
        bool closed;
        int error;
        ConnectStats stats;
        unsigned events;          /* sequence: responses and close, to check their order */
        unsigned response_seq, close_seq;
        bool fd_open_in_on_close; /* the socket was still ours during on_close */
        bool abort_in_response;   /* the owner gives up from within on_response */
} Side;

static void side_on_response(ConnectPipe *p, unsigned status, void *userdata) {
        Side *s = userdata;

        ASSERT_TRUE(connect_pipe_get_userdata(p) == s);
        ASSERT_GE(connect_pipe_get_fd(p), 0);
        s->n_responses++;
        s->status = status;
        s->response_seq = ++s->events;
        if (s->abort_in_response) {
                connect_pipe_abort(p);
                ASSERT_TRUE(s->closed); /* at once, from inside the pipe's own callback */
                ASSERT_EQ(s->error, -ECANCELED);
        }
}

static void side_on_close(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata) {
        Side *s = userdata;

        ASSERT_FALSE(s->closed); /* exactly once */
        s->closed = true;
        s->error = error;
        s->stats = *stats;
        s->close_seq = ++s->events;
        s->fd_open_in_on_close = connect_pipe_get_fd(p) >= 0;
        s->pipe = NULL;
        connect_pipe_abort(p); /* a no-op by now: on_close comes once */
}

static const ConnectPipeCallbacks side_callbacks = {
        .on_response = side_on_response,
        .on_close = side_on_close,
};

/* ---- a tunneler and a connector joined by one HTTP/2 session ---------------------------------------- */

typedef struct Tunnel {
        FixtureEnv env;
        H2Session *server, *client;
        bool server_closed, client_closed;
        int server_error, client_error;

        /* What the connector does with a CONNECT: accept with accept_fd, or reject. */
        int accept_fd;
        unsigned reject_status;
        usec_t idle_timeout;

        size_t n_requests;
        int request_result, accept_result;
        char authority[CONNECT_AUTHORITY_MAX + 1];
        bool request_has_scheme_or_path;

        Side tun, con;
} Tunnel;

static int server_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        Tunnel *t = userdata;
        const char *authority = NULL;

        t->n_requests++;
        t->request_result = connect_request_parse(h, &authority);
        if (authority)
                snprintf(t->authority, sizeof(t->authority), "%s", authority);
        t->request_has_scheme_or_path = h2_headers_get(h, ":scheme") || h2_headers_get(h, ":path");
        if (t->request_result < 0)
                return t->request_result;

        if (t->reject_status > 0) {
                /* Only refusals go out without a tunnel. */
                ASSERT_ERROR(connect_reject(st, 200), EINVAL);
                ASSERT_ERROR(connect_reject(st, 399), EINVAL);
                ASSERT_ERROR(connect_reject(st, 600), EINVAL);
                ASSERT_OK(connect_reject(st, t->reject_status));
                return 0;
        }
        t->accept_result = connect_pipe_accept(st, TAKE_FD(t->accept_fd), &side_callbacks, &t->con,
                                               &t->con.pipe);
        if (t->accept_result < 0)
                return t->accept_result; /* h2 refuses the stream */
        if (t->idle_timeout > 0)
                ASSERT_OK(connect_pipe_set_idle_timeout(t->con.pipe, t->idle_timeout));
        return 0;
}

static void server_on_close(H2Session *s, int error, void *userdata) {
        Tunnel *t = userdata;
        t->server_closed = true;
        t->server_error = error;
}

static void client_on_close(H2Session *s, int error, void *userdata) {
        Tunnel *t = userdata;
        t->client_closed = true;
        t->client_error = error;
}

static const H2SessionCallbacks server_callbacks = {
        .on_request = server_on_request,
        .on_close = server_on_close,
};

static const H2SessionCallbacks client_callbacks = { .on_close = client_on_close };

/* Sessions only; the test opens pipes itself. */
static void tunnel_init(Tunnel *t, const H2Settings *settings) {
        TlsConnection *st, *ct;

        *t = (Tunnel) { .accept_fd = -EBADF };
        fixture_env_init(&t->env);
        fixture_env_tls_pair(&t->env, &st, &ct);
        ASSERT_OK(h2_session_new(st, settings, &server_callbacks, t, &t->server));
        ASSERT_OK(h2_session_new(ct, settings, &client_callbacks, t, &t->client));
}

/* Sessions plus one CONNECT: tun_fd is the tunneler's local socket, con_fd the connector's. */
static void tunnel_start(Tunnel *t, const H2Settings *settings, int tun_fd, int con_fd) {
        tunnel_init(t, settings);
        t->accept_fd = con_fd;
        ASSERT_OK(connect_pipe_open(t->client, TARGET, tun_fd, &side_callbacks, &t->tun, &t->tun.pipe));
}

static void tunnel_done(Tunnel *t) {
        if (t->client)
                h2_session_terminate(t->client, H2_NO_ERROR);
        if (t->server)
                h2_session_terminate(t->server, H2_NO_ERROR);
        /* Every pipe has reported by now: a session's end closes its streams. */
        ASSERT_NULL(t->tun.pipe);
        ASSERT_NULL(t->con.pipe);
        h2_session_unref(t->client);
        h2_session_unref(t->server);
        safe_close(t->accept_fd);
        fixture_env_done(&t->env);
}

static bool both_closed(void *userdata) {
        Tunnel *t = userdata;
        return t->tun.closed && t->con.closed;
}

static bool tun_closed(void *userdata) {
        return ((Tunnel *) userdata)->tun.closed;
}

static bool tun_established(void *userdata) {
        Tunnel *t = userdata;
        return t->tun.n_responses > 0 || t->tun.closed;
}

static void run_for(sd_event *e, usec_t t) {
        usec_t end = now(CLOCK_MONOTONIC) + t;

        while (now(CLOCK_MONOTONIC) < end)
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
}

/* ---- the local applications, played by this process ------------------------------------------------- */

static void app_write_all(Tunnel *t, int fd, const void *data, size_t size) {
        const uint8_t *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0) {
                        ASSERT_TRUE(errno == EAGAIN);
                        ASSERT_OK(sd_event_run(t->env.event, 10 * USEC_PER_MSEC));
                        continue;
                }
                p += n;
                size -= (size_t) n;
        }
}

/* Reads until EOF or an error, running the loop meanwhile. Returns the byte count, or -errno. */
static ssize_t app_read_all(Tunnel *t, int fd, void *buf, size_t size) {
        usec_t deadline = now(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;
        size_t got = 0;

        for (;;) {
                ssize_t n = read(fd, (uint8_t *) buf + got, size - got);

                if (n == 0)
                        return (ssize_t) got;
                if (n < 0 && errno != EAGAIN)
                        return -errno;
                if (n > 0) {
                        got += (size_t) n;
                        ASSERT_LT(got, size); /* more than expected */
                        continue;
                }
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                ASSERT_OK(sd_event_run(t->env.event, 10 * USEC_PER_MSEC));
        }
}

/* Reads exactly size bytes, running the loop meanwhile. */
static void app_read_exact(Tunnel *t, int fd, void *buf, size_t size) {
        usec_t deadline = now(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;
        size_t got = 0;

        while (got < size) {
                ssize_t n = read(fd, (uint8_t *) buf + got, size - got);

                if (n < 0) {
                        ASSERT_TRUE(errno == EAGAIN);
                        ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                        ASSERT_OK(sd_event_run(t->env.event, 10 * USEC_PER_MSEC));
                        continue;
                }
                ASSERT_GT(n, 0);
                got += (size_t) n;
        }
}

/* Establishes the tunnel and moves a few bytes each way, so both pipes are relaying. */
static void tunnel_ping(Tunnel *t, int tun_app, int con_app) {
        uint8_t buf[4];

        app_write_all(t, tun_app, "ping", 4);
        app_read_exact(t, con_app, buf, 4);
        ASSERT_MEMEQ(buf, "ping", 4);
        app_write_all(t, con_app, "pong", 4);
        app_read_exact(t, tun_app, buf, 4);
        ASSERT_MEMEQ(buf, "pong", 4);
        ASSERT_NOT_NULL(t->tun.pipe);
        ASSERT_NOT_NULL(t->con.pipe);
}

static void close_with_reset(int fd) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };

        ASSERT_TRUE(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) == 0);
        ASSERT_TRUE(close(fd) == 0);
}

static void fill_pattern(uint8_t *buf, size_t size, unsigned seed) {
        for (size_t i = 0; i < size; i++)
                buf[i] = (uint8_t) (i * 131 + seed * 7 + (i >> 8));
}

static void socketpair_nonblock(int ret[2]) {
        ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, ret) == 0);
}

/* Windows sized for throughput, as the agents will use: 4 MiB per stream, 32 MiB per session. */
static void settings_realistic(H2Settings *s) {
        h2_settings_init(s);
        s->stream_window = 4 * 1024 * 1024;
        s->connection_window = 32 * 1024 * 1024;
}

/* ---- 1. integrity: 1 GiB up and 8 MiB down at the same time ------------------------------------------ */

TEST(bidirectional_integrity) {
        static Tunnel t;
        const uint64_t up = 1 * GIB, down = 8 * MIB;
        const FixtureAppSpec tun_app = { .write_bytes = up, .seed = 1, .digest = true };
        const FixtureAppSpec con_app = { .write_bytes = down, .seed = 2, .digest = true };
        uint8_t want_up[32], want_down[32];
        int tun_fds[2], con_fds[2];
        FixtureAppResult *res = fixture_app_results_new(2);
        H2Settings s;
        pid_t pids[2];

        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        pids[0] = fixture_app_spawn(tun_fds[0], &tun_app, &res[0]);
        pids[1] = fixture_app_spawn(con_fds[0], &con_app, &res[1]);

        settings_realistic(&s);
        usec_t t0 = now(CLOCK_MONOTONIC);
        tunnel_start(&t, &s, tun_fds[1], con_fds[1]);
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 120 * USEC_PER_SEC));
        usec_t took = now(CLOCK_MONOTONIC) - t0;

        ASSERT_EQ(fixture_app_wait(pids[0]), 0);
        ASSERT_EQ(fixture_app_wait(pids[1]), 0);
        ASSERT_EQ(t.tun.error, 0);
        ASSERT_EQ(t.con.error, 0);
        ASSERT_EQ(t.tun.status, 200);
        ASSERT_STREQ(t.authority, TARGET);
        ASSERT_FALSE(t.request_has_scheme_or_path);

        /* Every byte arrived, in order, unaltered: what each reader hashed is the digest of the stream,
         * computed here on its own. */
        ASSERT_UEQ(res[0].written, up);
        ASSERT_UEQ(res[1].read, up);
        ASSERT_UEQ(res[1].written, down);
        ASSERT_UEQ(res[0].read, down);
        fixture_app_digest(up, tun_app.seed, want_up);
        fixture_app_digest(down, con_app.seed, want_down);
        ASSERT_MEMEQ(res[1].read_digest, want_up, 32);
        ASSERT_MEMEQ(res[0].read_digest, want_down, 32);
        ASSERT_MEMEQ(res[0].written_digest, want_up, 32);
        ASSERT_MEMEQ(res[1].written_digest, want_down, 32);

        ASSERT_UEQ(t.tun.stats.bytes_up, up);
        ASSERT_UEQ(t.tun.stats.bytes_down, down);
        ASSERT_UEQ(t.con.stats.bytes_up, down);
        ASSERT_UEQ(t.con.stats.bytes_down, up);
        fprintf(stderr, "# %" PRIu64 " MiB up + %" PRIu64 " MiB down in %" PRIu64 " ms (%.0f MB/s up)\n",
                up / MIB, down / MIB, took / USEC_PER_MSEC, (double) up / (double) took);

        fixture_app_results_free(res, 2);
        tunnel_done(&t);
}

/* The pseudo-random stream matches a digest computed outside this code (Python: splitmix64, little-endian,
 * sha256), so a bug in the generator shared by writer and checker cannot hide. */
TEST(app_stream_is_deterministic) {
        static const uint8_t want[32] = {
                0xdf, 0xc7, 0x98, 0xd9, 0x9f, 0xf2, 0x77, 0xfc, 0xc2, 0x54, 0x7f, 0x30, 0x4e, 0x64, 0xc5,
                0xc0, 0xf1, 0xec, 0xd0, 0x88, 0x9d, 0xe8, 0x0f, 0x8d, 0xb3, 0x81, 0x5c, 0xef, 0x29, 0x89,
                0xc5, 0x1f,
        };
        uint8_t got[32];

        fixture_app_digest(100000, 42, got);
        ASSERT_MEMEQ(got, want, 32);
}

/* ---- 2. half-close ----------------------------------------------------------------------------------- */

/* One application writes data and shuts down its sending side; the other must receive exactly that. */
static void send_and_half_close(Tunnel *t, int from_fd, int to_fd, const uint8_t *data, size_t size) {
        static uint8_t buf[10000];

        ASSERT_LE(size, sizeof(buf));
        app_write_all(t, from_fd, data, size);
        ASSERT_TRUE(shutdown(from_fd, SHUT_WR) == 0);
        ASSERT_EQ(app_read_all(t, to_fd, buf, sizeof(buf)), (ssize_t) size);
        ASSERT_MEMEQ(buf, data, size);
}

TEST(half_close_client_first) {
        static Tunnel t;
        static uint8_t request[1000], response[5000], buf[10000];
        int tun_fds[2], con_fds[2];

        fill_pattern(request, sizeof(request), 1);
        fill_pattern(response, sizeof(response), 2);
        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);

        /* The tunneler's application sends its request and closes its sending side. */
        send_and_half_close(&t, tun_fds[0], con_fds[0], request, sizeof(request));

        /* Half-closed, not closed: the response still flows. */
        run_for(t.env.event, 50 * USEC_PER_MSEC);
        ASSERT_FALSE(t.tun.closed);
        ASSERT_FALSE(t.con.closed);
        send_and_half_close(&t, con_fds[0], tun_fds[0], response, sizeof(response));

        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.tun.error, 0);
        ASSERT_EQ(t.con.error, 0);
        ASSERT_UEQ(t.tun.stats.bytes_up, sizeof(request));
        ASSERT_UEQ(t.tun.stats.bytes_down, sizeof(response));
        ASSERT_UEQ(t.con.stats.bytes_up, sizeof(response));
        ASSERT_UEQ(t.con.stats.bytes_down, sizeof(request));
        ASSERT_GT(t.tun.stats.start, 0);
        ASSERT_GE(t.tun.stats.end, t.tun.stats.start);
        ASSERT_LE(t.tun.stats.end, now(CLOCK_MONOTONIC));
        /* on_response(200) came first, and once. */
        ASSERT_EQ(t.tun.n_responses, 1);
        ASSERT_LT(t.tun.response_seq, t.tun.close_seq);
        ASSERT_EQ(t.con.n_responses, 0);
        ASSERT_TRUE(t.tun.fd_open_in_on_close);
        /* The stream is gone from the session once both ends are done. */
        ASSERT_EQ(h2_session_get_n_streams(t.client), 0);

        /* A clean close reads as EOF, not as a reset. */
        ASSERT_EQ(read(tun_fds[0], buf, 1), 0);
        ASSERT_EQ(read(con_fds[0], buf, 1), 0);
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

TEST(half_close_server_first) {
        static Tunnel t;
        static uint8_t greeting[3000], request[700];
        int tun_fds[2], con_fds[2];

        fill_pattern(greeting, sizeof(greeting), 3);
        fill_pattern(request, sizeof(request), 4);
        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);

        /* The server speaks first and is done talking; the client answers afterwards. */
        send_and_half_close(&t, con_fds[0], tun_fds[0], greeting, sizeof(greeting));

        run_for(t.env.event, 50 * USEC_PER_MSEC);
        ASSERT_FALSE(t.tun.closed);
        ASSERT_FALSE(t.con.closed);
        send_and_half_close(&t, tun_fds[0], con_fds[0], request, sizeof(request));

        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.tun.error, 0);
        ASSERT_EQ(t.con.error, 0);
        ASSERT_UEQ(t.tun.stats.bytes_up, sizeof(request));
        ASSERT_UEQ(t.tun.stats.bytes_down, sizeof(greeting));
        ASSERT_UEQ(t.con.stats.bytes_up, sizeof(greeting));
        ASSERT_UEQ(t.con.stats.bytes_down, sizeof(request));
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

/* Nothing in either direction: both EOFs still make a clean close, with zero counts. */
TEST(half_close_empty) {
        static Tunnel t;
        int tun_fds[2], con_fds[2];
        uint8_t buf[16];

        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);
        ASSERT_TRUE(shutdown(tun_fds[0], SHUT_WR) == 0);
        ASSERT_TRUE(shutdown(con_fds[0], SHUT_WR) == 0);
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.tun.error, 0);
        ASSERT_EQ(t.con.error, 0);
        ASSERT_UEQ(t.tun.stats.bytes_up + t.tun.stats.bytes_down, 0);
        ASSERT_UEQ(t.con.stats.bytes_up + t.con.stats.bytes_down, 0);
        ASSERT_EQ(read(tun_fds[0], buf, 1), 0);
        ASSERT_EQ(read(con_fds[0], buf, 1), 0);
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

/* ---- 3. backpressure: a slow reader keeps memory flat ------------------------------------------------ */

static size_t rss_bytes(void) {
        unsigned long size, resident;
        FILE *f = fopen("/proc/self/statm", "re");

        ASSERT_NOT_NULL(f);
        ASSERT_EQ(fscanf(f, "%lu %lu", &size, &resident), 2);
        fclose(f);
        return resident * (size_t) sysconf(_SC_PAGESIZE);
}

TEST(slow_reader_memory_flat) {
        static Tunnel t;
        /* The connector's application reads 16 KiB every 10 ms; the tunneler's offers 1 GiB flat out. */
        const FixtureAppSpec writer = { .write_bytes = 1 * GIB, .seed = 3 };
        const FixtureAppSpec reader = { .read_chunk = 16 * 1024, .read_pause = 10 * 1000 };
        size_t base, max_rss = 0, max_up = 0, max_down = 0, bound;
        int tun_fds[2], con_fds[2];
        FixtureAppResult *res = fixture_app_results_new(2);
        H2Settings s;
        pid_t pids[2];

        settings_realistic(&s);
        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        pids[0] = fixture_app_spawn(tun_fds[0], &writer, &res[0]);
        pids[1] = fixture_app_spawn(con_fds[0], &reader, &res[1]);
        tunnel_init(&t, &s);
        run_for(t.env.event, 100 * USEC_PER_MSEC);
        base = rss_bytes();

        t.accept_fd = con_fds[1];
        ASSERT_OK(connect_pipe_open(t.client, TARGET, tun_fds[1], &side_callbacks, &t.tun, &t.tun.pipe));
        ASSERT_TRUE(fixture_run_until_func(t.env.event, tun_established, &t, 5 * USEC_PER_SEC));

        usec_t end = now(CLOCK_MONOTONIC) + 3 * USEC_PER_SEC;
        while (now(CLOCK_MONOTONIC) < end) {
                size_t up, down;

                ASSERT_OK(sd_event_run(t.env.event, 50 * USEC_PER_MSEC));
                ASSERT_FALSE(t.tun.closed);
                ASSERT_FALSE(t.con.closed);
                connect_pipe_get_queued(t.tun.pipe, &up, NULL);
                connect_pipe_get_queued(t.con.pipe, NULL, &down);
                max_up = MAX(max_up, up);
                max_down = MAX(max_down, down);
                max_rss = MAX(max_rss, rss_bytes());
        }
        uint64_t written = __atomic_load_n(&res[0].written, __ATOMIC_RELAXED);
        uint64_t read_total = __atomic_load_n(&res[1].read, __ATOMIC_RELAXED);

        /* What may pile up in this process: the connector's queue (at most its stream window, storage up to
         * twice that while growing), the tunneler's socket queue (CONNECT_BUFFER_MAX, likewise), plus slack
         * for TLS and HTTP/2 buffers and the allocator. */
        bound = 2 * (s.stream_window + CONNECT_BUFFER_MAX) + 16 * MIB;
        fprintf(stderr,
                "# rss %zu KiB, max %zu KiB (+%zu KiB, bound %zu KiB); written %" PRIu64
                " KiB, read %" PRIu64 " KiB; queued up max %zu, down max %zu\n",
                base / 1024, max_rss / 1024, (max_rss - MIN(max_rss, base)) / 1024, bound / 1024,
                written / 1024, read_total / 1024, max_up, max_down);

        /* Under ASan, RSS measures the sanitizer (shadow memory, a quarantine of freed blocks), not us: the
         * structural bounds below still hold there. */
        if (!UNDER_ASAN)
                ASSERT_LT(max_rss, base + bound);
        /* The writer is held back: it got nowhere near 1 GiB. What it did write sits in socket buffers, the
         * two queues and the window, or was read. */
        ASSERT_LT(written, 128 * MIB);
        ASSERT_GT(read_total, 0);
        ASSERT_LT(written - read_total, 64 * MIB);
        /* Both queues reached their limit and none went past it: the socket read side was paused by a full
         * CONNECT_BUFFER_MAX, the HTTP/2 side by the stream window. */
        ASSERT_EQ(max_up, CONNECT_BUFFER_MAX);
        ASSERT_LE(max_down, s.stream_window);
        ASSERT_GT(max_down, s.stream_window / 2);

        ASSERT_TRUE(kill(pids[0], SIGKILL) == 0);
        ASSERT_TRUE(kill(pids[1], SIGKILL) == 0);
        (void) fixture_app_wait(pids[0]);
        (void) fixture_app_wait(pids[1]);
        fixture_app_results_free(res, 2);
        tunnel_done(&t);
}

/* The connector's application stops reading: everything stalls within bounds (the tunneler's socket queue
 * full and no longer read, the connector's queue within the stream window, the writer blocked). Once it
 * reads again the transfer resumes and completes, nothing lost, through many pause/resume rounds. */
TEST(backpressure_stall_and_resume) {
        static Tunnel t;
        static uint8_t buf[64 * 1024];
        const uint64_t total = 32 * MIB;
        const FixtureAppSpec writer = { .write_bytes = total, .seed = 4, .digest = true };
        FixtureAppResult *res = fixture_app_results_new(1);
        uint8_t want[32], got[32];
        int tun_fds[2], con_fds[2];
        size_t up, down;
        uint64_t stalled_at, received = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        H2Settings s;
        pid_t pid;

        ASSERT_NOT_NULL(ctx);
        ASSERT_TRUE(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
        h2_settings_init(&s); /* 1 MiB stream window: 32 MiB need many rounds */
        socketpair_nonblock(tun_fds);
        socketpair_nonblock(con_fds);
        pid = fixture_app_spawn(tun_fds[0], &writer, res);
        tunnel_start(&t, &s, tun_fds[1], con_fds[1]);

        run_for(t.env.event, 500 * USEC_PER_MSEC);
        connect_pipe_get_queued(t.tun.pipe, &up, NULL);
        connect_pipe_get_queued(t.con.pipe, NULL, &down);
        ASSERT_EQ(up, CONNECT_BUFFER_MAX);
        ASSERT_LE(down, s.stream_window);
        ASSERT_GT(down, 0);
        ASSERT_LE(h2_stream_get_receive_window(connect_pipe_get_stream(t.con.pipe)), 0);
        stalled_at = __atomic_load_n(&res->written, __ATOMIC_RELAXED);
        ASSERT_LT(stalled_at, total / 2);
        run_for(t.env.event, 200 * USEC_PER_MSEC);
        ASSERT_UEQ(__atomic_load_n(&res->written, __ATOMIC_RELAXED), stalled_at);

        /* Read it all now. */
        usec_t deadline = now(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
        for (;;) {
                ssize_t n = read(con_fds[0], buf, sizeof(buf));

                if (n == 0)
                        break;
                if (n < 0) {
                        ASSERT_EQ(errno, EAGAIN);
                        ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                        ASSERT_OK(sd_event_run(t.env.event, 10 * USEC_PER_MSEC));
                        continue;
                }
                ASSERT_TRUE(EVP_DigestUpdate(ctx, buf, (size_t) n) == 1);
                received += (uint64_t) n;
        }
        ASSERT_TRUE(shutdown(con_fds[0], SHUT_WR) == 0);
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(fixture_app_wait(pid), 0);

        ASSERT_UEQ(received, total);
        ASSERT_TRUE(EVP_DigestFinal_ex(ctx, got, NULL) == 1);
        fixture_app_digest(total, writer.seed, want);
        ASSERT_MEMEQ(got, want, 32);
        ASSERT_EQ(t.tun.error, 0);
        ASSERT_EQ(t.con.error, 0);
        ASSERT_UEQ(t.tun.stats.bytes_up, total);
        ASSERT_UEQ(t.con.stats.bytes_down, total);

        EVP_MD_CTX_free(ctx);
        close(con_fds[0]);
        fixture_app_results_free(res, 1);
        tunnel_done(&t);
}

/* ---- 4. resets, refusals, the session going away, idle timeout --------------------------------------- */

/* An application that vanishes with a TCP reset: the application across the tunnel sees a reset too, not a
 * clean end of data, and both pipes report it. */
TEST(reset_propagation) {
        static const struct {
                const char *name;
                bool tunneler_resets;
        } cases[] = {
                { "tunneler's application resets", true },
                { "connector's application resets", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                static Tunnel t;
                int tun_fds[2], con_fds[2], victim;
                Side *near, *far;
                uint8_t buf[64];

                CASE("%s", cases[i].name);
                fixture_tcp_pair(tun_fds);
                fixture_tcp_pair(con_fds);
                tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);
                tunnel_ping(&t, tun_fds[0], con_fds[0]);

                close_with_reset(cases[i].tunneler_resets ? tun_fds[0] : con_fds[0]);
                victim = cases[i].tunneler_resets ? con_fds[0] : tun_fds[0];
                near = cases[i].tunneler_resets ? &t.tun : &t.con;
                far = cases[i].tunneler_resets ? &t.con : &t.tun;

                ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
                /* The pipe next to the reset read it from its socket; the far one got RST_STREAM. */
                ASSERT_EQ(near->error, -ECONNRESET);
                ASSERT_EQ(far->error, -ECONNRESET);
                ASSERT_UEQ(near->stats.bytes_up, 4);
                ASSERT_UEQ(near->stats.bytes_down, 4);
                ASSERT_EQ(read(victim, buf, sizeof(buf)), -1);
                ASSERT_EQ(errno, ECONNRESET);
                close(victim);
                /* The session is unharmed: only the stream went. */
                ASSERT_TRUE(h2_session_is_open(t.client));
                ASSERT_EQ(h2_session_get_n_streams(t.client), 0);
                tunnel_done(&t);
        }
}

/* The connector refuses: the tunneler hears the status (so a SOCKS front-end can answer its client), then
 * on_close with the matching errno, and its socket is closed normally. */
TEST(reject) {
        static const struct {
                unsigned status;
                int error;
        } cases[] = {
                { 403, EACCES },
                { 502, ECONNREFUSED },
                { 504, ETIMEDOUT },
                { 500, EPROTO },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                static Tunnel t;
                int tun_fds[2];
                uint8_t buf[16];

                CASE("%u", cases[i].status);
                socketpair_nonblock(tun_fds);
                tunnel_init(&t, NULL);
                t.reject_status = cases[i].status;
                ASSERT_OK(connect_pipe_open(t.client, "[fd00::5]:22", tun_fds[1], &side_callbacks, &t.tun,
                                            &t.tun.pipe));
                ASSERT_TRUE(fixture_run_until_func(t.env.event, tun_closed, &t, 5 * USEC_PER_SEC));
                ASSERT_STREQ(t.authority, "[fd00::5]:22");
                ASSERT_EQ(t.tun.n_responses, 1);
                ASSERT_EQ(t.tun.status, cases[i].status);
                ASSERT_LT(t.tun.response_seq, t.tun.close_seq);
                ASSERT_EQ(t.tun.error, -cases[i].error);
                ASSERT_TRUE(t.tun.fd_open_in_on_close);
                ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), 0);
                /* Neither end keeps the refused stream. */
                run_for(t.env.event, 50 * USEC_PER_MSEC);
                ASSERT_EQ(h2_session_get_n_streams(t.client), 0);
                ASSERT_EQ(h2_session_get_n_streams(t.server), 0);
                ASSERT_TRUE(h2_session_is_open(t.client));
                close(tun_fds[0]);
                tunnel_done(&t);
        }
}

/* The HTTP/2 session dies under live tunnels: each pipe closes its socket with a reset. */
TEST(session_terminated) {
        static const struct {
                const char *name;
                bool terminate_server;
        } cases[] = {
                { "connector terminates", true },
                { "tunneler terminates", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                static Tunnel t;
                int tun_fds[2], con_fds[2];
                uint8_t buf[16];

                CASE("%s", cases[i].name);
                fixture_tcp_pair(tun_fds);
                fixture_tcp_pair(con_fds);
                tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);
                tunnel_ping(&t, tun_fds[0], con_fds[0]);

                h2_session_terminate(cases[i].terminate_server ? t.server : t.client, H2_NO_ERROR);
                ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
                ASSERT_EQ(t.tun.error, -ECONNRESET);
                ASSERT_EQ(t.con.error, -ECONNRESET);
                ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), -1);
                ASSERT_EQ(errno, ECONNRESET);
                ASSERT_EQ(read(con_fds[0], buf, sizeof(buf)), -1);
                ASSERT_EQ(errno, ECONNRESET);
                close(tun_fds[0]);
                close(con_fds[0]);
                tunnel_done(&t);
        }
}

/* A stream reset before any response ends the tunneler's pipe without on_response. Here the connector's
 * connect_pipe_accept() fails (no socket to relay) and on_request passes the error on, which h2 answers with
 * RST_STREAM(REFUSED_STREAM). */
TEST(refused_before_response) {
        static Tunnel t;
        int tun_fds[2];
        uint8_t buf[16];

        socketpair_nonblock(tun_fds);
        tunnel_init(&t, NULL);
        ASSERT_OK(connect_pipe_open(t.client, "a.b:1", tun_fds[1], &side_callbacks, &t.tun, &t.tun.pipe));
        ASSERT_TRUE(fixture_run_until_func(t.env.event, tun_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.accept_result, -EBADF);
        ASSERT_EQ(t.tun.n_responses, 0);
        ASSERT_EQ(t.tun.error, -ECONNRESET);
        ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), 0);
        close(tun_fds[0]);
        tunnel_done(&t);
}

/* No byte either way for the idle timeout resets the tunnel; traffic keeps it alive. */
TEST(idle_timeout) {
        static Tunnel t;
        int tun_fds[2], con_fds[2];
        uint8_t buf[16];

        fixture_tcp_pair(tun_fds);
        fixture_tcp_pair(con_fds);
        tunnel_init(&t, NULL);
        t.accept_fd = con_fds[1];
        t.idle_timeout = 300 * USEC_PER_MSEC;
        ASSERT_OK(connect_pipe_open(t.client, TARGET, tun_fds[1], &side_callbacks, &t.tun, &t.tun.pipe));
        tunnel_ping(&t, tun_fds[0], con_fds[0]);

        /* A byte every 100 ms for 900 ms: still open. */
        for (int i = 0; i < 9; i++) {
                app_write_all(&t, tun_fds[0], "x", 1);
                run_for(t.env.event, 100 * USEC_PER_MSEC);
                app_read_exact(&t, con_fds[0], buf, 1);
        }
        ASSERT_FALSE(t.con.closed);

        /* Then silence. */
        usec_t t0 = now(CLOCK_MONOTONIC);
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        usec_t took = now(CLOCK_MONOTONIC) - t0;
        ASSERT_GE(took, 150 * USEC_PER_MSEC);
        ASSERT_LT(took, 1500 * USEC_PER_MSEC);
        ASSERT_EQ(t.con.error, -ETIMEDOUT);
        ASSERT_EQ(t.tun.error, -ECONNRESET);
        ASSERT_EQ(read(con_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

/* The owner ends a pipe itself: on_close(-ECANCELED) at once, the far side sees the reset. */
TEST(abort) {
        static Tunnel t;
        int tun_fds[2], con_fds[2];
        uint8_t buf[16];

        fixture_tcp_pair(tun_fds);
        fixture_tcp_pair(con_fds);
        tunnel_start(&t, NULL, tun_fds[1], con_fds[1]);
        tunnel_ping(&t, tun_fds[0], con_fds[0]);

        connect_pipe_abort(t.tun.pipe);
        ASSERT_TRUE(t.tun.closed);
        ASSERT_EQ(t.tun.error, -ECANCELED);
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.con.error, -ECONNRESET);
        ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        ASSERT_EQ(read(con_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

/* The owner aborts from inside on_response (say, its SOCKS client went away meanwhile): on_close follows at
 * once, the pipe is gone when the callback returns, and the connector's side is reset. */
TEST(abort_from_callback) {
        static Tunnel t;
        int tun_fds[2], con_fds[2];
        uint8_t buf[16];

        fixture_tcp_pair(tun_fds);
        fixture_tcp_pair(con_fds);
        tunnel_init(&t, NULL);
        t.accept_fd = con_fds[1];
        t.tun.abort_in_response = true;
        ASSERT_OK(connect_pipe_open(t.client, TARGET, tun_fds[1], &side_callbacks, &t.tun, &t.tun.pipe));
        ASSERT_TRUE(fixture_run_until_func(t.env.event, both_closed, &t, 5 * USEC_PER_SEC));
        ASSERT_EQ(t.tun.n_responses, 1);
        ASSERT_EQ(t.tun.status, 200);
        ASSERT_EQ(t.tun.error, -ECANCELED);
        ASSERT_EQ(t.con.error, -ECONNRESET);
        ASSERT_EQ(read(tun_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        ASSERT_EQ(read(con_fds[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, ECONNRESET);
        close(tun_fds[0]);
        close(con_fds[0]);
        tunnel_done(&t);
}

/* Bad arguments are refused before anything goes on the wire, and the fd is closed all the same. */
TEST(open_invalid) {
        static Tunnel t;
        int fds[2], fd;

        tunnel_init(&t, NULL);

        CASE("bad authority");
        socketpair_nonblock(fds);
        ASSERT_ERROR(connect_pipe_open(t.client, "no-port", fds[1], &side_callbacks, &t.tun, NULL), EINVAL);
        ASSERT_TRUE(fcntl(fds[1], F_GETFD) < 0 && errno == EBADF);
        close(fds[0]);

        CASE("NULL authority");
        socketpair_nonblock(fds);
        ASSERT_ERROR(connect_pipe_open(t.client, NULL, fds[1], &side_callbacks, &t.tun, NULL), EINVAL);
        close(fds[0]);

        CASE("no fd");
        ASSERT_ERROR(connect_pipe_open(t.client, "a:1", -1, &side_callbacks, &t.tun, NULL), EBADF);

        CASE("not a socket");
        ASSERT_TRUE(pipe2(fds, O_CLOEXEC) == 0);
        ASSERT_ERROR(connect_pipe_open(t.client, "a:1", fds[0], &side_callbacks, &t.tun, NULL), ENOTSOCK);
        ASSERT_TRUE(fcntl(fds[0], F_GETFD) < 0 && errno == EBADF);
        close(fds[1]);

        CASE("datagram socket");
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_ERROR(connect_pipe_open(t.client, "a:1", fd, &side_callbacks, &t.tun, NULL), ESOCKTNOSUPPORT);

        CASE("server session");
        socketpair_nonblock(fds);
        ASSERT_ERROR(connect_pipe_open(t.server, "a:1", fds[1], &side_callbacks, &t.tun, NULL), EOPNOTSUPP);
        close(fds[0]);

        CASE("session shutting down");
        socketpair_nonblock(fds);
        ASSERT_OK(h2_session_shutdown(t.client));
        ASSERT_ERROR(connect_pipe_open(t.client, "a:1", fds[1], &side_callbacks, &t.tun, NULL), ENOTCONN);
        close(fds[0]);

        ASSERT_EQ(t.n_requests, 0);
        ASSERT_FALSE(t.tun.closed);
        tunnel_done(&t);
}

/* ---- parsers ------------------------------------------------------------------------------------------ */

TEST(authority_parse) {
        static const struct {
                const char *in;
                const char *host;
                uint16_t port;
                int family;
        } good[] = {
                { "db.internal:5432", "db.internal", 5432, AF_UNSPEC },
                { "DB.Internal:22", "db.internal", 22, AF_UNSPEC },
                { "10.0.0.1:80", "10.0.0.1", 80, AF_INET },
                { "[::1]:443", "::1", 443, AF_INET6 },
                { "[fd00:1:2:0::5]:1", "fd00:1:2::5", 1, AF_INET6 },
                { "[::ffff:10.0.0.1]:8080", "::ffff:10.0.0.1", 8080, AF_INET6 },
                { "a:65535", "a", 65535, AF_UNSPEC },
                { "host-1.example:080", "host-1.example", 80, AF_UNSPEC },
        };
        static const char *const bad[] = {
                "",
                "host",
                "host:",
                ":80",
                "host:0",
                "host:65536",
                "host:123456",
                "host:+80",
                "host:8a",
                "host:-1",
                "host: 80",
                "ho st:80",
                "host\r\nx:80",
                "under_score:80",
                "-host:80",
                "host.:80",
                ".host:80",
                "a..b:80",
                "123:80",
                "user@host:80",
                "host:80/path",
                "::1:80",
                "[::1:80",
                "[::1]80",
                "[]:80",
                "[zz::1]:80",
                "[::1%eth0]:80",
                "[10.0.0.1]:80",
                "[name]:80",
        };
        char long_host[HOSTNAME_MAX + 16], long_label[80];
        HostPort hp;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                CASE("%s", good[i].in);
                ASSERT_OK(connect_authority_parse(good[i].in, &hp));
                ASSERT_STREQ(hp.host, good[i].host);
                ASSERT_EQ(hp.port, good[i].port);
                ASSERT_EQ(hp.family, good[i].family);
                ASSERT_OK(connect_authority_parse(good[i].in, NULL));
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("'%s'", bad[i]);
                hp = (HostPort) { .host = "untouched", .port = 7 };
                ASSERT_ERROR(connect_authority_parse(bad[i], &hp), EINVAL);
                ASSERT_STREQ(hp.host, "untouched");
                ASSERT_EQ(hp.port, 7);
        }
        CASE("NULL");
        ASSERT_ERROR(connect_authority_parse(NULL, NULL), EINVAL);

        /* Length limits: a name of HOSTNAME_MAX characters is fine, one more is not; labels up to 63. */
        CASE("host of HOSTNAME_MAX");
        for (size_t i = 0; i < HOSTNAME_MAX; i++)
                long_host[i] = i % 10 == 9 ? '.' : 'a';
        strcpy(long_host + HOSTNAME_MAX, ":1");
        ASSERT_OK(connect_authority_parse(long_host, NULL));
        CASE("host of HOSTNAME_MAX + 1");
        long_host[HOSTNAME_MAX] = 'a';
        strcpy(long_host + HOSTNAME_MAX + 1, ":1");
        ASSERT_ERROR(connect_authority_parse(long_host, NULL), EINVAL);
        CASE("label of 63");
        memset(long_label, 'b', 63);
        strcpy(long_label + 63, ".c:1");
        ASSERT_OK(connect_authority_parse(long_label, NULL));
        CASE("label of 64");
        memset(long_label, 'b', 64);
        strcpy(long_label + 64, ".c:1");
        ASSERT_ERROR(connect_authority_parse(long_label, NULL), EINVAL);
}

TEST(request_parse) {
        static const struct {
                const char *name;
                H2Header headers[5];
                size_t n;
                int error;
        } cases[] = {
                { "plain CONNECT", { { ":method", "CONNECT" }, { ":authority", "db:5432" } }, 2, 0 },
                { "GET",
                  { { ":method", "GET" }, { ":authority", "db:5432" }, { ":scheme", "https" },
                    { ":path", "/" } },
                  4, EOPNOTSUPP },
                { "no method", { { ":authority", "db:5432" } }, 1, EOPNOTSUPP },
                { "extended CONNECT",
                  { { ":method", "CONNECT" }, { ":protocol", "connect-udp" }, { ":authority", "db:5432" } },
                  3, EOPNOTSUPP },
                { "with :path", { { ":method", "CONNECT" }, { ":authority", "db:5432" }, { ":path", "/" } },
                  3, EBADMSG },
                { "with :scheme",
                  { { ":method", "CONNECT" }, { ":authority", "db:5432" }, { ":scheme", "https" } }, 3,
                  EBADMSG },
                { "no authority", { { ":method", "CONNECT" } }, 1, EINVAL },
                { "bad authority", { { ":method", "CONNECT" }, { ":authority", "db" } }, 2, EINVAL },
                { "lower-case method", { { ":method", "connect" }, { ":authority", "db:5432" } }, 2,
                  EOPNOTSUPP },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                H2Headers h = { (H2Header *) cases[i].headers, cases[i].n };
                const char *authority = "untouched";

                CASE("%s", cases[i].name);
                if (cases[i].error == 0) {
                        ASSERT_OK(connect_request_parse(&h, &authority));
                        ASSERT_STREQ(authority, "db:5432");
                } else {
                        ASSERT_ERROR(connect_request_parse(&h, &authority), cases[i].error);
                        ASSERT_STREQ(authority, "untouched");
                }
        }
}

TEST(status_to_errno) {
        static const struct {
                unsigned status;
                int error;
        } cases[] = {
                { 200, 0 },         { 204, 0 },         { 299, 0 },         { 403, -EACCES },
                { 502, -ECONNREFUSED }, { 504, -ETIMEDOUT }, { 100, -EPROTO }, { 301, -EPROTO },
                { 404, -EPROTO },   { 500, -EPROTO },   { 0, -EPROTO },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                CASE("%u", cases[i].status);
                ASSERT_EQ(connect_status_to_errno(cases[i].status), cases[i].error);
        }
}
