/* SPDX-License-Identifier: Apache-2.0 */

#include "hexdecoct.h"
#include "macro.h"
#include "tests.h"

TEST(hexchar_and_unhexchar) {
        for (int i = 0; i < 16; i++) {
                CASE("digit %d", i);
                ASSERT_EQ(unhexchar(hexchar(i)), i);
        }
        ASSERT_EQ(hexchar(10), 'a');
        ASSERT_EQ(unhexchar('F'), 15);
        ASSERT_EQ(unhexchar('A'), 10);

        static const char bad[] = { 'g', 'G', ' ', '\0', 'x', '/', ':', '@', '`' };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("bad %#x", (unsigned) bad[i]);
                ASSERT_ERROR(unhexchar(bad[i]), EINVAL);
        }
}

TEST(hexmem_is_lower_case) {
        static const uint8_t in[] = { 0x00, 0x01, 0xab, 0xcd, 0xef, 0xff, 0x7f, 0x80 };
        _cleanup_free_ char *s = NULL, *e = NULL;

        s = ASSERT_NOT_NULL(hexmem(in, sizeof(in)));
        ASSERT_STREQ(s, "0001abcdefff7f80");

        e = ASSERT_NOT_NULL(hexmem(NULL, 0));
        ASSERT_STREQ(e, "");
}

TEST(unhexmem_good) {
        static const struct {
                const char *in;
                const char *out;
                size_t size;
        } table[] = {
                { "",                 "",                         0 },
                { "00",               "\x00",                     1 },
                { "0001abcdefff7f80", "\x00\x01\xab\xcd\xef\xff\x7f\x80", 8 },
                { "ABCDEF",           "\xab\xcd\xef",             3 },
                { "aBcD",             "\xab\xcd",                 2 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ void *p = NULL;
                size_t n = SIZE_MAX;

                CASE("'%s'", table[i].in);
                ASSERT_OK(unhexmem(table[i].in, HEXDECOCT_STRLEN, &p, &n));
                ASSERT_UEQ(n, table[i].size);
                ASSERT_MEMEQ(p, table[i].out, n);
                /* Terminated for text callers. */
                ASSERT_EQ(((uint8_t *) p)[n], 0);
        }
}

TEST(unhexmem_bad) {
        static const char *const table[] = {
                "0",          /* odd length */
                "abc",        /* odd length */
                "0g",         /* not a hex digit */
                "zz",
                " 00",        /* no whitespace */
                "00 ",
                "00\n",
                "0x00",       /* no prefix */
                "-1",
                "00:11",      /* no separators */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                void *p = (void *) 0x1;
                size_t n = 77;

                CASE("'%s'", table[i]);
                ASSERT_ERROR(unhexmem(table[i], HEXDECOCT_STRLEN, &p, &n), EINVAL);
                /* Output parameters untouched on failure. */
                ASSERT_TRUE(p == (void *) 0x1);
                ASSERT_UEQ(n, 77);
        }
}

TEST(unhexmem_explicit_length) {
        _cleanup_free_ void *p = NULL;
        void *q = NULL;
        size_t n;

        /* Only the first l characters are read, so a hex field inside a larger buffer decodes. */
        ASSERT_OK(unhexmem("abcdXYZ", 4, &p, &n));
        ASSERT_UEQ(n, 2);
        ASSERT_MEMEQ(p, "\xab\xcd", 2);
        /* An embedded NUL within the given length is not a hex digit. */
        ASSERT_ERROR(unhexmem("ab\0d", 4, &q, &n), EINVAL);
        ASSERT_NULL(q);
}

TEST(hex_round_trip_all_bytes) {
        uint8_t in[256];
        _cleanup_free_ char *s = NULL;
        _cleanup_free_ void *p = NULL;
        size_t n;

        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t) i;
        s = ASSERT_NOT_NULL(hexmem(in, sizeof(in)));
        ASSERT_UEQ(strlen(s), 512);
        ASSERT_OK(unhexmem(s, strlen(s), &p, &n));
        ASSERT_UEQ(n, sizeof(in));
        ASSERT_MEMEQ(p, in, sizeof(in));
}

/* RFC 4648 §10 test vectors, plus bytes that exercise the two alphabet-specific characters. */
static const struct {
        const char *raw;
        size_t size;
        const char *std;
        const char *url;
} vectors[] = {
        { "",               0, "",         ""        },
        { "f",              1, "Zg==",     "Zg"      },
        { "fo",             2, "Zm8=",     "Zm8"     },
        { "foo",            3, "Zm9v",     "Zm9v"    },
        { "foob",           4, "Zm9vYg==", "Zm9vYg"  },
        { "fooba",          5, "Zm9vYmE=", "Zm9vYmE" },
        { "foobar",         6, "Zm9vYmFy", "Zm9vYmFy" },
        { "\xfb\xff",       2, "+/8=",     "-_8"     },
        { "\xfb\xef\xff",   3, "++//",     "--__"    },
        { "\x00",           1, "AA==",     "AA"      },
        { "\x00\x00\x00\x00", 4, "AAAAAA==", "AAAAAA" },
};

