/* SPDX-License-Identifier: Apache-2.0 */

/* The connector's data plane on loopback, with real TLS: tunnelers are played by HTTP/2 client sessions with
 * tunneler certificates of the test PKI, opening CONNECT pipes (connect_pipe_open) towards targets that are
 * plain sockets of this process; the decision is a table in the test. Everything runs in one sd-event loop
 * driven here. Covers relaying and the flow records, every refusal status, limits, rechecks, revocation,
 * the TLS role check, heartbeats, name resolution against a DNS responder of the test, and teardown. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-conf.h"
#include "connector-dataplane.h"
#include "crypto-key.h"
#include "crypto-x509.h"
#include "net-connect.h"
#include "net-fixture.h"
#include "net-grpc.h"
#include "net-h2.h"
#include "string-util.h"
#include "strv.h"
#include "tests.h"
#include "ztna.pb-c.h"

#define TD FIXTURE_TRUST_DOMAIN
#define TUN1 "spiffe://" TD "/tunneler/tun-1"
#define TUN2 "spiffe://" TD "/tunneler/tun-2"
#define TUN3 "spiffe://" TD "/tunneler/tun-3"
#define RESOURCE "lab-db"
#define FLOWS_MAX 64
#define DENIED_MAX 8
#define WAIT (10 * USEC_PER_SEC)

/* ---- what the data plane reports ------------------------------------------------------------------- */

typedef struct FlowRecord {
        bool end;
        char flow_id[64], tunneler[256], resource[64], target[300];
        bool has_resource;
        ConnectorFlowResult result;
        unsigned http_status;
        uint64_t bytes_up, bytes_down;
        usec_t start, duration;
        int error;
} FlowRecord;

typedef struct Test {
        sd_event *event;
        Pki pki;
        Identity server_id;
        AgentIdentity identity;
        ConnectorDataPlaneSettings settings;
        char resolv_conf[256];
        ConnectorDataPlane *dp;
        uint16_t port;

        /* The decision: granted unless the port is listed or deny_all. */
        uint16_t denied_ports[DENIED_MAX];
        size_t n_denied;
        bool deny_all;
        unsigned n_decide;
        char decide_tunneler[256], decide_host[256];
        uint16_t decide_port;

        FlowRecord flows[FLOWS_MAX];
        size_t n_flows;

        unsigned n_heartbeats;
        char hb_tunneler[256], hb_version[64];
} Test;

static int test_decide(const char *tunneler, const char *host, uint16_t port, const char **ret_resource,
                       void *userdata) {
        Test *t = userdata;

        t->n_decide++;
        snprintf(t->decide_tunneler, sizeof(t->decide_tunneler), "%s", tunneler);
        snprintf(t->decide_host, sizeof(t->decide_host), "%s", host);
        t->decide_port = port;
        *ret_resource = RESOURCE;
        if (t->deny_all)
                return 0;
        for (size_t i = 0; i < t->n_denied; i++)
                if (t->denied_ports[i] == port)
                        return 0;
        return 1;
}

static void test_on_flow(const ConnectorFlow *f, void *userdata) {
        Test *t = userdata;
        FlowRecord *r;

        ASSERT_LT(t->n_flows, (size_t) FLOWS_MAX);
        ASSERT_EQ(strlen(f->flow_id), 32u);
        ASSERT_EQ(strspn(f->flow_id, "0123456789abcdef"), 32u);
        ASSERT_NOT_NULL(connector_flow_result_to_string(f->result));
        r = &t->flows[t->n_flows++];
        *r = (FlowRecord) {
                .end = f->end,
                .has_resource = f->resource != NULL,
                .result = f->result,
                .http_status = f->http_status,
                .bytes_up = f->bytes_up,
                .bytes_down = f->bytes_down,
                .start = f->start,
                .duration = f->duration,
                .error = f->error,
        };
        snprintf(r->flow_id, sizeof(r->flow_id), "%s", f->flow_id);
        snprintf(r->tunneler, sizeof(r->tunneler), "%s", f->tunneler);
        snprintf(r->resource, sizeof(r->resource), "%s", strempty(f->resource));
        snprintf(r->target, sizeof(r->target), "%s", f->target);
}

static void test_on_heartbeat(const char *tunneler, const Ztna__V1__TunnelerHeartbeat *hb, void *userdata) {
        Test *t = userdata;

        t->n_heartbeats++;
        snprintf(t->hb_tunneler, sizeof(t->hb_tunneler), "%s", tunneler);
        snprintf(t->hb_version, sizeof(t->hb_version), "%s", strempty(hb->version));
}

static const ConnectorDataPlaneCallbacks test_callbacks = {
        .decide = test_decide,
        .on_flow = test_on_flow,
        .on_heartbeat = test_on_heartbeat,
};

/* ---- set-up ------------------------------------------------------------------------------------------ */

static void blob_from_x509(X509 *cert, DerBlob *ret) {
        ASSERT_OK(crypto_x509_to_der(cert, &ret->data, &ret->size));
}

/* The connector's identity as the daemon holds it, from an Identity of the test PKI. */
static void agent_identity_from(Pki *pki, const Identity *id, const char *name, AgentIdentity *ret) {
        usec_t not_after;

        *ret = (AgentIdentity) {
                .role = SPIFFE_ROLE_CONNECTOR,
                .id = strdup(name),
                .spiffe_id = strjoin("spiffe://" TD "/connector/", name, NULL),
                .trust_domain = strdup(TD),
                .remote_network = strdup("lab"),
        };
        ASSERT_NOT_NULL(ret->id);
        ASSERT_NOT_NULL(ret->spiffe_id);
        ASSERT_OK(crypto_key_to_pkcs8_der(id->key, &ret->key.data, &ret->key.size));
        blob_from_x509(id->cert, &ret->chain[0]);
        blob_from_x509(ca_get_certificate(pki->issuing), &ret->chain[1]);
        ret->n_chain = 2;
        blob_from_x509(ca_get_certificate(pki->root), &ret->bundle[0]);
        ret->n_bundle = 1;
        ASSERT_OK(crypto_x509_get_validity(id->cert, NULL, &not_after));
        ret->not_after = not_after;
}

/* A PKI, a connector identity, default settings (no nameserver: an empty resolv.conf). Call test_start()
 * after adjusting t->settings. */
static void test_init(Test *t) {
        *t = (Test) {};
        (void) signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&t->event));
        pki_init(&t->pki, TD);
        pki_issue(&t->pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, &t->server_id);
        agent_identity_from(&t->pki, &t->server_id, "conn-1", &t->identity);

        snprintf(t->resolv_conf, sizeof(t->resolv_conf), "%s", test_path("resolv.conf"));
        test_write_file(t->resolv_conf, "# nothing\n", 10);
        t->settings = (ConnectorDataPlaneSettings) {
                .listen = "127.0.0.1:0",
                .resolv_conf = t->resolv_conf,
                .max_streams = 64,
                .max_streams_per_tunneler = 16,
                .idle_timeout = USEC_INFINITY,
                .connect_timeout = 5 * USEC_PER_SEC,
        };
}

static void test_start(Test *t) {
        ASSERT_OK(connector_dataplane_new(t->event, &t->identity, &t->settings, &test_callbacks, t, &t->dp));
        t->port = (uint16_t) connector_dataplane_get_port(t->dp);
        ASSERT_GT(t->port, 0);
        ASSERT_TRUE(connector_dataplane_is_listening(t->dp));
}

static void test_done(Test *t) {
        t->dp = connector_dataplane_free(t->dp);
        /* Let the peers hear about the end before the loop goes. */
        for (int i = 0; i < 5; i++)
                ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
        agent_identity_done(&t->identity);
        identity_done(&t->server_id);
        pki_done(&t->pki);
        t->event = sd_event_unref(t->event);
}

