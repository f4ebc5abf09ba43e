/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* TLS contexts built from an agent's identity: its key and chain, its trust bundle, and the role the peer
 * must have. The control client uses one towards controllers; the connector's data plane serves tunnelers
 * with one, and the tunneler dials connectors with one. A renewal or bundle update means a new context;
 * connections already open keep theirs (net-tls.h). */

#include <stddef.h>

#include "crypto-bundle.h"
#include "identity.h"
#include "net-tls.h"
#include "time-util.h"

/* The roots as a trust bundle of trust_domain. -EBADMSG with a static *ret_reason for a wrong count,
 * malformed or duplicate roots; -ENOMEM. */
int agent_bundle_from_der(const char *trust_domain, const DerBlob *roots, size_t n, TrustBundle **ret,
                          const char **ret_reason);

/* mode: TLS_MODE_CLIENT or TLS_MODE_SERVER (a server requires a client certificate). The peer must be
 * peer_role in the identity's trust domain under its bundle. -EINVAL for an unusable identity (bundle, key,
 * chain), -ENOMEM, errors of net-tls. */
int agent_tls_context_new(const AgentIdentity *i, TlsMode mode, SpiffeRole peer_role, usec_t handshake_timeout,
                          TlsContext **ret);
