/* SPDX-License-Identifier: Apache-2.0 */

#include <stdio.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "certgen.h"
#include "crypto-bundle.h"
#include "crypto-svid.h"
#include "crypto-util.h"
#include "hexdecoct.h"
#include "string-util.h"
#include "tests.h"

#define TD "example.org"
#define TD_URI "spiffe://" TD

static X509 *make_root(const char *uri, EVP_PKEY *key) {
        CertgenParams p = certgen_params_ca(uri, NULL, NULL);
        X509 *x = NULL;

        p.key = key;
        ASSERT_OK(certgen_make(&p, &x, NULL));
        return x;
}

static char *root_pem(void) {
        _cleanup_(X509_freep) X509 *x = make_root(TD_URI, NULL);
        char *pem = NULL;

        ASSERT_OK(crypto_x509_to_pem(x, &pem));
        return pem;
}

static void fingerprint(X509 *x, uint8_t fp[static CRYPTO_SPKI_SHA256_SIZE]) {
        ASSERT_OK(crypto_x509_spki_sha256(x, fp));
}

TEST(spki_fingerprint_matches_openssl_cli) {
        static const char *const kinds[] = { "P-256", "P-384", "RSA-2048" };

        if (access("/usr/bin/openssl", X_OK) < 0)
                test_skip("no /usr/bin/openssl");

        for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
                _cleanup_(X509_freep) X509 *x = NULL;
                _cleanup_free_ char *hex = NULL;
                uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];
                char path[512], cmd[1200], out[128] = {};
                FILE *f;

                CASE("%s", kinds[i]);
                key = streq(kinds[i], "RSA-2048") ? EVP_RSA_gen(2048) : EVP_EC_gen(kinds[i]);
                ASSERT_NOT_NULL(key);
                x = make_root(TD_URI, key);

                snprintf(path, sizeof(path), "%s/root-%zu.pem", test_tmpdir(), i);
                ASSERT_OK(certgen_write_pem(path, x));
                snprintf(cmd, sizeof(cmd),
                         "/usr/bin/openssl x509 -in '%s' -pubkey -noout | "
                         "/usr/bin/openssl pkey -pubin -outform DER | sha256sum",
                         path);
                f = ASSERT_NOT_NULL(popen(cmd, "r"));
                ASSERT_NOT_NULL(fgets(out, sizeof(out), f));
                ASSERT_EQ(pclose(f), 0);
                ASSERT_GE(strlen(out), 64u);
                out[64] = '\0';

                fingerprint(x, fp);
                hex = ASSERT_NOT_NULL(hexmem(fp, sizeof(fp)));
                ASSERT_STREQ(hex, out);
        }
}

TEST(fingerprint_is_of_the_key_not_the_certificate) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-256");
        _cleanup_(X509_freep) X509 *a = NULL, *b = NULL, *c = NULL;
        uint8_t fa[CRYPTO_SPKI_SHA256_SIZE], fb[CRYPTO_SPKI_SHA256_SIZE], fc[CRYPTO_SPKI_SHA256_SIZE];

        ASSERT_NOT_NULL(key);
        a = make_root(TD_URI, key);
        b = make_root(NULL, key); /* re-issued: other serial, other extensions, same key */
        c = make_root(TD_URI, NULL);
        fingerprint(a, fa);
        fingerprint(b, fb);
        fingerprint(c, fc);
        ASSERT_MEMEQ(fa, fb, sizeof(fa));
        ASSERT_FALSE(crypto_memeq(fa, fc, sizeof(fa)));
}

TEST(new_validates_trust_domain) {
        static const char *const bad[] = { "", "Example.org", "example.org:443", "a/b", "u@x" };
        TrustBundle *b = NULL;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("%s", bad[i]);
                ASSERT_ERROR(trust_bundle_new(bad[i], &b), EINVAL);
                ASSERT_NULL(b);
        }
        ASSERT_ERROR(trust_bundle_new(NULL, &b), EINVAL);
        ASSERT_OK(trust_bundle_new(TD, &b));
        ASSERT_STREQ(trust_bundle_trust_domain(b), TD);
        ASSERT_EQ(trust_bundle_size(b), 0u);
        ASSERT_NULL(trust_bundle_get(b, 0));
        trust_bundle_free(b);
        ASSERT_NULL(trust_bundle_free(NULL));
}

