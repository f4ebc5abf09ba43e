/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bytequeue.h"
#include "macro.h"

/* Storage grows in steps of at least this much, and is released once the queue drains. */
#define BYTE_QUEUE_STEP 4096U

void byte_queue_init(ByteQueue *q, size_t max) {
        assert(q);
        *q = (ByteQueue) { .max = max };
}

void byte_queue_init_secret(ByteQueue *q, size_t max) {
        byte_queue_init(q, max);
        q->secret = true;
}

void byte_queue_done(ByteQueue *q, bool secret) {
        assert(q);
        if (secret || q->secret)
                explicit_bzero_safe(q->data, q->allocated);
        free(q->data);
        *q = (ByteQueue) { .max = q->max, .secret = q->secret };
}

/* Moves the content to the front so that free space is contiguous at the end. */
static void compact(ByteQueue *q) {
        if (q->start > 0 && q->len > 0)
                memmove(q->data, q->data + q->start, q->len);
        q->start = 0;
}

static int reserve(ByteQueue *q, size_t size) {
        size_t need, n;
        uint8_t *p;

        if (size > q->max - q->len)
                return -ENOBUFS;
        if (q->start + q->len + size <= q->allocated)
                return 0;
        compact(q);
        need = q->len + size;
        if (need <= q->allocated)
                return 0;
        n = MAX(need, MIN(q->max, MAX(q->allocated * 2, (size_t) BYTE_QUEUE_STEP)));
        if (q->secret) {
                p = malloc(n);
                if (!p)
                        return -ENOMEM;
                if (q->len > 0)
                        memcpy(p, q->data, q->len);
                explicit_bzero_safe(q->data, q->allocated);
                free(q->data);
        } else {
                p = realloc(q->data, n);
                if (!p)
                        return -ENOMEM;
        }
        q->data = p;
        q->allocated = n;
        return 0;
}

static void maybe_release(ByteQueue *q) {
        if (q->len == 0) {
                if (q->secret)
                        explicit_bzero_safe(q->data, q->allocated);
                q->start = 0;
                q->data = mfree(q->data);
                q->allocated = 0;
        }
}

int byte_queue_push(ByteQueue *q, const void *data, size_t size) {
        int r;

        assert(q);
        if (size == 0)
                return 0;
        r = reserve(q, size);
        if (r < 0)
                return r;
        memcpy(q->data + q->start + q->len, data, size);
        q->len += size;
        return 0;
}

const uint8_t *byte_queue_peek(const ByteQueue *q, size_t *ret_size) {
        assert(q);
        *ret_size = q->len;
        return q->len > 0 ? q->data + q->start : NULL;
}

void byte_queue_drop(ByteQueue *q, size_t size) {
        assert(q);
        assert(size <= q->len);
        q->start += size;
        q->len -= size;
        maybe_release(q);
}

size_t byte_queue_pop(ByteQueue *q, void *buf, size_t size) {
        size_t n;

        assert(q);
        n = MIN(size, q->len);
        if (n > 0) {
                memcpy(buf, q->data + q->start, n);
                byte_queue_drop(q, n);
        }
        return n;
}

ssize_t byte_queue_read_fd(ByteQueue *q, int fd, size_t max_read) {
        size_t want;
        ssize_t n;
        int r;

        assert(q);
        want = MIN(max_read, byte_queue_space(q));
        if (want == 0)
                return -ENOBUFS;
        r = reserve(q, want);
        if (r < 0)
                return r;
        n = read(fd, q->data + q->start + q->len, want);
        if (n < 0) {
                maybe_release(q);
                return -errno;
        }
        q->len += (size_t) n;
        maybe_release(q);
        return n;
}

ssize_t byte_queue_write_fd(ByteQueue *q, int fd) {
        ssize_t n;

        assert(q);
        if (q->len == 0)
                return 0;
        n = send(fd, q->data + q->start, q->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == ENOTSOCK)
                n = write(fd, q->data + q->start, q->len);
        if (n < 0)
                return -errno;
        byte_queue_drop(q, (size_t) n);
        return n;
}
