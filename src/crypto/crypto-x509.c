/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <ctype.h>
#include <string.h>
#include <time.h>

#include "crypto-util.h"
#include "crypto-x509.h"
#include "log.h"

DEFINE_CRYPTO_I2D_FUNC(X509, i2d_X509);
DEFINE_CRYPTO_I2D_FUNC(X509_PUBKEY, i2d_X509_PUBKEY);

int crypto_x509_to_der(X509 *cert, uint8_t **ret, size_t *ret_size) {
        assert(cert);
        assert(ret);
        assert(ret_size);

        return crypto_i2d_to_buffer(i2d_X509_any, cert, false, "Failed to encode certificate", ret,
                                    ret_size);
}

int crypto_x509_from_der(const void *der, size_t size, X509 **ret) {
        _cleanup_(X509_freep) X509 *x = NULL;
        const unsigned char *p = der;

        assert(der || size == 0);
        assert(ret);

        if (size == 0)
                return log_debug_errno(EBADMSG, "Empty certificate DER.");
        if (size > X509_DER_MAX)
                return log_debug_errno(EFBIG, "Certificate DER of %zu bytes is larger than %u.", size,
                                       X509_DER_MAX);

        ERR_clear_error();
        x = d2i_X509(NULL, &p, (long) size);
        if (!x)
                return crypto_error(EBADMSG, "Failed to decode certificate");
        /* One input, one meaning: bytes after the certificate are refused, not ignored. */
        if (p != (const unsigned char *) der + size)
                return log_debug_errno(EBADMSG, "Trailing data after certificate DER.");

        *ret = TAKE_PTR(x);
        return 0;
}

static int asn1_time_to_usec(const ASN1_TIME *t, usec_t *ret) {
        struct tm tm = {};
        time_t s;

        if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
                return crypto_error(EBADMSG, "Malformed certificate time");

        /* timegm() returns -1 both for errors and for 1969-12-31T23:59:59Z; either is before the epoch,
         * which a usec_t cannot hold. */
        s = timegm(&tm);
        if (s < 0)
                return log_debug_errno(ERANGE, "Certificate time before 1970 cannot be represented.");
        if ((uint64_t) s > (UINT64_MAX - 1) / USEC_PER_SEC)
                return log_debug_errno(ERANGE, "Certificate time out of range.");

        *ret = (usec_t) s * USEC_PER_SEC;
        return 0;
}

int crypto_x509_get_validity(X509 *cert, usec_t *ret_not_before, usec_t *ret_not_after) {
        usec_t not_before, not_after;
        int r;

        assert(cert);

        r = asn1_time_to_usec(X509_get0_notBefore(cert), &not_before);
        if (r < 0)
                return r;
        r = asn1_time_to_usec(X509_get0_notAfter(cert), &not_after);
        if (r < 0)
                return r;

        if (ret_not_before)
                *ret_not_before = not_before;
        if (ret_not_after)
                *ret_not_after = not_after;
        return 0;
}

int crypto_x509_get_serial_hex(X509 *cert, char **ret) {
        _cleanup_(BN_freep) BIGNUM *bn = NULL;
        _cleanup_(openssl_freep) char *hex = NULL;
        const char *digits;
        char *s, *p;
        bool negative;

        assert(cert);
        assert(ret);

        bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        if (!bn)
                return crypto_error(EBADMSG, "Failed to read serial number");
        hex = BN_bn2hex(bn);
        if (!hex)
                return crypto_error(ENOMEM, "Failed to format serial number");

        /* BN_bn2hex() writes whole bytes in upper case: "0A1B", "-0A", "0". */
        negative = hex[0] == '-';
        digits = hex + negative;
        while (digits[0] == '0' && digits[1] != '\0')
                digits++;
        if (streq(digits, "0"))
                negative = false;

        s = malloc(negative + strlen(digits) + 1);
        if (!s)
                return -ENOMEM;
        p = s;
        if (negative)
                *p++ = '-';
        for (const char *d = digits; *d; d++)
                *p++ = (char) tolower((unsigned char) *d);
        *p = '\0';

        *ret = s;
        return 0;
}

int crypto_x509_get_public_key_der(X509 *cert, uint8_t **ret, size_t *ret_size) {
        X509_PUBKEY *spki;

        assert(cert);
        assert(ret);
        assert(ret_size);

        spki = X509_get_X509_PUBKEY(cert);
        if (!spki)
                return log_debug_errno(EBADMSG, "Certificate has no public key.");
        return crypto_i2d_to_buffer(i2d_X509_PUBKEY_any, spki, false, "Failed to encode public key", ret,
                                    ret_size);
}

int crypto_x509_check_issued(X509 *issuer, X509 *cert) {
        EVP_PKEY *key;

        assert(issuer);
        assert(cert);

        ERR_clear_error();
        if (X509_check_issued(issuer, cert) != X509_V_OK)
                return log_debug_errno(EKEYREJECTED, "Certificate names another issuer.");
        key = X509_get0_pubkey(issuer);
        if (!key)
                return crypto_error(EKEYREJECTED, "Issuer has no usable public key");
        /* X509_verify(): 1 verifies, 0 does not, -1 malformed: only 1 is a yes. */
        if (X509_verify(cert, key) != 1)
                return crypto_error(EKEYREJECTED, "Certificate signature does not verify");
        return 0;
}

void crypto_x509_unref(X509 *cert) {
        X509_free(cert);
}

X509 *crypto_x509_ref(X509 *cert) {
        if (cert && X509_up_ref(cert) != 1)
                return NULL;
        return cert;
}

int crypto_x509_stack_new(X509 *const *certs, size_t n, STACK_OF(X509) **ret) {
        _cleanup_x509_stack_ STACK_OF(X509) *stack = NULL;

        assert(certs || n == 0);
        assert(ret);

        if (n > CRYPTO_X509_STACK_MAX)
                return log_debug_errno(E2BIG, "%zu certificates are more than a stack may hold (%u).", n,
                                       CRYPTO_X509_STACK_MAX);

        stack = sk_X509_new_null();
        if (!stack)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                assert(certs[i]);

                if (!crypto_x509_ref(certs[i]))
                        return -ENOMEM;
                if (sk_X509_push(stack, certs[i]) <= 0) {
                        X509_free(certs[i]);
                        return -ENOMEM;
                }
        }

        *ret = TAKE_PTR(stack);
        return 0;
}

void crypto_x509_array_unref(X509 **certs, size_t n) {
        for (size_t k = 0; k < n; k++)
                crypto_x509_unref(certs[k]);
}
