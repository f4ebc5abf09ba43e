/* SPDX-License-Identifier: Apache-2.0 */

/* The Control service: one long-lived Control.Connect stream per agent. The agent is whoever its verified
 * certificate says it is; the store must know it and must not have revoked it. Three in-memory tables, all
 * keyed by SPIFFE ID under a per-map SipHash key:
 *   sessions  the live stream of each agent (a newer stream replaces an older one);
 *   presence  when each agent was last heard from (its own heartbeat or one a connector forwarded), which
 *             decides ONLINE/OFFLINE and survives the stream;
 *   pending   heartbeats not yet written to the store, flushed as one batch per CONTROL_FLUSH_INTERVAL so
 *             that thousands of agents cost one transaction, not thousands.
 * Nothing here blocks: sends are queued by the gRPC layer, which reports -ENOBUFS for an agent that stops
 * reading; such an agent loses its stream rather than our memory. */

#include <assert.h>
#include <inttypes.h>
#include <string.h>
#include <systemd/sd-event.h>

#include "controller-audit.h"
#include "controller-ca.h"
#include "controller-control.h"
#include "controller-manager.h"
#include "controller-policy.h"
#include "controller-store.h"
#include "crypto-spiffe.h"
#include "hashmap.h"
#include "log.h"
#include "net-grpc.h"
#include "net-proto.h"
#include "net-h2.h"
#include "net-tls.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"
#include "time-util.h"
#include "ztna.pb-c.h"

#define METHOD_CONNECT "/ztna.v1.Control/Connect"

/* How often ONLINE → OFFLINE transitions are looked for (and forgotten agents pruned). */
#define CONTROL_OFFLINE_CHECK_INTERVAL (5 * USEC_PER_SEC)
/* Agents whose last heartbeat is remembered: those with a stream, those heard from within
 * CONTROL_OFFLINE_AFTER, and those with an unflushed heartbeat. Beyond it new agents are not tracked. */
#define CONTROL_PRESENCE_MAX (4U * CONTROL_SESSIONS_MAX)
/* Warnings about dropped forwarded messages and failed flushes: at most this many per interval. */
#define CONTROL_LOG_BURST 10U
#define CONTROL_LOG_INTERVAL (30 * USEC_PER_SEC)

#define REASON_NOT_AGENT "not a connector or tunneler of this trust domain"
#define REASON_NOT_ENROLLED "agent not enrolled"
#define REASON_REVOKED "agent revoked"
#define REASON_REPLACED "replaced by a newer control stream"
#define REASON_SHUTDOWN "controller shutting down"
#define REASON_TOO_SLOW "agent does not read its control stream"
#define REASON_INTERNAL "internal error"

typedef struct LogLimit {
        usec_t begin;
        unsigned n;
} LogLimit;

typedef struct ControlSession {
        ControlRegistry *registry;
        GrpcCall *call;
        char *spiffe_id;
        SpiffeRole role;
        bool registered;            /* holds the sessions entry for spiffe_id */
        bool ended;                 /* we finished the call; on_done is still to come */
        usec_t window_start;        /* CLOCK_MONOTONIC: forwarded messages counted since */
        unsigned n_forwarded;
        char *remote_network;       /* connectors: the network it serves (from the store) */
        char *data_plane_address;   /* connectors: host:port from the hello, NULL until then */
        PolicyView *policy_view;    /* what it was last sent; NULL before the snapshot */
        uint64_t policy_revision;   /* the revision of the last snapshot or delta sent */
} ControlSession;

typedef struct AgentPresence {
        usec_t last_seen;           /* CLOCK_REALTIME */
        bool online;                /* as last reported (the OFFLINE transition is logged once) */
} AgentPresence;

typedef struct PendingHeartbeat {
        usec_t last_seen;
        char *version;              /* NULL: unchanged */
        char *private_ip;
        char *via;
} PendingHeartbeat;

struct ControlRegistry {
        Manager *manager;
        Hashmap *sessions;          /* SPIFFE ID → ControlSession */
        Hashmap *presence;          /* SPIFFE ID → AgentPresence */
        Hashmap *pending;           /* SPIFFE ID → PendingHeartbeat */
        sd_event_source *flush_timer;
        sd_event_source *offline_timer;
        LogLimit log_forwarded;
        LogLimit log_flush;
        sd_event_source *policy_defer; /* coalesces policy pushes */
};

/* True while fewer than CONTROL_LOG_BURST messages went out in the current interval. */
static bool log_limit_pass(LogLimit *l) {
        usec_t t = now(CLOCK_MONOTONIC);

        if (l->begin == 0 || usec_sub(t, l->begin) >= CONTROL_LOG_INTERVAL) {
                l->begin = t;
                l->n = 0;
        }
        if (l->n >= CONTROL_LOG_BURST)
                return false;
        l->n++;
        return true;
}


/* A text field fit for the store and for listings: bounded, no control characters. */
static bool text_is_valid(const char *s) {
        return string_is_valid_text(s, STORE_STRING_MAX);
}

/* Relayed text goes into logs only when it cannot forge lines there. */
static const char *text_printable(const char *s) {
        return text_is_valid(s) && strlen(s) <= SPIFFE_ID_MAX ? s : "(unprintable)";
}

/* proto3 cannot tell "" from unset: an empty field leaves the stored value as it is. */
static const char *text_or_null(const char *s) {
        return isempty(s) ? NULL : s;
}

/* ---- presence and pending heartbeats --------------------------------------------------------------- */

static PendingHeartbeat *pending_free(PendingHeartbeat *p) {
        if (!p)
                return NULL;
        free(p->version);
        free(p->private_ip);
        free(p->via);
        return mfree(p);
}

