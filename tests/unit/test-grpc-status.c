/* SPDX-License-Identifier: Apache-2.0 */

#include "macro.h"
#include "net-grpc-status.h"
#include "tests.h"

static const char *const status_names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

TEST(status_strings) {
        /* The numbering is the wire format: it must match statuscodes.md exactly. */
        ASSERT_EQ(_GRPC_STATUS_MAX, 17);
        ASSERT_EQ(sizeof(status_names) / sizeof(status_names[0]), 17);

        for (int i = 0; i < _GRPC_STATUS_MAX; i++) {
                CASE("%d", i);
                ASSERT_STREQ(grpc_status_to_string((GrpcStatus) i), status_names[i]);
                ASSERT_EQ(grpc_status_from_string(status_names[i]), i);
        }
        ASSERT_EQ(GRPC_STATUS_PERMISSION_DENIED, 7);
        ASSERT_EQ(GRPC_STATUS_UNAUTHENTICATED, 16);

        ASSERT_NULL(grpc_status_to_string((GrpcStatus) -1));
        ASSERT_NULL(grpc_status_to_string(_GRPC_STATUS_MAX));
        ASSERT_ERROR(grpc_status_from_string("permission_denied"), EINVAL);
        ASSERT_ERROR(grpc_status_from_string("PERMISSION_DENIED "), EINVAL);
        ASSERT_ERROR(grpc_status_from_string(""), EINVAL);
        ASSERT_ERROR(grpc_status_from_string(NULL), EINVAL);
}

TEST(status_parse) {
        static const struct {
                const char *value;
                int expected; /* status, or negative errno */
        } table[] = {
                { "0", GRPC_STATUS_OK },
                { "7", GRPC_STATUS_PERMISSION_DENIED },
                { "16", GRPC_STATUS_UNAUTHENTICATED },
                { "17", -ERANGE },
                { "99", -ERANGE },
                { "999", -ERANGE },
                { "1000", -EINVAL },
                { "00", -EINVAL },
                { "07", -EINVAL },
                { "", -EINVAL },
                { "-1", -EINVAL },
                { "+1", -EINVAL },
                { " 1", -EINVAL },
                { "1 ", -EINVAL },
                { "0x1", -EINVAL },
                { "a", -EINVAL },
                { NULL, -EINVAL },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                GrpcStatus s = (GrpcStatus) 1234;

                CASE("'%s'", table[i].value ?: "(null)");
                if (table[i].expected >= 0) {
                        ASSERT_OK(grpc_status_parse(table[i].value, &s));
                        ASSERT_EQ(s, table[i].expected);
                } else {
                        ASSERT_ERROR(grpc_status_parse(table[i].value, &s), -table[i].expected);
                        ASSERT_EQ(s, 1234);
                }
        }
}

