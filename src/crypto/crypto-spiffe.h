/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md) and ztna's use of
 * them: spiffe://<trust-domain>/<role>/<id>, role ∈ {controller, connector, tunneler, relay},
 * id = [A-Za-z0-9._-]{1,128}. No OpenSSL here: this is pure string validation, shared by SVID
 * validation, the CA and every place an ID arrives from the network or a user. */

#include <errno.h>
#include <stdbool.h>

#include "macro.h"

/* Longest SPIFFE ID the spec allows (URI length in bytes). */
#define SPIFFE_ID_MAX 2048
/* Longest trust domain name (as a DNS name). */
#define SPIFFE_TRUST_DOMAIN_MAX 255
/* Longest ztna agent id. */
#define ZTNA_ID_MAX 128

typedef enum SpiffeRole {
        SPIFFE_ROLE_CONTROLLER,
        SPIFFE_ROLE_CONNECTOR,
        SPIFFE_ROLE_TUNNELER,
        SPIFFE_ROLE_RELAY,
        _SPIFFE_ROLE_MAX,
        _SPIFFE_ROLE_INVALID = -EINVAL,
} SpiffeRole;

typedef struct SpiffeId {
        char *trust_domain; /* validated, lower-case */
        char *path;         /* "" for a trust-domain ID, else "/seg/…", validated */
        SpiffeRole role;    /* ztna role when path is exactly /<role>/<id>, else _SPIFFE_ROLE_INVALID */
        char *name;         /* the <id> segment when role is valid, else NULL */
        char *uri;          /* canonical "spiffe://td/path" */
} SpiffeId;

const char *spiffe_role_to_string(SpiffeRole role);
SpiffeRole spiffe_role_from_string(const char *s);

/* Parses any SPIFFE ID under the spec's rules (scheme, trust domain charset and case, no
 * port/userinfo/query/fragment, path segments non-empty and not "."/"..", segment charset, total
 * length). On failure returns -EINVAL and, when ret_reason is non-NULL, a static string naming the
 * violated rule (e.g. "trust domain contains upper-case characters"); *ret_reason is set only on
 * failure. ret may be NULL to validate only. A valid ID whose path happens to be /<role>/<id> gets
 * role and name filled in; any other path leaves role invalid. */
int spiffe_id_from_string(const char *s, SpiffeId **ret, const char **ret_reason);
/* Like spiffe_id_from_string() but additionally requires a ztna workload ID /<role>/<id>. */
int spiffe_id_from_string_ztna(const char *s, SpiffeId **ret, const char **ret_reason);
/* Builds spiffe://<trust_domain>/<role>/<id>, validating every part (-EINVAL). */
int spiffe_id_new_ztna(const char *trust_domain, SpiffeRole role, const char *id, SpiffeId **ret);
/* Builds the trust-domain ID spiffe://<trust_domain> (used as the URI SAN of CA certificates). */
int spiffe_id_new_trust_domain(const char *trust_domain, SpiffeId **ret);
int spiffe_id_dup(const SpiffeId *id, SpiffeId **ret);
/* The canonical URI (id->uri); NULL for NULL. */
const char *spiffe_id_to_string(const SpiffeId *id);
/* True for a trust-domain ID (empty path). */
bool spiffe_id_is_trust_domain(const SpiffeId *id);
/* True when the ID belongs to the trust domain td (exact, case-sensitive comparison). */
bool spiffe_id_member_of(const SpiffeId *id, const char *trust_domain);
bool spiffe_id_equal(const SpiffeId *a, const SpiffeId *b);
SpiffeId *spiffe_id_free(SpiffeId *id);
DEFINE_TRIVIAL_CLEANUP_FUNC(SpiffeId *, spiffe_id_free);

/* Rule checks usable on their own (config validation, token fields). */
/* -EINVAL with a static reason when td is not a valid trust domain name. */
int spiffe_trust_domain_check(const char *td, const char **ret_reason);
bool spiffe_trust_domain_is_valid(const char *td);
bool ztna_id_is_valid(const char *id);
