/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "crypto-csr.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "tests.h"

#define TD "example.org"

static const KeyType key_types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

static EVP_PKEY *generate(KeyType t) {
        EVP_PKEY *k = NULL;

        ASSERT_OK(crypto_key_generate(t, &k));
        return ASSERT_NOT_NULL(k);
}

static SpiffeId *make_id(const char *td, SpiffeRole role, const char *name) {
        SpiffeId *id = NULL;

        ASSERT_OK(spiffe_id_new_ztna(td, role, name, &id));
        return ASSERT_NOT_NULL(id);
}

/* The URI SANs in the CSR's extensionRequest, as one "a,b" string (empty if none). */
static void csr_uris(X509_REQ *req, char *buf, size_t size, int *ret_n_exts) {
        STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
        GENERAL_NAMES *names;

        buf[0] = '\0';
        *ret_n_exts = exts ? sk_X509_EXTENSION_num(exts) : 0;
        for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
                X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);

                if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_subject_alt_name)
                        continue;
                names = X509V3_EXT_d2i(ext);
                ASSERT_NOT_NULL(names);
                for (int j = 0; j < sk_GENERAL_NAME_num(names); j++) {
                        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, j);

                        ASSERT_EQ(g->type, GEN_URI);
                        if (buf[0])
                                strncat(buf, ",", size - strlen(buf) - 1);
                        strncat(buf, (const char *) ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                                size - strlen(buf) - 1);
                }
                GENERAL_NAMES_free(names);
        }
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

TEST(new_and_verify) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++)
                for (int with_id = 0; with_id < 2; with_id++) {
                        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]), *pub = NULL;
                        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
                        char uris[512];
                        int n_exts;

                        CASE("%s id=%d", key_type_to_string(key_types[i]), with_id);
                        id = make_id(TD, SPIFFE_ROLE_CONNECTOR, "conn-1");
                        ASSERT_OK(crypto_csr_new(k, with_id ? id : NULL, &req));

                        ASSERT_EQ(X509_REQ_get_version(req), X509_REQ_VERSION_1);
                        ASSERT_EQ(X509_NAME_entry_count(X509_REQ_get_subject_name(req)), 0);
                        ASSERT_EQ(X509_REQ_get_signature_nid(req),
                                  key_types[i] == KEY_TYPE_ECDSA_P256 ? NID_ecdsa_with_SHA256 : NID_ED25519);

                        csr_uris(req, uris, sizeof(uris), &n_exts);
                        if (with_id) {
                                ASSERT_EQ(n_exts, 1);
                                ASSERT_STREQ(uris, "spiffe://example.org/connector/conn-1");
                        } else {
                                ASSERT_EQ(n_exts, 0);
                                ASSERT_STREQ(uris, "");
                        }

                        ASSERT_OK(crypto_csr_verify(req, &pub));
                        ASSERT_NOT_NULL(pub);
                        ASSERT_TRUE(crypto_key_public_equal(k, pub));
                        ASSERT_EQ(crypto_key_get_type(pub), key_types[i]);
                        /* ret_public_key is optional. */
                        ASSERT_OK(crypto_csr_verify(req, NULL));
                }
}

TEST(der_pem_round_trip) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]), *pub = NULL;
                _cleanup_(spiffe_id_freep) SpiffeId *id = make_id(TD, SPIFFE_ROLE_TUNNELER, "laptop");
                _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *back = NULL, *back2 = NULL;
                _cleanup_free_ uint8_t *der = NULL, *der2 = NULL;
                _cleanup_free_ char *pem = NULL;
                size_t der_size = 0, der2_size = 0, pem_size = 0;
                char uris[512];
                int n_exts;

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_csr_new(k, id, &req));

                ASSERT_OK(crypto_csr_to_der(req, &der, &der_size));
                ASSERT_LE(der_size, CSR_DER_MAX);
                ASSERT_OK(crypto_csr_from_der(der, der_size, &back));
                ASSERT_OK(crypto_csr_verify(back, &pub));
                ASSERT_TRUE(crypto_key_public_equal(k, pub));
                csr_uris(back, uris, sizeof(uris), &n_exts);
                ASSERT_STREQ(uris, "spiffe://example.org/tunneler/laptop");

                ASSERT_OK(crypto_csr_to_pem(req, &pem, &pem_size));
                ASSERT_EQ(strlen(pem), pem_size);
                ASSERT_TRUE(strncmp(pem, "-----BEGIN CERTIFICATE REQUEST-----\n", 36) == 0);
                ASSERT_OK(crypto_csr_from_pem(pem, pem_size, &back2));
                ASSERT_OK(crypto_csr_verify(back2, NULL));
                ASSERT_OK(crypto_csr_to_der(back2, &der2, &der2_size));
                ASSERT_EQ(der2_size, der_size);
                ASSERT_MEMEQ(der, der2, der_size);
        }
}

