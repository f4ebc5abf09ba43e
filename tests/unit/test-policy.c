/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <sys/socket.h>

#include "policy.h"
#include "strv.h"
#include "tests.h"

static char *repeat(char *buf, char c, size_t n) {
        memset(buf, c, n);
        buf[n] = '\0';
        return buf;
}

/* n-character name of 63-character labels ("aaa…a.aaa…a.a…"). */
static char *long_name(char *buf, size_t n) {
        for (size_t i = 0; i < n; i++)
                buf[i] = i % 64 == 63 ? '.' : 'a';
        if (buf[n - 1] == '.')
                buf[n - 1] = 'b';
        buf[n] = '\0';
        return buf;
}

static ResourceAddress address(const char *s) {
        ResourceAddress a;
        const char *reason = NULL;

        CASE("address '%s'", s);
        if (resource_address_parse(s, &a, &reason) < 0)
                test_fail(__FILE__, __LINE__, "'%s' refused: %s", s, reason);
        return a;
}

TEST(address_parse) {
        static const struct {
                const char *s;
                ResourceAddressKind kind;
                const char *canonical;  /* NULL: refused; then a word of the reason */
                const char *reason;
        } table[] = {
                { "db.lab.example", RESOURCE_ADDRESS_FQDN, "db.lab.example" },
                { "nas", RESOURCE_ADDRESS_FQDN, "nas" },
                { "DB.Lab.EXAMPLE", RESOURCE_ADDRESS_FQDN, "db.lab.example" },
                { "db.lab.example.", RESOURCE_ADDRESS_FQDN, "db.lab.example" },
                { "a-b.0x.example", RESOURCE_ADDRESS_FQDN, "a-b.0x.example" },
                { "1.2.3.com", RESOURCE_ADDRESS_FQDN, "1.2.3.com" },
                { "*.lab.example", RESOURCE_ADDRESS_WILDCARD, "*.lab.example" },
                { "*.LAB.example.", RESOURCE_ADDRESS_WILDCARD, "*.lab.example" },
                { "192.168.1.10", RESOURCE_ADDRESS_IP, "192.168.1.10" },
                { "fd00::5", RESOURCE_ADDRESS_IP, "fd00::5" },
                { "FD00:0:0::0005", RESOURCE_ADDRESS_IP, "fd00::5" },
                { "::ffff:10.0.0.1", RESOURCE_ADDRESS_IP, "10.0.0.1" },
                { "::FFFF:a00:1", RESOURCE_ADDRESS_IP, "10.0.0.1" },
                { "::ffff:10.0.0.0/120", RESOURCE_ADDRESS_CIDR, "10.0.0.0/24" },
                { "::ffff:10.0.0.1/128", RESOURCE_ADDRESS_IP, "10.0.0.1" },
                { "::ffff:0.0.0.0/96", RESOURCE_ADDRESS_CIDR, "0.0.0.0/0" },
                { "10.0.0.0/24", RESOURCE_ADDRESS_CIDR, "10.0.0.0/24" },
                { "10.0.0.0/8", RESOURCE_ADDRESS_CIDR, "10.0.0.0/8" },
                { "10.0.0.0/024", RESOURCE_ADDRESS_CIDR, "10.0.0.0/24" },
                { "0.0.0.0/0", RESOURCE_ADDRESS_CIDR, "0.0.0.0/0" },
                { "10.0.0.1/32", RESOURCE_ADDRESS_IP, "10.0.0.1" },
                { "fd00::/64", RESOURCE_ADDRESS_CIDR, "fd00::/64" },
                { "FD00:0::/8", RESOURCE_ADDRESS_CIDR, "fd00::/8" },
                { "::/0", RESOURCE_ADDRESS_CIDR, "::/0" },
                { "fd00::1/128", RESOURCE_ADDRESS_IP, "fd00::1" },
                { "", 0, NULL, "empty" },
                { "*", 0, NULL, "'*'" },
                { "*.com", 0, NULL, "two or more labels" },
                { "*.", 0, NULL, "empty" },
                { "*.*.com", 0, NULL, "'*'" },
                { "a.*.com", 0, NULL, "'*'" },
                { "**.lab.example", 0, NULL, "'*'" },
                { "a..b", 0, NULL, "empty label" },
                { ".a.b", 0, NULL, "empty label" },
                { "a.b..", 0, NULL, "empty label" },
                { ".", 0, NULL, "empty" },
                { "-a.example", 0, NULL, "starts with '-'" },
                { "a.-b.example", 0, NULL, "starts with '-'" },
                { "a-.example", 0, NULL, "ends with '-'" },
                { "example-", 0, NULL, "ends with '-'" },
                { "a_b.example", 0, NULL, "invalid character" },
                { "db.lab example", 0, NULL, "invalid character" },
                { " db.lab.example", 0, NULL, "invalid character" },
                { "db.läb.example", 0, NULL, "invalid character" },
                { "300.1.1.1", 0, NULL, "all digits" },
                { "10.0.0.256", 0, NULL, "all digits" },
                { "10.1", 0, NULL, "all digits" },
                { "10.0.0.1/24", 0, NULL, "host bits set (use the network address)" },
                { "fd00::1/64", 0, NULL, "host bits set" },
                { "::ffff:10.0.0.0/95", 0, NULL, "host bits set" },
                { "10.0.0.0/33", 0, NULL, "above 32" },
                { "fd00::/129", 0, NULL, "above 128" },
                { "10.0.0.0/", 0, NULL, "missing prefix" },
                { "10.0.0.0/-1", 0, NULL, "prefix length" },
                { "10.0.0.0/+8", 0, NULL, "prefix length" },
                { "10.0.0.0/0008", 0, NULL, "prefix length" },
                { "10.0.0.0/8/8", 0, NULL, "prefix length" },
                { "10.0.0.0 /8", 0, NULL, "invalid IP address" },
                { "db.lab/24", 0, NULL, "invalid IP address" },
                { "/24", 0, NULL, "invalid IP address" },
                { "[fd00::1]", 0, NULL, "brackets" },
                { "fe80::1%eth0", 0, NULL, "invalid character" },
                { "010.0.0.1", 0, NULL, "all digits" },
        };
        char buf[POLICY_ADDRESS_STRING_MAX];

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ResourceAddress a, again;
                const char *reason = NULL;

                CASE("'%s'", table[i].s);
                memset(&a, 0x55, sizeof(a));
                if (!table[i].canonical) {
                        ASSERT_ERROR(resource_address_parse(table[i].s, &a, &reason), EINVAL);
                        ASSERT_EQ(a.family, 0x55555555);
                        ASSERT_STRSTR(reason, table[i].reason);
                        continue;
                }
                ASSERT_OK(resource_address_parse(table[i].s, &a, &reason));
                ASSERT_EQ(a.kind, table[i].kind);
                ASSERT_STREQ(resource_address_to_string(&a, buf), table[i].canonical);

                /* Round trip: the canonical text parses to the same value and prints identically. */
                ASSERT_OK(resource_address_parse(buf, &again, NULL));
                ASSERT_MEMEQ(&a, &again, sizeof(a));
                ASSERT_STREQ(resource_address_to_string(&again, buf), table[i].canonical);
        }

        ASSERT_ERROR(resource_address_parse(NULL, &(ResourceAddress) {}, NULL), EINVAL);
}

