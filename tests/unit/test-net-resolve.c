/* SPDX-License-Identifier: Apache-2.0 */

/* The resolver against fake DNS servers on 127.0.0.1, driven by the test's own sd-event loop, and the
 * response parser on hand-built messages. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "net-resolve.h"
#include "tests.h"
#include "time-util.h"

#define FLAGS_RESPONSE 0x8180U  /* QR, RD, RA */
#define FLAG_TC 0x0200U
#define TEST_DEADLINE (10 * USEC_PER_SEC)
/* Longer than any test runs: an answer that arrives at all arrived without waiting for it. */
#define TIMEOUT_NEVER (60 * USEC_PER_SEC)

/* ---- building messages ---- */

typedef struct Msg {
        uint8_t b[8192];
        size_t n;
} Msg;

static void msg_put(Msg *m, const void *p, size_t n) {
        ASSERT_TRUE(m->n + n <= sizeof(m->b));
        memcpy(m->b + m->n, p, n);
        m->n += n;
}

static void msg_u8(Msg *m, uint8_t v) {
        msg_put(m, &v, 1);
}

static void msg_u16(Msg *m, uint16_t v) {
        msg_u8(m, (uint8_t) (v >> 8));
        msg_u8(m, (uint8_t) v);
}

static void msg_u32(Msg *m, uint32_t v) {
        msg_u16(m, (uint16_t) (v >> 16));
        msg_u16(m, (uint16_t) v);
}

static void msg_set_u16(Msg *m, size_t offset, uint16_t v) {
        m->b[offset] = (uint8_t) (v >> 8);
        m->b[offset + 1] = (uint8_t) v;
}

/* Text into uncompressed wire form; "" is the root. */
static void msg_name(Msg *m, const char *name) {
        while (*name) {
                size_t l = strcspn(name, ".");

                msg_u8(m, (uint8_t) l);
                msg_put(m, name, l);
                name += l;
                if (*name == '.')
                        name++;
        }
        msg_u8(m, 0);
}

static void msg_pointer(Msg *m, size_t offset) {
        msg_u16(m, (uint16_t) (0xc000U | offset));
}

static void msg_header(Msg *m, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
                       uint16_t ar) {
        m->n = 0;
        msg_u16(m, id);
        msg_u16(m, flags);
        msg_u16(m, qd);
        msg_u16(m, an);
        msg_u16(m, ns);
        msg_u16(m, ar);
}

static void msg_question(Msg *m, const char *name, uint16_t type) {
        msg_name(m, name);
        msg_u16(m, type);
        msg_u16(m, DNS_CLASS_IN);
}

/* A record's owner, type, class IN, TTL and rdlength; owner NULL: a pointer to the question's name. */
static void msg_rr_class(Msg *m, const char *owner, uint16_t type, uint16_t class, uint16_t rdlength) {
        if (owner)
                msg_name(m, owner);
        else
                msg_pointer(m, 12);
        msg_u16(m, type);
        msg_u16(m, class);
        msg_u32(m, 300);
        msg_u16(m, rdlength);
}

static void msg_rr(Msg *m, const char *owner, uint16_t type, uint16_t rdlength) {
        msg_rr_class(m, owner, type, DNS_CLASS_IN, rdlength);
}

static void msg_address(Msg *m, const char *owner, const char *address) {
        uint8_t a[16];

        if (inet_pton(AF_INET, address, a) == 1) {
                msg_rr(m, owner, DNS_TYPE_A, 4);
                msg_put(m, a, 4);
        } else {
                ASSERT_EQ(inet_pton(AF_INET6, address, a), 1);
                msg_rr(m, owner, DNS_TYPE_AAAA, 16);
                msg_put(m, a, 16);
        }
}

static void msg_cname(Msg *m, const char *owner, const char *target) {
        Msg t = {};

        msg_name(&t, target);
        msg_rr(m, owner, DNS_TYPE_CNAME, (uint16_t) t.n);
        msg_put(m, t.b, t.n);
}

/* ---- formatting results ---- */

static void format_addresses(const struct sockaddr_storage *a, size_t n, char *buf, size_t size) {
        size_t k = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < n; i++) {
                char ip[INET6_ADDRSTRLEN];

                if (a[i].ss_family == AF_INET) {
                        const struct sockaddr_in *sin = (const struct sockaddr_in *) &a[i];

                        ASSERT_NOT_NULL(inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)));
                        k += (size_t) snprintf(buf + k, size - k, "%s%s:%u", i > 0 ? " " : "", ip,
                                               ntohs(sin->sin_port));
                } else {
                        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &a[i];

                        ASSERT_EQ(a[i].ss_family, AF_INET6);
                        ASSERT_NOT_NULL(inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)));
                        k += (size_t) snprintf(buf + k, size - k, "%s[%s]:%u", i > 0 ? " " : "", ip,
                                               ntohs(sin6->sin6_port));
                }
                ASSERT_LT(k, size);
        }
}

typedef struct Result {
        unsigned calls;
        int error;
        size_t n;
        char text[2048];
} Result;

static void on_result(ResolveQuery *q, int error, const struct sockaddr_storage *addresses, size_t n,
                      void *userdata) {
        Result *res = userdata;

        res->calls++;
        res->error = error;
        res->n = n;
        if (error == 0) {
                ASSERT_NOT_NULL(addresses);
                ASSERT_GT(n, 0);
                ASSERT_LE(n, RESOLVE_ADDRESSES_MAX);
                format_addresses(addresses, n, res->text, sizeof(res->text));
        } else {
                ASSERT_LT(error, 0);
                ASSERT_EQ(n, 0);
        }
}

static void run_until(sd_event *e, const unsigned *counter, unsigned want) {
        usec_t deadline = now(CLOCK_MONOTONIC) + TEST_DEADLINE;

        while (*counter < want) {
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                ASSERT_OK(sd_event_run(e, 100 * USEC_PER_MSEC));
        }
}

/* Dispatches whatever is ready, without waiting. */
static void run_ready(sd_event *e) {
        for (unsigned i = 0; i < 1000; i++)
                if (ASSERT_OK(sd_event_run(e, 0)) == 0)
                        return;
        test_fail(__FILE__, __LINE__, "The loop never became idle");
}

/* ---- a fake DNS server ---- */

typedef struct FakeQuery {
        uint16_t id;
        uint16_t qtype;
        char name[256];
} FakeQuery;

typedef struct Fake Fake;
typedef void (*FakeRespond)(Fake *f, const FakeQuery *q);

struct Fake {
        int fd;
        int spoof_fd;                   /* another port on the same address */
        char address[64];               /* "127.0.0.1:port" */
        sd_event_source *source;
        struct sockaddr_storage peer;
        socklen_t peer_len;
        unsigned n_queries[2];          /* A, AAAA */
        unsigned n_total;
        FakeRespond respond;
        /* The standard responder, per question (A, AAAA): silence, an rcode, the addresses. */
        bool silent[2];
        uint16_t rcode[2];
        const char *const *addresses[2];
        bool upper_echo;                /* echo the question's name in upper case */
        unsigned chain;                 /* CNAME chain length for the chain responder */
        bool loop;
        bool only_malformed;
};

