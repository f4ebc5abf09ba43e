/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* X.509-SVID validation (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md): the
 * SPIFFE rules for leaf and signing certificates on top of RFC 5280 path validation against a trust
 * bundle. SPIFFE authentication replaces hostname verification everywhere (DESIGN.md §3).
 *
 * Errors:
 *   -EKEYREJECTED  a certificate violates an SVID or X.509 rule
 *   -EKEYEXPIRED   a certificate of the chain is expired or not yet valid
 *   -ENOKEY        the leaf does not chain to a root of the bundle, or is of another trust domain
 *   -EINVAL        bad arguments */

#include <stdbool.h>

#include <openssl/x509.h>

#include "crypto-bundle.h"
#include "crypto-spiffe.h"
#include "time-util.h"

/* Most intermediate CAs allowed between a leaf and its root (OpenSSL's verify depth: neither the
 * leaf nor the root counts). ztna itself uses one (root → issuing CA → leaf). */
#define SVID_CHAIN_DEPTH_MAX 4

/* Leaf rules: X.509 v3, well-formed extensions, exactly one URI SAN holding a valid SPIFFE ID with a
 * non-empty path, basicConstraints present with CA:FALSE, keyUsage present with digitalSignature and
 * neither keyCertSign nor cRLSign, and an extendedKeyUsage (if present) with both serverAuth and
 * clientAuth. On success returns the ID in *ret_id (may be NULL); on failure -EKEYREJECTED and a static
 * reason naming the rule (for an invalid SPIFFE ID, the parser's reason). */
int svid_check_leaf(X509 *leaf, SpiffeId **ret_id, const char **ret_reason);

/* Signing-certificate rules (intermediates and roots): X.509 v3, well-formed extensions,
 * basicConstraints CA:TRUE, keyUsage with keyCertSign, and at most one URI SAN which, if present, is
 * the trust-domain ID (no path) of trust_domain. -EKEYREJECTED with a static reason on failure. */
int svid_check_signing_certificate(X509 *cert, const char *trust_domain, const char **ret_reason);

/* The trust domain a CA certificate names: its single URI SAN must be a trust-domain ID
 * (spiffe://<td>, no path); returned as a SpiffeId. Only the name is checked here, not the CA rules
 * (trust_bundle_add() does that). -EKEYREJECTED when there is no such URI SAN. Used to bootstrap a
 * bundle from a pinned root. */
int svid_get_trust_domain_of_ca(X509 *ca, SpiffeId **ret);

/* Full validation of a presented leaf and its intermediates (may be NULL; may also contain the leaf
 * itself, as OpenSSL's untrusted stack in a TLS verify callback does, which is then ignored) against
 * the bundle at time now_usec (CLOCK_REALTIME µs; 0 = the current time): leaf rules, the leaf's trust domain equals the
 * bundle's, every presented intermediate obeys the signing-certificate rules, then RFC 5280 path
 * validation (X509_V_FLAG_X509_STRICT, at most SVID_CHAIN_DEPTH_MAX intermediates) to a root of the
 * bundle, and the signing rules again on each element of the built chain. On success returns the
 * leaf's SPIFFE ID in *ret_id (may be NULL). On failure, *ret_reason (may be NULL) receives an
 * allocated human-readable message naming the rule and the certificate ("leaf", "intermediate N"
 * counted from the leaf's issuer, "root"), suitable for a log line. */
int svid_verify(const TrustBundle *bundle, X509 *leaf, STACK_OF(X509) *intermediates, usec_t now_usec,
                SpiffeId **ret_id, char **ret_reason);
