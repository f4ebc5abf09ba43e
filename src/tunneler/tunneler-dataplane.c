/* SPDX-License-Identifier: Apache-2.0 */

/* The tunneler's data plane. Three kinds of objects:
 *
 *   TunnelerConnector  what we know of one connector (by SPIFFE ID): when its penalty ends and its current
 *                      session. Made when a request first picks it, forgotten after a policy change that
 *                      no longer lists it once it has no session.
 *   TunnelerSession    one attempt to reach a connector (resolve, TCP + TLS) and, once up, its HTTP/2
 *                      session with the heartbeat call. It owns its transport and is the userdata of every
 *                      transport callback; once ended (failed, lost, idle, or the data plane freed) it only
 *                      waits for the last transport callback and its last pipe, then frees itself, so a
 *                      session can end from anywhere — inside one of its own HTTP/2 callbacks included.
 *   TunnelerRequest    one local connection: queued (waiting for a session, or in the retry list), then
 *                      with a pipe (CONNECT sent), then relaying or refused.
 *
 * A request keeps the caller's fd until relaying starts and gives the pipe a duplicate: the pipe takes its
 * fd in every case, and a CONNECT that fails before its answer (the session went away) must leave us a
 * socket to try the next connector with, or to reply on. Failures are never reported from inside a
 * transport callback: the request goes to the retry list, which a defer source works through from the
 * loop once the failed session has been dealt with (its connector penalised). */

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-conf.h"
#include "agent-tls.h"
#include "agent-util.h"
#include "crypto-spiffe.h"
#include "hashmap.h"
#include "event-util.h"
#include "log.h"
#include "net-connect.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "net-h2.h"
#include "net-resolve.h"
#include "net-tls.h"
#include "parse-util.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"
#include "tunneler-dataplane.h"
#include "ztna.pb-c.h"

#define METHOD_HEARTBEATS "/ztna.v1.TunnelSession/Heartbeats"

typedef struct TunnelerConnector TunnelerConnector;
typedef struct TunnelerSession TunnelerSession;
typedef struct TunnelerRequest TunnelerRequest;

/* A FIFO of requests: a session's waiting list, or the data plane's retry list. */
typedef struct RequestQueue {
        TunnelerRequest *first, *last;
        size_t n;
} RequestQueue;

struct TunnelerConnector {
        char *spiffe_id;                /* the key in connectors */
        char *network;                  /* as last picked */
        char *address;                  /* host:port, as last picked */
        usec_t penalised_until;         /* CLOCK_MONOTONIC, 0: never */
        TunnelerSession *session;       /* resolving, connecting or up; NULL: none */
};

typedef enum SessionState {
        SESSION_RESOLVING,
        SESSION_CONNECTING,             /* TCP + TLS */
        SESSION_UP,
        SESSION_ENDED,                  /* waiting for the transport's last callback and its last pipe */
} SessionState;

struct TunnelerSession {
        TunnelerDataPlane *dp;          /* NULL once the data plane is freed */
        TunnelerConnector *connector;   /* NULL once ended */
        SessionState state;
        char *spiffe_id;                /* whom the peer must be */
        char *address;                  /* host:port as the policy gave it */
        struct sockaddr_storage addresses[RESOLVE_ADDRESSES_MAX];
        size_t n_addresses, next_address;

        ResolveQuery *query;            /* resolving */
        TlsConnection *tls;             /* connecting */
        H2Session *h2;                  /* our reference, dropped in on_close */
        GrpcClientCall *heartbeat;      /* until on_finish */
        bool heartbeat_unsupported;     /* the connector answered UNIMPLEMENTED: not asked again */
        sd_event_source *heartbeat_timer, *idle_timer;

        RequestQueue waiting;           /* requests for this session while it comes up */
        size_t n_pipes;                 /* requests whose pipe runs on h2 */
        bool retired;                   /* the connector left the policy: close as soon as idle */
        bool ending;                    /* inside session_end(): not freed under its feet */
        TunnelerSession *prev, *next;   /* dp->sessions */
};

typedef enum RequestState {
        REQUEST_QUEUED,                 /* waiting for a session, or in the retry list */
        REQUEST_CONNECTING,             /* CONNECT sent, no answer yet */
        REQUEST_RELAYING,               /* 2xx: the pipe relays */
        REQUEST_REFUSED,                /* answered otherwise, reported: the pipe closes */
} RequestState;

struct TunnelerRequest {
        TunnelerDataPlane *dp;
        RequestState state;
        char authority[HOST_PORT_STRING_MAX];
        char *network;
        int fd;                         /* the caller's socket, ours until relaying starts */
        TunnelerResultCallback on_result;
        void *userdata;

        char **tried;                   /* connectors that failed it: not picked again */
        bool busy;                      /* a session refused it for its stream limit */
        bool linger_dirty;              /* a failed pipe left SO_LINGER 0 on the socket */
        unsigned final_status;          /* in the retry list: report this rather than retry (0: retry) */
        TunnelerSession *session;       /* queued on, or whose h2 carries the pipe */
        ConnectPipe *pipe;

        RequestQueue *queue;
        TunnelerRequest *queue_prev, *queue_next;
        TunnelerRequest *prev, *next;   /* dp->requests */
};

struct TunnelerDataPlane {
        sd_event *event;
        sd_event_source *trim_source;   /* gives memory back once a burst is over */
        const AgentPolicy *policy;
        TlsContext *tls_context;        /* client, towards connectors */
        char *tls_peer;                 /* the one SPIFFE ID its peer policy accepts now, NULL: any connector */
        Resolver *resolver;             /* made for the first connector address that is a name */

