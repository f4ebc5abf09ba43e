/* SPDX-License-Identifier: Apache-2.0 */

#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "strv.h"

void agent_identity_done(AgentIdentity *i) {
        if (!i)
                return;

        free(i->id);
        free(i->spiffe_id);
        free(i->trust_domain);
        erase_and_free(i->key.data, i->key.size);
        for (size_t k = 0; k < i->n_chain && k < IDENTITY_CHAIN_MAX; k++)
                free(i->chain[k].data);
        for (size_t k = 0; k < i->n_bundle && k < IDENTITY_BUNDLE_MAX; k++)
                free(i->bundle[k].data);
        strv_free(i->controllers);
        free(i->remote_network);
        strv_free(i->groups);
        *i = (AgentIdentity) {};
}

bool der_blobs_equal(const DerBlob *a, size_t na, const DerBlob *b, size_t nb) {
        if (na != nb)
                return false;
        for (size_t k = 0; k < na; k++)
                if (a[k].size != b[k].size || memcmp(a[k].data, b[k].data, a[k].size) != 0)
                        return false;
        return true;
}
