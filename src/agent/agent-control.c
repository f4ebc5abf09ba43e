/* SPDX-License-Identifier: Apache-2.0 */

/* The control stream client. Each attempt is a ControlLink that owns its transport (TLS during the
 * handshake, then the HTTP/2 session and the gRPC call) and is the userdata of every transport callback.
 * Dropping a link only orphans it: it tells its transport to close and frees itself once the last
 * transport callback has come, so the AgentControl may be freed at any moment — from one of its own
 * callbacks included, even deep inside an HTTP/2 dispatch — without a transport callback ever reaching
 * freed memory. The AgentControl itself is reference counted: every entry from the event loop holds a
 * reference while it runs user callbacks, and agent_control_free() only drops the owner's. */

#include <assert.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "agent-conf.h"
#include "agent-control.h"
#include "agent-enroll.h"
#include "agent-tls.h"
#include "backoff.h"
#include "crypto-bundle.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "identity-store.h"
#include "agent-util.h"
#include "log.h"
#include "net-grpc-frame.h"
#include "net-grpc.h"
#include "net-h2.h"
#include "net-proto.h"
#include "net-tls.h"
#include "parse-util.h"
#include "random-util.h"
#include "string-util.h"
#include "strv.h"
#include "ztna.pb-c.h"

#define METHOD_CONNECT "/ztna.v1.Control/Connect"

/* The controller's words for a revoked agent (REASON_REVOKED in controller-control.c): with
 * PERMISSION_DENIED they end retrying for good. */
#define REASON_REVOKED "agent revoked"

typedef struct ControlLink {
        AgentControl *control;          /* NULL once orphaned */
        char *address;                  /* "host:port": :authority and reasons */
        TlsConnection *tls;             /* until the handshake is done */
        H2Session *session;             /* our reference, dropped in on_close */
        GrpcClientCall *call;           /* until on_finish */
        bool orphaning;                 /* inside link_orphan(): not freed under its feet */
} ControlLink;

struct AgentControl {
        unsigned n_ref;
        bool freed;                     /* agent_control_free() was called: no more callbacks */
        sd_event *event;
        AgentControlCallbacks callbacks;
        void *userdata;

        AgentIdentity identity;
        TlsContext *tls_context;        /* built from identity, for the next connections */

        usec_t heartbeat_setting, connect_timeout;
        char *version, *private_ip, *data_plane_address;
        char **label_keys, **label_values;

        AgentControlState state;
        Backoff backoff;
        char **addresses;               /* identity.controllers, shuffled once per round */
        size_t next_address;
        char *current;                  /* address of the current or last attempt */
        ControlLink *link;
        bool accepted;                  /* the link's controller sent its first message */
        usec_t config_interval;         /* heartbeat interval the controller configured, 0: none yet */
        usec_t last_heartbeat, last_received;

        sd_event_source *attempt_timer;
        sd_event_source *heartbeat_timer;
};

static const char *const state_table[_AGENT_CONTROL_STATE_MAX] = {
        [AGENT_CONTROL_STOPPED] = "stopped",
        [AGENT_CONTROL_CONNECTING] = "connecting",
        [AGENT_CONTROL_CONNECTED] = "connected",
        [AGENT_CONTROL_BACKING_OFF] = "backing-off",
        [AGENT_CONTROL_REVOKED] = "revoked",
};

const char *agent_control_state_to_string(AgentControlState s) {
        if (s < 0 || s >= _AGENT_CONTROL_STATE_MAX)
                return NULL;
        return state_table[s];
}

/* ---- small helpers ------------------------------------------------------------------------------------ */

