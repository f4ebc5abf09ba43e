/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "crypto-ca.h"
#include "crypto-csr.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "tests.h"

#define TD "example.org"
/* 2030-01-01T00:00:00Z plus a fraction of a second, which must be dropped, not rounded. */
#define T0_SEC ((uint64_t) 1893456000ULL)
#define T0 (T0_SEC * USEC_PER_SEC + 123456)
#define YEAR_SEC (USEC_PER_YEAR / USEC_PER_SEC)
#define DAY_SEC (USEC_PER_DAY / USEC_PER_SEC)
#define BACKDATE_SEC (CA_BACKDATE_USEC / USEC_PER_SEC)

static const char *write_pem(const char *name, X509 *cert) {
        const char *path = test_path(name);
        FILE *f = fopen(path, "we");

        ASSERT_NOT_NULL(f);
        ASSERT_EQ(PEM_write_X509(f, cert), 1);
        ASSERT_EQ(fclose(f), 0);
        return path;
}

static EVP_PKEY *generate(KeyType t) {
        EVP_PKEY *k = NULL;

        ASSERT_OK(crypto_key_generate(t, &k));
        return ASSERT_NOT_NULL(k);
}

static SpiffeId *parse_id(const char *s) {
        SpiffeId *id = NULL;

        ASSERT_OK(spiffe_id_from_string(s, &id, NULL));
        return ASSERT_NOT_NULL(id);
}

static CertificateAuthority *new_root(KeyType t, usec_t lifetime, usec_t now_usec) {
        CertificateAuthority *ca = NULL;

        ASSERT_OK(ca_new_root(TD, t, lifetime, now_usec, &ca));
        return ASSERT_NOT_NULL(ca);
}

static CertificateAuthority *new_issuing(const CertificateAuthority *root, KeyType t, usec_t lifetime,
                                         usec_t now_usec) {
        CertificateAuthority *ca = NULL;

        ASSERT_OK(ca_new_issuing(root, t, lifetime, now_usec, &ca));
        return ASSERT_NOT_NULL(ca);
}

static X509 *issue(const CertificateAuthority *ca, const char *id_string, EVP_PKEY *key, usec_t lifetime,
                   usec_t now_usec, char **dns, char **ips) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id(id_string);
        LeafParams p = {
                .id = id,
                .public_key = key,
                .lifetime = lifetime,
                .now = now_usec,
                .dns_names = dns,
                .ip_addresses = ips,
        };
        X509 *leaf = NULL;

        ASSERT_OK(ca_issue_leaf(ca, &p, &leaf));
        return ASSERT_NOT_NULL(leaf);
}

static int issue_error(const CertificateAuthority *ca, const SpiffeId *id, EVP_PKEY *key, usec_t lifetime,
                       usec_t now_usec, char **dns, char **ips) {
        LeafParams p = {
                .id = id,
                .public_key = key,
                .lifetime = lifetime,
                .now = now_usec,
                .dns_names = dns,
                .ip_addresses = ips,
        };
        X509 *leaf = NULL;
        int r;

        r = ca_issue_leaf(ca, &p, &leaf);
        if (r >= 0)
                X509_free(leaf);
        else
                ASSERT_NULL(leaf);
        return r;
}

static void cert_times(X509 *x, uint64_t *ret_not_before, uint64_t *ret_not_after) {
        struct tm tm = {};

        ASSERT_EQ(ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm), 1);
        *ret_not_before = (uint64_t) timegm(&tm);
        memset(&tm, 0, sizeof(tm));
        ASSERT_EQ(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
        *ret_not_after = (uint64_t) timegm(&tm);
}

/* ---- openssl verify ---------------------------------------------------------------------------------- */

static int openssl_verify(char **out, const char *root, const char *untrusted, const char *leaf,
                          const char *purpose) {
        const char *args[16];
        size_t n = 0;

        args[n++] = "openssl";
        args[n++] = "verify";
        /* Strict RFC 5280 checks, as crypto-svid applies them. */
        args[n++] = "-x509_strict";
        if (purpose) {
                args[n++] = "-purpose";
                args[n++] = purpose;
        }
        args[n++] = "-CAfile";
        args[n++] = root;
        if (untrusted) {
                args[n++] = "-untrusted";
                args[n++] = untrusted;
        }
        args[n++] = leaf;
        args[n] = NULL;
        return test_run(out, args);
}

