/* SPDX-License-Identifier: Apache-2.0 */

#include <limits.h>

#include "backoff.h"
#include "macro.h"
#include "tests.h"

/* Deterministic sources: each records the n it was asked for. */
typedef struct Recorder {
        uint64_t last_n;
        unsigned calls;
        enum { PICK_MAX, PICK_ZERO, PICK_HALF, PICK_OUT_OF_RANGE } pick;
} Recorder;

static uint64_t recorder_random(uint64_t n, void *userdata) {
        Recorder *rec = userdata;

        rec->last_n = n;
        rec->calls++;
        switch (rec->pick) {
        case PICK_MAX:
                return n - 1;
        case PICK_ZERO:
                return 0;
        case PICK_HALF:
                return n / 2;
        case PICK_OUT_OF_RANGE:
                return UINT64_MAX;
        }
        abort();
}

static void backoff_init_recorded(Backoff *b, Recorder *rec, usec_t base, usec_t cap, usec_t healthy) {
        backoff_init(b, base, cap, healthy);
        b->random = recorder_random;
        b->userdata = rec;
}

TEST(init) {
        Backoff b;

        memset(&b, 0x55, sizeof(b));
        backoff_init(&b, USEC_PER_SEC, USEC_PER_MINUTE, 30 * USEC_PER_SEC);
        ASSERT_UEQ(b.base, USEC_PER_SEC);
        ASSERT_UEQ(b.cap, USEC_PER_MINUTE);
        ASSERT_UEQ(b.healthy_after, 30 * USEC_PER_SEC);
        ASSERT_EQ(b.attempt, 0);
        ASSERT_UEQ(b.connected_at, USEC_INFINITY);
        ASSERT_NOT_NULL(b.random);
        ASSERT_NULL(b.userdata);
}

TEST(ceiling_doubles_then_caps) {
        static const usec_t expected[] = { 1, 2, 4, 8, 16, 32, 60, 60, 60 };
        Recorder rec = { .pick = PICK_MAX };
        Backoff b;

        backoff_init_recorded(&b, &rec, USEC_PER_SEC, 60 * USEC_PER_SEC, USEC_PER_MINUTE);
        for (size_t i = 0; i < ELEMENTSOF(expected); i++) {
                CASE("attempt %zu", i);
                ASSERT_EQ(b.attempt, i);
                ASSERT_UEQ(backoff_ceiling(&b), expected[i] * USEC_PER_SEC);
                /* The largest value the source can return is the ceiling itself: [0, ceiling]. */
                ASSERT_UEQ(backoff_next(&b), expected[i] * USEC_PER_SEC);
                ASSERT_UEQ(rec.last_n, expected[i] * USEC_PER_SEC + 1);
        }
        ASSERT_EQ(rec.calls, ELEMENTSOF(expected));
}

TEST(full_jitter_lower_end_and_middle) {
        Recorder zero = { .pick = PICK_ZERO }, half = { .pick = PICK_HALF };
        Backoff b;

        backoff_init_recorded(&b, &zero, 100, 1000, 0);
        ASSERT_UEQ(backoff_next(&b), 0);
        ASSERT_UEQ(backoff_next(&b), 0);
        ASSERT_EQ(b.attempt, 2);

        /* n = ceiling + 1, so "half" is (ceiling + 1) / 2. */
        backoff_init_recorded(&b, &half, 100, 1000, 0);
        ASSERT_UEQ(backoff_next(&b), 50);  /* ceiling 100 */
        ASSERT_UEQ(backoff_next(&b), 100); /* ceiling 200 */
        ASSERT_UEQ(backoff_next(&b), 200); /* ceiling 400 */
        ASSERT_UEQ(backoff_next(&b), 400); /* ceiling 800 */
        ASSERT_UEQ(backoff_next(&b), 500); /* ceiling 1000 (cap) */
}