/* A deep copy that also proves the identity keeps the identity file's rules. */
static int identity_copy_checked(const AgentIdentity *src, AgentIdentity *ret) {
        _cleanup_(agent_identity_done) AgentIdentity copy = {};
        uint8_t *data = NULL;
        size_t size = 0;
        int r;

        r = identity_serialize(src, &data, &size, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        r = identity_parse(data, size, &copy, NULL);
        erase_and_free(data, size);
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        *ret = copy;
        copy = (AgentIdentity) {};
        return 0;
}

/* mTLS with the identity; the peer must be a controller under the identity's bundle. */
static int tls_context_from_identity(const AgentIdentity *i, usec_t timeout, TlsContext **ret) {
        return agent_tls_context_new(i, TLS_MODE_CLIENT, SPIFFE_ROLE_CONTROLLER, timeout, ret);
}

static int labels_split(char **labels, char ***ret_keys, char ***ret_values) {
        _cleanup_strv_free_ char **keys = NULL, **values = NULL;
        int r;

        if (strv_length(labels) > AGENT_CONTROL_LABELS_MAX)
                return -EINVAL;
        STRV_FOREACH(l, labels) {
                const char *eq = strchr(*l, '=');
                char *k;

                if (!eq || eq == *l || !string_is_valid_text(*l, AGENT_CONTROL_STRING_MAX))
                        return -EINVAL;
                k = strndup(*l, eq - *l);
                if (!k)
                        return -ENOMEM;
                if (strv_contains(keys, k)) {
                        free(k);
                        return -EINVAL;
                }
                r = strv_consume(&keys, k);
                if (r < 0)
                        return r;
                r = strv_extend(&values, eq + 1);
                if (r < 0)
                        return r;
        }
        *ret_keys = TAKE_PTR(keys);
        *ret_values = TAKE_PTR(values);
        return 0;
}

/* *ret = the formatted text, or NULL when memory is short (the caller says "out of memory" then). */
static void reasonf(char **ret, const char *format, ...) _printf_(2, 3);
static void reasonf(char **ret, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        if (vasprintf(ret, format, ap) < 0)
                *ret = NULL;
        va_end(ap);
}

/* The controller's words reach logs and terminals: control characters become '?'. */
static char *text_sanitize(const char *s) {
        char *t;

        t = strndup(strempty(s), AGENT_CONTROL_STRING_MAX);
        if (!t)
                return NULL;
        for (char *p = t; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        return t;
}

/* ---- references and reporting ------------------------------------------------------------------------- */

static AgentControl *control_ref(AgentControl *c) {
        assert(c);
        c->n_ref++;
        return c;
}

static void control_unref(AgentControl *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentControl *, control_unref);

static void control_set_state(AgentControl *c, AgentControlState state, int error, const char *reason,
                              usec_t delay) {
        c->state = state;
        log_debug("Control stream %s (%s)%s%s", agent_control_state_to_string(state), strna(c->current),
                  reason ? ": " : ".", strempty(reason));
        if (!c->freed && c->callbacks.on_state)
                c->callbacks.on_state(c,
                                      &(const AgentControlEvent) {
                                              .state = state,
                                              .controller = c->current,
                                              .error = error,
                                              .reason = error < 0 ? reason : NULL,
                                              .delay = delay,
                                              .attempt = state == AGENT_CONTROL_BACKING_OFF ? c->backoff.attempt : 0,
                                      },
                                      c->userdata);
}

/* ---- links -------------------------------------------------------------------------------------------- */

static ControlLink *link_free(ControlLink *l) {
        if (!l)
                return NULL;
        assert(!l->control && !l->tls && !l->session && !l->call);
        free(l->address);
        return mfree(l);
}

/* An orphan goes once its transport has said its last word. */
static void link_maybe_free(ControlLink *l) {
        if (!l->control && !l->orphaning && !l->tls && !l->session && !l->call)
                link_free(l);
}

/* Detaches the link from its control and tells its transport to close: at once outside an HTTP/2
 * dispatch, else as soon as the dispatch returns. The call and session callbacks that follow only free. */
static void link_orphan(ControlLink *l) {
        if (!l)
                return;
        l->control = NULL;
        l->orphaning = true;
        l->tls = tls_connection_free(l->tls);
        if (l->call)
                grpc_client_call_cancel(l->call);
        if (l->session)
                /* GOAWAY; the stream hears on_close, then the session (on_close drops our reference). */
                h2_session_terminate(l->session, H2_NO_ERROR);
        l->orphaning = false;
        link_maybe_free(l);
}

static void control_drop_link(AgentControl *c) {
        ControlLink *l = TAKE_PTR(c->link);

        c->accepted = false;
        if (c->heartbeat_timer)
                (void) sd_event_source_set_enabled(c->heartbeat_timer, SD_EVENT_OFF);
        link_orphan(l);
}

/* ---- the state machine -------------------------------------------------------------------------------- */

static usec_t control_heartbeat_interval(const AgentControl *c) {
        if (c->heartbeat_setting > 0)
                return c->heartbeat_setting;
        if (c->config_interval > 0)
                return c->config_interval;
        if (c->identity.heartbeat_interval > 0)
                return c->identity.heartbeat_interval;
        return AGENT_CONTROL_HEARTBEAT_INTERVAL_DEFAULT;
}

static int timer_arm(sd_event_source *s, usec_t delay) {
        int r;

        r = sd_event_source_set_time_relative(s, delay);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r;
}

/* The attempt or stream is over: wait, then try the next controller. error and reason say why. */
static int control_lost(AgentControl *c, int error, const char *reason, bool at_cap) {
        usec_t delay;
        int r;

        assert(error < 0);

        control_drop_link(c);
        backoff_disconnected(&c->backoff, now(CLOCK_MONOTONIC));
        delay = backoff_next(&c->backoff);
        /* Refused for a reason time will not fix soon (a superseded certificate): no need to hurry. */
        if (at_cap)
                delay = c->backoff.cap;
        r = timer_arm(c->attempt_timer, delay);
        if (r < 0) {
                log_debug_errno(r, "Failed to schedule the next control stream attempt: %m");
                control_set_state(c, AGENT_CONTROL_STOPPED, r, "cannot schedule the next attempt", 0);
                return error;
        }
        control_set_state(c, AGENT_CONTROL_BACKING_OFF, error, reason, delay);
        return error;
}

static int control_lostf(AgentControl *c, int error, bool at_cap, const char *format, ...) _printf_(4, 5);
static int control_lostf(AgentControl *c, int error, bool at_cap, const char *format, ...) {
        _cleanup_free_ char *reason = NULL;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&reason, format, ap) < 0)
                reason = NULL;
        va_end(ap);
        return control_lost(c, error, reason ?: "out of memory", at_cap);
}

