/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The policy an agent holds (DESIGN.md §5): what the controller pushed on the control stream, a
 * PolicySnapshot when the stream opens, then PolicyDeltas, each revision exactly one above the last.
 *
 *   connector   the resources of its remote network (with the groups each is granted to) and the groups of
 *               every tunneler; it decides each CONNECT with agent_policy_decide().
 *   tunneler    the resources it is granted and the connectors (SPIFFE ID, data-plane address, network)
 *               serving their networks; it picks a resource for a local request and a connector to dial.
 *
 * Everything pushed is validated before any of it is used (names, canonical addresses and ports as
 * policy.h defines them, SPIFFE IDs, host:port addresses, bounded counts); a message that breaks a rule is
 * refused as a whole and the state stays as it was. No I/O, no logging above debug. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "policy.h"
#include "ztna.pb-c.h"

/* Bounds on what an agent accepts from its controller. */
#define AGENT_POLICY_RESOURCES_MAX 4096U
#define AGENT_POLICY_TUNNELERS_MAX 65536U
#define AGENT_POLICY_CONNECTORS_MAX 1024U
#define AGENT_POLICY_GROUPS_MAX 64U          /* per resource and per tunneler */

typedef struct AgentPolicy AgentPolicy;

typedef struct AgentPolicyConnector {
        const char *spiffe_id;
        const char *address;                  /* host:port */
        const char *remote_network;
} AgentPolicyConnector;

int agent_policy_new(AgentPolicy **ret);
AgentPolicy *agent_policy_free(AgentPolicy *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(AgentPolicy *, agent_policy_free);

/* Replaces everything with the snapshot. -EBADMSG with a static *ret_reason (may be NULL) for invalid
 * content, -ENOMEM; p unchanged on failure. */
int agent_policy_apply_snapshot(AgentPolicy *p, const Ztna__V1__PolicySnapshot *s, const char **ret_reason);
/* Applies a delta on top of revision - 1. -ESTALE when p does not hold revision - 1 (or holds no snapshot
 * yet): the agent must get a new snapshot (reconnect). -EBADMSG, -ENOMEM as above; p unchanged on
 * failure. */
int agent_policy_apply_delta(AgentPolicy *p, const Ztna__V1__PolicyDelta *d, const char **ret_reason);

/* 0 before the first snapshot. */
uint64_t agent_policy_revision(const AgentPolicy *p);
bool agent_policy_has_snapshot(const AgentPolicy *p);
size_t agent_policy_n_resources(const AgentPolicy *p);

/* Connector: policy_decide() over the held resources with the groups held for tunneler (none when
 * unknown). Returns 1 granted, 0 denied, -EINVAL for an invalid host; *ret_resource (may be NULL) as in
 * policy_decide() (borrowed until the next apply). */
int agent_policy_decide(const AgentPolicy *p, const char *tunneler_spiffe_id, const char *host, uint16_t port,
                        ResourceProtocol protocol, const PolicyResource **ret_resource);

/* Tunneler: the most specific held resource covering host:port/protocol (a name may also match an
 * alias), or NULL. Borrowed until the next apply. */
const PolicyResource *agent_policy_find_resource(const AgentPolicy *p, const char *host, uint16_t port,
                                                 ResourceProtocol protocol);
/* The network of a held resource (by name), or NULL. */
const char *agent_policy_resource_network(const AgentPolicy *p, const char *resource_name);
/* Tunneler: the connectors serving network, in the order pushed. Returns how many (0..max) were written
 * to ret; borrowed until the next apply. */
size_t agent_policy_connectors(const AgentPolicy *p, const char *network, AgentPolicyConnector *ret, size_t max);

/* Connector: the SPIFFE IDs of tunnelers whose access changed between two revisions is not tracked here;
 * after an apply, the caller re-checks its live streams with agent_policy_decide(). */
