/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "log.h"
#include "net-h2.h"

/* Most TLS reads handled in one dispatch, so one busy peer cannot starve the loop. */
#define H2_READS_PER_DISPATCH 64
#define H2_READ_CHUNK (16U * 1024U)

struct H2Stream {
        H2Session *session;
        int32_t id;
        H2StreamCallbacks callbacks;
        void *userdata;

        /* Header block being received (copies), with its accounted size. */
        H2Header *headers;
        size_t n_headers;
        size_t header_bytes;

        nghttp2_nv *trailers;
        size_t n_trailers;

        size_t unconsumed; /* received DATA bytes not yet given back with h2_stream_consume() */
        bool has_provider;
        bool refused;
        bool callbacks_set;     /* an owner has attached (client streams: always) */
        bool got_final_response; /* client: a non-1xx response header block arrived; later blocks are trailers */
        bool peer_ended;        /* END_STREAM received */

        H2Stream *prev, *next;
};

struct H2Session {
        unsigned n_ref;
        nghttp2_session *ngh;
        TlsConnection *tls;
        bool server;
        H2Settings settings;
        H2SessionCallbacks callbacks;
        void *userdata;

        sd_event *event;
        sd_event_source *defer_source; /* runs session_process() outside nghttp2 callbacks */
        sd_event_source *ping_source;
        sd_event_source *drain_source;
        bool ping_outstanding;

        uint8_t *out;                  /* coalesced output, allocated only while non-empty */
        size_t out_len, out_off;
        const uint8_t *pending;        /* tail of the last nghttp2 chunk that did not fit into out */
        size_t pending_len;
        bool write_blocked;

        H2Stream *streams;
        size_t n_streams;
        size_t reserved;               /* h2_session_reserve() total */

        bool closing;                  /* GOAWAY sent or received */
        uint32_t goaway_sent_code;     /* error code of a GOAWAY we sent (nghttp2 sends one on floods) */
        bool finished;                 /* on_close delivered */
        bool freeing;                  /* inside the final unref */
        unsigned dispatching;          /* > 0 while inside nghttp2_session_mem_recv()/mem_send() */
        bool terminating;              /* h2_session_terminate() called from a callback: done when it returns */
        uint32_t terminate_code;
        int error;
};

void h2_settings_init(H2Settings *s) {
        assert(s);
        *s = (H2Settings) {
                .max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS_DEFAULT,
                .stream_window = H2_STREAM_WINDOW_DEFAULT,
                .connection_window = H2_CONNECTION_WINDOW_DEFAULT,
                .max_header_list_size = H2_MAX_HEADER_LIST_SIZE_DEFAULT,
                .ping_interval = H2_PING_INTERVAL_DEFAULT,
                .ping_timeout = H2_PING_TIMEOUT_DEFAULT,
                .drain_timeout = H2_DRAIN_TIMEOUT_DEFAULT,
        };
}

const char *h2_headers_get(const H2Headers *h, const char *name) {
        assert(h);
        assert(name);

        for (size_t i = 0; i < h->n; i++)
                if (streq(h->items[i].name, name))
                        return h->items[i].value;
        return NULL;
}

static void stream_clear_headers(H2Stream *st) {
        for (size_t i = 0; i < st->n_headers; i++) {
                free((char *) st->headers[i].name);
                free((char *) st->headers[i].value);
        }
        st->headers = mfree(st->headers);
        st->n_headers = 0;
        st->header_bytes = 0;
}

static void nv_array_free(nghttp2_nv *nv, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(nv[i].name);
                free(nv[i].value);
        }
        free(nv);
}

static H2Stream *stream_free(H2Stream *st) {
        if (!st)
                return NULL;
        stream_clear_headers(st);
        nv_array_free(st->trailers, st->n_trailers);
        return mfree(st);
}

static void session_link_stream(H2Session *s, H2Stream *st) {
        st->next = s->streams;
        if (s->streams)
                s->streams->prev = st;
        s->streams = st;
        s->n_streams++;
}

static void session_unlink_stream(H2Session *s, H2Stream *st) {
        if (st->prev)
                st->prev->next = st->next;
        else
                s->streams = st->next;
        if (st->next)
                st->next->prev = st->prev;
        st->prev = st->next = NULL;
        s->n_streams--;
}