static int control_revoked(AgentControl *c, const char *reason) {
        control_drop_link(c);
        (void) sd_event_source_set_enabled(c->attempt_timer, SD_EVENT_OFF);
        control_set_state(c, AGENT_CONTROL_REVOKED, -EKEYREVOKED, reason, 0);
        return -EKEYREVOKED;
}

/* The controller accepted the stream: its first message arrived. */
static void control_accepted(AgentControl *c) {
        if (c->accepted)
                return;
        c->accepted = true;
        backoff_connected(&c->backoff, now(CLOCK_MONOTONIC));
        control_set_state(c, AGENT_CONTROL_CONNECTED, 0, NULL, 0);
}

static int control_send(AgentControl *c, const Ztna__V1__AgentMessage *msg) {
        int r;

        if (!c->link || !c->link->call)
                return -ENOTCONN;
        r = grpc_client_call_send(c->link->call, &msg->base);
        if (r < 0)
                return r;
        c->last_heartbeat = now(CLOCK_REALTIME);
        return 0;
}

static int control_send_hello(AgentControl *c) {
        size_t n = strv_length(c->label_keys);
        Ztna__V1__Hello__LabelsEntry entries[AGENT_CONTROL_LABELS_MAX], *ptrs[AGENT_CONTROL_LABELS_MAX];
        Ztna__V1__Hello hello = ZTNA__V1__HELLO__INIT;
        Ztna__V1__AgentMessage msg = ZTNA__V1__AGENT_MESSAGE__INIT;

        assert(n <= AGENT_CONTROL_LABELS_MAX);
        for (size_t k = 0; k < n; k++) {
                entries[k] = (Ztna__V1__Hello__LabelsEntry) ZTNA__V1__HELLO__LABELS_ENTRY__INIT;
                entries[k].key = c->label_keys[k];
                entries[k].value = c->label_values[k];
                ptrs[k] = &entries[k];
        }
        hello.version = c->version ?: (char *) "";
        hello.private_ip = c->private_ip ?: (char *) "";
        hello.data_plane_address = c->data_plane_address ?: (char *) "";
        hello.n_labels = n;
        hello.labels = n > 0 ? ptrs : NULL;
        msg.body_case = ZTNA__V1__AGENT_MESSAGE__BODY_HELLO;
        msg.hello = &hello;
        return control_send(c, &msg);
}

static int control_send_heartbeat(AgentControl *c) {
        AgentControlCounters counters = {};
        Ztna__V1__Counters pc = ZTNA__V1__COUNTERS__INIT;
        Ztna__V1__Heartbeat hb = ZTNA__V1__HEARTBEAT__INIT;
        Ztna__V1__AgentMessage msg = ZTNA__V1__AGENT_MESSAGE__INIT;

        if (c->callbacks.get_counters && !c->freed)
                c->callbacks.get_counters(c, &counters, c->userdata);
        pc.streams_active = counters.streams_active;
        pc.streams_total = counters.streams_total;
        pc.bytes_in = counters.bytes_in;
        pc.bytes_out = counters.bytes_out;
        pc.denials = counters.denials;
        pc.peers = counters.peers;
        hb.version = c->version ?: (char *) "";
        hb.private_ip = c->private_ip ?: (char *) "";
        hb.counters = &pc;
        hb.certificate_not_after_unix = c->identity.not_after / USEC_PER_SEC;
        msg.body_case = ZTNA__V1__AGENT_MESSAGE__BODY_HEARTBEAT;
        msg.heartbeat = &hb;
        return control_send(c, &msg);
}

static int on_heartbeat_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(control_unrefp) AgentControl *c = control_ref(userdata);
        int r;

        r = control_send_heartbeat(c);
        if (c->freed || !c->link)
                return 0;
        if (r < 0) {
                (void) control_lostf(c, r, false, "cannot send a heartbeat to the controller at %s: %s",
                                     strna(c->current), strerror(-r));
                return 0;
        }
        r = timer_arm(s, control_heartbeat_interval(c));
        if (r < 0)
                (void) control_lostf(c, r, false, "cannot schedule the next heartbeat: %s", strerror(-r));
        return 0;
}

/* ---- messages from the controller --------------------------------------------------------------------- */