static int update_string(char **p, const char *s) {
        if (!s)
                return 0;
        return free_and_strdup(p, s);
}

static void presence_forget(ControlRegistry *r, const char *spiffe_id) {
        free(hashmap_remove(r->presence, spiffe_id));
        pending_free(hashmap_remove(r->pending, spiffe_id));
}

static int presence_update(ControlRegistry *r, const char *spiffe_id, usec_t t, const char *via) {
        AgentPresence *p;
        int k;

        p = hashmap_get(r->presence, spiffe_id);
        if (!p) {
                if (hashmap_size(r->presence) >= CONTROL_PRESENCE_MAX)
                        return -ENOSPC;
                p = calloc(1, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                k = hashmap_put(r->presence, spiffe_id, p);
                if (k < 0) {
                        free(p);
                        return k;
                }
        }
        if (!p->online) {
                p->online = true;
                if (via)
                        log_info("Tunneler '%s' is ONLINE (heartbeats forwarded by '%s').", spiffe_id, via);
                else
                        log_debug("Agent '%s' is ONLINE.", spiffe_id);
        }
        p->last_seen = MAX(p->last_seen, t);
        return 0;
}

/* Remembers a heartbeat (t is CLOCK_REALTIME) for the next flush and marks the agent ONLINE. */
static int control_record(ControlRegistry *r, const char *spiffe_id, usec_t t, const char *version,
                          const char *private_ip, const char *via) {
        PendingHeartbeat *p;
        int k;

        k = presence_update(r, spiffe_id, t, via);
        if (k < 0)
                return k;

        p = hashmap_get(r->pending, spiffe_id);
        if (!p) {
                if (hashmap_size(r->pending) >= CONTROL_PENDING_MAX) {
                        /* A full batch goes out at once instead of growing the table. */
                        k = control_registry_flush(r);
                        if (k < 0)
                                return k;
                }
                p = calloc(1, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                k = hashmap_put(r->pending, spiffe_id, p);
                if (k < 0) {
                        free(p);
                        return k;
                }
        }
        p->last_seen = MAX(p->last_seen, t);
        k = update_string(&p->version, version);
        if (k >= 0)
                k = update_string(&p->private_ip, private_ip);
        if (k >= 0)
                k = update_string(&p->via, via);
        return k;
}

int control_registry_flush(ControlRegistry *r) {
        _cleanup_free_ StoreHeartbeat *hb = NULL;
        PendingHeartbeat *p;
        const char *k;
        size_t n = 0;
        int updated;

        assert(r);

        if (hashmap_isempty(r->pending))
                return 0;
        assert(hashmap_size(r->pending) <= STORE_TOUCH_BATCH_MAX);

        hb = calloc(hashmap_size(r->pending), sizeof(*hb));
        if (!hb)
                return -ENOMEM;
        HASHMAP_FOREACH_KEY(p, k, r->pending)
                hb[n++] = (StoreHeartbeat) {
                        .spiffe_id = k,
                        .last_seen = p->last_seen,
                        .version = p->version,
                        .private_ip = p->private_ip,
                        .via = p->via,
                };
        updated = store_agents_touch(r->manager->store, hb, n);
        if (updated < 0)
                return log_debug_errno(updated, "Failed to write %zu heartbeats to the store: %m", n);
        log_debug("Flushed %zu heartbeats, %i agents updated.", n, updated);

        HASHMAP_FOREACH_KEY(p, k, r->pending)
                pending_free(hashmap_remove(r->pending, k));
        return updated;
}

static int on_flush_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlRegistry *r = userdata;
        int k;

        k = control_registry_flush(r);
        if (k < 0 && log_limit_pass(&r->log_flush))
                log_warning_errno(k, "Failed to write heartbeats to the store, retrying: %m");

        k = sd_event_source_set_time_relative(s, CONTROL_FLUSH_INTERVAL);
        if (k >= 0)
                k = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (k < 0)
                log_error_errno(k, "Failed to re-arm the heartbeat flush timer: %m");
        return 0;
}

static int on_offline_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ControlRegistry *r = userdata;
        usec_t t = now(CLOCK_REALTIME);
        AgentPresence *p;
        const char *k;
        int q;

        HASHMAP_FOREACH_KEY(p, k, r->presence) {
                if (p->online && usec_sub(t, p->last_seen) >= CONTROL_OFFLINE_AFTER) {
                        char span[FORMAT_TIMESPAN_MAX];

                        log_info("Agent '%s' is OFFLINE: nothing heard for %s.", k,
                                 format_timespan(span, sizeof(span), usec_sub(t, p->last_seen), USEC_PER_SEC));
                        p->online = false;
                }
                /* Once offline, flushed and without a stream, the store's last_seen says all there is. */
                if (!p->online && !hashmap_get(r->pending, k) && !hashmap_get(r->sessions, k))
                        free(hashmap_remove(r->presence, k));
        }

        q = sd_event_source_set_time_relative(s, CONTROL_OFFLINE_CHECK_INTERVAL);
        if (q >= 0)
                q = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (q < 0)
                log_error_errno(q, "Failed to re-arm the OFFLINE check timer: %m");
        return 0;
}

bool control_registry_is_online(ControlRegistry *r, const char *spiffe_id, usec_t t, usec_t *ret_last_seen) {
        AgentPresence *p;
        usec_t last;

        assert(spiffe_id);

        p = r ? hashmap_get(r->presence, spiffe_id) : NULL;
        last = p ? p->last_seen : 0;
        if (ret_last_seen)
                *ret_last_seen = last;
        return last > 0 && usec_sub(t, last) < CONTROL_OFFLINE_AFTER;
}