static H2Stream *stream_new(H2Session *s) {
        H2Stream *st = calloc(1, sizeof(*st));

        if (!st)
                return NULL;
        st->session = s;
        st->id = -1;
        session_link_stream(s, st);
        return st;
}

static void session_schedule(H2Session *s) {
        if (s->defer_source && !s->finished)
                (void) sd_event_source_set_enabled(s->defer_source, SD_EVENT_ONESHOT);
}

static int nv_array_from_headers(const H2Header *headers, size_t n, nghttp2_nv **ret) {
        nghttp2_nv *nv;

        if (n > H2_MAX_HEADERS)
                return -E2BIG;
        nv = calloc(n ?: 1, sizeof(nghttp2_nv));
        if (!nv)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                nv[i].name = (uint8_t *) strdup(headers[i].name);
                nv[i].value = (uint8_t *) strdup(headers[i].value);
                if (!nv[i].name || !nv[i].value) {
                        nv_array_free(nv, i + 1);
                        return -ENOMEM;
                }
                nv[i].namelen = strlen(headers[i].name);
                nv[i].valuelen = strlen(headers[i].value);
                nv[i].flags = NGHTTP2_NV_FLAG_NONE;
        }
        *ret = nv;
        return 0;
}

/* The session closes exactly once: streams first (each gets on_close), then the owner. */
static void session_finish(H2Session *s, int error) {
        if (s->finished)
                return;
        s->finished = true;
        s->error = error;

        s->ping_source = sd_event_source_disable_unref(s->ping_source);
        s->drain_source = sd_event_source_disable_unref(s->drain_source);
        s->defer_source = sd_event_source_disable_unref(s->defer_source);
        if (s->tls) {
                tls_connection_shutdown(s->tls);
                (void) tls_connection_set_interest(s->tls, false, false);
        }

        h2_session_ref(s);
        while (s->streams) {
                H2Stream *st = s->streams;

                session_unlink_stream(s, st);
                if (st->id >= 0)
                        (void) nghttp2_session_set_stream_user_data(s->ngh, st->id, NULL);
                if (st->callbacks.on_close)
                        st->callbacks.on_close(st, H2_CANCEL, st->userdata);
                stream_free(st);
        }
        if (s->callbacks.on_close)
                s->callbacks.on_close(s, error, s->userdata);
        h2_session_unref(s);
}

/* Moves nghttp2's output into TLS, coalescing small frames. Returns 0 when everything was written or
 * writing would block, < 0 on a fatal error. */
static int session_flush(H2Session *s) {
        for (;;) {
                if (s->out_off == s->out_len) {
                        s->out_off = s->out_len = 0;
                        while (s->out_len < H2_OUTPUT_BUFFER_SIZE) {
                                size_t k;

                                if (s->pending_len == 0) {
                                        const uint8_t *p;
                                        ssize_t n;

                                        s->dispatching++;
                                        n = nghttp2_session_mem_send(s->ngh, &p);
                                        s->dispatching--;

                                        if (n < 0) {
                                                log_debug("nghttp2_session_mem_send: %s", nghttp2_strerror((int) n));
                                                return -EPROTO;
                                        }
                                        if (n == 0)
                                                break;
                                        s->pending = p;
                                        s->pending_len = (size_t) n;
                                }
                                if (!s->out) {
                                        s->out = malloc(H2_OUTPUT_BUFFER_SIZE);
                                        if (!s->out)
                                                return -ENOMEM;
                                }
                                k = MIN(s->pending_len, H2_OUTPUT_BUFFER_SIZE - s->out_len);
                                memcpy(s->out + s->out_len, s->pending, k);
                                s->out_len += k;
                                s->pending += k;
                                s->pending_len -= k;
                        }
                        if (s->out_len == 0) {
                                s->out = mfree(s->out); /* idle sessions keep no output buffer */
                                s->write_blocked = false;
                                return 0;
                        }
                }

                ssize_t w = tls_connection_write(s->tls, s->out + s->out_off, s->out_len - s->out_off);
                if (w == -EAGAIN) {
                        s->write_blocked = true;
                        return 0;
                }
                if (w < 0)
                        return (int) w;
                s->out_off += (size_t) w;
                s->write_blocked = false;
        }
}