static int control_on_config(AgentControl *c, const Ztna__V1__AgentConfig *pc) {
        _cleanup_strv_free_ char **groups = NULL;
        usec_t interval, old = control_heartbeat_interval(c);
        int r;

        if (!pc || pc->role != proto_role_from_spiffe(c->identity.role) || !streq_ptr(pc->id, c->identity.id) ||
            !streq_ptr(pc->spiffe_id, c->identity.spiffe_id))
                return control_lostf(c, -EBADMSG, false, "controller at %s sent the configuration of another agent",
                                     c->current);
        if (pc->heartbeat_interval_seconds == 0 || pc->heartbeat_interval_seconds > AGENT_HEARTBEAT_INTERVAL_MAX)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent a heartbeat interval of %u s",
                                     c->current, pc->heartbeat_interval_seconds);
        if (pc->certificate_lifetime_seconds == 0 || pc->certificate_lifetime_seconds > AGENT_CERTIFICATE_LIFETIME_MAX)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent a certificate lifetime of %llu s",
                                     c->current, (unsigned long long) pc->certificate_lifetime_seconds);
        if (!isempty(pc->remote_network) && !string_is_valid_text(pc->remote_network, AGENT_CONTROL_STRING_MAX))
                return control_lostf(c, -EBADMSG, false, "controller at %s sent an invalid remote network",
                                     c->current);
        if (pc->n_groups > IDENTITY_GROUPS_MAX)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent %zu groups", c->current,
                                     pc->n_groups);
        for (size_t k = 0; k < pc->n_groups; k++) {
                if (isempty(pc->groups[k]) || !string_is_valid_text(pc->groups[k], AGENT_CONTROL_STRING_MAX))
                        return control_lostf(c, -EBADMSG, false, "controller at %s sent an invalid group",
                                             c->current);
                r = strv_extend(&groups, pc->groups[k]);
                if (r < 0)
                        return control_lost(c, r, "out of memory", false);
        }

        interval = (usec_t) pc->heartbeat_interval_seconds * USEC_PER_SEC;
        c->config_interval = interval;
        if (control_heartbeat_interval(c) != old) {
                r = timer_arm(c->heartbeat_timer, control_heartbeat_interval(c));
                if (r < 0)
                        return control_lostf(c, r, false, "cannot schedule the next heartbeat: %s", strerror(-r));
        }

        if (c->callbacks.on_config)
                c->callbacks.on_config(c,
                                       &(const AgentControlConfig) {
                                               .role = c->identity.role,
                                               .id = pc->id,
                                               .spiffe_id = pc->spiffe_id,
                                               .remote_network = isempty(pc->remote_network) ? NULL
                                                                                              : pc->remote_network,
                                               .groups = groups,
                                               .heartbeat_interval = interval,
                                               .certificate_lifetime = (usec_t) pc->certificate_lifetime_seconds *
                                                                       USEC_PER_SEC,
                                       },
                                       c->userdata);
        return 0;
}

static int control_on_trust_bundle(AgentControl *c, const Ztna__V1__TrustBundleUpdate *u) {
        _cleanup_(trust_bundle_freep) TrustBundle *bundle = NULL;
        _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;
        DerBlob roots[IDENTITY_BUNDLE_MAX] = {};
        const char *why = NULL;
        size_t n;
        int r;

        n = u ? u->n_roots : 0;
        if (n == 0 || n > IDENTITY_BUNDLE_MAX)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent a trust bundle of %zu roots",
                                     c->current, n);
        for (size_t k = 0; k < n; k++)
                roots[k] = (DerBlob) { .data = u->roots[k].data, .size = u->roots[k].len };
        r = agent_bundle_from_der(c->identity.trust_domain, roots, n, &bundle, &why);
        if (r == -ENOMEM)
                return control_lost(c, r, "out of memory", false);
        if (r < 0)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent an invalid trust bundle: %s",
                                     c->current, strna(why));

        if (!der_blobs_equal(roots, n, c->identity.bundle, c->identity.n_bundle)) {
                _cleanup_(agent_identity_done) AgentIdentity next = {};

                /* Copy first, then swap: the identity and the context change together or not at all. */
                r = identity_copy_checked(&c->identity, &next);
                for (size_t k = 0; r >= 0 && k < next.n_bundle; k++)
                        next.bundle[k].data = mfree(next.bundle[k].data);
                if (r >= 0) {
                        next.n_bundle = 0;
                        for (size_t k = 0; k < n; k++) {
                                next.bundle[k].data = malloc(roots[k].size);
                                if (!next.bundle[k].data) {
                                        r = -ENOMEM;
                                        break;
                                }
                                memcpy(next.bundle[k].data, roots[k].data, roots[k].size);
                                next.bundle[k].size = roots[k].size;
                                next.n_bundle++;
                        }
                }
                if (r >= 0)
                        r = tls_context_from_identity(&next, c->connect_timeout, &ctx);
                if (r < 0)
                        return control_lostf(c, r, false, "cannot use the new trust bundle: %s", strerror(-r));
                agent_identity_done(&c->identity);
                c->identity = next;
                next = (AgentIdentity) {};
                tls_context_unref(c->tls_context);
                c->tls_context = TAKE_PTR(ctx);
        }

        if (c->callbacks.on_trust_bundle)
                c->callbacks.on_trust_bundle(c, c->identity.bundle, c->identity.n_bundle, c->userdata);
        return 0;
}

