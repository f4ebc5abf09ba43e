/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* A writer for the Prometheus text exposition format 0.0.4 (what /metrics serves, with Content-Type
 * METRICS_CONTENT_TYPE):
 *
 *   # HELP ztna_renewals_total Successful certificate renewals.
 *   # TYPE ztna_renewals_total counter
 *   ztna_renewals_total 3
 *   # HELP ztna_agents Enrolled agents by role and state.
 *   # TYPE ztna_agents gauge
 *   ztna_agents{role="connector",state="online"} 2
 *
 * A family is declared once (metrics_family()) and its samples follow it. Names are checked (a counter's
 * must end in "_total"), label names are checked and label values escaped, so that the output is never
 * malformed: a bad name is -EINVAL instead. The first error sticks: every later call returns it, and so
 * does metrics_writer_finish(), so a caller may check each call or only the last one.
 *
 * Numbers never depend on the locale: integers are printed as such, times as seconds with up to six
 * decimals (exact, from µs), and doubles in the shortest form that reads back the same, with "." as the
 * decimal point. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "time-util.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Default bound on the output when metrics_writer_new() is given 0 (-ENOBUFS beyond it). */
#define METRICS_SIZE_MAX (4U * 1024U * 1024U)
/* Families one writer declares at most (-E2BIG beyond). */
#define METRICS_FAMILIES_MAX 256U
/* Labels on one sample at most (-E2BIG beyond). */
#define METRICS_LABELS_MAX 16U
/* Longest metric or label name. */
#define METRICS_NAME_MAX 200U

typedef enum MetricType {
        METRIC_COUNTER,
        METRIC_GAUGE,
        _METRIC_TYPE_MAX,
        _METRIC_TYPE_INVALID = -EINVAL,
} MetricType;

/* "counter", "gauge"; NULL for anything else. */
const char *metric_type_to_string(MetricType t);

/* [a-zA-Z_:][a-zA-Z0-9_:]* up to METRICS_NAME_MAX. */
bool metric_name_is_valid(const char *name) _pure_;
/* [a-zA-Z_][a-zA-Z0-9_]* up to METRICS_NAME_MAX, not starting with "__" (reserved by Prometheus). */
bool metric_label_name_is_valid(const char *name) _pure_;

typedef struct MetricsWriter MetricsWriter;

/* max_size: bound on the output in bytes, 0 for METRICS_SIZE_MAX. */
int metrics_writer_new(size_t max_size, MetricsWriter **ret);
MetricsWriter *metrics_writer_free(MetricsWriter *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(MetricsWriter *, metrics_writer_free);

/* Declares the family that the following samples belong to: # HELP and # TYPE. -EINVAL for a bad name, a
 * counter not ending in "_total", a help text that is not valid UTF-8 text or an invalid type; -EEXIST when
 * the name was declared before. */
int metrics_family(MetricsWriter *w, const char *name, MetricType type, const char *help);

/* Labels: name, value pairs followed by one NULL (NULL for none). A NULL value is written as "".
 * -EINVAL for a bad or repeated label name, a value that is not valid UTF-8, or no family declared yet. */
#define METRICS_LABELS(...) ((const char *const[]) { __VA_ARGS__, NULL })

int metrics_sample_u64(MetricsWriter *w, const char *const *labels, uint64_t value);
int metrics_sample_i64(MetricsWriter *w, const char *const *labels, int64_t value);
/* NaN, +Inf and -Inf are written as Prometheus spells them. */
int metrics_sample_double(MetricsWriter *w, const char *const *labels, double value);
/* A CLOCK_REALTIME time or a duration in µs, written in seconds (…_timestamp_seconds, …_seconds). */
int metrics_sample_usec(MetricsWriter *w, const char *const *labels, usec_t value);

/* A family with one sample without labels, the common case. */
int metrics_family_u64(MetricsWriter *w, const char *name, MetricType type, const char *help,
                       uint64_t value);

/* The text written (NUL-terminated) in *ret, owned by the caller; the writer is left empty. Returns the
 * first error of any call instead, and then *ret is untouched. */
int metrics_writer_finish(MetricsWriter *w, char **ret);
