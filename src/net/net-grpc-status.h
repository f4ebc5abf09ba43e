/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* gRPC status codes (grpc doc/statuscodes.md), their mapping to and from errno, and the header values
 * around them (grpc PROTOCOL-HTTP2.md): grpc-status, grpc-message, grpc-timeout, content-type. */

#include <errno.h>
#include <stdbool.h>

#include "time-util.h"

typedef enum GrpcStatus {
        GRPC_STATUS_OK = 0,
        GRPC_STATUS_CANCELLED = 1,
        GRPC_STATUS_UNKNOWN = 2,
        GRPC_STATUS_INVALID_ARGUMENT = 3,
        GRPC_STATUS_DEADLINE_EXCEEDED = 4,
        GRPC_STATUS_NOT_FOUND = 5,
        GRPC_STATUS_ALREADY_EXISTS = 6,
        GRPC_STATUS_PERMISSION_DENIED = 7,
        GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
        GRPC_STATUS_FAILED_PRECONDITION = 9,
        GRPC_STATUS_ABORTED = 10,
        GRPC_STATUS_OUT_OF_RANGE = 11,
        GRPC_STATUS_UNIMPLEMENTED = 12,
        GRPC_STATUS_INTERNAL = 13,
        GRPC_STATUS_UNAVAILABLE = 14,
        GRPC_STATUS_DATA_LOSS = 15,
        GRPC_STATUS_UNAUTHENTICATED = 16,
        _GRPC_STATUS_MAX,
        _GRPC_STATUS_INVALID = -EINVAL,
} GrpcStatus;

/* "PERMISSION_DENIED"; NULL for a value outside the enum. */
const char *grpc_status_to_string(GrpcStatus s);
/* The inverse (exact, upper case); -EINVAL for anything else. */
GrpcStatus grpc_status_from_string(const char *s);

/* Parses a grpc-status header value: decimal, no sign, no leading zeros. -EINVAL for bad syntax, -ERANGE
 * for a number that is not one of the 17 codes. Per statuscodes.md a client treats both as UNKNOWN. */
int grpc_status_parse(const char *value, GrpcStatus *ret);

/* Server side: the status to send for a handler's negative errno (the sign is ignored, 0 is OK).
 *   -ECANCELED                                                        CANCELLED
 *   -EREMOTEIO                                                        UNKNOWN
 *   -EINVAL -EBADMSG -E2BIG -EDOM -EILSEQ                             INVALID_ARGUMENT
 *   -ETIMEDOUT -ETIME                                                 DEADLINE_EXCEEDED
 *   -ENOENT -ENXIO -ESRCH                                             NOT_FOUND
 *   -EEXIST                                                           ALREADY_EXISTS
 *   -EPERM -EACCES -EKEYREVOKED                                       PERMISSION_DENIED
 *   -ENOMEM -EMSGSIZE -ENOBUFS -ENOSPC -EDQUOT -EMFILE -ENFILE -EUSERS RESOURCE_EXHAUSTED
 *   -EPROTO -ENOTEMPTY                                                FAILED_PRECONDITION
 *   -EBUSY -EDEADLK                                                   ABORTED
 *   -ERANGE -EOVERFLOW                                                OUT_OF_RANGE
 *   -EOPNOTSUPP -ENOSYS -EPROTONOSUPPORT                              UNIMPLEMENTED
 *   -EAGAIN -ECONNREFUSED -ECONNRESET -ECONNABORTED -EHOSTUNREACH
 *     -ENETUNREACH -ENETDOWN -ENOTCONN -EPIPE -ESHUTDOWN              UNAVAILABLE
 *   -EUCLEAN                                                          DATA_LOSS
 *   -EKEYREJECTED -EKEYEXPIRED -ENOKEY                                UNAUTHENTICATED
 *   anything else (-EIO, …)                                           INTERNAL
 * Revoked agents are PERMISSION_DENIED (ztna.proto), hence -EKEYREVOKED there. */
GrpcStatus grpc_status_from_errno(int error);

/* Client side: the errno a call returns for a received status; the first errno of each row above (OK → 0,
 * INTERNAL → -EIO, an unknown value → -EREMOTEIO like UNKNOWN). grpc_status_from_errno() of the result
 * gives back the status. */
int grpc_status_to_errno(GrpcStatus s);

/* grpc-timeout: TimeoutValue (1–8 ASCII digits) followed by one TimeoutUnit of H M S m u n. */
#define GRPC_TIMEOUT_DIGITS_MAX 8
#define GRPC_TIMEOUT_STRING_MAX (GRPC_TIMEOUT_DIGITS_MAX + 2)

/* Parses a grpc-timeout value into µs; nanoseconds round up so that a non-zero timeout stays non-zero.
 * -EINVAL for anything else (empty, 9 digits, sign, space, missing or unknown unit). */
int grpc_timeout_parse(const char *value, usec_t *ret);

/* Formats t with the finest unit that needs at most 8 digits, rounding up (a deadline is never shortened
 * by the encoding); t beyond 99999999H is clamped to it. Returns buf, or NULL for USEC_INFINITY, which
 * has no encoding: omit the header. */
const char *grpc_timeout_format(usec_t t, char buf[static GRPC_TIMEOUT_STRING_MAX]);

/* grpc-message: the longest encoded value we send, and the longest decoded message we hand out. */
#define GRPC_STATUS_MESSAGE_MAX 1024

/* Percent-encodes message for grpc-message: bytes outside 0x20–0x7E and '%' become "%XX" (upper-case hex).
 * The result is truncated to GRPC_STATUS_MESSAGE_MAX bytes at a UTF-8 character boundary. */
int grpc_message_encode(const char *message, char **ret);

/* Decodes a grpc-message value. Lenient, as the spec demands: a '%' not followed by two hex digits is kept
 * as is, and so is "%00" (a C string cannot carry NUL). The result is truncated to
 * GRPC_STATUS_MESSAGE_MAX bytes at a UTF-8 character boundary. Fails only with -ENOMEM. */
int grpc_message_decode(const char *value, char **ret);

/* Whether a content-type header names gRPC with protobuf: "application/grpc" or "application/grpc+proto",
 * optionally followed by ";parameters" (case-insensitive, as media types are). Anything else, including
 * "application/grpc+json" and "application/grpc-web", is refused (servers answer HTTP 415). */
bool grpc_content_type_is_valid(const char *value);
