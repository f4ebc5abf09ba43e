/* SPDX-License-Identifier: Apache-2.0 */

/* Admin authentication: argon2id passwords, API tokens, sessions with CSRF tokens, the login limiter. See
 * controller-auth.h for the rules; this file keeps them in one place so the D-Bus interface and the REST API
 * cannot apply them differently. */

#include <arpa/inet.h>
#include <argon2.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller-audit.h"
#include "controller-auth.h"
#include "crypto-token.h"
#include "hashmap.h"
#include "hexdecoct.h"
#include "log.h"
#include "random-util.h"
#include "string-util.h"

_Static_assert(AUTH_SECRET_SIZE == TOKEN_SECRET_SIZE, "secrets are hashed like enrollment token secrets");
_Static_assert(STORE_SECRET_HASH_SIZE == TOKEN_HASH_SIZE, "SHA-256");

/* Keys of the limiter's address table: an IPv4 address, or the /64 of an IPv6 address, as inet_ntop()
 * writes them. */
#define LIMITER_KEY_MAX INET6_ADDRSTRLEN

/* AuditRecord.fields: key, value, …, NULL. */
#define AUDIT_FIELDS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* A hash of a random password with the current parameters, verified in place of a real one when the account
 * does not exist, so that answering costs the same. auth_password_hash_is_current() of it is checked by the
 * unit tests: change it together with the parameters. */
static const char dummy_hash[] =
        "$argon2id$v=19$m=65536,t=3,p=1$JT0PBv4s5b11dwX+PbZpPg$L0PTV1upSxlREaNbiUMXyfCBhoWgqNE24RQ3R2w/hHM";

/* --- text rules --- */

#define ADMIN_NAME_RULE "1-64 characters of a-z 0-9 . _ @ -, starting with a letter or digit"

int auth_password_check(const char *password, const char **ret_reason) {
        size_t n;

        assert(ret_reason);

        if (!password)
                return *ret_reason = "a password is required", -EINVAL;
        n = strnlen(password, AUTH_PASSWORD_MAX + 1);
        if (n < AUTH_PASSWORD_MIN)
                return *ret_reason = "the password is shorter than 12 bytes", -EINVAL;
        if (n > AUTH_PASSWORD_MAX)
                return *ret_reason = "the password is longer than 1024 bytes", -EINVAL;
        if (!utf8_is_valid(password, n))
                return *ret_reason = "the password is not valid UTF-8", -EINVAL;
        if (password[strspn(password, WHITESPACE)] == '\0')
                return *ret_reason = "the password is only whitespace", -EINVAL;
        return 0;
}

/* --- argon2id --- */

static int argon2_errno(int e) {
        switch (e) {
        case ARGON2_OK:
                return 0;
        case ARGON2_MEMORY_ALLOCATION_ERROR:
                return -ENOMEM;
        case ARGON2_VERIFY_MISMATCH:
                return -EKEYREJECTED;
        case ARGON2_DECODING_FAIL:
        case ARGON2_DECODING_LENGTH_FAIL:
        case ARGON2_INCORRECT_TYPE:
        case ARGON2_INCORRECT_PARAMETER:
        case ARGON2_SALT_TOO_SHORT:
        case ARGON2_OUTPUT_TOO_SHORT:
                return -EINVAL;
        default:
                return -EIO;
        }
}

/* Reads an unsigned decimal without leading zeros at *p; advances *p. */
static bool parse_u32(const char **p, uint32_t *ret) {
        uint64_t v = 0;
        const char *q = *p;

        if (*q < '0' || *q > '9' || (q[0] == '0' && q[1] >= '0' && q[1] <= '9'))
                return false;
        for (; *q >= '0' && *q <= '9'; q++) {
                v = v * 10 + (uint64_t) (*q - '0');
                if (v > UINT32_MAX)
                        return false;
        }
        *ret = (uint32_t) v;
        *p = q;
        return true;
}

/* The cost parameters of an encoded argon2id hash, refusing anything we would not make or verify. */
static int argon2id_parameters(const char *encoded, uint32_t *ret_m, uint32_t *ret_t, uint32_t *ret_p) {
        const char *p;
        uint32_t m, t, par;

        if (!encoded || strnlen(encoded, STORE_PASSWORD_HASH_MAX + 1) > STORE_PASSWORD_HASH_MAX)
                return -EINVAL;
        p = startswith(encoded, "$argon2id$v=19$m=");
        if (!p || !parse_u32(&p, &m))
                return -EINVAL;
        p = startswith(p, ",t=");
        if (!p || !parse_u32(&p, &t))
                return -EINVAL;
        p = startswith(p, ",p=");
        if (!p || !parse_u32(&p, &par) || *p != '$')
                return -EINVAL;
        if (m < 8 || m > AUTH_ARGON2_M_COST_KIB_MAX || t < 1 || t > AUTH_ARGON2_T_COST_MAX || par != 1)
                return log_debug_errno(EINVAL, "argon2id parameters m=%" PRIu32 " t=%" PRIu32 " p=%" PRIu32
                                       " are outside what the controller verifies.", m, t, par);
        *ret_m = m;
        *ret_t = t;
        *ret_p = par;
        return 0;
}

