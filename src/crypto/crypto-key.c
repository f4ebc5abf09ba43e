/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <limits.h>

#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "crypto-key.h"
#include "crypto-util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(PKCS8_PRIV_KEY_INFO *, PKCS8_PRIV_KEY_INFO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_SIG *, X509_SIG_free);

static const char *const key_type_table[_KEY_TYPE_MAX] = {
        [KEY_TYPE_ECDSA_P256] = "ecdsa-p256",
        [KEY_TYPE_ED25519] = "ed25519",
};

const char *key_type_to_string(KeyType t) {
        if (t < 0 || t >= _KEY_TYPE_MAX)
                return NULL;
        return key_type_table[t];
}

KeyType key_type_from_string(const char *s) {
        if (!s)
                return _KEY_TYPE_INVALID;
        for (KeyType t = 0; t < _KEY_TYPE_MAX; t++)
                if (streq(key_type_table[t], s))
                        return t;
        return _KEY_TYPE_INVALID;
}

int crypto_key_generate(KeyType type, EVP_PKEY **ret) {
        EVP_PKEY *key;

        assert(ret);

        switch (type) {
        case KEY_TYPE_ECDSA_P256:
                key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                break;
        case KEY_TYPE_ED25519:
                key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
                break;
        default:
                return -EINVAL;
        }
        if (!key)
                return crypto_error(EIO, "Failed to generate key");

        *ret = key;
        return 0;
}

KeyType crypto_key_get_type(const EVP_PKEY *key) {
        char buf[64];
        size_t len;

        assert(key);

        if (EVP_PKEY_is_a(key, "ED25519"))
                return KEY_TYPE_ED25519;

        if (!EVP_PKEY_is_a(key, "EC"))
                return -EOPNOTSUPP;

        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, buf, sizeof(buf), &len) != 1 ||
            !streq(buf, SN_X9_62_prime256v1)) {
                ERR_clear_error();
                return -EOPNOTSUPP;
        }

        /* Explicit curve parameters are a classic source of confusion attacks; RFC 5480 requires the
         * named-curve form. A key without the parameter reports the default, which is named_curve. */
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, buf, sizeof(buf), &len) == 1 &&
            !streq(buf, OSSL_PKEY_EC_ENCODING_GROUP)) {
                ERR_clear_error();
                return -EOPNOTSUPP;
        }
        ERR_clear_error();

        return KEY_TYPE_ECDSA_P256;
}

bool crypto_key_has_private(EVP_PKEY *key) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        bool b;

        assert(key);

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!ctx) {
                ERR_clear_error();
                return false;
        }
        /* Fails exactly when there is no private half (or it is not a valid scalar for the curve). */
        b = EVP_PKEY_private_check(ctx) == 1;
        ERR_clear_error();
        return b;
}

/* Whether the key pair is internally consistent (private matches public, point on the curve). */
static int key_check_pair(EVP_PKEY *key) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!ctx)
                return crypto_error(ENOMEM, "Failed to allocate key context");
        if (EVP_PKEY_pairwise_check(ctx) != 1)
                return crypto_error(EBADMSG, "Private key fails its consistency check");
        return 0;
}

DEFINE_CRYPTO_I2D_FUNC(PKCS8_PRIV_KEY_INFO, i2d_PKCS8_PRIV_KEY_INFO);

int crypto_key_to_pkcs8_der(EVP_PKEY *key, uint8_t **ret, size_t *ret_size) {
        _cleanup_(PKCS8_PRIV_KEY_INFO_freep) PKCS8_PRIV_KEY_INFO *p8 = NULL;

        assert(key);
        assert(ret);
        assert(ret_size);

        if (crypto_key_get_type(key) < 0)
                return -EOPNOTSUPP;
        if (!crypto_key_has_private(key))
                return -EINVAL;

        p8 = EVP_PKEY2PKCS8(key);
        if (!p8)
                return crypto_error(EIO, "Failed to convert key to PKCS#8");

        /* Encoded straight into our own buffer (wiped on failure), so that no OpenSSL-owned copy of the
         * key is left behind. */
        return crypto_i2d_to_buffer(i2d_PKCS8_PRIV_KEY_INFO_any, p8, true, "Failed to encode PKCS#8", ret,
                                    ret_size);
}