enum { ROOT_OK, ROOT_NO_URI, ROOT_PATH_URI, ROOT_OTHER_TD, ROOT_NO_KCS, ROOT_CA_FALSE, ROOT_NO_BC,
       ROOT_INTERMEDIATE, ROOT_SELF_ISSUED_OTHER_KEY, ROOT_LEAF };

TEST(add_rules) {
        static const struct {
                int kind;
                int error;
                const char *reason;
        } table[] = {
                { ROOT_OK, 0, NULL },
                { ROOT_NO_URI, 0, NULL },
                { ROOT_PATH_URI, EKEYREJECTED,
                  "SPIFFE ID has a path (only the trust-domain ID is allowed)" },
                { ROOT_OTHER_TD, EKEYREJECTED, "SPIFFE ID is of another trust domain" },
                { ROOT_NO_KCS, EKEYREJECTED, "keyUsage lacks keyCertSign" },
                { ROOT_CA_FALSE, EKEYREJECTED, "basicConstraints is CA:FALSE" },
                { ROOT_NO_BC, EKEYREJECTED, "no basicConstraints extension" },
                { ROOT_INTERMEDIATE, EKEYREJECTED, "root certificate is not self-signed" },
                { ROOT_SELF_ISSUED_OTHER_KEY, EKEYREJECTED, "root certificate is not self-signed" },
                { ROOT_LEAF, EKEYREJECTED, "basicConstraints is CA:FALSE" },
        };
        _cleanup_(certgen_chain_done) CertgenChain chain = {};

        ASSERT_OK(certgen_chain_make(TD, NULL, &chain));

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
                _cleanup_(X509_freep) X509 *x = NULL;
                CertgenParams p = certgen_params_ca(TD_URI, NULL, NULL);
                const char *reason = NULL;
                uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];

                CASE("kind %d", table[i].kind);
                switch (table[i].kind) {
                case ROOT_NO_URI:
                        p.n_uris = 0;
                        break;
                case ROOT_PATH_URI:
                        p.uris[0] = TD_URI "/root";
                        break;
                case ROOT_OTHER_TD:
                        p.uris[0] = "spiffe://other.org";
                        break;
                case ROOT_NO_KCS:
                        p.key_usage = KU_CRL_SIGN | KU_DIGITAL_SIGNATURE;
                        break;
                case ROOT_CA_FALSE:
                        p.ca = 0;
                        break;
                case ROOT_NO_BC:
                        p.ca = -1;
                        break;
                case ROOT_SELF_ISSUED_OTHER_KEY:
                        /* Issuer name = its own subject name, but signed by the chain's root key. */
                        p.common_name = "certgen root CA";
                        p.issuer = chain.root;
                        p.issuer_key = chain.root_key;
                        break;
                }
                if (table[i].kind == ROOT_INTERMEDIATE)
                        ASSERT_TRUE(X509_up_ref(x = chain.intermediate));
                else if (table[i].kind == ROOT_LEAF)
                        ASSERT_TRUE(X509_up_ref(x = chain.leaf));
                else
                        ASSERT_OK(certgen_make(&p, &x, NULL));

                ASSERT_OK(trust_bundle_new(TD, &b));
                fingerprint(x, fp);
                if (table[i].error == 0) {
                        ASSERT_OK(trust_bundle_add_full(b, x, &reason));
                        ASSERT_NULL(reason);
                        ASSERT_EQ(trust_bundle_size(b), 1u);
                        ASSERT_TRUE(trust_bundle_get(b, 0) == x);
                        ASSERT_TRUE(trust_bundle_contains(b, fp));
                } else {
                        ASSERT_ERROR(trust_bundle_add_full(b, x, &reason), table[i].error);
                        ASSERT_STREQ(reason, table[i].reason);
                        ASSERT_ERROR(trust_bundle_add(b, x), table[i].error);
                        ASSERT_EQ(trust_bundle_size(b), 0u);
                        ASSERT_FALSE(trust_bundle_contains(b, fp));
                }
        }
}

TEST(add_refuses_duplicates_by_key) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-256");
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
        _cleanup_(X509_freep) X509 *a = NULL, *reissued = NULL;

        ASSERT_NOT_NULL(key);
        a = make_root(TD_URI, key);
        reissued = make_root(NULL, key);
        ASSERT_OK(trust_bundle_new(TD, &b));
        ASSERT_OK(trust_bundle_add(b, a));
        ASSERT_ERROR(trust_bundle_add(b, a), EEXIST);
        ASSERT_ERROR(trust_bundle_add(b, reissued), EEXIST);
        ASSERT_EQ(trust_bundle_size(b), 1u);
}

