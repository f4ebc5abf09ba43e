/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <time.h>

#include "crypto-ca.h"
#include "crypto-svid.h"
#include "crypto-util.h"
#include "parse-util.h"
#include "strv.h"

struct CertificateAuthority {
        X509 *certificate;
        EVP_PKEY *key;
        STACK_OF(X509) *chain; /* issuers up to, excluding, the root; never NULL */
        char *trust_domain;
};

/* X.520 upper bound for the attributes we put into subject names (ub-common-name etc.). */
#define CA_NAME_ATTRIBUTE_MAX 64
/* 9999-12-31T23:59:59Z, the last second an X.509 time can express. */
#define CA_TIME_MAX_SEC ((uint64_t) 253402300799ULL)
/* RFC 7093 method 1 keeps the leftmost 160 bits of the SHA-256. */
#define CA_KEY_ID_SIZE 20

typedef enum CaProfile {
        CA_PROFILE_ROOT,
        CA_PROFILE_ISSUING,
        CA_PROFILE_LEAF,
} CaProfile;

CertificateAuthority *ca_free(CertificateAuthority *ca) {
        if (!ca)
                return NULL;
        X509_free(ca->certificate);
        EVP_PKEY_free(ca->key);
        if (ca->chain)
                sk_X509_pop_free(ca->chain, X509_free);
        free(ca->trust_domain);
        free(ca);
        return NULL;
}

X509 *ca_get_certificate(const CertificateAuthority *ca) {
        assert(ca);
        return ca->certificate;
}

EVP_PKEY *ca_get_key(const CertificateAuthority *ca) {
        assert(ca);
        return ca->key;
}

STACK_OF(X509) *ca_get_chain(const CertificateAuthority *ca) {
        assert(ca);
        return ca->chain;
}

const char *ca_get_trust_domain(const CertificateAuthority *ca) {
        assert(ca);
        return ca->trust_domain;
}

static usec_t now_or(usec_t t) {
        return t > 0 ? t : now(CLOCK_REALTIME);
}

static int asn1_time_to_sec(const ASN1_TIME *t, uint64_t *ret) {
        struct tm tm = {};
        time_t s;

        if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
                return crypto_error(EINVAL, "Invalid certificate time");
        s = timegm(&tm);
        if (s < 0)
                return -EINVAL;
        *ret = (uint64_t) s;
        return 0;
}

/* The validity window of a new certificate: back-dated, clamped to the issuer's window. */
static int ca_validity(const X509 *issuer, usec_t lifetime, usec_t now_usec, uint64_t *ret_not_before,
                       uint64_t *ret_not_after) {
        uint64_t now_sec, lifetime_sec, not_before, not_after;
        int r;

        lifetime_sec = lifetime / USEC_PER_SEC;
        if (lifetime_sec == 0)
                return -EINVAL;

        now_sec = now_or(now_usec) / USEC_PER_SEC;
        not_before = now_sec - MIN(now_sec, CA_BACKDATE_USEC / USEC_PER_SEC);
        not_after = now_sec > UINT64_MAX - lifetime_sec ? UINT64_MAX : now_sec + lifetime_sec;

        if (issuer) {
                uint64_t issuer_not_before, issuer_not_after;

                r = asn1_time_to_sec(X509_get0_notBefore(issuer), &issuer_not_before);
                if (r < 0)
                        return r;
                r = asn1_time_to_sec(X509_get0_notAfter(issuer), &issuer_not_after);
                if (r < 0)
                        return r;

                not_before = MAX(not_before, issuer_not_before);
                not_after = MIN(not_after, issuer_not_after);

                /* The issuer has expired, or is not valid during any of the requested window. */
                if (not_after <= now_sec || not_after <= not_before)
                        return -EKEYEXPIRED;
        }

        if (not_after > CA_TIME_MAX_SEC)
                return -ERANGE;

        *ret_not_before = not_before;
        *ret_not_after = not_after;
        return 0;
}