int auth_password_hash(const char *password, char **ret_encoded, const char **ret_reason) {
        uint8_t salt[AUTH_ARGON2_SALT_SIZE];
        _cleanup_free_ char *encoded = NULL;
        size_t size;
        int r;

        assert(ret_encoded);
        assert(ret_reason);

        r = auth_password_check(password, ret_reason);
        if (r < 0)
                return r;

        r = random_bytes(salt, sizeof(salt));
        if (r < 0)
                return r;
        size = argon2_encodedlen(AUTH_ARGON2_T_COST, AUTH_ARGON2_M_COST_KIB, AUTH_ARGON2_PARALLELISM,
                                 AUTH_ARGON2_SALT_SIZE, AUTH_ARGON2_HASH_SIZE, Argon2_id);
        encoded = malloc(size);
        if (!encoded)
                return -ENOMEM;
        r = argon2id_hash_encoded(AUTH_ARGON2_T_COST, AUTH_ARGON2_M_COST_KIB, AUTH_ARGON2_PARALLELISM,
                                  password, strlen(password), salt, sizeof(salt), AUTH_ARGON2_HASH_SIZE, encoded,
                                  size);
        if (r != ARGON2_OK)
                return log_debug_errno(argon2_errno(r), "argon2id hashing failed: %s",
                                       argon2_error_message(r));
        assert(strlen(encoded) <= STORE_PASSWORD_HASH_MAX);

        *ret_encoded = TAKE_PTR(encoded);
        return 0;
}

int auth_password_verify(const char *encoded, const char *password) {
        uint32_t m, t, p;
        int r;

        assert(password);

        r = argon2id_parameters(encoded, &m, &t, &p);
        if (r < 0)
                return r;
        /* libargon2 recomputes the hash with the encoded parameters and compares in constant time. */
        r = argon2id_verify(encoded, password, strlen(password));
        if (r == ARGON2_OK)
                return 1;
        if (r == ARGON2_VERIFY_MISMATCH)
                return 0;
        return log_debug_errno(argon2_errno(r), "argon2id verification failed: %s", argon2_error_message(r));
}

void auth_password_verify_dummy(const char *password) {
        int r;

        r = auth_password_verify(dummy_hash, strempty(password));
        /* A random 256-bit password: a match is not going to happen. */
        assert(r <= 0);
}

const char *auth_password_dummy_hash(void) {
        return dummy_hash;
}

bool auth_password_hash_is_current(const char *encoded) {
        uint32_t m, t, p;

        if (argon2id_parameters(encoded, &m, &t, &p) < 0)
                return false;
        return m == AUTH_ARGON2_M_COST_KIB && t == AUTH_ARGON2_T_COST && p == AUTH_ARGON2_PARALLELISM;
}

/* --- secrets and their string forms --- */

static bool base64url_char_value(char c, unsigned *ret) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p;

        if (c == '\0')
                return false;
        p = strchr(alphabet, c);
        if (!p)
                return false;
        *ret = (unsigned) (p - alphabet);
        return true;
}

/* Exactly AUTH_SECRET_STRING_LEN characters of canonical base64url (the last one carries 2 unused bits, which
 * must be zero: one spelling per secret). */
static int secret_decode(const char *s, size_t n, uint8_t ret[static AUTH_SECRET_SIZE]) {
        _cleanup_(erase_and_freep) ByteBuffer b = {};
        unsigned v = 0;
        void *p = NULL;
        int r;

        if (n != AUTH_SECRET_STRING_LEN)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!base64url_char_value(s[i], &v))
                        return -EINVAL;
        if ((v & 3) != 0)
                return -EINVAL;
        r = base64url_decode(s, n, &p, &b.size);
        b.data = p;
        if (r < 0)
                return r == -ENOMEM ? r : -EINVAL;
        if (b.size != AUTH_SECRET_SIZE)
                return -EINVAL;
        memcpy(ret, b.data, AUTH_SECRET_SIZE);
        return 0;
}

