/* SPDX-License-Identifier: Apache-2.0 */

/* HTTP/2 sessions over real TLS on loopback: request/response, flow control as backpressure, graceful
 * GOAWAY, PING keepalive against a stopped peer process, and a hostile client speaking raw frames
 * (streams past the limit, rapid reset, header bombs, CONTINUATION floods). */

#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bytequeue.h"
#include "net-fixture.h"
#include "net-h2.h"
#include "tests.h"

/* ---- a tiny echo application on top of H2 -------------------------------------------------------- */

typedef struct Echo {
        H2Stream *stream;
        uint8_t buf[256 * 1024];
        size_t len, sent;
        bool auto_consume;  /* give credit back at once */
        bool peer_ended;
        bool closed;
        size_t received;
        uint32_t close_code;
} Echo;

static int echo_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        Echo *e = userdata;

        e->received += size;
        if (e->len + size <= sizeof(e->buf)) {
                memcpy(e->buf + e->len, data, size);
                e->len += size;
        }
        if (e->auto_consume)
                ASSERT_OK(h2_stream_consume(st, size));
        ASSERT_OK(h2_stream_resume(st));
        return 0;
}

static void echo_on_end(H2Stream *st, void *userdata) {
        Echo *e = userdata;
        e->peer_ended = true;
        (void) h2_stream_resume(st);
}

static ssize_t echo_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        Echo *e = userdata;
        size_t n = MIN(size, e->len - e->sent);

        if (n == 0) {
                if (e->peer_ended) {
                        *ret_eof = true;
                        return 0;
                }
                return -EAGAIN;
        }
        memcpy(buf, e->buf + e->sent, n);
        e->sent += n;
        return (ssize_t) n;
}

static void echo_on_close(H2Stream *st, uint32_t code, void *userdata) {
        Echo *e = userdata;
        e->closed = true;
        e->close_code = code;
        e->stream = NULL;
}

static const H2StreamCallbacks echo_callbacks = {
        .on_data = echo_on_data,
        .on_end = echo_on_end,
        .read_body = echo_read_body,
        .on_close = echo_on_close,
};

typedef struct Server {
        H2Session *session;
        Echo echoes[512];
        size_t n_echoes;
        size_t n_requests;
        bool auto_consume;
        bool closed;
        int close_error;
} Server;

static int server_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        Server *srv = userdata;
        Echo *e;

        srv->n_requests++;
        if (srv->n_echoes >= ELEMENTSOF(srv->echoes))
                return -EBUSY;
        e = &srv->echoes[srv->n_echoes++];
        *e = (Echo) { .stream = st, .auto_consume = srv->auto_consume };
        h2_stream_set_callbacks(st, &echo_callbacks, e);
        return h2_stream_respond(st, (H2Header[]) { { ":status", "200" } }, 1, true);
}

static void server_on_close(H2Session *s, int error, void *userdata) {
        Server *srv = userdata;
        srv->closed = true;
        srv->close_error = error;
}

static const H2SessionCallbacks server_callbacks = {
        .on_request = server_on_request,
        .on_close = server_on_close,
};

/* ---- client side ----------------------------------------------------------------------------------- */

typedef struct Request {
        const uint8_t *body;
        size_t body_len, body_sent;
        bool end_after_body;
        uint8_t response[256 * 1024];
        size_t response_len;
        char status[8];
        bool ended, closed;
        uint32_t close_code;
} Request;

static int req_on_headers(H2Stream *st, const H2Headers *h, bool trailers, void *userdata) {
        Request *r = userdata;
        const char *s = h2_headers_get(h, ":status");

        if (!trailers && s)
                snprintf(r->status, sizeof(r->status), "%s", s);
        return 0;
}

static int req_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        Request *r = userdata;

        if (r->response_len + size <= sizeof(r->response)) {
                memcpy(r->response + r->response_len, data, size);
                r->response_len += size;
        }
        return h2_stream_consume(st, size);
}

static void req_on_end(H2Stream *st, void *userdata) {
        ((Request *) userdata)->ended = true;
}

static ssize_t req_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        Request *r = userdata;
        size_t n = MIN(size, r->body_len - r->body_sent);

        if (n == 0) {
                if (r->end_after_body) {
                        *ret_eof = true;
                        return 0;
                }
                return -EAGAIN;
        }
        memcpy(buf, r->body + r->body_sent, n);
        r->body_sent += n;
        return (ssize_t) n;
}

static void req_on_close(H2Stream *st, uint32_t code, void *userdata) {
        Request *r = userdata;
        r->closed = true;
        r->close_code = code;
}

static const H2StreamCallbacks request_callbacks = {
        .on_headers = req_on_headers,
        .on_data = req_on_data,
        .on_end = req_on_end,
        .read_body = req_read_body,
        .on_close = req_on_close,
};

