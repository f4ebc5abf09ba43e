/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "agent-health.h"
#include "net-fixture.h"
#include "tests.h"
#include "time-util.h"

/* What the readiness callback answers; tests flip it between requests. */
typedef struct Readiness {
        bool ready;
        const char *reason;
        unsigned calls;
} Readiness;

static bool readiness(void *userdata, const char **ret_reason) {
        Readiness *r = userdata;

        r->calls++;
        if (!r->ready)
                *ret_reason = r->reason;
        return r->ready;
}

/* A raw HTTP client on the test's event loop: writes the request once connected, reads until the server
 * closes. */
typedef struct Client {
        int fd;
        sd_event_source *source;
        const char *request;
        size_t written;
        char response[8192];
        size_t n;
        bool done;
        int error; /* 0 on a clean EOF, else -errno */
} Client;

static int client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Client *c = userdata;
        ssize_t k;

        if (c->request && c->written < strlen(c->request)) {
                k = send(fd, c->request + c->written, strlen(c->request) - c->written, MSG_NOSIGNAL);
                if (k < 0 && errno == EAGAIN)
                        return 0;
                /* After a send error, still read whatever the server answered before it gave up on us. */
                c->written = k < 0 ? strlen(c->request) : c->written + (size_t) k;
                if (c->written == strlen(c->request))
                        ASSERT_OK(sd_event_source_set_io_events(s, EPOLLIN));
                return 0;
        }

        k = recv(fd, c->response + c->n, sizeof(c->response) - 1 - c->n, 0);
        if (k < 0 && errno == EAGAIN)
                return 0;
        if (k > 0) {
                c->n += (size_t) k;
                ASSERT_LT(c->n, sizeof(c->response) - 1);
                return 0;
        }
        c->error = k < 0 ? -errno : 0;
        c->done = true;
        return sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* Non-blocking connect to 127.0.0.1:port, or [::1]:port when family is AF_INET6; request NULL: stay idle. */
static void client_start_family(Client *c, sd_event *e, int family, unsigned port, const char *request) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};

        *c = (Client) { .request = request };
        if (family == AF_INET6)
                sa.in6 = (struct sockaddr_in6) {
                        .sin6_family = AF_INET6, .sin6_port = htons((uint16_t) port),
                        .sin6_addr = IN6ADDR_LOOPBACK_INIT
                };
        else
                sa.in = (struct sockaddr_in) {
                        .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)
                };
        c->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_GE(c->fd, 0);
        if (connect(c->fd, &sa.sa, family == AF_INET6 ? sizeof(sa.in6) : sizeof(sa.in)) < 0)
                ASSERT_EQ(errno, EINPROGRESS);
        ASSERT_OK(sd_event_add_io(e, &c->source, c->fd, request ? EPOLLOUT : EPOLLIN, client_io, c));
}

static void client_start(Client *c, sd_event *e, unsigned port, const char *request) {
        client_start_family(c, e, AF_INET, port, request);
}

static void client_done(Client *c) {
        c->source = sd_event_source_disable_unref(c->source);
        if (c->fd >= 0)
                (void) close(c->fd);
        c->fd = -EBADF;
}

static bool client_finished(void *userdata) {
        return ((Client *) userdata)->done;
}

/* Runs the loop until nothing is pending, so the server has handled whatever the kernel already holds. */
static void run_idle(sd_event *e) {
        for (unsigned i = 0; i < 1000; i++)
                if (ASSERT_OK(sd_event_run(e, 0)) == 0)
                        return;
        test_fail(__FILE__, __LINE__, "event loop never went idle");
}

typedef struct Response {
        int status;
        char headers[4096]; /* each header as "\r\nName: value\r\n", for strstr() */
        char body[4096];
} Response;

/* Sends request on a fresh connection, runs the loop until the server closes it and parses the answer. */
static void http_family(sd_event *e, int family, unsigned port, const char *request, Response *ret) {
        Client c;
        const char *end;

        client_start_family(&c, e, family, port, request);
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c, 5 * USEC_PER_SEC));
        /* A server that closes with unread input (a refused body) may reset after its answer. */
        if (!(c.error == -ECONNRESET && c.n > 0))
                ASSERT_EQ(c.error, 0);
        client_done(&c);

        c.response[c.n] = '\0';
        end = strstr(c.response, "\r\n\r\n");
        ASSERT_TRUE(end);
        ASSERT_EQ(sscanf(c.response, "HTTP/1.1 %d ", &ret->status), 1);
        ASSERT_LT((size_t) (end - c.response), sizeof(ret->headers) - 2);
        snprintf(ret->headers, sizeof(ret->headers), "%.*s\r\n", (int) (end - c.response), c.response);
        memmove(ret->headers, strchr(ret->headers, '\r'), strlen(strchr(ret->headers, '\r')) + 1);
        snprintf(ret->body, sizeof(ret->body), "%s", end + 4);
}

