/* SPDX-License-Identifier: Apache-2.0 */

/* The DNS response parser (net-resolve.h) on arbitrary bytes, as an answer to the fixed question
 * "www.example.com", A and AAAA. The id is taken from the input itself so that inputs get past the id
 * check. Only the documented errors come back; on success at most max addresses, all of the family
 * asked, with the port set, and a smaller max gives a prefix of the same answer; on failure nothing is
 * written. Any other id is never an answer. */

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net-resolve.h"

#define QNAME "www.example.com"
#define PORT 443

static const size_t maxes[] = { RESOLVE_ADDRESSES_MAX, 3, 1, 0 };

static void check(const uint8_t *data, size_t size, uint16_t id, uint16_t qtype) {
        struct sockaddr_storage out[ELEMENTSOF(maxes)][RESOLVE_ADDRESSES_MAX + 1], sentinel;
        size_t n[ELEMENTSOF(maxes)];
        int r[ELEMENTSOF(maxes)];

        memset(&sentinel, 0x5a, sizeof(sentinel));
        for (size_t k = 0; k < ELEMENTSOF(maxes); k++) {
                for (size_t i = 0; i < ELEMENTSOF(out[k]); i++)
                        out[k][i] = sentinel;
                n[k] = SIZE_MAX;
                r[k] = dns_parse_response(data, size, id, QNAME, qtype, PORT, out[k], maxes[k], &n[k]);

                if (r[k] < 0) {
                        if (r[k] != -EBADMSG && r[k] != -ENOMSG && r[k] != -ENOENT && r[k] != -EIO)
                                abort();
                        if (n[k] != SIZE_MAX)
                                abort();
                        for (size_t i = 0; i < ELEMENTSOF(out[k]); i++)
                                if (memcmp(&out[k][i], &sentinel, sizeof(sentinel)) != 0)
                                        abort();
                        continue;
                }
                if (r[k] != 0 || n[k] > maxes[k])
                        abort();
                for (size_t i = 0; i < n[k]; i++) {
                        const struct sockaddr_in *sin = (const struct sockaddr_in *) &out[k][i];
                        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *) &out[k][i];

                        if (qtype == DNS_TYPE_A &&
                            (sin->sin_family != AF_INET || sin->sin_port != htons(PORT)))
                                abort();
                        if (qtype == DNS_TYPE_AAAA &&
                            (sin6->sin6_family != AF_INET6 || sin6->sin6_port != htons(PORT)))
                                abort();
                }
                for (size_t i = n[k]; i < ELEMENTSOF(out[k]); i++)
                        if (memcmp(&out[k][i], &sentinel, sizeof(sentinel)) != 0)
                                abort();
        }

        /* The limit only cuts: same verdict, and a prefix of the same addresses. */
        for (size_t k = 1; k < ELEMENTSOF(maxes); k++) {
                if (r[k] != r[0])
                        abort();
                if (r[0] < 0)
                        continue;
                if (n[k] != (n[0] < maxes[k] ? n[0] : maxes[k]))
                        abort();
                if (n[k] > 0 && memcmp(out[k], out[0], n[k] * sizeof(out[0][0])) != 0)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const uint16_t types[] = { DNS_TYPE_A, DNS_TYPE_AAAA };
        uint16_t id = size >= 2 ? (uint16_t) (data[0] << 8 | data[1]) : 0;
        struct sockaddr_storage out[RESOLVE_ADDRESSES_MAX];
        size_t n = SIZE_MAX;
        int r;

        for (size_t t = 0; t < ELEMENTSOF(types); t++)
                check(data, size, id, types[t]);

        /* Nothing answers a query with another id. */
        r = dns_parse_response(data, size, (uint16_t) (id + 1), QNAME, DNS_TYPE_A, PORT, out,
                               ELEMENTSOF(out), &n);
        if ((r != -ENOMSG && r != -EBADMSG) || n != SIZE_MAX)
                abort();
        return 0;
}
