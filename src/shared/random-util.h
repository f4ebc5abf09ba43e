/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Randomness from the kernel (getrandom(2), blocking until the pool is initialised once at boot). Good
 * for keys, nonces and jitter alike; src/crypto uses OpenSSL's RAND_bytes for its own material. */

#include <stddef.h>
#include <stdint.h>

/* Fills p with n random bytes, retrying on EINTR and short reads. 0 or a negative errno (only if the
 * kernel lacks getrandom(2) or p is bad). */
int random_bytes(void *p, size_t n);

/* A uniformly random 64-bit value. Aborts if the kernel cannot provide randomness at all, which on the
 * kernels we support (getrandom(2), Linux ≥ 3.17) does not happen. */
uint64_t random_u64(void);

/* Uniformly random in [0, n), without modulo bias (rejection sampling). n == 0 gives 0. */
uint64_t random_u64_range(uint64_t n);
