/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>

#include "parse-util.h"
#include "string-util.h"

/* Fraction digits taken into account; further digits are accepted but ignored (floored). With at most 9
 * digits, (mult % den) * num stays below 10^18 and cannot overflow. */
#define FRACTION_DIGITS_MAX 9

int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" },
                          *const no[] = { "0", "no", "n", "false", "f", "off" };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

static bool ascii_isdigit(char c) {
        return c >= '0' && c <= '9';
}

static bool ascii_isalpha(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Parses a run of digits at *p into *ret and advances *p. At least one digit is required. */
static int parse_digits(const char **p, uint64_t *ret) {
        const char *q = *p;
        uint64_t v = 0;

        if (!ascii_isdigit(*q))
                return -EINVAL;
        for (; ascii_isdigit(*q); q++) {
                unsigned d = (unsigned) (*q - '0');

                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *p = q;
        *ret = v;
        return 0;
}

/* The magnitude of an all-digit string (an optional '-' in front when negative is non-NULL). */
static int parse_integer(const char *s, bool *negative, uint64_t *ret) {
        const char *p = s;
        bool neg = false;
        int r;

        if (!s)
                return -EINVAL;
        if (*p == '-') {
                neg = true;
                p++;
        }
        /* Junk is reported as such even when the digits before it would overflow. */
        if (*p == '\0' || p[strspn(p, "0123456789")] != '\0')
                return -EINVAL;
        if (neg && !negative)
                return -ERANGE;
        r = parse_digits(&p, ret);
        if (r < 0)
                return r;
        if (negative)
                *negative = neg;
        return 0;
}

int safe_atou64(const char *s, uint64_t *ret) {
        uint64_t v;
        int r;

        assert(ret);

        r = parse_integer(s, NULL, &v);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}

int safe_atou(const char *s, unsigned *ret) {
        uint64_t v;
        int r;

        assert(ret);

        r = parse_integer(s, NULL, &v);
        if (r < 0)
                return r;
        if (v > UINT_MAX)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}

int safe_atoi64(const char *s, int64_t *ret) {
        bool neg;
        uint64_t v;
        int r;

        assert(ret);

        r = parse_integer(s, &neg, &v);
        if (r < 0)
                return r;
        if (neg) {
                if (v > (uint64_t) INT64_MAX + 1)
                        return -ERANGE;
                *ret = v == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) v;
        } else {
                if (v > (uint64_t) INT64_MAX)
                        return -ERANGE;
                *ret = (int64_t) v;
        }
        return 0;
}

int safe_atoi(const char *s, int *ret) {
        int64_t v;
        int r;

        assert(ret);

        r = safe_atoi64(s, &v);
        if (r < 0)
                return r;
        if (v < INT_MIN || v > INT_MAX)
                return -ERANGE;
        *ret = (int) v;
        return 0;
}

/* "<digits>[.<digits>]" at *p: the integer part, and the fraction as num/den (den = 1 for none). */
static int parse_decimal(const char **p, uint64_t *ret_int, uint64_t *ret_num, uint64_t *ret_den) {
        const char *q = *p;
        uint64_t i, num = 0, den = 1;
        int r;

        r = parse_digits(&q, &i);
        if (r < 0)
                return r;
        if (*q == '.') {
                q++;
                if (!ascii_isdigit(*q))
                        return -EINVAL;
                for (unsigned k = 0; ascii_isdigit(*q); q++, k++)
                        if (k < FRACTION_DIGITS_MAX) {
                                num = num * 10 + (uint64_t) (*q - '0');
                                den *= 10;
                        }
        }
        *p = q;
        *ret_int = i;
        *ret_num = num;
        *ret_den = den;
        return 0;
}

/* (i + num/den) * mult, floored. num < den, so (mult / den) * num < mult and (mult % den) * num < den². */
static int scale(uint64_t i, uint64_t num, uint64_t den, uint64_t mult, uint64_t *ret) {
        uint64_t v, f;

        if (__builtin_mul_overflow(i, mult, &v))
                return -ERANGE;
        f = (mult / den) * num + (mult % den) * num / den;
        if (__builtin_add_overflow(v, f, &v))
                return -ERANGE;
        *ret = v;
        return 0;
}

static const struct {
        const char *suffix;
        usec_t usec;
} time_units[] = {
        { "us", 1 },
        { "usec", 1 },
        { "ms", USEC_PER_MSEC },
        { "msec", USEC_PER_MSEC },
        { "s", USEC_PER_SEC },
        { "sec", USEC_PER_SEC },
        { "second", USEC_PER_SEC },
        { "seconds", USEC_PER_SEC },
        { "m", USEC_PER_MINUTE },
        { "min", USEC_PER_MINUTE },
        { "minute", USEC_PER_MINUTE },
        { "minutes", USEC_PER_MINUTE },
        { "h", USEC_PER_HOUR },
        { "hr", USEC_PER_HOUR },
        { "hour", USEC_PER_HOUR },
        { "hours", USEC_PER_HOUR },
        { "d", USEC_PER_DAY },
        { "day", USEC_PER_DAY },
        { "days", USEC_PER_DAY },
        { "w", USEC_PER_WEEK },
        { "week", USEC_PER_WEEK },
        { "weeks", USEC_PER_WEEK },
        { "y", USEC_PER_YEAR },         /* 365.25 days, as format_timespan() prints it */
        { "year", USEC_PER_YEAR },
        { "years", USEC_PER_YEAR },
};

static int time_unit_lookup(const char *s, size_t n, usec_t *ret) {
        for (size_t i = 0; i < ELEMENTSOF(time_units); i++)
                if (strlen(time_units[i].suffix) == n && strneq(s, time_units[i].suffix, n)) {
                        *ret = time_units[i].usec;
                        return 0;
                }
        return -EINVAL;
}

static size_t alpha_span(const char *s) {
        size_t n = 0;

        while (ascii_isalpha(s[n]))
                n++;
        return n;
}

int parse_sec(const char *s, usec_t *ret) {
        usec_t total = 0;
        const char *p, *e;
        int r;

        assert(ret);

        if (!s)
                return -EINVAL;

        p = s + strspn(s, WHITESPACE);
        e = startswith(p, "infinity");
        if (e && e[strspn(e, WHITESPACE)] == '\0') {
                *ret = USEC_INFINITY;
                return 0;
        }
        if (*p == '\0')
                return -EINVAL;

        while (*p != '\0') {
                uint64_t i, num, den;
                usec_t mult, v;
                size_t n;

                if (*p == '-')
                        return -ERANGE;
                r = parse_decimal(&p, &i, &num, &den);
                if (r < 0)
                        return r;
                p += strspn(p, WHITESPACE);

                n = alpha_span(p);
                if (n == 0)
                        mult = USEC_PER_SEC;
                else {
                        r = time_unit_lookup(p, n, &mult);
                        if (r < 0)
                                return r;
                        p += n;
                }
                r = scale(i, num, den, mult, &v);
                if (r < 0)
                        return r;
                /* USEC_INFINITY is reserved for "infinity": a finite sum must stay below it. */
                if (v >= USEC_INFINITY - total)
                        return -ERANGE;
                total += v;

                /* Components are separated by optional whitespace; anything else is junk. */
                p += strspn(p, WHITESPACE);
                if (*p != '\0' && !ascii_isdigit(*p) && *p != '-')
                        return -EINVAL;
        }

        *ret = total;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } table[] = {
                { "B", 1 },
                { "K", 1ULL << 10 }, { "KB", 1ULL << 10 },
                { "M", 1ULL << 20 }, { "MB", 1ULL << 20 },
                { "G", 1ULL << 30 }, { "GB", 1ULL << 30 },
                { "T", 1ULL << 40 }, { "TB", 1ULL << 40 },
        };
        uint64_t i, num, den, mult = 1, v;
        const char *p;
        size_t n;
        int r;

        assert(ret);

        if (!s)
                return -EINVAL;

        p = s + strspn(s, WHITESPACE);
        if (*p == '-')
                return ascii_isdigit(p[1]) ? -ERANGE : -EINVAL;
        r = parse_decimal(&p, &i, &num, &den);
        if (r < 0)
                return r;
        p += strspn(p, WHITESPACE);

        n = alpha_span(p);
        if (n > 0) {
                size_t k;

                for (k = 0; k < ELEMENTSOF(table); k++)
                        if (strlen(table[k].suffix) == n && strneq(p, table[k].suffix, n))
                                break;
                if (k >= ELEMENTSOF(table))
                        return -EINVAL;
                mult = table[k].factor;
                p += n;
        }
        if (p[strspn(p, WHITESPACE)] != '\0')
                return -EINVAL;
        /* A fraction of a byte is meaningless: "1.5" or "1.5B" is a typo, not a size. */
        if (den > 1 && mult == 1)
                return -EINVAL;

        r = scale(i, num, den, mult, &v);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}

