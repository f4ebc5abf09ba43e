/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/pem.h>

#include "certgen.h"
#include "crypto-util.h"

CertgenParams certgen_params_leaf(const char *uri, X509 *issuer, EVP_PKEY *issuer_key) {
        return (CertgenParams) {
                .common_name = "certgen leaf",
                .uris = { uri },
                .n_uris = uri ? 1 : 0,
                .ca = 0,
                .path_len = -1,
                .key_usage = KU_DIGITAL_SIGNATURE,
                .eku_server = true,
                .eku_client = true,
                .issuer = issuer,
                .issuer_key = issuer_key,
        };
}

CertgenParams certgen_params_ca(const char *uri, X509 *issuer, EVP_PKEY *issuer_key) {
        return (CertgenParams) {
                .common_name = issuer ? "certgen intermediate CA" : "certgen root CA",
                .uris = { uri },
                .n_uris = uri ? 1 : 0,
                .ca = 1,
                .path_len = -1,
                .key_usage = KU_KEY_CERT_SIGN | KU_CRL_SIGN,
                .issuer = issuer,
                .issuer_key = issuer_key,
        };
}

static int add_conf_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
        _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *ext = NULL;

        ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
        if (!ext || !X509_add_ext(x, ext, -1))
                return crypto_error(EIO, "certgen: extension");
        return 0;
}

static int add_key_usage(X509 *x, int key_usage, bool critical) {
        /* KU_* values in the order of the KeyUsage bit string (RFC 5280 §4.2.1.3). */
        static const int bits[] = {
                KU_DIGITAL_SIGNATURE, KU_NON_REPUDIATION, KU_KEY_ENCIPHERMENT, KU_DATA_ENCIPHERMENT,
                KU_KEY_AGREEMENT,     KU_KEY_CERT_SIGN,   KU_CRL_SIGN,         KU_ENCIPHER_ONLY,
                KU_DECIPHER_ONLY,
        };
        ASN1_BIT_STRING *bs;
        int r = 0;

        bs = ASN1_BIT_STRING_new();
        if (!bs)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(bits); i++)
                if ((key_usage & bits[i]) && !ASN1_BIT_STRING_set_bit(bs, (int) i, 1))
                        r = -ENOMEM;
        if (r == 0 && X509_add1_ext_i2d(x, NID_key_usage, bs, critical ? 1 : 0, X509V3_ADD_DEFAULT) != 1)
                r = crypto_error(EIO, "certgen: keyUsage");
        ASN1_BIT_STRING_free(bs);
        return r;
}

static int push_name(GENERAL_NAMES *names, int type, const char *value) {
        _cleanup_(GENERAL_NAME_freep) GENERAL_NAME *gn = NULL;
        ASN1_IA5STRING *s;

        gn = GENERAL_NAME_new();
        s = ASN1_IA5STRING_new();
        if (!gn || !s || !ASN1_STRING_set(s, value, (int) strlen(value))) {
                ASN1_IA5STRING_free(s);
                return -ENOMEM;
        }
        GENERAL_NAME_set0_value(gn, type, s);
        if (!sk_GENERAL_NAME_push(names, gn))
                return -ENOMEM;
        TAKE_PTR(gn);
        return 0;
}

static int add_sans(X509 *x, const CertgenParams *p) {
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        int r;

        if (p->n_uris == 0 && p->n_dns == 0)
                return 0;
        names = sk_GENERAL_NAME_new_null();
        if (!names)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_uris; i++) {
                r = push_name(names, GEN_URI, p->uris[i]);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < p->n_dns; i++) {
                r = push_name(names, GEN_DNS, p->dns[i]);
                if (r < 0)
                        return r;
        }
        if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1)
                return crypto_error(EIO, "certgen: subjectAltName");
        return 0;
}

static int add_eku(X509 *x, const CertgenParams *p) {
        EXTENDED_KEY_USAGE *eku;
        int r = 0;

        if (!p->eku_server && !p->eku_client)
                return 0;
        eku = sk_ASN1_OBJECT_new_null();
        if (!eku)
                return -ENOMEM;
        if ((p->eku_server && !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth))) ||
            (p->eku_client && !sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth))))
                r = -ENOMEM;
        if (r == 0 && X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) != 1)
                r = crypto_error(EIO, "certgen: extendedKeyUsage");
        sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
        return r;
}

static int set_time(ASN1_TIME *t, usec_t u) {
        if (!ASN1_TIME_set(t, (time_t) (u / USEC_PER_SEC)))
                return crypto_error(EIO, "certgen: time");
        return 0;
}

