/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-conf.h"
#include "agent-tls.h"
#include "connector-dataplane.h"
#include "hashmap.h"
#include "hexdecoct.h"
#include "event-util.h"
#include "log.h"
#include "net-connect.h"
#include "net-grpc.h"
#include "net-h2.h"
#include "net-listen.h"
#include "net-resolve.h"
#include "net-tls.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"

#define FLOW_ID_SIZE 16U

/* One tunneler (by SPIFFE ID) while it has sessions or streams: what the limits count. */
typedef struct ConnectorPeer {
        char *id;
        unsigned n_sessions;            /* established (HTTP/2) */
        unsigned n_streams;             /* holding a slot */
        usec_t last_heartbeat;          /* CLOCK_MONOTONIC, last one handed to on_heartbeat */
} ConnectorPeer;

typedef struct ConnectorSession ConnectorSession;
typedef struct ConnectorStream ConnectorStream;

/* One accepted connection: TLS handshake first, then an HTTP/2 session. */
struct ConnectorSession {
        ConnectorDataPlane *dataplane;
        TlsConnection *tls;             /* during the handshake */
        char *source;                   /* during the handshake: the peer's address, counted in handshakes */
        H2Session *h2;                  /* after it */
        ConnectorPeer *peer;            /* after it */
        bool counted;                   /* by the listener */
        ConnectorSession *prev, *next;
};

/* One granted CONNECT, from the decision to its end. */
struct ConnectorStream {
        ConnectorDataPlane *dataplane;
        ConnectorPeer *peer;
        H2Stream *stream;               /* until answered (connect_pipe_accept() or a refusal) */
        ConnectPipe *pipe;              /* while relaying */

        char *host;                     /* canonical, as decided */
        uint16_t port;
        char *target;                   /* the :authority as requested */
        char *resource;
        char flow_id[FLOW_ID_SIZE * 2 + 1];
        usec_t start_realtime, start_monotonic;

        ResolveQuery *query;
        struct sockaddr_storage *addresses;
        size_t n_addresses, next_address;
        int fd;                         /* the socket being connected */
        int connect_error;              /* of the last address tried */
        sd_event_source *connect_source, *timer;

        /* Why a recheck or close_peer() cut it, reported instead of the pipe's -ECANCELED. */
        int cut_error;
        int pending_error;              /* why we reset the stream before answering */
        /* The pipe may end inside connect_pipe_accept() (the target reset before the tunneler's early
         * END_STREAM could be passed on): its end is kept until that returns. */
        bool accepting, ended_early;
        int early_error;
        ConnectStats early_stats;
        ConnectorStream *prev, *next;
};

struct ConnectorDataPlane {
        sd_event *event;
        sd_event_source *trim_source;   /* gives memory back once a burst is over */
        TlsContext *tls;
        Listener *listener;
        Resolver *resolver;             /* NULL: no nameserver configured */
        GrpcServer *grpc;
        H2Settings h2_settings;

        ConnectorDataPlaneCallbacks callbacks;
        void *userdata;
        unsigned max_streams, max_streams_per_tunneler;
        usec_t idle_timeout, connect_timeout;

        ConnectorSession *sessions;
        ConnectorStream *streams;
        unsigned n_streams;             /* holding a slot */
        Hashmap *peers;                 /* SPIFFE ID → ConnectorPeer */
        Hashmap *refused;               /* SPIFFE ID → (void *) 1, after close_peer() */
        Hashmap *handshakes;            /* peer address → (void *) handshakes in progress */

        uint64_t streams_total, denials, bytes_in, bytes_out;
        unsigned n_established;
};

static const char *const flow_result_table[_CONNECTOR_FLOW_RESULT_MAX] = {
        [CONNECTOR_FLOW_GRANTED] = "granted",
        [CONNECTOR_FLOW_DENIED] = "denied",
        [CONNECTOR_FLOW_UNREACHABLE] = "unreachable",
        [CONNECTOR_FLOW_TIMEOUT] = "timeout",
        [CONNECTOR_FLOW_LIMITED] = "limited",
};

const char *connector_flow_result_to_string(ConnectorFlowResult r) {
        if (r < 0 || r >= _CONNECTOR_FLOW_RESULT_MAX)
                return NULL;
        return flow_result_table[r];
}

/* A stream nobody listens to any more: credit goes back, nothing is called. */
static const H2StreamCallbacks detached_callbacks = {};

/* ---- peers ------------------------------------------------------------------------------------------ */

