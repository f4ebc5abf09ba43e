/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "crypto-svid.h"
#include "crypto-util.h"
#include "log.h"
#include "net-tls.h"
#include "strv.h"

static const unsigned char alpn_h2[] = { 2, 'h', '2' };

DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);

/* What the verification callback of one SSL_CTX needs; owned by that SSL_CTX (ex_data), so that a
 * connection started before a hot swap keeps verifying against the configuration it started with. */
typedef struct TlsVerifyConfig {
        TrustBundle *bundle;
        bool have_pin;
        uint8_t pin[SHA256_DIGEST_SIZE];
        SpiffeRole role;
        char **ids;
        TlsAuthorizeFunc authorize;
        void *userdata;
        usec_t clock;
} TlsVerifyConfig;

struct TlsContext {
        unsigned n_ref;
        TlsMode mode;

        /* Configuration the next SSL_CTX is built from. */
        X509 *cert;
        STACK_OF(X509) *chain;
        EVP_PKEY *key;
        TrustBundle *bundle;
        bool have_pin;
        uint8_t pin[SHA256_DIGEST_SIZE];
        SpiffeRole role;
        char **ids;
        TlsAuthorizeFunc authorize;
        void *userdata;
        bool client_certificate_required;
        usec_t handshake_timeout;
        usec_t clock;

        SSL_CTX *ssl_ctx; /* built lazily from the above; NULL when the configuration changed */
        unsigned generation;
};

typedef enum TlsState {
        TLS_STATE_HANDSHAKE,
        TLS_STATE_ESTABLISHED,
        TLS_STATE_FAILED,
} TlsState;

struct TlsConnection {
        TlsContext *context;
        sd_event *event;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        int fd;
        SSL *ssl;
        TlsMode mode;
        TlsState state;

        TlsConnectionCallbacks callbacks;
        void *userdata;

        bool want_read, want_write;             /* what the owner asked for */
        bool read_wants_write, write_wants_read; /* what TLS itself needs */
        uint32_t events;
        bool enabled;

        SpiffeId *peer_id;
        char reason[TLS_REASON_MAX];
        char peer_address[INET6_ADDRSTRLEN + 16];
};

static int verify_config_index = -1;

static TlsVerifyConfig *verify_config_free(TlsVerifyConfig *v) {
        if (!v)
                return NULL;
        trust_bundle_free(v->bundle);
        strv_free(v->ids);
        return mfree(v);
}

static void verify_config_free_ex(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
        verify_config_free(ptr);
}

static int verify_config_index_get(void) {
        if (verify_config_index < 0) {
                verify_config_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, verify_config_free_ex);
                if (verify_config_index < 0)
                        return crypto_error(ENOMEM, "SSL_CTX_get_ex_new_index");
        }
        return verify_config_index;
}

int tls_context_new(TlsMode mode, TlsContext **ret) {
        TlsContext *c;

        assert(ret);
        assert(mode == TLS_MODE_CLIENT || mode == TLS_MODE_SERVER);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (TlsContext) {
                .n_ref = 1,
                .mode = mode,
                .role = _SPIFFE_ROLE_INVALID,
                .client_certificate_required = true,
                .handshake_timeout = TLS_HANDSHAKE_TIMEOUT_DEFAULT,
        };
        *ret = c;
        return 0;
}

TlsContext *tls_context_ref(TlsContext *c) {
        if (c)
                c->n_ref++;
        return c;
}

TlsContext *tls_context_unref(TlsContext *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        SSL_CTX_free(c->ssl_ctx);
        X509_free(c->cert);
        sk_X509_pop_free(c->chain, X509_free);
        EVP_PKEY_free(c->key);
        trust_bundle_free(c->bundle);
        strv_free(c->ids);
        OPENSSL_cleanse(c->pin, sizeof(c->pin));
        return mfree(c);
}

static void tls_context_invalidate(TlsContext *c) {
        /* Connections hold their own reference to the old SSL_CTX; only new ones see the change. */
        SSL_CTX_free(c->ssl_ctx);
        c->ssl_ctx = NULL;
        c->generation++;
}

