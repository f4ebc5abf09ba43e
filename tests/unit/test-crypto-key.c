/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>

#include "crypto-key.h"
#include "crypto-util.h"
#include "tests.h"

static const KeyType key_types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

static EVP_PKEY *generate(KeyType t) {
        EVP_PKEY *k = NULL;

        ASSERT_OK(crypto_key_generate(t, &k));
        return ASSERT_NOT_NULL(k);
}

TEST(key_type_strings) {
        ASSERT_STREQ(key_type_to_string(KEY_TYPE_ECDSA_P256), "ecdsa-p256");
        ASSERT_STREQ(key_type_to_string(KEY_TYPE_ED25519), "ed25519");
        ASSERT_NULL(key_type_to_string(_KEY_TYPE_MAX));
        ASSERT_NULL(key_type_to_string(_KEY_TYPE_INVALID));

        ASSERT_EQ(key_type_from_string("ecdsa-p256"), KEY_TYPE_ECDSA_P256);
        ASSERT_EQ(key_type_from_string("ed25519"), KEY_TYPE_ED25519);
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++)
                ASSERT_EQ(key_type_from_string(key_type_to_string(key_types[i])), key_types[i]);

        static const char *const bad[] = { "", "ECDSA-P256", "Ed25519", "ecdsa", "rsa", "ed25519 ", "p256" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("'%s'", bad[i]);
                ASSERT_ERROR(key_type_from_string(bad[i]), EINVAL);
        }
        ASSERT_ERROR(key_type_from_string(NULL), EINVAL);
}

TEST(generate_and_type) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *a = NULL, *b = NULL;

                CASE("%s", key_type_to_string(key_types[i]));
                a = generate(key_types[i]);
                b = generate(key_types[i]);
                ASSERT_EQ(crypto_key_get_type(a), key_types[i]);
                /* Fresh randomness each time. */
                ASSERT_FALSE(crypto_key_public_equal(a, b));
                ASSERT_TRUE(crypto_key_public_equal(a, a));
        }

        EVP_PKEY *k = NULL;
        ASSERT_ERROR(crypto_key_generate(_KEY_TYPE_MAX, &k), EINVAL);
        ASSERT_ERROR(crypto_key_generate(_KEY_TYPE_INVALID, &k), EINVAL);
        ASSERT_NULL(k);
}

/* Keys ztna refuses, generated in-process. */
static EVP_PKEY *foreign_key(const char *what) {
        EVP_PKEY *k;

        if (streq(what, "rsa"))
                k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        else if (streq(what, "p384"))
                k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        else if (streq(what, "secp256k1"))
                k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "secp256k1");
        else
                k = EVP_PKEY_Q_keygen(NULL, NULL, what);
        return ASSERT_NOT_NULL(k);
}

static const char *const foreign[] = { "rsa", "p384", "secp256k1", "X25519", "ED448" };

TEST(unsupported_types_refused) {
        for (size_t i = 0; i < ELEMENTSOF(foreign); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *back = NULL;
                _cleanup_free_ uint8_t *pub = NULL, *sig = NULL;
                PKCS8_PRIV_KEY_INFO *p8;
                unsigned char *p8der = NULL;
                uint8_t *der = NULL;
                size_t der_size = 0, pub_size = 0, sig_size = 0;
                int len;

                CASE("%s", foreign[i]);
                k = foreign_key(foreign[i]);
                ASSERT_ERROR(crypto_key_get_type(k), EOPNOTSUPP);
                ASSERT_ERROR(crypto_key_to_pkcs8_der(k, &der, &der_size), EOPNOTSUPP);
                ASSERT_NULL(der);
                ASSERT_ERROR(crypto_key_sign(k, "x", 1, &sig, &sig_size), EOPNOTSUPP);
                ASSERT_NULL(sig);
                ASSERT_ERROR(crypto_key_verify(k, "x", 1, "sig", 3), EOPNOTSUPP);

                /* Encoded by OpenSSL itself: our parser refuses it after decoding. */
                ASSERT_OK(crypto_key_public_to_der(k, &pub, &pub_size));
                ASSERT_ERROR(crypto_key_public_from_der(pub, pub_size, &back), EOPNOTSUPP);
                ASSERT_NULL(back);

                /* A well-formed PKCS#8 of a foreign type is refused after decoding. */
                p8 = EVP_PKEY2PKCS8(k);
                ASSERT_NOT_NULL(p8);
                len = i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der);
                PKCS8_PRIV_KEY_INFO_free(p8);
                ASSERT_GT(len, 0);
                ASSERT_ERROR(crypto_key_from_pkcs8_der(p8der, len, &back), EOPNOTSUPP);
                OPENSSL_clear_free(p8der, len);
                ASSERT_NULL(back);
        }
}

