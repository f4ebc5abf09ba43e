/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The tunneler's data plane (DESIGN.md §4, §5): mTLS HTTP/2 sessions to connectors, one per connector in
 * use, opened on demand and kept while streams use them (closed after TUNNELER_SESSION_IDLE without).
 *
 *   open       tunneler_dataplane_connect(host, port, fd): the held policy names the resource covering
 *              host:port (agent_policy_find_resource(); none → -EACCES at once, nothing is dialed) and its
 *              network; a connector of that network is chosen — the one with the fewest live streams
 *              (relayed or waiting for its session), ties broken at random — and a CONNECT stream opened
 *              on its session (connect_pipe_open()). A session is dialed on demand: the connector's
 *              address (an IP literal directly, a name through net-resolve.h, each resolved address in
 *              turn), TCP + TLS 1.3 bounded by connect_timeout, and the peer must present exactly the
 *              SPIFFE ID the policy lists for that connector. Requests wait for a session to come up in a
 *              queue of at most TUNNELER_PENDING_MAX over all sessions.
 *   failover   a connector whose session fails (DNS, TCP, TLS, or the session lost with an error) is
 *              penalised for TUNNELER_CONNECTOR_PENALTY: it is chosen only when every other connector of
 *              the network is penalised too. The requests that were waiting for it, and those whose
 *              CONNECT was sent but not answered when the session went away, are tried on the next
 *              connector of the network (each connector at most once per request); relayed streams on a
 *              lost session end.
 *   reply      on_result(status) runs once per request while the local socket is still open: 200 when
 *              relaying starts, else the connector's status (403, 502, 504, 429), 502 when no connector
 *              could be reached, 504 when the CONNECT went unanswered for idle_timeout, 429 when every
 *              connector's session was at its stream limit — the front-end writes its SOCKS/HTTP reply
 *              then. on_result must not free the data plane.
 *   heartbeat  on every session, TunnelSession.Heartbeats carries a TunnelerHeartbeat at once and then
 *              every heartbeat interval (version, private IP, counters), which the connector forwards.
 *
 * The data plane never keeps the identity itself: one client TlsContext is built from it (and again on
 * tunneler_dataplane_set_identity()), and each dial narrows that context's peer policy to the connector
 * dialed (net-tls.h: connections keep the configuration they started with).
 *
 * Every callback runs from the event loop. Nothing here logs above debug. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent-control.h"
#include "agent-policy.h"
#include "identity.h"
#include "macro.h"
#include "time-util.h"

#define TUNNELER_SESSION_IDLE (60 * USEC_PER_SEC)
/* When the last stream ends, freed buffers go back to the kernel this much later. */
#define TUNNELER_TRIM_DELAY (1 * USEC_PER_SEC)
#define TUNNELER_CONNECTOR_PENALTY (30 * USEC_PER_SEC)
#define TUNNELER_PENDING_MAX 4096U      /* requests waiting for a session */
/* Largest HeartbeatAck accepted from a connector. */
#define TUNNELER_HEARTBEAT_ACK_MAX 1024U

typedef struct TunnelerDataPlane TunnelerDataPlane;

/* status: 200, or the refusal (403, 429, 502, 504). fd is still open and owned by the data plane. */
typedef void (*TunnelerResultCallback)(int fd, unsigned status, void *userdata);

typedef struct TunnelerDataPlaneSettings {
        usec_t connect_timeout;         /* TCP + TLS to a connector; 0: AGENT_DEFAULT_CONNECT_TIMEOUT */
        usec_t idle_timeout;            /* per relayed stream; USEC_INFINITY (or 0): none */
        usec_t heartbeat_interval;      /* 0: AGENT_CONTROL_HEARTBEAT_INTERVAL_DEFAULT */
        const char *version;            /* copied; NULL: "" */
        const char *private_ip;         /* copied; NULL: "" */
        usec_t session_idle;            /* 0: TUNNELER_SESSION_IDLE */
        char **resolvers;               /* for connector addresses that are names; NULL: resolv_conf's */
        const char *resolv_conf;        /* NULL: RESOLVE_RESOLV_CONF (tests) */
} TunnelerDataPlaneSettings;

/* policy: borrowed, read at each connect (the daemon's AgentPolicy). identity: read here only (the caller
 * wipes it). -EINVAL for an unusable identity or settings, errors of net-tls. */
int tunneler_dataplane_new(sd_event *event, const AgentIdentity *identity, const AgentPolicy *policy,
                           const TunnelerDataPlaneSettings *settings, TunnelerDataPlane **ret);
/* Resets every stream, closes every local socket still held (no on_result) and every session. NULL
 * allowed. */
TunnelerDataPlane *tunneler_dataplane_free(TunnelerDataPlane *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(TunnelerDataPlane *, tunneler_dataplane_free);

/* A renewed identity or trust bundle: new sessions use it, live ones keep theirs. */
int tunneler_dataplane_set_identity(TunnelerDataPlane *d, const AgentIdentity *identity);
/* The private IP the heartbeats carry from now on (copied; NULL: none). */
int tunneler_dataplane_set_private_ip(TunnelerDataPlane *d, const char *private_ip);
/* The policy changed: sessions to connectors no longer listed are closed once idle. */
void tunneler_dataplane_policy_changed(TunnelerDataPlane *d);
/* The controller revoked a connector: its session and streams are closed now and it is penalised.
 * Returns how many streams were closed. */
unsigned tunneler_dataplane_close_connector(TunnelerDataPlane *d, const char *spiffe_id);

/* fd: a connected local stream socket. On success (0) it is taken: on_result follows from the event loop,
 * and the data plane closes fd when the stream ends. On the synchronous errors fd stays the caller's (it
 * replies and closes it): -EACCES no held resource covers host:port, -EHOSTUNREACH no connector serves its
 * network (or none could be dialed at all), -EBUSY TUNNELER_PENDING_MAX requests are waiting (or every
 * connector's session is at its stream limit), -EINVAL a bad host or port 0, -EBADF a bad fd. host: a
 * name or an IP literal, IPv6 with or without brackets. */
int tunneler_dataplane_connect(TunnelerDataPlane *d, const char *host, uint16_t port, int fd,
                               TunnelerResultCallback on_result, void *userdata);

/* streams_active: relaying now; streams_total: ever relayed (200); bytes_in: from connectors to local
 * sockets, bytes_out: the other way (streams still relaying included); denials: requests no held resource
 * covers plus 403 answers; peers: sessions up. */
void tunneler_dataplane_get_counters(const TunnelerDataPlane *d, AgentControlCounters *ret);

/* What the data plane knows of one connector (for the bus and tests). */
typedef struct TunnelerConnectorInfo {
        bool connected;                 /* a session is up */
        bool penalised;                 /* its last session failed less than TUNNELER_CONNECTOR_PENALTY ago */
        unsigned streams;               /* relayed, waiting for a response or for the session */
} TunnelerConnectorInfo;

/* -ENOENT when the data plane has not dealt with spiffe_id (or forgot it after a policy change). */
int tunneler_dataplane_get_connector(const TunnelerDataPlane *d, const char *spiffe_id,
                                     TunnelerConnectorInfo *ret);
