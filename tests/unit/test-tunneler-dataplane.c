/* SPDX-License-Identifier: Apache-2.0 */

/* The tunneler's data plane against fake connectors in this process, over loopback with real mTLS: each
 * fake connector is a TLS + HTTP/2 server on its own port that answers CONNECT with 200 and relays to an
 * in-loop echo (or refuses with a fixed status, or never answers), and serves TunnelSession.Heartbeats.
 * The tunneler's policy is built from a PolicySnapshot, as the controller pushes it. Applications are the
 * far ends of loopback TCP pairs driven by the test. */

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-policy.h"
#include "crypto-ca.h"
#include "crypto-key.h"
#include "crypto-x509.h"
#include "net-connect.h"
#include "net-fixture.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "string-util.h"
#include "strv.h"
#include "tests.h"
#include "tunneler-dataplane.h"
#include "ztna.pb-c.h"

#define TD FIXTURE_TRUST_DOMAIN
#define CONN(n) "spiffe://" TD "/connector/conn-" #n
#define TUNNELER "spiffe://" TD "/tunneler/tun-1"
#define TIMEOUT (10 * USEC_PER_SEC)

/* ---- a fake connector --------------------------------------------------------------------------------- */

#define FAKE_SESSIONS_MAX 16
#define FAKE_ECHOS_MAX 64

typedef enum FakeMode {
        FAKE_ACCEPT,            /* 200 and relay to an echo */
        FAKE_REJECT,            /* reject_status */
        FAKE_HANG,              /* never answer */
} FakeMode;

typedef struct FakeConnector FakeConnector;

typedef struct FakeSession {
        FakeConnector *fc;
        TlsConnection *tls;     /* during the handshake */
        H2Session *h2;
        bool closed;
} FakeSession;

typedef struct Echo {
        int fd;
        sd_event_source *source;
} Echo;

struct FakeConnector {
        sd_event *event;
        char spiffe_id[128];
        char address[32];
        int listen_fd;
        sd_event_source *accept_source;
        Identity id;
        TlsContext *ctx;
        GrpcServer *grpc;
        FakeMode mode;
        unsigned reject_status;

        FakeSession sessions[FAKE_SESSIONS_MAX];
        size_t n_sessions;
        Echo echos[FAKE_ECHOS_MAX];
        size_t n_echos;

        unsigned n_handshakes, n_handshake_failures, n_connects, n_heartbeats;
        char authority[CONNECT_AUTHORITY_MAX + 1];
        char peer[256];
        char hb_version[64], hb_private_ip[64];
        uint64_t hb_streams_active, hb_streams_total, hb_peers;
};

static const ConnectPipeCallbacks fake_pipe_callbacks = {};

static int echo_on_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Echo *e = userdata;
        uint8_t buf[4096];
        ssize_t n;

        n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EAGAIN)
                return 0;
        if (n <= 0) {
                /* The tunnel's far end finished: so do we. */
                (void) shutdown(fd, SHUT_WR);
                e->source = sd_event_source_disable_unref(e->source);
                return 0;
        }
        /* Small test payloads: the socket takes them whole. */
        ASSERT_EQ(write(fd, buf, (size_t) n), n);
        return 0;
}

static int fake_on_request(H2Session *h2, H2Stream *st, const H2Headers *h, void *userdata) {
        FakeSession *fs = userdata;
        FakeConnector *fc = fs->fc;
        const char *authority = NULL;
        int pair[2];
        Echo *e;

        if (!streq_ptr(h2_headers_get(h, ":method"), "CONNECT"))
                return grpc_server_handle(fc->grpc, st, h);

        ASSERT_OK(connect_request_parse(h, &authority));
        fc->n_connects++;
        snprintf(fc->authority, sizeof(fc->authority), "%s", authority);
        switch (fc->mode) {
        case FAKE_REJECT:
                ASSERT_OK(connect_reject(st, fc->reject_status));
                return 0;
        case FAKE_HANG:
                return 0;
        case FAKE_ACCEPT:
                break;
        }
        ASSERT_LT(fc->n_echos, FAKE_ECHOS_MAX);
        fixture_tcp_pair(pair);
        e = &fc->echos[fc->n_echos++];
        e->fd = pair[1];
        ASSERT_OK(sd_event_add_io(fc->event, &e->source, e->fd, EPOLLIN, echo_on_io, e));
        ASSERT_OK(connect_pipe_accept(st, pair[0], &fake_pipe_callbacks, NULL, NULL));
        return 0;
}

static void fake_on_h2_close(H2Session *h2, int error, void *userdata) {
        FakeSession *fs = userdata;

        fs->closed = true;
}

static const H2SessionCallbacks fake_h2_callbacks = {
        .on_request = fake_on_request,
        .on_close = fake_on_h2_close,
};