int crypto_key_to_pkcs8_pem(EVP_PKEY *key, char **ret, size_t *ret_size) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        uint8_t *der = NULL;
        size_t der_size = 0;
        int r, k;

        assert(key);
        assert(ret);

        r = crypto_key_to_pkcs8_der(key, &der, &der_size);
        if (r < 0)
                return r;

        /* A secure-heap memory BIO is wiped when freed. */
        bio = BIO_new(BIO_s_secmem());
        if (!bio) {
                crypto_erase_and_free(der, der_size);
                return crypto_error(ENOMEM, "Failed to allocate BIO");
        }
        k = PEM_write_bio(bio, PEM_STRING_PKCS8INF, "", der, (long) der_size);
        crypto_erase_and_free(der, der_size);
        if (k <= 0)
                return crypto_error(EIO, "Failed to write PEM");
        return crypto_bio_to_string(bio, false, "Failed to write PEM", ret, ret_size);
}

int crypto_key_from_pkcs8_der(const void *der, size_t size, EVP_PKEY **ret) {
        _cleanup_(PKCS8_PRIV_KEY_INFO_freep) PKCS8_PRIV_KEY_INFO *p8 = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        const unsigned char *p = der;
        int r;

        assert(der || size == 0);
        assert(ret);

        if (size == 0)
                return -EBADMSG;
        if (size > KEY_DER_MAX)
                return -EFBIG;

        p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long) size);
        if (!p8) {
                _cleanup_(X509_SIG_freep) X509_SIG *encrypted = NULL;

                /* Tell an encrypted key apart from garbage so the caller can say what is wrong. */
                ERR_clear_error();
                p = der;
                encrypted = d2i_X509_SIG(NULL, &p, (long) size);
                ERR_clear_error();
                if (encrypted && p == (const unsigned char *) der + size)
                        return -ENOKEY;
                return -EBADMSG;
        }
        if (p != (const unsigned char *) der + size)
                return -EBADMSG;

        key = EVP_PKCS82PKEY(p8);
        if (!key)
                /* An unknown algorithm OID ends up here too; either way we cannot use it. */
                return crypto_error(EBADMSG, "Failed to decode PKCS#8 private key");

        if (crypto_key_get_type(key) < 0)
                return -EOPNOTSUPP;

        r = key_check_pair(key);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(key);
        return 0;
}