static int peer_get(ConnectorDataPlane *d, const char *id, ConnectorPeer **ret) {
        ConnectorPeer *p;
        int r;

        p = hashmap_get(d->peers, id);
        if (p) {
                *ret = p;
                return 0;
        }
        p = calloc(1, sizeof(ConnectorPeer));
        if (!p)
                return -ENOMEM;
        p->id = strdup(id);
        if (!p->id) {
                free(p);
                return -ENOMEM;
        }
        r = hashmap_put(d->peers, id, p);
        if (r < 0) {
                free(p->id);
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

static void peer_release(ConnectorDataPlane *d, ConnectorPeer *p) {
        if (!p || p->n_sessions > 0 || p->n_streams > 0)
                return;
        (void) hashmap_remove(d->peers, p->id);
        free(p->id);
        free(p);
}

/* ---- flows ------------------------------------------------------------------------------------------ */

static void flow_id_new(char ret[static FLOW_ID_SIZE * 2 + 1]) {
        uint8_t b[FLOW_ID_SIZE];

        if (random_bytes(b, sizeof(b)) < 0) {
                /* Only without getrandom(2); an id need not be secret, just distinct. */
                uint64_t x = random_u64(), y = random_u64();

                memcpy(b, &x, sizeof(x));
                memcpy(b + sizeof(x), &y, sizeof(y));
        }
        for (size_t i = 0; i < FLOW_ID_SIZE; i++) {
                ret[2 * i] = hexchar(b[i] >> 4);
                ret[2 * i + 1] = hexchar(b[i]);
        }
        ret[FLOW_ID_SIZE * 2] = '\0';
}

static void flow_emit(ConnectorDataPlane *d, const ConnectorFlow *f) {
        if (d->callbacks.on_flow)
                d->callbacks.on_flow(f, d->userdata);
}

/* ---- streams ---------------------------------------------------------------------------------------- */

static void stream_refuse(H2Stream *st, unsigned status) {
        if (!st)
                return;
        /* connect_reject() detaches the stream from us; if it cannot answer, a reset does. */
        if (connect_reject(st, status) < 0) {
                h2_stream_set_callbacks(st, &detached_callbacks, NULL);
                (void) h2_stream_reset(st, H2_CANCEL);
        }
}

static ConnectorStream *stream_free(ConnectorStream *cs) {
        ConnectorDataPlane *d;

        if (!cs)
                return NULL;
        d = cs->dataplane;

        if (cs->prev)
                cs->prev->next = cs->next;
        else if (d->streams == cs)
                d->streams = cs->next;
        if (cs->next)
                cs->next->prev = cs->prev;
        assert(d->n_streams > 0);
        d->n_streams--;
        cs->peer->n_streams--;
        if (d->n_streams == 0)
                (void) event_schedule_malloc_trim(d->event, &d->trim_source, CONNECTOR_TRIM_DELAY);
        peer_release(d, cs->peer);

        if (cs->stream) {
                h2_stream_set_callbacks(cs->stream, &detached_callbacks, NULL);
                (void) h2_stream_reset(cs->stream, H2_CANCEL);
        }
        resolve_query_free(cs->query);
        sd_event_source_disable_unref(cs->connect_source);
        sd_event_source_disable_unref(cs->timer);
        safe_close(cs->fd);
        free(cs->addresses);
        free(cs->host);
        free(cs->target);
        free(cs->resource);
        return mfree(cs);
}

/* Reports the end of a granted flow and frees it. */
static void stream_finish(ConnectorStream *cs, ConnectorFlowResult result, unsigned http_status,
                          const ConnectStats *stats, int error) {
        ConnectorDataPlane *d = cs->dataplane;
        ConnectorFlow f = {
                .end = true,
                .flow_id = cs->flow_id,
                .tunneler = cs->peer->id,
                .resource = cs->resource,
                .target = cs->target,
                .result = result,
                .http_status = http_status,
                .start = cs->start_realtime,
                .duration = usec_sub(now(CLOCK_MONOTONIC), cs->start_monotonic),
                .error = error,
        };

        if (stats) {
                /* The pipe's "down" is what came from the tunneler, "up" what went back to it. */
                f.bytes_up = stats->bytes_down;
                f.bytes_down = stats->bytes_up;
                d->bytes_in += stats->bytes_down;
                d->bytes_out += stats->bytes_up;
        }
        log_debug("Flow %s (%s → %s) ended: %s, %u.", cs->flow_id, cs->peer->id, cs->target,
                  connector_flow_result_to_string(result), http_status);
        flow_emit(d, &f);
        stream_free(cs);
}

/* Not connected: answers with status (no stream left to answer: the tunneler gave up) and ends the flow. */
static void stream_fail(ConnectorStream *cs, ConnectorFlowResult result, unsigned status, int error) {
        stream_refuse(TAKE_PTR(cs->stream), status);
        stream_finish(cs, result, status, NULL, error);
}

static void pipe_on_close(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata) {
        ConnectorStream *cs = userdata;

        cs->pipe = NULL;
        if (cs->accepting) {
                cs->ended_early = true;
                cs->early_error = error;
                cs->early_stats = *stats;
                return;
        }
        if (cs->cut_error < 0)
                stream_finish(cs, CONNECTOR_FLOW_DENIED, 200, stats, cs->cut_error);
        else
                stream_finish(cs, CONNECTOR_FLOW_GRANTED, 200, stats, error);
}

static const ConnectPipeCallbacks pipe_callbacks = {
        .on_close = pipe_on_close,
};

static void stream_established(ConnectorStream *cs) {
        ConnectorDataPlane *d = cs->dataplane;
        H2Stream *st;
        int r;

        cs->connect_source = sd_event_source_disable_unref(cs->connect_source);
        cs->timer = sd_event_source_disable_unref(cs->timer);
        cs->addresses = mfree(cs->addresses);
        cs->n_addresses = cs->next_address = 0;

        st = cs->stream;
        cs->accepting = true;
        r = connect_pipe_accept(st, TAKE_FD(cs->fd), &pipe_callbacks, cs, &cs->pipe);
        cs->accepting = false;
        if (r < 0) {
                /* The stream is still ours (and still has our callbacks). */
                log_debug_errno(r, "Flow %s: cannot relay: %m", cs->flow_id);
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, r);
                return;
        }
        cs->stream = NULL; /* the pipe's now */
        if (cs->ended_early) {
                cs->pipe = NULL; /* already freed */
                stream_finish(cs, CONNECTOR_FLOW_GRANTED, 200, &cs->early_stats, cs->early_error);
                return;
        }
        log_debug("Flow %s: relaying to %s.", cs->flow_id, cs->target);

        if (d->idle_timeout > 0 && d->idle_timeout != USEC_INFINITY) {
                r = connect_pipe_set_idle_timeout(cs->pipe, d->idle_timeout);
                if (r < 0) {
                        /* Unbounded is not an option: end it (on_close frees cs). */
                        log_debug_errno(r, "Flow %s: cannot arm the idle timeout: %m", cs->flow_id);
                        connect_pipe_abort(cs->pipe);
                }
        }
}

static int on_connect_io(sd_event_source *source, int fd, uint32_t revents, void *userdata);

/* Tries the addresses left. 1: connected, 0: in progress (on_connect_io follows), < 0: none worked. */
static int stream_connect_next(ConnectorStream *cs) {
        ConnectorDataPlane *d = cs->dataplane;
        int r;

        cs->connect_source = sd_event_source_disable_unref(cs->connect_source);
        cs->fd = safe_close(cs->fd);

        while (cs->next_address < cs->n_addresses) {
                const struct sockaddr_storage *sa = &cs->addresses[cs->next_address++];
                socklen_t len = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                          : sizeof(struct sockaddr_in);
                _cleanup_close_ int fd = -EBADF;

                fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0) {
                        cs->connect_error = -errno;
                        continue;
                }
                if (connect(fd, (const struct sockaddr *) sa, len) >= 0) {
                        cs->fd = TAKE_FD(fd);
                        return 1;
                }
                if (errno != EINPROGRESS) {
                        cs->connect_error = -errno;
                        log_debug_errno(cs->connect_error, "Flow %s: connect: %m", cs->flow_id);
                        continue;
                }
                r = sd_event_add_io(d->event, &cs->connect_source, fd, EPOLLOUT, on_connect_io, cs);
                if (r < 0) {
                        cs->connect_error = r;
                        continue;
                }
                (void) sd_event_source_set_description(cs->connect_source, "connector-connect");
                cs->fd = TAKE_FD(fd);
                return 0;
        }
        return cs->connect_error < 0 ? cs->connect_error : -EHOSTUNREACH;
}