int tls_context_set_identity(TlsContext *c, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key) {
        _cleanup_x509_stack_ STACK_OF(X509) *copy = NULL;

        assert(c);
        assert(cert);
        assert(key);

        ERR_clear_error();
        if (X509_check_private_key(cert, key) != 1)
                return crypto_error(EINVAL, "Certificate and private key do not match");
        if (chain) {
                copy = X509_chain_up_ref(chain);
                if (!copy)
                        return crypto_error(ENOMEM, "X509_chain_up_ref");
        }
        if (X509_up_ref(cert) != 1 || EVP_PKEY_up_ref(key) != 1)
                return crypto_error(EIO, "up_ref");

        X509_free(c->cert);
        sk_X509_pop_free(c->chain, X509_free);
        EVP_PKEY_free(c->key);
        c->cert = cert;
        c->key = key;
        c->chain = TAKE_PTR(copy);
        tls_context_invalidate(c);
        return 0;
}

int tls_context_set_trust_bundle(TlsContext *c, const TrustBundle *bundle) {
        _cleanup_(trust_bundle_freep) TrustBundle *copy = NULL;
        int r;

        assert(c);
        assert(bundle);

        r = trust_bundle_dup(bundle, &copy);
        if (r < 0)
                return r;
        trust_bundle_free(c->bundle);
        c->bundle = TAKE_PTR(copy);
        tls_context_invalidate(c);
        return 0;
}

int tls_context_set_root_pin(TlsContext *c, const uint8_t pin[static 32]) {
        assert(c);

        if (c->mode != TLS_MODE_CLIENT)
                return -EOPNOTSUPP;
        memcpy(c->pin, pin, sizeof(c->pin));
        c->have_pin = true;
        tls_context_invalidate(c);
        return 0;
}

int tls_context_set_peer_policy(TlsContext *c, const TlsPeerPolicy *policy) {
        _cleanup_strv_free_ char **ids = NULL;

        assert(c);
        assert(policy);

        if (policy->role != _SPIFFE_ROLE_INVALID && (policy->role < 0 || policy->role >= _SPIFFE_ROLE_MAX))
                return -EINVAL;
        if (policy->ids) {
                if (strv_length(policy->ids) > TLS_POLICY_IDS_MAX)
                        return -E2BIG;
                STRV_FOREACH(i, policy->ids)
                        if (spiffe_id_from_string(*i, NULL, NULL) < 0)
                                return -EINVAL;
                ids = strv_copy(policy->ids);
                if (!ids)
                        return -ENOMEM;
        }

        strv_free(c->ids);
        c->ids = TAKE_PTR(ids);
        c->role = policy->role;
        c->authorize = policy->authorize;
        c->userdata = policy->userdata;
        tls_context_invalidate(c);
        return 0;
}

int tls_context_set_client_certificate_required(TlsContext *c, bool required) {
        assert(c);

        if (c->mode != TLS_MODE_SERVER)
                return -EOPNOTSUPP;
        c->client_certificate_required = required;
        tls_context_invalidate(c);
        return 0;
}

void tls_context_set_handshake_timeout(TlsContext *c, usec_t timeout) {
        assert(c);
        c->handshake_timeout = timeout > 0 ? timeout : TLS_HANDSHAKE_TIMEOUT_DEFAULT;
}

void tls_context_set_clock(TlsContext *c, usec_t now) {
        assert(c);
        c->clock = now;
        tls_context_invalidate(c);
}

unsigned tls_context_get_generation(const TlsContext *c) {
        assert(c);
        return c->generation;
}

static TlsConnection *connection_from_store(X509_STORE_CTX *store) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());

        return ssl ? SSL_get_app_data(ssl) : NULL;
}

static void connection_set_reason(TlsConnection *c, const char *format, ...) _printf_(2, 3);
static void connection_set_reason(TlsConnection *c, const char *format, ...) {
        va_list ap;

        if (!c || c->reason[0]) /* keep the first, most specific reason */
                return;
        va_start(ap, format);
        (void) vsnprintf(c->reason, sizeof(c->reason), format, ap);
        va_end(ap);
}

/* With only a pin (enrollment), the trust anchor is the self-signed certificate the peer sent whose key
 * matches the pin; everything else about the chain is then verified exactly as with a bundle. */