TEST(address_fields) {
        ResourceAddress a;

        a = address("10.1.0.0/16");
        ASSERT_EQ(a.family, AF_INET);
        ASSERT_UEQ(a.prefix_length, 16);
        ASSERT_MEMEQ(a.address, ((uint8_t[16]) { 10, 1 }), 16);
        a = address("fd00::5");
        ASSERT_EQ(a.family, AF_INET6);
        ASSERT_UEQ(a.prefix_length, 128);
        a = address("::ffff:10.0.0.1");
        ASSERT_EQ(a.family, AF_INET);
        ASSERT_UEQ(a.prefix_length, 32);
        ASSERT_MEMEQ(a.address, ((uint8_t[16]) { 10, 0, 0, 1 }), 16);
        a = address("*.Lab.example");
        ASSERT_STREQ(a.name, "lab.example");
}

TEST(address_lengths) {
        char name[300], wild[320], label[70];
        const char *reason = NULL;
        ResourceAddress a;

        /* Labels: 63 fine, 64 not. */
        repeat(label, 'a', 63);
        ASSERT_OK(resource_address_parse(label, &a, NULL));
        repeat(label, 'a', 64);
        ASSERT_ERROR(resource_address_parse(label, &a, &reason), EINVAL);
        ASSERT_STRSTR(reason, "longer than 63");

        /* Total: 253 fine (with or without a trailing dot), 254 not. */
        long_name(name, 253);
        ASSERT_OK(resource_address_parse(name, &a, NULL));
        ASSERT_STREQ(a.name, name);
        strcat(name, ".");
        ASSERT_OK(resource_address_parse(name, &a, NULL));
        long_name(name, 254);
        ASSERT_ERROR(resource_address_parse(name, &a, &reason), EINVAL);
        ASSERT_STRSTR(reason, "longer than 253");

        /* A wildcard is a name pattern: 253 in all, "*." included. */
        snprintf(wild, sizeof(wild), "*.%s", long_name(name, 251));
        ASSERT_OK(resource_address_parse(wild, &a, NULL));
        snprintf(wild, sizeof(wild), "*.%s", long_name(name, 252));
        ASSERT_ERROR(resource_address_parse(wild, &a, &reason), EINVAL);
        ASSERT_STRSTR(reason, "longer than 253");

        /* Far too long for anything. */
        repeat(name, 'a', 290);
        ASSERT_ERROR(resource_address_parse(name, &a, &reason), EINVAL);
        ASSERT_STRSTR(reason, "too long");
}

