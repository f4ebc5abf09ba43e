/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Authentication of administrators (DESIGN.md §6), shared by org.ztna.Controller1 (root creates admins and
 * sets their passwords) and the admin REST API and dashboard (logins, sessions, API tokens):
 *
 *  - Passwords are hashed with argon2id (RFC 9106) and verified by libargon2's own verify, which compares in
 *    constant time. A login for an account that does not exist verifies against a fixed dummy hash of the
 *    same parameters, so its timing does not tell the two apart.
 *  - API tokens are "ztna_at_<32 hex id>_<43 base64url secret>": a public id to find the row and a 256-bit
 *    secret of which only SHA-256 is stored. They carry a scope (read, read-write) and an expiry.
 *  - Sessions are a cookie "ztna_s_<32 hex id>_<43 base64url secret>" plus a CSRF token (43 base64url
 *    characters, 256 bits) that every mutating request repeats; both stored as SHA-256. A session ends
 *    AUTH_SESSION_LIFETIME after the login whatever happens, or after AUTH_SESSION_IDLE_TIMEOUT without use.
 *  - Logins are limited per client address and per account (AuthLimiter) before any password is looked at.
 *  - last_used_at / last_seen_at are written at most once per AUTH_TOUCH_INTERVAL per credential, so a busy
 *    client does not turn every request into a database write.
 *
 * Every secret this module makes or reads is wiped after use. Functions here log at debug level only; the
 * audit trail (controller-audit.h) records admins created, deleted and given a new password, logins that
 * succeeded or failed (with the reason: unknown account, wrong password, rate limited, disabled), API tokens
 * created and revoked. No secret, password or hash ever reaches the journal or an audit row. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "controller-store.h"
#include "macro.h"
#include "time-util.h"

/* argon2id parameters for new hashes. RFC 9106 §4 recommends t=3, m=64 MiB as the second choice "when
 * 2 GiB are too much"; we take it with p=1 because the controller is one thread (libargon2 would start a
 * thread per lane) and a login should not hold more than one core. About 0.1-0.3 s per hash on current
 * hardware, so an online guesser gets a few guesses per second per core even without the limiter, and a
 * stolen database costs 64 MiB and three passes per guess. */
#define AUTH_ARGON2_T_COST 3U
#define AUTH_ARGON2_M_COST_KIB (64U * 1024U)
#define AUTH_ARGON2_PARALLELISM 1U
#define AUTH_ARGON2_SALT_SIZE 16U
#define AUTH_ARGON2_HASH_SIZE 32U
/* Encoded hashes are verified only within these bounds (a hash from the database must not be able to make
 * the daemon allocate gigabytes or spin for minutes); parallelism must be 1 (no threads). */
#define AUTH_ARGON2_T_COST_MAX 16U
#define AUTH_ARGON2_M_COST_KIB_MAX (256U * 1024U)

/* Password rules: AUTH_PASSWORD_MIN..AUTH_PASSWORD_MAX bytes of UTF-8, not only whitespace. */
#define AUTH_PASSWORD_MIN 12U
#define AUTH_PASSWORD_MAX 1024U

#define AUTH_ID_SIZE STORE_CREDENTIAL_ID_SIZE      /* 16: public id of a token or session */
#define AUTH_SECRET_SIZE 32U                       /* token, session and CSRF secrets */
#define AUTH_ID_HEX_SIZE (2U * AUTH_ID_SIZE + 1U)  /* hex with NUL */
#define AUTH_SECRET_STRING_LEN 43U                 /* base64url of 32 bytes, no padding */

#define AUTH_API_TOKEN_PREFIX "ztna_at_"
#define AUTH_SESSION_PREFIX "ztna_s_"
/* Lengths of the strings, without NUL. */
#define AUTH_API_TOKEN_STRING_LEN \
        (STRLEN(AUTH_API_TOKEN_PREFIX) + 2U * AUTH_ID_SIZE + 1U + AUTH_SECRET_STRING_LEN)
#define AUTH_SESSION_STRING_LEN (STRLEN(AUTH_SESSION_PREFIX) + 2U * AUTH_ID_SIZE + 1U + AUTH_SECRET_STRING_LEN)
#define AUTH_CSRF_STRING_LEN AUTH_SECRET_STRING_LEN

#define AUTH_API_TOKEN_LIFETIME_DEFAULT (90 * USEC_PER_DAY)
#define AUTH_API_TOKEN_LIFETIME_MIN USEC_PER_MINUTE
#define AUTH_API_TOKEN_LIFETIME_MAX (366 * USEC_PER_DAY)