static void run_for(Test *t, usec_t d) {
        usec_t end = now(CLOCK_MONOTONIC) + d;

        while (now(CLOCK_MONOTONIC) < end)
                ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
}

static AgentControlCounters counters(Test *t) {
        AgentControlCounters c;

        connector_dataplane_get_counters(t->dp, &c);
        return c;
}

static const FlowRecord *flow(Test *t, size_t i) {
        ASSERT_LT(i, t->n_flows);
        return &t->flows[i];
}

/* ---- tunnelers ----------------------------------------------------------------------------------------- */

typedef struct Client {
        Identity id;
        TlsContext *ctx;
        H2Session *h2;
        bool closed;
        int error;
} Client;

static void client_on_close(H2Session *s, int error, void *userdata) {
        Client *c = userdata;

        c->closed = true;
        c->error = error;
}

static const H2SessionCallbacks client_callbacks = { .on_close = client_on_close };

/* A TLS connection and an HTTP/2 session to the data plane. Returns false when TLS failed on our side. */
static bool client_open(Test *t, Client *c) {
        FixtureHandshake hs = {};

        c->h2 = h2_session_unref(c->h2);
        c->closed = false;
        c->error = 0;
        ASSERT_OK(tls_connection_new(c->ctx, t->event, fixture_connect(t->port), &fixture_handshake_callbacks,
                                     &hs, &hs.conn));
        ASSERT_TRUE(fixture_run_until(t->event, &hs.done, WAIT));
        if (hs.result < 0) {
                tls_connection_free(hs.conn);
                return false;
        }
        ASSERT_STREQ(hs.peer, "spiffe://" TD "/connector/conn-1");
        ASSERT_OK(h2_session_new(hs.conn, NULL, &client_callbacks, c, &c->h2));
        return true;
}

static void client_init(Test *t, Client *c, SpiffeRole role, const char *name) {
        *c = (Client) {};
        pki_issue(&t->pki, role, name, 0, USEC_PER_HOUR, &c->id);
        c->ctx = fixture_client_context(&t->pki, &c->id, SPIFFE_ROLE_CONNECTOR);
}

static void client_done(Client *c) {
        if (c->h2)
                h2_session_terminate(c->h2, H2_NO_ERROR);
        c->h2 = h2_session_unref(c->h2);
        c->ctx = tls_context_unref(c->ctx);
        identity_done(&c->id);
}

/* One CONNECT as the tunneler sees it. */
typedef struct Side {
        ConnectPipe *pipe;
        unsigned n_responses, status;
        bool closed;
        int error;
        ConnectStats stats;
} Side;

static void side_on_response(ConnectPipe *p, unsigned status, void *userdata) {
        Side *s = userdata;

        s->n_responses++;
        s->status = status;
}

static void side_on_close(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata) {
        Side *s = userdata;

        ASSERT_FALSE(s->closed);
        s->closed = true;
        s->error = error;
        s->stats = *stats;
        s->pipe = NULL;
}

static const ConnectPipeCallbacks side_callbacks = {
        .on_response = side_on_response,
        .on_close = side_on_close,
};

static bool side_answered(void *userdata) {
        Side *s = userdata;
        return s->n_responses > 0 || s->closed;
}

static bool side_closed(void *userdata) {
        return ((Side *) userdata)->closed;
}

/* Sends CONNECT authority on c's session; *ret_app is the local application's end (TCP, so that a reset
 * shows). Waits for the answer unless wait is false. */
static void stream_open(Test *t, Client *c, const char *authority, Side *s, int *ret_app, bool wait) {
        int fds[2];

        *s = (Side) {};
        fixture_tcp_pair(fds);
        ASSERT_OK(connect_pipe_open(c->h2, authority, fds[1], &side_callbacks, s, &s->pipe));
        *ret_app = fds[0];
        if (wait)
                ASSERT_TRUE(fixture_run_until_func(t->event, side_answered, s, WAIT));
}

static char *authority_of(uint16_t port) {
        static char buf[8][64];
        static unsigned i;
        char *p = buf[i++ % 8];

        snprintf(p, sizeof(buf[0]), "127.0.0.1:%u", port);
        return p;
}

/* ---- the applications at both ends ---------------------------------------------------------------- */

static void app_write_all(Test *t, int fd, const void *data, size_t size) {
        const uint8_t *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0) {
                        ASSERT_TRUE(errno == EAGAIN);
                        ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
                        continue;
                }
                p += n;
                size -= (size_t) n;
        }
}

static void app_read_exact(Test *t, int fd, void *buf, size_t size) {
        usec_t deadline = now(CLOCK_MONOTONIC) + WAIT;
        size_t got = 0;

        while (got < size) {
                ssize_t n = read(fd, (uint8_t *) buf + got, size - got);

                if (n < 0) {
                        ASSERT_TRUE(errno == EAGAIN);
                        ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                        ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
                        continue;
                }
                ASSERT_GT(n, 0);
                got += (size_t) n;
        }
}

/* Reads until EOF or an error: 0 at EOF, else -errno. */
static int app_read_end(Test *t, int fd) {
        usec_t deadline = now(CLOCK_MONOTONIC) + WAIT;
        uint8_t buf[256];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));

                if (n == 0)
                        return 0;
                if (n < 0 && errno != EAGAIN)
                        return -errno;
                ASSERT_TRUE(n < 0); /* no data expected */
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
        }
}

/* "ping" from the tunneler's application to the target, "pong!" back. */
static void ping(Test *t, int app, int target) {
        uint8_t buf[8];

        app_write_all(t, app, "ping", 4);
        app_read_exact(t, target, buf, 4);
        ASSERT_MEMEQ(buf, "ping", 4);
        app_write_all(t, target, "pong!", 5);
        app_read_exact(t, app, buf, 5);
        ASSERT_MEMEQ(buf, "pong!", 5);
}

