/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net-grpc-frame.h"
#include "string-util.h"

/* Field numbers protobuf allows (2^29 - 1 at most). */
#define PROTOBUF_FIELD_NUMBER_MIN 1
#define PROTOBUF_FIELD_NUMBER_MAX 536870911

/* First allocation for a message body; later ones double, always capped by the announced size. */
#define GRPC_DECODER_CHUNK 4096

void grpc_frame_header(uint8_t hdr[static GRPC_FRAME_HEADER_SIZE], uint32_t size) {
        assert(hdr);

        hdr[0] = 0; /* not compressed */
        hdr[1] = (uint8_t) (size >> 24);
        hdr[2] = (uint8_t) (size >> 16);
        hdr[3] = (uint8_t) (size >> 8);
        hdr[4] = (uint8_t) size;
}

int grpc_frame_encode(const void *msg, size_t size, uint8_t **ret, size_t *ret_size) {
        uint8_t *buf;

        assert(msg || size == 0);
        assert(ret);
        assert(ret_size);

        if (size > UINT32_MAX)
                return -EMSGSIZE;

        buf = malloc(GRPC_FRAME_HEADER_SIZE + size);
        if (!buf)
                return -ENOMEM;
        grpc_frame_header(buf, (uint32_t) size);
        if (size > 0)
                memcpy(buf + GRPC_FRAME_HEADER_SIZE, msg, size);

        *ret = buf;
        *ret_size = GRPC_FRAME_HEADER_SIZE + size;
        return 0;
}

void grpc_decoder_init(GrpcDecoder *d, size_t max_message_size) {
        assert(d);

        *d = (GrpcDecoder) {
                /* The length field has 32 bits: a larger cap means no cap beyond that. */
                .max_message_size = MIN(max_message_size ?: GRPC_MESSAGE_MAX_DEFAULT, (size_t) UINT32_MAX),
        };
}

static void decoder_reset(GrpcDecoder *d) {
        size_t max = d->max_message_size;

        *d = (GrpcDecoder) {
                .max_message_size = max,
        };
}

/* Makes room for need bytes of body. Never beyond the announced size, which is already checked
 * against the cap. Not realloc(): the old buffer is wiped before it is freed. */
static int decoder_grow(GrpcDecoder *d, size_t need) {
        uint8_t *p;
        size_t n;

        assert(need <= d->message_size);

        if (need <= d->n_allocated)
                return 0;

        n = MAX(need, MAX(d->n_allocated * 2, (size_t) GRPC_DECODER_CHUNK));
        n = MIN(n, d->message_size);

        p = malloc(n);
        if (!p)
                return -ENOMEM;
        if (d->n_message > 0)
                memcpy(p, d->message, d->n_message);
        erase_and_free(d->message, d->n_message);
        d->message = p;
        d->n_allocated = n;
        return 0;
}

static int decoder_fail(GrpcDecoder *d, int error) {
        d->error = error;
        return error;
}

static int decoder_parse_header(GrpcDecoder *d) {
        uint32_t len;

        switch (d->header[0]) {
        case 0:
                break;
        case 1:
                return log_debug_errno(EPROTONOSUPPORT, "gRPC message is compressed, but no encoding was "
                                       "negotiated.");
        default:
                return log_debug_errno(EBADMSG, "Invalid gRPC Compressed-Flag 0x%02x.", d->header[0]);
        }

        len = (uint32_t) d->header[1] << 24 | (uint32_t) d->header[2] << 16 |
              (uint32_t) d->header[3] << 8 | (uint32_t) d->header[4];
        /* Checked before anything is allocated for it. */
        if (len > d->max_message_size)
                return log_debug_errno(EMSGSIZE, "gRPC message of %" PRIu32 " bytes exceeds the maximum of "
                                       "%zu bytes.", len, d->max_message_size);

        d->message_size = len;
        return 0;
}

