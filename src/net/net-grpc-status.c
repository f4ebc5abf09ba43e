/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"
#include "net-grpc-status.h"

static const char *const grpc_status_table[_GRPC_STATUS_MAX] = {
        [GRPC_STATUS_OK] = "OK",
        [GRPC_STATUS_CANCELLED] = "CANCELLED",
        [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
        [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
        [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [GRPC_STATUS_ABORTED] = "ABORTED",
        [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [GRPC_STATUS_INTERNAL] = "INTERNAL",
        [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
        [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
        [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *grpc_status_to_string(GrpcStatus s) {
        if (s < 0 || s >= _GRPC_STATUS_MAX)
                return NULL;
        return grpc_status_table[s];
}

GrpcStatus grpc_status_from_string(const char *s) {
        if (!s)
                return -EINVAL;

        for (GrpcStatus i = 0; i < _GRPC_STATUS_MAX; i++)
                if (streq(grpc_status_table[i], s))
                        return i;
        return -EINVAL;
}

int grpc_status_parse(const char *value, GrpcStatus *ret) {
        unsigned v = 0;
        size_t n;

        assert(ret);

        if (!value)
                return -EINVAL;

        n = strlen(value);
        /* Two digits cover every code; a third digit is a syntactically fine but unknown code. */
        if (n == 0 || n > 3 || strspn(value, "0123456789") != n || (n > 1 && value[0] == '0'))
                return -EINVAL;

        for (size_t i = 0; i < n; i++)
                v = v * 10 + (unsigned) (value[i] - '0');
        if (v >= _GRPC_STATUS_MAX)
                return -ERANGE;

        *ret = (GrpcStatus) v;
        return 0;
}

GrpcStatus grpc_status_from_errno(int error) {
        switch (ERRNO_VALUE(error)) {
        case 0:
                return GRPC_STATUS_OK;
        case ECANCELED:
                return GRPC_STATUS_CANCELLED;
        case EREMOTEIO:
                return GRPC_STATUS_UNKNOWN;
        case EINVAL:
        case EBADMSG:
        case E2BIG:
        case EDOM:
        case EILSEQ:
                return GRPC_STATUS_INVALID_ARGUMENT;
        case ETIMEDOUT:
        case ETIME:
                return GRPC_STATUS_DEADLINE_EXCEEDED;
        case ENOENT:
        case ENXIO:
        case ESRCH:
                return GRPC_STATUS_NOT_FOUND;
        case EEXIST:
                return GRPC_STATUS_ALREADY_EXISTS;
        case EACCES:
        case EPERM:
        case EKEYREVOKED:
                return GRPC_STATUS_PERMISSION_DENIED;
        case ENOBUFS:
        case ENOMEM:
        case EMSGSIZE:
        case ENOSPC:
        case EDQUOT:
        case EMFILE:
        case ENFILE:
        case EUSERS:
                return GRPC_STATUS_RESOURCE_EXHAUSTED;
        case EPROTO:
        case ENOTEMPTY:
                return GRPC_STATUS_FAILED_PRECONDITION;
        case EBUSY:
        case EDEADLK:
                return GRPC_STATUS_ABORTED;
        case ERANGE:
        case EOVERFLOW:
                return GRPC_STATUS_OUT_OF_RANGE;
        case EOPNOTSUPP:
        case ENOSYS:
        case EPROTONOSUPPORT:
                return GRPC_STATUS_UNIMPLEMENTED;
        case EAGAIN:
        case ECONNREFUSED:
        case ECONNRESET:
        case ECONNABORTED:
        case EHOSTUNREACH:
        case ENETUNREACH:
        case ENETDOWN:
        case ENOTCONN:
        case EPIPE:
        case ESHUTDOWN:
                return GRPC_STATUS_UNAVAILABLE;
        case EUCLEAN:
                return GRPC_STATUS_DATA_LOSS;
        case EKEYREJECTED:
        case EKEYEXPIRED:
        case ENOKEY:
                return GRPC_STATUS_UNAUTHENTICATED;
        default:
                return GRPC_STATUS_INTERNAL;
        }
}

int grpc_status_to_errno(GrpcStatus s) {
        static const int table[_GRPC_STATUS_MAX] = {
                [GRPC_STATUS_OK] = 0,
                [GRPC_STATUS_CANCELLED] = -ECANCELED,
                [GRPC_STATUS_UNKNOWN] = -EREMOTEIO,
                [GRPC_STATUS_INVALID_ARGUMENT] = -EINVAL,
                [GRPC_STATUS_DEADLINE_EXCEEDED] = -ETIMEDOUT,
                [GRPC_STATUS_NOT_FOUND] = -ENOENT,
                [GRPC_STATUS_ALREADY_EXISTS] = -EEXIST,
                [GRPC_STATUS_PERMISSION_DENIED] = -EACCES,
                [GRPC_STATUS_RESOURCE_EXHAUSTED] = -ENOBUFS,
                [GRPC_STATUS_FAILED_PRECONDITION] = -EPROTO,
                [GRPC_STATUS_ABORTED] = -EBUSY,
                [GRPC_STATUS_OUT_OF_RANGE] = -ERANGE,
                [GRPC_STATUS_UNIMPLEMENTED] = -EOPNOTSUPP,
                [GRPC_STATUS_INTERNAL] = -EIO,
                [GRPC_STATUS_UNAVAILABLE] = -EAGAIN,
                [GRPC_STATUS_DATA_LOSS] = -EUCLEAN,
                [GRPC_STATUS_UNAUTHENTICATED] = -EKEYREJECTED,
        };

        if (s < 0 || s >= _GRPC_STATUS_MAX)
                return -EREMOTEIO;
        return table[s];
}

static const struct {
        char unit;
        usec_t usec; /* 0 for nanoseconds, which are a fraction of our unit */
} grpc_timeout_units[] = {
        { 'n', 0 },
        { 'u', 1 },
        { 'm', USEC_PER_MSEC },
        { 'S', USEC_PER_SEC },
        { 'M', USEC_PER_MINUTE },
        { 'H', USEC_PER_HOUR },
};

#define GRPC_TIMEOUT_VALUE_MAX 99999999ULL

int grpc_timeout_parse(const char *value, usec_t *ret) {
        uint64_t v = 0;
        size_t n;

        assert(ret);

        if (!value)
                return -EINVAL;

        n = strspn(value, "0123456789");
        if (n == 0 || n > GRPC_TIMEOUT_DIGITS_MAX || value[n] == '\0' || value[n + 1] != '\0')
                return -EINVAL;

        for (size_t i = 0; i < n; i++)
                v = v * 10 + (uint64_t) (value[i] - '0');

        /* At most 99999999 hours: no overflow in µs. */
        for (size_t i = 0; i < ELEMENTSOF(grpc_timeout_units); i++) {
                if (grpc_timeout_units[i].unit != value[n])
                        continue;

                if (grpc_timeout_units[i].usec == 0)
                        *ret = v / 1000 + (v % 1000 != 0);
                else
                        *ret = v * grpc_timeout_units[i].usec;
                return 0;
        }

        return -EINVAL;
}

const char *grpc_timeout_format(usec_t t, char buf[static GRPC_TIMEOUT_STRING_MAX]) {
        assert(buf);

        if (t == USEC_INFINITY)
                return NULL;

        for (size_t i = 0; i < ELEMENTSOF(grpc_timeout_units); i++) {
                usec_t u = grpc_timeout_units[i].usec;
                uint64_t v;

                if (u == 0) {
                        if (t > GRPC_TIMEOUT_VALUE_MAX / 1000)
                                continue;
                        v = t * 1000;
                } else
                        v = t / u + (t % u != 0);

                if (v <= GRPC_TIMEOUT_VALUE_MAX) {
                        (void) snprintf(buf, GRPC_TIMEOUT_STRING_MAX, "%" PRIu64 "%c", v,
                                        grpc_timeout_units[i].unit);
                        return buf;
                }
        }

        (void) snprintf(buf, GRPC_TIMEOUT_STRING_MAX, "%lluH", GRPC_TIMEOUT_VALUE_MAX);
        return buf;
}

/* Length of the UTF-8 character starting at s[0] as far as its continuation bytes go (at most 4), so that
 * truncation never splits one. Invalid sequences count byte by byte. */
static size_t utf8_char_span(const uint8_t *s, size_t n) {
        size_t want, k;

        if (s[0] < 0xc0)
                want = 1;
        else if (s[0] < 0xe0)
                want = 2;
        else if (s[0] < 0xf0)
                want = 3;
        else
                want = 4;

        for (k = 1; k < want && k < n && (s[k] & 0xc0) == 0x80; k++)
                ;
        return k;
}

static bool percent_byte_unencoded(uint8_t c) {
        return c >= 0x20 && c <= 0x7e && c != '%';
}

int grpc_message_encode(const char *message, char **ret) {
        static const char hex[] = "0123456789ABCDEF";
        const uint8_t *s = (const uint8_t *) message;
        _cleanup_free_ char *buf = NULL;
        size_t n, i = 0, o = 0;

        assert(message);
        assert(ret);

        buf = malloc(GRPC_STATUS_MESSAGE_MAX + 1);
        if (!buf)
                return -ENOMEM;

        n = strlen(message);
        while (i < n) {
                size_t span = utf8_char_span(s + i, n - i), need = 0;

                for (size_t k = 0; k < span; k++)
                        need += percent_byte_unencoded(s[i + k]) ? 1 : 3;
                if (o + need > GRPC_STATUS_MESSAGE_MAX)
                        break;

                for (size_t k = 0; k < span; k++) {
                        uint8_t c = s[i + k];

                        if (percent_byte_unencoded(c))
                                buf[o++] = (char) c;
                        else {
                                buf[o++] = '%';
                                buf[o++] = hex[c >> 4];
                                buf[o++] = hex[c & 0xf];
                        }
                }
                i += span;
        }
        buf[o] = '\0';

        *ret = TAKE_PTR(buf);
        return 0;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -EINVAL;
}

int grpc_message_decode(const char *value, char **ret) {
        /* Up to 3 bytes past the cap are decoded, so that a character straddling it is seen whole. */
        _cleanup_free_ uint8_t *buf = NULL;
        size_t o = 0, i = 0, k;

        assert(value);
        assert(ret);

        buf = malloc(GRPC_STATUS_MESSAGE_MAX + 4);
        if (!buf)
                return -ENOMEM;

        while (value[i] != '\0' && o < GRPC_STATUS_MESSAGE_MAX + 3) {
                int hi = -EINVAL, lo = -EINVAL;

                if (value[i] == '%') {
                        hi = unhex(value[i + 1]);
                        /* Not read past the NUL: unhex('\0') fails first. */
                        if (hi >= 0)
                                lo = unhex(value[i + 2]);
                }

                if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
                        buf[o++] = (uint8_t) (hi << 4 | lo);
                        i += 3;
                } else
                        buf[o++] = (uint8_t) value[i++];
        }

        /* Cut at the last character start at or before the cap. */
        if (o > GRPC_STATUS_MESSAGE_MAX) {
                for (k = 0; k < GRPC_STATUS_MESSAGE_MAX;) {
                        size_t span = utf8_char_span(buf + k, o - k);

                        if (k + span > GRPC_STATUS_MESSAGE_MAX)
                                break;
                        k += span;
                }
                o = k;
        }
        buf[o] = '\0';

        *ret = (char *) TAKE_PTR(buf);
        return 0;
}

bool grpc_content_type_is_valid(const char *value) {
        const char *p;

        if (!value || strncasecmp(value, "application/grpc", STRLEN("application/grpc")) != 0)
                return false;

        p = value + STRLEN("application/grpc");
        if (strncasecmp(p, "+proto", STRLEN("+proto")) == 0)
                p += STRLEN("+proto");

        /* Parameters may follow, after optional whitespace (RFC 9110 §8.3.1). */
        p += strspn(p, " \t");
        return *p == '\0' || *p == ';';
}
