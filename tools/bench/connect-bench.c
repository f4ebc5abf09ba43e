/* SPDX-License-Identifier: Apache-2.0 */

/* Throughput of one CONNECT stream (net-connect) over loopback TLS 1.3 + HTTP/2, against a plain loopback
 * TCP connection measured in the same run as the peer:
 *
 *   connect-bench [--bytes SIZE]      SIZE as in "2G", "512M" (default 2G)
 *
 * ztna: a tunneler pipe and a connector pipe on two HTTP/2 sessions in this process's loop, joined by a TLS
 * connection over loopback; a source child writes SIZE bytes into the tunneler's local socket (a
 * socketpair), a sink child reads them from the connector's. raw TCP: the same source and sink joined by
 * one loopback TCP connection. Printed: MB/s (10^6 bytes), the ratio ztna / raw TCP, and CPU time — the
 * relay's (this process: both TLS ends, both HTTP/2 ends, both pipes) and the applications'. */

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net-connect.h"
#include "net-fixture.h"
#include "parse-util.h"
#include "tests.h" /* ASSERT_*() abort the bench on a broken setup */

#define BYTES_DEFAULT (UINT64_C(2) << 30)
#define RUN_TIMEOUT (600 * USEC_PER_SEC)

typedef struct Result {
        usec_t wall;
        usec_t relay_cpu; /* this process */
        usec_t app_cpu;   /* source + sink */
        int error;
} Result;

static usec_t timeval_usec(const struct timeval *tv) {
        return (usec_t) tv->tv_sec * USEC_PER_SEC + (usec_t) tv->tv_usec;
}

static usec_t rusage_cpu(const struct rusage *ru) {
        return timeval_usec(&ru->ru_utime) + timeval_usec(&ru->ru_stime);
}

static usec_t self_cpu(void) {
        struct rusage ru;

        ASSERT_TRUE(getrusage(RUSAGE_SELF, &ru) == 0);
        return rusage_cpu(&ru);
}

/* Waits for an application child; returns its CPU time, fails unless it exited 0. */
static usec_t app_reap(pid_t pid, int *error) {
        struct rusage ru;
        int status;

        while (wait4(pid, &status, 0, &ru) < 0)
                ASSERT_TRUE(errno == EINTR);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                *error = -EIO;
        return rusage_cpu(&ru);
}

static void run_raw_tcp(uint64_t bytes, Result *ret) {
        const FixtureAppSpec source = { .write_bytes = bytes }, sink = {};
        FixtureAppResult *res = fixture_app_results_new(2);
        int fds[2], error = 0;
        pid_t pids[2];
        usec_t t0, cpu;

        fixture_tcp_pair(fds);
        t0 = now(CLOCK_MONOTONIC);
        pids[0] = fixture_app_spawn(fds[0], &source, &res[0]);
        pids[1] = fixture_app_spawn(fds[1], &sink, &res[1]);
        cpu = app_reap(pids[0], &error);
        cpu += app_reap(pids[1], &error);
        *ret = (Result) {
                .wall = now(CLOCK_MONOTONIC) - t0,
                .app_cpu = cpu,
                .error = error < 0 ? error : res[1].read == bytes ? 0 : -EIO,
        };
        fixture_app_results_free(res, 2);
}

typedef struct Bench {
        FixtureEnv env;
        H2Session *server, *client;
        int accept_fd;
        unsigned n_closed;
        int error;
} Bench;

static void pipe_on_close(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata) {
        Bench *b = userdata;

        b->n_closed++;
        if (error < 0 && b->error == 0)
                b->error = error;
}

static const ConnectPipeCallbacks pipe_callbacks = { .on_close = pipe_on_close };

static int server_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        Bench *b = userdata;
        int r;

        r = connect_request_parse(h, NULL);
        if (r < 0)
                return r;
        return connect_pipe_accept(st, TAKE_FD(b->accept_fd), &pipe_callbacks, b, NULL);
}

static const H2SessionCallbacks server_callbacks = { .on_request = server_on_request };
static const H2SessionCallbacks client_callbacks = {};

static bool pipes_closed(void *userdata) {
        return ((Bench *) userdata)->n_closed == 2;
}

