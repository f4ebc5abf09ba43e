/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* PKCS#10 certificate signing requests: how an agent proves possession of its private key at enrollment
 * (DESIGN.md §3 "Keys"). The CSR only carries the public key and its self-signature to the controller;
 * the CA certifies the key and never copies subject, SANs or extensions from the CSR — the identity comes
 * from the controller. */

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "crypto-spiffe.h"

/* Largest CSR accepted, DER (a P-256 CSR with a SPIFFE ID is ~300 bytes). */
#define CSR_DER_MAX (16U * 1024U)
/* Largest CSR accepted, PEM. */
#define CSR_PEM_MAX (32U * 1024U)

/* A v1 CSR with an empty subject, the key's public half, and — when id is given — the URI SAN in an
 * extensionRequest attribute; self-signed with ECDSA-SHA256 or Ed25519. -EOPNOTSUPP for a key type ztna
 * does not accept, -EINVAL for a key without its private half. */
int crypto_csr_new(EVP_PKEY *key, const SpiffeId *id, X509_REQ **ret);

/* Serialisation; the DER buffer and the NUL-terminated PEM are freed with free(). ret_size may be NULL
 * for PEM (it excludes the NUL). */
int crypto_csr_to_der(X509_REQ *req, uint8_t **ret, size_t *ret_size);
int crypto_csr_to_pem(X509_REQ *req, char **ret, size_t *ret_size);
/* Parsing ("CERTIFICATE REQUEST" PEM block or its DER): -EFBIG over CSR_DER_MAX/CSR_PEM_MAX, -EBADMSG
 * malformed or trailing data. Parsing does not verify: call crypto_csr_verify(). */
int crypto_csr_from_der(const void *der, size_t size, X509_REQ **ret);
int crypto_csr_from_pem(const char *pem, size_t size, X509_REQ **ret);

/* Proof of possession: the CSR is v1, its public key is of a type ztna accepts (-EOPNOTSUPP otherwise),
 * it is signed with ecdsa-with-SHA256/384/512 or Ed25519 (-EOPNOTSUPP for other signature algorithms, e.g.
 * SHA-1), and its self-signature verifies with its own public key (-EBADMSG otherwise). On success
 * returns a new reference to the public key in ret_public_key (may be NULL). */
int crypto_csr_verify(X509_REQ *req, EVP_PKEY **ret_public_key);
