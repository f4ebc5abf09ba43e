/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Validating parsers for values from config files, the command line and the bus. They never log; they
 * return -EINVAL for malformed input and -ERANGE for well-formed input outside the representable or
 * allowed range. ret is written only on success. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h> /* AF_INET, AF_INET6, AF_UNSPEC for HostPort.family */

#include "macro.h"
#include "time-util.h"

/* 1/yes/y/true/t/on → 1, 0/no/n/false/f/off → 0, ASCII case-insensitive; anything else -EINVAL. */
int parse_boolean(const char *s);

/* Base 10 only, digits only: no sign ('+' is refused), no whitespace, no trailing junk. Leading zeros are
 * allowed ("007" is 7). Unsigned variants give -ERANGE for a negative number ("-1") and -EINVAL for
 * anything else that is not all digits. Overflow gives -ERANGE. */
int safe_atou(const char *s, unsigned *ret);
int safe_atou64(const char *s, uint64_t *ret);
int safe_atoi(const char *s, int *ret);
int safe_atoi64(const char *s, int64_t *ret);

/* systemd-style durations: one or more components "<number>[.<fraction>][ ]<unit>", optionally separated
 * by whitespace and summed ("1h 30min", "1h30min", "1.5s"). Units (case-sensitive): us usec, ms msec,
 * s sec second seconds, m min minute minutes, h hr hour hours, d day days, w week weeks, y year years
 * (365.25 days); no unit means seconds. The fraction needs a digit before the dot (".5s" is refused) and
 * is floored to whole µs.
 * "infinity" gives USEC_INFINITY. Leading and trailing whitespace is ignored. Negative → -ERANGE,
 * a sum that reaches USEC_INFINITY → -ERANGE, empty or junk → -EINVAL. */
int parse_sec(const char *s, usec_t *ret);

/* Byte sizes: "<number>[.<fraction>][ ][K|M|G|T][B]", powers of 1024, suffixes upper-case only
 * ("4096", "4096B", "16K", "16KB", "1.5M"). A fraction needs K/M/G/T and is floored to whole bytes.
 * Leading and trailing whitespace is ignored. Negative or overflow → -ERANGE, junk → -EINVAL. */
int parse_size(const char *s, uint64_t *ret);

/* A TCP/UDP port 1–65535 (safe_atou rules). 0 and > 65535 → -ERANGE (0 is never a port to connect to or
 * to configure; "any port" is expressed by leaving the setting unset). */
int parse_port(const char *s, uint16_t *ret);

/* Longest DNS name in text form, without a trailing dot. */
#define HOSTNAME_MAX 253

/* A DNS host name: labels of 1–63 letters, digits and '-', not starting or ending with '-', joined by
 * single dots, at most HOSTNAME_MAX characters in all. A trailing dot is refused (names are used for SNI,
 * which forbids it), and so is an all-numeric last label, so that "300.1.1.1" is neither an IPv4 address
 * nor a name. Case is not checked. */
bool hostname_is_valid(const char *s) _pure_;

typedef struct HostPort {
        char host[256]; /* a name (lower-cased) or an address in canonical form, no brackets */
        uint16_t port;
        int family; /* AF_INET or AF_INET6 for address literals, AF_UNSPEC for names */
} HostPort;

/* "[" + IPv6 address or name + "]:" + 5 digits + NUL, with room to spare. */
#define HOST_PORT_STRING_MAX (256 + STRLEN("[]:65535") + 1)

/* Parses "name:port", "1.2.3.4:port", "[v6-address]:port", or any of those without ":port" when
 * default_port is non-zero. Refused with -EINVAL: an IPv6 address without brackets ("::1:80" is
 * ambiguous), a bracketed name or IPv4 address, IPv6 zone ids ("[fe80::1%eth0]" — a HostPort cannot
 * carry the interface), an empty host or port, whitespace anywhere, a missing port when default_port is
 * 0. A port of 0 or above 65535 gives -ERANGE. Addresses are stored in canonical form ("[0::1]" → "::1"),
 * names lower-cased. */
int parse_host_port(const char *s, uint16_t default_port, HostPort *ret);

/* "0.0.0.0" / "::": binds everything, reaches nothing. */
bool host_is_unspecified(const HostPort *hp) _pure_;
/* 127.0.0.0/8 or ::1. Names are not loopback (resolving "localhost" is a policy, not a fact). */
bool host_is_loopback(const HostPort *hp) _pure_;

/* An address literal and a port to bind: like parse_host_port() without a default port, except that port 0
 * (an ephemeral port) is allowed, and names are refused (-EINVAL): binding must not depend on DNS. With
 * loopback_only, anything but host_is_loopback() is -EINVAL. "127.0.0.1:80:0" is not 127.0.0.1 port 0. */
int parse_listen_address(const char *s, bool loopback_only, HostPort *ret);

/* Formats as "name:port", "1.2.3.4:port" or "[v6]:port" into buf. Returns buf, or NULL when hp holds no
 * host or buf is smaller than needed (HOST_PORT_STRING_MAX is always enough). */
char *host_port_to_string(const HostPort *hp, char *buf, size_t size);