static void http(sd_event *e, unsigned port, const char *request, Response *ret) {
        http_family(e, AF_INET, port, request, ret);
}

static void new_health(sd_event *e, Readiness *r, AgentHealth **ret, unsigned *ret_port) {
        ASSERT_OK(agent_health_new(e, "127.0.0.1:0", readiness, NULL, r, ret));
        *ret_port = agent_health_get_port(*ret);
        ASSERT_GT(*ret_port, 0);
}

#define REQ(method, path, extra) \
        method " " path " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" extra "\r\n"

TEST(routes) {
        static const struct {
                const char *request;
                bool ready;
                const char *reason;
                int status;
                const char *body;
                const char *header; /* must be present too */
        } cases[] = {
                { REQ("GET", "/healthz", ""), false, NULL, 200, "ok\n", "\r\nContent-Length: 3\r\n" },
                { REQ("GET", "/healthz?verbose=1", ""), false, NULL, 200, "ok\n", NULL },
                { REQ("HEAD", "/healthz", ""), true, NULL, 200, "", "\r\nContent-Length: 3\r\n" },
                { REQ("GET", "/readyz", ""), true, NULL, 200, "ready\n", NULL },
                { REQ("GET", "/readyz", ""), false, "control stream down: connecting", 503,
                  "not ready: control stream down: connecting\n", NULL },
                { REQ("GET", "/readyz", ""), true, "ignored when ready", 200, "ready\n", NULL },
                { REQ("GET", "/readyz", ""), false, NULL, 503, "not ready\n", NULL },
                { REQ("GET", "/readyz", ""), false, "", 503, "not ready\n", NULL },
                { REQ("HEAD", "/readyz", ""), false, "down", 503, "", NULL },
                { REQ("GET", "/readyz?x=y", ""), true, NULL, 200, "ready\n", NULL },
                { REQ("GET", "/", ""), true, NULL, 404, "not found\n", NULL },
                { REQ("GET", "/healthz/", ""), true, NULL, 404, "not found\n", NULL },
                { REQ("GET", "/HEALTHZ", ""), true, NULL, 404, "not found\n", NULL },
                { REQ("GET", "/readyz/../healthz", ""), true, NULL, 404, "not found\n", NULL },
                { REQ("POST", "/healthz", "Content-Length: 0\r\n"), true, NULL, 405, "method not allowed\n",
                  "\r\nAllow: GET, HEAD\r\n" },
                { REQ("DELETE", "/readyz", ""), true, NULL, 405, "method not allowed\n",
                  "\r\nAllow: GET, HEAD\r\n" },
                { REQ("OPTIONS", "/healthz", ""), true, NULL, 405, "method not allowed\n",
                  "\r\nAllow: GET, HEAD\r\n" },
                { REQ("POST", "/healthz", "Content-Length: 5\r\n") "hello", true, NULL, 413,
                  "request body not accepted\n", NULL },
                { REQ("PUT", "/elsewhere", "Content-Length: 5\r\n") "hello", true, NULL, 413,
                  "request body not accepted\n", NULL },
                { REQ("GET", "/healthz", "Transfer-Encoding: chunked\r\n") "5\r\nhello\r\n0\r\n\r\n", true,
                  NULL, 413, "request body not accepted\n", NULL },
        };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        Readiness r = {};
        unsigned port;

        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &h, &port);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Response resp;

                CASE("%zu: %.*s", i, (int) strcspn(cases[i].request, "\r"), cases[i].request);
                r.ready = cases[i].ready;
                r.reason = cases[i].reason;
                http(e, port, cases[i].request, &resp);
                ASSERT_EQ(resp.status, cases[i].status);
                ASSERT_STREQ(resp.body, cases[i].body);
                ASSERT_STRSTR(resp.headers, "\r\nContent-Type: text/plain; charset=utf-8\r\n");
                ASSERT_STRSTR(resp.headers, "\r\nCache-Control: no-store\r\n");
                if (cases[i].header)
                        ASSERT_STRSTR(resp.headers, cases[i].header);
                if (cases[i].status != 405)
                        ASSERT_NULL(strstr(resp.headers, "\r\nAllow:"));
        }
}

