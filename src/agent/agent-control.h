/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The agents' control stream (DESIGN.md §4, §7): one Control.Connect call to one of the identity's
 * controllers at a time, kept up for as long as the object runs.
 *
 *   attempt     the next controller address (the list is shuffled again after each round, so a crowd of
 *               agents does not pile onto the first one), TCP + TLS 1.3 with the identity's certificate;
 *               the server must be spiffe://<trust domain>/controller/<any> under the identity's bundle.
 *   connected   Hello (version, private IP, labels, data-plane address) is sent at once, then a Heartbeat
 *               (counters, certificate_not_after_unix) every interval. The state becomes connected when
 *               the controller's first message (its configuration) arrives: only then has it accepted us.
 *   pushes      config, trust bundle (checked, then used for new connections), revocation, renew-now and
 *               policy snapshots/deltas are handed to the callbacks.
 *   backing off any end of an attempt or a stream is followed by a wait drawn with full jitter from
 *               [0, min(cap, base * 2^n)] (backoff.h), n counting failed attempts since the last connection
 *               that stayed up for healthy_after; a PERMISSION_DENIED refusal other than revocation
 *               ("certificate superseded by a renewal") waits the whole cap.
 *   revoked     PERMISSION_DENIED "agent revoked", or a Revocation naming ourselves: the stream is closed
 *               and nothing is tried again (no retry storm) until a new object is made.
 *
 * A new certificate (agent_control_set_identity() after a renewal) is used by the next connection; the
 * live stream is not torn down. Callbacks run from the event loop, never from inside a function of this
 * API, and each of them may call any function here, agent_control_free() included (nothing of the object
 * is touched after that; a stream still open is closed with GOAWAY before the event loop goes on).
 *
 * Host names are resolved with a blocking getaddrinfo() (literal addresses never block); the first address
 * of a name is used. Programs using this ignore SIGPIPE (net-tls.h). Nothing here logs above debug: the
 * daemon logs what on_state reports. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "identity.h"
#include "ztna.pb-c.h"
#include "macro.h"
#include "time-util.h"

/* Per attempt: TCP connect + TLS handshake. */
#define AGENT_CONTROL_CONNECT_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)
/* Heartbeat interval when neither the settings, the controller nor the identity gives one. */
#define AGENT_CONTROL_HEARTBEAT_INTERVAL_DEFAULT (10 * USEC_PER_SEC)
/* Largest ControllerMessage accepted: a policy snapshot at the limits of agent-policy.h (4096 resources,
 * 65536 tunnelers' memberships) fits. */
#define AGENT_CONTROL_MESSAGE_MAX (16U * 1024U * 1024U)
/* Longest text sent or accepted (version, private IP, label, data-plane address, reasons): the
 * controller's STORE_STRING_MAX. */
#define AGENT_CONTROL_STRING_MAX 1024U
/* Labels sent in the hello: the controller's STORE_LABELS_MAX. */
#define AGENT_CONTROL_LABELS_MAX 32U

typedef struct AgentControl AgentControl;

typedef enum AgentControlState {
        AGENT_CONTROL_STOPPED,          /* not started, or agent_control_stop() */
        AGENT_CONTROL_CONNECTING,       /* an attempt is under way */
        AGENT_CONTROL_CONNECTED,        /* the controller accepted the stream */
        AGENT_CONTROL_BACKING_OFF,      /* waiting before the next attempt */
        AGENT_CONTROL_REVOKED,          /* final */
        _AGENT_CONTROL_STATE_MAX,
        _AGENT_CONTROL_STATE_INVALID = -EINVAL,
} AgentControlState;

/* "stopped", "connecting", "connected", "backing-off", "revoked"; NULL for anything else. */
const char *agent_control_state_to_string(AgentControlState s);

/* What on_state reports. Strings are borrowed for the callback's duration. */
typedef struct AgentControlEvent {
        AgentControlState state;
        const char *controller;         /* connecting/connected: the address; backing-off/revoked: the one
                                         * that failed or refused (NULL after agent_control_stop()) */
        int error;                      /* backing-off/revoked: why the attempt or stream ended (negative
                                         * errno: grpc_status_to_errno() of a status, -EHOSTUNREACH, -EPROTO
                                         * a TLS failure, -EBADMSG a malformed push, …); else 0 */
        const char *reason;             /* printable and secret-free when error < 0, else NULL */
        usec_t delay;                   /* backing-off: the wait before the next attempt */
        unsigned attempt;               /* backing-off: failed attempts in a row (1 for the first) */
} AgentControlEvent;

/* The AgentConfig the controller pushed (checked to be ours: role, id, SPIFFE ID). Borrowed. */
typedef struct AgentControlConfig {
        SpiffeRole role;
        const char *id;
        const char *spiffe_id;
        const char *remote_network;     /* NULL when empty */
        char **groups;                  /* NULL when empty */
        usec_t heartbeat_interval;
        usec_t certificate_lifetime;
} AgentControlConfig;

/* Sent with every heartbeat; zeroes when there is no getter. */
typedef struct AgentControlCounters {
        uint64_t streams_active;
        uint64_t streams_total;
        uint64_t bytes_in;
        uint64_t bytes_out;
        uint64_t denials;
        uint32_t peers;
} AgentControlCounters;