        usec_t connect_timeout, idle_timeout, heartbeat_interval, session_idle;
        char *version, *private_ip;
        char **resolvers;
        char *resolv_conf;

        Hashmap *connectors;            /* SPIFFE ID → TunnelerConnector */
        TunnelerSession *sessions;      /* every session not freed yet */
        TunnelerRequest *requests;      /* every request */
        RequestQueue retry;
        size_t n_pending;               /* requests in any RequestQueue */
        sd_event_source *retry_source;
        AgentPolicyConnector *scratch;  /* AGENT_POLICY_CONNECTORS_MAX entries for policy lookups */
        bool freeing;

        /* Counters; bytes of streams still relaying are added when asked. */
        uint64_t streams_total, bytes_in, bytes_out, denials;
        uint64_t streams_active;
};

static void request_retry(TunnelerRequest *req, unsigned final_status);
static int request_dispatch(TunnelerRequest *req);
static int session_start(TunnelerDataPlane *dp, TunnelerConnector *c, TunnelerSession **ret);
static void session_end(TunnelerSession *s, int error);
static void session_update_idle(TunnelerSession *s);
static void session_maybe_free(TunnelerSession *s);

/* ---- small helpers ------------------------------------------------------------------------------------ */

static int timer_arm(sd_event_source *s, usec_t delay) {
        int r;

        r = sd_event_source_set_time_relative(s, delay);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r;
}

static int timer_new(sd_event *e, sd_event_source **ret, sd_event_time_handler_t handler, void *userdata,
                     const char *description) {
        _cleanup_(sd_event_source_unrefp) sd_event_source *s = NULL;
        int r;

        r = sd_event_add_time_relative(e, &s, CLOCK_MONOTONIC, USEC_PER_SEC, 0, handler, userdata);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(s, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s, description);
        *ret = TAKE_PTR(s);
        return 0;
}

static bool text_is_valid(const char *s) {
        return !s || string_is_valid_text(s, AGENT_CONTROL_STRING_MAX);
}

static void queue_push(RequestQueue *q, TunnelerRequest *req) {
        assert(!req->queue);

        req->queue = q;
        req->queue_prev = q->last;
        req->queue_next = NULL;
        if (q->last)
                q->last->queue_next = req;
        else
                q->first = req;
        q->last = req;
        q->n++;
        req->dp->n_pending++;
}

static void queue_remove(TunnelerRequest *req) {
        RequestQueue *q = req->queue;

        if (!q)
                return;
        if (req->queue_prev)
                req->queue_prev->queue_next = req->queue_next;
        else
                q->first = req->queue_next;
        if (req->queue_next)
                req->queue_next->queue_prev = req->queue_prev;
        else
                q->last = req->queue_prev;
        q->n--;
        req->dp->n_pending--;
        req->queue = NULL;
        req->queue_prev = req->queue_next = NULL;
}

/* ---- connectors --------------------------------------------------------------------------------------- */

static TunnelerConnector *connector_free(TunnelerConnector *c) {
        if (!c)
                return NULL;
        assert(!c->session);
        free(c->spiffe_id);
        free(c->network);
        free(c->address);
        return mfree(c);
}

static void connector_penalise(TunnelerConnector *c) {
        c->penalised_until = usec_add(now(CLOCK_MONOTONIC), TUNNELER_CONNECTOR_PENALTY);
}

static bool connector_is_penalised(const TunnelerConnector *c, usec_t t) {
        return c && c->penalised_until > t;
}

static size_t session_load(const TunnelerSession *s) {
        return s ? s->n_pipes + s->waiting.n : 0;
}

/* The state of the connector pc, made on first use and kept in step with what the policy says of it. */
static int connector_get(TunnelerDataPlane *dp, const AgentPolicyConnector *pc, TunnelerConnector **ret) {
        TunnelerConnector *c;
        int r;

        c = hashmap_get(dp->connectors, pc->spiffe_id);
        if (!c) {
                c = calloc(1, sizeof(*c));
                if (!c)
                        return -ENOMEM;
                c->spiffe_id = strdup(pc->spiffe_id);
                if (!c->spiffe_id) {
                        free(c);
                        return -ENOMEM;
                }
                r = hashmap_put(dp->connectors, c->spiffe_id, c);
                if (r < 0) {
                        connector_free(c);
                        return r;
                }
        }
        if (!streq_ptr(c->network, pc->remote_network)) {
                r = free_and_strdup(&c->network, pc->remote_network);
                if (r < 0)
                        return r;
        }
        if (!streq_ptr(c->address, pc->address)) {
                r = free_and_strdup(&c->address, pc->address);
                if (r < 0)
                        return r;
        }
        /* Listed again: its session serves new streams as before. */
        if (c->session)
                c->session->retired = false;
        *ret = c;
        return 0;
}

/* The connector for req's next attempt: of its network's connectors not yet tried, the unpenalised ones
 * first, then the fewest streams, ties at random (so a crowd of tunnelers spreads too). *ret = NULL when
 * none is left. */