static int bundle_from_pin(const TlsVerifyConfig *v, STACK_OF(X509) *presented, TrustBundle **ret) {
        for (int i = 0; i < sk_X509_num(presented); i++) {
                X509 *x = sk_X509_value(presented, i);
                uint8_t fp[SHA256_DIGEST_SIZE];
                _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
                _cleanup_(spiffe_id_freep) SpiffeId *td = NULL;
                int r;

                if (crypto_x509_spki_sha256(x, fp) < 0 || !crypto_memeq(fp, v->pin, sizeof(fp)))
                        continue;
                r = svid_get_trust_domain_of_ca(x, &td);
                if (r < 0)
                        return r;
                r = trust_bundle_new(td->trust_domain, &b);
                if (r < 0)
                        return r;
                r = trust_bundle_add(b, x);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(b);
                return 0;
        }
        return -ENOKEY;
}

static int verify_callback(X509_STORE_CTX *store, void *arg) {
        TlsConnection *c = connection_from_store(store);
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
        const TlsVerifyConfig *v = ssl ? SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), verify_config_index) : NULL;
        _cleanup_(trust_bundle_freep) TrustBundle *pinned = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *reason = NULL;
        X509 *leaf = X509_STORE_CTX_get0_cert(store);
        STACK_OF(X509) *presented = X509_STORE_CTX_get0_untrusted(store);
        const TrustBundle *bundle;
        const char *why = NULL;
        int r;

        if (!c || !v || !leaf) {
                X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
                return 0;
        }

        bundle = v->bundle;
        if (!bundle && v->have_pin) {
                r = bundle_from_pin(v, presented, &pinned);
                if (r < 0) {
                        connection_set_reason(c, "peer did not present a root matching the pinned CA fingerprint");
                        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_UNTRUSTED);
                        return 0;
                }
                bundle = pinned;
        }
        if (!bundle) {
                connection_set_reason(c, "no trust bundle configured");
                X509_STORE_CTX_set_error(store, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
                return 0;
        }

        r = svid_verify(bundle, leaf, presented, v->clock, &id, &reason);
        if (r < 0) {
                connection_set_reason(c, "%s", reason ?: "certificate rejected");
                X509_STORE_CTX_set_error(store, r == -EKEYEXPIRED ? X509_V_ERR_CERT_HAS_EXPIRED
                                                                  : X509_V_ERR_CERT_REJECTED);
                return 0;
        }

        if (v->role != _SPIFFE_ROLE_INVALID && id->role != v->role) {
                connection_set_reason(c, "peer '%s' is not a %s", id->uri, spiffe_role_to_string(v->role));
                X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
                return 0;
        }
        if (v->ids && !strv_contains(v->ids, id->uri)) {
                connection_set_reason(c, "peer '%s' is not one of the expected identities", id->uri);
                X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
                return 0;
        }
        if (v->authorize) {
                r = v->authorize(id, v->userdata, &why);
                if (r < 0) {
                        connection_set_reason(c, "peer '%s' not authorized: %s", id->uri, why ?: "refused");
                        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
                        return 0;
                }
        }

        spiffe_id_free(c->peer_id);
        c->peer_id = TAKE_PTR(id);
        return 1;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
        unsigned char *selected;

        if (SSL_select_next_proto(&selected, outlen, alpn_h2, sizeof(alpn_h2), in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
}

static int tls_context_build(TlsContext *c) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        TlsVerifyConfig *v;
        int idx, mode, r;

        if (c->ssl_ctx)
                return 0;
        if (c->mode == TLS_MODE_SERVER && (!c->cert || !c->key))
                return -ENOKEY;
        if (!c->bundle && !c->have_pin && (c->mode == TLS_MODE_CLIENT || c->client_certificate_required))
                return -ENOKEY;

        idx = verify_config_index_get();
        if (idx < 0)
                return idx;

        ERR_clear_error();
        ctx = SSL_CTX_new(c->mode == TLS_MODE_SERVER ? TLS_server_method() : TLS_client_method());
        if (!ctx)
                return crypto_error(ENOMEM, "SSL_CTX_new");

        if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
            SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
                return crypto_error(EIO, "Failed to restrict to TLS 1.3");
        /* No tickets, no session cache: every connection performs full certificate validation. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (c->mode == TLS_MODE_SERVER)
                (void) SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                      SSL_MODE_RELEASE_BUFFERS);
        /* Read ahead into a larger buffer: one read() then yields several records instead of two syscalls per
         * 16 KiB record. RELEASE_BUFFERS still frees it whenever a connection goes idle. */
        SSL_CTX_set_read_ahead(ctx, 1);
        SSL_CTX_set_default_read_buffer_len(ctx, TLS_READ_BUFFER_SIZE);
        if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256") != 1)
                return crypto_error(EIO, "Failed to set key exchange groups");

        if (c->cert) {
                if (SSL_CTX_use_certificate(ctx, c->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, c->key) != 1)
                        return crypto_error(EINVAL, "Failed to use certificate");
                for (int i = 0; c->chain && i < sk_X509_num(c->chain); i++)
                        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(c->chain, i)) != 1)
                                return crypto_error(EINVAL, "Failed to add chain certificate");
                if (SSL_CTX_check_private_key(ctx) != 1)
                        return crypto_error(EINVAL, "Private key does not match certificate");
        }

        mode = SSL_VERIFY_PEER;
        if (c->mode == TLS_MODE_SERVER && c->client_certificate_required)
                mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_cert_verify_callback(ctx, verify_callback, NULL);

        if (c->mode == TLS_MODE_SERVER)
                SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
        else if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)) != 0)
                return crypto_error(EIO, "Failed to set ALPN");

        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        *v = (TlsVerifyConfig) {
                .have_pin = c->have_pin,
                .role = c->role,
                .authorize = c->authorize,
                .userdata = c->userdata,
                .clock = c->clock,
        };
        memcpy(v->pin, c->pin, sizeof(v->pin));
        if (c->bundle) {
                r = trust_bundle_dup(c->bundle, &v->bundle);
                if (r < 0) {
                        verify_config_free(v);
                        return r;
                }
        }
        if (c->ids) {
                v->ids = strv_copy(c->ids);
                if (!v->ids) {
                        verify_config_free(v);
                        return -ENOMEM;
                }
        }
        if (SSL_CTX_set_ex_data(ctx, idx, v) != 1) {
                verify_config_free(v);
                return crypto_error(ENOMEM, "SSL_CTX_set_ex_data");
        }

        c->ssl_ctx = TAKE_PTR(ctx);
        return 0;
}