TEST(openssl_verifies_chain) {
        static const struct {
                KeyType root, issuing, leaf;
        } combos[] = {
                { KEY_TYPE_ECDSA_P256, KEY_TYPE_ECDSA_P256, KEY_TYPE_ECDSA_P256 },
                { KEY_TYPE_ED25519, KEY_TYPE_ED25519, KEY_TYPE_ED25519 },
                { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519, KEY_TYPE_ECDSA_P256 },
                { KEY_TYPE_ED25519, KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 },
        };

        for (size_t i = 0; i < ELEMENTSOF(combos); i++) {
                _cleanup_(ca_freep) CertificateAuthority *root = NULL, *issuing = NULL, *root2 = NULL,
                                                         *issuing2 = NULL;
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(combos[i].leaf);
                _cleanup_(X509_freep) X509 *leaf = NULL, *leaf2 = NULL, *direct = NULL;
                const char *root_pem, *issuing_pem, *leaf_pem, *root2_pem, *issuing2_pem, *leaf2_pem,
                        *direct_pem;
                char *out, expect[600];

                CASE("root %s, issuing %s, leaf %s", key_type_to_string(combos[i].root),
                     key_type_to_string(combos[i].issuing), key_type_to_string(combos[i].leaf));
                root = new_root(combos[i].root, 10 * USEC_PER_YEAR, 0);
                issuing = new_issuing(root, combos[i].issuing, USEC_PER_YEAR, 0);
                leaf = issue(issuing, "spiffe://" TD "/connector/conn-1", key, USEC_PER_HOUR, 0, NULL, NULL);

                root_pem = write_pem("root.pem", ca_get_certificate(root));
                issuing_pem = write_pem("issuing.pem", ca_get_certificate(issuing));
                leaf_pem = write_pem("leaf.pem", leaf);
                snprintf(expect, sizeof(expect), "%s: OK\n", leaf_pem);

                ASSERT_EQ(openssl_verify(&out, root_pem, issuing_pem, leaf_pem, NULL), 0);
                ASSERT_STRSTR(out, expect);
                ASSERT_EQ(openssl_verify(&out, root_pem, issuing_pem, leaf_pem, "sslserver"), 0);
                ASSERT_STRSTR(out, expect);
                ASSERT_EQ(openssl_verify(&out, root_pem, issuing_pem, leaf_pem, "sslclient"), 0);
                ASSERT_STRSTR(out, expect);

                /* The issuing CA on its own verifies against the root. */
                ASSERT_EQ(openssl_verify(&out, root_pem, NULL, issuing_pem, NULL), 0);

                /* Without the intermediate there is no path. */
                ASSERT_NE(openssl_verify(&out, root_pem, NULL, leaf_pem, NULL), 0);
                ASSERT_STRSTR(out, "unable to get local issuer certificate");

                /* A root may also sign a leaf directly (pathlen:1 leaves room for that). */
                direct = issue(root, "spiffe://" TD "/controller/ctl", key, USEC_PER_HOUR, 0, NULL, NULL);
                direct_pem = write_pem("direct.pem", direct);
                ASSERT_EQ(openssl_verify(&out, root_pem, NULL, direct_pem, "sslserver"), 0);

                /* A leaf from a different root of the same trust domain fails against ours, whether its own
                 * intermediate is offered or ours. */
                root2 = new_root(combos[i].root, 10 * USEC_PER_YEAR, 0);
                issuing2 = new_issuing(root2, combos[i].issuing, USEC_PER_YEAR, 0);
                leaf2 = issue(issuing2, "spiffe://" TD "/connector/conn-1", key, USEC_PER_HOUR, 0, NULL,
                              NULL);
                root2_pem = write_pem("root2.pem", ca_get_certificate(root2));
                issuing2_pem = write_pem("issuing2.pem", ca_get_certificate(issuing2));
                leaf2_pem = write_pem("leaf2.pem", leaf2);
                ASSERT_NE(openssl_verify(&out, root_pem, issuing_pem, leaf2_pem, NULL), 0);
                ASSERT_STRSTR(out, "unable to get local issuer certificate");
                ASSERT_NE(openssl_verify(&out, root_pem, issuing2_pem, leaf2_pem, NULL), 0);
                ASSERT_STRSTR(out, "unable to get local issuer certificate");
                /* …while it does verify against its own root, so the failure above is about the root. */
                ASSERT_EQ(openssl_verify(&out, root2_pem, issuing2_pem, leaf2_pem, NULL), 0);
        }
}

/* ---- openssl x509 -text ------------------------------------------------------------------------------ */

typedef struct Ext {
        char name[128];
        bool critical;
        char value[1024];
} Ext;

#define EXTS_MAX 16

/* Parses the "X509v3 extensions:" block of `openssl x509 -text -noout`: headers are indented by 12
 * spaces ("X509v3 Key Usage: critical"), their values by 16. */
static size_t parse_extensions(const char *text, Ext exts[static EXTS_MAX]) {
        const char *p = strstr(text, "\n        X509v3 extensions:\n");
        size_t n = 0;

        ASSERT_NOT_NULL(p);
        p = strchr(p + 1, '\n') + 1;

        while (*p) {
                const char *eol = strchrnul(p, '\n'), *colon;
                size_t indent = strspn(p, " ");

                if (indent < 12)
                        break;
                if (indent == 12) {
                        ASSERT_LT(n, EXTS_MAX);
                        colon = memchr(p, ':', eol - p);
                        ASSERT_NOT_NULL(colon);
                        snprintf(exts[n].name, sizeof(exts[n].name), "%.*s", (int) (colon - p - 12), p + 12);
                        exts[n].critical = strncmp(colon, ": critical", 10) == 0;
                        exts[n].value[0] = '\0';
                        n++;
                } else {
                        ASSERT_GT(n, 0);
                        /* Values are one line for everything we issue. */
                        ASSERT_STREQ(exts[n - 1].value, "");
                        snprintf(exts[n - 1].value, sizeof(exts[n - 1].value), "%.*s",
                                 (int) (eol - p - indent), p + indent);
                }
                p = *eol ? eol + 1 : eol;
        }
        return n;
}

static const Ext *find_ext(const Ext *exts, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq(exts[i].name, name))
                        return &exts[i];
        test_fail(__FILE__, __LINE__, "Extension '%s' missing", name);
}

static void assert_ext(const Ext *exts, size_t n, const char *name, bool critical, const char *value) {
        const Ext *e = find_ext(exts, n, name);

        CASE("%s", name);
        ASSERT_EQ(e->critical, critical);
        if (value)
                ASSERT_STREQ(e->value, value);
}

static char *x509_text(X509 *cert, const char *name) {
        const char *path = write_pem(name, cert);
        char *out;

        ASSERT_EQ(TEST_RUN(&out, "openssl", "x509", "-text", "-noout", "-in", path), 0);
        return out;
}

static void assert_ski_aki(const Ext *exts, size_t n, X509 *issuer) {
        const Ext *ski = find_ext(exts, n, "X509v3 Subject Key Identifier"),
                  *aki = find_ext(exts, n, "X509v3 Authority Key Identifier");
        const ASN1_OCTET_STRING *issuer_ski = X509_get0_subject_key_id(issuer);
        char hex[128] = "";

        ASSERT_FALSE(ski->critical);
        ASSERT_FALSE(aki->critical);
        /* 20 bytes printed as "AB:CD:…" */
        ASSERT_EQ(strlen(ski->value), 20 * 3 - 1);
        ASSERT_NOT_NULL(issuer_ski);
        ASSERT_EQ(ASN1_STRING_length(issuer_ski), 20);
        for (int i = 0; i < 20; i++)
                snprintf(hex + strlen(hex), sizeof(hex) - strlen(hex), i ? ":%02X" : "%02X",
                         ASN1_STRING_get0_data(issuer_ski)[i]);
        ASSERT_STREQ(aki->value, hex);
}

