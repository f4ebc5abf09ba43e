/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* gRPC over our HTTP/2 sessions, server and client, wire-compatible with stock gRPC (PROTOCOL-HTTP2.md):
 * unary and streaming calls, Length-Prefixed-Messages, grpc-status/grpc-message trailers (trailers-only
 * responses when a call fails before any message), grpc-timeout deadlines, a maximum message size, and
 * the authenticated peer's SPIFFE ID — taken from its certificate — available to every handler.
 *
 * Server: a GrpcServer holds a table of methods. The HTTP/2 session's on_request hands each request to
 * grpc_server_handle(), so one session can carry gRPC next to other traffic (the connector serves CONNECT
 * streams and the TunnelSession service on one port). Methods not marked unauthenticated are refused with
 * UNAUTHENTICATED for peers without a client certificate.
 *
 * Memory: messages queued for sending on one call are capped (GRPC_SEND_QUEUE_MAX); a peer that stops
 * reading gets -ENOBUFS on its call rather than unbounded buffering. Received bytes give their HTTP/2 credit
 * back at once, so partial messages are charged to the session's budget (h2_session_reserve()) instead: a
 * peer spreading half-sent messages over many calls gets RESOURCE_EXHAUSTED, not our memory. */

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "net-grpc-status.h"
#include "net-h2.h"

/* Bytes of encoded messages one call may have queued for sending. */
#define GRPC_SEND_QUEUE_MAX (8U * 1024U * 1024U)
/* Largest deadline we honour; longer grpc-timeout values are clamped. */
#define GRPC_DEADLINE_MAX (24 * USEC_PER_HOUR)

typedef struct GrpcServer GrpcServer;
typedef struct GrpcCall GrpcCall;             /* server side of one RPC */
typedef struct GrpcClientCall GrpcClientCall; /* client side of one RPC */

typedef enum GrpcMethodFlags {
        GRPC_METHOD_UNAUTHENTICATED = 1 << 0,    /* callable without a client certificate (Enroll) */
        GRPC_METHOD_CLIENT_STREAMING = 1 << 1,   /* more than one request message allowed */
} GrpcMethodFlags;

typedef struct GrpcMethod {
        const char *path;                               /* "/ztna.v1.Enrollment/Enroll" */
        const ProtobufCMessageDescriptor *input;
        unsigned flags;
        size_t max_message_size;                        /* 0: the server's; keep small for unauthenticated methods */
        /* A request message arrived (takes ownership of msg). For a unary method it is the one request;
         * reply with grpc_call_send() + grpc_call_finish(), now or later. Return < 0 to fail the call with the
         * status mapped from the errno. */
        int (*on_message)(GrpcCall *call, ProtobufCMessage *msg, void *userdata);
        /* The client finished sending (streaming methods; optional). */
        void (*on_half_close)(GrpcCall *call, void *userdata);
        /* The call is over (finished, cancelled, deadline, session gone); free per-call state here. The call
         * object is freed right after. Optional. */
        void (*on_done)(GrpcCall *call, void *userdata);
} GrpcMethod;

/* methods must stay valid for the server's lifetime. */
int grpc_server_new(const GrpcMethod *methods, size_t n_methods, size_t max_message_size, void *userdata,
                    GrpcServer **ret);
GrpcServer *grpc_server_free(GrpcServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(GrpcServer *, grpc_server_free);
/* Takes an HTTP/2 request; returns < 0 if it is not gRPC at all (the caller may then serve it otherwise). */
int grpc_server_handle(GrpcServer *s, H2Stream *stream, const H2Headers *headers);
/* Number of calls in progress (all sessions). */
size_t grpc_server_get_n_calls(const GrpcServer *s);

const SpiffeId *grpc_call_get_peer(const GrpcCall *call);
const char *grpc_call_get_path(const GrpcCall *call);
H2Session *grpc_call_get_session(const GrpcCall *call);
/* Absolute CLOCK_MONOTONIC deadline, or USEC_INFINITY. */
usec_t grpc_call_get_deadline(const GrpcCall *call);
void grpc_call_set_userdata(GrpcCall *call, void *userdata);
void *grpc_call_get_userdata(const GrpcCall *call);
/* Queues one response message. -ENOBUFS when the peer is too far behind, -EMSGSIZE when too large. */
int grpc_call_send(GrpcCall *call, const ProtobufCMessage *msg);
/* Ends the call with a status and optional message (percent-encoded on the wire). Idempotent. */
int grpc_call_finish(GrpcCall *call, GrpcStatus status, const char *message);
/* Ends with the status mapped from a negative errno, and message. */
int grpc_call_finish_errno(GrpcCall *call, int error, const char *message);

typedef struct GrpcClientCallbacks {
        /* A response message (takes ownership). Return < 0 to cancel the call. */
        int (*on_message)(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata);
        /* Always called exactly once: the final status. The call is freed right after. */
        void (*on_finish)(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata);
} GrpcClientCallbacks;

/* Starts a call on a client HTTP/2 session. timeout = USEC_INFINITY for none. authority is the :authority
 * header (a host:port the server answers to). */
int grpc_client_call_start(H2Session *session, const char *authority, const char *path,
                           const ProtobufCMessageDescriptor *output, size_t max_message_size, usec_t timeout,
                           const GrpcClientCallbacks *callbacks, void *userdata, GrpcClientCall **ret);
int grpc_client_call_send(GrpcClientCall *call, const ProtobufCMessage *msg);
/* Half-close: no more messages from us. */
int grpc_client_call_close_send(GrpcClientCall *call);
/* Cancels (RST_STREAM CANCEL); on_finish follows with CANCELLED. */
void grpc_client_call_cancel(GrpcClientCall *call);
void *grpc_client_call_get_userdata(const GrpcClientCall *call);
