/* SPDX-License-Identifier: Apache-2.0 */

#include "macro.h"
#include "tests.h"
#include "time-util.h"

TEST(usec_add_saturates) {
        static const struct {
                usec_t a, b, sum;
        } table[] = {
                { 0, 0, 0 },
                { 1, 2, 3 },
                { USEC_INFINITY - 1, 1, USEC_INFINITY },
                { USEC_INFINITY - 1, 2, USEC_INFINITY },
                { USEC_INFINITY, 0, USEC_INFINITY },
                { 5, USEC_INFINITY, USEC_INFINITY },
                { USEC_INFINITY / 2 + 1, USEC_INFINITY / 2 + 1, USEC_INFINITY },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("%ju + %ju", (uintmax_t) table[i].a, (uintmax_t) table[i].b);
                ASSERT_UEQ(usec_add(table[i].a, table[i].b), table[i].sum);
        }
}

TEST(usec_sub_saturates) {
        static const struct {
                usec_t a, b, diff;
        } table[] = {
                { 10, 3, 7 },
                { 3, 10, 0 },
                { 5, 5, 0 },
                { 0, USEC_INFINITY, 0 },
                /* Infinity minus anything stays infinity: "never" does not come closer. */
                { USEC_INFINITY, 1, USEC_INFINITY },
                { USEC_INFINITY, USEC_INFINITY, USEC_INFINITY },
                { USEC_INFINITY - 1, 1, USEC_INFINITY - 2 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("%ju - %ju", (uintmax_t) table[i].a, (uintmax_t) table[i].b);
                ASSERT_UEQ(usec_sub(table[i].a, table[i].b), table[i].diff);
        }
}

TEST(timespec_load) {
        static const struct {
                time_t sec;
                long nsec;
                usec_t u;
        } table[] = {
                { 0, 0, 0 },
                { 1, 500000000L, 1500000 },
                { 0, 999, 0 }, /* sub-µs floored */
                { 0, 1000, 1 },
                { 1700000000, 123456789L, UINT64_C(1700000000123456) },
                { -1, 0, 0 },
                { 0, -1, 0 },
                { INT64_MAX, 0, USEC_INFINITY },
                { (time_t) (UINT64_MAX / USEC_PER_SEC) + 1, 0, USEC_INFINITY },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                struct timespec ts = { .tv_sec = table[i].sec, .tv_nsec = table[i].nsec };

                CASE("{%jd, %ld}", (intmax_t) table[i].sec, table[i].nsec);
                ASSERT_UEQ(timespec_load(&ts), table[i].u);
        }
}

TEST(timespec_store) {
        struct timespec ts;

        ASSERT_TRUE(timespec_store(&ts, 1500000) == &ts);
        ASSERT_EQ(ts.tv_sec, 1);
        ASSERT_EQ(ts.tv_nsec, 500000000L);

        timespec_store(&ts, 0);
        ASSERT_EQ(ts.tv_sec, 0);
        ASSERT_EQ(ts.tv_nsec, 0);

        timespec_store(&ts, 999999);
        ASSERT_EQ(ts.tv_sec, 0);
        ASSERT_EQ(ts.tv_nsec, 999999000L);

        /* Infinity has no timespec: it is stored as {-1, -1}, which loads back as 0 — not a round trip,
         * so callers must check for USEC_INFINITY first. */
        timespec_store(&ts, USEC_INFINITY);
        ASSERT_EQ(ts.tv_sec, -1);
        ASSERT_EQ(ts.tv_nsec, -1);

        for (usec_t u = 1; u < USEC_INFINITY / 4; u = u * 7 + 3) {
                CASE("round trip %ju", (uintmax_t) u);
                ASSERT_UEQ(timespec_load(timespec_store(&ts, u)), u);
        }
}

TEST(format_timespan) {
        static const struct {
                usec_t t, accuracy;
                const char *s;
        } table[] = {
                { 0, 1, "0" },
                { USEC_INFINITY, 1, "infinity" },
                { 1, 1, "1us" },
                { 1, 0, "1us" }, /* accuracy 0 means 1 µs */
                { 1500, 1, "1ms 500us" },
                { 1500, USEC_PER_MSEC, "1ms" },
                { 500 * USEC_PER_MSEC, USEC_PER_SEC, "500ms" }, /* the first component is always shown */
                { 30 * USEC_PER_SEC, 1, "30s" },
                { 90 * USEC_PER_MINUTE, 1, "1h 30min" },
                { USEC_PER_HOUR + 30 * USEC_PER_MINUTE + 5 * USEC_PER_SEC, USEC_PER_MINUTE, "1h 30min" },
                { USEC_PER_HOUR + 30 * USEC_PER_MINUTE + 5 * USEC_PER_SEC, USEC_PER_SEC, "1h 30min 5s" },
                { USEC_PER_DAY + 1, 1, "1d 1us" },
                { USEC_PER_DAY + 1, USEC_PER_SEC, "1d" },
                { 2 * USEC_PER_WEEK + 3 * USEC_PER_DAY, 1, "2w 3d" },
                { USEC_PER_YEAR, 1, "1y" },
                { USEC_PER_YEAR + USEC_PER_WEEK, USEC_PER_SEC, "1y 1w" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char buf[FORMAT_TIMESPAN_MAX];

                CASE("%ju accuracy %ju", (uintmax_t) table[i].t, (uintmax_t) table[i].accuracy);
                ASSERT_STREQ(format_timespan(buf, sizeof(buf), table[i].t, table[i].accuracy), table[i].s);
        }
}

TEST(format_timespan_fits_max) {
        char buf[FORMAT_TIMESPAN_MAX];

        /* Every component present at full width still fits. */
        format_timespan(buf, sizeof(buf), USEC_INFINITY - 1, 1);
        ASSERT_STREQ(buf, "584542y 2w 2d 20h 1min 49s 551ms 614us");
        ASSERT_LT(strlen(buf), FORMAT_TIMESPAN_MAX);
}

TEST(format_timespan_small_buffer) {
        char buf[16];

        /* A component that does not fit is dropped whole, never cut in half ("1h " or "1h 30m"). */
        ASSERT_STREQ(format_timespan(buf, 4, 90 * USEC_PER_MINUTE, 1), "1h");
        ASSERT_STREQ(format_timespan(buf, 8, 90 * USEC_PER_MINUTE, 1), "1h");
        ASSERT_STREQ(format_timespan(buf, 9, 90 * USEC_PER_MINUTE, 1), "1h 30min");
        ASSERT_STREQ(format_timespan(buf, 2, 90 * USEC_PER_MINUTE, 1), "");
        ASSERT_STREQ(format_timespan(buf, 4, USEC_INFINITY, 1), "inf");
}

TEST(format_timestamp) {
        static const struct {
                usec_t t;
                const char *s;
        } table[] = {
                { 0, "1970-01-01T00:00:00Z" },
                { 1700000000 * USEC_PER_SEC, "2023-11-14T22:13:20Z" },
                { 1700000000 * USEC_PER_SEC + 999999, "2023-11-14T22:13:20Z" }, /* µs floored */
                { UINT64_C(1795292443) * USEC_PER_SEC, "2026-11-21T20:20:43Z" },
                { UINT64_C(253402300799) * USEC_PER_SEC, "9999-12-31T23:59:59Z" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char buf[FORMAT_TIMESTAMP_MAX];

                CASE("%ju", (uintmax_t) table[i].t);
                ASSERT_STREQ(format_timestamp(buf, sizeof(buf), table[i].t), table[i].s);
        }
}

TEST(format_timestamp_refuses) {
        char buf[FORMAT_TIMESTAMP_MAX];

        ASSERT_NULL(format_timestamp(buf, sizeof(buf), USEC_INFINITY));
        /* Too small for the 20 characters plus NUL. */
        ASSERT_NULL(format_timestamp(buf, 20, 0));
        ASSERT_STREQ(format_timestamp(buf, 21, 0), "1970-01-01T00:00:00Z");
}

TEST(now) {
        usec_t a, b, r;

        a = now(CLOCK_MONOTONIC);
        b = now(CLOCK_MONOTONIC);
        ASSERT_UCMP(b, >=, a);
        ASSERT_UCMP(a, >, 0);

        /* 2020-01-01: any real clock is past it. */
        r = now(CLOCK_REALTIME);
        ASSERT_UCMP(r, >, UINT64_C(1577836800) * USEC_PER_SEC);
        ASSERT_UCMP(r, <, USEC_INFINITY);
}