TEST(ports) {
        static const struct {
                const char *s;
                const char *canonical;  /* NULL: refused */
                const char *reason;
        } table[] = {
                { "any", "any" },
                { "", "any" },
                { "*", "any" },
                { " any\t", "any" },
                { "22", "22" },
                { "022", "22" },
                { "80,443", "80,443" },
                { "443,80", "80,443" },
                { " 22 , 80-90 ", "22,80-90" },
                { "1-65535", "any" },
                { "1-100,101-65535", "any" },
                { "1-10,5-20,21", "1-21" },
                { "20-30,1-10,11-12", "1-12,20-30" },
                { "22,22,22", "22" },
                { "1,65535", "1,65535" },
                { "2-65535", "2-65535" },
                { "8000-8000", "8000" },
                { "0", NULL, "port 0" },
                { "0-10", NULL, "port 0" },
                { "70000", NULL, "above 65535" },
                { "65536", NULL, "above 65535" },
                { "99999999999999999999", NULL, "above 65535" },
                { "90-80", NULL, "first above last" },
                { "22,", NULL, "empty item" },
                { ",22", NULL, "empty item" },
                { "22,,80", NULL, "empty item" },
                { "-22", NULL, "invalid port" },
                { "22-", NULL, "invalid port" },
                { "80 - 90", NULL, "invalid port" },
                { "22 80", NULL, "invalid port" },
                { "+22", NULL, "invalid port" },
                { "0x16", NULL, "invalid port" },
                { "ssh", NULL, "invalid port" },
                { "ANY", NULL, "invalid port" },
                { "any,22", NULL, "invalid port" },
                { "22;80", NULL, "invalid port" },
                { "22\n", NULL, "invalid port" },
        };
        char buf[POLICY_PORTS_STRING_MAX];

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                PortSet p, again;
                const char *reason = NULL;

                CASE("'%s'", table[i].s);
                memset(&p, 0x55, sizeof(p));
                if (!table[i].canonical) {
                        ASSERT_ERROR(port_set_parse(table[i].s, &p, &reason), EINVAL);
                        ASSERT_UEQ(p.n_ranges, (size_t) 0x5555555555555555ULL);
                        ASSERT_STRSTR(reason, table[i].reason);
                        continue;
                }
                ASSERT_OK(port_set_parse(table[i].s, &p, &reason));
                ASSERT_STREQ(port_set_to_string(&p, buf), table[i].canonical);
                ASSERT_OK(port_set_parse(buf, &again, NULL));
                ASSERT_MEMEQ(&p, &again, sizeof(p));
        }
        ASSERT_ERROR(port_set_parse(NULL, &(PortSet) {}, NULL), EINVAL);
}

