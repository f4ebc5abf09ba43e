/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "time-util.h"

usec_t now(clockid_t clock) {
        struct timespec ts;

        if (clock_gettime(clock, &ts) < 0)
                abort(); /* Only fails for an invalid clock id: a programming error. */
        return timespec_load(&ts);
}

usec_t timespec_load(const struct timespec *ts) {
        assert(ts);

        if (ts->tv_sec < 0 || ts->tv_nsec < 0)
                return 0;
        if ((uint64_t) ts->tv_sec > (UINT64_MAX - (uint64_t) ts->tv_nsec / 1000ULL) / USEC_PER_SEC)
                return USEC_INFINITY;
        return (usec_t) ts->tv_sec * USEC_PER_SEC + (usec_t) ts->tv_nsec / 1000ULL;
}

struct timespec *timespec_store(struct timespec *ts, usec_t u) {
        assert(ts);

        if (u == USEC_INFINITY || u / USEC_PER_SEC >= INT64_MAX) {
                ts->tv_sec = (time_t) -1;
                ts->tv_nsec = -1L;
                return ts;
        }
        ts->tv_sec = (time_t) (u / USEC_PER_SEC);
        ts->tv_nsec = (long) ((u % USEC_PER_SEC) * 1000ULL);
        return ts;
}

usec_t usec_add(usec_t a, usec_t b) {
        if (a > USEC_INFINITY - b)
                return USEC_INFINITY;
        return a + b;
}

usec_t usec_sub(usec_t a, usec_t b) {
        if (a == USEC_INFINITY)
                return USEC_INFINITY;
        return a > b ? a - b : 0;
}

char *format_timespan(char *buf, size_t size, usec_t t, usec_t accuracy) {
        static const struct {
                const char *suffix;
                usec_t usec;
        } table[] = {
                { "y", USEC_PER_YEAR },   { "w", USEC_PER_WEEK },     { "d", USEC_PER_DAY },
                { "h", USEC_PER_HOUR },   { "min", USEC_PER_MINUTE }, { "s", USEC_PER_SEC },
                { "ms", USEC_PER_MSEC },  { "us", 1 },
        };
        char *p = buf;
        size_t l = size;
        bool something = false;

        assert(buf);
        assert(size > 0);

        if (t == USEC_INFINITY) {
                snprintf(buf, size, "infinity");
                return buf;
        }
        if (t == 0) {
                snprintf(buf, size, "0");
                return buf;
        }
        if (accuracy == 0)
                accuracy = 1;

        *p = '\0';
        for (size_t i = 0; i < ELEMENTSOF(table) && t > 0; i++) {
                usec_t a;
                int n;

                if (t < accuracy && something)
                        break;
                if (t < table[i].usec)
                        continue;
                a = t / table[i].usec;
                t -= a * table[i].usec;
                n = snprintf(p, l, "%s%llu%s", something ? " " : "", (unsigned long long) a, table[i].suffix);
                if (n < 0 || (size_t) n >= l) {
                        /* Drop the partial component rather than leave half of it behind. */
                        *p = '\0';
                        break;
                }
                p += n;
                l -= (size_t) n;
                something = true;
        }
        return buf;
}

char *format_timestamp(char *buf, size_t size, usec_t t) {
        struct tm tm;
        time_t sec;

        assert(buf);

        if (t == USEC_INFINITY || t / USEC_PER_SEC > (usec_t) INT64_MAX)
                return NULL;
        sec = (time_t) (t / USEC_PER_SEC);
        if (!gmtime_r(&sec, &tm))
                return NULL;
        if (strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return NULL;
        return buf;
}
