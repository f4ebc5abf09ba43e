/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The agent's Prometheus metrics (issue 7), for /metrics on its health listener: the numbers the D-Bus
 * properties show (agent-bus.c), with the data-plane counters read fresh from the role.
 *
 *   ztna_agent_info{role,version,spiffe_id}               1
 *   ztna_agent_state{state}                               1 for the current state, 0 for the others
 *   ztna_agent_online                                     1 while the control stream is up
 *   ztna_certificate_expiry_timestamp_seconds             notAfter of the leaf (absent without one)
 *   ztna_last_heartbeat_timestamp_seconds                 (absent before the first)
 *   ztna_renewals_total, ztna_renewal_failures_total, ztna_reconnects_total
 *   ztna_streams_active, ztna_streams_total, ztna_bytes_total{direction="in|out"}, ztna_denials_total,
 *   ztna_peers */

#include "agent-manager.h"

/* The exposition text (metrics.h), NULL on OOM. */
char *agent_metrics_format(AgentManager *m);
