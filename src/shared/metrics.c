/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "string-util.h"

struct MetricsWriter {
        char *buf;
        size_t size;            /* bytes written, without the NUL */
        size_t allocated;
        size_t max_size;
        int error;              /* the first error, sticky */

        char *families[METRICS_FAMILIES_MAX];
        size_t n_families;
        const char *family;     /* the current one (in families[]), NULL before the first */
};

static const char *const metric_type_table[_METRIC_TYPE_MAX] = {
        [METRIC_COUNTER] = "counter",
        [METRIC_GAUGE] = "gauge",
};

const char *metric_type_to_string(MetricType t) {
        if (t < 0 || t >= _METRIC_TYPE_MAX)
                return NULL;
        return metric_type_table[t];
}

static bool name_is_valid(const char *name, bool colon) {
        size_t n;

        if (isempty(name))
                return false;
        n = strnlen(name, METRICS_NAME_MAX + 1);
        if (n > METRICS_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];

                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':'))
                        continue;
                if (i > 0 && c >= '0' && c <= '9')
                        continue;
                return false;
        }
        return true;
}

bool metric_name_is_valid(const char *name) {
        return name_is_valid(name, true);
}

bool metric_label_name_is_valid(const char *name) {
        return name_is_valid(name, false) && !startswith(name, "__");
}

int metrics_writer_new(size_t max_size, MetricsWriter **ret) {
        MetricsWriter *w;

        assert(ret);

        w = calloc(1, sizeof(MetricsWriter));
        if (!w)
                return -ENOMEM;
        w->max_size = max_size > 0 ? max_size : METRICS_SIZE_MAX;
        *ret = w;
        return 0;
}

MetricsWriter *metrics_writer_free(MetricsWriter *w) {
        if (!w)
                return NULL;
        free(w->buf);
        for (size_t i = 0; i < w->n_families; i++)
                free(w->families[i]);
        return mfree(w);
}

static int fail(MetricsWriter *w, int error) {
        if (w->error == 0)
                w->error = error;
        return w->error;
}

static int append(MetricsWriter *w, const char *s, size_t n) {
        if (w->error < 0)
                return w->error;
        if (n > w->max_size || w->size > w->max_size - n)
                return fail(w, -ENOBUFS);
        if (w->size + n + 1 > w->allocated) {
                size_t a = MAX(w->allocated * 2, w->size + n + 1);
                char *b;

                a = MAX(a, (size_t) 4096);
                b = realloc(w->buf, a);
                if (!b)
                        return fail(w, -ENOMEM);
                w->buf = b;
                w->allocated = a;
        }
        memcpy(w->buf + w->size, s, n);
        w->size += n;
        w->buf[w->size] = '\0';
        return 0;
}

static int append_str(MetricsWriter *w, const char *s) {
        return append(w, s, strlen(s));
}

/* Copies s, escaping the backslash, the line feed and (for label values) the double quote. */
static int append_escaped(MetricsWriter *w, const char *s, bool quote) {
        const char *p = s;
        int r;

        for (;;) {
                size_t n = strcspn(p, quote ? "\\\n\"" : "\\\n");

                r = append(w, p, n);
                if (r < 0)
                        return r;
                p += n;
                if (*p == '\0')
                        return 0;
                r = append_str(w, *p == '\n' ? "\\n" : *p == '"' ? "\\\"" : "\\\\");
                if (r < 0)
                        return r;
                p++;
        }
}

int metrics_family(MetricsWriter *w, const char *name, MetricType type, const char *help) {
        char *copy;

        assert(w);

        if (w->error < 0)
                return w->error;
        if (!metric_name_is_valid(name) || !metric_type_to_string(type) || !help ||
            !utf8_is_valid(help, strlen(help)))
                return fail(w, -EINVAL);
        if (type == METRIC_COUNTER && (!endswith(name, "_total") || streq(name, "_total")))
                return fail(w, -EINVAL);
        for (size_t i = 0; i < w->n_families; i++)
                if (streq(w->families[i], name))
                        return fail(w, -EEXIST);
        if (w->n_families >= METRICS_FAMILIES_MAX)
                return fail(w, -E2BIG);

        copy = strdup(name);
        if (!copy)
                return fail(w, -ENOMEM);
        w->families[w->n_families++] = copy;
        w->family = copy;

        (void) append_str(w, "# HELP ");
        (void) append_str(w, name);
        (void) append_str(w, " ");
        (void) append_escaped(w, help, false);
        (void) append_str(w, "\n# TYPE ");
        (void) append_str(w, name);
        (void) append_str(w, " ");
        (void) append_str(w, metric_type_to_string(type));
        return append_str(w, "\n");
}

