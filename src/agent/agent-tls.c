/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>

#include "agent-tls.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "crypto-x509.h"

int agent_bundle_from_der(const char *trust_domain, const DerBlob *roots, size_t n, TrustBundle **ret,
                          const char **ret_reason) {
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        const char *reason = NULL;
        int r;

        assert(ret);

        if (n == 0 || n > IDENTITY_BUNDLE_MAX) {
                reason = "wrong number of roots";
                r = -EBADMSG;
                goto fail;
        }
        r = trust_bundle_new(trust_domain, &bundle);
        if (r < 0)
                goto fail;
        for (size_t k = 0; k < n; k++) {
                X509 *root = NULL;

                r = crypto_x509_from_der(roots[k].data, roots[k].size, &root);
                if (r == -ENOMEM)
                        goto fail;
                if (r < 0) {
                        reason = "malformed root certificate";
                        r = -EBADMSG;
                        goto fail;
                }
                r = trust_bundle_add_full(bundle, root, &reason);
                crypto_x509_unref(root);
                if (r == -ENOMEM)
                        goto fail;
                if (r == -EEXIST)
                        reason = "duplicate root";
                if (r < 0) {
                        r = -EBADMSG;
                        goto fail;
                }
        }
        *ret = TAKE_PTR(bundle);
        return 0;

fail:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

int agent_tls_context_new(const AgentIdentity *i, TlsMode mode, SpiffeRole peer_role, usec_t handshake_timeout,
                          TlsContext **ret) {
        _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *intermediates = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        X509 *certs[IDENTITY_CHAIN_MAX] = {};
        size_t n = 0;
        int r;

        assert(i);
        assert(ret);

        if (i->n_chain == 0 || i->n_chain > IDENTITY_CHAIN_MAX)
                return -EINVAL;
        r = agent_bundle_from_der(i->trust_domain, i->bundle, i->n_bundle, &bundle, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        r = crypto_key_from_pkcs8_der(i->key.data, i->key.size, &key);
        if (r < 0)
                return r;
        for (; n < i->n_chain && r >= 0; n++)
                r = crypto_x509_from_der(i->chain[n].data, i->chain[n].size, &certs[n]);
        if (r >= 0)
                r = crypto_x509_stack_new(certs + 1, i->n_chain - 1, &intermediates);
        if (r >= 0)
                r = tls_context_new(mode, &ctx);
        if (r >= 0)
                r = tls_context_set_identity(ctx, certs[0], intermediates, key);
        crypto_x509_array_unref(certs, n);
        if (r >= 0)
                r = tls_context_set_trust_bundle(ctx, bundle);
        if (r >= 0)
                r = tls_context_set_peer_policy(ctx, &(TlsPeerPolicy) { .role = peer_role });
        if (r >= 0 && mode == TLS_MODE_SERVER)
                r = tls_context_set_client_certificate_required(ctx, true);
        if (r < 0)
                return r;
        tls_context_set_handshake_timeout(ctx, handshake_timeout);
        *ret = TAKE_PTR(ctx);
        return 0;
}