TEST(add_limit) {
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
        _cleanup_(X509_freep) X509 *extra = NULL;

        ASSERT_OK(trust_bundle_new(TD, &b));
        for (size_t i = 0; i < TRUST_BUNDLE_ROOTS_MAX; i++) {
                _cleanup_(X509_freep) X509 *x = make_root(TD_URI, NULL);

                CASE("root %zu", i);
                ASSERT_OK(trust_bundle_add(b, x));
        }
        ASSERT_EQ(trust_bundle_size(b), (size_t) TRUST_BUNDLE_ROOTS_MAX);
        extra = make_root(TD_URI, NULL);
        ASSERT_ERROR(trust_bundle_add(b, extra), E2BIG);
        ASSERT_EQ(trust_bundle_size(b), (size_t) TRUST_BUNDLE_ROOTS_MAX);
}

TEST(remove_keeps_order) {
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL;
        X509 *x[3];
        uint8_t fp[3][CRYPTO_SPKI_SHA256_SIZE], unknown[CRYPTO_SPKI_SHA256_SIZE] = {};

        ASSERT_OK(trust_bundle_new(TD, &b));
        for (size_t i = 0; i < 3; i++) {
                x[i] = make_root(TD_URI, NULL);
                fingerprint(x[i], fp[i]);
                ASSERT_OK(trust_bundle_add(b, x[i]));
                X509_free(x[i]); /* the bundle holds its own reference */
        }
        ASSERT_ERROR(trust_bundle_remove(b, unknown), ENOENT);
        ASSERT_OK(trust_bundle_remove(b, fp[1]));
        ASSERT_EQ(trust_bundle_size(b), 2u);
        ASSERT_FALSE(trust_bundle_contains(b, fp[1]));
        ASSERT_TRUE(trust_bundle_contains(b, fp[0]));
        ASSERT_TRUE(trust_bundle_contains(b, fp[2]));
        ASSERT_TRUE(trust_bundle_get(b, 0) == x[0]);
        ASSERT_TRUE(trust_bundle_get(b, 1) == x[2]);
        ASSERT_NULL(trust_bundle_get(b, 2));
        ASSERT_ERROR(trust_bundle_remove(b, fp[1]), ENOENT);
        ASSERT_OK(trust_bundle_remove(b, fp[0]));
        ASSERT_OK(trust_bundle_remove(b, fp[2]));
        ASSERT_EQ(trust_bundle_size(b), 0u);
}

TEST(dup_is_independent) {
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL, *copy = NULL;
        _cleanup_(X509_freep) X509 *x = make_root(TD_URI, NULL), *y = make_root(NULL, NULL);
        uint8_t fp[CRYPTO_SPKI_SHA256_SIZE];

        ASSERT_OK(trust_bundle_new(TD, &b));
        ASSERT_OK(trust_bundle_add(b, x));
        ASSERT_OK(trust_bundle_add(b, y));
        ASSERT_OK(trust_bundle_dup(b, &copy));
        ASSERT_STREQ(trust_bundle_trust_domain(copy), TD);
        ASSERT_EQ(trust_bundle_size(copy), 2u);
        fingerprint(x, fp);
        ASSERT_OK(trust_bundle_remove(copy, fp));
        ASSERT_EQ(trust_bundle_size(copy), 1u);
        ASSERT_EQ(trust_bundle_size(b), 2u);
        ASSERT_TRUE(trust_bundle_contains(b, fp));
        trust_bundle_free(TAKE_PTR(b));
        /* The copy still holds its root after the original is gone. */
        ASSERT_TRUE(trust_bundle_get(copy, 0) == y);
        ASSERT_EQ(X509_cmp(trust_bundle_get(copy, 0), y), 0);
}

TEST(pem_round_trip) {
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL, *again = NULL;
        _cleanup_free_ char *pem = NULL, *pem2 = NULL, *empty = NULL;

        ASSERT_OK(trust_bundle_new(TD, &b));
        ASSERT_OK(trust_bundle_to_pem(b, &empty));
        ASSERT_STREQ(empty, "");
        for (size_t i = 0; i < 3; i++) {
                _cleanup_(X509_freep) X509 *x = make_root(i == 1 ? NULL : TD_URI, NULL);
                ASSERT_OK(trust_bundle_add(b, x));
        }
        ASSERT_OK(trust_bundle_to_pem(b, &pem));
        ASSERT_EQ(strncmp(pem, "-----BEGIN CERTIFICATE-----\n", 28), 0);
        ASSERT_OK(trust_bundle_from_pem(TD, pem, strlen(pem), &again));
        ASSERT_EQ(trust_bundle_size(again), 3u);
        for (size_t i = 0; i < 3; i++) {
                CASE("root %zu", i);
                ASSERT_EQ(X509_cmp(trust_bundle_get(b, i), trust_bundle_get(again, i)), 0);
        }
        ASSERT_OK(trust_bundle_to_pem(again, &pem2));
        ASSERT_STREQ(pem, pem2);
}

