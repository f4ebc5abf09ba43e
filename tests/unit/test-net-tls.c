/* SPDX-License-Identifier: Apache-2.0 */

/* TLS 1.3 + SPIFFE authentication over real loopback TCP: the mTLS accept/reject matrix, server-side
 * checks made by the client, ALPN, the enrollment pin mode, handshake timeout and hot swap. */

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certgen.h"
#include "crypto-util.h"
#include "net-fixture.h"
#include "tests.h"

/* One end of a handshake: the fixture's record of its outcome, reason and peer. */
typedef FixtureHandshake Side;

static void sides_free(Side s[2]) {
        s[0].conn = tls_connection_free(s[0].conn);
        s[1].conn = tls_connection_free(s[1].conn);
}

typedef enum ClientCert {
        CLIENT_GOOD,
        CLIENT_UNTRUSTED_CA,
        CLIENT_WRONG_TRUST_DOMAIN,
        CLIENT_WRONG_ROLE,
        CLIENT_WRONG_ID,
        CLIENT_EXPIRED,
        CLIENT_NOT_YET_VALID,
        CLIENT_TWO_URI_SANS,
        CLIENT_CA_TRUE_LEAF,
        CLIENT_NO_CERTIFICATE,
} ClientCert;

/* Builds a client identity that violates exactly one rule (or none). */
static bool make_client(Pki *pki, ClientCert kind, Identity *ret) {
        usec_t t = now(CLOCK_REALTIME);
        X509 *issuing = ca_get_certificate(pki->issuing);
        EVP_PKEY *issuing_key = ca_get_key(pki->issuing);
        CertgenParams p;

        *ret = (Identity) {};
        switch (kind) {
        case CLIENT_GOOD:
        case CLIENT_WRONG_ID:
                pki_issue(pki, SPIFFE_ROLE_CONNECTOR, kind == CLIENT_GOOD ? "conn-1" : "conn-2", 0, USEC_PER_HOUR, ret);
                return true;
        case CLIENT_WRONG_ROLE:
                pki_issue(pki, SPIFFE_ROLE_TUNNELER, "conn-1", 0, USEC_PER_HOUR, ret);
                return true;
        case CLIENT_EXPIRED:
                /* Issued two hours ago for one hour. */
                pki_issue(pki, SPIFFE_ROLE_CONNECTOR, "conn-1", t - 2 * USEC_PER_HOUR, USEC_PER_HOUR, ret);
                return true;
        case CLIENT_NOT_YET_VALID:
                pki_issue(pki, SPIFFE_ROLE_CONNECTOR, "conn-1", t + 2 * USEC_PER_HOUR, USEC_PER_HOUR, ret);
                return true;
        case CLIENT_UNTRUSTED_CA: {
                Pki other;

                pki_init(&other, FIXTURE_TRUST_DOMAIN); /* same name, different keys */
                pki_issue(&other, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, ret);
                pki_done(&other);
                return true;
        }
        case CLIENT_WRONG_TRUST_DOMAIN:
                p = certgen_params_leaf("spiffe://other.test/connector/conn-1", issuing, issuing_key);
                break;
        case CLIENT_TWO_URI_SANS:
                p = certgen_params_leaf("spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1", issuing, issuing_key);
                p.uris[p.n_uris++] = "spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-9";
                break;
        case CLIENT_CA_TRUE_LEAF:
                p = certgen_params_leaf("spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1", issuing, issuing_key);
                p.ca = 1;
                break;
        case CLIENT_NO_CERTIFICATE:
                return false;
        }
        ASSERT_OK(certgen_make(&p, &ret->cert, &ret->key));
        ret->chain = certgen_stack(issuing, NULL);
        ASSERT_NOT_NULL(ret->chain);
        return true;
}

