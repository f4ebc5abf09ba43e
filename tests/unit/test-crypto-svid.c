/* SPDX-License-Identifier: Apache-2.0 */

#include "certgen.h"
#include "crypto-bundle.h"
#include "crypto-svid.h"
#include "crypto-util.h"
#include "tests.h"

#define TD "example.org"
#define TD_URI "spiffe://" TD
#define LEAF_URI "spiffe://" TD "/connector/c1"
#define EKU_REASON "extendedKeyUsage lacks serverAuth or clientAuth"
#define ANCHOR_REASON "does not chain to a root of trust domain 'example.org'"

/* How one certificate of a row differs from a conforming one. Zero means "as certgen_params_*()". */
enum { BC_NONE = 1, BC_FALSE, BC_TRUE };
#define KU_SET 0x10000   /* ku = KU_SET | bits: exactly these bits */
#define KU_OMIT 0x20000  /* no keyUsage extension */
#define KU_NONCRITICAL 0x40000 /* the usual bits, extension not marked critical */
enum { EKU_SERVER_ONLY = 1, EKU_CLIENT_ONLY, EKU_NONE };

typedef struct Override {
        const char *uri;  /* replaces the URI SAN */
        const char *uri2; /* a second URI SAN */
        const char *dns;  /* an additional DNS SAN */
        bool no_uri;
        int bc;
        int ku;
        int eku;
        int64_t not_before, not_after; /* seconds relative to now */
} Override;

typedef struct Row {
        const char *name;
        Override leaf, intermediate, root; /* intermediate: the one that issued the leaf */
        int intermediates;                 /* 0: one; -1: none (leaf under the root); else that many */
        bool root_not_in_bundle;           /* the bundle holds another root of the same trust domain */
        bool present_root;                 /* the root is also presented among the intermediates */
        bool present_leaf;                 /* the leaf is presented first, as in a TLS peer chain */
        bool hide_intermediates;           /* issue via intermediates but present none */
        bool forged_leaf;                  /* leaf names the intermediate as issuer, signed by another key */
        int error;                         /* 0: valid */
        const char *reason;                /* substring of the allocated reason */
} Row;

