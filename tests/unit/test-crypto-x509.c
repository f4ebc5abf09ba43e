/* SPDX-License-Identifier: Apache-2.0 */

#include <ctype.h>

#include <openssl/pem.h>

#include "crypto-bundle.h"
#include "crypto-ca.h"
#include "crypto-csr.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "tests.h"

#define TD "example.org"
/* 2030-01-01T00:00:00Z plus a fraction of a second, which notBefore/notAfter cannot carry. */
#define T0_SEC ((uint64_t)1893456000ULL)
#define T0     (T0_SEC * USEC_PER_SEC + 123456)

typedef struct Pki {
        CertificateAuthority *root, *issuing;
        EVP_PKEY *leaf_key;
        X509 *leaf;
} Pki;

static X509 *issue(const CertificateAuthority *ca, EVP_PKEY *key, usec_t lifetime, usec_t now_usec) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        X509 *leaf = NULL;

        ASSERT_OK(spiffe_id_new_ztna(TD, SPIFFE_ROLE_CONNECTOR, "c1", &id));
        LeafParams p = {.id = id, .public_key = key, .lifetime = lifetime, .now = now_usec};
        ASSERT_OK(ca_issue_leaf(ca, &p, &leaf));
        return ASSERT_NOT_NULL(leaf);
}

static void pki_init(Pki *pki, KeyType type) {
        *pki = (Pki){};
        ASSERT_OK(ca_new_root(TD, type, 10 * USEC_PER_YEAR, T0 - USEC_PER_DAY, &pki->root));
        ASSERT_OK(ca_new_issuing(pki->root, type, 30 * USEC_PER_DAY, T0 - USEC_PER_HOUR, &pki->issuing));
        ASSERT_OK(crypto_key_generate(type, &pki->leaf_key));
        pki->leaf = issue(pki->issuing, pki->leaf_key, USEC_PER_HOUR, T0);
}

static void pki_done(Pki *pki) {
        ca_free(pki->root);
        ca_free(pki->issuing);
        EVP_PKEY_free(pki->leaf_key);
        X509_free(pki->leaf);
        *pki = (Pki){};
}

static uint8_t *to_der(X509 *x, size_t *ret_size) {
        uint8_t *der = NULL;

        ASSERT_OK(crypto_x509_to_der(x, &der, ret_size));
        return ASSERT_NOT_NULL(der);
}

TEST(der_roundtrip) {
        static const KeyType types[] = {KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519};

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                _cleanup_(pki_done) Pki pki = {};

                CASE("%s", key_type_to_string(types[t]));
                pki_init(&pki, types[t]);

                X509 *certs[] = {ca_get_certificate(pki.root), ca_get_certificate(pki.issuing), pki.leaf};
                for (size_t i = 0; i < ELEMENTSOF(certs); i++) {
                        _cleanup_free_ uint8_t *der = NULL, *again = NULL;
                        _cleanup_(openssl_freep) unsigned char *ref = NULL;
                        _cleanup_(X509_freep) X509 *x = NULL;
                        size_t size = 0, again_size = 0;
                        int ref_size;

                        CASE("%s cert %zu", key_type_to_string(types[t]), i);
                        der = to_der(certs[i], &size);
                        /* What OpenSSL itself encodes. */
                        ref_size = i2d_X509(certs[i], &ref);
                        ASSERT_GT(ref_size, 0);
                        ASSERT_EQ(size, (size_t)ref_size);
                        ASSERT_MEMEQ(der, ref, size);

                        ASSERT_OK(crypto_x509_from_der(der, size, &x));
                        ASSERT_NOT_NULL(x);
                        ASSERT_EQ(X509_cmp(x, certs[i]), 0);
                        again = to_der(x, &again_size);
                        ASSERT_EQ(again_size, size);
                        ASSERT_MEMEQ(again, der, size);
                }
        }
}

TEST(der_trailing_bytes) {
        _cleanup_(pki_done) Pki pki = {};
        _cleanup_free_ uint8_t *der = NULL, *issuer = NULL, *buf = NULL;
        size_t size = 0, issuer_size = 0;
        X509 *x = NULL;

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        der = to_der(pki.leaf, &size);
        issuer = to_der(ca_get_certificate(pki.issuing), &issuer_size);
        buf = ASSERT_NOT_NULL(malloc(size + issuer_size));
        memcpy(buf, der, size);
        memcpy(buf + size, issuer, issuer_size);

        static const uint8_t tails[][4] = {{0x00}, {0x30, 0x00}, {0xff, 0xff, 0xff, 0xff}};
        static const size_t tail_sizes[] = {1, 2, 4};
        for (size_t i = 0; i < ELEMENTSOF(tails); i++) {
                _cleanup_free_ uint8_t *t = ASSERT_NOT_NULL(malloc(size + tail_sizes[i]));

                CASE("tail %zu", i);
                memcpy(t, der, size);
                memcpy(t + size, tails[i], tail_sizes[i]);
                ASSERT_ERROR(crypto_x509_from_der(t, size + tail_sizes[i], &x), EBADMSG);
                ASSERT_NULL(x);
        }

        CASE("two certificates");
        ASSERT_ERROR(crypto_x509_from_der(buf, size + issuer_size, &x), EBADMSG);
        ASSERT_NULL(x);
        /* The first one alone is fine. */
        ASSERT_OK(crypto_x509_from_der(buf, size, &x));
        X509_free(ASSERT_NOT_NULL(x));
}