/* A port on 127.0.0.1 where nothing listens: bound, so nobody else takes it, but not listening (RST). */
static int closed_port(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT_TRUE(getsockname(fd, (struct sockaddr *) &sa, &l) == 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

/* A target that never completes a handshake: a listener with backlog 0 whose accept queue one connection
 * already fills, so the kernel drops further SYNs and connect() stays in progress. ret_fds[1] is the
 * filler. */
static void silent_port(uint16_t *ret_port, int ret_fds[static 2]) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        int fd, filler;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT_TRUE(listen(fd, 0) == 0);
        ASSERT_TRUE(getsockname(fd, (struct sockaddr *) &sa, &l) == 0);
        filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(filler >= 0);
        ASSERT_TRUE(connect(filler, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        *ret_port = ntohs(sa.sin_port);
        ret_fds[0] = fd;
        ret_fds[1] = filler;
}

/* ---- tests -------------------------------------------------------------------------------------- */

TEST(flow_result_names) {
        static const char *const names[] = { "granted", "denied", "unreachable", "timeout", "limited" };

        for (ConnectorFlowResult r = 0; r < _CONNECTOR_FLOW_RESULT_MAX; r++)
                ASSERT_STREQ(connector_flow_result_to_string(r), names[r]);
        ASSERT_NULL(connector_flow_result_to_string(_CONNECTOR_FLOW_RESULT_MAX));
        ASSERT_NULL(connector_flow_result_to_string(_CONNECTOR_FLOW_RESULT_INVALID));
}

TEST(invalid_settings) {
        static char *too_many[] = {
                (char *) "127.0.0.1", (char *) "127.0.0.2", (char *) "127.0.0.3", (char *) "127.0.0.4",
                (char *) "127.0.0.5", (char *) "127.0.0.6", (char *) "127.0.0.7", (char *) "127.0.0.8",
                (char *) "127.0.0.9", NULL,
        };
        static char *bad_resolver[] = { (char *) "not an address", NULL };
        static Test t;
        ConnectorDataPlane *d = NULL;
        ConnectorDataPlaneSettings s;
        char taken[64];

        test_init(&t);
        static const char *const bad_listen[] = { "", "nonsense", "db.lab:8447", "127.0.0.1", "::1:0",
                                                   "127.0.0.1:65536", "[::1]" };
        for (size_t i = 0; i < ELEMENTSOF(bad_listen); i++) {
                CASE("listen '%s'", bad_listen[i]);
                s = t.settings;
                s.listen = bad_listen[i];
                ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d),
                             EINVAL);
        }
        CASE("no listen");
        s = t.settings;
        s.listen = NULL;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);

        CASE("limits");
        s = t.settings;
        s.max_streams = 0;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);
        s.max_streams = AGENT_STREAMS_MAX + 1;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);
        s = t.settings;
        s.max_streams_per_tunneler = 0;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);
        s.max_streams_per_tunneler = s.max_streams + 1;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);

        CASE("connect timeout");
        s = t.settings;
        s.connect_timeout = 0;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);
        s.connect_timeout = AGENT_CONNECT_TIMEOUT_MAX + 1;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);

        CASE("resolvers");
        s = t.settings;
        s.resolvers = too_many;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);
        s.resolvers = bad_resolver;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EINVAL);

        CASE("no decision");
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &t.settings,
                                             &(ConnectorDataPlaneCallbacks) { .on_flow = test_on_flow }, &t,
                                             &d),
                     EINVAL);

        CASE("unusable identity");
        {
                AgentIdentity broken = t.identity;

                broken.n_bundle = 0;
                ASSERT_ERROR(connector_dataplane_new(t.event, &broken, &t.settings, &test_callbacks, &t, &d),
                             EINVAL);
        }

        CASE("address in use");
        test_start(&t);
        snprintf(taken, sizeof(taken), "127.0.0.1:%u", t.port);
        s = t.settings;
        s.listen = taken;
        ASSERT_ERROR(connector_dataplane_new(t.event, &t.identity, &s, &test_callbacks, &t, &d), EADDRINUSE);
        ASSERT_NULL(d);

        /* No nameserver is not an error: only literals are reachable then. */
        ASSERT_FALSE(connector_dataplane_can_resolve(t.dp));
        test_done(&t);
}

/* The whole life of a granted stream: decision with the certificate's identity, 200, bytes both ways, the
 * counters while it runs, a clean close on both sides and the flow records. */
TEST(relay_and_flows) {
        static Test t;
        static Client c;
        AgentControlCounters n;
        uint16_t tport;
        int lfd, app, target;
        Side s;
        usec_t before = now(CLOCK_REALTIME);

        test_init(&t);
        test_start(&t);
        n = counters(&t);
        ASSERT_UEQ(n.peers, 0);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));

        lfd = fixture_listen(&tport);
        stream_open(&t, &c, authority_of(tport), &s, &app, true);
        ASSERT_EQ(s.status, 200);
        ASSERT_FALSE(s.closed);
        target = fixture_accept(lfd);

        /* Decided for the SPIFFE ID of the certificate, on the parsed host and port. */
        ASSERT_EQ(t.n_decide, 1u);
        ASSERT_STREQ(t.decide_tunneler, TUN1);
        ASSERT_STREQ(t.decide_host, "127.0.0.1");
        ASSERT_EQ(t.decide_port, tport);

        ASSERT_EQ(t.n_flows, 1u);
        ASSERT_FALSE(flow(&t, 0)->end);
        ASSERT_EQ(flow(&t, 0)->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_EQ(flow(&t, 0)->http_status, 0u);
        ASSERT_STREQ(flow(&t, 0)->tunneler, TUN1);
        ASSERT_STREQ(flow(&t, 0)->resource, RESOURCE);
        ASSERT_STREQ(flow(&t, 0)->target, authority_of(tport));
        ASSERT_GE(flow(&t, 0)->start, before);
        ASSERT_LE(flow(&t, 0)->start, now(CLOCK_REALTIME));

        ping(&t, app, target);
        n = counters(&t);
        ASSERT_UEQ(n.streams_active, 1);
        ASSERT_UEQ(n.streams_total, 1);
        ASSERT_UEQ(n.bytes_in, 4);
        ASSERT_UEQ(n.bytes_out, 5);
        ASSERT_UEQ(n.denials, 0);
        ASSERT_UEQ(n.peers, 1);

        /* Both applications close: the stream ends cleanly both ways. */
        ASSERT_TRUE(shutdown(app, SHUT_WR) == 0);
        ASSERT_EQ(app_read_end(&t, target), 0);
        close(target);
        ASSERT_EQ(app_read_end(&t, app), 0);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        ASSERT_EQ(s.error, 0);
        run_for(&t, 50 * USEC_PER_MSEC);

        ASSERT_EQ(t.n_flows, 2u);
        const FlowRecord *end = flow(&t, 1);
        ASSERT_TRUE(end->end);
        ASSERT_STREQ(end->flow_id, flow(&t, 0)->flow_id);
        ASSERT_EQ(end->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_EQ(end->http_status, 200u);
        ASSERT_EQ(end->error, 0);
        ASSERT_UEQ(end->bytes_up, 4);
        ASSERT_UEQ(end->bytes_down, 5);
        ASSERT_STREQ(end->resource, RESOURCE);
        ASSERT_EQ(end->start, flow(&t, 0)->start);
        ASSERT_GT(end->duration, 0);

        n = counters(&t);
        ASSERT_UEQ(n.streams_active, 0);
        ASSERT_UEQ(n.streams_total, 1);
        ASSERT_UEQ(n.bytes_in, 4);
        ASSERT_UEQ(n.bytes_out, 5);
        ASSERT_UEQ(n.peers, 1);

        /* A second stream on the same session gets a new flow id. */
        stream_open(&t, &c, authority_of(tport), &s, &app, true);
        ASSERT_EQ(s.status, 200);
        target = fixture_accept(lfd);
        ASSERT_EQ(t.n_flows, 3u);
        ASSERT_FALSE(streq(flow(&t, 2)->flow_id, flow(&t, 0)->flow_id));
        close(app);
        close(target);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));

        /* The tunneler leaves: no peer left. */
        h2_session_terminate(c.h2, H2_NO_ERROR);
        run_for(&t, 100 * USEC_PER_MSEC);
        ASSERT_UEQ(counters(&t).peers, 0);
        ASSERT_UEQ(counters(&t).streams_total, 2);

        close(lfd);
        client_done(&c);
        test_done(&t);
}

TEST(ipv6_literal) {
        static Test t;
        static Client c;
        struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
        socklen_t l = sizeof(sa);
        char authority[64];
        int lfd, app, target;
        Side s;

        lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                test_skip("no IPv6 loopback");
        ASSERT_TRUE(listen(lfd, 4) == 0);
        ASSERT_TRUE(getsockname(lfd, (struct sockaddr *) &sa, &l) == 0);
        snprintf(authority, sizeof(authority), "[::1]:%u", ntohs(sa.sin6_port));

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        stream_open(&t, &c, authority, &s, &app, true);
        ASSERT_EQ(s.status, 200);
        ASSERT_STREQ(t.decide_host, "::1");
        target = fixture_accept(lfd);
        ping(&t, app, target);
        ASSERT_STREQ(flow(&t, 0)->target, authority);
        close(app);
        close(target);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        close(lfd);
        client_done(&c);
        test_done(&t);
}