static const Row table[] = {
        /* Valid. */
        { "valid leaf via intermediate" },
        { "valid leaf directly under root", .intermediates = -1 },
        { "valid leaf via four intermediates", .intermediates = 4 },
        { "valid: intermediate without URI SAN", .intermediate = { .no_uri = true } },
        { "valid: root presented along", .present_root = true },
        { "valid: leaf presented first, as TLS does", .present_leaf = true, .present_root = true },
        { "valid: four intermediates and the leaf presented", .intermediates = 4, .present_leaf = true },
        { "valid: leaf without extendedKeyUsage", .leaf = { .eku = EKU_NONE } },
        { "valid: leaf with a DNS SAN too", .leaf = { .dns = "c1.example.org" } },
        { "valid: leaf with keyEncipherment and keyAgreement",
          .leaf = { .ku = KU_SET | KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT | KU_KEY_AGREEMENT } },

        /* Leaf rules. */
        { "leaf with two URI SANs", .leaf = { .uri2 = TD_URI "/connector/c2" },
          .error = EKEYREJECTED, .reason = "leaf certificate: more than one URI SAN" },
        { "leaf without URI SAN", .leaf = { .no_uri = true, .dns = "c1.example.org" },
          .error = EKEYREJECTED, .reason = "leaf certificate: no URI SAN" },
        { "leaf URI SAN not spiffe", .leaf = { .uri = "https://" TD "/connector/c1" },
          .error = EKEYREJECTED,
          .reason = "leaf certificate: URI SAN is not a valid SPIFFE ID 'https://example.org/connector/c1': "
                    "scheme is not \"spiffe://\"" },
        { "leaf URI SAN with upper-case trust domain",
          .leaf = { .uri = "spiffe://Example.org/connector/c1" },
          .error = EKEYREJECTED, .reason = "trust domain contains upper-case characters" },
        { "leaf URI SAN with query", .leaf = { .uri = LEAF_URI "?x" },
          .error = EKEYREJECTED, .reason = "SPIFFE ID must not contain a query" },
        { "leaf URI SAN without path", .leaf = { .uri = TD_URI },
          .error = EKEYREJECTED,
          .reason = "leaf certificate: SPIFFE ID has no path: 'spiffe://example.org'" },
        { "leaf CA:TRUE", .leaf = { .bc = BC_TRUE },
          .error = EKEYREJECTED, .reason = "leaf certificate: basicConstraints is CA:TRUE" },
        { "leaf without basicConstraints", .leaf = { .bc = BC_NONE },
          .error = EKEYREJECTED, .reason = "leaf certificate: no basicConstraints extension" },
        { "leaf without keyUsage", .leaf = { .ku = KU_OMIT },
          .error = EKEYREJECTED, .reason = "leaf certificate: no keyUsage extension" },
        { "leaf keyUsage not critical", .leaf = { .ku = KU_NONCRITICAL },
          .error = EKEYREJECTED, .reason = "leaf certificate: keyUsage is not marked critical" },
        { "leaf without digitalSignature", .leaf = { .ku = KU_SET | KU_KEY_ENCIPHERMENT },
          .error = EKEYREJECTED, .reason = "leaf certificate: keyUsage lacks digitalSignature" },
        /* RFC 5280 §4.2.1.3: at least one bit; OpenSSL flags an empty keyUsage as invalid. */
        { "leaf with empty keyUsage", .leaf = { .ku = KU_SET },
          .error = EKEYREJECTED, .reason = "leaf certificate: malformed or duplicate extensions" },
        { "leaf with keyCertSign", .leaf = { .ku = KU_SET | KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN },
          .error = EKEYREJECTED, .reason = "leaf certificate: keyUsage has keyCertSign" },
        { "leaf with cRLSign", .leaf = { .ku = KU_SET | KU_DIGITAL_SIGNATURE | KU_CRL_SIGN },
          .error = EKEYREJECTED, .reason = "leaf certificate: keyUsage has cRLSign" },
        { "leaf EKU serverAuth only", .leaf = { .eku = EKU_SERVER_ONLY },
          .error = EKEYREJECTED, .reason = "leaf certificate: " EKU_REASON },
        { "leaf EKU clientAuth only", .leaf = { .eku = EKU_CLIENT_ONLY },
          .error = EKEYREJECTED, .reason = "leaf certificate: " EKU_REASON },
        { "leaf from another trust domain", .leaf = { .uri = "spiffe://other.org/connector/c1" },
          .error = ENOKEY,
          .reason = "leaf certificate: SPIFFE ID 'spiffe://other.org/connector/c1' is not in "
                    "trust domain 'example.org'" },
        { "expired leaf", .leaf = { .not_before = -7200, .not_after = -3600 },
          .error = EKEYEXPIRED, .reason = "leaf certificate: certificate has expired (valid from " },
        { "not yet valid leaf", .leaf = { .not_before = 3600, .not_after = 7200 },
          .error = EKEYEXPIRED, .reason = "leaf certificate: certificate is not yet valid" },
        { "forged leaf signature", .forged_leaf = true,
          .error = ENOKEY, .reason = "leaf certificate: certificate signature failure: " ANCHOR_REASON },

        /* Signing certificate rules. */
        { "intermediate CA:FALSE", .intermediate = { .bc = BC_FALSE },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): basicConstraints is CA:FALSE" },
        { "intermediate without basicConstraints", .intermediate = { .bc = BC_NONE },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): no basicConstraints extension" },
        { "intermediate without keyCertSign", .intermediate = { .ku = KU_SET | KU_CRL_SIGN },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): keyUsage lacks keyCertSign" },
        { "intermediate without keyUsage", .intermediate = { .ku = KU_OMIT },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): no keyUsage extension" },
        { "intermediate keyUsage not critical", .intermediate = { .ku = KU_NONCRITICAL },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): keyUsage is not marked critical" },
        { "intermediate SPIFFE ID with a path", .intermediate = { .uri = TD_URI "/ca" },
          .error = EKEYREJECTED,
          .reason = "intermediate 1 (as presented): SPIFFE ID has a path (only the trust-domain ID is "
                    "allowed): 'spiffe://example.org/ca'" },
        { "intermediate from another trust domain", .intermediate = { .uri = "spiffe://other.org" },
          .error = EKEYREJECTED,
          .reason = "intermediate 1 (as presented): SPIFFE ID is of another trust domain: "
                    "'spiffe://other.org'" },
        { "intermediate with two URI SANs", .intermediate = { .uri2 = "spiffe://" TD },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): more than one URI SAN" },
        { "intermediate URI SAN not spiffe", .intermediate = { .uri = "https://" TD },
          .error = EKEYREJECTED,
          .reason = "intermediate 1 (as presented): URI SAN is not a valid SPIFFE ID 'https://example.org': "
                    "scheme is not \"spiffe://\"" },
        { "expired intermediate", .intermediate = { .not_before = -7200, .not_after = -3600 },
          .error = EKEYEXPIRED,
          .reason = "intermediate 1 '/CN=certgen intermediate CA': certificate has expired" },
        { "not yet valid intermediate", .intermediate = { .not_before = 3600, .not_after = 7200 },
          .error = EKEYEXPIRED,
          .reason = "intermediate 1 '/CN=certgen intermediate CA': certificate is not yet valid" },
        { "expired root", .root = { .not_before = -7200, .not_after = -3600 },
          .error = EKEYEXPIRED, .reason = "root '/CN=certgen root CA': certificate has expired" },

        /* Chain. */
        { "untrusted root (not in bundle)", .root_not_in_bundle = true,
          .error = ENOKEY, .reason = ANCHOR_REASON },
        { "untrusted root presented along", .root_not_in_bundle = true, .present_root = true,
          .error = ENOKEY, .reason = "self-signed certificate in certificate chain" },
        { "intermediate not presented", .hide_intermediates = true,
          .error = ENOKEY, .reason = "leaf certificate: unable to get local issuer certificate" },
        { "chain too deep", .intermediates = SVID_CHAIN_DEPTH_MAX + 1,
          .error = EKEYREJECTED, .reason = "chain has 5 intermediate certificates, at most 4 are allowed" },
        { "chain too deep, leaf presented too",
          .intermediates = SVID_CHAIN_DEPTH_MAX + 1, .present_leaf = true,
          .error = EKEYREJECTED, .reason = "chain has 5 intermediate certificates, at most 4 are allowed" },
        { "bad intermediate after the presented leaf",
          .present_leaf = true, .intermediate = { .bc = BC_FALSE },
          .error = EKEYREJECTED, .reason = "intermediate 1 (as presented): basicConstraints is CA:FALSE" },
};

