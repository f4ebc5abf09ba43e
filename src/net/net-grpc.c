/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytequeue.h"
#include "config.h"
#include "log.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"

#define GRPC_CONTENT_TYPE "application/grpc"

struct GrpcServer {
        const GrpcMethod *methods;
        size_t n_methods;
        size_t max_message_size;
        void *userdata;
        GrpcCall *calls;
        size_t n_calls;
};

struct GrpcCall {
        GrpcServer *server;
        const GrpcMethod *method;
        H2Stream *stream;               /* NULL once the HTTP/2 stream is gone */
        H2Session *session;             /* not a reference; valid while stream is */
        size_t reserved;                /* decoder memory charged to the session's budget */
        char *path;
        GrpcDecoder decoder;
        ByteQueue out;
        unsigned n_received;
        bool headers_sent;
        bool finished;
        bool half_closed;
        usec_t deadline;
        sd_event_source *deadline_source;
        void *userdata;
        GrpcCall *prev, *next;
};

struct GrpcClientCall {
        H2Session *session;     /* not a reference: the session delivers on_close to our stream before it goes */
        H2Stream *stream;
        const ProtobufCMessageDescriptor *output;
        GrpcDecoder decoder;
        ByteQueue out;
        bool send_closed;
        bool have_status;
        GrpcStatus status;
        char *message;
        sd_event_source *deadline_source;
        GrpcClientCallbacks callbacks;
        void *userdata;
};

/* ---- server ---------------------------------------------------------------------------------------- */

int grpc_server_new(const GrpcMethod *methods, size_t n_methods, size_t max_message_size, void *userdata,
                    GrpcServer **ret) {
        GrpcServer *s;

        assert(methods || n_methods == 0);
        assert(ret);

        for (size_t i = 0; i < n_methods; i++)
                if (!methods[i].path || methods[i].path[0] != '/' || !methods[i].input || !methods[i].on_message)
                        return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (GrpcServer) {
                .methods = methods,
                .n_methods = n_methods,
                .max_message_size = max_message_size > 0 ? max_message_size : GRPC_MESSAGE_MAX_DEFAULT,
                .userdata = userdata,
        };
        *ret = s;
        return 0;
}

static void call_unaccount(GrpcCall *c);

static void call_free(GrpcCall *c) {
        GrpcServer *s = c->server;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->calls = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_calls--;

        sd_event_source_disable_unref(c->deadline_source);
        grpc_decoder_done(&c->decoder);
        byte_queue_done(&c->out, true);
        free(c->path);
        free(c);
}

GrpcServer *grpc_server_free(GrpcServer *s) {
        if (!s)
                return NULL;
        /* Calls still attached to live streams are detached; their streams get no more callbacks. */
        while (s->calls) {
                GrpcCall *c = s->calls;

                if (c->stream)
                        h2_stream_set_callbacks(c->stream, &(H2StreamCallbacks) {}, NULL);
                call_unaccount(c);
                if (c->method && c->method->on_done)
                        c->method->on_done(c, s->userdata);
                call_free(c);
        }
        return mfree(s);
}

size_t grpc_server_get_n_calls(const GrpcServer *s) {
        assert(s);
        return s->n_calls;
}

static int status_headers(GrpcStatus status, const char *message, H2Header *h, size_t *n, char *code_buf,
                          char **ret_encoded) {
        _cleanup_free_ char *encoded = NULL;
        int r;

        snprintf(code_buf, 12, "%i", (int) status);
        h[(*n)++] = (H2Header) { "grpc-status", code_buf };
        if (!isempty(message)) {
                r = grpc_message_encode(message, &encoded);
                if (r < 0)
                        return r;
                h[(*n)++] = (H2Header) { "grpc-message", encoded };
        }
        *ret_encoded = TAKE_PTR(encoded);
        return 0;
}