TEST(openssl_text_shows_profiles) {
        static const KeyType types[] = { KEY_TYPE_ECDSA_P256, KEY_TYPE_ED25519 };

        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                _cleanup_(ca_freep) CertificateAuthority *root = new_root(types[i], 10 * USEC_PER_YEAR, 0);
                _cleanup_(ca_freep) CertificateAuthority *issuing =
                        new_issuing(root, types[i], USEC_PER_YEAR, 0);
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(types[i]);
                char *dns[] = { (char *) "conn-1.example.org", (char *) "localhost", NULL };
                char *ips[] = { (char *) "10.0.0.1", (char *) "fd00::1", NULL };
                _cleanup_(X509_freep) X509 *leaf = issue(issuing, "spiffe://" TD "/connector/conn-1", key,
                                                         USEC_PER_HOUR, 0, dns, ips),
                                           *plain = issue(issuing, "spiffe://" TD "/tunneler/laptop", key,
                                                          USEC_PER_HOUR, 0, NULL, NULL);
                const char *sigalg = types[i] == KEY_TYPE_ECDSA_P256 ? "ecdsa-with-SHA256" : "ED25519";
                char line[256], *text;
                Ext exts[EXTS_MAX];
                size_t n;

                /* Leaf */
                CASE("leaf %s", key_type_to_string(types[i]));
                text = x509_text(leaf, "leaf.pem");
                ASSERT_STRSTR(text, "        Version: 3 (0x2)\n");
                snprintf(line, sizeof(line), "        Signature Algorithm: %s\n", sigalg);
                ASSERT_STRSTR(text, line);
                snprintf(line, sizeof(line), "    Signature Algorithm: %s\n", sigalg);
                ASSERT_STRSTR(text, line);
                ASSERT_STRSTR(text, "        Issuer: O = ztna, CN = ztna issuing CA example.org\n");
                ASSERT_STRSTR(text, "        Subject: O = ztna, OU = connector, CN = conn-1\n");
                n = parse_extensions(text, exts);
                ASSERT_EQ(n, 6);
                assert_ext(exts, n, "X509v3 Basic Constraints", true, "CA:FALSE");
                assert_ext(exts, n, "X509v3 Key Usage", true, "Digital Signature");
                assert_ext(exts, n, "X509v3 Extended Key Usage", false,
                           "TLS Web Server Authentication, TLS Web Client Authentication");
                assert_ext(exts, n, "X509v3 Subject Alternative Name", false,
                           "URI:spiffe://example.org/connector/conn-1, DNS:conn-1.example.org, "
                           "DNS:localhost, IP Address:10.0.0.1, IP Address:FD00:0:0:0:0:0:0:1");
                assert_ski_aki(exts, n, ca_get_certificate(issuing));
                ASSERT_TRUE(strstr(text, "Certificate Sign") == NULL);
                ASSERT_TRUE(strstr(text, "CRL Sign") == NULL);

                /* Without DNS/IP names the SAN is the URI alone. */
                CASE("plain leaf %s", key_type_to_string(types[i]));
                text = x509_text(plain, "plain.pem");
                n = parse_extensions(text, exts);
                ASSERT_EQ(n, 6);
                assert_ext(exts, n, "X509v3 Subject Alternative Name", false,
                           "URI:spiffe://example.org/tunneler/laptop");

                /* Root */
                CASE("root %s", key_type_to_string(types[i]));
                text = x509_text(ca_get_certificate(root), "root.pem");
                ASSERT_STRSTR(text, "        Version: 3 (0x2)\n");
                snprintf(line, sizeof(line), "        Signature Algorithm: %s\n", sigalg);
                ASSERT_STRSTR(text, line);
                ASSERT_STRSTR(text, "        Issuer: O = ztna, CN = ztna root CA example.org\n");
                ASSERT_STRSTR(text, "        Subject: O = ztna, CN = ztna root CA example.org\n");
                n = parse_extensions(text, exts);
                ASSERT_EQ(n, 5);
                assert_ext(exts, n, "X509v3 Basic Constraints", true, "CA:TRUE, pathlen:1");
                assert_ext(exts, n, "X509v3 Key Usage", true, "Certificate Sign, CRL Sign");
                assert_ext(exts, n, "X509v3 Subject Alternative Name", false, "URI:spiffe://example.org");
                assert_ski_aki(exts, n, ca_get_certificate(root));
                ASSERT_TRUE(strstr(text, "Extended Key Usage") == NULL);

                /* Issuing */
                CASE("issuing %s", key_type_to_string(types[i]));
                text = x509_text(ca_get_certificate(issuing), "issuing.pem");
                ASSERT_STRSTR(text, "        Version: 3 (0x2)\n");
                ASSERT_STRSTR(text, line);
                ASSERT_STRSTR(text, "        Issuer: O = ztna, CN = ztna root CA example.org\n");
                ASSERT_STRSTR(text, "        Subject: O = ztna, CN = ztna issuing CA example.org\n");
                n = parse_extensions(text, exts);
                ASSERT_EQ(n, 5);
                assert_ext(exts, n, "X509v3 Basic Constraints", true, "CA:TRUE, pathlen:0");
                assert_ext(exts, n, "X509v3 Key Usage", true, "Certificate Sign, CRL Sign");
                assert_ext(exts, n, "X509v3 Subject Alternative Name", false, "URI:spiffe://example.org");
                assert_ski_aki(exts, n, ca_get_certificate(root));
                ASSERT_TRUE(strstr(text, "Extended Key Usage") == NULL);
        }
}

/* Long names do not fit X.520's 64 characters: the CN is shortened or left out, the SAN is untouched. */
TEST(long_names) {
        static const char td[] = "a-rather-long-trust-domain-name-for-testing-purposes.example.org";
        static const char id[] = "spiffe://a-rather-long-trust-domain-name-for-testing-purposes.example.org"
                                 "/tunneler/"
                                 "0123456789012345678901234567890123456789012345678901234567890123456789";
        _cleanup_(ca_freep) CertificateAuthority *root = NULL, *issuing = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);
        _cleanup_(X509_freep) X509 *leaf = NULL;
        char *text;

        ASSERT_GT(strlen(td) + strlen("ztna root CA "), 64);
        ASSERT_OK(ca_new_root(td, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0, &root));
        ASSERT_OK(ca_new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0, &issuing));
        leaf = issue(issuing, id, key, USEC_PER_HOUR, 0, NULL, NULL);

        text = x509_text(ca_get_certificate(root), "root.pem");
        ASSERT_STRSTR(text, "        Subject: O = ztna, CN = ztna root CA\n");
        ASSERT_STRSTR(text, "URI:spiffe://a-rather-long-trust-domain-name-for-testing-purposes.example.org"
                            "\n");
        text = x509_text(leaf, "leaf.pem");
        ASSERT_STRSTR(text, "        Subject: O = ztna, OU = tunneler\n");
        ASSERT_STRSTR(text, id + strlen("spiffe://"));
}

