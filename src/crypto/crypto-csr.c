/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>

#include <openssl/pem.h>

#include "crypto-csr.h"
#include "crypto-key.h"
#include "crypto-util.h"

static void sk_X509_EXTENSION_free_allp(STACK_OF(X509_EXTENSION) **s) {
        if (*s)
                sk_X509_EXTENSION_pop_free(*s, X509_EXTENSION_free);
}

/* The extensionRequest attribute with a single URI SAN. */
static int csr_add_uri_san(X509_REQ *req, const char *uri) {
        _cleanup_(sk_X509_EXTENSION_free_allp) STACK_OF(X509_EXTENSION) *exts = NULL;
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *names = NULL;
        _cleanup_(GENERAL_NAME_freep) GENERAL_NAME *name = NULL;
        _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *ext = NULL;
        ASN1_IA5STRING *ia5;

        ia5 = ASN1_IA5STRING_new();
        if (!ia5)
                return -ENOMEM;
        if (ASN1_STRING_set(ia5, uri, -1) != 1) {
                ASN1_IA5STRING_free(ia5);
                return crypto_error(ENOMEM, "Failed to set URI");
        }
        name = GENERAL_NAME_new();
        if (!name) {
                ASN1_IA5STRING_free(ia5);
                return -ENOMEM;
        }
        GENERAL_NAME_set0_value(name, GEN_URI, ia5);

        names = GENERAL_NAMES_new();
        if (!names || sk_GENERAL_NAME_push(names, name) <= 0)
                return -ENOMEM;
        TAKE_PTR(name);

        ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, names);
        if (!ext)
                return crypto_error(EIO, "Failed to encode subjectAltName");

        exts = sk_X509_EXTENSION_new_null();
        if (!exts || sk_X509_EXTENSION_push(exts, ext) <= 0)
                return -ENOMEM;
        TAKE_PTR(ext);

        if (X509_REQ_add_extensions(req, exts) != 1)
                return crypto_error(EIO, "Failed to add extensionRequest");
        return 0;
}

int crypto_csr_new(EVP_PKEY *key, const SpiffeId *id, X509_REQ **ret) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        KeyType type;
        int r;

        assert(key);
        assert(!id || id->uri);
        assert(ret);

        type = crypto_key_get_type(key);
        if (type < 0)
                return type;
        if (!crypto_key_has_private(key))
                return -EINVAL;

        req = X509_REQ_new();
        if (!req)
                return -ENOMEM;
        /* The subject stays empty: identities travel as SPIFFE IDs, and the CA ignores it anyway. */
        if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 || X509_REQ_set_pubkey(req, key) != 1)
                return crypto_error(EIO, "Failed to populate CSR");

        if (id) {
                r = csr_add_uri_san(req, id->uri);
                if (r < 0)
                        return r;
        }

        if (X509_REQ_sign(req, key, type == KEY_TYPE_ECDSA_P256 ? EVP_sha256() : NULL) <= 0)
                return crypto_error(EIO, "Failed to sign CSR");

        *ret = TAKE_PTR(req);
        return 0;
}

DEFINE_CRYPTO_I2D_FUNC(X509_REQ, i2d_X509_REQ);

int crypto_csr_to_der(X509_REQ *req, uint8_t **ret, size_t *ret_size) {
        assert(req);
        assert(ret);
        assert(ret_size);

        return crypto_i2d_to_buffer(i2d_X509_REQ_any, req, false, "Failed to encode CSR", ret, ret_size);
}

int crypto_csr_to_pem(X509_REQ *req, char **ret, size_t *ret_size) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;

        assert(req);
        assert(ret);

        bio = BIO_new(BIO_s_mem());
        if (!bio)
                return crypto_error(ENOMEM, "Failed to allocate BIO");
        if (PEM_write_bio_X509_REQ(bio, req) != 1)
                return crypto_error(EIO, "Failed to write CSR as PEM");
        return crypto_bio_to_string(bio, false, "Failed to write CSR as PEM", ret, ret_size);
}

int crypto_csr_from_der(const void *der, size_t size, X509_REQ **ret) {
        _cleanup_(X509_REQ_freep) X509_REQ *req = NULL;
        const unsigned char *p = der;

        assert(der || size == 0);
        assert(ret);

        if (size == 0)
                return -EBADMSG;
        if (size > CSR_DER_MAX)
                return -EFBIG;

        req = d2i_X509_REQ(NULL, &p, (long) size);
        if (!req)
                return crypto_error(EBADMSG, "Failed to decode CSR");
        if (p != (const unsigned char *) der + size)
                return -EBADMSG;

        *ret = TAKE_PTR(req);
        return 0;
}

int crypto_csr_from_pem(const char *pem, size_t size, X509_REQ **ret) {
        _cleanup_free_ uint8_t *der = NULL;
        size_t der_size = 0;
        int r;

        assert(pem || size == 0);
        assert(ret);

        if (size > CSR_PEM_MAX)
                return -EFBIG;

        r = crypto_pem_decode_one(pem, size, PEM_STRING_X509_REQ, CSR_DER_MAX, &der, &der_size);
        if (r < 0)
                return r;

        return crypto_csr_from_der(der, der_size, ret);
}

/* Whether the signature algorithm is one we accept, and for which key type. */
static KeyType csr_signature_key_type(int nid) {
        switch (nid) {
        case NID_ecdsa_with_SHA256:
        case NID_ecdsa_with_SHA384:
        case NID_ecdsa_with_SHA512:
                return KEY_TYPE_ECDSA_P256;
        case NID_ED25519:
                return KEY_TYPE_ED25519;
        default:
                return -EOPNOTSUPP;
        }
}

int crypto_csr_verify(X509_REQ *req, EVP_PKEY **ret_public_key) {
        KeyType type, sig_type;
        EVP_PKEY *key;

        assert(req);

        if (X509_REQ_get_version(req) != X509_REQ_VERSION_1)
                return -EBADMSG;

        key = X509_REQ_get0_pubkey(req);
        if (!key)
                return crypto_error(EBADMSG, "CSR has no usable public key");

        type = crypto_key_get_type(key);
        if (type < 0)
                return type;

        sig_type = csr_signature_key_type(X509_REQ_get_signature_nid(req));
        if (sig_type < 0)
                return sig_type;
        /* A signature algorithm for another key type cannot have been made by this key. */
        if (sig_type != type)
                return -EBADMSG;

        if (X509_REQ_verify(req, key) != 1)
                return crypto_error(EBADMSG, "CSR signature does not verify");

        if (ret_public_key) {
                if (EVP_PKEY_up_ref(key) != 1)
                        return crypto_error(EIO, "Failed to reference public key");
                *ret_public_key = key;
        }
        return 0;
}
