/* SPDX-License-Identifier: Apache-2.0 */
/* The front-end request parsers on arbitrary bytes: socks_parse_greeting(), socks_parse_request() (also on
 * what follows a complete greeting, as a client sending both at once is served) and http_connect_parse().
 * Besides the sanitizers' checks it asserts what the incremental state machine relies on:
 *   - a complete parse takes at most the bytes given, gives the same answer on exactly those bytes, and
 *     every shorter prefix of it asks for more (a valid request never looks malformed half-way);
 *   - a verdict never changes with more bytes: an error on a prefix is the same error on the whole, and
 *     "need more" on the whole was "need more" on its prefixes;
 *   - the HostPort is valid and canonical: it formats and parses back to itself;
 *   - every error comes with the reply the client is owed. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "macro.h"
#include "net-connect.h"
#include "parse-util.h"
#include "string-util.h"
#include "tunneler-frontend.h"

typedef struct Result {
        int r;
        HostPort hp;
        unsigned code;
} Result;

typedef void (*ParseFunc)(const uint8_t *data, size_t size, Result *ret);

static void parse_greeting(const uint8_t *data, size_t size, Result *ret) {
        uint8_t reply = 0x42; /* not a valid answer: shows whether it was set */

        *ret = (Result) {};
        ret->r = socks_parse_greeting(data, size, &reply);
        ret->code = reply;
        if (ret->r > 0 && reply != SOCKS_METHOD_NO_AUTH)
                abort();
        if (ret->r == -EPROTONOSUPPORT && reply != SOCKS_METHOD_NONE_ACCEPTABLE)
                abort();
        if (ret->r == -EBADMSG && reply != 0x42)
                abort();
        if (ret->r < 0 && ret->r != -EPROTONOSUPPORT && ret->r != -EBADMSG)
                abort();
}

static void parse_request(const uint8_t *data, size_t size, Result *ret) {
        uint8_t reply = 0x42;

        *ret = (Result) {};
        ret->r = socks_parse_request(data, size, &ret->hp, &reply);
        ret->code = reply;
        if (ret->r >= 0 && reply != 0x42)
                abort();
        if (ret->r == -EBADMSG && reply != SOCKS_REPLY_GENERAL_FAILURE)
                abort();
        if (ret->r == -EPROTONOSUPPORT && reply != SOCKS_REPLY_COMMAND_NOT_SUPPORTED &&
            reply != SOCKS_REPLY_ADDRESS_NOT_SUPPORTED)
                abort();
        if (ret->r < 0 && ret->r != -EPROTONOSUPPORT && ret->r != -EBADMSG)
                abort();
        /* The longest request: a 255-byte domain name. */
        if (ret->r > 4 + 1 + 255 + 2)
                abort();
}

static void parse_http(const uint8_t *data, size_t size, Result *ret) {
        unsigned status = 0;

        *ret = (Result) {};
        ret->r = http_connect_parse((const char *) data, size, &ret->hp, &status);
        ret->code = status;
        switch (ret->r) {
        case -EBADMSG:
                if (status != 400)
                        abort();
                break;
        case -EPROTONOSUPPORT:
                if (status != 405 && status != 505)
                        abort();
                break;
        case -EMSGSIZE:
                if (status != 431 || size < FRONTEND_HEAD_MAX)
                        abort();
                break;
        default:
                if (ret->r < 0 || status != 0 || ret->r > (int) FRONTEND_HEAD_MAX)
                        abort();
                /* Nothing but a complete head settles below the limit. */
                if (ret->r == 0 && size >= FRONTEND_HEAD_MAX)
                        abort();
        }
}

static void check_host_port(const HostPort *hp) {
        char s[HOST_PORT_STRING_MAX];
        HostPort again;

        if (!memchr(hp->host, '\0', sizeof(hp->host)) || hp->host[0] == '\0' || hp->port == 0)
                abort();
        if (hp->family != AF_INET && hp->family != AF_INET6 && hp->family != AF_UNSPEC)
                abort();
        if (!host_port_to_string(hp, s, sizeof(s)))
                abort();
        if (connect_authority_parse(s, &again) < 0)
                abort();
        if (!streq(again.host, hp->host) || again.port != hp->port || again.family != hp->family)
                abort();
}

static bool result_eq(const Result *a, const Result *b) {
        if (a->r != b->r || a->code != b->code)
                return false;
        if (a->r > 0)
                return streq(a->hp.host, b->hp.host) && a->hp.port == b->hp.port &&
                       a->hp.family == b->hp.family;
        return true;
}

static void check_parser(ParseFunc parse, bool has_host, const uint8_t *data, size_t size) {
        const size_t prefixes[] = { 0, 1, size / 2, size > 0 ? size - 1 : 0 };
        Result whole, part;

        parse(data, size, &whole);

        if (whole.r > 0) {
                if ((size_t) whole.r > size)
                        abort();
                if (has_host)
                        check_host_port(&whole.hp);
                parse(data, (size_t) whole.r, &part);
                if (!result_eq(&whole, &part))
                        abort();
                for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                        if (prefixes[i] < (size_t) whole.r) {
                                parse(data, prefixes[i], &part);
                                if (part.r != 0)
                                        abort();
                        }
                return;
        }

        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++) {
                if (prefixes[i] > size)
                        continue;
                parse(data, prefixes[i], &part);
                if (whole.r == 0 && part.r != 0)
                        abort();
                if (part.r < 0 && !result_eq(&whole, &part))
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Result greeting;

        /* Past the head limit nothing changes but the 431. */
        if (size > FRONTEND_HEAD_MAX + 16)
                size = FRONTEND_HEAD_MAX + 16;

        check_parser(parse_greeting, false, data, size);
        check_parser(parse_request, true, data, size);
        check_parser(parse_http, true, data, size);

        parse_greeting(data, size, &greeting);
        if (greeting.r > 0)
                check_parser(parse_request, true, data + greeting.r, size - (size_t) greeting.r);
        return 0;
}