/* ---- serials ----------------------------------------------------------------------------------------- */

TEST(serials_random_positive_distinct) {
        _cleanup_(ca_freep) CertificateAuthority *root =
                new_root(KEY_TYPE_ECDSA_P256, 10 * USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);
        BIGNUM *serials[202] = {};
        size_t n = 0;

        serials[n++] = ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca_get_certificate(root)), NULL);
        serials[n++] = ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca_get_certificate(issuing)), NULL);
        for (int i = 0; i < 200; i++) {
                _cleanup_(X509_freep) X509 *leaf = NULL;
                const ASN1_INTEGER *s;
                unsigned char *der = NULL;
                int len;

                CASE("leaf %d", i);
                leaf = issue(issuing, "spiffe://" TD "/tunneler/t", key, USEC_PER_HOUR, 0, NULL, NULL);
                s = X509_get0_serialNumber(leaf);
                ASSERT_EQ(ASN1_STRING_type(s), V_ASN1_INTEGER); /* not V_ASN1_NEG_INTEGER */
                /* DER: 02 10 <16 bytes>, the first content byte without the sign bit: positive as
                 * encoded, no padding byte. */
                len = i2d_ASN1_INTEGER(s, &der);
                ASSERT_EQ(len, 18);
                ASSERT_EQ(der[0], 0x02);
                ASSERT_EQ(der[1], 16);
                ASSERT_EQ(der[2] & 0x80, 0);
                ASSERT_NE(der[2], 0);
                OPENSSL_free(der);
                serials[n++] = ASN1_INTEGER_to_BN(s, NULL);
        }

        for (size_t i = 0; i < n; i++) {
                CASE("serial %zu", i);
                ASSERT_NOT_NULL(serials[i]);
                ASSERT_FALSE(BN_is_negative(serials[i]));
                ASSERT_FALSE(BN_is_zero(serials[i]));
                ASSERT_GE(BN_num_bits(serials[i]), 120);
                ASSERT_LE(BN_num_bits(serials[i]), 128);
                for (size_t j = 0; j < i; j++)
                        ASSERT_NE(BN_cmp(serials[i], serials[j]), 0);
        }
        for (size_t i = 0; i < n; i++)
                BN_free(serials[i]);
}

/* ---- validity ---------------------------------------------------------------------------------------- */

TEST(validity_backdating_and_clamping) {
        _cleanup_(ca_freep) CertificateAuthority *root =
                new_root(KEY_TYPE_ECDSA_P256, 10 * USEC_PER_YEAR, T0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, T0);
        _cleanup_(ca_freep) CertificateAuthority *early = NULL, *long_lived = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);
        uint64_t nb, na, issuing_na;

        /* Root: back-dated, lifetime exactly as requested. */
        cert_times(ca_get_certificate(root), &nb, &na);
        ASSERT_UEQ(nb, T0_SEC - BACKDATE_SEC);
        ASSERT_UEQ(na, T0_SEC + 10 * YEAR_SEC);

        /* Issuing at the same instant: not clamped, exact lifetime. */
        cert_times(ca_get_certificate(issuing), &nb, &na);
        ASSERT_UEQ(nb, T0_SEC - BACKDATE_SEC);
        ASSERT_UEQ(na, T0_SEC + YEAR_SEC);
        issuing_na = na;

        /* Issuing made "before" the root: notBefore clamped to the root's. */
        early = new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, T0 - 2 * USEC_PER_MINUTE);
        cert_times(ca_get_certificate(early), &nb, &na);
        ASSERT_UEQ(nb, T0_SEC - BACKDATE_SEC);
        ASSERT_UEQ(na, T0_SEC - 120 + DAY_SEC);

        /* Issuing outliving the root: notAfter clamped to the root's. */
        long_lived = new_issuing(root, KEY_TYPE_ECDSA_P256, 20 * USEC_PER_YEAR, T0 + USEC_PER_DAY);
        cert_times(ca_get_certificate(long_lived), &nb, &na);
        ASSERT_UEQ(nb, T0_SEC + DAY_SEC - BACKDATE_SEC);
        ASSERT_UEQ(na, T0_SEC + 10 * YEAR_SEC);

        static const struct {
                const char *name;
                int64_t offset_sec; /* leaf "now" relative to T0_SEC */
                usec_t lifetime;
                int64_t not_before, not_after; /* relative to T0_SEC; INT64_MAX: issuing CA's notAfter */
        } leaves[] = {
                { "a day later", DAY_SEC, USEC_PER_HOUR, DAY_SEC - BACKDATE_SEC, DAY_SEC + 3600 },
                { "a minute later", 60, USEC_PER_HOUR, 60 - BACKDATE_SEC, 60 + 3600 },
                { "minimum lifetime", 3600, 5 * USEC_PER_MINUTE, 3600 - BACKDATE_SEC, 3600 + 300 },
                { "sub-second part dropped", 3600, 1500 * USEC_PER_MSEC, 3600 - BACKDATE_SEC, 3600 + 1 },
                { "before the issuer", -200, USEC_PER_HOUR, -(int64_t) BACKDATE_SEC, -200 + 3600 },
                { "near the issuer's end", (int64_t) YEAR_SEC - 1800, USEC_PER_HOUR,
                  (int64_t) YEAR_SEC - 1800 - BACKDATE_SEC, INT64_MAX },
                { "one second before the end", (int64_t) YEAR_SEC - 1, USEC_PER_HOUR,
                  (int64_t) YEAR_SEC - 1 - BACKDATE_SEC, INT64_MAX },
                { "infinite lifetime", 0, USEC_INFINITY, -(int64_t) BACKDATE_SEC, INT64_MAX },
        };
        for (size_t i = 0; i < ELEMENTSOF(leaves); i++) {
                _cleanup_(X509_freep) X509 *leaf = NULL;

                CASE("%s", leaves[i].name);
                leaf = issue(issuing, "spiffe://" TD "/connector/c", key, leaves[i].lifetime,
                             T0 + leaves[i].offset_sec * (int64_t) USEC_PER_SEC, NULL, NULL);
                cert_times(leaf, &nb, &na);
                ASSERT_UEQ(nb, T0_SEC + leaves[i].not_before);
                if (leaves[i].not_after == INT64_MAX)
                        ASSERT_UEQ(na, issuing_na);
                else
                        ASSERT_UEQ(na, T0_SEC + leaves[i].not_after);
        }

        /* The issuer has expired, or is not valid at all during the requested window. */
        static const struct {
                const char *name;
                int64_t offset_sec;
                usec_t lifetime;
        } expired[] = {
                { "at the issuer's notAfter", (int64_t) YEAR_SEC, USEC_PER_HOUR },
                { "a day after", (int64_t) YEAR_SEC + DAY_SEC, USEC_PER_HOUR },
                { "long before the issuer", -(int64_t) DAY_SEC, USEC_PER_HOUR },
        };
        for (size_t i = 0; i < ELEMENTSOF(expired); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id("spiffe://" TD "/connector/c");

                CASE("%s", expired[i].name);
                ASSERT_ERROR(issue_error(issuing, id, key, expired[i].lifetime,
                                         T0 + expired[i].offset_sec * (int64_t) USEC_PER_SEC, NULL, NULL),
                             EKEYEXPIRED);
        }

        /* Same rule for an issuing CA under an expired root. */
        CASE("issuing under expired root");
        {
                CertificateAuthority *ca = NULL;

                ASSERT_ERROR(ca_new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, T0 + 11 * USEC_PER_YEAR,
                                            &ca),
                             EKEYEXPIRED);
                ASSERT_NULL(ca);
        }
}