int certgen_make(const CertgenParams *p, X509 **ret_cert, EVP_PKEY **ret_key) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
        _cleanup_(X509_freep) X509 *x = NULL;
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        const unsigned char *cn;
        uint8_t serial[16];
        X509V3_CTX ctx;
        usec_t n;
        int r;

        assert(p);
        assert(ret_cert);

        if (!p->issuer != !p->issuer_key || p->n_uris > CERTGEN_SANS_MAX || p->n_dns > CERTGEN_SANS_MAX ||
            p->ca < -1 || p->ca > 1)
                return -EINVAL;

        if (p->key) {
                if (!EVP_PKEY_up_ref(p->key))
                        return -EIO;
                key = p->key;
        } else {
                key = EVP_EC_gen("P-256");
                if (!key)
                        return crypto_error(EIO, "certgen: key");
        }

        x = X509_new();
        if (!x)
                return -ENOMEM;
        if (!X509_set_version(x, X509_VERSION_3))
                return -EIO;

        r = crypto_random_bytes(serial, sizeof(serial));
        if (r < 0)
                return r;
        serial[0] &= 0x7f; /* positive */
        serial[0] |= 0x40; /* and of full length */
        bn = BN_bin2bn(serial, sizeof(serial), NULL);
        if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
                return -ENOMEM;

        cn = (const unsigned char *) (p->common_name ?: "certgen");
        name = X509_NAME_new();
        if (!name || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, cn, -1, -1, 0))
                return -ENOMEM;
        if (!X509_set_subject_name(x, name) ||
            !X509_set_issuer_name(x, p->issuer ? X509_get_subject_name(p->issuer) : name))
                return -ENOMEM;

        n = now(CLOCK_REALTIME);
        r = set_time(X509_getm_notBefore(x), p->not_before ?: n - USEC_PER_HOUR);
        if (r < 0)
                return r;
        r = set_time(X509_getm_notAfter(x), p->not_after ?: n + USEC_PER_HOUR);
        if (r < 0)
                return r;

        if (!X509_set_pubkey(x, key))
                return crypto_error(EIO, "certgen: pubkey");

        if (p->ca >= 0) {
                char bc[64];

                if (p->path_len >= 0)
                        snprintf(bc, sizeof(bc), "critical,CA:%s,pathlen:%d", p->ca ? "TRUE" : "FALSE",
                                 p->path_len);
                else
                        snprintf(bc, sizeof(bc), "critical,CA:%s", p->ca ? "TRUE" : "FALSE");
                r = add_conf_ext(x, NULL, NID_basic_constraints, bc);
                if (r < 0)
                        return r;
        }
        if (p->key_usage >= 0) {
                r = add_key_usage(x, p->key_usage, !p->key_usage_noncritical);
                if (r < 0)
                        return r;
        }
        r = add_sans(x, p);
        if (r < 0)
                return r;
        r = add_eku(x, p);
        if (r < 0)
                return r;

        X509V3_set_ctx(&ctx, p->issuer ?: x, x, NULL, NULL, 0);
        r = add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash");
        if (r < 0)
                return r;
        r = add_conf_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
        if (r < 0)
                return r;

        if (X509_sign(x, p->issuer_key ?: key, EVP_sha256()) <= 0)
                return crypto_error(EIO, "certgen: sign");

        *ret_cert = TAKE_PTR(x);
        if (ret_key)
                *ret_key = TAKE_PTR(key);
        return 0;
}

int certgen_write_pem(const char *path, X509 *cert) {
        FILE *f;
        int r = 0;

        assert(path);
        assert(cert);

        f = fopen(path, "we");
        if (!f)
                return -errno;
        if (!PEM_write_X509(f, cert))
                r = crypto_error(EIO, "certgen: write PEM");
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        return r;
}

int certgen_chain_make(const char *trust_domain, const char *leaf_uri, CertgenChain *ret) {
        _cleanup_(certgen_chain_done) CertgenChain c = {};
        _cleanup_free_ char *td_uri = NULL, *default_leaf = NULL;
        CertgenParams p;
        int r;

        assert(trust_domain);
        assert(ret);

        if (asprintf(&td_uri, "spiffe://%s", trust_domain) < 0 ||
            asprintf(&default_leaf, "spiffe://%s/connector/test", trust_domain) < 0)
                return -ENOMEM;

        p = certgen_params_ca(td_uri, NULL, NULL);
        r = certgen_make(&p, &c.root, &c.root_key);
        if (r < 0)
                return r;
        p = certgen_params_ca(td_uri, c.root, c.root_key);
        r = certgen_make(&p, &c.intermediate, &c.intermediate_key);
        if (r < 0)
                return r;
        p = certgen_params_leaf(leaf_uri ?: default_leaf, c.intermediate, c.intermediate_key);
        r = certgen_make(&p, &c.leaf, &c.leaf_key);
        if (r < 0)
                return r;

        *ret = c;
        c = (CertgenChain) {};
        return 0;
}

void certgen_chain_done(CertgenChain *c) {
        if (!c)
                return;
        X509_free(c->root);
        X509_free(c->intermediate);
        X509_free(c->leaf);
        EVP_PKEY_free(c->root_key);
        EVP_PKEY_free(c->intermediate_key);
        EVP_PKEY_free(c->leaf_key);
        *c = (CertgenChain) {};
}

STACK_OF(X509) *certgen_stack(X509 *first, ...) {
        STACK_OF(X509) *s;
        va_list ap;

        s = sk_X509_new_null();
        if (!s)
                return NULL;
        va_start(ap, first);
        for (X509 *x = first; x; x = va_arg(ap, X509 *))
                if (!X509_add_cert(s, x, X509_ADD_FLAG_UP_REF)) {
                        sk_X509_pop_free(s, X509_free);
                        s = NULL;
                        break;
                }
        va_end(ap);
        return s;
}