/* 16 random bytes with the top bit cleared and the next one set: always positive, never zero, and a
 * constant 127-bit length, so the DER INTEGER is exactly 16 bytes without a sign-padding byte. */
static int ca_set_random_serial(X509 *x) {
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        uint8_t buf[16];
        int r;

        r = crypto_random_bytes(buf, sizeof(buf));
        if (r < 0)
                return r;
        buf[0] = (buf[0] & 0x7f) | 0x40;

        bn = BN_bin2bn(buf, sizeof(buf), NULL);
        if (!bn)
                return crypto_error(ENOMEM, "Failed to build serial");
        if (!BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
                return crypto_error(ENOMEM, "Failed to set serial");
        return 0;
}

static int ca_set_time(int (*set)(X509 *, const ASN1_TIME *), X509 *x, uint64_t sec) {
        _cleanup_(ASN1_TIME_freep) ASN1_TIME *t = NULL;

        /* ASN1_TIME_set() picks UTCTime up to 2049 and GeneralizedTime after, as RFC 5280 requires. */
        t = ASN1_TIME_set(NULL, (time_t) sec);
        if (!t)
                return crypto_error(EINVAL, "Failed to encode certificate time");
        if (set(x, t) != 1)
                return crypto_error(ENOMEM, "Failed to set certificate time");
        return 0;
}

static int name_add(X509_NAME *name, const char *field, const char *value) {
        if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *) value, -1, -1,
                                       0) != 1)
                return crypto_error(EINVAL, "Failed to build subject name");
        return 0;
}

/* O=ztna, CN=<prefix> <suffix> (or just the prefix when that would exceed the X.520 bound). */
static int ca_make_name(const char *prefix, const char *suffix, X509_NAME **ret) {
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        char cn[CA_NAME_ATTRIBUTE_MAX + 1];
        int r, k;

        name = X509_NAME_new();
        if (!name)
                return -ENOMEM;
        r = name_add(name, "O", "ztna");
        if (r < 0)
                return r;

        k = snprintf(cn, sizeof(cn), "%s %s", prefix, suffix);
        r = name_add(name, "CN", k > 0 && (size_t) k < sizeof(cn) ? cn : prefix);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(name);
        return 0;
}

static int general_names_add(GENERAL_NAMES *names, int type, const void *data, size_t size) {
        _cleanup_(GENERAL_NAME_freep) GENERAL_NAME *gen = NULL;
        ASN1_STRING *s;

        s = ASN1_STRING_type_new(type == GEN_IPADD ? V_ASN1_OCTET_STRING : V_ASN1_IA5STRING);
        if (!s)
                return -ENOMEM;
        if (ASN1_STRING_set(s, data, (int) size) != 1) {
                ASN1_STRING_free(s);
                return crypto_error(ENOMEM, "Failed to set subjectAltName");
        }
        gen = GENERAL_NAME_new();
        if (!gen) {
                ASN1_STRING_free(s);
                return -ENOMEM;
        }
        GENERAL_NAME_set0_value(gen, type, s);

        if (sk_GENERAL_NAME_push(names, gen) <= 0)
                return -ENOMEM;
        TAKE_PTR(gen);
        return 0;
}

