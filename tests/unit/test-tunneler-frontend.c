/* SPDX-License-Identifier: Apache-2.0 */

/* The front-ends against a fake data plane (TunnelerFrontendSettings.connect): real loopback sockets, the
 * event loop driven here. The fake answers by host name — a synchronous error, a refusal status through
 * on_result, or 200 and then an echo of everything the client sends — so each case asserts the exact bytes
 * a SOCKS5 or HTTP client receives and when the connection ends. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "net-connect.h"
#include "net-listen.h"
#include "string-util.h"
#include "tests.h"
#include "tunneler-frontend.h"

/* ---- the fake data plane ---- */

typedef struct Fake Fake;
typedef struct FakeStream FakeStream;

struct FakeStream {
        Fake *fake;
        FakeStream *next;
        int fd;
        unsigned status;
        TunnelerResultCallback on_result;
        void *userdata;
        sd_event_source *defer, *io;
};

struct Fake {
        sd_event *event;
        unsigned calls;         /* connect() calls, refused ones included */
        unsigned results;       /* on_result() calls made */
        unsigned last_status;
        char host[256];
        uint16_t port;
        FakeStream *streams;
};

static const struct {
        const char *host;
        int error;              /* returned by connect() */
        unsigned status;        /* else given to on_result() (200 for every other host) */
} fake_plan[] = {
        { "denied.test", -EACCES, 0 },
        { "unreachable.test", -EHOSTUNREACH, 0 },
        { "busy.test", -EBUSY, 0 },
        { "invalid.test", -EINVAL, 0 },
        { "nomem.test", -ENOMEM, 0 },
        { "e403.test", 0, 403 },
        { "e429.test", 0, 429 },
        { "e500.test", 0, 500 },
        { "e502.test", 0, 502 },
        { "e504.test", 0, 504 },
};

static void fake_stream_close(FakeStream *s) {
        s->defer = sd_event_source_disable_unref(s->defer);
        s->io = sd_event_source_disable_unref(s->io);
        if (s->fd >= 0)
                close(s->fd);
        s->fd = -EBADF;
}

static int fake_echo(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        FakeStream *s = userdata;
        char buf[4096];
        ssize_t n;

        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
                return 0;
        if (n <= 0) {
                fake_stream_close(s);
                return 0;
        }
        ASSERT_EQ(send(fd, buf, (size_t) n, MSG_NOSIGNAL), n);
        return 0;
}

static int fake_dispatch(sd_event_source *source, void *userdata) {
        FakeStream *s = userdata;

        s->defer = sd_event_source_disable_unref(s->defer);
        s->fake->results++;
        s->fake->last_status = s->status;
        /* As the data plane does: the reply is written while the socket is open, relaying starts after. */
        s->on_result(s->fd, s->status, s->userdata);
        if (s->status != 200)
                fake_stream_close(s);
        else
                ASSERT_OK(sd_event_source_set_enabled(s->io, SD_EVENT_ON));
        return 0;
}

static int fake_connect(TunnelerDataPlane *d, const char *host, uint16_t port, int fd,
                        TunnelerResultCallback on_result, void *userdata) {
        Fake *fake = (Fake *) d;
        FakeStream *s;

        fake->calls++;
        snprintf(fake->host, sizeof(fake->host), "%s", host);
        fake->port = port;
        ASSERT_TRUE(fd >= 0);
        ASSERT_NOT_NULL(on_result);

        for (size_t i = 0; i < ELEMENTSOF(fake_plan); i++)
                if (streq(host, fake_plan[i].host) && fake_plan[i].error < 0)
                        return fake_plan[i].error;

        s = ASSERT_NOT_NULL(calloc(1, sizeof(FakeStream)));
        *s = (FakeStream) {
                .fake = fake,
                .next = fake->streams,
                .fd = fd,
                .status = 200,
                .on_result = on_result,
                .userdata = userdata,
        };
        fake->streams = s;
        for (size_t i = 0; i < ELEMENTSOF(fake_plan); i++)
                if (streq(host, fake_plan[i].host))
                        s->status = fake_plan[i].status;

        /* Fails with EEXIST if the front-end still watched fd: it must stop before handing it over. */
        ASSERT_OK(sd_event_add_io(fake->event, &s->io, fd, EPOLLIN, fake_echo, s));
        ASSERT_OK(sd_event_source_set_enabled(s->io, SD_EVENT_OFF));
        ASSERT_OK(sd_event_add_defer(fake->event, &s->defer, fake_dispatch, s));
        return 0;
}

static void fake_done(Fake *fake) {
        while (fake->streams) {
                FakeStream *s = fake->streams;

                fake->streams = s->next;
                fake_stream_close(s);
                free(s);
        }
}

/* ---- fixture ---- */

typedef struct T {
        sd_event *e;
        Fake fake;
        TunnelerFrontends *f;
} T;

#define LOOPBACK_ANY "127.0.0.1:0"

static void t_init(T *t, TunnelerFrontendSettings s) {
        *t = (T) {};
        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&t->e));
        t->fake.event = t->e;
        s.connect = fake_connect;
        ASSERT_OK(tunneler_frontends_new(t->e, (TunnelerDataPlane *) &t->fake, &s, &t->f));
}

static void t_init_default(T *t) {
        t_init(t, (TunnelerFrontendSettings) { .socks_listen = LOOPBACK_ANY,
                                               .http_proxy_listen = LOOPBACK_ANY });
}

static void t_done(T *t) {
        tunneler_frontends_free(t->f);
        fake_done(&t->fake);
        sd_event_unref(t->e);
}

/* Runs the loop for a while without expecting anything: for "nothing happens" checks only. */
static void run_for(sd_event *e, usec_t d) {
        usec_t deadline = now(CLOCK_MONOTONIC) + d;

        while (now(CLOCK_MONOTONIC) < deadline)
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
}