static void apply(CertgenParams *p, const Override *o) {
        usec_t n = now(CLOCK_REALTIME);

        if (o->no_uri)
                p->n_uris = 0;
        if (o->uri) {
                p->uris[0] = o->uri;
                p->n_uris = 1;
        }
        if (o->uri2)
                p->uris[p->n_uris++] = o->uri2;
        if (o->dns)
                p->dns[p->n_dns++] = o->dns;
        if (o->bc != 0)
                p->ca = o->bc == BC_NONE ? -1 : o->bc == BC_TRUE;
        if (o->ku == KU_NONCRITICAL)
                p->key_usage_noncritical = true;
        else if (o->ku == KU_OMIT)
                p->key_usage = -1;
        else if (o->ku & KU_SET)
                p->key_usage = o->ku & ~KU_SET;
        if (o->eku != 0) {
                p->eku_server = o->eku == EKU_SERVER_ONLY;
                p->eku_client = o->eku == EKU_CLIENT_ONLY;
        }
        if (o->not_before != 0)
                p->not_before = (usec_t) ((int64_t) n + o->not_before * (int64_t) USEC_PER_SEC);
        if (o->not_after != 0)
                p->not_after = (usec_t) ((int64_t) n + o->not_after * (int64_t) USEC_PER_SEC);
}

#define INTERMEDIATES_MAX 8

typedef struct Fixture {
        X509 *root, *other_root, *ints[INTERMEDIATES_MAX], *leaf;
        EVP_PKEY *root_key, *other_root_key, *int_keys[INTERMEDIATES_MAX], *leaf_key;
        int n_ints;
        TrustBundle *bundle;
        STACK_OF(X509) *presented;
} Fixture;

static void fixture_done(Fixture *f) {
        X509_free(f->root);
        X509_free(f->other_root);
        X509_free(f->leaf);
        EVP_PKEY_free(f->root_key);
        EVP_PKEY_free(f->other_root_key);
        EVP_PKEY_free(f->leaf_key);
        for (int i = 0; i < INTERMEDIATES_MAX; i++) {
                X509_free(f->ints[i]);
                EVP_PKEY_free(f->int_keys[i]);
        }
        trust_bundle_free(f->bundle);
        if (f->presented)
                sk_X509_pop_free(f->presented, X509_free);
}