TEST(der_truncated_and_garbage) {
        _cleanup_(pki_done) Pki pki = {};
        _cleanup_free_ uint8_t *der = NULL, *csr_der = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        size_t size = 0, csr_size = 0;
        X509 *x = NULL;

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        der = to_der(pki.leaf, &size);

        CASE("empty");
        ASSERT_ERROR(crypto_x509_from_der(der, 0, &x), EBADMSG);

        const size_t cuts[] = {1, 2, 4, size / 2, size - 1};
        for (size_t i = 0; i < ELEMENTSOF(cuts); i++) {
                CASE("truncated to %zu of %zu", cuts[i], size);
                ASSERT_ERROR(crypto_x509_from_der(der, cuts[i], &x), EBADMSG);
                ASSERT_NULL(x);
        }

        CASE("a CSR is not a certificate");
        ASSERT_OK(crypto_csr_new(pki.leaf_key, NULL, &req));
        ASSERT_OK(crypto_csr_to_der(req, &csr_der, &csr_size));
        ASSERT_ERROR(crypto_x509_from_der(csr_der, csr_size, &x), EBADMSG);

        CASE("a flipped tag");
        der[0] ^= 0x01;
        ASSERT_ERROR(crypto_x509_from_der(der, size, &x), EBADMSG);
        ASSERT_NULL(x);
}

TEST(der_oversize) {
        _cleanup_(pki_done) Pki pki = {};
        _cleanup_free_ uint8_t *der = NULL, *big = NULL;
        size_t size = 0;
        X509 *x = NULL;

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        der = to_der(pki.leaf, &size);
        big = ASSERT_NOT_NULL(calloc(1, X509_DER_MAX + 1));
        memcpy(big, der, size);

        CASE("one byte over the maximum");
        ASSERT_ERROR(crypto_x509_from_der(big, X509_DER_MAX + 1, &x), EFBIG);
        CASE("huge");
        ASSERT_ERROR(crypto_x509_from_der(big, SIZE_MAX, &x), EFBIG);
        /* At the maximum the size is accepted and the trailing zeroes are what is refused. */
        CASE("at the maximum");
        ASSERT_ERROR(crypto_x509_from_der(big, X509_DER_MAX, &x), EBADMSG);
        ASSERT_NULL(x);
}

TEST(validity_matches_issuance) {
        static const struct {
                usec_t lifetime;
                usec_t now;
        } table[] = {
                {10 * USEC_PER_SEC, T0},
                {USEC_PER_HOUR, T0},
                {USEC_PER_HOUR, T0 + 999999},
                {24 * USEC_PER_HOUR, T0 + 7 * USEC_PER_SEC},
        };
        _cleanup_(pki_done) Pki pki = {};

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(X509_freep) X509 *leaf = NULL;
                usec_t nb = 0, na = 0, now_sec = table[i].now / USEC_PER_SEC * USEC_PER_SEC;

                CASE("lifetime %" PRIu64 " now %" PRIu64, table[i].lifetime, table[i].now);
                leaf = issue(pki.issuing, pki.leaf_key, table[i].lifetime, table[i].now);
                ASSERT_OK(crypto_x509_get_validity(leaf, &nb, &na));
                /* ca_issue_leaf(): back-dated by CA_BACKDATE_USEC, lifetime from now, whole seconds. */
                ASSERT_UEQ(nb, now_sec - CA_BACKDATE_USEC);
                ASSERT_UEQ(na, now_sec + table[i].lifetime);

                /* Either output may be left out. */
                usec_t only = 0;
                ASSERT_OK(crypto_x509_get_validity(leaf, &only, NULL));
                ASSERT_UEQ(only, nb);
                ASSERT_OK(crypto_x509_get_validity(leaf, NULL, &only));
                ASSERT_UEQ(only, na);
        }

        /* A leaf is clamped to its issuer: the issuer's validity is what ca_new_issuing() set. */
        CASE("issuing CA");
        usec_t nb = 0, na = 0;
        ASSERT_OK(crypto_x509_get_validity(ca_get_certificate(pki.issuing), &nb, &na));
        ASSERT_UEQ(nb, (T0 - USEC_PER_HOUR) / USEC_PER_SEC * USEC_PER_SEC - CA_BACKDATE_USEC);
        ASSERT_UEQ(na, (T0 - USEC_PER_HOUR) / USEC_PER_SEC * USEC_PER_SEC + 30 * USEC_PER_DAY);
}