static void fake_on_handshake(TlsConnection *tls, int error, void *userdata) {
        FakeSession *fs = userdata;
        FakeConnector *fc = fs->fc;

        if (error < 0) {
                fc->n_handshake_failures++;
                fs->tls = tls_connection_free(fs->tls);
                fs->closed = true;
                return;
        }
        fc->n_handshakes++;
        snprintf(fc->peer, sizeof(fc->peer), "%s", tls_connection_get_peer_id(tls)->uri);
        ASSERT_OK(h2_session_new(TAKE_PTR(fs->tls), NULL, &fake_h2_callbacks, fs, &fs->h2));
}

static const TlsConnectionCallbacks fake_tls_callbacks = { .on_handshake = fake_on_handshake };

static int fake_on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        FakeConnector *fc = userdata;
        FakeSession *fs;
        int cfd;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        ASSERT_LT(fc->n_sessions, FAKE_SESSIONS_MAX);
        fs = &fc->sessions[fc->n_sessions++];
        fs->fc = fc;
        ASSERT_OK(tls_connection_new(fc->ctx, fc->event, cfd, &fake_tls_callbacks, fs, &fs->tls));
        return 0;
}

static int fake_heartbeat_on_message(GrpcCall *call, ProtobufCMessage *m, void *userdata) {
        Ztna__V1__TunnelerHeartbeat *hb = (Ztna__V1__TunnelerHeartbeat *) m;
        Ztna__V1__HeartbeatAck ack = ZTNA__V1__HEARTBEAT_ACK__INIT;
        FakeConnector *fc = userdata;

        ASSERT_STREQ(grpc_call_get_peer(call)->uri, TUNNELER);
        fc->n_heartbeats++;
        snprintf(fc->hb_version, sizeof(fc->hb_version), "%s", strempty(hb->version));
        snprintf(fc->hb_private_ip, sizeof(fc->hb_private_ip), "%s", strempty(hb->private_ip));
        ASSERT_NOT_NULL(hb->counters);
        fc->hb_streams_active = hb->counters->streams_active;
        fc->hb_streams_total = hb->counters->streams_total;
        fc->hb_peers = hb->counters->peers;
        ASSERT_GT(hb->sent_unix_ms, 0);
        ack.received_unix_ms = hb->sent_unix_ms;
        grpc_message_free(m);
        return grpc_call_send(call, &ack.base);
}

static const GrpcMethod fake_methods[] = {
        { .path = "/ztna.v1.TunnelSession/Heartbeats", .input = &ztna__v1__tunneler_heartbeat__descriptor,
          .flags = GRPC_METHOD_CLIENT_STREAMING, .on_message = fake_heartbeat_on_message },
};

/* A connector listening on 127.0.0.1 with a certificate for conn-<cert_name>, serving tunnelers. */
static FakeConnector *fake_new(sd_event *e, Pki *pki, const char *cert_name, FakeMode mode, unsigned status) {
        FakeConnector *fc;
        char name[32];
        uint16_t port;

        fc = calloc(1, sizeof(*fc));
        ASSERT_NOT_NULL(fc);
        fc->event = e;
        fc->mode = mode;
        fc->reject_status = status;
        snprintf(fc->spiffe_id, sizeof(fc->spiffe_id), "spiffe://%s/connector/conn-%s", TD, cert_name);
        fc->listen_fd = fixture_listen(&port);
        snprintf(fc->address, sizeof(fc->address), "127.0.0.1:%u", port);
        snprintf(name, sizeof(name), "conn-%s", cert_name);
        pki_issue(pki, SPIFFE_ROLE_CONNECTOR, name, 0, USEC_PER_HOUR, &fc->id);
        fc->ctx = fixture_server_context(pki, &fc->id, SPIFFE_ROLE_TUNNELER);
        ASSERT_OK(grpc_server_new(fake_methods, ELEMENTSOF(fake_methods), 0, fc, &fc->grpc));
        ASSERT_OK(sd_event_add_io(e, &fc->accept_source, fc->listen_fd, EPOLLIN, fake_on_accept, fc));
        return fc;
}

/* Its sessions end (as when the process dies), the listener stays. */
static void fake_drop_sessions(FakeConnector *fc, uint32_t error_code) {
        for (size_t k = 0; k < fc->n_sessions; k++) {
                FakeSession *fs = &fc->sessions[k];

                fs->tls = tls_connection_free(fs->tls);
                if (fs->h2)
                        h2_session_terminate(fs->h2, error_code);
        }
}

static void fake_free(FakeConnector *fc) {
        if (!fc)
                return;
        fake_drop_sessions(fc, H2_NO_ERROR);
        for (size_t k = 0; k < fc->n_sessions; k++)
                h2_session_unref(fc->sessions[k].h2);
        for (size_t k = 0; k < fc->n_echos; k++) {
                sd_event_source_disable_unref(fc->echos[k].source);
                safe_close(fc->echos[k].fd);
        }
        grpc_server_free(fc->grpc);
        sd_event_source_disable_unref(fc->accept_source);
        safe_close(fc->listen_fd);
        tls_context_unref(fc->ctx);
        identity_done(&fc->id);
        free(fc);
}