TEST(validity_now_and_encoding) {
        _cleanup_(ca_freep) CertificateAuthority *root = NULL, *late = NULL;
        uint64_t nb, na, t = now(CLOCK_REALTIME) / USEC_PER_SEC;

        /* now = 0 means the current time. */
        root = new_root(KEY_TYPE_ED25519, USEC_PER_DAY, 0);
        cert_times(ca_get_certificate(root), &nb, &na);
        ASSERT_UCMP(nb, >=, t - BACKDATE_SEC);
        ASSERT_UCMP(nb, <=, t - BACKDATE_SEC + 5);
        ASSERT_UEQ(na - nb, DAY_SEC + BACKDATE_SEC);

        /* RFC 5280: UTCTime through 2049, GeneralizedTime from 2050. */
        late = new_root(KEY_TYPE_ECDSA_P256, 30 * USEC_PER_YEAR, T0);
        ASSERT_EQ(ASN1_STRING_type(X509_get0_notBefore(ca_get_certificate(late))), V_ASN1_UTCTIME);
        ASSERT_EQ(ASN1_STRING_type(X509_get0_notAfter(ca_get_certificate(late))), V_ASN1_GENERALIZEDTIME);
}

/* ---- argument checks --------------------------------------------------------------------------------- */

TEST(root_and_issuing_arguments) {
        _cleanup_(ca_freep) CertificateAuthority *root = new_root(KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ED25519, USEC_PER_DAY, 0);
        CertificateAuthority *ca = NULL;

        static const char *const bad_td[] = { "", "Example.org", "example.org:443", "user@example.org",
                                              "example.org/path", "spiffe://example.org", "exa mple.org" };
        for (size_t i = 0; i < ELEMENTSOF(bad_td); i++) {
                CASE("trust domain '%s'", bad_td[i]);
                ASSERT_ERROR(ca_new_root(bad_td[i], KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0, &ca), EINVAL);
                ASSERT_NULL(ca);
        }

        CASE("lifetimes and types");
        ASSERT_ERROR(ca_new_root(TD, KEY_TYPE_ECDSA_P256, 0, 0, &ca), EINVAL);
        ASSERT_ERROR(ca_new_root(TD, KEY_TYPE_ECDSA_P256, USEC_PER_SEC - 1, 0, &ca), EINVAL);
        ASSERT_ERROR(ca_new_root(TD, _KEY_TYPE_MAX, USEC_PER_YEAR, 0, &ca), EINVAL);
        ASSERT_ERROR(ca_new_root(TD, _KEY_TYPE_INVALID, USEC_PER_YEAR, 0, &ca), EINVAL);
        /* Past 9999-12-31 there is no X.509 time. */
        ASSERT_ERROR(ca_new_root(TD, KEY_TYPE_ECDSA_P256, 8000 * USEC_PER_YEAR, 0, &ca), ERANGE);
        ASSERT_ERROR(ca_new_root(TD, KEY_TYPE_ECDSA_P256, USEC_INFINITY, 0, &ca), ERANGE);
        ASSERT_ERROR(ca_new_issuing(root, KEY_TYPE_ECDSA_P256, 0, 0, &ca), EINVAL);
        ASSERT_ERROR(ca_new_issuing(root, _KEY_TYPE_MAX, USEC_PER_DAY, 0, &ca), EINVAL);
        /* Only a root makes issuing CAs (an issuing CA has pathlen:0). */
        ASSERT_ERROR(ca_new_issuing(issuing, KEY_TYPE_ECDSA_P256, USEC_PER_HOUR, 0, &ca), EINVAL);
        ASSERT_NULL(ca);

        /* The trust domain is kept canonical, the chains are empty, the key is the certificate's. */
        CASE("accessors");
        ASSERT_STREQ(ca_get_trust_domain(root), TD);
        ASSERT_STREQ(ca_get_trust_domain(issuing), TD);
        ASSERT_NOT_NULL(ca_get_chain(root));
        ASSERT_EQ(sk_X509_num(ca_get_chain(root)), 0);
        ASSERT_EQ(sk_X509_num(ca_get_chain(issuing)), 0);
        ASSERT_EQ(X509_check_private_key(ca_get_certificate(root), ca_get_key(root)), 1);
        ASSERT_EQ(X509_check_private_key(ca_get_certificate(issuing), ca_get_key(issuing)), 1);
        ASSERT_EQ(crypto_key_get_type(ca_get_key(issuing)), KEY_TYPE_ED25519);
        ASSERT_EQ(X509_verify(ca_get_certificate(issuing), X509_get0_pubkey(ca_get_certificate(root))), 1);
        ASSERT_EQ(X509_verify(ca_get_certificate(root), X509_get0_pubkey(ca_get_certificate(root))), 1);
        ASSERT_NULL(ca_free(NULL));
}