TEST(readyz_asks_every_time) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        Readiness r = { .ready = false, .reason = "enrolling" };
        char reason[AGENT_HEALTH_REASON_MAX * 2 + 1], expected[AGENT_HEALTH_REASON_MAX + 32];
        Response resp;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &h, &port);

        /* /healthz never consults readiness: it only proves the loop runs. */
        http(e, port, REQ("GET", "/healthz", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_EQ(r.calls, 0u);

        http(e, port, REQ("GET", "/readyz", ""), &resp);
        ASSERT_EQ(resp.status, 503);
        ASSERT_STREQ(resp.body, "not ready: enrolling\n");
        ASSERT_EQ(r.calls, 1u);

        r.ready = true;
        http(e, port, REQ("GET", "/readyz", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_EQ(r.calls, 2u);

        /* A long reason is cut at AGENT_HEALTH_REASON_MAX, the line still ends. */
        memset(reason, 'x', sizeof(reason) - 1);
        reason[sizeof(reason) - 1] = '\0';
        snprintf(expected, sizeof(expected), "not ready: %.*s\n", (int) AGENT_HEALTH_REASON_MAX, reason);
        r.ready = false;
        r.reason = reason;
        http(e, port, REQ("GET", "/readyz", ""), &resp);
        ASSERT_EQ(resp.status, 503);
        ASSERT_STREQ(resp.body, expected);
        ASSERT_EQ(r.calls, 3u);
}

TEST(listen_addresses) {
        static const char *const bad[] = {
                "0.0.0.0:0", "192.168.1.1:1", "[::]:0", "garbage", "", "localhost:8445", "127.0.0.1",
                "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:0x10", " 127.0.0.1:0",
                "[::1]", "::1:0", "[::ffff:127.0.0.1]:0", "[fe80::1%lo]:0", "128.0.0.1:0", "10.0.0.1:0",
                "127.0.0.1:0:0", ":0", "[]:0",
        };
        static const struct {
                const char *listen;
                int family; /* to send a request over; 0: bind only (the client dials 127.0.0.1 or ::1) */
        } good[] = {
                { "127.0.0.1:0", AF_INET },
                { "[::1]:0", AF_INET6 },
                { "[0:0::1]:0", AF_INET6 },
                { "127.0.0.2:0", 0 },
                { "127.255.255.254:0", 0 },
        };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Readiness r = { .ready = true };
        AgentHealth *h = (AgentHealth *) &r;

        ASSERT_OK(sd_event_new(&e));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("'%s'", bad[i]);
                ASSERT_ERROR(agent_health_new(e, bad[i], readiness, NULL, &r, &h), EINVAL);
                ASSERT_TRUE(h == (AgentHealth *) &r); /* untouched on failure */
        }
        CASE("NULL");
        ASSERT_ERROR(agent_health_new(e, NULL, readiness, NULL, &r, &h), EINVAL);

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_(agent_health_freep) AgentHealth *g = NULL;
                Response resp;
                int k;

                CASE("'%s'", good[i].listen);
                k = agent_health_new(e, good[i].listen, readiness, NULL, &r, &g);
                if (good[i].family == AF_INET6 && (k == -EADDRNOTAVAIL || k == -EAFNOSUPPORT))
                        continue; /* no IPv6 loopback here */
                ASSERT_OK(k);
                ASSERT_GT(agent_health_get_port(g), 0u);
                if (good[i].family == 0)
                        continue;
                http_family(e, good[i].family, agent_health_get_port(g), REQ("GET", "/healthz", ""), &resp);
                ASSERT_EQ(resp.status, 200);
                ASSERT_STREQ(resp.body, "ok\n");
        }
}

TEST(port_in_use) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *a = NULL;
        AgentHealth *b = NULL;
        Readiness r = { .ready = true };
        char listen[32];
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &a, &port);
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
        ASSERT_ERROR(agent_health_new(e, listen, readiness, NULL, &r, &b), EADDRINUSE);
        ASSERT_NULL(b);
}

