/* SPDX-License-Identifier: Apache-2.0 */

#include <locale.h>
#include <math.h>

#include "macro.h"
#include "string-util.h"
#include "metrics.h"
#include "tests.h"

/* Writes one sample with write() and returns its value text (after the last space). */
static char *sample_text(int (*write)(MetricsWriter *w, const void *value), const void *value) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        static char buf[128];
        _cleanup_free_ char *text = NULL;
        char *space;

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family(w, "x", METRIC_GAUGE, "x"));
        ASSERT_OK(write(w, value));
        ASSERT_OK(metrics_writer_finish(w, &text));
        ASSERT_TRUE(endswith(text, "\n"));
        text[strlen(text) - 1] = '\0';
        space = ASSERT_NOT_NULL(strrchr(text, ' '));
        snprintf(buf, sizeof(buf), "%s", space + 1);
        return buf;
}

static int write_double(MetricsWriter *w, const void *value) {
        return metrics_sample_double(w, NULL, *(const double *) value);
}

static int write_usec(MetricsWriter *w, const void *value) {
        return metrics_sample_usec(w, NULL, *(const usec_t *) value);
}

TEST(names) {
        static const struct {
                const char *name;
                bool metric, label;
        } table[] = {
                { "ztna_agents", true, true },
                { "_x", true, true },
                { "a:b", true, false },
                { ":a", true, false },
                { "x9", true, true },
                { "__name__", true, false },
                { "9x", false, false },
                { "", false, false },
                { "a-b", false, false },
                { "a b", false, false },
                { "ä", false, false },
                { "a\n", false, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].name);
                ASSERT_EQ(metric_name_is_valid(table[i].name), table[i].metric);
                ASSERT_EQ(metric_label_name_is_valid(table[i].name), table[i].label);
        }
        CASE("NULL");
        ASSERT_FALSE(metric_name_is_valid(NULL));
        ASSERT_FALSE(metric_label_name_is_valid(NULL));

        char longest[METRICS_NAME_MAX + 2];
        memset(longest, 'a', sizeof(longest));
        longest[METRICS_NAME_MAX] = '\0';
        ASSERT_TRUE(metric_name_is_valid(longest));
        longest[METRICS_NAME_MAX] = 'a';
        longest[METRICS_NAME_MAX + 1] = '\0';
        ASSERT_FALSE(metric_name_is_valid(longest));
        ASSERT_FALSE(metric_label_name_is_valid(longest));
}

TEST(types) {
        ASSERT_STREQ(metric_type_to_string(METRIC_COUNTER), "counter");
        ASSERT_STREQ(metric_type_to_string(METRIC_GAUGE), "gauge");
        ASSERT_NULL(metric_type_to_string(_METRIC_TYPE_MAX));
        ASSERT_NULL(metric_type_to_string(_METRIC_TYPE_INVALID));
}

TEST(golden) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        _cleanup_free_ char *text = NULL;

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family(w, "ztna_requests_total", METRIC_COUNTER, "Requests served."));
        ASSERT_OK(metrics_sample_u64(w, METRICS_LABELS("code", "200", "path", "/a\"b\\c\nd"), 42));
        ASSERT_OK(metrics_sample_u64(w, NULL, UINT64_MAX));
        ASSERT_OK(metrics_family(w, "ztna_temperature_celsius", METRIC_GAUGE,
                                 "A help text with a \\ backslash, a \"quote\" and a\nnew line."));
        ASSERT_OK(metrics_sample_i64(w, METRICS_LABELS("place", NULL), INT64_MIN));
        ASSERT_OK(metrics_sample_double(w, METRICS_LABELS("place", "dünn"), 0.1));
        ASSERT_OK(metrics_sample_double(w, METRICS_LABELS("a", "1", "b", NULL, "c", "3"), -INFINITY));
        ASSERT_OK(metrics_family(w, "ztna_expiry_timestamp_seconds", METRIC_GAUGE, ""));
        ASSERT_OK(metrics_family(w, "ztna_age_seconds", METRIC_GAUGE, "Age."));
        ASSERT_OK(metrics_sample_usec(w, METRICS_LABELS("x", ""), 1763790000123450));
        ASSERT_OK(metrics_writer_finish(w, &text));

        ASSERT_STREQ(text,
                     "# HELP ztna_requests_total Requests served.\n"
                     "# TYPE ztna_requests_total counter\n"
                     "ztna_requests_total{code=\"200\",path=\"/a\\\"b\\\\c\\nd\"} 42\n"
                     "ztna_requests_total 18446744073709551615\n"
                     "# HELP ztna_temperature_celsius A help text with a \\\\ backslash, a \"quote\" and "
                     "a\\nnew line.\n"
                     "# TYPE ztna_temperature_celsius gauge\n"
                     "ztna_temperature_celsius{place=\"\"} -9223372036854775808\n"
                     "ztna_temperature_celsius{place=\"dünn\"} 0.1\n"
                     "ztna_temperature_celsius{a=\"1\",b=\"\",c=\"3\"} -Inf\n"
                     "# HELP ztna_expiry_timestamp_seconds \n"
                     "# TYPE ztna_expiry_timestamp_seconds gauge\n"
                     "# HELP ztna_age_seconds Age.\n"
                     "# TYPE ztna_age_seconds gauge\n"
                     "ztna_age_seconds{x=\"\"} 1763790000.12345\n");

        /* The writer is empty again and remembers its families. */
        ASSERT_ERROR(metrics_family(w, "ztna_age_seconds", METRIC_GAUGE, "Again."), EEXIST);
}