int grpc_call_finish(GrpcCall *c, GrpcStatus status, const char *message) {
        _cleanup_free_ char *encoded = NULL;
        char code[12];
        H2Header h[5];
        size_t n = 0;
        int r;

        assert(c);

        if (c->finished)
                return 0;
        c->finished = true;
        c->deadline_source = sd_event_source_disable_unref(c->deadline_source);
        if (!c->stream)
                return 0;

        if (status != GRPC_STATUS_OK)
                log_debug("gRPC %s from %s: %s: %s", strna(c->path),
                          c->stream ? tls_connection_get_peer_address(h2_session_get_tls(h2_stream_get_session(c->stream)))
                                    : "?",
                          grpc_status_to_string(status), strempty(message));

        if (!c->headers_sent) {
                /* Trailers-Only: one HEADERS frame with the status and END_STREAM. */
                h[n++] = (H2Header) { ":status", "200" };
                h[n++] = (H2Header) { "content-type", GRPC_CONTENT_TYPE };
                h[n++] = (H2Header) { "grpc-accept-encoding", "identity" };
                r = status_headers(status, message, h, &n, code, &encoded);
                if (r < 0)
                        return r;
                c->headers_sent = true;
                return h2_stream_respond(c->stream, h, n, false);
        }
        r = status_headers(status, message, h, &n, code, &encoded);
        if (r < 0)
                return r;
        return h2_stream_set_trailers(c->stream, h, n);
}

int grpc_call_finish_errno(GrpcCall *c, int error, const char *message) {
        return grpc_call_finish(c, grpc_status_from_errno(error), message);
}

int grpc_call_send(GrpcCall *c, const ProtobufCMessage *msg) {
        _cleanup_(erase_and_freep) ByteBuffer frame = {};
        int r;

        assert(c);
        assert(msg);

        if (c->finished || !c->stream)
                return -ESHUTDOWN;
        r = grpc_message_pack_frame(msg, c->server->max_message_size, &frame.data, &frame.size);
        if (r < 0)
                return r;
        r = byte_queue_push(&c->out, frame.data, frame.size);
        if (r < 0)
                return r;
        if (!c->headers_sent) {
                c->headers_sent = true;
                return h2_stream_respond(c->stream,
                                         (H2Header[]) { { ":status", "200" },
                                                        { "content-type", GRPC_CONTENT_TYPE },
                                                        { "grpc-accept-encoding", "identity" } },
                                         3, true);
        }
        return h2_stream_resume(c->stream);
}

/* Charges the decoder's current allocation to the session budget (or gives back what it no longer holds). */
static int call_account(GrpcCall *c) {
        size_t held = c->decoder.n_allocated;
        int r;

        if (!c->session)
                return 0;
        if (held > c->reserved) {
                r = h2_session_reserve(c->session, held - c->reserved);
                if (r < 0)
                        return r;
        } else
                h2_session_release(c->session, c->reserved - held);
        c->reserved = held;
        return 0;
}

static void call_unaccount(GrpcCall *c) {
        if (c->session && c->reserved > 0)
                h2_session_release(c->session, c->reserved);
        c->reserved = 0;
}

static void call_fail(GrpcCall *c, int error, const char *message) {
        (void) grpc_call_finish_errno(c, error, message);
}

