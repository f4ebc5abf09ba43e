/* SPDX-License-Identifier: Apache-2.0 */

/* Our side of the interoperability tests with a stock gRPC implementation (grpc-js; driven by
 * tests/integration/test_grpc_interop.py):
 *
 *   grpc-peer certs DIR                          a PKI made by our production CA, as PEM files in DIR
 *   grpc-peer serve DIR [--no-client-cert-ok]    the Interop service (interop.proto) on 127.0.0.1 with our
 *                                                GrpcServer; prints "PORT <n>", runs until SIGTERM/SIGINT
 *   grpc-peer call DIR PORT TEST [--server-id ID]
 *                                                one call with our GrpcClientCall; TEST is unary, status,
 *                                                deadline, bidi, unknown or large. Prints what it
 *                                                observed, one "KEY value" line each, and exits 0 when
 *                                                that is what the test expects, 1 otherwise.
 *
 * Everything runs in one sd-event loop: delays are timers, never sleeps. */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>

#include "crypto-bundle.h"
#include "crypto-ca.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "fileio.h"
#include "interop.pb-c.h"
#include "log.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "parse-util.h"
#include "string-util.h"

#define TRUST_DOMAIN "ztna.test"
#define SERVER_ROLE SPIFFE_ROLE_CONTROLLER
#define SERVER_NAME "ctl-1"
#define CLIENT_ROLE SPIFFE_ROLE_TUNNELER
#define CLIENT_NAME "tun-1"
#define SERVER_ID "spiffe://" TRUST_DOMAIN "/controller/" SERVER_NAME
#define CLIENT_ID "spiffe://" TRUST_DOMAIN "/tunneler/" CLIENT_NAME

#define METHOD_UNARY "/ztna.interop.Interop/Unary"
#define METHOD_BIDI "/ztna.interop.Interop/Bidi"
#define METHOD_UNKNOWN "/ztna.interop.Interop/Nope"

#define CA_LIFETIME (30 * USEC_PER_DAY)
#define LEAF_LIFETIME USEC_PER_DAY
/* Largest certificate or key file we read. */
#define PEM_FILE_MAX (64U * 1024U)
/* Connections the server holds at once (handshaking or established); more are closed at accept. */
#define SERVER_CONNECTIONS_MAX 64U
/* Requests one Bidi call may have waiting for their answers. */
#define ECHO_QUEUE_MAX 1024U
/* Longest delay a request may ask for. */
#define ECHO_DELAY_MAX_MS 60000U
/* The whole of one client test, connect to final status. */
#define CALL_TEST_TIMEOUT (15 * USEC_PER_SEC)
/* The graceful close after the call. */
#define SHUTDOWN_TIMEOUT (3 * USEC_PER_SEC)
#define BIDI_MESSAGES 100U
#define DEADLINE_DELAY_MS 3000U
#define DEADLINE_TIMEOUT (300 * USEC_PER_MSEC)
/* A deadline must end the call well before the server's delay: within this. */
#define DEADLINE_SLACK (700 * USEC_PER_MSEC)
/* Many DATA frames and window updates each way, under the 4 MiB message limit of both implementations. */
#define LARGE_PAYLOAD_SIZE (3U * 1024U * 1024U)

/* Non-ASCII text and '%' in both directions of grpc-message's percent-encoding. */
#define STATUS_MESSAGE "nope: caf\xc3\xa9 \xe2\x82\xac 100% %41 \xf0\x9f\x94\x92"

/* ---- files ----------------------------------------------------------------------------------------- */

static int write_file_in(const char *dir, const char *name, const char *data, mode_t mode) {
        _cleanup_free_ char *path = NULL;

        path = strjoin(dir, "/", name, NULL);
        if (!path)
                return -ENOMEM;
        return write_file_atomic(path, data, strlen(data), mode);
}

static int read_file_in(const char *dir, const char *name, bool secret, char **ret, size_t *ret_size) {
        _cleanup_free_ char *path = NULL;

        path = strjoin(dir, "/", name, NULL);
        if (!path)
                return -ENOMEM;
        if (secret)
                return read_full_file_secret(path, PEM_FILE_MAX, ret, ret_size);
        return read_full_file(path, PEM_FILE_MAX, ret, ret_size);
}

/* Writes <name>.pem (the leaf), <name>-chain.pem (leaf + issuing CA: what a TLS peer sends) and
 * <name>.key. */