TEST(ports_limits) {
        char list[1024] = "", buf[POLICY_PORTS_STRING_MAX], expect[1024] = "";
        const char *reason = NULL;
        PortSet p;

        /* 64 items are the maximum and print within POLICY_PORTS_STRING_MAX, even at their widest. */
        for (unsigned i = 0; i < 64; i++) {
                char item[16];

                snprintf(item, sizeof(item), "%s%u-%u", i ? "," : "", 10000 + 2 * i, 10000 + 2 * i);
                strcat(list, item);
                snprintf(item, sizeof(item), "%s%u", i ? "," : "", 10000 + 2 * i);
                strcat(expect, item);
        }
        ASSERT_OK(port_set_parse(list, &p, NULL));
        ASSERT_UEQ(p.n_ranges, 64);
        ASSERT_STREQ(port_set_to_string(&p, buf), expect);

        strcat(list, ",1");
        ASSERT_ERROR(port_set_parse(list, &p, &reason), EINVAL);
        ASSERT_STRSTR(reason, "more than 64");

        /* The count is of items written, before merging. */
        list[0] = '\0';
        for (unsigned i = 0; i < 65; i++)
                strcat(list, i ? ",22" : "22");
        ASSERT_ERROR(port_set_parse(list, &p, &reason), EINVAL);

        /* The widest possible text fills the buffer exactly. */
        p.n_ranges = 64;
        for (unsigned i = 0; i < 64; i++)
                p.ranges[i] = (PolicyPortRange) { 10000, 65535 };
        ASSERT_UEQ(strlen(port_set_to_string(&p, buf)), POLICY_PORTS_STRING_MAX - 1);
}

TEST(ports_contains) {
        PortSet p;

        ASSERT_OK(port_set_parse("22,80-90", &p, NULL));
        ASSERT_TRUE(port_set_contains(&p, 22));
        ASSERT_TRUE(port_set_contains(&p, 80));
        ASSERT_TRUE(port_set_contains(&p, 85));
        ASSERT_TRUE(port_set_contains(&p, 90));
        ASSERT_FALSE(port_set_contains(&p, 21));
        ASSERT_FALSE(port_set_contains(&p, 23));
        ASSERT_FALSE(port_set_contains(&p, 79));
        ASSERT_FALSE(port_set_contains(&p, 91));
        ASSERT_FALSE(port_set_contains(&p, 0));

        ASSERT_OK(port_set_parse("any", &p, NULL));
        ASSERT_UEQ(p.n_ranges, 0);
        ASSERT_TRUE(port_set_contains(&p, 1));
        ASSERT_TRUE(port_set_contains(&p, 65535));
        ASSERT_FALSE(port_set_contains(&p, 0));
}

TEST(protocol) {
        static const struct {
                const char *s;
                ResourceProtocol p;
        } table[] = {
                { "any", RESOURCE_PROTOCOL_ANY },
                { "tcp", RESOURCE_PROTOCOL_TCP },
                { "udp", RESOURCE_PROTOCOL_UDP },
                { "TCP", _RESOURCE_PROTOCOL_INVALID },
                { "", _RESOURCE_PROTOCOL_INVALID },
                { "tcp ", _RESOURCE_PROTOCOL_INVALID },
                { "sctp", _RESOURCE_PROTOCOL_INVALID },
                { "*", _RESOURCE_PROTOCOL_INVALID },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].s);
                ASSERT_EQ(resource_protocol_from_string(table[i].s), table[i].p);
                if (table[i].p >= 0)
                        ASSERT_STREQ(resource_protocol_to_string(table[i].p), table[i].s);
        }
        ASSERT_EQ(resource_protocol_from_string(NULL), _RESOURCE_PROTOCOL_INVALID);
        ASSERT_NULL(resource_protocol_to_string(_RESOURCE_PROTOCOL_MAX));
        ASSERT_NULL(resource_protocol_to_string(_RESOURCE_PROTOCOL_INVALID));
}

TEST(name_is_valid) {
        static const struct {
                const char *s;
                bool valid;
        } table[] = {
                { "lab", true },
                { "Lab Network", true },
                { "db; DROP TABLE resources;--", true },
                { "\"quoted\"", true },
                { "réseau", true },
                { "", false },
                { " lab", false },
                { "lab ", false },
                { "\tlab", false },
                { "la\nb", false },
                { "la\x7f" "b", false },
        };
        char buf[POLICY_NAME_MAX + 2];

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].s);
                ASSERT_EQ(policy_name_is_valid(table[i].s), table[i].valid);
        }
        ASSERT_FALSE(policy_name_is_valid(NULL));
        ASSERT_TRUE(policy_name_is_valid(repeat(buf, 'x', POLICY_NAME_MAX)));
        ASSERT_FALSE(policy_name_is_valid(repeat(buf, 'x', POLICY_NAME_MAX + 1)));
}

