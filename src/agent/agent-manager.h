/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The running agent (`ztna-connector run`, `ztna-tunneler run`; DESIGN.md §7): one object owns the event
 * loop's sources, the configuration, the secrets and the clients.
 *
 *   secrets     the KEK and the serialized identity are kept in KeyringSecrets (kernel keyring, else locked
 *               memory and one warning); an identity is parsed from the keyring when it is needed (to start
 *               the control client, to renew) and wiped right after. The manager keeps in plain memory
 *               only what is public: ids, controllers, certificate validity (AgentManagerInfo).
 *   states      unenrolled (no identity: enrolls with the credential ENROLLMENT_TOKEN when there is one,
 *               else waits for Enroll over D-Bus) → enrolling → connecting → online ⇄
 *               offline (backing off); reauthenticating after the certificate expired; revoked (final:
 *               nothing is tried again, the identity stays on disk for inspection); stopping.
 *   renewal     a timer fires when RenewAt= ± Jitter= of the lifetime remains; the renewed identity is
 *               saved (identity.previous kept), handed to the control client (live streams stay), and
 *               committed once a connection with it is accepted. A certificate that has expired (downtime)
 *               is replaced by re-authentication with the recorded key.
 *   systemd     READY=1 the first time the control stream is accepted (or at once when unenrolled without a
 *               token: the daemon is ready to be enrolled; or when enrolling with the credential failed),
 *               STATUS= on every state change, watchdog from the loop,
 *               STOPPING=1 on SIGTERM/SIGINT, then a bounded drain.
 *
 * The bus (agent-bus.h) and the health listener (agent-health.h) read the manager and call the functions
 * below; the manager tells the bus about changes through agent_bus_send_changed(). */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "agent-conf.h"
#include "agent-control.h"
#include "agent-enroll.h"
#include "backoff.h"
#include "bus-polkit.h"
#include "creds-util.h"
#include "identity-store.h"
#include "identity-keyring.h"
#include "identity.h"

typedef struct AgentHealth AgentHealth;

typedef enum AgentState {
        AGENT_STATE_UNENROLLED,
        AGENT_STATE_ENROLLING,
        AGENT_STATE_CONNECTING,
        AGENT_STATE_ONLINE,
        AGENT_STATE_OFFLINE,
        AGENT_STATE_REAUTHENTICATING,
        AGENT_STATE_REVOKED,
        AGENT_STATE_STOPPING,
        _AGENT_STATE_MAX,
        _AGENT_STATE_INVALID = -EINVAL,
} AgentState;

/* "unenrolled", "enrolling", "connecting", "online", "offline", "reauthenticating", "revoked",
 * "stopping"; NULL for anything else. */
const char *agent_state_to_string(AgentState s);

/* Retry delay after a failed renewal (the certificate is still valid), capped at the time left. */
#define AGENT_RENEW_RETRY_MIN (5 * USEC_PER_SEC)
#define AGENT_RENEW_RETRY_MAX (5 * USEC_PER_MINUTE)
/* The soonest a scheduled renewal happens after the previous one. */
#define AGENT_RENEW_MIN_GAP USEC_PER_SEC

/* What the manager holds in plain memory about its identity: nothing secret. */
typedef struct AgentManagerInfo {
        char *id;
        char *spiffe_id;
        char *trust_domain;
        char *remote_network;           /* connectors, NULL when none */
        char **groups;                  /* tunnelers, NULL when none */
        char **controllers;
        usec_t not_before;              /* of the leaf, CLOCK_REALTIME */
        usec_t not_after;
        usec_t certificate_lifetime;    /* as the controller configured it, 0 if unknown */
} AgentManagerInfo;

typedef struct AgentManagerCounters {
        uint64_t renewals;              /* successful renewals and re-authentications */
        uint64_t renewal_failures;
        uint64_t reconnects;            /* control connections accepted after the first */
        AgentControlCounters data;      /* streams, bytes, denials, peers (the data plane fills them) */
} AgentManagerCounters;

