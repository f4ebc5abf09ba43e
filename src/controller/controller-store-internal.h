/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What a store backend implements, and the parts every backend shares. Callers use controller-store.h
 * only; backends and the conformance tests include this.
 *
 * The public functions in controller-store.c validate every argument before they reach a backend, so a
 * backend method may rely on: non-NULL required pointers, every string valid UTF-8 of 1..STORE_STRING_MAX
 * bytes, SPIFFE IDs canonical, roles connector/tunneler, times ≤ INT64_MAX, list sizes within their
 * maximum, policy names policy_name_is_valid() and resource values in policy.h's canonical text, admin names
 * store_admin_name_is_valid(), credential ids and secret hashes not all zero. Every successful mutation of
 * the policy model (and store_agent_revoke(), and store_enroll() of a tunneler) bumps the policy revision
 * inside the mutation's own transaction; a failed one leaves it alone. The backend owns transactions, SQL
 * and the mapping of its errors to negative errno values. */

#include "controller-store.h"

typedef struct StoreVtable {
        const char *name;
        void (*free)(Store *s);

        int (*get_schema_version)(Store *s, unsigned *ret);
        int (*meta_get)(Store *s, const char *key, char **ret);
        int (*meta_set)(Store *s, const char *key, const char *value);

        int (*token_create)(Store *s, const StoreToken *t);
        int (*token_get)(Store *s, const uint8_t id[TOKEN_ID_SIZE], StoreToken **ret);
        int (*token_list)(Store *s, StoreToken ***ret, size_t *ret_n);
        int (*token_revoke)(Store *s, const uint8_t id[TOKEN_ID_SIZE], usec_t now);

        /* ret_token may be NULL; *ret_reason is always set on failure. */
        int (*enroll)(Store *s, const uint8_t token_id[TOKEN_ID_SIZE],
                      const uint8_t secret_hash[TOKEN_HASH_SIZE], const StoreAgent *agent, usec_t now,
                      StoreToken **ret_token, const char **ret_reason);

        int (*agent_get)(Store *s, const char *spiffe_id, StoreAgent **ret);
        int (*agent_list)(Store *s, SpiffeRole role, StoreAgent ***ret, size_t *ret_n);
        int (*agent_update_certificate)(Store *s, const char *spiffe_id, const uint8_t *public_key,
                                        size_t public_key_size, const char *cert_serial,
                                        usec_t cert_not_after);
        int (*agent_revoke)(Store *s, const char *spiffe_id, const char *reason, usec_t now);
        int (*agents_touch)(Store *s, const StoreHeartbeat *hb, size_t n);

        int (*ca_put)(Store *s, const StoreCa *ca);
        int (*ca_list)(Store *s, StoreCa ***ret, size_t *ret_n);
        int (*ca_set_state)(Store *s, const uint8_t fingerprint[32], StoreCaState state);

        int (*network_create)(Store *s, const char *name, const char *description, usec_t now);
        int (*network_delete)(Store *s, const char *name);
        int (*network_list)(Store *s, StoreNetwork ***ret, size_t *ret_n);

        /* r->groups is ignored. */
        int (*resource_create)(Store *s, const StoreResource *r, usec_t now);
        int (*resource_update)(Store *s, const StoreResource *r, usec_t now);
        int (*resource_delete)(Store *s, const char *name);
        int (*resource_get)(Store *s, const char *name, StoreResource **ret);
        int (*resource_list)(Store *s, const char *network, StoreResource ***ret, size_t *ret_n);

        int (*group_create)(Store *s, const char *name, const char *description, usec_t now);
        int (*group_delete)(Store *s, const char *name);
        int (*group_get)(Store *s, const char *name, StoreGroup **ret);
        int (*group_list)(Store *s, StoreGroup ***ret, size_t *ret_n);
        int (*group_add_member)(Store *s, const char *group, const char *spiffe_id);
        int (*group_remove_member)(Store *s, const char *group, const char *spiffe_id);

        int (*policy_create)(Store *s, const char *group, const char *resource, usec_t now);
        int (*policy_delete)(Store *s, const char *group, const char *resource);
        int (*policy_list)(Store *s, StorePolicy **ret, size_t *ret_n);
        int (*policy_revision)(Store *s, uint64_t *ret);

        int (*admin_create)(Store *s, const StoreAdmin *a);
        int (*admin_get)(Store *s, const char *name, StoreAdmin **ret);
        int (*admin_list)(Store *s, StoreAdmin ***ret, size_t *ret_n);
        int (*admin_delete)(Store *s, const char *name);
        int (*admin_set_password)(Store *s, const char *name, const char *password_hash, usec_t now);
        int (*admin_set_disabled)(Store *s, const char *name, usec_t disabled_at);
        int (*admin_touch_login)(Store *s, const char *name, usec_t now);

        int (*api_token_create)(Store *s, const StoreApiToken *t);
        int (*api_token_get)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreApiToken **ret);
        int (*api_token_list)(Store *s, const char *admin, StoreApiToken ***ret, size_t *ret_n);
        int (*api_token_revoke)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);
        int (*api_token_delete)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]);
        int (*api_token_touch)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);

        int (*session_create)(Store *s, const StoreSession *session);
        int (*session_get)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreSession **ret);
        int (*session_list)(Store *s, const char *admin, StoreSession ***ret, size_t *ret_n);
        int (*session_delete)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]);
        int (*session_touch)(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);
        int (*sessions_delete_expired)(Store *s, usec_t now, usec_t idle_timeout);

        int (*audit_append)(Store *s, const StoreAuditEvent *e, int64_t *ret_seq);
        int (*audit_list)(Store *s, const StoreAuditFilter *f, StoreAuditEvent ***ret, size_t *ret_n);

        int (*check_integrity)(Store *s);
} StoreVtable;

