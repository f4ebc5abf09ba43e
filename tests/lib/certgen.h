/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* TEST-ONLY certificate factory. Raw OpenSSL, deliberately independent of the production CA, so it
 * can build certificates that break any rule (two URI SANs, a leaf with CA:TRUE, a CA without
 * keyCertSign, an expired intermediate…) and prove that validation refuses them. Never link this
 * into a daemon.
 *
 * Every certificate is X.509 v3, signed with SHA-256, with a random serial, a subject CN, a
 * subjectKeyIdentifier and an authorityKeyIdentifier (so that only the rule a test breaks is broken,
 * and X509_V_FLAG_X509_STRICT has nothing else to complain about). */

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "time-util.h"

#define CERTGEN_SANS_MAX 4

typedef struct CertgenParams {
        const char *common_name;             /* NULL: "certgen" */
        const char *uris[CERTGEN_SANS_MAX];  /* URI SANs, any strings */
        size_t n_uris;
        const char *dns[CERTGEN_SANS_MAX];
        size_t n_dns;
        int ca;                              /* -1: no basicConstraints, 0: CA:FALSE, 1: CA:TRUE */
        int path_len;                        /* -1: none */
        int key_usage;                       /* KU_* bits ORed (0: the extension with no bit); -1: omit */
        bool key_usage_noncritical;          /* keyUsage present but not marked critical */
        bool eku_server, eku_client;         /* extendedKeyUsage only if either is set */
        usec_t not_before, not_after;        /* absolute CLOCK_REALTIME µs; 0 = now−1h / now+1h */
        X509 *issuer;                        /* NULL = self-signed */
        EVP_PKEY *issuer_key;
        EVP_PKEY *key;                       /* subject key; NULL = generate P-256 */
} CertgenParams;

/* A conforming leaf SVID: one URI SAN, CA:FALSE, digitalSignature, serverAuth + clientAuth. */
CertgenParams certgen_params_leaf(const char *uri, X509 *issuer, EVP_PKEY *issuer_key);
/* A conforming signing certificate: CA:TRUE, keyCertSign + cRLSign, uri as the URI SAN unless NULL. */
CertgenParams certgen_params_ca(const char *uri, X509 *issuer, EVP_PKEY *issuer_key);

/* Builds the certificate. ret_key (may be NULL) receives the subject key (a new reference when
 * p->key was given). -EINVAL for inconsistent parameters (issuer without issuer_key, too many SANs). */
int certgen_make(const CertgenParams *p, X509 **ret_cert, EVP_PKEY **ret_key);
/* Writes cert as PEM to path (mode 0644), for cross-checks with the openssl CLI. */
int certgen_write_pem(const char *path, X509 *cert);

/* A conforming set for trust_domain: root (spiffe://<td>) → intermediate (spiffe://<td>) → leaf
 * (leaf_uri, or spiffe://<td>/connector/test if NULL). */
typedef struct CertgenChain {
        X509 *root, *intermediate, *leaf;
        EVP_PKEY *root_key, *intermediate_key, *leaf_key;
} CertgenChain;

int certgen_chain_make(const char *trust_domain, const char *leaf_uri, CertgenChain *ret);
void certgen_chain_done(CertgenChain *c);

/* A new stack holding new references to the given certificates, up to the terminating NULL. NULL on
 * allocation failure. */
STACK_OF(X509) *certgen_stack(X509 *first, ...) __attribute__((sentinel));