static int control_on_revocation(AgentControl *c, const Ztna__V1__Revocation *rv) {
        _cleanup_free_ char *reason = NULL;
        bool self;

        if (!rv || !string_is_valid_text(rv->spiffe_id, SPIFFE_ID_MAX) || isempty(rv->spiffe_id))
                return control_lostf(c, -EBADMSG, false, "controller at %s sent an invalid revocation", c->current);
        reason = text_sanitize(isempty(rv->reason) ? REASON_REVOKED : rv->reason);
        if (!reason)
                return control_lost(c, -ENOMEM, "out of memory", false);
        self = streq(rv->spiffe_id, c->identity.spiffe_id);

        if (c->callbacks.on_revocation)
                c->callbacks.on_revocation(c, rv->spiffe_id, reason, self, c->userdata);
        if (self && !c->freed)
                return control_revoked(c, reason);
        return 0;
}

/* Policy pushes go to the daemon, which applies them; a push it refuses ends the stream, so that the next
 * connection starts again from a snapshot. */
static int control_on_policy(AgentControl *c, ControlLink *l, const Ztna__V1__ControllerMessage *msg) {
        bool snapshot = msg->body_case == ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT;
        const char *what = snapshot ? "policy snapshot" : "policy delta";
        uint64_t revision;
        int r;

        if (snapshot ? !c->callbacks.on_policy_snapshot : !c->callbacks.on_policy_delta) {
                log_debug("Ignoring %s from the controller at %s.", what, c->current);
                return 0;
        }
        if (snapshot ? !msg->policy_snapshot : !msg->policy_delta)
                return control_lostf(c, -EBADMSG, false, "controller at %s sent an empty %s", c->current, what);

        revision = snapshot ? msg->policy_snapshot->revision : msg->policy_delta->revision;
        r = snapshot ? c->callbacks.on_policy_snapshot(c, msg->policy_snapshot, c->userdata)
                     : c->callbacks.on_policy_delta(c, msg->policy_delta, c->userdata);
        /* The callback may have freed, stopped or reconnected us. */
        if (r >= 0 || c->freed || c->link != l)
                return 0;
        if (r == -ESTALE)
                return control_lostf(c, r, false,
                                     "controller at %s sent policy delta %" PRIu64 ", which does not follow the "
                                     "revision held", c->current, revision);
        if (r == -EBADMSG)
                return control_lostf(c, r, false, "controller at %s sent an invalid %s (revision %" PRIu64 ")",
                                     c->current, what, revision);
        return control_lostf(c, r, false, "cannot apply %s %" PRIu64 " from the controller at %s: %s", what,
                             revision, c->current, strerror(-r));
}

static int control_on_message(AgentControl *c, ControlLink *l, const Ztna__V1__ControllerMessage *msg) {
        c->last_received = now(CLOCK_REALTIME);
        control_accepted(c);
        /* on_state may have freed, stopped or reconnected us. */
        if (c->freed || c->link != l)
                return 0;

        switch (msg->body_case) {
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG:
                return control_on_config(c, msg->config);
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE:
                return control_on_trust_bundle(c, msg->trust_bundle);
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_REVOCATION:
                return control_on_revocation(c, msg->revocation);
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_RENEW_NOW:
                if (c->callbacks.on_renew_now)
                        c->callbacks.on_renew_now(c, c->userdata);
                return 0;
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT:
        case ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_DELTA:
                return control_on_policy(c, l, msg);
        default:
                /* A body from a newer controller means nothing yet. */
                log_debug("Ignoring control message %i from the controller at %s.", (int) msg->body_case,
                          c->current);
                return 0;
        }
}

/* ---- transport callbacks ------------------------------------------------------------------------------ */

static int link_on_message(GrpcClientCall *call, ProtobufCMessage *msg, void *userdata) {
        _cleanup_(grpc_message_freep) ProtobufCMessage *owned = msg;
        _cleanup_(control_unrefp) AgentControl *c = NULL;
        ControlLink *l = userdata;

        if (!l->control)
                return -ECANCELED;
        c = control_ref(l->control);
        (void) control_on_message(c, l, (const Ztna__V1__ControllerMessage *) owned);
        /* A message that ended the link has cancelled the call already. */
        return 0;
}