/* A connected client socket (blocking, so small writes never fall short; reads use MSG_DONTWAIT). */
static int client_connect(const char *address) {
        struct sockaddr_storage ss = {};
        socklen_t len;
        HostPort hp;
        int fd, one = 1;

        ASSERT_NOT_NULL(address);
        ASSERT_OK(parse_host_port(address, 0, &hp));
        if (hp.family == AF_INET6) {
                struct sockaddr_in6 *sa = (struct sockaddr_in6 *) &ss;

                sa->sin6_family = AF_INET6;
                sa->sin6_port = htons(hp.port);
                ASSERT_EQ(inet_pton(AF_INET6, hp.host, &sa->sin6_addr), 1);
                len = sizeof(*sa);
        } else {
                struct sockaddr_in *sa = (struct sockaddr_in *) &ss;

                sa->sin_family = AF_INET;
                sa->sin_port = htons(hp.port);
                ASSERT_EQ(inet_pton(AF_INET, hp.host, &sa->sin_addr), 1);
                len = sizeof(*sa);
        }
        fd = socket(hp.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_OK(fd);
        ASSERT_OK(connect(fd, (struct sockaddr *) &ss, len));
        /* Every send() its own segment, for the incremental cases. */
        ASSERT_OK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
        return fd;
}

static void client_send(int fd, const void *p, size_t n) {
        ASSERT_EQ(send(fd, p, n, MSG_NOSIGNAL), (ssize_t) n);
}

/* Runs the loop until n bytes arrived, the connection ended, or 5 s passed. *ret_end: 0 still open, 1 EOF,
 * or -errno (a reset). Returns the bytes read. */
static size_t client_read(sd_event *e, int fd, void *buf, size_t n, int *ret_end) {
        usec_t deadline = now(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
        size_t got = 0;
        int end = 0;

        while (got < n) {
                ssize_t k = recv(fd, (uint8_t *) buf + got, n - got, MSG_DONTWAIT);

                if (k > 0) {
                        got += (size_t) k;
                        continue;
                }
                if (k == 0) {
                        end = 1;
                        break;
                }
                if (errno != EAGAIN) {
                        end = -errno;
                        break;
                }
                if (now(CLOCK_MONOTONIC) >= deadline)
                        break;
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
        }
        if (ret_end)
                *ret_end = end;
        return got;
}

static void expect_bytes(sd_event *e, int fd, const void *expected, size_t n) {
        uint8_t buf[4096];

        ASSERT_LE(n, sizeof(buf));
        ASSERT_UEQ(client_read(e, fd, buf, n, NULL), n);
        ASSERT_MEMEQ(buf, expected, n);
}

/* Everything up to the end of the connection, which must come (EOF; or a reset when allow_reset). */
static size_t read_to_end(sd_event *e, int fd, void *buf, size_t max, bool allow_reset) {
        size_t got;
        int end;

        got = client_read(e, fd, buf, max, &end);
        ASSERT_LT(got, max);
        if (allow_reset && end == -ECONNRESET)
                return got;
        ASSERT_EQ(end, 1);
        return got;
}

static void expect_closed_after(sd_event *e, int fd, const void *expected, size_t n) {
        uint8_t buf[4096];

        ASSERT_UEQ(read_to_end(e, fd, buf, sizeof(buf), false), n);
        ASSERT_MEMEQ(buf, expected, n);
}

static void expect_nothing_yet(int fd) {
        uint8_t b;

        ASSERT_EQ(recv(fd, &b, 1, MSG_DONTWAIT), -1);
        ASSERT_EQ(errno, EAGAIN);
}

static void expect_echo(sd_event *e, int fd) {
        client_send(fd, "ping", 4);
        expect_bytes(e, fd, "ping", 4);
}

/* ---- SOCKS5 helpers ---- */

static const uint8_t socks_greeting[] = { 0x05, 0x01, 0x00 };
static const uint8_t socks_method_ok[] = { 0x05, 0x00 };

static void socks_reply(uint8_t rep, uint8_t ret[static SOCKS_REPLY_SIZE]) {
        const uint8_t r[SOCKS_REPLY_SIZE] = { 0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0 };

        memcpy(ret, r, SOCKS_REPLY_SIZE);
}

static size_t socks_request(uint8_t cmd, uint8_t atyp, const void *addr, size_t addr_len, uint16_t port,
                            uint8_t *buf) {
        size_t n = 0;

        buf[n++] = 0x05;
        buf[n++] = cmd;
        buf[n++] = 0x00;
        buf[n++] = atyp;
        if (atyp == SOCKS_ATYP_DOMAIN)
                buf[n++] = (uint8_t) addr_len;
        memcpy(buf + n, addr, addr_len);
        n += addr_len;
        buf[n++] = (uint8_t) (port >> 8);
        buf[n++] = (uint8_t) port;
        return n;
}

static size_t socks_domain_request(const char *name, uint16_t port, uint8_t *buf) {
        return socks_request(SOCKS_CMD_CONNECT, SOCKS_ATYP_DOMAIN, name, strlen(name), port, buf);
}

/* Connects, greets, checks the method reply; returns the fd. */
static int socks_greet(T *t) {
        int fd = client_connect(tunneler_frontends_socks_address(t->f));

        client_send(fd, socks_greeting, sizeof(socks_greeting));
        expect_bytes(t->e, fd, socks_method_ok, sizeof(socks_method_ok));
        return fd;
}

/* ---- parsers ---- */

#define ALL INT32_MAX /* the whole input */

typedef struct SocksRow {
        const char *name;
        uint8_t in[300];
        size_t size;
        int r;
        uint8_t reply;
        const char *host;
        uint16_t port;
        int family;
} SocksRow;

TEST(socks_parse_greeting_table) {
        static const SocksRow rows[] = {
                { "no auth", { 5, 1, 0 }, 3, 3, 0x00 },
                { "no auth among others", { 5, 3, 2, 1, 0 }, 5, 5, 0x00 },
                { "request behind it", { 5, 1, 0, 5, 1, 0 }, 6, 3, 0x00 },
                { "empty", {}, 0, 0, 0x42 },
                { "version only", { 5 }, 1, 0, 0x42 },
                { "methods missing", { 5, 2, 0 }, 3, 0, 0x42 },
                { "only auth methods", { 5, 2, 1, 2 }, 4, -EPROTONOSUPPORT, 0xFF },
                { "GSSAPI", { 5, 1, 1 }, 3, -EPROTONOSUPPORT, 0xFF },
                { "SOCKS4", { 4, 1, 0, 80, 127, 0, 0, 1, 0 }, 9, -EBADMSG, 0x42 },
                { "SOCKS4 first byte", { 4 }, 1, -EBADMSG, 0x42 },
                { "HTTP", { 'C', 'O' }, 2, -EBADMSG, 0x42 },
                { "no methods", { 5, 0 }, 2, -EBADMSG, 0x42 },
                { "no methods, more bytes", { 5, 0, 0 }, 3, -EBADMSG, 0x42 },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                uint8_t reply = 0x42;

                CASE("%s", rows[i].name);
                ASSERT_EQ(socks_parse_greeting(rows[i].in, rows[i].size, &reply), rows[i].r);
                ASSERT_EQ(reply, rows[i].reply);
        }
}

TEST(socks_parse_greeting_largest) {
        uint8_t buf[2 + 255];
        uint8_t reply = 0x42;

        buf[0] = 5;
        buf[1] = 255;
        for (size_t i = 0; i < 255; i++)
                buf[2 + i] = (uint8_t) (i + 1);
        ASSERT_ERROR(socks_parse_greeting(buf, sizeof(buf), &reply), EPROTONOSUPPORT);
        ASSERT_EQ(reply, 0xFF);
        buf[sizeof(buf) - 1] = 0x00;
        ASSERT_EQ(socks_parse_greeting(buf, sizeof(buf), &reply), (int) sizeof(buf));
        ASSERT_EQ(reply, 0x00);
        for (size_t n = 0; n < sizeof(buf); n++)
                ASSERT_EQ(socks_parse_greeting(buf, n, &reply), 0);
}

#define R4(a, b, c, d, p) { 5, 1, 0, 1, a, b, c, d, (p) >> 8, (p) & 0xff }, 10
#define V6_LOOPBACK 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1

TEST(socks_parse_request_table) {
        static const SocksRow rows[] = {
                { "IPv4", R4(127, 0, 0, 1, 80), ALL, 0x42, "127.0.0.1", 80, AF_INET },
                { "IPv4 high port", R4(10, 1, 2, 3, 65535), ALL, 0x42, "10.1.2.3", 65535, AF_INET },
                { "IPv6", { 5, 1, 0, 4, V6_LOOPBACK, 1, 187 }, 22, ALL, 0x42, "::1", 443, AF_INET6 },
                { "IPv6 canonical",
                  { 5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22 }, 22, ALL,
                  0x42, "2001:db8::1", 22, AF_INET6 },
                { "domain",
                  { 5, 1, 0, 3, 14, 'D', 'B', '.', 'L', 'a', 'b', '.', 'E', 'x', 'a', 'm', 'p', 'l', 'e',
                    0x15, 0x38 },
                  21, ALL, 0x42, "db.lab.example", 5432, AF_UNSPEC },
                { "domain holding IPv4", { 5, 1, 0, 3, 8, '1', '0', '.', '1', '.', '2', '.', '3', 0, 22 },
                  15, ALL, 0x42, "10.1.2.3", 22, AF_INET },
                { "domain holding IPv6", { 5, 1, 0, 3, 7, 'F', 'E', '8', '0', ':', ':', '1', 0, 22 }, 14,
                  ALL, 0x42, "fe80::1", 22, AF_INET6 },
                { "bytes behind", { 5, 1, 0, 1, 127, 0, 0, 1, 0, 80, 'G', 'E', 'T' }, 13, 10, 0x42,
                  "127.0.0.1", 80, AF_INET },
                { "empty", {}, 0, 0, 0x42 },
                { "incomplete IPv4", { 5, 1, 0, 1, 127, 0, 0, 1, 0 }, 9, 0, 0x42 },
                { "incomplete domain", { 5, 1, 0, 3, 5, 'a', 'b' }, 7, 0, 0x42 },
                { "incomplete BIND", { 5, 2, 0, 1, 127 }, 5, 0, 0x42 },
                { "SOCKS4", { 4 }, 1, -EBADMSG, 0x01 },
                { "reserved byte", { 5, 1, 1 }, 3, -EBADMSG, 0x01 },
                { "port 0", R4(127, 0, 0, 1, 0), -EBADMSG, 0x01 },
                { "empty domain", { 5, 1, 0, 3, 0 }, 5, -EBADMSG, 0x01 },
                { "domain with NUL", { 5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80 }, 10, -EBADMSG, 0x01 },
                { "domain with '_'", { 5, 1, 0, 3, 3, 'a', '_', 'b', 0, 80 }, 10, -EBADMSG, 0x01 },
                { "domain with space", { 5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80 }, 10, -EBADMSG, 0x01 },
                { "domain trailing dot", { 5, 1, 0, 3, 2, 'a', '.', 0, 80 }, 9, -EBADMSG, 0x01 },
                { "domain numeric", { 5, 1, 0, 3, 3, '3', '0', '0', 0, 80 }, 10, -EBADMSG, 0x01 },
                { "domain bracketed", { 5, 1, 0, 3, 5, '[', ':', ':', '1', ']', 0, 80 }, 12, -EBADMSG,
                  0x01 },
                { "domain with port", { 5, 1, 0, 3, 4, 'a', ':', '8', '0', 0, 80 }, 11, -EBADMSG, 0x01 },
                { "domain ':::'", { 5, 1, 0, 3, 3, ':', ':', ':', 0, 80 }, 10, -EBADMSG, 0x01 },
                { "BIND", { 5, 2, 0, 1, 127, 0, 0, 1, 0, 80 }, 10, -EPROTONOSUPPORT, 0x07 },
                { "UDP ASSOCIATE", { 5, 3, 0, 1, 0, 0, 0, 0, 0, 0 }, 10, -EPROTONOSUPPORT, 0x07 },
                { "command 0", { 5, 0, 0, 1, 127, 0, 0, 1, 0, 80 }, 10, -EPROTONOSUPPORT, 0x07 },
                { "command 9", { 5, 9, 0, 3, 1, 'a', 0, 80 }, 8, -EPROTONOSUPPORT, 0x07 },
                { "address type 0", { 5, 1, 0, 0 }, 4, -EPROTONOSUPPORT, 0x08 },
                { "address type 5", { 5, 1, 0, 5 }, 4, -EPROTONOSUPPORT, 0x08 },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const SocksRow *row = rows + i;
                HostPort hp = { .port = 4242 };
                uint8_t reply = 0x42;
                int expect = row->r == ALL ? (int) row->size : row->r;

                CASE("%s", row->name);
                ASSERT_EQ(socks_parse_request(row->in, row->size, &hp, &reply), expect);
                ASSERT_EQ(reply, row->reply);
                if (expect <= 0) {
                        ASSERT_EQ(hp.port, 4242); /* untouched */
                        continue;
                }
                ASSERT_STREQ(hp.host, row->host);
                ASSERT_EQ(hp.port, row->port);
                ASSERT_EQ(hp.family, row->family);
                /* A complete request is complete only at its last byte. */
                for (size_t n = 0; n < (size_t) expect; n++) {
                        CASE("%s, first %zu bytes", row->name, n);
                        ASSERT_EQ(socks_parse_request(row->in, n, &hp, &reply), 0);
                }
        }
}

TEST(socks_parse_request_domain_lengths) {
        char name[256];
        uint8_t buf[300], reply = 0x42;
        HostPort hp;
        size_t n;

        /* 63.63.63.61: the longest host name (253). */
        memset(name, 'a', sizeof(name));
        name[63] = name[127] = name[191] = '.';
        name[253] = '\0';
        n = socks_domain_request(name, 443, buf);
        ASSERT_EQ(socks_parse_request(buf, n, &hp, &reply), (int) n);
        ASSERT_STREQ(hp.host, name);

        /* 254 and 255 bytes are names no resource can carry. */
        for (size_t len = 254; len <= 255; len++) {
                CASE("%zu bytes", len);
                memset(name, 'a', sizeof(name));
                name[63] = name[127] = name[191] = name[250] = '.';
                name[len] = '\0';
                n = socks_domain_request(name, 443, buf);
                ASSERT_ERROR(socks_parse_request(buf, n, &hp, &reply), EBADMSG);
                ASSERT_EQ(reply, 0x01);
        }
}

typedef struct HttpRow {
        const char *name;
        const char *in;
        int r;
        unsigned status;
        const char *host;
        uint16_t port;
        int family;
} HttpRow;

#define HEAD "CONNECT db.lab:5432 HTTP/1.1\r\n"

TEST(http_connect_parse_table) {
        static const HttpRow rows[] = {
                { "curl", "CONNECT db.lab.example:5432 HTTP/1.1\r\nHost: db.lab.example:5432\r\n"
                          "User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n",
                  ALL, 0, "db.lab.example", 5432, AF_UNSPEC },
                { "no headers", HEAD "\r\n", ALL, 0, "db.lab", 5432, AF_UNSPEC },
                { "HTTP/1.0", "CONNECT 10.0.0.1:22 HTTP/1.0\r\n\r\n", ALL, 0, "10.0.0.1", 22, AF_INET },
                { "IPv6", "CONNECT [2001:DB8::1]:443 HTTP/1.1\r\n\r\n", ALL, 0, "2001:db8::1", 443,
                  AF_INET6 },
                { "upper case", "CONNECT DB.Lab:1 HTTP/1.1\r\n\r\n", ALL, 0, "db.lab", 1, AF_UNSPEC },
                { "value with HTAB and obs-text", HEAD "X-A:\tb c\xc3\xa9\t\r\nX-Empty:\r\n\r\n", ALL, 0,
                  "db.lab", 5432, AF_UNSPEC },
                { "bytes behind", HEAD "\r\nhello", (int) STRLEN(HEAD "\r\n"), 0, "db.lab", 5432,
                  AF_UNSPEC },
                { "empty", "", 0, 0 },
                { "method only", "CONNE", 0, 0 },
                { "line without end", HEAD "Host: db", 0, 0 },
                { "no empty line", HEAD, 0, 0 },
                { "CR of the empty line", HEAD "\r", 0, 0 },
                { "CR of a line", "CONNECT a:1 HTTP/1.1\r", 0, 0 },
                { "GET", "GET http://db.lab/ HTTP/1.1\r\nHost: db.lab\r\n\r\n", -EPROTONOSUPPORT, 405 },
                { "lower-case connect", "connect db.lab:5432 HTTP/1.1\r\n\r\n", -EPROTONOSUPPORT, 405 },
                { "M-SEARCH", "M-SEARCH * HTTP/1.1\r\n\r\n", -EPROTONOSUPPORT, 405 },
                { "GET waits for the head", "GET / HTTP/1.1\r\n", 0, 0 },
                { "HTTP/2.0", "CONNECT db.lab:5432 HTTP/2.0\r\n\r\n", -EPROTONOSUPPORT, 505 },
                { "HTTP/1.2", "CONNECT db.lab:5432 HTTP/1.2\r\n\r\n", -EPROTONOSUPPORT, 505 },
                { "bare LF", "CONNECT db.lab:5432 HTTP/1.1\n\n", -EBADMSG, 400 },
                { "bare LF in headers", HEAD "Host: db\n\r\n", -EBADMSG, 400 },
                { "bare LF ending", HEAD "\n", -EBADMSG, 400 },
                { "bare CR", HEAD "Host: d\rb\r\n\r\n", -EBADMSG, 400 },
                { "bare CR, prefix", HEAD "Host: d\rb", -EBADMSG, 400 },
                { "obs-fold", HEAD "X: a\r\n b\r\n\r\n", -EBADMSG, 400 },
                { "obs-fold with HTAB", HEAD "X: a\r\n\tb\r\n\r\n", -EBADMSG, 400 },
                { "space before colon", HEAD "Host : db\r\n\r\n", -EBADMSG, 400 },
                { "empty field name", HEAD ": db\r\n\r\n", -EBADMSG, 400 },
                { "no colon", HEAD "Host\r\n\r\n", -EBADMSG, 400 },
                { "control character", HEAD "X: a\x01" "b\r\n\r\n", -EBADMSG, 400 },
                { "DEL", HEAD "X: a\x7f\r\n\r\n", -EBADMSG, 400 },
                { "empty line first", "\r\nCONNECT db.lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "double space", "CONNECT  db.lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "trailing space", "CONNECT db.lab:5432 HTTP/1.1 \r\n\r\n", -EBADMSG, 400 },
                { "leading space", " CONNECT db.lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "tab separator", "CONNECT\tdb.lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "lower-case version", "CONNECT db.lab:5432 http/1.1\r\n\r\n", -EBADMSG, 400 },
                { "version HTTP/1", "CONNECT db.lab:5432 HTTP/1\r\n\r\n", -EBADMSG, 400 },
                { "version HTTP/1.10", "CONNECT db.lab:5432 HTTP/1.10\r\n\r\n", -EBADMSG, 400 },
                { "no version", "CONNECT db.lab:5432\r\n\r\n", -EBADMSG, 400 },
                { "no port", "CONNECT db.lab HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "port 0", "CONNECT db.lab:0 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "port 65536", "CONNECT db.lab:65536 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "IPv6 without brackets", "CONNECT ::1:443 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "zone id", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "userinfo", "CONNECT user@db.lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "absolute form", "CONNECT http://db.lab:5432/ HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "underscore", "CONNECT db_lab:5432 HTTP/1.1\r\n\r\n", -EBADMSG, 400 },
                { "TLS", "\x16\x03\x01\x02", -EBADMSG, 400 },
                { "NUL", "CONNECT\0", -EBADMSG, 400 },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const HttpRow *row = rows + i;
                /* The NUL row is the one input whose length strlen() cannot tell. */
                size_t size = streq(row->name, "NUL") ? 8 : strlen(row->in);
                int expect = row->r == ALL ? (int) size : row->r;
                HostPort hp = { .port = 4242 };
                unsigned status = 0;

                CASE("%s", row->name);
                ASSERT_EQ(http_connect_parse(row->in, size, &hp, &status), expect);
                ASSERT_EQ(status, row->status);
                if (expect <= 0) {
                        ASSERT_EQ(hp.port, 4242);
                        continue;
                }
                ASSERT_STREQ(hp.host, row->host);
                ASSERT_EQ(hp.port, row->port);
                ASSERT_EQ(hp.family, row->family);
                for (size_t n = 0; n < (size_t) expect; n++) {
                        CASE("%s, first %zu bytes", row->name, n);
                        ASSERT_EQ(http_connect_parse(row->in, n, &hp, &status), 0);
                }
        }
}

TEST(http_connect_parse_limits) {
        _cleanup_free_ char *buf = ASSERT_NOT_NULL(malloc(FRONTEND_HEAD_MAX + 64));
        char authority[CONNECT_AUTHORITY_MAX + 64];
        unsigned status = 0;
        HostPort hp;
        size_t n;

        /* A head of exactly FRONTEND_HEAD_MAX bytes is served. */
        n = (size_t) snprintf(buf, FRONTEND_HEAD_MAX, HEAD "X: ");
        memset(buf + n, 'a', FRONTEND_HEAD_MAX - n - 4);
        memcpy(buf + FRONTEND_HEAD_MAX - 4, "\r\n\r\n", 4);
        ASSERT_EQ(http_connect_parse(buf, FRONTEND_HEAD_MAX, &hp, &status), (int) FRONTEND_HEAD_MAX);
        ASSERT_EQ(http_connect_parse(buf, FRONTEND_HEAD_MAX - 1, &hp, &status), 0);

        /* One more byte and the head ends past the limit: 431 once FRONTEND_HEAD_MAX bytes are in. */
        n = (size_t) snprintf(buf, FRONTEND_HEAD_MAX, HEAD "X: ");
        memset(buf + n, 'a', FRONTEND_HEAD_MAX + 1 - n - 4);
        memcpy(buf + FRONTEND_HEAD_MAX + 1 - 4, "\r\n\r\n", 4);
        ASSERT_EQ(http_connect_parse(buf, FRONTEND_HEAD_MAX - 1, &hp, &status), 0);
        ASSERT_ERROR(http_connect_parse(buf, FRONTEND_HEAD_MAX, &hp, &status), EMSGSIZE);
        ASSERT_EQ(status, 431);
        status = 0;
        ASSERT_ERROR(http_connect_parse(buf, FRONTEND_HEAD_MAX + 1, &hp, &status), EMSGSIZE);
        ASSERT_EQ(status, 431);

        /* The longest name is fine; an authority longer than any HostPort is malformed. */
        memset(authority, 'a', sizeof(authority));
        authority[63] = authority[127] = authority[191] = '.';
        memcpy(authority + 253, ":1", 3);
        n = (size_t) snprintf(buf, FRONTEND_HEAD_MAX, "CONNECT %s HTTP/1.1\r\n\r\n", authority);
        ASSERT_EQ(http_connect_parse(buf, n, &hp, &status), (int) n);
        ASSERT_EQ(hp.port, 1);
        memset(authority, 'a', sizeof(authority));
        memcpy(authority + CONNECT_AUTHORITY_MAX + 10, ":1", 3);
        n = (size_t) snprintf(buf, FRONTEND_HEAD_MAX, "CONNECT %s HTTP/1.1\r\n\r\n", authority);
        status = 0;
        ASSERT_ERROR(http_connect_parse(buf, n, &hp, &status), EBADMSG);
        ASSERT_EQ(status, 400);
}

/* ---- construction ---- */

TEST(new_invalid_settings) {
        static const struct {
                const char *name;
                const char *socks, *http;
                const char *forward;
                int error;
        } rows[] = {
                { "any address", "0.0.0.0:0", NULL, NULL, EINVAL },
                { "any IPv6 address", NULL, "[::]:0", NULL, EINVAL },
                { "LAN address", "192.168.1.1:1080", NULL, NULL, EINVAL },
                { "name", "localhost:1080", NULL, NULL, EINVAL },
                { "no port", "127.0.0.1", NULL, NULL, EINVAL },
                { "two ports", NULL, "127.0.0.1:80:0", NULL, EINVAL },
                { "empty", "", NULL, NULL, EINVAL },
                { "forward without target", NULL, NULL, "127.0.0.1:0", EINVAL },
                { "forward target without port", NULL, NULL, "127.0.0.1:0=db.lab", EINVAL },
                { "forward target port 0", NULL, NULL, "127.0.0.1:0=db.lab:0", EINVAL },
                { "forward target bad name", NULL, NULL, "127.0.0.1:0=db_lab:1", EINVAL },
                { "forward on a LAN address", NULL, NULL, "10.0.0.1:5432=db.lab:5432", EINVAL },
                { "forward listen empty", NULL, NULL, "=db.lab:5432", EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char *forwards[] = { (char *) rows[i].forward, NULL };
                TunnelerFrontendSettings s = {
                        .socks_listen = rows[i].socks,
                        .http_proxy_listen = rows[i].http,
                        .forwards = forwards,
                        .connect = fake_connect,
                };
                TunnelerFrontends *f = NULL;
                Fake fake = {};
                sd_event *e = NULL;

                CASE("%s", rows[i].name);
                ASSERT_OK(sd_event_new(&e));
                ASSERT_ERROR(tunneler_frontends_new(e, (TunnelerDataPlane *) &fake, &s, &f), rows[i].error);
                ASSERT_NULL(f);
                sd_event_unref(e);
        }
}

TEST(new_too_many_forwards) {
        char *forwards[FRONTEND_FORWARDS_MAX + 2] = {};
        TunnelerFrontendSettings s = { .forwards = forwards, .connect = fake_connect };
        TunnelerFrontends *f = NULL;
        Fake fake = {};
        sd_event *e = NULL;

        for (size_t i = 0; i <= FRONTEND_FORWARDS_MAX; i++)
                forwards[i] = (char *) LOOPBACK_ANY "=db.lab:5432";
        ASSERT_OK(sd_event_new(&e));
        ASSERT_ERROR(tunneler_frontends_new(e, (TunnelerDataPlane *) &fake, &s, &f), E2BIG);
        forwards[FRONTEND_FORWARDS_MAX] = NULL;
        ASSERT_OK(tunneler_frontends_new(e, (TunnelerDataPlane *) &fake, &s, &f));
        ASSERT_NOT_NULL(tunneler_frontends_forward_address(f, FRONTEND_FORWARDS_MAX - 1));
        ASSERT_NULL(tunneler_frontends_forward_address(f, FRONTEND_FORWARDS_MAX));
        tunneler_frontends_free(f);
        sd_event_unref(e);
}

static uint16_t free_port(void) {
        char buf[LISTEN_ADDRESS_STRING_MAX];
        HostPort hp;
        int fd;

        ASSERT_OK(parse_host_port("127.0.0.1", 1, &hp));
        hp.port = 0;
        ASSERT_OK(listen_bind(&hp, 1, &fd));
        ASSERT_OK(listen_get_local(fd, buf, sizeof(buf)));
        close(fd);
        ASSERT_OK(parse_host_port(buf, 0, &hp));
        return hp.port;
}

TEST(new_all_or_nothing) {
        char address[64];
        TunnelerFrontends *f = NULL;
        Fake fake = {};
        sd_event *e = NULL;
        HostPort hp;
        int fd;

        ASSERT_OK(sd_event_new(&e));
        snprintf(address, sizeof(address), "127.0.0.1:%u", free_port());

        /* The SOCKS listener was bound before the HTTP address was found bad: it is closed again. */
        ASSERT_ERROR(tunneler_frontends_new(e, (TunnelerDataPlane *) &fake,
                                            &(TunnelerFrontendSettings) { .socks_listen = address,
                                                                          .http_proxy_listen = "0.0.0.0:0",
                                                                          .connect = fake_connect },
                                            &f),
                     EINVAL);
        ASSERT_OK(parse_host_port(address, 0, &hp));
        ASSERT_OK(listen_bind(&hp, 1, &fd));
        close(fd);

        ASSERT_ERROR(tunneler_frontends_new(e, (TunnelerDataPlane *) &fake,
                                            &(TunnelerFrontendSettings) { .socks_listen = address,
                                                                          .http_proxy_listen = address,
                                                                          .connect = fake_connect },
                                            &f),
                     EADDRINUSE);
        ASSERT_NULL(f);
        ASSERT_OK(listen_bind(&hp, 1, &fd));
        close(fd);
        sd_event_unref(e);
}

TEST(addresses) {
        char *forwards[] = { (char *) "127.0.0.1:0=db.lab:5432", (char *) "127.0.0.2:0=db.lab:5433", NULL };
        T t;

        t_init(&t, (TunnelerFrontendSettings) { .socks_listen = "127.0.0.1:0", .forwards = forwards });
        ASSERT_TRUE(startswith(tunneler_frontends_socks_address(t.f), "127.0.0.1:"));
        ASSERT_FALSE(streq(tunneler_frontends_socks_address(t.f), "127.0.0.1:0"));
        ASSERT_NULL(tunneler_frontends_http_address(t.f));
        ASSERT_TRUE(startswith(tunneler_frontends_forward_address(t.f, 0), "127.0.0.1:"));
        ASSERT_TRUE(startswith(tunneler_frontends_forward_address(t.f, 1), "127.0.0.2:"));
        ASSERT_NULL(tunneler_frontends_forward_address(t.f, 2));
        ASSERT_NULL(tunneler_frontends_socks_address(NULL));
        t_done(&t);
}

/* ---- forward ---- */

TEST(forward_end_to_end) {
        char *forwards[] = {
                (char *) "127.0.0.1:0=DB.Lab.Example:5432",
                (char *) "127.0.0.1:0=denied.test:1",
                (char *) "127.0.0.1:0=e403.test:1",
                (char *) "127.0.0.1:0=[2001:db8::1]:443",
                NULL,
        };
        uint8_t buf[64];
        int fd, end;
        T t;

        t_init(&t, (TunnelerFrontendSettings) { .forwards = forwards });

        /* Relayed at once: the client talks to the target with nothing added by us. */
        fd = client_connect(tunneler_frontends_forward_address(t.f, 0));
        expect_echo(t.e, fd);
        ASSERT_EQ(t.fake.calls, 1u);
        ASSERT_STREQ(t.fake.host, "db.lab.example");
        ASSERT_EQ(t.fake.port, 5432);
        ASSERT_EQ(t.fake.last_status, 200u);
        close(fd);

        /* Refused at once: reset, so that an empty answer cannot be mistaken for one. */
        fd = client_connect(tunneler_frontends_forward_address(t.f, 1));
        ASSERT_UEQ(client_read(t.e, fd, buf, sizeof(buf), &end), 0);
        ASSERT_EQ(end, -ECONNRESET);
        ASSERT_EQ(t.fake.calls, 2u);
        close(fd);

        /* Refused later: the data plane closes it, nothing is written. */
        fd = client_connect(tunneler_frontends_forward_address(t.f, 2));
        ASSERT_UEQ(read_to_end(t.e, fd, buf, sizeof(buf), true), 0);
        ASSERT_EQ(t.fake.last_status, 403u);
        close(fd);

        fd = client_connect(tunneler_frontends_forward_address(t.f, 3));
        expect_echo(t.e, fd);
        ASSERT_STREQ(t.fake.host, "2001:db8::1");
        ASSERT_EQ(t.fake.port, 443);
        close(fd);
        t_done(&t);
}

/* ---- SOCKS5 end to end ---- */

static void socks_connect_ok(T *t, const uint8_t *req, size_t n, const char *host, uint16_t port) {
        uint8_t ok[SOCKS_REPLY_SIZE];
        int fd = socks_greet(t);

        socks_reply(SOCKS_REPLY_SUCCEEDED, ok);
        client_send(fd, req, n);
        expect_bytes(t->e, fd, ok, sizeof(ok));
        ASSERT_STREQ(t->fake.host, host);
        ASSERT_EQ(t->fake.port, port);
        expect_echo(t->e, fd);
        close(fd);
}

TEST(socks_happy_paths) {
        static const uint8_t v4[] = { 10, 1, 2, 3 };
        static const uint8_t v6[] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42 };
        uint8_t req[300];
        size_t n;
        T t;

        t_init_default(&t);
        n = socks_request(SOCKS_CMD_CONNECT, SOCKS_ATYP_IPV4, v4, sizeof(v4), 5432, req);
        socks_connect_ok(&t, req, n, "10.1.2.3", 5432);
        n = socks_request(SOCKS_CMD_CONNECT, SOCKS_ATYP_IPV6, v6, sizeof(v6), 443, req);
        socks_connect_ok(&t, req, n, "2001:db8::42", 443);
        n = socks_domain_request("DB.Lab.Example", 22, req);
        socks_connect_ok(&t, req, n, "db.lab.example", 22);
        ASSERT_EQ(t.fake.calls, 3u);
        t_done(&t);
}

TEST(socks_refusals) {
        static const struct {
                const char *host;
                uint8_t rep;
        } rows[] = {
                { "denied.test", SOCKS_REPLY_NOT_ALLOWED },
                { "unreachable.test", SOCKS_REPLY_HOST_UNREACHABLE },
                { "busy.test", SOCKS_REPLY_GENERAL_FAILURE },
                { "invalid.test", SOCKS_REPLY_GENERAL_FAILURE },
                { "nomem.test", SOCKS_REPLY_GENERAL_FAILURE },
                { "e403.test", SOCKS_REPLY_NOT_ALLOWED },
                { "e429.test", SOCKS_REPLY_GENERAL_FAILURE },
                { "e500.test", SOCKS_REPLY_GENERAL_FAILURE },
                { "e502.test", SOCKS_REPLY_HOST_UNREACHABLE },
                { "e504.test", SOCKS_REPLY_TTL_EXPIRED },
        };
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                uint8_t req[300], expected[SOCKS_REPLY_SIZE];
                size_t n;
                int fd;

                CASE("%s", rows[i].host);
                fd = socks_greet(&t);
                n = socks_domain_request(rows[i].host, 80, req);
                client_send(fd, req, n);
                socks_reply(rows[i].rep, expected);
                expect_closed_after(t.e, fd, expected, sizeof(expected));
                ASSERT_STREQ(t.fake.host, rows[i].host);
                close(fd);
        }
        ASSERT_EQ(t.fake.calls, ELEMENTSOF(rows));
        t_done(&t);
}

TEST(socks_malformed) {
#define REP(code) 0x05, 0x00, 0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0
        static const struct {
                const char *name;
                uint8_t in[32];
                size_t size;
                uint8_t out[16];
                size_t out_size;
        } rows[] = {
                { "SOCKS4", { 4, 1, 0, 80, 127, 0, 0, 1, 0 }, 9, {}, 0 },
                { "HTTP", { 'G', 'E', 'T', ' ' }, 4, {}, 0 },
                { "no methods", { 5, 0 }, 2, {}, 0 },
                { "username/password only", { 5, 1, 2 }, 3, { 5, 0xFF }, 2 },
                { "request version 4", { 5, 1, 0, 4, 1, 0, 1, 127, 0, 0, 1, 0, 80 }, 13, { REP(0x01) }, 12 },
                { "reserved byte", { 5, 1, 0, 5, 1, 7, 1, 127, 0, 0, 1, 0, 80 }, 13, { REP(0x01) }, 12 },
                { "port 0", { 5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 0 }, 13, { REP(0x01) }, 12 },
                { "empty domain", { 5, 1, 0, 5, 1, 0, 3, 0, 0, 80 }, 10, { REP(0x01) }, 12 },
                { "bad domain", { 5, 1, 0, 5, 1, 0, 3, 3, 'a', '/', 'b', 0, 80 }, 13, { REP(0x01) }, 12 },
                { "BIND", { 5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80 }, 13, { REP(0x07) }, 12 },
                { "UDP ASSOCIATE", { 5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0 }, 13, { REP(0x07) }, 12 },
                { "address type 5", { 5, 1, 0, 5, 1, 0, 5 }, 7, { REP(0x08) }, 12 },
        };
#undef REP
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                int fd;

                CASE("%s", rows[i].name);
                fd = client_connect(tunneler_frontends_socks_address(t.f));
                client_send(fd, rows[i].in, rows[i].size);
                expect_closed_after(t.e, fd, rows[i].out, rows[i].out_size);
                close(fd);
        }
        ASSERT_EQ(t.fake.calls, 0u);
        t_done(&t);
}

TEST(socks_one_byte_at_a_time) {
        uint8_t req[300], ok[SOCKS_REPLY_SIZE];
        size_t n;
        int fd;
        T t;

        t_init_default(&t);
        fd = client_connect(tunneler_frontends_socks_address(t.f));
        for (size_t i = 0; i < sizeof(socks_greeting); i++) {
                ASSERT_OK(sd_event_run(t.e, 0));
                expect_nothing_yet(fd);
                client_send(fd, socks_greeting + i, 1);
                ASSERT_OK(sd_event_run(t.e, 10 * USEC_PER_MSEC));
        }
        expect_bytes(t.e, fd, socks_method_ok, sizeof(socks_method_ok));

        n = socks_domain_request("db.lab", 5432, req);
        for (size_t i = 0; i < n; i++) {
                ASSERT_OK(sd_event_run(t.e, 0));
                expect_nothing_yet(fd);
                client_send(fd, req + i, 1);
                ASSERT_OK(sd_event_run(t.e, 10 * USEC_PER_MSEC));
        }
        socks_reply(SOCKS_REPLY_SUCCEEDED, ok);
        expect_bytes(t.e, fd, ok, sizeof(ok));
        ASSERT_EQ(t.fake.calls, 1u);
        ASSERT_STREQ(t.fake.host, "db.lab");
        expect_echo(t.e, fd);
        close(fd);
        t_done(&t);
}

TEST(socks_greeting_and_request_at_once) {
        uint8_t buf[300], expected[2 + SOCKS_REPLY_SIZE];
        size_t n;
        int fd;
        T t;

        t_init_default(&t);
        fd = client_connect(tunneler_frontends_socks_address(t.f));
        memcpy(buf, socks_greeting, sizeof(socks_greeting));
        n = sizeof(socks_greeting) + socks_domain_request("db.lab", 5432, buf + sizeof(socks_greeting));
        client_send(fd, buf, n);
        memcpy(expected, socks_method_ok, 2);
        socks_reply(SOCKS_REPLY_SUCCEEDED, expected + 2);
        expect_bytes(t.e, fd, expected, sizeof(expected));
        expect_echo(t.e, fd);
        close(fd);
        t_done(&t);
}

TEST(socks_pipelined_data_refused) {
        uint8_t req[300], expected[SOCKS_REPLY_SIZE];
        size_t n;
        int fd;
        T t;

        t_init_default(&t);
        fd = socks_greet(&t);
        n = socks_domain_request("db.lab", 5432, req);
        memcpy(req + n, "early", 5);
        client_send(fd, req, n + 5);
        socks_reply(SOCKS_REPLY_GENERAL_FAILURE, expected);
        expect_closed_after(t.e, fd, expected, sizeof(expected));
        ASSERT_EQ(t.fake.calls, 0u);
        close(fd);
        t_done(&t);
}

TEST(handshake_timeout) {
        static const char partial[] = "CONNECT db.lab:5432 HTTP/1.1\r\n";
        char buf[1024];
        usec_t start;
        size_t n;
        int s, h;
        T t;

        t_init(&t, (TunnelerFrontendSettings) { .socks_listen = LOOPBACK_ANY,
                                                .http_proxy_listen = LOOPBACK_ANY,
                                                .handshake_timeout = 200 * USEC_PER_MSEC });
        start = now(CLOCK_MONOTONIC);
        s = client_connect(tunneler_frontends_socks_address(t.f));
        client_send(s, socks_greeting, 2);
        h = client_connect(tunneler_frontends_http_address(t.f));
        client_send(h, partial, sizeof(partial) - 1);

        ASSERT_UEQ(read_to_end(t.e, s, buf, sizeof(buf), false), 0);
        ASSERT_GE(now(CLOCK_MONOTONIC) - start, 200 * USEC_PER_MSEC);
        n = read_to_end(t.e, h, buf, sizeof(buf), false);
        buf[n] = '\0';
        ASSERT_TRUE(startswith(buf, "HTTP/1.1 408 Request Timeout\r\n"));
        ASSERT_EQ(t.fake.calls, 0u);
        close(s);
        close(h);
        t_done(&t);
}

TEST(handshake_timer_stops_at_handoff) {
        uint8_t req[300], ok[SOCKS_REPLY_SIZE];
        size_t n;
        int fd;
        T t;

        t_init(&t, (TunnelerFrontendSettings) { .socks_listen = LOOPBACK_ANY,
                                                .handshake_timeout = 100 * USEC_PER_MSEC });
        fd = socks_greet(&t);
        n = socks_domain_request("db.lab", 5432, req);
        client_send(fd, req, n);
        socks_reply(SOCKS_REPLY_SUCCEEDED, ok);
        expect_bytes(t.e, fd, ok, sizeof(ok));
        run_for(t.e, 300 * USEC_PER_MSEC);
        expect_echo(t.e, fd);
        close(fd);
        t_done(&t);
}

TEST(free_during_handshake) {
        uint8_t b;
        int s, h, end;
        T t;

        t_init_default(&t);
        s = socks_greet(&t);
        h = client_connect(tunneler_frontends_http_address(t.f));
        client_send(h, "CONNECT", 7);
        run_for(t.e, 50 * USEC_PER_MSEC);

        t.f = tunneler_frontends_free(t.f);
        ASSERT_UEQ(client_read(t.e, s, &b, 1, &end), 0);
        ASSERT_EQ(end, 1);
        ASSERT_UEQ(client_read(t.e, h, &b, 1, &end), 0);
        ASSERT_EQ(end, 1);
        close(s);
        close(h);
        t_done(&t);
}

/* on_result carries nothing that points into the front-ends: the reply is right after they are gone. */
TEST(result_after_free) {
        uint8_t buf[300], expected[2 + SOCKS_REPLY_SIZE];
        usec_t deadline = now(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
        size_t n;
        int fd;
        T t;

        t_init_default(&t);
        fd = client_connect(tunneler_frontends_socks_address(t.f));
        memcpy(buf, socks_greeting, sizeof(socks_greeting));
        n = sizeof(socks_greeting) + socks_domain_request("db.lab", 5432, buf + sizeof(socks_greeting));
        client_send(fd, buf, n);
        while (t.fake.calls == 0) {
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                ASSERT_OK(sd_event_run(t.e, 10 * USEC_PER_MSEC));
        }
        ASSERT_EQ(t.fake.results, 0u);

        t.f = tunneler_frontends_free(t.f);
        memcpy(expected, socks_method_ok, 2);
        socks_reply(SOCKS_REPLY_SUCCEEDED, expected + 2);
        expect_bytes(t.e, fd, expected, sizeof(expected));
        ASSERT_EQ(t.fake.results, 1u);
        expect_echo(t.e, fd);
        close(fd);
        t_done(&t);
}

TEST(connections_max) {
        int fds[FRONTEND_CONNECTIONS_MAX], extra[2];
        uint8_t req[300], ok[SOCKS_REPLY_SIZE];
        size_t n;
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                fds[i] = socks_greet(&t);

        /* The next one waits in the backlog: connected, but nobody reads its greeting. */
        extra[0] = client_connect(tunneler_frontends_socks_address(t.f));
        client_send(extra[0], socks_greeting, sizeof(socks_greeting));
        run_for(t.e, 200 * USEC_PER_MSEC);
        expect_nothing_yet(extra[0]);

        /* A connection handed to the data plane leaves the handshake and makes room. */
        n = socks_domain_request("db.lab", 5432, req);
        client_send(fds[0], req, n);
        socks_reply(SOCKS_REPLY_SUCCEEDED, ok);
        expect_bytes(t.e, fds[0], ok, sizeof(ok));
        expect_bytes(t.e, extra[0], socks_method_ok, sizeof(socks_method_ok));

        /* Full again; a client giving up makes room too. */
        extra[1] = client_connect(tunneler_frontends_socks_address(t.f));
        client_send(extra[1], socks_greeting, sizeof(socks_greeting));
        run_for(t.e, 200 * USEC_PER_MSEC);
        expect_nothing_yet(extra[1]);
        close(fds[1]);
        expect_bytes(t.e, extra[1], socks_method_ok, sizeof(socks_method_ok));

        /* Forwards and the HTTP proxy have their own caps. */
        {
                int h = client_connect(tunneler_frontends_http_address(t.f));

                client_send(h, "GET / HTTP/1.1\r\n\r\n", 18);
                ASSERT_GT(read_to_end(t.e, h, req, sizeof(req), false), 0u);
                close(h);
        }

        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                if (i != 1)
                        close(fds[i]);
        close(extra[0]);
        close(extra[1]);
        t_done(&t);
}

/* ---- HTTP CONNECT end to end ---- */

/* "HTTP/1.1 <status> …", Connection: close, a text body whose length Content-Length gives. */
static void assert_http_error(const char *response, unsigned status) {
        char prefix[32];
        const char *cl, *end;
        unsigned long length;

        snprintf(prefix, sizeof(prefix), "HTTP/1.1 %u ", status);
        ASSERT_TRUE(startswith(response, prefix));
        ASSERT_STRSTR(response, "\r\nConnection: close\r\n");
        ASSERT_STRSTR(response, "\r\nContent-Type: text/plain\r\n");
        end = ASSERT_NOT_NULL(strstr(response, "\r\n\r\n"));
        cl = ASSERT_NOT_NULL(strstr(response, "\r\nContent-Length: "));
        length = strtoul(cl + STRLEN("\r\nContent-Length: "), NULL, 10);
        ASSERT_GT(length, 0u);
        ASSERT_UEQ(strlen(end + 4), length);
}

static void http_expect_error(T *t, const char *request, size_t size, unsigned status, bool allow_reset,
                              char *ret_response) {
        char buf[4096];
        size_t n;
        int fd;

        fd = client_connect(tunneler_frontends_http_address(t->f));
        client_send(fd, request, size);
        n = read_to_end(t->e, fd, buf, sizeof(buf), allow_reset);
        buf[n] = '\0';
        assert_http_error(buf, status);
        if (ret_response)
                strcpy(ret_response, buf);
        close(fd);
}

#define ESTABLISHED "HTTP/1.1 200 Connection established\r\n\r\n"

TEST(http_happy_path) {
        static const char *const requests[] = {
                "CONNECT DB.Lab:5432 HTTP/1.1\r\nHost: DB.Lab:5432\r\nUser-Agent: test\r\n\r\n",
                "CONNECT [2001:db8::1]:443 HTTP/1.0\r\n\r\n",
        };
        static const struct {
                const char *host;
                uint16_t port;
        } expected[] = { { "db.lab", 5432 }, { "2001:db8::1", 443 } };
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(requests); i++) {
                int fd;

                CASE("%s", expected[i].host);
                fd = client_connect(tunneler_frontends_http_address(t.f));
                client_send(fd, requests[i], strlen(requests[i]));
                expect_bytes(t.e, fd, ESTABLISHED, STRLEN(ESTABLISHED));
                ASSERT_STREQ(t.fake.host, expected[i].host);
                ASSERT_EQ(t.fake.port, expected[i].port);
                expect_echo(t.e, fd);
                close(fd);
        }
        t_done(&t);
}

TEST(http_refusals) {
        static const struct {
                const char *host;
                unsigned status;
        } rows[] = {
                { "denied.test", 403 },
                { "unreachable.test", 502 },
                { "busy.test", 503 },
                { "invalid.test", 400 },
                { "nomem.test", 502 },
                { "e403.test", 403 },
                { "e429.test", 429 },
                { "e500.test", 502 },
                { "e502.test", 502 },
                { "e504.test", 504 },
        };
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char request[256];
                int n;

                CASE("%s", rows[i].host);
                n = snprintf(request, sizeof(request), "CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n",
                             rows[i].host, rows[i].host);
                http_expect_error(&t, request, (size_t) n, rows[i].status, false, NULL);
                ASSERT_STREQ(t.fake.host, rows[i].host);
        }
        ASSERT_EQ(t.fake.calls, ELEMENTSOF(rows));
        t_done(&t);
}