static int call_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        GrpcCall *c = userdata;
        size_t off = 0;
        int r;

        /* Credit goes back at once: buffering is bounded by the decoder's maximum message size. */
        (void) h2_stream_consume(st, size);
        if (c->finished)
                return 0;

        while (off < size && !c->finished) {
                _cleanup_(erase_and_freep) ByteBuffer buf = {};
                ProtobufCMessage *msg = NULL;
                size_t consumed = 0;

                r = grpc_decoder_feed(&c->decoder, data + off, size - off, &consumed);
                off += consumed;
                if (call_account(c) < 0) {
                        grpc_decoder_done(&c->decoder);
                        call_unaccount(c);
                        (void) grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                                "too much unfinished request data on this connection");
                        return 0;
                }
                if (r == -EMSGSIZE) {
                        call_fail(c, r, "message larger than the maximum");
                        return 0;
                }
                if (r == -EPROTONOSUPPORT) {
                        (void) grpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "compression is not supported");
                        return 0;
                }
                if (r < 0) {
                        (void) grpc_call_finish(c, GRPC_STATUS_INTERNAL, "malformed message framing");
                        return 0;
                }
                if (r == 0)
                        break;

                r = grpc_decoder_take(&c->decoder, &buf.data, &buf.size);
                (void) call_account(c); /* the decoder let go of the message: only releases */
                if (r < 0) {
                        call_fail(c, r, "out of memory");
                        return 0;
                }
                if (++c->n_received > 1 && !(c->method->flags & GRPC_METHOD_CLIENT_STREAMING)) {
                        (void) grpc_call_finish(c, GRPC_STATUS_INTERNAL, "more than one request for a unary method");
                        return 0;
                }
                r = grpc_message_unpack(c->method->input, buf.data, buf.size, &msg);
                if (r < 0) {
                        (void) grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed request message");
                        return 0;
                }
                r = c->method->on_message(c, msg, c->server->userdata);
                if (r < 0)
                        call_fail(c, r, NULL);
        }
        return 0;
}

static void call_on_end(H2Stream *st, void *userdata) {
        GrpcCall *c = userdata;

        c->half_closed = true;
        if (c->finished)
                return;
        if (!grpc_decoder_is_idle(&c->decoder)) {
                (void) grpc_call_finish(c, GRPC_STATUS_INTERNAL, "stream ended inside a message");
                return;
        }
        if (c->n_received == 0 && !(c->method->flags & GRPC_METHOD_CLIENT_STREAMING)) {
                (void) grpc_call_finish(c, GRPC_STATUS_INTERNAL, "missing request message");
                return;
        }
        if (c->method->on_half_close)
                c->method->on_half_close(c, c->server->userdata);
}

static ssize_t call_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        GrpcCall *c = userdata;
        size_t n;

        n = byte_queue_pop(&c->out, buf, size);
        if (n > 0)
                return (ssize_t) n;
        if (c->finished) {
                *ret_eof = true;
                return 0;
        }
        return -EAGAIN;
}

static void call_on_close(H2Stream *st, uint32_t error_code, void *userdata) {
        GrpcCall *c = userdata;

        call_unaccount(c);
        c->stream = NULL;
        c->session = NULL;
        c->finished = true;
        if (c->method && c->method->on_done)
                c->method->on_done(c, c->server->userdata);
        call_free(c);
}

static const H2StreamCallbacks call_callbacks = {
        .on_data = call_on_data,
        .on_end = call_on_end,
        .read_body = call_read_body,
        .on_close = call_on_close,
};

static int on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        GrpcCall *c = userdata;

        (void) grpc_call_finish(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
        return 0;
}

int grpc_server_handle(GrpcServer *s, H2Stream *stream, const H2Headers *headers) {
        const char *method, *path, *ctype, *timeout;
        H2Session *session = h2_stream_get_session(stream);
        GrpcCall *c;
        usec_t t;
        int r;

        assert(s);
        assert(stream);
        assert(headers);

        method = h2_headers_get(headers, ":method");
        ctype = h2_headers_get(headers, "content-type");
        path = h2_headers_get(headers, ":path");
        if (!method || !streq(method, "POST") || !ctype || !grpc_content_type_is_valid(ctype) || !path)
                return -EPROTONOSUPPORT; /* not gRPC: the caller decides */

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (GrpcCall) {
                .server = s,
                .stream = stream,
                .session = session,
                .deadline = USEC_INFINITY,
        };
        grpc_decoder_init(&c->decoder, s->max_message_size);
        byte_queue_init_secret(&c->out, GRPC_SEND_QUEUE_MAX);
        c->next = s->calls;
        if (s->calls)
                s->calls->prev = c;
        s->calls = c;
        s->n_calls++;
        h2_stream_set_callbacks(stream, &call_callbacks, c);

        c->path = strdup(path);
        if (!c->path)
                return grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL);

        for (size_t i = 0; i < s->n_methods; i++)
                if (streq(s->methods[i].path, path)) {
                        c->method = &s->methods[i];
                        break;
                }
        if (!c->method)
                return grpc_call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
        if (c->method->max_message_size > 0) {
                grpc_decoder_done(&c->decoder);
                grpc_decoder_init(&c->decoder, MIN(c->method->max_message_size, s->max_message_size));
        }

        /* Identity comes from the verified certificate, nothing else. */
        if (!h2_session_get_peer_id(session) && !(c->method->flags & GRPC_METHOD_UNAUTHENTICATED))
                return grpc_call_finish(c, GRPC_STATUS_UNAUTHENTICATED, "a client certificate is required");

        timeout = h2_headers_get(headers, "grpc-timeout");
        if (timeout) {
                r = grpc_timeout_parse(timeout, &t);
                if (r < 0)
                        return grpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed grpc-timeout");
                t = MIN(t, GRPC_DEADLINE_MAX);
                c->deadline = usec_add(now(CLOCK_MONOTONIC), t);
                r = sd_event_add_time(h2_session_get_event(session), &c->deadline_source, CLOCK_MONOTONIC,
                                      c->deadline, USEC_PER_MSEC, on_deadline, c);
                if (r < 0)
                        return grpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL);
                (void) sd_event_source_set_description(c->deadline_source, "grpc-deadline");
        }
        return 0;
}