/* Every backend's object starts with this, so a Store * converts to the backend's type and back. */
struct Store {
        const StoreVtable *vtable;
};

/* The enrollment decision, shared by all backends so that the order of the checks (and therefore what a
 * refusal reveals) is the same everywhere. token is the row read inside the write transaction, or NULL
 * when no token has this id; the secret hash is compared in constant time either way, so an unknown id and
 * a wrong secret look the same from outside (-ENOENT, "invalid token"). Then: revoked, expired
 * (now >= expires_at), used, role, bound id. Returns 0 when the token may be consumed by agent, else the
 * errno from controller-store.h with *ret_reason set. */
int store_enroll_check_token(const StoreToken *token, const uint8_t secret_hash[TOKEN_HASH_SIZE],
                             const StoreAgent *agent, usec_t now, const char **ret_reason);
/* The rule for an existing agent row with the same SPIFFE ID (NULL: none): -EEXIST unless it is revoked.
 * Returns 1 when a revoked agent is to be replaced, 0 when there is none. */
int store_enroll_check_agent(const StoreAgent *existing, const char **ret_reason);

/* The reasons store_enroll() gives, shared by backends. */
#define STORE_REASON_INVALID_TOKEN "invalid token"
#define STORE_REASON_EXPIRED "token expired"
#define STORE_REASON_REVOKED "token revoked"
#define STORE_REASON_USED "token already used"
#define STORE_REASON_ROLE "token is for another role"
#define STORE_REASON_BOUND "token is bound to another id"
#define STORE_REASON_AGENT_EXISTS "an agent with this id is already enrolled"
#define STORE_REASON_INVALID_REQUEST "invalid enrollment request"
#define STORE_REASON_INTERNAL "internal error"

/* Whether a CA may move from state `from` to state `to`: only forwards (staged → active → retiring →
 * retired, steps may be skipped) or to the same state; a retired CA never issues again. */
bool store_ca_state_transition_is_valid(StoreCaState from, StoreCaState to);

/* Appends a new element to a growing result array (*array of *n elements); -E2BIG beyond STORE_LIST_MAX. */
int store_array_grow(void **array, size_t *allocated, size_t n, size_t element_size);

/* SQLite only, for the conformance tests: opens path like store_open_sqlite() but as if this code knew
 * only the first n_migrations migrations (STORE_SQLITE_MIGRATIONS_ALL: all of them). */
#define STORE_SQLITE_MIGRATIONS_ALL ((unsigned) -1)
unsigned store_sqlite_migrations_count(void);
int store_open_sqlite_migrations(const char *path, unsigned n_migrations, Store **ret);