static int issue_leaf(const CertificateAuthority *issuing, SpiffeRole role, const char *id, char **dns_names,
                      char **ip_addresses, const char *dir, const char *name) {
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *cert = NULL;
        _cleanup_free_ char *cert_pem = NULL, *issuing_pem = NULL, *chain_pem = NULL, *file = NULL;
        char *key_pem = NULL;
        size_t key_size = 0;
        int r;

        r = spiffe_id_new_ztna(TRUST_DOMAIN, role, id, &sid);
        if (r < 0)
                return r;
        r = crypto_key_generate(KEY_TYPE_ECDSA_P256, &key);
        if (r < 0)
                return r;
        r = ca_issue_leaf(issuing,
                          &(LeafParams) {
                                  .id = sid,
                                  .public_key = key,
                                  .lifetime = LEAF_LIFETIME,
                                  .dns_names = dns_names,
                                  .ip_addresses = ip_addresses,
                          },
                          &cert);
        if (r < 0)
                return r;

        r = crypto_x509_to_pem(cert, &cert_pem);
        if (r < 0)
                return r;
        r = crypto_x509_to_pem(ca_get_certificate(issuing), &issuing_pem);
        if (r < 0)
                return r;
        chain_pem = strjoin(cert_pem, issuing_pem, NULL);
        if (!chain_pem)
                return -ENOMEM;

        file = strjoin(name, ".pem", NULL);
        if (!file)
                return -ENOMEM;
        r = write_file_in(dir, file, cert_pem, 0644);
        if (r < 0)
                return r;
        free(file);
        file = strjoin(name, "-chain.pem", NULL);
        if (!file)
                return -ENOMEM;
        r = write_file_in(dir, file, chain_pem, 0644);
        if (r < 0)
                return r;

        r = crypto_key_to_pkcs8_pem(key, &key_pem, &key_size);
        if (r < 0)
                return r;
        free(file);
        file = strjoin(name, ".key", NULL);
        r = file ? write_file_in(dir, file, key_pem, 0600) : -ENOMEM;
        crypto_erase_and_free(key_pem, key_size);
        return r;
}

static int verb_certs(const char *dir) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL, *issuing = NULL;
        _cleanup_free_ char *root_pem = NULL, *issuing_pem = NULL;
        int r;

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create '%s': %m", dir);

        r = ca_new_root(TRUST_DOMAIN, KEY_TYPE_ECDSA_P256, CA_LIFETIME, 0, &root);
        if (r < 0)
                return log_error_errno(r, "Failed to create the root CA: %m");
        r = ca_new_issuing(root, KEY_TYPE_ECDSA_P256, CA_LIFETIME, 0, &issuing);
        if (r < 0)
                return log_error_errno(r, "Failed to create the issuing CA: %m");

        r = crypto_x509_to_pem(ca_get_certificate(root), &root_pem);
        if (r >= 0)
                r = write_file_in(dir, "root.pem", root_pem, 0644);
        if (r >= 0)
                r = crypto_x509_to_pem(ca_get_certificate(issuing), &issuing_pem);
        if (r >= 0)
                r = write_file_in(dir, "issuing.pem", issuing_pem, 0644);
        if (r < 0)
                return log_error_errno(r, "Failed to write the CA certificates to '%s': %m", dir);

        r = issue_leaf(issuing, SERVER_ROLE, SERVER_NAME, (char *[]) { (char *) "localhost", NULL },
                       (char *[]) { (char *) "127.0.0.1", NULL }, dir, "server");
        if (r < 0)
                return log_error_errno(r, "Failed to issue the server certificate: %m");
        r = issue_leaf(issuing, CLIENT_ROLE, CLIENT_NAME, NULL, NULL, dir, "client");
        if (r < 0)
                return log_error_errno(r, "Failed to issue the client certificate: %m");
        return 0;
}