TEST(match) {
        static const struct {
                const char *resource, *host;
                bool match;
        } table[] = {
                /* Names: exact, case-insensitive, one trailing dot ignored. */
                { "db.lab.example", "db.lab.example", true },
                { "db.lab.example", "DB.Lab.Example", true },
                { "db.lab.example", "db.lab.example.", true },
                { "DB.lab.example", "db.lab.example", true },
                { "db.lab.example", "db.lab.example.com", false },
                { "db.lab.example", "xdb.lab.example", false },
                { "db.lab.example", "a.db.lab.example", false },
                { "db.lab.example", "lab.example", false },
                { "nas", "nas", true },
                { "nas", "nas.lab", false },
                /* Wildcards: one or more labels in front, never the suffix itself. */
                { "*.lab.example", "a.lab.example", true },
                { "*.lab.example", "a.b.lab.example", true },
                { "*.lab.example", "A.LAB.EXAMPLE", true },
                { "*.lab.example", "a.lab.example.", true },
                { "*.lab.example", "lab.example", false },
                { "*.lab.example", "lab.example.", false },
                { "*.lab.example", "xlab.example", false },
                { "*.lab.example", "a.xlab.example", false },
                { "*.lab.example", "a.lab.example.com", false },
                { "*.lab.example", "a.lab.exampl", false },
                /* A name never meets an address resource, nor an address a name resource. */
                { "10.0.0.1", "db.lab.example", false },
                { "0.0.0.0/0", "db.lab.example", false },
                { "::/0", "db.lab.example", false },
                { "db.lab.example", "10.0.0.1", false },
                { "*.lab.example", "10.0.0.1", false },
                /* IPv4 and CIDR. */
                { "10.0.0.1", "10.0.0.1", true },
                { "10.0.0.1", "10.0.0.2", false },
                { "10.0.0.0/24", "10.0.0.0", true },
                { "10.0.0.0/24", "10.0.0.255", true },
                { "10.0.0.0/24", "10.0.1.0", false },
                { "10.0.0.0/24", "9.255.255.255", false },
                { "10.0.0.0/23", "10.0.1.7", true },
                { "10.0.0.0/23", "10.0.2.7", false },
                { "10.0.0.128/25", "10.0.0.128", true },
                { "10.0.0.128/25", "10.0.0.127", false },
                { "0.0.0.0/0", "203.0.113.9", true },
                { "0.0.0.0/0", "fd00::1", false },
                /* IPv6, bracketed or not, any spelling. */
                { "fd00::5", "fd00::5", true },
                { "fd00::5", "[fd00::5]", true },
                { "fd00::5", "FD00:0::0:5", true },
                { "fd00::5", "fd00::6", false },
                { "fd00::/64", "fd00::abcd", true },
                { "fd00::/64", "[fd00::1:2:3:4]", true },
                { "fd00::/64", "fd00:0:0:1::1", false },
                { "fc00::/7", "fdff::1", true },
                { "fc00::/7", "fe00::1", false },
                { "::/0", "2001:db8::1", true },
                { "::/0", "10.0.0.1", false },
                /* IPv4-mapped IPv6 targets are IPv4. */
                { "10.0.0.1", "::ffff:10.0.0.1", true },
                { "10.0.0.1", "[::ffff:10.0.0.1]", true },
                { "10.0.0.1", "::ffff:a00:1", true },
                { "10.0.0.0/24", "::ffff:10.0.0.77", true },
                { "10.0.0.0/24", "::ffff:10.0.1.77", false },
                { "::/0", "::ffff:10.0.0.1", false },
                { "::ffff:10.0.0.1", "10.0.0.1", true },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ResourceAddress a = address(table[i].resource);

                CASE("'%s' vs '%s'", table[i].resource, table[i].host);
                if (table[i].match)
                        ASSERT_GT(resource_address_match(&a, table[i].host), 0);
                else
                        ASSERT_EQ(resource_address_match(&a, table[i].host), 0);
        }
}