static void stream_connect(ConnectorStream *cs) {
        int r;

        r = stream_connect_next(cs);
        if (r < 0) {
                log_debug_errno(r, "Flow %s: cannot reach %s: %m", cs->flow_id, cs->target);
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, r);
        } else if (r > 0)
                stream_established(cs);
}

static int on_connect_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        ConnectorStream *cs = userdata;
        socklen_t l = sizeof(int);
        int error = 0;

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &l) < 0)
                error = errno;
        if (error == 0 && !(revents & (EPOLLERR | EPOLLHUP))) {
                stream_established(cs);
                return 0;
        }
        cs->connect_error = -(error ?: ECONNREFUSED);
        log_debug_errno(cs->connect_error, "Flow %s: connect: %m", cs->flow_id);
        stream_connect(cs);
        return 0;
}

static int on_connect_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        ConnectorStream *cs = userdata;

        log_debug("Flow %s: %s did not answer in time.", cs->flow_id, cs->target);
        stream_fail(cs, CONNECTOR_FLOW_TIMEOUT, 504, -ETIMEDOUT);
        return 0;
}

static void on_resolved(ResolveQuery *q, int error, const struct sockaddr_storage *addresses, size_t n,
                        void *userdata) {
        ConnectorStream *cs = userdata;

        cs->query = resolve_query_free(cs->query);
        if (error >= 0 && (n == 0 || !addresses))
                error = -ENOENT;
        if (error < 0) {
                log_debug_errno(error, "Flow %s: cannot resolve '%s': %m", cs->flow_id, cs->host);
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, error);
                return;
        }
        n = MIN(n, (size_t) RESOLVE_ADDRESSES_MAX);
        cs->addresses = malloc(n * sizeof(struct sockaddr_storage));
        if (!cs->addresses) {
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, -ENOMEM);
                return;
        }
        memcpy(cs->addresses, addresses, n * sizeof(struct sockaddr_storage));
        cs->n_addresses = n;
        cs->next_address = 0;
        stream_connect(cs);
}