static int connector_pick(TunnelerDataPlane *dp, TunnelerRequest *req, TunnelerConnector **ret) {
        const AgentPolicyConnector *best = NULL;
        bool best_penalised = false;
        size_t n, best_load = 0, ties = 0;
        usec_t t = now(CLOCK_MONOTONIC);

        n = agent_policy_connectors(dp->policy, req->network, dp->scratch, AGENT_POLICY_CONNECTORS_MAX);
        for (size_t k = 0; k < n; k++) {
                const AgentPolicyConnector *pc = &dp->scratch[k];
                const TunnelerConnector *c;
                bool penalised;
                size_t load;

                if (strv_contains(req->tried, pc->spiffe_id))
                        continue;
                c = hashmap_get(dp->connectors, pc->spiffe_id);
                penalised = connector_is_penalised(c, t);
                load = c ? session_load(c->session) : 0;

                if (!best || (!penalised && best_penalised) ||
                    (penalised == best_penalised && load < best_load)) {
                        best = pc;
                        best_penalised = penalised;
                        best_load = load;
                        ties = 1;
                } else if (penalised == best_penalised && load == best_load) {
                        /* Reservoir sampling: each of the equals ends up chosen with the same chance. */
                        ties++;
                        if (random_u64_range(ties) == 0)
                                best = pc;
                }
        }
        if (!best) {
                *ret = NULL;
                return 0;
        }
        return connector_get(dp, best, ret);
}

/* Whether the policy still lists c in the network it was picked for. */
static bool connector_is_listed(TunnelerDataPlane *dp, const TunnelerConnector *c) {
        size_t n;

        n = agent_policy_connectors(dp->policy, c->network, dp->scratch, AGENT_POLICY_CONNECTORS_MAX);
        for (size_t k = 0; k < n; k++)
                if (streq(dp->scratch[k].spiffe_id, c->spiffe_id))
                        return true;
        return false;
}

/* ---- requests ----------------------------------------------------------------------------------------- */

static void request_unlink(TunnelerRequest *req) {
        TunnelerDataPlane *dp = req->dp;

        if (req->prev)
                req->prev->next = req->next;
        else if (dp->requests == req)
                dp->requests = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
}

