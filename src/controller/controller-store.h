/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller's state: trust-domain metadata, CA material (keys sealed), enrollment tokens, agents,
 * audit events. One interface, several backends (SQLite now, PostgreSQL later) held to one conformance
 * test suite (tests/unit/test-controller-store.c).
 *
 * Rules every backend keeps:
 * - Token consumption is atomic with recording the agent: store_enroll() checks the token (secret hash in
 *   constant time, expiry, revocation, role, bound id), inserts the agent and marks the token used in ONE
 *   transaction. Of any number of racing calls with one token, exactly one succeeds — across processes.
 * - A revoked agent stays revoked: certificate updates for it are refused inside the same transaction.
 * - Only SHA-256 hashes of token secrets are stored; CA private keys only as sealed envelopes.
 * - Schema changes are numbered migrations applied at open, each in its own transaction; a database
 *   newer than this code is refused (-EPROTONOSUPPORT), never modified.
 * - Heartbeats are applied in batches (store_agents_touch), one transaction per batch.
 * - Admin passwords only as argon2id encoded strings; API token, session and CSRF secrets only as SHA-256.
 *
 * Times are CLOCK_REALTIME µs. Strings are UTF-8, stored and returned verbatim. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto-spiffe.h"
#include "crypto-token.h"
#include "macro.h"
#include "time-util.h"

#define STORE_GROUPS_MAX 64        /* groups on one token or agent */
#define STORE_LABELS_MAX 32        /* labels on one agent ("key=value") */
#define STORE_STRING_MAX 1024      /* any single text field */
#define STORE_AUDIT_PAGE_MAX 1000  /* rows one audit query returns at most */
#define STORE_BLOB_MAX 65536       /* any binary field (public key, certificate, sealed key) */
#define STORE_TOUCH_BATCH_MAX 4096 /* heartbeats in one store_agents_touch() call */
#define STORE_LIST_MAX 1048576     /* rows one list call returns at most (-E2BIG beyond) */

typedef struct Store Store;

typedef struct StoreToken {
        uint8_t id[TOKEN_ID_SIZE];
        uint8_t secret_hash[TOKEN_HASH_SIZE];
        SpiffeRole role;            /* SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER */
        char *bound_id;             /* the only agent id it may enroll, or NULL */
        char *remote_network;       /* connector tokens: the network joined, or NULL */
        char **groups;              /* tunneler tokens: groups joined (strv), or NULL */
        char *created_by;           /* actor, for audit ("root", "admin:alice") */
        usec_t created_at;
        usec_t expires_at;
        usec_t used_at;             /* 0: unused */
        char *used_by;              /* SPIFFE ID it enrolled */
        usec_t revoked_at;          /* 0: not revoked */
} StoreToken;

StoreToken *store_token_free(StoreToken *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreToken *, store_token_free);
void store_token_array_free(StoreToken **a, size_t n);

typedef struct StoreAgent {
        char *spiffe_id;            /* key */
        SpiffeRole role;
        char *id;
        uint8_t *public_key;        /* SubjectPublicKeyInfo DER of the current key */
        size_t public_key_size;
        char *version;
        char *private_ip;
        char **labels;              /* "key=value" strv */
        char *remote_network;
        char **groups;
        char *via;                  /* tunnelers: SPIFFE ID of the connector that forwarded the last heartbeat */
        uint8_t token_id[TOKEN_ID_SIZE];
        char *cert_serial;          /* hex, of the latest certificate issued */
        usec_t cert_not_after;
        usec_t enrolled_at;
        usec_t last_seen;           /* 0: never */
        usec_t revoked_at;          /* 0: not revoked */
        char *revocation_reason;
} StoreAgent;

StoreAgent *store_agent_free(StoreAgent *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreAgent *, store_agent_free);
void store_agent_array_free(StoreAgent **a, size_t n);

typedef enum StoreCaKind {
        STORE_CA_ROOT,
        STORE_CA_ISSUING,
        _STORE_CA_KIND_MAX,
        _STORE_CA_KIND_INVALID = -EINVAL,
} StoreCaKind;

typedef enum StoreCaState {
        STORE_CA_STAGED,            /* root: in the trust bundle, not yet issuing */
        STORE_CA_ACTIVE,            /* issues certificates (one active issuing CA at a time) */
        STORE_CA_RETIRING,          /* no longer issues; still trusted until its leaves expire */
        STORE_CA_RETIRED,           /* gone from the bundle */
        _STORE_CA_STATE_MAX,
        _STORE_CA_STATE_INVALID = -EINVAL,
} StoreCaState;

