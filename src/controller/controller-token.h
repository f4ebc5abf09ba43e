/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Enrollment token administration shared by the D-Bus interface and (later) the REST API: create, list,
 * revoke, each audited. The token string — the only place its secret ever exists — is returned once to
 * the caller and never stored or logged. */

#include "controller-manager.h"

typedef struct TokenRequest {
        SpiffeRole role;            /* SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER */
        const char *bound_id;       /* NULL or "": any id */
        const char *remote_network; /* connector tokens; NULL or "": none */
        char **groups;              /* tunneler tokens; NULL: none */
        usec_t lifetime;            /* 0: [Tokens] DefaultLifetime= */
} TokenRequest;

/* Validates the request (-EINVAL with *ret_reason, static: role, id syntax, network/groups on the wrong
 * role, bounds, lifetime outside CONTROLLER_TOKEN_LIFETIME_MIN..MAX), generates the token with the root pin
 * and the advertised addresses, stores it and audits AUDIT_TOKEN_CREATED with actor. *ret_string must be
 * released with erase_and_free(). ret_token (may be NULL) gets the stored row. */
int controller_token_create(Manager *m, const TokenRequest *req, const char *actor, char **ret_string,
                            StoreToken **ret_token, const char **ret_reason);
/* id: 32 hex digits. -EINVAL malformed, -ENOENT unknown, -EALREADY used or revoked. Audited. */
int controller_token_revoke(Manager *m, const char *id, const char *actor);
/* "active", "used", "revoked", "expired". */
const char *controller_token_state(const StoreToken *t, usec_t now);
