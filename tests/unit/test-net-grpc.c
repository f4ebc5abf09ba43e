/* SPDX-License-Identifier: Apache-2.0 */

/* gRPC over our TLS + HTTP/2, C client against C server, on loopback: identity from the certificate,
 * status codes and messages, unknown methods, unauthenticated peers, deadlines, bidirectional streaming,
 * message size limits. Interoperability with a stock implementation is tests/integration. */

#include <unistd.h>

#include "net-fixture.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "tests.h"
#include "ztna.pb-c.h"

#define PEER_TUNNELER "spiffe://" FIXTURE_TRUST_DOMAIN "/tunneler/tun-1"

/* ---- the server's test service ---------------------------------------------------------------------- */

typedef struct ServiceState {
        unsigned done_calls;
        unsigned half_closes;
        GrpcCall *slow_call;
} ServiceState;

static ServiceState state;

/* Renew: answers with the caller's SPIFFE ID as "certificate"; "fail" → PERMISSION_DENIED with a message;
 * "slow" → never answers (deadline tests). */
static int renew_on_message(GrpcCall *call, ProtobufCMessage *m, void *userdata) {
        Ztna__V1__RenewRequest *req = (Ztna__V1__RenewRequest *) m;
        const SpiffeId *peer = grpc_call_get_peer(call);
        ProtobufCBinaryData chain[1];
        Ztna__V1__RenewResponse resp = ZTNA__V1__RENEW_RESPONSE__INIT;
        int r = 0;

        if (req->csr.len == 4 && memcmp(req->csr.data, "fail", 4) == 0)
                r = grpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, "not allowed: 100% ünïcode\nline");
        else if (req->csr.len == 4 && memcmp(req->csr.data, "slow", 4) == 0)
                state.slow_call = call;
        else {
                ASSERT_NOT_NULL(peer);
                chain[0] = (ProtobufCBinaryData) { strlen(peer->uri), (uint8_t *) peer->uri };
                resp.n_certificate_chain = 1;
                resp.certificate_chain = chain;
                r = grpc_call_send(call, &resp.base);
                if (r >= 0)
                        r = grpc_call_finish(call, GRPC_STATUS_OK, NULL);
        }
        grpc_message_free(m);
        return r;
}

static int enroll_on_message(GrpcCall *call, ProtobufCMessage *m, void *userdata) {
        Ztna__V1__EnrollResponse resp = ZTNA__V1__ENROLL_RESPONSE__INIT;
        int r;

        /* Reachable without a certificate: there is no peer identity. */
        ASSERT_NULL(grpc_call_get_peer(call));
        grpc_message_free(m);
        r = grpc_call_send(call, &resp.base);
        return r < 0 ? r : grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* Heartbeats: one ack per heartbeat, in order; OK once the client half-closes. */
static int heartbeat_on_message(GrpcCall *call, ProtobufCMessage *m, void *userdata) {
        Ztna__V1__TunnelerHeartbeat *hb = (Ztna__V1__TunnelerHeartbeat *) m;
        Ztna__V1__HeartbeatAck ack = ZTNA__V1__HEARTBEAT_ACK__INIT;
        int r;

        ack.received_unix_ms = hb->sent_unix_ms; /* echo the sequence number */
        if (hb->version && streq(hb->version, "stop")) {
                grpc_message_free(m);
                return grpc_call_finish(call, GRPC_STATUS_ABORTED, "stopped by the server");
        }
        grpc_message_free(m);
        r = grpc_call_send(call, &ack.base);
        return r;
}

static void heartbeat_on_half_close(GrpcCall *call, void *userdata) {
        state.half_closes++;
        ASSERT_OK(grpc_call_finish(call, GRPC_STATUS_OK, NULL));
}

static void on_done(GrpcCall *call, void *userdata) {
        state.done_calls++;
        if (state.slow_call == call)
                state.slow_call = NULL;
}

static const GrpcMethod methods[] = {
        { .path = "/ztna.v1.Enrollment/Renew", .input = &ztna__v1__renew_request__descriptor,
          .on_message = renew_on_message, .on_done = on_done },
        { .path = "/ztna.v1.Enrollment/Enroll", .input = &ztna__v1__enroll_request__descriptor,
          .flags = GRPC_METHOD_UNAUTHENTICATED, .on_message = enroll_on_message, .on_done = on_done },
        { .path = "/ztna.v1.TunnelSession/Heartbeats", .input = &ztna__v1__tunneler_heartbeat__descriptor,
          .flags = GRPC_METHOD_CLIENT_STREAMING, .on_message = heartbeat_on_message,
          .on_half_close = heartbeat_on_half_close, .on_done = on_done },
};

/* ---- plumbing ----------------------------------------------------------------------------------------- */

typedef struct Env {
        FixtureEnv fx;
        GrpcServer *grpc;
        H2Session *server, *client;
} Env;

static int server_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        return grpc_server_handle(userdata, st, h);
}