/* A TLS context with the identity <name>-chain.pem + <name>.key, trusting root.pem, accepting policy. */
static int load_tls_context(const char *dir, TlsMode mode, const char *name, const TlsPeerPolicy *policy,
                            TlsContext **ret) {
        _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *leaf = NULL;
        _cleanup_free_ char *root_pem = NULL, *chain_pem = NULL, *file = NULL;
        char *key_pem = NULL;
        size_t size = 0, key_size = 0;
        int r;

        r = read_file_in(dir, "root.pem", false, &root_pem, &size);
        if (r < 0)
                return log_error_errno(r, "Failed to read '%s/root.pem': %m", dir);
        r = trust_bundle_from_pem(TRUST_DOMAIN, root_pem, size, &bundle);
        if (r < 0)
                return log_error_errno(r, "Failed to parse '%s/root.pem': %m", dir);

        file = strjoin(name, "-chain.pem", NULL);
        if (!file)
                return log_oom();
        r = read_file_in(dir, file, false, &chain_pem, &size);
        if (r < 0)
                return log_error_errno(r, "Failed to read '%s/%s': %m", dir, file);
        r = crypto_x509_chain_from_pem(chain_pem, size, &chain);
        if (r < 0)
                return log_error_errno(r, "Failed to parse '%s/%s': %m", dir, file);
        leaf = sk_X509_shift(chain);

        free(file);
        file = strjoin(name, ".key", NULL);
        if (!file)
                return log_oom();
        r = read_file_in(dir, file, true, &key_pem, &key_size);
        if (r < 0)
                return log_error_errno(r, "Failed to read '%s/%s': %m", dir, file);
        r = crypto_key_from_pkcs8_pem(key_pem, key_size, &key);
        crypto_erase_and_free(key_pem, key_size);
        if (r < 0)
                return log_error_errno(r, "Failed to parse '%s/%s': %m", dir, file);

        r = tls_context_new(mode, &ctx);
        if (r < 0)
                return log_error_errno(r, "Failed to create a TLS context: %m");
        r = tls_context_set_identity(ctx, leaf, chain, key);
        if (r < 0)
                return log_error_errno(r, "Failed to set the TLS identity: %m");
        r = tls_context_set_trust_bundle(ctx, bundle);
        if (r < 0)
                return log_error_errno(r, "Failed to set the trust bundle: %m");
        r = tls_context_set_peer_policy(ctx, policy);
        if (r < 0)
                return log_error_errno(r, "Failed to set the peer policy: %m");

        *ret = TAKE_PTR(ctx);
        return 0;
}

static int new_event_loop(sd_event **ret) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        sigset_t mask;
        int r;

        /* A peer that goes away mid-write must not kill us (net-tls.h). */
        if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
                return log_error_errno(errno, "Failed to ignore SIGPIPE: %m");
        /* sd_event_set_signal_exit() needs the signals blocked to turn them into events. */
        if (sigemptyset(&mask) < 0 || sigaddset(&mask, SIGTERM) < 0 || sigaddset(&mask, SIGINT) < 0 ||
            sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block SIGTERM and SIGINT: %m");

        r = sd_event_new(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        r = sd_event_set_signal_exit(e, true);
        if (r < 0)
                return log_error_errno(r, "Failed to exit on SIGTERM/SIGINT: %m");
        *ret = TAKE_PTR(e);
        return 0;
}

/* ---- server ---------------------------------------------------------------------------------------- */

typedef struct Server Server;
typedef struct Connection Connection;

struct Connection {
        Server *server;
        TlsConnection *tls;     /* while the handshake runs */
        H2Session *session;     /* afterwards */
        Connection *prev, *next;
};

struct Server {
        sd_event *event;
        TlsContext *tls;
        GrpcServer *grpc;
        int listen_fd;
        sd_event_source *listen_source;
        Connection *connections;
        size_t n_connections;
};

/* One call's requests in arrival order, each answered after its delay, one after the other. */
typedef struct Echo {
        Server *server;
        GrpcCall *call;
        bool streaming;
        bool half_closed;
        bool waited;            /* the head's delay has passed */
        sd_event_source *timer;
        Ztna__Interop__EchoRequest *queue[ECHO_QUEUE_MAX];
        size_t n_queue;
} Echo;

static Echo *echo_free(Echo *e) {
        if (!e)
                return NULL;
        sd_event_source_disable_unref(e->timer);
        for (size_t i = 0; i < e->n_queue; i++)
                grpc_message_free(&e->queue[i]->base);
        return mfree(e);
}

static void echo_pop(Echo *e) {
        assert(e->n_queue > 0);
        grpc_message_free(&e->queue[0]->base);
        memmove(e->queue, e->queue + 1, (e->n_queue - 1) * sizeof(e->queue[0]));
        e->n_queue--;
        e->waited = false;
}

static int echo_process(Echo *e);

static int on_echo_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        Echo *e = userdata;
        int r;

        e->timer = sd_event_source_disable_unref(e->timer);
        e->waited = true;
        r = echo_process(e);
        if (r < 0)
                (void) grpc_call_finish_errno(e->call, r, "failed to answer");
        return 0;
}