static const H2Header request_headers[] = {
        { ":method", "POST" }, { ":scheme", "https" }, { ":authority", "ztna.test" }, { ":path", "/echo" },
};

typedef struct Client {
        H2Session *session;
        bool closed;
        int close_error;
} Client;

static void client_on_close(H2Session *s, int error, void *userdata) {
        Client *c = userdata;
        c->closed = true;
        c->close_error = error;
}

static const H2SessionCallbacks client_callbacks = { .on_close = client_on_close };

/* ---- plumbing: TLS handshake (net-fixture) then H2 on both ends ------------------------------------ */

static void env_h2_pair(FixtureEnv *env, const H2Settings *ss, const H2Settings *cs, Server *srv,
                        Client *cli) {
        TlsConnection *st, *ct;

        fixture_env_tls_pair(env, &st, &ct);
        ASSERT_OK(h2_session_new(st, ss, &server_callbacks, srv, &srv->session));
        ASSERT_OK(h2_session_new(ct, cs, &client_callbacks, cli, &cli->session));
}

static bool request_done(void *userdata) {
        Request *r = userdata;
        return r->closed;
}

TEST(echo) {
        static Server srv = { .auto_consume = true };
        static Client cli;
        static Request req;
        static uint8_t body[200000];
        FixtureEnv env;

        fixture_env_init(&env);
        env_h2_pair(&env, NULL, NULL, &srv, &cli);
        for (size_t i = 0; i < sizeof(body); i++)
                body[i] = (uint8_t) (i * 31 + 7);
        req = (Request) { .body = body, .body_len = sizeof(body), .end_after_body = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &request_callbacks, &req, NULL));
        ASSERT_TRUE(fixture_run_until_func(env.event, request_done, &req, 10 * USEC_PER_SEC));
        ASSERT_STREQ(req.status, "200");
        ASSERT_TRUE(req.ended);
        ASSERT_EQ(req.close_code, 0);
        ASSERT_EQ(req.response_len, sizeof(body));
        ASSERT_MEMEQ(req.response, body, sizeof(body));
        /* The server saw who we are, from the certificate. */
        ASSERT_STREQ(h2_session_get_peer_id(srv.session)->uri, "spiffe://" FIXTURE_TRUST_DOMAIN "/tunneler/tun-1");

        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

static bool stalled_or_done(void *userdata) {
        Request *r = userdata;
        return r->closed || r->body_sent == r->body_len;
}

/* The server does not consume: the client can send only one stream window, then it is held back. */
TEST(flow_control_backpressure) {
        static Server srv = { .auto_consume = false };
        static Client cli;
        static Request req;
        static uint8_t body[200000];
        H2Settings ss;
        FixtureEnv env;

        fixture_env_init(&env);
        h2_settings_init(&ss);
        ss.stream_window = 65535;
        env_h2_pair(&env, &ss, NULL, &srv, &cli);
        req = (Request) { .body = body, .body_len = sizeof(body), .end_after_body = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &request_callbacks, &req, NULL));
        /* Let it run for a while: nothing beyond the window may arrive. */
        (void) fixture_run_until_func(env.event, stalled_or_done, &req, 500 * USEC_PER_MSEC);
        ASSERT_EQ(srv.n_echoes, 1);
        ASSERT_LE(srv.echoes[0].received, 65535);
        ASSERT_GT(srv.echoes[0].received, 0);
        ASSERT_LT(req.body_sent, sizeof(body));

        /* Consuming releases the rest. */
        srv.echoes[0].auto_consume = true;
        ASSERT_OK(h2_stream_consume(srv.echoes[0].stream, srv.echoes[0].received));
        ASSERT_TRUE(fixture_run_until_func(env.event, request_done, &req, 10 * USEC_PER_SEC));
        ASSERT_EQ(srv.echoes[0].received, sizeof(body));

        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

static bool both_closed(void *userdata) {
        void **p = userdata;
        return ((Server *) p[0])->closed && ((Client *) p[1])->closed;
}

