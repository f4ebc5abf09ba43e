/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Time in microseconds, as sd-event counts it. */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_INFINITY ((usec_t) UINT64_MAX)
#define USEC_PER_MSEC ((usec_t) 1000ULL)
#define USEC_PER_SEC ((usec_t) 1000000ULL)
#define USEC_PER_MINUTE ((usec_t) (60ULL * USEC_PER_SEC))
#define USEC_PER_HOUR ((usec_t) (60ULL * USEC_PER_MINUTE))
#define USEC_PER_DAY ((usec_t) (24ULL * USEC_PER_HOUR))
#define USEC_PER_WEEK ((usec_t) (7ULL * USEC_PER_DAY))
#define USEC_PER_YEAR ((usec_t) (31557600ULL * USEC_PER_SEC)) /* 365.25 days */

/* Longest string format_timespan() writes, including the NUL. */
#define FORMAT_TIMESPAN_MAX 64
/* Longest string format_timestamp() writes ("2026-11-21T20:20:43Z"), including the NUL. */
#define FORMAT_TIMESTAMP_MAX 32

usec_t now(clockid_t clock);
usec_t timespec_load(const struct timespec *ts);
struct timespec *timespec_store(struct timespec *ts, usec_t u);

/* Saturating arithmetic: never wraps past USEC_INFINITY or below 0. */
usec_t usec_add(usec_t a, usec_t b);
usec_t usec_sub(usec_t a, usec_t b);

/* "1h 30min", "500ms", "infinity"; at most `accuracy` resolution. Returns buf. */
char *format_timespan(char *buf, size_t size, usec_t t, usec_t accuracy);
/* ISO 8601 UTC with a 'Z' ("2026-11-21T20:20:43Z") from CLOCK_REALTIME µs. Returns buf, or NULL for
 * USEC_INFINITY or a time that does not fit. */
char *format_timestamp(char *buf, size_t size, usec_t t);