static void connection_update_events(TlsConnection *c) {
        uint32_t events = 0;
        bool enabled;

        if (!c->io_source)
                return;
        if (c->state == TLS_STATE_HANDSHAKE)
                events = EPOLLIN | (c->read_wants_write ? EPOLLOUT : 0);
        else if (c->state == TLS_STATE_ESTABLISHED) {
                if (c->want_read || c->write_wants_read)
                        events |= EPOLLIN;
                if (c->want_write || c->read_wants_write)
                        events |= EPOLLOUT;
        }
        enabled = events != 0;
        if (events != 0 && events != c->events) {
                if (sd_event_source_set_io_events(c->io_source, events) >= 0)
                        c->events = events;
        }
        if (enabled != c->enabled) {
                if (sd_event_source_set_enabled(c->io_source, enabled ? SD_EVENT_ON : SD_EVENT_OFF) >= 0)
                        c->enabled = enabled;
        }
}

/* The single place SSL_get_error() is mapped to an errno. */
static int connection_map_error(TlsConnection *c, int ret, bool reading) {
        int e = SSL_get_error(c->ssl, ret);

        switch (e) {
        case SSL_ERROR_WANT_READ:
                if (reading)
                        c->read_wants_write = false;
                else
                        c->write_wants_read = true;
                return -EAGAIN;
        case SSL_ERROR_WANT_WRITE:
                if (reading)
                        c->read_wants_write = true;
                return -EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        case SSL_ERROR_SYSCALL:
                if (errno == EAGAIN || errno == EINTR)
                        return -EAGAIN;
                connection_set_reason(c, "connection error: %s", errno != 0 ? strerror(errno) : "unexpected EOF");
                ERR_clear_error();
                return errno != 0 ? -errno : -ECONNRESET;
        default:
                connection_set_reason(c, "TLS error: %s", crypto_error_reason());
                return crypto_error(EPROTO, "TLS");
        }
}

static void connection_fail(TlsConnection *c, int error) {
        c->state = TLS_STATE_FAILED;
        c->timer_source = sd_event_source_disable_unref(c->timer_source);
        connection_update_events(c);
        if (c->callbacks.on_handshake)
                c->callbacks.on_handshake(c, error, c->userdata); /* may free c */
}