#define AUTH_SESSION_LIFETIME (12 * USEC_PER_HOUR)
#define AUTH_SESSION_IDLE_TIMEOUT (30 * USEC_PER_MINUTE)
/* Longest a last_used_at / last_seen_at may lag behind: the idle timeout is exact to within this. */
#define AUTH_TOUCH_INTERVAL USEC_PER_MINUTE

/* The login limiter: a token bucket per key that a failure fills by window/limit and time drains, so
 * `limit` failures within `window` engage it and it lets one more try through every window/limit after.
 * Keys: the client address (an IPv6 address counts by its /64, which is what one client controls) and the
 * account name. Each table holds at most AUTH_LIMITER_ENTRIES_MAX keys; when full, drained entries go first,
 * then the one with the least debt. */
#define AUTH_LIMIT_ACCOUNT_FAILURES 5U
#define AUTH_LIMIT_ADDRESS_FAILURES 20U
#define AUTH_LIMIT_WINDOW (15 * USEC_PER_MINUTE)
#define AUTH_LIMITER_ENTRIES_MAX 4096U

/* Actor strings in the audit trail: "admin:<name>". */
#define AUTH_ACTOR_PREFIX "admin:"
#define AUTH_ACTOR_SIZE (STRLEN(AUTH_ACTOR_PREFIX) + STORE_ADMIN_NAME_MAX + 1U)

/* --- passwords --- */

/* 0 when password follows the rules, else -EINVAL with *ret_reason (static, printable). */
int auth_password_check(const char *password, const char **ret_reason);
/* A new argon2id encoded string for password (after auth_password_check(): -EINVAL with *ret_reason).
 * Release with free(). */
int auth_password_hash(const char *password, char **ret_encoded, const char **ret_reason);
/* 1 when password matches encoded, 0 when not, -EINVAL when encoded is not an argon2id hash within the
 * bounds above (nothing is computed then), -ENOMEM. */
int auth_password_verify(const char *encoded, const char *password);
/* Costs what auth_password_verify() costs for a real account and always fails: for unknown accounts. */
void auth_password_verify_dummy(const char *password);
/* Whether encoded was made with the current parameters (false: rehash at the next successful login). */
bool auth_password_hash_is_current(const char *encoded);
/* The hash auth_password_verify_dummy() verifies against (tests check that it is current). */
const char *auth_password_dummy_hash(void);

/* --- admins (audited; actor: "root", "uid:N", "admin:<name>") --- */

/* -EINVAL with *ret_reason (name or password rules), -EEXIST, -E2BIG (STORE_ADMINS_MAX). */
int auth_admin_create(Store *s, const char *name, const char *password, const char *actor,
                      const char **ret_reason);
/* -EINVAL with *ret_reason, -ENOENT. Ends the admin's sessions. */
int auth_admin_set_password(Store *s, const char *name, const char *password, const char *actor,
                            const char **ret_reason);
/* -EINVAL (name), -ENOENT. Its API tokens and sessions go with it. */
int auth_admin_delete(Store *s, const char *name, const char *actor);

/* --- who a request is --- */

typedef enum AuthCredential {
        AUTH_CREDENTIAL_SESSION,
        AUTH_CREDENTIAL_API_TOKEN,
} AuthCredential;

typedef struct AuthPrincipal {
        char admin[STORE_ADMIN_NAME_MAX + 1];
        char actor[AUTH_ACTOR_SIZE];            /* "admin:<name>", for the audit trail */
        AuthCredential credential;
        char credential_id[AUTH_ID_HEX_SIZE];  /* the session's or token's public id */
        StoreScope scope;                       /* sessions: read-write */
} AuthPrincipal;

/* --- API tokens --- */

typedef struct AuthApiTokenRequest {
        const char *admin;          /* owner: an existing admin */
        const char *name;           /* 1..STORE_API_TOKEN_NAME_MAX bytes of text, unique among live tokens */
        StoreScope scope;
        usec_t lifetime;            /* 0: AUTH_API_TOKEN_LIFETIME_DEFAULT */
} AuthApiTokenRequest;

/* Creates a token, audited. *ret_string (the only place the secret exists) must be released with
 * erase_and_free_string(); ret_row (may be NULL) gets the stored row. -EINVAL with *ret_reason, -ENOENT
 * (admin), -EEXIST (name), -E2BIG (STORE_API_TOKENS_PER_ADMIN_MAX). */
int auth_api_token_create(Store *s, const AuthApiTokenRequest *req, const char *actor, usec_t now,
                          char **ret_string, StoreApiToken **ret_row, const char **ret_reason);