TEST(validity_generalized_time) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL;
        usec_t nb = 0, na = 0;

        /* Past 2049 X.509 uses GeneralizedTime instead of UTCTime. */
        ASSERT_OK(ca_new_root(TD, KEY_TYPE_ECDSA_P256, 40 * USEC_PER_YEAR, T0, &root));
        ASSERT_OK(crypto_x509_get_validity(ca_get_certificate(root), &nb, &na));
        ASSERT_UEQ(nb, T0_SEC * USEC_PER_SEC - CA_BACKDATE_USEC);
        ASSERT_UEQ(na, T0_SEC * USEC_PER_SEC + 40 * USEC_PER_YEAR);
}

TEST(validity_out_of_range) {
        static const char *const times[] = {"19500101000000Z", "19691231235959Z"};
        _cleanup_(pki_done) Pki pki = {};

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        for (size_t i = 0; i < ELEMENTSOF(times); i++) {
                _cleanup_(X509_freep) X509 *x = X509_dup(pki.leaf);
                usec_t nb = 7, na = 7;

                CASE("%s", times[i]);
                ASSERT_NOT_NULL(x);
                ASSERT_EQ(ASN1_TIME_set_string(X509_getm_notBefore(x), times[i]), 1);
                ASSERT_ERROR(crypto_x509_get_validity(x, &nb, &na), ERANGE);
                /* Untouched on failure. */
                ASSERT_UEQ(nb, 7);
                ASSERT_UEQ(na, 7);
                ASSERT_ERROR(crypto_x509_get_validity(x, NULL, NULL), ERANGE);
        }

        CASE("the epoch itself");
        _cleanup_(X509_freep) X509 *x = ASSERT_NOT_NULL(X509_dup(pki.leaf));
        usec_t nb = 7;
        ASSERT_EQ(ASN1_TIME_set_string(X509_getm_notBefore(x), "19700101000000Z"), 1);
        ASSERT_OK(crypto_x509_get_validity(x, &nb, NULL));
        ASSERT_UEQ(nb, 0);
}

static char *serial_of(X509 *x) {
        char *s = NULL;

        ASSERT_OK(crypto_x509_get_serial_hex(x, &s));
        return ASSERT_NOT_NULL(s);
}

TEST(serial_matches_openssl_cli) {
        _cleanup_(pki_done) Pki pki = {};

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        X509 *certs[] = {ca_get_certificate(pki.root), ca_get_certificate(pki.issuing), pki.leaf};
        for (size_t i = 0; i < ELEMENTSOF(certs); i++) {
                _cleanup_free_ char *serial = NULL;
                char *out = NULL, *p;
                const char *path = test_path("cert.pem");
                FILE *f;

                CASE("cert %zu", i);
                f = ASSERT_NOT_NULL(fopen(path, "we"));
                ASSERT_EQ(PEM_write_X509(f, certs[i]), 1);
                ASSERT_EQ(fclose(f), 0);
                ASSERT_EQ(TEST_RUN(&out, "openssl", "x509", "-in", path, "-noout", "-serial"), 0);
                ASSERT_TRUE(strneq(out, "serial=", STRLEN("serial=")));
                out += STRLEN("serial=");
                for (p = out; *p && *p != '\n'; p++)
                        *p = (char)tolower((unsigned char)*p);
                *p = '\0';

                serial = serial_of(certs[i]);
                ASSERT_STREQ(serial, out);
                /* 126 random bits: 32 hex digits, the first 4..7 (crypto-ca.h). */
                ASSERT_EQ(strlen(serial), 32);
                ASSERT_TRUE(serial[0] >= '4' && serial[0] <= '7');
        }
}