/* GOAWAY: the stream in flight completes, new streams are refused, then both ends close cleanly. */
TEST(graceful_goaway) {
        static Server srv = { .auto_consume = true };
        static Client cli;
        static Request req, late;
        static uint8_t body[1000];
        FixtureEnv env;

        fixture_env_init(&env);
        env_h2_pair(&env, NULL, NULL, &srv, &cli);
        H2Stream *stream = NULL;
        req = (Request) { .body = body, .body_len = sizeof(body), .end_after_body = false };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &request_callbacks, &req, &stream));
        for (int i = 0; i < 20; i++)
                ASSERT_OK(sd_event_run(env.event, 10 * USEC_PER_MSEC));
        ASSERT_EQ(srv.n_echoes, 1);

        ASSERT_OK(h2_session_shutdown(srv.session));
        for (int i = 0; i < 20; i++)
                ASSERT_OK(sd_event_run(env.event, 10 * USEC_PER_MSEC));
        ASSERT_FALSE(h2_session_is_open(cli.session));
        ASSERT_ERROR(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), true,
                                            &request_callbacks, &late, NULL),
                     ENOTCONN);
        ASSERT_FALSE(req.closed);

        /* Finish the stream in flight: the session then closes on both ends without error. */
        req.end_after_body = true;
        ASSERT_OK(h2_stream_resume(stream));
        void *both[2] = { &srv, &cli };
        ASSERT_TRUE(fixture_run_until_func(env.event, both_closed, both, 10 * USEC_PER_SEC));
        ASSERT_TRUE(req.ended);
        ASSERT_EQ(req.response_len, sizeof(body));
        ASSERT_EQ(srv.close_error, 0);
        ASSERT_EQ(cli.close_error, 0);

        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* Keepalive: a peer process that answers PINGs keeps the session; once SIGSTOPped, the server declares it
 * dead within ping_interval + ping_timeout. */
TEST(keepalive_detects_stopped_peer) {
        static Server srv = { .auto_consume = true };
        H2Settings ss;
        FixtureEnv env;
        uint16_t port;
        int lfd, status;
        pid_t pid;

        fixture_env_init(&env);
        lfd = fixture_listen(&port);

        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                /* Child: a well-behaved client in its own loop. */
                static Client cli;
                TlsConnection *ct = NULL;
                FixtureHandshake h = {};
                sd_event *ce = NULL;

                if (sd_event_new(&ce) < 0 ||
                    tls_connection_new(env.client_ctx, ce, fixture_connect(port), &fixture_handshake_callbacks,
                                       &h, &ct) < 0)
                        _exit(1);
                while (!h.done)
                        if (sd_event_run(ce, USEC_INFINITY) < 0)
                                _exit(1);
                if (h.result < 0 || h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session) < 0)
                        _exit(1);
                while (!cli.closed)
                        if (sd_event_run(ce, USEC_INFINITY) < 0)
                                _exit(1);
                _exit(0);
        }

        TlsConnection *st = NULL;
        FixtureHandshake h = {};
        ASSERT_OK(tls_connection_new(env.server_ctx, env.event, fixture_accept(lfd), &fixture_handshake_callbacks,
                                     &h, &st));
        ASSERT_TRUE(fixture_run_until(env.event, &h.done, 10 * USEC_PER_SEC));
        ASSERT_EQ(h.result, 0);

        h2_settings_init(&ss);
        ss.ping_interval = 200 * USEC_PER_MSEC;
        ss.ping_timeout = 400 * USEC_PER_MSEC;
        ASSERT_OK(h2_session_new(st, &ss, &server_callbacks, &srv, &srv.session));

        /* Healthy: several ping rounds pass without the session dying. */
        ASSERT_FALSE(fixture_run_until(env.event, &srv.closed, 1500 * USEC_PER_MSEC));

        ASSERT_TRUE(kill(pid, SIGSTOP) == 0);
        usec_t t0 = now(CLOCK_MONOTONIC);
        ASSERT_TRUE(fixture_run_until(env.event, &srv.closed, 5 * USEC_PER_SEC));
        usec_t took = now(CLOCK_MONOTONIC) - t0;
        ASSERT_EQ(srv.close_error, -ETIMEDOUT);
        fprintf(stderr, "# stopped peer detected after %llu ms\n", (unsigned long long) (took / USEC_PER_MSEC));

        ASSERT_TRUE(kill(pid, SIGKILL) == 0);
        ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
        close(lfd);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* ---- a hostile client speaking raw HTTP/2 frames over TLS ------------------------------------------- */

typedef struct Raw {
        TlsConnection *tls;
        nghttp2_hd_deflater *deflater;
        uint8_t out[1 << 20];
        size_t out_len;
        bool peer_closed;
        size_t goaways;
        uint32_t goaway_code;
        size_t rst_refused;
        uint8_t in[1 << 16];
        size_t in_len;
} Raw;

static void raw_frame(Raw *r, uint8_t type, uint8_t flags, uint32_t stream, const void *payload, size_t len) {
        uint8_t *p;

        ASSERT_LE(r->out_len + 9 + len, sizeof(r->out));
        p = r->out + r->out_len;
        p[0] = (uint8_t) (len >> 16);
        p[1] = (uint8_t) (len >> 8);
        p[2] = (uint8_t) len;
        p[3] = type;
        p[4] = flags;
        p[5] = (uint8_t) ((stream >> 24) & 0x7f);
        p[6] = (uint8_t) (stream >> 16);
        p[7] = (uint8_t) (stream >> 8);
        p[8] = (uint8_t) stream;
        if (len > 0)
                memcpy(p + 9, payload, len);
        r->out_len += 9 + len;
}