TEST(explicit_curve_parameters_refused) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        const char *pem_path = test_path("explicit.pem"), *pub_path = test_path("explicit.pub.der");
        char *out, *pem;
        size_t size;

        /* The same curve as P-256, but spelled out: RFC 5480 forbids it and so do we. */
        ASSERT_EQ(TEST_RUN(&out, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                              "-pkeyopt", "ec_param_enc:explicit", "-out", pem_path),
                  0);
        pem = test_read_file(pem_path, &size);
        ASSERT_STRSTR(pem, "-----BEGIN PRIVATE KEY-----");
        ASSERT_ERROR(crypto_key_from_pkcs8_pem(pem, size, &k), EOPNOTSUPP);
        ASSERT_NULL(k);

        ASSERT_EQ(TEST_RUN(&out, "openssl", "pkey", "-in", pem_path, "-pubout", "-outform", "DER", "-out", pub_path),
                  0);
        pem = test_read_file(pub_path, &size);
        ASSERT_ERROR(crypto_key_public_from_der(pem, size, &k), EOPNOTSUPP);
        ASSERT_NULL(k);
}

TEST(pkcs8_der_round_trip) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *back = NULL;
                uint8_t *der = NULL, *der2 = NULL;
                size_t der_size = 0, der2_size = 0;

                CASE("%s", key_type_to_string(key_types[i]));
                k = generate(key_types[i]);
                ASSERT_OK(crypto_key_to_pkcs8_der(k, &der, &der_size));
                ASSERT_GT(der_size, 0);
                ASSERT_LE(der_size, KEY_DER_MAX);
                ASSERT_EQ(der[0], 0x30); /* SEQUENCE */

                ASSERT_OK(crypto_key_from_pkcs8_der(der, der_size, &back));
                ASSERT_EQ(crypto_key_get_type(back), key_types[i]);
                ASSERT_TRUE(crypto_key_public_equal(k, back));

                /* Canonical: re-encoding gives the same bytes. */
                ASSERT_OK(crypto_key_to_pkcs8_der(back, &der2, &der2_size));
                ASSERT_EQ(der2_size, der_size);
                ASSERT_MEMEQ(der, der2, der_size);

                crypto_erase_and_free(der, der_size);
                crypto_erase_and_free(der2, der2_size);
        }
}

TEST(pkcs8_pem_round_trip) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *back = NULL;
                char *pem = NULL;
                size_t size = 0;

                CASE("%s", key_type_to_string(key_types[i]));
                k = generate(key_types[i]);
                ASSERT_OK(crypto_key_to_pkcs8_pem(k, &pem, &size));
                ASSERT_EQ(strlen(pem), size);
                ASSERT_TRUE(strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
                ASSERT_STREQ(pem + size - 26, "-----END PRIVATE KEY-----\n");

                ASSERT_OK(crypto_key_from_pkcs8_pem(pem, size, &back));
                ASSERT_TRUE(crypto_key_public_equal(k, back));
                crypto_erase_and_free(pem, size);

                /* ret_size is optional. */
                ASSERT_OK(crypto_key_to_pkcs8_pem(k, &pem, NULL));
                crypto_erase_and_free(pem, strlen(pem));
        }
}

TEST(public_only_key_has_no_pkcs8) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *pub = NULL;
                _cleanup_free_ uint8_t *spki = NULL;
                uint8_t *der = NULL;
                char *pem = NULL;
                size_t spki_size = 0, der_size = 0;

                CASE("%s", key_type_to_string(key_types[i]));
                k = generate(key_types[i]);
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &pub));
                ASSERT_ERROR(crypto_key_to_pkcs8_der(pub, &der, &der_size), EINVAL);
                ASSERT_ERROR(crypto_key_to_pkcs8_pem(pub, &pem, NULL), EINVAL);
                ASSERT_NULL(der);
                ASSERT_NULL(pem);
        }
}

