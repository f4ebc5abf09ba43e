/* SPDX-License-Identifier: Apache-2.0 */

#include <openssl/evp.h>

#include "crypto-envelope.h"
#include "crypto-util.h"
#include "tests.h"

#define AAD "ztna identity connector"

static void test_key(uint8_t key[ENVELOPE_KEY_SIZE], uint8_t seed) {
        for (size_t i = 0; i < ENVELOPE_KEY_SIZE; i++)
                key[i] = (uint8_t) (seed + i * 7);
}

static void seal(const uint8_t *key, const void *p, size_t n, uint8_t **ret, size_t *ret_size) {
        ASSERT_OK(envelope_seal(key, AAD, strlen(AAD), p, n, ret, ret_size));
        ASSERT_UEQ(*ret_size, n + ENVELOPE_OVERHEAD);
}

TEST(layout_constants) {
        /* The on-disk format: changing any of these breaks every sealed file. */
        ASSERT_EQ(ENVELOPE_HEADER_SIZE, 21);
        ASSERT_EQ(ENVELOPE_OVERHEAD, 37);
        ASSERT_EQ(strlen(ENVELOPE_MAGIC), ENVELOPE_MAGIC_SIZE);
}

TEST(round_trip) {
        static const size_t sizes[] = { 0, 1, 15, 16, 17, 4096, 1024 * 1024 };
        uint8_t key[ENVELOPE_KEY_SIZE];

        test_key(key, 1);
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                _cleanup_free_ uint8_t *in = NULL, *sealed = NULL, *out = NULL;
                size_t sealed_size, out_size = SIZE_MAX;

                CASE("%zu bytes", sizes[i]);
                in = malloc(sizes[i] + 1);
                ASSERT_NOT_NULL(in);
                for (size_t j = 0; j < sizes[i]; j++)
                        in[j] = (uint8_t) (j * 131 + 7);

                seal(key, sizes[i] ? in : NULL, sizes[i], &sealed, &sealed_size);
                ASSERT_MEMEQ(sealed, "ZTNAENV\x01\x01", 9);
                ASSERT_TRUE(envelope_is_sealed(sealed, sealed_size));
                /* The ciphertext is not the plaintext. */
                if (sizes[i] >= 16)
                        ASSERT_TRUE(memcmp(sealed + ENVELOPE_HEADER_SIZE, in, sizes[i]) != 0);

                ASSERT_OK(envelope_open(key, AAD, strlen(AAD), sealed, sealed_size, &out, &out_size));
                ASSERT_UEQ(out_size, sizes[i]);
                ASSERT_MEMEQ(out, in, sizes[i]);
                ASSERT_EQ(out[out_size], 0);
        }
}

TEST(no_aad) {
        uint8_t key[ENVELOPE_KEY_SIZE];
        _cleanup_free_ uint8_t *sealed = NULL, *out = NULL;
        uint8_t *bad = NULL;
        size_t sealed_size, out_size;

        test_key(key, 2);
        ASSERT_OK(envelope_seal(key, NULL, 0, "secret", 6, &sealed, &sealed_size));
        ASSERT_OK(envelope_open(key, NULL, 0, sealed, sealed_size, &out, &out_size));
        ASSERT_STREQ((char *) out, "secret");
        /* An empty context is a context too: a blob sealed without one does not open with one. */
        ASSERT_ERROR(envelope_open(key, "x", 1, sealed, sealed_size, &bad, &out_size), EKEYREJECTED);
        ASSERT_NULL(bad);
}