/* Identity rules for leaves: the CA's trust domain, a ztna workload path, nothing else. */
TEST(leaf_identity_refused) {
        _cleanup_(ca_freep) CertificateAuthority *root = new_root(KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);

        static const char *const bad[] = {
                "spiffe://other.org/connector/conn-1",   /* foreign trust domain */
                "spiffe://sub.example.org/connector/c1", /* a subdomain is another trust domain */
                "spiffe://example.org",                  /* trust-domain ID */
                "spiffe://example.org/foo/bar",          /* not a ztna role */
                "spiffe://example.org/connector",        /* no id */
                "spiffe://example.org/connector/c1/x",   /* too deep */
                "spiffe://example.org/admin/c1",         /* unknown role */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id(bad[i]);

                CASE("%s", bad[i]);
                ASSERT_ERROR(issue_error(issuing, id, key, USEC_PER_HOUR, 0, NULL, NULL), EINVAL);
        }

        /* Every ztna role is fine. */
        static const char *const good[] = {
                "spiffe://example.org/controller/ctl-1",
                "spiffe://example.org/connector/conn_1.lab",
                "spiffe://example.org/tunneler/LAPTOP-7",
                "spiffe://example.org/relay/r",
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id(good[i]);

                CASE("%s", good[i]);
                ASSERT_OK(issue_error(issuing, id, key, USEC_PER_HOUR, 0, NULL, NULL));
        }
}

TEST(leaf_arguments_refused) {
        _cleanup_(ca_freep) CertificateAuthority *root = new_root(KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256), *rsa = NULL, *p384 = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id("spiffe://" TD "/connector/conn-1");

        CASE("lifetime");
        ASSERT_ERROR(issue_error(issuing, id, key, 0, 0, NULL, NULL), EINVAL);
        ASSERT_ERROR(issue_error(issuing, id, key, USEC_PER_SEC - 1, 0, NULL, NULL), EINVAL);
        ASSERT_OK(issue_error(issuing, id, key, USEC_PER_SEC, 0, NULL, NULL));

        CASE("key types");
        rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        ASSERT_NOT_NULL(rsa);
        ASSERT_NOT_NULL(p384);
        ASSERT_ERROR(issue_error(issuing, id, rsa, USEC_PER_HOUR, 0, NULL, NULL), EOPNOTSUPP);
        ASSERT_ERROR(issue_error(issuing, id, p384, USEC_PER_HOUR, 0, NULL, NULL), EOPNOTSUPP);

        static const char *const good_dns[] = {
                "localhost", "a", "A-1.Example.ORG", "xn--bcher-kva.example", "conn-1.lab.internal",
                "123.example", "a.b2",
                "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk.example", /* 63 */
        };
        for (size_t i = 0; i < ELEMENTSOF(good_dns); i++) {
                char *dns[] = { (char *) good_dns[i], NULL };

                CASE("DNS '%s'", good_dns[i]);
                ASSERT_OK(issue_error(issuing, id, key, USEC_PER_HOUR, 0, dns, NULL));
        }

        static const char *const bad_dns[] = {
                "", ".", "-a.example", "a-.example", "a..b", "a.b.", ".a.b", "*.example.org", "a_b.example",
                "exa mple.org", "ex\x01mple.org", "1.2.3.4", "example.123", "10.0.0.1", "ex\xc3\xa4mple.org",
                "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl.example", /* 64 */
                "ex/ample", "example.org:443", "[::1]",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_dns); i++) {
                char *dns[] = { (char *) "ok.example", (char *) bad_dns[i], NULL };

                CASE("DNS '%s'", bad_dns[i]);
                ASSERT_ERROR(issue_error(issuing, id, key, USEC_PER_HOUR, 0, dns, NULL), EINVAL);
        }

        /* Total length: 253 accepted, 254 refused. */
        {
                char name[300], *dns[] = { name, NULL };

                memset(name, 'a', sizeof(name));
                for (size_t i = 63; i < sizeof(name); i += 64)
                        name[i] = '.';
                name[253] = '\0';
                ASSERT_TRUE(name[252] != '.');
                CASE("DNS 253");
                ASSERT_OK(issue_error(issuing, id, key, USEC_PER_HOUR, 0, dns, NULL));
                name[253] = 'a';
                name[254] = '\0';
                CASE("DNS 254");
                ASSERT_ERROR(issue_error(issuing, id, key, USEC_PER_HOUR, 0, dns, NULL), EINVAL);
        }

        static const char *const good_ip[] = { "0.0.0.0", "10.0.0.1", "255.255.255.255", "::", "::1",
                                               "2001:db8::1", "::ffff:10.0.0.1", "FD00:0:0:0:0:0:0:1" };
        for (size_t i = 0; i < ELEMENTSOF(good_ip); i++) {
                char *ips[] = { (char *) good_ip[i], NULL };

                CASE("IP '%s'", good_ip[i]);
                ASSERT_OK(issue_error(issuing, id, key, USEC_PER_HOUR, 0, NULL, ips));
        }

        static const char *const bad_ip[] = { "", "10.0.0", "10.0.0.256", "10.0.0.1.", "::g", "fe80::1%eth0",
                                              "[::1]", "10.0.0.1/24", " 10.0.0.1", "10.0.0.1 ", "0x7f.0.0.1",
                                              "localhost", "1:2:3:4:5:6:7:8:9" };
        for (size_t i = 0; i < ELEMENTSOF(bad_ip); i++) {
                char *ips[] = { (char *) "10.0.0.1", (char *) bad_ip[i], NULL };

                CASE("IP '%s'", bad_ip[i]);
                ASSERT_ERROR(issue_error(issuing, id, key, USEC_PER_HOUR, 0, NULL, ips), EINVAL);
        }
}

