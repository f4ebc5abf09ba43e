/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy.h"
#include "string-util.h"
#include "strv.h"

/* Specificity, as resource_address_match() returns it. Only resources matching the same host are compared,
 * so a name target only ever sees the name scores and an address target the address scores of one family:
 *   CIDR       1 + prefix length: 1 (/0) … 32 (/31) for IPv4, 1 … 128 (/127) for IPv6.
 *   IP         1 + 32 = 33 or 1 + 128 = 129: above every CIDR of its family (/32 and /128 are stored as
 *              plain addresses, so no CIDR reaches it).
 *   wildcard   1 + length of the suffix: 4 ("*.a.b") … 252; a longer suffix matching the same host has
 *              more labels.
 *   FQDN       SPECIFICITY_NAME = 256: above every wildcard. */
#define SPECIFICITY_NAME 256

static bool ascii_isdigit(char c) {
        return c >= '0' && c <= '9';
}

static char ascii_lower(char c) {
        return c >= 'A' && c <= 'Z' ? (char) (c - 'A' + 'a') : c;
}

static bool ascii_caseeq(const char *a, const char *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (ascii_lower(a[i]) != ascii_lower(b[i]))
                        return false;
        return true;
}

/* The FQDN rules of policy.h on s[0..n) (no trailing dot). NULL when valid, else the rule broken. */
static const char *name_check(const char *s, size_t n) {
        size_t label = 0;
        bool numeric = true;

        if (n == 0)
                return "empty name";
        if (n > POLICY_FQDN_MAX)
                return "name longer than 253 characters";
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '.') {
                        if (label == 0)
                                return "empty label in name";
                        if (s[i - 1] == '-')
                                return "label ends with '-'";
                        label = 0;
                        numeric = true;
                        continue;
                }
                if (c == '-' && label == 0)
                        return "label starts with '-'";
                if (c != '-' && !ascii_isdigit(c) && !(ascii_lower(c) >= 'a' && ascii_lower(c) <= 'z'))
                        return c == '*' ? "'*' is only allowed as \"*.\" in front of a name of two or more "
                                          "labels"
                                        : "invalid character (names allow letters, digits, '-' and '.')";
                if (!ascii_isdigit(c))
                        numeric = false;
                if (++label > 63)
                        return "label longer than 63 characters";
        }
        if (label == 0)
                return "empty label in name";
        if (s[n - 1] == '-')
                return "label ends with '-'";
        /* "300.1.1.1" or "10.0.0.1/24" must not slip through as names; no top-level domain is numeric. */
        if (numeric)
                return "neither a valid IP address nor a name (last label is all digits)";
        return NULL;
}