static size_t raw_headers_block(Raw *r, uint8_t *buf, size_t size, const char *extra_name, size_t extra_len) {
        static char big[200 * 1024];
        nghttp2_nv nv[5] = {
                { (uint8_t *) ":method", (uint8_t *) "POST", 7, 4, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) ":scheme", (uint8_t *) "https", 7, 5, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) ":authority", (uint8_t *) "ztna.test", 10, 9, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) ":path", (uint8_t *) "/echo", 5, 5, NGHTTP2_NV_FLAG_NONE },
        };
        size_t n = 4;
        ssize_t l;

        if (extra_name) {
                memset(big, 'a', MIN(extra_len, sizeof(big)));
                nv[n++] = (nghttp2_nv) { (uint8_t *) extra_name, (uint8_t *) big, strlen(extra_name),
                                         MIN(extra_len, sizeof(big)), NGHTTP2_NV_FLAG_NO_INDEX };
        }
        l = nghttp2_hd_deflate_hd(r->deflater, buf, size, nv, n);
        ASSERT_GT(l, 0);
        return (size_t) l;
}

static void raw_flush(Raw *r, sd_event *e) {
        size_t off = 0;

        while (off < r->out_len && !r->peer_closed) {
                ssize_t w = tls_connection_write(r->tls, r->out + off, r->out_len - off);
                if (w == -EAGAIN) {
                        ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
                        continue;
                }
                if (w < 0) {
                        r->peer_closed = true;
                        break;
                }
                off += (size_t) w;
        }
        r->out_len = 0;
}

/* Reads and parses frames from the server: counts GOAWAY and RST_STREAM(REFUSED_STREAM). */
static void raw_on_io(TlsConnection *c, void *userdata) {
        Raw *r = userdata;

        for (;;) {
                ssize_t n = tls_connection_read(c, r->in + r->in_len, sizeof(r->in) - r->in_len);
                if (n == -EAGAIN)
                        break;
                if (n <= 0) {
                        r->peer_closed = true;
                        (void) tls_connection_set_interest(c, false, false);
                        return;
                }
                r->in_len += (size_t) n;
                size_t off = 0;
                while (r->in_len - off >= 9) {
                        const uint8_t *p = r->in + off;
                        size_t len = ((size_t) p[0] << 16) | ((size_t) p[1] << 8) | p[2];
                        if (r->in_len - off < 9 + len)
                                break;
                        if (p[3] == NGHTTP2_GOAWAY && len >= 8) {
                                r->goaways++;
                                r->goaway_code = ((uint32_t) p[13] << 24) | ((uint32_t) p[14] << 16) |
                                                 ((uint32_t) p[15] << 8) | p[16];
                        } else if (p[3] == NGHTTP2_RST_STREAM && len == 4 && p[12] == NGHTTP2_REFUSED_STREAM)
                                r->rst_refused++;
                        off += 9 + len;
                }
                memmove(r->in, r->in + off, r->in_len - off);
                r->in_len -= off;
        }
        (void) tls_connection_set_interest(c, true, false);
}

static const TlsConnectionCallbacks raw_callbacks = { .on_io = raw_on_io };