TEST(unsupported_keys) {
        static const char *const types[] = { "RSA", "ED448", "P-384" };

        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL, *pub = NULL;
                _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *hand = NULL;

                CASE("%s", types[i]);
                if (streq(types[i], "RSA"))
                        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
                else if (streq(types[i], "P-384"))
                        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
                else
                        k = EVP_PKEY_Q_keygen(NULL, NULL, types[i]);
                ASSERT_NOT_NULL(k);
                ASSERT_ERROR(crypto_csr_new(k, NULL, &req), EOPNOTSUPP);
                ASSERT_NULL(req);

                /* A correctly self-signed CSR of a foreign key type is still refused. */
                hand = X509_REQ_new();
                ASSERT_NOT_NULL(hand);
                ASSERT_EQ(X509_REQ_set_version(hand, X509_REQ_VERSION_1), 1);
                ASSERT_EQ(X509_REQ_set_pubkey(hand, k), 1);
                ASSERT_GT(X509_REQ_sign(hand, k, streq(types[i], "ED448") ? NULL : EVP_sha256()), 0);
                ASSERT_EQ(X509_REQ_verify(hand, k), 1);
                ASSERT_ERROR(crypto_csr_verify(hand, &pub), EOPNOTSUPP);
                ASSERT_NULL(pub);
        }
}

TEST(public_only_key_cannot_make_csr) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(KEY_TYPE_ECDSA_P256), *pub = NULL;
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_free_ uint8_t *spki = NULL;
        size_t spki_size = 0;

        ASSERT_OK(crypto_key_public_to_der(k, &spki, &spki_size));
        ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &pub));
        ASSERT_ERROR(crypto_csr_new(pub, NULL, &req), EINVAL);
        ASSERT_NULL(req);
}

/* Proof of possession: a CSR carrying key A but signed by key B is refused, whichever way it was made. */
TEST(signature_by_other_key_refused) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++)
                for (size_t j = 0; j < ELEMENTSOF(key_types); j++) {
                        _cleanup_(EVP_PKEY_freep) EVP_PKEY *a = generate(key_types[i]),
                                                           *b = generate(key_types[j]), *pub = NULL;
                        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *hand = NULL, *reparsed = NULL;
                        _cleanup_free_ uint8_t *der = NULL;
                        size_t der_size = 0;

                        CASE("signed by %s, claims %s", key_type_to_string(key_types[i]),
                             key_type_to_string(key_types[j]));

                        /* Tampered after signing: the key is swapped, the signature stays. */
                        ASSERT_OK(crypto_csr_new(a, NULL, &req));
                        ASSERT_EQ(X509_REQ_set_pubkey(req, b), 1);
                        ASSERT_ERROR(crypto_csr_verify(req, &pub), EBADMSG);
                        ASSERT_NULL(pub);

                        /* And the same after a round trip through DER, as it arrives from the network. */
                        ASSERT_OK(crypto_csr_to_der(req, &der, &der_size));
                        ASSERT_OK(crypto_csr_from_der(der, der_size, &reparsed));
                        ASSERT_ERROR(crypto_csr_verify(reparsed, &pub), EBADMSG);
                        ASSERT_NULL(pub);

                        /* Built by hand: B's public key, signed with A. */
                        hand = X509_REQ_new();
                        ASSERT_NOT_NULL(hand);
                        ASSERT_EQ(X509_REQ_set_version(hand, X509_REQ_VERSION_1), 1);
                        ASSERT_EQ(X509_REQ_set_pubkey(hand, b), 1);
                        ASSERT_GT(X509_REQ_sign(hand, a,
                                                key_types[i] == KEY_TYPE_ECDSA_P256 ? EVP_sha256() : NULL),
                                  0);
                        ASSERT_ERROR(crypto_csr_verify(hand, &pub), EBADMSG);
                        ASSERT_NULL(pub);
                }
}