static bool fake_all_closed(const FakeConnector *fc) {
        for (size_t k = 0; k < fc->n_sessions; k++)
                if (!fc->sessions[k].closed)
                        return false;
        return true;
}

static bool fake_has_connect(void *userdata) {
        return ((FakeConnector *) userdata)->n_connects > 0;
}

/* An address where nothing listens. */
static void closed_address(char buf[static 32]) {
        uint16_t port;

        safe_close(fixture_listen(&port));
        snprintf(buf, 32, "127.0.0.1:%u", port);
}

/* ---- the tunneler's side ------------------------------------------------------------------------------ */

typedef struct Endpoint {
        const char *id;
        const char *address;
        const char *network;
} Endpoint;

typedef struct Env {
        sd_event *event;
        Pki pki;
        AgentIdentity identity;
        AgentPolicy *policy;
        TunnelerDataPlane *dp;
        uint64_t revision;
} Env;

static void blob_from_x509(X509 *cert, DerBlob *ret) {
        ASSERT_OK(crypto_x509_to_der(cert, &ret->data, &ret->size));
}

static void env_init(Env *env) {
        Identity id;

        (void) signal(SIGPIPE, SIG_IGN);
        *env = (Env) {};
        ASSERT_OK(sd_event_default(&env->event));
        pki_init(&env->pki, TD);
        pki_issue(&env->pki, SPIFFE_ROLE_TUNNELER, "tun-1", 0, USEC_PER_HOUR, &id);
        env->identity = (AgentIdentity) {
                .role = SPIFFE_ROLE_TUNNELER,
                .id = strdup("tun-1"),
                .spiffe_id = strdup(TUNNELER),
                .trust_domain = strdup(TD),
                .heartbeat_interval = 10 * USEC_PER_SEC,
                .certificate_lifetime = USEC_PER_HOUR,
        };
        ASSERT_NOT_NULL(env->identity.trust_domain);
        ASSERT_OK(crypto_key_to_pkcs8_der(id.key, &env->identity.key.data, &env->identity.key.size));
        blob_from_x509(id.cert, &env->identity.chain[0]);
        blob_from_x509(ca_get_certificate(env->pki.issuing), &env->identity.chain[1]);
        env->identity.n_chain = 2;
        blob_from_x509(ca_get_certificate(env->pki.root), &env->identity.bundle[0]);
        env->identity.n_bundle = 1;
        identity_done(&id);
        ASSERT_OK(agent_policy_new(&env->policy));
}

static void env_start(Env *env, const TunnelerDataPlaneSettings *settings) {
        static char *resolvers[] = { (char *) "127.0.0.1:9", NULL };
        TunnelerDataPlaneSettings s = settings ? *settings : (TunnelerDataPlaneSettings) {};

        if (!s.version)
                s.version = "9.9-test";
        if (!s.private_ip)
                s.private_ip = "10.1.2.3";
        /* Names in these tests are "localhost", answered without a query. */
        s.resolvers = resolvers;
        ASSERT_OK(tunneler_dataplane_new(env->event, &env->identity, env->policy, &s, &env->dp));
}

static void env_done(Env *env) {
        env->dp = tunneler_dataplane_free(env->dp);
        env->policy = agent_policy_free(env->policy);
        agent_identity_done(&env->identity);
        pki_done(&env->pki);
        env->event = sd_event_unref(env->event);
}

/* A snapshot granting "db.lab.example:5432" and "10.20.0.0/16" (any port) in network "lab", and "dark.example"
 * in network "dark", with the connectors given. */