TEST(base64_vectors) {
        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                _cleanup_free_ char *s = NULL, *u = NULL;
                _cleanup_free_ void *p = NULL, *q = NULL;
                size_t n, m;

                CASE("'%s'", vectors[i].std);
                ASSERT_OK(base64_encode(vectors[i].raw, vectors[i].size, &s));
                ASSERT_STREQ(s, vectors[i].std);
                ASSERT_OK(base64url_encode(vectors[i].raw, vectors[i].size, &u));
                ASSERT_STREQ(u, vectors[i].url);

                ASSERT_OK(base64_decode(vectors[i].std, HEXDECOCT_STRLEN, &p, &n));
                ASSERT_UEQ(n, vectors[i].size);
                ASSERT_MEMEQ(p, vectors[i].raw, n);
                ASSERT_EQ(((uint8_t *) p)[n], 0);

                ASSERT_OK(base64url_decode(vectors[i].url, HEXDECOCT_STRLEN, &q, &m));
                ASSERT_UEQ(m, vectors[i].size);
                ASSERT_MEMEQ(q, vectors[i].raw, m);
                ASSERT_EQ(((uint8_t *) q)[m], 0);
        }
}

TEST(base64url_decode_bad) {
        static const struct {
                const char *in;
                const char *why;
        } table[] = {
                { "Zg==",      "padding" },
                { "Zm8=",      "padding" },
                { "Zg=",       "padding" },
                { "=",         "padding only" },
                { "Z",         "length % 4 == 1" },
                { "Zm9vY",     "length % 4 == 1" },
                { "Zm9v Yg",   "inner space" },
                { " Zm9v",     "leading space" },
                { "Zm9v\n",    "trailing newline" },
                { "Zm9v\t",    "tab" },
                { "+/8",       "standard alphabet '+' and '/'" },
                { "Zm9v+A",    "standard alphabet '+'" },
                { "Zm9v/w",    "standard alphabet '/'" },
                { "Zm.v",      "'.'" },
                { "Zm9v\xc3\xa9", "non-ASCII" },
                { "Zh",        "non-canonical: 'h' leaves low bits set (1 byte)" },
                { "Zv",        "non-canonical: low 4 bits set" },
                { "Zm9",       "non-canonical: low 2 bits set (2 bytes)" },
                { "Zm_",       "non-canonical: '_' leaves low bits set" },
                { "AB",        "non-canonical: 'B' = 1" },
                { "AAB",       "non-canonical: 'B' = 1, 2 bytes" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                void *p = NULL;
                size_t n = 99;

                CASE("'%s' (%s)", table[i].in, table[i].why);
                ASSERT_ERROR(base64url_decode(table[i].in, HEXDECOCT_STRLEN, &p, &n), EINVAL);
                ASSERT_NULL(p);
                ASSERT_UEQ(n, 99);
        }
}

TEST(base64_decode_bad) {
        static const struct {
                const char *in;
                const char *why;
        } table[] = {
                { "Zg",        "missing padding" },
                { "Zm8",       "missing padding" },
                { "Zg=",       "short padding" },
                { "Z===",      "three '='" },
                { "====",      "padding only" },
                { "Zg==Zg==",  "padding in the middle" },
                { "Z=g=",      "'=' inside a group" },
                { "Zm9vYg==\n", "trailing newline" },
                { "Zm9v\nYg==", "line break" },
                { " Zm9v",     "leading space (length 5)" },
                { "Zm9v Yg=",  "inner space" },
                { "-_8=",      "URL alphabet" },
                { "Zm9v_w==",  "URL alphabet '_'" },
                { "Zh==",      "non-canonical: low 4 bits set" },
                { "Zm9=",      "non-canonical: low 2 bits set" },
                { "AB==",      "non-canonical: 'B' = 1" },
                { "Zg===",     "length not a multiple of 4" },
                { "Zm9vY",     "length not a multiple of 4" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                void *p = NULL;
                size_t n = 99;

                CASE("'%s' (%s)", table[i].in, table[i].why);
                ASSERT_ERROR(base64_decode(table[i].in, HEXDECOCT_STRLEN, &p, &n), EINVAL);
                ASSERT_NULL(p);
                ASSERT_UEQ(n, 99);
        }
}

TEST(base64_explicit_length) {
        _cleanup_free_ void *p = NULL, *q = NULL;
        void *r = NULL;
        size_t n;

        /* Decoding stops at the given length; the rest of the buffer is not looked at. */
        ASSERT_OK(base64url_decode("Zm9v.garbage", 4, &p, &n));
        ASSERT_UEQ(n, 3);
        ASSERT_MEMEQ(p, "foo", 3);
        ASSERT_OK(base64_decode("Zg==!!", 4, &q, &n));
        ASSERT_UEQ(n, 1);
        ASSERT_MEMEQ(q, "f", 1);
        /* An embedded NUL inside the given length is refused, not treated as the end. */
        ASSERT_ERROR(base64url_decode("Zm\0v", 4, &r, &n), EINVAL);
        ASSERT_ERROR(base64_decode("Zm9v\0\0\0\0", 8, &r, &n), EINVAL);
        ASSERT_NULL(r);
}

TEST(base64_round_trip_all_lengths) {
        uint8_t in[300];

        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t) (i * 37 + 11);

        for (size_t l = 0; l <= sizeof(in); l++) {
                _cleanup_free_ char *s = NULL, *u = NULL;
                _cleanup_free_ void *p = NULL, *q = NULL;
                size_t n, m;

                CASE("length %zu", l);
                ASSERT_OK(base64_encode(in, l, &s));
                ASSERT_UEQ(strlen(s), (l + 2) / 3 * 4);
                ASSERT_OK(base64_decode(s, strlen(s), &p, &n));
                ASSERT_UEQ(n, l);
                ASSERT_MEMEQ(p, in, l);

                ASSERT_OK(base64url_encode(in, l, &u));
                ASSERT_UEQ(strlen(u), (l * 4 + 2) / 3);
                ASSERT_TRUE(strpbrk(u, "=+/") == NULL);
                ASSERT_OK(base64url_decode(u, strlen(u), &q, &m));
                ASSERT_UEQ(m, l);
                ASSERT_MEMEQ(q, in, l);
        }
}

/* Every 2- and 3-character base64url tail is accepted iff re-encoding gives the same text: exactly one
 * spelling per byte string. */
TEST(base64url_canonical_exhaustive) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        size_t accepted2 = 0, accepted3 = 0;

        for (size_t a = 0; a < 64; a++)
                for (size_t b = 0; b < 64; b++) {
                        char in[3] = { alphabet[a], alphabet[b], 0 };
                        _cleanup_free_ void *p = NULL;
                        _cleanup_free_ char *s = NULL;
                        size_t n;

                        CASE("'%s'", in);
                        if (base64url_decode(in, 2, &p, &n) < 0) {
                                ASSERT_TRUE((b & 15) != 0);
                                continue;
                        }
                        accepted2++;
                        ASSERT_OK(base64url_encode(p, n, &s));
                        ASSERT_STREQ(s, in);
                }
        ASSERT_UEQ(accepted2, 256);

        for (size_t a = 0; a < 64; a += 7)
                for (size_t b = 0; b < 64; b++)
                        for (size_t c = 0; c < 64; c++) {
                                char in[4] = { alphabet[a], alphabet[b], alphabet[c], 0 };
                                _cleanup_free_ void *p = NULL;
                                _cleanup_free_ char *s = NULL;
                                size_t n;

                                CASE("'%s'", in);
                                if (base64url_decode(in, 3, &p, &n) < 0) {
                                        ASSERT_TRUE((c & 3) != 0);
                                        continue;
                                }
                                accepted3++;
                                ASSERT_OK(base64url_encode(p, n, &s));
                                ASSERT_STREQ(s, in);
                        }
        ASSERT_UEQ(accepted3, 10 * 64 * 16);
}

TEST(size_limits) {
        void *p = NULL;
        char *s = NULL;
        size_t n;

        /* Only the length is checked before anything is read, so a short buffer is fine here. */
        ASSERT_ERROR(base64url_decode("", HEXDECOCT_INPUT_MAX + 1, &p, &n), EFBIG);
        ASSERT_ERROR(base64_decode("", HEXDECOCT_INPUT_MAX + 4, &p, &n), EFBIG);
        ASSERT_ERROR(unhexmem("", HEXDECOCT_INPUT_MAX + 2, &p, &n), EFBIG);
        ASSERT_ERROR(base64url_encode("", HEXDECOCT_INPUT_MAX + 1, &s), EFBIG);
        ASSERT_ERROR(base64_encode("", HEXDECOCT_INPUT_MAX + 1, &s), EFBIG);
        ASSERT_NULL(hexmem("", HEXDECOCT_INPUT_MAX + 1));
        ASSERT_NULL(p);
        ASSERT_NULL(s);
}