/* A DNS server of our own on 127.0.0.1: "db.internal" has A 127.0.0.1 and no AAAA, anything else is
 * NXDOMAIN. */
typedef struct Dns {
        int fd;
        uint16_t port;
        sd_event_source *source;
        unsigned n_queries;
} Dns;

static int dns_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Dns *dns = userdata;
        uint8_t q[512], a[600];
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        char name[256] = "";
        size_t p = 12, nl = 0, len;
        uint16_t qtype;
        ssize_t n;

        n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *) &from, &fl);
        if (n < 12)
                return 0;
        dns->n_queries++;
        while (p < (size_t) n && q[p] != 0) {
                size_t k = q[p];

                ASSERT_LT(p + 1 + k, (size_t) n);
                ASSERT_LT(nl + k + 1, sizeof(name));
                if (nl > 0)
                        name[nl++] = '.';
                memcpy(name + nl, q + p + 1, k);
                nl += k;
                name[nl] = '\0';
                p += 1 + k;
        }
        p++;
        ASSERT_LE(p + 4, (size_t) n);
        qtype = (uint16_t) (q[p] << 8 | q[p + 1]);
        len = p + 4;
        memcpy(a, q, len);
        a[2] = 0x81;                                    /* QR, RD */
        a[3] = 0x80;                                    /* RA, NOERROR */
        memset(a + 6, 0, 6);                            /* no answer, authority, additional yet */
        if (strcasecmp(name, "db.internal") != 0)
                a[3] |= 3;                              /* NXDOMAIN */
        else if (qtype == 1) {
                static const uint8_t rr[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1 };

                memcpy(a + len, rr, sizeof(rr));
                len += sizeof(rr);
                a[7] = 1;
        }
        ASSERT_EQ(sendto(fd, a, len, 0, (struct sockaddr *) &from, fl), (ssize_t) len);
        return 0;
}

static void dns_start(Test *t, Dns *dns) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);

        *dns = (Dns) {};
        dns->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(dns->fd >= 0);
        ASSERT_TRUE(bind(dns->fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT_TRUE(getsockname(dns->fd, (struct sockaddr *) &sa, &l) == 0);
        dns->port = ntohs(sa.sin_port);
        ASSERT_OK(sd_event_add_io(t->event, &dns->source, dns->fd, EPOLLIN, dns_on_io, dns));
}

static void dns_stop(Dns *dns) {
        dns->source = sd_event_source_disable_unref(dns->source);
        dns->fd = safe_close(dns->fd);
}

/* Names are resolved by the connector with its configured resolvers; the decision sees the name. */
TEST(names_resolved) {
        static Test t;
        static Client c;
        char server[64], authority[128], *resolvers[2] = {};
        uint16_t tport;
        int lfd, app, target;
        Dns dns;
        Side s;

        test_init(&t);
        dns_start(&t, &dns);
        snprintf(server, sizeof(server), "127.0.0.1:%u", dns.port);
        resolvers[0] = server;
        t.settings.resolvers = resolvers;
        test_start(&t);
        ASSERT_TRUE(connector_dataplane_can_resolve(t.dp));
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));

        lfd = fixture_listen(&tport);
        snprintf(authority, sizeof(authority), "DB.internal:%u", tport);
        stream_open(&t, &c, authority, &s, &app, true);
        ASSERT_EQ(s.status, 200);
        ASSERT_STREQ(t.decide_host, "db.internal");
        ASSERT_GT(dns.n_queries, 0u);
        target = fixture_accept(lfd);
        ping(&t, app, target);
        ASSERT_STREQ(flow(&t, 0)->target, authority); /* as requested */
        close(app);
        close(target);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));

        /* A name that does not exist: 502, and the flow says why. */
        stream_open(&t, &c, "nx.internal:5432", &s, &app, true);
        ASSERT_EQ(s.status, 502);
        ASSERT_EQ(s.error, -ECONNREFUSED);
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 4u);
        ASSERT_FALSE(flow(&t, 2)->end);
        ASSERT_EQ(flow(&t, 2)->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_TRUE(flow(&t, 3)->end);
        ASSERT_EQ(flow(&t, 3)->result, CONNECTOR_FLOW_UNREACHABLE);
        ASSERT_EQ(flow(&t, 3)->http_status, 502u);
        ASSERT_EQ(flow(&t, 3)->error, -ENOENT);
        ASSERT_UEQ(counters(&t).streams_active, 0);
        close(app);

        close(lfd);
        client_done(&c);
        test_done(&t);
        dns_stop(&dns);
}

/* Without a nameserver names cannot be reached (502), literals still can. */
TEST(no_nameserver) {
        static Test t;
        static Client c;
        int app;
        Side s;

        test_init(&t);
        test_start(&t);
        ASSERT_FALSE(connector_dataplane_can_resolve(t.dp));
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        stream_open(&t, &c, "db.internal:5432", &s, &app, true);
        ASSERT_EQ(s.status, 502);
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_UNREACHABLE);
        ASSERT_EQ(flow(&t, 1)->error, -ENOENT);
        close(app);
        client_done(&c);
        test_done(&t);
}

TEST(denied) {
        static Test t;
        static Client c;
        AgentControlCounters n;
        uint16_t tport;
        int lfd, app;
        Side s;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        lfd = fixture_listen(&tport);
        t.deny_all = true;

        stream_open(&t, &c, authority_of(tport), &s, &app, true);
        ASSERT_EQ(s.status, 403);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        ASSERT_EQ(s.error, -EACCES);
        ASSERT_EQ(app_read_end(&t, app), 0);
        close(app);

        ASSERT_EQ(t.n_decide, 1u);
        ASSERT_STREQ(t.decide_tunneler, TUN1);
        /* One record, the start: a denial is over at once. */
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 1u);
        ASSERT_FALSE(flow(&t, 0)->end);
        ASSERT_EQ(flow(&t, 0)->result, CONNECTOR_FLOW_DENIED);
        ASSERT_EQ(flow(&t, 0)->http_status, 403u);
        ASSERT_STREQ(flow(&t, 0)->resource, RESOURCE);
        ASSERT_STREQ(flow(&t, 0)->tunneler, TUN1);
        ASSERT_STREQ(flow(&t, 0)->target, authority_of(tport));

        /* Nothing was dialed. */
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };
        ASSERT_EQ(poll(&pfd, 1, 0), 0);

        n = counters(&t);
        ASSERT_UEQ(n.denials, 1);
        ASSERT_UEQ(n.streams_total, 0);
        ASSERT_UEQ(n.streams_active, 0);
        /* The session survives a denial. */
        ASSERT_TRUE(h2_session_is_open(c.h2));

        close(lfd);
        client_done(&c);
        test_done(&t);
}

TEST(refused_502) {
        static Test t;
        static Client c;
        uint16_t tport;
        int bound, app;
        Side s;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        bound = closed_port(&tport);

        stream_open(&t, &c, authority_of(tport), &s, &app, true);
        ASSERT_EQ(s.status, 502);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        ASSERT_EQ(s.error, -ECONNREFUSED);
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_EQ(flow(&t, 0)->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_TRUE(flow(&t, 1)->end);
        ASSERT_STREQ(flow(&t, 1)->flow_id, flow(&t, 0)->flow_id);
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_UNREACHABLE);
        ASSERT_EQ(flow(&t, 1)->http_status, 502u);
        ASSERT_EQ(flow(&t, 1)->error, -ECONNREFUSED);
        ASSERT_UEQ(flow(&t, 1)->bytes_up + flow(&t, 1)->bytes_down, 0);
        ASSERT_UEQ(counters(&t).streams_active, 0);
        ASSERT_UEQ(counters(&t).denials, 0);

        close(app);
        close(bound);
        client_done(&c);
        test_done(&t);
}