/* Every callback is optional. */
typedef struct AgentControlCallbacks {
        void (*on_state)(AgentControl *c, const AgentControlEvent *event, void *userdata);
        void (*on_config)(AgentControl *c, const AgentControlConfig *config, void *userdata);
        /* The complete new set of roots (DER, checked: CA roots of our trust domain). Already used for the
         * next connections; the daemon persists it. */
        void (*on_trust_bundle)(AgentControl *c, const DerBlob *roots, size_t n_roots, void *userdata);
        /* self: the revocation names us; on_state(revoked) follows. Otherwise a peer (a tunneler, for
         * connectors) whose data-plane streams must be closed. */
        void (*on_revocation)(AgentControl *c, const char *spiffe_id, const char *reason, bool self,
                              void *userdata);
        void (*on_renew_now)(AgentControl *c, void *userdata);
        /* Policy pushes (agent-policy.h), borrowed for the call. A negative return (-ESTALE: a delta that
         * does not follow the revision held; -EBADMSG: refused content) ends the stream like a failure, so
         * the next connection starts from a fresh snapshot. Without these callbacks pushes are ignored. */
        int (*on_policy_snapshot)(AgentControl *c, const Ztna__V1__PolicySnapshot *s, void *userdata);
        int (*on_policy_delta)(AgentControl *c, const Ztna__V1__PolicyDelta *d, void *userdata);
        /* Fills the counters for the heartbeat about to be sent (*ret is zeroed before). Must not free c. */
        void (*get_counters)(AgentControl *c, AgentControlCounters *ret, void *userdata);
} AgentControlCallbacks;

typedef struct AgentControlSettings {
        usec_t heartbeat_interval;      /* 0: the controller's, else the identity's, else the default */
        usec_t backoff_base;            /* 0: AGENT_DEFAULT_BACKOFF_BASE (agent-conf.h) */
        usec_t backoff_cap;             /* 0: AGENT_DEFAULT_BACKOFF_CAP; must be >= the base */
        usec_t healthy_after;           /* 0: AGENT_DEFAULT_HEALTHY_AFTER */
        usec_t connect_timeout;         /* 0: AGENT_CONTROL_CONNECT_TIMEOUT_DEFAULT */
        const char *version;            /* may be NULL */
        const char *private_ip;         /* may be NULL */
        const char *data_plane_address; /* connectors: host:port tunnelers dial; may be NULL */
        char **labels;                  /* "key=value" strv, unique keys; may be NULL */
} AgentControlSettings;

/* Copies identity (which must pass identity_check()) and settings; does not connect yet. -EINVAL for an
 * incomplete or inconsistent identity, or invalid settings (durations above AGENT_RECONNECT_MAX, a cap
 * below the base, a heartbeat interval above AGENT_HEARTBEAT_INTERVAL_MAX seconds, over-long text or text
 * with control characters, more than AGENT_CONTROL_LABELS_MAX labels, a label without "=", duplicate label
 * keys), -ENOMEM. settings and callbacks may be NULL. */
int agent_control_new(sd_event *event, const AgentIdentity *identity, const AgentControlSettings *settings,
                      const AgentControlCallbacks *callbacks, void *userdata, AgentControl **ret);
/* Closes the stream (GOAWAY), cancels timers, frees. No callback runs afterwards. NULL allowed. */
AgentControl *agent_control_free(AgentControl *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentControl *, agent_control_free);

/* From stopped: the first attempt starts from the event loop, at once. No-op when already running;
 * -EKEYREVOKED once revoked. */
int agent_control_start(AgentControl *c);
/* Closes the stream, cancels any wait, forgets the backoff: state stopped at once (not reported through
 * on_state: the caller knows). No-op when stopped or revoked. */
int agent_control_stop(AgentControl *c);
/* Drops the current stream or wait and attempts the next controller now (from the event loop); the
 * backoff is kept. Also starts a stopped object. -EKEYREVOKED once revoked. */
int agent_control_reconnect(AgentControl *c);
/* A renewed (or re-authenticated, or trust-bundle-updated) identity for the same SPIFFE ID: copied, used
 * by the next connection; the live stream stays. -EINVAL for an invalid identity or another SPIFFE ID,
 * -ENOMEM; c is unchanged on failure. */
int agent_control_set_identity(AgentControl *c, const AgentIdentity *identity);

/* Sends msg on the accepted stream (connectors: forwarded tunneler heartbeats, flow events). -ENOTCONN
 * without one; -ENOBUFS when its queue is full (msg is dropped, the stream stays: these messages are
 * reports, not commands). */
int agent_control_send(AgentControl *c, const Ztna__V1__AgentMessage *msg);

AgentControlState agent_control_get_state(const AgentControl *c);
/* The address of the current or last attempt ("host:port"); NULL before the first. */
const char *agent_control_get_controller(const AgentControl *c);
/* CLOCK_REALTIME of the last Hello or Heartbeat queued on a stream, 0 if none yet. */
usec_t agent_control_get_last_heartbeat(const AgentControl *c);
/* CLOCK_REALTIME of the last message received from a controller, 0 if none yet. The control protocol has
 * no heartbeat acknowledgement; a live stream is also proven by HTTP/2 PINGs (net-h2.h). */
usec_t agent_control_get_last_received(const AgentControl *c);
/* The heartbeat interval in use. */
usec_t agent_control_get_heartbeat_interval(const AgentControl *c);
/* The trust bundle now used for new connections (borrowed until the next push or set_identity). */
const DerBlob *agent_control_get_trust_bundle(const AgentControl *c, size_t *ret_n);