/* An address literal goes straight to connect(), so literals work whatever the resolver can do. */
static int address_from_literal(const char *host, int family, uint16_t port, struct sockaddr_storage *ret) {
        struct sockaddr_storage sa = { .ss_family = family };

        if (family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) &sa;

                if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
                        return -EINVAL;
                in->sin_port = htons(port);
        } else if (family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;

                if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
                        return -EINVAL;
                in6->sin6_port = htons(port);
        } else
                return -EAFNOSUPPORT;
        *ret = sa;
        return 0;
}

/* While the target is dialed the stream is ours: we must hear if the tunneler gives up. */
static int pending_on_data(H2Stream *st, const uint8_t *data, size_t size, void *userdata) {
        ConnectorStream *cs = userdata;

        /* Bytes before our 200 (RFC 9113 §8.5) would have nowhere to go: the stream is reset. */
        cs->pending_error = -EPROTO;
        return -EPROTO;
}

static void pending_on_close(H2Stream *st, uint32_t error_code, void *userdata) {
        ConnectorStream *cs = userdata;

        cs->stream = NULL;
        log_debug("Flow %s: the tunneler closed the stream before the answer (HTTP/2 error %" PRIu32 ").",
                  cs->flow_id, error_code);
        stream_finish(cs, CONNECTOR_FLOW_GRANTED, 0, NULL,
                      cs->pending_error < 0 ? cs->pending_error : -ECONNRESET);
}

static const H2StreamCallbacks pending_callbacks = {
        .on_data = pending_on_data,
        .on_close = pending_on_close,
};

/* ---- requests --------------------------------------------------------------------------------------- */

static int dataplane_decide(ConnectorDataPlane *d, const char *tunneler, const char *host, uint16_t port,
                            char **ret_resource) {
        const char *resource = NULL;
        int r;

        r = d->callbacks.decide(tunneler, host, port, &resource, d->userdata);
        if (ret_resource) {
                *ret_resource = NULL;
                if (resource) {
                        *ret_resource = strdup(resource);
                        if (!*ret_resource)
                                return -ENOMEM;
                }
        }
        return r;
}

static int session_on_connect(ConnectorSession *s, H2Stream *st, const char *authority) {
        ConnectorDataPlane *d = s->dataplane;
        _cleanup_free_ char *resource = NULL;
        char flow_id[FLOW_ID_SIZE * 2 + 1];
        ConnectorStream *cs;
        ConnectorFlow f;
        HostPort hp;
        int r;

        r = connect_authority_parse(authority, &hp);
        if (r < 0) {
                stream_refuse(st, 400);
                return 0;
        }

        flow_id_new(flow_id);
        f = (ConnectorFlow) {
                .flow_id = flow_id,
                .tunneler = s->peer->id,
                .target = authority,
                .start = now(CLOCK_REALTIME),
        };

        r = dataplane_decide(d, s->peer->id, hp.host, hp.port, &resource);
        if (r == -ENOMEM)
                return r; /* refused by HTTP/2: the tunneler may try again */
        f.resource = resource;
        if (r <= 0) {
                log_debug("Flow %s: '%s' → %s denied.", flow_id, s->peer->id, authority);
                d->denials++;
                stream_refuse(st, 403);
                f.result = CONNECTOR_FLOW_DENIED;
                f.http_status = 403;
                flow_emit(d, &f);
                return 0;
        }
        if (d->n_streams >= d->max_streams || s->peer->n_streams >= d->max_streams_per_tunneler) {
                log_debug("Flow %s: '%s' → %s over the stream limit.", flow_id, s->peer->id, authority);
                stream_refuse(st, 429);
                f.result = CONNECTOR_FLOW_LIMITED;
                f.http_status = 429;
                flow_emit(d, &f);
                return 0;
        }

        cs = calloc(1, sizeof(ConnectorStream));
        if (!cs)
                return -ENOMEM;
        *cs = (ConnectorStream) {
                .dataplane = d,
                .peer = s->peer,
                .port = hp.port,
                .fd = -EBADF,
                .start_realtime = f.start,
                .resource = TAKE_PTR(resource),
                .next = d->streams,
        };
        memcpy(cs->flow_id, flow_id, sizeof(flow_id));
        /* The loop's time, as the connect timer counts from it: a timed-out flow lasted the timeout. */
        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &cs->start_monotonic);
        if (d->streams)
                d->streams->prev = cs;
        d->streams = cs;
        d->n_streams++;
        s->peer->n_streams++;

        cs->host = strdup(hp.host);
        cs->target = strdup(authority);
        if (!cs->host || !cs->target) {
                stream_free(cs);
                return -ENOMEM;
        }
        r = sd_event_add_time_relative(d->event, &cs->timer, CLOCK_MONOTONIC, d->connect_timeout,
                                       USEC_PER_MSEC, on_connect_timeout, cs);
        if (r < 0) {
                stream_free(cs);
                return r;
        }
        (void) sd_event_source_set_description(cs->timer, "connector-connect-timeout");

        /* From here on the flow is granted and reported: it ends through stream_finish(). */
        d->streams_total++;
        cs->stream = st;
        h2_stream_set_callbacks(st, &pending_callbacks, cs);
        f.flow_id = cs->flow_id;
        f.result = CONNECTOR_FLOW_GRANTED;
        f.resource = cs->resource;
        log_debug("Flow %s: '%s' → %s granted by '%s'.", cs->flow_id, s->peer->id, authority,
                  strna(cs->resource));
        flow_emit(d, &f);

        if (hp.family != AF_UNSPEC) {
                cs->addresses = calloc(1, sizeof(struct sockaddr_storage));
                if (!cs->addresses) {
                        stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, -ENOMEM);
                        return 0;
                }
                r = address_from_literal(hp.host, hp.family, hp.port, &cs->addresses[0]);
                if (r < 0) {
                        stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, r);
                        return 0;
                }
                cs->n_addresses = 1;
                stream_connect(cs);
                return 0;
        }

        if (!d->resolver) {
                log_debug("Flow %s: no nameserver to resolve '%s'.", cs->flow_id, cs->host);
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, -ENOENT);
                return 0;
        }
        r = resolver_resolve(d->resolver, cs->host, cs->port, on_resolved, cs, &cs->query);
        if (r < 0) {
                log_debug_errno(r, "Flow %s: cannot resolve '%s': %m", cs->flow_id, cs->host);
                stream_fail(cs, CONNECTOR_FLOW_UNREACHABLE, 502, r);
        }
        return 0;
}

