/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller's Prometheus metrics (issue 7), for /metrics on the admin listener:
 *
 *   ztna_agents{role,state}            enrolled agents by role (connector, tunneler) and state (online,
 *                                      offline, revoked)
 *   ztna_agents_online{role}           the online ones again, for simple alerts
 *   ztna_control_streams               control streams open now
 *   ztna_heartbeat_age_seconds         age of the oldest latest heartbeat among online agents (absent when
 *                                      none is online)
 *   ztna_tokens{state}                 enrollment tokens: active, used, expired, revoked
 *   ztna_enrollments_total, ztna_renewals_total, ztna_flows_total, ztna_denials_total
 *                                      since the controller started (ManagerCounters)
 *
 * Collecting reads the agents and tokens from the store and the presence from the control registry; the
 * text is written from that snapshot, so that tests can write any snapshot. */

#include <stdint.h>

#include "controller-manager.h"

typedef enum ControllerAgentState {
        CONTROLLER_AGENT_ONLINE,
        CONTROLLER_AGENT_OFFLINE,
        CONTROLLER_AGENT_REVOKED,
        _CONTROLLER_AGENT_STATE_MAX,
        _CONTROLLER_AGENT_STATE_INVALID = -EINVAL,
} ControllerAgentState;

typedef enum ControllerTokenState {
        CONTROLLER_TOKEN_ACTIVE,
        CONTROLLER_TOKEN_USED,
        CONTROLLER_TOKEN_EXPIRED,
        CONTROLLER_TOKEN_REVOKED,
        _CONTROLLER_TOKEN_STATE_MAX,
        _CONTROLLER_TOKEN_STATE_INVALID = -EINVAL,
} ControllerTokenState;

/* "online", "offline", "revoked"; NULL for anything else. */
const char *controller_agent_state_to_string(ControllerAgentState s);
/* "active", "used", "expired", "revoked"; NULL for anything else. */
const char *controller_token_state_to_string(ControllerTokenState s);

typedef struct ControllerMetrics {
        uint64_t agents[_SPIFFE_ROLE_MAX][_CONTROLLER_AGENT_STATE_MAX]; /* connectors and tunnelers only */
        uint64_t tokens[_CONTROLLER_TOKEN_STATE_MAX];
        uint64_t control_streams;
        usec_t heartbeat_age_max;       /* USEC_INFINITY: no agent online */
        ManagerCounters counters;
} ControllerMetrics;

/* Reads the store and the registry at time t (CLOCK_REALTIME). Errors of the store. */
int controller_metrics_collect(Manager *m, usec_t t, ControllerMetrics *ret);
/* The exposition text (metrics.h), NULL on OOM. */
char *controller_metrics_write(const ControllerMetrics *s);
/* Both, now. NULL on any error (logged at debug level). */
char *controller_metrics_format(Manager *m);