static void env_policy(Env *env, const Endpoint *endpoints, size_t n) {
        Ztna__V1__PortRange port = ZTNA__V1__PORT_RANGE__INIT;
        Ztna__V1__PortRange *ports[] = { &port };
        Ztna__V1__Resource res[3], *res_p[3];
        Ztna__V1__ConnectorEndpoint eps[8], *eps_p[8];
        Ztna__V1__PolicySnapshot s = ZTNA__V1__POLICY_SNAPSHOT__INIT;
        static char *groups[] = { (char *) "staff" };
        const char *reason = NULL;

        ASSERT_LE(n, ELEMENTSOF(eps));
        port.first = port.last = 5432;
        for (size_t k = 0; k < ELEMENTSOF(res); k++) {
                res[k] = (Ztna__V1__Resource) ZTNA__V1__RESOURCE__INIT;
                res[k].protocol = ZTNA__V1__PROTOCOL__PROTOCOL_TCP;
                res[k].n_groups = 1;
                res[k].groups = groups;
                res_p[k] = &res[k];
        }
        res[0].name = (char *) "db";
        res[0].address = (char *) "db.lab.example";
        res[0].n_ports = 1;
        res[0].ports = ports;
        res[0].remote_network = (char *) "lab";
        res[1].name = (char *) "lan";
        res[1].address = (char *) "10.20.0.0/16";
        res[1].remote_network = (char *) "lab";
        res[2].name = (char *) "dark";
        res[2].address = (char *) "dark.example";
        res[2].remote_network = (char *) "dark";
        for (size_t k = 0; k < n; k++) {
                eps[k] = (Ztna__V1__ConnectorEndpoint) ZTNA__V1__CONNECTOR_ENDPOINT__INIT;
                eps[k].id = (char *) endpoints[k].id;
                eps[k].address = (char *) endpoints[k].address;
                eps[k].remote_network = (char *) (endpoints[k].network ?: "lab");
                eps_p[k] = &eps[k];
        }
        s.revision = ++env->revision;
        s.n_resources = ELEMENTSOF(res);
        s.resources = res_p;
        s.n_connectors = n;
        s.connectors = n > 0 ? eps_p : NULL;
        if (agent_policy_apply_snapshot(env->policy, &s, &reason) < 0)
                test_fail(__FILE__, __LINE__, "snapshot refused: %s", strna(reason));
        if (env->dp)
                tunneler_dataplane_policy_changed(env->dp);
}

/* One local connection: the app's end and what on_result said. */
typedef struct App {
        int fd;                 /* the application's end */
        int dp_fd;              /* the end handed to the data plane */
        unsigned n_results;
        unsigned status;
        bool fd_open_in_result;
        char received[256];
        size_t n_received;
        bool eof;
} App;

static void app_on_result(int fd, unsigned status, void *userdata) {
        App *a = userdata;

        ASSERT_EQ(fd, a->dp_fd);
        a->n_results++;
        a->status = status;
        a->fd_open_in_result = fcntl(fd, F_GETFD) >= 0;
}

static void app_init(App *a) {
        int pair[2];

        *a = (App) {};
        fixture_tcp_pair(pair);
        a->dp_fd = pair[0];
        a->fd = pair[1];
}

static void app_done(App *a) {
        a->fd = safe_close(a->fd);
}

static int app_connect(Env *env, App *a, const char *host, uint16_t port) {
        return tunneler_dataplane_connect(env->dp, host, port, a->dp_fd, app_on_result, a);
}

static bool app_has_result(void *userdata) {
        return ((App *) userdata)->n_results > 0;
}

static void app_wait_result(Env *env, App *a) {
        ASSERT_TRUE(fixture_run_until_func(env->event, app_has_result, a, TIMEOUT));
        ASSERT_EQ(a->n_results, 1);
        ASSERT_TRUE(a->fd_open_in_result);
}

static bool app_read(void *userdata) {
        App *a = userdata;
        ssize_t n;

        n = recv(a->fd, a->received + a->n_received, sizeof(a->received) - 1 - a->n_received, MSG_DONTWAIT);
        if (n > 0)
                a->n_received += (size_t) n;
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                a->eof = true;
        a->received[a->n_received] = '\0';
        return a->eof || a->n_received == sizeof(a->received) - 1 || memchr(a->received, '\n', a->n_received);
}

/* Sends a line through the tunnel and waits for its echo. */
static void app_echo(Env *env, App *a, const char *line) {
        a->n_received = 0;
        ASSERT_EQ(write(a->fd, line, strlen(line)), (ssize_t) strlen(line));
        ASSERT_TRUE(fixture_run_until_func(env->event, app_read, a, TIMEOUT));
        ASSERT_STREQ(a->received, line);
}

static bool app_eof(void *userdata) {
        App *a = userdata;

        (void) app_read(a);
        return a->eof;
}

static TunnelerConnectorInfo connector_info(Env *env, const char *spiffe_id) {
        TunnelerConnectorInfo info;

        ASSERT_OK(tunneler_dataplane_get_connector(env->dp, spiffe_id, &info));
        return info;
}

static void run_for(sd_event *e, usec_t t) {
        bool never = false;

        (void) fixture_run_until(e, &never, t);
}

/* ---- tests -------------------------------------------------------------------------------------------- */