TEST(leaf_sans_max) {
        _cleanup_(ca_freep) CertificateAuthority *root = new_root(KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);
        _cleanup_(spiffe_id_freep) SpiffeId *id = parse_id("spiffe://" TD "/connector/conn-1");
        char names[LEAF_SANS_MAX + 1][32], addrs[LEAF_SANS_MAX + 1][32];
        char *dns[LEAF_SANS_MAX + 2] = {}, *ips[LEAF_SANS_MAX + 2] = {};
        _cleanup_(X509_freep) X509 *leaf = NULL;
        GENERAL_NAMES *sans;
        LeafParams p = { .id = id, .public_key = key, .lifetime = USEC_PER_HOUR };
        int n_uri = 0, n_dns = 0, n_ip = 0;

        for (size_t i = 0; i <= LEAF_SANS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "host-%zu.example", i);
                snprintf(addrs[i], sizeof(addrs[i]), "10.0.0.%zu", i);
        }

        /* DNS and IP names count together. */
        for (size_t i = 0; i < LEAF_SANS_MAX / 2; i++) {
                dns[i] = names[i];
                ips[i] = addrs[i];
        }
        p.dns_names = dns;
        p.ip_addresses = ips;
        ASSERT_OK(ca_issue_leaf(issuing, &p, &leaf));

        /* Exactly one URI, then all DNS and IP names. */
        sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
        ASSERT_NOT_NULL(sans);
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
                const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

                if (g->type == GEN_URI) {
                        ASSERT_EQ(i, 0);
                        n_uri++;
                } else if (g->type == GEN_DNS)
                        n_dns++;
                else if (g->type == GEN_IPADD)
                        n_ip++;
                else
                        ASSERT_TRUE(false);
        }
        GENERAL_NAMES_free(sans);
        ASSERT_EQ(n_uri, 1);
        ASSERT_EQ(n_dns, LEAF_SANS_MAX / 2);
        ASSERT_EQ(n_ip, LEAF_SANS_MAX / 2);

        X509_free(TAKE_PTR(leaf));
        CASE("one over, as IP");
        ips[LEAF_SANS_MAX / 2] = addrs[LEAF_SANS_MAX / 2];
        ASSERT_ERROR(ca_issue_leaf(issuing, &p, &leaf), E2BIG);
        ASSERT_NULL(leaf);

        CASE("one over, all DNS");
        for (size_t i = 0; i <= LEAF_SANS_MAX; i++)
                dns[i] = names[i];
        p.ip_addresses = NULL;
        ASSERT_ERROR(ca_issue_leaf(issuing, &p, &leaf), E2BIG);
        dns[LEAF_SANS_MAX] = NULL;
        ASSERT_OK(ca_issue_leaf(issuing, &p, &leaf));
}

/* ---- CSR to certificate ------------------------------------------------------------------------------ */

/* The CA certifies the CSR's key; nothing the CSR claims reaches the certificate. */
TEST(csr_identity_is_ignored) {
        _cleanup_(ca_freep) CertificateAuthority *root = new_root(KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *agent_key = generate(KEY_TYPE_ED25519), *csr_key = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *claimed = parse_id("spiffe://" TD "/controller/ctl"),
                                            *assigned = parse_id("spiffe://" TD "/tunneler/laptop-7");
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        _cleanup_(X509_freep) X509 *leaf = NULL;
        LeafParams p = { .id = assigned, .lifetime = USEC_PER_HOUR };
        char *text;

        ASSERT_OK(crypto_csr_new(agent_key, claimed, &req));
        ASSERT_EQ(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                             (const unsigned char *) "admin", -1, -1, 0),
                  1);
        ASSERT_GT(X509_REQ_sign(req, agent_key, NULL), 0);
        ASSERT_OK(crypto_csr_verify(req, &csr_key));

        p.public_key = csr_key;
        ASSERT_OK(ca_issue_leaf(issuing, &p, &leaf));
        ASSERT_TRUE(crypto_key_public_equal(X509_get0_pubkey(leaf), agent_key));

        text = x509_text(leaf, "leaf.pem");
        ASSERT_STRSTR(text, "        Subject: O = ztna, OU = tunneler, CN = laptop-7\n");
        ASSERT_STRSTR(text, "URI:spiffe://example.org/tunneler/laptop-7\n");
        ASSERT_TRUE(strstr(text, "controller") == NULL);
        ASSERT_TRUE(strstr(text, "admin") == NULL);
}

/* ---- ca_load ----------------------------------------------------------------------------------------- */

