/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The Control service: one Control.Connect stream per agent (identity from its certificate; a second stream
 * from the same agent replaces the first), hello and heartbeats upward, configuration, trust bundle,
 * revocation and "renew now" downward. Heartbeat times live in memory and are flushed to the store in
 * batches (store_agents_touch) every CONTROL_FLUSH_INTERVAL; an agent is ONLINE while its last heartbeat (its
 * own, or one a connector forwarded) is younger than CONTROL_OFFLINE_AFTER. Tunneler heartbeats forwarded
 * by a connector are recorded with that connector (from its certificate) as `via`, and only for enrolled,
 * unrevoked tunnelers. */

#include <stdbool.h>
#include <stddef.h>

#include "controller-manager.h"
#include "net-grpc.h"

#define CONTROL_HEARTBEAT_INTERVAL (10 * USEC_PER_SEC)
#define CONTROL_OFFLINE_AFTER (30 * USEC_PER_SEC)
#define CONTROL_FLUSH_INTERVAL (5 * USEC_PER_SEC)
/* Control streams at once; more are refused with RESOURCE_EXHAUSTED. */
#define CONTROL_SESSIONS_MAX 65536U
/* Agents with an unflushed heartbeat (bounded: beyond it the batch is flushed at once). */
#define CONTROL_PENDING_MAX STORE_TOUCH_BATCH_MAX
/* Largest AgentMessage. */
#define CONTROL_MESSAGE_MAX (256U * 1024U)
/* Messages a connector may forward per heartbeat interval (ForwardedHeartbeat + FlowEvent), beyond which
 * they are dropped with a warning (rate limited). */
#define CONTROL_FORWARDED_BURST 4096U

extern const GrpcMethod controller_control_methods[];
extern const size_t controller_control_n_methods;

int control_registry_new(Manager *m, ControlRegistry **ret);
/* Flushes pending heartbeats, then frees; live streams must have been closed by the sessions' end. */
ControlRegistry *control_registry_free(ControlRegistry *r);

/* Writes pending heartbeats to the store (one transaction). Returns rows updated. */
int control_registry_flush(ControlRegistry *r);
/* ONLINE when a heartbeat (or the hello) arrived within CONTROL_OFFLINE_AFTER; *ret_last_seen (may be NULL)
 * gets the newest time known, from memory or else 0 (then the store's value applies). */
bool control_registry_is_online(ControlRegistry *r, const char *spiffe_id, usec_t now, usec_t *ret_last_seen);
size_t control_registry_n_sessions(const ControlRegistry *r);

/* Pushes the current trust bundle to every live stream. */
int control_registry_push_trust_bundle(ControlRegistry *r);
/* Tells the agent it is revoked (Revocation with its own SPIFFE ID) and ends its stream with
 * PERMISSION_DENIED. 0 when it had no stream, 1 when one was closed. */
int control_registry_revoke(ControlRegistry *r, const char *spiffe_id, const char *reason);
/* RenewNow to one agent (spiffe_id) or all (NULL). Returns the number of streams told. */
int control_registry_renew_now(ControlRegistry *r, const char *spiffe_id);
/* Ends every stream (UNAVAILABLE "controller shutting down"), for SIGTERM. */
void control_registry_close_all(ControlRegistry *r);

/* The policy in the store changed: every connected agent whose view changed gets a PolicyDelta from the
 * revision it holds. */
void control_registry_policy_changed(ControlRegistry *r);
