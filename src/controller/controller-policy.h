/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What each agent may see of the policy (DESIGN.md §5), as the messages that carry it:
 *
 *   connector   the resources of its remote network, each with every group it is granted to, and the
 *               groups of every non-revoked tunneler that has any;
 *   tunneler    the resources granted to one of its groups (each listing only the tunneler's own groups),
 *               and the online connectors serving those resources' networks.
 *
 * A PolicyView is that selection, one packed protobuf message per entry (resource by name, membership by
 * tunneler, connector by SPIFFE ID), so that two views compare entry by entry: the control stream sends a
 * PolicySnapshot when it opens and, after each change, a PolicyDelta of the entries that differ. Inputs
 * are read from the store once per change (PolicyInputs) and filtered per agent. Does not log. */

#include <stdbool.h>
#include <stdint.h>

#include "controller-store.h"
#include "hashmap.h"
#include "ztna.pb-c.h"

/* An online connector as the control streams know it. */
typedef struct PolicyConnector {
        const char *spiffe_id;
        const char *remote_network;
        const char *address;            /* data-plane host:port from its hello */
} PolicyConnector;

typedef struct PolicyInputs {
        StoreResource **resources;
        size_t n_resources;
        StoreAgent **tunnelers;
        size_t n_tunnelers;
        const PolicyConnector *connectors;
        size_t n_connectors;
        uint64_t revision;
} PolicyInputs;

/* Loads resources and tunnelers; connectors are the caller's (borrowed). Release with
 * policy_inputs_done(). */
int policy_inputs_load(Store *store, const PolicyConnector *connectors, size_t n_connectors, PolicyInputs *ret);
void policy_inputs_done(PolicyInputs *in);

typedef struct PolicyView PolicyView;

/* The view of one agent. remote_network: the connector's (NULL: none, it sees nothing); groups: the
 * tunneler's. -EINVAL for another role, -ENOMEM, -EBADMSG for stored values that do not parse. */
int policy_view_build(const PolicyInputs *in, SpiffeRole role, const char *remote_network, char *const *groups,
                      PolicyView **ret);
PolicyView *policy_view_free(PolicyView *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolicyView *, policy_view_free);

/* A ControllerMessage carrying the whole view (PolicySnapshot) at revision. Free with
 * policy_message_free(). */
int policy_view_snapshot(const PolicyView *v, uint64_t revision, Ztna__V1__ControllerMessage **ret);
/* A ControllerMessage carrying what changed from old to new (PolicyDelta) at revision; *ret NULL when
 * nothing did. When the connector list became empty (a delta cannot say so), a snapshot instead. */
int policy_view_delta(const PolicyView *old, const PolicyView *new, uint64_t revision,
                      Ztna__V1__ControllerMessage **ret);
void policy_message_free(Ztna__V1__ControllerMessage *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Ztna__V1__ControllerMessage *, policy_message_free);