TEST(empty) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        _cleanup_free_ char *text = NULL;

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_writer_finish(w, &text));
        ASSERT_STREQ(text, "");
}

TEST(doubles) {
        static const struct {
                double value;
                const char *text;
        } table[] = {
                { 0.0, "0" },
                { 1.0, "1" },
                { -2.5, "-2.5" },
                { 0.1, "0.1" },
                { 1.0 / 3.0, "0.3333333333333333" },
                { 1e300, "1e+300" },
                { 123456789012.25, "123456789012.25" },
                { 5e-324, "4.94065645841247e-324" }, /* the smallest denormal reads back from 15 digits */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("%s", table[i].text);
                ASSERT_STREQ(sample_text(write_double, &table[i].value), table[i].text);
        }
        double nan_value = NAN, inf = INFINITY, minus_inf = -INFINITY;
        ASSERT_STREQ(sample_text(write_double, &nan_value), "NaN");
        ASSERT_STREQ(sample_text(write_double, &inf), "+Inf");
        ASSERT_STREQ(sample_text(write_double, &minus_inf), "-Inf");
}

TEST(doubles_ignore_locale) {
        double v = 2.5;

        /* Any locale with a decimal comma that happens to be installed; C.UTF-8 at least keeps the path. */
        if (!setlocale(LC_ALL, "de_DE.UTF-8") && !setlocale(LC_ALL, "fr_FR.UTF-8") &&
            !setlocale(LC_ALL, "C.UTF-8"))
                test_skip("no locale to switch to");
        ASSERT_STREQ(sample_text(write_double, &v), "2.5");
}

TEST(usec) {
        static const struct {
                usec_t value;
                const char *text;
        } table[] = {
                { 0, "0" },
                { 1, "0.000001" },
                { 1500000, "1.5" },
                { 1000001, "1.000001" },
                { 60 * USEC_PER_SEC, "60" },
                { 1763790000123456, "1763790000.123456" },
                { USEC_INFINITY - 1, "18446744073709.551614" },
                { USEC_INFINITY, "+Inf" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("%s", table[i].text);
                ASSERT_STREQ(sample_text(write_usec, &table[i].value), table[i].text);
        }
}

TEST(bad_family) {
        static const struct {
                const char *name;
                MetricType type;
                const char *help;
                int error;
        } table[] = {
                { "9x", METRIC_GAUGE, "h", EINVAL },
                { "", METRIC_GAUGE, "h", EINVAL },
                { "a b", METRIC_GAUGE, "h", EINVAL },
                { "ztna_renewals", METRIC_COUNTER, "h", EINVAL },
                { "_total", METRIC_COUNTER, "h", EINVAL },
                { "ztna_x", _METRIC_TYPE_MAX, "h", EINVAL },
                { "ztna_x", METRIC_GAUGE, NULL, EINVAL },
                { "ztna_x", METRIC_GAUGE, "\xff", EINVAL },
                { "ztna_x", METRIC_GAUGE, "\xc0\x80", EINVAL },   /* overlong NUL */
                { "ztna_x", METRIC_GAUGE, "\xed\xa0\x80", EINVAL }, /* surrogate */
                { "ztna_dup", METRIC_GAUGE, "h", EEXIST },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
                char *text = NULL;

                CASE("%zu '%s'", i, strna(table[i].name));
                ASSERT_OK(metrics_writer_new(0, &w));
                ASSERT_OK(metrics_family(w, "ztna_dup", METRIC_GAUGE, "first"));
                ASSERT_OK(metrics_sample_u64(w, NULL, 1));
                ASSERT_ERROR(metrics_family(w, table[i].name, table[i].type, table[i].help), table[i].error);
                /* The error sticks: nothing more is written and nothing is returned. */
                ASSERT_ERROR(metrics_family(w, "ztna_ok", METRIC_GAUGE, "fine"), table[i].error);
                ASSERT_ERROR(metrics_sample_u64(w, NULL, 1), table[i].error);
                ASSERT_ERROR(metrics_writer_finish(w, &text), table[i].error);
                ASSERT_NULL(text);
        }
}

TEST(bad_labels) {
        const char *const *table[] = {
                METRICS_LABELS("9x", "v"),
                METRICS_LABELS("a-b", "v"),
                METRICS_LABELS("__reserved", "v"),
                METRICS_LABELS("a:b", "v"),
                METRICS_LABELS("", "v"),
                METRICS_LABELS("a", "v", "a", "w"),
                METRICS_LABELS("a", "v", "b", NULL, "a", "w"),
                METRICS_LABELS("a", "\xff"),
                METRICS_LABELS("a", "ok", "b", "\xe2\x82"), /* truncated sequence */
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
                char *text = NULL;

                CASE("%zu", i);
                ASSERT_OK(metrics_writer_new(0, &w));
                ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
                ASSERT_ERROR(metrics_sample_u64(w, table[i], 1), EINVAL);
                ASSERT_ERROR(metrics_writer_finish(w, &text), EINVAL);
                ASSERT_NULL(text);
        }
}

TEST(too_many_labels) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        const char *labels[2 * (METRICS_LABELS_MAX + 1) + 1] = {};
        char names[METRICS_LABELS_MAX + 1][8];

        for (size_t i = 0; i <= METRICS_LABELS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "l%zu", i);
                labels[2 * i] = names[i];
                labels[2 * i + 1] = "v";
        }
        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
        ASSERT_ERROR(metrics_sample_u64(w, labels, 1), E2BIG);

        /* One fewer is fine. */
        metrics_writer_free(TAKE_PTR(w));
        labels[2 * METRICS_LABELS_MAX] = NULL;
        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
        ASSERT_OK(metrics_sample_u64(w, labels, 1));
}