TEST(wrong_key_or_aad) {
        uint8_t key[ENVELOPE_KEY_SIZE], other[ENVELOPE_KEY_SIZE];
        _cleanup_free_ uint8_t *sealed = NULL;
        size_t sealed_size;
        static const char *const aads[] = {
                "ztna identity tunneler",
                "ztna identity connecto",
                "ztna identity connector ",
                "ztna identity connector\0",
                "",
        };

        test_key(key, 3);
        seal(key, "top secret", 10, &sealed, &sealed_size);

        for (size_t bit = 0; bit < ENVELOPE_KEY_SIZE * 8; bit += 5) {
                uint8_t *out = NULL;
                size_t out_size = 99;

                CASE("key bit %zu", bit);
                memcpy(other, key, sizeof(other));
                other[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                ASSERT_ERROR(envelope_open(other, AAD, strlen(AAD), sealed, sealed_size, &out, &out_size),
                             EKEYREJECTED);
                ASSERT_NULL(out);
                ASSERT_UEQ(out_size, 99);
        }

        for (size_t i = 0; i < ELEMENTSOF(aads); i++) {
                uint8_t *out = NULL;
                size_t out_size = 99, l = strlen(aads[i]);

                /* The embedded-NUL row is one byte longer than AAD. */
                if (i == 3)
                        l = strlen(AAD) + 1;
                CASE("aad '%s' (%zu)", aads[i], l);
                ASSERT_ERROR(envelope_open(key, aads[i], l, sealed, sealed_size, &out, &out_size),
                             EKEYREJECTED);
                ASSERT_NULL(out);
                ASSERT_UEQ(out_size, 99);
        }
}

TEST(bit_flip_in_every_region) {
        static const struct {
                const char *region;
                size_t offset;
                int error;
        } table[] = {
                { "magic first byte",   0,  EBADMSG },
                { "magic last byte",    6,  EBADMSG },
                { "version",            7,  EPROTONOSUPPORT },
                { "algorithm",          8,  EPROTONOSUPPORT },
                { "nonce first byte",   9,  EKEYREJECTED },
                { "nonce last byte",    20, EKEYREJECTED },
                { "ciphertext first",   21, EKEYREJECTED },
                { "ciphertext last",    21 + 31, EKEYREJECTED },
                { "tag first byte",     21 + 32, EKEYREJECTED },
                { "tag last byte",      21 + 32 + 15, EKEYREJECTED },
        };
        uint8_t key[ENVELOPE_KEY_SIZE], plain[32];
        _cleanup_free_ uint8_t *sealed = NULL;
        size_t sealed_size;

        test_key(key, 4);
        memset(plain, 'p', sizeof(plain));
        seal(key, plain, sizeof(plain), &sealed, &sealed_size);
        ASSERT_UEQ(sealed_size, 21 + 32 + 16);

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                for (int bit = 0; bit < 8; bit++) {
                        _cleanup_free_ uint8_t *copy = NULL;
                        uint8_t *out = NULL;
                        size_t out_size = 99;

                        CASE("%s, bit %d", table[i].region, bit);
                        copy = malloc(sealed_size);
                        ASSERT_NOT_NULL(copy);
                        memcpy(copy, sealed, sealed_size);
                        copy[table[i].offset] ^= (uint8_t) (1u << bit);
                        ASSERT_ERROR(envelope_open(key, AAD, strlen(AAD), copy, sealed_size, &out,
                                                   &out_size),
                                     table[i].error);
                        ASSERT_NULL(out);
                        ASSERT_UEQ(out_size, 99);
                }
}

TEST(every_truncation) {
        uint8_t key[ENVELOPE_KEY_SIZE];
        _cleanup_free_ uint8_t *sealed = NULL;
        size_t sealed_size;

        test_key(key, 5);
        seal(key, "0123456789", 10, &sealed, &sealed_size);

        for (size_t l = 0; l < sealed_size; l++) {
                uint8_t *out = NULL;
                size_t out_size = 99;

                CASE("first %zu of %zu bytes", l, sealed_size);
                /* Too short for header and tag: not an envelope. Longer: the tag does not match. */
                ASSERT_ERROR(envelope_open(key, AAD, strlen(AAD), sealed, l, &out, &out_size),
                             l < ENVELOPE_OVERHEAD ? EBADMSG : EKEYREJECTED);
                ASSERT_NULL(out);
                ASSERT_UEQ(out_size, 99);
        }

        /* Bytes appended are refused as well. */
        _cleanup_free_ uint8_t *longer = malloc(sealed_size + 1);
        uint8_t *out = NULL;
        size_t out_size;
        ASSERT_NOT_NULL(longer);
        memcpy(longer, sealed, sealed_size);
        longer[sealed_size] = 0;
        ASSERT_ERROR(envelope_open(key, AAD, strlen(AAD), longer, sealed_size + 1, &out, &out_size),
                     EKEYREJECTED);
}

TEST(fresh_nonce) {
        uint8_t key[ENVELOPE_KEY_SIZE];
        _cleanup_free_ uint8_t *a = NULL, *b = NULL;
        size_t a_size, b_size;

        test_key(key, 6);
        seal(key, "same plaintext", 14, &a, &a_size);
        seal(key, "same plaintext", 14, &b, &b_size);
        ASSERT_UEQ(a_size, b_size);
        ASSERT_TRUE(memcmp(a + 9, b + 9, ENVELOPE_NONCE_SIZE) != 0);
        ASSERT_TRUE(memcmp(a + ENVELOPE_HEADER_SIZE, b + ENVELOPE_HEADER_SIZE, 14) != 0);
}

TEST(is_sealed) {
        static const struct {
                const char *data;
                size_t size;
                bool sealed;
        } table[] = {
                { "",                       0,  false },
                { "ZTNAEN",                 6,  false },
                { "ZTNAENV",                7,  true },
                { "ZTNAENV\x01\x01",        9,  true },
                { "ztnaenv\x01\x01",        9,  false },
                { "-----BEGIN PRIVATE KEY", 22, false },
                { "XZTNAENV",               8,  false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].data);
                ASSERT_EQ(envelope_is_sealed(table[i].data, table[i].size), table[i].sealed);
        }
}