/* Whether the rest of a buffer is only whitespace. */
static bool is_whitespace(const char *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!(p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
                        return false;
        return true;
}

int crypto_pem_decode_one(const char *pem, size_t size, const char *type, size_t max_der, uint8_t **ret,
                          size_t *ret_size) {
        _cleanup_(BIO_free_allp) BIO *bio = NULL;
        char *name = NULL, *header = NULL, *rest;
        unsigned char *data = NULL;
        long len = 0, n_rest;
        uint8_t *buf;
        int r;

        assert(pem || size == 0);
        assert(type);
        assert(ret);
        assert(ret_size);

        if (size == 0)
                return -EBADMSG;
        /* Base64 needs 4/3 of the bytes plus line breaks and armour: twice the DER is generous. */
        if (size > max_der * 2 + 1024 || size > INT_MAX)
                return -EFBIG;

        bio = BIO_new_mem_buf(pem, (int) size);
        if (!bio)
                return crypto_error(ENOMEM, "Failed to allocate BIO");

        if (PEM_read_bio_ex(bio, &name, &header, &data, &len, PEM_FLAG_SECURE | PEM_FLAG_ONLY_B64) != 1) {
                ERR_clear_error();
                return -EBADMSG;
        }

        if (!streq(name, type))
                r = streq(type, PEM_STRING_PKCS8INF) && streq(name, PEM_STRING_PKCS8) ? -ENOKEY : -EBADMSG;
        else if (!isempty(header))
                r = -EBADMSG;
        else if (len <= 0)
                r = -EBADMSG;
        else if ((size_t) len > max_der)
                r = -EFBIG;
        else {
                n_rest = BIO_get_mem_data(bio, &rest);
                r = n_rest > 0 && !is_whitespace(rest, n_rest) ? -EBADMSG : 0;
        }
        if (r < 0)
                goto finish;

        buf = malloc(len);
        if (!buf) {
                r = -ENOMEM;
                goto finish;
        }
        memcpy(buf, data, len);

        *ret = buf;
        *ret_size = len;
        r = 0;

finish:
        OPENSSL_secure_free(name);
        OPENSSL_secure_free(header);
        OPENSSL_secure_clear_free(data, len > 0 ? (size_t) len : 0);
        return r;
}

int crypto_key_from_pkcs8_pem(const char *pem, size_t size, EVP_PKEY **ret) {
        uint8_t *der = NULL;
        size_t der_size = 0;
        int r;

        assert(pem || size == 0);
        assert(ret);

        if (size > KEY_PEM_MAX)
                return -EFBIG;

        r = crypto_pem_decode_one(pem, size, PEM_STRING_PKCS8INF, KEY_DER_MAX, &der, &der_size);
        if (r < 0)
                return r;

        r = crypto_key_from_pkcs8_der(der, der_size, ret);
        crypto_erase_and_free(der, der_size);
        return r;
}

DEFINE_CRYPTO_I2D_FUNC(EVP_PKEY, i2d_PUBKEY);

int crypto_key_public_to_der(EVP_PKEY *key, uint8_t **ret, size_t *ret_size) {
        assert(key);
        assert(ret);
        assert(ret_size);

        return crypto_i2d_to_buffer(i2d_PUBKEY_any, key, false, "Failed to encode public key", ret,
                                    ret_size);
}

int crypto_key_public_from_der(const void *der, size_t size, EVP_PKEY **ret) {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        const unsigned char *p = der;

        assert(der || size == 0);
        assert(ret);

        if (size == 0)
                return -EBADMSG;
        if (size > KEY_PUBLIC_DER_MAX)
                return -EFBIG;

        key = d2i_PUBKEY(NULL, &p, (long) size);
        if (!key)
                return crypto_error(EBADMSG, "Failed to decode public key");
        if (p != (const unsigned char *) der + size)
                return -EBADMSG;

        if (crypto_key_get_type(key) < 0)
                return -EOPNOTSUPP;

        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
        if (!ctx)
                return crypto_error(ENOMEM, "Failed to allocate key context");
        if (EVP_PKEY_public_check(ctx) != 1)
                return crypto_error(EBADMSG, "Public key fails its consistency check");

        *ret = TAKE_PTR(key);
        return 0;
}

bool crypto_key_public_equal(const EVP_PKEY *a, const EVP_PKEY *b) {
        bool eq;

        assert(a);
        assert(b);

        eq = EVP_PKEY_eq(a, b) == 1;
        ERR_clear_error();
        return eq;
}

static const EVP_MD *key_digest(KeyType type) {
        /* Ed25519 is "pure": it hashes internally and must be given no digest. */
        return type == KEY_TYPE_ECDSA_P256 ? EVP_sha256() : NULL;
}

int crypto_key_sign(EVP_PKEY *key, const void *data, size_t size, uint8_t **ret_sig, size_t *ret_sig_size) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *sig = NULL;
        size_t sig_size;
        KeyType type;
        int max;

        assert(key);
        assert(data || size == 0);
        assert(ret_sig);
        assert(ret_sig_size);

        if (size > KEY_SIGN_DATA_MAX)
                return -EINVAL;

        type = crypto_key_get_type(key);
        if (type < 0)
                return type;

        max = EVP_PKEY_get_size(key);
        if (max <= 0)
                return crypto_error(EIO, "Failed to determine signature size");

        sig = malloc(max);
        if (!sig)
                return -ENOMEM;

        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestSignInit(ctx, NULL, key_digest(type), NULL, key) != 1)
                return crypto_error(EINVAL, "Failed to initialise signing");

        sig_size = max;
        if (EVP_DigestSign(ctx, sig, &sig_size, data ?: (const void *) "", size) != 1)
                return crypto_error(EIO, "Failed to sign");

        *ret_sig = TAKE_PTR(sig);
        *ret_sig_size = sig_size;
        return 0;
}

int crypto_key_verify(EVP_PKEY *public_key, const void *data, size_t size, const void *sig,
                      size_t sig_size) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        KeyType type;

        assert(public_key);
        assert(data || size == 0);
        assert(sig || sig_size == 0);

        if (size > KEY_SIGN_DATA_MAX)
                return -EINVAL;

        type = crypto_key_get_type(public_key);
        if (type < 0)
                return type;

        if (sig_size == 0 || sig_size > KEY_SIGNATURE_MAX)
                return -EBADMSG;

        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestVerifyInit(ctx, NULL, key_digest(type), NULL, public_key) != 1)
                return crypto_error(EINVAL, "Failed to initialise verification");

        /* 0 is "does not verify", < 0 a malformed signature: both mean the signature is bad. */
        if (EVP_DigestVerify(ctx, sig, sig_size, data ?: (const void *) "", size) != 1)
                return crypto_error(EBADMSG, "Signature does not verify");

        return 0;
}