/* Builds root → ints[n-1] → … → ints[0] → leaf, applying the row's overrides. */
static void fixture_build(Fixture *f, const Row *row) {
        CertgenParams p;
        X509 *issuer;
        EVP_PKEY *issuer_key;

        f->n_ints = row->intermediates == 0 ? 1 : row->intermediates < 0 ? 0 : row->intermediates;
        ASSERT_LE(f->n_ints, INTERMEDIATES_MAX);

        p = certgen_params_ca(TD_URI, NULL, NULL);
        apply(&p, &row->root);
        ASSERT_OK(certgen_make(&p, &f->root, &f->root_key));
        issuer = f->root;
        issuer_key = f->root_key;

        for (int i = f->n_ints - 1; i >= 0; i--) {
                p = certgen_params_ca(TD_URI, issuer, issuer_key);
                if (i == 0)
                        apply(&p, &row->intermediate);
                ASSERT_OK(certgen_make(&p, &f->ints[i], &f->int_keys[i]));
                issuer = f->ints[i];
                issuer_key = f->int_keys[i];
        }

        if (row->forged_leaf) {
                p = certgen_params_ca(NULL, NULL, NULL);
                ASSERT_OK(certgen_make(&p, &f->other_root, &f->other_root_key));
                issuer_key = f->other_root_key;
        }
        p = certgen_params_leaf(LEAF_URI, issuer, issuer_key);
        apply(&p, &row->leaf);
        ASSERT_OK(certgen_make(&p, &f->leaf, &f->leaf_key));

        ASSERT_OK(trust_bundle_new(TD, &f->bundle));
        if (row->root_not_in_bundle) {
                p = certgen_params_ca(TD_URI, NULL, NULL);
                ASSERT_OK(certgen_make(&p, &f->other_root, &f->other_root_key));
                ASSERT_OK(trust_bundle_add(f->bundle, f->other_root));
        } else
                ASSERT_OK(trust_bundle_add(f->bundle, f->root));

        f->presented = ASSERT_NOT_NULL(sk_X509_new_null());
        if (row->present_leaf)
                ASSERT_TRUE(X509_add_cert(f->presented, f->leaf, X509_ADD_FLAG_UP_REF));
        for (int i = 0; i < f->n_ints && !row->hide_intermediates; i++)
                ASSERT_TRUE(X509_add_cert(f->presented, f->ints[i], X509_ADD_FLAG_UP_REF));
        if (row->present_root)
                ASSERT_TRUE(X509_add_cert(f->presented, f->root, X509_ADD_FLAG_UP_REF));
}

TEST(svid_rules_table) {
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(fixture_done) Fixture f = {};
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                _cleanup_free_ char *reason = NULL;
                const Row *row = &table[i];

                CASE("%s", row->name);
                fixture_build(&f, row);

                if (row->error == 0) {
                        ASSERT_OK(svid_verify(f.bundle, f.leaf, f.presented, 0, &id, &reason));
                        ASSERT_NULL(reason);
                        ASSERT_STREQ(spiffe_id_to_string(id), LEAF_URI);
                        ASSERT_EQ(id->role, SPIFFE_ROLE_CONNECTOR);
                        ASSERT_STREQ(id->name, "c1");
                        /* The same without asking for the ID or the reason. */
                        ASSERT_OK(svid_verify(f.bundle, f.leaf, f.presented, 0, NULL, NULL));
                } else {
                        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, f.presented, 0, &id, &reason),
                                     row->error);
                        ASSERT_NULL(id);
                        ASSERT_STRSTR(reason, row->reason);
                        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, f.presented, 0, NULL, NULL), row->error);
                }
        }
}

TEST(verify_at_a_given_time) {
        _cleanup_(fixture_done) Fixture f = {};
        _cleanup_free_ char *reason = NULL;
        const Row valid = {};
        usec_t n = now(CLOCK_REALTIME);

        fixture_build(&f, &valid);
        /* Everything is valid from now−1h to now+1h. */
        ASSERT_OK(svid_verify(f.bundle, f.leaf, f.presented, n + 50 * USEC_PER_MINUTE, NULL, NULL));
        ASSERT_OK(svid_verify(f.bundle, f.leaf, f.presented, n - 50 * USEC_PER_MINUTE, NULL, NULL));
        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, f.presented, n + 2 * USEC_PER_HOUR, NULL, &reason),
                     EKEYEXPIRED);
        ASSERT_STRSTR(reason, "certificate has expired");
        reason = mfree(reason);
        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, f.presented, n - 2 * USEC_PER_HOUR, NULL, &reason),
                     EKEYEXPIRED);
        ASSERT_STRSTR(reason, "certificate is not yet valid");
}