TEST(ceiling_never_overflows) {
        static const struct {
                usec_t base, cap;
                unsigned attempt;
                usec_t ceiling;
        } table[] = {
                { 1, USEC_INFINITY, 63, UINT64_C(1) << 63 },
                { 1, USEC_INFINITY, 64, USEC_INFINITY },
                { 1, USEC_INFINITY, 1000, USEC_INFINITY },
                { 3, USEC_INFINITY, 62, UINT64_C(3) << 62 },
                { 3, USEC_INFINITY, 63, USEC_INFINITY }, /* 3 * 2^63 does not fit */
                { USEC_PER_SEC, USEC_PER_HOUR, UINT_MAX, USEC_PER_HOUR },
                { USEC_PER_SEC, USEC_PER_HOUR, 11, 2048 * USEC_PER_SEC },
                { USEC_PER_SEC, USEC_PER_HOUR, 12, USEC_PER_HOUR },
                { USEC_PER_MINUTE, USEC_PER_SEC, 0, USEC_PER_SEC }, /* cap below base: cap wins */
                { 0, USEC_PER_SEC, 5, 0 },
                { 5, 5, 0, 5 },
                { 5, 5, 1, 5 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                Backoff b;

                CASE("base %ju cap %ju attempt %u", (uintmax_t) table[i].base, (uintmax_t) table[i].cap,
                     table[i].attempt);
                backoff_init(&b, table[i].base, table[i].cap, 0);
                b.attempt = table[i].attempt;
                ASSERT_UEQ(backoff_ceiling(&b), table[i].ceiling);
        }
}

TEST(infinite_ceiling_and_saturated_attempt) {
        Recorder rec = { .pick = PICK_MAX };
        Backoff b;

        backoff_init_recorded(&b, &rec, 1, USEC_INFINITY, 0);
        b.attempt = UINT_MAX;
        /* n cannot be ceiling + 1 here; the draw is from [0, UINT64_MAX). */
        ASSERT_UEQ(backoff_next(&b), UINT64_MAX - 1);
        ASSERT_UEQ(rec.last_n, UINT64_MAX);
        ASSERT_EQ(b.attempt, UINT_MAX);
}

TEST(zero_ceiling) {
        Recorder rec = { .pick = PICK_MAX };
        Backoff b;

        backoff_init_recorded(&b, &rec, 0, USEC_PER_SEC, 0);
        ASSERT_UEQ(backoff_next(&b), 0);
        ASSERT_UEQ(rec.last_n, 1);
}

TEST(broken_source_is_clamped) {
        Recorder rec = { .pick = PICK_OUT_OF_RANGE };
        Backoff b;

        backoff_init_recorded(&b, &rec, USEC_PER_SEC, USEC_PER_MINUTE, 0);
        ASSERT_UEQ(backoff_next(&b), USEC_PER_SEC);
}

TEST(reset_only_after_healthy_period) {
        Recorder rec = { .pick = PICK_MAX };
        const usec_t t0 = 100000 * USEC_PER_SEC;
        Backoff b;

        backoff_init_recorded(&b, &rec, USEC_PER_SEC, USEC_PER_MINUTE, 30 * USEC_PER_SEC);
        for (unsigned i = 0; i < 4; i++)
                (void) backoff_next(&b);
        ASSERT_EQ(b.attempt, 4);

        /* Accepted and dropped after 29 s: not healthy, keep backing off. */
        backoff_connected(&b, t0);
        ASSERT_UEQ(b.connected_at, t0);
        backoff_disconnected(&b, t0 + 29 * USEC_PER_SEC);
        ASSERT_EQ(b.attempt, 4);
        ASSERT_UEQ(b.connected_at, USEC_INFINITY);
        ASSERT_UEQ(backoff_next(&b), 16 * USEC_PER_SEC);

        /* Exactly the healthy period: reset. */
        backoff_connected(&b, t0);
        backoff_disconnected(&b, t0 + 30 * USEC_PER_SEC);
        ASSERT_EQ(b.attempt, 0);
        ASSERT_UEQ(backoff_next(&b), USEC_PER_SEC);

        /* A disconnect without a connect (the attempt failed) changes nothing. */
        b.attempt = 3;
        backoff_disconnected(&b, t0 + USEC_PER_HOUR);
        ASSERT_EQ(b.attempt, 3);

        /* A clock that went backwards is not a healthy period. */
        backoff_connected(&b, t0);
        backoff_disconnected(&b, t0 - USEC_PER_HOUR);
        ASSERT_EQ(b.attempt, 3);

        backoff_connected(&b, t0);
        backoff_reset(&b);
        ASSERT_EQ(b.attempt, 0);
        ASSERT_UEQ(b.connected_at, USEC_INFINITY);
}

TEST(healthy_after_zero_resets_on_any_disconnect) {
        Backoff b;

        backoff_init(&b, USEC_PER_SEC, USEC_PER_MINUTE, 0);
        b.attempt = 5;
        backoff_connected(&b, 42);
        backoff_disconnected(&b, 42);
        ASSERT_EQ(b.attempt, 0);
}

TEST(real_random_statistics) {
        /* Full jitter with the kernel's randomness: every delay within [0, ceiling], not all equal, and
         * a mean near ceiling / 2. With 2000 uniform samples the standard error of the mean is
         * ceiling * 0.0065, so ±10 % is over 15 standard errors: this never fails by chance. */
        const usec_t ceiling = 8 * USEC_PER_SEC;
        double sum = 0;
        usec_t first = 0, lo = USEC_INFINITY, hi = 0;
        bool all_equal = true;
        Backoff b;

        backoff_init(&b, USEC_PER_SEC, USEC_PER_MINUTE, 0);
        for (unsigned i = 0; i < 2000; i++) {
                usec_t d;

                b.attempt = 3;
                ASSERT_UEQ(backoff_ceiling(&b), ceiling);
                d = backoff_next(&b);
                ASSERT_UCMP(d, <=, ceiling);
                if (i == 0)
                        first = d;
                else if (d != first)
                        all_equal = false;
                lo = MIN(lo, d);
                hi = MAX(hi, d);
                sum += (double) d;
        }
        ASSERT_FALSE(all_equal);
        ASSERT_TRUE(sum / 2000 > 0.4 * (double) ceiling);
        ASSERT_TRUE(sum / 2000 < 0.6 * (double) ceiling);
        /* Both ends of the range are reached approximately. */
        ASSERT_UCMP(lo, <, ceiling / 20);
        ASSERT_UCMP(hi, >, ceiling - ceiling / 20);
}

TEST(zeroed_struct_uses_default_source) {
        Backoff b = { .base = 10, .cap = 10 };

        /* Not initialised with backoff_init(): still no NULL call. */
        ASSERT_UCMP(backoff_next(&b), <=, 10);
        ASSERT_EQ(b.attempt, 1);
}