typedef struct StoreCa {
        uint8_t fingerprint[32];    /* SHA-256 of the SPKI: key */
        StoreCaKind kind;
        StoreCaState state;
        uint8_t *certificate;       /* DER */
        size_t certificate_size;
        uint8_t *sealed_key;        /* envelope (crypto-envelope) of the PKCS#8 key */
        size_t sealed_key_size;
        uint8_t parent[32];         /* issuing CAs: fingerprint of the root; zero for roots */
        usec_t not_before, not_after;
        usec_t created_at;
} StoreCa;

const char *store_ca_kind_to_string(StoreCaKind k);
StoreCaKind store_ca_kind_from_string(const char *s);
const char *store_ca_state_to_string(StoreCaState s);
StoreCaState store_ca_state_from_string(const char *s);

StoreCa *store_ca_free(StoreCa *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreCa *, store_ca_free);
void store_ca_array_free(StoreCa **a, size_t n);

typedef struct StoreHeartbeat {
        const char *spiffe_id;
        usec_t last_seen;
        const char *version;        /* NULL: unchanged */
        const char *private_ip;     /* NULL: unchanged */
        const char *via;            /* NULL: unchanged */
} StoreHeartbeat;

typedef struct StoreAuditEvent {
        int64_t seq;                /* assigned by the store, increasing */
        usec_t time;
        char *event;                /* short name, e.g. "token-consumed" (MESSAGE_ID is derived from it) */
        char *actor;                /* who did it: "root", "admin:alice", a SPIFFE ID */
        char *subject;              /* what it was done to: a SPIFFE ID, token id, resource name; may be NULL */
        char *detail;               /* JSON object text, may be NULL */
} StoreAuditEvent;

StoreAuditEvent *store_audit_event_free(StoreAuditEvent *e);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreAuditEvent *, store_audit_event_free);
void store_audit_event_array_free(StoreAuditEvent **a, size_t n);

typedef struct StoreAuditFilter {
        usec_t since, until;        /* since <= time < until; 0: unbounded */
        const char *event;          /* exact, or NULL */
        const char *actor;          /* exact, or NULL */
        const char *subject;        /* exact, or NULL */
        int64_t before_seq;         /* pagination: only rows with seq < before_seq; 0: from the newest */
        size_t limit;               /* 1..STORE_AUDIT_PAGE_MAX */
} StoreAuditFilter;

/* Policy (DESIGN.md §5, src/shared/policy.h for the value rules). Names are policy_name_is_valid(); addresses,
 * ports and protocols are stored in the canonical text policy.h produces, and the store re-checks them
 * (-EINVAL). Every mutation bumps the policy revision in the same transaction, so the controller can tell
 * agents which snapshot they hold. */

typedef struct StoreNetwork {
        char *name;                 /* key */
        char *description;          /* may be NULL */
        usec_t created_at;
} StoreNetwork;

StoreNetwork *store_network_free(StoreNetwork *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreNetwork *, store_network_free);
void store_network_array_free(StoreNetwork **a, size_t n);

typedef struct StoreResource {
        char *name;                 /* key */
        char *address;              /* canonical resource address */
        char *protocol;             /* "any", "tcp", "udp" */
        char *ports;                /* canonical port set ("any", "22,80-90") */
        char *remote_network;       /* an existing network */
        char *alias;                /* an FQDN tunnelers may use for it, or NULL */
        char **groups;              /* groups granted (from the policies), filled by get/list; ignored by put */
        usec_t created_at;
        usec_t updated_at;
} StoreResource;

StoreResource *store_resource_free(StoreResource *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreResource *, store_resource_free);
void store_resource_array_free(StoreResource **a, size_t n);

typedef struct StoreGroup {
        char *name;                 /* key */
        char *description;          /* may be NULL */
        char **members;             /* tunneler SPIFFE IDs (from agents' groups), filled by get/list */
        char **resources;           /* resources granted (from the policies), filled by get/list */
        usec_t created_at;
} StoreGroup;

StoreGroup *store_group_free(StoreGroup *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreGroup *, store_group_free);
void store_group_array_free(StoreGroup **a, size_t n);

typedef struct StorePolicy {
        char *group;
        char *resource;
        usec_t created_at;
} StorePolicy;

void store_policy_array_free(StorePolicy *a, size_t n);

/* Networks. create: -EEXIST. delete: -ENOENT, -EBUSY while a resource or a non-revoked connector belongs to
 * it. */