/* ---- sessions --------------------------------------------------------------------------------------- */

static ControlSession *session_free(ControlSession *s) {
        if (!s)
                return NULL;
        free(s->spiffe_id);
        free(s->remote_network);
        free(s->data_plane_address);
        policy_view_free(s->policy_view);
        return mfree(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(ControlSession *, session_free);

/* Gives up the sessions entry (only the session that holds it: a replaced one no longer does). */
static void session_unregister(ControlSession *s) {
        if (!s->registered)
                return;
        s->registered = false;
        if (s->registry && hashmap_get(s->registry->sessions, s->spiffe_id) == s) {
                (void) hashmap_remove(s->registry->sessions, s->spiffe_id);
                /* Tunnelers must stop dialing a connector that went away. */
                if (s->data_plane_address)
                        control_registry_policy_changed(s->registry);
        }
}

/* Ends the stream with status; the session object lives on until the call's on_done. */
static void session_end(ControlSession *s, GrpcStatus status, const char *message) {
        session_unregister(s);
        if (s->ended)
                return;
        s->ended = true;
        if (s->call)
                (void) grpc_call_finish(s->call, status, message);
}

/* Queues msg; an agent too far behind loses its stream (RESOURCE_EXHAUSTED) instead of our memory. */
static int session_send(ControlSession *s, const Ztna__V1__ControllerMessage *msg) {
        int r;

        if (s->ended || !s->call)
                return -ESHUTDOWN;
        r = grpc_call_send(s->call, &msg->base);
        if (r == -ENOBUFS) {
                log_warning("Control stream of '%s' is too far behind, closing it.", s->spiffe_id);
                session_end(s, GRPC_STATUS_RESOURCE_EXHAUSTED, REASON_TOO_SLOW);
        } else if (r < 0) {
                log_debug_errno(r, "Failed to send on the control stream of '%s', closing it: %m", s->spiffe_id);
                session_end(s, grpc_status_from_errno(r), REASON_INTERNAL);
        }
        return r;
}

/* The trust bundle as a ControllerMessage; release with trust_bundle_message_done(). */
typedef struct TrustBundleMessage {
        Ztna__V1__ControllerMessage msg;
        Ztna__V1__TrustBundleUpdate update;
        uint8_t **der;
        size_t *sizes;
        size_t n;
        ProtobufCBinaryData *roots;
} TrustBundleMessage;

static void trust_bundle_message_done(TrustBundleMessage *b) {
        controller_ca_der_array_free(b->der, b->sizes, b->n);
        free(b->roots);
        *b = (TrustBundleMessage) {};
}

static int trust_bundle_message_prepare(Manager *m, TrustBundleMessage *ret) {
        _cleanup_(trust_bundle_message_done) TrustBundleMessage b = {};
        int r;

        r = controller_ca_get_bundle_der(m->ca, &b.der, &b.sizes, &b.n);
        if (r < 0)
                return r;
        if (b.n == 0)
                return -ENOENT;
        b.roots = calloc(b.n, sizeof(*b.roots));
        if (!b.roots)
                return -ENOMEM;
        for (size_t i = 0; i < b.n; i++)
                b.roots[i] = (ProtobufCBinaryData) { .data = b.der[i], .len = b.sizes[i] };

        *ret = b;
        b = (TrustBundleMessage) {};
        /* The message points into *ret, so it is set up where it stays. */
        ret->update = (Ztna__V1__TrustBundleUpdate) ZTNA__V1__TRUST_BUNDLE_UPDATE__INIT;
        ret->update.n_roots = ret->n;
        ret->update.roots = ret->roots;
        ret->msg = (Ztna__V1__ControllerMessage) ZTNA__V1__CONTROLLER_MESSAGE__INIT;
        ret->msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE;
        ret->msg.trust_bundle = &ret->update;
        return 0;
}

static int session_send_config(ControlSession *s, const StoreAgent *agent) {
        Manager *m = s->registry->manager;
        Ztna__V1__AgentConfig config = ZTNA__V1__AGENT_CONFIG__INIT;
        Ztna__V1__ControllerMessage msg = ZTNA__V1__CONTROLLER_MESSAGE__INIT;

        config.role = proto_role_from_spiffe(agent->role);
        config.id = agent->id;
        config.spiffe_id = agent->spiffe_id;
        config.remote_network = (char *) strempty(agent->remote_network);
        config.n_groups = strv_length(agent->groups);
        config.groups = agent->groups;
        config.heartbeat_interval_seconds = (uint32_t) (CONTROL_HEARTBEAT_INTERVAL / USEC_PER_SEC);
        config.certificate_lifetime_seconds = manager_leaf_lifetime(m, agent->role) / USEC_PER_SEC;
        msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG;
        msg.config = &config;
        return session_send(s, &msg);
}

static int session_send_revocation(ControlSession *s, const char *spiffe_id, const char *reason) {
        Ztna__V1__Revocation revocation = ZTNA__V1__REVOCATION__INIT;
        Ztna__V1__ControllerMessage msg = ZTNA__V1__CONTROLLER_MESSAGE__INIT;

        revocation.spiffe_id = (char *) spiffe_id;
        revocation.reason = (char *) strempty(reason);
        msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_REVOCATION;
        msg.revocation = &revocation;
        return session_send(s, &msg);
}

static int session_send_renew_now(ControlSession *s) {
        Ztna__V1__RenewNow renew = ZTNA__V1__RENEW_NOW__INIT;
        Ztna__V1__ControllerMessage msg = ZTNA__V1__CONTROLLER_MESSAGE__INIT;

        msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_RENEW_NOW;
        msg.renew_now = &renew;
        return session_send(s, &msg);
}

/* ---- policy pushes ------------------------------------------------------------------------------------ */

/* The online connectors that told us their data-plane address. Borrowed from the sessions. */
static int registry_connectors(ControlRegistry *r, PolicyConnector **ret, size_t *ret_n) {
        _cleanup_free_ PolicyConnector *a = NULL;
        ControlSession *s;
        const char *k;
        size_t n = 0;

        a = calloc(MAX(hashmap_size(r->sessions), 1U), sizeof(*a));
        if (!a)
                return -ENOMEM;
        HASHMAP_FOREACH_KEY(s, k, r->sessions)
                if (s->role == SPIFFE_ROLE_CONNECTOR && s->data_plane_address && s->remote_network && !s->ended)
                        a[n++] = (PolicyConnector) { .spiffe_id = s->spiffe_id, .remote_network = s->remote_network,
                                                     .address = s->data_plane_address };
        *ret = TAKE_PTR(a);
        *ret_n = n;
        return 0;
}

static char **inputs_tunneler_groups(const PolicyInputs *in, const char *spiffe_id) {
        for (size_t k = 0; k < in->n_tunnelers; k++)
                if (streq(in->tunnelers[k]->spiffe_id, spiffe_id))
                        return in->tunnelers[k]->revoked_at == 0 ? in->tunnelers[k]->groups : NULL;
        return NULL;
}

/* Sends the session its view: a snapshot the first time, else a delta (nothing when nothing changed). A
 * failed send has ended the stream already. */
static int session_push_policy(ControlSession *s, const PolicyInputs *in) {
        _cleanup_(policy_message_freep) Ztna__V1__ControllerMessage *msg = NULL;
        _cleanup_(policy_view_freep) PolicyView *view = NULL;
        char **groups = s->role == SPIFFE_ROLE_TUNNELER ? inputs_tunneler_groups(in, s->spiffe_id) : NULL;
        uint64_t revision;
        int r;

        if (s->ended)
                return 0;
        r = policy_view_build(in, s->role, s->remote_network, groups, &view);
        if (r < 0)
                return r;

        if (s->policy_view) {
                /* Deltas count from what this agent holds: it needs consecutive revisions. */
                revision = s->policy_revision + 1;
                r = policy_view_delta(s->policy_view, view, revision, &msg);
        } else {
                revision = MAX(in->revision, 1U);
                r = policy_view_snapshot(view, revision, &msg);
        }
        if (r < 0)
                return r;
        if (!msg)
                return 0;
        if (msg->body_case == ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT)
                msg->policy_snapshot->revision = revision;

        r = session_send(s, msg);
        if (r < 0)
                return 0;
        log_debug("Policy %s %" PRIu64 " sent to '%s'.",
                  msg->body_case == ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT ? "snapshot" : "delta",
                  revision, s->spiffe_id);
        policy_view_free(s->policy_view);
        s->policy_view = TAKE_PTR(view);
        s->policy_revision = revision;
        return 1;
}

/* Loads the inputs and pushes to one session (s) or to all (NULL). */
static void registry_push_policy(ControlRegistry *r, ControlSession *only) {
        _cleanup_(policy_inputs_done) PolicyInputs in = {};
        _cleanup_free_ PolicyConnector *connectors = NULL;
        ControlSession *s;
        const char *k;
        size_t n = 0;
        int q;

        q = registry_connectors(r, &connectors, &n);
        if (q >= 0)
                q = policy_inputs_load(r->manager->store, connectors, n, &in);
        if (q < 0) {
                log_error_errno(q, "Failed to load the policy for the control streams: %m");
                return;
        }
        if (only) {
                q = session_push_policy(only, &in);
                if (q < 0) {
                        log_error_errno(q, "Failed to build the policy of '%s', closing its stream: %m",
                                        only->spiffe_id);
                        session_end(only, GRPC_STATUS_UNAVAILABLE, REASON_INTERNAL);
                }
                return;
        }
        HASHMAP_FOREACH_KEY(s, k, r->sessions) {
                q = session_push_policy(s, &in);
                if (q < 0) {
                        log_error_errno(q, "Failed to build the policy of '%s', closing its stream: %m",
                                        s->spiffe_id);
                        session_end(s, GRPC_STATUS_UNAVAILABLE, REASON_INTERNAL);
                }
        }
}

static int on_policy_defer(sd_event_source *source, void *userdata) {
        ControlRegistry *r = userdata;

        registry_push_policy(r, NULL);
        return 0;
}

void control_registry_policy_changed(ControlRegistry *r) {
        int q;

        if (!r || r->manager->stopping)
                return;
        if (r->policy_defer) {
                q = sd_event_source_set_enabled(r->policy_defer, SD_EVENT_ONESHOT);
                if (q >= 0)
                        return;
        } else {
                q = sd_event_add_defer(r->manager->event, &r->policy_defer, on_policy_defer, r);
                if (q >= 0) {
                        (void) sd_event_source_set_description(r->policy_defer, "control-policy-push");
                        return;
                }
        }
        log_error_errno(q, "Failed to schedule the policy push, pushing now: %m");
        registry_push_policy(r, NULL);
}

static void refuse(Manager *m, GrpcCall *call, const SpiffeId *peer, const char *reason) {
        log_debug("Control stream from '%s' refused: %s", spiffe_id_to_string(peer), reason);
        (void) audit_log(m->store, AUDIT_CONTROL_REFUSED,
                         &(const AuditRecord) {
                                 .actor = spiffe_id_to_string(peer),
                                 .subject = spiffe_id_to_string(peer),
                                 .role = peer->role,
                                 .peer = manager_call_peer_address(call),
                                 .reason = reason,
                         });
        (void) grpc_call_finish(call, GRPC_STATUS_PERMISSION_DENIED, reason);
}

/* The stream's first message: who is this, may it connect, and replace any older stream of the same agent.
 * Returns the new session (possibly ended already, when a send failed), or NULL when the call was refused. */
static ControlSession *session_start(Manager *m, GrpcCall *call) {
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        _cleanup_(session_freep) ControlSession *s = NULL;
        _cleanup_(trust_bundle_message_done) TrustBundleMessage bundle = {};
        ControlRegistry *r = m->control;
        ControlSession *old, *session;
        void *replaced = NULL;
        const SpiffeId *peer;
        int k;

        peer = grpc_call_get_peer(call);
        if (!peer) {
                (void) grpc_call_finish(call, GRPC_STATUS_UNAUTHENTICATED, "a client certificate is required");
                return NULL;
        }
        if (!r || m->stopping) {
                (void) grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, REASON_SHUTDOWN);
                return NULL;
        }
        if (!manager_role_is_agent(peer->role) || !spiffe_id_member_of(peer, m->config.trust_domain)) {
                refuse(m, call, peer, REASON_NOT_AGENT);
                return NULL;
        }

        k = store_agent_get(m->store, peer->uri, &agent);
        if (k == -ENOENT) {
                refuse(m, call, peer, REASON_NOT_ENROLLED);
                return NULL;
        }
        if (k < 0) {
                log_error_errno(k, "Failed to look up agent '%s': %m", peer->uri);
                (void) grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, REASON_INTERNAL);
                return NULL;
        }
        if (agent->revoked_at != 0) {
                refuse(m, call, peer, REASON_REVOKED);
                return NULL;
        }
        /* A certificate for a replaced key (renewed with a new key, or re-enrolled) must not take over the
         * agent's stream. */
        k = manager_peer_has_recorded_key(call, agent);
        if (k < 0) {
                log_error_errno(k, "Failed to read the certificate key of '%s': %m", peer->uri);
                (void) grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, REASON_INTERNAL);
                return NULL;
        }
        if (k == 0) {
                refuse(m, call, peer, "certificate superseded by a renewal");
                return NULL;
        }

        if (!hashmap_get(r->sessions, peer->uri) && hashmap_size(r->sessions) >= CONTROL_SESSIONS_MAX) {
                log_warning("Refusing the control stream of '%s': %u streams are open already.", peer->uri,
                            CONTROL_SESSIONS_MAX);
                (void) grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many control streams");
                return NULL;
        }

        /* Prepared before anything changes, so that a failure leaves an older stream in place. */
        k = trust_bundle_message_prepare(m, &bundle);
        if (k < 0) {
                log_error_errno(k, "Failed to prepare the trust bundle for '%s': %m", peer->uri);
                (void) grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, REASON_INTERNAL);
                return NULL;
        }

        s = calloc(1, sizeof(*s));
        if (!s) {
                (void) grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL);
                return NULL;
        }
        *s = (ControlSession) {
                .registry = r,
                .call = call,
                .spiffe_id = strdup(peer->uri),
                .role = peer->role,
        };
        if (agent->remote_network && peer->role == SPIFFE_ROLE_CONNECTOR)
                s->remote_network = strdup(agent->remote_network);
        if (!s->spiffe_id || (agent->remote_network && peer->role == SPIFFE_ROLE_CONNECTOR && !s->remote_network)) {
                (void) grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL);
                return NULL;
        }
        k = hashmap_replace(r->sessions, s->spiffe_id, s, &replaced);
        if (k < 0) {
                (void) grpc_call_finish_errno(call, k, NULL);
                return NULL;
        }
        old = replaced;
        /* From here on the call owns the session: on_done frees it. */
        session = TAKE_PTR(s);
        session->registered = true;
        grpc_call_set_userdata(call, session);

        if (old) {
                /* The map already points at the new session: the old one must not remove it on its way out. */
                old->registered = false;
                log_info("Control stream of '%s' replaced by a newer one.", session->spiffe_id);
                session_end(old, GRPC_STATUS_ABORTED, REASON_REPLACED);
        }
        log_info("Control stream of '%s' opened from %s.", session->spiffe_id,
                 strna(manager_call_peer_address(call)));

        /* A failed send has ended the stream already. */
        (void) session_send_config(session, agent);
        (void) session_send(session, &bundle.msg);
        registry_push_policy(r, session);
        return session;
}

