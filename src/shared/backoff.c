/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <limits.h>

#include "backoff.h"
#include "random-util.h"

static uint64_t backoff_random_default(uint64_t n, void *userdata) {
        return random_u64_range(n);
}

void backoff_init(Backoff *b, usec_t base, usec_t cap, usec_t healthy_after) {
        assert(b);

        *b = (Backoff) {
                .base = base,
                .cap = cap,
                .healthy_after = healthy_after,
                .connected_at = USEC_INFINITY,
                .random = backoff_random_default,
        };
}

usec_t backoff_ceiling(const Backoff *b) {
        assert(b);

        if (b->base == 0)
                return 0;
        /* base * 2^attempt > cap  ⇔  base > cap / 2^attempt (integer division keeps this exact). */
        if (b->attempt >= 64 || b->base > (b->cap >> b->attempt))
                return b->cap;
        return b->base << b->attempt;
}

usec_t backoff_next(Backoff *b) {
        uint64_t (*rnd)(uint64_t n, void *userdata);
        usec_t ceiling, delay;

        assert(b);

        rnd = b->random ?: backoff_random_default;
        ceiling = backoff_ceiling(b);
        /* [0, ceiling] inclusive; a ceiling of UINT64_MAX cannot be + 1'd, and drawing from [0, max) is
         * indistinguishable there. */
        delay = rnd(ceiling == UINT64_MAX ? ceiling : ceiling + 1, b->userdata);
        if (delay > ceiling) /* a broken injected source must not produce longer sleeps */
                delay = ceiling;

        if (b->attempt < UINT_MAX)
                b->attempt++;
        return delay;
}

void backoff_connected(Backoff *b, usec_t now) {
        assert(b);

        b->connected_at = now;
}

void backoff_disconnected(Backoff *b, usec_t now) {
        assert(b);

        if (b->connected_at != USEC_INFINITY && now >= b->connected_at &&
            now - b->connected_at >= b->healthy_after)
                b->attempt = 0;
        b->connected_at = USEC_INFINITY;
}

void backoff_reset(Backoff *b) {
        assert(b);

        b->attempt = 0;
        b->connected_at = USEC_INFINITY;
}