static unsigned count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        unsigned n = 0;

        ASSERT_TRUE(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

TEST(free_releases_port) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        AgentHealth *h = NULL;
        Readiness r = { .ready = true };
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        char listen[32];
        Response resp;
        unsigned port, fds;
        int fd;

        ASSERT_NULL(agent_health_free(NULL));
        ASSERT_OK(sd_event_new(&e));
        /* sd-event keeps the timerfd it creates for the first CLOCK_MONOTONIC source: count after it. */
        new_health(e, &r, &h, &port);
        h = agent_health_free(h);
        fds = count_fds();
        new_health(e, &r, &h, &port);
        /* The server closes first (Connection: close), so its end lingers in TIME_WAIT: rebinding needs
         * SO_REUSEADDR. */
        http(e, port, REQ("GET", "/healthz", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_NULL(agent_health_free(h));
        ASSERT_EQ(count_fds(), fds);

        /* Nobody listens any more. */
        sa.sin_port = htons((uint16_t) port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), -1);
        ASSERT_EQ(errno, ECONNREFUSED);
        close(fd);

        snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
        ASSERT_OK(agent_health_new(e, listen, readiness, NULL, &r, &h));
        ASSERT_EQ(agent_health_get_port(h), port);
        http(e, port, REQ("GET", "/healthz", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STREQ(resp.body, "ok\n");
        ASSERT_NULL(agent_health_free(h));
        ASSERT_EQ(count_fds(), fds);
}

TEST(connection_limit) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        Readiness r = { .ready = true };
        Client idle[AGENT_HEALTH_CONNECTIONS_MAX], extra;
        Response resp;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &h, &port);

        /* Twice, so a slot that is not given back on close shows up. */
        for (unsigned round = 0; round < 2; round++) {
                CASE("round %u", round);
                for (size_t i = 0; i < ELEMENTSOF(idle); i++)
                        client_start(&idle[i], e, port, NULL);
                run_idle(e);

                /* One too many: closed at once, without an answer (not left waiting in the backlog). */
                client_start(&extra, e, port, REQ("GET", "/healthz", ""));
                ASSERT_TRUE(fixture_run_until_func(e, client_finished, &extra, 5 * USEC_PER_SEC));
                ASSERT_EQ(extra.n, 0u);
                client_done(&extra);

                /* The idle ones are still open, and were served nothing. */
                for (size_t i = 0; i < ELEMENTSOF(idle); i++) {
                        ASSERT_FALSE(idle[i].done);
                        client_done(&idle[i]);
                }
                run_idle(e);

                http(e, port, REQ("GET", "/healthz", ""), &resp);
                ASSERT_EQ(resp.status, 200);
        }
}

TEST(oversized_request) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        Readiness r = { .ready = true };
        static char request[32 * 1024];
        Response resp;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &h, &port);

        /* Headers beyond the per-connection memory pool: refused, and the listener carries on. */
        snprintf(request, sizeof(request), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: %0*d\r\n\r\n",
                 (int) sizeof(request) / 2, 0);
        http(e, port, request, &resp);
        ASSERT_EQ(resp.status, 431);

        http(e, port, REQ("GET", "/healthz", ""), &resp);
        ASSERT_EQ(resp.status, 200);
}

TEST(idle_timeout) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL;
        Readiness r = { .ready = true };
        Client c;
        usec_t start;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        new_health(e, &r, &h, &port);

        /* A half-sent request must not hold a slot beyond AGENT_HEALTH_TIMEOUT_SEC: this is the timer
         * armed from MHD_get_timeout() at work, nothing else wakes the daemon. */
        start = now(CLOCK_MONOTONIC);
        client_start(&c, e, port, "GET /healthz HTTP/1.1\r\nHost: loc");
        ASSERT_TRUE(fixture_run_until_func(e, client_finished, &c,
                                           (AGENT_HEALTH_TIMEOUT_SEC + 5) * USEC_PER_SEC));
        ASSERT_EQ(c.n, 0u);
        ASSERT_GE(now(CLOCK_MONOTONIC) - start, (AGENT_HEALTH_TIMEOUT_SEC - 1) * USEC_PER_SEC);
        client_done(&c);
}

static char *metrics_text(void *userdata) {
        Readiness *r = userdata;

        r->calls++;
        return r->ready ? strdup("# TYPE ztna_up gauge\nztna_up 1\n") : NULL;
}

TEST(metrics) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_health_freep) AgentHealth *h = NULL, *without = NULL;
        Readiness r = { .ready = true };
        Response resp;
        unsigned port;

        ASSERT_OK(sd_event_new(&e));
        ASSERT_OK(agent_health_new(e, "127.0.0.1:0", readiness, metrics_text, &r, &h));
        port = agent_health_get_port(h);

        http(e, port, REQ("GET", "/metrics", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STREQ(resp.body, "# TYPE ztna_up gauge\nztna_up 1\n");
        ASSERT_STRSTR(resp.headers, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n");
        ASSERT_STRSTR(resp.headers, "\r\nCache-Control: no-store\r\n");
        ASSERT_EQ(r.calls, 1u);

        http(e, port, REQ("HEAD", "/metrics", ""), &resp);
        ASSERT_EQ(resp.status, 200);
        ASSERT_STREQ(resp.body, "");

        /* The callback has nothing: 503. */
        r.ready = false;
        http(e, port, REQ("GET", "/metrics", ""), &resp);
        ASSERT_EQ(resp.status, 503);
        ASSERT_STREQ(resp.body, "metrics not available\n");
        ASSERT_EQ(r.calls, 3u);

        http(e, port, REQ("POST", "/metrics", ""), &resp);
        ASSERT_EQ(resp.status, 405);
        ASSERT_STRSTR(resp.headers, "\r\nAllow: GET, HEAD\r\n");

        /* No callback at all: 503 too. */
        new_health(e, &r, &without, &port);
        http(e, port, REQ("GET", "/metrics", ""), &resp);
        ASSERT_EQ(resp.status, 503);
        ASSERT_STREQ(resp.body, "metrics not available\n");
}