#define IN_SET_KIND(k) ((k) == ZTNA__V1__FLOW_EVENT__KIND__KIND_START || (k) == ZTNA__V1__FLOW_EVENT__KIND__KIND_END)

/* Connectors forward tunnelers' heartbeats and flow events; a bounded number per interval. */
static bool session_forward_budget(ControlSession *s) {
        usec_t t = now(CLOCK_MONOTONIC);

        if (s->window_start == 0 || usec_sub(t, s->window_start) >= CONTROL_HEARTBEAT_INTERVAL) {
                s->window_start = t;
                s->n_forwarded = 0;
        }
        if (s->n_forwarded >= CONTROL_FORWARDED_BURST)
                return false;
        s->n_forwarded++;
        return true;
}

static void forwarded_drop(ControlSession *s, const char *tunneler, const char *why) {
        if (log_limit_pass(&s->registry->log_forwarded))
                log_warning("Dropping a heartbeat forwarded by '%s' for '%s': %s.", s->spiffe_id,
                            text_printable(tunneler), why);
        else
                log_debug("Dropping a heartbeat forwarded by '%s': %s.", s->spiffe_id, why);
}

static int session_on_forwarded(ControlSession *s, const Ztna__V1__ForwardedHeartbeat *f) {
        Manager *m = s->registry->manager;
        _cleanup_(store_agent_freep) StoreAgent *agent = NULL;
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        const char *version = NULL, *private_ip = NULL, *reason;
        int k;

        if (!session_forward_budget(s)) {
                forwarded_drop(s, f->tunneler_spiffe_id, "too many forwarded messages in this interval");
                return 0;
        }
        /* Everything below is the tunneler's word, relayed: a bad field drops that heartbeat, never the
         * connector's stream (one tunneler must not be able to cut its connector off). */
        if (strnlen(f->tunneler_spiffe_id, SPIFFE_ID_MAX + 1) > SPIFFE_ID_MAX) {
                forwarded_drop(s, f->tunneler_spiffe_id, "SPIFFE ID too long");
                return 0;
        }
        k = spiffe_id_from_string_ztna(f->tunneler_spiffe_id, &id, &reason);
        if (k < 0) {
                forwarded_drop(s, f->tunneler_spiffe_id, reason);
                return 0;
        }
        if (id->role != SPIFFE_ROLE_TUNNELER || !spiffe_id_member_of(id, m->config.trust_domain)) {
                forwarded_drop(s, id->uri, "not a tunneler of this trust domain");
                return 0;
        }
        if (f->heartbeat) {
                if (!text_is_valid(f->heartbeat->version) || !text_is_valid(f->heartbeat->private_ip)) {
                        forwarded_drop(s, id->uri, "invalid version or private IP");
                        return 0;
                }
                version = text_or_null(f->heartbeat->version);
                private_ip = text_or_null(f->heartbeat->private_ip);
        }

        k = store_agent_get(m->store, id->uri, &agent);
        if (k == -ENOENT) {
                forwarded_drop(s, id->uri, REASON_NOT_ENROLLED);
                return 0;
        }
        if (k < 0) {
                log_warning_errno(k, "Failed to look up tunneler '%s', dropping its heartbeat: %m", id->uri);
                return 0;
        }
        if (agent->revoked_at != 0) {
                forwarded_drop(s, id->uri, REASON_REVOKED);
                return 0;
        }

        /* Our clock, not the connector's: received_unix_ms is informational. */
        k = control_record(s->registry, id->uri, now(CLOCK_REALTIME), version, private_ip, s->spiffe_id);
        if (k < 0 && log_limit_pass(&s->registry->log_flush))
                log_warning_errno(k, "Failed to record the heartbeat of '%s', ignoring: %m", id->uri);
        return 0;
}