static void session_on_close(H2Session *s, int error, void *userdata) {
}

/* A controller serving any peer, with or without a client certificate, and one client session. */
static void env_init(Env *env, bool client_cert, size_t max_message) {
        TlsConnection *st, *ct;

        state = (ServiceState) {};
        *env = (Env) {};
        fixture_env_init_with(&env->fx, &(const FixtureEnvParams) {
                .server_role = SPIFFE_ROLE_CONTROLLER,
                .server_name = "ctl-1",
                .server_peer_role = _SPIFFE_ROLE_INVALID,
                .client_certificate_optional = true,
                .client_anonymous = !client_cert,
                .client_peer_role = SPIFFE_ROLE_CONTROLLER,
        });
        ASSERT_OK(grpc_server_new(methods, ELEMENTSOF(methods), max_message, NULL, &env->grpc));

        fixture_env_tls_pair(&env->fx, &st, &ct);
        ASSERT_OK(h2_session_new(st, NULL,
                                 &(H2SessionCallbacks) { .on_request = server_on_request, .on_close = session_on_close },
                                 env->grpc, &env->server));
        ASSERT_OK(h2_session_new(ct, NULL, &(H2SessionCallbacks) { .on_close = session_on_close }, NULL,
                                 &env->client));
}

static void env_done(Env *env) {
        h2_session_unref(env->client);
        h2_session_unref(env->server);
        grpc_server_free(env->grpc);
        fixture_env_done(&env->fx);
}

typedef struct Result {
        bool finished;
        GrpcStatus status;
        char message[256];
        unsigned n_messages;
        char first[256];
        uint64_t acks[200];
} Result;

static int result_on_message(GrpcClientCall *call, ProtobufCMessage *m, void *userdata) {
        Result *r = userdata;

        if (m->descriptor == &ztna__v1__renew_response__descriptor) {
                Ztna__V1__RenewResponse *resp = (Ztna__V1__RenewResponse *) m;
                if (resp->n_certificate_chain > 0)
                        snprintf(r->first, sizeof(r->first), "%.*s", (int) resp->certificate_chain[0].len,
                                 (const char *) resp->certificate_chain[0].data);
        } else if (m->descriptor == &ztna__v1__heartbeat_ack__descriptor && r->n_messages < ELEMENTSOF(r->acks))
                r->acks[r->n_messages] = ((Ztna__V1__HeartbeatAck *) m)->received_unix_ms;
        r->n_messages++;
        grpc_message_free(m);
        return 0;
}

static void result_on_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        Result *r = userdata;

        r->finished = true;
        r->status = status;
        snprintf(r->message, sizeof(r->message), "%s", strempty(message));
}

static const GrpcClientCallbacks result_callbacks = {
        .on_message = result_on_message,
        .on_finish = result_on_finish,
};

static void renew(Env *env, const char *path, const void *csr, size_t csr_len, usec_t timeout, Result *r) {
        Ztna__V1__RenewRequest req = ZTNA__V1__RENEW_REQUEST__INIT;
        GrpcClientCall *call = NULL;

        *r = (Result) {};
        req.csr = (ProtobufCBinaryData) { csr_len, (uint8_t *) csr };
        ASSERT_OK(grpc_client_call_start(env->client, "ztna.test:443", path, &ztna__v1__renew_response__descriptor, 0,
                                         timeout, &result_callbacks, r, &call));
        ASSERT_OK(grpc_client_call_send(call, &req.base));
        ASSERT_OK(grpc_client_call_close_send(call));
        ASSERT_TRUE(fixture_run_until(env->fx.event, &r->finished, 10 * USEC_PER_SEC));
}

