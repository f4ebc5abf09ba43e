/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small X.509 accessors for code outside src/crypto and src/net, which handles certificates as opaque
 * X509 pointers and never calls OpenSSL itself (STYLE.md): DER in and out, validity, serial, public key. */

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "macro.h"
#include "time-util.h"

/* Largest certificate DER accepted. */
#define X509_DER_MAX (64U * 1024U)
/* Most certificates crypto_x509_stack_new() puts on one stack. */
#define CRYPTO_X509_STACK_MAX 16U

/* DER of cert; free with free(). */
int crypto_x509_to_der(X509 *cert, uint8_t **ret, size_t *ret_size);
/* Exactly one certificate: -EBADMSG malformed or trailing bytes, -EFBIG over X509_DER_MAX. */
int crypto_x509_from_der(const void *der, size_t size, X509 **ret);
/* notBefore/notAfter as CLOCK_REALTIME µs (either pointer may be NULL). -ERANGE for times we cannot
 * represent. */
int crypto_x509_get_validity(X509 *cert, usec_t *ret_not_before, usec_t *ret_not_after);
/* The serial number as lower-case hex without leading zeros ("0" for zero; a negative serial, which RFC
 * 5280 forbids but DER can carry, gets a leading '-'). Free with free(). */
int crypto_x509_get_serial_hex(X509 *cert, char **ret);
/* The SubjectPublicKeyInfo DER of the certified key. Free with free(). */
int crypto_x509_get_public_key_der(X509 *cert, uint8_t **ret, size_t *ret_size);
/* Whether issuer issued cert: issuer name and key identifiers match (X509_check_issued()) and cert's
 * signature verifies with issuer's public key. 0 when it did, -EKEYREJECTED when not. Checks nothing else
 * (validity, CA flags): that is path validation's job (crypto-svid.h). */
int crypto_x509_check_issued(X509 *issuer, X509 *cert);
/* Drops a reference (NULL allowed), for _cleanup_ in code that does not include OpenSSL headers. */
void crypto_x509_unref(X509 *cert);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, crypto_x509_unref);
/* Drops a reference to each of n certificates. */
void crypto_x509_array_unref(X509 **certs, size_t n);
/* Takes a new reference and returns cert, so a certificate can outlive its owner; NULL for NULL, and when
 * OpenSSL cannot count the reference (treat as -ENOMEM). */
X509 *crypto_x509_ref(X509 *cert);
/* A new stack holding new references to certs[0..n-1] in order (n == 0: an empty stack), e.g. the issuer
 * chain for tls_context_set_identity(). -E2BIG for more than CRYPTO_X509_STACK_MAX. Free with
 * _cleanup_x509_stack_ (crypto-util.h). */
int crypto_x509_stack_new(X509 *const *certs, size_t n, STACK_OF(X509) **ret);
