/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller daemon's state and event sources (one sd-event loop, no threads):
 *   - gRPC listeners (socket-activated by FDNAME "grpc", else bound from ListenGRPC=), each accepted
 *     connection going TLS → HTTP/2 → the GrpcServer serving Enrollment and Control;
 *   - the admin listener fds ("admin" / ListenAdmin=) are taken and held for the admin API;
 *   - the CA (controller-ca.h) with a maintenance timer; the control-stream registry
 *     (controller-control.h) with its heartbeat flush and OFFLINE timers;
 *   - org.ztna.Controller1 on the system bus (controller-bus.h);
 *   - sd_notify READY=1 once listening, STATUS= with counts, WATCHDOG=1 from the loop;
 *   - SIGTERM/SIGINT: STOPPING=1, stop accepting, GOAWAY on every session, exit once they are gone or
 *     after MANAGER_DRAIN_TIMEOUT. */

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-polkit.h"
#include "controller-ca.h"
#include "controller-conf.h"
#include "controller-store.h"
#include "creds-util.h"
#include "hashmap.h"
#include "net-grpc.h"
#include "net-listen.h"
#include "net-tls.h"

/* Longest SIGTERM drain before remaining sessions are cut. */
#define MANAGER_DRAIN_TIMEOUT (10 * USEC_PER_SEC)
/* Connections (handshaking or established) the gRPC listeners hold at once, all listeners together. */
#define MANAGER_CONNECTIONS_MAX 4096U
/* Connections without a client certificate (enrollment, re-authentication) from one source address, and
 * how long such a connection may stay open: they cannot be told apart from each other, so they get a
 * share of MANAGER_CONNECTIONS_MAX per address and a bounded life, never all the slots agents need. */
#define MANAGER_ANONYMOUS_PER_SOURCE_MAX 64U
#define MANAGER_ANONYMOUS_LIFETIME (60 * USEC_PER_SEC)
/* Largest gRPC message on authenticated methods. */
#define MANAGER_GRPC_MESSAGE_MAX (4U * 1024U * 1024U)
/* How often CA maintenance looks again at the latest (it also runs when something is due sooner). */
#define MANAGER_CA_CHECK_INTERVAL (10 * USEC_PER_MINUTE)
#define MANAGER_LISTENERS_MAX CONTROLLER_LISTEN_MAX

typedef struct Connection Connection;
typedef struct ControlRegistry ControlRegistry;

typedef struct HttpServer HttpServer;
typedef struct ManagerOptions {
        const char *confdir;        /* NULL: ZTNA_CONFDIR */
        bool bus;                   /* register org.ztna.Controller1 on the system bus (or $ZTNA_BUS_ADDRESS) */
        const char *kek_file;       /* NULL: config's KeyFile= */
} ManagerOptions;

/* Since the daemon started, for /metrics (controller-metrics.h). */
typedef struct ManagerCounters {
        uint64_t enrollments;       /* agents enrolled (controller-enroll.c) */
        uint64_t renewals;          /* certificates renewed, or re-issued by re-authentication */
        uint64_t flows;             /* flows connectors reported (their start event, whatever the result) */
        uint64_t denials;           /* of those, denied by policy */
} ManagerCounters;

typedef struct Manager {
        sd_event *event;
        ControllerConfig config;
        Store *store;
        ControllerCa *ca;

        TlsContext *tls;
        GrpcServer *grpc;
        Listener *listeners[MANAGER_LISTENERS_MAX];
        size_t n_listeners;
        int admin_fds[MANAGER_LISTENERS_MAX];   /* passed as "admin"; the admin servers serve dups */
        size_t n_admin_fds;
        HttpServer *admin_servers[MANAGER_LISTENERS_MAX]; /* controller-admin.h */
        size_t n_admin_servers;
        Connection *connections;    /* linked list */
        size_t n_connections;
        Hashmap *anonymous_sources; /* source address → number of certificate-less connections (uintptr_t) */

        ControlRegistry *control;

        sd_bus *bus;
        PolkitRegistry *polkit_registry;

        sd_event_source *ca_timer;
        sd_event_source *drain_timer;
        sd_event_source *status_timer;

        ManagerCounters counters;

        bool stopping;
        usec_t started_at;
} Manager;

int manager_new(const ManagerOptions *options, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Opens the listeners and the bus, sends READY=1. */
int manager_start(Manager *m);
/* Graceful stop (SIGTERM): idempotent; the loop exits when drained. */
void manager_stop(Manager *m);

/* Revokes an agent: the store (refusing renewals and re-authentication from now on), the audit trail, and
 * the live control stream (a Revocation, then the stream is closed). spiffe_id_or_id: a full SPIFFE ID or a
 * bare agent id (resolved when exactly one agent has it: -ENOTUNIQ otherwise). -ENOENT unknown, -EALREADY
 * already revoked. */
int manager_revoke_agent(Manager *m, const char *spiffe_id_or_id, const char *reason, const char *actor);

/* Asks agents to renew their certificate now (RenewNow on their control stream): one agent (SPIFFE ID or bare
 * id, resolved as for manager_revoke_agent()) or, for NULL or "", every connected agent. Returns the number of
 * streams told (an agent without a live stream renews on its own schedule). -ENOENT, -ENOTUNIQ, -EINVAL. */
int manager_request_renewal(Manager *m, const char *spiffe_id_or_id, const char *actor);

/* After the trust bundle or server certificate changed: re-apply to TLS and push the bundle to agents. */
int manager_ca_changed(Manager *m, unsigned changes);

/* The policy changed in the store (networks, resources, groups, memberships, policies): every connected
 * agent it concerns gets a PolicyDelta, or a fresh PolicySnapshot (controller-control.h). Call after the
 * store transaction committed. Logs; failures to push are not the caller's (the agent is then told to
 * reconnect and gets a snapshot). */
void manager_policy_changed(Manager *m);

/* Sends STATUS= with current counts. */
void manager_update_status(Manager *m);

/* Whether the client certificate of call certifies the key recorded for agent: 1 yes, 0 no (a renewal has
 * replaced that key, or the agent was re-enrolled with another one), -ENOENT no client certificate. An old
 * certificate stays cryptographically valid until it expires; this is what makes it useless once the
 * agent moved to a new key. */
int manager_peer_has_recorded_key(GrpcCall *call, const StoreAgent *agent);

/* Whether role is one an agent enrolls as (connector, tunneler). */
bool manager_role_is_agent(SpiffeRole role);
/* The network address of the caller ("1.2.3.4:5678"), for logs and audit; NULL when unknown. */
const char *manager_call_peer_address(GrpcCall *call);

/* Counters per source address (the host part of a peer address) for things an unauthenticated peer can
 * hold: hold takes one of at most max for the address (-EBUSY at max) and returns the key to release it
 * with; release gives it back and frees the key. The map is created and freed as needed. */
int source_counter_hold(Hashmap **counters, const char *peer_address, unsigned max, char **ret_source);
void source_counter_release(Hashmap **counters, char *source);

/* The lifetime configured for a role's leaves. */
usec_t manager_leaf_lifetime(const Manager *m, SpiffeRole role);