int parse_port(const char *s, uint16_t *ret) {
        unsigned u;
        int r;

        assert(ret);

        r = safe_atou(s, &u);
        if (r < 0)
                return r;
        if (u == 0 || u > UINT16_MAX)
                return -ERANGE;
        *ret = (uint16_t) u;
        return 0;
}

bool hostname_is_valid(const char *s) {
        size_t label = 0;
        bool numeric = true;
        const char *p;

        if (isempty(s) || strlen(s) > HOSTNAME_MAX)
                return false;

        for (p = s; *p; p++) {
                if (*p == '.') {
                        /* Empty label (leading, doubled or trailing dot) or a label ending in '-'. */
                        if (label == 0 || p[-1] == '-')
                                return false;
                        label = 0;
                        numeric = true;
                        continue;
                }
                if (*p == '-') {
                        if (label == 0)
                                return false;
                } else if (!ascii_isdigit(*p) && !ascii_isalpha(*p))
                        return false;
                if (!ascii_isdigit(*p))
                        numeric = false;
                if (++label > 63)
                        return false;
        }
        return label > 0 && p[-1] != '-' && !numeric;
}

static int copy_host(const char *s, size_t n, char *buf, size_t size) {
        if (n == 0 || n >= size)
                return -EINVAL;
        memcpy(buf, s, n);
        buf[n] = '\0';
        return 0;
}