static void connection_handshake(TlsConnection *c) {
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        int r;

        ERR_clear_error();
        r = SSL_do_handshake(c->ssl);
        if (r != 1) {
                r = connection_map_error(c, r, true);
                if (r == -EAGAIN) {
                        connection_update_events(c);
                        return;
                }
                if (!c->reason[0] && SSL_get_verify_result(c->ssl) != X509_V_OK)
                        connection_set_reason(c, "%s",
                                              X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
                connection_set_reason(c, "handshake failed");
                log_debug("TLS handshake with %s failed: %s", c->peer_address, c->reason);
                return connection_fail(c, r == 0 ? -ECONNRESET : r);
        }

        SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
        if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
                connection_set_reason(c, "peer did not negotiate ALPN 'h2'");
                return connection_fail(c, -EPROTO);
        }
        if (c->mode == TLS_MODE_CLIENT && !c->peer_id) {
                /* Cannot happen with SSL_VERIFY_PEER, but identity is never assumed. */
                connection_set_reason(c, "server presented no certificate");
                return connection_fail(c, -EPROTO);
        }

        c->state = TLS_STATE_ESTABLISHED;
        c->timer_source = sd_event_source_disable_unref(c->timer_source);
        c->want_read = true;
        c->read_wants_write = c->write_wants_read = false;
        connection_update_events(c);
        log_debug("TLS handshake with %s done, peer %s", c->peer_address,
                  c->peer_id ? c->peer_id->uri : "without certificate");
        if (c->callbacks.on_handshake)
                c->callbacks.on_handshake(c, 0, c->userdata);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        TlsConnection *c = userdata;

        if (c->state == TLS_STATE_HANDSHAKE)
                connection_handshake(c);
        else if (c->state == TLS_STATE_ESTABLISHED && c->callbacks.on_io)
                c->callbacks.on_io(c, c->userdata);
        else
                connection_update_events(c);
        return 0;
}

static int on_handshake_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        TlsConnection *c = userdata;
        char buf[FORMAT_TIMESPAN_MAX];

        connection_set_reason(c, "handshake timed out after %s",
                              format_timespan(buf, sizeof(buf), c->context->handshake_timeout, USEC_PER_MSEC));
        connection_fail(c, -ETIMEDOUT);
        return 0;
}

static void format_peer_address(int fd, char *buf, size_t size) {
        struct sockaddr_storage sa;
        socklen_t l = sizeof(sa);
        char a[INET6_ADDRSTRLEN];

        if (getpeername(fd, (struct sockaddr *) &sa, &l) < 0) {
                snprintf(buf, size, "(unknown peer)");
                return;
        }
        if (sa.ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) &sa;
                inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
                snprintf(buf, size, "%s:%u", a, ntohs(in->sin_port));
        } else if (sa.ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) &sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
                snprintf(buf, size, "[%s]:%u", a, ntohs(in6->sin6_port));
        } else
                snprintf(buf, size, "(local peer)");
}

int tls_connection_new(TlsContext *ctx, sd_event *event, int fd, const TlsConnectionCallbacks *callbacks,
                       void *userdata, TlsConnection **ret) {
        _cleanup_close_ int owned_fd = fd;
        _cleanup_(tls_connection_freep) TlsConnection *c = NULL;
        int r;

        assert(ctx);
        assert(event);
        assert(fd >= 0);
        assert(callbacks);
        assert(ret);

        r = tls_context_build(ctx);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (TlsConnection) {
                .context = tls_context_ref(ctx),
                .event = sd_event_ref(event),
                .fd = TAKE_FD(owned_fd),
                .mode = ctx->mode,
                .state = TLS_STATE_HANDSHAKE,
                .callbacks = *callbacks,
                .userdata = userdata,
        };
        format_peer_address(c->fd, c->peer_address, sizeof(c->peer_address));

        ERR_clear_error();
        c->ssl = SSL_new(ctx->ssl_ctx);
        if (!c->ssl)
                return crypto_error(ENOMEM, "SSL_new");
        if (SSL_set_fd(c->ssl, c->fd) != 1)
                return crypto_error(EIO, "SSL_set_fd");
        SSL_set_app_data(c->ssl, c);
        if (ctx->mode == TLS_MODE_SERVER)
                SSL_set_accept_state(c->ssl);
        else
                SSL_set_connect_state(c->ssl);

        /* Client: a connecting socket becomes writable when connected; the first handshake step then
         * writes the ClientHello. Server: wait for the ClientHello. */
        c->events = ctx->mode == TLS_MODE_CLIENT ? EPOLLOUT : EPOLLIN;
        c->read_wants_write = ctx->mode == TLS_MODE_CLIENT;
        r = sd_event_add_io(event, &c->io_source, c->fd, c->events, on_io, c);
        if (r < 0)
                return r;
        c->enabled = true;
        (void) sd_event_source_set_description(c->io_source, "tls-connection");

        r = sd_event_add_time_relative(event, &c->timer_source, CLOCK_MONOTONIC, ctx->handshake_timeout,
                                       10 * USEC_PER_MSEC, on_handshake_timeout, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->timer_source, "tls-handshake-timeout");

        *ret = TAKE_PTR(c);
        return 0;
}

