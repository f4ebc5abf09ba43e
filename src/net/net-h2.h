/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* HTTP/2 sessions (nghttp2) over an established TlsConnection, client or server.
 *
 * Memory is bounded by construction: DATA received counts against flow-control windows until the stream's
 * owner calls h2_stream_consume() — so a CONNECT stream consumes only what it has written to its socket and
 * a slow reader stalls its sender instead of growing our buffers; header blocks are capped; concurrent
 * streams are capped by SETTINGS_MAX_CONCURRENT_STREAMS; we stop reading from the peer while we cannot
 * write to it. Floods are cut off by nghttp2's rapid-reset and CONTINUATION limits and by our own header
 * size accounting; a peer that stops answering PINGs is declared dead after ping_timeout.
 *
 * Callbacks may close streams and even drop the last reference to the session; the session keeps itself
 * alive until the callback returns. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "net-tls.h"
#include "time-util.h"

/* Defaults; H2Settings overrides them. */
#define H2_MAX_CONCURRENT_STREAMS_DEFAULT 256U
#define H2_STREAM_WINDOW_DEFAULT (1024U * 1024U)           /* per stream, bytes */
#define H2_CONNECTION_WINDOW_DEFAULT (16U * 1024U * 1024U) /* per session, bytes */
#define H2_MAX_HEADER_LIST_SIZE_DEFAULT (16U * 1024U)      /* decoded header block, RFC 9113 §6.5.2 */
#define H2_MAX_HEADERS 64U                                  /* header fields in one block */
#define H2_PING_INTERVAL_DEFAULT (30 * USEC_PER_SEC)
#define H2_PING_TIMEOUT_DEFAULT (20 * USEC_PER_SEC)
#define H2_DRAIN_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* Peer-initiated resets tolerated: a burst of RESET_BURST, refilled at RESET_RATE per second. */
#define H2_RESET_BURST 1000U
#define H2_RESET_RATE 33U
/* CONTINUATION frames allowed after one HEADERS frame. */
#define H2_MAX_CONTINUATIONS 8U
/* Largest chunk coalesced into one TLS write. */
#define H2_OUTPUT_BUFFER_SIZE (32U * 1024U)

typedef struct H2Session H2Session;
typedef struct H2Stream H2Stream;

typedef struct H2Header {
        const char *name;
        const char *value;
} H2Header;

/* A received header block: names are lower-case (HTTP/2 requires it), pseudo-headers first. */
typedef struct H2Headers {
        H2Header *items;
        size_t n;
} H2Headers;

/* Value of the first header called name, or NULL. */
const char *h2_headers_get(const H2Headers *h, const char *name);

typedef struct H2Settings {
        uint32_t max_concurrent_streams;
        uint32_t stream_window;
        uint32_t connection_window;
        uint32_t max_header_list_size;
        usec_t ping_interval;           /* USEC_INFINITY disables keepalive */
        usec_t ping_timeout;
        usec_t drain_timeout;
        /* Bytes the application may hold for this peer beyond flow control (h2_session_reserve()). 0: the
         * connection window. */
        size_t app_buffer_budget;
} H2Settings;

void h2_settings_init(H2Settings *s);

typedef struct H2StreamCallbacks {
        /* Body bytes. They hold flow-control credit until h2_stream_consume(). Return < 0 to reset the stream. */
        int (*on_data)(H2Stream *s, const uint8_t *data, size_t size, void *userdata);
        /* A header block: the response (client) or trailers (both sides). */
        int (*on_headers)(H2Stream *s, const H2Headers *h, bool trailers, void *userdata);
        /* The peer ended its side (END_STREAM). */
        void (*on_end)(H2Stream *s, void *userdata);
        /* Body bytes to send: copy up to size into buf and return the count; or return 0 and set *ret_eof
         * when the body is complete; or return -EAGAIN when nothing is ready (call h2_stream_resume() later).
         * Any other negative errno resets the stream. */
        ssize_t (*read_body)(H2Stream *s, uint8_t *buf, size_t size, bool *ret_eof, void *userdata);
        /* The stream is gone; error_code is the HTTP/2 error code (0 = closed normally). Last callback. */
        void (*on_close)(H2Stream *s, uint32_t error_code, void *userdata);
} H2StreamCallbacks;