/* Answers queued requests until one has to wait; ends the call when it is complete. */
static int echo_process(Echo *e) {
        const SpiffeId *peer = grpc_call_get_peer(e->call);
        int r;

        while (e->n_queue > 0) {
                Ztna__Interop__EchoReply reply = ZTNA__INTEROP__ECHO_REPLY__INIT;
                Ztna__Interop__EchoRequest *req = e->queue[0];

                if (req->delay_ms > 0 && !e->waited) {
                        if (e->timer)
                                return 0;
                        r = sd_event_add_time_relative(e->server->event, &e->timer, CLOCK_MONOTONIC,
                                                       (usec_t) req->delay_ms * USEC_PER_MSEC, USEC_PER_MSEC,
                                                       on_echo_timer, e);
                        if (r < 0)
                                return r;
                        (void) sd_event_source_set_description(e->timer, "echo-delay");
                        return 0;
                }

                if (req->fail_code != 0) {
                        GrpcStatus status = (GrpcStatus) req->fail_code;

                        if (req->fail_code >= _GRPC_STATUS_MAX)
                                r = grpc_call_finish(e->call, GRPC_STATUS_INVALID_ARGUMENT,
                                                     "fail_code out of range");
                        else
                                r = grpc_call_finish(e->call, status, req->fail_message);
                        while (e->n_queue > 0)
                                echo_pop(e);
                        return r;
                }

                reply.payload = req->payload;
                reply.peer_id = (char *) (peer ? peer->uri : "");
                r = grpc_call_send(e->call, &reply.base);
                echo_pop(e);
                if (r < 0)
                        return r;
                if (!e->streaming)
                        return grpc_call_finish(e->call, GRPC_STATUS_OK, NULL);
        }
        if (e->streaming && e->half_closed)
                return grpc_call_finish(e->call, GRPC_STATUS_OK, NULL);
        return 0;
}

static int echo_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        Ztna__Interop__EchoRequest *req = (Ztna__Interop__EchoRequest *) msg;
        Echo *e = grpc_call_get_userdata(call);

        if (!e) {
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                *e = (Echo) {
                        .server = userdata,
                        .call = call,
                        .streaming = streq(grpc_call_get_path(call), METHOD_BIDI),
                };
                grpc_call_set_userdata(call, e);
        }
        if (e->n_queue >= ECHO_QUEUE_MAX)
                return -ENOBUFS;
        if (req->delay_ms > ECHO_DELAY_MAX_MS)
                return -ERANGE;
        e->queue[e->n_queue++] = (Ztna__Interop__EchoRequest *) TAKE_PTR(owned);
        return echo_process(e);
}

static void echo_on_half_close(GrpcCall *call, void *userdata) {
        Echo *e = grpc_call_get_userdata(call);
        int r;

        /* A Bidi call without any request still ends properly. */
        if (!e) {
                (void) grpc_call_finish(call, GRPC_STATUS_OK, NULL);
                return;
        }
        e->half_closed = true;
        r = echo_process(e);
        if (r < 0)
                (void) grpc_call_finish_errno(call, r, "failed to answer");
}

static void echo_on_done(GrpcCall *call, void *userdata) {
        echo_free(grpc_call_get_userdata(call));
        grpc_call_set_userdata(call, NULL);
}

static const GrpcMethod interop_methods[] = {
        {
                .path = METHOD_UNARY,
                .input = &ztna__interop__echo_request__descriptor,
                .on_message = echo_on_message,
                .on_half_close = echo_on_half_close,
                .on_done = echo_on_done,
        },
        {
                .path = METHOD_BIDI,
                .input = &ztna__interop__echo_request__descriptor,
                .flags = GRPC_METHOD_CLIENT_STREAMING,
                .on_message = echo_on_message,
                .on_half_close = echo_on_half_close,
                .on_done = echo_on_done,
        },
};

static Connection *connection_free(Connection *c) {
        if (!c)
                return NULL;
        if (c->prev)
                c->prev->next = c->next;
        else
                c->server->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->server->n_connections--;
        tls_connection_free(c->tls);
        h2_session_unref(c->session);
        return mfree(c);
}

static int on_request(H2Session *s, H2Stream *stream, const H2Headers *h, void *userdata) {
        Connection *c = userdata;

        /* Anything that is not gRPC is refused (RST_STREAM REFUSED_STREAM). */
        return grpc_server_handle(c->server->grpc, stream, h);
}

static void on_session_close(H2Session *s, int error, void *userdata) {
        Connection *c = userdata;

        if (error < 0)
                log_info_errno(error, "Session with %s closed: %m",
                               tls_connection_get_peer_address(h2_session_get_tls(s)));
        connection_free(c);
}