static int session_on_request(H2Session *h2, H2Stream *st, const H2Headers *h, void *userdata) {
        ConnectorSession *s = userdata;
        const char *authority = NULL;
        int r;

        r = connect_request_parse(h, &authority);
        if (r == -EOPNOTSUPP)
                /* Not CONNECT: TunnelSession, or refused (RST_STREAM REFUSED_STREAM) when not gRPC either. */
                return grpc_server_handle(s->dataplane->grpc, st, h);
        if (r < 0) {
                stream_refuse(st, 400);
                return 0;
        }
        return session_on_connect(s, st, authority);
}

/* ---- sessions --------------------------------------------------------------------------------------- */

/* Anyone can connect and hold a slot until the handshake times out: a few per address at a time. */
static int source_hold(ConnectorDataPlane *d, const struct sockaddr_storage *sa, char **ret) {
        char buf[INET6_ADDRSTRLEN];
        const void *a;
        uintptr_t n;
        char *source;
        int r;

        if (sa->ss_family == AF_INET)
                a = &((const struct sockaddr_in *) sa)->sin_addr;
        else if (sa->ss_family == AF_INET6)
                a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
        else
                return -EAFNOSUPPORT;
        if (!inet_ntop(sa->ss_family, a, buf, sizeof(buf)))
                return -errno;

        n = (uintptr_t) hashmap_get(d->handshakes, buf);
        if (n >= CONNECTOR_HANDSHAKES_PER_SOURCE)
                return -EBUSY;
        source = strdup(buf);
        if (!source)
                return -ENOMEM;
        r = hashmap_replace(d->handshakes, buf, (void *) (n + 1), NULL);
        if (r < 0) {
                free(source);
                return r;
        }
        *ret = source;
        return 0;
}

static void source_release(ConnectorDataPlane *d, char **source) {
        uintptr_t n;

        if (!*source)
                return;
        n = (uintptr_t) hashmap_get(d->handshakes, *source);
        if (n <= 1)
                (void) hashmap_remove(d->handshakes, *source);
        else
                (void) hashmap_replace(d->handshakes, *source, (void *) (n - 1), NULL);
        *source = mfree(*source);
}

static ConnectorSession *session_free(ConnectorSession *s) {
        ConnectorDataPlane *d;

        if (!s)
                return NULL;
        d = s->dataplane;

        if (s->prev)
                s->prev->next = s->next;
        else if (d->sessions == s)
                d->sessions = s->next;
        if (s->next)
                s->next->prev = s->prev;
        if (s->counted && d->listener)
                listener_connection_closed(d->listener);
        source_release(d, &s->source);
        if (s->peer) {
                assert(s->peer->n_sessions > 0);
                s->peer->n_sessions--;
                assert(d->n_established > 0);
                d->n_established--;
                peer_release(d, s->peer);
        }
        tls_connection_free(s->tls);
        h2_session_unref(s->h2);
        return mfree(s);
}

static void session_on_close(H2Session *h2, int error, void *userdata) {
        ConnectorSession *s = userdata;

        log_debug_errno(error, "Session with '%s' closed: %m", s->peer->id);
        session_free(s);
}

static const H2SessionCallbacks session_callbacks = {
        .on_request = session_on_request,
        .on_close = session_on_close,
};

