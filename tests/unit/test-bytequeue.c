/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bytequeue.h"
#include "tests.h"

TEST(push_pop_fifo_order) {
        ByteQueue q;
        uint8_t out[100000];
        size_t total_in = 0, total_out = 0;

        byte_queue_init(&q, 10000);
        /* Interleaved pushes and pops of odd sizes keep the byte order. */
        for (unsigned round = 0; round < 2000; round++) {
                uint8_t chunk[97];
                size_t k = (round * 7) % sizeof(chunk) + 1;

                for (size_t i = 0; i < k; i++)
                        chunk[i] = (uint8_t) (total_in + i);
                if (byte_queue_push(&q, chunk, k) == 0)
                        total_in += k;
                size_t n = byte_queue_pop(&q, out, (round * 13) % 61);
                for (size_t i = 0; i < n; i++)
                        ASSERT_EQ(out[i], (uint8_t) (total_out + i));
                total_out += n;
                ASSERT_LE(byte_queue_size(&q), 10000);
        }
        ASSERT_EQ(total_in - total_out, byte_queue_size(&q));
        byte_queue_done(&q, false);
}

TEST(bounded) {
        ByteQueue q;
        uint8_t buf[4096] = {};

        byte_queue_init(&q, 5000);
        ASSERT_OK(byte_queue_push(&q, buf, 4096));
        /* All or nothing: 1000 more do not fit, the queue is unchanged. */
        ASSERT_ERROR(byte_queue_push(&q, buf, 1000), ENOBUFS);
        ASSERT_EQ(byte_queue_size(&q), 4096);
        ASSERT_OK(byte_queue_push(&q, buf, 904));
        ASSERT_EQ(byte_queue_space(&q), 0);
        ASSERT_ERROR(byte_queue_push(&q, buf, 1), ENOBUFS);
        ASSERT_LE(q.allocated, 5000);
        byte_queue_done(&q, false);
}

TEST(storage_released_when_drained) {
        ByteQueue q;
        uint8_t buf[100];

        byte_queue_init(&q, 1 << 20);
        ASSERT_OK(byte_queue_push(&q, "hello", 5));
        ASSERT_NOT_NULL(q.data);
        ASSERT_EQ(byte_queue_pop(&q, buf, sizeof(buf)), 5);
        ASSERT_NULL(q.data);
        ASSERT_EQ(q.allocated, 0);
        byte_queue_done(&q, false);
}

TEST(fd_io) {
        ByteQueue q;
        int sv[2];
        char buf[16];

        ASSERT_TRUE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        byte_queue_init(&q, 8);
        ASSERT_TRUE(write(sv[1], "0123456789", 10) == 10);
        /* Reads stop at the queue's free space. */
        ASSERT_EQ(byte_queue_read_fd(&q, sv[0], 1024), 8);
        ASSERT_ERROR(byte_queue_read_fd(&q, sv[0], 1024), ENOBUFS);
        ASSERT_EQ(byte_queue_write_fd(&q, sv[0]), 8);
        ASSERT_TRUE(byte_queue_is_empty(&q));
        ASSERT_TRUE(read(sv[1], buf, sizeof(buf)) == 8);
        ASSERT_MEMEQ(buf, "01234567", 8);
        ASSERT_EQ(byte_queue_read_fd(&q, sv[0], 1024), 2);
        ASSERT_ERROR(byte_queue_read_fd(&q, sv[0], 1024), EAGAIN);
        close(sv[1]);
        byte_queue_drop(&q, 2);
        ASSERT_EQ(byte_queue_read_fd(&q, sv[0], 1024), 0); /* EOF */
        close(sv[0]);
        byte_queue_done(&q, false);
}

TEST(secret_mode_keeps_working) {
        ByteQueue q;
        uint8_t out[70000];

        /* Same behaviour as a plain queue through growth (copy instead of realloc) and release. */
        byte_queue_init_secret(&q, 1 << 20);
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t) i;
        ASSERT_OK(byte_queue_push(&q, out, 10));
        ASSERT_OK(byte_queue_push(&q, out + 10, sizeof(out) - 10));
        memset(out, 0, sizeof(out));
        ASSERT_EQ(byte_queue_pop(&q, out, sizeof(out)), sizeof(out));
        for (size_t i = 0; i < sizeof(out); i++)
                ASSERT_EQ(out[i], (uint8_t) i);
        ASSERT_NULL(q.data);
        ASSERT_TRUE(q.secret);
        byte_queue_done(&q, false);
}