TEST(load) {
        _cleanup_(ca_freep) CertificateAuthority *root =
                new_root(KEY_TYPE_ECDSA_P256, 10 * USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *issuing =
                new_issuing(root, KEY_TYPE_ECDSA_P256, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *other =
                new_issuing(root, KEY_TYPE_ED25519, USEC_PER_YEAR, 0);
        _cleanup_(ca_freep) CertificateAuthority *loaded = NULL, *loaded_root = NULL, *ca = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256), *public_only = NULL,
                                           *rsa = NULL;
        _cleanup_(X509_freep) X509 *leaf = NULL, *leaf2 = NULL;
        _cleanup_x509_stack_ STACK_OF(X509) *chain = NULL;
        _cleanup_free_ uint8_t *spki = NULL;
        size_t spki_size = 0;
        const char *root_pem, *issuing_pem, *leaf_pem;
        char *out;

        /* Round trip: what the controller stores, it can load and keep issuing with. */
        ASSERT_OK(ca_load(ca_get_certificate(issuing), ca_get_key(issuing), NULL, &loaded));
        ASSERT_STREQ(ca_get_trust_domain(loaded), TD);
        ASSERT_EQ(sk_X509_num(ca_get_chain(loaded)), 0);
        ASSERT_TRUE(ca_get_certificate(loaded) == ca_get_certificate(issuing));
        leaf = issue(loaded, "spiffe://" TD "/connector/conn-1", key, USEC_PER_HOUR, 0, NULL, NULL);
        root_pem = write_pem("root.pem", ca_get_certificate(root));
        issuing_pem = write_pem("issuing.pem", ca_get_certificate(issuing));
        leaf_pem = write_pem("leaf.pem", leaf);
        ASSERT_EQ(openssl_verify(&out, root_pem, issuing_pem, leaf_pem, "sslserver"), 0);

        /* A loaded root can make issuing CAs. */
        ASSERT_OK(ca_load(ca_get_certificate(root), ca_get_key(root), NULL, &loaded_root));
        ASSERT_OK(ca_new_issuing(loaded_root, KEY_TYPE_ECDSA_P256, USEC_PER_DAY, 0, &ca));
        ca = ca_free(ca);

        /* The loaded CA holds its own references. */
        loaded = ca_free(loaded);
        ASSERT_OK(ca_load(ca_get_certificate(issuing), ca_get_key(issuing), NULL, &loaded));
        issuing = ca_free(issuing);
        leaf2 = issue(loaded, "spiffe://" TD "/connector/conn-2", key, USEC_PER_HOUR, 0, NULL, NULL);
        loaded = ca_free(loaded);

        /* Mismatched key. */
        CASE("mismatched key");
        ASSERT_ERROR(ca_load(ca_get_certificate(root), ca_get_key(other), NULL, &ca), EKEYREJECTED);
        ASSERT_ERROR(ca_load(ca_get_certificate(other), key, NULL, &ca), EKEYREJECTED);
        ASSERT_NULL(ca);

        /* The right key, but only its public half: it could never sign. */
        CASE("public key only");
        ASSERT_OK(crypto_key_public_to_der(ca_get_key(other), &spki, &spki_size));
        ASSERT_OK(crypto_key_public_from_der(spki, spki_size, &public_only));
        ASSERT_ERROR(ca_load(ca_get_certificate(other), public_only, NULL, &ca), EKEYREJECTED);

        CASE("unsupported key");
        rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
        ASSERT_NOT_NULL(rsa);
        ASSERT_ERROR(ca_load(ca_get_certificate(other), rsa, NULL, &ca), EOPNOTSUPP);

        /* A leaf is not a CA, even with its own key. */
        CASE("leaf as CA");
        {
                _cleanup_(X509_freep) X509 *own = NULL;

                own = issue(other, "spiffe://" TD "/connector/c", key, USEC_PER_HOUR, 0, NULL, NULL);
                ASSERT_ERROR(ca_load(own, key, NULL, &ca), EINVAL);
        }

        /* Chains: each element issued the previous one, no root, bounded. */
        CASE("chain");
        chain = sk_X509_new_null();
        ASSERT_NOT_NULL(chain);
        ASSERT_TRUE(sk_X509_push(chain, ca_get_certificate(other)) > 0);
        ASSERT_EQ(X509_up_ref(ca_get_certificate(other)), 1);
        /* "other" did not issue "other". */
        ASSERT_ERROR(ca_load(ca_get_certificate(other), ca_get_key(other), chain, &ca), EINVAL);
        sk_X509_pop_free(chain, X509_free);
        chain = sk_X509_new_null();
        ASSERT_NOT_NULL(chain);
        /* The root does not belong in the chain. */
        ASSERT_TRUE(sk_X509_push(chain, ca_get_certificate(root)) > 0);
        ASSERT_EQ(X509_up_ref(ca_get_certificate(root)), 1);
        ASSERT_ERROR(ca_load(ca_get_certificate(other), ca_get_key(other), chain, &ca), EINVAL);
        /* An empty chain is the same as none. */
        sk_X509_pop_free(chain, X509_free);
        chain = sk_X509_new_null();
        ASSERT_NOT_NULL(chain);
        ASSERT_OK(ca_load(ca_get_certificate(other), ca_get_key(other), chain, &ca));
        ASSERT_NOT_NULL(ca_get_chain(ca));
        ASSERT_TRUE(ca_get_chain(ca) != chain);
        ca = ca_free(ca);
        /* Too long. */
        for (int i = 0; i <= CA_CHAIN_MAX; i++) {
                ASSERT_TRUE(sk_X509_push(chain, ca_get_certificate(root)) > 0);
                ASSERT_EQ(X509_up_ref(ca_get_certificate(root)), 1);
        }
        ASSERT_ERROR(ca_load(ca_get_certificate(other), ca_get_key(other), chain, &ca), EINVAL);
        ASSERT_NULL(ca);
}

/* A CA certificate must name its trust domain in exactly one URI SAN without a path. */
TEST(load_requires_trust_domain_san) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = generate(KEY_TYPE_ECDSA_P256);
        static const struct {
                const char *uris[2];
                int error;
        } rows[] = {
                { { NULL }, EINVAL },
                { { "spiffe://example.org/connector/x" }, EINVAL },
                { { "spiffe://Example.org" }, EINVAL },
                { { "https://example.org" }, EINVAL },
                { { "spiffe://example.org", "spiffe://other.org" }, EINVAL },
                { { "spiffe://example.org" }, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_(X509_freep) X509 *x = X509_new();
                _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *sans = GENERAL_NAMES_new();
                _cleanup_(BASIC_CONSTRAINTS_freep) BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
                _cleanup_(ca_freep) CertificateAuthority *ca = NULL;
                ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
                X509_NAME *name;

                CASE("row %zu (%s)", i, rows[i].uris[0] ?: "no URI");
                ASSERT_NOT_NULL(x);
                ASSERT_NOT_NULL(sans);
                ASSERT_NOT_NULL(bc);
                ASSERT_NOT_NULL(ku);
                ASSERT_EQ(X509_set_version(x, X509_VERSION_3), 1);
                ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
                ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notBefore(x), 0));
                ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
                name = X509_get_subject_name(x);
                ASSERT_EQ(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *) "x",
                                                     -1, -1, 0),
                          1);
                ASSERT_EQ(X509_set_issuer_name(x, name), 1);
                ASSERT_EQ(X509_set_pubkey(x, key), 1);
                bc->ca = 0xFF;
                ASSERT_EQ(X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, 0), 1);
                ASSERT_EQ(ASN1_BIT_STRING_set_bit(ku, 5, 1), 1);
                ASSERT_EQ(X509_add1_ext_i2d(x, NID_key_usage, ku, 1, 0), 1);
                ASN1_BIT_STRING_free(ku);
                {
                        ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();

                        ASSERT_NOT_NULL(ski);
                        ASSERT_EQ(ASN1_OCTET_STRING_set(ski, (const unsigned char *) "0123456789abcdefghij",
                                                        20),
                                  1);
                        ASSERT_EQ(X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, 0), 1);
                        ASN1_OCTET_STRING_free(ski);
                }
                for (size_t j = 0; j < ELEMENTSOF(rows[i].uris) && rows[i].uris[j]; j++) {
                        GENERAL_NAME *g = GENERAL_NAME_new();
                        ASN1_IA5STRING *s = ASN1_IA5STRING_new();

                        ASSERT_NOT_NULL(g);
                        ASSERT_NOT_NULL(s);
                        ASSERT_EQ(ASN1_STRING_set(s, rows[i].uris[j], -1), 1);
                        GENERAL_NAME_set0_value(g, GEN_URI, s);
                        ASSERT_TRUE(sk_GENERAL_NAME_push(sans, g) > 0);
                }
                if (sk_GENERAL_NAME_num(sans) > 0)
                        ASSERT_EQ(X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, 0), 1);
                ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);

                if (rows[i].error == 0) {
                        ASSERT_OK(ca_load(x, key, NULL, &ca));
                        ASSERT_STREQ(ca_get_trust_domain(ca), "example.org");
                } else
                        ASSERT_ERROR(ca_load(x, key, NULL, &ca), rows[i].error);
        }
}