const SpiffeId *grpc_call_get_peer(const GrpcCall *c) {
        assert(c);
        return c->stream ? h2_session_get_peer_id(h2_stream_get_session(c->stream)) : NULL;
}

const char *grpc_call_get_path(const GrpcCall *c) {
        assert(c);
        return c->path;
}

H2Session *grpc_call_get_session(const GrpcCall *c) {
        assert(c);
        return c->stream ? h2_stream_get_session(c->stream) : NULL;
}

usec_t grpc_call_get_deadline(const GrpcCall *c) {
        assert(c);
        return c->deadline;
}

void grpc_call_set_userdata(GrpcCall *c, void *userdata) {
        assert(c);
        c->userdata = userdata;
}

void *grpc_call_get_userdata(const GrpcCall *c) {
        assert(c);
        return c->userdata;
}

/* ---- client ---------------------------------------------------------------------------------------- */

static void client_set_status(GrpcClientCall *c, GrpcStatus status, const char *message) {
        if (c->have_status)
                return;
        c->have_status = true;
        c->status = status;
        free(c->message);
        c->message = message ? strdup(message) : NULL;
}

/* HTTP status → gRPC status for responses that are not gRPC (PROTOCOL-HTTP2.md "HTTP to gRPC Status Code
 * Mapping"). */
static GrpcStatus status_from_http(int code) {
        switch (code) {
        case 400:
                return GRPC_STATUS_INTERNAL;
        case 401:
                return GRPC_STATUS_UNAUTHENTICATED;
        case 403:
                return GRPC_STATUS_PERMISSION_DENIED;
        case 404:
                return GRPC_STATUS_UNIMPLEMENTED;
        case 429:
        case 502:
        case 503:
        case 504:
                return GRPC_STATUS_UNAVAILABLE;
        default:
                return GRPC_STATUS_UNKNOWN;
        }
}

static void client_status_from_headers(GrpcClientCall *c, const H2Headers *h) {
        _cleanup_free_ char *decoded = NULL;
        const char *v, *m;
        GrpcStatus status;

        v = h2_headers_get(h, "grpc-status");
        if (!v)
                return;
        if (grpc_status_parse(v, &status) < 0) {
                client_set_status(c, GRPC_STATUS_UNKNOWN, "malformed grpc-status");
                return;
        }
        m = h2_headers_get(h, "grpc-message");
        if (m && grpc_message_decode(m, &decoded) < 0)
                decoded = NULL;
        client_set_status(c, status, decoded);
}