static Raw *raw_start(FixtureEnv *env, Server *srv, const H2Settings *ss) {
        TlsConnection *st, *ct;
        Raw *r;

        fixture_env_tls_pair(env, &st, &ct);
        ASSERT_OK(h2_session_new(st, ss, &server_callbacks, srv, &srv->session));
        r = calloc(1, sizeof(Raw));
        ASSERT_NOT_NULL(r);
        r->tls = ct;
        ASSERT_TRUE(nghttp2_hd_deflate_new(&r->deflater, 4096) == 0);
        tls_connection_set_callbacks(ct, &raw_callbacks, r);
        (void) tls_connection_set_interest(ct, true, false);
        /* Preface + empty SETTINGS. */
        memcpy(r->out, NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
        r->out_len = NGHTTP2_CLIENT_MAGIC_LEN;
        raw_frame(r, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
        raw_flush(r, env->event);
        return r;
}

static void raw_free(Raw *r) {
        nghttp2_hd_deflate_del(r->deflater);
        tls_connection_free(r->tls);
        free(r);
}

static void run_for(sd_event *e, usec_t t) {
        usec_t end = now(CLOCK_MONOTONIC) + t;
        while (now(CLOCK_MONOTONIC) < end)
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
}

/* Opening streams past SETTINGS_MAX_CONCURRENT_STREAMS: the excess is refused, the server keeps at most
 * the limit, and it goes on serving. */
TEST(abuse_streams_past_limit) {
        static Server srv = { .auto_consume = true };
        uint8_t block[4096];
        H2Settings ss;
        FixtureEnv env;
        Raw *r;

        fixture_env_init(&env);
        h2_settings_init(&ss);
        ss.max_concurrent_streams = 16;
        r = raw_start(&env, &srv, &ss);
        run_for(env.event, 100 * USEC_PER_MSEC); /* let SETTINGS be exchanged */
        for (uint32_t i = 0; i < 100; i++) {
                size_t l = raw_headers_block(r, block, sizeof(block), NULL, 0);
                raw_frame(r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1 + 2 * i, block, l);
        }
        raw_flush(r, env.event);
        run_for(env.event, 300 * USEC_PER_MSEC);
        ASSERT_LE(h2_session_get_n_streams(srv.session), 16);
        ASSERT_LE(srv.n_requests, 16);
        ASSERT_GT(srv.n_requests, 0);
        fprintf(stderr, "# accepted %zu, refused %zu, goaway %zu\n", srv.n_requests, r->rst_refused, r->goaways);
        ASSERT_TRUE(r->rst_refused >= 84 || r->goaways > 0);
        raw_free(r);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* CVE-2023-44487: HEADERS + RST_STREAM in a tight loop. The server answers with GOAWAY and closes that
 * connection; it does not accumulate work. */
TEST(abuse_rapid_reset) {
        static Server srv = { .auto_consume = true };
        uint8_t block[4096], rst[4] = { 0, 0, 0, NGHTTP2_CANCEL };
        FixtureEnv env;
        Raw *r;

        fixture_env_init(&env);
        r = raw_start(&env, &srv, NULL);
        run_for(env.event, 100 * USEC_PER_MSEC);
        for (uint32_t i = 0; i < 5000 && !r->peer_closed; i++) {
                size_t l = raw_headers_block(r, block, sizeof(block), NULL, 0);
                raw_frame(r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1 + 2 * i, block, l);
                raw_frame(r, NGHTTP2_RST_STREAM, 0, 1 + 2 * i, rst, sizeof(rst));
                if (r->out_len > sizeof(r->out) - 8192)
                        raw_flush(r, env.event);
                if (i % 256 == 0)
                        ASSERT_OK(sd_event_run(env.event, 0));
        }
        raw_flush(r, env.event);
        ASSERT_TRUE(fixture_run_until(env.event, &srv.closed, 5 * USEC_PER_SEC));
        run_for(env.event, 200 * USEC_PER_MSEC); /* let the client read what the server sent last */
        /* The server refused the flood: GOAWAY with an error, the session reported as failed. */
        ASSERT_GE(r->goaways, 1);
        ASSERT_NE(r->goaway_code, NGHTTP2_NO_ERROR);
        ASSERT_LT(srv.close_error, 0);
        /* Cut off near the reset budget (H2_RESET_BURST), not after the whole flood. */
        ASSERT_LE(srv.n_requests, 2 * H2_RESET_BURST);
        ASSERT_EQ(h2_session_get_n_streams(srv.session), 0);
        fprintf(stderr, "# requests seen before the cut: %zu, goaways %zu code %u, close error %d, client closed %d\n", srv.n_requests, r->goaways, r->goaway_code, srv.close_error, r->peer_closed);
        raw_free(r);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* A header block far beyond SETTINGS_MAX_HEADER_LIST_SIZE: the stream never reaches the application. */
TEST(abuse_header_bomb) {
        static Server srv = { .auto_consume = true };
        static uint8_t block[300 * 1024];
        FixtureEnv env;
        Raw *r;

        fixture_env_init(&env);
        r = raw_start(&env, &srv, NULL);
        run_for(env.event, 100 * USEC_PER_MSEC);
        size_t l = raw_headers_block(r, block, sizeof(block), "x-bomb", 100 * 1024);
        /* Split into HEADERS + CONTINUATION frames of 16 KiB. */
        size_t off = 0;
        for (int i = 0; off < l; i++) {
                size_t k = MIN((size_t) 16384, l - off);
                bool last = off + k == l;
                raw_frame(r, i == 0 ? NGHTTP2_HEADERS : NGHTTP2_CONTINUATION, last ? NGHTTP2_FLAG_END_HEADERS : 0, 1,
                          block + off, k);
                off += k;
        }
        raw_flush(r, env.event);
        run_for(env.event, 300 * USEC_PER_MSEC);
        ASSERT_EQ(srv.n_requests, 0);
        ASSERT_EQ(h2_session_get_n_streams(srv.session), 0);
        raw_free(r);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* CVE-2024-28182: endless CONTINUATION frames. The connection is cut after a few. */
TEST(abuse_continuation_flood) {
        static Server srv = { .auto_consume = true };
        uint8_t block[4096], junk[64];
        FixtureEnv env;
        Raw *r;

        fixture_env_init(&env);
        r = raw_start(&env, &srv, NULL);
        run_for(env.event, 100 * USEC_PER_MSEC);
        size_t l = raw_headers_block(r, block, sizeof(block), NULL, 0);
        raw_frame(r, NGHTTP2_HEADERS, 0, 1, block, l);
        memset(junk, 0x40, sizeof(junk)); /* literal header field with incremental indexing, never completed */
        for (int i = 0; i < 1000 && !r->peer_closed; i++) {
                raw_frame(r, NGHTTP2_CONTINUATION, 0, 1, junk, 0);
                if (i % 100 == 0)
                        raw_flush(r, env.event);
        }
        raw_flush(r, env.event);
        ASSERT_TRUE(fixture_run_until(env.event, &srv.closed, 5 * USEC_PER_SEC));
        ASSERT_EQ(srv.n_requests, 0);
        ASSERT_LT(srv.close_error, 0);
        raw_free(r);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* ---- two of our own peers moving bulk data both ways at once ----------------------------------------- */


/* Server side: echoes a stream back, returning flow-control credit only for bytes it has forwarded. */
typedef struct Pump {
        ByteQueue q;
        bool peer_ended;
} Pump;

static Pump pumps[16];
static size_t n_pumps;

static int pump_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        Pump *p = userdata;

        ASSERT_OK(byte_queue_push(&p->q, data, size));
        return h2_stream_resume(st);
}

static void pump_on_end(H2Stream *st, void *userdata) {
        ((Pump *) userdata)->peer_ended = true;
        (void) h2_stream_resume(st);
}

static ssize_t pump_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        Pump *p = userdata;
        size_t n = byte_queue_pop(&p->q, buf, size);

        if (n > 0) {
                ASSERT_OK(h2_stream_consume(st, n));
                return (ssize_t) n;
        }
        if (p->peer_ended) {
                *ret_eof = true;
                return 0;
        }
        return -EAGAIN;
}

static void pump_on_close(H2Stream *st, uint32_t code, void *userdata) {
        byte_queue_done(&((Pump *) userdata)->q, false);
}

static const H2StreamCallbacks pump_callbacks = {
        .on_data = pump_on_data, .on_end = pump_on_end, .read_body = pump_read_body, .on_close = pump_on_close,
};

static int pump_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        Pump *p = &pumps[n_pumps++];

        byte_queue_init(&p->q, 64U << 20);
        h2_stream_set_callbacks(st, &pump_callbacks, p);
        return h2_stream_respond(st, (H2Header[]) { { ":status", "200" } }, 1, true);
}

/* Client side: sends a generated body, counts and checks what comes back. */
typedef struct Flow {
        size_t to_send, sent, received;
        size_t allowed; /* send at most this much for now (0: no limit) */
        bool ok, closed;
} Flow;

static uint8_t flow_byte(size_t i) {
        return (uint8_t) ((i * 2654435761U) >> 13);
}

static int flow_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        Flow *f = userdata;

        for (size_t i = 0; i < size; i++)
                if (data[i] != flow_byte(f->received + i))
                        f->ok = false;
        f->received += size;
        return h2_stream_consume(st, size);
}

static ssize_t flow_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        Flow *f = userdata;
        size_t limit = f->allowed > 0 ? MIN(f->allowed, f->to_send) : f->to_send;
        size_t n = MIN(size, limit - f->sent);

        if (n == 0) {
                if (limit < f->to_send)
                        return -EAGAIN; /* held back by the test */
                *ret_eof = true;
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                buf[i] = flow_byte(f->sent + i);
        f->sent += n;
        return (ssize_t) n;
}

static void flow_on_close(H2Stream *st, uint32_t code, void *userdata) {
        Flow *f = userdata;
        f->closed = true;
        if (code != 0)
                f->ok = false;
}

static const H2StreamCallbacks flow_callbacks = {
        .on_data = flow_on_data, .read_body = flow_read_body, .on_close = flow_on_close,
};

static bool flows_closed(void *userdata) {
        Flow *f = userdata;
        for (size_t i = 0; i < 8; i++)
                if (!f[i].closed)
                        return false;
        return true;
}

static void shrink_buffers(TlsConnection *c) {
        int fd = tls_connection_get_fd(c), sz = 16384;

        ASSERT_TRUE(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) == 0);
        ASSERT_TRUE(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) == 0);
}

