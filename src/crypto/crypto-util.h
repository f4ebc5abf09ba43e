/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Shared OpenSSL helpers: one cleanup function per OpenSSL type, the mapping of OpenSSL's error queue
 * to a negative errno in one place, secure random bytes and constant-time comparison. Only src/crypto
 * and src/net include OpenSSL. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REQ *, X509_REQ_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_NAME *, X509_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_EXTENSION *, X509_EXTENSION_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE *, X509_STORE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_STORE_CTX *, X509_STORE_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free_all);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_INTEGER *, ASN1_INTEGER_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_TIME *, ASN1_TIME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_OCTET_STRING *, ASN1_OCTET_STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BASIC_CONSTRAINTS *, BASIC_CONSTRAINTS_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAMES *, GENERAL_NAMES_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAME *, GENERAL_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EXTENDED_KEY_USAGE *, EXTENDED_KEY_USAGE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(AUTHORITY_KEYID *, AUTHORITY_KEYID_free);

static inline void sk_X509_free_allp(STACK_OF(X509) **s) {
        if (*s)
                sk_X509_pop_free(*s, X509_free);
}
#define _cleanup_x509_stack_ _cleanup_(sk_X509_free_allp)

/* OPENSSL_free() on a buffer OpenSSL allocated (e.g. i2d_*(…, &p) output). */
static inline void openssl_freep(void *p) {
        OPENSSL_free(*(void **) p);
}

/* Drains OpenSSL's error queue into one readable line (logged at debug level, never above) and
 * returns -error. Use at every OpenSSL failure site: return crypto_error(EIO, "Failed to sign");
 * A last error that says "malloc failure" turns into -ENOMEM whatever error was passed. */
int crypto_error(int error, const char *what);
/* The reason of the oldest queued OpenSSL error, or "unknown error"; does not clear the queue. */
const char *crypto_error_reason(void);

/* Copies a memory BIO's content into a new NUL-terminated string (*ret_size, may be NULL, gets its length).
 * Empty content is -EIO unless allow_empty. Secret content (a PEM private key) is the caller's to wipe. */
int crypto_bio_to_string(BIO *bio, bool allow_empty, const char *what, char **ret, size_t *ret_size);

/* Cryptographically secure random bytes; -EIO if the DRBG fails. */
int crypto_random_bytes(void *p, size_t n);
/* Constant-time comparison of two buffers of equal length n. */
bool crypto_memeq(const void *a, const void *b, size_t n);
/* SHA-256 of a buffer; ret must hold 32 bytes. */
int crypto_sha256(const void *p, size_t n, uint8_t ret[static 32]);
/* Wipes n bytes and frees; returns NULL. */
void *crypto_erase_and_free(void *p, size_t n);

#define SHA256_DIGEST_SIZE 32

/* An OpenSSL i2d_*() encoder with the object type erased, so that one function can drive them all. Make
 * one per type with DEFINE_CRYPTO_I2D_FUNC() rather than casting the function pointer: calling through an
 * incompatible pointer type is undefined. */
typedef int (*CryptoI2dFunc)(const void *obj, unsigned char **out);

#define DEFINE_CRYPTO_I2D_FUNC(type, i2d)                                       \
        static inline int i2d##_any(const void *obj, unsigned char **out) {     \
                return i2d((const type *) obj, out);                            \
        }

/* DER-encodes obj into a buffer of our own (malloc, not OpenSSL's allocator), checking that the sizing
 * pass and the encoding pass agree. With secret, the buffer is wiped before it is freed on failure, and
 * nothing OpenSSL-owned holds a copy. what names the object in the error. */
int crypto_i2d_to_buffer(CryptoI2dFunc i2d, const void *obj, bool secret, const char *what, uint8_t **ret,
                         size_t *ret_size);
