/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>

#include "string-util.h"

char *startswith(const char *s, const char *prefix) {
        size_t l;

        assert(s);
        assert(prefix);

        l = strlen(prefix);
        if (strncmp(s, prefix, l) != 0)
                return NULL;
        return (char *) s + l;
}

char *endswith(const char *s, const char *suffix) {
        size_t sl, xl;

        assert(s);
        assert(suffix);

        sl = strlen(s);
        xl = strlen(suffix);
        if (xl > sl)
                return NULL;
        if (memcmp(s + sl - xl, suffix, xl) != 0)
                return NULL;
        return (char *) s + sl - xl;
}

/* Sums the lengths of the NULL-terminated argument list, refusing totals that would overflow. */
static int vlength(size_t start, va_list ap, size_t *ret) {
        size_t total = start;

        for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
                size_t l = strlen(s);

                if (l > SIZE_MAX - 1 - total)
                        return -ENOMEM;
                total += l;
        }
        *ret = total;
        return 0;
}

static char *vappend(char *p, va_list ap) {
        for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
                size_t l = strlen(s);

                memcpy(p, s, l);
                p += l;
        }
        *p = '\0';
        return p;
}

char *strjoin(const char *a, ...) {
        size_t total, al;
        char *r, *p;
        va_list ap;

        if (!a)
                return strdup("");

        al = strlen(a);
        va_start(ap, a);
        if (vlength(al, ap, &total) < 0) {
                va_end(ap);
                return NULL;
        }
        va_end(ap);

        r = malloc(total + 1);
        if (!r)
                return NULL;
        memcpy(r, a, al);
        p = r + al;

        va_start(ap, a);
        (void) vappend(p, ap);
        va_end(ap);
        return r;
}

int strextend(char **x, ...) {
        size_t total, old;
        va_list ap;
        char *n;
        int r;

        assert(x);

        old = *x ? strlen(*x) : 0;
        va_start(ap, x);
        r = vlength(old, ap, &total);
        va_end(ap);
        if (r < 0)
                return r;

        n = realloc(*x, total + 1);
        if (!n)
                return -ENOMEM;
        *x = n;

        va_start(ap, x);
        (void) vappend(n + old, ap);
        va_end(ap);
        return 0;
}

char *strstrip(char *s) {
        char *e;

        assert(s);

        s += strspn(s, WHITESPACE);
        for (e = s + strlen(s); e > s && strchr(WHITESPACE, e[-1]); e--)
                ;
        *e = '\0';
        return s;
}

char *ascii_strlower(char *s) {
        assert(s);

        for (char *p = s; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');
        return s;
}

bool string_has_cc(const char *s, const char *ok) {
        assert(s);

        for (const char *p = s; *p; p++) {
                unsigned char c = (unsigned char) *p;

                if ((c < 0x20 || c == 0x7f) && !(ok && strchr(ok, *p)))
                        return true;
        }
        return false;
}

bool string_is_printable_ascii(const char *s) {
        assert(s);

        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7e)
                        return false;
        return true;
}

int free_and_strdup(char **p, const char *s) {
        char *t;

        assert(p);

        if (streq_ptr(*p, s))
                return 0;
        if (s) {
                t = strdup(s);
                if (!t)
                        return -ENOMEM;
        } else
                t = NULL;

        free(*p);
        *p = t;
        return 1;
}

bool string_is_valid_text(const char *s, size_t max) {
        return s && strnlen(s, max + 1) <= max && !string_has_cc(s, NULL);
}

bool utf8_is_valid(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;

        for (size_t i = 0; i < n;) {
                unsigned char c = p[i];
                size_t len;
                uint32_t cp, min;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if ((c & 0xe0) == 0xc0) {
                        len = 2;
                        cp = c & 0x1f;
                        min = 0x80;
                } else if ((c & 0xf0) == 0xe0) {
                        len = 3;
                        cp = c & 0x0f;
                        min = 0x800;
                } else if ((c & 0xf8) == 0xf0) {
                        len = 4;
                        cp = c & 0x07;
                        min = 0x10000;
                } else
                        return false;
                if (n - i < len)
                        return false;
                for (size_t j = 1; j < len; j++) {
                        if ((p[i + j] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i + j] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += len;
        }
        return true;
}