TEST(match_invalid_host) {
        static const char *const hosts[] = {
                "", "*", "*.lab.example", "a..b", "-a.example", "a_b.example", "db.lab.example:22",
                "10.0.0.1:22", "10.0.0.0/24", "300.1.1.1", "10.0.0.1.", "010.0.0.1", "[10.0.0.1]",
                "[db.lab.example]", "[fd00::1", "fd00::1]", "[]", "[", "]", "fe80::1%eth0",
                "[fe80::1%25eth0]", " db.lab.example", "db.lab.example ", "db.lab.example..", ".",
                "db\n.lab",
        };
        char name[300];
        ResourceAddress a = address("*.lab.example"), b = address("0.0.0.0/0");

        for (size_t i = 0; i < ELEMENTSOF(hosts); i++) {
                CASE("'%s'", hosts[i]);
                ASSERT_ERROR(resource_address_match(&a, hosts[i]), EINVAL);
                ASSERT_ERROR(resource_address_match(&b, hosts[i]), EINVAL);
        }
        ASSERT_ERROR(resource_address_match(&a, NULL), EINVAL);

        CASE("lengths");
        strcat(long_name(name, 253), ".");
        ASSERT_EQ(resource_address_match(&a, name), 0);
        long_name(name, 254);
        ASSERT_ERROR(resource_address_match(&a, name), EINVAL);
        repeat(name, 'a', 64);
        ASSERT_ERROR(resource_address_match(&a, name), EINVAL);
        repeat(name, 'a', 299);
        ASSERT_ERROR(resource_address_match(&a, name), EINVAL);
}

TEST(specificity) {
        /* Each resource is strictly less specific than the one before, for the host given. */
        static const struct {
                const char *host;
                const char *resources[6];
        } table[] = {
                { "10.1.2.3",
                  { "10.1.2.3", "10.1.2.2/31", "10.1.2.0/24", "10.1.0.0/16", "0.0.0.0/1", "0.0.0.0/0" } },
                { "::ffff:10.1.2.3", { "10.1.2.3", "10.1.2.0/24", "0.0.0.0/0" } },
                { "fd00::1", { "fd00::1", "fd00::/127", "fd00::/64", "fd00::/8", "::/0" } },
                { "a.b.lab.example", { "a.b.lab.example", "*.b.lab.example", "*.lab.example" } },
                { "x.y", { "x.y" } },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                int previous = 0;

                for (size_t j = 0; j < ELEMENTSOF(table[i].resources) && table[i].resources[j]; j++) {
                        ResourceAddress a = address(table[i].resources[j]);
                        int s;

                        CASE("'%s' vs '%s'", table[i].resources[j], table[i].host);
                        s = resource_address_match(&a, table[i].host);
                        ASSERT_GT(s, 0);
                        if (j > 0)
                                ASSERT_LT(s, previous);
                        previous = s;
                }
        }

        /* An exact name beats even the longest wildcard; an exact IP even a /31 or /127. */
        {
                char name[300], wild[320];
                ResourceAddress w, e = address("a.b");

                snprintf(wild, sizeof(wild), "*.%s", long_name(name, 251));
                w = address(wild);
                snprintf(wild, sizeof(wild), "x.%s", name);
                ASSERT_GT(resource_address_match(&w, wild), 0);
                ASSERT_GT(resource_address_match(&e, "a.b"), resource_address_match(&w, wild));
        }
}

/* A resource table for policy_decide(). */
typedef struct R {
        const char *name, *address, *protocol, *ports;
        const char *groups[3];
} R;

static PolicyResource *build(const R *r, size_t n, PolicyResource *out) {
        for (size_t i = 0; i < n; i++) {
                out[i] = (PolicyResource) {
                        .name = r[i].name,
                        .address = address(r[i].address),
                        .protocol = resource_protocol_from_string(r[i].protocol ?: "any"),
                        .groups = (char **) r[i].groups,
                };
                ASSERT_OK(port_set_parse(r[i].ports ?: "any", &out[i].ports, NULL));
        }
        return out;
}

typedef struct Q {
        const char *host;
        uint16_t port;
        ResourceProtocol protocol;
        const char *groups[3];
        int result;
        const char *resource;   /* expected *ret_resource name, NULL for none */
} Q;