TEST(tampered_der_refused) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]);
                _cleanup_(spiffe_id_freep) SpiffeId *id = make_id(TD, SPIFFE_ROLE_CONNECTOR, "conn-1");
                _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
                _cleanup_free_ uint8_t *der = NULL;
                size_t der_size = 0;
                uint8_t *hit;

                ASSERT_OK(crypto_csr_new(k, id, &req));
                ASSERT_OK(crypto_csr_to_der(req, &der, &der_size));

                /* Every single-byte change, anywhere, is refused by parsing or by verification. */
                for (size_t pos = 0; pos < der_size; pos++) {
                        _cleanup_(X509_REQ_freep) X509_REQ *t = NULL;
                        EVP_PKEY *pub = NULL;
                        int r;

                        CASE("%s byte %zu of %zu", key_type_to_string(key_types[i]), pos, der_size);
                        der[pos] ^= 0x01;
                        r = crypto_csr_from_der(der, der_size, &t);
                        if (r >= 0) {
                                r = crypto_csr_verify(t, &pub);
                                ASSERT_TRUE(r == -EBADMSG || r == -EOPNOTSUPP);
                                ASSERT_NULL(pub);
                        } else
                                ASSERT_EQ(r, -EBADMSG);
                        der[pos] ^= 0x01;
                }

                /* In particular, changing the requested identity breaks the signature. */
                CASE("%s identity", key_type_to_string(key_types[i]));
                hit = memmem(der, der_size, "conn-1", 6);
                ASSERT_NOT_NULL(hit);
                hit[5] = '2';
                {
                        _cleanup_(X509_REQ_freep) X509_REQ *t = NULL;

                        ASSERT_OK(crypto_csr_from_der(der, der_size, &t));
                        ASSERT_ERROR(crypto_csr_verify(t, NULL), EBADMSG);
                }
        }
}

TEST(weak_or_odd_signatures_refused) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(KEY_TYPE_ECDSA_P256);
        _cleanup_(X509_REQ_freep) X509_REQ *sha1 = NULL, *sha384 = NULL, *v2 = NULL;

        /* SHA-1: OpenSSL itself would verify it, we do not accept it. */
        sha1 = X509_REQ_new();
        ASSERT_NOT_NULL(sha1);
        ASSERT_EQ(X509_REQ_set_version(sha1, X509_REQ_VERSION_1), 1);
        ASSERT_EQ(X509_REQ_set_pubkey(sha1, k), 1);
        ASSERT_GT(X509_REQ_sign(sha1, k, EVP_sha1()), 0);
        ASSERT_EQ(X509_REQ_verify(sha1, k), 1);
        ASSERT_ERROR(crypto_csr_verify(sha1, NULL), EOPNOTSUPP);

        /* SHA-384 with P-256 is fine. */
        sha384 = X509_REQ_new();
        ASSERT_NOT_NULL(sha384);
        ASSERT_EQ(X509_REQ_set_version(sha384, X509_REQ_VERSION_1), 1);
        ASSERT_EQ(X509_REQ_set_pubkey(sha384, k), 1);
        ASSERT_GT(X509_REQ_sign(sha384, k, EVP_sha384()), 0);
        ASSERT_OK(crypto_csr_verify(sha384, NULL));

        /* Only version 1 (value 0) exists. */
        v2 = X509_REQ_new();
        ASSERT_NOT_NULL(v2);
        ASSERT_EQ(X509_REQ_set_version(v2, 1), 1);
        ASSERT_EQ(X509_REQ_set_pubkey(v2, k), 1);
        ASSERT_GT(X509_REQ_sign(v2, k, EVP_sha256()), 0);
        ASSERT_ERROR(crypto_csr_verify(v2, NULL), EBADMSG);
}