static void run_ztna(uint64_t bytes, const H2Settings *settings, Result *ret) {
        const FixtureAppSpec source = { .write_bytes = bytes }, sink = {};
        FixtureAppResult *res = fixture_app_results_new(2);
        TlsConnection *st, *ct;
        int tun_fds[2], con_fds[2], error = 0;
        Bench b = { .accept_fd = -EBADF };
        usec_t t0, cpu0, app_cpu;
        pid_t pids[2];

        fixture_env_init(&b.env);
        fixture_env_tls_pair(&b.env, &st, &ct);
        ASSERT_OK(h2_session_new(st, settings, &server_callbacks, &b, &b.server));
        ASSERT_OK(h2_session_new(ct, settings, &client_callbacks, &b, &b.client));
        ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, tun_fds) == 0);
        ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, con_fds) == 0);
        b.accept_fd = con_fds[1];

        cpu0 = self_cpu();
        t0 = now(CLOCK_MONOTONIC);
        pids[0] = fixture_app_spawn(tun_fds[0], &source, &res[0]);
        pids[1] = fixture_app_spawn(con_fds[0], &sink, &res[1]);
        ASSERT_OK(connect_pipe_open(b.client, "sink.bench:9", tun_fds[1], &pipe_callbacks, &b, NULL));
        ASSERT_TRUE(fixture_run_until_func(b.env.event, pipes_closed, &b, RUN_TIMEOUT));
        app_cpu = app_reap(pids[0], &error);
        app_cpu += app_reap(pids[1], &error);
        *ret = (Result) {
                .wall = now(CLOCK_MONOTONIC) - t0,
                .relay_cpu = self_cpu() - cpu0,
                .app_cpu = app_cpu,
                .error = b.error < 0 ? b.error : error < 0 ? error : res[1].read == bytes ? 0 : -EIO,
        };

        h2_session_terminate(b.client, H2_NO_ERROR);
        h2_session_terminate(b.server, H2_NO_ERROR);
        h2_session_unref(b.client);
        h2_session_unref(b.server);
        safe_close(b.accept_fd);
        fixture_env_done(&b.env);
        fixture_app_results_free(res, 2);
}

static double mbps(uint64_t bytes, usec_t wall) {
        return wall > 0 ? (double) bytes / (double) wall : 0.0; /* bytes per µs = MB/s */
}

static void print_row(const char *name, uint64_t bytes, const Result *r, const Result *peer) {
        if (r->error < 0) {
                printf("%-34s failed: %s\n", name, strerror(-r->error));
                return;
        }
        printf("%-34s %7.2f s %9.1f %7.2f ", name, (double) r->wall / USEC_PER_SEC, mbps(bytes, r->wall),
               peer && peer->wall > 0 ? mbps(bytes, r->wall) / mbps(bytes, peer->wall) : 1.0);
        if (peer)
                printf("%9.2f s %7.2f s/GB", (double) r->relay_cpu / USEC_PER_SEC,
                       (double) r->relay_cpu / (double) bytes * 1e3);
        else
                printf("%9s   %9s", "-", "-");
        printf(" %9.2f s\n", (double) r->app_cpu / USEC_PER_SEC);
}

static void help(void) {
        printf("connect-bench [--bytes SIZE]\n\n"
               "Pushes SIZE bytes (default 2G) through one CONNECT stream over loopback TLS 1.3 + HTTP/2,\n"
               "and through plain loopback TCP for comparison; prints MB/s, the ratio and CPU time.\n");
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "bytes", required_argument, NULL, 'b' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        uint64_t bytes = BYTES_DEFAULT;
        H2Settings defaults, tuned;
        Result raw, ztna_tuned, ztna_defaults;
        int c;

        while ((c = getopt_long(argc, argv, "b:h", options, NULL)) >= 0)
                switch (c) {
                case 'b':
                        if (parse_size(optarg, &bytes) < 0 || bytes == 0) {
                                fprintf(stderr, "Invalid size '%s'.\n", optarg);
                                return 1;
                        }
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 1;
                }
        if (optind < argc) {
                fprintf(stderr, "Unexpected argument '%s'.\n", argv[optind]);
                return 1;
        }

        (void) signal(SIGPIPE, SIG_IGN);
        h2_settings_init(&defaults);
        /* Windows for throughput: the largest stream window a CONNECT pipe accepts. */
        tuned = defaults;
        tuned.stream_window = CONNECT_RECEIVE_MAX;
        tuned.connection_window = 4 * CONNECT_RECEIVE_MAX;

        run_raw_tcp(bytes, &raw);
        run_ztna(bytes, &tuned, &ztna_tuned);
        run_ztna(bytes, &defaults, &ztna_defaults);

        printf("connect-bench: %" PRIu64 " MiB through one stream on loopback, %ld CPUs\n", bytes >> 20,
               sysconf(_SC_NPROCESSORS_ONLN));
        printf("%-34s %9s %9s %7s %11s %12s %11s\n", "", "time", "MB/s", "ratio", "relay CPU", "relay/GB",
               "app CPU");
        print_row("raw TCP (peer)", bytes, &raw, NULL);
        char name[64];
        snprintf(name, sizeof(name), "ztna CONNECT (windows %u/%u MiB)", tuned.stream_window >> 20,
                 tuned.connection_window >> 20);
        print_row(name, bytes, &ztna_tuned, &raw);
        snprintf(name, sizeof(name), "ztna CONNECT (defaults %u/%u MiB)", defaults.stream_window >> 20,
                 defaults.connection_window >> 20);
        print_row(name, bytes, &ztna_defaults, &raw);

        return raw.error < 0 || ztna_tuned.error < 0 || ztna_defaults.error < 0 ? 1 : 0;
}