static void session_on_handshake(TlsConnection *tls, int error, void *userdata) {
        ConnectorSession *s = userdata;
        ConnectorDataPlane *d = s->dataplane;
        const SpiffeId *peer;
        ConnectorPeer *p;
        int r;

        source_release(d, &s->source);
        if (error < 0) {
                log_debug_errno(error, "TLS handshake with %s failed: %s",
                                tls_connection_get_peer_address(tls),
                                strna(tls_connection_get_error_reason(tls)));
                session_free(s);
                return;
        }
        peer = tls_connection_get_peer_id(tls);
        if (!peer || peer->role != SPIFFE_ROLE_TUNNELER) {
                /* The TLS policy requires a tunneler already; this is the belt to its braces. */
                session_free(s);
                return;
        }
        if (hashmap_get(d->refused, peer->uri)) {
                log_debug("Refusing a session of '%s': it was revoked.", peer->uri);
                session_free(s);
                return;
        }
        r = peer_get(d, peer->uri, &p);
        if (r < 0) {
                session_free(s);
                return;
        }
        if (p->n_sessions >= CONNECTOR_SESSIONS_PER_TUNNELER) {
                log_debug("Refusing a session of '%s': it has %u already.", peer->uri, p->n_sessions);
                peer_release(d, p);
                session_free(s);
                return;
        }

        r = h2_session_new(TAKE_PTR(s->tls), &d->h2_settings, &session_callbacks, s, &s->h2);
        if (r < 0) {
                log_debug_errno(r, "Failed to start an HTTP/2 session with '%s': %m", peer->uri);
                peer_release(d, p);
                session_free(s);
                return;
        }
        s->peer = p;
        p->n_sessions++;
        d->n_established++;
        log_debug("Session with '%s' established.", p->id);
}

static const TlsConnectionCallbacks tls_callbacks = {
        .on_handshake = session_on_handshake,
};

static int on_accept(Listener *l, int fd, const struct sockaddr_storage *peer, void *userdata) {
        ConnectorDataPlane *d = userdata;
        ConnectorSession *s;
        int r;

        s = calloc(1, sizeof(ConnectorSession));
        if (!s) {
                safe_close(fd);
                return -ENOMEM;
        }
        *s = (ConnectorSession) { .dataplane = d, .next = d->sessions };
        if (d->sessions)
                d->sessions->prev = s;
        d->sessions = s;

        r = source_hold(d, peer, &s->source);
        if (r < 0) {
                log_debug_errno(r, "Dropping a connection: too many handshakes from its address: %m");
                safe_close(fd);
                session_free(s);
                return r;
        }
        r = tls_connection_new(d->tls, d->event, fd, &tls_callbacks, s, &s->tls);
        if (r < 0) {
                /* Dropped: it does not count towards the cap (listener contract). */
                session_free(s);
                return r;
        }
        s->counted = true;
        return 0;
}

static void on_listener_error(Listener *l, int error, void *userdata) {
        if (listener_get_state(l) == LISTENER_THROTTLED)
                log_warning_errno(error, "Cannot accept tunnelers on %s for now, retrying: %m",
                                  listener_get_address(l));
        else
                log_error_errno(error, "Listener on %s failed, no longer accepting tunnelers there: %m",
                                listener_get_address(l));
}

static const ListenerCallbacks listener_callbacks = {
        .on_accept = on_accept,
        .on_error = on_listener_error,
};

/* ---- TunnelSession.Heartbeats ----------------------------------------------------------------------- */

static int heartbeat_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        ConnectorDataPlane *d = userdata;
        Ztna__V1__TunnelerHeartbeat *hb = (Ztna__V1__TunnelerHeartbeat *) msg;
        Ztna__V1__HeartbeatAck ack = ZTNA__V1__HEARTBEAT_ACK__INIT;
        H2Session *h2 = grpc_call_get_session(call);
        ConnectorSession *s = h2 ? h2_session_get_userdata(h2) : NULL;
        usec_t t = now(CLOCK_MONOTONIC);
        int r;

        ack.received_unix_ms = now(CLOCK_REALTIME) / USEC_PER_MSEC;
        r = grpc_call_send(call, &ack.base);
        if (r >= 0 && s && s->peer && d->callbacks.on_heartbeat &&
            (s->peer->last_heartbeat == 0 ||
             usec_sub(t, s->peer->last_heartbeat) >= CONNECTOR_HEARTBEAT_FORWARD_INTERVAL)) {
                s->peer->last_heartbeat = t;
                d->callbacks.on_heartbeat(s->peer->id, hb, d->userdata);
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        return r;
}