TEST(timeout_504) {
        static Test t;
        static Client c;
        uint16_t tport;
        int silent[2], app;
        usec_t t0;
        Side s;

        test_init(&t);
        t.settings.connect_timeout = 300 * USEC_PER_MSEC;
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        silent_port(&tport, silent);

        t0 = now(CLOCK_MONOTONIC);
        stream_open(&t, &c, authority_of(tport), &s, &app, false);
        run_for(&t, 100 * USEC_PER_MSEC);
        ASSERT_FALSE(side_answered(&s));
        ASSERT_UEQ(counters(&t).streams_active, 1); /* connecting holds a slot */
        ASSERT_TRUE(fixture_run_until_func(t.event, side_answered, &s, WAIT));
        ASSERT_EQ(s.status, 504);
        ASSERT_GE(now(CLOCK_MONOTONIC) - t0, 300 * USEC_PER_MSEC);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        ASSERT_EQ(s.error, -ETIMEDOUT);
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_TIMEOUT);
        ASSERT_EQ(flow(&t, 1)->http_status, 504u);
        ASSERT_EQ(flow(&t, 1)->error, -ETIMEDOUT);
        ASSERT_GE(flow(&t, 1)->duration, 300 * USEC_PER_MSEC);
        ASSERT_UEQ(counters(&t).streams_active, 0);

        close(app);
        close(silent[0]);
        close(silent[1]);
        client_done(&c);
        test_done(&t);
}

/* The tunneler gives up while the target is being dialed: the slot is freed and the flow ends. */
TEST(tunneler_gives_up_while_connecting) {
        static Test t;
        static Client c;
        uint16_t tport;
        int silent[2], app;
        Side s;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        silent_port(&tport, silent);

        stream_open(&t, &c, authority_of(tport), &s, &app, false);
        run_for(&t, 100 * USEC_PER_MSEC);
        ASSERT_UEQ(counters(&t).streams_active, 1);
        ASSERT_EQ(t.n_flows, 1u);
        connect_pipe_abort(s.pipe);
        ASSERT_TRUE(s.closed);
        run_for(&t, 100 * USEC_PER_MSEC);
        ASSERT_UEQ(counters(&t).streams_active, 0);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_TRUE(flow(&t, 1)->end);
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_EQ(flow(&t, 1)->http_status, 0u);
        ASSERT_EQ(flow(&t, 1)->error, -ECONNRESET);
        ASSERT_TRUE(h2_session_is_open(c.h2));

        close(app);
        close(silent[0]);
        close(silent[1]);
        client_done(&c);
        test_done(&t);
}

/* MaxStreamsPerTunneler= and MaxStreams=: 429 beyond, and a slot comes back when a stream ends. */
TEST(limits_429) {
        static Test t;
        static Client c1, c2, c3;
        uint16_t tport;
        int lfd, app[4], target[2];
        Side s[4];

        test_init(&t);
        t.settings.max_streams = 2;
        t.settings.max_streams_per_tunneler = 1;
        test_start(&t);
        client_init(&t, &c1, SPIFFE_ROLE_TUNNELER, "tun-1");
        client_init(&t, &c2, SPIFFE_ROLE_TUNNELER, "tun-2");
        client_init(&t, &c3, SPIFFE_ROLE_TUNNELER, "tun-3");
        ASSERT_TRUE(client_open(&t, &c1));
        ASSERT_TRUE(client_open(&t, &c2));
        ASSERT_TRUE(client_open(&t, &c3));
        lfd = fixture_listen(&tport);

        stream_open(&t, &c1, authority_of(tport), &s[0], &app[0], true);
        ASSERT_EQ(s[0].status, 200);
        target[0] = fixture_accept(lfd);

        CASE("per tunneler");
        stream_open(&t, &c1, authority_of(tport), &s[1], &app[1], true);
        ASSERT_EQ(s[1].status, 429);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s[1], WAIT));
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_LIMITED);
        ASSERT_EQ(flow(&t, 1)->http_status, 429u);
        ASSERT_FALSE(flow(&t, 1)->end);
        ASSERT_STREQ(flow(&t, 1)->tunneler, TUN1);
        ASSERT_STREQ(flow(&t, 1)->resource, RESOURCE);
        close(app[1]);

        CASE("another tunneler fits");
        stream_open(&t, &c2, authority_of(tport), &s[2], &app[2], true);
        ASSERT_EQ(s[2].status, 200);
        target[1] = fixture_accept(lfd);

        CASE("all tunnelers");
        stream_open(&t, &c3, authority_of(tport), &s[3], &app[3], true);
        ASSERT_EQ(s[3].status, 429);
        ASSERT_STREQ(flow(&t, 3)->tunneler, TUN3);
        ASSERT_EQ(flow(&t, 3)->result, CONNECTOR_FLOW_LIMITED);
        close(app[3]);
        ASSERT_UEQ(counters(&t).streams_active, 2);
        ASSERT_UEQ(counters(&t).streams_total, 2);

        CASE("a slot comes back");
        close(app[0]);
        close(target[0]);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s[0], WAIT));
        run_for(&t, 50 * USEC_PER_MSEC);
        ASSERT_UEQ(counters(&t).streams_active, 1);
        stream_open(&t, &c1, authority_of(tport), &s[0], &app[0], true);
        ASSERT_EQ(s[0].status, 200);
        target[0] = fixture_accept(lfd);
        ping(&t, app[0], target[0]);

        for (size_t i = 0; i < 2; i++) {
                close(app[i == 0 ? 0 : 2]);
                close(target[i]);
        }
        close(lfd);
        client_done(&c1);
        client_done(&c2);
        client_done(&c3);
        test_done(&t);
}

