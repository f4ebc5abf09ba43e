/* SPDX-License-Identifier: Apache-2.0 */

#include "macro.h"
#include "random-util.h"
#include "tests.h"

TEST(bytes_fill_and_differ) {
        uint8_t a[64], b[64], zero[64] = {};

        memset(a, 0, sizeof(a));
        memset(b, 0, sizeof(b));
        ASSERT_OK(random_bytes(a, sizeof(a)));
        ASSERT_OK(random_bytes(b, sizeof(b)));
        /* 2^-512 chance of a false failure. */
        ASSERT_TRUE(memcmp(a, zero, sizeof(a)) != 0);
        ASSERT_TRUE(memcmp(a, b, sizeof(a)) != 0);
        ASSERT_OK(random_bytes(NULL, 0));
}

TEST(bytes_large_request_is_filled_completely) {
        /* getrandom() returns at most 32 MiB - 1 per call: this needs the short-read loop. */
        const size_t n = 33U * 1024U * 1024U;
        _cleanup_free_ uint8_t *p = NULL;
        size_t zero_run = 0, longest = 0;

        p = ASSERT_NOT_NULL(calloc(1, n));
        ASSERT_OK(random_bytes(p, n));
        /* An unfilled tail would be a long run of zeros; random data has runs of a few bytes at most. */
        for (size_t i = 0; i < n; i++) {
                zero_run = p[i] == 0 ? zero_run + 1 : 0;
                longest = MAX(longest, zero_run);
        }
        ASSERT_LT(longest, 16);
        ASSERT_TRUE(p[n - 1] != 0 || p[n - 2] != 0 || p[n - 3] != 0 || p[n - 4] != 0);
}

TEST(u64_varies) {
        uint64_t a = random_u64(), b = random_u64(), c = random_u64();

        ASSERT_FALSE(a == b && b == c);
}

TEST(range_bounds) {
        ASSERT_UEQ(random_u64_range(0), 0);
        for (unsigned i = 0; i < 1000; i++) {
                ASSERT_UEQ(random_u64_range(1), 0);
                ASSERT_UCMP(random_u64_range(2), <, 2);
                ASSERT_UCMP(random_u64_range(7), <, 7);
                ASSERT_UCMP(random_u64_range(UINT64_MAX), <, UINT64_MAX);
        }
}

TEST(range_is_uniform) {
        /* n = 3 does not divide 2^64: plain modulo would favour 0 (by a negligible 2^-63 here, so
         * this checks uniformity in general and that every value occurs). χ² with 2 degrees of
         * freedom: 20 is far beyond the 99.99 % quantile (18.4). */
        const unsigned n = 30000;
        unsigned counts[3] = {};
        double chi2 = 0;

        for (unsigned i = 0; i < n; i++)
                counts[random_u64_range(3)]++;
        for (unsigned k = 0; k < 3; k++) {
                double d = (double) counts[k] - n / 3.0;

                chi2 += d * d / (n / 3.0);
        }
        ASSERT_TRUE(chi2 < 20.0);
}

TEST(range_large_n_uses_high_values) {
        /* With n just above 2^63 half of the draws are rejected; results must still cover the range. */
        const uint64_t n = (UINT64_C(1) << 63) + 12345;
        bool high = false, low = false;

        for (unsigned i = 0; i < 200; i++) {
                uint64_t v = random_u64_range(n);

                ASSERT_UCMP(v, <, n);
                if (v >= UINT64_C(1) << 62)
                        high = true;
                else
                        low = true;
        }
        ASSERT_TRUE(high && low);
}
