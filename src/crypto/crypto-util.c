/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "crypto-util.h"
#include "log.h"

int crypto_error(int error, const char *what) {
        unsigned long e, last = 0;
        char buf[256];

        error = ERRNO_VALUE(error) ?: EIO;

        while ((e = ERR_get_error()) != 0) {
                ERR_error_string_n(e, buf, sizeof(buf));
                log_debug("%s: OpenSSL: %s", strna(what), buf);
                last = e;
        }
        if (last != 0 && ERR_GET_REASON(last) == ERR_R_MALLOC_FAILURE)
                return -ENOMEM;
        return -error;
}

const char *crypto_error_reason(void) {
        unsigned long e = ERR_peek_error();
        const char *r;

        if (e == 0)
                return "unknown error";
        r = ERR_reason_error_string(e);
        return r ?: "unknown error";
}

int crypto_bio_to_string(BIO *bio, bool allow_empty, const char *what, char **ret, size_t *ret_size) {
        char *data = NULL, *s;
        long n;

        assert(bio);
        assert(ret);

        n = BIO_get_mem_data(bio, &data);
        if (n < 0 || (n == 0 && !allow_empty))
                return crypto_error(EIO, what);
        /* Not strndup(): the BIO's buffer is not NUL-terminated and may hold NUL bytes. */
        s = malloc((size_t) n + 1);
        if (!s)
                return -ENOMEM;
        if (n > 0)
                memcpy(s, data, (size_t) n);
        s[n] = '\0';
        *ret = s;
        if (ret_size)
                *ret_size = (size_t) n;
        return 0;
}

int crypto_random_bytes(void *p, size_t n) {
        if (n == 0)
                return 0;
        if (n > INT_MAX)
                return -EINVAL;
        if (RAND_bytes(p, (int) n) != 1)
                return crypto_error(EIO, "RAND_bytes");
        return 0;
}

bool crypto_memeq(const void *a, const void *b, size_t n) {
        return CRYPTO_memcmp(a, b, n) == 0;
}

int crypto_sha256(const void *p, size_t n, uint8_t ret[static 32]) {
        if (!EVP_Digest(p, n, ret, NULL, EVP_sha256(), NULL))
                return crypto_error(EIO, "SHA-256");
        return 0;
}

void *crypto_erase_and_free(void *p, size_t n) {
        if (p)
                OPENSSL_cleanse(p, n);
        free(p);
        return NULL;
}

int crypto_i2d_to_buffer(CryptoI2dFunc i2d, const void *obj, bool secret, const char *what, uint8_t **ret,
                         size_t *ret_size) {
        uint8_t *buf, *p;
        int len;

        assert(i2d);
        assert(obj);
        assert(ret);
        assert(ret_size);

        len = i2d(obj, NULL);
        if (len <= 0)
                return crypto_error(EIO, what);
        buf = malloc(len);
        if (!buf)
                return -ENOMEM;
        p = buf;
        if (i2d(obj, &p) != len) {
                if (secret)
                        crypto_erase_and_free(buf, len);
                else
                        free(buf);
                return crypto_error(EIO, what);
        }

        *ret = buf;
        *ret_size = len;
        return 0;
}
