/* SPDX-License-Identifier: Apache-2.0 */

#include <sys/socket.h>

#include "parse-util.h"
#include "tests.h"

TEST(parse_boolean) {
        static const struct {
                const char *s;
                int r;
        } table[] = {
                { "1", 1 },      { "yes", 1 },    { "y", 1 },     { "true", 1 },   { "t", 1 },
                { "on", 1 },     { "YES", 1 },    { "True", 1 },  { "oN", 1 },     { "0", 0 },
                { "no", 0 },     { "n", 0 },      { "false", 0 }, { "f", 0 },      { "off", 0 },
                { "OFF", 0 },    { "No", 0 },     { "", -EINVAL },  { " yes", -EINVAL },
                { "yes ", -EINVAL }, { "2", -EINVAL }, { "yess", -EINVAL }, { "enable", -EINVAL },
                { "-1", -EINVAL }, { "o", -EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].s);
                ASSERT_EQ(parse_boolean(table[i].s), table[i].r);
        }
        ASSERT_EQ(parse_boolean(NULL), -EINVAL);
}

TEST(safe_atou64) {
        static const struct {
                const char *s;
                int r;
                uint64_t v;
        } table[] = {
                { "0", 0, 0 },
                { "42", 0, 42 },
                { "007", 0, 7 },
                { "18446744073709551615", 0, UINT64_MAX },
                { "18446744073709551616", -ERANGE, 0 },
                { "99999999999999999999999", -ERANGE, 0 },
                { "-1", -ERANGE, 0 },
                { "-0", -ERANGE, 0 },
                { "+1", -EINVAL, 0 },
                { "", -EINVAL, 0 },
                { "-", -EINVAL, 0 },
                { " 1", -EINVAL, 0 },
                { "1 ", -EINVAL, 0 },
                { "1x", -EINVAL, 0 },
                { "0x10", -EINVAL, 0 },
                { "1.0", -EINVAL, 0 },
                { "1e3", -EINVAL, 0 },
                /* Junk wins over overflow: the message should say what is wrong. */
                { "99999999999999999999999x", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                uint64_t v = 0xdeadbeef;

                CASE("'%s'", table[i].s);
                ASSERT_EQ(safe_atou64(table[i].s, &v), table[i].r);
                ASSERT_UEQ(v, table[i].r < 0 ? 0xdeadbeef : table[i].v);
        }
}

TEST(safe_atou) {
        unsigned u = 5;

        ASSERT_OK(safe_atou("4294967295", &u));
        ASSERT_UEQ(u, 4294967295U);
        u = 5;
        ASSERT_ERROR(safe_atou("4294967296", &u), ERANGE);
        ASSERT_ERROR(safe_atou("-3", &u), ERANGE);
        ASSERT_ERROR(safe_atou("3a", &u), EINVAL);
        ASSERT_ERROR(safe_atou(NULL, &u), EINVAL);
        ASSERT_UEQ(u, 5);
}

TEST(safe_atoi64) {
        static const struct {
                const char *s;
                int r;
                int64_t v;
        } table[] = {
                { "0", 0, 0 },
                { "-0", 0, 0 },
                { "-42", 0, -42 },
                { "9223372036854775807", 0, INT64_MAX },
                { "-9223372036854775808", 0, INT64_MIN },
                { "9223372036854775808", -ERANGE, 0 },
                { "-9223372036854775809", -ERANGE, 0 },
                { "--1", -EINVAL, 0 },
                { "+1", -EINVAL, 0 },
                { "- 1", -EINVAL, 0 },
                { "1-", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                int64_t v = 77;

                CASE("'%s'", table[i].s);
                ASSERT_EQ(safe_atoi64(table[i].s, &v), table[i].r);
                ASSERT_EQ(v, table[i].r < 0 ? 77 : table[i].v);
        }
}

TEST(safe_atoi) {
        int v = 9;

        ASSERT_OK(safe_atoi("-2147483648", &v));
        ASSERT_EQ(v, INT32_MIN);
        ASSERT_OK(safe_atoi("2147483647", &v));
        ASSERT_EQ(v, INT32_MAX);
        v = 9;
        ASSERT_ERROR(safe_atoi("2147483648", &v), ERANGE);
        ASSERT_ERROR(safe_atoi("-2147483649", &v), ERANGE);
        ASSERT_ERROR(safe_atoi("", &v), EINVAL);
        ASSERT_EQ(v, 9);
}

TEST(parse_sec) {
        static const struct {
                const char *s;
                int r;
                usec_t v;
        } table[] = {
                { "30s", 0, 30 * USEC_PER_SEC },
                { "5min", 0, 5 * USEC_PER_MINUTE },
                { "1h", 0, USEC_PER_HOUR },
                { "1h 30min", 0, USEC_PER_HOUR + 30 * USEC_PER_MINUTE },
                { "1h30min", 0, USEC_PER_HOUR + 30 * USEC_PER_MINUTE },
                { "500ms", 0, 500 * USEC_PER_MSEC },
                { "2d", 0, 2 * USEC_PER_DAY },
                { "1w", 0, USEC_PER_WEEK },
                { "10y", 0, 10 * USEC_PER_YEAR },
                { "1year 2years", 0, 3 * USEC_PER_YEAR },
                { "10us", 0, 10 },
                { "42", 0, 42 * USEC_PER_SEC },
                { "0", 0, 0 },
                { "1.5s", 0, 1500 * USEC_PER_MSEC },
                { "0.5ms", 0, 500 },
                { "1.25h", 0, USEC_PER_HOUR + 15 * USEC_PER_MINUTE },
                { "1.0000005s", 0, USEC_PER_SEC }, /* below 1 µs is floored */
                { "1.9999999999999s", 0, 2 * USEC_PER_SEC - 1 },
                { "infinity", 0, USEC_INFINITY },
                { "  infinity ", 0, USEC_INFINITY },
                { " 5 s ", 0, 5 * USEC_PER_SEC },
                { "1 2", 0, 3 * USEC_PER_SEC },
                { "2usec 3msec 4sec 5second 6seconds", 0, 2 + 3000 + 15 * USEC_PER_SEC },
                { "1m 1minute 1minutes", 0, 3 * USEC_PER_MINUTE },
                { "1hr 1hour 1hours", 0, 3 * USEC_PER_HOUR },
                { "1day 1days 1week 1weeks", 0, 2 * USEC_PER_DAY + 2 * USEC_PER_WEEK },
                { "18446744073709551614us", 0, UINT64_MAX - 1 },
                { "18446744073709551615us", -ERANGE, 0 }, /* would be USEC_INFINITY */
                { "18446744073709551616us", -ERANGE, 0 },
                { "30500000w", 0, 30500000ULL * USEC_PER_WEEK },
                { "30600000w", -ERANGE, 0 },
                { "18446744073709551614us 1us", -ERANGE, 0 },
                { "-5s", -ERANGE, 0 },
                { "1s -5s", -ERANGE, 0 },
                { "", -EINVAL, 0 },
                { "   ", -EINVAL, 0 },
                { "s", -EINVAL, 0 },
                { "5x", -EINVAL, 0 },
                { "5 minutes!", -EINVAL, 0 },
                { "5S", -EINVAL, 0 }, /* units are case-sensitive */
                { "5MIN", -EINVAL, 0 },
                { ".5s", -EINVAL, 0 },
                { "5.s", -EINVAL, 0 },
                { "1.2.3s", -EINVAL, 0 },
                { "infinity 5s", -EINVAL, 0 },
                { "infinityx", -EINVAL, 0 },
                { "5s,6s", -EINVAL, 0 },
                { "0x10s", -EINVAL, 0 },
                { "+5s", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                usec_t v = 4711;

                CASE("'%s'", table[i].s);
                ASSERT_EQ(parse_sec(table[i].s, &v), table[i].r);
                ASSERT_UEQ(v, table[i].r < 0 ? 4711 : table[i].v);
        }
        ASSERT_EQ(parse_sec(NULL, &(usec_t) { 0 }), -EINVAL);
}

TEST(parse_size) {
        static const struct {
                const char *s;
                int r;
                uint64_t v;
        } table[] = {
                { "4096", 0, 4096 },
                { "4096B", 0, 4096 },
                { "0", 0, 0 },
                { "16K", 0, 16384 },
                { "16KB", 0, 16384 },
                { "1.5M", 0, 1572864 },
                { "1.5MB", 0, 1572864 },
                { "2G", 0, 2147483648ULL },
                { "1T", 0, 1099511627776ULL },
                { "0.5K", 0, 512 },
                { "1.001K", 0, 1025 }, /* 1025.024 floored */
                { " 16 K ", 0, 16384 },
                { "16777215T", 0, 16777215ULL << 40 },
                { "16777216T", -ERANGE, 0 },
                { "18446744073709551615", 0, UINT64_MAX },
                { "18446744073709551616", -ERANGE, 0 },
                { "-1", -ERANGE, 0 },
                { "-1K", -ERANGE, 0 },
                { "", -EINVAL, 0 },
                { "K", -EINVAL, 0 },
                { "16k", -EINVAL, 0 }, /* suffixes are upper-case */
                { "16KiB", -EINVAL, 0 },
                { "16P", -EINVAL, 0 },
                { "16 KB x", -EINVAL, 0 },
                { "16K16", -EINVAL, 0 },
                { "1.5", -EINVAL, 0 },  /* fraction of a byte */
                { "1.5B", -EINVAL, 0 },
                { "1.K", -EINVAL, 0 },
                { "-", -EINVAL, 0 },
                { "+5", -EINVAL, 0 },
                { "0x100", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                uint64_t v = 4711;

                CASE("'%s'", table[i].s);
                ASSERT_EQ(parse_size(table[i].s, &v), table[i].r);
                ASSERT_UEQ(v, table[i].r < 0 ? 4711 : table[i].v);
        }
}

TEST(parse_port) {
        static const struct {
                const char *s;
                int r;
                uint16_t v;
        } table[] = {
                { "1", 0, 1 },      { "443", 0, 443 },     { "65535", 0, 65535 }, { "08443", 0, 8443 },
                { "0", -ERANGE, 0 }, { "65536", -ERANGE, 0 }, { "99999999999", -ERANGE, 0 },
                { "-1", -ERANGE, 0 }, { "", -EINVAL, 0 },     { "http", -EINVAL, 0 }, { " 80", -EINVAL, 0 },
                { "80 ", -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                uint16_t v = 7;

                CASE("'%s'", table[i].s);
                ASSERT_EQ(parse_port(table[i].s, &v), table[i].r);
                ASSERT_EQ(v, table[i].r < 0 ? 7 : table[i].v);
        }
}

TEST(hostname_is_valid) {
        char label63[64], label64[65], long_ok[HOSTNAME_MAX + 1], long_bad[HOSTNAME_MAX + 2];
        static const struct {
                const char *s;
                bool valid;
        } table[] = {
                { "example.org", true },
                { "localhost", true },
                { "a", true },
                { "a-b.c-d.example", true },
                { "UPPER.Example.ORG", true },
                { "xn--bcher-kva.example", true },
                { "1.example", true },
                { "123.example.org", true },
                { "example.123", false }, /* numeric top-level label */
                { "10.0.0.1", false },
                { "300.1.1.1", false },
                { "", false },
                { ".", false },
                { "example.org.", false }, /* trailing dot refused */
                { ".example.org", false },
                { "example..org", false },
                { "-example.org", false },
                { "example-.org", false },
                { "example.org-", false },
                { "exa_mple.org", false },
                { "exa mple.org", false },
                { "example.org:443", false },
                { "ex\xc3\xa4mple.org", false },
                { "[::1]", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].s);
                ASSERT_EQ(hostname_is_valid(table[i].s), table[i].valid);
        }

        memset(label63, 'a', 63);
        label63[63] = '\0';
        memset(label64, 'a', 64);
        label64[64] = '\0';
        CASE("63-byte label");
        ASSERT_TRUE(hostname_is_valid(label63));
        CASE("64-byte label");
        ASSERT_FALSE(hostname_is_valid(label64));

        /* 4 × 63 + 1 + dots: "aaa…(63).aaa…(63).aaa…(63).aaa…(61)" = 253 bytes. */
        snprintf(long_ok, sizeof(long_ok), "%s.%s.%s.%.61s", label63, label63, label63, label63);
        ASSERT_EQ(strlen(long_ok), 253);
        CASE("253 bytes");
        ASSERT_TRUE(hostname_is_valid(long_ok));
        snprintf(long_bad, sizeof(long_bad), "%s.%s.%s.%.62s", label63, label63, label63, label63);
        ASSERT_EQ(strlen(long_bad), 254);
        CASE("254 bytes");
        ASSERT_FALSE(hostname_is_valid(long_bad));
        ASSERT_FALSE(hostname_is_valid(NULL));
}

TEST(parse_host_port) {
        static const struct {
                const char *s;
                uint16_t default_port;
                int r;
                const char *host;
                uint16_t port;
                int family;
                const char *formatted;
        } table[] = {
                { "example.org:443", 0, 0, "example.org", 443, AF_UNSPEC, "example.org:443" },
                { "Controller.Example.ORG:8443", 0, 0, "controller.example.org", 8443, AF_UNSPEC,
                  "controller.example.org:8443" },
                { "10.0.0.1:80", 0, 0, "10.0.0.1", 80, AF_INET, "10.0.0.1:80" },
                { "[::1]:8443", 0, 0, "::1", 8443, AF_INET6, "[::1]:8443" },
                { "[0:0::0:1]:8443", 0, 0, "::1", 8443, AF_INET6, "[::1]:8443" },
                { "[2001:DB8::1]:443", 0, 0, "2001:db8::1", 443, AF_INET6, "[2001:db8::1]:443" },
                { "[::ffff:10.0.0.1]:1", 0, 0, "::ffff:10.0.0.1", 1, AF_INET6, "[::ffff:10.0.0.1]:1" },
                { "example.org", 443, 0, "example.org", 443, AF_UNSPEC, "example.org:443" },
                { "10.0.0.1", 8443, 0, "10.0.0.1", 8443, AF_INET, "10.0.0.1:8443" },
                { "[::1]", 443, 0, "::1", 443, AF_INET6, "[::1]:443" },
                { "example.org:65535", 443, 0, "example.org", 65535, AF_UNSPEC, "example.org:65535" },
                /* Explicit port wins over the default. */
                { "example.org:80", 443, 0, "example.org", 80, AF_UNSPEC, "example.org:80" },

                { "example.org", 0, -EINVAL },         /* port required */
                { "[::1]", 0, -EINVAL },
                { "example.org:", 443, -EINVAL },
                { "example.org:0", 443, -ERANGE },
                { "example.org:65536", 443, -ERANGE },
                { "example.org:-1", 443, -ERANGE },
                { "example.org:http", 443, -EINVAL },
                { ":443", 443, -EINVAL },
                { "", 443, -EINVAL },
                { "::1", 443, -EINVAL },                /* IPv6 without brackets */
                { "::1:443", 443, -EINVAL },
                { "2001:db8::1", 443, -EINVAL },
                { "[fe80::1%eth0]:80", 443, -EINVAL },  /* zone ids refused */
                { "[example.org]:443", 443, -EINVAL },
                { "[10.0.0.1]:443", 443, -EINVAL },
                { "[::1]443", 443, -EINVAL },
                { "[::1", 443, -EINVAL },
                { "[]:443", 443, -EINVAL },
                { "[::1]:", 443, -EINVAL },
                { "example.org.:443", 443, -EINVAL },
                { "exa mple.org:443", 443, -EINVAL },
                { " example.org:443", 443, -EINVAL },
                { "example.org:443 ", 443, -EINVAL },
                { "256.1.1.1:443", 443, -EINVAL },
                { "1.2.3:443", 443, -EINVAL },
                { "010.0.0.1:443", 443, -EINVAL },
                { "user@example.org:443", 443, -EINVAL },
                { "https://example.org", 443, -EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                HostPort hp = { .host = "untouched", .port = 1, .family = -1 };
                char buf[HOST_PORT_STRING_MAX];

                CASE("'%s' default %u", table[i].s, table[i].default_port);
                ASSERT_EQ(parse_host_port(table[i].s, table[i].default_port, &hp), table[i].r);
                if (table[i].r < 0) {
                        ASSERT_STREQ(hp.host, "untouched");
                        ASSERT_EQ(hp.port, 1);
                        ASSERT_EQ(hp.family, -1);
                        continue;
                }
                ASSERT_STREQ(hp.host, table[i].host);
                ASSERT_EQ(hp.port, table[i].port);
                ASSERT_EQ(hp.family, table[i].family);
                ASSERT_STREQ(host_port_to_string(&hp, buf, sizeof(buf)), table[i].formatted);
        }
        ASSERT_EQ(parse_host_port(NULL, 443, &(HostPort) {}), -EINVAL);
}

TEST(parse_host_port_longest_name) {
        char name[HOSTNAME_MAX + 1], s[HOSTNAME_MAX + 16], buf[HOST_PORT_STRING_MAX];
        HostPort hp;

        /* 126 × "a." + "b" = 253 bytes: the longest valid name fits, with brackets and port to spare. */
        for (size_t i = 0; i < 126; i++)
                memcpy(name + 2 * i, "a.", 2);
        strcpy(name + 252, "b");
        snprintf(s, sizeof(s), "%s:65535", name);
        ASSERT_OK(parse_host_port(s, 0, &hp));
        ASSERT_STREQ(hp.host, name);
        ASSERT_STREQ(host_port_to_string(&hp, buf, sizeof(buf)), s);

        snprintf(s, sizeof(s), "a%s:65535", name);
        ASSERT_ERROR(parse_host_port(s, 0, &hp), EINVAL);
}

TEST(host_port_to_string_refuses) {
        HostPort hp = { .host = "example.org", .port = 443 }, empty = {};
        char small[16], buf[HOST_PORT_STRING_MAX];

        ASSERT_NULL(host_port_to_string(&hp, small, 15));
        ASSERT_STREQ(host_port_to_string(&hp, small, 16), "example.org:443");
        ASSERT_NULL(host_port_to_string(&empty, buf, sizeof(buf)));
}

TEST(listen_addresses) {
        static const struct {
                const char *s;
                bool loopback_only;
                const char *host;       /* NULL: refused */
                unsigned port;
        } cases[] = {
                { "127.0.0.1:8445", true, "127.0.0.1", 8445 },
                { "127.9.9.9:0", true, "127.9.9.9", 0 },          /* ephemeral */
                { "[::1]:0", true, "::1", 0 },
                { "[0::1]:1", true, "::1", 1 },
                { "0.0.0.0:8447", false, "0.0.0.0", 8447 },
                { "[::]:0", false, "::", 0 },
                { "0.0.0.0:8447", true, NULL, 0 },                /* not loopback */
                { "192.0.2.1:80", true, NULL, 0 },
                { "localhost:80", false, NULL, 0 },               /* a name: binding must not need DNS */
                { "127.0.0.1", false, NULL, 0 },                  /* no port */
                { "127.0.0.1:80:0", false, NULL, 0 },             /* not port 0 of 127.0.0.1 */
                { "127.0.0.1:70000", false, NULL, 0 },
                { "", false, NULL, 0 },
        };

        for (size_t k = 0; k < ELEMENTSOF(cases); k++) {
                HostPort hp = { .port = 4242 };

                CASE("%s loopback_only=%d", cases[k].s, cases[k].loopback_only);
                if (!cases[k].host) {
                        ASSERT_FAIL(parse_listen_address(cases[k].s, cases[k].loopback_only, &hp));
                        ASSERT_EQ(hp.port, 4242);
                        continue;
                }
                ASSERT_OK(parse_listen_address(cases[k].s, cases[k].loopback_only, &hp));
                ASSERT_STREQ(hp.host, cases[k].host);
                ASSERT_EQ(hp.port, cases[k].port);
                ASSERT_EQ(host_is_loopback(&hp), cases[k].loopback_only || streq(cases[k].host, "127.0.0.1"));
                ASSERT_EQ(host_is_unspecified(&hp), streq(hp.host, "0.0.0.0") || streq(hp.host, "::"));
        }
}
