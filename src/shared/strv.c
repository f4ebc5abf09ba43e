/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdint.h>

#include "strv.h"

char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **p = l; *p; p++)
                free(*p);
        free(l);
        return NULL;
}

char **strv_free_erase(char **l) {
        if (!l)
                return NULL;
        for (char **p = l; *p; p++)
                *p = erase_and_free_string(*p);
        free(l);
        return NULL;
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        if (!l)
                return 0;
        while (l[n])
                n++;
        return n;
}

int strv_consume(char ***l, char *value) {
        size_t n;
        char **c;

        assert(l);
        assert(value);

        n = strv_length(*l);
        if (n > SIZE_MAX / sizeof(char *) - 2) {
                free(value);
                return -ENOMEM;
        }
        c = realloc(*l, sizeof(char *) * (n + 2));
        if (!c) {
                free(value);
                return -ENOMEM;
        }
        c[n] = value;
        c[n + 1] = NULL;
        *l = c;
        return 0;
}

int strv_extend(char ***l, const char *value) {
        char *v;

        assert(l);
        assert(value);

        v = strdup(value);
        if (!v)
                return -ENOMEM;
        return strv_consume(l, v);
}

bool strv_contains(char *const *l, const char *s) {
        assert(s);

        STRV_FOREACH(i, l)
                if (streq(*i, s))
                        return true;
        return false;
}

char **strv_copy(char *const *l) {
        size_t n = strv_length(l);
        char **c;

        c = calloc(n + 1, sizeof(char *));
        if (!c)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                c[i] = strdup(l[i]);
                if (!c[i])
                        return strv_free(c);
        }
        return c;
}

char *strv_join(char *const *l, const char *sep) {
        size_t n = 0, k, seplen;
        char *r, *p;

        if (!sep)
                sep = " ";
        seplen = strlen(sep);

        STRV_FOREACH(i, l) {
                k = strlen(*i) + (i == l ? 0 : seplen);
                if (k > SIZE_MAX - 1 - n)
                        return NULL;
                n += k;
        }

        r = malloc(n + 1);
        if (!r)
                return NULL;
        p = r;
        STRV_FOREACH(i, l) {
                if (i != l)
                        p = mempcpy(p, sep, seplen);
                p = mempcpy(p, *i, strlen(*i));
        }
        *p = '\0';
        return r;
}

char **strv_split(const char *s, const char *separators) {
        _cleanup_strv_free_ char **l = NULL;

        assert(s);
        assert(separators);

        /* Pre-sized so that OOM is the only failure and the result is never NULL on success. */
        l = calloc(1, sizeof(char *));
        if (!l)
                return NULL;

        for (const char *p = s;;) {
                size_t k;
                char *w;

                p += strspn(p, separators);
                if (*p == '\0')
                        break;
                k = strcspn(p, separators);
                w = strndup(p, k);
                if (!w)
                        return NULL;
                if (strv_consume(&l, w) < 0)
                        return NULL;
                p += k;
        }
        return TAKE_PTR(l);
}

static int str_compare(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

char **strv_sort(char **l) {
        size_t n = strv_length(l);

        if (n > 1)
                qsort(l, n, sizeof(char *), str_compare);
        return l;
}

char **strv_uniq(char **l) {
        size_t n = 0;

        if (!l)
                return NULL;

        /* Quadratic, but our lists are short and bounded by their owners' maxima. */
        for (size_t i = 0; l[i]; i++) {
                bool dup = false;

                for (size_t j = 0; j < n; j++)
                        if (streq(l[j], l[i])) {
                                dup = true;
                                break;
                        }
                if (dup)
                        free(l[i]);
                else
                        l[n++] = l[i];
        }
        l[n] = NULL;
        return l;
}

bool strv_equal(char *const *a, char *const *b) {
        size_t i;

        for (i = 0; a && b && a[i] && b[i]; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return (!a || !a[i]) && (!b || !b[i]);
}
