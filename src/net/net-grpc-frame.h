/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* gRPC Length-Prefixed-Message framing (grpc PROTOCOL-HTTP2.md) and size-capped protobuf packing.
 *
 *   Length-Prefixed-Message → Compressed-Flag (1 byte, 0/1) Message-Length (4 bytes, big endian) Message
 *
 * DATA frame boundaries have no relation to message boundaries, so the decoder takes bytes in arbitrary
 * chunks. It never trusts the announced length: a length above the cap is refused as soon as the 5-byte
 * header is complete, and the buffer grows with the bytes that actually arrive (HTTP/2 flow control bounds
 * those), never to the announced size up front.
 *
 * Messages may carry secrets (EnrollRequest.token): the decoder wipes what it frees, unpacked messages
 * are freed with grpc_message_free() which wipes them, and callers wipe buffers they own with
 * erase_and_free(p, size). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "macro.h"

/* The default cap on one message, as stock gRPC implementations use for received messages. */
#define GRPC_MESSAGE_MAX_DEFAULT (4 * 1024 * 1024)
/* Size of the Compressed-Flag + Message-Length prefix. */
#define GRPC_FRAME_HEADER_SIZE 5
/* Nesting of messages grpc_message_unpack() follows when it validates strings. */
#define GRPC_MESSAGE_DEPTH_MAX 32

/* Writes the 5-byte prefix of an uncompressed message of size bytes. */
void grpc_frame_header(uint8_t hdr[static GRPC_FRAME_HEADER_SIZE], uint32_t size);

/* A newly allocated prefix + copy of msg (NULL allowed when size is 0). -EMSGSIZE if size does not fit
 * the 32-bit length. */
int grpc_frame_encode(const void *msg, size_t size, uint8_t **ret, size_t *ret_size);

/* Incremental decoder for one stream's DATA. Fields are private; the struct is public so that it can be
 * embedded in a stream object without an allocation. */
typedef struct GrpcDecoder {
        size_t max_message_size;
        uint8_t header[GRPC_FRAME_HEADER_SIZE];
        size_t n_header;        /* header bytes received so far */
        uint8_t *message;       /* body received so far; never larger than the announced size */
        size_t n_allocated;
        size_t message_size;    /* announced length, valid once n_header == GRPC_FRAME_HEADER_SIZE */
        size_t n_message;
        bool complete;          /* a whole message waits for grpc_decoder_take() */
        int error;              /* sticky: after a framing error the stream is unusable */
} GrpcDecoder;

/* max_message_size 0 selects GRPC_MESSAGE_MAX_DEFAULT. */
void grpc_decoder_init(GrpcDecoder *d, size_t max_message_size);

/* Consumes bytes from data, stopping at the end of a message. Returns 1 when a complete message is
 * available (take it with grpc_decoder_take(), then feed the rest), 0 when all of data was consumed and
 * more bytes are needed. *ret_consumed says how many bytes were used.
 * Errors (sticky: every later call returns the same):
 *   -EMSGSIZE         the announced length exceeds the cap (detected from the header, nothing allocated)
 *   -EPROTONOSUPPORT  the Compressed-Flag is set: we negotiate no compression
 *   -EBADMSG          a Compressed-Flag other than 0 or 1
 *   -ENOMEM
 * -EBUSY (not sticky) if a complete message has not been taken yet. */
int grpc_decoder_feed(GrpcDecoder *d, const uint8_t *data, size_t size, size_t *ret_consumed);

/* Moves the complete message out (never NULL, even for a zero-length message; free() it, or
 * erase_and_free() it if it may hold a secret). -ENOMSG if no message is complete, or the sticky error. */
int grpc_decoder_take(GrpcDecoder *d, uint8_t **ret, size_t *ret_size);

/* True when nothing is buffered: no partial header or body and no untaken message. A stream that ends
 * (END_STREAM) while this is false was truncated. False after an error. */
bool grpc_decoder_is_idle(const GrpcDecoder *d);

/* Wipes and frees what is buffered; the decoder is re-initialised with the same cap. */
void grpc_decoder_done(GrpcDecoder *d);

/* Packs a protobuf-c message into a new buffer (never NULL, even for an empty message). -EMSGSIZE if the
 * packed size exceeds max, -EINVAL if the message fails protobuf_c_message_check(). */
int grpc_message_pack(const ProtobufCMessage *m, size_t max, uint8_t **ret, size_t *ret_size);

/* Same, but the buffer starts with the 5-byte Length-Prefixed-Message header: ready for a DATA frame. max
 * applies to the message without the header. */
int grpc_message_pack_frame(const ProtobufCMessage *m, size_t max, uint8_t **ret, size_t *ret_size);

/* Unpacks data as a message of type d. Besides protobuf-c's own checks, every string field (at any nesting
 * depth, map keys and values included) must be valid UTF-8 (proto3 requires it) without NUL bytes
 * (protobuf-c hands strings out NUL-terminated, so an embedded NUL would silently truncate them), and every
 * field number must be in 1…2^29-1. So whatever is accepted packs to bytes that are accepted again.
 * -EBADMSG on malformed input (and when protobuf-c runs out of memory, which it does not tell apart).
 * Free the result with grpc_message_free(). */
int grpc_message_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size,
                        ProtobufCMessage **ret);

/* Wipes and frees a message returned by grpc_message_unpack(). Accepts NULL; returns NULL. */
ProtobufCMessage *grpc_message_free(ProtobufCMessage *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(ProtobufCMessage *, grpc_message_free);