static void fake_send(Fake *f, const Msg *m) {
        ASSERT_EQ(sendto(f->fd, m->b, m->n, 0, (const struct sockaddr *) &f->peer, f->peer_len),
                  (ssize_t) m->n);
}

static void fake_echo(Fake *f, Msg *m, const FakeQuery *q, uint16_t rcode, uint16_t an) {
        char name[256];

        snprintf(name, sizeof(name), "%s", q->name);
        if (f->upper_echo)
                for (char *p = name; *p; p++)
                        if (*p >= 'a' && *p <= 'z')
                                *p = (char) (*p - 'a' + 'A');
        msg_header(m, q->id, (uint16_t) (FLAGS_RESPONSE | rcode), 1, an, 0, 0);
        msg_question(m, name, q->qtype);
}

static size_t strv_n(const char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

static void fake_respond_standard(Fake *f, const FakeQuery *q) {
        size_t i = q->qtype == DNS_TYPE_A ? 0 : 1, n = f->rcode[i] == 0 ? strv_n(f->addresses[i]) : 0;
        Msg m = {};

        if (f->silent[i])
                return;
        fake_echo(f, &m, q, f->rcode[i], (uint16_t) n);
        for (size_t k = 0; k < n; k++)
                msg_address(&m, NULL, f->addresses[i][k]);
        fake_send(f, &m);
}

static int fake_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Fake *f = userdata;
        FakeQuery q = {};
        uint8_t b[1024];
        size_t pos = 12, k = 0;
        ssize_t n;

        f->peer_len = sizeof(f->peer);
        n = recvfrom(fd, b, sizeof(b), 0, (struct sockaddr *) &f->peer, &f->peer_len);
        ASSERT_GE(n, 17);
        /* A standard query, recursion desired, exactly one question. */
        ASSERT_EQ(b[2], 0x01);
        ASSERT_EQ(b[3], 0x00);
        ASSERT_EQ(b[4] << 8 | b[5], 1);
        for (size_t i = 6; i < 12; i++)
                ASSERT_EQ(b[i], 0);
        q.id = (uint16_t) (b[0] << 8 | b[1]);
        while (b[pos] != 0) {
                ASSERT_LT(b[pos], 64);
                if (k > 0)
                        q.name[k++] = '.';
                memcpy(q.name + k, b + pos + 1, b[pos]);
                k += b[pos];
                pos += 1 + b[pos];
        }
        pos++;
        q.qtype = (uint16_t) (b[pos] << 8 | b[pos + 1]);
        ASSERT_EQ(b[pos + 2] << 8 | b[pos + 3], DNS_CLASS_IN);
        ASSERT_EQ((size_t) n, pos + 4);
        ASSERT_TRUE(q.qtype == DNS_TYPE_A || q.qtype == DNS_TYPE_AAAA);

        f->n_queries[q.qtype == DNS_TYPE_A ? 0 : 1]++;
        f->n_total++;
        if (f->respond)
                f->respond(f, &q);
        return 0;
}

static int udp_socket(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_GE(fd, 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &sa, sizeof(sa)));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &sa, &len));
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

static void fake_init(Fake *f, sd_event *e) {
        uint16_t port, spoof_port;

        *f = (Fake) { .respond = fake_respond_standard };
        f->fd = udp_socket(&port);
        f->spoof_fd = udp_socket(&spoof_port);
        snprintf(f->address, sizeof(f->address), "127.0.0.1:%u", port);
        ASSERT_OK(sd_event_add_io(e, &f->source, f->fd, EPOLLIN, fake_on_io, f));
}

static void fake_done(Fake *f) {
        f->source = sd_event_source_disable_unref(f->source);
        close(f->fd);
        close(f->spoof_fd);
}

static Resolver *resolver_for(sd_event *e, Fake *fakes, size_t n, usec_t attempt, usec_t total) {
        char *servers[RESOLVE_SERVERS_MAX + 1] = {};
        Resolver *r = NULL;

        for (size_t i = 0; i < n; i++)
                servers[i] = fakes[i].address;
        ASSERT_OK(resolver_new(e, servers, "/nonexistent", &r));
        ASSERT_OK(resolver_set_timeouts(r, attempt, total));
        return r;
}

/* Resolves and runs the loop until the callback ran; the callback never runs from resolver_resolve(). */
static Result resolve_wait(sd_event *e, Resolver *r, const char *name, uint16_t port) {
        Result res = {};

        ASSERT_OK(resolver_resolve(r, name, port, on_result, &res, NULL));
        ASSERT_EQ(res.calls, 0);
        run_until(e, &res.calls, 1);
        run_ready(e);
        ASSERT_EQ(res.calls, 1);
        return res;
}

static sd_event *event_new(void) {
        sd_event *e = NULL;

        ASSERT_OK(sd_event_new(&e));
        return e;
}

/* ---- answers ---- */

static const char *const v4_one[] = { "192.0.2.1", NULL };
static const char *const v4_two[] = { "192.0.2.1", "192.0.2.2", NULL };
static const char *const v6_one[] = { "2001:db8::1", NULL };
static const char *const none[] = { NULL };

