/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <keyutils.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "identity-keyring.h"
#include "log.h"
#include "macro.h"
#include "random-util.h"

struct KeyringSecret {
        size_t size;
        bool in_kernel;
        int kernel_error;

        /* kernel mode */
        key_serial_t serial;
        key_serial_t keyring;

        /* memory mode */
        usec_t deadline;   /* CLOCK_BOOTTIME, USEC_INFINITY for none */
        uint8_t *mem;
        size_t mem_size;   /* mapped, a multiple of the page size */
        bool locked;
        int lock_error;    /* why mlock() refused, 0 when locked */
};

static bool description_is_valid(const char *d) {
        size_t n = 0;

        if (!d)
                return false;
        for (const char *p = d; *p; p++, n++)
                if (*p <= ' ' || *p >= 127 || n >= KEYRING_DESCRIPTION_MAX)
                        return false;
        return n > 0;
}

/* What a container or a seccomp filter answers when it refuses keyctl, and the key quota: then memory
 * serves. Any other error is real and is returned. */
static bool keyctl_error_is_refusal(int e) {
        return e == ENOSYS || e == EPERM || e == EACCES || e == EDQUOT || e == EOPNOTSUPP;
}

static int secret_put_kernel(KeyringSecret *s, const char *description, const void *data, size_t size,
                             unsigned timeout_sec) {
        char name[KEYRING_DESCRIPTION_MAX + 1 + 16 + 1];
        key_serial_t ring, key;
        int r;

        /* Probe keyctl before adding: if add_key() were allowed and keyctl() refused, the key could not
         * be restricted or removed afterwards. The process keyring (created here if need be) dies with
         * us, so a crash leaves no secret behind in a keyring that outlives the process. */
        ring = keyctl_get_keyring_ID(KEY_SPEC_PROCESS_KEYRING, 1);
        if (ring < 0)
                return -errno;

        r = snprintf(name, sizeof(name), "%s.%016" PRIx64, description, random_u64());
        if (r < 0 || (size_t) r >= sizeof(name))
                return -EINVAL;

        key = add_key("user", name, data, size, ring);
        if (key < 0)
                return -errno;

        /* The default grants the owning user "view"; a secret is for its possessor only. */
        if (keyctl_setperm(key, KEY_POS_ALL) < 0 ||
            (timeout_sec > 0 && keyctl_set_timeout(key, timeout_sec) < 0)) {
                r = -errno;
                if (keyctl_invalidate(key) < 0)
                        (void) keyctl_unlink(key, ring);
                return r;
        }

        s->serial = key;
        s->keyring = ring;
        s->in_kernel = true;
        return 0;
}

static int secret_put_memory(KeyringSecret *s, const void *data, size_t size) {
        long page = sysconf(_SC_PAGESIZE);
        size_t n;
        void *p;

        if (page <= 0)
                page = 4096;
        n = (size + (size_t) page - 1) / (size_t) page * (size_t) page;

        p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return -errno;
        s->mem = p;
        s->mem_size = n;

        /* Lock and exclude from core dumps before the secret is copied in. */
        if (madvise(p, n, MADV_DONTDUMP) < 0)
                return -errno;
        /* A forked child gets zeroes instead of the secret; older kernels lack it, which is no reason
         * to refuse. */
        if (madvise(p, n, MADV_WIPEONFORK) < 0)
                log_debug_errno(errno, "MADV_WIPEONFORK not supported, ignoring: %m");
        /* Refused where RLIMIT_MEMLOCK is 0 or a container's seccomp filter wants CAP_IPC_LOCK (nspawn):
         * the secret is then still non-dumpable and wiped, only swappable, and the caller warns. */
        if (mlock(p, n) < 0) {
                if (errno != EPERM && errno != ENOMEM && errno != EAGAIN)
                        return -errno;
                s->lock_error = -errno;
                log_debug_errno(errno, "mlock() refused, the secret's memory may be swapped out: %m");
        } else
                s->locked = true;

        memcpy(p, data, size);
        return 0;
}