static void request_clear_linger(TunnelerRequest *req) {
        struct linger l = {};

        /* The failed pipe asked for a reset on close of the socket we share; our reply must get through. */
        if (!req->linger_dirty || req->fd < 0)
                return;
        (void) setsockopt(req->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        req->linger_dirty = false;
}

static void request_free(TunnelerRequest *req) {
        if (!req)
                return;
        assert(!req->pipe);

        queue_remove(req);
        request_unlink(req);
        safe_close(req->fd);
        strv_free(req->tried);
        free(req->network);
        free(req);
}

/* The last word on a request that never relayed: the caller replies on fd, then we close it. */
static void request_report(TunnelerRequest *req, unsigned status) {
        request_clear_linger(req);
        if (status == 403)
                req->dp->denials++;
        log_debug("Request for %s: %u.", req->authority, status);
        req->on_result(req->fd, status, req->userdata);
        request_free(req);
}

static int request_mark_tried(TunnelerRequest *req, const char *spiffe_id) {
        if (strv_contains(req->tried, spiffe_id))
                return 0;
        return strv_extend(&req->tried, spiffe_id);
}

static void request_on_response(ConnectPipe *p, unsigned status, void *userdata) {
        TunnelerRequest *req = userdata;
        TunnelerDataPlane *dp = req->dp;

        if (dp->freeing)
                return;
        if (status >= 200 && status < 300) {
                req->state = REQUEST_RELAYING;
                dp->streams_active++;
                dp->streams_total++;
                req->on_result(req->fd, 200, req->userdata);
                /* The pipe's duplicate carries the stream from here. */
                req->fd = safe_close(req->fd);
                return;
        }
        req->state = REQUEST_REFUSED;
        if (status == 403)
                dp->denials++;
        log_debug("Connector refused %s: %u.", req->authority, status);
        req->on_result(req->fd, status, req->userdata);
}

static void request_on_close(ConnectPipe *p, int error, const ConnectStats *stats, void *userdata) {
        TunnelerRequest *req = userdata;
        TunnelerDataPlane *dp = req->dp;
        TunnelerSession *s = TAKE_PTR(req->session);
        RequestState state = req->state;

        req->pipe = NULL;
        if (s) {
                assert(s->n_pipes > 0);
                s->n_pipes--;
        }
        if (state == REQUEST_RELAYING) {
                dp->streams_active--;
                if (dp->streams_active == 0 && !dp->freeing)
                        (void) event_schedule_malloc_trim(dp->event, &dp->trim_source, TUNNELER_TRIM_DELAY);
                dp->bytes_out += stats->bytes_up;
                dp->bytes_in += stats->bytes_down;
        }

        if (dp->freeing || state != REQUEST_CONNECTING)
                request_free(req);
        else {
                /* No answer came: the socket is still ours, unanswered. A session that went away (or a
                 * stream the connector refused to take) is worth the next connector; a silence is not. */
                req->state = REQUEST_QUEUED;
                req->linger_dirty = true;
                if (error == -ECONNRESET && s && request_mark_tried(req, s->spiffe_id) >= 0)
                        request_retry(req, 0);
                else
                        request_retry(req, error == -ETIMEDOUT ? 504 : 502);
        }

        if (s) {
                session_update_idle(s);
                session_maybe_free(s);
        }
}

static const ConnectPipeCallbacks request_pipe_callbacks = {
        .on_response = request_on_response,
        .on_close = request_on_close,
};

/* Sends req's CONNECT on s (up). */
static int request_open(TunnelerRequest *req, TunnelerSession *s) {
        TunnelerDataPlane *dp = req->dp;
        int fd, r;

        assert(s->state == SESSION_UP);

        fd = fcntl(req->fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        r = connect_pipe_open(s->h2, req->authority, fd, &request_pipe_callbacks, req, &req->pipe);
        if (r < 0) {
                if (r == -EBUSY)
                        req->busy = true;
                return r;
        }
        if (dp->idle_timeout > 0 && dp->idle_timeout != USEC_INFINITY)
                (void) connect_pipe_set_idle_timeout(req->pipe, dp->idle_timeout);
        req->state = REQUEST_CONNECTING;
        req->session = s;
        s->n_pipes++;
        session_update_idle(s);
        return 0;
}

/* Gives req to a connector: a CONNECT on its session when that is up, else queued until it is. Tries the
 * next connector while one fails at once. -EHOSTUNREACH when none is left (-EBUSY when the last ones were
 * all at their stream limit), -ENOMEM. */
static int request_dispatch(TunnelerRequest *req) {
        TunnelerDataPlane *dp = req->dp;
        int r;

        assert(!req->queue && !req->pipe);

        for (;;) {
                TunnelerConnector *c = NULL;
                TunnelerSession *s = NULL;

                r = connector_pick(dp, req, &c);
                if (r < 0)
                        return r;
                if (!c)
                        return req->busy ? -EBUSY : -EHOSTUNREACH;

                s = c->session;
                if (!s)
                        r = session_start(dp, c, &s);
                if (r >= 0 && s->state != SESSION_UP) {
                        queue_push(&s->waiting, req);
                        req->session = s;
                        return 0;
                }
                if (r >= 0) {
                        r = request_open(req, s);
                        if (r >= 0)
                                return 0;
                }
                if (r == -ENOMEM)
                        return r;
                log_debug_errno(r, "Cannot use connector '%s' for %s, trying the next one: %m", c->spiffe_id,
                                req->authority);
                r = request_mark_tried(req, c->spiffe_id);
                if (r < 0)
                        return r;
        }
}

static void request_retry(TunnelerRequest *req, unsigned final_status) {
        TunnelerDataPlane *dp = req->dp;

        req->session = NULL;
        req->final_status = final_status;
        queue_push(&dp->retry, req);
        (void) sd_event_source_set_enabled(dp->retry_source, SD_EVENT_ONESHOT);
}

static int on_retry(sd_event_source *source, void *userdata) {
        TunnelerDataPlane *dp = userdata;
        size_t n = dp->retry.n;
        int r;

        /* Only those queued now: what on_result or a dispatch queues goes in the next round. */
        while (n-- > 0 && dp->retry.first) {
                TunnelerRequest *req = dp->retry.first;

                queue_remove(req);
                request_clear_linger(req);
                if (req->final_status > 0) {
                        request_report(req, req->final_status);
                        continue;
                }
                r = request_dispatch(req);
                if (r < 0)
                        request_report(req, r == -EBUSY ? 429 : 502);
        }
        if (dp->retry.first)
                (void) sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        return 0;
}

/* ---- sessions ----------------------------------------------------------------------------------------- */

static void session_free(TunnelerSession *s) {
        TunnelerDataPlane *dp = s->dp;

        assert(!s->connector && !s->query && !s->tls && !s->h2 && !s->heartbeat && s->n_pipes == 0 &&
               s->waiting.n == 0);

        if (dp) {
                if (s->prev)
                        s->prev->next = s->next;
                else
                        dp->sessions = s->next;
                if (s->next)
                        s->next->prev = s->prev;
        }
        sd_event_source_disable_unref(s->heartbeat_timer);
        sd_event_source_disable_unref(s->idle_timer);
        free(s->spiffe_id);
        free(s->address);
        free(s);
}

/* An ended session goes once its transport has said its last word and its last pipe has closed. */
static void session_maybe_free(TunnelerSession *s) {
        if (s->state == SESSION_ENDED && !s->ending && !s->query && !s->tls && !s->h2 && !s->heartbeat &&
            s->n_pipes == 0 && s->waiting.n == 0)
                session_free(s);
}

/* The session is over — failed (error < 0: its connector is penalised), lost, idle, or the data plane is
 * going: its connector forgets it, what was waiting for it goes to the next connector, and the transport
 * is told to close (at once outside an HTTP/2 dispatch, else when the dispatch returns). Relayed streams
 * end; CONNECTs not answered yet are retried (request_on_close()). s may be freed on return. */
static void session_end(TunnelerSession *s, int error) {
        TunnelerRequest *req;

        if (s->connector) {
                if (error < 0 && error != -ENOMEM)
                        connector_penalise(s->connector);
                s->connector->session = NULL;
                s->connector = NULL;
        }
        if (s->state != SESSION_ENDED)
                log_debug("Session with connector '%s' at %s ended: %s", s->spiffe_id, s->address,
                          error < 0 ? strerror(-error) : "closed");
        s->state = SESSION_ENDED;
        s->ending = true;

        while ((req = s->waiting.first)) {
                queue_remove(req);
                req->session = NULL;
                request_retry(req, request_mark_tried(req, s->spiffe_id) < 0 ? 502 : 0);
        }

        s->heartbeat_timer = sd_event_source_disable_unref(s->heartbeat_timer);
        s->idle_timer = sd_event_source_disable_unref(s->idle_timer);
        s->query = resolve_query_free(s->query);
        s->tls = tls_connection_free(s->tls);
        if (s->heartbeat)
                grpc_client_call_cancel(s->heartbeat);
        if (s->h2)
                /* GOAWAY; streams hear on_close, then the session (which drops our reference). */
                h2_session_terminate(s->h2, H2_NO_ERROR);

        s->ending = false;
        session_maybe_free(s);
}

static void session_update_idle(TunnelerSession *s) {
        if (s->state != SESSION_UP || !s->dp || s->dp->freeing || !s->idle_timer)
                return;
        if (s->n_pipes > 0 || s->waiting.n > 0) {
                (void) sd_event_source_set_enabled(s->idle_timer, SD_EVENT_OFF);
                return;
        }
        (void) timer_arm(s->idle_timer, s->retired ? 0 : s->dp->session_idle);
}

static int session_on_idle(sd_event_source *source, uint64_t usec, void *userdata) {
        TunnelerSession *s = userdata;

        log_debug("Session with connector '%s' idle%s, closing.", s->spiffe_id,
                  s->retired ? " and unlisted" : "");
        session_end(s, 0);
        return 0;
}

/* -- heartbeats -- */

static int heartbeat_on_message(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata) {
        /* A HeartbeatAck says nothing we act on. */
        grpc_message_free(msg);
        return 0;
}

static void heartbeat_on_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        TunnelerSession *s = userdata;

        s->heartbeat = NULL;
        if (s->state == SESSION_UP) {
                log_debug("Heartbeats to connector '%s' ended: %s.", s->spiffe_id,
                          strna(grpc_status_to_string(status)));
                /* A connector without the service is not asked again; any other end, at the next tick. */
                if (status == GRPC_STATUS_UNIMPLEMENTED)
                        s->heartbeat_unsupported = true;
        }
        session_maybe_free(s);
}

static const GrpcClientCallbacks heartbeat_callbacks = {
        .on_message = heartbeat_on_message,
        .on_finish = heartbeat_on_finish,
};

static int session_send_heartbeat(TunnelerSession *s) {
        TunnelerDataPlane *dp = s->dp;
        AgentControlCounters counters;
        Ztna__V1__Counters pc = ZTNA__V1__COUNTERS__INIT;
        Ztna__V1__TunnelerHeartbeat hb = ZTNA__V1__TUNNELER_HEARTBEAT__INIT;
        int r;

        if (!s->heartbeat) {
                if (s->heartbeat_unsupported)
                        return 0;
                r = grpc_client_call_start(s->h2, s->address, METHOD_HEARTBEATS,
                                           &ztna__v1__heartbeat_ack__descriptor, TUNNELER_HEARTBEAT_ACK_MAX,
                                           USEC_INFINITY, &heartbeat_callbacks, s, &s->heartbeat);
                if (r < 0)
                        return r;
        }

        tunneler_dataplane_get_counters(dp, &counters);
        pc.streams_active = counters.streams_active;
        pc.streams_total = counters.streams_total;
        pc.bytes_in = counters.bytes_in;
        pc.bytes_out = counters.bytes_out;
        pc.denials = counters.denials;
        pc.peers = counters.peers;
        hb.version = dp->version ?: (char *) "";
        hb.private_ip = dp->private_ip ?: (char *) "";
        hb.counters = &pc;
        hb.sent_unix_ms = now(CLOCK_REALTIME) / USEC_PER_MSEC;
        r = grpc_client_call_send(s->heartbeat, &hb.base);
        if (r < 0)
                /* A connector this far behind gets a fresh call at the next tick. */
                grpc_client_call_cancel(s->heartbeat);
        return r;
}

static int session_on_heartbeat_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        TunnelerSession *s = userdata;
        int r;

        r = session_send_heartbeat(s);
        if (r < 0)
                log_debug_errno(r, "Cannot send a heartbeat to connector '%s', ignoring: %m", s->spiffe_id);
        if (s->heartbeat_timer)
                (void) timer_arm(s->heartbeat_timer, s->dp->heartbeat_interval);
        return 0;
}