TEST(mtls_matrix) {
        static const struct {
                const char *name;
                ClientCert client;
                bool accept;
                const char *reason; /* substring of the server's rejection reason */
        } table[] = {
                { "good peer", CLIENT_GOOD, true, NULL },
                { "untrusted CA", CLIENT_UNTRUSTED_CA, false, "does not chain to a root" },
                { "wrong trust domain", CLIENT_WRONG_TRUST_DOMAIN, false, "trust domain" },
                { "wrong role", CLIENT_WRONG_ROLE, false, "is not a connector" },
                { "wrong id", CLIENT_WRONG_ID, false, "not one of the expected identities" },
                { "expired", CLIENT_EXPIRED, false, "expired" },
                { "not yet valid", CLIENT_NOT_YET_VALID, false, "not yet valid" },
                { "two URI SANs", CLIENT_TWO_URI_SANS, false, "URI SAN" },
                { "CA:TRUE leaf", CLIENT_CA_TRUE_LEAF, false, "CA" },
                { "no client certificate", CLIENT_NO_CERTIFICATE, false, "certificate" },
        };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Pki pki;
        Identity server_id;

        signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&pki, SPIFFE_ROLE_CONTROLLER, "ctl-1", 0, USEC_PER_HOUR, &server_id);

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(tls_context_unrefp) TlsContext *sctx = NULL, *cctx = NULL;
                Identity client_id;
                bool have;
                Side s[2];

                CASE("%s", table[i].name);
                sctx = fixture_server_context(&pki, &server_id, SPIFFE_ROLE_CONNECTOR);
                ASSERT_OK(tls_context_set_peer_policy(sctx, &(TlsPeerPolicy) {
                        .role = SPIFFE_ROLE_CONNECTOR,
                        .ids = (char *[]) { (char *) "spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1", NULL },
                }));
                have = make_client(&pki, table[i].client, &client_id);
                cctx = fixture_client_context(&pki, have ? &client_id : NULL, SPIFFE_ROLE_CONTROLLER);

                fixture_tls_handshake(e, sctx, cctx, s);
                if (table[i].accept) {
                        ASSERT_EQ(s[0].result, 0);
                        ASSERT_EQ(s[1].result, 0);
                        ASSERT_STREQ(s[0].peer, "spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1");
                        ASSERT_STREQ(s[1].peer, "spiffe://" FIXTURE_TRUST_DOMAIN "/controller/ctl-1");
                } else {
                        ASSERT_LT(s[0].result, 0);
                        ASSERT_STRSTR(s[0].reason, table[i].reason);
                        fprintf(stderr, "# %s: server refused: %s\n", table[i].name, s[0].reason);
                }
                sides_free(s);
                identity_done(&client_id);
        }
        identity_done(&server_id);
        pki_done(&pki);
}

TEST(client_checks_server) {
        static const struct {
                const char *name;
                SpiffeRole server_role;
                bool accept;
                const char *reason;
        } table[] = {
                { "controller", SPIFFE_ROLE_CONTROLLER, true, NULL },
                { "tunneler posing as controller", SPIFFE_ROLE_TUNNELER, false, "is not a controller" },
        };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Pki pki;
        Identity client_id;

        signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, &client_id);

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(tls_context_unrefp) TlsContext *sctx = NULL, *cctx = NULL;
                Identity server_id;
                Side s[2];

                CASE("%s", table[i].name);
                pki_issue(&pki, table[i].server_role, "srv", 0, USEC_PER_HOUR, &server_id);
                sctx = fixture_server_context(&pki, &server_id, SPIFFE_ROLE_CONNECTOR);
                cctx = fixture_client_context(&pki, &client_id, SPIFFE_ROLE_CONTROLLER);
                fixture_tls_handshake(e, sctx, cctx, s);
                if (table[i].accept)
                        ASSERT_EQ(s[1].result, 0);
                else {
                        ASSERT_LT(s[1].result, 0);
                        ASSERT_STRSTR(s[1].reason, table[i].reason);
                        /* The server learns of it too: the client aborts with an alert. */
                        ASSERT_LT(s[0].result, 0);
                }
                sides_free(s);
                identity_done(&server_id);
        }
        identity_done(&client_id);
        pki_done(&pki);
}

/* Enrollment: the client has no bundle yet, only the root's SPKI pin from the token. */
TEST(root_pin) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        uint8_t pin[32], wrong[32];
        Identity server_id;
        Pki pki;

        signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&pki, SPIFFE_ROLE_CONTROLLER, "ctl-1", 0, USEC_PER_HOUR, &server_id);
        /* The controller sends its whole chain including the root, so that a pinned client can anchor it. */
        X509 *root = ca_get_certificate(pki.root);
        ASSERT_TRUE(X509_up_ref(root) == 1);
        ASSERT_TRUE(sk_X509_push(server_id.chain, root) > 0);
        ASSERT_OK(crypto_x509_spki_sha256(root, pin));
        memcpy(wrong, pin, sizeof(pin));
        wrong[31] ^= 1;

        for (int good = 1; good >= 0; good--) {
                _cleanup_(tls_context_unrefp) TlsContext *sctx = NULL, *cctx = NULL;
                Side s[2];

                CASE("%s pin", good ? "right" : "wrong");
                sctx = fixture_server_context(&pki, &server_id, SPIFFE_ROLE_CONNECTOR);
                ASSERT_OK(tls_context_set_client_certificate_required(sctx, false));
                ASSERT_OK(tls_context_new(TLS_MODE_CLIENT, &cctx));
                ASSERT_OK(tls_context_set_root_pin(cctx, good ? pin : wrong));
                ASSERT_OK(tls_context_set_peer_policy(cctx, &(TlsPeerPolicy) { .role = SPIFFE_ROLE_CONTROLLER }));
                fixture_tls_handshake(e, sctx, cctx, s);
                if (good) {
                        ASSERT_EQ(s[1].result, 0);
                        ASSERT_EQ(s[0].result, 0);
                        /* No client certificate: the server sees no identity. */
                        ASSERT_NULL(tls_connection_get_peer_id(s[0].conn));
                        ASSERT_STREQ(s[1].peer, "spiffe://" FIXTURE_TRUST_DOMAIN "/controller/ctl-1");
                } else {
                        ASSERT_LT(s[1].result, 0);
                        ASSERT_STRSTR(s[1].reason, "pinned");
                }
                sides_free(s);
        }
        identity_done(&server_id);
        pki_done(&pki);
}