/* Our PKCS#8 and SPKI are what the openssl CLI reads and writes. */
TEST(openssl_cli_interop) {
        static const struct {
                const char *args[8];
                KeyType type;
        } gen[] = {
                { { "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", NULL },
                  KEY_TYPE_ECDSA_P256 },
                { { "genpkey", "-algorithm", "ED25519", NULL }, KEY_TYPE_ED25519 },
        };

        for (size_t i = 0; i < ELEMENTSOF(gen); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *pub = NULL;
                _cleanup_free_ uint8_t *spki = NULL;
                const char *key_path = test_path("cli.pem"), *pub_path = test_path("cli.pub.der");
                const char *args[12];
                size_t n = 0, size, spki_size = 0;
                char *out, *data;

                CASE("%s", key_type_to_string(gen[i].type));
                args[n++] = "openssl";
                for (const char *const *a = gen[i].args; *a; a++)
                        args[n++] = *a;
                args[n++] = "-out";
                args[n++] = key_path;
                args[n] = NULL;
                ASSERT_EQ(test_run(&out, args), 0);

                /* openssl → us */
                data = test_read_file(key_path, &size);
                ASSERT_OK(crypto_key_from_pkcs8_pem(data, size, &k));
                ASSERT_EQ(crypto_key_get_type(k), gen[i].type);

                /* The CLI's public key equals ours, byte for byte. */
                ASSERT_EQ(TEST_RUN(&out, "openssl", "pkey", "-in", key_path, "-pubout", "-outform", "DER", "-out",
                                      pub_path),
                          0);
                data = test_read_file(pub_path, &size);
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                ASSERT_EQ(spki_size, size);
                ASSERT_MEMEQ(spki, data, size);
                ASSERT_OK(crypto_key_public_from_der(data, size, &pub));
                ASSERT_TRUE(crypto_key_public_equal(k, pub));
        }

        /* us → openssl */
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
                const char *key_path = test_path("ours.pem");
                char *pem = NULL, *out;
                size_t size = 0;

                CASE("ours %s", key_type_to_string(key_types[i]));
                k = generate(key_types[i]);
                ASSERT_OK(crypto_key_to_pkcs8_pem(k, &pem, &size));
                test_write_file(key_path, pem, size);
                crypto_erase_and_free(pem, size);
                ASSERT_EQ(TEST_RUN(&out, "openssl", "pkey", "-in", key_path, "-check", "-noout"), 0);
                ASSERT_STRSTR(out, "Key is valid");
        }
}

TEST(encrypted_pkcs8_refused_without_prompt) {
        const char *plain = test_path("plain.pem"), *enc = test_path("enc.pem"),
                   *enc_der = test_path("enc.der");
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        char *out, *data;
        size_t size;

        ASSERT_EQ(TEST_RUN(&out, "openssl", "genpkey", "-algorithm", "ED25519", "-out", plain), 0);
        ASSERT_EQ(TEST_RUN(&out, "openssl", "pkcs8", "-topk8", "-in", plain, "-v2", "aes-256-cbc", "-passout",
                              "pass:secret", "-out", enc),
                  0);
        ASSERT_EQ(TEST_RUN(&out, "openssl", "pkcs8", "-topk8", "-in", plain, "-v2", "aes-256-cbc", "-passout",
                              "pass:secret", "-outform", "DER", "-out", enc_der),
                  0);

        /* stdin of this test may be a terminal: a prompt would hang here, so this also proves there is
         * none. */
        data = test_read_file(enc, &size);
        ASSERT_STRSTR(data, "-----BEGIN ENCRYPTED PRIVATE KEY-----");
        ASSERT_ERROR(crypto_key_from_pkcs8_pem(data, size, &k), ENOKEY);
        ASSERT_NULL(k);

        data = test_read_file(enc_der, &size);
        ASSERT_ERROR(crypto_key_from_pkcs8_der(data, size, &k), ENOKEY);
        ASSERT_NULL(k);
}