/* A policy change cuts exactly the streams it no longer allows, relaying or still connecting. */
TEST(recheck_resets_streams) {
        static Test t;
        static Client c;
        uint16_t allowed_port, cut_port, pending_port;
        int allowed_lfd, cut_lfd, silent[2], app[3], target[2];
        uint8_t buf[8];
        Side s[3];

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        allowed_lfd = fixture_listen(&allowed_port);
        cut_lfd = fixture_listen(&cut_port);
        silent_port(&pending_port, silent);

        stream_open(&t, &c, authority_of(allowed_port), &s[0], &app[0], true);
        target[0] = fixture_accept(allowed_lfd);
        stream_open(&t, &c, authority_of(cut_port), &s[1], &app[1], true);
        target[1] = fixture_accept(cut_lfd);
        stream_open(&t, &c, authority_of(pending_port), &s[2], &app[2], false);
        ping(&t, app[0], target[0]);
        ping(&t, app[1], target[1]);
        ASSERT_FALSE(side_answered(&s[2]));

        /* Nothing changed: nothing is cut. */
        ASSERT_EQ(connector_dataplane_recheck(t.dp), 0u);
        ASSERT_UEQ(counters(&t).streams_active, 3);

        t.denied_ports[t.n_denied++] = cut_port;
        t.denied_ports[t.n_denied++] = pending_port;
        size_t flows_before = t.n_flows;
        ASSERT_EQ(connector_dataplane_recheck(t.dp), 2u);
        ASSERT_UEQ(counters(&t).streams_active, 1);

        /* Both ends of the cut stream see a reset, at once. */
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s[1], WAIT));
        ASSERT_EQ(s[1].error, -ECONNRESET);
        ASSERT_EQ(app_read_end(&t, app[1]), -ECONNRESET);
        ASSERT_EQ(app_read_end(&t, target[1]), -ECONNRESET);
        /* The one still connecting is refused. */
        ASSERT_TRUE(fixture_run_until_func(t.event, side_answered, &s[2], WAIT));
        ASSERT_EQ(s[2].status, 403);

        ASSERT_EQ(t.n_flows, flows_before + 2);
        for (size_t i = flows_before; i < t.n_flows; i++) {
                const FlowRecord *f = flow(&t, i);

                CASE("flow %zu", i);
                ASSERT_TRUE(f->end);
                ASSERT_EQ(f->result, CONNECTOR_FLOW_DENIED);
                ASSERT_EQ(f->error, -EACCES);
                if (streq(f->target, authority_of(cut_port))) {
                        ASSERT_EQ(f->http_status, 200u);
                        ASSERT_UEQ(f->bytes_up, 4);
                        ASSERT_UEQ(f->bytes_down, 5);
                } else {
                        ASSERT_STREQ(f->target, authority_of(pending_port));
                        ASSERT_EQ(f->http_status, 403u);
                }
        }
        CASE("survivor");

        /* The allowed stream and the session go on. */
        ASSERT_FALSE(s[0].closed);
        ping(&t, app[0], target[0]);
        ASSERT_TRUE(h2_session_is_open(c.h2));
        ASSERT_EQ(read(app[0], buf, sizeof(buf)), -1);
        ASSERT_EQ(errno, EAGAIN);

        for (size_t i = 0; i < 3; i++)
                close(app[i]);
        close(target[0]);
        close(target[1]);
        close(allowed_lfd);
        close(cut_lfd);
        close(silent[0]);
        close(silent[1]);
        client_done(&c);
        test_done(&t);
}

/* Revocation: the tunneler's streams are reset and its sessions closed; another tunneler is untouched; the
 * revoked one is refused until the policy has spoken (the next recheck). */
TEST(close_peer) {
        static Test t;
        static Client c1, c2;
        uint16_t tport;
        int lfd, app[3], target[3];
        Side s[3];

        test_init(&t);
        test_start(&t);
        client_init(&t, &c1, SPIFFE_ROLE_TUNNELER, "tun-1");
        client_init(&t, &c2, SPIFFE_ROLE_TUNNELER, "tun-2");
        ASSERT_TRUE(client_open(&t, &c1));
        ASSERT_TRUE(client_open(&t, &c2));
        lfd = fixture_listen(&tport);

        stream_open(&t, &c1, authority_of(tport), &s[0], &app[0], true);
        target[0] = fixture_accept(lfd);
        stream_open(&t, &c2, authority_of(tport), &s[1], &app[1], true);
        target[1] = fixture_accept(lfd);
        ping(&t, app[0], target[0]);
        ping(&t, app[1], target[1]);
        ASSERT_UEQ(counters(&t).peers, 2);

        ASSERT_EQ(connector_dataplane_close_peer(t.dp, "spiffe://" TD "/tunneler/nobody"), 0u);
        ASSERT_EQ(connector_dataplane_close_peer(t.dp, NULL), 0u);
        ASSERT_EQ(connector_dataplane_close_peer(t.dp, TUN1), 1u);
        ASSERT_UEQ(counters(&t).peers, 1);
        ASSERT_UEQ(counters(&t).streams_active, 1);
        ASSERT_TRUE(fixture_run_until(t.event, &c1.closed, WAIT));
        ASSERT_TRUE(s[0].closed);
        ASSERT_EQ(s[0].error, -ECONNRESET);
        ASSERT_EQ(app_read_end(&t, app[0]), -ECONNRESET);
        ASSERT_EQ(app_read_end(&t, target[0]), -ECONNRESET);
        ASSERT_EQ(flow(&t, 2)->result, CONNECTOR_FLOW_DENIED);
        ASSERT_EQ(flow(&t, 2)->error, -EKEYREVOKED);
        ASSERT_STREQ(flow(&t, 2)->tunneler, TUN1);

        ASSERT_FALSE(c2.closed);
        ping(&t, app[1], target[1]);

        /* Its certificate is still valid, but it gets no session until the policy has spoken. */
        unsigned decided = t.n_decide;
        if (client_open(&t, &c1)) {
                stream_open(&t, &c1, authority_of(tport), &s[2], &app[2], true);
                ASSERT_TRUE(s[2].closed);
                ASSERT_EQ(s[2].n_responses, 0u);
                ASSERT_TRUE(fixture_run_until(t.event, &c1.closed, WAIT));
                close(app[2]);
        }
        ASSERT_EQ(t.n_decide, decided);
        ASSERT_UEQ(counters(&t).peers, 1);

        ASSERT_EQ(connector_dataplane_recheck(t.dp), 0u);
        ASSERT_TRUE(client_open(&t, &c1));
        stream_open(&t, &c1, authority_of(tport), &s[2], &app[2], true);
        ASSERT_EQ(s[2].status, 200);
        target[2] = fixture_accept(lfd);
        ping(&t, app[2], target[2]);
        ASSERT_UEQ(counters(&t).peers, 2);

        for (size_t i = 0; i < 3; i++) {
                close(app[i]);
                close(target[i]);
        }
        close(lfd);
        client_done(&c1);
        client_done(&c2);
        test_done(&t);
}

/* Only tunnelers: a connector's certificate (of the same trust domain) is refused at TLS. */
TEST(connector_certificate_refused) {
        static Test t;
        static Client c;
        int app;
        Side s;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_CONNECTOR, "conn-2");
        if (client_open(&t, &c)) {
                /* TLS 1.3: the client may finish before the server has checked its certificate. */
                stream_open(&t, &c, "127.0.0.1:9", &s, &app, false);
                ASSERT_TRUE(fixture_run_until(t.event, &c.closed, WAIT));
                ASSERT_LT(c.error, 0);
                ASSERT_TRUE(s.closed);
                ASSERT_EQ(s.n_responses, 0u);
                close(app);
        }
        ASSERT_EQ(t.n_decide, 0u);
        ASSERT_EQ(t.n_flows, 0u);
        ASSERT_UEQ(counters(&t).peers, 0);
        client_done(&c);
        test_done(&t);
}

typedef struct HeartbeatClient {
        unsigned n_acks;
        uint64_t last_ack_ms;
        bool finished;
        GrpcStatus status;
} HeartbeatClient;

static int hb_on_message(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata) {
        HeartbeatClient *h = userdata;

        h->n_acks++;
        h->last_ack_ms = ((Ztna__V1__HeartbeatAck *) msg)->received_unix_ms;
        protobuf_c_message_free_unpacked(msg, NULL);
        return 0;
}

static void hb_on_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        HeartbeatClient *h = userdata;

        h->finished = true;
        h->status = status;
}

static const GrpcClientCallbacks hb_callbacks = {
        .on_message = hb_on_message,
        .on_finish = hb_on_finish,
};

static bool acks_at_least_2(void *userdata) {
        return ((HeartbeatClient *) userdata)->n_acks >= 2;
}

static bool acks_at_least_3(void *userdata) {
        return ((HeartbeatClient *) userdata)->n_acks >= 3;
}

/* TunnelSession.Heartbeats on the tunneler's session: every heartbeat is acknowledged, handed on with the
 * certificate's SPIFFE ID, at most once per interval. Other gRPC methods and other requests are refused. */
