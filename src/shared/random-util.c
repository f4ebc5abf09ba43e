/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "random-util.h"

int random_bytes(void *p, size_t n) {
        uint8_t *q = p;

        assert(p || n == 0);

        while (n > 0) {
                ssize_t k;

                /* getrandom() returns at most 32 MiB - 1 per call and may be interrupted by a signal
                 * for requests above 256 bytes: loop until everything is filled. */
                k = getrandom(q, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                q += k;
                n -= (size_t) k;
        }
        return 0;
}

uint64_t random_u64(void) {
        uint64_t u;

        if (random_bytes(&u, sizeof(u)) < 0)
                abort();
        return u;
}

uint64_t random_u64_range(uint64_t n) {
        uint64_t threshold, x;

        if (n <= 1)
                return 0;

        /* 2^64 mod n values at the bottom would make the low results more likely: draw again when we
         * land there. At most half of the range is rejected, so this terminates quickly. */
        threshold = -n % n;
        do
                x = random_u64();
        while (x < threshold);
        return x % n;
}