static void session_on_flow(ControlSession *s, const Ztna__V1__FlowEvent *f) {
        _cleanup_(spiffe_id_freep) SpiffeId *tunneler = NULL;
        char status[16], up[32], down[32], duration[32];
        int k;

        if (s->role != SPIFFE_ROLE_CONNECTOR) {
                session_end(s, GRPC_STATUS_PERMISSION_DENIED, "only connectors report flows");
                return;
        }
        if (!session_forward_budget(s)) {
                forwarded_drop(s, f->tunneler_spiffe_id, "too many forwarded messages in this interval");
                return;
        }
        /* The connector vouches for the tunneler's certificate; it must at least name one of ours. */
        if (!text_is_valid(f->tunneler_spiffe_id) || !text_is_valid(f->flow_id) || !text_is_valid(f->resource) ||
            !text_is_valid(f->target) || !text_is_valid(f->result) ||
            spiffe_id_from_string_ztna(f->tunneler_spiffe_id, &tunneler, NULL) < 0 ||
            tunneler->role != SPIFFE_ROLE_TUNNELER ||
            !spiffe_id_member_of(tunneler, s->registry->manager->config.trust_domain) ||
            !IN_SET_KIND(f->kind)) {
                forwarded_drop(s, f->tunneler_spiffe_id, "invalid flow event");
                return;
        }

        (void) snprintf(status, sizeof(status), "%" PRIu32, f->http_status);
        (void) snprintf(up, sizeof(up), "%" PRIu64, f->bytes_up);
        (void) snprintf(down, sizeof(down), "%" PRIu64, f->bytes_down);
        (void) snprintf(duration, sizeof(duration), "%" PRIu64, f->duration_ms);
        bool end = f->kind == ZTNA__V1__FLOW_EVENT__KIND__KIND_END;
        /* Every flow has one start event, denied and refused ones included (connector-dataplane.c). */
        if (!end) {
                s->registry->manager->counters.flows++;
                if (streq(f->result, "denied"))
                        s->registry->manager->counters.denials++;
        }
        const char *fields[] = {
                "kind", end ? "end" : "start",
                "flow_id", text_or_null(f->flow_id),
                "resource", text_or_null(f->resource),
                "target", text_or_null(f->target),
                "result", text_or_null(f->result),
                "http_status", f->http_status > 0 ? status : NULL,
                "bytes_up", end ? up : NULL,
                "bytes_down", end ? down : NULL,
                "duration_ms", end ? duration : NULL,
                NULL,
        };
        k = audit_log(s->registry->manager->store, AUDIT_FLOW,
                      &(const AuditRecord) { .actor = s->spiffe_id, .subject = tunneler->uri,
                                             .role = SPIFFE_ROLE_TUNNELER, .fields = fields });
        if (k < 0 && log_limit_pass(&s->registry->log_flush))
                log_warning_errno(k, "Failed to store a flow event from '%s', ignoring: %m", s->spiffe_id);
}

