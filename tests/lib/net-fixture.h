/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Test fixtures for the transport: a PKI made with the production CA (root → issuing → leaves), loopback
 * TCP socket pairs, and an sd-event loop runner with a deadline so a broken test fails instead of hanging. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "crypto-bundle.h"
#include "crypto-ca.h"
#include "crypto-key.h"
#include "crypto-spiffe.h"
#include "net-tls.h"

#define FIXTURE_TRUST_DOMAIN "ztna.test"

typedef struct Pki {
        CertificateAuthority *root, *issuing;
        TrustBundle *bundle;
} Pki;

typedef struct Identity {
        X509 *cert;
        STACK_OF(X509) *chain; /* issuing CA (+ root when requested) */
        EVP_PKEY *key;
} Identity;

void pki_init(Pki *pki, const char *trust_domain);
void pki_done(Pki *pki);
/* A leaf for spiffe://<td>/<role>/<id> valid from now - back to now + lifetime (CLOCK_REALTIME µs "now"
 * override: 0 for the current time). */
void pki_issue(Pki *pki, SpiffeRole role, const char *id, usec_t now, usec_t lifetime, Identity *ret);
void identity_done(Identity *id);

TlsContext *fixture_server_context(Pki *pki, const Identity *id, SpiffeRole peer_role);
TlsContext *fixture_client_context(Pki *pki, const Identity *id /* may be NULL */, SpiffeRole peer_role);

/* A listening socket on 127.0.0.1 with an ephemeral port. */
int fixture_listen(uint16_t *ret_port);
/* A non-blocking client socket connecting to 127.0.0.1:port. */
int fixture_connect(uint16_t port);
/* Accepts one connection (non-blocking result), waiting at most 5 s. */
int fixture_accept(int listen_fd);

/* Runs the loop until *done becomes true or timeout passes; returns true if done. */
bool fixture_run_until(sd_event *e, const bool *done, usec_t timeout);
/* Same with a predicate. */
bool fixture_run_until_func(sd_event *e, bool (*pred)(void *userdata), void *userdata, usec_t timeout);

/* One end of a handshake driven with fixture_handshake_callbacks (userdata: this): the outcome, the
 * error reason and the peer's SPIFFE ID (empty when none). */
typedef struct FixtureHandshake {
        TlsConnection *conn;
        bool done;
        int result;
        char reason[TLS_REASON_MAX];
        char peer[256];
} FixtureHandshake;

/* Record the outcome in the FixtureHandshake, and stop application I/O until the next owner takes over. */
extern const TlsConnectionCallbacks fixture_handshake_callbacks;

/* TLS between server_ctx and client_ctx over a fresh loopback TCP pair, run in e until both ends have
 * finished, successfully or not (only finishing is asserted): h[0] is the server, h[1] the client. */
void fixture_tls_handshake(sd_event *e, TlsContext *server_ctx, TlsContext *client_ctx,
                           FixtureHandshake h[static 2]);

/* A loop, a PKI, a server identity and a tunneler identity (tun-1, the TLS client) with contexts for both
 * ends. SIGPIPE is ignored, as programs using net-tls must. */
typedef struct FixtureEnv {
        sd_event *event;
        Pki pki;
        Identity server_id, client_id;
        TlsContext *server_ctx, *client_ctx;
} FixtureEnv;

typedef struct FixtureEnvParams {
        SpiffeRole server_role;           /* the server is spiffe://<td>/<server_role>/<server_name> */
        const char *server_name;
        SpiffeRole server_peer_role;      /* whom the server accepts; _SPIFFE_ROLE_INVALID: any role */
        bool client_certificate_optional; /* the server does not require a client certificate */
        bool client_anonymous;            /* the client presents no certificate */
        SpiffeRole client_peer_role;      /* whom the client accepts as the server */
} FixtureEnvParams;

/* The default: a connector server (conn-1) and a tunneler client that require each other. */
void fixture_env_init(FixtureEnv *env);
void fixture_env_init_with(FixtureEnv *env, const FixtureEnvParams *params);
void fixture_env_done(FixtureEnv *env);
/* Two TLS connections over loopback TCP, handshake completed in env's loop, ready for h2_session_new(). */
void fixture_env_tls_pair(FixtureEnv *env, TlsConnection **ret_server, TlsConnection **ret_client);

/* A connected loopback TCP pair, both ends non-blocking and close-on-exec. */
void fixture_tcp_pair(int ret[static 2]);

/* A forked child playing the application at one end of a stream socket: it writes write_bytes of a
 * deterministic pseudo-random stream (fixture_app_digest() computes its SHA-256 independently), then
 * shutdown(SHUT_WR), and reads until EOF — both at once, with poll(). Progress and results go to shared
 * memory, so the parent can watch a writer being held back. The child dies with its parent. */
typedef struct FixtureAppSpec {
        uint64_t write_bytes;
        uint64_t seed;
        size_t read_chunk;      /* most bytes per read(); 0 for FIXTURE_APP_BUFFER */
        useconds_t read_pause;  /* sleep after each read: a slow reader */
        bool digest;            /* hash what is written and read (else the pattern is generated once) */
} FixtureAppSpec;

typedef struct FixtureAppResult {
        uint64_t written, read; /* progress, updated as it goes (read with __atomic_load_n) */
        uint8_t written_digest[32], read_digest[32];
        int error;              /* errno of a failed read() or write(), else 0 */
        bool done;
} FixtureAppResult;

#define FIXTURE_APP_BUFFER (64U * 1024U)

/* n results in shared memory, zeroed. */
FixtureAppResult *fixture_app_results_new(size_t n);
void fixture_app_results_free(FixtureAppResult *r, size_t n);
/* Forks the application on fd; fd is closed in the parent. The child closes every other fd it inherited so
 * that it cannot keep the parent's sockets open. */
pid_t fixture_app_spawn(int fd, const FixtureAppSpec *spec, FixtureAppResult *res);
/* Exit status of the child (128 + signal when killed). */
int fixture_app_wait(pid_t pid);
/* SHA-256 of the first size bytes of the stream for seed. */
void fixture_app_digest(uint64_t size, uint64_t seed, uint8_t ret[static 32]);