TEST(http_bad_requests) {
        static const struct {
                const char *name;
                const char *request;
                unsigned status;
        } rows[] = {
                { "GET", "GET http://db.lab/ HTTP/1.1\r\nHost: db.lab\r\n\r\n", 405 },
                { "HTTP/2.0", "CONNECT db.lab:5432 HTTP/2.0\r\n\r\n", 505 },
                { "bare LF", "CONNECT db.lab:5432 HTTP/1.1\n\n", 400 },
                { "obs-fold", "CONNECT db.lab:5432 HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400 },
                { "no port", "CONNECT db.lab HTTP/1.1\r\n\r\n", 400 },
                /* Answered at once, without waiting for a head that will never come. */
                { "TLS", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400 },
                { "pipelined", "CONNECT db.lab:5432 HTTP/1.1\r\n\r\n\x16\x03\x01", 400 },
        };
        char response[4096];
        T t;

        t_init_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                CASE("%s", rows[i].name);
                http_expect_error(&t, rows[i].request, strlen(rows[i].request), rows[i].status, false,
                                  response);
                if (rows[i].status == 405)
                        ASSERT_STRSTR(response, "\r\nAllow: CONNECT\r\n");
        }
        ASSERT_EQ(t.fake.calls, 0u);
        t_done(&t);
}