static const H2SessionCallbacks server_session_callbacks = {
        .on_request = on_request,
        .on_close = on_session_close,
};

static void on_server_handshake(TlsConnection *tls, int error, void *userdata) {
        Connection *c = userdata;
        int r;

        if (error < 0) {
                log_info_errno(error, "TLS handshake with %s failed: %s", tls_connection_get_peer_address(tls),
                               strna(tls_connection_get_error_reason(tls)));
                connection_free(c);
                return;
        }
        r = h2_session_new(TAKE_PTR(c->tls), NULL, &server_session_callbacks, c, &c->session);
        if (r < 0) {
                log_error_errno(r, "Failed to start an HTTP/2 session: %m");
                connection_free(c);
        }
}

static const TlsConnectionCallbacks server_tls_callbacks = { .on_handshake = on_server_handshake };

static int on_listen(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Server *s = userdata;

        for (;;) {
                _cleanup_close_ int cfd = -EBADF;
                Connection *c;
                int r;

                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(errno, "Failed to accept a connection, ignoring: %m");
                        return 0;
                }
                if (s->n_connections >= SERVER_CONNECTIONS_MAX) {
                        log_warning("Too many connections, refusing one.");
                        continue;
                }
                c = calloc(1, sizeof(*c));
                if (!c)
                        return log_oom();
                *c = (Connection) { .server = s, .next = s->connections };
                if (s->connections)
                        s->connections->prev = c;
                s->connections = c;
                s->n_connections++;
                r = tls_connection_new(s->tls, s->event, TAKE_FD(cfd), &server_tls_callbacks, c, &c->tls);
                if (r < 0) {
                        log_warning_errno(r, "Failed to set up TLS for a connection, ignoring: %m");
                        connection_free(c);
                }
        }
}

static int server_listen(Server *s, uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        int r;

        s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->listen_fd < 0)
                return -errno;
        if (bind(s->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(s->listen_fd, 64) < 0 ||
            getsockname(s->listen_fd, (struct sockaddr *) &sa, &l) < 0)
                return -errno;
        r = sd_event_add_io(s->event, &s->listen_source, s->listen_fd, EPOLLIN, on_listen, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->listen_source, "interop-listen");
        *ret_port = ntohs(sa.sin_port);
        return 0;
}

static void server_done(Server *s) {
        /* The gRPC server first: it detaches its calls from the streams the sessions are about to drop. */
        s->grpc = grpc_server_free(s->grpc);
        while (s->connections)
                connection_free(s->connections);
        s->listen_source = sd_event_source_disable_unref(s->listen_source);
        s->listen_fd = safe_close(s->listen_fd);
        s->tls = tls_context_unref(s->tls);
        s->event = sd_event_unref(s->event);
}

static int verb_serve(const char *dir, bool no_client_cert_ok) {
        _cleanup_(server_done) Server s = { .listen_fd = -EBADF };
        uint16_t port = 0;
        int r;

        r = new_event_loop(&s.event);
        if (r < 0)
                return r;
        r = load_tls_context(dir, TLS_MODE_SERVER, "server", &(TlsPeerPolicy) { .role = CLIENT_ROLE },
                             &s.tls);
        if (r < 0)
                return r;
        if (no_client_cert_ok) {
                r = tls_context_set_client_certificate_required(s.tls, false);
                if (r < 0)
                        return log_error_errno(r, "Failed to make client certificates optional: %m");
        }
        r = grpc_server_new(interop_methods, ELEMENTSOF(interop_methods), 0, &s, &s.grpc);
        if (r < 0)
                return log_error_errno(r, "Failed to create the gRPC server: %m");
        r = server_listen(&s, &port);
        if (r < 0)
                return log_error_errno(r, "Failed to listen on 127.0.0.1: %m");

        printf("PORT %u\n", port);
        fflush(stdout);

        r = sd_event_loop(s.event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}

/* ---- client ---------------------------------------------------------------------------------------- */

typedef enum CallTest {
        CALL_TEST_UNARY,
        CALL_TEST_STATUS,
        CALL_TEST_DEADLINE,
        CALL_TEST_BIDI,
        CALL_TEST_UNKNOWN,
        CALL_TEST_LARGE,
        _CALL_TEST_MAX,
        _CALL_TEST_INVALID = -EINVAL,
} CallTest;

static const char *const call_test_table[_CALL_TEST_MAX] = {
        [CALL_TEST_UNARY] = "unary",
        [CALL_TEST_STATUS] = "status",
        [CALL_TEST_DEADLINE] = "deadline",
        [CALL_TEST_BIDI] = "bidi",
        [CALL_TEST_UNKNOWN] = "unknown",
        [CALL_TEST_LARGE] = "large",
};

static CallTest call_test_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(call_test_table); i++)
                if (streq(call_test_table[i], s))
                        return (CallTest) i;
        return _CALL_TEST_INVALID;
}