int keyring_secret_new_full(const char *description, const void *data, size_t size, KeyringFlags flags,
                            usec_t timeout, KeyringSecret **ret) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        unsigned timeout_sec = 0;
        int r;

        assert(data || size == 0);
        assert(ret);

        if (!description_is_valid(description) || size == 0)
                return -EINVAL;
        if (size > KEYRING_SECRET_MAX)
                return -EFBIG;
        if (timeout == USEC_INFINITY)
                timeout = 0;
        if (timeout > KEYRING_TIMEOUT_MAX)
                return -ERANGE;
        /* Rounded up: a secret never expires before the time asked for. */
        if (timeout > 0)
                timeout_sec = (unsigned) ((timeout + USEC_PER_SEC - 1) / USEC_PER_SEC);

        s = calloc(1, sizeof(KeyringSecret));
        if (!s)
                return -ENOMEM;
        s->size = size;
        s->serial = -1;
        s->keyring = -1;
        s->deadline = timeout > 0 ? usec_add(now(CLOCK_BOOTTIME), (usec_t) timeout_sec * USEC_PER_SEC) :
                                    USEC_INFINITY;

        if (!(flags & KEYRING_FORCE_MEMORY)) {
                r = secret_put_kernel(s, description, data, size, timeout_sec);
                if (r < 0) {
                        if (!keyctl_error_is_refusal(-r))
                                return r;
                        log_debug_errno(r, "Kernel keyring refused, keeping '%s' in locked memory: %m",
                                        description);
                        s->kernel_error = r;
                }
        }

        if (!s->in_kernel) {
                r = secret_put_memory(s, data, size);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(s);
        return (*ret)->in_kernel ? KEYRING_MODE_KERNEL : KEYRING_MODE_MEMORY;
}

int keyring_secret_new(const char *description, const void *data, size_t size, KeyringFlags flags,
                       KeyringSecret **ret) {
        return keyring_secret_new_full(description, data, size, flags, 0, ret);
}

int keyring_secret_read(const KeyringSecret *s, uint8_t **ret, size_t *ret_size) {
        uint8_t *buf;

        assert(s);
        assert(ret);
        assert(ret_size);

        /* The kernel decides for its keys; memory mode keeps the same promise. */
        if (!s->in_kernel && s->deadline != USEC_INFINITY && now(CLOCK_BOOTTIME) >= s->deadline)
                return -EKEYEXPIRED;

        buf = malloc(s->size + 1);
        if (!buf)
                return -ENOMEM;

        if (s->in_kernel) {
                long n = keyctl_read(s->serial, (char *) buf, s->size);

                if (n < 0) {
                        int e = errno;

                        erase_and_free(buf, s->size + 1);
                        return -e;
                }
                if ((size_t) n != s->size) {
                        erase_and_free(buf, s->size + 1);
                        return -EIO;
                }
        } else
                memcpy(buf, s->mem, s->size);

        buf[s->size] = 0;
        *ret = buf;
        *ret_size = s->size;
        return 0;
}

size_t keyring_secret_size(const KeyringSecret *s) {
        return s ? s->size : 0;
}

bool keyring_secret_in_kernel(const KeyringSecret *s) {
        return s && s->in_kernel;
}

int keyring_secret_kernel_error(const KeyringSecret *s) {
        return s ? s->kernel_error : 0;
}

int keyring_secret_lock_error(const KeyringSecret *s) {
        return s ? s->lock_error : 0;
}

int keyring_secret_serial(const KeyringSecret *s) {
        return s && s->in_kernel ? s->serial : -ENXIO;
}

KeyringSecret *keyring_secret_free(KeyringSecret *s) {
        if (!s)
                return NULL;

        if (s->in_kernel && s->serial > 0) {
                /* Invalidation makes the key unusable at once for everybody; unlinking is the best older
                 * kernels offer. */
                if (keyctl_invalidate(s->serial) < 0) {
                        log_debug_errno(errno, "Failed to invalidate key %" PRIi32 ", unlinking it: %m",
                                        s->serial);
                        if (keyctl_unlink(s->serial, s->keyring) < 0)
                                log_debug_errno(errno, "Failed to unlink key %" PRIi32 ", ignoring: %m",
                                                s->serial);
                }
        }

        if (s->mem) {
                explicit_bzero(s->mem, s->mem_size);
                if (s->locked)
                        (void) munlock(s->mem, s->mem_size);
                (void) munmap(s->mem, s->mem_size);
        }

        free(s);
        return NULL;
}