/* -- transport -- */

static void session_on_h2_close(H2Session *h2, int error, void *userdata) {
        TunnelerSession *s = userdata;

        s->h2 = h2_session_unref(s->h2);
        if (s->connector) {
                /* Not our doing: the connector went away, or GOAWAY. */
                session_end(s, error);
                return;
        }
        session_maybe_free(s);
}

static const H2SessionCallbacks session_h2_callbacks = { .on_close = session_on_h2_close };

static int session_dial(TunnelerSession *s);

static void session_on_handshake(TlsConnection *tls, int error, void *userdata) {
        TunnelerSession *s = userdata;
        TunnelerDataPlane *dp = s->dp;
        TunnelerRequest *req;
        const SpiffeId *peer;
        int r;

        assert(dp && s->connector); /* an ended session has freed its TLS connection */

        if (error < 0) {
                log_debug("TLS with connector '%s' at %s failed: %s", s->spiffe_id, s->address,
                          tls_connection_get_error_reason(tls) ?: strerror(-error));
                s->tls = tls_connection_free(s->tls);
                if (agent_error_is_unreachable(error) && s->next_address < s->n_addresses &&
                    session_dial(s) >= 0)
                        return;
                session_end(s, error);
                return;
        }

        /* The peer policy allowed only this ID; say so again where it matters. */
        peer = tls_connection_get_peer_id(tls);
        if (!peer || !streq(peer->uri, s->spiffe_id)) {
                session_end(s, -EPERM);
                return;
        }

        r = h2_session_new(TAKE_PTR(s->tls), NULL, &session_h2_callbacks, s, &s->h2);
        if (r >= 0)
                r = timer_new(dp->event, &s->idle_timer, session_on_idle, s, "tunneler-session-idle");
        if (r >= 0)
                r = timer_new(dp->event, &s->heartbeat_timer, session_on_heartbeat_timer, s,
                              "tunneler-session-heartbeat");
        if (r < 0) {
                session_end(s, r);
                return;
        }
        s->state = SESSION_UP;
        log_debug("Session with connector '%s' at %s up.", s->spiffe_id, s->address);

        r = session_send_heartbeat(s);
        if (r < 0)
                log_debug_errno(r, "Cannot start heartbeats to connector '%s', ignoring: %m", s->spiffe_id);
        (void) timer_arm(s->heartbeat_timer, dp->heartbeat_interval);

        while ((req = s->waiting.first)) {
                queue_remove(req);
                req->session = NULL;
                r = request_open(req, s);
                if (r < 0)
                        request_retry(req, request_mark_tried(req, s->spiffe_id) < 0 ? 502 : 0);
        }
        session_update_idle(s);
}