static void session_update_interest(H2Session *s) {
        bool want_read, want_write;

        if (s->finished || !s->tls)
                return;
        want_write = s->out_off < s->out_len || s->pending_len > 0 || nghttp2_session_want_write(s->ngh);
        /* Always keep reading, even while our writes are blocked: two peers that both stopped reading until
         * they could write would deadlock. Memory stays bounded without it: received DATA holds flow-control
         * credit until consumed, our DATA output is pulled only into an empty buffer, and nghttp2 caps queued
         * control-frame answers (max_outbound_ack). */
        want_read = nghttp2_session_want_read(s->ngh);
        (void) tls_connection_set_interest(s->tls, want_read, want_write);
}

static void session_process(H2Session *s) {
        uint8_t buf[H2_READ_CHUNK];
        int r;

        if (s->finished)
                return;
        h2_session_ref(s);

        if (s->terminating) {
                h2_session_terminate(s, s->terminate_code);
                goto out;
        }

        for (unsigned i = 0; !s->finished && !s->terminating; i++) {
                ssize_t n, m;

                if (i >= H2_READS_PER_DISPATCH) {
                        session_schedule(s); /* more may be buffered inside TLS: continue soon */
                        break;
                }
                n = tls_connection_read(s->tls, buf, sizeof(buf));
                if (n == -EAGAIN)
                        break;
                if (n == 0) {
                        /* Peer closed. Clean if nothing was in flight (e.g. after GOAWAY). */
                        session_finish(s, s->n_streams == 0 && s->closing ? 0 : -ECONNRESET);
                        goto out;
                }
                if (n < 0) {
                        log_debug("HTTP/2 peer %s: read failed: %s", tls_connection_get_peer_address(s->tls),
                                  tls_connection_get_error_reason(s->tls) ?: strerror((int) -n));
                        session_finish(s, (int) n);
                        goto out;
                }
                s->dispatching++;
                m = nghttp2_session_mem_recv(s->ngh, buf, (size_t) n);
                s->dispatching--;
                if (m < 0) {
                        log_debug("HTTP/2 peer %s: %s", tls_connection_get_peer_address(s->tls),
                                  nghttp2_strerror((int) m));
                        /* Tell the peer why when nghttp2 has queued a GOAWAY, then close. */
                        (void) session_flush(s);
                        session_finish(s, -EPROTO);
                        goto out;
                }
                /* Answer as we go: a GOAWAY nghttp2 queued against a flood goes out now, and once it is
                 * sent nghttp2 stops wanting input, so no more of the flood is processed. */
                r = session_flush(s);
                if (r < 0) {
                        session_finish(s, r);
                        goto out;
                }
                if (!nghttp2_session_want_read(s->ngh))
                        break;
        }
        if (s->finished)
                goto out;
        if (s->terminating) {
                h2_session_terminate(s, s->terminate_code);
                goto out;
        }

        r = session_flush(s);
        if (r < 0) {
                session_finish(s, r);
                goto out;
        }
        if (s->terminating) {
                h2_session_terminate(s, s->terminate_code);
                goto out;
        }

        if (!nghttp2_session_want_read(s->ngh) && !nghttp2_session_want_write(s->ngh) && s->out_off == s->out_len &&
            s->pending_len == 0) {
                /* Nothing left to do: a graceful end, unless it was us refusing a misbehaving peer. */
                session_finish(s, s->goaway_sent_code == NGHTTP2_NO_ERROR ? 0 : -EPROTO);
                goto out;
        }
        session_update_interest(s);
out:
        h2_session_unref(s);
}

static void on_tls_io(TlsConnection *c, void *userdata) {
        session_process(userdata);
}

static int on_defer(sd_event_source *source, void *userdata) {
        session_process(userdata);
        return 0;
}

static int ping_arm(H2Session *s, usec_t after);

static int on_ping_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        H2Session *s = userdata;

        if (s->ping_outstanding) {
                log_debug("HTTP/2 peer %s did not answer PING within the timeout",
                          tls_connection_get_peer_address(s->tls));
                session_finish(s, -ETIMEDOUT);
                return 0;
        }
        if (nghttp2_submit_ping(s->ngh, NGHTTP2_FLAG_NONE, NULL) == 0) {
                s->ping_outstanding = true;
                session_schedule(s);
        }
        (void) ping_arm(s, s->settings.ping_timeout);
        return 0;
}