TEST(malformed_input) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(KEY_TYPE_ECDSA_P256);
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *back = NULL;
        _cleanup_free_ uint8_t *der = NULL, *longer = NULL, *big = NULL;
        _cleanup_free_ char *pem = NULL, *bigpem = NULL;
        size_t der_size = 0, pem_size = 0;
        char buf[8192];

        ASSERT_OK(crypto_csr_new(k, NULL, &req));
        ASSERT_OK(crypto_csr_to_der(req, &der, &der_size));
        ASSERT_OK(crypto_csr_to_pem(req, &pem, &pem_size));

        ASSERT_ERROR(crypto_csr_from_der("", 0, &back), EBADMSG);
        for (size_t n = 1; n < der_size; n++) {
                CASE("truncated to %zu", n);
                ASSERT_ERROR(crypto_csr_from_der(der, n, &back), EBADMSG);
        }
        CASE("trailing");
        longer = malloc(der_size + 1);
        ASSERT_NOT_NULL(longer);
        memcpy(longer, der, der_size);
        longer[der_size] = 0;
        ASSERT_ERROR(crypto_csr_from_der(longer, der_size + 1, &back), EBADMSG);

        CASE("oversized DER");
        big = calloc(1, CSR_DER_MAX + 1);
        ASSERT_NOT_NULL(big);
        memcpy(big, der, der_size);
        ASSERT_ERROR(crypto_csr_from_der(big, CSR_DER_MAX + 1, &back), EFBIG);

        static const struct {
                const char *name;
                const char *prefix, *suffix;
                bool relabel;
                int error;
        } bad[] = {
                { "empty", NULL, NULL, false, EBADMSG },
                { "trailing garbage", "", "junk\n", false, EBADMSG },
                { "two blocks", "", "<pem>", false, EBADMSG },
                { "certificate label", "", "", true, EBADMSG },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("%s", bad[i].name);
                if (!bad[i].prefix)
                        buf[0] = '\0';
                else if (bad[i].relabel) {
                        char *b = strstr(pem, "\n") + 1, *e = strstr(pem, "-----END");

                        snprintf(buf, sizeof(buf),
                                 "-----BEGIN CERTIFICATE-----\n%.*s-----END CERTIFICATE-----\n",
                                 (int) (e - b), b);
                } else
                        snprintf(buf, sizeof(buf), "%s%s%s", bad[i].prefix, pem,
                                 streq(bad[i].suffix, "<pem>") ? pem : bad[i].suffix);
                ASSERT_ERROR(crypto_csr_from_pem(buf, strlen(buf), &back), bad[i].error);
                ASSERT_NULL(back);
        }

        CASE("oversized PEM");
        bigpem = malloc(CSR_PEM_MAX + 1);
        ASSERT_NOT_NULL(bigpem);
        memset(bigpem, '\n', CSR_PEM_MAX + 1);
        memcpy(bigpem, pem, pem_size);
        ASSERT_ERROR(crypto_csr_from_pem(bigpem, CSR_PEM_MAX + 1, &back), EFBIG);
        ASSERT_OK(crypto_csr_from_pem(bigpem, CSR_PEM_MAX, &back));
}

/* What we write, the openssl CLI verifies; what the CLI writes, we verify. */
TEST(openssl_cli_interop) {
        for (size_t i = 0; i < ELEMENTSOF(key_types); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = generate(key_types[i]), *pub = NULL;
                _cleanup_(spiffe_id_freep) SpiffeId *id = make_id(TD, SPIFFE_ROLE_CONNECTOR, "conn-1");
                _cleanup_(X509_REQ_freep) X509_REQ *req = NULL, *theirs = NULL;
                _cleanup_free_ char *pem = NULL;
                const char *csr_path = test_path("csr.pem"), *key_path = test_path("key.pem"),
                           *their_path = test_path("their.csr");
                char *out, *key_pem = NULL, *data;
                size_t pem_size = 0, key_pem_size = 0, size;

                CASE("%s", key_type_to_string(key_types[i]));
                ASSERT_OK(crypto_csr_new(k, id, &req));
                ASSERT_OK(crypto_csr_to_pem(req, &pem, &pem_size));
                test_write_file(csr_path, pem, pem_size);

                ASSERT_EQ(TEST_RUN(&out, "openssl", "req", "-in", csr_path, "-verify", "-noout"), 0);
                ASSERT_STRSTR(out, "verify OK");
                ASSERT_EQ(TEST_RUN(&out, "openssl", "req", "-in", csr_path, "-text", "-noout"), 0);
                ASSERT_STRSTR(out, "URI:spiffe://example.org/connector/conn-1");
                ASSERT_STRSTR(out, key_types[i] == KEY_TYPE_ECDSA_P256 ? "ecdsa-with-SHA256" : "ED25519");

                /* A CSR from the CLI, with a subject we will ignore. */
                ASSERT_OK(crypto_key_to_pkcs8_pem(k, &key_pem, &key_pem_size));
                test_write_file(key_path, key_pem, key_pem_size);
                crypto_erase_and_free(key_pem, key_pem_size);
                ASSERT_EQ(TEST_RUN(&out, "openssl", "req", "-new", "-key", key_path, "-subj", "/CN=whatever", "-out",
                                      their_path),
                          0);
                data = test_read_file(their_path, &size);
                ASSERT_OK(crypto_csr_from_pem(data, size, &theirs));
                ASSERT_OK(crypto_csr_verify(theirs, &pub));
                ASSERT_TRUE(crypto_key_public_equal(k, pub));
        }
}