static int leaf_sans(const SpiffeId *id, char **dns_names, char **ip_addresses, GENERAL_NAMES **ret) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        int r;

        if (strv_length(dns_names) + strv_length(ip_addresses) > LEAF_SANS_MAX)
                return -E2BIG;

        names = GENERAL_NAMES_new();
        if (!names)
                return -ENOMEM;

        r = general_names_add(names, GEN_URI, id->uri, strlen(id->uri));
        if (r < 0)
                return r;

        /* LDH names only: no wildcards, no trailing dot, no all-numeric last label. */
        STRV_FOREACH(s, dns_names) {
                if (!hostname_is_valid(*s))
                        return -EINVAL;
                r = general_names_add(names, GEN_DNS, *s, strlen(*s));
                if (r < 0)
                        return r;
        }

        STRV_FOREACH(s, ip_addresses) {
                struct in6_addr a6;
                struct in_addr a4;

                if (inet_pton(AF_INET, *s, &a4) == 1)
                        r = general_names_add(names, GEN_IPADD, &a4, sizeof(a4));
                else if (inet_pton(AF_INET6, *s, &a6) == 1)
                        r = general_names_add(names, GEN_IPADD, &a6, sizeof(a6));
                else
                        return -EINVAL;
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(names);
        return 0;
}

static int ca_trust_domain_sans(const char *uri, GENERAL_NAMES **ret) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        int r;

        names = GENERAL_NAMES_new();
        if (!names)
                return -ENOMEM;
        r = general_names_add(names, GEN_URI, uri, strlen(uri));
        if (r < 0)
                return r;
        *ret = TAKE_PTR(names);
        return 0;
}

static int add_ext(X509 *x, int nid, void *value, bool critical) {
        if (X509_add1_ext_i2d(x, nid, value, critical ? 1 : 0, X509V3_ADD_DEFAULT) != 1)
                return crypto_error(EIO, "Failed to add certificate extension");
        return 0;
}

static int ca_add_extensions(X509 *x, X509 *issuer, CaProfile profile, GENERAL_NAMES *sans) {
        _cleanup_(BASIC_CONSTRAINTS_freep) BASIC_CONSTRAINTS *bc = NULL;
        _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *ski = NULL;
        _cleanup_(AUTHORITY_KEYID_freep) AUTHORITY_KEYID *aki = NULL;
        _cleanup_(EXTENDED_KEY_USAGE_freep) EXTENDED_KEY_USAGE *eku = NULL;
        ASN1_BIT_STRING *ku = NULL;
        const ASN1_OCTET_STRING *issuer_ski;
        uint8_t md[SHA256_DIGEST_SIZE];
        ASN1_BIT_STRING *pub;
        int r;

        /* basicConstraints */
        bc = BASIC_CONSTRAINTS_new();
        if (!bc)
                return -ENOMEM;
        if (profile != CA_PROFILE_LEAF) {
                bc->ca = 0xFF; /* DER TRUE */
                bc->pathlen = ASN1_INTEGER_new();
                if (!bc->pathlen || ASN1_INTEGER_set(bc->pathlen, profile == CA_PROFILE_ROOT ? 1 : 0) != 1)
                        return -ENOMEM;
        }
        r = add_ext(x, NID_basic_constraints, bc, true);
        if (r < 0)
                return r;

        /* keyUsage */
        ku = ASN1_BIT_STRING_new();
        if (!ku)
                return -ENOMEM;
        if (profile == CA_PROFILE_LEAF)
                r = ASN1_BIT_STRING_set_bit(ku, 0, 1); /* digitalSignature */
        else
                r = ASN1_BIT_STRING_set_bit(ku, 5, 1) && /* keyCertSign */
                    ASN1_BIT_STRING_set_bit(ku, 6, 1);   /* cRLSign */
        if (r != 1) {
                ASN1_BIT_STRING_free(ku);
                return -ENOMEM;
        }
        r = add_ext(x, NID_key_usage, ku, true);
        ASN1_BIT_STRING_free(ku);
        if (r < 0)
                return r;

        /* extendedKeyUsage: leaves are both TLS servers and clients (mTLS in both directions). */
        if (profile == CA_PROFILE_LEAF) {
                eku = sk_ASN1_OBJECT_new_null();
                if (!eku || sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) <= 0 ||
                    sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) <= 0)
                        return -ENOMEM;
                r = add_ext(x, NID_ext_key_usage, eku, false);
                if (r < 0)
                        return r;
        }

        /* subjectAltName: not critical, as every subject is non-empty. */
        r = add_ext(x, NID_subject_alt_name, sans, false);
        if (r < 0)
                return r;

        /* subjectKeyIdentifier, RFC 7093 method 1 (no SHA-1 anywhere). */
        pub = X509_get0_pubkey_bitstr(x);
        if (!pub)
                return crypto_error(EINVAL, "Certificate has no public key");
        r = crypto_sha256(ASN1_STRING_get0_data(pub), ASN1_STRING_length(pub), md);
        if (r < 0)
                return r;
        ski = ASN1_OCTET_STRING_new();
        if (!ski || ASN1_OCTET_STRING_set(ski, md, CA_KEY_ID_SIZE) != 1)
                return -ENOMEM;
        r = add_ext(x, NID_subject_key_identifier, ski, false);
        if (r < 0)
                return r;

        /* authorityKeyIdentifier: keyIdentifier only, the issuer's SKI (our own for a root). */
        issuer_ski = issuer ? X509_get0_subject_key_id(issuer) : ski;
        if (!issuer_ski)
                return -EINVAL;
        aki = AUTHORITY_KEYID_new();
        if (!aki)
                return -ENOMEM;
        aki->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
        if (!aki->keyid)
                return -ENOMEM;
        return add_ext(x, NID_authority_key_identifier, aki, false);
}