static int ping_arm(H2Session *s, usec_t after) {
        int r;

        if (s->settings.ping_interval == USEC_INFINITY || s->finished)
                return 0;
        if (!s->ping_source) {
                r = sd_event_add_time_relative(s->event, &s->ping_source, CLOCK_MONOTONIC, after, 0, on_ping_timer,
                                               s);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(s->ping_source, "h2-keepalive");
                return 0;
        }
        r = sd_event_source_set_time_relative(s->ping_source, after);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s->ping_source, SD_EVENT_ONESHOT);
}

static H2Stream *stream_of(H2Session *s, int32_t id) {
        return nghttp2_session_get_stream_user_data(s->ngh, id);
}

static int on_begin_headers(nghttp2_session *ngh, const nghttp2_frame *frame, void *userdata) {
        H2Session *s = userdata;
        H2Stream *st;

        if (frame->hd.type != NGHTTP2_HEADERS)
                return 0;
        if (s->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
                if (s->n_streams >= s->settings.max_concurrent_streams)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                st = stream_new(s);
                if (!st)
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                st->id = frame->hd.stream_id;
                if (nghttp2_session_set_stream_user_data(ngh, st->id, st) != 0) {
                        session_unlink_stream(s, st);
                        stream_free(st);
                        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
                }
                return 0;
        }
        st = stream_of(s, frame->hd.stream_id);
        if (st)
                stream_clear_headers(st);
        return 0;
}

static int on_header(nghttp2_session *ngh, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *userdata) {
        H2Session *s = userdata;
        H2Stream *st = stream_of(s, frame->hd.stream_id);
        H2Header *items;
        char *n, *v;

        if (!st)
                return 0;
        /* RFC 9113 §6.5.2 accounting: name + value + 32 per field. */
        st->header_bytes += namelen + valuelen + 32;
        if (st->header_bytes > s->settings.max_header_list_size || st->n_headers >= H2_MAX_HEADERS) {
                log_debug("HTTP/2 peer %s: header block on stream %i too large, resetting",
                          tls_connection_get_peer_address(s->tls), st->id);
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        items = reallocarray(st->headers, st->n_headers + 1, sizeof(H2Header));
        if (!items)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        st->headers = items;
        n = strndup((const char *) name, namelen);
        v = strndup((const char *) value, valuelen);
        if (!n || !v) {
                free(n);
                free(v);
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        st->headers[st->n_headers++] = (H2Header) { n, v };
        return 0;
}

static int on_frame_recv(nghttp2_session *ngh, const nghttp2_frame *frame, void *userdata) {
        H2Session *s = userdata;
        H2Stream *st;
        int r;

        switch (frame->hd.type) {
        case NGHTTP2_PING:
                if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
                        s->ping_outstanding = false;
                        (void) ping_arm(s, s->settings.ping_interval);
                }
                return 0;
        case NGHTTP2_GOAWAY:
                s->closing = true;
                return 0;
        case NGHTTP2_HEADERS:
                st = stream_of(s, frame->hd.stream_id);
                if (!st)
                        return 0;
                if (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS) {
                        H2Headers h = { st->headers, st->n_headers };

                        if (s->server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
                                r = s->callbacks.on_request ? s->callbacks.on_request(s, st, &h, s->userdata) : -ENOSYS;
                                if (r < 0) {
                                        st->refused = true;
                                        (void) nghttp2_submit_rst_stream(ngh, NGHTTP2_FLAG_NONE, st->id,
                                                                         NGHTTP2_REFUSED_STREAM);
                                }
                        } else if (st->callbacks.on_headers) {
                                bool trailers;

                                /* After an interim (1xx) response nghttp2 files the final response under
                                 * NGHTTP2_HCAT_HEADERS too, so the category cannot tell trailers from it. */
                                if (s->server)
                                        trailers = frame->headers.cat == NGHTTP2_HCAT_HEADERS;
                                else if (st->got_final_response)
                                        trailers = true;
                                else {
                                        const char *status = h2_headers_get(&h, ":status");

                                        if (status && status[0] == '1') {
                                                /* Interim: nobody here acts on 1xx; wait for the final one. */
                                                stream_clear_headers(st);
                                                return 0;
                                        }
                                        st->got_final_response = true;
                                        trailers = false;
                                }
                                r = st->callbacks.on_headers(st, &h, trailers, st->userdata);
                                if (r < 0) {
                                        st->refused = true; /* no on_data/on_end after our reset */
                                        (void) nghttp2_submit_rst_stream(ngh, NGHTTP2_FLAG_NONE, st->id,
                                                                         NGHTTP2_CANCEL);
                                }
                        }
                        stream_clear_headers(st);
                }
                if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
                        st->peer_ended = true;
                        if (!st->refused && st->callbacks.on_end)
                                st->callbacks.on_end(st, st->userdata);
                }
                return 0;
        case NGHTTP2_DATA:
                st = stream_of(s, frame->hd.stream_id);
                if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
                        st->peer_ended = true;
                        if (!st->refused && st->callbacks.on_end)
                                st->callbacks.on_end(st, st->userdata);
                }
                return 0;
        default:
                return 0;
        }
}