TEST(status_from_errno) {
        static const struct {
                int error;
                GrpcStatus status;
        } table[] = {
                { 0, GRPC_STATUS_OK },
                { -ECANCELED, GRPC_STATUS_CANCELLED },
                { -EREMOTEIO, GRPC_STATUS_UNKNOWN },
                { -EINVAL, GRPC_STATUS_INVALID_ARGUMENT },
                { -EBADMSG, GRPC_STATUS_INVALID_ARGUMENT },
                { -E2BIG, GRPC_STATUS_INVALID_ARGUMENT },
                { -EDOM, GRPC_STATUS_INVALID_ARGUMENT },
                { -EILSEQ, GRPC_STATUS_INVALID_ARGUMENT },
                { -ETIMEDOUT, GRPC_STATUS_DEADLINE_EXCEEDED },
                { -ETIME, GRPC_STATUS_DEADLINE_EXCEEDED },
                { -ENOENT, GRPC_STATUS_NOT_FOUND },
                { -ENXIO, GRPC_STATUS_NOT_FOUND },
                { -ESRCH, GRPC_STATUS_NOT_FOUND },
                { -EEXIST, GRPC_STATUS_ALREADY_EXISTS },
                { -EPERM, GRPC_STATUS_PERMISSION_DENIED },
                { -EACCES, GRPC_STATUS_PERMISSION_DENIED },
                { -EKEYREVOKED, GRPC_STATUS_PERMISSION_DENIED },
                { -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -EMSGSIZE, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -ENOBUFS, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -EDQUOT, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -EMFILE, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -ENFILE, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -EUSERS, GRPC_STATUS_RESOURCE_EXHAUSTED },
                { -EPROTO, GRPC_STATUS_FAILED_PRECONDITION },
                { -ENOTEMPTY, GRPC_STATUS_FAILED_PRECONDITION },
                { -EBUSY, GRPC_STATUS_ABORTED },
                { -EDEADLK, GRPC_STATUS_ABORTED },
                { -ERANGE, GRPC_STATUS_OUT_OF_RANGE },
                { -EOVERFLOW, GRPC_STATUS_OUT_OF_RANGE },
                { -EOPNOTSUPP, GRPC_STATUS_UNIMPLEMENTED },
                { -ENOSYS, GRPC_STATUS_UNIMPLEMENTED },
                { -EPROTONOSUPPORT, GRPC_STATUS_UNIMPLEMENTED }, /* compressed message from the decoder */
                { -EAGAIN, GRPC_STATUS_UNAVAILABLE },
                { -ECONNREFUSED, GRPC_STATUS_UNAVAILABLE },
                { -ECONNRESET, GRPC_STATUS_UNAVAILABLE },
                { -ECONNABORTED, GRPC_STATUS_UNAVAILABLE },
                { -EHOSTUNREACH, GRPC_STATUS_UNAVAILABLE },
                { -ENETUNREACH, GRPC_STATUS_UNAVAILABLE },
                { -ENETDOWN, GRPC_STATUS_UNAVAILABLE },
                { -ENOTCONN, GRPC_STATUS_UNAVAILABLE },
                { -EPIPE, GRPC_STATUS_UNAVAILABLE },
                { -ESHUTDOWN, GRPC_STATUS_UNAVAILABLE },
                { -EUCLEAN, GRPC_STATUS_DATA_LOSS },
                { -EKEYREJECTED, GRPC_STATUS_UNAUTHENTICATED },
                { -EKEYEXPIRED, GRPC_STATUS_UNAUTHENTICATED },
                { -ENOKEY, GRPC_STATUS_UNAUTHENTICATED },
                /* Everything else is the server's fault. */
                { -EIO, GRPC_STATUS_INTERNAL },
                { -EXDEV, GRPC_STATUS_INTERNAL },
                { -EBADF, GRPC_STATUS_INTERNAL },
                { -4095, GRPC_STATUS_INTERNAL },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                CASE("%s", strerrorname_np(-table[i].error) ?: "?");
                ASSERT_STREQ(grpc_status_to_string(grpc_status_from_errno(table[i].error)),
                             grpc_status_to_string(table[i].status));
                /* The sign does not matter. */
                ASSERT_EQ(grpc_status_from_errno(-table[i].error), table[i].status);
        }
}