/* Both ends write more than the sockets can hold: each must keep reading while its writes are blocked, or
 * they wait on each other forever (the tunneler↔connector data plane has our code on both sides). */
TEST(bidirectional_bulk_does_not_deadlock) {
        static Server srv;
        static Client cli;
        static Flow flows[8];
        TlsConnection *st, *ct;
        FixtureEnv env;

        fixture_env_init(&env);
        n_pumps = 0;
        fixture_env_tls_pair(&env, &st, &ct);
        shrink_buffers(st);
        shrink_buffers(ct);
        ASSERT_OK(h2_session_new(st, NULL, &(H2SessionCallbacks) { .on_request = pump_on_request, .on_close = server_on_close },
                                 &srv, &srv.session));
        ASSERT_OK(h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session));
        for (size_t i = 0; i < ELEMENTSOF(flows); i++) {
                flows[i] = (Flow) { .to_send = 4U << 20, .ok = true };
                ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                                 &flow_callbacks, &flows[i], NULL));
        }
        ASSERT_TRUE(fixture_run_until_func(env.event, flows_closed, flows, 30 * USEC_PER_SEC));
        for (size_t i = 0; i < ELEMENTSOF(flows); i++) {
                CASE("stream %zu", i);
                ASSERT_TRUE(flows[i].ok);
                ASSERT_EQ(flows[i].received, 4U << 20);
        }
        ASSERT_FALSE(srv.closed);
        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* A request handler that drops the whole connection (say, for a peer revoked a moment ago). */