static const EVP_MD *ca_signature_digest(EVP_PKEY *issuer_key) {
        return crypto_key_get_type(issuer_key) == KEY_TYPE_ECDSA_P256 ? EVP_sha256() : NULL;
}

static int ca_build_certificate(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *subject_key,
                                const X509_NAME *subject, CaProfile profile, GENERAL_NAMES *sans,
                                usec_t lifetime, usec_t now_usec, X509 **ret) {
        _cleanup_(X509_freep) X509 *x = NULL;
        uint64_t not_before, not_after;
        int r;

        assert(issuer_key);
        assert(subject_key);
        assert(subject);
        assert(sans);
        assert(ret);

        if (crypto_key_get_type(issuer_key) < 0 || crypto_key_get_type(subject_key) < 0)
                return -EOPNOTSUPP;

        r = ca_validity(issuer, lifetime, now_usec, &not_before, &not_after);
        if (r < 0)
                return r;

        x = X509_new();
        if (!x)
                return -ENOMEM;
        if (X509_set_version(x, X509_VERSION_3) != 1)
                return crypto_error(EIO, "Failed to set certificate version");

        r = ca_set_random_serial(x);
        if (r < 0)
                return r;
        r = ca_set_time(X509_set1_notBefore, x, not_before);
        if (r < 0)
                return r;
        r = ca_set_time(X509_set1_notAfter, x, not_after);
        if (r < 0)
                return r;

        if (X509_set_subject_name(x, subject) != 1 ||
            X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : subject) != 1)
                return crypto_error(ENOMEM, "Failed to set certificate names");

        if (X509_set_pubkey(x, subject_key) != 1)
                return crypto_error(EINVAL, "Failed to set certificate public key");

        r = ca_add_extensions(x, issuer, profile, sans);
        if (r < 0)
                return r;

        if (X509_sign(x, issuer_key, ca_signature_digest(issuer_key)) <= 0)
                return crypto_error(EIO, "Failed to sign certificate");

        *ret = TAKE_PTR(x);
        return 0;
}

static int ca_new_with(X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain, const char *trust_domain,
                       CertificateAuthority **ret) {
        _cleanup_(ca_freep) CertificateAuthority *ca = NULL;

        ca = calloc(1, sizeof(*ca));
        if (!ca)
                return -ENOMEM;

        ca->trust_domain = strdup(trust_domain);
        if (!ca->trust_domain)
                return -ENOMEM;

        ca->chain = chain ? X509_chain_up_ref(chain) : sk_X509_new_null();
        if (!ca->chain)
                return -ENOMEM;

        if (X509_up_ref(cert) != 1)
                return -EIO;
        ca->certificate = cert;
        if (EVP_PKEY_up_ref(key) != 1)
                return -EIO;
        ca->key = key;

        *ret = TAKE_PTR(ca);
        return 0;
}

