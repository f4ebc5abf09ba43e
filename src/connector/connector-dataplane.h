/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The connector's data plane (DESIGN.md §4, §5): an mTLS HTTP/2 server for tunnelers.
 *
 *   accept     TLS 1.3 with the connector's identity; the peer must be a tunneler of our trust domain under
 *              our bundle (agent_tls_context_new(…, TLS_MODE_SERVER, SPIFFE_ROLE_TUNNELER, …)); one HTTP/2
 *              session per connection, at most CONNECTOR_SESSIONS_PER_TUNNELER per tunneler; at most
 *              CONNECTOR_HANDSHAKES_PER_SOURCE handshakes at once from one address.
 *   CONNECT    ":authority host:port" (connect_request_parse(); malformed → 400). The decision callback (the
 *              held policy: agent_policy_decide()) says yes or no for the peer's SPIFFE ID, taken from its
 *              certificate. Denied → 403. Granted → the host is resolved (net-resolve.h; IP literals
 *              directly), a non-blocking TCP connect to the first address (then the next ones), the whole
 *              of resolution and connection bounded by connect_timeout; refused/unreachable → 502, timeout →
 *              504, DNS failure (or no resolver) → 502; connected → connect_pipe_accept() relays bytes with
 *              the idle timeout. The tunneler must not send body bytes before our 200: the stream is reset.
 *   limits     max_streams at once over all tunnelers and max_streams_per_tunneler per tunneler SPIFFE ID
 *              (beyond: 429 Too Many Requests; a stream holds its slot from the decision until it ends,
 *              connecting included); HTTP/2 concurrent streams per session are capped a little above
 *              max_streams_per_tunneler (CONNECTOR_H2_STREAMS_SLACK: refusals and heartbeats).
 *   gRPC       TunnelSession.Heartbeats on the same session: each TunnelerHeartbeat is answered with a
 *              HeartbeatAck and handed to on_heartbeat with the tunneler's SPIFFE ID (from the certificate),
 *              at most once per CONNECTOR_HEARTBEAT_FORWARD_INTERVAL per tunneler (the rest are answered
 *              only), so a tunneler cannot flood the controller through us.
 *   recheck    connector_dataplane_recheck() asks the decision callback again for every live stream and
 *              resets those it now denies (403 for those still connecting); connector_dataplane_close_peer()
 *              resets every stream and closes the sessions of one tunneler (revocation), and refuses its
 *              new sessions until the next recheck — the revocation reaches us before the policy change
 *              that drops the tunneler's groups, and its certificate stays valid meanwhile. Both take effect
 *              at once.
 *   audit      on_flow with end = false when a CONNECT is decided: result DENIED (403) or LIMITED (429) —
 *              those are over at once and get no end — or GRANTED (http_status 0: not answered yet). Every
 *              granted flow then gets exactly one on_flow with end = true: GRANTED/200 after relaying,
 *              UNREACHABLE/502, TIMEOUT/504, DENIED when a recheck or close_peer cut it (error -EACCES or
 *              -EKEYREVOKED), or GRANTED/0 when the tunneler gave up before the answer (error -ECONNRESET;
 *              -EPROTO when it sent bytes before it). The daemon logs each to the journal
 *              (CONNECTOR_FLOW_START/END_MESSAGE_ID) and sends it to the controller.
 *
 * Every callback runs from the event loop. Nothing here logs above debug except the listener's accept
 * failures once it runs (throttled: warning, failed: error; is_listening() turns false); errors of
 * connector_dataplane_new() are the caller's to log. The functions below must not be called from within this
 * object's own callbacks (on_flow, decide, on_heartbeat): they may close the sessions those run on. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent-control.h"
#include "identity.h"
#include "macro.h"
#include "time-util.h"
#include "ztna.pb-c.h"

/* Journal MESSAGE_IDs of the flow records (catalog/ztna.catalog). */
#define CONNECTOR_FLOW_START_MESSAGE_ID "9699714ea6094320b422f2cdca43d95e"
#define CONNECTOR_FLOW_END_MESSAGE_ID "42e93d9f70e245368382a0ca9a530c43"

/* When the last stream ends, freed buffers go back to the kernel this much later. */
#define CONNECTOR_TRIM_DELAY (1 * USEC_PER_SEC)
/* Most tunneler sessions at once (each a TLS connection, handshakes included). */
#define CONNECTOR_SESSIONS_MAX 4096U
/* TLS handshakes in progress from one IP address (before the peer is known, anyone can connect). */
#define CONNECTOR_HANDSHAKES_PER_SOURCE 64U
/* Most sessions of one tunneler (it needs one per connector). */
#define CONNECTOR_SESSIONS_PER_TUNNELER 16U
/* Tunnelers refused after close_peer() until the next recheck; beyond, the policy alone decides. */
#define CONNECTOR_REFUSED_PEERS_MAX 1024U
/* HTTP/2 streams per session beyond max_streams_per_tunneler. */
#define CONNECTOR_H2_STREAMS_SLACK 16U
/* Receive windows offered to tunnelers: per stream (at most CONNECT_RECEIVE_MAX) and per session. */
#define CONNECTOR_STREAM_WINDOW (4U * 1024U * 1024U)
#define CONNECTOR_CONNECTION_WINDOW (32U * 1024U * 1024U)
/* Largest TunnelerHeartbeat accepted. */
#define CONNECTOR_HEARTBEAT_MESSAGE_MAX (8U * 1024U)
/* Heartbeats of one tunneler handed to on_heartbeat at most this often. */
#define CONNECTOR_HEARTBEAT_FORWARD_INTERVAL USEC_PER_SEC
#define CONNECTOR_HEARTBEATS_PATH "/ztna.v1.TunnelSession/Heartbeats"