typedef struct Client {
        sd_event *event;
        CallTest test;
        uint16_t port;
        TlsConnection *tls;
        H2Session *session;
        GrpcClientCall *call;
        sd_event_source *watchdog;
        usec_t started;
        unsigned n_sent, n_replies;
        bool replies_match;     /* every reply carried the payload expected at its position */
        char *peer_id;          /* from the last reply */
        uint8_t *large;         /* the payload of the large test */
        bool finished;
        bool timed_out;
        int exit_code;
} Client;

/* A payload that is not text: NUL, high bytes, and the index so that order is checked. */
static void client_payload(unsigned i, uint8_t buf[static 16], size_t *ret_size) {
        static const uint8_t prefix[] = { 0x00, 0xff, 0x7f, 0x80, 'z', 't', 'n', 'a' };

        memcpy(buf, prefix, sizeof(prefix));
        buf[8] = (uint8_t) (i >> 8);
        buf[9] = (uint8_t) i;
        *ret_size = 10;
}

static int client_send(Client *c, const Ztna__Interop__EchoRequest *req) {
        int r;

        r = grpc_client_call_send(c->call, &req->base);
        if (r < 0)
                return r;
        c->n_sent++;
        return 0;
}

static int client_send_echo(Client *c, unsigned i) {
        Ztna__Interop__EchoRequest req = ZTNA__INTEROP__ECHO_REQUEST__INIT;
        uint8_t buf[16];
        size_t size;

        client_payload(i, buf, &size);
        req.payload = (ProtobufCBinaryData) { .data = buf, .len = size };
        return client_send(c, &req);
}

static int on_reply(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        Ztna__Interop__EchoReply *reply = (Ztna__Interop__EchoReply *) owned;
        Client *c = userdata;
        uint8_t buf[16];
        size_t size;
        int r;

        if (c->test == CALL_TEST_LARGE) {
                if (reply->payload.len != LARGE_PAYLOAD_SIZE ||
                    memcmp(reply->payload.data, c->large, LARGE_PAYLOAD_SIZE) != 0)
                        c->replies_match = false;
        } else {
                client_payload(c->n_replies, buf, &size);
                if (reply->payload.len != size || memcmp(reply->payload.data, buf, size) != 0)
                        c->replies_match = false;
        }
        c->n_replies++;
        r = free_and_strdup(&c->peer_id, reply->peer_id);
        if (r < 0)
                return r;

        /* Bidi is a conversation: each answer triggers the next request, the last one the half-close. */
        if (c->test == CALL_TEST_BIDI) {
                if (c->n_sent < BIDI_MESSAGES)
                        return client_send_echo(c, c->n_sent);
                if (c->n_replies == BIDI_MESSAGES)
                        return grpc_client_call_close_send(call);
        }
        return 0;
}

static bool client_verdict(Client *c, GrpcStatus status, const char *message, usec_t elapsed) {
        switch (c->test) {
        case CALL_TEST_UNARY:
        case CALL_TEST_LARGE:
                return status == GRPC_STATUS_OK && c->n_replies == 1 && c->replies_match &&
                       streq_ptr(c->peer_id, CLIENT_ID);
        case CALL_TEST_STATUS:
                return status == GRPC_STATUS_PERMISSION_DENIED && c->n_replies == 0 &&
                       streq_ptr(message, STATUS_MESSAGE);
        case CALL_TEST_DEADLINE:
                return status == GRPC_STATUS_DEADLINE_EXCEEDED && c->n_replies == 0 &&
                       elapsed < DEADLINE_TIMEOUT + DEADLINE_SLACK;
        case CALL_TEST_BIDI:
                return status == GRPC_STATUS_OK && c->n_replies == BIDI_MESSAGES && c->replies_match &&
                       streq_ptr(c->peer_id, CLIENT_ID);
        case CALL_TEST_UNKNOWN:
                return status == GRPC_STATUS_UNIMPLEMENTED && c->n_replies == 0;
        default:
                assert(false);
                return false;
        }
}