/* A P-256 PKCS#8 whose embedded public key belongs to another key pair. */
TEST(inconsistent_ec_key_refused) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *a = generate(KEY_TYPE_ECDSA_P256),
                                           *b = generate(KEY_TYPE_ECDSA_P256), *k = NULL;
        uint8_t pa[65], pb[65], *der = NULL, *hit;
        size_t la = 0, lb = 0, der_size = 0;

        ASSERT_EQ(EVP_PKEY_get_octet_string_param(a, OSSL_PKEY_PARAM_PUB_KEY, pa, sizeof(pa), &la), 1);
        ASSERT_EQ(EVP_PKEY_get_octet_string_param(b, OSSL_PKEY_PARAM_PUB_KEY, pb, sizeof(pb), &lb), 1);
        ASSERT_EQ(la, 65);
        ASSERT_EQ(lb, 65);

        ASSERT_OK(crypto_key_to_pkcs8_der(a, &der, &der_size));
        hit = memmem(der, der_size, pa, la);
        ASSERT_NOT_NULL(hit);
        memcpy(hit, pb, lb);
        ASSERT_ERROR(crypto_key_from_pkcs8_der(der, der_size, &k), EBADMSG);
        ASSERT_NULL(k);
        crypto_erase_and_free(der, der_size);
}

TEST(pkcs8_der_malformed) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]), *back = NULL;
                _cleanup_free_ uint8_t *spki = NULL, *big = NULL;
                uint8_t *der = NULL, *longer;
                size_t der_size = 0, spki_size = 0;

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_to_pkcs8_der(k, &der, &der_size));

                ASSERT_ERROR(crypto_key_from_pkcs8_der("", 0, &back), EBADMSG);
                ASSERT_ERROR(crypto_key_from_pkcs8_der("garbage", 7, &back), EBADMSG);

                /* Every truncation is refused. */
                for (size_t n = 1; n < der_size; n++) {
                        CASE("%s truncated to %zu", key_type_to_string(key_types[i]), n);
                        ASSERT_ERROR(crypto_key_from_pkcs8_der(der, n, &back), EBADMSG);
                }

                /* Trailing data is refused. */
                CASE("%s trailing byte", key_type_to_string(key_types[i]));
                longer = malloc(der_size + 1);
                ASSERT_NOT_NULL(longer);
                memcpy(longer, der, der_size);
                longer[der_size] = 0;
                ASSERT_ERROR(crypto_key_from_pkcs8_der(longer, der_size + 1, &back), EBADMSG);
                crypto_erase_and_free(longer, der_size + 1);

                /* A public key is not a private key. */
                CASE("%s SPKI", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                ASSERT_ERROR(crypto_key_from_pkcs8_der(spki, spki_size, &back), EBADMSG);

                /* The size cap comes before any parsing. */
                CASE("%s oversized", key_type_to_string(key_types[i]));
                big = calloc(1, KEY_DER_MAX + 1);
                ASSERT_NOT_NULL(big);
                memcpy(big, der, der_size);
                ASSERT_ERROR(crypto_key_from_pkcs8_der(big, KEY_DER_MAX + 1, &back), EFBIG);
                ASSERT_NULL(back);

                crypto_erase_and_free(der, der_size);
        }
}