/* ---- cases ---------------------------------------------------------------------------------------------- */

TEST(unary_identity_from_certificate) {
        Result r;
        Env env;

        env_init(&env, true, 0);
        renew(&env, "/ztna.v1.Enrollment/Renew", "csr", 3, USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_OK);
        ASSERT_EQ(r.n_messages, 1);
        ASSERT_STREQ(r.first, PEER_TUNNELER);
        env_done(&env);
}

TEST(status_and_message_propagate) {
        Result r;
        Env env;

        env_init(&env, true, 0);
        renew(&env, "/ztna.v1.Enrollment/Renew", "fail", 4, USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_PERMISSION_DENIED);
        ASSERT_EQ(r.n_messages, 0);
        /* Percent-encoded on the wire, decoded back exactly. */
        ASSERT_STREQ(r.message, "not allowed: 100% ünïcode\nline");
        env_done(&env);
}

TEST(unknown_method) {
        Result r;
        Env env;

        env_init(&env, true, 0);
        renew(&env, "/ztna.v1.Enrollment/Nope", "csr", 3, USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_UNIMPLEMENTED);
        env_done(&env);
}

TEST(unauthenticated_peer) {
        Ztna__V1__EnrollRequest req = ZTNA__V1__ENROLL_REQUEST__INIT;
        Result r = {};
        Env env;

        env_init(&env, false, 0);
        /* Methods that need an identity refuse a peer without a certificate... */
        renew(&env, "/ztna.v1.Enrollment/Renew", "csr", 3, USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_UNAUTHENTICATED);
        /* ...while Enroll is reachable. */
        GrpcClientCall *call = NULL;
        r = (Result) {};
        ASSERT_OK(grpc_client_call_start(env.client, "ztna.test:443", "/ztna.v1.Enrollment/Enroll",
                                         &ztna__v1__enroll_response__descriptor, 0, USEC_INFINITY, &result_callbacks,
                                         &r, &call));
        ASSERT_OK(grpc_client_call_send(call, &req.base));
        ASSERT_OK(grpc_client_call_close_send(call));
        ASSERT_TRUE(fixture_run_until(env.fx.event, &r.finished, 10 * USEC_PER_SEC));
        ASSERT_EQ(r.status, GRPC_STATUS_OK);
        ASSERT_EQ(r.n_messages, 1);
        env_done(&env);
}

static bool server_call_done(void *userdata) {
        return state.done_calls >= *(unsigned *) userdata;
}

TEST(deadline_both_sides) {
        unsigned want = 1;
        Result r;
        Env env;

        env_init(&env, true, 0);
        usec_t t0 = now(CLOCK_MONOTONIC);
        renew(&env, "/ztna.v1.Enrollment/Renew", "slow", 4, 300 * USEC_PER_MSEC, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_DEADLINE_EXCEEDED);
        ASSERT_GE(now(CLOCK_MONOTONIC) - t0, 250 * USEC_PER_MSEC);
        /* The server learned the deadline from grpc-timeout and gave up the call too. */
        ASSERT_TRUE(fixture_run_until_func(env.fx.event, server_call_done, &want, 5 * USEC_PER_SEC));
        ASSERT_NULL(state.slow_call);
        ASSERT_EQ(grpc_server_get_n_calls(env.grpc), 0);
        env_done(&env);
}

