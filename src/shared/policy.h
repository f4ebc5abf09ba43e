/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The policy model's values and the access decision (DESIGN.md §5), shared by the controller (validation,
 * storage in canonical form) and the connector (the decision on every CONNECT). No I/O, no OpenSSL, no
 * name resolution: a target is judged by the host exactly as the tunneler asked for it.
 *
 * Resource address, one of:
 *   FQDN       "db.lab.example" — letters, digits, '-' and '.', labels 1..63, total at most 253, no leading
 *              or trailing '-' in a label, at least one dot or a single label ("nas"), case-insensitive
 *              (stored lower-case), one trailing dot accepted and dropped. The last label may not be all
 *              digits, so "300.1.1.1" and "10.0.0.1/24" are never names. Matches exactly that name.
 *   wildcard   "*.lab.example" — "*." + an FQDN of at least two labels, at most 253 characters in all.
 *              Matches any name with one or more labels in front of the suffix ("a.lab.example",
 *              "a.b.lab.example"), never the suffix itself.
 *   IPv4/IPv6  "192.168.1.10", "fd00::5" — matches that address; stored in inet_ntop() form, without
 *              brackets ("[fd00::5]" is refused). An IPv4-mapped address is stored as IPv4
 *              ("::ffff:10.0.0.1" → "10.0.0.1", "::ffff:10.0.0.0/120" → "10.0.0.0/24").
 *   CIDR       "10.0.0.0/24", "fd00::/64" — prefix length in decimal digits; host bits must be zero
 *              ("10.0.0.1/24" is refused: "host bits set (use the network address)"); /32 and /128 are
 *              stored as the plain address.
 * A name target only matches FQDN and wildcard resources; an address target (IPv4 literal, or IPv6
 * literal with or without brackets) only IP and CIDR resources. IPv4-mapped IPv6 addresses are matched as
 * IPv4.
 *
 * Ports: "any" (or "" or "*") = every port 1..65535, else a comma-separated list of ports and ranges
 * "22,80,8000-8100" (whitespace around items allowed). Port 0, first > last and more than
 * POLICY_PORT_RANGES_MAX items (as written, before merging) are refused. Stored sorted, with overlapping and adjacent ranges merged;
 * a set covering 1..65535 is "any".
 *
 * Protocol: "tcp", "udp", "any". A resource of protocol "any" serves every request; otherwise the request's
 * protocol must be the resource's.
 *
 * Names (resources, remote networks, groups, aliases are FQDNs): 1..POLICY_NAME_MAX bytes of UTF-8 text
 * without control characters (string_is_valid_text()), not starting or ending with whitespace. Stored
 * verbatim: quotes, semicolons and the like are fine.
 *
 * The decision (policy_decide()): among the resources whose address matches the target host, only the
 * most specific ones count (an exact IP beats any CIDR, a longer prefix beats a shorter one, an exact name
 * beats any wildcard, a longer wildcard suffix beats a shorter one). Access is granted when one of those
 * also matches the port and protocol and grants one of the tunneler's groups. Everything else is denied:
 * a less specific resource never grants what a more specific one covers. The specificity numbers are
 * documented at the top of policy.c. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define POLICY_NAME_MAX 128U
#define POLICY_FQDN_MAX 253U
#define POLICY_PORT_RANGES_MAX 64U
/* Longest canonical address ("ffff:…/128") or port list text. */
#define POLICY_ADDRESS_STRING_MAX 256U
#define POLICY_PORTS_STRING_MAX (POLICY_PORT_RANGES_MAX * 12U)

typedef enum ResourceAddressKind {
        RESOURCE_ADDRESS_FQDN,
        RESOURCE_ADDRESS_WILDCARD,
        RESOURCE_ADDRESS_IP,
        RESOURCE_ADDRESS_CIDR,
        _RESOURCE_ADDRESS_KIND_MAX,
        _RESOURCE_ADDRESS_KIND_INVALID = -EINVAL,
} ResourceAddressKind;