int store_network_create(Store *s, const char *name, const char *description, usec_t now);
int store_network_delete(Store *s, const char *name);
int store_network_list(Store *s, StoreNetwork ***ret, size_t *ret_n);

/* Resources. create: -EEXIST, -ENOENT for an unknown network (ret_reason names it). update: replaces address,
 * protocol, ports, network and alias of an existing resource (-ENOENT). delete: -ENOENT; its policies go
 * with it. list: ordered by name; network NULL for all. */
int store_resource_create(Store *s, const StoreResource *r, usec_t now);
int store_resource_update(Store *s, const StoreResource *r, usec_t now);
int store_resource_delete(Store *s, const char *name);
int store_resource_get(Store *s, const char *name, StoreResource **ret);
int store_resource_list(Store *s, const char *network, StoreResource ***ret, size_t *ret_n);

/* Groups. create: -EEXIST. delete: -ENOENT; its policies go, and it is removed from every agent's groups.
 * add_member/remove_member: the agent must be a tunneler (-EINVAL otherwise, -ENOENT when unknown, or for
 * an unknown group); adding a member twice or removing a non-member is -EALREADY. At most STORE_GROUPS_MAX
 * groups per agent (-E2BIG). */
int store_group_create(Store *s, const char *name, const char *description, usec_t now);
int store_group_delete(Store *s, const char *name);
int store_group_get(Store *s, const char *name, StoreGroup **ret);
int store_group_list(Store *s, StoreGroup ***ret, size_t *ret_n);
int store_group_add_member(Store *s, const char *group, const char *spiffe_id);
int store_group_remove_member(Store *s, const char *group, const char *spiffe_id);

/* Policies: group → resource. create: -ENOENT for an unknown group or resource, -EEXIST. delete: -ENOENT.
 * list: ordered by group, then resource. */
int store_policy_create(Store *s, const char *group, const char *resource, usec_t now);
int store_policy_delete(Store *s, const char *group, const char *resource);
int store_policy_list(Store *s, StorePolicy **ret, size_t *ret_n);

/* The policy revision: 0 for a new store, +1 with every successful policy mutation above (and with
 * store_agent_revoke() and store_enroll() of a tunneler, which change who holds which groups). */
int store_policy_revision(Store *s, uint64_t *ret);

/* Administrators of the REST API and the dashboard (DESIGN.md §6), their API tokens and their browser
 * sessions. The store keeps only verifiers: an argon2id encoded string per password, SHA-256 per token or
 * session secret and per CSRF token (controller-auth.h makes and checks them). Deleting an admin deletes its
 * API tokens and sessions in the same transaction; so do a password change and disabling, for sessions. */

#define STORE_ADMIN_NAME_MAX 64            /* bytes of an admin name (store_admin_name_is_valid()) */
#define STORE_ADMINS_MAX 1024              /* admins in one store (-E2BIG beyond) */
#define STORE_PASSWORD_HASH_MAX 256        /* bytes of an encoded password hash */
#define STORE_API_TOKEN_NAME_MAX 128       /* bytes of an API token's name */
#define STORE_API_TOKENS_PER_ADMIN_MAX 100 /* API tokens of one admin, revoked ones included (-E2BIG beyond) */
#define STORE_SESSIONS_PER_ADMIN_MAX 32    /* live sessions of one admin: the least recently seen goes */
#define STORE_USER_AGENT_MAX 256           /* bytes of a session's recorded User-Agent */
#define STORE_CREDENTIAL_ID_SIZE 16        /* public id of an API token or a session (128 bits) */
#define STORE_SECRET_HASH_SIZE 32          /* SHA-256 */

/* 1..STORE_ADMIN_NAME_MAX bytes of [a-z0-9._@-], starting with a letter or digit: one spelling per admin
 * (no case variants), safe in a URL path, a log line and the actor string "admin:<name>". */
bool store_admin_name_is_valid(const char *name) _pure_;

typedef struct StoreAdmin {
        char *name;                 /* key */
        char *password_hash;        /* argon2id encoded string: "$argon2id$v=19$m=…,t=…,p=…$salt$hash" */
        char *created_by;           /* actor: "root", "uid:1000", "admin:alice" */
        usec_t created_at;
        usec_t password_changed_at; /* = created_at until the first change */
        usec_t disabled_at;         /* 0: enabled */
        usec_t last_login_at;       /* 0: never */
} StoreAdmin;

StoreAdmin *store_admin_free(StoreAdmin *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreAdmin *, store_admin_free);
void store_admin_array_free(StoreAdmin **a, size_t n);