static const TlsConnectionCallbacks session_tls_callbacks = { .on_handshake = session_on_handshake };

/* The TLS context now accepts exactly spiffe_id as the peer (connections already made keep theirs). */
static int dataplane_tls_for(TunnelerDataPlane *dp, const char *spiffe_id) {
        char *ids[] = { (char *) spiffe_id, NULL };
        int r;

        if (streq_ptr(dp->tls_peer, spiffe_id))
                return 0;
        dp->tls_peer = mfree(dp->tls_peer);
        r = tls_context_set_peer_policy(dp->tls_context,
                                        &(const TlsPeerPolicy) { .role = SPIFFE_ROLE_CONNECTOR, .ids = ids });
        if (r < 0)
                return r;
        dp->tls_peer = strdup(spiffe_id); /* NULL only means the policy is set again next time */
        return 0;
}

/* TCP + TLS to the next address; an address refused at once is skipped. */
static int session_dial(TunnelerSession *s) {
        TunnelerDataPlane *dp = s->dp;
        int r;

        r = dataplane_tls_for(dp, s->spiffe_id);
        if (r < 0)
                return r;

        r = -EHOSTUNREACH;
        while (s->next_address < s->n_addresses) {
                const struct sockaddr_storage *sa = &s->addresses[s->next_address++];
                socklen_t len = sa->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                         : sizeof(struct sockaddr_in6);
                int fd;

                fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
                if (fd < 0)
                        return -errno;
                if (connect(fd, (const struct sockaddr *) sa, len) < 0 && errno != EINPROGRESS) {
                        r = -errno;
                        safe_close(fd);
                        log_debug_errno(r, "Cannot connect to connector '%s' at %s: %m", s->spiffe_id,
                                        s->address);
                        continue;
                }
                s->state = SESSION_CONNECTING;
                return tls_connection_new(dp->tls_context, dp->event, fd, &session_tls_callbacks, s, &s->tls);
        }
        return r;
}

static void session_on_resolved(ResolveQuery *q, int error, const struct sockaddr_storage *addresses, size_t n,
                                 void *userdata) {
        TunnelerSession *s = userdata;
        int r;

        s->query = resolve_query_free(s->query);
        if (error < 0) {
                log_debug_errno(error, "Cannot resolve connector '%s' at %s: %m", s->spiffe_id, s->address);
                session_end(s, error);
                return;
        }
        n = MIN(n, ELEMENTSOF(s->addresses));
        memcpy(s->addresses, addresses, n * sizeof(addresses[0]));
        s->n_addresses = n;
        s->next_address = 0;
        r = session_dial(s);
        if (r < 0)
                session_end(s, r);
}

static int dataplane_get_resolver(TunnelerDataPlane *dp, Resolver **ret) {
        int r;

        if (!dp->resolver) {
                r = resolver_new(dp->event, dp->resolvers, dp->resolv_conf, &dp->resolver);
                if (r < 0)
                        return r;
        }
        *ret = dp->resolver;
        return 0;
}

/* A session to c: dialed now for an address literal, else resolved first. On failure it is gone already
 * (c penalised). */
static int session_start(TunnelerDataPlane *dp, TunnelerConnector *c, TunnelerSession **ret) {
        TunnelerSession *s;
        HostPort hp;
        int r;

        assert(!c->session);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->spiffe_id = strdup(c->spiffe_id);
        s->address = strdup(c->address);
        if (!s->spiffe_id || !s->address) {
                free(s->spiffe_id);
                free(s->address);
                free(s);
                return -ENOMEM;
        }
        s->dp = dp;
        s->connector = c;
        c->session = s;
        s->next = dp->sessions;
        if (dp->sessions)
                dp->sessions->prev = s;
        dp->sessions = s;

        r = parse_host_port(s->address, 0, &hp);
        if (r >= 0 && hp.family == AF_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *) &s->addresses[0];

                sin->sin_family = AF_INET;
                sin->sin_port = htons(hp.port);
                r = inet_pton(AF_INET, hp.host, &sin->sin_addr) == 1 ? 0 : -EINVAL;
                s->n_addresses = 1;
        } else if (r >= 0 && hp.family == AF_INET6) {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &s->addresses[0];

                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons(hp.port);
                r = inet_pton(AF_INET6, hp.host, &sin6->sin6_addr) == 1 ? 0 : -EINVAL;
                s->n_addresses = 1;
        }
        if (r >= 0 && hp.family != AF_UNSPEC)
                r = session_dial(s);
        else if (r >= 0) {
                Resolver *resolver;

                s->state = SESSION_RESOLVING;
                r = dataplane_get_resolver(dp, &resolver);
                if (r >= 0)
                        r = resolver_resolve(resolver, hp.host, hp.port, session_on_resolved, s, &s->query);
        }
        if (r < 0) {
                log_debug_errno(r, "Cannot reach connector '%s' at %s: %m", s->spiffe_id, s->address);
                session_end(s, r);
                return r;
        }
        *ret = s;
        return 0;
}

