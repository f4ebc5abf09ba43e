/* SPDX-License-Identifier: Apache-2.0 */

/* Feeds arbitrary bytes to the gRPC Length-Prefixed-Message decoder in chunks whose size the first byte
 * picks (0: everything at once), as DATA frames would split them. Every message the decoder hands out
 * must be exactly the bytes it was framed in, no message exceeds the cap, and nothing leaks. */

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net-grpc-frame.h"

#define FUZZ_GRPC_CAP (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        GrpcDecoder d;
        size_t chunk, pos = 0, start = 0;
        int r = 0;

        if (size < 1)
                return 0;
        chunk = data[0] ?: size;
        data++;
        size--;

        grpc_decoder_init(&d, FUZZ_GRPC_CAP);

        while (pos < size && r >= 0) {
                size_t n = MIN(chunk, size - pos);

                while (n > 0) {
                        _cleanup_free_ uint8_t *m = NULL, *framed = NULL;
                        size_t consumed, m_size, framed_size;

                        r = grpc_decoder_feed(&d, data + pos, n, &consumed);
                        if (r < 0)
                                break;
                        if (consumed > n || (r == 0 && consumed != n))
                                abort();
                        pos += consumed;
                        n -= consumed;
                        if (r == 0)
                                break;

                        if (grpc_decoder_take(&d, &m, &m_size) < 0 || !m || m_size > FUZZ_GRPC_CAP ||
                            !grpc_decoder_is_idle(&d))
                                abort();

                        /* Framing it again gives back the input it came from. */
                        if (grpc_frame_encode(m, m_size, &framed, &framed_size) < 0)
                                abort();
                        if (framed_size != pos - start || memcmp(framed, data + start, framed_size) != 0)
                                abort();
                        start = pos;
                }
        }

        /* Idle exactly when the input ended on a message boundary. */
        if (r >= 0 && grpc_decoder_is_idle(&d) != (start == size))
                abort();

        grpc_decoder_done(&d);
        return 0;
}