typedef struct AgentManager AgentManager;
typedef struct AgentPolicy AgentPolicy;

/* What a role adds to the shared daemon: its data plane (src/connector/, src/tunneler/). Every hook is
 * optional and runs from the event loop; role_data in the manager is theirs. */
typedef struct AgentRoleOps {
        /* Enrolled (at start, or once Enroll succeeded), before the control stream dials: listeners up.
         * Logs its errors; a failure is fatal at start and logged after an Enroll. */
        int (*start)(AgentManager *m);
        /* The identity changed (renewal, re-authentication, trust bundle): new TLS contexts for new
         * connections (agent_manager_get_identity()). */
        void (*identity_changed)(AgentManager *m);
        /* A policy snapshot or delta was applied (agent_manager_get_policy()): re-check live streams. */
        void (*policy_changed)(AgentManager *m);
        /* The controller revoked a peer (connectors: a tunneler): close its streams at once. */
        void (*peer_revoked)(AgentManager *m, const char *spiffe_id);
        /* We are revoked or stopping: close everything. */
        void (*stop)(AgentManager *m);
        /* Fills the data-plane counters for the heartbeat and the bus. */
        void (*get_counters)(AgentManager *m, AgentControlCounters *ret);
        /* Readiness beyond the control stream (connector: accepting tunnelers); *ret_reason when not. */
        bool (*is_ready)(AgentManager *m, const char **ret_reason);
        /* Frees role_data. */
        void (*free)(AgentManager *m);
} AgentRoleOps;

/* Reports the end of agent_manager_enroll() / agent_manager_rotate(): error 0, or a negative errno with a
 * printable, secret-free reason. Runs from the event loop; with -ECANCELED when the manager is freed
 * first. */
typedef void (*AgentManagerDone)(AgentManager *m, int error, const char *reason, void *userdata);

struct AgentManager {
        sd_event *event;
        SpiffeRole role;
        AgentConfig config;
        bool user_mode;                 /* session bus instead of the system bus */
        bool bus_enabled;               /* false with $ZTNA_NO_BUS (tests, development) */
        char *kek_file;                 /* --kek-file, NULL: the credential only */

        KeyringSecret *kek;
        KeyringSecret *identity;        /* serialized identity (identity_serialize()), NULL: unenrolled */
        AgentManagerInfo info;

        AgentState state;
        AgentControl *control;
        AgentRequest *request;          /* enrollment, renewal or re-authentication in flight */
        bool request_new_key;
        AgentManagerDone request_done;
        void *request_userdata;
        bool identity_uncommitted;      /* identity.previous kept until a connection proves the new one */

        sd_event_source *renew_timer;
        unsigned renew_failures;        /* renewals failed in a row (the retry delay doubles) */
        Backoff reauth_backoff;         /* re-authentication attempts while the certificate is expired */

        char *controller;               /* the current or last controller address */
        char *private_ip;               /* detected when PrivateIP= is unset */
        char *last_error;               /* why the last attempt, renewal or enrollment failed */
        usec_t last_heartbeat;          /* CLOCK_REALTIME */
        AgentManagerCounters counters;
        bool ready_sent;
        bool connected_once;            /* a control stream was accepted before (for Reconnects) */

        sd_bus *bus;
        PolkitRegistry *polkit_registry;
        sd_event_source *bus_changed;   /* coalesces PropertiesChanged */

        AgentHealth *health;

        const AgentRoleOps *role_ops;   /* NULL: no data plane */
        void *role_data;
        AgentPolicy *policy;            /* what the controller pushed */
        bool role_started;
};

/* The D-Bus names of a role's daemon (see dbus/org.ztna.Connector1.xml). */
const char *agent_bus_name(SpiffeRole role);       /* "org.ztna.Connector1", "org.ztna.Tunneler1" */
const char *agent_bus_path(SpiffeRole role);       /* "/org/ztna/Connector1", … */
const char *agent_bus_interface(SpiffeRole role);  /* = the bus name */