static void check_decisions(const R *r, size_t n, const Q *q, size_t m) {
        PolicyResource res[16];

        ASSERT_LE(n, ELEMENTSOF(res));
        build(r, n, res);
        for (size_t i = 0; i < m; i++) {
                const PolicyResource *got = (const PolicyResource *) 0x1;
                char **groups = (char **) q[i].groups;

                CASE("'%s' port %u protocol %s groups %s,%s → %d %s", q[i].host, q[i].port,
                     resource_protocol_to_string(q[i].protocol), strna(groups[0]), strna(groups[1]),
                     q[i].result, strna(q[i].resource));
                ASSERT_EQ(policy_decide(res, n, q[i].host, q[i].port, q[i].protocol, groups, &got),
                          q[i].result);
                if (q[i].result < 0) {
                        ASSERT_TRUE(got == (const PolicyResource *) 0x1);
                        continue;
                }
                if (q[i].resource)
                        ASSERT_STREQ(ASSERT_NOT_NULL(got)->name, q[i].resource);
                else
                        ASSERT_NULL(got);
                /* ret_resource is optional. */
                ASSERT_EQ(policy_decide(res, n, q[i].host, q[i].port, q[i].protocol, groups, NULL),
                          q[i].result);
        }
}

#define TCP RESOURCE_PROTOCOL_TCP
#define UDP RESOURCE_PROTOCOL_UDP

TEST(decide_most_specific_wins) {
        static const R r[] = {
                { "lab-net", "10.0.0.0/24", "tcp", "22,80-90", { "eng" } },
                { "pve", "10.0.0.100", "tcp", "8006", { "ops" } },
                { "everything", "0.0.0.0/0", "any", "any", { "eng", "ops" } },
        };
        static const Q q[] = {
                /* The /24 grants eng, but the exact IP covers .100 and grants only ops. */
                { "10.0.0.5", 22, TCP, { "eng" }, 1, "lab-net" },
                { "10.0.0.100", 22, TCP, { "eng" }, 0, "pve" },
                { "10.0.0.100", 8006, TCP, { "eng" }, 0, "pve" },
                { "10.0.0.100", 8006, TCP, { "ops" }, 1, "pve" },
                { "::ffff:10.0.0.100", 22, TCP, { "eng" }, 0, "pve" },
                { "[::ffff:10.0.0.100]", 8006, TCP, { "ops" }, 1, "pve" },
                { "10.0.0.100", 22, TCP, { "ops" }, 0, "pve" },
                /* Inside the /24, /0 does not widen the /24's ports or groups. */
                { "10.0.0.5", 443, TCP, { "eng" }, 0, "lab-net" },
                { "10.0.0.5", 22, TCP, { "ops" }, 0, "lab-net" },
                { "10.0.0.5", 22, UDP, { "eng" }, 0, "lab-net" },
                /* Outside it, /0 applies. */
                { "10.0.1.5", 443, UDP, { "ops" }, 1, "everything" },
                { "10.0.1.5", 443, TCP, { "sales" }, 0, "everything" },
                /* A name never matches an address resource. */
                { "pve.lab.example", 8006, TCP, { "ops" }, 0, NULL },
                { "fd00::1", 22, TCP, { "eng" }, 0, NULL },
        };

        check_decisions(r, ELEMENTSOF(r), q, ELEMENTSOF(q));
}

TEST(decide_names) {
        static const R r[] = {
                { "lab", "*.lab.example", "tcp", "80,443", { "eng" } },
                { "deep", "*.secret.lab.example", "tcp", "443", { "ops" } },
                { "db", "db.lab.example", "tcp", "5432", { "dba" } },
        };
        static const Q q[] = {
                { "web.lab.example", 443, TCP, { "eng" }, 1, "lab" },
                { "WEB.LAB.EXAMPLE.", 80, TCP, { "eng" }, 1, "lab" },
                { "a.b.lab.example", 80, TCP, { "eng" }, 1, "lab" },
                { "lab.example", 80, TCP, { "eng" }, 0, NULL },
                { "x.secret.lab.example", 443, TCP, { "eng" }, 0, "deep" },
                { "x.secret.lab.example", 443, TCP, { "ops" }, 1, "deep" },
                { "secret.lab.example", 443, TCP, { "eng" }, 1, "lab" },
                { "db.lab.example", 80, TCP, { "eng" }, 0, "db" },
                { "db.lab.example", 5432, TCP, { "dba" }, 1, "db" },
                { "10.0.0.1", 80, TCP, { "eng" }, 0, NULL },
        };

        check_decisions(r, ELEMENTSOF(r), q, ELEMENTSOF(q));
}

