/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Asynchronous name resolution on sd-event, for the connector (DESIGN.md §5: names are resolved by the
 * connector, with configurable resolvers). No threads, no blocking getaddrinfo():
 *
 *   - the A and the AAAA question go out as two queries (many servers refuse QDCOUNT=2) with distinct
 *     random 16-bit ids, on one UDP socket per attempt bound to a random source port, RFC 5452;
 *   - an answer counts only when it comes from the server asked (address and port), carries the id of one
 *     of our queries, exactly its question (name compared case-insensitively), QR set, opcode QUERY, and
 *     parses completely (compression pointers only backwards and bounded, no reading past the message);
 *     CNAME chains inside the answer are followed (at most RESOLVE_CNAME_MAX), records for other names,
 *     types or classes are ignored, an A record must hold 4 bytes and an AAAA record 16;
 *   - NXDOMAIN for either question decides at once (-ENOENT). SERVFAIL, REFUSED or any other error code,
 *     an ICMP error or a failed send moves to the next server, which is asked only the questions still
 *     open. Both answers are awaited until the attempt timeout; when it expires with addresses from one
 *     question those are the result, otherwise the next server is tried;
 *   - servers are tried in order, each for RESOLVE_ATTEMPT_TIMEOUT, the whole query for at most
 *     RESOLVE_TIMEOUT (both overridable with resolver_set_timeouts());
 *   - a name that is an IP literal, or "localhost" (127.0.0.1 and ::1), is answered without a query (from a
 *     defer event source, never from inside resolver_resolve());
 *   - at most RESOLVE_QUERIES_MAX queries in flight, literals included (-EBUSY beyond), at most
 *     RESOLVE_ADDRESSES_MAX addresses per answer (the rest dropped); IPv4 first, then IPv6, each in the
 *     order received.
 *
 * Names are queried as given: no search domains, no ndots, no /etc/hosts (except "localhost").
 * Truncated answers (TC) are used for what they hold; there is no TCP fallback (A/AAAA answers fit), and
 * no EDNS0 (answers are at most 512 bytes; up to RESOLVE_MESSAGE_MAX is accepted).
 * Nothing here logs above debug. */

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "time-util.h"

#define RESOLVE_SERVERS_MAX 8U
#define RESOLVE_QUERIES_MAX 1024U
#define RESOLVE_ADDRESSES_MAX 16U
#define RESOLVE_CNAME_MAX 8U
#define RESOLVE_ATTEMPT_TIMEOUT (2 * USEC_PER_SEC)
#define RESOLVE_TIMEOUT (5 * USEC_PER_SEC)
#define RESOLVE_RESOLV_CONF "/etc/resolv.conf"
#define RESOLVE_RESOLV_CONF_SIZE_MAX (64U * 1024U)
/* Largest answer datagram accepted; anything longer is dropped as malformed. */
#define RESOLVE_MESSAGE_MAX 4096U

typedef struct Resolver Resolver;
typedef struct ResolveQuery ResolveQuery;

/* error 0: n (1..RESOLVE_ADDRESSES_MAX) addresses with port set, borrowed for the call. Errors: -ENOENT
 * the name does not exist (NXDOMAIN) or has no A/AAAA records, -ETIMEDOUT no server answered, -EIO a
 * server failure (SERVFAIL, REFUSED), -EBADMSG only malformed answers, -ENOMEM. */
typedef void (*ResolveCallback)(ResolveQuery *q, int error, const struct sockaddr_storage *addresses,
                                size_t n, void *userdata);

/* servers: "IP" or "IP:port" / "[IPv6]:port" strings (port 53 by default), at most RESOLVE_SERVERS_MAX;
 * NULL or empty: the "nameserver" lines of resolv_conf (NULL: RESOLVE_RESOLV_CONF), read once here.
 * -EINVAL for a bad server (a name, port 0, a zone id), -E2BIG for more than RESOLVE_SERVERS_MAX, -ENOENT
 * when there is none at all. In resolv.conf, lines other than "nameserver IP" are ignored, and so are
 * addresses that do not parse or carry a zone id ("fe80::1%eth0"), and servers beyond the first
 * RESOLVE_SERVERS_MAX. */
int resolver_new(sd_event *event, char *const *servers, const char *resolv_conf, Resolver **ret);
/* Cancels every query (no callback) and frees. NULL allowed. */
Resolver *resolver_free(Resolver *resolver);
DEFINE_TRIVIAL_CLEANUP_FUNC(Resolver *, resolver_free);

/* Overrides RESOLVE_ATTEMPT_TIMEOUT and RESOLVE_TIMEOUT for queries started afterwards (tests use tiny
 * ones). -EINVAL for 0 or USEC_INFINITY. */
int resolver_set_timeouts(Resolver *resolver, usec_t attempt, usec_t total);
/* The servers in the order they are tried (port set), borrowed from resolver. Returns their number
 * (>= 1). */
size_t resolver_get_servers(const Resolver *resolver, const struct sockaddr_storage **ret);

/* Resolves name (a host name as policy.h accepts it, or an IP literal, IPv6 with or without brackets) for
 * port. One trailing dot is accepted, case does not matter. The callback runs once, from the event loop.
 * ret may be NULL (the query then frees itself after the callback, and must not be freed by anyone); a
 * query held by the caller may be freed from its callback, and must be freed by the caller in the end,
 * even after resolver_free() (which only detaches it). The resolver may be freed from a callback.
 * -EINVAL bad name, -EBUSY too many queries, -ENOMEM, or the error of creating an event source. */
int resolver_resolve(Resolver *resolver, const char *name, uint16_t port, ResolveCallback callback,
                     void *userdata, ResolveQuery **ret);
/* Cancels (the callback is not called). NULL allowed. */
ResolveQuery *resolve_query_free(ResolveQuery *q);
DEFINE_TRIVIAL_CLEANUP_FUNC(ResolveQuery *, resolve_query_free);

/* The DNS wire format, exposed for the fuzzer and the tests. */
#define DNS_TYPE_A 1U
#define DNS_TYPE_CNAME 5U
#define DNS_TYPE_AAAA 28U
#define DNS_CLASS_IN 1U
#define DNS_RCODE_NOERROR 0U
#define DNS_RCODE_FORMERR 1U
#define DNS_RCODE_SERVFAIL 2U
#define DNS_RCODE_NXDOMAIN 3U
#define DNS_RCODE_REFUSED 5U

/* Checks that msg answers the query (id, qname as resolver_resolve() accepts it, qtype DNS_TYPE_A or
 * DNS_TYPE_AAAA, class IN) and extracts its addresses for qname, CNAMEs followed, as sockaddr_in/_in6 with
 * port, at most max of them (the rest dropped). Returns 0 and *ret_n (0: the name has no record of that
 * type) for NOERROR; -ENOENT for NXDOMAIN; -EIO for any other response code; -ENOMSG for a message that
 * is not an answer to this query (id, QR, opcode, question); -EBADMSG for a malformed one (truncated,
 * pointer loops or forward pointers, bad label, bad rdata length, CNAME chain longer than
 * RESOLVE_CNAME_MAX, more than RESOLVE_MESSAGE_MAX bytes); -EINVAL for a bad qname or qtype. ret and
 * *ret_n are written only on success. */
int dns_parse_response(const uint8_t *msg, size_t size, uint16_t id, const char *qname, uint16_t qtype,
                       uint16_t port, struct sockaddr_storage *ret, size_t max, size_t *ret_n);