/* A new CA with a fresh key for trust_domain: self-signed when issuer is NULL, else certified by it. */
static int ca_new_generated(const CertificateAuthority *issuer, const char *trust_domain, KeyType type,
                            const char *common_name, CaProfile profile, usec_t lifetime, usec_t now_usec,
                            CertificateAuthority **ret) {
        _cleanup_(spiffe_id_freep) SpiffeId *td = NULL;
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *sans = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *cert = NULL;
        int r;

        if (lifetime < USEC_PER_SEC)
                return -EINVAL;

        r = spiffe_id_new_trust_domain(trust_domain, &td);
        if (r < 0)
                return r;

        r = crypto_key_generate(type, &key);
        if (r < 0)
                return r;

        r = ca_make_name(common_name, td->trust_domain, &name);
        if (r < 0)
                return r;
        r = ca_trust_domain_sans(td->uri, &sans);
        if (r < 0)
                return r;

        r = ca_build_certificate(issuer ? issuer->certificate : NULL, issuer ? issuer->key : key, key, name,
                                 profile, sans, lifetime, now_usec, &cert);
        if (r < 0)
                return r;

        return ca_new_with(cert, key, NULL, td->trust_domain, ret);
}

int ca_new_root(const char *trust_domain, KeyType type, usec_t lifetime, usec_t now_usec,
                CertificateAuthority **ret) {
        assert(trust_domain);
        assert(ret);

        return ca_new_generated(NULL, trust_domain, type, "ztna root CA", CA_PROFILE_ROOT, lifetime,
                                now_usec, ret);
}

static bool ca_is_root(const CertificateAuthority *ca) {
        return sk_X509_num(ca->chain) == 0 && (X509_get_extension_flags(ca->certificate) & EXFLAG_SS);
}

int ca_new_issuing(const CertificateAuthority *root, KeyType type, usec_t lifetime, usec_t now_usec,
                   CertificateAuthority **ret) {
        assert(root);
        assert(ret);

        /* A root with pathlen:0 may not certify another CA. */
        if (!ca_is_root(root) || X509_get_pathlen(root->certificate) == 0)
                return -EINVAL;

        return ca_new_generated(root, root->trust_domain, type, "ztna issuing CA", CA_PROFILE_ISSUING,
                                lifetime, now_usec, ret);
}

/* The trust domain named by the certificate's only URI SAN, which must be a trust-domain ID. */
static int ca_certificate_trust_domain(X509 *cert, char **ret) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_free_ char *uri = NULL;
        char *td;
        int r;

        names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        if (!names) {
                ERR_clear_error(); /* a missing or malformed SAN leaves errors queued */
                return -EINVAL;
        }

        for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
                const GENERAL_NAME *gen = sk_GENERAL_NAME_value(names, i);
                const ASN1_IA5STRING *s;

                if (gen->type != GEN_URI)
                        continue;
                if (uri)
                        return -EINVAL; /* more than one URI SAN */

                s = gen->d.uniformResourceIdentifier;
                /* An embedded NUL would make the string mean something else than the certificate. */
                if (memchr(ASN1_STRING_get0_data(s), 0, ASN1_STRING_length(s)))
                        return -EINVAL;
                uri = strndup((const char *) ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
                if (!uri)
                        return -ENOMEM;
        }
        if (!uri)
                return -EINVAL;

        r = spiffe_id_from_string(uri, &id, NULL);
        if (r < 0)
                return r;
        if (!isempty(id->path))
                return -EINVAL;

        td = strdup(id->trust_domain);
        if (!td)
                return -ENOMEM;
        *ret = td;
        return 0;
}