TEST(verify_bad_arguments_and_empty_bundle) {
        _cleanup_(fixture_done) Fixture f = {};
        _cleanup_(trust_bundle_freep) TrustBundle *empty = NULL, *other = NULL;
        _cleanup_free_ char *reason = NULL;
        const Row valid = {};

        fixture_build(&f, &valid);
        ASSERT_ERROR(svid_verify(NULL, f.leaf, f.presented, 0, NULL, &reason), EINVAL);
        ASSERT_STRSTR(reason, "no trust bundle");
        reason = mfree(reason);
        ASSERT_ERROR(svid_verify(f.bundle, NULL, f.presented, 0, NULL, NULL), EINVAL);

        ASSERT_OK(trust_bundle_new(TD, &empty));
        ASSERT_ERROR(svid_verify(empty, f.leaf, f.presented, 0, NULL, &reason), ENOKEY);
        ASSERT_STREQ(reason, "trust bundle of 'example.org' is empty");
        reason = mfree(reason);

        /* The right roots under another trust domain's name do not help. */
        ASSERT_OK(trust_bundle_new("other.org", &other));
        ASSERT_ERROR(svid_verify(other, f.leaf, f.presented, 0, NULL, &reason), ENOKEY);
        reason = mfree(reason);

        /* No intermediates at all (NULL stack) for a leaf issued by an intermediate. */
        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, NULL, 0, NULL, &reason), ENOKEY);
        ASSERT_STRSTR(reason, "unable to get local issuer certificate");
}

TEST(check_leaf_static_reasons) {
        static const struct {
                Override o;
                const char *reason;
        } rows[] = {
                { {}, NULL },
                { { .uri2 = TD_URI "/x" }, "more than one URI SAN" },
                { { .no_uri = true }, "no URI SAN" },
                { { .uri = "spiffe://" TD "/a//b" }, "path must not contain empty segments" },
                { { .uri = TD_URI }, "SPIFFE ID has no path" },
                { { .bc = BC_TRUE }, "basicConstraints is CA:TRUE" },
                { { .bc = BC_NONE }, "no basicConstraints extension" },
                { { .ku = KU_OMIT }, "no keyUsage extension" },
                { { .ku = KU_SET | KU_KEY_AGREEMENT }, "keyUsage lacks digitalSignature" },
                { { .ku = KU_SET | KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN }, "keyUsage has keyCertSign" },
                { { .ku = KU_SET | KU_DIGITAL_SIGNATURE | KU_CRL_SIGN }, "keyUsage has cRLSign" },
                { { .eku = EKU_SERVER_ONLY }, EKU_REASON },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                _cleanup_(X509_freep) X509 *x = NULL;
                CertgenParams p = certgen_params_leaf(LEAF_URI, NULL, NULL);
                const char *reason = NULL;

                CASE("%s", strna(rows[i].reason));
                apply(&p, &rows[i].o);
                ASSERT_OK(certgen_make(&p, &x, NULL));
                if (!rows[i].reason) {
                        ASSERT_OK(svid_check_leaf(x, &id, &reason));
                        ASSERT_NULL(reason);
                        ASSERT_STREQ(id->uri, LEAF_URI);
                        ASSERT_OK(svid_check_leaf(x, NULL, NULL));
                } else {
                        ASSERT_ERROR(svid_check_leaf(x, &id, &reason), EKEYREJECTED);
                        ASSERT_NULL(id);
                        ASSERT_STREQ(reason, rows[i].reason);
                }
        }
}