/* A client that connects and never speaks TLS is dropped after the handshake timeout. */
TEST(handshake_timeout) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(tls_context_unrefp) TlsContext *sctx = NULL;
        Identity server_id;
        Side s = {};
        uint16_t port;
        int lfd, cfd;
        Pki pki;

        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&pki, SPIFFE_ROLE_CONTROLLER, "ctl-1", 0, USEC_PER_HOUR, &server_id);
        sctx = fixture_server_context(&pki, &server_id, SPIFFE_ROLE_CONNECTOR);
        tls_context_set_handshake_timeout(sctx, 300 * USEC_PER_MSEC);

        lfd = fixture_listen(&port);
        cfd = fixture_connect(port);
        ASSERT_OK(tls_connection_new(sctx, e, fixture_accept(lfd), &fixture_handshake_callbacks, &s,
                                     &s.conn));
        ASSERT_TRUE(fixture_run_until(e, &s.done, 5 * USEC_PER_SEC));
        ASSERT_EQ(s.result, -ETIMEDOUT);
        ASSERT_STRSTR(s.reason, "timed out");
        tls_connection_free(s.conn);
        close(cfd);
        close(lfd);
        identity_done(&server_id);
        pki_done(&pki);
}

/* Hot swap: after new credentials are set, new handshakes present them; a connection made before keeps
 * working (exchanges data) — it is not torn down. */
TEST(hot_swap) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(tls_context_unrefp) TlsContext *sctx = NULL, *cctx = NULL;
        Identity server_a, server_b, client_id;
        char buf[16];
        Side old[2], fresh[2];
        Pki pki;

        signal(SIGPIPE, SIG_IGN);
        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_issue(&pki, SPIFFE_ROLE_CONTROLLER, "ctl-a", 0, USEC_PER_HOUR, &server_a);
        pki_issue(&pki, SPIFFE_ROLE_CONTROLLER, "ctl-b", 0, USEC_PER_HOUR, &server_b);
        pki_issue(&pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, &client_id);
        sctx = fixture_server_context(&pki, &server_a, SPIFFE_ROLE_CONNECTOR);
        cctx = fixture_client_context(&pki, &client_id, SPIFFE_ROLE_CONTROLLER);

        fixture_tls_handshake(e, sctx, cctx, old);
        ASSERT_EQ(old[0].result, 0);
        ASSERT_STRSTR(old[1].peer, "/controller/ctl-a");

        unsigned gen = tls_context_get_generation(sctx);
        ASSERT_OK(tls_context_set_identity(sctx, server_b.cert, server_b.chain, server_b.key));
        ASSERT_GT(tls_context_get_generation(sctx), gen);
        /* A key that does not match the certificate is refused and changes nothing. */
        ASSERT_FAIL(tls_context_set_identity(sctx, server_b.cert, server_b.chain, server_a.key));

        fixture_tls_handshake(e, sctx, cctx, fresh);
        ASSERT_EQ(fresh[0].result, 0);
        ASSERT_STRSTR(fresh[1].peer, "/controller/ctl-b");

        /* The old session still carries data both ways. */
        ASSERT_EQ(tls_connection_write(old[1].conn, "ping", 4), 4);
        ssize_t n = -EAGAIN;
        for (int i = 0; i < 100 && n == -EAGAIN; i++) {
                ASSERT_OK(sd_event_run(e, 10 * USEC_PER_MSEC));
                n = tls_connection_read(old[0].conn, buf, sizeof(buf));
        }
        ASSERT_EQ(n, 4);
        ASSERT_MEMEQ(buf, "ping", 4);

        sides_free(old);
        sides_free(fresh);
        identity_done(&server_a);
        identity_done(&server_b);
        identity_done(&client_id);
        pki_done(&pki);
}
