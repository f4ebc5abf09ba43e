/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Enrollment tokens (DESIGN.md §3). A token is everything `ztna-connector enroll --token-file F` needs:
 * a public id, a 256-bit one-time secret, the SHA-256 pin of the controller's root CA SubjectPublicKeyInfo
 * and the controller address(es). The controller stores only the id and SHA-256(secret).
 *
 * String form: "ztna1-" + base64url (RFC 4648 §5, no padding) of the binary payload
 *
 *     u8 version (= 1) | 16 id | 32 secret | 32 ca_pin | u8 n_addresses
 *     | n_addresses × (u8 len | len bytes of ASCII "host:port") | 4-byte checksum
 *
 * where the checksum is the first 4 bytes of SHA-256 over every preceding payload byte. The checksum
 * trailer is the same in every version, so a damaged or truncated token is reported as such, and only an
 * intact token with another version byte gets -EPROTONOSUPPORT. Encoding is canonical: a string that
 * token_from_string() accepts is reproduced byte for byte by token_to_string().
 *
 * The string carries the secret: callers wipe it (erase_and_free_string()) and never log it. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define TOKEN_ID_SIZE 16
#define TOKEN_SECRET_SIZE 32
#define TOKEN_PIN_SIZE 32
#define TOKEN_HASH_SIZE 32
#define TOKEN_CHECKSUM_SIZE 4
#define TOKEN_VERSION 1
#define TOKEN_PREFIX "ztna1-"
/* Controller addresses in one token, and the longest "host:port" (bytes, without NUL). */
#define TOKEN_ADDRESSES_MAX 8
#define TOKEN_ADDRESS_MAX 255
/* Longest string token_from_string() looks at. The largest valid token (8 addresses of 255 bytes) is
 * 2,852 characters. */
#define TOKEN_STRING_MAX 4096

typedef struct EnrollmentToken {
        uint8_t id[TOKEN_ID_SIZE];
        uint8_t secret[TOKEN_SECRET_SIZE];
        uint8_t ca_pin[TOKEN_PIN_SIZE];
        char **addresses; /* n_addresses "host:port" strings, NULL-terminated */
        size_t n_addresses;
} EnrollmentToken;

/* A new token with a random id and secret. addresses is a NULL-terminated list of 1..TOKEN_ADDRESSES_MAX
 * "host:port" strings as parse_host_port() accepts them without a default port (a DNS name, an IPv4
 * address or a bracketed IPv6 address; port 1..65535), at most TOKEN_ADDRESS_MAX bytes once written in
 * canonical form; -EINVAL otherwise. They are stored canonically (host_port_to_string(): names
 * lower-cased, addresses as inet_ntop() writes them, no leading zeros in the port), which is the only
 * spelling token_from_string() accepts. */
int token_generate(const uint8_t ca_pin[TOKEN_PIN_SIZE], char *const *addresses, EnrollmentToken **ret);

/* The string form. Secret-bearing: erase after use. -EINVAL if the token's fields break the rules above. */
int token_to_string(const EnrollmentToken *t, char **ret);

/* Parses the string form, strictly: the exact prefix, at most TOKEN_STRING_MAX characters, canonical
 * base64url, no trailing bytes. The parser does not trim: a caller reading a file or credential strips
 * surrounding whitespace and the final newline first. Errors:
 *   -EINVAL            empty, or no "ztna1-" prefix (not a token)
 *   -EMSGSIZE          longer than TOKEN_STRING_MAX
 *   -EBADMSG           damaged: whitespace anywhere, invalid base64url, truncated, checksum mismatch,
 *                      trailing bytes, address count not 1..TOKEN_ADDRESSES_MAX, an address that is not
 *                      a valid host:port in canonical spelling
 *   -EPROTONOSUPPORT   intact but a payload version other than 1
 *   -ENOMEM
 * On failure, when ret_reason is non-NULL it is set to a static, secret-free sentence a CLI can print
 * ("token is damaged or truncated (checksum mismatch)"); it is left untouched on success. */
int token_from_string(const char *s, EnrollmentToken **ret, const char **ret_reason);

/* SHA-256 of the secret: what the controller's database stores. */
int token_secret_hash(const uint8_t secret[TOKEN_SECRET_SIZE], uint8_t ret[TOKEN_HASH_SIZE]);
/* Whether SHA-256(secret) equals stored_hash, compared in constant time. */
/* Constant-time comparison of two secret hashes, for code outside src/crypto (the store) that must not
 * include OpenSSL. */
bool token_hash_equal(const uint8_t a[static TOKEN_HASH_SIZE], const uint8_t b[static TOKEN_HASH_SIZE]);
bool token_secret_verify(const uint8_t secret[TOKEN_SECRET_SIZE],
                         const uint8_t stored_hash[TOKEN_HASH_SIZE]);

/* Lower-case hex of the id (32 characters), for listings and the database; NULL on allocation failure. */
char *token_id_to_string(const uint8_t id[TOKEN_ID_SIZE]);

/* Wipes the secret and frees everything. Accepts NULL, returns NULL. */
EnrollmentToken *token_free(EnrollmentToken *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(EnrollmentToken *, token_free);