/* ---- the object --------------------------------------------------------------------------------------- */

static int settings_check(const TunnelerDataPlaneSettings *settings) {
        if (settings->connect_timeout > AGENT_CONNECT_TIMEOUT_MAX ||
            settings->heartbeat_interval == USEC_INFINITY || settings->session_idle == USEC_INFINITY)
                return -EINVAL;
        if (!text_is_valid(settings->version) || !text_is_valid(settings->private_ip))
                return -EINVAL;
        if (strv_length(settings->resolvers) > RESOLVE_SERVERS_MAX)
                return -EINVAL;
        return 0;
}

int tunneler_dataplane_new(sd_event *event, const AgentIdentity *identity, const AgentPolicy *policy,
                           const TunnelerDataPlaneSettings *settings, TunnelerDataPlane **ret) {
        _cleanup_(tunneler_dataplane_freep) TunnelerDataPlane *d = NULL;
        int r;

        assert(event);
        assert(identity);
        assert(policy);
        assert(settings);
        assert(ret);

        r = settings_check(settings);
        if (r < 0)
                return r;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(event);
        d->policy = policy;
        d->connect_timeout = settings->connect_timeout ?: AGENT_DEFAULT_CONNECT_TIMEOUT;
        d->idle_timeout = settings->idle_timeout;
        d->heartbeat_interval = settings->heartbeat_interval ?: AGENT_CONTROL_HEARTBEAT_INTERVAL_DEFAULT;
        d->session_idle = settings->session_idle ?: TUNNELER_SESSION_IDLE;
        if ((settings->version && !(d->version = strdup(settings->version))) ||
            (settings->private_ip && !(d->private_ip = strdup(settings->private_ip))) ||
            (settings->resolv_conf && !(d->resolv_conf = strdup(settings->resolv_conf))))
                return -ENOMEM;
        if (settings->resolvers) {
                d->resolvers = strv_copy(settings->resolvers);
                if (!d->resolvers)
                        return -ENOMEM;
        }

        r = hashmap_new(&d->connectors);
        if (r < 0)
                return r;
        d->scratch = calloc(AGENT_POLICY_CONNECTORS_MAX, sizeof(AgentPolicyConnector));
        if (!d->scratch)
                return -ENOMEM;
        r = sd_event_add_defer(event, &d->retry_source, on_retry, d);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(d->retry_source, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(d->retry_source, "tunneler-retry");

        r = tunneler_dataplane_set_identity(d, identity);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(d);
        return 0;
}

TunnelerDataPlane *tunneler_dataplane_free(TunnelerDataPlane *d) {
        TunnelerConnector *c;
        const char *key;

        if (!d)
                return NULL;

        d->freeing = true;
        d->retry_source = sd_event_source_disable_unref(d->retry_source);
        d->trim_source = sd_event_source_disable_unref(d->trim_source);

        /* Requests first: a pipe's on_close frees its request (nothing is reported). */
        while (d->requests) {
                TunnelerRequest *req = d->requests;

                if (req->pipe)
                        connect_pipe_abort(req->pipe);
                else
                        request_free(req);
        }
        /* Then sessions: those whose transport still owes a callback free themselves later. */
        while (d->sessions) {
                TunnelerSession *s = d->sessions;

                d->sessions = s->next;
                if (s->next)
                        s->next->prev = NULL;
                s->prev = s->next = NULL;
                s->dp = NULL;
                session_end(s, 0);
        }

        if (d->connectors)
                HASHMAP_FOREACH_KEY(c, key, d->connectors)
                        connector_free(c);
        hashmap_free(d->connectors);
        resolver_free(d->resolver);
        tls_context_unref(d->tls_context);
        free(d->tls_peer);
        free(d->scratch);
        free(d->version);
        free(d->private_ip);
        strv_free(d->resolvers);
        free(d->resolv_conf);
        sd_event_unref(d->event);
        return mfree(d);
}

int tunneler_dataplane_set_identity(TunnelerDataPlane *d, const AgentIdentity *identity) {
        TlsContext *ctx = NULL;
        int r;

        assert(d);
        assert(identity);

        r = agent_tls_context_new(identity, TLS_MODE_CLIENT, SPIFFE_ROLE_CONNECTOR, d->connect_timeout, &ctx);
        if (r < 0)
                return r;
        tls_context_unref(d->tls_context);
        d->tls_context = ctx;
        d->tls_peer = mfree(d->tls_peer);
        return 0;
}

int tunneler_dataplane_set_private_ip(TunnelerDataPlane *d, const char *private_ip) {
        assert(d);

        if (!text_is_valid(private_ip))
                return -EINVAL;
        if (!private_ip) {
                d->private_ip = mfree(d->private_ip);
                return 0;
        }
        return free_and_strdup(&d->private_ip, private_ip);
}

void tunneler_dataplane_policy_changed(TunnelerDataPlane *d) {
        TunnelerConnector *c;
        const char *key;

        assert(d);

        HASHMAP_FOREACH_KEY(c, key, d->connectors) {
                if (connector_is_listed(d, c)) {
                        if (c->session)
                                c->session->retired = false;
                        continue;
                }
                if (!c->session) {
                        (void) hashmap_remove(d->connectors, key);
                        connector_free(c);
                        continue;
                }
                /* Streams on it carry on; no new ones go there, and it closes once they are done. */
                log_debug("Connector '%s' is no longer listed.", c->spiffe_id);
                c->session->retired = true;
                session_update_idle(c->session);
        }
}

unsigned tunneler_dataplane_close_connector(TunnelerDataPlane *d, const char *spiffe_id) {
        TunnelerConnector *c;
        unsigned n;

        assert(d);

        if (!spiffe_id)
                return 0;
        c = hashmap_get(d->connectors, spiffe_id);
        if (!c)
                return 0;
        connector_penalise(c);
        if (!c->session)
                return 0;
        n = (unsigned) session_load(c->session);
        session_end(c->session, -ECONNABORTED);
        return n;
}

int tunneler_dataplane_connect(TunnelerDataPlane *d, const char *host, uint16_t port, int fd,
                               TunnelerResultCallback on_result, void *userdata) {
        char buf[HOST_PORT_STRING_MAX];
        const PolicyResource *resource;
        const char *network;
        TunnelerRequest *req;
        HostPort hp;
        size_t len;
        int r;

        assert(d);
        assert(on_result);

        if (!host || port == 0)
                return -EINVAL;
        if (fd < 0)
                return -EBADF;
        len = strnlen(host, sizeof(buf));
        if (len == 0 || len > sizeof(hp.host) + 1)
                return -EINVAL;
        /* An IPv6 literal may come without brackets (SOCKS gives the bare address). */
        if (host[0] != '[' && strchr(host, ':'))
                (void) snprintf(buf, sizeof(buf), "[%s]:%u", host, port);
        else
                (void) snprintf(buf, sizeof(buf), "%s:%u", host, port);
        r = connect_authority_parse(buf, &hp);
        if (r < 0)
                return -EINVAL;

        resource = agent_policy_find_resource(d->policy, hp.host, hp.port, RESOURCE_PROTOCOL_TCP);
        if (!resource) {
                d->denials++;
                log_debug("No resource held covers %s.", buf);
                return -EACCES;
        }
        /* Found through its alias: the connector is asked for the resource's own address, which is what
         * its policy covers (an alias is a name for tunnelers, not something to resolve). */
        if (resource_address_match(&resource->address, hp.host) <= 0 &&
            (resource->address.kind == RESOURCE_ADDRESS_IP || resource->address.kind == RESOURCE_ADDRESS_FQDN)) {
                char abuf[POLICY_ADDRESS_STRING_MAX];
                HostPort real;

                if (parse_host_port(resource_address_to_string(&resource->address, abuf), hp.port, &real) < 0)
                        return -EINVAL;
                log_debug("%s is the alias of resource '%s': asking for %s.", hp.host, resource->name, abuf);
                hp = real;
        }

        network = agent_policy_resource_network(d->policy, resource->name);
        if (!network || agent_policy_connectors(d->policy, network, d->scratch, 1) == 0)
                return -EHOSTUNREACH;
        if (d->n_pending >= TUNNELER_PENDING_MAX)
                return -EBUSY;

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        *req = (TunnelerRequest) {
                .dp = d,
                .state = REQUEST_QUEUED,
                .fd = fd,
                .on_result = on_result,
                .userdata = userdata,
                .network = strdup(network),
        };
        if (!req->network || !host_port_to_string(&hp, req->authority, sizeof(req->authority))) {
                req->fd = -EBADF;
                request_free(req);
                return -ENOMEM;
        }
        req->next = d->requests;
        if (d->requests)
                d->requests->prev = req;
        d->requests = req;

        r = request_dispatch(req);
        if (r < 0) {
                /* Nothing was sent: fd stays the caller's. */
                req->fd = -EBADF;
                request_free(req);
                return r;
        }
        return 0;
}

void tunneler_dataplane_get_counters(const TunnelerDataPlane *d, AgentControlCounters *ret) {
        AgentControlCounters c;

        assert(d);
        assert(ret);

        c = (AgentControlCounters) {
                .streams_active = d->streams_active,
                .streams_total = d->streams_total,
                .bytes_in = d->bytes_in,
                .bytes_out = d->bytes_out,
                .denials = d->denials,
        };
        for (const TunnelerRequest *req = d->requests; req; req = req->next)
                if (req->pipe && req->state == REQUEST_RELAYING) {
                        ConnectStats stats;

                        connect_pipe_get_stats(req->pipe, &stats);
                        c.bytes_out += stats.bytes_up;
                        c.bytes_in += stats.bytes_down;
                }
        for (const TunnelerSession *s = d->sessions; s; s = s->next)
                if (s->state == SESSION_UP)
                        c.peers++;
        *ret = c;
}

int tunneler_dataplane_get_connector(const TunnelerDataPlane *d, const char *spiffe_id,
                                     TunnelerConnectorInfo *ret) {
        const TunnelerConnector *c;

        assert(d);
        assert(ret);

        if (!spiffe_id)
                return -ENOENT;
        c = hashmap_get(d->connectors, spiffe_id);
        if (!c)
                return -ENOENT;
        *ret = (TunnelerConnectorInfo) {
                .connected = c->session && c->session->state == SESSION_UP,
                .penalised = connector_is_penalised(c, now(CLOCK_MONOTONIC)),
                .streams = (unsigned) session_load(c->session),
        };
        return 0;
}