typedef struct ConnectorDataPlane ConnectorDataPlane;

typedef enum ConnectorFlowResult {
        CONNECTOR_FLOW_GRANTED,         /* relayed; 200 */
        CONNECTOR_FLOW_DENIED,          /* 403, or cut by a recheck or close_peer */
        CONNECTOR_FLOW_UNREACHABLE,     /* 502: refused, unreachable, no such name */
        CONNECTOR_FLOW_TIMEOUT,         /* 504 */
        CONNECTOR_FLOW_LIMITED,         /* 429 */
        _CONNECTOR_FLOW_RESULT_MAX,
        _CONNECTOR_FLOW_RESULT_INVALID = -EINVAL,
} ConnectorFlowResult;

/* "granted", "denied", "unreachable", "timeout", "limited"; NULL for anything else. */
const char *connector_flow_result_to_string(ConnectorFlowResult r);

typedef struct ConnectorFlow {
        bool end;                       /* false: start (decided), true: end (closed) */
        const char *flow_id;            /* random, 32 hex digits, the same at start and end */
        const char *tunneler;           /* SPIFFE ID */
        const char *resource;           /* the resource that decided, or NULL */
        const char *target;             /* host:port as requested */
        ConnectorFlowResult result;
        unsigned http_status;           /* 0: not answered (a granted start, or given up before the answer) */
        uint64_t bytes_up, bytes_down;  /* end: tunneler → resource, resource → tunneler */
        usec_t start;                   /* CLOCK_REALTIME */
        usec_t duration;                /* end only */
        int error;                      /* end: why it closed (0: cleanly), as ConnectPipe's on_close */
} ConnectorFlow;

typedef struct ConnectorDataPlaneCallbacks {
        /* The decision: 1 granted, 0 denied, < 0 invalid host (denied); *ret_resource (borrowed until the
         * callback returns) names the deciding resource. Required. */
        int (*decide)(const char *tunneler, const char *host, uint16_t port, const char **ret_resource,
                      void *userdata);
        void (*on_flow)(const ConnectorFlow *flow, void *userdata);
        void (*on_heartbeat)(const char *tunneler, const Ztna__V1__TunnelerHeartbeat *hb, void *userdata);
} ConnectorDataPlaneCallbacks;

typedef struct ConnectorDataPlaneSettings {
        const char *listen;             /* "IP:port" (port 0: ephemeral) */
        char **resolvers;               /* NULL: the nameservers of resolv_conf */
        const char *resolv_conf;        /* NULL: RESOLVE_RESOLV_CONF (tests) */
        unsigned max_streams;           /* 1..AGENT_STREAMS_MAX */
        unsigned max_streams_per_tunneler; /* 1..max_streams */
        usec_t idle_timeout;            /* 0 or USEC_INFINITY: none */
        usec_t connect_timeout;         /* 1µs..AGENT_CONNECT_TIMEOUT_MAX */
} ConnectorDataPlaneSettings;

/* Binds and listens, with a TLS context from identity. -EINVAL for bad settings or an unusable identity,
 * errors of bind (-EADDRINUSE, …) and of resolver_new() (a bad resolver). No nameserver at all is not an
 * error: names then fail with 502 (connector_dataplane_can_resolve()). */
int connector_dataplane_new(sd_event *event, const AgentIdentity *identity,
                            const ConnectorDataPlaneSettings *settings,
                            const ConnectorDataPlaneCallbacks *callbacks, void *userdata,
                            ConnectorDataPlane **ret);
/* Resets every stream (on_flow reports their end, error -ESHUTDOWN), closes every session and the listener,
 * frees. NULL allowed. */
ConnectorDataPlane *connector_dataplane_free(ConnectorDataPlane *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(ConnectorDataPlane *, connector_dataplane_free);

/* A renewed identity or trust bundle: new connections use it, live ones keep theirs. */
int connector_dataplane_set_identity(ConnectorDataPlane *d, const AgentIdentity *identity);
/* The policy changed: live streams the decision now denies are reset. Returns how many. */
unsigned connector_dataplane_recheck(ConnectorDataPlane *d);
/* A tunneler was revoked: its streams are reset and its sessions closed. Returns how many streams. */
unsigned connector_dataplane_close_peer(ConnectorDataPlane *d, const char *tunneler);
/* streams_active: streams holding a slot (connecting or relaying); streams_total: streams ever granted a
 * slot; bytes_in: from tunnelers to resources, bytes_out: back (live streams included); denials: 403s of
 * the policy; peers: established tunneler sessions. */
void connector_dataplane_get_counters(const ConnectorDataPlane *d, AgentControlCounters *ret);
unsigned connector_dataplane_get_port(const ConnectorDataPlane *d);
/* Accepting connections (false once the listener failed for good). */
bool connector_dataplane_is_listening(const ConnectorDataPlane *d);
/* A nameserver is configured: names can be resolved. */
bool connector_dataplane_can_resolve(const ConnectorDataPlane *d);