typedef struct AgentManagerOptions {
        SpiffeRole role;
        const char *confdir;            /* NULL: ZTNA_CONFDIR */
        const char *state_dir;          /* --state-dir, NULL: the configuration's */
        const char *kek_file;           /* --kek-file, NULL: the credential only */
        char **controllers;             /* --controller (replaces Controller=), NULL: none given */
        const AgentRoleOps *role_ops;   /* the role's data plane, may be NULL */
        const char *health_listen;      /* --health-listen, NULL: the configuration's */
        bool user_mode;
} AgentManagerOptions;

/* Loads the configuration and the KEK, loads the identity if there is one (a damaged or foreign identity
 * file is an error: it is never replaced silently), and sets up the event loop with its signals and
 * watchdog. Logs its errors. */
int agent_manager_new(const AgentManagerOptions *options, AgentManager **ret);
AgentManager *agent_manager_free(AgentManager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentManager *, agent_manager_free);

/* Connects the bus and the health listener, starts the control client (when enrolled), sends READY=1
 * when it may; then runs the loop until SIGTERM and the drain. Logs its errors. */
int agent_manager_run(AgentManager *m);

/* Helpers shared by the manager and `enroll` (agent-main.c); they log only where they say so. */

/* Largest ControllerCAFile= read. */
#define AGENT_CA_FILE_MAX (64U * 1024U)

/* Applies --state-dir=, --controller=, --health-listen= over the configuration and checks it again. Logs. */
int agent_apply_options(AgentConfig *c, const AgentManagerOptions *options);
/* Loads the KEK (credential ztna.kek, else kek_file; with create, a missing kek_file is created first) and
 * warns when it came from a file. Logs its errors. */
int agent_kek_load(const char *kek_file, bool create, uint8_t ret[static KEK_SIZE], bool *ret_from_credential);
/* Id= if set (returns 0), else the host name up to its first dot if it is a valid agent id (returns 1: a
 * default, which a token bound to an id overrides); -EINVAL otherwise. */
int agent_default_id(const AgentConfig *c, char **ret);
/* The PEM text of ControllerCAFile= in *ret (NULL and 0 when unset; 1 when read). Errors of read. */
int agent_read_controller_ca(const AgentConfig *c, char **ret);
/* identity_store_save() into dir (created, mode 0700, if missing), then reads it back, checks it equals i,
 * and commits (drops identity.previous). *ret_reason as identity_store_save(). */
int agent_identity_persist(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                           const AgentIdentity *i, IdentitySaveFlags flags, const char **ret_reason);

/* Enrollment with a token (the D-Bus Enroll method): only while unenrolled (-EALREADY otherwise, -EBUSY
 * while one runs). The token is copied and wiped. On success the identity is saved and committed and the
 * control client starts; done gets 0. Errors before starting are returned and done is not called. */
int agent_manager_enroll(AgentManager *m, const char *token, AgentManagerDone done, void *userdata);

/* Renews the certificate now (new_key: with a fresh key pair). -ENOTCONN when unenrolled, -EKEYREVOKED
 * when revoked, -EBUSY while a request runs. */
int agent_manager_rotate(AgentManager *m, bool new_key, AgentManagerDone done, void *userdata);

/* Drops the control stream and dials again at once. -ENOTCONN when unenrolled, -EKEYREVOKED when
 * revoked. */
int agent_manager_reconnect(AgentManager *m);

/* True when the control stream is up (online) and the role is ready. For /readyz. */
bool agent_manager_is_ready(const AgentManager *m);

/* For the roles. The current identity, parsed from the keyring (with the Controller= override); the caller
 * wipes it with agent_identity_done(). -ENOTCONN when unenrolled. */
int agent_manager_get_identity(AgentManager *m, AgentIdentity *ret);
/* The policy held (agent-policy.h); never NULL once the manager exists. */
const AgentPolicy *agent_manager_get_policy(const AgentManager *m);
/* A report for the controller on the control stream (agent_control_send()); -ENOTCONN while offline. */
int agent_manager_send(AgentManager *m, const Ztna__V1__AgentMessage *msg);