TEST(relay_end_to_end) {
        AgentControlCounters counters;
        FakeConnector *fc;
        Env env;
        App a, b;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        /* The name is matched case-insensitively and sent in canonical form. */
        ASSERT_OK(app_connect(&env, &a, "DB.lab.example", 5432));
        ASSERT_EQ(a.n_results, 0); /* never from inside connect() */
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        ASSERT_EQ(fc->n_connects, 1);
        ASSERT_STREQ(fc->authority, "db.lab.example:5432");
        ASSERT_STREQ(fc->peer, TUNNELER);

        app_echo(&env, &a, "hello through the tunnel\n");
        app_echo(&env, &a, "and again\n");
        ASSERT_TRUE(connector_info(&env, CONN(1)).connected);
        ASSERT_FALSE(connector_info(&env, CONN(1)).penalised);
        ASSERT_EQ(connector_info(&env, CONN(1)).streams, 1);
        tunneler_dataplane_get_counters(env.dp, &counters);
        ASSERT_EQ(counters.streams_active, 1);
        ASSERT_EQ(counters.streams_total, 1);
        ASSERT_EQ(counters.peers, 1);
        ASSERT_EQ(counters.bytes_out, strlen("hello through the tunnel\nand again\n"));
        ASSERT_EQ(counters.bytes_in, strlen("hello through the tunnel\nand again\n"));

        /* The application finishes: the echo finishes, the app sees EOF, the stream is gone. */
        ASSERT_OK(shutdown(a.fd, SHUT_WR));
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));
        ASSERT_EQ(connector_info(&env, CONN(1)).streams, 0);
        tunneler_dataplane_get_counters(env.dp, &counters);
        ASSERT_EQ(counters.streams_active, 0);
        ASSERT_EQ(counters.streams_total, 1);

        /* A second request reuses the session: one TLS handshake in all. An IPv4 literal works too. */
        app_init(&b);
        ASSERT_OK(app_connect(&env, &b, "10.20.3.4", 22));
        app_wait_result(&env, &b);
        ASSERT_EQ(b.status, 200);
        ASSERT_STREQ(fc->authority, "10.20.3.4:22");
        app_echo(&env, &b, "second\n");
        ASSERT_EQ(fc->n_handshakes, 1);

        app_done(&b);
        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(no_resource_is_refused_at_once) {
        AgentControlCounters counters;
        TunnelerConnectorInfo info;
        FakeConnector *fc;
        Env env;
        App a;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_ERROR(app_connect(&env, &a, "other.example", 5432), EACCES);
        ASSERT_ERROR(app_connect(&env, &a, "db.lab.example", 5433), EACCES); /* not that port */
        ASSERT_ERROR(app_connect(&env, &a, "10.21.0.1", 80), EACCES);
        ASSERT_ERROR(app_connect(&env, &a, "::1", 80), EACCES);
        run_for(env.event, 100 * USEC_PER_MSEC);
        /* Nothing was dialed and the socket is still the caller's. */
        ASSERT_EQ(a.n_results, 0);
        ASSERT_EQ(fc->n_sessions, 0);
        ASSERT_ERROR(tunneler_dataplane_get_connector(env.dp, CONN(1), &info), ENOENT);
        ASSERT_OK(fcntl(a.dp_fd, F_GETFD));
        tunneler_dataplane_get_counters(env.dp, &counters);
        ASSERT_EQ(counters.denials, 4);

        safe_close(a.dp_fd);
        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(invalid_requests) {
        Env env;
        App a;

        env_init(&env);
        env_policy(&env, (const Endpoint[]) { { CONN(1), "127.0.0.1:1" } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_ERROR(app_connect(&env, &a, "", 5432), EINVAL);
        ASSERT_ERROR(app_connect(&env, &a, "db.lab.example", 0), EINVAL);
        ASSERT_ERROR(app_connect(&env, &a, "db lab", 5432), EINVAL);
        ASSERT_ERROR(app_connect(&env, &a, "[10.20.0.1]", 5432), EINVAL);
        ASSERT_ERROR(app_connect(&env, &a, "fe80::1%eth0", 5432), EINVAL);
        ASSERT_ERROR(tunneler_dataplane_connect(env.dp, "db.lab.example", 5432, -EBADF, app_on_result, &a),
                     EBADF);
        ASSERT_OK(fcntl(a.dp_fd, F_GETFD));

        safe_close(a.dp_fd);
        app_done(&a);
        env_done(&env);
}

TEST(network_without_connectors) {
        Env env;
        App a;

        env_init(&env);
        env_start(&env, NULL);
        app_init(&a);

        /* Before any snapshot nothing is held at all. */
        ASSERT_ERROR(app_connect(&env, &a, "db.lab.example", 5432), EACCES);
        /* "dark" is granted, but no connector serves its network. */
        env_policy(&env, (const Endpoint[]) { { CONN(1), "127.0.0.1:1", "lab" } }, 1);
        ASSERT_ERROR(app_connect(&env, &a, "dark.example", 443), EHOSTUNREACH);
        ASSERT_OK(fcntl(a.dp_fd, F_GETFD));

        safe_close(a.dp_fd);
        app_done(&a);
        env_done(&env);
}

TEST(connector_down_fails_over) {
        char down[32];
        FakeConnector *fc;
        Env env;
        App a, b, c;

        env_init(&env);
        closed_address(down);
        fc = fake_new(env.event, &env.pki, "2", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), down }, { CONN(2), fc->address } }, 2);
        env_start(&env, NULL);
        app_init(&a);
        app_init(&b);
        app_init(&c);

        /* Two at once: the second goes to the connector the first did not pick, so conn-1 is tried. */
        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        ASSERT_OK(app_connect(&env, &b, "db.lab.example", 5432));
        ASSERT_EQ(connector_info(&env, CONN(1)).streams, 1);
        ASSERT_EQ(connector_info(&env, CONN(2)).streams, 1);
        app_wait_result(&env, &a);
        app_wait_result(&env, &b);
        ASSERT_EQ(a.status, 200);
        ASSERT_EQ(b.status, 200);
        ASSERT_EQ(fc->n_connects, 2);
        ASSERT_TRUE(connector_info(&env, CONN(1)).penalised);
        ASSERT_FALSE(connector_info(&env, CONN(1)).connected);
        ASSERT_TRUE(connector_info(&env, CONN(2)).connected);
        ASSERT_FALSE(connector_info(&env, CONN(2)).penalised);
        app_echo(&env, &a, "a\n");
        app_echo(&env, &b, "b\n");

        /* While penalised, conn-1 is not chosen even though conn-2 carries more streams. */
        ASSERT_OK(app_connect(&env, &c, "db.lab.example", 5432));
        ASSERT_EQ(connector_info(&env, CONN(2)).streams, 3);
        ASSERT_EQ(connector_info(&env, CONN(1)).streams, 0);
        app_wait_result(&env, &c);
        ASSERT_EQ(c.status, 200);
        ASSERT_EQ(fc->n_connects, 3);

        app_done(&c);
        app_done(&b);
        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(no_connector_reachable_is_502) {
        char down1[32], down2[32];
        Env env;
        App a;

        env_init(&env);
        closed_address(down1);
        closed_address(down2);
        env_policy(&env, (const Endpoint[]) { { CONN(1), down1 }, { CONN(2), down2 } }, 2);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 502);
        ASSERT_TRUE(connector_info(&env, CONN(1)).penalised);
        ASSERT_TRUE(connector_info(&env, CONN(2)).penalised);
        /* The data plane closed the socket after the reply. */
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));

        app_done(&a);
        env_done(&env);
}