/* id: 32 hex digits. -EINVAL, -ENOENT, -EALREADY. Audited. */
int auth_api_token_revoke(Store *s, const char *id, const char *actor, usec_t now);
/* Strict parse of the string form: exact prefix and length, lower-case hex id, canonical base64url secret.
 * -EINVAL otherwise. ret_secret is the caller's to wipe. */
int auth_api_token_parse(const char *s, uint8_t ret_id[static AUTH_ID_SIZE],
                         uint8_t ret_secret[static AUTH_SECRET_SIZE]);
/* Authenticates a bearer token for a request needing scope `needed`:
 *   -EACCES       malformed, unknown, wrong secret, revoked, expired, or its admin disabled (HTTP 401)
 *   -EPERM        valid, but a read token for a request that writes (HTTP 403)
 * Touches last_used_at at most once per AUTH_TOUCH_INTERVAL. ret (may be NULL) names the admin. */
int auth_api_token_check(Store *s, const char *token, StoreScope needed, usec_t now, AuthPrincipal *ret);

/* --- the login limiter --- */

typedef struct AuthLimiter AuthLimiter;

int auth_limiter_new(AuthLimiter **ret);
AuthLimiter *auth_limiter_free(AuthLimiter *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(AuthLimiter *, auth_limiter_free);
/* 0 when a login from address (an IP address, may be NULL) for account (may be NULL) may be tried at time
 * now (CLOCK_MONOTONIC), -EBUSY when either is limited. */
int auth_limiter_check(AuthLimiter *l, const char *address, const char *account, usec_t now);
/* Records a failed login. -ENOMEM only. */
int auth_limiter_failure(AuthLimiter *l, const char *address, const char *account, usec_t now);
/* A successful login clears the account's debt (not the address's). */
void auth_limiter_success(AuthLimiter *l, const char *account);
/* Keys held, both tables together (for tests and statistics). */
size_t auth_limiter_size(const AuthLimiter *l);

/* --- sessions --- */

typedef enum AuthLoginFailure {
        AUTH_LOGIN_OK,
        AUTH_LOGIN_UNKNOWN_ACCOUNT,
        AUTH_LOGIN_WRONG_PASSWORD,
        AUTH_LOGIN_RATE_LIMITED,
        AUTH_LOGIN_DISABLED,
        _AUTH_LOGIN_FAILURE_MAX,
} AuthLoginFailure;

/* "unknown account", "wrong password", "rate limited", "disabled" (the audit row's reason). */
const char *auth_login_failure_to_string(AuthLoginFailure f);

typedef struct AuthLogin {
        const char *name;
        const char *password;
        const char *address;        /* the client's IP address, or NULL */
        const char *user_agent;     /* recorded sanitised and cut to STORE_USER_AGENT_MAX bytes; may be NULL */
} AuthLogin;

/* What a successful login hands to the client, once: the cookie value and the CSRF token. Secrets: release
 * with auth_session_secrets_done(). */
typedef struct AuthSessionSecrets {
        char *cookie;
        char *csrf;
        char id[AUTH_ID_HEX_SIZE];
        usec_t expires_at;
} AuthSessionSecrets;

void auth_session_secrets_done(AuthSessionSecrets *s);

/* Checks the limiter (a limited login is refused before the password is looked at), the account and the
 * password, then creates a session (AUTH_SESSION_LIFETIME, AUTH_SESSION_IDLE_TIMEOUT) and records the login.
 * Every refusal is -EACCES, whatever the reason, so that callers cannot leak it by accident; the reason goes
 * to the audit trail and to *ret_failure (may be NULL). now: CLOCK_REALTIME; the limiter runs on
 * CLOCK_MONOTONIC. Other errors are internal. */
int auth_login(AuthLimiter *l, Store *s, const AuthLogin *req, usec_t now, AuthSessionSecrets *ret,
               AuthLoginFailure *ret_failure);

/* Authenticates a session cookie. mutating: the request changes something, and csrf (the request's CSRF
 * token, may be NULL) must match the session's.
 *   -EACCES       malformed, unknown, wrong secret, past its lifetime or idle timeout, admin disabled (401)
 *   -EPERM        a mutating request without the session's CSRF token (403)
 * Touches last_seen_at at most once per AUTH_TOUCH_INTERVAL. ret (may be NULL) names the admin. */
int auth_session_check(Store *s, const char *cookie, bool mutating, const char *csrf, usec_t now,
                       AuthPrincipal *ret);
/* Ends the session the cookie names (the secret must match): -EACCES like auth_session_check(). */
int auth_session_logout(Store *s, const char *cookie);