TEST(pkcs8_pem_malformed) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(KEY_TYPE_ECDSA_P256), *back = NULL;
        _cleanup_free_ char *big = NULL;
        char *pem = NULL, buf[4096], *body;
        size_t size = 0;

        ASSERT_OK(crypto_key_to_pkcs8_pem(k, &pem, &size));
        body = strchr(pem, '\n') + 1; /* the base64 lines and the END line */

        static const char *const whitespace_after[] = { "\n", "\n\n", "  \t\r\n" };
        for (size_t i = 0; i < ELEMENTSOF(whitespace_after); i++) {
                CASE("trailing whitespace %zu", i);
                snprintf(buf, sizeof(buf), "%s%s", pem, whitespace_after[i]);
                ASSERT_OK(crypto_key_from_pkcs8_pem(buf, strlen(buf), &back));
                ASSERT_TRUE(crypto_key_public_equal(k, back));
                EVP_PKEY_free(TAKE_PTR(back));
        }

        CASE("explanatory text before");
        snprintf(buf, sizeof(buf), "Key for conn-1\n%s", pem);
        ASSERT_OK(crypto_key_from_pkcs8_pem(buf, strlen(buf), &back));
        EVP_PKEY_free(TAKE_PTR(back));

        /* Raw inputs, and the same base64 re-armoured under another label or with legacy headers. */
        static const struct {
                const char *name;
                const char *raw;     /* used as is, or NULL */
                const char *suffix;  /* appended to our PEM; "<pem>" for a second copy */
                const char *label;   /* re-armour the base64 with this label */
                const char *headers; /* encapsulated headers to insert */
                int error;
        } bad[] = {
                { "empty", "", NULL, NULL, NULL, EBADMSG },
                { "no block", "hello\n", NULL, NULL, NULL, EBADMSG },
                { "bad base64", "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", NULL, NULL,
                  NULL, EBADMSG },
                { "empty block", "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n", NULL, NULL,
                  NULL, EBADMSG },
                { "trailing garbage", NULL, "junk\n", NULL, NULL, EBADMSG },
                { "two blocks", NULL, "<pem>", NULL, NULL, EBADMSG },
                { "public key block", NULL, NULL, "PUBLIC KEY", "", EBADMSG },
                { "traditional EC", NULL, NULL, "EC PRIVATE KEY", "", EBADMSG },
                { "encrypted", NULL, NULL, "ENCRYPTED PRIVATE KEY", "", ENOKEY },
                { "legacy headers", NULL, NULL, "PRIVATE KEY",
                  "Proc-Type: 4,ENCRYPTED\n"
                  "DEK-Info: AES-128-CBC,00000000000000000000000000000000\n\n",
                  EBADMSG },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("%s", bad[i].name);
                if (bad[i].raw)
                        snprintf(buf, sizeof(buf), "%s", bad[i].raw);
                else if (bad[i].suffix)
                        snprintf(buf, sizeof(buf), "%s%s", pem,
                                 streq(bad[i].suffix, "<pem>") ? pem : bad[i].suffix);
                else {
                        size_t body_len = strstr(body, "-----END") - body;

                        snprintf(buf, sizeof(buf), "-----BEGIN %s-----\n%s%.*s-----END %s-----\n",
                                 bad[i].label, bad[i].headers, (int) body_len, body, bad[i].label);
                }
                ASSERT_ERROR(crypto_key_from_pkcs8_pem(buf, strlen(buf), &back), bad[i].error);
                ASSERT_NULL(back);
        }

        /* Sanity check of the re-armouring above: with the right label and no headers it parses. */
        CASE("re-armoured");
        snprintf(buf, sizeof(buf), "-----BEGIN PRIVATE KEY-----\n%.*s-----END PRIVATE KEY-----\n",
                 (int) (strstr(body, "-----END") - body), body);
        ASSERT_OK(crypto_key_from_pkcs8_pem(buf, strlen(buf), &back));
        EVP_PKEY_free(TAKE_PTR(back));

        CASE("oversized");
        big = malloc(KEY_PEM_MAX + 2);
        ASSERT_NOT_NULL(big);
        memset(big, '\n', KEY_PEM_MAX + 1);
        memcpy(big, pem, size);
        big[KEY_PEM_MAX + 1] = '\0';
        ASSERT_ERROR(crypto_key_from_pkcs8_pem(big, KEY_PEM_MAX + 1, &back), EFBIG);
        /* Just under the cap, whitespace padding is fine. */
        ASSERT_OK(crypto_key_from_pkcs8_pem(big, KEY_PEM_MAX, &back));

        crypto_erase_and_free(pem, size);
}