TEST(serial_formatting) {
        static const struct {
                const char *bn; /* hex, as BN_hex2bn() takes it */
                const char *expected;
        } table[] = {
                {"0", "0"},
                {"1", "1"},
                {"0A", "a"},
                {"100", "100"},
                {"00FF", "ff"},
                {"ABCDEF0123456789", "abcdef0123456789"},
                {"7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", "7fffffffffffffffffffffffffffffff"},
                {"-5", "-5"},
        };
        _cleanup_(pki_done) Pki pki = {};

        pki_init(&pki, KEY_TYPE_ECDSA_P256);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(X509_freep) X509 *x = ASSERT_NOT_NULL(X509_dup(pki.leaf));
                _cleanup_(BN_freep) BIGNUM *bn = NULL;
                _cleanup_free_ char *s = NULL;

                CASE("%s", table[i].bn);
                ASSERT_GT(BN_hex2bn(&bn, table[i].bn), 0);
                ASSERT_NOT_NULL(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)));
                s = serial_of(x);
                ASSERT_STREQ(s, table[i].expected);
        }
}

TEST(public_key_der) {
        static const KeyType types[] = {KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519};

        for (size_t t = 0; t < ELEMENTSOF(types); t++) {
                _cleanup_(pki_done) Pki pki = {};
                _cleanup_free_ uint8_t *spki = NULL, *expected = NULL, *other = NULL;
                size_t spki_size = 0, expected_size = 0, other_size = 0;
                uint8_t digest[32], fingerprint[32];
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *parsed = NULL;

                CASE("%s", key_type_to_string(types[t]));
                pki_init(&pki, types[t]);
                ASSERT_OK(crypto_x509_get_public_key_der(pki.leaf, &spki, &spki_size));
                ASSERT_OK(crypto_key_public_to_der(pki.leaf_key, &expected, &expected_size));
                ASSERT_EQ(spki_size, expected_size);
                ASSERT_MEMEQ(spki, expected, spki_size);
                ASSERT_EQ(spki_size, types[t] == KEY_TYPE_ED25519 ? 44 : 91);

                /* The store's CA fingerprint is the SHA-256 of exactly these bytes. */
                ASSERT_OK(crypto_sha256(spki, spki_size, digest));
                ASSERT_OK(crypto_x509_spki_sha256(pki.leaf, fingerprint));
                ASSERT_MEMEQ(digest, fingerprint, 32);

                ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &parsed));
                ASSERT_TRUE(crypto_key_public_equal(parsed, pki.leaf_key));

                /* Another certificate, another key. */
                ASSERT_OK(crypto_x509_get_public_key_der(
                        ca_get_certificate(pki.issuing), &other, &other_size));
                ASSERT_FALSE(other_size == spki_size && memcmp(other, spki, spki_size) == 0);
        }
}

TEST(references_and_stacks) {
        _cleanup_(pki_done) Pki pki = {};
        _cleanup_x509_stack_ STACK_OF(X509) *empty = NULL, *two = NULL;
        STACK_OF(X509) *untouched = (STACK_OF(X509) *)&pki;
        X509 *leaf;

        pki_init(&pki, KEY_TYPE_ECDSA_P256);

        ASSERT_NULL(crypto_x509_ref(NULL));
        crypto_x509_unref(NULL);

        ASSERT_OK(crypto_x509_stack_new(NULL, 0, &empty));
        ASSERT_NOT_NULL(empty);
        ASSERT_EQ(sk_X509_num(empty), 0);

        X509 *certs[] = {pki.leaf, ca_get_certificate(pki.issuing)};
        ASSERT_OK(crypto_x509_stack_new(certs, ELEMENTSOF(certs), &two));
        ASSERT_EQ(sk_X509_num(two), 2);
        ASSERT_TRUE(sk_X509_value(two, 0) == pki.leaf);
        ASSERT_TRUE(sk_X509_value(two, 1) == ca_get_certificate(pki.issuing));

        /* The stack holds its own references: dropping ours leaves its entry usable. */
        leaf = pki.leaf;
        ASSERT_TRUE(crypto_x509_ref(leaf) == leaf);
        crypto_x509_unref(leaf);
        X509_free(pki.leaf);
        pki.leaf = NULL;
        ASSERT_OK(crypto_x509_get_validity(sk_X509_value(two, 0), NULL, NULL));

        X509 *many[CRYPTO_X509_STACK_MAX + 1];
        for (size_t i = 0; i < ELEMENTSOF(many); i++)
                many[i] = ca_get_certificate(pki.root);
        ASSERT_ERROR(crypto_x509_stack_new(many, ELEMENTSOF(many), &untouched), E2BIG);
        ASSERT_TRUE(untouched == (STACK_OF(X509) *)&pki);
        STACK_OF(X509) *full = NULL;
        ASSERT_OK(crypto_x509_stack_new(many, CRYPTO_X509_STACK_MAX, &full));
        ASSERT_EQ(sk_X509_num(full), (int)CRYPTO_X509_STACK_MAX);
        sk_X509_pop_free(full, X509_free);
}