TEST(bidi_stream_in_order) {
        GrpcClientCall *call = NULL;
        Result r = {};
        Env env;

        env_init(&env, true, 0);
        ASSERT_OK(grpc_client_call_start(env.client, "ztna.test:443", "/ztna.v1.TunnelSession/Heartbeats",
                                         &ztna__v1__heartbeat_ack__descriptor, 0, 10 * USEC_PER_SEC,
                                         &result_callbacks, &r, &call));
        for (uint64_t i = 0; i < 100; i++) {
                Ztna__V1__TunnelerHeartbeat hb = ZTNA__V1__TUNNELER_HEARTBEAT__INIT;

                hb.sent_unix_ms = 1000 + i;
                hb.version = (char *) "test";
                ASSERT_OK(grpc_client_call_send(call, &hb.base));
                if (i % 10 == 0)
                        ASSERT_OK(sd_event_run(env.fx.event, 0));
        }
        ASSERT_OK(grpc_client_call_close_send(call));
        ASSERT_TRUE(fixture_run_until(env.fx.event, &r.finished, 10 * USEC_PER_SEC));
        ASSERT_EQ(r.status, GRPC_STATUS_OK);
        ASSERT_EQ(r.n_messages, 100);
        for (uint64_t i = 0; i < 100; i++)
                ASSERT_EQ(r.acks[i], 1000 + i);
        ASSERT_EQ(state.half_closes, 1);
        env_done(&env);
}

/* A server may end a streaming call before the client has finished sending (e.g. a refusal): the client
 * sees the status at once, not when its own deadline fires. */
TEST(server_ends_call_while_client_still_sends) {
        GrpcClientCall *call = NULL;
        Ztna__V1__TunnelerHeartbeat hb = ZTNA__V1__TUNNELER_HEARTBEAT__INIT;
        Result r = {};
        Env env;

        env_init(&env, true, 0);
        ASSERT_OK(grpc_client_call_start(env.client, "ztna.test:443", "/ztna.v1.TunnelSession/Heartbeats",
                                         &ztna__v1__heartbeat_ack__descriptor, 0, 60 * USEC_PER_SEC,
                                         &result_callbacks, &r, &call));
        hb.version = (char *) "stop";
        ASSERT_OK(grpc_client_call_send(call, &hb.base));
        ASSERT_TRUE(fixture_run_until(env.fx.event, &r.finished, 5 * USEC_PER_SEC));
        ASSERT_EQ(r.status, GRPC_STATUS_ABORTED);
        ASSERT_STREQ(r.message, "stopped by the server");
        env_done(&env);
}

TEST(message_size_limit) {
        static uint8_t big[8192];
        Result r;
        Env env;

        env_init(&env, true, 1024);
        renew(&env, "/ztna.v1.Enrollment/Renew", big, sizeof(big), USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_RESOURCE_EXHAUSTED);
        /* The session survives: a normal call still works. */
        renew(&env, "/ztna.v1.Enrollment/Renew", "csr", 3, USEC_INFINITY, &r);
        ASSERT_EQ(r.status, GRPC_STATUS_OK);
        env_done(&env);
}

TEST(unary_with_two_requests) {
        Ztna__V1__RenewRequest req = ZTNA__V1__RENEW_REQUEST__INIT;
        GrpcClientCall *call = NULL;
        Result r = {};
        Env env;

        env_init(&env, true, 0);
        req.csr = (ProtobufCBinaryData) { 4, (uint8_t *) "slow" };
        ASSERT_OK(grpc_client_call_start(env.client, "ztna.test:443", "/ztna.v1.Enrollment/Renew",
                                         &ztna__v1__renew_response__descriptor, 0, USEC_INFINITY, &result_callbacks,
                                         &r, &call));
        ASSERT_OK(grpc_client_call_send(call, &req.base));
        ASSERT_OK(grpc_client_call_send(call, &req.base));
        ASSERT_OK(grpc_client_call_close_send(call));
        ASSERT_TRUE(fixture_run_until(env.fx.event, &r.finished, 10 * USEC_PER_SEC));
        ASSERT_EQ(r.status, GRPC_STATUS_INTERNAL);
        env_done(&env);
}

/* An owner that drops its session with a call in flight (daemon shutdown) still gets the call's final
 * status, and nothing leaks (LeakSanitizer checks this case on its own). */