TlsConnection *tls_connection_free(TlsConnection *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->io_source);
        sd_event_source_disable_unref(c->timer_source);
        SSL_free(c->ssl);
        safe_close(c->fd);
        spiffe_id_free(c->peer_id);
        sd_event_unref(c->event);
        tls_context_unref(c->context);
        return mfree(c);
}

void tls_connection_set_callbacks(TlsConnection *c, const TlsConnectionCallbacks *callbacks, void *userdata) {
        assert(c);
        assert(callbacks);
        c->callbacks = *callbacks;
        c->userdata = userdata;
}

ssize_t tls_connection_read(TlsConnection *c, void *buf, size_t size) {
        int n;

        assert(c);

        if (c->state != TLS_STATE_ESTABLISHED)
                return -ENOTCONN;
        ERR_clear_error();
        n = SSL_read(c->ssl, buf, (int) MIN(size, (size_t) INT_MAX));
        if (n > 0) {
                c->read_wants_write = false;
                connection_update_events(c);
                return n;
        }
        n = connection_map_error(c, n, true);
        connection_update_events(c);
        return n;
}

ssize_t tls_connection_write(TlsConnection *c, const void *buf, size_t size) {
        int n;

        assert(c);

        if (c->state != TLS_STATE_ESTABLISHED)
                return -ENOTCONN;
        if (size == 0)
                return 0;
        ERR_clear_error();
        n = SSL_write(c->ssl, buf, (int) MIN(size, (size_t) INT_MAX));
        if (n > 0) {
                c->write_wants_read = false;
                connection_update_events(c);
                return n;
        }
        n = connection_map_error(c, n, false);
        if (n == 0)
                n = -EPIPE;
        connection_update_events(c);
        return n;
}

bool tls_connection_has_pending(TlsConnection *c) {
        assert(c);
        /* SSL_has_pending() also counts raw bytes read ahead but not yet decrypted, which epoll cannot see. */
        return c->state == TLS_STATE_ESTABLISHED && SSL_has_pending(c->ssl) == 1;
}

int tls_connection_set_interest(TlsConnection *c, bool want_read, bool want_write) {
        assert(c);

        c->want_read = want_read;
        c->want_write = want_write;
        connection_update_events(c);
        return 0;
}

void tls_connection_shutdown(TlsConnection *c) {
        assert(c);

        if (c->state != TLS_STATE_ESTABLISHED)
                return;
        ERR_clear_error();
        (void) SSL_shutdown(c->ssl);
        ERR_clear_error();
}

bool tls_connection_is_established(const TlsConnection *c) {
        return c && c->state == TLS_STATE_ESTABLISHED;
}

const SpiffeId *tls_connection_get_peer_id(const TlsConnection *c) {
        assert(c);
        return c->state == TLS_STATE_ESTABLISHED ? c->peer_id : NULL;
}

X509 *tls_connection_get_peer_certificate(const TlsConnection *c) {
        assert(c);
        /* Only a verified certificate: never one from a failed or unfinished handshake. */
        return c->state == TLS_STATE_ESTABLISHED ? SSL_get0_peer_certificate(c->ssl) : NULL;
}

const char *tls_connection_get_error_reason(const TlsConnection *c) {
        assert(c);
        return c->reason[0] ? c->reason : NULL;
}

int tls_connection_get_fd(const TlsConnection *c) {
        assert(c);
        return c->fd;
}

sd_event *tls_connection_get_event(const TlsConnection *c) {
        assert(c);
        return c->event;
}

const char *tls_connection_get_peer_address(const TlsConnection *c) {
        assert(c);
        return c->peer_address;
}

TlsMode tls_connection_get_mode(const TlsConnection *c) {
        assert(c);
        return c->mode;
}