TEST(load_spreads_over_connectors) {
        FakeConnector *fc1, *fc2;
        App apps[8];
        Env env;

        env_init(&env);
        fc1 = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        fc2 = fake_new(env.event, &env.pki, "2", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc1->address }, { CONN(2), fc2->address } }, 2);
        env_start(&env, NULL);

        for (size_t k = 0; k < ELEMENTSOF(apps); k++) {
                app_init(&apps[k]);
                ASSERT_OK(app_connect(&env, &apps[k], "db.lab.example", 5432));
        }
        /* Fewest streams first: an even split, whatever the coin said for ties. */
        ASSERT_EQ(connector_info(&env, CONN(1)).streams, 4);
        ASSERT_EQ(connector_info(&env, CONN(2)).streams, 4);
        for (size_t k = 0; k < ELEMENTSOF(apps); k++) {
                app_wait_result(&env, &apps[k]);
                ASSERT_EQ(apps[k].status, 200);
        }
        ASSERT_EQ(fc1->n_connects, 4);
        ASSERT_EQ(fc2->n_connects, 4);
        ASSERT_EQ(fc1->n_handshakes, 1);
        ASSERT_EQ(fc2->n_handshakes, 1);
        for (size_t k = 0; k < ELEMENTSOF(apps); k++)
                app_echo(&env, &apps[k], "spread\n");

        for (size_t k = 0; k < ELEMENTSOF(apps); k++)
                app_done(&apps[k]);
        env_done(&env);
        fake_free(fc2);
        fake_free(fc1);
}

TEST(connector_refusal_is_reported) {
        AgentControlCounters counters;
        FakeConnector *fc;
        Env env;
        App a, b;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_REJECT, 403);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 403);
        ASSERT_EQ(fc->n_connects, 1);
        /* A refusal is the connector's answer, not a failure: no penalty, no other attempt. */
        ASSERT_FALSE(connector_info(&env, CONN(1)).penalised);
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));
        tunneler_dataplane_get_counters(env.dp, &counters);
        ASSERT_EQ(counters.denials, 1);
        ASSERT_EQ(counters.streams_total, 0);

        /* Other statuses pass through as they are. */
        fc->reject_status = 504;
        app_init(&b);
        ASSERT_OK(app_connect(&env, &b, "db.lab.example", 5432));
        app_wait_result(&env, &b);
        ASSERT_EQ(b.status, 504);

        app_done(&b);
        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