TEST(decide_ties) {
        /* Two resources on one host, equally specific: each grants its own port to its own group. */
        static const R r[] = {
                { "db-pg", "db.lab.example", "tcp", "5432", { "x" } },
                { "db-ssh", "db.lab.example", "tcp", "22", { "y" } },
                { "other", "10.0.0.0/24", "any", "any", { "x", "y" } },
        };
        static const Q q[] = {
                { "db.lab.example", 5432, TCP, { "x" }, 1, "db-pg" },
                { "db.lab.example", 22, TCP, { "y" }, 1, "db-ssh" },
                { "db.lab.example", 22, TCP, { "x" }, 0, "db-pg" },
                { "db.lab.example", 5432, TCP, { "y" }, 0, "db-pg" },
                { "db.lab.example", 5432, TCP, { "y", "x" }, 1, "db-pg" },
                { "db.lab.example", 22, TCP, { "x", "y" }, 1, "db-ssh" },
                { "db.lab.example", 80, TCP, { "x", "y" }, 0, "db-pg" },
        };

        check_decisions(r, ELEMENTSOF(r), q, ELEMENTSOF(q));
}

TEST(decide_denials) {
        static const R r[] = {
                { "web", "10.0.0.10", "tcp", "443", { "eng", "ops" } },
                { "dns", "10.0.0.53", "udp", "53", { "eng" } },
                { "nobody", "10.0.0.99", "any", "any", { NULL } },
                { "v6", "fd00::/64", "any", "22", { "eng" } },
        };
        static const Q q[] = {
                { "10.0.0.10", 443, TCP, { "eng" }, 1, "web" },
                { "10.0.0.10", 443, TCP, { "ops" }, 1, "web" },
                /* No groups, unknown groups, a group differing only in case. */
                { "10.0.0.10", 443, TCP, { NULL }, 0, "web" },
                { "10.0.0.10", 443, TCP, { "sales" }, 0, "web" },
                { "10.0.0.10", 443, TCP, { "Eng" }, 0, "web" },
                /* Protocol and port. */
                { "10.0.0.10", 443, UDP, { "eng" }, 0, "web" },
                { "10.0.0.10", 444, TCP, { "eng" }, 0, "web" },
                { "10.0.0.10", 0, TCP, { "eng" }, 0, "web" },
                { "10.0.0.53", 53, UDP, { "eng" }, 1, "dns" },
                { "10.0.0.53", 53, TCP, { "eng" }, 0, "dns" },
                /* A resource nobody is granted. */
                { "10.0.0.99", 22, TCP, { "eng" }, 0, "nobody" },
                /* No matching resource at all. */
                { "10.0.0.11", 443, TCP, { "eng" }, 0, NULL },
                { "web.lab.example", 443, TCP, { "eng" }, 0, NULL },
                { "[fd00::10]", 22, TCP, { "eng" }, 1, "v6" },
                { "fd00:0:0:1::10", 22, TCP, { "eng" }, 0, NULL },
                /* Invalid hosts. */
                { "10.0.0.10:443", 443, TCP, { "eng" }, -EINVAL, NULL },
                { "", 443, TCP, { "eng" }, -EINVAL, NULL },
                { "[10.0.0.10]", 443, TCP, { "eng" }, -EINVAL, NULL },
        };

        check_decisions(r, ELEMENTSOF(r), q, ELEMENTSOF(q));
}

TEST(decide_empty) {
        const PolicyResource *got = (const PolicyResource *) 0x1;

        ASSERT_EQ(policy_decide(NULL, 0, "db.lab.example", 22, TCP, NULL, &got), 0);
        ASSERT_NULL(got);
        ASSERT_ERROR(policy_decide(NULL, 0, "a..b", 22, TCP, NULL, NULL), EINVAL);
        ASSERT_ERROR(policy_decide(NULL, 0, NULL, 22, TCP, NULL, NULL), EINVAL);
}
