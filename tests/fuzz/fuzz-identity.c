/* SPDX-License-Identifier: Apache-2.0 */
/* identity_parse() on arbitrary bytes — the plaintext inside a sealed identity file. Besides the
 * sanitizers' checks it asserts the canonical form: whatever the parser accepts passes identity_check()
 * and identity_serialize() reproduces byte for byte, so nothing the parser ignores can hide in an
 * identity, and every refusal names its reason. */

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "identity-store.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        const char *reason = NULL;
        uint8_t *out = NULL;
        size_t n = 0;
        int r;

        r = identity_parse(data, size, &i, &reason);
        if (r < 0) {
                if (!reason || (r != -EBADMSG && r != -EPROTONOSUPPORT && r != -ENOMEM))
                        abort();
                return 0;
        }
        if (reason || identity_check(&i, NULL) < 0)
                abort();
        if (identity_serialize(&i, &out, &n, NULL) < 0)
                abort();
        if (n != size || memcmp(out, data, n) != 0)
                abort();
        erase_and_free(out, n);
        return 0;
}