typedef enum StoreScope {
        STORE_SCOPE_READ,           /* GET and HEAD only */
        STORE_SCOPE_READ_WRITE,
        _STORE_SCOPE_MAX,
        _STORE_SCOPE_INVALID = -EINVAL,
} StoreScope;

/* "read", "read-write". */
const char *store_scope_to_string(StoreScope s);
StoreScope store_scope_from_string(const char *s);

typedef struct StoreApiToken {
        uint8_t id[STORE_CREDENTIAL_ID_SIZE];          /* key; lower-case hex in listings */
        char *name;                                    /* unique per admin among unrevoked tokens */
        char *admin;                                   /* owner: an existing admin */
        StoreScope scope;
        uint8_t secret_hash[STORE_SECRET_HASH_SIZE];   /* SHA-256 of the secret */
        usec_t created_at;
        usec_t expires_at;                             /* required */
        usec_t last_used_at;                           /* 0: never (updated at most once a minute) */
        usec_t revoked_at;                             /* 0: not revoked */
} StoreApiToken;

StoreApiToken *store_api_token_free(StoreApiToken *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreApiToken *, store_api_token_free);
void store_api_token_array_free(StoreApiToken **a, size_t n);

typedef struct StoreSession {
        uint8_t id[STORE_CREDENTIAL_ID_SIZE];          /* key */
        char *admin;                                   /* an existing admin */
        uint8_t secret_hash[STORE_SECRET_HASH_SIZE];   /* SHA-256 of the session secret (the cookie) */
        uint8_t csrf_hash[STORE_SECRET_HASH_SIZE];     /* SHA-256 of the CSRF token */
        usec_t created_at;
        usec_t expires_at;                             /* absolute end, whatever the activity */
        usec_t last_seen_at;                           /* for the idle timeout (written at most once a minute) */
        char *address;                                 /* client IP address, may be NULL */
        char *user_agent;                              /* printable, <= STORE_USER_AGENT_MAX bytes, or NULL */
} StoreSession;

StoreSession *store_session_free(StoreSession *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreSession *, store_session_free);
void store_session_array_free(StoreSession **a, size_t n);

/* Admins. create: -EEXIST, -E2BIG beyond STORE_ADMINS_MAX; last_login_at and disabled_at must be 0 and
 * password_changed_at is set to created_at. delete: -ENOENT; the admin's API tokens and sessions go with it.
 * set_password: -ENOENT; sets password_changed_at and ends the admin's sessions. set_disabled: disabled_at 0
 * enables; disabling ends the admin's sessions; -ENOENT. touch_login: sets last_login_at; -ENOENT. list:
 * ordered by name. */
int store_admin_create(Store *s, const StoreAdmin *a);
int store_admin_get(Store *s, const char *name, StoreAdmin **ret);
int store_admin_list(Store *s, StoreAdmin ***ret, size_t *ret_n);
int store_admin_delete(Store *s, const char *name);
int store_admin_set_password(Store *s, const char *name, const char *password_hash, usec_t now);
int store_admin_set_disabled(Store *s, const char *name, usec_t disabled_at);
int store_admin_touch_login(Store *s, const char *name, usec_t now);

/* API tokens. create: -ENOENT for an unknown admin, -EEXIST for a duplicate id or an unrevoked token of the
 * same admin and name, -E2BIG beyond STORE_API_TOKENS_PER_ADMIN_MAX; last_used_at and revoked_at must be 0.
 * revoke: -ENOENT, -EALREADY. delete: -ENOENT. touch: sets last_used_at (never backwards); -ENOENT. list:
 * admin NULL for every admin; ordered by admin, then creation. */
int store_api_token_create(Store *s, const StoreApiToken *t);
int store_api_token_get(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreApiToken **ret);
int store_api_token_list(Store *s, const char *admin, StoreApiToken ***ret, size_t *ret_n);
int store_api_token_revoke(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);
int store_api_token_delete(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]);
int store_api_token_touch(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);

/* Sessions. create: -ENOENT for an unknown admin, -EPERM for a disabled one, -EEXIST for a duplicate id; an
 * admin holding STORE_SESSIONS_PER_ADMIN_MAX sessions loses the least recently seen one in the same
 * transaction. delete: -ENOENT. touch: sets last_seen_at (never backwards); -ENOENT. list: admin NULL for
 * every admin; ordered by admin, then creation. delete_expired: removes every session with now >= expires_at
 * or now >= last_seen_at + idle_timeout (idle_timeout 0: no idle rule), one transaction; returns how many. */