static int id_decode(const char *s, uint8_t ret[static AUTH_ID_SIZE]) {
        for (size_t i = 0; i < AUTH_ID_SIZE; i++) {
                int hi = unhexchar(s[2 * i]), lo = unhexchar(s[2 * i + 1]);

                /* Lower-case only: one spelling per id. */
                if (hi < 0 || lo < 0 || (s[2 * i] >= 'A' && s[2 * i] <= 'F') ||
                    (s[2 * i + 1] >= 'A' && s[2 * i + 1] <= 'F'))
                        return -EINVAL;
                ret[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

static void id_to_hex(const uint8_t id[static AUTH_ID_SIZE], char ret[static AUTH_ID_HEX_SIZE]) {
        for (size_t i = 0; i < AUTH_ID_SIZE; i++) {
                ret[2 * i] = hexchar(id[i] >> 4);
                ret[2 * i + 1] = hexchar(id[i] & 0xf);
        }
        ret[2 * AUTH_ID_SIZE] = '\0';
}

/* "<prefix><hex id>_<base64url secret>": -EINVAL unless exactly that. */
static int credential_parse(const char *s, const char *prefix, uint8_t ret_id[static AUTH_ID_SIZE],
                            uint8_t ret_secret[static AUTH_SECRET_SIZE]) {
        size_t len = strlen(prefix) + 2 * AUTH_ID_SIZE + 1 + AUTH_SECRET_STRING_LEN;
        uint8_t id[AUTH_ID_SIZE];
        const char *p;
        int r;

        if (!s || strnlen(s, len + 1) != len)
                return -EINVAL;
        p = startswith(s, prefix);
        if (!p)
                return -EINVAL;
        r = id_decode(p, id);
        if (r < 0)
                return r;
        p += 2 * AUTH_ID_SIZE;
        if (*p != '_')
                return -EINVAL;
        r = secret_decode(p + 1, AUTH_SECRET_STRING_LEN, ret_secret);
        if (r < 0)
                return r;
        memcpy(ret_id, id, AUTH_ID_SIZE);
        return 0;
}

/* A new random id and secret and the string form; *ret_string is secret. */
static int credential_generate(const char *prefix, uint8_t ret_id[static AUTH_ID_SIZE],
                               uint8_t ret_hash[static STORE_SECRET_HASH_SIZE], char **ret_string) {
        uint8_t secret[AUTH_SECRET_SIZE];
        char hex[AUTH_ID_HEX_SIZE];
        _cleanup_erase_free_ char *b64 = NULL;
        char *s;
        int r;

        r = random_bytes(ret_id, AUTH_ID_SIZE);
        if (r >= 0)
                r = random_bytes(secret, sizeof(secret));
        if (r >= 0)
                r = token_secret_hash(secret, ret_hash);
        if (r >= 0)
                r = base64url_encode(secret, sizeof(secret), &b64);
        explicit_bzero(secret, sizeof(secret));
        if (r < 0)
                return r;
        id_to_hex(ret_id, hex);
        s = strjoin(prefix, hex, "_", b64, NULL);
        if (!s)
                return -ENOMEM;
        *ret_string = s;
        return 0;
}

/* SHA-256 of secret compared in constant time with stored (NULL: no row, compared against zeroes so that
 * an unknown id costs what a wrong secret costs). */
static bool secret_matches(const uint8_t secret[static AUTH_SECRET_SIZE], const uint8_t *stored) {
        static const uint8_t none[STORE_SECRET_HASH_SIZE] = {};
        uint8_t h[STORE_SECRET_HASH_SIZE];
        bool match;

        if (token_secret_hash(secret, h) < 0)
                return false;
        match = token_hash_equal(h, stored ?: none);
        explicit_bzero(h, sizeof(h));
        return stored && match;
}

static void principal_fill(AuthPrincipal *ret, const char *admin, AuthCredential credential,
                           const uint8_t id[static AUTH_ID_SIZE], StoreScope scope) {
        if (!ret)
                return;
        *ret = (AuthPrincipal) { .credential = credential, .scope = scope };
        snprintf(ret->admin, sizeof(ret->admin), "%s", admin);
        snprintf(ret->actor, sizeof(ret->actor), AUTH_ACTOR_PREFIX "%s", admin);
        id_to_hex(id, ret->credential_id);
}

/* Whether a last-used time is old enough to be written again. */
static bool touch_due(usec_t last, usec_t now) {
        return last == 0 || now >= last + AUTH_TOUCH_INTERVAL;
}

/* Whether the admin exists and is enabled. */
static int admin_is_enabled(Store *s, const char *name) {
        _cleanup_(store_admin_freep) StoreAdmin *a = NULL;
        int r;

        r = store_admin_get(s, name, &a);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        return a->disabled_at == 0;
}

/* --- admins --- */

static int admin_name_check(const char *name, const char **ret_reason) {
        if (!store_admin_name_is_valid(name)) {
                if (ret_reason)
                        *ret_reason = "invalid admin name (" ADMIN_NAME_RULE ")";
                return -EINVAL;
        }
        return 0;
}

int auth_admin_create(Store *s, const char *name, const char *password, const char *actor,
                      const char **ret_reason) {
        _cleanup_(store_admin_freep) StoreAdmin *existing = NULL;
        _cleanup_(erase_and_free_stringp) char *hash = NULL;
        const char *reason = NULL;
        int r;

        assert(s);
        assert(actor);

        r = admin_name_check(name, ret_reason);
        if (r < 0)
                return r;
        r = auth_password_check(password, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }
        /* Before the expensive hash; the store refuses a duplicate in any case. */
        r = store_admin_get(s, name, &existing);
        if (r >= 0)
                return -EEXIST;
        if (r != -ENOENT)
                return r;

        r = auth_password_hash(password, &hash, &reason);
        if (r < 0)
                return r;
        r = store_admin_create(s, &(const StoreAdmin) {
                                       .name = (char *) name,
                                       .password_hash = hash,
                                       .created_by = (char *) actor,
                                       .created_at = now(CLOCK_REALTIME),
                               });
        if (r < 0)
                return r;

        (void) audit_log(s, AUDIT_ADMIN_CREATED, &(const AuditRecord) { .actor = actor, .subject = name,
                                                                          .role = _SPIFFE_ROLE_INVALID });
        return 0;
}

int auth_admin_set_password(Store *s, const char *name, const char *password, const char *actor,
                            const char **ret_reason) {
        _cleanup_(store_admin_freep) StoreAdmin *existing = NULL;
        _cleanup_(erase_and_free_stringp) char *hash = NULL;
        const char *reason = NULL;
        int r;

        assert(s);
        assert(actor);

        r = admin_name_check(name, ret_reason);
        if (r < 0)
                return r;
        r = auth_password_check(password, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }
        r = store_admin_get(s, name, &existing);
        if (r < 0)
                return r;

        r = auth_password_hash(password, &hash, &reason);
        if (r < 0)
                return r;
        r = store_admin_set_password(s, name, hash, now(CLOCK_REALTIME));
        if (r < 0)
                return r;

        (void) audit_log(s, AUDIT_ADMIN_PASSWORD_CHANGED, &(const AuditRecord) { .actor = actor, .subject = name,
                                                                                   .role = _SPIFFE_ROLE_INVALID });
        return 0;
}

int auth_admin_delete(Store *s, const char *name, const char *actor) {
        int r;

        assert(s);
        assert(actor);

        r = admin_name_check(name, NULL);
        if (r < 0)
                return r;
        r = store_admin_delete(s, name);
        if (r < 0)
                return r;

        (void) audit_log(s, AUDIT_ADMIN_DELETED, &(const AuditRecord) { .actor = actor, .subject = name,
                                                                          .role = _SPIFFE_ROLE_INVALID });
        return 0;
}

/* --- API tokens --- */

int auth_api_token_parse(const char *s, uint8_t ret_id[static AUTH_ID_SIZE],
                         uint8_t ret_secret[static AUTH_SECRET_SIZE]) {
        return credential_parse(s, AUTH_API_TOKEN_PREFIX, ret_id, ret_secret);
}

int auth_api_token_create(Store *s, const AuthApiTokenRequest *req, const char *actor, usec_t now,
                          char **ret_string, StoreApiToken **ret_row, const char **ret_reason) {
        _cleanup_(store_api_token_freep) StoreApiToken *row = NULL;
        _cleanup_erase_free_ char *string = NULL;
        char hex[AUTH_ID_HEX_SIZE], not_after[32];
        const char *reason = NULL;
        usec_t lifetime;
        int r;

        assert(s);
        assert(req);
        assert(actor);
        assert(ret_string);

        lifetime = req->lifetime > 0 ? req->lifetime : AUTH_API_TOKEN_LIFETIME_DEFAULT;
        if (!store_admin_name_is_valid(req->admin))
                reason = "invalid admin name (" ADMIN_NAME_RULE ")";
        else if (isempty(req->name) || !string_is_valid_text(req->name, STORE_API_TOKEN_NAME_MAX) ||
                 !utf8_is_valid(req->name, strlen(req->name)))
                reason = "invalid token name (1-128 bytes of text without control characters)";
        else if (!store_scope_to_string(req->scope))
                reason = "the scope must be read or read-write";
        else if (lifetime < AUTH_API_TOKEN_LIFETIME_MIN || lifetime > AUTH_API_TOKEN_LIFETIME_MAX)
                reason = "the token lifetime must be between 1min and 366d";
        if (reason) {
                if (ret_reason)
                        *ret_reason = reason;
                return -EINVAL;
        }

        row = calloc(1, sizeof(*row));
        if (!row)
                return -ENOMEM;
        r = credential_generate(AUTH_API_TOKEN_PREFIX, row->id, row->secret_hash, &string);
        if (r < 0)
                return r;
        row->name = strdup(req->name);
        row->admin = strdup(req->admin);
        if (!row->name || !row->admin)
                return -ENOMEM;
        row->scope = req->scope;
        row->created_at = now;
        row->expires_at = now + lifetime;

        r = store_api_token_create(s, row);
        if (r < 0)
                return r;

        id_to_hex(row->id, hex);
        snprintf(not_after, sizeof(not_after), "%" PRIu64, row->expires_at);
        (void) audit_log(s, AUDIT_API_TOKEN_CREATED,
                         &(const AuditRecord) {
                                 .actor = actor,
                                 .subject = hex,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .not_after = row->expires_at,
                                 .fields = AUDIT_FIELDS("admin", row->admin, "name", row->name, "scope",
                                                        store_scope_to_string(row->scope)),
                         });

        *ret_string = TAKE_PTR(string);
        if (ret_row)
                *ret_row = TAKE_PTR(row);
        return 0;
}

int auth_api_token_revoke(Store *s, const char *id, const char *actor, usec_t now) {
        _cleanup_(store_api_token_freep) StoreApiToken *row = NULL;
        uint8_t raw[AUTH_ID_SIZE];
        int r;

        assert(s);
        assert(actor);

        if (!id || strnlen(id, 2 * AUTH_ID_SIZE + 1) != 2 * AUTH_ID_SIZE || id_decode(id, raw) < 0)
                return -EINVAL;
        r = store_api_token_revoke(s, raw, now);
        if (r < 0)
                return r;
        /* For the record only: whose token it was. */
        (void) store_api_token_get(s, raw, &row);

        (void) audit_log(s, AUDIT_API_TOKEN_REVOKED,
                         &(const AuditRecord) {
                                 .actor = actor,
                                 .subject = id,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .fields = AUDIT_FIELDS("admin", row ? row->admin : NULL),
                         });
        return 0;
}

int auth_api_token_check(Store *s, const char *token, StoreScope needed, usec_t now, AuthPrincipal *ret) {
        _cleanup_(store_api_token_freep) StoreApiToken *row = NULL;
        uint8_t id[AUTH_ID_SIZE], secret[AUTH_SECRET_SIZE];
        bool match;
        int r;

        assert(s);
        assert(needed >= 0 && needed < _STORE_SCOPE_MAX);

        r = auth_api_token_parse(token, id, secret);
        if (r < 0) {
                explicit_bzero(secret, sizeof(secret));
                return -EACCES;
        }
        r = store_api_token_get(s, id, &row);
        if (r < 0 && r != -ENOENT) {
                explicit_bzero(secret, sizeof(secret));
                return r;
        }
        match = secret_matches(secret, row ? row->secret_hash : NULL);
        explicit_bzero(secret, sizeof(secret));
        if (!match)
                return log_debug_errno(EACCES, "API token: unknown id or wrong secret.");
        if (row->revoked_at != 0)
                return log_debug_errno(EACCES, "API token: revoked.");
        if (now >= row->expires_at)
                return log_debug_errno(EACCES, "API token: expired.");
        r = admin_is_enabled(s, row->admin);
        if (r < 0)
                return r;
        if (r == 0)
                return log_debug_errno(EACCES, "API token: its admin is disabled.");
        if (needed == STORE_SCOPE_READ_WRITE && row->scope != STORE_SCOPE_READ_WRITE)
                return log_debug_errno(EPERM, "API token: read-only.");

        if (touch_due(row->last_used_at, now)) {
                r = store_api_token_touch(s, id, now);
                if (r < 0)
                        log_debug_errno(r, "Failed to record the use of an API token, ignoring: %m");
        }
        principal_fill(ret, row->admin, AUTH_CREDENTIAL_API_TOKEN, id, row->scope);
        return 0;
}

/* --- the login limiter --- */

typedef struct LimiterEntry {
        usec_t debt;                /* window/limit per failure, drained by elapsed time */
        usec_t updated;
} LimiterEntry;

struct AuthLimiter {
        Hashmap *addresses;
        Hashmap *accounts;
};

static usec_t limiter_cost(unsigned limit) {
        return AUTH_LIMIT_WINDOW / limit;
}

static usec_t limiter_debt(const LimiterEntry *e, usec_t now) {
        usec_t elapsed = now > e->updated ? now - e->updated : 0;

        return e->debt > elapsed ? e->debt - elapsed : 0;
}

static void limiter_table_free(Hashmap *h) {
        LimiterEntry *e;
        const char *k;

        HASHMAP_FOREACH_KEY(e, k, h)
                free(e);
        hashmap_free(h);
}

int auth_limiter_new(AuthLimiter **ret) {
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        int r;

        assert(ret);

        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        r = hashmap_new(&l->addresses);
        if (r < 0)
                return r;
        r = hashmap_new(&l->accounts);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

AuthLimiter *auth_limiter_free(AuthLimiter *l) {
        if (!l)
                return NULL;
        limiter_table_free(l->addresses);
        limiter_table_free(l->accounts);
        return mfree(l);
}

size_t auth_limiter_size(const AuthLimiter *l) {
        return l ? hashmap_size(l->addresses) + hashmap_size(l->accounts) : 0;
}

static bool limiter_table_limited(Hashmap *h, const char *key, unsigned limit, usec_t now) {
        LimiterEntry *e;

        if (!key)
                return false;
        e = hashmap_get(h, key);
        return e && limiter_debt(e, now) + limiter_cost(limit) > AUTH_LIMIT_WINDOW;
}

/* Makes room for one more key: drained entries go, and when none has drained, the one with the least debt
 * (the attack in progress keeps its debt). Only when the table is full, so the scan is rare and bounded. */
static void limiter_table_make_room(Hashmap *h, usec_t now) {
        LimiterEntry *e, *least = NULL;
        const char *k, *least_key = NULL;

        if (hashmap_size(h) < AUTH_LIMITER_ENTRIES_MAX)
                return;
        HASHMAP_FOREACH_KEY(e, k, h)
                if (limiter_debt(e, now) == 0)
                        free(hashmap_remove(h, k));
        if (hashmap_size(h) < AUTH_LIMITER_ENTRIES_MAX)
                return;
        HASHMAP_FOREACH_KEY(e, k, h)
                if (!least || limiter_debt(e, now) < limiter_debt(least, now)) {
                        least = e;
                        least_key = k;
                }
        assert(least_key);
        free(hashmap_remove(h, least_key));
}

static int limiter_table_failure(Hashmap *h, const char *key, unsigned limit, usec_t now) {
        LimiterEntry *e;
        int r;

        if (!key)
                return 0;
        e = hashmap_get(h, key);
        if (!e) {
                limiter_table_make_room(h, now);
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                r = hashmap_put(h, key, e);
                if (r < 0) {
                        free(e);
                        return r;
                }
                e->updated = now;
        }
        e->debt = MIN(limiter_debt(e, now) + limiter_cost(limit), AUTH_LIMIT_WINDOW);
        e->updated = now;
        return 0;
}

/* The address table's key: an IPv4 address, or an IPv6 address cut to its /64 (an IPv4-mapped IPv6 address
 * counts as the IPv4 address). NULL when address is NULL or not an IP address. */
static const char *limiter_address_key(const char *address, char buf[static LIMITER_KEY_MAX]) {
        struct in6_addr a6;
        struct in_addr a4;

        if (!address)
                return NULL;
        if (inet_pton(AF_INET, address, &a4) == 1)
                return inet_ntop(AF_INET, &a4, buf, LIMITER_KEY_MAX);
        if (inet_pton(AF_INET6, address, &a6) != 1)
                return NULL;
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
                memcpy(&a4, a6.s6_addr + 12, sizeof(a4));
                return inet_ntop(AF_INET, &a4, buf, LIMITER_KEY_MAX);
        }
        memset(a6.s6_addr + 8, 0, 8);
        return inet_ntop(AF_INET6, &a6, buf, LIMITER_KEY_MAX);
}

int auth_limiter_check(AuthLimiter *l, const char *address, const char *account, usec_t now) {
        char buf[LIMITER_KEY_MAX];

        assert(l);

        if (limiter_table_limited(l->addresses, limiter_address_key(address, buf), AUTH_LIMIT_ADDRESS_FAILURES,
                                  now) ||
            limiter_table_limited(l->accounts, account, AUTH_LIMIT_ACCOUNT_FAILURES, now))
                return -EBUSY;
        return 0;
}

int auth_limiter_failure(AuthLimiter *l, const char *address, const char *account, usec_t now) {
        char buf[LIMITER_KEY_MAX];
        int r;

        assert(l);

        r = limiter_table_failure(l->addresses, limiter_address_key(address, buf), AUTH_LIMIT_ADDRESS_FAILURES,
                                  now);
        if (r < 0)
                return r;
        return limiter_table_failure(l->accounts, account, AUTH_LIMIT_ACCOUNT_FAILURES, now);
}

void auth_limiter_success(AuthLimiter *l, const char *account) {
        assert(l);

        if (account)
                free(hashmap_remove(l->accounts, account));
}

/* --- sessions --- */

static const char *const login_failure_table[_AUTH_LOGIN_FAILURE_MAX] = {
        [AUTH_LOGIN_OK] = "ok",
        [AUTH_LOGIN_UNKNOWN_ACCOUNT] = "unknown account",
        [AUTH_LOGIN_WRONG_PASSWORD] = "wrong password",
        [AUTH_LOGIN_RATE_LIMITED] = "rate limited",
        [AUTH_LOGIN_DISABLED] = "disabled",
};

const char *auth_login_failure_to_string(AuthLoginFailure f) {
        if (f < 0 || f >= _AUTH_LOGIN_FAILURE_MAX)
                return NULL;
        return login_failure_table[f];
}

void auth_session_secrets_done(AuthSessionSecrets *s) {
        if (!s)
                return;
        s->cookie = erase_and_free_string(s->cookie);
        s->csrf = erase_and_free_string(s->csrf);
}

/* The User-Agent as recorded: printable ASCII (anything else becomes '?'), at most STORE_USER_AGENT_MAX bytes;
 * NULL for none. */
static char *user_agent_sanitize(const char *ua) {
        size_t n;
        char *c;

        if (isempty(ua))
                return NULL;
        n = strnlen(ua, STORE_USER_AGENT_MAX);
        c = strndup(ua, n);
        if (!c)
                return NULL;
        for (char *p = c; *p; p++)
                if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
                        *p = '?';
        return c;
}

/* The client address as recorded: an IP address literal, else nothing. */
static const char *address_or_null(const char *address) {
        uint8_t buf[sizeof(struct in6_addr)];

        if (!address || strnlen(address, INET6_ADDRSTRLEN) >= INET6_ADDRSTRLEN)
                return NULL;
        if (inet_pton(AF_INET, address, buf) != 1 && inet_pton(AF_INET6, address, buf) != 1)
                return NULL;
        return address;
}

static int login_refused(Store *s, const AuthLogin *req, const char *known_name, AuthLoginFailure failure,
                         AuthLoginFailure *ret_failure) {
        /* The name only when it is an account's: a password typed into the name field must not end up in the
         * journal. */
        (void) audit_log(s, AUDIT_LOGIN_FAILED,
                         &(const AuditRecord) {
                                 .actor = "anonymous",
                                 .subject = known_name,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .peer = address_or_null(req->address),
                                 .reason = auth_login_failure_to_string(failure),
                         });
        if (ret_failure)
                *ret_failure = failure;
        return -EACCES;
}

static int session_create(Store *s, const char *admin, const AuthLogin *req, usec_t now,
                          AuthSessionSecrets *ret) {
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets secrets = {};
        _cleanup_free_ char *user_agent = NULL;
        uint8_t csrf[AUTH_SECRET_SIZE];
        StoreSession session = {
                .admin = (char *) admin,
                .created_at = now,
                .expires_at = now + AUTH_SESSION_LIFETIME,
                .last_seen_at = now,
                .address = (char *) address_or_null(req->address),
        };
        int r;

        user_agent = user_agent_sanitize(req->user_agent);
        if (!user_agent && !isempty(req->user_agent))
                return -ENOMEM;
        session.user_agent = user_agent;

        r = credential_generate(AUTH_SESSION_PREFIX, session.id, session.secret_hash, &secrets.cookie);
        if (r < 0)
                return r;
        r = random_bytes(csrf, sizeof(csrf));
        if (r >= 0)
                r = token_secret_hash(csrf, session.csrf_hash);
        if (r >= 0)
                r = base64url_encode(csrf, sizeof(csrf), &secrets.csrf);
        explicit_bzero(csrf, sizeof(csrf));
        if (r < 0)
                return r;

        r = store_session_create(s, &session);
        if (r < 0)
                return r;

        id_to_hex(session.id, secrets.id);
        secrets.expires_at = session.expires_at;
        *ret = secrets;
        secrets = (AuthSessionSecrets) {};
        return 0;
}

/* The limiter's clock: login attempts are counted in CLOCK_MONOTONIC, which no clock change moves. */
static usec_t limiter_now(void) {
        return now(CLOCK_MONOTONIC);
}

int auth_login(AuthLimiter *l, Store *s, const AuthLogin *req, usec_t now, AuthSessionSecrets *ret,
               AuthLoginFailure *ret_failure) {
        _cleanup_(store_admin_freep) StoreAdmin *admin = NULL;
        usec_t mono = limiter_now();
        char actor[AUTH_ACTOR_SIZE];
        const char *account;
        bool password_fits;
        int r;

        assert(l);
        assert(s);
        assert(req);
        assert(ret);

        /* Names that cannot be an account are not limited as one (the address still is), so they cannot
         * fill the account table. */
        account = store_admin_name_is_valid(req->name) ? req->name : NULL;

        if (account) {
                r = store_admin_get(s, account, &admin);
                if (r < 0 && r != -ENOENT)
                        return r;
        }

        /* Before any password is hashed: a limited login costs a lookup (which names the account in the
         * audit record when there is one), nothing more. */
        if (auth_limiter_check(l, req->address, account, mono) < 0)
                return login_refused(s, req, admin ? admin->name : NULL, AUTH_LOGIN_RATE_LIMITED, ret_failure);

        /* An oversized password is refused without hashing, for accounts and non-accounts alike. */
        password_fits = req->password && strnlen(req->password, AUTH_PASSWORD_MAX + 1) <= AUTH_PASSWORD_MAX;
        if (!admin) {
                if (password_fits)
                        auth_password_verify_dummy(req->password);
                r = auth_limiter_failure(l, req->address, account, mono);
                if (r < 0)
                        return r;
                return login_refused(s, req, NULL, AUTH_LOGIN_UNKNOWN_ACCOUNT, ret_failure);
        }

        r = password_fits ? auth_password_verify(admin->password_hash, req->password) : 0;
        if (r < 0)
                return log_debug_errno(r, "Cannot verify the password of admin '%s': %m", admin->name);
        if (r == 0) {
                r = auth_limiter_failure(l, req->address, account, mono);
                if (r < 0)
                        return r;
                return login_refused(s, req, admin->name, AUTH_LOGIN_WRONG_PASSWORD, ret_failure);
        }
        /* After the password: whether an account is disabled is nobody else's business. */
        if (admin->disabled_at != 0)
                return login_refused(s, req, admin->name, AUTH_LOGIN_DISABLED, ret_failure);

        r = session_create(s, admin->name, req, now, ret);
        if (r == -EPERM || r == -ENOENT) /* disabled or deleted since we looked */
                return login_refused(s, req, admin->name,
                                     r == -EPERM ? AUTH_LOGIN_DISABLED : AUTH_LOGIN_UNKNOWN_ACCOUNT,
                                     ret_failure);
        if (r < 0)
                return r;

        auth_limiter_success(l, account);
        r = store_admin_touch_login(s, admin->name, now);
        if (r < 0)
                log_debug_errno(r, "Failed to record the login time of '%s', ignoring: %m", admin->name);

        snprintf(actor, sizeof(actor), AUTH_ACTOR_PREFIX "%s", admin->name);
        (void) audit_log(s, AUDIT_LOGIN_SUCCEEDED,
                         &(const AuditRecord) {
                                 .actor = actor,
                                 .subject = admin->name,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .peer = address_or_null(req->address),
                                 .not_after = ret->expires_at,
                                 .fields = AUDIT_FIELDS("session_id", ret->id),
                         });
        if (ret_failure)
                *ret_failure = AUTH_LOGIN_OK;
        return 0;
}

/* The session a cookie names, its secret checked: -EACCES otherwise. */
static int session_load(Store *s, const char *cookie, uint8_t ret_id[static AUTH_ID_SIZE],
                        StoreSession **ret) {
        _cleanup_(store_session_freep) StoreSession *session = NULL;
        uint8_t secret[AUTH_SECRET_SIZE];
        bool match;
        int r;

        r = credential_parse(cookie, AUTH_SESSION_PREFIX, ret_id, secret);
        if (r < 0) {
                explicit_bzero(secret, sizeof(secret));
                return -EACCES;
        }
        r = store_session_get(s, ret_id, &session);
        if (r < 0 && r != -ENOENT) {
                explicit_bzero(secret, sizeof(secret));
                return r;
        }
        match = secret_matches(secret, session ? session->secret_hash : NULL);
        explicit_bzero(secret, sizeof(secret));
        if (!match)
                return log_debug_errno(EACCES, "Session: unknown id or wrong secret.");
        *ret = TAKE_PTR(session);
        return 0;
}

static bool csrf_matches(const StoreSession *session, const char *csrf) {
        uint8_t secret[AUTH_SECRET_SIZE];
        bool match;

        if (!csrf || secret_decode(csrf, strnlen(csrf, AUTH_CSRF_STRING_LEN + 1), secret) < 0) {
                /* Still compare, so a malformed token costs what a wrong one costs. */
                memset(secret, 0, sizeof(secret));
                (void) secret_matches(secret, session->csrf_hash);
                return false;
        }
        match = secret_matches(secret, session->csrf_hash);
        explicit_bzero(secret, sizeof(secret));
        return match;
}

int auth_session_check(Store *s, const char *cookie, bool mutating, const char *csrf, usec_t now,
                       AuthPrincipal *ret) {
        _cleanup_(store_session_freep) StoreSession *session = NULL;
        uint8_t id[AUTH_ID_SIZE];
        int r;

        assert(s);

        r = session_load(s, cookie, id, &session);
        if (r < 0)
                return r;
        if (now >= session->expires_at || now >= session->last_seen_at + AUTH_SESSION_IDLE_TIMEOUT) {
                r = store_session_delete(s, id);
                if (r < 0 && r != -ENOENT)
                        log_debug_errno(r, "Failed to delete an expired session, ignoring: %m");
                return log_debug_errno(EACCES, "Session: expired.");
        }
        r = admin_is_enabled(s, session->admin);
        if (r < 0)
                return r;
        if (r == 0)
                return log_debug_errno(EACCES, "Session: its admin is disabled.");
        if (mutating && !csrf_matches(session, csrf))
                return log_debug_errno(EPERM, "Session: missing or wrong CSRF token.");

        if (touch_due(session->last_seen_at, now)) {
                r = store_session_touch(s, id, now);
                if (r < 0)
                        log_debug_errno(r, "Failed to record the use of a session, ignoring: %m");
        }
        principal_fill(ret, session->admin, AUTH_CREDENTIAL_SESSION, id, STORE_SCOPE_READ_WRITE);
        return 0;
}

int auth_session_logout(Store *s, const char *cookie) {
        _cleanup_(store_session_freep) StoreSession *session = NULL;
        uint8_t id[AUTH_ID_SIZE];
        int r;

        assert(s);

        r = session_load(s, cookie, id, &session);
        if (r < 0)
                return r;
        r = store_session_delete(s, id);
        if (r == -ENOENT)
                return -EACCES;
        return r;
}