TEST(public_der_round_trip_and_errors) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]),
                                                   *other = generate(key_types[i]), *pub = NULL;
                _cleanup_free_ uint8_t *spki = NULL, *spki2 = NULL, *longer = NULL;
                uint8_t *der = NULL;
                size_t spki_size = 0, spki2_size = 0, der_size = 0;

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                ASSERT_EQ(spki_size, key_types[i] == KEY_TYPE_ECDSA_P256 ? 91 : 44);
                ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &pub));
                ASSERT_EQ(crypto_key_get_type(pub), key_types[i]);
                ASSERT_TRUE(crypto_key_public_equal(k, pub));
                ASSERT_TRUE(crypto_key_public_equal(pub, k));
                ASSERT_FALSE(crypto_key_public_equal(other, pub));

                /* The public half of a public key is itself. */
                ASSERT_OK(crypto_key_public_to_der(pub, &spki2, &spki2_size));
                ASSERT_EQ(spki2_size, spki_size);
                ASSERT_MEMEQ(spki, spki2, spki_size);
                EVP_PKEY_free(TAKE_PTR(pub));

                for (size_t n = 0; n < spki_size; n++) {
                        CASE("%s truncated to %zu", key_type_to_string(key_types[i]), n);
                        ASSERT_ERROR(crypto_key_public_from_der(spki, n, &pub), EBADMSG);
                }

                CASE("%s trailing", key_type_to_string(key_types[i]));
                longer = malloc(spki_size + 1);
                ASSERT_NOT_NULL(longer);
                memcpy(longer, spki, spki_size);
                longer[spki_size] = 0;
                ASSERT_ERROR(crypto_key_public_from_der(longer, spki_size + 1, &pub), EBADMSG);

                CASE("%s private key as public", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_to_pkcs8_der(k, &der, &der_size));
                ASSERT_ERROR(crypto_key_public_from_der(der, der_size, &pub), EBADMSG);
                crypto_erase_and_free(der, der_size);

                CASE("%s oversized", key_type_to_string(key_types[i]));
                ASSERT_ERROR(crypto_key_public_from_der(spki, KEY_PUBLIC_DER_MAX + 1, &pub), EFBIG);
                ASSERT_NULL(pub);
        }

        /* Across types keys are never equal. */
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ec = generate(KEY_TYPE_ECDSA_P256),
                                           *ed = generate(KEY_TYPE_ED25519);
        ASSERT_FALSE(crypto_key_public_equal(ec, ed));
}

/* A P-256 point that is not on the curve. */
TEST(public_point_off_curve_refused) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(KEY_TYPE_ECDSA_P256), *pub = NULL;
        _cleanup_free_ uint8_t *spki = NULL;
        size_t spki_size = 0;

        ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
        ASSERT_EQ(spki[spki_size - 65], 0x04); /* uncompressed point at the end */
        spki[spki_size - 1] ^= 0x01;           /* y changes: almost surely off the curve */
        ASSERT_ERROR(crypto_key_public_from_der(spki, spki_size, &pub), EBADMSG);
        ASSERT_NULL(pub);
}

