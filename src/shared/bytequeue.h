/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* A bounded FIFO of bytes: what a gRPC call has queued for sending, what a CONNECT stream holds between
 * its socket and HTTP/2. Storage grows on demand up to max and shrinks back when drained, so idle streams
 * hold no buffer; pushing past max is refused (-ENOBUFS) — never silent growth. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ByteQueue {
        uint8_t *data;
        size_t start, len, allocated, max;
        bool secret;    /* wipe storage whenever it is released or moved */
} ByteQueue;

void byte_queue_init(ByteQueue *q, size_t max);
/* For queues that may carry secrets (an enrollment token in a gRPC request): storage is wiped when released,
 * and grows by copy + wipe instead of realloc(), so no stale copy is left in freed memory. */
void byte_queue_init_secret(ByteQueue *q, size_t max);
/* Frees the storage (wiping it when the queue or this call says secret). */
void byte_queue_done(ByteQueue *q, bool secret);

static inline size_t byte_queue_size(const ByteQueue *q) {
        return q->len;
}
static inline size_t byte_queue_space(const ByteQueue *q) {
        return q->max - q->len;
}
static inline bool byte_queue_is_empty(const ByteQueue *q) {
        return q->len == 0;
}

/* Appends all of data or nothing: -ENOBUFS when it does not fit under max, -ENOMEM. */
int byte_queue_push(ByteQueue *q, const void *data, size_t size);
/* Contiguous readable bytes at the head (up to the whole queue). */
const uint8_t *byte_queue_peek(const ByteQueue *q, size_t *ret_size);
/* Copies up to size bytes from the head into buf and drops them; returns the count. */
size_t byte_queue_pop(ByteQueue *q, void *buf, size_t size);
/* Drops size bytes from the head (size <= byte_queue_size()). */
void byte_queue_drop(ByteQueue *q, size_t size);
/* Reads from fd into the queue, at most the free space; like read(2): > 0, 0 at EOF, -errno (-EAGAIN),
 * or -ENOBUFS when the queue is full. */
ssize_t byte_queue_read_fd(ByteQueue *q, int fd, size_t max_read);
/* Writes the head to fd and drops what was written; like write(2). */
ssize_t byte_queue_write_fd(ByteQueue *q, int fd);