int grpc_decoder_feed(GrpcDecoder *d, const uint8_t *data, size_t size, size_t *ret_consumed) {
        size_t pos = 0, n;
        int r;

        assert(d);
        assert(data || size == 0);
        assert(ret_consumed);

        if (d->error < 0)
                return d->error;
        if (d->complete)
                return -EBUSY;

        if (d->n_header < GRPC_FRAME_HEADER_SIZE) {
                n = MIN(GRPC_FRAME_HEADER_SIZE - d->n_header, size);
                if (n > 0)
                        memcpy(d->header + d->n_header, data, n);
                d->n_header += n;
                pos += n;

                if (d->n_header < GRPC_FRAME_HEADER_SIZE) {
                        *ret_consumed = pos;
                        return 0;
                }

                r = decoder_parse_header(d);
                if (r < 0)
                        return decoder_fail(d, r);
        }

        n = MIN(d->message_size - d->n_message, size - pos);
        if (n > 0) {
                r = decoder_grow(d, d->n_message + n);
                if (r < 0)
                        return decoder_fail(d, r);
                memcpy(d->message + d->n_message, data + pos, n);
                d->n_message += n;
                pos += n;
        }

        d->complete = d->n_message == d->message_size;
        *ret_consumed = pos;
        return d->complete;
}

int grpc_decoder_take(GrpcDecoder *d, uint8_t **ret, size_t *ret_size) {
        uint8_t *m;

        assert(d);
        assert(ret);
        assert(ret_size);

        if (d->error < 0)
                return d->error;
        if (!d->complete)
                return -ENOMSG;

        /* A zero-length message has no buffer yet; hand out a real one so NULL never means "message". */
        m = d->message ?: malloc(1);
        if (!m)
                return -ENOMEM;

        *ret = m;
        *ret_size = d->message_size;
        decoder_reset(d);
        return 0;
}

bool grpc_decoder_is_idle(const GrpcDecoder *d) {
        assert(d);

        return d->error == 0 && !d->complete && d->n_header == 0;
}

void grpc_decoder_done(GrpcDecoder *d) {
        if (!d)
                return;

        erase_and_free(d->message, d->n_message);
        decoder_reset(d);
}

/* protobuf-c allocator whose free wipes the block: unpacked messages may hold secrets (tokens). */
static void *wiping_alloc(void *data, size_t size) {
        return malloc(size ?: 1);
}

static void wiping_free(void *data, void *p) {
        if (p)
                explicit_bzero(p, malloc_usable_size(p));
        free(p);
}

static ProtobufCAllocator wiping_allocator = {
        .alloc = wiping_alloc,
        .free = wiping_free,
};

static int message_pack_with_offset(const ProtobufCMessage *m, size_t max, size_t offset, uint8_t **ret,
                                    size_t *ret_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size, n;

        assert(m);
        assert(m->descriptor);
        assert(ret);
        assert(ret_size);

        if (!protobuf_c_message_check(m))
                return log_debug_errno(EINVAL, "Message %s is incomplete, refusing to pack it.",
                                       m->descriptor->name);

        size = protobuf_c_message_get_packed_size(m);
        if (size > max || size > UINT32_MAX)
                return log_debug_errno(EMSGSIZE, "Message %s of %zu bytes exceeds the maximum of %zu bytes.",
                                       m->descriptor->name, size, max);

        buf = malloc((offset + size) ?: 1);
        if (!buf)
                return -ENOMEM;

        n = protobuf_c_message_pack(m, buf + offset);
        if (n != size) {
                explicit_bzero(buf, offset + size);
                return log_debug_errno(EIO, "Packing %s produced %zu bytes instead of %zu.",
                                       m->descriptor->name, n, size);
        }

        if (offset > 0)
                grpc_frame_header(buf, (uint32_t) size);

        *ret = TAKE_PTR(buf);
        *ret_size = offset + size;
        return 0;
}

int grpc_message_pack(const ProtobufCMessage *m, size_t max, uint8_t **ret, size_t *ret_size) {
        return message_pack_with_offset(m, max, 0, ret, ret_size);
}

int grpc_message_pack_frame(const ProtobufCMessage *m, size_t max, uint8_t **ret, size_t *ret_size) {
        return message_pack_with_offset(m, max, GRPC_FRAME_HEADER_SIZE, ret, ret_size);
}