TEST(sign_verify) {
        static const char msg[] = "ztna re-authentication challenge 0123456789abcdef";

        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]),
                                                   *other = generate(key_types[i]), *pub = NULL;
                _cleanup_free_ uint8_t *sig = NULL, *sig2 = NULL, *spki = NULL, *empty_sig = NULL;
                size_t sig_size = 0, sig2_size = 0, spki_size = 0, empty_sig_size = 0;
                uint8_t bad[KEY_SIGNATURE_MAX + 1] = {};

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_sign(k, msg, strlen(msg), &sig, &sig_size));
                if (key_types[i] == KEY_TYPE_ED25519)
                        ASSERT_EQ(sig_size, 64);
                else {
                        ASSERT_EQ(sig[0], 0x30); /* DER ECDSA-Sig-Value */
                        ASSERT_LE(sig_size, 72);
                }

                /* Verification uses the recorded public key, as the controller will. */
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &pub));
                ASSERT_EQ(crypto_key_verify(pub, msg, strlen(msg), sig, sig_size), 0);
                ASSERT_EQ(crypto_key_verify(k, msg, strlen(msg), sig, sig_size), 0);

                /* Wrong key, other data, shorter data. */
                ASSERT_ERROR(crypto_key_verify(other, msg, strlen(msg), sig, sig_size), EBADMSG);
                ASSERT_ERROR(crypto_key_verify(pub, "ztna re-authentication challenge 0123456789abcdeF",
                                               strlen(msg), sig, sig_size),
                             EBADMSG);
                ASSERT_ERROR(crypto_key_verify(pub, msg, strlen(msg) - 1, sig, sig_size), EBADMSG);

                /* Every single-bit change of the signature, and every truncation, is refused. */
                for (size_t b = 0; b < sig_size * 8; b++) {
                        CASE("%s bit %zu", key_type_to_string(key_types[i]), b);
                        sig[b / 8] ^= 1u << (b % 8);
                        ASSERT_ERROR(crypto_key_verify(pub, msg, strlen(msg), sig, sig_size), EBADMSG);
                        sig[b / 8] ^= 1u << (b % 8);
                }
                for (size_t n = 0; n < sig_size; n++) {
                        CASE("%s truncated to %zu", key_type_to_string(key_types[i]), n);
                        ASSERT_ERROR(crypto_key_verify(pub, msg, strlen(msg), sig, n), EBADMSG);
                }
                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_EQ(crypto_key_verify(pub, msg, strlen(msg), sig, sig_size), 0);

                /* Oversized signature and oversized data. */
                memcpy(bad, sig, sig_size);
                ASSERT_ERROR(crypto_key_verify(pub, msg, strlen(msg), bad, sizeof(bad)), EBADMSG);
                ASSERT_ERROR(crypto_key_verify(pub, msg, KEY_SIGN_DATA_MAX + 1, sig, sig_size), EINVAL);
                ASSERT_ERROR(crypto_key_sign(k, msg, KEY_SIGN_DATA_MAX + 1, &sig2, &sig2_size), EINVAL);
                ASSERT_NULL(sig2);

                /* Ed25519 is deterministic, ECDSA randomised: both verify. */
                ASSERT_OK(crypto_key_sign(k, msg, strlen(msg), &sig2, &sig2_size));
                ASSERT_EQ(crypto_key_verify(pub, msg, strlen(msg), sig2, sig2_size), 0);
                if (key_types[i] == KEY_TYPE_ED25519)
                        ASSERT_TRUE(sig2_size == sig_size && memcmp(sig, sig2, sig_size) == 0);
                else
                        ASSERT_FALSE(sig2_size == sig_size && memcmp(sig, sig2, sig_size) == 0);

                /* The empty message is a message. */
                ASSERT_OK(crypto_key_sign(k, NULL, 0, &empty_sig, &empty_sig_size));
                ASSERT_EQ(crypto_key_verify(pub, NULL, 0, empty_sig, empty_sig_size), 0);
                ASSERT_ERROR(crypto_key_verify(pub, "", 1, empty_sig, empty_sig_size), EBADMSG);
        }

        /* A signature of the other type never verifies. */
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ec = generate(KEY_TYPE_ECDSA_P256),
                                           *ed = generate(KEY_TYPE_ED25519);
        _cleanup_free_ uint8_t *ec_sig = NULL, *ed_sig = NULL;
        size_t ec_sig_size = 0, ed_sig_size = 0;

        CASE("cross-type");
        ASSERT_OK(crypto_key_sign(ec, msg, strlen(msg), &ec_sig, &ec_sig_size));
        ASSERT_OK(crypto_key_sign(ed, msg, strlen(msg), &ed_sig, &ed_sig_size));
        ASSERT_ERROR(crypto_key_verify(ed, msg, strlen(msg), ec_sig, ec_sig_size), EBADMSG);
        ASSERT_ERROR(crypto_key_verify(ec, msg, strlen(msg), ed_sig, ed_sig_size), EBADMSG);
}

/* Verifies a signature with the openssl CLI; returns its exit status. */
static int cli_verify(KeyType type, const char *pub, const char *data, const char *sig, char **out) {
        if (type == KEY_TYPE_ECDSA_P256)
                return TEST_RUN(out, "openssl", "dgst", "-sha256", "-keyform", "DER", "-verify", pub, "-signature",
                                   sig, data);
        return TEST_RUN(out, "openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", pub, "-rawin",
                           "-in", data, "-sigfile", sig);
}

/* Signatures are plain ECDSA-SHA256 / Ed25519 that any implementation verifies: check with the CLI. */
TEST(signatures_verify_with_openssl_cli) {
        static const char msg[] = "challenge:4f1bd2b8c1e04a2a9c6f7d6e0b1a2c3d";

        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]);
                _cleanup_free_ uint8_t *sig = NULL, *spki = NULL;
                const char *pub = test_path("pub.der"), *data = test_path("data"), *sigf = test_path("sig");
                size_t sig_size = 0, spki_size = 0;
                char *out;

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_key_sign(k, msg, strlen(msg), &sig, &sig_size));
                ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
                test_write_file(pub, spki, spki_size);
                test_write_file(data, msg, strlen(msg));
                test_write_file(sigf, sig, sig_size);

                ASSERT_EQ(cli_verify(key_types[i], pub, data, sigf, &out), 0);
                ASSERT_STRSTR(out, key_types[i] == KEY_TYPE_ECDSA_P256 ? "Verified OK"
                                                                       : "Signature Verified Successfully");

                /* And the CLI agrees that a flipped bit does not verify. */
                sig[sig_size - 1] ^= 1;
                test_write_file(sigf, sig, sig_size);
                ASSERT_NE(cli_verify(key_types[i], pub, data, sigf, &out), 0);
        }
}
