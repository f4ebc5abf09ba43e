/* SPDX-License-Identifier: Apache-2.0 */

/* The policy value parsers and the matcher on arbitrary bytes (as one NUL-terminated string). Whatever a
 * parser accepts is canonical after one pass: to_string → parse gives the same value and the same text.
 * The matcher agrees with the parser: a host it accepts (brackets aside) is a valid FQDN or IP resource
 * which matches that host itself, a host it refuses is not (except "a.b.c.d/32", an IP resource in CIDR
 * spelling), and policy_decide() judges the same hosts valid. */

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "policy.h"

static void check_address(const char *s) {
        char buf[POLICY_ADDRESS_STRING_MAX], again_buf[POLICY_ADDRESS_STRING_MAX];
        ResourceAddress a, again;
        const char *reason = NULL;

        if (resource_address_parse(s, &a, &reason) < 0) {
                if (!reason)
                        abort();
                return;
        }
        if (a.kind < 0 || a.kind >= _RESOURCE_ADDRESS_KIND_MAX || !resource_address_to_string(&a, buf))
                abort();
        if (resource_address_parse(buf, &again, NULL) < 0 || memcmp(&a, &again, sizeof(a)) != 0)
                abort();
        if (!resource_address_to_string(&again, again_buf) || strcmp(buf, again_buf) != 0)
                abort();
        if (a.kind == RESOURCE_ADDRESS_IP || a.kind == RESOURCE_ADDRESS_CIDR) {
                unsigned bits = a.family == AF_INET ? 32 : 128;

                if ((a.family != AF_INET && a.family != AF_INET6) || a.prefix_length > bits ||
                    (a.kind == RESOURCE_ADDRESS_IP) != (a.prefix_length == bits))
                        abort();
        }
}

static void check_ports(const char *s) {
        char buf[POLICY_PORTS_STRING_MAX], again_buf[POLICY_PORTS_STRING_MAX];
        const char *reason = NULL;
        PortSet p, again;

        if (port_set_parse(s, &p, &reason) < 0) {
                if (!reason)
                        abort();
                return;
        }
        if (p.n_ranges > POLICY_PORT_RANGES_MAX)
                abort();
        /* Sorted, disjoint, not adjacent, never 0, never the whole range spelled out. */
        for (size_t i = 0; i < p.n_ranges; i++) {
                const PolicyPortRange *r = p.ranges + i;

                if (r->first == 0 || r->first > r->last || (i > 0 && r->first <= p.ranges[i - 1].last + 1))
                        abort();
                if (!port_set_contains(&p, r->first) || !port_set_contains(&p, r->last))
                        abort();
                if (port_set_contains(&p, (uint16_t) (r->first - 1)) ||
                    (r->last < 65535 && port_set_contains(&p, (uint16_t) (r->last + 1))))
                        abort();
        }
        if (p.n_ranges == 1 && p.ranges[0].first == 1 && p.ranges[0].last == 65535)
                abort();
        port_set_to_string(&p, buf);
        if (port_set_parse(buf, &again, NULL) < 0 || memcmp(&p, &again, sizeof(p)) != 0)
                abort();
        if (strcmp(port_set_to_string(&again, again_buf), buf) != 0)
                abort();
}

static void check_match(const char *host) {
        static const char *const fixed[] = {
                "db.lab.example", "*.lab.example", "10.0.0.0/8", "10.0.0.1", "fd00::/64", "::/0", "nas",
        };
        PolicyResource resources[ELEMENTSOF(fixed)] = {};
        const PolicyResource *got = NULL;
        char *groups[] = { (char *) "eng", NULL };
        ResourceAddress self;
        size_t n;
        int r = 0, best = 0, d;

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++) {
                int m;

                if (resource_address_parse(fixed[i], &resources[i].address, NULL) < 0)
                        abort();
                resources[i].name = fixed[i];
                resources[i].groups = groups;
                m = resource_address_match(&resources[i].address, host);
                if (i > 0 && (m < 0) != (r < 0))
                        abort();
                r = m;
                best = MAX(best, m);
        }

        d = policy_decide(resources, ELEMENTSOF(resources), host, 22, RESOURCE_PROTOCOL_TCP, groups, &got);
        /* Every resource grants "eng" on any port: a match is a grant. */
        if ((d < 0) != (r < 0) || (d >= 0 && (d > 0) != (best > 0)) || (d > 0 && !got))
                abort();
        if (got && resource_address_match(&got->address, host) != best)
                abort();

        /* Brackets are the authority's business; inside them only IPv6 text. */
        n = strlen(host);
        if (n > 2 && host[0] == '[' && host[n - 1] == ']')
                return;
        if (r >= 0) {
                if (resource_address_parse(host, &self, NULL) < 0)
                        abort();
                if (self.kind != RESOURCE_ADDRESS_FQDN && self.kind != RESOURCE_ADDRESS_IP)
                        abort();
                if (resource_address_match(&self, host) <= 0)
                        abort();
        } else if (!strchr(host, '/') && resource_address_parse(host, &self, NULL) >= 0 &&
                   (self.kind == RESOURCE_ADDRESS_FQDN || self.kind == RESOURCE_ADDRESS_IP))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *s;

        /* Everything valid is far shorter; a margin keeps the length rules exercised. */
        if (size > 2 * POLICY_PORTS_STRING_MAX)
                size = 2 * POLICY_PORTS_STRING_MAX;
        s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';

        check_address(s);
        check_ports(s);
        check_match(s);
        free(s);
        return 0;
}