static int on_data_chunk(nghttp2_session *ngh, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                         void *userdata) {
        H2Session *s = userdata;
        H2Stream *st = stream_of(s, stream_id);
        int r;

        if (!st || st->refused || !st->callbacks.on_data) {
                /* Nobody will consume these: give the credit back at once. Body bytes for a request whose
                 * owner has not attached yet (a CONNECT still dialing) would be lost without a trace: refuse
                 * the stream instead, so the peer learns of it. */
                (void) nghttp2_session_consume(ngh, stream_id, len);
                if (st && !st->refused && !st->callbacks_set) {
                        st->refused = true;
                        (void) nghttp2_submit_rst_stream(ngh, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_REFUSED_STREAM);
                }
                return 0;
        }
        st->unconsumed += len;
        r = st->callbacks.on_data(st, data, len, st->userdata);
        if (r < 0) {
                st->refused = true;
                (void) nghttp2_submit_rst_stream(ngh, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        }
        return 0;
}

static int on_stream_close(nghttp2_session *ngh, int32_t stream_id, uint32_t error_code, void *userdata) {
        H2Session *s = userdata;
        H2Stream *st = stream_of(s, stream_id);

        if (!st)
                return 0;
        (void) nghttp2_session_set_stream_user_data(ngh, stream_id, NULL);
        session_unlink_stream(s, st);
        /* Credit held by a stream that is gone would otherwise shrink the connection window for good. */
        if (st->unconsumed > 0)
                (void) nghttp2_session_consume_connection(ngh, st->unconsumed);
        if (st->callbacks.on_close)
                st->callbacks.on_close(st, error_code, st->userdata);
        stream_free(st);
        if (s->closing && s->n_streams == 0)
                session_schedule(s);
        return 0;
}

static ssize_t data_source_read(nghttp2_session *ngh, int32_t stream_id, uint8_t *buf, size_t length,
                                uint32_t *data_flags, nghttp2_data_source *source, void *userdata) {
        H2Stream *st = source->ptr;
        bool eof = false;
        ssize_t n;

        if (!st || !st->callbacks.read_body)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        n = st->callbacks.read_body(st, buf, length, &eof, st->userdata);
        if (n == -EAGAIN)
                return NGHTTP2_ERR_DEFERRED;
        if (n < 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        if (n == 0 && !eof)
                return NGHTTP2_ERR_DEFERRED;
        if (eof) {
                *data_flags |= NGHTTP2_DATA_FLAG_EOF;
                if (st->trailers) {
                        if (nghttp2_submit_trailer(ngh, stream_id, st->trailers, st->n_trailers) == 0)
                                *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                        nv_array_free(st->trailers, st->n_trailers);
                        st->trailers = NULL;
                        st->n_trailers = 0;
                }
        }
        return n;
}

static int on_frame_send(nghttp2_session *ngh, const nghttp2_frame *frame, void *userdata) {
        H2Session *s = userdata;

        if (frame->hd.type == NGHTTP2_GOAWAY) {
                s->closing = true;
                s->goaway_sent_code = frame->goaway.error_code;
                if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
                        log_debug("HTTP/2 peer %s: sent GOAWAY %s", tls_connection_get_peer_address(s->tls),
                                  nghttp2_http2_strerror(frame->goaway.error_code));
        }
        return 0;
}

static int on_error(nghttp2_session *ngh, int lib_error_code, const char *msg, size_t len, void *userdata) {
        log_debug("nghttp2: %.*s", (int) len, msg);
        return 0;
}

int h2_session_new(TlsConnection *tls, const H2Settings *settings, const H2SessionCallbacks *callbacks,
                   void *userdata, H2Session **ret) {
        _cleanup_(tls_connection_freep) TlsConnection *owned = tls;
        _cleanup_(h2_session_unrefp) H2Session *s = NULL;
        nghttp2_session_callbacks *cbs = NULL;
        nghttp2_option *opt = NULL;
        int r;

        assert(tls);
        assert(callbacks);
        assert(ret);

        if (!tls_connection_is_established(tls))
                return -ENOTCONN;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->server = tls_connection_get_mode(tls) == TLS_MODE_SERVER;
        s->callbacks = *callbacks;
        s->userdata = userdata;
        if (settings)
                s->settings = *settings;
        else
                h2_settings_init(&s->settings);
        if (s->settings.app_buffer_budget == 0)
                s->settings.app_buffer_budget = s->settings.connection_window;
        if (s->settings.max_concurrent_streams == 0 || s->settings.stream_window == 0 ||
            s->settings.stream_window > NGHTTP2_MAX_WINDOW_SIZE || s->settings.connection_window == 0 ||
            s->settings.connection_window > NGHTTP2_MAX_WINDOW_SIZE)
                return -EINVAL;

        if (nghttp2_session_callbacks_new(&cbs) != 0)
                return -ENOMEM;
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
        nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
        nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);

        if (nghttp2_option_new(&opt) != 0) {
                nghttp2_session_callbacks_del(cbs);
                return -ENOMEM;
        }
        nghttp2_option_set_no_auto_window_update(opt, 1);
        nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
        nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST, H2_RESET_RATE);
        nghttp2_option_set_max_outbound_ack(opt, 1000);
        nghttp2_option_set_max_settings(opt, 32);

        if (s->server)
                r = nghttp2_session_server_new2(&s->ngh, cbs, s, opt);
        else
                r = nghttp2_session_client_new2(&s->ngh, cbs, s, opt);
        nghttp2_session_callbacks_del(cbs);
        nghttp2_option_del(opt);
        if (r != 0)
                return -ENOMEM;

        nghttp2_settings_entry iv[] = {
                { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->settings.max_concurrent_streams },
                { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, s->settings.stream_window },
                { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->settings.max_header_list_size },
                { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        };
        r = nghttp2_submit_settings(s->ngh, NGHTTP2_FLAG_NONE, iv, s->server ? 3 : 4);
        if (r != 0)
                return -ENOMEM;
        r = nghttp2_session_set_local_window_size(s->ngh, NGHTTP2_FLAG_NONE, 0, (int32_t) s->settings.connection_window);
        if (r != 0)
                return -EINVAL;

        s->tls = TAKE_PTR(owned);
        s->event = sd_event_ref(tls_connection_get_event(s->tls));

        r = sd_event_add_defer(s->event, &s->defer_source, on_defer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->defer_source, "h2-process");

        r = ping_arm(s, s->settings.ping_interval);
        if (r < 0)
                return r;

        static const TlsConnectionCallbacks tls_callbacks = { .on_io = on_tls_io };
        tls_connection_set_callbacks(s->tls, &tls_callbacks, s);

        *ret = TAKE_PTR(s);
        return 0;
}

H2Session *h2_session_ref(H2Session *s) {
        if (s)
                s->n_ref++;
        return s;
}

H2Session *h2_session_unref(H2Session *s) {
        if (!s || s->freeing || --s->n_ref > 0)
                return NULL;

        /* Last reference gone while streams remain (the owner dropped an open session): every stream still
         * hears on_close, so whoever owns it (a gRPC call, a CONNECT pipe) can release itself. The session
         * stays allocated during these callbacks; a ref/unref pair inside them must not free it twice. */
        s->freeing = true;
        while (s->streams) {
                H2Stream *st = s->streams;

                session_unlink_stream(s, st);
                if (st->id >= 0)
                        (void) nghttp2_session_set_stream_user_data(s->ngh, st->id, NULL);
                if (st->callbacks.on_close)
                        st->callbacks.on_close(st, H2_CANCEL, st->userdata);
                stream_free(st);
        }
        sd_event_source_disable_unref(s->defer_source);
        sd_event_source_disable_unref(s->ping_source);
        sd_event_source_disable_unref(s->drain_source);
        nghttp2_session_del(s->ngh);
        tls_connection_free(s->tls);
        sd_event_unref(s->event);
        free(s->out);
        return mfree(s);
}

static int on_drain_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        H2Session *s = userdata;

        log_debug("HTTP/2 peer %s: drain timeout with %zu streams open, closing",
                  tls_connection_get_peer_address(s->tls), s->n_streams);
        h2_session_terminate(s, H2_NO_ERROR);
        return 0;
}