TEST(check_signing_certificate_static_reasons) {
        static const struct {
                Override o;
                const char *reason;
        } rows[] = {
                { {}, NULL },
                { { .no_uri = true }, NULL },
                { { .bc = BC_FALSE }, "basicConstraints is CA:FALSE" },
                { { .bc = BC_NONE }, "no basicConstraints extension" },
                { { .ku = KU_OMIT }, "no keyUsage extension" },
                { { .ku = KU_SET | KU_CRL_SIGN | KU_DIGITAL_SIGNATURE }, "keyUsage lacks keyCertSign" },
                { { .uri2 = TD_URI }, "more than one URI SAN" },
                { { .uri = "spiffe://" TD ":443" }, "trust domain must not contain a port" },
                { { .uri = TD_URI "/ca" }, "SPIFFE ID has a path (only the trust-domain ID is allowed)" },
                { { .uri = "spiffe://other.org" }, "SPIFFE ID is of another trust domain" },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_(X509_freep) X509 *x = NULL;
                CertgenParams p = certgen_params_ca(TD_URI, NULL, NULL);
                const char *reason = NULL;

                CASE("%s", strna(rows[i].reason));
                apply(&p, &rows[i].o);
                ASSERT_OK(certgen_make(&p, &x, NULL));
                if (!rows[i].reason)
                        ASSERT_OK(svid_check_signing_certificate(x, TD, &reason));
                else {
                        ASSERT_ERROR(svid_check_signing_certificate(x, TD, &reason), EKEYREJECTED);
                        ASSERT_STREQ(reason, rows[i].reason);
                }
        }

        /* A leaf is not a signing certificate; a bad trust domain argument is the caller's error. */
        _cleanup_(X509_freep) X509 *leaf = NULL;
        CertgenParams p = certgen_params_leaf(LEAF_URI, NULL, NULL);
        const char *reason = NULL;

        ASSERT_OK(certgen_make(&p, &leaf, NULL));
        ASSERT_ERROR(svid_check_signing_certificate(leaf, TD, &reason), EKEYREJECTED);
        ASSERT_STREQ(reason, "basicConstraints is CA:FALSE");
        ASSERT_ERROR(svid_check_signing_certificate(leaf, "Bad.TD", NULL), EINVAL);
        ASSERT_ERROR(svid_check_signing_certificate(leaf, NULL, NULL), EINVAL);
}

TEST(reason_quotes_hostile_uri) {
        _cleanup_(fixture_done) Fixture f = {};
        _cleanup_free_ char *reason = NULL;
        const Row row = { .leaf = { .uri = "https://x/\x1b[31mred\n'" } };

        fixture_build(&f, &row);
        ASSERT_ERROR(svid_verify(f.bundle, f.leaf, f.presented, 0, NULL, &reason), EKEYREJECTED);
        /* Control characters and quotes from the peer never reach the log line. */
        ASSERT_STRSTR(reason, "'https://x/?[31mred?\?'");
        ASSERT_TRUE(strchr(reason, '\n') == NULL);
        ASSERT_TRUE(strchr(reason, '\x1b') == NULL);
}

TEST(certgen_builds_what_was_asked) {
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        CertgenParams p = certgen_params_ca(TD_URI, NULL, NULL);

        p.path_len = 2;
        ASSERT_OK(certgen_make(&p, &x, &k));
        ASSERT_NOT_NULL(k);
        ASSERT_EQ(X509_get_version(x), X509_VERSION_3);
        ASSERT_EQ(X509_get_pathlen(x), 2);
        ASSERT_TRUE(X509_get_extension_flags(x) & EXFLAG_CA);
        ASSERT_EQ(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
        ASSERT_EQ(X509_self_signed(x, 1), 1);
        ASSERT_EQ(X509_check_private_key(x, k), 1);

        /* Bad parameters. */
        X509 *y = NULL;
        p = certgen_params_leaf(LEAF_URI, x, NULL);
        ASSERT_ERROR(certgen_make(&p, &y, NULL), EINVAL);
        p = certgen_params_leaf(LEAF_URI, NULL, NULL);
        p.n_uris = CERTGEN_SANS_MAX + 1;
        ASSERT_ERROR(certgen_make(&p, &y, NULL), EINVAL);
        ASSERT_NULL(y);
}

TEST(trust_domain_of_ca) {
        static const struct {
                Override o;
                const char *td; /* NULL: refused */
        } rows[] = {
                { {}, TD },
                { { .uri = "spiffe://other.org" }, "other.org" },
                { { .no_uri = true }, NULL },
                { { .uri2 = "spiffe://other.org" }, NULL },
                { { .uri = TD_URI "/ca" }, NULL },
                { { .uri = "https://" TD }, NULL },
                { { .uri = "spiffe://EXAMPLE.org" }, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                _cleanup_(X509_freep) X509 *x = NULL;
                CertgenParams p = certgen_params_ca(TD_URI, NULL, NULL);

                CASE("%zu %s", i, strna(rows[i].td));
                apply(&p, &rows[i].o);
                ASSERT_OK(certgen_make(&p, &x, NULL));
                if (rows[i].td) {
                        ASSERT_OK(svid_get_trust_domain_of_ca(x, &id));
                        ASSERT_STREQ(id->trust_domain, rows[i].td);
                        ASSERT_TRUE(spiffe_id_is_trust_domain(id));
                } else {
                        ASSERT_ERROR(svid_get_trust_domain_of_ca(x, &id), EKEYREJECTED);
                        ASSERT_NULL(id);
                }
        }
}