static void link_on_finish(GrpcClientCall *call, GrpcStatus status, const char *message, void *userdata) {
        _cleanup_(control_unrefp) AgentControl *c = NULL;
        _cleanup_free_ char *text = NULL;
        ControlLink *l = userdata;
        int error;

        l->call = NULL;
        if (!l->control)
                return; /* the session's on_close frees the orphan */
        c = control_ref(l->control);

        text = isempty(message) ? NULL : text_sanitize(message);
        if (status == GRPC_STATUS_PERMISSION_DENIED && streq_ptr(message, REASON_REVOKED)) {
                (void) control_revoked(c, REASON_REVOKED);
                return;
        }

        error = grpc_status_to_errno(status);
        if (error >= 0)
                error = -ECONNRESET;
        if (text && agent_status_is_refusal(status)) {
                (void) control_lost(c, error, text, status == GRPC_STATUS_PERMISSION_DENIED);
                return;
        }
        (void) control_lostf(c, error, status == GRPC_STATUS_PERMISSION_DENIED,
                      "controller at %s ended the stream: %s%s%s", l->address, strna(grpc_status_to_string(status)),
                      text ? ": " : "", strempty(text));
}

static const GrpcClientCallbacks call_callbacks = {
        .on_message = link_on_message,
        .on_finish = link_on_finish,
};

static void link_on_session_close(H2Session *s, int error, void *userdata) {
        _cleanup_(control_unrefp) AgentControl *c = NULL;
        ControlLink *l = userdata;

        l->session = h2_session_unref(l->session);
        if (!l->control) {
                link_maybe_free(l);
                return;
        }

        /* The call (if any) has reported already; this is a session that ended without one. */
        c = control_ref(l->control);
        (void) control_lostf(c, error < 0 ? error : -ECONNRESET, false, "connection to the controller at %s closed: %s",
                      l->address, error < 0 ? strerror(-error) : "GOAWAY");
}

static const H2SessionCallbacks session_callbacks = { .on_close = link_on_session_close };

static void link_on_handshake(TlsConnection *tls, int error, void *userdata) {
        _cleanup_(control_unrefp) AgentControl *c = NULL;
        ControlLink *l = userdata;
        int r;

        assert(l->control); /* orphans have freed their TLS connection */
        c = control_ref(l->control);

        if (error < 0) {
                const char *why = tls_connection_get_error_reason(tls);

                if (agent_error_is_unreachable(error))
                        (void) control_lostf(c, -EHOSTUNREACH, false, "controller at %s unreachable: %s",
                                             l->address, why ?: strerror(-error));
                else
                        (void) control_lostf(c, -EPROTO, false, "TLS handshake with the controller at %s failed: %s",
                                             l->address, why ?: strerror(-error));
                return;
        }

        r = h2_session_new(TAKE_PTR(l->tls), NULL, &session_callbacks, l, &l->session);
        if (r >= 0)
                r = grpc_client_call_start(l->session, l->address, METHOD_CONNECT,
                                           &ztna__v1__controller_message__descriptor, AGENT_CONTROL_MESSAGE_MAX,
                                           USEC_INFINITY, &call_callbacks, l, &l->call);
        if (r >= 0)
                r = control_send_hello(c);
        if (r >= 0)
                r = timer_arm(c->heartbeat_timer, control_heartbeat_interval(c));
        if (r < 0)
                (void) control_lostf(c, r, false, "cannot open the control stream with the controller at %s: %s",
                                     l->address, strerror(-r));
}

static const TlsConnectionCallbacks tls_callbacks = { .on_handshake = link_on_handshake };

/* Resolves address (first usable result) and starts TCP + TLS. On failure *ret_reason says why. */
static int link_new(AgentControl *c, const char *address, ControlLink **ret, char **ret_reason) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
                                  .ai_flags = AI_NUMERICSERV };
        struct addrinfo *res = NULL, *ai;
        char port[sizeof("65535")];
        ControlLink *l;
        HostPort hp;
        int r, fd;

        *ret_reason = NULL;
        if (strnlen(address, HOST_PORT_STRING_MAX) >= HOST_PORT_STRING_MAX || parse_host_port(address, 0, &hp) < 0) {
                reasonf(ret_reason, "invalid controller address '%s'", address);
                return -EINVAL;
        }
        if (hp.family != AF_UNSPEC)
                hints.ai_flags |= AI_NUMERICHOST;
        hints.ai_family = hp.family;
        snprintf(port, sizeof(port), "%u", hp.port);
        r = getaddrinfo(hp.host, port, &hints, &res);
        if (r != 0) {
                reasonf(ret_reason, "controller at %s unreachable: %s", address, gai_strerror(r));
                return -EHOSTUNREACH;
        }
        for (ai = res; ai; ai = ai->ai_next)
                if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
                        break;
        if (!ai) {
                freeaddrinfo(res);
                reasonf(ret_reason, "controller at %s unreachable: no address", address);
                return -EHOSTUNREACH;
        }

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(res);
                reasonf(ret_reason, "cannot create a socket: %s", strerror(-r));
                return r;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
                r = -errno;
                freeaddrinfo(res);
                safe_close(fd);
                reasonf(ret_reason, "controller at %s unreachable: %s", address, strerror(-r));
                return agent_error_is_unreachable(r) ? -EHOSTUNREACH : r;
        }
        freeaddrinfo(res);

        l = calloc(1, sizeof(*l));
        if (!l) {
                safe_close(fd);
                return -ENOMEM;
        }
        l->address = strdup(address);
        if (!l->address) {
                safe_close(fd);
                free(l);
                return -ENOMEM;
        }
        l->control = c;
        r = tls_connection_new(c->tls_context, c->event, fd, &tls_callbacks, l, &l->tls);
        if (r < 0) {
                l->control = NULL;
                link_free(l);
                reasonf(ret_reason, "cannot set up TLS: %s", strerror(-r));
                return r;
        }
        *ret = l;
        return 0;
}