int ca_load(X509 *cert, EVP_PKEY *key, STACK_OF(X509) *chain, CertificateAuthority **ret) {
        _cleanup_free_ char *trust_domain = NULL;
        uint32_t flags;
        X509 *prev;
        int r;

        assert(cert);
        assert(key);
        assert(ret);

        flags = X509_get_extension_flags(cert);
        if ((flags & EXFLAG_INVALID) || !(flags & EXFLAG_CA) || !(flags & EXFLAG_KUSAGE) ||
            !(X509_get_key_usage(cert) & KU_KEY_CERT_SIGN))
                return -EINVAL;
        /* Leaves we issue carry an AKI made from this; a CA without one cannot be chained strictly. */
        if (!X509_get0_subject_key_id(cert))
                return -EINVAL;

        r = ca_certificate_trust_domain(cert, &trust_domain);
        if (r < 0)
                return r;

        if (crypto_key_get_type(key) < 0)
                return -EOPNOTSUPP;
        /* X509_check_private_key() only compares public halves: a public key alone would pass it. */
        if (!crypto_key_has_private(key) || X509_check_private_key(cert, key) != 1) {
                ERR_clear_error();
                return -EKEYREJECTED;
        }

        if (chain) {
                if (sk_X509_num(chain) > CA_CHAIN_MAX)
                        return -EINVAL;
                prev = cert;
                for (int i = 0; i < sk_X509_num(chain); i++) {
                        X509 *issuer = sk_X509_value(chain, i);

                        /* The root is not part of the chain: peers have it in their trust bundle. Each link
                         * must really be signed by the next (X509_check_issued() compares only names and key
                         * ids), and each issuer must be a signing certificate of our trust domain. */
                        if ((X509_get_extension_flags(issuer) & EXFLAG_SS) ||
                            X509_check_issued(issuer, prev) != X509_V_OK ||
                            X509_verify(prev, X509_get0_pubkey(issuer)) != 1 ||
                            svid_check_signing_certificate(issuer, trust_domain, NULL) < 0) {
                                ERR_clear_error();
                                return -EINVAL;
                        }
                        prev = issuer;
                }
        }

        return ca_new_with(cert, key, chain, trust_domain, ret);
}

static int leaf_make_name(const SpiffeId *id, X509_NAME **ret) {
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        int r;

        name = X509_NAME_new();
        if (!name)
                return -ENOMEM;
        r = name_add(name, "O", "ztna");
        if (r < 0)
                return r;
        r = name_add(name, "OU", spiffe_role_to_string(id->role));
        if (r < 0)
                return r;
        if (strlen(id->name) <= CA_NAME_ATTRIBUTE_MAX) {
                r = name_add(name, "CN", id->name);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(name);
        return 0;
}

int ca_issue_leaf(const CertificateAuthority *ca, const LeafParams *p, X509 **ret) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *sans = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        int r;

        assert(ca);
        assert(p);
        assert(p->id);
        assert(p->id->uri);
        assert(p->public_key);
        assert(ret);

        /* Re-parse the canonical URI rather than trusting the struct's fields to agree with each other. */
        r = spiffe_id_from_string_ztna(p->id->uri, &id, NULL);
        if (r < 0)
                return -EINVAL;
        if (!streq(id->trust_domain, ca->trust_domain))
                return -EINVAL;

        if (crypto_key_get_type(p->public_key) < 0)
                return -EOPNOTSUPP;
        if (p->lifetime < USEC_PER_SEC)
                return -EINVAL;

        r = leaf_sans(id, p->dns_names, p->ip_addresses, &sans);
        if (r < 0)
                return r;
        r = leaf_make_name(id, &name);
        if (r < 0)
                return r;

        return ca_build_certificate(ca->certificate, ca->key, p->public_key, name, CA_PROFILE_LEAF, sans,
                                    p->lifetime, p->now, ret);
}
