/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hexdecoct.h"
#include "macro.h"

int unhexchar(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -EINVAL;
}

char hexchar(int x) {
        static const char table[] = "0123456789abcdef";

        return table[x & 15];
}

char *hexmem(const void *p, size_t l) {
        const uint8_t *x = p;
        char *r, *z;

        assert(p || l == 0);

        if (l > HEXDECOCT_INPUT_MAX)
                return NULL;

        z = r = malloc(l * 2 + 1);
        if (!r)
                return NULL;

        for (size_t i = 0; i < l; i++) {
                *(z++) = hexchar(x[i] >> 4);
                *(z++) = hexchar(x[i] & 15);
        }
        *z = '\0';
        return r;
}

int unhexmem(const char *p, size_t l, void **ret, size_t *ret_size) {
        uint8_t *buf;
        size_t n;

        assert(p || l == 0);
        assert(ret);

        if (l == HEXDECOCT_STRLEN)
                l = strlen(p);
        if (l > HEXDECOCT_INPUT_MAX)
                return -EFBIG;
        if (l % 2 != 0)
                return -EINVAL;

        n = l / 2;
        buf = malloc(n + 1);
        if (!buf)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                int a, b;

                a = unhexchar(p[2 * i]);
                b = unhexchar(p[2 * i + 1]);
                if (a < 0 || b < 0) {
                        /* What was decoded so far may be part of a secret. */
                        erase_and_free(buf, n + 1);
                        return -EINVAL;
                }
                buf[i] = (uint8_t) ((a << 4) | b);
        }
        buf[n] = 0;

        *ret = buf;
        if (ret_size)
                *ret_size = n;
        return 0;
}

static const char *base64_alphabet(bool url) {
        return url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                   : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

static int unbase64char(char c, bool url) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == (url ? '-' : '+'))
                return 62;
        if (c == (url ? '_' : '/'))
                return 63;
        return -EINVAL;
}

static int base64_encode_full(const void *p, size_t l, bool url, char **ret) {
        const char *alphabet = base64_alphabet(url);
        const uint8_t *x = p;
        size_t rem, n;
        char *r, *z;

        assert(p || l == 0);
        assert(ret);

        if (l > HEXDECOCT_INPUT_MAX)
                return -EFBIG;

        rem = l % 3;
        if (url)
                n = l / 3 * 4 + (rem == 0 ? 0 : rem + 1);
        else
                n = (l + 2) / 3 * 4;

        z = r = malloc(n + 1);
        if (!r)
                return -ENOMEM;

        for (size_t i = 0; i + 3 <= l; i += 3) {
                *(z++) = alphabet[x[i] >> 2];
                *(z++) = alphabet[((x[i] & 3) << 4) | (x[i + 1] >> 4)];
                *(z++) = alphabet[((x[i + 1] & 15) << 2) | (x[i + 2] >> 6)];
                *(z++) = alphabet[x[i + 2] & 63];
        }

        x += l - rem;
        if (rem == 1) {
                *(z++) = alphabet[x[0] >> 2];
                *(z++) = alphabet[(x[0] & 3) << 4];
                if (!url) {
                        *(z++) = '=';
                        *(z++) = '=';
                }
        } else if (rem == 2) {
                *(z++) = alphabet[x[0] >> 2];
                *(z++) = alphabet[((x[0] & 3) << 4) | (x[1] >> 4)];
                *(z++) = alphabet[(x[1] & 15) << 2];
                if (!url)
                        *(z++) = '=';
        }
        *z = '\0';

        *ret = r;
        return 0;
}

static int base64_decode_full(const char *p, size_t l, bool url, void **ret, size_t *ret_size) {
        size_t data_len, rem, n;
        uint8_t *buf, *z;
        int v[4];

        assert(p || l == 0);
        assert(ret);

        if (l == HEXDECOCT_STRLEN)
                l = strlen(p);
        if (l > HEXDECOCT_INPUT_MAX)
                return -EFBIG;

        if (url)
                data_len = l;
        else {
                /* Padding is mandatory and only at the end: strip at most two '=', and let any other '='
                 * fail the alphabet check below. */
                if (l % 4 != 0)
                        return -EINVAL;
                data_len = l;
                if (data_len > 0 && p[data_len - 1] == '=')
                        data_len--;
                if (data_len > 0 && p[data_len - 1] == '=')
                        data_len--;
        }

        /* One leftover character carries only 6 bits, which cannot make a byte. */
        rem = data_len % 4;
        if (rem == 1)
                return -EINVAL;

        n = data_len / 4 * 3 + (rem == 0 ? 0 : rem - 1);
        z = buf = malloc(n + 1);
        if (!buf)
                return -ENOMEM;

        for (size_t i = 0; i < data_len; i += 4) {
                size_t k = MIN((size_t) 4, data_len - i);

                for (size_t j = 0; j < k; j++) {
                        v[j] = unbase64char(p[i + j], url);
                        if (v[j] < 0)
                                goto fail;
                }

                *(z++) = (uint8_t) ((v[0] << 2) | (v[1] >> 4));
                if (k == 2) {
                        /* Non-canonical: the 4 unused bits of the last character must be zero, so that
                         * every byte string has exactly one accepted encoding. */
                        if ((v[1] & 15) != 0)
                                goto fail;
                        break;
                }
                *(z++) = (uint8_t) (((v[1] & 15) << 4) | (v[2] >> 2));
                if (k == 3) {
                        if ((v[2] & 3) != 0)
                                goto fail;
                        break;
                }
                *(z++) = (uint8_t) (((v[2] & 3) << 6) | v[3]);
        }
        *z = 0;

        explicit_bzero(v, sizeof(v));
        *ret = buf;
        if (ret_size)
                *ret_size = n;
        return 0;

fail:
        explicit_bzero(v, sizeof(v));
        erase_and_free(buf, n + 1);
        return -EINVAL;
}

int base64url_encode(const void *p, size_t l, char **ret) {
        return base64_encode_full(p, l, /* url= */ true, ret);
}

int base64url_decode(const char *p, size_t l, void **ret, size_t *ret_size) {
        return base64_decode_full(p, l, /* url= */ true, ret, ret_size);
}

int base64_encode(const void *p, size_t l, char **ret) {
        return base64_encode_full(p, l, /* url= */ false, ret);
}

int base64_decode(const char *p, size_t l, void **ret, size_t *ret_size) {
        return base64_decode_full(p, l, /* url= */ false, ret, ret_size);
}