TEST(answer_kinds) {
        static const struct {
                const char *name;
                const char *const *a, *const *aaaa;
                bool upper_echo;
                const char *expect;
        } cases[] = {
                { "a-only", v4_one, none, false, "192.0.2.1:443" },
                { "aaaa-only", none, v6_one, false, "[2001:db8::1]:443" },
                { "both", v4_two, v6_one, false, "192.0.2.1:443 192.0.2.2:443 [2001:db8::1]:443" },
                /* The question comes back in other case: names compare case-insensitively. */
                { "upper-echo", v4_one, v6_one, true, "192.0.2.1:443 [2001:db8::1]:443" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                sd_event *e = event_new();
                Fake f;
                Resolver *r;
                Result res;

                CASE("%s", cases[i].name);
                fake_init(&f, e);
                f.addresses[0] = cases[i].a;
                f.addresses[1] = cases[i].aaaa;
                f.upper_echo = cases[i].upper_echo;
                r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

                res = resolve_wait(e, r, "WWW.Example.com.", 443);
                ASSERT_EQ(res.error, 0);
                ASSERT_STREQ(res.text, cases[i].expect);
                /* One query per type, both answered: no waiting for a timeout. */
                ASSERT_EQ(f.n_queries[0], 1);
                ASSERT_EQ(f.n_queries[1], 1);

                resolver_free(r);
                fake_done(&f);
                sd_event_unref(e);
        }
}

TEST(addresses_max) {
        static const char *const many4[] = {
                "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7",
                "192.0.2.8", "192.0.2.9", "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13",
                "192.0.2.14", "192.0.2.15", "192.0.2.16", "192.0.2.17", "192.0.2.18", NULL,
        };
        sd_event *e = event_new();
        Fake f;
        Resolver *r;
        Result res;

        fake_init(&f, e);
        f.addresses[0] = many4;
        f.addresses[1] = v6_one;
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);
        res = resolve_wait(e, r, "many.example", 80);
        ASSERT_EQ(res.error, 0);
        /* IPv4 first, in the order received; what does not fit is dropped. */
        ASSERT_EQ(res.n, RESOLVE_ADDRESSES_MAX);
        ASSERT_STREQ(res.text,
                     "192.0.2.1:80 192.0.2.2:80 192.0.2.3:80 192.0.2.4:80 192.0.2.5:80 192.0.2.6:80 "
                     "192.0.2.7:80 192.0.2.8:80 192.0.2.9:80 192.0.2.10:80 192.0.2.11:80 192.0.2.12:80 "
                     "192.0.2.13:80 192.0.2.14:80 192.0.2.15:80 192.0.2.16:80");
        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

/* name → c1.example → … → c<chain>.example, which holds the address; plus records that must be
 * ignored. With loop set, the last name points back to the first. */
static void fake_respond_chain(Fake *f, const FakeQuery *q) {
        char owner[256], target[256];
        Msg m = {};

        fake_echo(f, &m, q, DNS_RCODE_NOERROR, 0);
        msg_address(&m, "other.example", "198.51.100.1");       /* another name */
        msg_rr(&m, NULL, 16, 3);                                 /* TXT for the name */
        msg_put(&m, "\002hi", 3);
        for (unsigned i = 0; i < f->chain; i++) {
                if (i == 0)
                        snprintf(owner, sizeof(owner), "%s", q->name);
                else
                        snprintf(owner, sizeof(owner), "c%u.example", i);
                if (f->loop && i + 1 == f->chain)
                        snprintf(target, sizeof(target), "%s", q->name);
                else
                        snprintf(target, sizeof(target), "c%u.example", i + 1);
                msg_cname(&m, owner, target);
        }
        snprintf(owner, sizeof(owner), "c%u.example", f->chain);
        if (q->qtype == DNS_TYPE_A) {
                msg_rr_class(&m, owner, DNS_TYPE_A, 3 /* CH */, 4);     /* other class */
                msg_put(&m, "\x0a\x00\x00\x01", 4);
                msg_address(&m, owner, "192.0.2.9");
                msg_address(&m, NULL, "198.51.100.2");                   /* the alias itself */
        }
        msg_set_u16(&m, 6, (uint16_t) (f->chain + (q->qtype == DNS_TYPE_A ? 5 : 2)));
        fake_send(f, &m);
}

TEST(cname_chain) {
        static const struct {
                unsigned chain;
                bool loop;
                int error;
        } cases[] = {
                { 1, false, 0 },
                { 3, false, 0 },
                { RESOLVE_CNAME_MAX, false, 0 },
                { RESOLVE_CNAME_MAX + 1, false, -EBADMSG },
                { 2, true, -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                sd_event *e = event_new();
                Fake f;
                Resolver *r;
                Result res;

                CASE("chain %u%s", cases[i].chain, cases[i].loop ? " (loop)" : "");
                fake_init(&f, e);
                f.respond = fake_respond_chain;
                f.chain = cases[i].chain;
                f.loop = cases[i].loop;
                r = resolver_for(e, &f, 1, 100 * USEC_PER_MSEC, TIMEOUT_NEVER);

                res = resolve_wait(e, r, "www.example", 22);
                ASSERT_EQ(res.error, cases[i].error);
                if (res.error == 0)
                        ASSERT_STREQ(res.text, "192.0.2.9:22");

                resolver_free(r);
                fake_done(&f);
                sd_event_unref(e);
        }
}

TEST(errors) {
        static const struct {
                const char *name;
                bool silent[2];
                uint16_t rcode[2];
                const char *const *a, *const *aaaa;
                int error;
        } cases[] = {
                /* NXDOMAIN decides at once, without waiting for the other answer. */
                { "nxdomain", { false, true }, { DNS_RCODE_NXDOMAIN, 0 }, none, none, -ENOENT },
                { "nxdomain-aaaa", { true, false }, { 0, DNS_RCODE_NXDOMAIN }, none, none, -ENOENT },
                { "nodata", { false, false }, { 0, 0 }, none, none, -ENOENT },
                { "servfail", { false, false }, { DNS_RCODE_SERVFAIL, DNS_RCODE_SERVFAIL }, none, none,
                  -EIO },
                { "refused", { false, true }, { DNS_RCODE_REFUSED, 0 }, none, none, -EIO },
                { "formerr", { false, false }, { DNS_RCODE_FORMERR, 0 }, none, none, -EIO },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                sd_event *e = event_new();
                Fake f;
                Resolver *r;
                Result res;

                CASE("%s", cases[i].name);
                fake_init(&f, e);
                memcpy(f.silent, cases[i].silent, sizeof(f.silent));
                memcpy(f.rcode, cases[i].rcode, sizeof(f.rcode));
                f.addresses[0] = cases[i].a;
                f.addresses[1] = cases[i].aaaa;
                /* Attempt timeout beyond the test deadline: these must not wait for it. */
                r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

                res = resolve_wait(e, r, "gone.example", 80);
                ASSERT_EQ(res.error, cases[i].error);
                resolver_free(r);
                fake_done(&f);
                sd_event_unref(e);
        }
}

TEST(servfail_tries_next_server) {
        sd_event *e = event_new();
        Fake f[2];
        Resolver *r;
        Result res;

        fake_init(&f[0], e);
        fake_init(&f[1], e);
        f[0].rcode[0] = f[0].rcode[1] = DNS_RCODE_SERVFAIL;
        f[1].addresses[0] = v4_one;
        f[1].addresses[1] = v6_one;
        r = resolver_for(e, f, 2, TIMEOUT_NEVER, TIMEOUT_NEVER);

        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80 [2001:db8::1]:80");
        ASSERT_GE(f[0].n_total, 1);
        ASSERT_EQ(f[1].n_queries[0], 1);
        ASSERT_EQ(f[1].n_queries[1], 1);

        /* Every server failing: -EIO, each asked. */
        f[1].rcode[0] = f[1].rcode[1] = DNS_RCODE_REFUSED;
        f[0].n_total = f[1].n_total = 0;
        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, -EIO);
        ASSERT_GE(f[0].n_total, 1);
        ASSERT_GE(f[1].n_total, 1);

        resolver_free(r);
        fake_done(&f[0]);
        fake_done(&f[1]);
        sd_event_unref(e);
}

TEST(broken_aaaa_keeps_a) {
        sd_event *e = event_new();
        Fake f[2];
        Resolver *r;
        Result res;

        /* Servers that fail AAAA: the A answer stands, and the next server is asked only AAAA. */
        fake_init(&f[0], e);
        fake_init(&f[1], e);
        f[0].addresses[0] = v4_one;
        f[0].rcode[1] = DNS_RCODE_SERVFAIL;
        f[1].addresses[0] = v4_two;
        f[1].rcode[1] = DNS_RCODE_SERVFAIL;
        r = resolver_for(e, f, 2, TIMEOUT_NEVER, TIMEOUT_NEVER);

        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80");
        ASSERT_EQ(f[0].n_queries[0], 1);
        ASSERT_EQ(f[0].n_queries[1], 1);
        ASSERT_EQ(f[1].n_queries[0], 0);
        ASSERT_EQ(f[1].n_queries[1], 1);

        resolver_free(r);
        fake_done(&f[0]);
        fake_done(&f[1]);
        sd_event_unref(e);
}

TEST(timeouts) {
        sd_event *e = event_new();
        Fake f[2];
        Resolver *r;
        Result res;

        fake_init(&f[0], e);
        fake_init(&f[1], e);
        f[0].silent[0] = f[0].silent[1] = f[1].silent[0] = f[1].silent[1] = true;

        CASE("silent servers: each tried, then -ETIMEDOUT");
        r = resolver_for(e, f, 2, 50 * USEC_PER_MSEC, TIMEOUT_NEVER);
        res = resolve_wait(e, r, "slow.example", 80);
        ASSERT_EQ(res.error, -ETIMEDOUT);
        ASSERT_EQ(f[0].n_queries[0], 1);
        ASSERT_EQ(f[0].n_queries[1], 1);
        ASSERT_EQ(f[1].n_queries[0], 1);
        ASSERT_EQ(f[1].n_queries[1], 1);
        resolver_free(r);

        CASE("the total timeout ends the query during the first attempt");
        f[0].n_queries[0] = f[0].n_queries[1] = f[1].n_queries[0] = f[1].n_queries[1] = 0;
        r = resolver_for(e, f, 2, TIMEOUT_NEVER, 50 * USEC_PER_MSEC);
        res = resolve_wait(e, r, "slow.example", 80);
        ASSERT_EQ(res.error, -ETIMEDOUT);
        ASSERT_EQ(f[0].n_queries[0], 1);
        ASSERT_EQ(f[1].n_queries[0] + f[1].n_queries[1], 0);
        resolver_free(r);

        CASE("one answer with addresses is used when the other never comes");
        f[0].n_queries[0] = f[0].n_queries[1] = f[1].n_queries[0] = f[1].n_queries[1] = 0;
        f[0].silent[0] = false;
        f[0].addresses[0] = v4_one;
        r = resolver_for(e, f, 2, 50 * USEC_PER_MSEC, TIMEOUT_NEVER);
        res = resolve_wait(e, r, "half.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80");
        ASSERT_EQ(f[1].n_queries[0] + f[1].n_queries[1], 0);
        resolver_free(r);

        CASE("NODATA for one and silence for the other is no answer");
        f[0].n_queries[0] = f[0].n_queries[1] = f[1].n_queries[0] = f[1].n_queries[1] = 0;
        f[0].addresses[0] = none;
        r = resolver_for(e, f, 2, 50 * USEC_PER_MSEC, TIMEOUT_NEVER);
        res = resolve_wait(e, r, "half.example", 80);
        ASSERT_EQ(res.error, -ETIMEDOUT);
        /* The next server is asked only what is still open. */
        ASSERT_EQ(f[1].n_queries[0], 0);
        ASSERT_EQ(f[1].n_queries[1], 1);
        resolver_free(r);

        fake_done(&f[0]);
        fake_done(&f[1]);
        sd_event_unref(e);
}

TEST(unreachable_server_skipped_at_once) {
        sd_event *e = event_new();
        char *servers[3] = {};
        char closed[64];
        uint16_t port;
        Resolver *r = NULL;
        Fake f;
        Result res;

        /* A port nobody listens on: the ICMP error moves on without waiting for the attempt timeout. */
        close(udp_socket(&port));
        snprintf(closed, sizeof(closed), "127.0.0.1:%u", port);
        fake_init(&f, e);
        f.addresses[0] = v4_one;
        f.addresses[1] = none;
        servers[0] = closed;
        servers[1] = f.address;
        ASSERT_OK(resolver_new(e, servers, NULL, &r));
        ASSERT_OK(resolver_set_timeouts(r, TIMEOUT_NEVER, TIMEOUT_NEVER));

        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80");

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

/* Before the real answer: answers that are not ours, each carrying an address that must not appear. */
static void fake_respond_spoofed(Fake *f, const FakeQuery *q) {
        Msg m = {};

        if (q->qtype != DNS_TYPE_A) {
                fake_respond_standard(f, q);
                return;
        }

        /* wrong id */
        msg_header(&m, (uint16_t) (q->id + 1), FLAGS_RESPONSE, 1, 1, 0, 0);
        msg_question(&m, q->name, q->qtype);
        msg_address(&m, NULL, "203.0.113.1");
        fake_send(f, &m);
        /* the right id from another port */
        msg_header(&m, q->id, FLAGS_RESPONSE, 1, 1, 0, 0);
        msg_question(&m, q->name, q->qtype);
        msg_address(&m, NULL, "203.0.113.2");
        ASSERT_EQ(sendto(f->spoof_fd, m.b, m.n, 0, (struct sockaddr *) &f->peer, f->peer_len),
                  (ssize_t) m.n);
        /* another name in the question */
        msg_header(&m, q->id, FLAGS_RESPONSE, 1, 1, 0, 0);
        msg_question(&m, "evil.example", q->qtype);
        msg_address(&m, NULL, "203.0.113.3");
        fake_send(f, &m);
        /* another type in the question */
        msg_header(&m, q->id, FLAGS_RESPONSE, 1, 1, 0, 0);
        msg_question(&m, q->name, DNS_TYPE_AAAA);
        msg_address(&m, NULL, "203.0.113.4");
        fake_send(f, &m);
        /* not a response (QR clear) */
        msg_header(&m, q->id, 0x0100, 1, 1, 0, 0);
        msg_question(&m, q->name, q->qtype);
        msg_address(&m, NULL, "203.0.113.5");
        fake_send(f, &m);
        /* another opcode (STATUS) */
        msg_header(&m, q->id, FLAGS_RESPONSE | (2U << 11), 1, 1, 0, 0);
        msg_question(&m, q->name, q->qtype);
        msg_address(&m, NULL, "203.0.113.6");
        fake_send(f, &m);
        /* a name that only shares a prefix */
        msg_header(&m, q->id, FLAGS_RESPONSE, 1, 1, 0, 0);
        msg_question(&m, "www.example.evil", q->qtype);
        msg_address(&m, NULL, "203.0.113.7");
        fake_send(f, &m);

        fake_respond_standard(f, q);
}

TEST(spoofed_answers_ignored) {
        sd_event *e = event_new();
        Fake f;
        Resolver *r;
        Result res;

        fake_init(&f, e);
        f.respond = fake_respond_spoofed;
        f.addresses[0] = v4_one;
        f.addresses[1] = none;
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80");

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

/* Malformed answers with our id and question, each carrying an address that must not appear; then the
 * real one unless only_malformed. */
static void fake_respond_malformed(Fake *f, const FakeQuery *q) {
        Msg m = {};
        size_t at;

        /* owner name pointing at itself */
        fake_echo(f, &m, q, 0, 1);
        at = m.n;
        msg_pointer(&m, at);
        msg_u16(&m, q->qtype);
        msg_u16(&m, DNS_CLASS_IN);
        msg_u32(&m, 60);
        msg_u16(&m, 4);
        msg_put(&m, "\xcb\x00\x71\x01", 4);
        fake_send(f, &m);
        /* two names pointing at each other: the second record's owner points into the first's */
        fake_echo(f, &m, q, 0, 2);
        at = m.n;
        msg_u8(&m, 1);
        msg_u8(&m, 'x');
        msg_pointer(&m, at + 10 + 4 + 4);
        msg_u16(&m, DNS_TYPE_A);
        msg_u16(&m, DNS_CLASS_IN);
        msg_u32(&m, 60);
        msg_u16(&m, 4);
        msg_put(&m, "\xcb\x00\x71\x02", 4);
        msg_pointer(&m, at);
        msg_u16(&m, DNS_TYPE_A);
        msg_u16(&m, DNS_CLASS_IN);
        msg_u32(&m, 60);
        msg_u16(&m, 4);
        msg_put(&m, "\xcb\x00\x71\x03", 4);
        fake_send(f, &m);
        /* rdata cut short */
        fake_echo(f, &m, q, 0, 1);
        msg_rr(&m, NULL, q->qtype, q->qtype == DNS_TYPE_A ? 4 : 16);
        msg_put(&m, "\xcb\x00", 2);
        fake_send(f, &m);
        /* A record of 5 bytes, AAAA of 4 */
        fake_echo(f, &m, q, 0, 1);
        msg_rr(&m, NULL, q->qtype, q->qtype == DNS_TYPE_A ? 5 : 4);
        msg_put(&m, "\xcb\x00\x71\x04\x00", q->qtype == DNS_TYPE_A ? 5 : 4);
        fake_send(f, &m);
        /* an extended label type */
        fake_echo(f, &m, q, 0, 1);
        msg_u8(&m, 0x41);
        msg_u8(&m, 0);
        msg_u16(&m, q->qtype);
        msg_u16(&m, DNS_CLASS_IN);
        msg_u32(&m, 60);
        msg_u16(&m, 4);
        msg_put(&m, "\xcb\x00\x71\x05", 4);
        fake_send(f, &m);
        /* more records announced than present */
        fake_echo(f, &m, q, 0, 3);
        msg_address(&m, NULL, q->qtype == DNS_TYPE_A ? "203.0.113.6" : "2001:db8::6");
        fake_send(f, &m);
        /* longer than RESOLVE_MESSAGE_MAX */
        fake_echo(f, &m, q, 0, 1);
        msg_address(&m, NULL, q->qtype == DNS_TYPE_A ? "203.0.113.7" : "2001:db8::7");
        msg_set_u16(&m, 10, 1);
        msg_rr(&m, "", 16, (uint16_t) (RESOLVE_MESSAGE_MAX + 100));
        m.n += RESOLVE_MESSAGE_MAX + 100;
        fake_send(f, &m);

        if (!f->only_malformed)
                fake_respond_standard(f, q);
}

TEST(malformed_answers_ignored) {
        sd_event *e = event_new();
        Fake f;
        Resolver *r;
        Result res;

        fake_init(&f, e);
        f.respond = fake_respond_malformed;
        f.addresses[0] = v4_one;
        f.addresses[1] = v6_one;
        r = resolver_for(e, &f, 1, 50 * USEC_PER_MSEC, TIMEOUT_NEVER);

        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_STREQ(res.text, "192.0.2.1:80 [2001:db8::1]:80");

        CASE("only malformed answers");
        f.only_malformed = true;
        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, -EBADMSG);

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

static void fake_respond_by_name(Fake *f, const FakeQuery *q) {
        Msg m = {};

        if (q->qtype != DNS_TYPE_A) {
                fake_echo(f, &m, q, 0, 0);
                fake_send(f, &m);
                return;
        }
        fake_echo(f, &m, q, 0, 1);
        msg_address(&m, NULL, streq(q->name, "a.example") ? "192.0.2.1" : "192.0.2.2");
        fake_send(f, &m);
}

TEST(concurrent_queries) {
        sd_event *e = event_new();
        Result a = {}, b = {};
        Fake f;
        Resolver *r;

        fake_init(&f, e);
        f.respond = fake_respond_by_name;
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

        ASSERT_OK(resolver_resolve(r, "a.example", 1, on_result, &a, NULL));
        ASSERT_OK(resolver_resolve(r, "b.example", 2, on_result, &b, NULL));
        run_until(e, &a.calls, 1);
        run_until(e, &b.calls, 1);
        ASSERT_STREQ(a.text, "192.0.2.1:1");
        ASSERT_STREQ(b.text, "192.0.2.2:2");

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

TEST(literals_without_query) {
        static const struct {
                const char *name, *expect;
        } cases[] = {
                { "192.0.2.7", "192.0.2.7:8443" },
                { "2001:db8::7", "[2001:db8::7]:8443" },
                { "[2001:db8::7]", "[2001:db8::7]:8443" },
                { "::ffff:192.0.2.7", "[::ffff:192.0.2.7]:8443" },
                { "localhost", "127.0.0.1:8443 [::1]:8443" },
                { "LocalHost.", "127.0.0.1:8443 [::1]:8443" },
        };
        sd_event *e = event_new();
        Fake f;
        Resolver *r;

        fake_init(&f, e);
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                Result res;

                CASE("%s", cases[i].name);
                res = resolve_wait(e, r, cases[i].name, 8443);
                ASSERT_EQ(res.error, 0);
                ASSERT_STREQ(res.text, cases[i].expect);
        }
        ASSERT_EQ(f.n_total, 0);

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

TEST(bad_names) {
        static const char *const names[] = {
                "", ".", "..", "-a.example", "a-.example", "a..example", "a_b.example", "exa mple.com",
                "a.example..", ".a.example", "1.2.3.4.", "300.1.1.1", "1.2.3", "[192.0.2.1]", "[a.example]",
                "[", "[]", "[::1", "::1]", "fe80::1%eth0", "[fe80::1%eth0]", "a.example:80", "é.example",
                "a.example\n",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", /* label of 64 */
        };
        char long_name[300];
        sd_event *e = event_new();
        Fake f;
        Resolver *r;
        ResolveQuery *q = NULL;

        fake_init(&f, e);
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                CASE("'%s'", names[i]);
                ASSERT_ERROR(resolver_resolve(r, names[i], 80, on_result, NULL, &q), EINVAL);
                ASSERT_NULL(q);
        }
        CASE("NULL");
        ASSERT_ERROR(resolver_resolve(r, NULL, 80, on_result, NULL, &q), EINVAL);

        /* 254 characters: one too many (253 is the longest name). */
        CASE("long");
        memset(long_name, 0, sizeof(long_name));
        for (size_t k = 0; k < 254; k++)
                long_name[k] = k % 2 == 0 ? 'a' : '.';
        long_name[253] = 'b';
        ASSERT_ERROR(resolver_resolve(r, long_name, 80, on_result, NULL, &q), EINVAL);
        long_name[253] = '\0';
        {
                Result res = {};

                f.addresses[0] = v4_one;
                ASSERT_OK(resolver_resolve(r, long_name, 80, on_result, &res, NULL));
                run_until(e, &res.calls, 1);
                ASSERT_EQ(res.error, 0);
        }

        run_ready(e);
        ASSERT_EQ(f.n_total, 2);
        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

static void servers_format(Resolver *r, char *buf, size_t size) {
        const struct sockaddr_storage *servers;
        size_t n;

        n = resolver_get_servers(r, &servers);
        ASSERT_GT(n, 0);
        ASSERT_LE(n, RESOLVE_SERVERS_MAX);
        format_addresses(servers, n, buf, size);
}

TEST(resolv_conf) {
        static const char conf[] =
                "# written by hand\n"
                "; a comment too\n"
                "search example.com lab.example\n"
                "options ndots:2 timeout:1\n"
                "nameserver 192.0.2.53\n"
                "nameserver\t2001:db8::53   # the v6 one\n"
                "nameserver fe80::1%eth0\n"
                "nameserver bogus.example\n"
                "nameserver\n"
                "nameservers 192.0.2.99\n"
                "#nameserver 192.0.2.98\n"
                "   nameserver 192.0.2.54\n"
                "nameserver 192.0.2.55;x\r\n"
                "nameserver 192.0.2.1\n"
                "nameserver 192.0.2.2\n"
                "nameserver 192.0.2.3\n"
                "nameserver 192.0.2.4\n"
                "nameserver 192.0.2.5\n"
                "nameserver 192.0.2.6\n";
        const char *path = test_path("resolv.conf"), *empty = test_path("empty.conf");
        sd_event *e = event_new();
        char buf[1024];
        Resolver *r = NULL;

        test_write_file(path, conf, strlen(conf));
        ASSERT_OK(resolver_new(e, NULL, path, &r));
        servers_format(r, buf, sizeof(buf));
        /* Zone ids and junk skipped, the first RESOLVE_SERVERS_MAX kept, in order. */
        ASSERT_STREQ(buf, "192.0.2.53:53 [2001:db8::53]:53 192.0.2.54:53 192.0.2.55:53 192.0.2.1:53 "
                          "192.0.2.2:53 192.0.2.3:53 192.0.2.4:53");
        r = resolver_free(r);

        /* An empty list means resolv.conf too. */
        {
                char *no_servers[] = { NULL };

                ASSERT_OK(resolver_new(e, no_servers, path, &r));
                r = resolver_free(r);
        }

        test_write_file(empty, "# nothing\nsearch example.com\nnameserver fe80::1%2\n",
                        strlen("# nothing\nsearch example.com\nnameserver fe80::1%2\n"));
        ASSERT_ERROR(resolver_new(e, NULL, empty, &r), ENOENT);
        ASSERT_ERROR(resolver_new(e, NULL, test_path("missing.conf"), &r), ENOENT);
        ASSERT_NULL(r);
        sd_event_unref(e);
}

TEST(servers) {
        static const struct {
                const char *in, *expect;
        } good[] = {
                { "127.0.0.1", "127.0.0.1:53" },
                { "127.0.0.1:5353", "127.0.0.1:5353" },
                { "::1", "[::1]:53" },
                { "[::1]", "[::1]:53" },
                { "[::1]:5353", "[::1]:5353" },
                { "[0:0::1]:53", "[::1]:53" },
        };
        static const char *const bad[] = {
                "", "example.com", "example.com:53", "1.2.3.4:0", "1.2.3.4:65536", "[1.2.3.4]:53",
                "fe80::1%eth0", "[fe80::1%eth0]:53", " 1.2.3.4", "1.2.3.4:", "::1:53:x",
        };
        sd_event *e = event_new();
        char buf[256];
        Resolver *r = NULL;

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                char *servers[] = { (char *) good[i].in, NULL };

                CASE("%s", good[i].in);
                /* Given servers win over resolv.conf, which is not read. */
                ASSERT_OK(resolver_new(e, servers, "/nonexistent", &r));
                servers_format(r, buf, sizeof(buf));
                ASSERT_STREQ(buf, good[i].expect);
                r = resolver_free(r);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *servers[] = { (char *) "127.0.0.1", (char *) bad[i], NULL };

                CASE("'%s'", bad[i]);
                ASSERT_ERROR(resolver_new(e, servers, NULL, &r), EINVAL);
                ASSERT_NULL(r);
        }

        CASE("too many");
        {
                char *servers[RESOLVE_SERVERS_MAX + 2] = {};

                for (size_t i = 0; i < RESOLVE_SERVERS_MAX; i++)
                        servers[i] = (char *) "127.0.0.1";
                ASSERT_OK(resolver_new(e, servers, NULL, &r));
                r = resolver_free(r);
                servers[RESOLVE_SERVERS_MAX] = (char *) "127.0.0.1";
                ASSERT_ERROR(resolver_new(e, servers, NULL, &r), E2BIG);
                ASSERT_NULL(r);
        }

        CASE("timeouts");
        {
                char *servers[] = { (char *) "127.0.0.1", NULL };

                ASSERT_OK(resolver_new(e, servers, NULL, &r));
                ASSERT_ERROR(resolver_set_timeouts(r, 0, USEC_PER_SEC), EINVAL);
                ASSERT_ERROR(resolver_set_timeouts(r, USEC_PER_SEC, 0), EINVAL);
                ASSERT_ERROR(resolver_set_timeouts(r, USEC_INFINITY, USEC_PER_SEC), EINVAL);
                ASSERT_OK(resolver_set_timeouts(r, 1, 1));
                r = resolver_free(r);
        }
        sd_event_unref(e);
}

_Noreturn static void on_unexpected(ResolveQuery *q, int error, const struct sockaddr_storage *addresses,
                                    size_t n, void *userdata) {
        test_fail(__FILE__, __LINE__, "Callback of a cancelled query (error %d)", error);
}

TEST(cancel_query) {
        sd_event *e = event_new();
        ResolveQuery *q1 = NULL, *q2 = NULL;
        Fake f;
        Resolver *r;
        Result res;

        fake_init(&f, e);
        f.addresses[0] = v4_one;
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

        ASSERT_OK(resolver_resolve(r, "www.example", 80, on_unexpected, NULL, &q1));
        ASSERT_OK(resolver_resolve(r, "192.0.2.1", 80, on_unexpected, NULL, &q2));
        ASSERT_NOT_NULL(q1);
        ASSERT_NOT_NULL(q2);
        ASSERT_NULL(resolve_query_free(q1));
        ASSERT_NULL(resolve_query_free(q2));
        ASSERT_NULL(resolve_query_free(NULL));

        /* The server still answers the cancelled query, before answering the next one. */
        res = resolve_wait(e, r, "www.example", 80);
        ASSERT_EQ(res.error, 0);
        ASSERT_EQ(f.n_total, 4);

        resolver_free(r);
        fake_done(&f);
        sd_event_unref(e);
}

TEST(free_resolver_with_queries) {
        sd_event *e = event_new();
        ResolveQuery *held = NULL, *held_literal = NULL;
        Fake f;
        Resolver *r;

        fake_init(&f, e);
        f.addresses[0] = v4_one;
        r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

        ASSERT_OK(resolver_resolve(r, "www.example", 80, on_unexpected, NULL, &held));
        ASSERT_OK(resolver_resolve(r, "www.example", 80, on_unexpected, NULL, NULL));
        ASSERT_OK(resolver_resolve(r, "localhost", 80, on_unexpected, NULL, NULL));
        ASSERT_OK(resolver_resolve(r, "::1", 80, on_unexpected, NULL, &held_literal));
        ASSERT_NULL(resolver_free(r));
        ASSERT_NULL(resolver_free(NULL));

        /* The server answers into closed sockets; nothing is called. Held queries are freed after their
         * resolver (ASan checks that the floating ones were freed with it). */
        run_until(e, &f.n_total, 4);
        run_ready(e);
        resolve_query_free(held);
        resolve_query_free(held_literal);

        fake_done(&f);
        sd_event_unref(e);
}

typedef struct FreeInCallback {
        ResolveQuery *q;
        Resolver *r;
        unsigned calls;
} FreeInCallback;

static void on_result_free_query(ResolveQuery *q, int error, const struct sockaddr_storage *addresses,
                                 size_t n, void *userdata) {
        FreeInCallback *c = userdata;
        char buf[256];

        ASSERT_TRUE(q == c->q);
        resolve_query_free(q);
        /* The addresses stay valid for the call even so. */
        ASSERT_EQ(error, 0);
        format_addresses(addresses, n, buf, sizeof(buf));
        ASSERT_STREQ(buf, "192.0.2.1:80");
        c->calls++;
}

static void on_result_free_resolver(ResolveQuery *q, int error, const struct sockaddr_storage *addresses,
                                    size_t n, void *userdata) {
        FreeInCallback *c = userdata;

        ASSERT_EQ(error, 0);
        c->r = resolver_free(c->r);
        c->calls++;
}

TEST(free_from_callback) {
        sd_event *e = event_new();
        FreeInCallback c = {};
        Fake f;

        fake_init(&f, e);
        f.addresses[0] = v4_one;
        c.r = resolver_for(e, &f, 1, TIMEOUT_NEVER, TIMEOUT_NEVER);

        CASE("query, held");
        ASSERT_OK(resolver_resolve(c.r, "www.example", 80, on_result_free_query, &c, &c.q));
        run_until(e, &c.calls, 1);
        CASE("literal, held");
        ASSERT_OK(resolver_resolve(c.r, "192.0.2.1", 80, on_result_free_query, &c, &c.q));
        run_until(e, &c.calls, 2);

        CASE("the resolver, with another query in flight");
        c.calls = 0;
        ASSERT_OK(resolver_resolve(c.r, "www.example", 80, on_result_free_resolver, &c, NULL));
        ASSERT_OK(resolver_resolve(c.r, "www.example", 80, on_result_free_resolver, &c, NULL));
        run_until(e, &c.calls, 1);
        ASSERT_NULL(c.r);
        run_until(e, &f.n_total, 4 + 2);
        run_ready(e);
        ASSERT_EQ(c.calls, 1);

        fake_done(&f);
        sd_event_unref(e);
}

TEST(queries_max) {
        sd_event *e = event_new();
        char *servers[] = { (char *) "127.0.0.1", NULL };
        ResolveQuery *q = NULL;
        Resolver *r = NULL;
        Result res = {};

        ASSERT_OK(resolver_new(e, servers, NULL, &r));
        for (unsigned i = 0; i < RESOLVE_QUERIES_MAX; i++)
                ASSERT_OK(resolver_resolve(r, "192.0.2.1", 80, on_result, &res, NULL));
        ASSERT_ERROR(resolver_resolve(r, "192.0.2.1", 80, on_result, &res, &q), EBUSY);
        ASSERT_ERROR(resolver_resolve(r, "www.example", 80, on_result, &res, &q), EBUSY);
        ASSERT_NULL(q);
        run_until(e, &res.calls, RESOLVE_QUERIES_MAX);
        ASSERT_EQ(res.error, 0);

        /* Completed queries do not count, even those still held. */
        ASSERT_OK(resolver_resolve(r, "192.0.2.1", 80, on_result, &res, &q));
        run_until(e, &res.calls, RESOLVE_QUERIES_MAX + 1);
        for (unsigned i = 0; i < RESOLVE_QUERIES_MAX; i++)
                ASSERT_OK(resolver_resolve(r, "192.0.2.1", 80, on_result, &res, NULL));
        ASSERT_ERROR(resolver_resolve(r, "192.0.2.1", 80, on_result, &res, NULL), EBUSY);
        run_until(e, &res.calls, 2 * RESOLVE_QUERIES_MAX + 1);
        resolve_query_free(q);

        resolver_free(r);
        sd_event_unref(e);
}

/* ---- the parser on its own ---- */

static void response_a(Msg *m, uint16_t id, uint16_t flags) {
        msg_header(m, id, flags, 1, 2, 1, 1);
        msg_question(m, "www.example", DNS_TYPE_A);
        msg_address(m, NULL, "192.0.2.1");
        msg_address(m, NULL, "192.0.2.2");
        msg_rr(m, "example", 6 /* SOA, not looked into */, 2);
        msg_put(m, "\0\0", 2);
        msg_rr(m, "", 41 /* OPT */, 0);
}

TEST(parse_response) {
        struct sockaddr_storage out[4], sentinel;
        size_t n = 99;
        char buf[256];
        Msg m = {};

        memset(&sentinel, 0xa5, sizeof(sentinel));
        for (size_t i = 0; i < ELEMENTSOF(out); i++)
                out[i] = sentinel;

        CASE("valid");
        response_a(&m, 0x1234, FLAGS_RESPONSE);
        ASSERT_OK(dns_parse_response(m.b, m.n, 0x1234, "WWW.example.", DNS_TYPE_A, 8080, out, 4, &n));
        ASSERT_EQ(n, 2);
        format_addresses(out, n, buf, sizeof(buf));
        ASSERT_STREQ(buf, "192.0.2.1:8080 192.0.2.2:8080");
        ASSERT_MEMEQ(&out[2], &sentinel, sizeof(sentinel));

        CASE("max");
        ASSERT_OK(dns_parse_response(m.b, m.n, 0x1234, "www.example", DNS_TYPE_A, 1, out, 1, &n));
        ASSERT_EQ(n, 1);
        ASSERT_OK(dns_parse_response(m.b, m.n, 0x1234, "www.example", DNS_TYPE_A, 1, NULL, 0, &n));
        ASSERT_EQ(n, 0);

        CASE("the other type");
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 0x1234, "www.example", DNS_TYPE_AAAA, 1, out, 4, &n),
                     ENOMSG);
        CASE("the other id");
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 0x1235, "www.example", DNS_TYPE_A, 1, out, 4, &n), ENOMSG);
        CASE("the other name");
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 0x1234, "ww.example", DNS_TYPE_A, 1, out, 4, &n), ENOMSG);
        CASE("bad arguments");
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 0x1234, "www..example", DNS_TYPE_A, 1, out, 4, &n),
                     EINVAL);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 0x1234, "www.example", DNS_TYPE_CNAME, 1, out, 4, &n),
                     EINVAL);

        CASE("every prefix of a valid message is refused");
        for (size_t k = 0; k < m.n; k++) {
                int r = dns_parse_response(m.b, k, 0x1234, "www.example", DNS_TYPE_A, 1, out, 4, &n);

                ASSERT_TRUE(r == -EBADMSG);
        }

        CASE("truncated (TC): complete records are used");
        response_a(&m, 7, FLAGS_RESPONSE | FLAG_TC);
        m.n -= 11 + 21 + 3;     /* OPT, SOA, and into the second A record */
        ASSERT_OK(dns_parse_response(m.b, m.n, 7, "www.example", DNS_TYPE_A, 1, out, 4, &n));
        ASSERT_EQ(n, 1);
        m.b[2] &= (uint8_t) ~(FLAG_TC >> 8);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 7, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);

        CASE("response codes");
        static const struct {
                uint16_t rcode;
                int error;
        } rcodes[] = {
                { DNS_RCODE_FORMERR, EIO },  { DNS_RCODE_SERVFAIL, EIO }, { DNS_RCODE_NXDOMAIN, ENOENT },
                { 4 /* NOTIMP */, EIO },     { DNS_RCODE_REFUSED, EIO },  { 15, EIO },
        };
        for (size_t i = 0; i < ELEMENTSOF(rcodes); i++) {
                msg_header(&m, 1, (uint16_t) (FLAGS_RESPONSE | rcodes[i].rcode), 1, 0, 0, 0);
                msg_question(&m, "www.example", DNS_TYPE_A);
                ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n),
                             rcodes[i].error);
        }

        CASE("no question echoed");
        msg_header(&m, 1, FLAGS_RESPONSE | DNS_RCODE_SERVFAIL, 0, 0, 0, 0);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);
        CASE("two questions");
        msg_header(&m, 1, FLAGS_RESPONSE, 2, 0, 0, 0);
        msg_question(&m, "www.example", DNS_TYPE_A);
        msg_question(&m, "www.example", DNS_TYPE_AAAA);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);
        CASE("question class CH");
        msg_header(&m, 1, FLAGS_RESPONSE, 1, 0, 0, 0);
        msg_name(&m, "www.example");
        msg_u16(&m, DNS_TYPE_A);
        msg_u16(&m, 3);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), ENOMSG);

        CASE("forward pointer in the question");
        msg_header(&m, 1, FLAGS_RESPONSE, 1, 0, 0, 0);
        msg_pointer(&m, 18);
        msg_u16(&m, DNS_TYPE_A);
        msg_u16(&m, DNS_CLASS_IN);
        msg_name(&m, "www.example");
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);

        CASE("compressed CNAME target, pointing back into the question");
        msg_header(&m, 1, FLAGS_RESPONSE, 1, 2, 0, 0);
        msg_question(&m, "www.example", DNS_TYPE_A);
        msg_rr(&m, NULL, DNS_TYPE_CNAME, 6);
        msg_u8(&m, 3);
        msg_put(&m, "web", 3);
        msg_pointer(&m, 16);    /* "example" inside the question's name */
        msg_address(&m, "web.example", "192.0.2.3");
        ASSERT_OK(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n));
        ASSERT_EQ(n, 1);
        format_addresses(out, n, buf, sizeof(buf));
        ASSERT_STREQ(buf, "192.0.2.3:1");
        CASE("CNAME rdata longer than its name");
        m.b[12 + 13 + 4 + 2 + 8 + 1] = 7;
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);

        CASE("a name longer than 255 bytes through pointers");
        msg_header(&m, 1, FLAGS_RESPONSE, 1, 2, 0, 0);
        msg_question(&m, "www.example", DNS_TYPE_A);
        /* A record of an unknown type holds the names: each a 63-byte label then a pointer to the previous
         * one; the A record's owner points at the last. */
        msg_rr(&m, "", 99, 5 * 66);
        {
                size_t prev = 12;

                for (unsigned i = 0; i < 5; i++) {
                        size_t at = m.n;

                        msg_u8(&m, 63);
                        for (unsigned k = 0; k < 63; k++)
                                msg_u8(&m, 'a');
                        msg_pointer(&m, prev);
                        prev = at;
                }
                msg_pointer(&m, prev);
        }
        msg_u16(&m, DNS_TYPE_A);
        msg_u16(&m, DNS_CLASS_IN);
        msg_u32(&m, 1);
        msg_u16(&m, 4);
        msg_put(&m, "\1\2\3\4", 4);
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);

        CASE("nothing written on failure");
        for (size_t i = 0; i < ELEMENTSOF(out); i++)
                out[i] = sentinel;
        n = 99;
        ASSERT_ERROR(dns_parse_response(m.b, m.n, 1, "www.example", DNS_TYPE_A, 1, out, 4, &n), EBADMSG);
        ASSERT_EQ(n, 99);
        for (size_t i = 0; i < ELEMENTSOF(out); i++)
                ASSERT_MEMEQ(&out[i], &sentinel, sizeof(sentinel));
}
