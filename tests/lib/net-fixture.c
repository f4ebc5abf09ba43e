/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto-util.h"
#include "net-fixture.h"
#include "tests.h"

void pki_init(Pki *pki, const char *trust_domain) {
        /* CAs valid since yesterday, so tests can issue leaves that are already expired. */
        usec_t t = now(CLOCK_REALTIME) - USEC_PER_DAY;

        *pki = (Pki) {};
        ASSERT_OK(ca_new_root(trust_domain, KEY_TYPE_ECDSA_P256, 10 * USEC_PER_YEAR, t, &pki->root));
        ASSERT_OK(ca_new_issuing(pki->root, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, t, &pki->issuing));
        ASSERT_OK(trust_bundle_new(trust_domain, &pki->bundle));
        ASSERT_OK(trust_bundle_add(pki->bundle, ca_get_certificate(pki->root)));
}

void pki_done(Pki *pki) {
        ca_free(pki->issuing);
        ca_free(pki->root);
        trust_bundle_free(pki->bundle);
        *pki = (Pki) {};
}

void pki_issue(Pki *pki, SpiffeRole role, const char *id, usec_t now, usec_t lifetime, Identity *ret) {
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;

        *ret = (Identity) {};
        ASSERT_OK(spiffe_id_new_ztna(ca_get_trust_domain(pki->issuing), role, id, &sid));
        ASSERT_OK(crypto_key_generate(KEY_TYPE_ECDSA_P256, &ret->key));
        LeafParams p = {
                .id = sid,
                .public_key = ret->key,
                .lifetime = lifetime,
                .now = now,
        };
        ASSERT_OK(ca_issue_leaf(pki->issuing, &p, &ret->cert));
        ret->chain = sk_X509_new_null();
        ASSERT_NOT_NULL(ret->chain);
        X509 *issuing = ca_get_certificate(pki->issuing);
        ASSERT_TRUE(X509_up_ref(issuing) == 1);
        ASSERT_TRUE(sk_X509_push(ret->chain, issuing) > 0);
}

void identity_done(Identity *id) {
        X509_free(id->cert);
        sk_X509_pop_free(id->chain, X509_free);
        EVP_PKEY_free(id->key);
        *id = (Identity) {};
}

TlsContext *fixture_server_context(Pki *pki, const Identity *id, SpiffeRole peer_role) {
        TlsContext *c = NULL;

        ASSERT_OK(tls_context_new(TLS_MODE_SERVER, &c));
        ASSERT_OK(tls_context_set_identity(c, id->cert, id->chain, id->key));
        ASSERT_OK(tls_context_set_trust_bundle(c, pki->bundle));
        ASSERT_OK(tls_context_set_peer_policy(c, &(TlsPeerPolicy) { .role = peer_role }));
        return c;
}

TlsContext *fixture_client_context(Pki *pki, const Identity *id, SpiffeRole peer_role) {
        TlsContext *c = NULL;

        ASSERT_OK(tls_context_new(TLS_MODE_CLIENT, &c));
        if (id)
                ASSERT_OK(tls_context_set_identity(c, id->cert, id->chain, id->key));
        ASSERT_OK(tls_context_set_trust_bundle(c, pki->bundle));
        ASSERT_OK(tls_context_set_peer_policy(c, &(TlsPeerPolicy) { .role = peer_role }));
        return c;
}

int fixture_listen(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT_TRUE(listen(fd, 64) == 0);
        ASSERT_TRUE(getsockname(fd, (struct sockaddr *) &sa, &l) == 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

int fixture_connect(uint16_t port) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                .sin_port = htons(port),
        };
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(fd >= 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                ASSERT_TRUE(errno == EINPROGRESS);
        return fd;
}

int fixture_accept(int listen_fd) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        int fd;

        ASSERT_TRUE(poll(&p, 1, 5000) == 1);
        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        ASSERT_TRUE(fd >= 0);
        return fd;
}

bool fixture_run_until(sd_event *e, const bool *done, usec_t timeout) {
        usec_t deadline = now(CLOCK_MONOTONIC) + timeout;

        while (!*done) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        return false;
                ASSERT_OK(sd_event_run(e, 50 * USEC_PER_MSEC));
        }
        return true;
}

bool fixture_run_until_func(sd_event *e, bool (*pred)(void *userdata), void *userdata, usec_t timeout) {
        usec_t deadline = now(CLOCK_MONOTONIC) + timeout;

        while (!pred(userdata)) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        return false;
                ASSERT_OK(sd_event_run(e, 50 * USEC_PER_MSEC));
        }
        return true;
}
