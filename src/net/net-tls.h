/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* TLS 1.3 on sd-event with SPIFFE authentication.
 *
 * A TlsContext holds what both ends of future connections need: our identity (certificate chain + key),
 * whom we trust (a trust bundle, or for enrollment only the SHA-256 pin of the root), and whom we accept
 * (a TlsPeerPolicy: role, exact IDs, or a callback). Every setter builds a fresh SSL_CTX; connections made
 * afterwards use it, connections already open keep the one they started with — certificate and bundle
 * hot swap without touching live sessions.
 *
 * Peers are authenticated by the X.509-SVID rules (crypto-svid.c) and the policy; hostnames play no
 * part. TLS 1.3 only, ALPN "h2" required on both sides, no session resumption (a resumed session would
 * skip certificate checks).
 *
 * A TlsConnection drives one non-blocking socket from an sd-event I/O source. After the handshake, the
 * owner (the HTTP/2 session) is called back on I/O readiness and uses tls_connection_read()/write(),
 * which return -EAGAIN when they would block; the owner says whether it wants to read and to write and
 * the connection arms epoll accordingly (including the cases where TLS needs the other direction).
 *
 * Writing to a peer that closed raises SIGPIPE: programs using this set SIGPIPE to SIG_IGN. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "crypto-bundle.h"
#include "crypto-spiffe.h"
#include "time-util.h"

/* Default bound on the whole TLS handshake, connect to Finished. */
#define TLS_HANDSHAKE_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* Most exact SPIFFE IDs a peer policy may list. */
#define TLS_POLICY_IDS_MAX 1024
/* TLS read-ahead buffer per busy connection (released when idle). */
#define TLS_READ_BUFFER_SIZE (64U * 1024U)
/* Longest rejection reason kept for logging. */
#define TLS_REASON_MAX 256

typedef enum TlsMode {
        TLS_MODE_CLIENT,
        TLS_MODE_SERVER,
} TlsMode;

/* Decides whether an authenticated peer may talk to us. Return 0 to accept, or a negative errno and
 * optionally a static reason. */
typedef int (*TlsAuthorizeFunc)(const SpiffeId *peer, void *userdata, const char **ret_reason);

typedef struct TlsPeerPolicy {
        SpiffeRole role;                /* required role, or _SPIFFE_ROLE_INVALID for any */
        char **ids;                     /* exact SPIFFE IDs accepted (strv), or NULL for any */
        TlsAuthorizeFunc authorize;     /* extra check, or NULL */
        void *userdata;
} TlsPeerPolicy;

typedef struct TlsContext TlsContext;
typedef struct TlsConnection TlsConnection;

int tls_context_new(TlsMode mode, TlsContext **ret);
TlsContext *tls_context_ref(TlsContext *c);
TlsContext *tls_context_unref(TlsContext *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsContext *, tls_context_unref);

/* Our certificate, its issuers (up to, excluding, the root) and private key. The key must match. */
int tls_context_set_identity(TlsContext *c, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key);
/* Trust these roots for peers (copied). */
int tls_context_set_trust_bundle(TlsContext *c, const TrustBundle *bundle);
/* Enrollment (client only, before we have a bundle): trust a root the server itself presents, if the
 * SHA-256 of its SubjectPublicKeyInfo equals pin. The server must send its full chain including the root. */
int tls_context_set_root_pin(TlsContext *c, const uint8_t pin[static 32]);
/* Whom we accept. Copied; the callback's userdata must outlive the context. */
int tls_context_set_peer_policy(TlsContext *c, const TlsPeerPolicy *policy);
/* Server: whether a client certificate is mandatory (default true). When false, clients without one are
 * let in with no peer identity (the gRPC layer then allows only unauthenticated methods such as Enroll);
 * a client that presents a certificate that fails validation is still refused. */
int tls_context_set_client_certificate_required(TlsContext *c, bool required);
void tls_context_set_handshake_timeout(TlsContext *c, usec_t timeout);
/* Fixed clock for validity checks (tests); 0 means the real clock. */
void tls_context_set_clock(TlsContext *c, usec_t now);
/* Increments on every successful change of identity, bundle or policy. */
unsigned tls_context_get_generation(const TlsContext *c);

typedef struct TlsConnectionCallbacks {
        /* Handshake finished: error == 0 and the peer authenticated, or error < 0 with a reason from
         * tls_connection_get_error_reason(). After a failure the owner frees the connection. */
        void (*on_handshake)(TlsConnection *c, int error, void *userdata);
        /* The socket is ready in a direction the owner or TLS asked for: try reading and writing. */
        void (*on_io)(TlsConnection *c, void *userdata);
} TlsConnectionCallbacks;

/* Takes ownership of fd (non-blocking, connected or connecting) in both cases, even on failure. */
int tls_connection_new(TlsContext *ctx, sd_event *event, int fd, const TlsConnectionCallbacks *callbacks,
                       void *userdata, TlsConnection **ret);
TlsConnection *tls_connection_free(TlsConnection *c);
/* Hands the connection to a new owner (e.g. the HTTP/2 session once the handshake is done). */
void tls_connection_set_callbacks(TlsConnection *c, const TlsConnectionCallbacks *callbacks, void *userdata);
DEFINE_TRIVIAL_CLEANUP_FUNC(TlsConnection *, tls_connection_free);

/* > 0 bytes, 0 at a clean end of stream (close_notify or EOF), -EAGAIN, or another negative errno. */
ssize_t tls_connection_read(TlsConnection *c, void *buf, size_t size);
/* > 0 bytes written (may be partial), -EAGAIN, or another negative errno. */
ssize_t tls_connection_write(TlsConnection *c, const void *buf, size_t size);
/* Bytes already buffered inside TLS, decrypted or read ahead (readable without waiting for the socket: epoll
 * will not report them). A reader that stops before -EAGAIN must come back without waiting for EPOLLIN. */
bool tls_connection_has_pending(TlsConnection *c);
/* What the owner wants to be woken up for. */
int tls_connection_set_interest(TlsConnection *c, bool want_read, bool want_write);
/* Sends close_notify (best effort, non-blocking). */
void tls_connection_shutdown(TlsConnection *c);

bool tls_connection_is_established(const TlsConnection *c);
/* The peer's verified SPIFFE ID; NULL before the handshake or for a server's certificate-less client. */
const SpiffeId *tls_connection_get_peer_id(const TlsConnection *c);
/* The peer's leaf certificate (borrowed), or NULL. */
X509 *tls_connection_get_peer_certificate(const TlsConnection *c);
const char *tls_connection_get_error_reason(const TlsConnection *c);
int tls_connection_get_fd(const TlsConnection *c);
sd_event *tls_connection_get_event(const TlsConnection *c);
/* "127.0.0.1:4433" / "[::1]:4433" of the peer, for logs. */
const char *tls_connection_get_peer_address(const TlsConnection *c);
TlsMode tls_connection_get_mode(const TlsConnection *c);
