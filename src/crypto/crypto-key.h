/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Key pairs as ztna uses them (DESIGN.md §3 "Keys"): generation, the two accepted types, PKCS#8
 * serialisation of private keys, SubjectPublicKeyInfo for public keys (what the controller records at
 * enrollment), and raw signatures for re-authentication challenges. Only ECDSA on P-256 (named-curve
 * encoding) and Ed25519 are accepted anywhere; every other key is refused with -EOPNOTSUPP. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "macro.h"

/* Largest PKCS#8 DER private key accepted (a P-256 key is ~140 bytes, Ed25519 48). */
#define KEY_DER_MAX (8U * 1024U)
/* Largest PEM private key accepted. */
#define KEY_PEM_MAX (16U * 1024U)
/* Largest SubjectPublicKeyInfo DER accepted (P-256: 91 bytes, Ed25519: 44). */
#define KEY_PUBLIC_DER_MAX 1024U
/* Largest message crypto_key_sign()/crypto_key_verify() accept. */
#define KEY_SIGN_DATA_MAX (1024U * 1024U)
/* Largest signature accepted by crypto_key_verify() (ECDSA P-256 DER: ≤ 72 bytes, Ed25519: 64). */
#define KEY_SIGNATURE_MAX 256U

typedef enum KeyType {
        KEY_TYPE_ECDSA_P256,
        KEY_TYPE_ED25519,
        _KEY_TYPE_MAX,
        _KEY_TYPE_INVALID = -EINVAL,
} KeyType;

/* "ecdsa-p256", "ed25519"; NULL for anything else. */
const char *key_type_to_string(KeyType t);
/* The inverse; _KEY_TYPE_INVALID (-EINVAL) for NULL or an unknown name. */
KeyType key_type_from_string(const char *s);

/* A fresh key pair. -EINVAL for an invalid type. */
int crypto_key_generate(KeyType type, EVP_PKEY **ret);
/* The type of a key (private or public), or -EOPNOTSUPP for anything ztna does not accept (RSA, other
 * curves, P-256 with explicit curve parameters, …). */
KeyType crypto_key_get_type(const EVP_PKEY *key);
/* Whether the key has its private half (and it is valid), i.e. can sign. */
bool crypto_key_has_private(EVP_PKEY *key);

/* Unencrypted PKCS#8 PrivateKeyInfo. The output holds the private key: callers must release it with
 * crypto_erase_and_free(*ret, *ret_size) (for PEM: crypto_erase_and_free(pem, strlen(pem))), never free().
 * The PEM is NUL-terminated; ret_size (may be NULL for PEM) excludes the NUL. -EOPNOTSUPP for an
 * unsupported key type, -EINVAL for a key without its private half. */
int crypto_key_to_pkcs8_der(EVP_PKEY *key, uint8_t **ret, size_t *ret_size);
int crypto_key_to_pkcs8_pem(EVP_PKEY *key, char **ret, size_t *ret_size);

/* Parses an unencrypted PKCS#8 private key ("PRIVATE KEY" PEM block or its DER). Never prompts for a
 * password: an encrypted PKCS#8 key ("ENCRYPTED PRIVATE KEY") is refused with -ENOKEY. Other errors:
 * -EFBIG larger than KEY_DER_MAX/KEY_PEM_MAX, -EBADMSG malformed, trailing data, another PEM type or a key
 * that fails its consistency check, -EOPNOTSUPP a key type ztna does not accept. Input buffers are not
 * modified; intermediate copies of the key are wiped. */
int crypto_key_from_pkcs8_der(const void *der, size_t size, EVP_PKEY **ret);
int crypto_key_from_pkcs8_pem(const char *pem, size_t size, EVP_PKEY **ret);

/* SubjectPublicKeyInfo DER of the public half (works on a private key too). Free with free(). */
int crypto_key_public_to_der(EVP_PKEY *key, uint8_t **ret, size_t *ret_size);
/* Parses a SubjectPublicKeyInfo: -EFBIG over KEY_PUBLIC_DER_MAX, -EBADMSG malformed or trailing data,
 * -EOPNOTSUPP a key type ztna does not accept. */
int crypto_key_public_from_der(const void *der, size_t size, EVP_PKEY **ret);
/* Whether the public halves (and types) of two keys are the same. */
bool crypto_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b);

/* Signs data: ECDSA with SHA-256 (DER-encoded ECDSA-Sig-Value) or pure Ed25519 (64 bytes). The signature
 * is freed with free(). -EINVAL for more than KEY_SIGN_DATA_MAX bytes, -EOPNOTSUPP for another key type. */
int crypto_key_sign(EVP_PKEY *key, const void *data, size_t size, uint8_t **ret_sig, size_t *ret_sig_size);
/* Verifies a signature made by crypto_key_sign(): 0 when it verifies, -EBADMSG when it does not (wrong key,
 * other data, malformed or oversized signature), -EINVAL for more than KEY_SIGN_DATA_MAX bytes,
 * -EOPNOTSUPP for another key type. */
int crypto_key_verify(EVP_PKEY *public_key, const void *data, size_t size, const void *sig, size_t sig_size);

/* Reads exactly one PEM block of the given type (e.g. "PRIVATE KEY") from pem: explanatory text before the
 * block is allowed (RFC 7468), anything but whitespace after it is not, and encapsulated headers
 * (Proc-Type, DEK-Info) are refused. Returns the decoded bytes in a buffer to release with
 * crypto_erase_and_free() (the helper is used for secrets). -EBADMSG malformed, no block or a block of
 * another type (-ENOKEY instead when that type is "ENCRYPTED PRIVATE KEY"), -EFBIG over max_der bytes. */
int crypto_pem_decode_one(const char *pem, size_t size, const char *type, size_t max_der, uint8_t **ret,
                          size_t *ret_size);