TEST(dropping_session_finishes_calls) {
        Ztna__V1__RenewRequest req = ZTNA__V1__RENEW_REQUEST__INIT;
        GrpcClientCall *call = NULL;
        Result r = {};
        Env env;

        env_init(&env, true, 0);
        req.csr = (ProtobufCBinaryData) { 4, (uint8_t *) "slow" };
        ASSERT_OK(grpc_client_call_start(env.client, "ztna.test:443", "/ztna.v1.Enrollment/Renew",
                                         &ztna__v1__renew_response__descriptor, 0, USEC_INFINITY, &result_callbacks,
                                         &r, &call));
        ASSERT_OK(grpc_client_call_send(call, &req.base));
        ASSERT_OK(grpc_client_call_close_send(call));
        for (int i = 0; i < 20 && !state.slow_call; i++)
                ASSERT_OK(sd_event_run(env.fx.event, 10 * USEC_PER_MSEC));
        ASSERT_NOT_NULL(state.slow_call);

        env.client = h2_session_unref(env.client);
        ASSERT_TRUE(r.finished);
        ASSERT_EQ(r.status, GRPC_STATUS_UNAVAILABLE);
        /* Same on the server side: its call is released with the session. */
        env.server = h2_session_unref(env.server);
        ASSERT_EQ(state.done_calls, 1);
        ASSERT_EQ(grpc_server_get_n_calls(env.grpc), 0);
        env_done(&env);
}

/* ---- memory a peer can pin with half-sent messages is bounded per connection ------------------------ */

typedef struct Partial {
        size_t announced, sent;
        bool closed;
        char status[8];
} Partial;

static ssize_t partial_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        Partial *p = userdata;
        size_t n;

        if (p->sent == 0) {
                ASSERT_GE(size, 5);
                grpc_frame_header(buf, (uint32_t) p->announced);
                p->sent = 5;
                return 5;
        }
        /* Everything but the last byte, then nothing more: the message never completes. */
        n = MIN(size, p->announced + 5 - 1 - p->sent);
        if (n == 0)
                return -EAGAIN;
        memset(buf, 'x', n);
        p->sent += n;
        return (ssize_t) n;
}

static int partial_on_headers(H2Stream *st, const H2Headers *h, bool trailers, void *userdata) {
        Partial *p = userdata;
        const char *v = h2_headers_get(h, "grpc-status");

        if (v)
                snprintf(p->status, sizeof(p->status), "%s", v);
        return 0;
}

static int partial_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        return h2_stream_consume(st, size);
}

static void partial_on_close(H2Stream *st, uint32_t code, void *userdata) {
        ((Partial *) userdata)->closed = true;
}

static const H2StreamCallbacks partial_callbacks = {
        .read_body = partial_read_body, .on_headers = partial_on_headers, .on_data = partial_on_data,
        .on_close = partial_on_close,
};

TEST(partial_messages_are_bounded_per_session) {
        static const H2Header hdrs[] = {
                { ":method", "POST" }, { ":scheme", "https" }, { ":path", "/ztna.v1.Enrollment/Renew" },
                { ":authority", "ztna.test" }, { "content-type", "application/grpc" }, { "te", "trailers" },
        };
        static Partial partials[16];
        size_t exhausted = 0, max_reserved = 0;
        Env env;

        env_init(&env, true, 0);
        for (size_t i = 0; i < ELEMENTSOF(partials); i++) {
                partials[i] = (Partial) { .announced = 3U << 20 };
                ASSERT_OK(h2_session_open_stream(env.client, hdrs, ELEMENTSOF(hdrs), false, &partial_callbacks,
                                                 &partials[i], NULL));
        }
        for (usec_t end = now(CLOCK_MONOTONIC) + 3 * USEC_PER_SEC; now(CLOCK_MONOTONIC) < end;) {
                ASSERT_OK(sd_event_run(env.fx.event, 10 * USEC_PER_MSEC));
                max_reserved = MAX(max_reserved, h2_session_get_reserved(env.server));
        }
        for (size_t i = 0; i < ELEMENTSOF(partials); i++)
                if (streq(partials[i].status, "8"))
                        exhausted++;
        fprintf(stderr, "# %zu of 16 calls refused, peak reserved %zu KiB\n", exhausted, max_reserved / 1024);
        /* The budget (the 16 MiB connection window by default) holds at most five 3 MiB partial messages. */
        ASSERT_LE(max_reserved, H2_CONNECTION_WINDOW_DEFAULT);
        ASSERT_GE(exhausted, 16 - 5);
        env_done(&env);
        ASSERT_EQ(state.done_calls, 16);
}