int store_session_create(Store *s, const StoreSession *session);
int store_session_get(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreSession **ret);
int store_session_list(Store *s, const char *admin, StoreSession ***ret, size_t *ret_n);
int store_session_delete(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]);
int store_session_touch(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now);
int store_sessions_delete_expired(Store *s, usec_t now, usec_t idle_timeout);

/* Opens (creating if needed, mode 0600) and migrates. */
int store_open_sqlite(const char *path, Store **ret);
Store *store_free(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_free);

int store_get_schema_version(Store *s, unsigned *ret);

/* Small key/value metadata ("trust_domain", …). -ENOENT when absent. */
int store_meta_get(Store *s, const char *key, char **ret);
int store_meta_set(Store *s, const char *key, const char *value);

/* Tokens. create: -EEXIST for a duplicate id; -EINVAL for a token that is already used or revoked, a remote
 * network on a tunneler token or groups on a connector token. revoke: -ENOENT, -EALREADY when already used
 * or revoked. */
int store_token_create(Store *s, const StoreToken *t);
int store_token_get(Store *s, const uint8_t id[TOKEN_ID_SIZE], StoreToken **ret);
int store_token_list(Store *s, StoreToken ***ret, size_t *ret_n);
int store_token_revoke(Store *s, const uint8_t id[TOKEN_ID_SIZE], usec_t now);

/* Consumes a token and records the agent, atomically (see above). agent->spiffe_id, role, id and public key
 * are required; remote_network/groups come from the token and override the agent's. On success returns the
 * token as it was (for its groups/network). On failure *ret_reason (static, printable to the agent) says why:
 *   -ENOENT         "invalid token"            (unknown id or wrong secret: indistinguishable on purpose)
 *   -EKEYEXPIRED    "token expired"
 *   -EKEYREVOKED    "token revoked"
 *   -EALREADY       "token already used"
 *   -EPERM          "token is for another role" / "token is bound to another id"
 *   -EEXIST         "an agent with this id is already enrolled"  (a revoked agent may be replaced)
 * and "invalid enrollment request" (-EINVAL, -E2BIG) or "internal error" (anything else). Returns 0, or 1
 * when a revoked agent was replaced. The store sets token_id, enrolled_at (= now), last_seen (0),
 * revoked_at (0) and revocation_reason (NULL) itself. ret_token and ret_reason may be NULL. */
int store_enroll(Store *s, const uint8_t token_id[TOKEN_ID_SIZE], const uint8_t secret_hash[TOKEN_HASH_SIZE],
                 const StoreAgent *agent, usec_t now, StoreToken **ret_token, const char **ret_reason);

int store_agent_get(Store *s, const char *spiffe_id, StoreAgent **ret);
/* role _SPIFFE_ROLE_INVALID: all roles. Ordered by SPIFFE ID. */
int store_agent_list(Store *s, SpiffeRole role, StoreAgent ***ret, size_t *ret_n);
/* After a renewal or re-authentication: the new key and certificate. -ENOENT, -EKEYREVOKED (refused for a
 * revoked agent inside the same transaction). */
int store_agent_update_certificate(Store *s, const char *spiffe_id, const uint8_t *public_key,
                                   size_t public_key_size, const char *cert_serial, usec_t cert_not_after);
/* -ENOENT, -EALREADY when already revoked. */
int store_agent_revoke(Store *s, const char *spiffe_id, const char *reason, usec_t now);
/* Applies a batch of heartbeats in one transaction; unknown or revoked agents are skipped. Returns the
 * number of rows updated. */
int store_agents_touch(Store *s, const StoreHeartbeat *hb, size_t n);

/* CA material. put: insert or replace by fingerprint. States only move forwards (staged → active → retiring
 * → retired; -EINVAL otherwise, in put and set_state alike); a second active issuing CA is refused with
 * -EEXIST, so rotation retires the old one before activating the new one. */
int store_ca_put(Store *s, const StoreCa *ca);
int store_ca_list(Store *s, StoreCa ***ret, size_t *ret_n);
int store_ca_set_state(Store *s, const uint8_t fingerprint[32], StoreCaState state);

/* Audit. append assigns seq and returns it. list: newest first. */
int store_audit_append(Store *s, const StoreAuditEvent *e, int64_t *ret_seq);
int store_audit_list(Store *s, const StoreAuditFilter *f, StoreAuditEvent ***ret, size_t *ret_n);

/* "PRAGMA integrity_check" or the backend's equivalent: 0 when sound, -EUCLEAN with a log otherwise. */
int store_check_integrity(Store *s);