TEST(sample_without_family) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_ERROR(metrics_sample_u64(w, NULL, 1), EINVAL);
}

TEST(too_many_families) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        char name[32];

        ASSERT_OK(metrics_writer_new(0, &w));
        for (unsigned i = 0; i < METRICS_FAMILIES_MAX; i++) {
                snprintf(name, sizeof(name), "ztna_f%u", i);
                ASSERT_OK(metrics_family(w, name, METRIC_GAUGE, "h"));
        }
        ASSERT_ERROR(metrics_family(w, "ztna_one_more", METRIC_GAUGE, "h"), E2BIG);
}

TEST(size_bound) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        _cleanup_free_ char *text = NULL;
        const char *exact = "# HELP ztna_x h\n# TYPE ztna_x gauge\nztna_x 1\n";

        /* Exactly the bound fits. */
        ASSERT_OK(metrics_writer_new(strlen(exact), &w));
        ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
        ASSERT_OK(metrics_sample_u64(w, NULL, 1));
        ASSERT_OK(metrics_writer_finish(w, &text));
        ASSERT_STREQ(text, exact);
        metrics_writer_free(TAKE_PTR(w));

        /* One byte less does not. */
        ASSERT_OK(metrics_writer_new(strlen(exact) - 1, &w));
        ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
        ASSERT_ERROR(metrics_sample_u64(w, NULL, 1), ENOBUFS);
        ASSERT_ERROR(metrics_writer_finish(w, &text), ENOBUFS);
        ASSERT_STREQ(text, exact);
}

TEST(large_output) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        _cleanup_free_ char *text = NULL;
        char value[16];

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family(w, "ztna_x", METRIC_GAUGE, "h"));
        for (unsigned i = 0; i < 10000; i++) {
                snprintf(value, sizeof(value), "%u", i);
                ASSERT_OK(metrics_sample_u64(w, METRICS_LABELS("i", value), i));
        }
        ASSERT_OK(metrics_writer_finish(w, &text));
        ASSERT_STRSTR(text, "\nztna_x{i=\"9999\"} 9999\n");
}

TEST(family_u64) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        _cleanup_free_ char *text = NULL;

        ASSERT_OK(metrics_writer_new(0, &w));
        ASSERT_OK(metrics_family_u64(w, "ztna_peers", METRIC_GAUGE, "Peers.", 3));
        ASSERT_OK(metrics_family_u64(w, "ztna_streams_total", METRIC_COUNTER, "Streams.", 0));
        ASSERT_OK(metrics_writer_finish(w, &text));
        ASSERT_STREQ(text,
                     "# HELP ztna_peers Peers.\n# TYPE ztna_peers gauge\nztna_peers 3\n"
                     "# HELP ztna_streams_total Streams.\n# TYPE ztna_streams_total counter\nztna_streams_total 0\n");

        ASSERT_ERROR(metrics_family_u64(w, "ztna_streams", METRIC_COUNTER, "No suffix.", 0), EINVAL);
}
