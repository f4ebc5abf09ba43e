/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Trust bundles: the set of root certificates an agent or the controller trusts for one trust domain
 * (DESIGN.md §3). The controller can add a new root, issue under it and retire the old one, so the
 * set changes at runtime; each root is identified by the SHA-256 of its DER SubjectPublicKeyInfo.
 *
 * Also the strict PEM helpers every area uses to read and write certificates: one input has one
 * meaning, so anything but whitespace between blocks, a block that is not a CERTIFICATE, PEM headers
 * or trailing bytes after the DER are refused with -EBADMSG rather than skipped. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "macro.h"

/* Roots one bundle may hold: enough for an overlap during rotation, small enough to bound work. */
#define TRUST_BUNDLE_ROOTS_MAX 16
/* Largest PEM text trust_bundle_from_pem() and the PEM helpers accept. */
#define TRUST_BUNDLE_PEM_MAX ((size_t) 256U * 1024U)
/* Most certificates crypto_x509_chain_from_pem() accepts (a leaf and its intermediates, maybe a root). */
#define CRYPTO_X509_CHAIN_MAX 8

#define CRYPTO_SPKI_SHA256_SIZE 32

typedef struct TrustBundle TrustBundle;

/* SHA-256 of the DER SubjectPublicKeyInfo of cert (the same value as
 * `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`). */
int crypto_x509_spki_sha256(X509 *cert, uint8_t ret[static CRYPTO_SPKI_SHA256_SIZE]);

/* One certificate as PEM text (NUL-terminated). */
int crypto_x509_to_pem(X509 *cert, char **ret);
/* Exactly one CERTIFICATE block, optionally surrounded by whitespace. -EBADMSG for anything else,
 * -E2BIG beyond TRUST_BUNDLE_PEM_MAX. */
int crypto_x509_from_pem(const char *pem, size_t size, X509 **ret);
/* The certificates in order, concatenated. */
int crypto_x509_chain_to_pem(STACK_OF(X509) *chain, char **ret);
/* One to CRYPTO_X509_CHAIN_MAX CERTIFICATE blocks separated by whitespace; -EBADMSG for none, garbage
 * or another block type, -E2BIG for more certificates or bytes than allowed. */
int crypto_x509_chain_from_pem(const char *pem, size_t size, STACK_OF(X509) **ret);

/* A new empty bundle for trust_domain (validated as a SPIFFE trust domain: -EINVAL). */
int trust_bundle_new(const char *trust_domain, TrustBundle **ret);
/* A copy holding its own references to the same roots. */
int trust_bundle_dup(const TrustBundle *b, TrustBundle **ret);
TrustBundle *trust_bundle_free(TrustBundle *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(TrustBundle *, trust_bundle_free);

const char *trust_bundle_trust_domain(const TrustBundle *b);

/* Adds a root (the bundle takes its own reference). The root must be self-signed and obey the SVID
 * signing-certificate rules for the bundle's trust domain (CA:TRUE, keyCertSign, a URI SAN only if it
 * is the trust-domain ID). Errors: -EKEYREJECTED a rule is violated (reason in *ret_reason, static),
 * -EEXIST a root with the same SPKI fingerprint is present, -E2BIG the bundle is full. */
int trust_bundle_add_full(TrustBundle *b, X509 *root, const char **ret_reason);
int trust_bundle_add(TrustBundle *b, X509 *root);
/* Removes the root with this SPKI fingerprint; -ENOENT if there is none. */
int trust_bundle_remove(TrustBundle *b, const uint8_t fingerprint[static CRYPTO_SPKI_SHA256_SIZE]);
size_t trust_bundle_size(const TrustBundle *b);
/* The i-th root (borrowed, valid until it is removed), or NULL when out of range. */
X509 *trust_bundle_get(const TrustBundle *b, size_t i);
bool trust_bundle_contains(const TrustBundle *b, const uint8_t fingerprint[static CRYPTO_SPKI_SHA256_SIZE]);

/* All roots as concatenated PEM (the empty string for an empty bundle). */
int trust_bundle_to_pem(const TrustBundle *b, char **ret);
/* Parses one or more CERTIFICATE blocks and adds each as a root. -EBADMSG for malformed PEM or no
 * certificate at all, -E2BIG for more than TRUST_BUNDLE_PEM_MAX bytes or TRUST_BUNDLE_ROOTS_MAX roots,
 * and any error of trust_bundle_add() (duplicates too: -EEXIST). */
int trust_bundle_from_pem(const char *trust_domain, const char *pem, size_t size, TrustBundle **ret);
/* A new X509_STORE holding the roots as trust anchors. */
int trust_bundle_to_store(const TrustBundle *b, X509_STORE **ret);