static int client_on_headers(H2Stream *st, const H2Headers *h, bool trailers, void *userdata) {
        GrpcClientCall *c = userdata;
        const char *status, *ctype;

        if (!trailers) {
                status = h2_headers_get(h, ":status");
                if (!status || !streq(status, "200")) {
                        int code = status ? atoi(status) : 0;
                        char msg[64];

                        snprintf(msg, sizeof(msg), "HTTP status %s", strna(status));
                        client_set_status(c, status_from_http(code), msg);
                        return -EPROTO;
                }
                ctype = h2_headers_get(h, "content-type");
                if (!ctype || !grpc_content_type_is_valid(ctype)) {
                        client_set_status(c, GRPC_STATUS_UNKNOWN, "response is not gRPC");
                        return -EPROTO;
                }
        }
        /* Trailers, or a Trailers-Only response. */
        client_status_from_headers(c, h);
        return 0;
}

static int client_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        GrpcClientCall *c = userdata;
        size_t off = 0;
        int r;

        (void) h2_stream_consume(st, size);
        while (off < size) {
                _cleanup_(erase_and_freep) ByteBuffer buf = {};
                ProtobufCMessage *msg = NULL;
                size_t consumed = 0;

                r = grpc_decoder_feed(&c->decoder, data + off, size - off, &consumed);
                off += consumed;
                if (r < 0) {
                        client_set_status(c, r == -EMSGSIZE ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
                                          r == -EMSGSIZE ? "response message larger than the maximum"
                                                         : "malformed response framing");
                        return r;
                }
                if (r == 0)
                        break;
                r = grpc_decoder_take(&c->decoder, &buf.data, &buf.size);
                if (r < 0)
                        return r;
                r = grpc_message_unpack(c->output, buf.data, buf.size, &msg);
                if (r < 0) {
                        client_set_status(c, GRPC_STATUS_INTERNAL, "malformed response message");
                        return r;
                }
                if (c->callbacks.on_message) {
                        r = c->callbacks.on_message(c, msg, c->userdata);
                        if (r < 0) {
                                client_set_status(c, GRPC_STATUS_CANCELLED, "cancelled by the client");
                                return r;
                        }
                } else
                        grpc_message_free(msg);
        }
        return 0;
}

static ssize_t client_read_body(H2Stream *st, uint8_t *buf, size_t size, bool *ret_eof, void *userdata) {
        GrpcClientCall *c = userdata;
        size_t n;

        n = byte_queue_pop(&c->out, buf, size);
        if (n > 0)
                return (ssize_t) n;
        if (c->send_closed) {
                *ret_eof = true;
                return 0;
        }
        return -EAGAIN;
}

static void client_on_close(H2Stream *st, uint32_t error_code, void *userdata) {
        GrpcClientCall *c = userdata;

        c->stream = NULL;
        if (!c->have_status) {
                if (error_code == H2_NO_ERROR && grpc_decoder_is_idle(&c->decoder))
                        client_set_status(c, GRPC_STATUS_INTERNAL, "server ended the call without a status");
                else if (error_code == H2_REFUSED_STREAM)
                        client_set_status(c, GRPC_STATUS_UNAVAILABLE, "stream refused by the server");
                else if (error_code == H2_CANCEL && !h2_session_is_open(c->session))
                        client_set_status(c, GRPC_STATUS_UNAVAILABLE, "connection closed");
                else
                        client_set_status(c, GRPC_STATUS_CANCELLED, "stream reset");
        }
        c->deadline_source = sd_event_source_disable_unref(c->deadline_source);
        if (c->callbacks.on_finish)
                c->callbacks.on_finish(c, c->status, c->message, c->userdata);

        grpc_decoder_done(&c->decoder);
        byte_queue_done(&c->out, true);
        free(c->message);
        free(c);
}

/* The server ended the call (its trailers carry END_STREAM). When we are still sending, the stream would stay
 * half-open until our deadline: the call is over all the same, so end the stream; on_close reports the
 * status the trailers gave. */
static void client_on_end(H2Stream *st, void *userdata) {
        GrpcClientCall *c = userdata;

        if (!c->send_closed || !byte_queue_is_empty(&c->out))
                (void) h2_stream_reset(st, H2_NO_ERROR);
}