static void on_call_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        Client *c = userdata;
        usec_t elapsed = now(CLOCK_MONOTONIC) - c->started;
        bool ok;

        c->call = NULL;
        c->finished = true;
        ok = !c->timed_out && client_verdict(c, status, message, elapsed);

        printf("STATUS %i %s\n", (int) status, strna(grpc_status_to_string(status)));
        printf("MESSAGE %s\n", strempty(message));
        printf("REPLIES %u\n", c->n_replies);
        printf("PAYLOADS %s\n", c->replies_match ? "match" : "differ");
        printf("PEER_ID %s\n", strempty(c->peer_id));
        printf("ELAPSED_MS %llu\n", (unsigned long long) (elapsed / USEC_PER_MSEC));
        printf("RESULT %s\n", ok ? "pass" : "fail");
        fflush(stdout);

        /* Leave the way a well-behaved client does: GOAWAY, then the session closes (on_close exits). */
        c->exit_code = ok ? 0 : 1;
        if (c->timed_out || h2_session_shutdown(c->session) < 0 ||
            sd_event_source_set_time_relative(c->watchdog, SHUTDOWN_TIMEOUT) < 0)
                (void) sd_event_exit(c->event, c->exit_code);
}

static const GrpcClientCallbacks client_call_callbacks = {
        .on_message = on_reply,
        .on_finish = on_call_finish,
};

static int client_start_call(Client *c) {
        Ztna__Interop__EchoRequest req = ZTNA__INTEROP__ECHO_REQUEST__INIT;
        const char *path = c->test == CALL_TEST_BIDI      ? METHOD_BIDI
                           : c->test == CALL_TEST_UNKNOWN ? METHOD_UNKNOWN
                                                          : METHOD_UNARY;
        usec_t timeout = c->test == CALL_TEST_DEADLINE ? DEADLINE_TIMEOUT : 5 * USEC_PER_SEC;
        char authority[sizeof("localhost:65535")];
        uint8_t buf[16];
        size_t size;
        int r;

        snprintf(authority, sizeof(authority), "localhost:%u", c->port);
        c->started = now(CLOCK_MONOTONIC);
        r = grpc_client_call_start(c->session, authority, path, &ztna__interop__echo_reply__descriptor, 0,
                                   timeout, &client_call_callbacks, c, &c->call);
        if (r < 0)
                return r;

        if (c->test == CALL_TEST_BIDI)
                return client_send_echo(c, 0);

        client_payload(0, buf, &size);
        req.payload = (ProtobufCBinaryData) { .data = buf, .len = size };
        if (c->test == CALL_TEST_LARGE)
                req.payload = (ProtobufCBinaryData) { .data = c->large, .len = LARGE_PAYLOAD_SIZE };
        else if (c->test == CALL_TEST_STATUS) {
                req.fail_code = GRPC_STATUS_PERMISSION_DENIED;
                req.fail_message = (char *) STATUS_MESSAGE;
        } else if (c->test == CALL_TEST_DEADLINE)
                req.delay_ms = DEADLINE_DELAY_MS;
        r = client_send(c, &req);
        if (r < 0)
                return r;
        return grpc_client_call_close_send(c->call);
}

static void on_client_session_close(H2Session *s, int error, void *userdata) {
        Client *c = userdata;

        /* Calls end first (their on_finish reports); a session that dies before is a failure. */
        if (!c->finished) {
                printf("SESSION CLOSED %s\n", strerror(ERRNO_VALUE(error)));
                fflush(stdout);
                c->exit_code = 1;
        }
        (void) sd_event_exit(c->event, c->exit_code);
}

static const H2SessionCallbacks client_session_callbacks = { .on_close = on_client_session_close };

static void on_client_handshake(TlsConnection *tls, int error, void *userdata) {
        Client *c = userdata;
        int r;

        if (error < 0) {
                printf("HANDSHAKE FAILED %s\n", strna(tls_connection_get_error_reason(tls)));
                fflush(stdout);
                c->tls = tls_connection_free(c->tls);
                (void) sd_event_exit(c->event, 1);
                return;
        }
        r = h2_session_new(TAKE_PTR(c->tls), NULL, &client_session_callbacks, c, &c->session);
        if (r >= 0)
                r = client_start_call(c);
        if (r < 0) {
                log_error_errno(r, "Failed to start the call: %m");
                (void) sd_event_exit(c->event, 1);
        }
}