int h2_session_shutdown(H2Session *s) {
        int r;

        assert(s);

        if (s->finished || s->closing)
                return 0;
        s->closing = true;
        r = nghttp2_submit_goaway(s->ngh, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ngh),
                                  NGHTTP2_NO_ERROR, NULL, 0);
        if (r != 0)
                return -EPROTO;
        r = sd_event_add_time_relative(s->event, &s->drain_source, CLOCK_MONOTONIC, s->settings.drain_timeout, 0,
                                       on_drain_timeout, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->drain_source, "h2-drain");
        session_schedule(s);
        return 0;
}

void h2_session_terminate(H2Session *s, uint32_t error_code) {
        assert(s);

        if (s->finished)
                return;
        if (s->dispatching > 0) {
                /* Inside an nghttp2 callback: streams must outlive it, and nghttp2 must not be re-entered.
                 * Finish as soon as control is back in session_process(). */
                s->terminating = true;
                s->terminate_code = error_code;
                s->defer_source ? session_schedule(s) : (void) 0;
                return;
        }
        s->terminating = false;
        s->closing = true;
        (void) nghttp2_session_terminate_session(s->ngh, error_code);
        (void) session_flush(s);
        session_finish(s, error_code == H2_NO_ERROR ? 0 : -ECONNABORTED);
}

