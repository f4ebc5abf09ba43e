/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The certificate authority (DESIGN.md §3 "CA hierarchy"): a long-lived root, an issuing CA signed by it,
 * and X509-SVID leaves signed by the issuing CA. This module PRODUCES certificates that follow the SPIFFE
 * X509-SVID profile; validating certificates is crypto-svid's job.
 *
 * Profiles (all v3, 126-bit random positive serials, notBefore back-dated by CA_BACKDATE_USEC but never
 * before the issuer's notBefore, notAfter = now + lifetime clamped to the issuer's notAfter, SKI = RFC 7093
 * method 1 (SHA-256 of the subjectPublicKey, truncated to 160 bits), signatures ecdsa-with-SHA256 or
 * Ed25519):
 *   root     self-signed; subject O=ztna, CN=ztna root CA <td>; basicConstraints critical CA:TRUE,
 *            pathlen:1; keyUsage critical keyCertSign, cRLSign; SAN URI:spiffe://<td>; SKI, AKI.
 *   issuing  signed by the root; subject O=ztna, CN=ztna issuing CA <td>; basicConstraints critical
 *            CA:TRUE, pathlen:0; keyUsage critical keyCertSign, cRLSign; SAN URI:spiffe://<td>; SKI, AKI.
 *   leaf     subject O=ztna, OU=<role>, CN=<id>; basicConstraints critical CA:FALSE; keyUsage critical
 *            digitalSignature; extendedKeyUsage serverAuth, clientAuth; SAN with exactly one URI (the SPIFFE
 *            ID), then the DNS names, then the IP addresses; SKI, AKI.
 * (The " <td>" suffix of CA common names, and the leaf CN, are left out when they would exceed the 64
 * characters X.520 allows; nothing relies on subject names.) */

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "crypto-key.h"
#include "crypto-spiffe.h"
#include "time-util.h"

/* How far notBefore is back-dated, for peers whose clocks lag a little. */
#define CA_BACKDATE_USEC (5 * USEC_PER_MINUTE)
/* Most issuer certificates ca_load() accepts between a CA and its root. */
#define CA_CHAIN_MAX 8
/* Most DNS names plus IP addresses in one leaf. */
#define LEAF_SANS_MAX 32

/* A certificate, its private key, and the issuer certificates up to, excluding, the root. */
typedef struct CertificateAuthority CertificateAuthority;

/* A new self-signed root for trust_domain with a fresh key of the given type. now is CLOCK_REALTIME µs,
 * 0 for the current time. -EINVAL for an invalid trust domain, a zero or sub-second lifetime or an invalid
 * key type; -ERANGE when notAfter would fall after 9999-12-31. */
int ca_new_root(const char *trust_domain, KeyType type, usec_t lifetime, usec_t now,
                CertificateAuthority **ret);
/* A new issuing CA with a fresh key, signed by root (which must be a self-signed root: -EINVAL otherwise).
 * Its notAfter is clamped to the root's. -EKEYEXPIRED when the root is not valid at now. */
int ca_new_issuing(const CertificateAuthority *root, KeyType type, usec_t lifetime, usec_t now,
                   CertificateAuthority **ret);
/* Wraps an existing CA (e.g. read from the controller's store). Takes its own references to cert, key and
 * the chain's certificates. Checks: cert is a CA (basicConstraints CA:TRUE, keyUsage with keyCertSign;
 * -EINVAL otherwise) with a subjectKeyIdentifier (-EINVAL), it carries exactly one URI SAN which is a
 * trust-domain SPIFFE ID (-EINVAL), key is of a supported type (-EOPNOTSUPP), has its private half and
 * matches the certificate (-EKEYREJECTED), chain holds at most CA_CHAIN_MAX certificates, none self-signed,
 * each of which issued the one before it (-EINVAL). */
int ca_load(X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain, CertificateAuthority **ret);

/* Borrowed; valid as long as the CA is. */
X509 *ca_get_certificate(const CertificateAuthority *ca);
EVP_PKEY *ca_get_key(const CertificateAuthority *ca);
/* Never NULL; empty for a root and for a CA signed directly by its root. */
STACK_OF(X509) *ca_get_chain(const CertificateAuthority *ca);
const char *ca_get_trust_domain(const CertificateAuthority *ca);

typedef struct LeafParams {
        const SpiffeId *id;     /* required: a ztna workload ID /<role>/<id> in the CA's trust domain */
        EVP_PKEY *public_key;   /* required: the key to certify, e.g. from crypto_csr_verify() */
        usec_t lifetime;        /* > 0 (whole seconds count) */
        usec_t now;             /* CLOCK_REALTIME µs, 0 for the current time */
        char **dns_names;       /* NULL-terminated, may be NULL: hostname_is_valid() names (LDH, ≤ 253
                                 * characters, no wildcard, no trailing dot, last label not all digits) */
        char **ip_addresses;    /* NULL-terminated, may be NULL: IPv4 or IPv6 literals (inet_pton) */
} LeafParams;

/* Issues an X509-SVID leaf. The identity comes only from p: nothing is taken from a CSR. Errors: -EINVAL
 * for an ID outside the CA's trust domain or without a ztna path, a zero lifetime, an invalid DNS name or
 * IP address; -E2BIG for more than LEAF_SANS_MAX DNS names and IP addresses together; -EOPNOTSUPP for a
 * public key of a type ztna does not accept; -EKEYEXPIRED when the CA is not valid at now (the leaf's
 * validity would be empty). */
int ca_issue_leaf(const CertificateAuthority *ca, const LeafParams *p, X509 **ret);

CertificateAuthority *ca_free(CertificateAuthority *ca);
DEFINE_TRIVIAL_CLEANUP_FUNC(CertificateAuthority *, ca_free);