static int session_on_hello(ControlSession *s, const Ztna__V1__Hello *h) {
        int k;

        if (!text_is_valid(h->version) || !text_is_valid(h->private_ip) ||
            !text_is_valid(h->data_plane_address)) {
                session_end(s, GRPC_STATUS_INVALID_ARGUMENT, "invalid hello: text field too long or not printable");
                return 0;
        }
        if (h->n_labels > STORE_LABELS_MAX) {
                session_end(s, GRPC_STATUS_INVALID_ARGUMENT, "invalid hello: too many labels");
                return 0;
        }
        for (size_t i = 0; i < h->n_labels; i++)
                if (!h->labels[i] || !text_is_valid(h->labels[i]->key) || !text_is_valid(h->labels[i]->value)) {
                        session_end(s, GRPC_STATUS_INVALID_ARGUMENT, "invalid hello: bad label");
                        return 0;
                }

        log_debug("Hello from '%s': version '%s', private IP '%s'.", s->spiffe_id, h->version, h->private_ip);
        if (s->role == SPIFFE_ROLE_CONNECTOR && !streq_ptr(s->data_plane_address, text_or_null(h->data_plane_address))) {
                HostPort hp;

                if (!isempty(h->data_plane_address) && parse_host_port(h->data_plane_address, 0, &hp) < 0) {
                        session_end(s, GRPC_STATUS_INVALID_ARGUMENT, "invalid hello: bad data-plane address");
                        return 0;
                }
                k = free_and_strdup(&s->data_plane_address, text_or_null(h->data_plane_address));
                if (k < 0) {
                        session_end(s, GRPC_STATUS_RESOURCE_EXHAUSTED, NULL);
                        return 0;
                }
                /* Tunnelers learn where to reach this connector. */
                control_registry_policy_changed(s->registry);
        }
        k = control_record(s->registry, s->spiffe_id, now(CLOCK_REALTIME), text_or_null(h->version),
                           text_or_null(h->private_ip), NULL);
        if (k < 0 && log_limit_pass(&s->registry->log_flush))
                log_warning_errno(k, "Failed to record the hello of '%s', ignoring: %m", s->spiffe_id);
        return 0;
}