bool h2_session_is_open(const H2Session *s) {
        return s && !s->finished && !s->closing && !s->freeing && !s->terminating;
}

const SpiffeId *h2_session_get_peer_id(const H2Session *s) {
        assert(s);
        return s->tls ? tls_connection_get_peer_id(s->tls) : NULL;
}

TlsConnection *h2_session_get_tls(const H2Session *s) {
        assert(s);
        return s->tls;
}

size_t h2_session_get_n_streams(const H2Session *s) {
        assert(s);
        return s->n_streams;
}

int h2_session_reserve(H2Session *s, size_t n) {
        assert(s);

        if (n > s->settings.app_buffer_budget - s->reserved)
                return -ENOBUFS;
        s->reserved += n;
        return 0;
}

void h2_session_release(H2Session *s, size_t n) {
        assert(s);
        assert(n <= s->reserved);
        s->reserved -= MIN(n, s->reserved);
}

size_t h2_session_get_reserved(const H2Session *s) {
        assert(s);
        return s->reserved;
}

sd_event *h2_session_get_event(const H2Session *s) {
        assert(s);
        return s->event;
}

void *h2_session_get_userdata(const H2Session *s) {
        assert(s);
        return s->userdata;
}

int h2_session_open_stream(H2Session *s, const H2Header *headers, size_t n_headers, bool end_stream,
                           const H2StreamCallbacks *callbacks, void *userdata, H2Stream **ret) {
        nghttp2_data_provider provider;
        nghttp2_nv *nv = NULL;
        H2Stream *st;
        int32_t id;
        int r;

        assert(s);
        assert(headers);
        assert(callbacks);

        if (s->server)
                return -EOPNOTSUPP;
        if (s->finished || s->closing || s->terminating || s->freeing)
                return -ENOTCONN;
        if (s->n_streams >= nghttp2_session_get_remote_settings(s->ngh, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
                return -EBUSY;

        r = nv_array_from_headers(headers, n_headers, &nv);
        if (r < 0)
                return r;
        st = stream_new(s);
        if (!st) {
                nv_array_free(nv, n_headers);
                return -ENOMEM;
        }
        st->callbacks = *callbacks;
        st->userdata = userdata;
        st->callbacks_set = true;
        st->has_provider = !end_stream;
        provider = (nghttp2_data_provider) { .source.ptr = st, .read_callback = data_source_read };

        id = nghttp2_submit_request(s->ngh, NULL, nv, n_headers, end_stream ? NULL : &provider, st);
        nv_array_free(nv, n_headers);
        if (id < 0) {
                session_unlink_stream(s, st);
                stream_free(st);
                return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -EBUSY : -EPROTO;
        }
        st->id = id;
        session_schedule(s);
        if (ret)
                *ret = st;
        return 0;
}

void h2_stream_set_callbacks(H2Stream *st, const H2StreamCallbacks *callbacks, void *userdata) {
        assert(st);
        assert(callbacks);
        st->callbacks = *callbacks;
        st->userdata = userdata;
        st->callbacks_set = true;
}

bool h2_stream_is_peer_ended(const H2Stream *st) {
        assert(st);
        return st->peer_ended;
}

int h2_stream_respond(H2Stream *st, const H2Header *headers, size_t n_headers, bool has_body) {
        nghttp2_data_provider provider;
        nghttp2_nv *nv = NULL;
        int r;

        assert(st);
        assert(headers);

        if (!st->session->server)
                return -EOPNOTSUPP;
        r = nv_array_from_headers(headers, n_headers, &nv);
        if (r < 0)
                return r;
        st->has_provider = has_body;
        provider = (nghttp2_data_provider) { .source.ptr = st, .read_callback = data_source_read };
        r = nghttp2_submit_response(st->session->ngh, st->id, nv, n_headers, has_body ? &provider : NULL);
        nv_array_free(nv, n_headers);
        if (r != 0)
                return -EPROTO;
        session_schedule(st->session);
        return 0;
}

int h2_stream_set_trailers(H2Stream *st, const H2Header *headers, size_t n_headers) {
        nghttp2_nv *nv = NULL;
        int r;

        assert(st);
        assert(headers);

        r = nv_array_from_headers(headers, n_headers, &nv);
        if (r < 0)
                return r;
        if (!st->has_provider) {
                /* No body in flight: the trailers go out on their own with END_STREAM. */
                r = nghttp2_submit_trailer(st->session->ngh, st->id, nv, n_headers);
                nv_array_free(nv, n_headers);
                if (r != 0)
                        return -EPROTO;
                session_schedule(st->session);
                return 0;
        }
        nv_array_free(st->trailers, st->n_trailers);
        st->trailers = nv;
        st->n_trailers = n_headers;
        return h2_stream_resume(st);
}

int h2_stream_resume(H2Stream *st) {
        int r;

        assert(st);

        r = nghttp2_session_resume_data(st->session->ngh, st->id);
        if (r != 0 && r != NGHTTP2_ERR_INVALID_ARGUMENT)
                return -EPROTO;
        session_schedule(st->session);
        return 0;
}

int h2_stream_consume(H2Stream *st, size_t n) {
        assert(st);

        n = MIN(n, st->unconsumed);
        if (n == 0)
                return 0;
        st->unconsumed -= n;
        if (nghttp2_session_consume(st->session->ngh, st->id, n) != 0)
                return -EPROTO;
        session_schedule(st->session);
        return 0;
}

int h2_stream_reset(H2Stream *st, uint32_t error_code) {
        assert(st);

        if (nghttp2_submit_rst_stream(st->session->ngh, NGHTTP2_FLAG_NONE, st->id, error_code) != 0)
                return -EPROTO;
        session_schedule(st->session);
        return 0;
}

int32_t h2_stream_get_id(const H2Stream *st) {
        assert(st);
        return st->id;
}

H2Session *h2_stream_get_session(const H2Stream *st) {
        assert(st);
        return st->session;
}

void *h2_stream_get_userdata(const H2Stream *st) {
        assert(st);
        return st->userdata;
}

int32_t h2_stream_get_receive_window(const H2Stream *st) {
        assert(st);
        return nghttp2_session_get_stream_effective_local_window_size(st->session->ngh, st->id) -
               nghttp2_session_get_stream_effective_recv_data_length(st->session->ngh, st->id);
}
