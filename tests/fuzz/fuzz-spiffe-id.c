/* SPDX-License-Identifier: Apache-2.0 */

/* Feeds arbitrary bytes to the SPIFFE ID parsers. Anything accepted must round-trip: its canonical
 * string parses again to an equal ID with the same ztna role and name, and the ztna parser never
 * accepts what the generic parser refuses. */

#include <stdlib.h>
#include <string.h>

#include "crypto-spiffe.h"
#include "fuzz.h"

static void check_round_trip(const SpiffeId *id, bool ztna) {
        _cleanup_(spiffe_id_freep) SpiffeId *again = NULL;
        const char *reason = NULL;

        if ((ztna ? spiffe_id_from_string_ztna : spiffe_id_from_string)(spiffe_id_to_string(id), &again,
                                                                          &reason) < 0)
                abort();
        if (!spiffe_id_equal(id, again) || !streq(id->uri, again->uri) || id->role != again->role)
                abort();
        if ((id->name == NULL) != (again->name == NULL) || (id->name && !streq(id->name, again->name)))
                abort();
        if (strlen(id->uri) > SPIFFE_ID_MAX || !spiffe_trust_domain_is_valid(id->trust_domain))
                abort();
        if (ztna && (id->role < 0 || !ztna_id_is_valid(id->name)))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL, *zid = NULL;
        _cleanup_free_ char *s = NULL;
        const char *reason = NULL;
        int r, rz;

        /* Longer than any valid ID by a margin, so the length rule is still exercised. */
        if (size > 4 * SPIFFE_ID_MAX)
                return 0;
        s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';

        r = spiffe_id_from_string(s, &id, &reason);
        if (r < 0 && (r != -EINVAL || !reason || id))
                abort();
        if (r >= 0)
                check_round_trip(id, false);

        reason = NULL;
        rz = spiffe_id_from_string_ztna(s, &zid, &reason);
        if (rz < 0 && (rz != -EINVAL || !reason || zid))
                abort();
        if (rz >= 0) {
                if (r < 0 || !spiffe_id_equal(id, zid))
                        abort();
                check_round_trip(zid, true);
        }
        return 0;
}