TEST(size_limits) {
        uint8_t key[ENVELOPE_KEY_SIZE], *out = NULL;
        size_t out_size;
        static const uint8_t small[64] = {};

        test_key(key, 7);
        /* Sizes are checked before anything is read. */
        ASSERT_ERROR(envelope_seal(key, NULL, 0, small, ENVELOPE_PLAINTEXT_MAX + 1, &out, &out_size),
                     EFBIG);
        ASSERT_ERROR(envelope_seal(key, small, ENVELOPE_AAD_MAX + 1, small, 1, &out, &out_size), EFBIG);
        ASSERT_NULL(out);

        _cleanup_free_ uint8_t *big = calloc(1, ENVELOPE_PLAINTEXT_MAX + ENVELOPE_OVERHEAD + 1);
        ASSERT_NOT_NULL(big);
        memcpy(big, "ZTNAENV\x01\x01", 9);
        ASSERT_ERROR(envelope_open(key, NULL, 0, big, ENVELOPE_PLAINTEXT_MAX + ENVELOPE_OVERHEAD + 1, &out,
                                   &out_size), EFBIG);
        ASSERT_ERROR(envelope_open(key, small, ENVELOPE_AAD_MAX + 1, big, 64, &out, &out_size), EFBIG);
        ASSERT_NULL(out);

        /* Exactly the maximum is fine. */
        _cleanup_free_ uint8_t *sealed = NULL, *plain = NULL;
        size_t sealed_size;
        ASSERT_OK(envelope_seal(key, NULL, 0, big, ENVELOPE_PLAINTEXT_MAX, &sealed, &sealed_size));
        ASSERT_OK(envelope_open(key, NULL, 0, sealed, sealed_size, &plain, &out_size));
        ASSERT_UEQ(out_size, ENVELOPE_PLAINTEXT_MAX);
}

/* Decrypts with the raw EVP API, independent of the code under test: proves the format is really
 * AES-256-GCM with the documented nonce, tag and AAD (header bytes, then the caller's context). */