static void heartbeat_on_half_close(GrpcCall *call, void *userdata) {
        (void) grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static const GrpcMethod tunnel_session_methods[] = {
        {
                .path = CONNECTOR_HEARTBEATS_PATH,
                .input = &ztna__v1__tunneler_heartbeat__descriptor,
                .flags = GRPC_METHOD_CLIENT_STREAMING,
                .max_message_size = CONNECTOR_HEARTBEAT_MESSAGE_MAX,
                .on_message = heartbeat_on_message,
                .on_half_close = heartbeat_on_half_close,
        },
};

/* ---- the object ------------------------------------------------------------------------------------- */

/* "IP:port" with port 0 allowed (parse_host_port() refuses it). */
static int parse_listen(const char *s, HostPort *ret) {
        _cleanup_free_ char *prefix = NULL;
        const char *e;
        HostPort hp;
        int r;

        if (isempty(s))
                return -EINVAL;
        e = endswith(s, ":0");
        if (e && e > s) {
                prefix = strndup(s, (size_t) (e - s));
                if (!prefix)
                        return -ENOMEM;
                r = parse_host_port(prefix, 1, &hp);
                if (r >= 0)
                        hp.port = 0;
        } else
                r = parse_host_port(s, 0, &hp);
        if (r < 0)
                return -EINVAL;
        if (hp.family != AF_INET && hp.family != AF_INET6)
                return -EINVAL;
        *ret = hp;
        return 0;
}

static int settings_check(const ConnectorDataPlaneSettings *s) {
        if (s->max_streams < 1 || s->max_streams > AGENT_STREAMS_MAX)
                return -EINVAL;
        if (s->max_streams_per_tunneler < 1 || s->max_streams_per_tunneler > s->max_streams)
                return -EINVAL;
        if (s->connect_timeout == 0 || s->connect_timeout > AGENT_CONNECT_TIMEOUT_MAX)
                return -EINVAL;
        if (strv_length(s->resolvers) > RESOLVE_SERVERS_MAX)
                return -EINVAL;
        return 0;
}

int connector_dataplane_new(sd_event *event, const AgentIdentity *identity,
                            const ConnectorDataPlaneSettings *settings,
                            const ConnectorDataPlaneCallbacks *callbacks, void *userdata,
                            ConnectorDataPlane **ret) {
        _cleanup_(connector_dataplane_freep) ConnectorDataPlane *d = NULL;
        _cleanup_close_ int fd = -EBADF;
        HostPort listen;
        int r;

        assert(event);
        assert(identity);
        assert(settings);
        assert(callbacks);
        assert(ret);

        if (!callbacks->decide)
                return -EINVAL;
        r = settings_check(settings);
        if (r < 0)
                return r;
        r = parse_listen(settings->listen, &listen);
        if (r < 0)
                return r;

        d = calloc(1, sizeof(ConnectorDataPlane));
        if (!d)
                return -ENOMEM;
        *d = (ConnectorDataPlane) {
                .event = sd_event_ref(event),
                .callbacks = *callbacks,
                .userdata = userdata,
                .max_streams = settings->max_streams,
                .max_streams_per_tunneler = settings->max_streams_per_tunneler,
                .idle_timeout = settings->idle_timeout,
                .connect_timeout = settings->connect_timeout,
        };

        h2_settings_init(&d->h2_settings);
        d->h2_settings.max_concurrent_streams =
                settings->max_streams_per_tunneler + CONNECTOR_H2_STREAMS_SLACK;
        d->h2_settings.stream_window = CONNECTOR_STREAM_WINDOW;
        d->h2_settings.connection_window = CONNECTOR_CONNECTION_WINDOW;

        r = hashmap_new(&d->peers);
        if (r < 0)
                return r;
        r = hashmap_new(&d->refused);
        if (r < 0)
                return r;
        r = hashmap_new(&d->handshakes);
        if (r < 0)
                return r;

        r = agent_tls_context_new(identity, TLS_MODE_SERVER, SPIFFE_ROLE_TUNNELER,
                                  TLS_HANDSHAKE_TIMEOUT_DEFAULT, &d->tls);
        if (r < 0)
                return r;

        r = grpc_server_new(tunnel_session_methods, ELEMENTSOF(tunnel_session_methods),
                            CONNECTOR_HEARTBEAT_MESSAGE_MAX, d, &d->grpc);
        if (r < 0)
                return r;

        r = resolver_new(event, settings->resolvers, settings->resolv_conf, &d->resolver);
        if (r == -ENOENT)
                log_debug("No nameserver configured: only address literals can be reached.");
        else if (r < 0)
                return r;

        r = listen_bind(&listen, LISTEN_BACKLOG_DEFAULT, &fd);
        if (r < 0)
                return r;
        r = listener_new(event, TAKE_FD(fd), &listener_callbacks, d, &d->listener);
        if (r < 0)
                return r;
        r = listener_set_max_connections(d->listener, CONNECTOR_SESSIONS_MAX);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

/* Ends a stream now, whatever it is doing; the flow's end says error. */
static void stream_cut(ConnectorStream *cs, unsigned status, int error) {
        if (cs->pipe) {
                cs->cut_error = error;
                connect_pipe_abort(cs->pipe); /* on_close frees cs */
        } else
                stream_fail(cs, CONNECTOR_FLOW_DENIED, status, error);
}

ConnectorDataPlane *connector_dataplane_free(ConnectorDataPlane *d) {
        if (!d)
                return NULL;

        d->listener = listener_free(d->listener);

        while (d->streams) {
                ConnectorStream *cs = d->streams;

                if (cs->pipe) {
                        cs->cut_error = -ESHUTDOWN;
                        connect_pipe_abort(cs->pipe);
                        continue;
                }
                /* Not answered yet: REFUSED_STREAM tells the tunneler it may try another connector. */
                if (cs->stream) {
                        h2_stream_set_callbacks(cs->stream, &detached_callbacks, NULL);
                        (void) h2_stream_reset(TAKE_PTR(cs->stream), H2_REFUSED_STREAM);
                }
                stream_finish(cs, CONNECTOR_FLOW_GRANTED, 0, NULL, -ESHUTDOWN);
        }

        while (d->sessions) {
                ConnectorSession *s = d->sessions;

                /* on_close frees s, right away since we are not inside the session. */
                if (s->h2)
                        h2_session_terminate(s->h2, H2_NO_ERROR);
                if (d->sessions == s)
                        session_free(s);
        }

        /* After the streams: the last one to go schedules a trim. */
        d->trim_source = sd_event_source_disable_unref(d->trim_source);
        /* After the sessions: their calls are gone with them. */
        d->grpc = grpc_server_free(d->grpc);
        d->resolver = resolver_free(d->resolver);
        d->tls = tls_context_unref(d->tls);
        assert(!d->peers || hashmap_isempty(d->peers));
        hashmap_free(d->peers);
        hashmap_free(d->refused);
        assert(!d->handshakes || hashmap_isempty(d->handshakes));
        hashmap_free(d->handshakes);
        sd_event_unref(d->event);
        return mfree(d);
}

int connector_dataplane_set_identity(ConnectorDataPlane *d, const AgentIdentity *identity) {
        TlsContext *tls = NULL;
        int r;

        assert(d);
        assert(identity);

        r = agent_tls_context_new(identity, TLS_MODE_SERVER, SPIFFE_ROLE_TUNNELER,
                                  TLS_HANDSHAKE_TIMEOUT_DEFAULT, &tls);
        if (r < 0)
                return r;
        tls_context_unref(d->tls);
        d->tls = tls;
        return 0;
}

unsigned connector_dataplane_recheck(ConnectorDataPlane *d) {
        ConnectorStream *cs, *next;
        unsigned n = 0;
        const char *k;
        void *v;

        assert(d);

        /* The policy now speaks for revoked tunnelers too. */
        HASHMAP_FOREACH_KEY(v, k, d->refused)
                (void) hashmap_remove(d->refused, k);

        for (cs = d->streams; cs; cs = next) {
                int r;

                next = cs->next;
                r = dataplane_decide(d, cs->peer->id, cs->host, cs->port, NULL);
                if (r > 0)
                        continue;
                log_debug("Flow %s: '%s' → %s no longer allowed.", cs->flow_id, cs->peer->id, cs->target);
                stream_cut(cs, 403, -EACCES);
                n++;
        }
        return n;
}

unsigned connector_dataplane_close_peer(ConnectorDataPlane *d, const char *tunneler) {
        ConnectorStream *cs, *next_stream;
        ConnectorSession *s, *next_session;
        unsigned n = 0;
        int r;

        assert(d);

        if (isempty(tunneler))
                return 0;

        if (hashmap_size(d->refused) < CONNECTOR_REFUSED_PEERS_MAX) {
                r = hashmap_put(d->refused, tunneler, (void *) 1);
                if (r < 0 && r != -EEXIST)
                        log_debug_errno(r, "Cannot remember '%s' as revoked, the policy alone refuses it: %m",
                                        tunneler);
        }

        for (cs = d->streams; cs; cs = next_stream) {
                next_stream = cs->next;
                if (!streq(cs->peer->id, tunneler))
                        continue;
                stream_cut(cs, 403, -EKEYREVOKED);
                n++;
        }
        for (s = d->sessions; s; s = next_session) {
                next_session = s->next;
                if (!s->peer || !streq(s->peer->id, tunneler))
                        continue;
                /* on_close frees s; the next one is untouched. */
                h2_session_terminate(s->h2, H2_NO_ERROR);
        }
        return n;
}

void connector_dataplane_get_counters(const ConnectorDataPlane *d, AgentControlCounters *ret) {
        AgentControlCounters c;

        assert(d);
        assert(ret);

        c = (AgentControlCounters) {
                .streams_active = d->n_streams,
                .streams_total = d->streams_total,
                .bytes_in = d->bytes_in,
                .bytes_out = d->bytes_out,
                .denials = d->denials,
                .peers = d->n_established,
        };
        for (const ConnectorStream *cs = d->streams; cs; cs = cs->next) {
                ConnectStats st;

                if (!cs->pipe)
                        continue;
                connect_pipe_get_stats(cs->pipe, &st);
                c.bytes_in += st.bytes_down;
                c.bytes_out += st.bytes_up;
        }
        *ret = c;
}

unsigned connector_dataplane_get_port(const ConnectorDataPlane *d) {
        char buf[LISTEN_ADDRESS_STRING_MAX];
        HostPort hp;

        assert(d);

        if (!d->listener || listen_get_local(listener_get_fd(d->listener), buf, sizeof(buf)) < 0)
                return 0;
        if (parse_listen(buf, &hp) < 0)
                return 0;
        return hp.port;
}

bool connector_dataplane_is_listening(const ConnectorDataPlane *d) {
        return d && d->listener && listener_get_state(d->listener) != LISTENER_FAILED;
}

bool connector_dataplane_can_resolve(const ConnectorDataPlane *d) {
        return d && d->resolver;
}