TEST(http_head_too_large) {
        _cleanup_free_ char *request = ASSERT_NOT_NULL(malloc(FRONTEND_HEAD_MAX + 100));
        size_t n;
        T t;

        t_init_default(&t);
        n = (size_t) snprintf(request, FRONTEND_HEAD_MAX, HEAD "X: ");
        memset(request + n, 'a', FRONTEND_HEAD_MAX + 100 - n);
        /* Bytes beyond what was read may still be in our socket when it is closed: then the client also sees
         * a reset, after the response. */
        http_expect_error(&t, request, FRONTEND_HEAD_MAX + 100, 431, true, NULL);
        ASSERT_EQ(t.fake.calls, 0u);
        t_done(&t);
}

TEST(http_one_byte_at_a_time) {
        static const char request[] = "CONNECT db.lab:5432 HTTP/1.1\r\nHost: db.lab:5432\r\n\r\n";
        int fd;
        T t;

        t_init_default(&t);
        fd = client_connect(tunneler_frontends_http_address(t.f));
        for (size_t i = 0; i < sizeof(request) - 1; i++) {
                ASSERT_OK(sd_event_run(t.e, 0));
                expect_nothing_yet(fd);
                client_send(fd, request + i, 1);
                ASSERT_OK(sd_event_run(t.e, 10 * USEC_PER_MSEC));
        }
        expect_bytes(t.e, fd, ESTABLISHED, STRLEN(ESTABLISHED));
        ASSERT_EQ(t.fake.calls, 1u);
        expect_echo(t.e, fd);
        close(fd);
        t_done(&t);
}

TEST(ipv6_listener) {
        uint8_t req[300], ok[SOCKS_REPLY_SIZE];
        HostPort hp;
        size_t n;
        int fd, r;
        T t;

        ASSERT_OK(parse_host_port("[::1]", 1, &hp));
        hp.port = 0;
        r = listen_bind(&hp, 1, &fd);
        if (r < 0)
                test_skip("no IPv6 loopback: %s", strerror(-r));
        close(fd);

        t_init(&t, (TunnelerFrontendSettings) { .socks_listen = "[::1]:0" });
        ASSERT_TRUE(startswith(tunneler_frontends_socks_address(t.f), "[::1]:"));
        fd = socks_greet(&t);
        n = socks_domain_request("db.lab", 5432, req);
        client_send(fd, req, n);
        socks_reply(SOCKS_REPLY_SUCCEEDED, ok);
        expect_bytes(t.e, fd, ok, sizeof(ok));
        close(fd);
        t_done(&t);
}