static int read_varint(const uint8_t **p, size_t *n, uint64_t *ret) {
        uint64_t v = 0;

        for (unsigned shift = 0; shift < 64; shift += 7) {
                uint8_t b;

                if (*n == 0)
                        return -EBADMSG;
                b = **p;
                (*p)++;
                (*n)--;
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80)) {
                        *ret = v;
                        return 0;
                }
        }

        return -EBADMSG;
}

/* Walks the wire form once more, with the descriptor, to check what protobuf-c does not: string fields and
 * field numbers. Unknown fields are skipped unchecked; packed repeated scalars use wire type 2 too and are
 * skipped. */
static int message_validate(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n,
                            unsigned depth) {
        int r;

        if (depth > GRPC_MESSAGE_DEPTH_MAX)
                return log_debug_errno(EBADMSG, "Message nesting exceeds %u levels.",
                                       GRPC_MESSAGE_DEPTH_MAX);

        while (n > 0) {
                const ProtobufCFieldDescriptor *f = NULL;
                uint64_t tag, len;

                r = read_varint(&p, &n, &tag);
                if (r < 0)
                        return r;
                /* protobuf-c lets field number 0 through when the tag is a non-canonical multi-byte
                 * varint, and then refuses its own re-encoding of it. */
                if ((tag >> 3) < PROTOBUF_FIELD_NUMBER_MIN || (tag >> 3) > PROTOBUF_FIELD_NUMBER_MAX)
                        return log_debug_errno(EBADMSG, "Invalid field number %" PRIu64 " in %s.", tag >> 3,
                                               desc->name);
                f = protobuf_c_message_descriptor_get_field(desc, (unsigned) (tag >> 3));

                switch (tag & 7) {
                case PROTOBUF_C_WIRE_TYPE_VARINT:
                        r = read_varint(&p, &n, &len);
                        if (r < 0)
                                return r;
                        break;

                case PROTOBUF_C_WIRE_TYPE_64BIT:
                case PROTOBUF_C_WIRE_TYPE_32BIT:
                        len = (tag & 7) == PROTOBUF_C_WIRE_TYPE_64BIT ? 8 : 4;
                        if (n < len)
                                return -EBADMSG;
                        p += len;
                        n -= len;
                        break;

                case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
                        r = read_varint(&p, &n, &len);
                        if (r < 0)
                                return r;
                        if (len > n)
                                return -EBADMSG;

                        /* Strict UTF-8 without NUL. */
                        if (f && f->type == PROTOBUF_C_TYPE_STRING &&
                            (memchr(p, 0, len) || !utf8_is_valid((const char *) p, len)))
                                return log_debug_errno(EBADMSG, "Field %s.%s is not valid UTF-8 or "
                                                       "contains NUL.", desc->name, f->name);
                        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                                r = message_validate(f->descriptor, p, len, depth + 1);
                                if (r < 0)
                                        return r;
                        }
                        p += len;
                        n -= len;
                        break;

                default:
                        /* Groups are not proto3 and protobuf-c does not skip them. */
                        return -EBADMSG;
                }
        }

        return 0;
}

int grpc_message_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size,
                        ProtobufCMessage **ret) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *m = NULL;
        int r;

        assert(d);
        assert(d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
        assert(data || size == 0);
        assert(ret);

        /* protobuf-c reads nothing for an empty message, but insists on a pointer. */
        m = protobuf_c_message_unpack(d, &wiping_allocator, size, data ?: (const uint8_t *) "");
        if (!m)
                return log_debug_errno(EBADMSG, "Failed to parse %zu bytes as %s.", size, d->name);

        r = message_validate(d, data, size, 0);
        if (r < 0)
                return log_debug_errno(r, "Failed to validate %s.", d->name);

        *ret = TAKE_PTR(m);
        return 0;
}

ProtobufCMessage *grpc_message_free(ProtobufCMessage *m) {
        if (m)
                protobuf_c_message_free_unpacked(m, &wiping_allocator);
        return NULL;
}