static const TlsConnectionCallbacks client_tls_callbacks = { .on_handshake = on_client_handshake };

static int on_watchdog(sd_event_source *source, uint64_t usec, void *userdata) {
        Client *c = userdata;

        printf(c->finished ? "SHUTDOWN TIMEOUT\n" : "TIMEOUT\n");
        fflush(stdout);
        /* Cancelling is asynchronous: give the call a moment to report what it saw (on_finish exits) and
         * free itself; a second expiry gives up. */
        if (c->call && !c->timed_out) {
                c->timed_out = true;
                grpc_client_call_cancel(c->call);
                return sd_event_source_set_time_relative(source, 2 * USEC_PER_SEC);
        }
        return sd_event_exit(c->event, 1);
}

static void client_done(Client *c) {
        c->session = h2_session_unref(c->session);
        c->tls = tls_connection_free(c->tls);
        c->watchdog = sd_event_source_disable_unref(c->watchdog);
        c->peer_id = mfree(c->peer_id);
        c->large = mfree(c->large);
        c->event = sd_event_unref(c->event);
}

static int verb_call(const char *dir, const char *port_string, const char *test, const char *server_id) {
        _cleanup_(client_done) Client c = { .replies_match = true };
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;
        int r, code;

        c.test = call_test_from_string(test);
        if (c.test < 0)
                return log_error_errno(EINVAL, "Unknown test '%s'.", test);
        r = parse_port(port_string, &c.port);
        if (r < 0)
                return log_error_errno(r, "Invalid port '%s': %m", port_string);
        if (c.test == CALL_TEST_LARGE) {
                c.large = malloc(LARGE_PAYLOAD_SIZE);
                if (!c.large)
                        return log_oom();
                for (size_t i = 0; i < LARGE_PAYLOAD_SIZE; i++)
                        c.large[i] = (uint8_t) (i * 31 + 7);
        }

        r = new_event_loop(&c.event);
        if (r < 0)
                return r;
        r = load_tls_context(dir, TLS_MODE_CLIENT, "client",
                             &(TlsPeerPolicy) {
                                     .role = _SPIFFE_ROLE_INVALID,
                                     .ids = (char *[]) { (char *) server_id, NULL },
                             },
                             &ctx);
        if (r < 0)
                return r;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create a socket: %m");
        sa.sin_port = htons(c.port);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
                return log_error_errno(errno, "Failed to connect to 127.0.0.1:%u: %m", c.port);
        r = tls_connection_new(ctx, c.event, TAKE_FD(fd), &client_tls_callbacks, &c, &c.tls);
        if (r < 0)
                return log_error_errno(r, "Failed to set up TLS: %m");
        r = sd_event_add_time_relative(c.event, &c.watchdog, CLOCK_MONOTONIC, CALL_TEST_TIMEOUT,
                                       USEC_PER_MSEC, on_watchdog, &c);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the watchdog: %m");
        (void) sd_event_source_set_description(c.watchdog, "call-watchdog");

        code = sd_event_loop(c.event);
        if (code < 0)
                return log_error_errno(code, "Event loop failed: %m");
        return code == 0 ? 0 : -EREMOTEIO;
}

/* ---- main ------------------------------------------------------------------------------------------ */

static int help(void) {
        printf("Usage: grpc-peer certs DIR\n"
               "       grpc-peer serve DIR [--no-client-cert-ok]\n"
               "       grpc-peer call DIR PORT unary|status|deadline|bidi|unknown|large [--server-id ID]\n");
        return 0;
}

int main(int argc, char **argv) {
        int r;

        log_parse_environment();

        if (argc == 3 && streq(argv[1], "certs"))
                r = verb_certs(argv[2]);
        else if ((argc == 3 || argc == 4) && streq(argv[1], "serve")) {
                if (argc == 4 && !streq(argv[3], "--no-client-cert-ok")) {
                        log_error("Unknown option '%s'.", argv[3]);
                        return EXIT_FAILURE;
                }
                r = verb_serve(argv[2], argc == 4);
        } else if (argc == 5 && streq(argv[1], "call"))
                r = verb_call(argv[2], argv[3], argv[4], SERVER_ID);
        else if (argc == 7 && streq(argv[1], "call") && streq(argv[5], "--server-id"))
                r = verb_call(argv[2], argv[3], argv[4], argv[6]);
        else if (argc == 2 && (streq(argv[1], "--help") || streq(argv[1], "-h")))
                r = help();
        else {
                (void) help();
                return EXIT_FAILURE;
        }
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