TEST(heartbeats) {
        static Test t;
        static Client c;
        Ztna__V1__TunnelerHeartbeat hb = ZTNA__V1__TUNNELER_HEARTBEAT__INIT;
        HeartbeatClient h = {}, other = {};
        GrpcClientCall *call = NULL, *call2 = NULL;
        uint64_t t0 = now(CLOCK_REALTIME) / USEC_PER_MSEC;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));

        ASSERT_OK(grpc_client_call_start(c.h2, "conn-1", CONNECTOR_HEARTBEATS_PATH,
                                         &ztna__v1__heartbeat_ack__descriptor, 0, USEC_INFINITY,
                                         &hb_callbacks, &h, &call));
        hb.version = (char *) "1.2.3";
        hb.private_ip = (char *) "10.0.0.7";
        ASSERT_OK(grpc_client_call_send(call, &hb.base));
        hb.version = (char *) "1.2.4";
        ASSERT_OK(grpc_client_call_send(call, &hb.base));
        ASSERT_TRUE(fixture_run_until_func(t.event, acks_at_least_2, &h, WAIT));
        ASSERT_GE(h.last_ack_ms, t0);
        ASSERT_LE(h.last_ack_ms, now(CLOCK_REALTIME) / USEC_PER_MSEC);
        /* Both answered, the first handed on: the second came within the interval. */
        ASSERT_EQ(t.n_heartbeats, 1u);
        ASSERT_STREQ(t.hb_tunneler, TUN1);
        ASSERT_STREQ(t.hb_version, "1.2.3");

        run_for(&t, CONNECTOR_HEARTBEAT_FORWARD_INTERVAL);
        ASSERT_OK(grpc_client_call_send(call, &hb.base));
        ASSERT_TRUE(fixture_run_until_func(t.event, acks_at_least_3, &h, WAIT));
        ASSERT_EQ(t.n_heartbeats, 2u);
        ASSERT_STREQ(t.hb_version, "1.2.4");

        /* The tunneler ends the call: OK. */
        ASSERT_OK(grpc_client_call_close_send(call));
        ASSERT_TRUE(fixture_run_until(t.event, &h.finished, WAIT));
        ASSERT_EQ(h.status, GRPC_STATUS_OK);

        /* Another method of the service does not exist. */
        ASSERT_OK(grpc_client_call_start(c.h2, "conn-1", "/ztna.v1.TunnelSession/Other",
                                         &ztna__v1__heartbeat_ack__descriptor, 0, USEC_INFINITY,
                                         &hb_callbacks, &other, &call2));
        ASSERT_OK(grpc_client_call_close_send(call2));
        ASSERT_TRUE(fixture_run_until(t.event, &other.finished, WAIT));
        ASSERT_EQ(other.status, GRPC_STATUS_UNIMPLEMENTED);

        /* Flows and counters are not touched by heartbeats. */
        ASSERT_EQ(t.n_flows, 0u);
        ASSERT_UEQ(counters(&t).streams_total, 0);
        ASSERT_TRUE(h2_session_is_open(c.h2));
        client_done(&c);
        test_done(&t);
}

typedef struct RawStream {
        bool closed;
        uint32_t error_code;
        char status[8];
        const char *body;       /* sent at once, without waiting for the answer */
} RawStream;

static int raw_on_headers(H2Stream *st, const H2Headers *h, bool trailers, void *userdata) {
        RawStream *r = userdata;

        snprintf(r->status, sizeof(r->status), "%s", strempty(h2_headers_get(h, ":status")));
        return 0;
}

static void raw_on_close(H2Stream *st, uint32_t error_code, void *userdata) {
        RawStream *r = userdata;

        r->closed = true;
        r->error_code = error_code;
}

/* A well-behaved CONNECT stream sends nothing before the answer; body makes it misbehave. */
static ssize_t raw_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        RawStream *r = userdata;
        size_t n;

        if (!r->body)
                return -EAGAIN;
        n = MIN(size, strlen(r->body));
        memcpy(buf, r->body, n);
        r->body = NULL;
        return (ssize_t) n;
}

static bool raw_answered(void *userdata) {
        RawStream *r = userdata;
        return r->status[0] != '\0' || r->closed;
}

static const H2StreamCallbacks raw_callbacks = {
        .on_headers = raw_on_headers,
        .read_body = raw_read_body,
        .on_close = raw_on_close,
};

/* Requests that are neither CONNECT nor gRPC are refused; a CONNECT without a port gets 400. Neither is a
 * flow. */
TEST(other_requests) {
        static Test t;
        static Client c;
        RawStream get = {}, bad = {};

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));

        const H2Header get_headers[] = {
                { ":method", "GET" }, { ":scheme", "https" }, { ":path", "/" }, { ":authority", "conn-1" },
        };
        ASSERT_OK(h2_session_open_stream(c.h2, get_headers, ELEMENTSOF(get_headers), true, &raw_callbacks,
                                         &get, NULL));
        ASSERT_TRUE(fixture_run_until(t.event, &get.closed, WAIT));
        ASSERT_EQ(get.error_code, H2_REFUSED_STREAM);

        const H2Header bad_headers[] = { { ":method", "CONNECT" }, { ":authority", "db.internal" } };
        ASSERT_OK(h2_session_open_stream(c.h2, bad_headers, ELEMENTSOF(bad_headers), false, &raw_callbacks,
                                         &bad, NULL));
        ASSERT_TRUE(fixture_run_until_func(t.event, raw_answered, &bad, WAIT));
        ASSERT_STREQ(bad.status, "400");

        ASSERT_EQ(t.n_decide, 0u);
        ASSERT_EQ(t.n_flows, 0u);
        ASSERT_TRUE(h2_session_is_open(c.h2));
        client_done(&c);
        test_done(&t);
}

/* Bytes before the answer have nowhere to go: the stream is reset rather than the bytes dropped. */
TEST(bytes_before_answer) {
        static Test t;
        static Client c;
        uint16_t tport;
        int silent[2];
        char authority[64];
        RawStream r = { .body = "early" };

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        silent_port(&tport, silent);
        snprintf(authority, sizeof(authority), "127.0.0.1:%u", tport);

        const H2Header headers[] = { { ":method", "CONNECT" }, { ":authority", authority } };
        ASSERT_OK(h2_session_open_stream(c.h2, headers, ELEMENTSOF(headers), false, &raw_callbacks, &r, NULL));
        ASSERT_TRUE(fixture_run_until(t.event, &r.closed, WAIT));
        ASSERT_EQ(r.error_code, H2_CANCEL);
        ASSERT_STREQ(r.status, "");
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_TRUE(flow(&t, 1)->end);
        ASSERT_EQ(flow(&t, 1)->http_status, 0u);
        ASSERT_EQ(flow(&t, 1)->error, -EPROTO);
        ASSERT_UEQ(counters(&t).streams_active, 0);
        ASSERT_TRUE(h2_session_is_open(c.h2));

        close(silent[0]);
        close(silent[1]);
        client_done(&c);
        test_done(&t);
}

static bool peers_at_least(Test *t, uint32_t n) {
        usec_t deadline = now(CLOCK_MONOTONIC) + WAIT;

        while (counters(t).peers < n) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        return false;
                ASSERT_OK(sd_event_run(t->event, 10 * USEC_PER_MSEC));
        }
        return true;
}