/* Wraps base64 of der (+ extra trailing bytes) into a PEM block with the given label. */
static char *pem_block(const char *label, const void *der, size_t size) {
        _cleanup_free_ char *b64 = NULL;
        char *out = NULL;
        size_t n, pos = 0, cap;

        ASSERT_OK(base64_encode(der, size, &b64));
        n = strlen(b64);
        cap = n + n / 64 + 256;
        out = ASSERT_NOT_NULL(malloc(cap));
        pos += (size_t) snprintf(out, cap, "-----BEGIN %s-----\n", label);
        for (size_t i = 0; i < n; i += 64)
                pos += (size_t) snprintf(out + pos, cap - pos, "%.64s\n", b64 + i);
        snprintf(out + pos, cap - pos, "-----END %s-----\n", label);
        return out;
}

TEST(pem_parsing_is_strict) {
        _cleanup_free_ char *a = root_pem(), *b = root_pem(), *key_pem = NULL;
        _cleanup_(openssl_freep) unsigned char *der = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-256");
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_free_ uint8_t *der2 = NULL;
        const char *body;
        size_t body_len, head_len, der_len;
        char *s;
        int n;

        ASSERT_OK(crypto_x509_from_pem(a, strlen(a), &x));
        n = i2d_X509(x, &der);
        ASSERT_GT(n, 0);
        der_len = (size_t) n;
        der2 = ASSERT_NOT_NULL(malloc((size_t) n + 1));
        memcpy(der2, der, (size_t) n);
        der2[n] = 0;
        bio = ASSERT_NOT_NULL(BIO_new(BIO_s_mem()));
        ASSERT_TRUE(PEM_write_bio_PUBKEY(bio, key));
        n = (int) BIO_get_mem_data(bio, &s);
        key_pem = ASSERT_NOT_NULL(malloc((size_t) n + 1));
        memcpy(key_pem, s, (size_t) n);
        key_pem[n] = '\0';

        /* The base64 lines of a, and everything before its END line. */
        body = strchr(a, '\n') + 1;
        body_len = (size_t) (strstr(a, "-----END") - body);
        head_len = (size_t) (strstr(a, "-----END") - a);

        struct {
                const char *name;
                char *pem;
                size_t len; /* 0: strlen() */
                int error;  /* 0: accepted */
                size_t n;   /* certificates when accepted */
        } table[] = {
                { "one", strdup(a), 0, 0, 1 },
                { "two", strjoin(a, b, NULL), 0, 0, 2 },
                { "whitespace around and between",
                  strjoin("\n\n  \t", a, "\n\n", b, "\r\n  ", NULL), 0, 0, 2 },
                { "no final newline", strndup(a, strlen(a) - 1), 0, 0, 1 },
                { "empty", strdup(""), 0, EBADMSG },
                { "only whitespace", strdup(" \n\t\r\n"), 0, EBADMSG },
                { "garbage before", strjoin("hello\n", a, NULL), 0, EBADMSG },
                { "garbage between", strjoin(a, "# comment\n", b, NULL), 0, EBADMSG },
                { "garbage after", strjoin(a, "x", NULL), 0, EBADMSG },
                { "public key block", strjoin(a, key_pem, NULL), 0, EBADMSG },
                { "TRUSTED CERTIFICATE label", pem_block("TRUSTED CERTIFICATE", der, der_len), 0, EBADMSG },
                { "trailing DER bytes", pem_block("CERTIFICATE", der2, der_len + 1), 0, EBADMSG },
                { "no END line", strndup(a, head_len), 0, EBADMSG },
                /* A length that covers the terminating NUL: a NUL byte after a valid block. */
                { "NUL byte", strdup(a), strlen(a) + 1, EBADMSG },
        };

        /* Rows that need formatting. */
        ASSERT_TRUE(asprintf(&s, "%.*s-----END CERTIFICATE-----junk\n", (int) head_len, a) > 0);
        char *junk_end = s;
        ASSERT_TRUE(asprintf(&s, "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n"
                                 "DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n%.*s"
                                 "-----END CERTIFICATE-----\n", (int) body_len, body) > 0);
        char *headers = s;
        ASSERT_TRUE(asprintf(&s, "-----BEGIN CERTIFICATE-----\n%.*s-----END X509 CRL-----\n", (int) body_len,
                             body) > 0);
        char *mismatch = s;
        ASSERT_TRUE(asprintf(&s, "-----BEGIN CERTIFICATE-----\n!%.*s-----END CERTIFICATE-----\n",
                             (int) body_len, body) > 0);
        char *bad_b64 = s;
        struct {
                const char *name;
                char *pem;
        } formatted[] = {
                { "garbage on END line", junk_end },
                { "PEM headers", headers },
                { "END label mismatch", mismatch },
                { "bad base64", bad_b64 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table) + ELEMENTSOF(formatted); i++) {
                _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
                _cleanup_(trust_bundle_freep) TrustBundle *tb = NULL;
                bool f = i >= ELEMENTSOF(table);
                size_t k = f ? i - ELEMENTSOF(table) : i;
                _cleanup_free_ char *pem = f ? formatted[k].pem : table[k].pem;
                int error = f ? EBADMSG : table[k].error;
                size_t len;

                CASE("%s", f ? formatted[k].name : table[k].name);
                ASSERT_NOT_NULL(pem);
                len = !f && table[k].len > 0 ? table[k].len : strlen(pem);

                if (error == 0) {
                        ASSERT_OK(crypto_x509_chain_from_pem(pem, len, &chain));
                        ASSERT_EQ((size_t) sk_X509_num(chain), table[k].n);
                        ASSERT_OK(trust_bundle_from_pem(TD, pem, len, &tb));
                        ASSERT_EQ(trust_bundle_size(tb), table[k].n);
                } else {
                        ASSERT_ERROR(crypto_x509_chain_from_pem(pem, len, &chain), error);
                        ASSERT_NULL(chain);
                        ASSERT_ERROR(trust_bundle_from_pem(TD, pem, len, &tb), error);
                        ASSERT_NULL(tb);
                        ASSERT_ERROR(crypto_x509_from_pem(pem, len, &x), error);
                }
        }
}

