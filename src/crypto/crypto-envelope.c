/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto-envelope.h"
#include "crypto-util.h"
#include "log.h"

#define OFFSET_VERSION ENVELOPE_MAGIC_SIZE
#define OFFSET_ALGORITHM (OFFSET_VERSION + 1)
#define OFFSET_NONCE (OFFSET_ALGORITHM + 1)

/* Sets up AES-256-GCM in ctx for encryption or decryption and feeds the AAD: the header, then the
 * caller's context. */
static int envelope_cipher_init(EVP_CIPHER_CTX *ctx, bool encrypt, const uint8_t *key, const uint8_t *header,
                                const void *aad, size_t aad_size) {
        int outl;

        ERR_clear_error();

        if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, encrypt) != 1)
                return crypto_error(EIO, "Failed to set up AES-256-GCM");
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, ENVELOPE_NONCE_SIZE, NULL) != 1)
                return crypto_error(EIO, "Failed to set the GCM nonce length");
        if (EVP_CipherInit_ex(ctx, NULL, NULL, key, header + OFFSET_NONCE, encrypt) != 1)
                return crypto_error(EIO, "Failed to set the envelope key");
        if (EVP_CipherUpdate(ctx, NULL, &outl, header, ENVELOPE_HEADER_SIZE) != 1)
                return crypto_error(EIO, "Failed to authenticate the envelope header");
        if (aad_size > 0 && EVP_CipherUpdate(ctx, NULL, &outl, aad, (int) aad_size) != 1)
                return crypto_error(EIO, "Failed to authenticate the envelope context");
        return 0;
}

int envelope_seal(const uint8_t key[ENVELOPE_KEY_SIZE], const void *aad, size_t aad_size,
                  const void *plaintext, size_t size, uint8_t **ret, size_t *ret_size) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t total;
        int r, outl = 0, finl = 0;

        assert(key);
        assert(aad || aad_size == 0);
        assert(plaintext || size == 0);
        assert(ret);
        assert(ret_size);

        if (size > ENVELOPE_PLAINTEXT_MAX)
                return log_debug_errno(EFBIG, "Plaintext of %zu bytes is too large to seal.", size);
        if (aad_size > ENVELOPE_AAD_MAX)
                return log_debug_errno(EFBIG, "Envelope context of %zu bytes is too large.", aad_size);

        total = size + ENVELOPE_OVERHEAD;
        buf = malloc(total);
        if (!buf)
                return -ENOMEM;

        memcpy(buf, ENVELOPE_MAGIC, ENVELOPE_MAGIC_SIZE);
        buf[OFFSET_VERSION] = ENVELOPE_VERSION;
        buf[OFFSET_ALGORITHM] = ENVELOPE_ALGORITHM_AES_256_GCM;
        r = crypto_random_bytes(buf + OFFSET_NONCE, ENVELOPE_NONCE_SIZE);
        if (r < 0)
                return r;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        r = envelope_cipher_init(ctx, /* encrypt= */ true, key, buf, aad, aad_size);
        if (r < 0)
                return r;

        if (size > 0 &&
            EVP_EncryptUpdate(ctx, buf + ENVELOPE_HEADER_SIZE, &outl, plaintext, (int) size) != 1)
                return crypto_error(EIO, "Failed to encrypt envelope");
        /* GCM is a stream mode: everything comes out of Update, Final only computes the tag. */
        if (EVP_EncryptFinal_ex(ctx, buf + ENVELOPE_HEADER_SIZE + outl, &finl) != 1 ||
            (size_t) outl + (size_t) finl != size)
                return crypto_error(EIO, "Failed to finish envelope encryption");
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ENVELOPE_TAG_SIZE,
                                buf + ENVELOPE_HEADER_SIZE + size) != 1)
                return crypto_error(EIO, "Failed to get the GCM tag");

        *ret = TAKE_PTR(buf);
        *ret_size = total;
        return 0;
}

int envelope_open(const uint8_t key[ENVELOPE_KEY_SIZE], const void *aad, size_t aad_size,
                  const void *sealed, size_t size, uint8_t **ret_plaintext, size_t *ret_size) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        const uint8_t *in = sealed;
        uint8_t *buf = NULL, tag[ENVELOPE_TAG_SIZE];
        size_t n;
        int r, outl = 0, finl = 0;

        assert(key);
        assert(aad || aad_size == 0);
        assert(sealed || size == 0);
        assert(ret_plaintext);
        assert(ret_size);

        if (size < ENVELOPE_OVERHEAD || memcmp(in, ENVELOPE_MAGIC, ENVELOPE_MAGIC_SIZE) != 0)
                return log_debug_errno(EBADMSG, "Data is not a sealed envelope or is truncated.");
        if (in[OFFSET_VERSION] != ENVELOPE_VERSION)
                return log_debug_errno(EPROTONOSUPPORT, "Unsupported envelope version %u.",
                                       in[OFFSET_VERSION]);
        if (in[OFFSET_ALGORITHM] != ENVELOPE_ALGORITHM_AES_256_GCM)
                return log_debug_errno(EPROTONOSUPPORT, "Unsupported envelope algorithm %u.",
                                       in[OFFSET_ALGORITHM]);
        n = size - ENVELOPE_OVERHEAD;
        if (n > ENVELOPE_PLAINTEXT_MAX)
                return log_debug_errno(EFBIG, "Envelope of %zu bytes is too large.", size);
        if (aad_size > ENVELOPE_AAD_MAX)
                return log_debug_errno(EFBIG, "Envelope context of %zu bytes is too large.", aad_size);

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        r = envelope_cipher_init(ctx, /* encrypt= */ false, key, in, aad, aad_size);
        if (r < 0)
                return r;

        buf = malloc(n + 1);
        if (!buf)
                return -ENOMEM;

        if (n > 0 && EVP_DecryptUpdate(ctx, buf, &outl, in + ENVELOPE_HEADER_SIZE, (int) n) != 1) {
                r = crypto_error(EIO, "Failed to decrypt envelope");
                goto fail;
        }
        /* OpenSSL wants a writable tag buffer. */
        memcpy(tag, in + ENVELOPE_HEADER_SIZE + n, ENVELOPE_TAG_SIZE);
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ENVELOPE_TAG_SIZE, tag) != 1) {
                r = crypto_error(EIO, "Failed to set the GCM tag");
                goto fail;
        }
        if (EVP_DecryptFinal_ex(ctx, buf + outl, &finl) != 1) {
                /* Tag mismatch leaves nothing on the error queue, but make sure nothing stale stays. */
                ERR_clear_error();
                r = log_debug_errno(EKEYREJECTED, "Envelope authentication failed (wrong key, wrong context "
                                    "or damaged data).");
                goto fail;
        }
        if ((size_t) outl + (size_t) finl != n) {
                r = crypto_error(EIO, "Envelope decryption returned an unexpected length");
                goto fail;
        }
        buf[n] = 0;

        *ret_plaintext = buf;
        *ret_size = n;
        return 0;

fail:
        /* Unauthenticated plaintext never leaves this function, not even as heap garbage. */
        crypto_erase_and_free(buf, n + 1);
        return r;
}

bool envelope_is_sealed(const void *data, size_t size) {
        assert(data || size == 0);

        return size >= ENVELOPE_MAGIC_SIZE && memcmp(data, ENVELOPE_MAGIC, ENVELOPE_MAGIC_SIZE) == 0;
}
