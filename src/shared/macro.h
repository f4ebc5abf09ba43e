/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small ownership and utility macros shared by every area. Our own, modelled on the habits of
 * systemd and ell: a destructor accepts NULL and returns NULL, TAKE_PTR() moves ownership out of a
 * _cleanup_ variable, fds start at -EBADF. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _pure_ __attribute__((pure))
#define _const_ __attribute__((const))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _sentinel_ __attribute__((sentinel))
#define _warn_unused_result_ __attribute__((warn_unused_result))
#define _likely_(x) (__builtin_expect(!!(x), 1))
#define _unlikely_(x) (__builtin_expect(!!(x), 0))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) MIN(MAX((x), (lo)), (hi))

/* Moves a pointer out of a variable, leaving NULL behind, so a _cleanup_ does not free it. */
#define TAKE_PTR(p)                              \
        ({                                       \
                __typeof__(p) _ptr_ = (p);       \
                (p) = NULL;                      \
                _ptr_;                           \
        })

/* Same for fds: leaves -EBADF behind. */
#define TAKE_FD(fd)                              \
        ({                                       \
                int _fd_ = (fd);                 \
                (fd) = -EBADF;                   \
                _fd_;                            \
        })

/* Turns a possibly negative errno into its positive value for strerror()/%m. */
#define ERRNO_VALUE(e) (abs(e))

/* Defines func##p(type **p) that calls func(*p) when *p is non-NULL, for use with _cleanup_. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)              \
        static inline void func##p(type *p) {                \
                if (*p)                                      \
                        func(*p);                            \
        }                                                    \
        struct __useless_struct_to_allow_trailing_semicolon__

static inline void freep(void *p) {
        free(*(void **) p);
}

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        *fd = safe_close(*fd);
}

/* Overwrites memory in a way the compiler may not elide, then frees it. For secrets outside
 * OpenSSL-owned buffers (src/crypto uses OPENSSL_cleanse for its own). */
static inline void explicit_bzero_safe(void *p, size_t n) {
        if (p && n > 0)
                explicit_bzero(p, n);
}

static inline void *erase_and_free(void *p, size_t n) {
        explicit_bzero_safe(p, n);
        free(p);
        return NULL;
}

/* Frees a NUL-terminated secret string after wiping it. */
static inline char *erase_and_free_string(char *s) {
        if (s)
                explicit_bzero_safe(s, strlen(s));
        free(s);
        return NULL;
}

static inline void erase_and_free_stringp(char **s) {
        *s = erase_and_free_string(*s);
}

/* A heap buffer with its size, for secrets that must be wiped with the size known:
 * _cleanup_(erase_and_freep) ByteBuffer b = {}; */
typedef struct ByteBuffer {
        uint8_t *data;
        size_t size;
} ByteBuffer;

static inline void erase_and_freep(ByteBuffer *b) {
        b->data = erase_and_free(b->data, b->size);
        b->size = 0;
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_erase_free_ _cleanup_(erase_and_free_stringp)

#define streq(a, b) (strcmp((a), (b)) == 0)
#define strneq(a, b, n) (strncmp((a), (b), (n)) == 0)
#define isempty(s) (!(s) || (s)[0] == '\0')
#define strna(s) ((s) ?: "n/a")
#define strempty(s) ((s) ?: "")

#define STRLEN(s) (sizeof("" s "") - 1)

/* Returns NULL and frees: for destructor-style "x = mfree(x)". */
static inline void *mfree(void *p) {
        free(p);
        return NULL;
}