TEST(status_to_errno) {
        static const int table[] = {
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

        ASSERT_EQ(sizeof(table) / sizeof(table[0]), _GRPC_STATUS_MAX);
        for (int s = 0; s < _GRPC_STATUS_MAX; s++) {
                CASE("%s", grpc_status_to_string((GrpcStatus) s));
                ASSERT_EQ(grpc_status_to_errno((GrpcStatus) s), table[s]);
                /* Client and server tables agree: a status survives errno and back. */
                ASSERT_EQ(grpc_status_from_errno(grpc_status_to_errno((GrpcStatus) s)), s);
        }

        /* A code we do not know is treated like UNKNOWN (statuscodes.md: "Error parsing returned
         * status"). */
        CASE("out of range");
        ASSERT_ERROR(grpc_status_to_errno((GrpcStatus) 17), EREMOTEIO);
        ASSERT_ERROR(grpc_status_to_errno((GrpcStatus) -1), EREMOTEIO);
}

TEST(timeout_parse) {
        static const struct {
                const char *value;
                int error;
                usec_t expected;
        } table[] = {
                { "1H", 0, USEC_PER_HOUR },
                { "2M", 0, 2 * USEC_PER_MINUTE },
                { "3S", 0, 3 * USEC_PER_SEC },
                { "4m", 0, 4 * USEC_PER_MSEC },
                { "5u", 0, 5 },
                { "6000n", 0, 6 },
                /* Nanoseconds round up: a non-zero timeout never becomes "already expired". */
                { "1n", 0, 1 },
                { "1000n", 0, 1 },
                { "1001n", 0, 2 },
                { "0n", 0, 0 },
                { "0S", 0, 0 },
                { "00000001S", 0, USEC_PER_SEC }, /* 8 digits, leading zeros included */
                { "12345678S", 0, 12345678 * USEC_PER_SEC },
                { "99999999H", 0, 99999999 * USEC_PER_HOUR },
                { "99999999n", 0, 100000 },
                { "", EINVAL, 0 },
                { "S", EINVAL, 0 },
                { "1", EINVAL, 0 },               /* no unit */
                { "12345678", EINVAL, 0 },
                { "123456789S", EINVAL, 0 },      /* 9 digits */
                { "000000001S", EINVAL, 0 },
                { "1x", EINVAL, 0 },
                { "1s", EINVAL, 0 },              /* units are case-sensitive: 's' is not 'S' */
                { "1h", EINVAL, 0 },
                { "1U", EINVAL, 0 },
                { "1N", EINVAL, 0 },
                { "+1S", EINVAL, 0 },
                { "-1S", EINVAL, 0 },
                { " 1S", EINVAL, 0 },
                { "1S ", EINVAL, 0 },
                { "1 S", EINVAL, 0 },
                { "1SS", EINVAL, 0 },
                { "1.5S", EINVAL, 0 },
                { "0x1S", EINVAL, 0 },
                { NULL, EINVAL, 0 },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                usec_t t = 4242;

                CASE("'%s'", table[i].value ?: "(null)");
                if (table[i].error == 0) {
                        ASSERT_OK(grpc_timeout_parse(table[i].value, &t));
                        ASSERT_UEQ(t, table[i].expected);
                } else {
                        ASSERT_ERROR(grpc_timeout_parse(table[i].value, &t), table[i].error);
                        ASSERT_UEQ(t, 4242);
                }
        }
}

TEST(timeout_format) {
        static const struct {
                usec_t t;
                const char *expected;
        } table[] = {
                { 0, "0n" },
                { 1, "1000n" },
                { 99999, "99999000n" },
                { 100000, "100000u" },
                { USEC_PER_SEC, "1000000u" },
                { 99999999, "99999999u" },
                { 100000000, "100000m" },
                { 100000001, "100001m" }, /* rounds up */
                { USEC_PER_HOUR, "3600000m" },
                { 99999999 * USEC_PER_MSEC, "99999999m" },
                { 99999999 * USEC_PER_MSEC + 1, "100000S" },
                { 30 * USEC_PER_DAY, "2592000S" },
                { 99999999 * USEC_PER_SEC + 1, "1666667M" },
                { 99999999 * USEC_PER_HOUR, "99999999H" },
                { 99999999 * USEC_PER_HOUR + 1, "99999999H" }, /* clamped */
                { USEC_INFINITY - 1, "99999999H" },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                char buf[GRPC_TIMEOUT_STRING_MAX];

                CASE("%" PRIu64, table[i].t);
                ASSERT_STREQ(grpc_timeout_format(table[i].t, buf), table[i].expected);
        }

        /* Infinity has no encoding: the header is left out. */
        char buf[GRPC_TIMEOUT_STRING_MAX];
        ASSERT_NULL(grpc_timeout_format(USEC_INFINITY, buf));
}

TEST(timeout_round_trip) {
        static const usec_t table[] = {
                0, 1, 999, 1000, 1001, 99999, 100000, 123456789, USEC_PER_SEC, 10 * USEC_PER_SEC,
                USEC_PER_HOUR + 1, USEC_PER_DAY, USEC_PER_WEEK + 12345, USEC_PER_YEAR, 1000 * USEC_PER_YEAR,
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                char buf[GRPC_TIMEOUT_STRING_MAX];
                usec_t back;
                const char *s;

                CASE("%" PRIu64, table[i]);
                s = ASSERT_NOT_NULL(grpc_timeout_format(table[i], buf));
                ASSERT_UCMP(strlen(s), <=, GRPC_TIMEOUT_DIGITS_MAX + 1);
                ASSERT_OK(grpc_timeout_parse(s, &back));
                /* Never shorter; exact while microseconds fit in 8 digits. */
                ASSERT_UCMP(back, >=, table[i]);
                if (table[i] <= 99999999)
                        ASSERT_UEQ(back, table[i]);
                else
                        /* Rounding is by less than one unit, and the unit is the finest that fits 8 digits,
                         * at most 1000 times the next finer one: within 1 part in 10^5. */
                        ASSERT_UCMP(back - table[i], <=, table[i] / 100000);
        }
}

TEST(message_encode) {
        static const struct {
                const char *in;
                const char *out;
        } table[] = {
                { "", "" },
                { "hello world", "hello world" },
                { " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", " !\"#$&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~" },
                { "100%", "100%25" },
                { "%%", "%25%25" },
                { "a\nb", "a%0Ab" },
                { "\t\r\x1f\x7f", "%09%0D%1F%7F" },
                { "caf\xc3\xa9", "caf%C3%A9" },
                { "\xe2\x82\xac", "%E2%82%AC" },
                { "\xf0\x9f\x98\x80", "%F0%9F%98%80" },
                { "\xff", "%FF" }, /* not UTF-8, still encoded byte by byte */
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                _cleanup_free_ char *out = NULL;

                CASE("'%s'", table[i].out);
                ASSERT_OK(grpc_message_encode(table[i].in, &out));
                ASSERT_STREQ(out, table[i].out);
        }
}

TEST(message_decode) {
        static const struct {
                const char *in;
                const char *out;
        } table[] = {
                { "", "" },
                { "plain", "plain" },
                { "100%25", "100%" },
                { "caf%C3%A9", "caf\xc3\xa9" },
                { "caf%c3%a9", "caf\xc3\xa9" }, /* lower-case hex is accepted */
                { "a%0Ab", "a\nb" },
                { "%41%42", "AB" },
                /* Lenient: broken sequences pass through unchanged. */
                { "%", "%" },
                { "abc%", "abc%" },
                { "%4", "%4" },
                { "%G1", "%G1" },
                { "%1G", "%1G" },
                { "%%41", "%A" },
                { "% 41", "% 41" },
                /* NUL cannot be carried in a C string: kept encoded. */
                { "a%00b", "a%00b" },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                _cleanup_free_ char *out = NULL;

                CASE("'%s'", table[i].in);
                ASSERT_OK(grpc_message_decode(table[i].in, &out));
                ASSERT_STREQ(out, table[i].out);
        }
}

TEST(message_round_trip) {
        static const char *const table[] = {
                "",
                "token already used",
                "100% done, 0% left",
                "line one\nline two\ttabbed",
                "Z\xc3\xbcrich \xe2\x86\x92 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x94\x92",
                "%41 is not A",
                "\x01\x7f\x80\xff",
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                _cleanup_free_ char *enc = NULL, *dec = NULL;

                CASE("#%zu", i);
                ASSERT_OK(grpc_message_encode(table[i], &enc));
                /* The encoded form is a valid header value: printable ASCII only. */
                for (const char *p = enc; *p; p++)
                        ASSERT_TRUE(*p >= 0x20 && *p <= 0x7e);
                ASSERT_OK(grpc_message_decode(enc, &dec));
                ASSERT_STREQ(dec, table[i]);
        }
}

static char *repeat(char c, size_t n, const char *suffix) {
        char *s = ASSERT_NOT_NULL(malloc(n + strlen(suffix) + 1));

        memset(s, c, n);
        strcpy(s + n, suffix);
        return s;
}

TEST(message_encode_truncates_at_character_boundary) {
        static const struct {
                size_t n_a;
                const char *suffix;
                size_t expected_len;
                const char *expected_tail;
        } table[] = {
                { 2000, "", GRPC_STATUS_MESSAGE_MAX, "a" },
                { GRPC_STATUS_MESSAGE_MAX, "b", GRPC_STATUS_MESSAGE_MAX, "a" },
                /* "é" encodes as 6 bytes: it fits entirely or not at all. */
                { GRPC_STATUS_MESSAGE_MAX - 6, "\xc3\xa9", GRPC_STATUS_MESSAGE_MAX, "a%C3%A9" },
                { GRPC_STATUS_MESSAGE_MAX - 5, "\xc3\xa9", GRPC_STATUS_MESSAGE_MAX - 5, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 1, "\xc3\xa9", GRPC_STATUS_MESSAGE_MAX - 1, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 11, "\xf0\x9f\x98\x80", GRPC_STATUS_MESSAGE_MAX - 11, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 12, "\xf0\x9f\x98\x80", GRPC_STATUS_MESSAGE_MAX, "%80" },
                /* A "%XX" triple is never cut either. */
                { GRPC_STATUS_MESSAGE_MAX - 2, "%", GRPC_STATUS_MESSAGE_MAX - 2, "a" },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                _cleanup_free_ char *in = NULL, *out = NULL;
                size_t len;

                CASE("%zu a + '%s'", table[i].n_a, table[i].suffix);
                in = repeat('a', table[i].n_a, table[i].suffix);
                ASSERT_OK(grpc_message_encode(in, &out));
                len = strlen(out);
                ASSERT_UEQ(len, table[i].expected_len);
                ASSERT_STREQ(out + len - strlen(table[i].expected_tail), table[i].expected_tail);
        }
}

TEST(message_decode_truncates_at_character_boundary) {
        static const struct {
                size_t n_a;
                const char *suffix;
                size_t expected_len;
                const char *expected_tail;
        } table[] = {
                { 100000, "", GRPC_STATUS_MESSAGE_MAX, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 2, "%C3%A9", GRPC_STATUS_MESSAGE_MAX, "a\xc3\xa9" },
                { GRPC_STATUS_MESSAGE_MAX - 1, "%C3%A9", GRPC_STATUS_MESSAGE_MAX - 1, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 3, "%F0%9F%98%80", GRPC_STATUS_MESSAGE_MAX - 3, "a" },
                { GRPC_STATUS_MESSAGE_MAX - 4, "%F0%9F%98%80zzzz", GRPC_STATUS_MESSAGE_MAX,
                  "a\xf0\x9f\x98\x80" },
                { GRPC_STATUS_MESSAGE_MAX, "%C3%A9", GRPC_STATUS_MESSAGE_MAX, "a" },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                _cleanup_free_ char *in = NULL, *out = NULL;
                size_t len;

                CASE("%zu a + '%s'", table[i].n_a, table[i].suffix);
                in = repeat('a', table[i].n_a, table[i].suffix);
                ASSERT_OK(grpc_message_decode(in, &out));
                len = strlen(out);
                ASSERT_UEQ(len, table[i].expected_len);
                ASSERT_STREQ(out + len - strlen(table[i].expected_tail), table[i].expected_tail);
        }
}

TEST(content_type) {
        static const struct {
                const char *value;
                bool valid;
        } table[] = {
                { "application/grpc", true },
                { "application/grpc+proto", true },
                { "application/grpc;charset=utf-8", true },
                { "application/grpc+proto; charset=utf-8", true },
                { "application/grpc ;charset=utf-8", true },
                { "Application/gRPC+Proto", true },
                { "application/grpc+json", false },
                { "application/grpc+", false },
                { "application/grpc+protobuf", false },
                { "application/grpc-web", false },
                { "application/grpc-web+proto", false },
                { "application/grpcx", false },
                { "application/grp", false },
                { "application/json", false },
                { "text/plain", false },
                { " application/grpc", false },
                { "", false },
                { NULL, false },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                CASE("'%s'", table[i].value ?: "(null)");
                ASSERT_EQ(grpc_content_type_is_valid(table[i].value), table[i].valid);
        }
}