static int terminating_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        ((Server *) userdata)->n_requests++;
        h2_session_terminate(s, H2_PROTOCOL_ERROR);
        return 0;
}

TEST(terminate_from_inside_a_callback) {
        static Server srv;
        static Client cli;
        static Request req;
        TlsConnection *st, *ct;
        FixtureEnv env;

        fixture_env_init(&env);
        fixture_env_tls_pair(&env, &st, &ct);
        ASSERT_OK(h2_session_new(st, NULL,
                                 &(H2SessionCallbacks) { .on_request = terminating_on_request, .on_close = server_on_close },
                                 &srv, &srv.session));
        ASSERT_OK(h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session));
        req = (Request) { .end_after_body = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &request_callbacks, &req, NULL));
        void *both[2] = { &srv, &cli };
        ASSERT_TRUE(fixture_run_until_func(env.event, both_closed, both, 5 * USEC_PER_SEC));
        ASSERT_EQ(srv.n_requests, 1);
        ASSERT_LT(srv.close_error, 0);
        ASSERT_TRUE(req.closed);
        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

static bool flow_received_1m(void *userdata) {
        return ((Flow *) userdata)->received >= (1U << 20);
}

static bool flow_closed(void *userdata) {
        return ((Flow *) userdata)->closed;
}

/* Hot swap of the server's certificate while a stream is open: the stream keeps flowing to its end on the old
 * session, and a new connection is handshaken with the new certificate. */
TEST(hot_swap_keeps_open_stream) {
        static Server srv;
        static Client cli;
        static Flow flow;
        FixtureHandshake h[2] = {};
        TlsConnection *st, *ct;
        H2Stream *stream = NULL;
        Identity renewed;
        FixtureEnv env;

        fixture_env_init(&env);
        n_pumps = 0;
        fixture_env_tls_pair(&env, &st, &ct);
        ASSERT_OK(h2_session_new(st, NULL, &(H2SessionCallbacks) { .on_request = pump_on_request, .on_close = server_on_close },
                                 &srv, &srv.session));
        ASSERT_OK(h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session));
        flow = (Flow) { .to_send = 4U << 20, .allowed = 1U << 20, .ok = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &flow_callbacks, &flow, &stream));
        ASSERT_TRUE(fixture_run_until_func(env.event, flow_received_1m, &flow, 10 * USEC_PER_SEC));

        /* Renewal: a new certificate for the same identity, set while the stream is mid-way. */
        pki_issue(&env.pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, 2 * USEC_PER_HOUR, &renewed);
        ASSERT_OK(tls_context_set_identity(env.server_ctx, renewed.cert, renewed.chain, renewed.key));

        /* A new connection sees the new certificate... */
        fixture_tls_handshake(env.event, env.server_ctx, env.client_ctx, h);
        ASSERT_EQ(h[0].result, 0);
        ASSERT_EQ(h[1].result, 0);
        X509 *presented = tls_connection_get_peer_certificate(h[1].conn);
        ASSERT_NOT_NULL(presented);
        ASSERT_EQ(X509_cmp(presented, renewed.cert), 0);
        /* ...while the open stream finishes on the old session, every byte intact. */
        flow.allowed = 0;
        ASSERT_OK(h2_stream_resume(stream));
        ASSERT_TRUE(fixture_run_until_func(env.event, flow_closed, &flow, 20 * USEC_PER_SEC));
        ASSERT_TRUE(flow.ok);
        ASSERT_EQ(flow.received, 4U << 20);
        ASSERT_FALSE(srv.closed);

        tls_connection_free(h[0].conn);
        tls_connection_free(h[1].conn);
        identity_done(&renewed);
        h2_session_unref(cli.session);
        h2_session_unref(srv.session);
        fixture_env_done(&env);
}