static int control_shuffle(AgentControl *c) {
        char **l;

        l = strv_copy(c->identity.controllers);
        if (!l)
                return -ENOMEM;
        /* Fisher–Yates: a crowd of agents does not all start with the first address. */
        for (size_t k = strv_length(l); k > 1; k--) {
                size_t j = (size_t) random_u64_range(k);
                char *t = l[k - 1];

                l[k - 1] = l[j];
                l[j] = t;
        }
        strv_free(c->addresses);
        c->addresses = l;
        c->next_address = 0;
        return 0;
}

static int control_attempt(AgentControl *c) {
        _cleanup_free_ char *reason = NULL;
        ControlLink *l = NULL;
        int r;

        control_drop_link(c);
        if (!c->addresses || c->next_address >= strv_length(c->addresses)) {
                r = control_shuffle(c);
                if (r < 0)
                        return control_lost(c, r, "out of memory", false);
        }
        r = free_and_strdup(&c->current, c->addresses[c->next_address++]);
        if (r < 0)
                return control_lost(c, r, "out of memory", false);

        r = link_new(c, c->current, &l, &reason);
        if (r < 0)
                return control_lost(c, r, reason ?: "out of memory", false);
        c->link = l;
        control_set_state(c, AGENT_CONTROL_CONNECTING, 0, NULL, 0);
        return 0;
}

static int on_attempt_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(control_unrefp) AgentControl *c = control_ref(userdata);

        (void) control_attempt(c);
        return 0;
}

/* ---- the object --------------------------------------------------------------------------------------- */

static void control_unref(AgentControl *c) {
        if (!c)
                return;
        assert(c->n_ref > 0);
        if (--c->n_ref > 0)
                return;

        control_drop_link(c);
        c->attempt_timer = sd_event_source_disable_unref(c->attempt_timer);
        c->heartbeat_timer = sd_event_source_disable_unref(c->heartbeat_timer);
        tls_context_unref(c->tls_context);
        agent_identity_done(&c->identity);
        free(c->version);
        free(c->private_ip);
        free(c->data_plane_address);
        strv_free(c->label_keys);
        strv_free(c->label_values);
        strv_free(c->addresses);
        free(c->current);
        sd_event_unref(c->event);
        free(c);
}

AgentControl *agent_control_free(AgentControl *c) {
        if (!c)
                return NULL;
        assert(!c->freed);

        /* Whoever is running right now (a callback of ours) keeps the memory; nothing else happens. */
        c->freed = true;
        c->callbacks = (AgentControlCallbacks) {};
        control_drop_link(c);
        (void) sd_event_source_set_enabled(c->attempt_timer, SD_EVENT_OFF);
        control_unref(c);
        return NULL;
}