static bool heartbeat_with_stream(void *userdata) {
        FakeConnector *fc = userdata;
        return fc->n_heartbeats >= 3 && fc->hb_streams_active == 1;
}

static bool heartbeat_new_ip(void *userdata) {
        FakeConnector *fc = userdata;
        return streq(fc->hb_private_ip, "10.9.8.7");
}

TEST(heartbeats_reach_the_connector) {
        FakeConnector *fc;
        Env env;
        App a;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, &(const TunnelerDataPlaneSettings) { .heartbeat_interval = 50 * USEC_PER_MSEC });
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        /* One at once, then every interval, on the session that carries the stream. */
        ASSERT_TRUE(fixture_run_until_func(env.event, heartbeat_with_stream, fc, TIMEOUT));
        ASSERT_STREQ(fc->hb_version, "9.9-test");
        ASSERT_STREQ(fc->hb_private_ip, "10.1.2.3");
        ASSERT_EQ(fc->hb_streams_total, 1);
        ASSERT_EQ(fc->hb_peers, 1);

        ASSERT_OK(tunneler_dataplane_set_private_ip(env.dp, "10.9.8.7"));
        ASSERT_TRUE(fixture_run_until_func(env.event, heartbeat_new_ip, fc, TIMEOUT));
        ASSERT_ERROR(tunneler_dataplane_set_private_ip(env.dp, "bad\nip"), EINVAL);

        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(connector_with_another_identity_is_refused) {
        FakeConnector *impostor;
        Env env;
        App a;

        env_init(&env);
        /* A valid connector certificate of our trust domain, but for conn-2 where the policy says conn-1. */
        impostor = fake_new(env.event, &env.pki, "2", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), impostor->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 502);
        ASSERT_EQ(impostor->n_connects, 0);
        ASSERT_EQ(impostor->n_handshakes, 0);
        ASSERT_TRUE(connector_info(&env, CONN(1)).penalised);
        ASSERT_FALSE(connector_info(&env, CONN(1)).connected);

        app_done(&a);
        env_done(&env);
        fake_free(impostor);
}

TEST(unanswered_connect_moves_to_the_next_connector) {
        FakeConnector *fc1, *fc2;
        Env env;
        App a;

        env_init(&env);
        fc1 = fake_new(env.event, &env.pki, "1", FAKE_HANG, 0);
        fc2 = fake_new(env.event, &env.pki, "2", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc1->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        ASSERT_TRUE(fixture_run_until_func(env.event, fake_has_connect, fc1, TIMEOUT));
        ASSERT_EQ(a.n_results, 0);

        /* conn-2 joins; then conn-1 dies with the CONNECT unanswered. The request goes to conn-2 on the
         * same local socket, which still relays. */
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc1->address }, { CONN(2), fc2->address } }, 2);
        fake_drop_sessions(fc1, H2_INTERNAL_ERROR);
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        ASSERT_EQ(fc2->n_connects, 1);
        app_echo(&env, &a, "survived\n");

        app_done(&a);
        env_done(&env);
        fake_free(fc2);
        fake_free(fc1);
}

static bool fake_closed(void *userdata) {
        FakeConnector *fc = userdata;
        return fc->n_sessions > 0 && fake_all_closed(fc);
}

TEST(idle_session_closes) {
        FakeConnector *fc;
        Env env;
        App a;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, &(const TunnelerDataPlaneSettings) { .session_idle = 300 * USEC_PER_MSEC });
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        /* A stream keeps the session, however long. */
        run_for(env.event, 600 * USEC_PER_MSEC);
        ASSERT_FALSE(fake_all_closed(fc));
        app_echo(&env, &a, "still here\n");

        ASSERT_OK(shutdown(a.fd, SHUT_WR));
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));
        ASSERT_TRUE(fixture_run_until_func(env.event, fake_closed, fc, TIMEOUT));
        ASSERT_FALSE(connector_info(&env, CONN(1)).connected);
        ASSERT_FALSE(connector_info(&env, CONN(1)).penalised); /* closed by us, not failed */

        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(unlisted_connector_closes_once_idle) {
        TunnelerConnectorInfo info;
        FakeConnector *fc1, *fc2;
        Env env;
        App a, b;

        env_init(&env);
        fc1 = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        fc2 = fake_new(env.event, &env.pki, "2", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc1->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);

        /* conn-1 leaves the policy: its live stream carries on, new streams go to conn-2. */
        env_policy(&env, (const Endpoint[]) { { CONN(2), fc2->address } }, 1);
        app_echo(&env, &a, "live\n");
        app_init(&b);
        ASSERT_OK(app_connect(&env, &b, "db.lab.example", 5432));
        app_wait_result(&env, &b);
        ASSERT_EQ(b.status, 200);
        ASSERT_EQ(fc1->n_connects, 1);
        ASSERT_EQ(fc2->n_connects, 1);
        ASSERT_FALSE(fake_all_closed(fc1));

        /* Its last stream ends: the session closes at once, and the next policy change forgets it. */
        ASSERT_OK(shutdown(a.fd, SHUT_WR));
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));
        ASSERT_TRUE(fixture_run_until_func(env.event, fake_closed, fc1, TIMEOUT));
        tunneler_dataplane_policy_changed(env.dp);
        ASSERT_ERROR(tunneler_dataplane_get_connector(env.dp, CONN(1), &info), ENOENT);
        ASSERT_TRUE(connector_info(&env, CONN(2)).connected);

        app_done(&b);
        app_done(&a);
        env_done(&env);
        fake_free(fc2);
        fake_free(fc1);
}

