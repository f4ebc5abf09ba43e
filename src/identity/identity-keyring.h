/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Secrets in memory (DESIGN.md §7 "Identity in memory"): the KEK and the unwrapped identity are held in
 * the kernel keyring as "user" keys, readable by their possessor only, so they are not in the process's
 * memory between uses. They are linked into the PROCESS keyring, not the session keyring: outside systemd
 * the session keyring is the login session's, shared with every process of the user's session and
 * outliving us, so a crashed agent would leave its secrets there. The process keyring goes away with the
 * process (its keys are then garbage-collected) and is not inherited by fork(), like the wipe-on-fork
 * memory below; under systemd it is as private as the per-service session keyring §7 has in mind. An
 * optional timeout makes the kernel expire the key as well. Where keyctl is refused (containers: seccomp,
 * ENOSYS, EPERM, EACCES) or the key quota is exhausted (EDQUOT), the secret is kept instead in locked
 * (mlock), non-dumpable (MADV_DONTDUMP), wipe-on-fork memory, which honours the same timeout. Where mlock()
 * is refused as well (RLIMIT_MEMLOCK, or a container that wants CAP_IPC_LOCK for it) the memory stays
 * unlocked — still non-dumpable and wiped, but swappable — rather than the daemon refusing to run. The
 * caller learns which mode it got (and keyring_secret_lock_error()) and logs the fallback; these helpers
 * log at debug only. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "time-util.h"

/* Largest secret: the kernel's limit for a "user" key payload. Note that the kernel's per-user quota
 * (/proc/sys/kernel/keys/maxbytes, 20000 bytes by default for non-root users) can be lower; a key that
 * does not fit it falls back to memory. */
#define KEYRING_SECRET_MAX 32767U
/* Longest description given by the caller (a unique suffix is added to it in the keyring). */
#define KEYRING_DESCRIPTION_MAX 128U
/* Longest timeout; 0 or USEC_INFINITY mean none. */
#define KEYRING_TIMEOUT_MAX USEC_PER_YEAR

typedef enum KeyringFlags {
        KEYRING_FORCE_MEMORY = 1 << 0, /* do not try the kernel keyring (tests, or a caller's choice) */
} KeyringFlags;

typedef enum KeyringMode {
        KEYRING_MODE_MEMORY = 0,       /* locked, non-dumpable process memory */
        KEYRING_MODE_KERNEL = 1,       /* a possessor-only "user" key in the process keyring */
} KeyringMode;

typedef struct KeyringSecret KeyringSecret;

/* Stores a copy of data (1..KEYRING_SECRET_MAX bytes) under description (1..KEYRING_DESCRIPTION_MAX
 * printable ASCII characters, no spaces; the key's description in the keyring is "<description>.<random
 * hex>", so two secrets never replace each other). In kernel mode the key is linked into the process
 * keyring and its permissions are set to possessor-only right after add_key(). With a timeout (1 µs ..
 * KEYRING_TIMEOUT_MAX, rounded up to whole seconds; 0 or USEC_INFINITY for none) the secret expires:
 * keyring_secret_read() then fails with -EKEYEXPIRED, in either mode; a kernel key is also dropped by the
 * kernel even if this process never frees it. The caller still wipes its own data. Returns the KeyringMode
 * (>= 0) it got; keyring_secret_kernel_error() tells why the keyring was not used. Errors:
 *   -EINVAL  bad description or size 0
 *   -EFBIG   size above KEYRING_SECRET_MAX
 *   -ERANGE  timeout above KEYRING_TIMEOUT_MAX
 *   -ENOMEM, or the error of mmap()/madvise() in memory mode, or of mlock() other than a refusal
 *            (EPERM, ENOMEM, EAGAIN: see keyring_secret_lock_error()), or an unexpected keyctl error in
 *            kernel mode */
int keyring_secret_new_full(const char *description, const void *data, size_t size, KeyringFlags flags,
                            usec_t timeout, KeyringSecret **ret);
/* The same without a timeout. */
int keyring_secret_new(const char *description, const void *data, size_t size, KeyringFlags flags,
                       KeyringSecret **ret);

/* A copy of the secret in a new buffer of *ret_size bytes plus a NUL byte (not counted); the caller wipes
 * it: erase_and_free(buf, size + 1) or a ByteBuffer with erase_and_freep(). Errors: the keyctl error when
 * the key is gone or was revoked (-ENOKEY, -EKEYREVOKED), -EKEYEXPIRED after the timeout (either mode),
 * -EIO when its size changed, -ENOMEM. */
int keyring_secret_read(const KeyringSecret *s, uint8_t **ret, size_t *ret_size);

size_t keyring_secret_size(const KeyringSecret *s);
bool keyring_secret_in_kernel(const KeyringSecret *s);
/* The negative errno that made keyring_secret_new() fall back to memory; 0 in kernel mode and when
 * KEYRING_FORCE_MEMORY was given. For the caller's one warning. */
int keyring_secret_kernel_error(const KeyringSecret *s);
/* In memory mode, the negative errno with which mlock() refused (the memory is then swappable); 0 when
 * locked, and in kernel mode. For the caller's warning. */
int keyring_secret_lock_error(const KeyringSecret *s);
/* The key's serial number (> 0) in kernel mode, -ENXIO in memory mode. */
int keyring_secret_serial(const KeyringSecret *s);

/* Invalidates the key (kernel mode; unlinks it where invalidation is not supported) or wipes, unlocks
 * and unmaps the memory. Accepts NULL, returns NULL. */
KeyringSecret *keyring_secret_free(KeyringSecret *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(KeyringSecret *, keyring_secret_free);