static int strdup_text(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        if (!string_is_valid_text(s, AGENT_CONTROL_STRING_MAX))
                return -EINVAL;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int agent_control_new(sd_event *event, const AgentIdentity *identity, const AgentControlSettings *settings,
                      const AgentControlCallbacks *callbacks, void *userdata, AgentControl **ret) {
        _cleanup_(control_unrefp) AgentControl *c = NULL;
        const AgentControlSettings empty = {};
        usec_t base, cap, healthy;
        int r;

        assert(event);
        assert(identity);
        assert(ret);

        if (!settings)
                settings = &empty;
        base = settings->backoff_base ?: AGENT_DEFAULT_BACKOFF_BASE;
        cap = settings->backoff_cap ?: AGENT_DEFAULT_BACKOFF_CAP;
        healthy = settings->healthy_after ?: AGENT_DEFAULT_HEALTHY_AFTER;
        if (base > AGENT_RECONNECT_MAX || cap > AGENT_RECONNECT_MAX || healthy > AGENT_RECONNECT_MAX || cap < base ||
            settings->connect_timeout > AGENT_RECONNECT_MAX ||
            settings->heartbeat_interval > AGENT_HEARTBEAT_INTERVAL_MAX * USEC_PER_SEC)
                return -EINVAL;
        if (settings->data_plane_address) {
                HostPort hp;

                if (strnlen(settings->data_plane_address, HOST_PORT_STRING_MAX) >= HOST_PORT_STRING_MAX ||
                    parse_host_port(settings->data_plane_address, 0, &hp) < 0)
                        return -EINVAL;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (AgentControl) {
                .n_ref = 1,
                .event = sd_event_ref(event),
                .callbacks = callbacks ? *callbacks : (AgentControlCallbacks) {},
                .userdata = userdata,
                .heartbeat_setting = settings->heartbeat_interval,
                .connect_timeout = settings->connect_timeout ?: AGENT_CONTROL_CONNECT_TIMEOUT_DEFAULT,
                .state = AGENT_CONTROL_STOPPED,
        };
        backoff_init(&c->backoff, base, cap, healthy);

        r = strdup_text(settings->version, &c->version);
        if (r >= 0)
                r = strdup_text(settings->private_ip, &c->private_ip);
        if (r >= 0)
                r = strdup_text(settings->data_plane_address, &c->data_plane_address);
        if (r >= 0)
                r = labels_split(settings->labels, &c->label_keys, &c->label_values);
        if (r >= 0)
                r = identity_copy_checked(identity, &c->identity);
        if (r >= 0)
                r = tls_context_from_identity(&c->identity, c->connect_timeout, &c->tls_context);
        if (r < 0)
                return r;

        r = sd_event_add_time_relative(event, &c->attempt_timer, CLOCK_MONOTONIC, 0, 0, on_attempt_timer, c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->attempt_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->attempt_timer, "agent-control-attempt");
        r = sd_event_add_time_relative(event, &c->heartbeat_timer, CLOCK_MONOTONIC, 0, 0, on_heartbeat_timer, c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->heartbeat_timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->heartbeat_timer, "agent-control-heartbeat");

        *ret = TAKE_PTR(c);
        return 0;
}

int agent_control_start(AgentControl *c) {
        assert(c);

        if (c->state == AGENT_CONTROL_REVOKED)
                return -EKEYREVOKED;
        if (c->state != AGENT_CONTROL_STOPPED)
                return 0;
        return agent_control_reconnect(c);
}

int agent_control_stop(AgentControl *c) {
        assert(c);

        if (c->state == AGENT_CONTROL_STOPPED || c->state == AGENT_CONTROL_REVOKED)
                return 0;
        control_drop_link(c);
        (void) sd_event_source_set_enabled(c->attempt_timer, SD_EVENT_OFF);
        backoff_reset(&c->backoff);
        c->state = AGENT_CONTROL_STOPPED;
        return 0;
}

int agent_control_reconnect(AgentControl *c) {
        int r;

        assert(c);

        if (c->state == AGENT_CONTROL_REVOKED)
                return -EKEYREVOKED;
        /* From the event loop: no callback runs inside this function. */
        r = timer_arm(c->attempt_timer, 0);
        if (r < 0)
                return r;
        if (c->link) {
                /* A stream dropped on purpose: as far as the backoff goes it ended here. */
                control_drop_link(c);
                backoff_disconnected(&c->backoff, now(CLOCK_MONOTONIC));
        }
        (void) sd_event_source_set_enabled(c->heartbeat_timer, SD_EVENT_OFF);
        return 0;
}

int agent_control_set_identity(AgentControl *c, const AgentIdentity *identity) {
        _cleanup_(agent_identity_done) AgentIdentity copy = {};
        _cleanup_(tls_context_unrefp) TlsContext *ctx = NULL;
        bool same_controllers;
        int r;

        assert(c);
        assert(identity);

        if (!streq_ptr(identity->spiffe_id, c->identity.spiffe_id))
                return -EINVAL;
        r = identity_copy_checked(identity, &copy);
        if (r < 0)
                return r;
        r = tls_context_from_identity(&copy, c->connect_timeout, &ctx);
        if (r < 0)
                return r;

        same_controllers = strv_equal(copy.controllers, c->identity.controllers);
        agent_identity_done(&c->identity);
        c->identity = copy;
        copy = (AgentIdentity) {};
        tls_context_unref(c->tls_context);
        c->tls_context = TAKE_PTR(ctx);
        if (!same_controllers)
                c->addresses = strv_free(c->addresses); /* a new round over the new list */
        return 0;
}

int agent_control_send(AgentControl *c, const Ztna__V1__AgentMessage *msg) {
        assert(c);
        assert(msg);

        /* Reports go only to a controller that accepted us; a hello is ours to send. */
        if (c->state != AGENT_CONTROL_CONNECTED || !c->link || !c->link->call)
                return -ENOTCONN;
        return grpc_client_call_send(c->link->call, &msg->base);
}

AgentControlState agent_control_get_state(const AgentControl *c) {
        assert(c);
        return c->state;
}

const char *agent_control_get_controller(const AgentControl *c) {
        assert(c);
        return c->current;
}

usec_t agent_control_get_last_heartbeat(const AgentControl *c) {
        assert(c);
        return c->last_heartbeat;
}

usec_t agent_control_get_last_received(const AgentControl *c) {
        assert(c);
        return c->last_received;
}

usec_t agent_control_get_heartbeat_interval(const AgentControl *c) {
        assert(c);
        return control_heartbeat_interval(c);
}

const DerBlob *agent_control_get_trust_bundle(const AgentControl *c, size_t *ret_n) {
        assert(c);
        assert(ret_n);
        *ret_n = c->identity.n_bundle;
        return c->identity.bundle;
}