static int session_on_heartbeat(ControlSession *s, const Ztna__V1__Heartbeat *h) {
        int k;

        if (!text_is_valid(h->version) || !text_is_valid(h->private_ip)) {
                session_end(s, GRPC_STATUS_INVALID_ARGUMENT,
                            "invalid heartbeat: text field too long or not printable");
                return 0;
        }
        k = control_record(s->registry, s->spiffe_id, now(CLOCK_REALTIME), text_or_null(h->version),
                           text_or_null(h->private_ip), NULL);
        if (k < 0 && log_limit_pass(&s->registry->log_flush))
                log_warning_errno(k, "Failed to record the heartbeat of '%s', ignoring: %m", s->spiffe_id);
        return 0;
}

static int session_on_message(ControlSession *s, const Ztna__V1__AgentMessage *msg) {
        switch (msg->body_case) {
        case ZTNA__V1__AGENT_MESSAGE__BODY_HELLO:
                return session_on_hello(s, msg->hello);
        case ZTNA__V1__AGENT_MESSAGE__BODY_HEARTBEAT:
                return session_on_heartbeat(s, msg->heartbeat);
        case ZTNA__V1__AGENT_MESSAGE__BODY_FORWARDED_HEARTBEAT:
                if (s->role != SPIFFE_ROLE_CONNECTOR) {
                        session_end(s, GRPC_STATUS_PERMISSION_DENIED, "only connectors forward heartbeats");
                        return 0;
                }
                return session_on_forwarded(s, msg->forwarded_heartbeat);
        case ZTNA__V1__AGENT_MESSAGE__BODY_FLOW:
                if (s->role != SPIFFE_ROLE_CONNECTOR) {
                        session_end(s, GRPC_STATUS_PERMISSION_DENIED, "only connectors report flows");
                        return 0;
                }
                session_on_flow(s, msg->flow);
                return 0;
        default:
                /* A body from a newer agent: nothing to do with it here. */
                log_debug("Ignoring an unknown message on the control stream of '%s'.", s->spiffe_id);
                return 0;
        }
}

static int control_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        Manager *m = userdata;
        ControlSession *s;
        int r;

        assert(m);

        s = grpc_call_get_userdata(call);
        if (!s) {
                s = session_start(m, call);
                if (!s) {
                        protobuf_c_message_free_unpacked(msg, NULL);
                        return 0;
                }
        }
        r = s->ended ? 0 : session_on_message(s, (const Ztna__V1__AgentMessage *) msg);
        protobuf_c_message_free_unpacked(msg, NULL);
        return r;
}