static const H2StreamCallbacks client_callbacks = {
        .on_headers = client_on_headers,
        .on_data = client_on_data,
        .on_end = client_on_end,
        .read_body = client_read_body,
        .on_close = client_on_close,
};

static int client_on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        GrpcClientCall *c = userdata;

        client_set_status(c, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
        if (c->stream)
                (void) h2_stream_reset(c->stream, H2_CANCEL);
        return 0;
}

int grpc_client_call_start(H2Session *session, const char *authority, const char *path,
                           const ProtobufCMessageDescriptor *output, size_t max_message_size, usec_t timeout,
                           const GrpcClientCallbacks *callbacks, void *userdata, GrpcClientCall **ret) {
        char tbuf[GRPC_TIMEOUT_STRING_MAX];
        H2Header h[9];
        GrpcClientCall *c;
        size_t n = 0;
        int r;

        assert(session);
        assert(authority);
        assert(path);
        assert(output);
        assert(callbacks);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (GrpcClientCall) {
                .session = session,
                .output = output,
                .callbacks = *callbacks,
                .userdata = userdata,
        };
        grpc_decoder_init(&c->decoder, max_message_size > 0 ? max_message_size : GRPC_MESSAGE_MAX_DEFAULT);
        byte_queue_init_secret(&c->out, GRPC_SEND_QUEUE_MAX);

        h[n++] = (H2Header) { ":method", "POST" };
        h[n++] = (H2Header) { ":scheme", "https" };
        h[n++] = (H2Header) { ":path", path };
        h[n++] = (H2Header) { ":authority", authority };
        h[n++] = (H2Header) { "content-type", GRPC_CONTENT_TYPE };
        h[n++] = (H2Header) { "te", "trailers" };
        h[n++] = (H2Header) { "grpc-accept-encoding", "identity" };
        h[n++] = (H2Header) { "user-agent", "ztna/" PROJECT_VERSION };
        if (timeout != USEC_INFINITY)
                h[n++] = (H2Header) { "grpc-timeout", grpc_timeout_format(timeout, tbuf) };

        /* Everything that can fail happens before the stream exists: once it does, only on_finish reports. */
        if (timeout != USEC_INFINITY) {
                r = sd_event_add_time_relative(h2_session_get_event(session), &c->deadline_source, CLOCK_MONOTONIC,
                                               timeout, USEC_PER_MSEC, client_on_deadline, c);
                if (r < 0)
                        goto fail;
                (void) sd_event_source_set_description(c->deadline_source, "grpc-client-deadline");
        }
        r = h2_session_open_stream(session, h, n, false, &client_callbacks, c, &c->stream);
        if (r < 0)
                goto fail;
        if (ret)
                *ret = c;
        return 0;

fail:
        sd_event_source_disable_unref(c->deadline_source);
        grpc_decoder_done(&c->decoder);
        byte_queue_done(&c->out, true);
        free(c);
        return r;
}

int grpc_client_call_send(GrpcClientCall *c, const ProtobufCMessage *msg) {
        _cleanup_(erase_and_freep) ByteBuffer frame = {};
        int r;

        assert(c);
        assert(msg);

        if (c->send_closed || !c->stream)
                return -ESHUTDOWN;
        r = grpc_message_pack_frame(msg, c->decoder.max_message_size, &frame.data, &frame.size);
        if (r < 0)
                return r;
        r = byte_queue_push(&c->out, frame.data, frame.size);
        if (r < 0)
                return r;
        return h2_stream_resume(c->stream);
}

int grpc_client_call_close_send(GrpcClientCall *c) {
        assert(c);

        c->send_closed = true;
        return c->stream ? h2_stream_resume(c->stream) : 0;
}

void grpc_client_call_cancel(GrpcClientCall *c) {
        assert(c);

        client_set_status(c, GRPC_STATUS_CANCELLED, "cancelled by the client");
        if (c->stream)
                (void) h2_stream_reset(c->stream, H2_CANCEL);
}

void *grpc_client_call_get_userdata(const GrpcClientCall *c) {
        assert(c);
        return c->userdata;
}