TEST(from_pem_limits_and_rules) {
        _cleanup_(trust_bundle_freep) TrustBundle *tb = NULL;
        _cleanup_free_ char *many = NULL, *a = root_pem(), *dup = NULL, *big = NULL, *leaf_pem = NULL,
                            *other = NULL;
        _cleanup_(certgen_chain_done) CertgenChain chain = {};
        _cleanup_(X509_freep) X509 *other_root = NULL;

        /* One more root than a bundle may hold. */
        for (size_t i = 0; i <= TRUST_BUNDLE_ROOTS_MAX; i++) {
                _cleanup_free_ char *p = root_pem();
                ASSERT_OK(strextend(&many, p, NULL));
        }
        ASSERT_ERROR(trust_bundle_from_pem(TD, many, strlen(many), &tb), E2BIG);

        /* Larger than TRUST_BUNDLE_PEM_MAX, even if it is whitespace. */
        big = ASSERT_NOT_NULL(malloc(TRUST_BUNDLE_PEM_MAX + 2));
        memset(big, '\n', TRUST_BUNDLE_PEM_MAX + 1);
        memcpy(big, a, strlen(a));
        big[TRUST_BUNDLE_PEM_MAX + 1] = '\0';
        ASSERT_ERROR(trust_bundle_from_pem(TD, big, TRUST_BUNDLE_PEM_MAX + 1, &tb), E2BIG);
        /* Exactly the maximum is fine. */
        ASSERT_OK(trust_bundle_from_pem(TD, big, TRUST_BUNDLE_PEM_MAX, &tb));
        trust_bundle_free(TAKE_PTR(tb));

        dup = strjoin(a, a, NULL);
        ASSERT_ERROR(trust_bundle_from_pem(TD, dup, strlen(dup), &tb), EEXIST);

        ASSERT_OK(certgen_chain_make(TD, NULL, &chain));
        ASSERT_OK(crypto_x509_to_pem(chain.leaf, &leaf_pem));
        ASSERT_ERROR(trust_bundle_from_pem(TD, leaf_pem, strlen(leaf_pem), &tb), EKEYREJECTED);

        other_root = make_root("spiffe://other.org", NULL);
        ASSERT_OK(crypto_x509_to_pem(other_root, &other));
        ASSERT_ERROR(trust_bundle_from_pem(TD, other, strlen(other), &tb), EKEYREJECTED);
        ASSERT_OK(trust_bundle_from_pem("other.org", other, strlen(other), &tb));
        trust_bundle_free(TAKE_PTR(tb));

        ASSERT_ERROR(trust_bundle_from_pem("Bad", a, strlen(a), &tb), EINVAL);
        ASSERT_NULL(tb);
}