static int evp_gcm(bool encrypt, const uint8_t *key, const uint8_t *nonce, const void *aad1,
                   size_t aad1_size, const void *aad2, size_t aad2_size, const uint8_t *in, size_t n,
                   uint8_t *out, uint8_t *tag) {
        EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
        int outl = 0, finl = 0, ok;

        ASSERT_NOT_NULL(ctx);
        ASSERT_EQ(EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, encrypt), 1);
        ASSERT_EQ(EVP_CipherUpdate(ctx, NULL, &outl, aad1, (int) aad1_size), 1);
        ASSERT_EQ(EVP_CipherUpdate(ctx, NULL, &outl, aad2, (int) aad2_size), 1);
        ASSERT_EQ(EVP_CipherUpdate(ctx, out, &outl, in, (int) n), 1);
        ASSERT_UEQ(outl, n);
        if (!encrypt)
                ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag), 1);
        ok = EVP_CipherFinal_ex(ctx, out + outl, &finl);
        if (encrypt && ok == 1)
                ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag), 1);
        EVP_CIPHER_CTX_free(ctx);
        return ok == 1 ? 0 : -EKEYREJECTED;
}

TEST(cross_check_with_evp) {
        static const char plain[] = "-----BEGIN PRIVATE KEY-----\nnot really\n";
        uint8_t key[ENVELOPE_KEY_SIZE], out[sizeof(plain)], tag[16];
        _cleanup_free_ uint8_t *sealed = NULL;
        size_t sealed_size, n = sizeof(plain) - 1;

        test_key(key, 8);
        seal(key, plain, n, &sealed, &sealed_size);

        /* Our envelope, opened by plain EVP. */
        memcpy(tag, sealed + ENVELOPE_HEADER_SIZE + n, 16);
        ASSERT_OK(evp_gcm(false, key, sealed + 9, sealed, ENVELOPE_HEADER_SIZE, AAD, strlen(AAD),
                          sealed + ENVELOPE_HEADER_SIZE, n, out, tag));
        ASSERT_MEMEQ(out, plain, n);
        /* Without the header in the AAD, EVP refuses it: the header really is authenticated. */
        ASSERT_ERROR(evp_gcm(false, key, sealed + 9, "", 0, AAD, strlen(AAD), sealed + ENVELOPE_HEADER_SIZE,
                             n, out, tag),
                     EKEYREJECTED);

        /* An envelope built by plain EVP, opened by our code. */
        uint8_t built[ENVELOPE_OVERHEAD + sizeof(plain)];
        _cleanup_free_ uint8_t *opened = NULL;
        size_t opened_size;

        memcpy(built, "ZTNAENV\x01\x01", 9);
        for (size_t i = 0; i < ENVELOPE_NONCE_SIZE; i++)
                built[9 + i] = (uint8_t) (0xa0 + i);
        ASSERT_OK(evp_gcm(true, key, built + 9, built, ENVELOPE_HEADER_SIZE, AAD, strlen(AAD),
                          (const uint8_t *) plain, n, built + ENVELOPE_HEADER_SIZE,
                          built + ENVELOPE_HEADER_SIZE + n));
        ASSERT_OK(envelope_open(key, AAD, strlen(AAD), built, ENVELOPE_OVERHEAD + n, &opened, &opened_size));
        ASSERT_UEQ(opened_size, n);
        ASSERT_MEMEQ(opened, plain, n);
}

TEST(known_answer) {
        /* Key bytes 9 + 7i, nonce a0..ab, context AAD, plaintext "hello". Computed independently with
         * Python's cryptography AESGCM(key).encrypt(nonce, b"hello", header + b"ztna identity connector"):
         * pins the byte layout and the AAD composition, not just self-consistency. */
        static const uint8_t vector[] =
                "ZTNAENV\x01\x01"
                "\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab"
                "\xd0\x3e\x07\x2c\x11"
                "\x71\x1b\x39\xd8\x2e\x10\x8f\xe7\xfe\x27\x4b\xa5\x98\xa3\x65\x83";
        uint8_t key[ENVELOPE_KEY_SIZE];
        _cleanup_free_ uint8_t *opened = NULL;
        uint8_t *bad = NULL;
        size_t opened_size;

        test_key(key, 9);
        ASSERT_OK(envelope_open(key, AAD, strlen(AAD), vector, sizeof(vector) - 1, &opened, &opened_size));
        ASSERT_UEQ(opened_size, 5);
        ASSERT_STREQ((char *) opened, "hello");
        ASSERT_ERROR(envelope_open(key, NULL, 0, vector, sizeof(vector) - 1, &bad, &opened_size),
                     EKEYREJECTED);
}