/* Checks the whole label set first, so that nothing is written for a bad one. */
static int labels_check(const char *const *labels) {
        size_t n = 0;

        if (!labels)
                return 0;
        for (const char *const *l = labels; *l; l += 2, n++) {
                if (n >= METRICS_LABELS_MAX)
                        return -E2BIG;
                if (!metric_label_name_is_valid(l[0]))
                        return -EINVAL;
                if (l[1] && !utf8_is_valid(l[1], strlen(l[1])))
                        return -EINVAL;
                for (const char *const *k = labels; k < l; k += 2)
                        if (streq(k[0], l[0]))
                                return -EINVAL;
        }
        return 0;
}

static int sample(MetricsWriter *w, const char *const *labels, const char *value) {
        int r;

        assert(w);

        if (w->error < 0)
                return w->error;
        if (!w->family)
                return fail(w, -EINVAL);
        r = labels_check(labels);
        if (r < 0)
                return fail(w, r);

        (void) append_str(w, w->family);
        if (labels && labels[0]) {
                (void) append_str(w, "{");
                for (const char *const *l = labels; *l; l += 2) {
                        if (l != labels)
                                (void) append_str(w, ",");
                        (void) append_str(w, l[0]);
                        (void) append_str(w, "=\"");
                        (void) append_escaped(w, strempty(l[1]), true);
                        (void) append_str(w, "\"");
                }
                (void) append_str(w, "}");
        }
        (void) append_str(w, " ");
        (void) append_str(w, value);
        return append_str(w, "\n");
}

int metrics_sample_u64(MetricsWriter *w, const char *const *labels, uint64_t value) {
        char buf[32];

        (void) snprintf(buf, sizeof(buf), "%" PRIu64, value);
        return sample(w, labels, buf);
}

int metrics_sample_i64(MetricsWriter *w, const char *const *labels, int64_t value) {
        char buf[32];

        (void) snprintf(buf, sizeof(buf), "%" PRIi64, value);
        return sample(w, labels, buf);
}

/* The shortest of %.15g, %.16g, %.17g that reads back as v, in the C locale whatever the process's is. */
static int format_double(double v, char *buf, size_t size) {
        locale_t c, old;

        if (isnan(v))
                return snprintf(buf, size, "NaN") < 0 ? -EIO : 0;
        if (isinf(v))
                return snprintf(buf, size, "%s", v > 0 ? "+Inf" : "-Inf") < 0 ? -EIO : 0;

        c = newlocale(LC_NUMERIC_MASK, "C", (locale_t) 0);
        if (c == (locale_t) 0)
                return -errno;
        old = uselocale(c);
        for (int precision = 15; precision <= 17; precision++) {
                double back;

                (void) snprintf(buf, size, "%.*g", precision, v);
                back = strtod(buf, NULL);
                if (!(back < v) && !(back > v)) /* == without -Wfloat-equal; v is not NaN here */
                        break;
        }
        (void) uselocale(old);
        freelocale(c);
        return 0;
}

int metrics_sample_double(MetricsWriter *w, const char *const *labels, double value) {
        char buf[64];
        int r;

        assert(w);

        r = format_double(value, buf, sizeof(buf));
        if (r < 0)
                return fail(w, r);
        return sample(w, labels, buf);
}

int metrics_sample_usec(MetricsWriter *w, const char *const *labels, usec_t value) {
        char buf[48];

        if (value == USEC_INFINITY)
                return sample(w, labels, "+Inf");

        usec_t frac = value % USEC_PER_SEC;
        if (frac == 0)
                (void) snprintf(buf, sizeof(buf), "%" PRIu64, value / USEC_PER_SEC);
        else {
                int digits = 6;

                while (frac % 10 == 0) {
                        frac /= 10;
                        digits--;
                }
                (void) snprintf(buf, sizeof(buf), "%" PRIu64 ".%0*" PRIu64, value / USEC_PER_SEC, digits,
                                frac);
        }
        return sample(w, labels, buf);
}

int metrics_family_u64(MetricsWriter *w, const char *name, MetricType type, const char *help,
                       uint64_t value) {
        int r;

        r = metrics_family(w, name, type, help);
        if (r < 0)
                return r;
        return metrics_sample_u64(w, NULL, value);
}

int metrics_writer_finish(MetricsWriter *w, char **ret) {
        char *s;

        assert(w);
        assert(ret);

        if (w->error < 0)
                return w->error;
        s = w->buf ? TAKE_PTR(w->buf) : strdup("");
        if (!s)
                return -ENOMEM;
        w->size = w->allocated = 0;
        *ret = s;
        return 0;
}
