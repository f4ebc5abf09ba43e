/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Envelope encryption of small secrets at rest (DESIGN.md §7 "identity at rest"): AES-256-GCM under a
 * 32-byte key-encryption key, typically a systemd credential.
 *
 *     "ZTNAENV" (7 bytes) | u8 version (= 1) | u8 algorithm (= 1: AES-256-GCM) | 12-byte random nonce
 *     | ciphertext (as long as the plaintext) | 16-byte tag
 *
 * The GCM additional authenticated data is the 21 header bytes followed by the caller's AAD, so both the
 * header and the context the blob was sealed for (e.g. "ztna identity connector") are authenticated: a
 * blob moved to another purpose does not open. Nonces are random; a key should not seal more than 2^32
 * envelopes, far beyond what rewriting an identity file ever does. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_KEY_SIZE 32
#define ENVELOPE_MAGIC "ZTNAENV"
#define ENVELOPE_MAGIC_SIZE 7
#define ENVELOPE_VERSION 1
#define ENVELOPE_ALGORITHM_AES_256_GCM 1
#define ENVELOPE_NONCE_SIZE 12
#define ENVELOPE_TAG_SIZE 16
#define ENVELOPE_HEADER_SIZE (ENVELOPE_MAGIC_SIZE + 1 + 1 + ENVELOPE_NONCE_SIZE)
/* Bytes a sealed envelope adds to its plaintext. */
#define ENVELOPE_OVERHEAD (ENVELOPE_HEADER_SIZE + ENVELOPE_TAG_SIZE)
/* Largest plaintext, and largest caller AAD. */
#define ENVELOPE_PLAINTEXT_MAX ((size_t) 16U * 1024U * 1024U)
#define ENVELOPE_AAD_MAX ((size_t) 64U * 1024U)

/* Seals plaintext (size bytes; NULL allowed when size is 0) under key with the caller's AAD (NULL allowed
 * when aad_size is 0). ret gets size + ENVELOPE_OVERHEAD bytes. -EFBIG when the plaintext or the AAD is
 * larger than its maximum, -EIO when OpenSSL fails. */
int envelope_seal(const uint8_t key[ENVELOPE_KEY_SIZE], const void *aad, size_t aad_size,
                  const void *plaintext, size_t size, uint8_t **ret, size_t *ret_size);

/* Opens a sealed envelope. The plaintext is NUL-terminated one byte past ret_size (for text secrets) and
 * must be wiped after use (crypto_erase_and_free(p, size + 1)). Errors:
 *   -EBADMSG           shorter than ENVELOPE_OVERHEAD or not an envelope (magic)
 *   -EPROTONOSUPPORT   unknown version or algorithm
 *   -EKEYREJECTED      authentication failed: wrong key, wrong AAD, or any byte of nonce, ciphertext or tag
 *                      changed (also a truncated ciphertext). Nothing is returned; the partly decrypted
 *                      buffer is wiped.
 *   -EFBIG             larger than ENVELOPE_PLAINTEXT_MAX + ENVELOPE_OVERHEAD, or AAD above its maximum */
int envelope_open(const uint8_t key[ENVELOPE_KEY_SIZE], const void *aad, size_t aad_size,
                  const void *sealed, size_t size, uint8_t **ret_plaintext, size_t *ret_size);

/* Whether data starts with the envelope magic: to refuse a foreign or plaintext file with a clear error
 * before trying to open it. Says nothing about integrity. */
bool envelope_is_sealed(const void *data, size_t size);