typedef struct H2SessionCallbacks {
        /* Server: a complete request header block. Attach with h2_stream_set_callbacks(), then
         * h2_stream_respond() now or later; return < 0 to refuse (RST_STREAM REFUSED_STREAM). */
        int (*on_request)(H2Session *s, H2Stream *stream, const H2Headers *h, void *userdata);
        /* The session is over: error 0 after a graceful close, else why (-ETIMEDOUT keepalive, -ECONNRESET,
         * -EPROTO). The owner drops its reference here. Called once. */
        void (*on_close)(H2Session *s, int error, void *userdata);
} H2SessionCallbacks;

/* Takes ownership of an established TLS connection. */
int h2_session_new(TlsConnection *tls, const H2Settings *settings, const H2SessionCallbacks *callbacks,
                   void *userdata, H2Session **ret);
H2Session *h2_session_ref(H2Session *s);
H2Session *h2_session_unref(H2Session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(H2Session *, h2_session_unref);

/* Graceful shutdown: GOAWAY, finish the streams already accepted, then close (bounded by drain_timeout). */
int h2_session_shutdown(H2Session *s);
/* Immediate close with GOAWAY(error_code); on_close follows. */
void h2_session_terminate(H2Session *s, uint32_t error_code);
bool h2_session_is_open(const H2Session *s);
const SpiffeId *h2_session_get_peer_id(const H2Session *s);
TlsConnection *h2_session_get_tls(const H2Session *s);
size_t h2_session_get_n_streams(const H2Session *s);
void *h2_session_get_userdata(const H2Session *s);
sd_event *h2_session_get_event(const H2Session *s);

/* Memory an application layer holds on behalf of this peer after giving back its flow-control credit (a
 * partial gRPC message) is charged here, so one connection cannot make us buffer more than the budget
 * whatever it does with streams. -ENOBUFS when n does not fit. */
int h2_session_reserve(H2Session *s, size_t n);
void h2_session_release(H2Session *s, size_t n);
size_t h2_session_get_reserved(const H2Session *s);

/* Client: opens a stream with a request header block; end_stream when there is no body. */
int h2_session_open_stream(H2Session *s, const H2Header *headers, size_t n_headers, bool end_stream,
                           const H2StreamCallbacks *callbacks, void *userdata, H2Stream **ret);

/* Attaches the stream's owner. Until a server stream has one, body DATA from the peer makes us refuse the
 * stream (REFUSED_STREAM) rather than drop it unseen; END_STREAM is remembered (h2_stream_is_peer_ended()). */
void h2_stream_set_callbacks(H2Stream *st, const H2StreamCallbacks *callbacks, void *userdata);
/* The peer has sent END_STREAM (possibly before an owner attached). */
bool h2_stream_is_peer_ended(const H2Stream *st);
/* Server: sends the response header block; has_body = false ends the stream. */
int h2_stream_respond(H2Stream *st, const H2Header *headers, size_t n_headers, bool has_body);
/* Trailers sent after the body instead of END_STREAM on the last DATA frame (gRPC status). Set them before
 * read_body reports eof, or call on a stream whose body already ended. */
int h2_stream_set_trailers(H2Stream *st, const H2Header *headers, size_t n_headers);
/* Body data became available after read_body returned -EAGAIN. */
int h2_stream_resume(H2Stream *st);
/* n bytes delivered by on_data were processed: give the credit back to the peer. */
int h2_stream_consume(H2Stream *st, size_t n);
/* RST_STREAM with error_code (e.g. NGHTTP2_CANCEL = 8). on_close follows. */
int h2_stream_reset(H2Stream *st, uint32_t error_code);
int32_t h2_stream_get_id(const H2Stream *st);
H2Session *h2_stream_get_session(const H2Stream *st);
void *h2_stream_get_userdata(const H2Stream *st);
/* Bytes the peer may still send us before we consume (for tests and metrics). */
int32_t h2_stream_get_receive_window(const H2Stream *st);

#define H2_NO_ERROR 0x0U
#define H2_PROTOCOL_ERROR 0x1U
#define H2_INTERNAL_ERROR 0x2U
#define H2_REFUSED_STREAM 0x7U
#define H2_CANCEL 0x8U
#define H2_ENHANCE_YOUR_CALM 0xbU