int parse_host_port(const char *s, uint16_t default_port, HostPort *ret) {
        HostPort hp = { .family = AF_UNSPEC };
        char host[sizeof(hp.host)];
        const char *port = NULL;
        int r;

        assert(ret);

        if (isempty(s))
                return -EINVAL;

        if (s[0] == '[') {
                struct in6_addr a6;
                const char *e;

                e = strchr(s + 1, ']');
                if (!e)
                        return -EINVAL;
                r = copy_host(s + 1, (size_t) (e - s - 1), host, sizeof(host));
                if (r < 0)
                        return r;
                /* Only IPv6 goes in brackets; inet_pton also refuses zone ids ("%eth0"). */
                if (inet_pton(AF_INET6, host, &a6) != 1)
                        return -EINVAL;
                if (!inet_ntop(AF_INET6, &a6, hp.host, sizeof(hp.host)))
                        return -EINVAL;
                hp.family = AF_INET6;

                if (e[1] == ':')
                        port = e + 2;
                else if (e[1] != '\0')
                        return -EINVAL;
        } else {
                const char *colon = strchr(s, ':');
                struct in_addr a4;

                /* A second colon means an IPv6 address without brackets, which is ambiguous. */
                if (colon && strchr(colon + 1, ':'))
                        return -EINVAL;
                r = copy_host(s, colon ? (size_t) (colon - s) : strlen(s), host, sizeof(host));
                if (r < 0)
                        return r;

                if (inet_pton(AF_INET, host, &a4) == 1) {
                        if (!inet_ntop(AF_INET, &a4, hp.host, sizeof(hp.host)))
                                return -EINVAL;
                        hp.family = AF_INET;
                } else if (hostname_is_valid(host)) {
                        strcpy(hp.host, host);
                        ascii_strlower(hp.host);
                } else
                        return -EINVAL;

                if (colon)
                        port = colon + 1;
        }

        if (port) {
                r = parse_port(port, &hp.port);
                if (r < 0)
                        return r;
        } else if (default_port == 0)
                return -EINVAL;
        else
                hp.port = default_port;

        *ret = hp;
        return 0;
}

char *host_port_to_string(const HostPort *hp, char *buf, size_t size) {
        int n;

        assert(hp);
        assert(buf || size == 0);

        if (hp->host[0] == '\0' || memchr(hp->host, '\0', sizeof(hp->host)) == NULL)
                return NULL;
        if (hp->family == AF_INET6)
                n = snprintf(buf, size, "[%s]:%u", hp->host, (unsigned) hp->port);
        else
                n = snprintf(buf, size, "%s:%u", hp->host, (unsigned) hp->port);
        if (n < 0 || (size_t) n >= size)
                return NULL;
        return buf;
}

bool host_is_unspecified(const HostPort *hp) {
        assert(hp);
        return (hp->family == AF_INET && streq(hp->host, "0.0.0.0")) ||
               (hp->family == AF_INET6 && streq(hp->host, "::"));
}

bool host_is_loopback(const HostPort *hp) {
        struct in6_addr a6;
        struct in_addr a4;

        assert(hp);
        switch (hp->family) {
        case AF_INET:
                return inet_pton(AF_INET, hp->host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
        case AF_INET6:
                return inet_pton(AF_INET6, hp->host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        default:
                return false;
        }
}

int parse_listen_address(const char *s, bool loopback_only, HostPort *ret) {
        char host[HOST_PORT_STRING_MAX];
        const char *z;
        HostPort hp;
        int r;

        assert(ret);

        if (!s)
                return -EINVAL;
        z = endswith(s, ":0");
        if (z) {
                size_t n = (size_t) (z - s);

                if (n >= sizeof(host))
                        return -EINVAL;
                memcpy(host, s, n);
                host[n] = '\0';
                /* What is left must be a bare host. */
                if (parse_host_port(host, 0, &hp) >= 0)
                        return -EINVAL;
                r = parse_host_port(host, 1, &hp);
                hp.port = 0;
        } else
                r = parse_host_port(s, 0, &hp);
        if (r < 0)
                return r;
        if (hp.family == AF_UNSPEC)
                return -EINVAL;
        if (loopback_only && !host_is_loopback(&hp))
                return -EINVAL;
        *ret = hp;
        return 0;
}