static void control_on_half_close(GrpcCall *call, void *userdata) {
        ControlSession *s = grpc_call_get_userdata(call);

        /* The agent is leaving: end our side too. */
        if (s) {
                if (!s->ended)
                        log_info("Control stream of '%s' closed by the agent.", s->spiffe_id);
                session_end(s, GRPC_STATUS_OK, NULL);
        } else
                (void) grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void control_on_done(GrpcCall *call, void *userdata) {
        ControlSession *s = grpc_call_get_userdata(call);

        if (!s)
                return;
        grpc_call_set_userdata(call, NULL);
        s->call = NULL;
        /* Streams we ended were logged with the reason; this one went away (cancelled, connection lost). */
        if (!s->ended)
                log_info("Control stream of '%s' closed: the stream or its connection ended.", s->spiffe_id);
        session_unregister(s);
        session_free(s);
}

const GrpcMethod controller_control_methods[] = {
        {
                .path = METHOD_CONNECT,
                .input = &ztna__v1__agent_message__descriptor,
                .flags = GRPC_METHOD_CLIENT_STREAMING,
                .max_message_size = CONTROL_MESSAGE_MAX,
                .on_message = control_on_message,
                .on_half_close = control_on_half_close,
                .on_done = control_on_done,
        },
};
const size_t controller_control_n_methods = ELEMENTSOF(controller_control_methods);

/* ---- the registry ------------------------------------------------------------------------------------ */

DEFINE_TRIVIAL_CLEANUP_FUNC(ControlRegistry *, control_registry_free);

int control_registry_new(Manager *m, ControlRegistry **ret) {
        _cleanup_(control_registry_freep) ControlRegistry *r = NULL;
        int k;

        assert(m);
        assert(m->event);
        assert(ret);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->manager = m;

        k = hashmap_new(&r->sessions);
        if (k >= 0)
                k = hashmap_new(&r->presence);
        if (k >= 0)
                k = hashmap_new(&r->pending);
        if (k < 0)
                return k;

        k = sd_event_add_time_relative(m->event, &r->flush_timer, CLOCK_MONOTONIC, CONTROL_FLUSH_INTERVAL,
                                       USEC_PER_SEC / 2, on_flush_timer, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_description(r->flush_timer, "control-heartbeat-flush");

        k = sd_event_add_time_relative(m->event, &r->offline_timer, CLOCK_MONOTONIC,
                                       CONTROL_OFFLINE_CHECK_INTERVAL, USEC_PER_SEC, on_offline_timer, r);
        if (k < 0)
                return k;
        (void) sd_event_source_set_description(r->offline_timer, "control-offline-check");

        *ret = TAKE_PTR(r);
        return 0;
}

ControlRegistry *control_registry_free(ControlRegistry *r) {
        ControlSession *s;
        AgentPresence *p;
        PendingHeartbeat *ph;
        const char *k;
        int q;

        if (!r)
                return NULL;

        if (r->pending) {
                q = control_registry_flush(r);
                if (q < 0)
                        log_warning_errno(q, "Failed to write the last heartbeats to the store, ignoring: %m");
        }
        r->flush_timer = sd_event_source_disable_unref(r->flush_timer);
        r->offline_timer = sd_event_source_disable_unref(r->offline_timer);
        r->policy_defer = sd_event_source_disable_unref(r->policy_defer);

        /* Streams still open belong to their calls: they only forget us. */
        HASHMAP_FOREACH_KEY(s, k, r->sessions) {
                (void) hashmap_remove(r->sessions, k);
                s->registered = false;
                s->registry = NULL;
        }
        HASHMAP_FOREACH_KEY(p, k, r->presence)
                free(hashmap_remove(r->presence, k));
        HASHMAP_FOREACH_KEY(ph, k, r->pending)
                pending_free(hashmap_remove(r->pending, k));
        hashmap_free(r->sessions);
        hashmap_free(r->presence);
        hashmap_free(r->pending);
        return mfree(r);
}

size_t control_registry_n_sessions(const ControlRegistry *r) {
        return r ? hashmap_size(r->sessions) : 0;
}

int control_registry_push_trust_bundle(ControlRegistry *r) {
        _cleanup_(trust_bundle_message_done) TrustBundleMessage bundle = {};
        ControlSession *s;
        const char *k;
        int n = 0, q;

        if (!r || hashmap_isempty(r->sessions))
                return 0;

        q = trust_bundle_message_prepare(r->manager, &bundle);
        if (q < 0)
                return q;
        HASHMAP_FOREACH_KEY(s, k, r->sessions)
                if (session_send(s, &bundle.msg) >= 0)
                        n++;
        log_info("Trust bundle (%zu root%s) pushed to %i agent%s.", bundle.n, bundle.n == 1 ? "" : "s", n,
                 n == 1 ? "" : "s");
        return n;
}

int control_registry_revoke(ControlRegistry *r, const char *spiffe_id, const char *reason) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        ControlSession *s;
        const char *k;
        int closed = 0;

        assert(spiffe_id);

        if (!r)
                return 0;

        presence_forget(r, spiffe_id);

        s = hashmap_get(r->sessions, spiffe_id);
        if (s) {
                /* Queued ahead of the trailers, so the agent reads why before the stream ends. */
                (void) session_send_revocation(s, spiffe_id, reason);
                session_end(s, GRPC_STATUS_PERMISSION_DENIED, REASON_REVOKED);
                log_info("Control stream of revoked agent '%s' closed.", spiffe_id);
                closed = 1;
        }

        /* Connectors must close the data-plane streams of a revoked tunneler themselves. */
        if (spiffe_id_from_string_ztna(spiffe_id, &id, NULL) >= 0 && id->role == SPIFFE_ROLE_TUNNELER)
                HASHMAP_FOREACH_KEY(s, k, r->sessions)
                        if (s->role == SPIFFE_ROLE_CONNECTOR)
                                (void) session_send_revocation(s, spiffe_id, reason);
        return closed;
}

int control_registry_renew_now(ControlRegistry *r, const char *spiffe_id) {
        ControlSession *s;
        const char *k;
        int n = 0;

        if (!r)
                return 0;
        if (spiffe_id) {
                s = hashmap_get(r->sessions, spiffe_id);
                return s && session_send_renew_now(s) >= 0 ? 1 : 0;
        }
        HASHMAP_FOREACH_KEY(s, k, r->sessions)
                if (session_send_renew_now(s) >= 0)
                        n++;
        return n;
}

void control_registry_close_all(ControlRegistry *r) {
        ControlSession *s;
        const char *k;

        if (!r)
                return;
        HASHMAP_FOREACH_KEY(s, k, r->sessions)
                session_end(s, GRPC_STATUS_UNAVAILABLE, REASON_SHUTDOWN);
}