/* One tunneler gets CONNECTOR_SESSIONS_PER_TUNNELER sessions, not more; others are not affected. */
TEST(sessions_per_tunneler) {
        static Test t;
        static Client c[CONNECTOR_SESSIONS_PER_TUNNELER + 1], other;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c[0], SPIFFE_ROLE_TUNNELER, "tun-1");
        for (size_t i = 1; i < ELEMENTSOF(c); i++)
                c[i] = (Client) { .ctx = tls_context_ref(c[0].ctx) };
        for (size_t i = 0; i < CONNECTOR_SESSIONS_PER_TUNNELER; i++)
                ASSERT_TRUE(client_open(&t, &c[i]));
        ASSERT_TRUE(peers_at_least(&t, CONNECTOR_SESSIONS_PER_TUNNELER));

        Client *extra = &c[CONNECTOR_SESSIONS_PER_TUNNELER];
        if (client_open(&t, extra))
                ASSERT_TRUE(fixture_run_until(t.event, &extra->closed, WAIT));
        ASSERT_UEQ(counters(&t).peers, CONNECTOR_SESSIONS_PER_TUNNELER);
        for (size_t i = 0; i < CONNECTOR_SESSIONS_PER_TUNNELER; i++)
                ASSERT_FALSE(c[i].closed);

        client_init(&t, &other, SPIFFE_ROLE_TUNNELER, "tun-2");
        ASSERT_TRUE(client_open(&t, &other));
        ASSERT_TRUE(peers_at_least(&t, CONNECTOR_SESSIONS_PER_TUNNELER + 1));

        /* One closes: there is room again. */
        h2_session_terminate(c[0].h2, H2_NO_ERROR);
        run_for(&t, 50 * USEC_PER_MSEC);
        ASSERT_TRUE(client_open(&t, extra));
        ASSERT_TRUE(peers_at_least(&t, CONNECTOR_SESSIONS_PER_TUNNELER + 1));
        run_for(&t, 50 * USEC_PER_MSEC);
        ASSERT_FALSE(extra->closed);

        for (size_t i = 0; i < ELEMENTSOF(c); i++)
                client_done(&c[i]);
        client_done(&other);
        test_done(&t);
}

/* Connections that never start TLS hold CONNECTOR_HANDSHAKES_PER_SOURCE slots of their address at most. */
TEST(handshakes_per_source) {
        static Test t;
        static Client c;
        int raw[CONNECTOR_HANDSHAKES_PER_SOURCE + 1];
        uint8_t buf[16];
        ssize_t n;

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        for (size_t i = 0; i < CONNECTOR_HANDSHAKES_PER_SOURCE; i++)
                raw[i] = fixture_connect(t.port);
        run_for(&t, 200 * USEC_PER_MSEC);

        /* The next one from the same address is dropped at once, a tunneler included. */
        raw[CONNECTOR_HANDSHAKES_PER_SOURCE] = fixture_connect(t.port);
        run_for(&t, 200 * USEC_PER_MSEC);
        n = read(raw[CONNECTOR_HANDSHAKES_PER_SOURCE], buf, sizeof(buf));
        ASSERT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET));
        ASSERT_FALSE(client_open(&t, &c));
        /* The ones held are still waiting for their handshake. */
        n = read(raw[0], buf, sizeof(buf));
        ASSERT_TRUE(n < 0 && errno == EAGAIN);

        for (size_t i = 0; i < ELEMENTSOF(raw); i++)
                close(raw[i]);
        run_for(&t, 200 * USEC_PER_MSEC);
        ASSERT_TRUE(client_open(&t, &c));
        ASSERT_TRUE(peers_at_least(&t, 1));

        client_done(&c);
        test_done(&t);
}

TEST(idle_timeout) {
        static Test t;
        static Client c;
        uint16_t tport;
        int lfd, app, target;
        Side s;

        test_init(&t);
        t.settings.idle_timeout = 300 * USEC_PER_MSEC;
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        lfd = fixture_listen(&tport);

        stream_open(&t, &c, authority_of(tport), &s, &app, true);
        target = fixture_accept(lfd);
        ping(&t, app, target);
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s, WAIT));
        ASSERT_EQ(s.error, -ECONNRESET);
        run_for(&t, 20 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);
        ASSERT_EQ(flow(&t, 1)->result, CONNECTOR_FLOW_GRANTED);
        ASSERT_EQ(flow(&t, 1)->error, -ETIMEDOUT);
        ASSERT_GE(flow(&t, 1)->duration, 300 * USEC_PER_MSEC);
        ASSERT_EQ(app_read_end(&t, target), -ECONNRESET);

        close(app);
        close(target);
        close(lfd);
        client_done(&c);
        test_done(&t);
}

/* A renewed identity serves new sessions while the old session goes on. */
TEST(set_identity) {
        static Test t;
        static Client c1, c2;
        AgentIdentity renewed;
        Identity id;
        uint16_t tport;
        int lfd, app[2], target[2];
        Side s[2];

        test_init(&t);
        test_start(&t);
        client_init(&t, &c1, SPIFFE_ROLE_TUNNELER, "tun-1");
        client_init(&t, &c2, SPIFFE_ROLE_TUNNELER, "tun-2");
        ASSERT_TRUE(client_open(&t, &c1));
        lfd = fixture_listen(&tport);
        stream_open(&t, &c1, authority_of(tport), &s[0], &app[0], true);
        target[0] = fixture_accept(lfd);

        pki_issue(&t.pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, &id);
        agent_identity_from(&t.pki, &id, "conn-1", &renewed);
        ASSERT_OK(connector_dataplane_set_identity(t.dp, &renewed));
        renewed.n_chain = 0;
        ASSERT_ERROR(connector_dataplane_set_identity(t.dp, &renewed), EINVAL);
        renewed.n_chain = 2;

        ASSERT_TRUE(client_open(&t, &c2));
        stream_open(&t, &c2, authority_of(tport), &s[1], &app[1], true);
        ASSERT_EQ(s[1].status, 200);
        target[1] = fixture_accept(lfd);
        ping(&t, app[1], target[1]);
        ping(&t, app[0], target[0]);

        for (size_t i = 0; i < 2; i++) {
                close(app[i]);
                close(target[i]);
        }
        close(lfd);
        agent_identity_done(&renewed);
        identity_done(&id);
        client_done(&c1);
        client_done(&c2);
        test_done(&t);
}

/* Freeing the data plane resets every stream, reports each flow's end and closes the sessions. */
TEST(free_with_live_streams) {
        static Test t;
        static Client c;
        uint16_t tport, sport;
        int lfd, silent[2], app[2], target;
        Side s[2];

        test_init(&t);
        test_start(&t);
        client_init(&t, &c, SPIFFE_ROLE_TUNNELER, "tun-1");
        ASSERT_TRUE(client_open(&t, &c));
        lfd = fixture_listen(&tport);
        silent_port(&sport, silent);
        stream_open(&t, &c, authority_of(tport), &s[0], &app[0], true);
        target = fixture_accept(lfd);
        ping(&t, app[0], target);
        stream_open(&t, &c, authority_of(sport), &s[1], &app[1], false);
        run_for(&t, 50 * USEC_PER_MSEC);
        ASSERT_EQ(t.n_flows, 2u);

        t.dp = connector_dataplane_free(t.dp);
        ASSERT_EQ(t.n_flows, 4u);
        for (size_t i = 2; i < 4; i++) {
                CASE("flow %zu", i);
                ASSERT_TRUE(flow(&t, i)->end);
                ASSERT_EQ(flow(&t, i)->error, -ESHUTDOWN);
        }
        CASE("client");
        ASSERT_TRUE(fixture_run_until(t.event, &c.closed, WAIT));
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s[0], WAIT));
        ASSERT_TRUE(fixture_run_until_func(t.event, side_closed, &s[1], WAIT));
        ASSERT_EQ(s[0].error, -ECONNRESET);
        ASSERT_EQ(app_read_end(&t, target), -ECONNRESET);

        close(app[0]);
        close(app[1]);
        close(target);
        close(lfd);
        close(silent[0]);
        close(silent[1]);
        client_done(&c);
        test_done(&t);
}
