/* SPDX-License-Identifier: Apache-2.0 */

/* Unpacks arbitrary bytes as one of the ztna.proto messages (the first byte picks which) through
 * grpc_message_unpack(). Whatever is accepted must survive pack → unpack → pack unchanged: the two
 * packed forms are identical. */

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net-grpc-frame.h"
#include "ztna.pb-c.h"

static const ProtobufCMessageDescriptor *const descriptors[] = {
        &ztna__v1__agent_message__descriptor,
        &ztna__v1__controller_message__descriptor,
        &ztna__v1__enroll_request__descriptor,
        &ztna__v1__enroll_response__descriptor,
        &ztna__v1__reauth_request__descriptor,
        &ztna__v1__reauth_response__descriptor,
        &ztna__v1__renew_request__descriptor,
        &ztna__v1__policy_snapshot__descriptor,
        &ztna__v1__tunneler_heartbeat__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *m = NULL, *again = NULL;
        _cleanup_free_ uint8_t *first = NULL, *second = NULL;
        const ProtobufCMessageDescriptor *desc;
        size_t first_size, second_size;

        if (size < 1)
                return 0;
        desc = descriptors[data[0] % ELEMENTSOF(descriptors)];

        if (grpc_message_unpack(desc, data + 1, size - 1, &m) < 0)
                return 0;
        if (m->descriptor != desc)
                abort();

        if (grpc_message_pack(m, SIZE_MAX, &first, &first_size) < 0)
                abort();
        if (grpc_message_unpack(desc, first, first_size, &again) < 0)
                abort();
        if (grpc_message_pack(again, SIZE_MAX, &second, &second_size) < 0)
                abort();
        if (first_size != second_size || memcmp(first, second, first_size) != 0)
                abort();

        return 0;
}