TEST(connector_by_name) {
        char address[64];
        FakeConnector *fc;
        Env env;
        App a;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        snprintf(address, sizeof(address), "localhost:%s", strchr(fc->address, ':') + 1);
        env_policy(&env, (const Endpoint[]) { { CONN(1), address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        app_echo(&env, &a, "by name\n");

        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(revoked_connector_is_closed) {
        FakeConnector *fc;
        Env env;
        App a;

        env_init(&env);
        fc = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc->address } }, 1);
        env_start(&env, NULL);
        app_init(&a);

        ASSERT_OK(app_connect(&env, &a, "db.lab.example", 5432));
        app_wait_result(&env, &a);
        ASSERT_EQ(a.status, 200);
        ASSERT_EQ(tunneler_dataplane_close_connector(env.dp, CONN(1)), 1);
        ASSERT_EQ(tunneler_dataplane_close_connector(env.dp, CONN(9)), 0);
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &a, TIMEOUT));
        ASSERT_TRUE(fixture_run_until_func(env.event, fake_closed, fc, TIMEOUT));
        ASSERT_TRUE(connector_info(&env, CONN(1)).penalised);

        app_done(&a);
        env_done(&env);
        fake_free(fc);
}

TEST(free_with_everything_in_flight) {
        FakeConnector *fc1, *fc2;
        Env env;
        App relaying, waiting, unanswered;

        env_init(&env);
        fc1 = fake_new(env.event, &env.pki, "1", FAKE_ACCEPT, 0);
        fc2 = fake_new(env.event, &env.pki, "2", FAKE_HANG, 0);
        env_policy(&env, (const Endpoint[]) { { CONN(1), fc1->address } }, 1);
        env_start(&env, NULL);
        app_init(&relaying);
        app_init(&waiting);
        app_init(&unanswered);

        ASSERT_OK(app_connect(&env, &relaying, "db.lab.example", 5432));
        app_wait_result(&env, &relaying);
        env_policy(&env, (const Endpoint[]) { { CONN(2), fc2->address } }, 1);
        ASSERT_OK(app_connect(&env, &unanswered, "db.lab.example", 5432));
        ASSERT_TRUE(fixture_run_until_func(env.event, fake_has_connect, fc2, TIMEOUT));
        env_policy(&env, (const Endpoint[]) { { CONN(3), "127.0.0.1:1" } }, 1);
        ASSERT_OK(app_connect(&env, &waiting, "db.lab.example", 5432)); /* still dialing */

        /* Nothing is reported from the free; every local socket is closed. */
        env.dp = tunneler_dataplane_free(env.dp);
        ASSERT_EQ(waiting.n_results, 0);
        ASSERT_EQ(unanswered.n_results, 0);
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &relaying, TIMEOUT));
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &waiting, TIMEOUT));
        ASSERT_TRUE(fixture_run_until_func(env.event, app_eof, &unanswered, TIMEOUT));
        run_for(env.event, 50 * USEC_PER_MSEC);

        app_done(&unanswered);
        app_done(&waiting);
        app_done(&relaying);
        env_done(&env);
        fake_free(fc2);
        fake_free(fc1);
}

TEST(bad_settings) {
        TunnelerDataPlane *dp = NULL;
        AgentIdentity broken = {};
        Env env;

        env_init(&env);
        ASSERT_ERROR(tunneler_dataplane_new(env.event, &env.identity, env.policy,
                                            &(const TunnelerDataPlaneSettings) { .version = "a\nb" }, &dp),
                     EINVAL);
        ASSERT_ERROR(tunneler_dataplane_new(env.event, &env.identity, env.policy,
                                            &(const TunnelerDataPlaneSettings) {
                                                    .connect_timeout = USEC_INFINITY,
                                            },
                                            &dp),
                     EINVAL);
        ASSERT_ERROR(tunneler_dataplane_new(env.event, &broken, env.policy,
                                            &(const TunnelerDataPlaneSettings) {}, &dp),
                     EINVAL);
        ASSERT_NULL(dp);
        env_done(&env);
}