typedef struct ResourceAddress {
        ResourceAddressKind kind;
        char name[POLICY_FQDN_MAX + 1];     /* FQDN, or the wildcard's suffix without "*." (lower-case) */
        int family;                         /* IP, CIDR: AF_INET or AF_INET6 */
        uint8_t address[16];                /* IP, CIDR: network byte order, 4 or 16 bytes used */
        unsigned prefix_length;             /* IP: 32 or 128; CIDR: 0..32 or 0..128 */
} ResourceAddress;

typedef enum ResourceProtocol {
        RESOURCE_PROTOCOL_ANY,
        RESOURCE_PROTOCOL_TCP,
        RESOURCE_PROTOCOL_UDP,
        _RESOURCE_PROTOCOL_MAX,
        _RESOURCE_PROTOCOL_INVALID = -EINVAL,
} ResourceProtocol;

typedef struct PolicyPortRange {
        uint16_t first, last;               /* inclusive, 1..65535 */
} PolicyPortRange;

typedef struct PortSet {
        PolicyPortRange ranges[POLICY_PORT_RANGES_MAX];
        size_t n_ranges;                    /* 0: any port */
} PortSet;

/* A resource as the decision needs it. Borrowed strings. */
typedef struct PolicyResource {
        const char *name;
        ResourceAddress address;
        ResourceProtocol protocol;
        PortSet ports;
        char **groups;                      /* groups granted this resource (strv), NULL: none */
} PolicyResource;

bool policy_name_is_valid(const char *s) _pure_;

/* The parsers fail with -EINVAL and a static *ret_reason (may be NULL) naming the rule broken; ret is
 * untouched on failure. Output is zero-filled beyond what the value uses, so equal values compare equal
 * with memcmp(). */
int resource_address_parse(const char *s, ResourceAddress *ret, const char **ret_reason);
/* Canonical text ("10.0.0.0/24", "*.lab.example", "fd00::5") into buf of POLICY_ADDRESS_STRING_MAX. */
const char *resource_address_to_string(const ResourceAddress *a, char buf[static POLICY_ADDRESS_STRING_MAX]);

int port_set_parse(const char *s, PortSet *ret, const char **ret_reason);
/* "any" or "22,80,8000-8100" into buf of POLICY_PORTS_STRING_MAX. */
const char *port_set_to_string(const PortSet *p, char buf[static POLICY_PORTS_STRING_MAX]);
/* Port 0 is never contained. */
bool port_set_contains(const PortSet *p, uint16_t port) _pure_;

/* "any", "tcp", "udp"; NULL / _RESOURCE_PROTOCOL_INVALID otherwise. */
const char *resource_protocol_to_string(ResourceProtocol p);
ResourceProtocol resource_protocol_from_string(const char *s);

/* Whether a's address covers host (a name or an IP literal as in a CONNECT authority, without the port;
 * IPv6 with or without brackets; one trailing dot on a name is ignored). Returns the specificity (> 0) on
 * a match, 0 otherwise. Specificities are only compared between resources matching the same host. -EINVAL
 * for a host that is neither a valid name nor an address (zone ids, bracketed IPv4 or names included).
 * Never allocates. */
int resource_address_match(const ResourceAddress *a, const char *host);

/* The decision described above. Returns 1 (granted) or 0 (denied); *ret_resource (may be NULL) is the
 * resource that granted, or on denial the most specific resource that matched the host (NULL when none
 * did), for the audit trail; among equally specific resources, the first in the array. -EINVAL for an
 * invalid host (*ret_resource untouched). groups: the tunneler's groups (strv, may be NULL), compared
 * exactly with each resource's groups. Never allocates. */
int policy_decide(const PolicyResource *resources, size_t n, const char *host, uint16_t port,
                  ResourceProtocol protocol, char *const *groups, const PolicyResource **ret_resource);