/* ---- interim responses and requests nobody has taken yet ---------------------------------------------- */

/* A raw-frame server answering stream 1 with 103 Early Hints, then 200 and a body: the client must report
 * the final 200 (after a 1xx, nghttp2 files the final response like trailers). */
TEST(interim_response_then_final) {
        static Client cli;
        static Request req;
        uint8_t block[256];
        TlsConnection *st, *ct;
        FixtureEnv env;
        Raw *r;
        ssize_t l;

        fixture_env_init(&env);
        fixture_env_tls_pair(&env, &st, &ct);
        ASSERT_OK(h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session));
        r = calloc(1, sizeof(Raw));
        ASSERT_NOT_NULL(r);
        r->tls = st;
        ASSERT_TRUE(nghttp2_hd_deflate_new(&r->deflater, 4096) == 0);
        tls_connection_set_callbacks(st, &raw_callbacks, r);
        (void) tls_connection_set_interest(st, true, false);

        req = (Request) { .end_after_body = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), true,
                                         &request_callbacks, &req, NULL));
        run_for(env.event, 100 * USEC_PER_MSEC);

        raw_frame(r, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
        raw_frame(r, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
        l = nghttp2_hd_deflate_hd(r->deflater, block, sizeof(block),
                                  (nghttp2_nv[]) { { (uint8_t *) ":status", (uint8_t *) "103", 7, 3, 0 } }, 1);
        ASSERT_GT(l, 0);
        raw_frame(r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, block, (size_t) l);
        l = nghttp2_hd_deflate_hd(r->deflater, block, sizeof(block),
                                  (nghttp2_nv[]) { { (uint8_t *) ":status", (uint8_t *) "200", 7, 3, 0 } }, 1);
        ASSERT_GT(l, 0);
        raw_frame(r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, block, (size_t) l);
        raw_frame(r, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "hi", 2);
        raw_flush(r, env.event);

        ASSERT_TRUE(fixture_run_until(env.event, &req.ended, 5 * USEC_PER_SEC));
        ASSERT_STREQ(req.status, "200");
        ASSERT_EQ(req.response_len, 2);
        ASSERT_MEMEQ(req.response, "hi", 2);

        raw_free(r);
        h2_session_unref(cli.session);
        fixture_env_done(&env);
}

/* A server that takes its time before attaching to a request (a CONNECT still dialing its target). */
typedef struct Pending {
        H2Stream *stream;
        unsigned n;
} Pending;

static int pending_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        Pending *p = userdata;

        p->stream = st;
        p->n++;
        return 0; /* no owner attached yet, no response yet */
}

static bool pending_seen(void *userdata) {
        return ((Pending *) userdata)->n > 0;
}

TEST(requests_without_an_owner_yet) {
        static Client cli;
        static Request with_body, bodyless;
        static Pending pending;
        static uint8_t body[] = "early bytes";
        TlsConnection *st, *ct;
        H2Session *srv = NULL;
        FixtureEnv env;

        fixture_env_init(&env);
        fixture_env_tls_pair(&env, &st, &ct);
        ASSERT_OK(h2_session_new(st, NULL, &(H2SessionCallbacks) { .on_request = pending_on_request }, &pending, &srv));
        ASSERT_OK(h2_session_new(ct, NULL, &client_callbacks, &cli, &cli.session));

        /* Body bytes before anyone can take them: the stream is refused, not silently emptied. */
        with_body = (Request) { .body = body, .body_len = sizeof(body) - 1, .end_after_body = true };
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), false,
                                         &request_callbacks, &with_body, NULL));
        ASSERT_TRUE(fixture_run_until(env.event, &with_body.closed, 5 * USEC_PER_SEC));
        ASSERT_EQ(with_body.close_code, H2_REFUSED_STREAM);

        /* END_STREAM before anyone attached is remembered for the owner that comes later. */
        pending = (Pending) {};
        bodyless = (Request) {};
        ASSERT_OK(h2_session_open_stream(cli.session, request_headers, ELEMENTSOF(request_headers), true,
                                         &request_callbacks, &bodyless, NULL));
        ASSERT_TRUE(fixture_run_until_func(env.event, pending_seen, &pending, 5 * USEC_PER_SEC));
        run_for(env.event, 50 * USEC_PER_MSEC);
        ASSERT_TRUE(h2_stream_is_peer_ended(pending.stream));
        ASSERT_FALSE(bodyless.closed);

        h2_session_unref(cli.session);
        h2_session_unref(srv);
        fixture_env_done(&env);
}