TEST(single_and_chain_pem_helpers) {
        _cleanup_(certgen_chain_done) CertgenChain c = {};
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL, *parsed = NULL, *nine = NULL;
        _cleanup_free_ char *pem = NULL, *leaf_pem = NULL, *nine_pem = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;

        ASSERT_OK(certgen_chain_make(TD, NULL, &c));
        ASSERT_OK(crypto_x509_to_pem(c.leaf, &leaf_pem));
        ASSERT_OK(crypto_x509_from_pem(leaf_pem, strlen(leaf_pem), &x));
        ASSERT_EQ(X509_cmp(x, c.leaf), 0);
        X509_free(TAKE_PTR(x));

        chain = ASSERT_NOT_NULL(certgen_stack(c.leaf, c.intermediate, c.root, NULL));
        ASSERT_OK(crypto_x509_chain_to_pem(chain, &pem));
        /* Exactly one certificate where one is expected. */
        ASSERT_ERROR(crypto_x509_from_pem(pem, strlen(pem), &x), EBADMSG);
        ASSERT_ERROR(crypto_x509_from_pem("", 0, &x), EBADMSG);
        ASSERT_NULL(x);

        ASSERT_OK(crypto_x509_chain_from_pem(pem, strlen(pem), &parsed));
        ASSERT_EQ(sk_X509_num(parsed), 3);
        ASSERT_EQ(X509_cmp(sk_X509_value(parsed, 0), c.leaf), 0);
        ASSERT_EQ(X509_cmp(sk_X509_value(parsed, 1), c.intermediate), 0);
        ASSERT_EQ(X509_cmp(sk_X509_value(parsed, 2), c.root), 0);
        sk_X509_pop_free(TAKE_PTR(parsed), X509_free);

        nine = ASSERT_NOT_NULL(sk_X509_new_null());
        for (size_t i = 0; i < CRYPTO_X509_CHAIN_MAX + 1; i++)
                ASSERT_TRUE(X509_add_cert(nine, c.leaf, X509_ADD_FLAG_UP_REF));
        ASSERT_OK(crypto_x509_chain_to_pem(nine, &nine_pem));
        ASSERT_ERROR(crypto_x509_chain_from_pem(nine_pem, strlen(nine_pem), &parsed), E2BIG);
        ASSERT_NULL(parsed);
}

TEST(store_anchors_verification) {
        _cleanup_(certgen_chain_done) CertgenChain c = {}, other = {};
        _cleanup_(trust_bundle_freep) TrustBundle *b = NULL, *ob = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *untrusted = NULL;

        ASSERT_OK(certgen_chain_make(TD, NULL, &c));
        ASSERT_OK(certgen_chain_make(TD, NULL, &other));
        ASSERT_OK(trust_bundle_new(TD, &b));
        ASSERT_OK(trust_bundle_add(b, c.root));
        ASSERT_OK(trust_bundle_new(TD, &ob));
        ASSERT_OK(trust_bundle_add(ob, other.root));
        untrusted = ASSERT_NOT_NULL(certgen_stack(c.intermediate, NULL));

        for (int k = 0; k < 2; k++) {
                _cleanup_(X509_STORE_freep) X509_STORE *store = NULL;
                _cleanup_(X509_STORE_CTX_freep) X509_STORE_CTX *ctx = NULL;

                CASE("%s bundle", k == 0 ? "own" : "other");
                ASSERT_OK(trust_bundle_to_store(k == 0 ? b : ob, &store));
                ctx = ASSERT_NOT_NULL(X509_STORE_CTX_new());
                ASSERT_TRUE(X509_STORE_CTX_init(ctx, store, c.leaf, untrusted));
                if (k == 0)
                        ASSERT_EQ(X509_verify_cert(ctx), 1);
                else {
                        ASSERT_TRUE(X509_verify_cert(ctx) <= 0);
                        ASSERT_EQ(X509_STORE_CTX_get_error(ctx),
                                  X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
                }
        }
}