/* Length of s without one trailing dot ("a.b." → 3; "." → 0). */
static size_t name_length(const char *s) {
        size_t n = strlen(s);

        return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Parses an IPv4 or IPv6 literal s[0..n) (a copy is made, inet_pton() wants a string), turning an
 * IPv4-mapped IPv6 address into IPv4 so it meets the IPv4 resources. Returns the family, or 0. */
static int address_parse(const char *s, size_t n, uint8_t ret[static 16], bool *ret_mapped) {
        char buf[INET6_ADDRSTRLEN];
        uint8_t a[16] = {};
        int family = AF_INET;

        if (n == 0 || n >= sizeof(buf))
                return 0;
        memcpy(buf, s, n);
        buf[n] = '\0';
        *ret_mapped = false;
        if (inet_pton(AF_INET, buf, a) != 1) {
                if (inet_pton(AF_INET6, buf, a) != 1)
                        return 0;
                if (memcmp(a, v4_mapped_prefix, sizeof(v4_mapped_prefix)) != 0)
                        family = AF_INET6;
                else {
                        memmove(a, a + 12, 4);
                        memset(a + 4, 0, 12);
                        *ret_mapped = true;
                }
        }
        memcpy(ret, a, 16);
        return family;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits) {
        unsigned bytes = bits / 8, rest = bits % 8;

        if (memcmp(a, b, bytes) != 0)
                return false;
        return rest == 0 || ((a[bytes] ^ b[bytes]) & (uint8_t) (0xff00 >> rest)) == 0;
}

static bool host_bits_zero(const uint8_t *a, unsigned prefix, unsigned bits) {
        for (unsigned i = prefix; i < bits; i++)
                if (a[i / 8] & (0x80 >> (i % 8)))
                        return false;
        return true;
}

bool policy_name_is_valid(const char *s) {
        size_t n;

        if (!string_is_valid_text(s, POLICY_NAME_MAX) || isempty(s))
                return false;
        n = strlen(s);
        return !strchr(WHITESPACE, s[0]) && !strchr(WHITESPACE, s[n - 1]);
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EINVAL;
}

static int parse_cidr(const char *s, const char *slash, ResourceAddress *a, const char **ret_reason) {
        unsigned prefix = 0, bits;
        bool mapped;
        const char *p;

        if (slash[1] == '\0')
                return fail(ret_reason, "missing prefix length after '/'");
        for (p = slash + 1; *p; p++) {
                if (!ascii_isdigit(*p) || p - slash > 3)
                        return fail(ret_reason,
                                    "prefix length must be a number 0..32 (IPv4) or 0..128 (IPv6)");
                prefix = prefix * 10 + (unsigned) (*p - '0');
        }
        a->family = address_parse(s, (size_t) (slash - s), a->address, &mapped);
        if (a->family == 0)
                return fail(ret_reason, "invalid IP address in front of the prefix length");
        bits = a->family == AF_INET && !mapped ? 32 : 128;
        if (prefix > bits)
                return fail(ret_reason, a->family == AF_INET && !mapped ? "IPv4 prefix length above 32"
                                                                         : "IPv6 prefix length above 128");
        if (mapped) {
                /* ::ffff:a.b.c.d/p is the IPv4 network a.b.c.d/(p - 96). Below /96 the "ffff" is in the
                 * host part, which the check below refuses anyway. */
                if (prefix < 96)
                        return fail(ret_reason, "host bits set (use the network address)");
                prefix -= 96;
                bits = 32;
        }
        if (!host_bits_zero(a->address, prefix, bits))
                return fail(ret_reason, "host bits set (use the network address)");
        a->prefix_length = prefix;
        a->kind = prefix == bits ? RESOURCE_ADDRESS_IP : RESOURCE_ADDRESS_CIDR;
        return 0;
}

int resource_address_parse(const char *s, ResourceAddress *ret, const char **ret_reason) {
        ResourceAddress a = {};
        const char *slash, *name, *reason;
        bool mapped;
        size_t n;
        int r;

        assert(ret);

        if (isempty(s))
                return fail(ret_reason, "empty address");
        if (strnlen(s, POLICY_ADDRESS_STRING_MAX) >= POLICY_ADDRESS_STRING_MAX)
                return fail(ret_reason, "address too long");
        if (s[0] == '[')
                return fail(ret_reason, "IPv6 addresses are written without brackets");

        slash = strchr(s, '/');
        if (slash) {
                r = parse_cidr(s, slash, &a, ret_reason);
                if (r < 0)
                        return r;
        } else if ((a.family = address_parse(s, strlen(s), a.address, &mapped)) != 0) {
                a.kind = RESOURCE_ADDRESS_IP;
                a.prefix_length = a.family == AF_INET ? 32 : 128;
        } else {
                name = startswith(s, "*.") ?: s;
                n = name_length(name);
                reason = name_check(name, n);
                if (reason)
                        return fail(ret_reason, reason);
                if (name != s) {
                        if (!memchr(name, '.', n))
                                return fail(ret_reason, "a wildcard needs a suffix of two or more labels "
                                                        "(\"*.lab.example\")");
                        if (n + 2 > POLICY_FQDN_MAX)
                                return fail(ret_reason, "name longer than 253 characters");
                }
                a.kind = name == s ? RESOURCE_ADDRESS_FQDN : RESOURCE_ADDRESS_WILDCARD;
                for (size_t i = 0; i < n; i++)
                        a.name[i] = ascii_lower(name[i]);
        }

        *ret = a;
        return 0;
}

const char *resource_address_to_string(const ResourceAddress *a,
                                       char buf[static POLICY_ADDRESS_STRING_MAX]) {
        size_t n;

        assert(a);

        if (a->kind == RESOURCE_ADDRESS_FQDN || a->kind == RESOURCE_ADDRESS_WILDCARD) {
                snprintf(buf, POLICY_ADDRESS_STRING_MAX, "%s%s",
                         a->kind == RESOURCE_ADDRESS_WILDCARD ? "*." : "", a->name);
                return buf;
        }
        if ((a->kind != RESOURCE_ADDRESS_IP && a->kind != RESOURCE_ADDRESS_CIDR) ||
            !inet_ntop(a->family, a->address, buf, POLICY_ADDRESS_STRING_MAX))
                return NULL;
        n = strlen(buf);
        if (a->kind == RESOURCE_ADDRESS_CIDR)
                snprintf(buf + n, POLICY_ADDRESS_STRING_MAX - n, "/%u", a->prefix_length);
        return buf;
}

#define INVALID_PORT "invalid port (expected a number 1..65535, a range \"80-90\" or \"any\")"

/* One port number at *p (digits only), advancing *p. */
static int port_parse_one(const char **p, uint16_t *ret, const char **ret_reason) {
        unsigned v = 0;

        if (!ascii_isdigit(**p))
                return fail(ret_reason, INVALID_PORT);
        for (; ascii_isdigit(**p); (*p)++) {
                v = v * 10 + (unsigned) (**p - '0');
                if (v > 65535)
                        return fail(ret_reason, "port above 65535");
        }
        if (**p != '\0' && !strchr(",- \t", **p))
                return fail(ret_reason, INVALID_PORT);
        if (v == 0)
                return fail(ret_reason, "port 0 is not a port");
        *ret = (uint16_t) v;
        return 0;
}

static int range_compare(const void *a, const void *b) {
        const PolicyPortRange *x = a, *y = b;

        return x->first != y->first ? (int) x->first - (int) y->first : (int) x->last - (int) y->last;
}

int port_set_parse(const char *s, PortSet *ret, const char **ret_reason) {
        PortSet set = {};
        const char *p = s;
        size_t n = 0, len;
        int r;

        assert(ret);

        if (!s)
                return fail(ret_reason, "missing port list");
        /* "any", "*" and "" (surrounding whitespace allowed) are every port. */
        p += strspn(p, " \t");
        for (len = strlen(p); len > 0 && strchr(" \t", p[len - 1]); len--)
                ;
        if (len == 0 || (len == 1 && p[0] == '*') || (len == 3 && strneq(p, "any", 3)))
                goto done;

        for (;;) {
                PolicyPortRange range;

                p += strspn(p, " \t");
                if (*p == ',' || *p == '\0')
                        return fail(ret_reason, "empty item in port list");
                if (set.n_ranges >= POLICY_PORT_RANGES_MAX)
                        return fail(ret_reason, "more than 64 ports or ranges");
                r = port_parse_one(&p, &range.first, ret_reason);
                if (r < 0)
                        return r;
                range.last = range.first;
                if (*p == '-') {
                        p++;
                        r = port_parse_one(&p, &range.last, ret_reason);
                        if (r < 0)
                                return r;
                        if (range.first > range.last)
                                return fail(ret_reason, "port range with first above last");
                }
                set.ranges[set.n_ranges++] = range;
                p += strspn(p, " \t");
                if (*p == '\0')
                        break;
                if (*p != ',')
                        return fail(ret_reason, INVALID_PORT);
                p++;
        }

        /* Canonical form: sorted, overlapping and adjacent ranges merged, everything → any. */
        qsort(set.ranges, set.n_ranges, sizeof(PolicyPortRange), range_compare);
        for (size_t i = 0; i < set.n_ranges; i++) {
                PolicyPortRange *cur = set.ranges + i;

                if (n > 0 && (unsigned) cur->first <= (unsigned) set.ranges[n - 1].last + 1)
                        set.ranges[n - 1].last = MAX(set.ranges[n - 1].last, cur->last);
                else
                        set.ranges[n++] = *cur;
        }
        set.n_ranges = n;
        if (n == 1 && set.ranges[0].first == 1 && set.ranges[0].last == 65535)
                set.n_ranges = 0;
        memset(set.ranges + set.n_ranges, 0, sizeof(set.ranges) - set.n_ranges * sizeof(PolicyPortRange));
done:
        *ret = set;
        return 0;
}

const char *port_set_to_string(const PortSet *p, char buf[static POLICY_PORTS_STRING_MAX]) {
        size_t k = 0;

        assert(p);
        assert(p->n_ranges <= POLICY_PORT_RANGES_MAX);

        if (p->n_ranges == 0)
                return strcpy(buf, "any");
        for (size_t i = 0; i < p->n_ranges; i++) {
                const PolicyPortRange *range = p->ranges + i;

                /* At most "65535-65535," per range: POLICY_PORTS_STRING_MAX always suffices. */
                k += (size_t) snprintf(buf + k, POLICY_PORTS_STRING_MAX - k, "%s%u", i > 0 ? "," : "",
                                       range->first);
                if (range->first != range->last)
                        k += (size_t) snprintf(buf + k, POLICY_PORTS_STRING_MAX - k, "-%u", range->last);
        }
        return buf;
}

bool port_set_contains(const PortSet *p, uint16_t port) {
        assert(p);

        if (port == 0)
                return false;
        if (p->n_ranges == 0)
                return true;
        for (size_t i = 0; i < p->n_ranges; i++)
                if (port >= p->ranges[i].first && port <= p->ranges[i].last)
                        return true;
        return false;
}

static const char *const protocol_table[_RESOURCE_PROTOCOL_MAX] = {
        [RESOURCE_PROTOCOL_ANY] = "any",
        [RESOURCE_PROTOCOL_TCP] = "tcp",
        [RESOURCE_PROTOCOL_UDP] = "udp",
};

const char *resource_protocol_to_string(ResourceProtocol p) {
        return p >= 0 && p < _RESOURCE_PROTOCOL_MAX ? protocol_table[p] : NULL;
}

ResourceProtocol resource_protocol_from_string(const char *s) {
        for (ResourceProtocol p = 0; s && p < _RESOURCE_PROTOCOL_MAX; p++)
                if (streq(s, protocol_table[p]))
                        return p;
        return _RESOURCE_PROTOCOL_INVALID;
}

/* A CONNECT target, classified once per decision. */
typedef struct Target {
        const char *name;       /* a name: not NUL-terminated at len (a trailing dot may follow) */
        size_t len;
        int family;             /* an address: AF_INET (mapped IPv6 included) or AF_INET6; 0 for a name */
        uint8_t address[16];
} Target;

static int target_parse(const char *host, Target *ret) {
        Target t = {};
        bool mapped;
        size_t n;

        if (isempty(host))
                return -EINVAL;
        n = strnlen(host, POLICY_ADDRESS_STRING_MAX);
        if (n >= POLICY_ADDRESS_STRING_MAX)
                return -EINVAL;
        if (host[0] == '[') {
                if (n < 2 || host[n - 1] != ']')
                        return -EINVAL;
                /* Brackets only around IPv6 (a mapped address is IPv6 text), as in an authority. */
                t.family = address_parse(host + 1, n - 2, t.address, &mapped);
                if (t.family == 0 || (t.family == AF_INET && !mapped))
                        return -EINVAL;
        } else if ((t.family = address_parse(host, n, t.address, &mapped)) == 0) {
                t.name = host;
                t.len = name_length(host);
                if (name_check(host, t.len))
                        return -EINVAL;
        }
        *ret = t;
        return 0;
}

static int target_match(const ResourceAddress *a, const Target *t) {
        size_t n;

        switch (a->kind) {
        case RESOURCE_ADDRESS_FQDN:
                if (!t->name || t->len != strlen(a->name) || !ascii_caseeq(t->name, a->name, t->len))
                        return 0;
                return SPECIFICITY_NAME;
        case RESOURCE_ADDRESS_WILDCARD:
                /* At least one whole label in front of the suffix. */
                n = strlen(a->name);
                if (!t->name || t->len < n + 2 || t->name[t->len - n - 1] != '.' ||
                    !ascii_caseeq(t->name + t->len - n, a->name, n))
                        return 0;
                return 1 + (int) n;
        case RESOURCE_ADDRESS_IP:
        case RESOURCE_ADDRESS_CIDR:
                if (t->family != a->family || !prefix_equal(t->address, a->address, a->prefix_length))
                        return 0;
                return 1 + (int) a->prefix_length;
        default:
                return 0;
        }
}

int resource_address_match(const ResourceAddress *a, const char *host) {
        Target t;
        int r;

        assert(a);

        r = target_parse(host, &t);
        if (r < 0)
                return r;
        return target_match(a, &t);
}

static bool resource_grants(const PolicyResource *res, uint16_t port, ResourceProtocol protocol,
                            char *const *groups) {
        if (res->protocol != RESOURCE_PROTOCOL_ANY && res->protocol != protocol)
                return false;
        if (!port_set_contains(&res->ports, port))
                return false;
        STRV_FOREACH(g, groups)
                if (strv_contains(res->groups, *g))
                        return true;
        return false;
}

int policy_decide(const PolicyResource *resources, size_t n, const char *host, uint16_t port,
                  ResourceProtocol protocol, char *const *groups, const PolicyResource **ret_resource) {
        const PolicyResource *best = NULL, *granted = NULL;
        int best_score = 0, r;
        Target t;

        assert(resources || n == 0);

        r = target_parse(host, &t);
        if (r < 0)
                return r;

        /* Only the most specific matches count: a higher score discards whatever a lower one granted. */
        for (size_t i = 0; i < n; i++) {
                int score = target_match(&resources[i].address, &t);

                if (score <= 0 || score < best_score)
                        continue;
                if (score > best_score) {
                        best_score = score;
                        best = resources + i;
                        granted = NULL;
                }
                if (!granted && resource_grants(resources + i, port, protocol, groups))
                        granted = resources + i;
        }

        if (ret_resource)
                *ret_resource = granted ?: best;
        return !!granted;
}
