/* SPDX-License-Identifier: Apache-2.0 */

/* controller-auth: argon2id passwords, admins, API tokens, sessions and CSRF tokens, the login limiter, and
 * that no secret reaches the database or the log. */

#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "controller-auth.h"
#include "controller-store.h"
#include "crypto-token.h"
#include "fileio.h"
#include "hexdecoct.h"
#include "string-util.h"
#include "tests.h"

#define T0 ((usec_t) 1700000000 * USEC_PER_SEC)
#define PASSWORD "correct horse battery staple"
#define PASSWORD2 "Tr0ub4dor&3 is not it"

static Store *open_store(void) {
        Store *s = NULL;

        ASSERT_OK(store_open_sqlite(test_path("auth.db"), &s));
        return ASSERT_NOT_NULL(s);
}

static Store *open_store_with_admin(const char *name) {
        Store *s = open_store();

        ASSERT_OK(auth_admin_create(s, name, PASSWORD, "root", NULL));
        return s;
}

/* The audit rows of one event, oldest first, as "actor|subject|detail" lines. */
static char *audit_dump(Store *s, const char *event) {
        StoreAuditEvent **rows = NULL;
        char *buf = NULL;
        size_t n = 0, size = 0;
        FILE *f;

        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .event = event, .limit = STORE_AUDIT_PAGE_MAX }, &rows,
                                   &n));
        f = ASSERT_NOT_NULL(open_memstream(&buf, &size));
        for (size_t i = n; i > 0; i--)
                fprintf(f, "%s|%s|%s\n", rows[i - 1]->actor, strna(rows[i - 1]->subject), strna(rows[i - 1]->detail));
        ASSERT_EQ(fclose(f), 0);
        store_audit_event_array_free(rows, n);
        return buf;
}

static size_t audit_count(Store *s, const char *event) {
        StoreAuditEvent **rows = NULL;
        size_t n = 0;

        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .event = event, .limit = STORE_AUDIT_PAGE_MAX }, &rows,
                                   &n));
        store_audit_event_array_free(rows, n);
        return n;
}

/* Passwords */

TEST(password_rules) {
        char long_ok[AUTH_PASSWORD_MAX + 1], too_long[AUTH_PASSWORD_MAX + 2];
        static const struct {
                const char *password;
                const char *reason; /* NULL: accepted */
        } cases[] = {
                { "", "the password is shorter than 12 bytes" },
                { "elevenchars", "the password is shorter than 12 bytes" },
                { "twelve chars", NULL },
                { "            ", "the password is only whitespace" },
                { " \t\n\r \t\n\r \t\n\r", "the password is only whitespace" },
                { "  twelve  chars ", NULL },
                { "pässwörd-ünïcödé", NULL },
                { "密码密码密码密码", NULL },
                { "bad utf8 \xc3\x28 here", "the password is not valid UTF-8" },
                { "overlong \xc0\xaf slash!", "the password is not valid UTF-8" },
                { "surrogate \xed\xa0\x80 here", "the password is not valid UTF-8" },
                { "truncated sequence \xe2\x82", "the password is not valid UTF-8" },
        };
        const char *reason;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                CASE("'%s'", cases[i].password);
                reason = NULL;
                if (cases[i].reason) {
                        ASSERT_ERROR(auth_password_check(cases[i].password, &reason), EINVAL);
                        ASSERT_STREQ(reason, cases[i].reason);
                } else {
                        ASSERT_OK(auth_password_check(cases[i].password, &reason));
                        ASSERT_NULL(reason);
                }
        }

        CASE("lengths");
        memset(long_ok, 'x', AUTH_PASSWORD_MAX);
        long_ok[AUTH_PASSWORD_MAX] = '\0';
        ASSERT_OK(auth_password_check(long_ok, &reason));
        memset(too_long, 'x', AUTH_PASSWORD_MAX + 1);
        too_long[AUTH_PASSWORD_MAX + 1] = '\0';
        ASSERT_ERROR(auth_password_check(too_long, &reason), EINVAL);
        ASSERT_STREQ(reason, "the password is longer than 1024 bytes");
        ASSERT_ERROR(auth_password_check(NULL, &reason), EINVAL);
}

TEST(hash_and_verify) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        const char *reason = NULL;

        ASSERT_OK(auth_password_hash(PASSWORD, &a, &reason));
        ASSERT_OK(auth_password_hash(PASSWORD, &b, &reason));
        /* The parameters we state, and a fresh salt each time. */
        ASSERT_NOT_NULL(startswith(a, "$argon2id$v=19$m=65536,t=3,p=1$"));
        ASSERT_TRUE(auth_password_hash_is_current(a));
        ASSERT_FALSE(streq(a, b));
        ASSERT_LE(strlen(a), (size_t) STORE_PASSWORD_HASH_MAX);

        ASSERT_EQ(auth_password_verify(a, PASSWORD), 1);
        ASSERT_EQ(auth_password_verify(b, PASSWORD), 1);
        ASSERT_EQ(auth_password_verify(a, PASSWORD2), 0);
        ASSERT_EQ(auth_password_verify(a, "correct horse battery stapl"), 0);
        ASSERT_EQ(auth_password_verify(a, ""), 0);

        /* A password the rules refuse is never hashed. */
        ASSERT_ERROR(auth_password_hash("short", &a, &reason), EINVAL);
        ASSERT_STREQ(reason, "the password is shorter than 12 bytes");
}

TEST(verify_refuses_hashes_out_of_bounds) {
        static const char *const bad[] = {
                "",
                "plaintext password",
                "$argon2i$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2d$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=16$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                /* Memory, passes, lanes beyond what the daemon computes (it would allocate 4 GiB, or spin, or
                 * start threads). */
                "$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=19$m=65536,t=1000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=19$m=065536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=19$m=99999999999,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
                "$argon2id$v=19$m=65536,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
                "$argon2id$v=19$m=65536,t=3,p=1",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("%s", bad[i]);
                ASSERT_ERROR(auth_password_verify(bad[i], PASSWORD), EINVAL);
                ASSERT_FALSE(auth_password_hash_is_current(bad[i]));
        }
        CASE("within bounds, but not decodable");
        ASSERT_ERROR(auth_password_verify("$argon2id$v=19$m=65536,t=3,p=1$!!!$???", PASSWORD), EINVAL);
        ASSERT_ERROR(auth_password_verify(NULL, PASSWORD), EINVAL);
}

static double cpu_seconds(void) {
        struct timespec ts;

        ASSERT_OK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts));
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Unknown accounts are verified against a dummy hash of the current parameters: the same work as a real
 * account with a wrong password. */
TEST(dummy_verify) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        AuthSessionSecrets secrets = {};
        AuthLoginFailure failure;
        double t, unknown = 0, wrong = 0;

        ASSERT_TRUE(auth_password_hash_is_current(auth_password_dummy_hash()));
        ASSERT_EQ(auth_password_verify(auth_password_dummy_hash(), PASSWORD), 0);
        auth_password_verify_dummy(PASSWORD);
        auth_password_verify_dummy(NULL);

        ASSERT_OK(auth_limiter_new(&l));
        for (int i = 0; i < 3; i++) {
                t = cpu_seconds();
                ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "mallory", .password = PASSWORD2 }, T0,
                                        &secrets, &failure),
                             EACCES);
                unknown += cpu_seconds() - t;
                ASSERT_EQ(failure, AUTH_LOGIN_UNKNOWN_ACCOUNT);

                t = cpu_seconds();
                ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD2 }, T0, &secrets,
                                        &failure),
                             EACCES);
                wrong += cpu_seconds() - t;
                ASSERT_EQ(failure, AUTH_LOGIN_WRONG_PASSWORD);
        }
        /* The same argon2id work either way (a hash costs tenths of a second; the database lookups are noise). */
        if (unknown < wrong / 2 || unknown > wrong * 2)
                test_fail(__FILE__, __LINE__, "unknown account took %.3f s of CPU, wrong password %.3f s", unknown,
                          wrong);
        ASSERT_NULL(secrets.cookie);
}

/* Admins */

TEST(admins_create_set_delete) {
        _cleanup_(store_freep) Store *s = open_store();
        _cleanup_(store_admin_freep) StoreAdmin *a = NULL;
        _cleanup_free_ char *created = NULL, *changed = NULL, *deleted = NULL;
        const char *reason = NULL;
        char long_name[STORE_ADMIN_NAME_MAX + 2];

        /* Invalid requests say why and change nothing. */
        memset(long_name, 'a', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = '\0';
        static const char *const bad_names[] = { "", "Alice", "-alice", ".alice", "al ice", "al/ice", "alice\n",
                                                 "ålice" };
        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                CASE("name '%s'", bad_names[i]);
                reason = NULL;
                ASSERT_ERROR(auth_admin_create(s, bad_names[i], PASSWORD, "root", &reason), EINVAL);
                ASSERT_STRSTR(reason, "invalid admin name");
        }
        CASE("long name");
        ASSERT_ERROR(auth_admin_create(s, long_name, PASSWORD, "root", &reason), EINVAL);
        long_name[STORE_ADMIN_NAME_MAX] = '\0';
        ASSERT_OK(auth_admin_create(s, long_name, PASSWORD, "root", &reason));
        ASSERT_OK(auth_admin_delete(s, long_name, "root"));

        CASE("password");
        ASSERT_ERROR(auth_admin_create(s, "alice", "too short", "root", &reason), EINVAL);
        ASSERT_STREQ(reason, "the password is shorter than 12 bytes");
        ASSERT_ERROR(store_admin_get(s, "alice", &a), ENOENT);

        CASE("create");
        ASSERT_OK(auth_admin_create(s, "alice", PASSWORD, "uid:1000", &reason));
        ASSERT_OK(auth_admin_create(s, "bob@example.org", PASSWORD2, "root", &reason));
        ASSERT_ERROR(auth_admin_create(s, "alice", PASSWORD2, "root", &reason), EEXIST);
        ASSERT_OK(store_admin_get(s, "alice", &a));
        ASSERT_STREQ(a->created_by, "uid:1000");
        ASSERT_TRUE(auth_password_hash_is_current(a->password_hash));
        ASSERT_EQ(auth_password_verify(a->password_hash, PASSWORD), 1);
        ASSERT_UEQ(a->created_at, a->password_changed_at);
        ASSERT_UEQ(a->last_login_at, 0);
        a = store_admin_free(a);

        CASE("set password");
        ASSERT_ERROR(auth_admin_set_password(s, "carol", PASSWORD2, "root", &reason), ENOENT);
        ASSERT_ERROR(auth_admin_set_password(s, "alice", "                ", "root", &reason), EINVAL);
        ASSERT_STREQ(reason, "the password is only whitespace");
        ASSERT_OK(auth_admin_set_password(s, "alice", PASSWORD2, "root", &reason));
        ASSERT_OK(store_admin_get(s, "alice", &a));
        ASSERT_EQ(auth_password_verify(a->password_hash, PASSWORD), 0);
        ASSERT_EQ(auth_password_verify(a->password_hash, PASSWORD2), 1);
        a = store_admin_free(a);

        CASE("delete");
        ASSERT_OK(auth_admin_delete(s, "alice", "root"));
        ASSERT_ERROR(auth_admin_delete(s, "alice", "root"), ENOENT);
        ASSERT_ERROR(auth_admin_delete(s, "Alice", "root"), EINVAL);
        ASSERT_ERROR(store_admin_get(s, "alice", &a), ENOENT);

        /* Each change audited once, by its actor, naming the admin, and nothing more. */
        created = audit_dump(s, "admin-created");
        ASSERT_STREQ(created,
                     "root|aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa|n/a\n"
                     "uid:1000|alice|n/a\n"
                     "root|bob@example.org|n/a\n");
        changed = audit_dump(s, "admin-password-changed");
        ASSERT_STREQ(changed, "root|alice|n/a\n");
        deleted = audit_dump(s, "admin-deleted");
        ASSERT_STREQ(deleted,
                     "root|aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa|n/a\n"
                     "root|alice|n/a\n");
}

/* API tokens */

static char *token_create(Store *s, const char *admin, const char *name, StoreScope scope, usec_t lifetime,
                          StoreApiToken **ret_row) {
        char *string = NULL;
        const char *reason = NULL;

        ASSERT_OK(auth_api_token_create(s,
                                        &(AuthApiTokenRequest) {
                                                .admin = admin,
                                                .name = name,
                                                .scope = scope,
                                                .lifetime = lifetime,
                                        },
                                        "admin:alice", T0, &string, ret_row, &reason));
        return ASSERT_NOT_NULL(string);
}

TEST(api_token_parse) {
        uint8_t id[AUTH_ID_SIZE], secret[AUTH_SECRET_SIZE];
        _cleanup_(erase_and_free_stringp) char *good = NULL;
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(store_api_token_freep) StoreApiToken *row = NULL;
        char buf[AUTH_API_TOKEN_STRING_LEN + 2];

        good = token_create(s, "alice", "ci", STORE_SCOPE_READ, 0, &row);
        ASSERT_EQ(strlen(good), (size_t) AUTH_API_TOKEN_STRING_LEN);
        ASSERT_NOT_NULL(startswith(good, "ztna_at_"));
        ASSERT_OK(auth_api_token_parse(good, id, secret));
        ASSERT_MEMEQ(id, row->id, AUTH_ID_SIZE);
        {
                uint8_t h[STORE_SECRET_HASH_SIZE];

                ASSERT_OK(token_secret_hash(secret, h));
                ASSERT_MEMEQ(h, row->secret_hash, sizeof(h));
        }

        /* Every damage refused, one at a time. */
        static const struct {
                size_t at;
                char c;
                const char *what;
        } edits[] = {
                { 0, 'Z', "prefix" },
                { 7, '-', "separator after the prefix" },
                { 8, 'g', "non-hex id" },
                { 40, '-', "separator after the id" },
                { 41, '!', "secret character outside base64url" },
                { 41, '=', "padding" },
        };
        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                CASE("%s", edits[i].what);
                strcpy(buf, good);
                buf[edits[i].at] = edits[i].c;
                ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
        }
        CASE("upper-case id");
        strcpy(buf, good);
        for (size_t i = 8; i < 40; i++)
                if (buf[i] >= 'a' && buf[i] <= 'f') {
                        buf[i] = (char) (buf[i] - 'a' + 'A');
                        break;
                }
        if (!streq(buf, good))
                ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
        CASE("non-canonical last character");
        strcpy(buf, good);
        {
                /* The last of 43 characters carries 2 unused bits: 'A' + 1 sets one of them. */
                static const char alphabet[] =
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                size_t v = (size_t) (strchr(alphabet, buf[AUTH_API_TOKEN_STRING_LEN - 1]) - alphabet);

                ASSERT_EQ(v & 3, 0U);
                buf[AUTH_API_TOKEN_STRING_LEN - 1] = alphabet[v | 1];
                ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
        }
        CASE("lengths");
        strcpy(buf, good);
        buf[AUTH_API_TOKEN_STRING_LEN - 1] = '\0';
        ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
        strcpy(buf, good);
        strcat(buf, "A");
        ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
        ASSERT_ERROR(auth_api_token_parse("", id, secret), EINVAL);
        ASSERT_ERROR(auth_api_token_parse(NULL, id, secret), EINVAL);
        /* A session cookie is not an API token. */
        strcpy(buf, "ztna_s_");
        strcat(buf, good + STRLEN("ztna_at_"));
        ASSERT_ERROR(auth_api_token_parse(buf, id, secret), EINVAL);
}

TEST(api_token_check) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(store_api_token_freep) StoreApiToken *ro_row = NULL, *rw_row = NULL, *again = NULL;
        _cleanup_(erase_and_free_stringp) char *ro = NULL, *rw = NULL, *forged = NULL, *unknown = NULL;
        _cleanup_free_ char *created = NULL, *revoked = NULL, *ro_id = NULL, *expected = NULL;
        AuthPrincipal p;
        usec_t expires;

        ro = token_create(s, "alice", "dashboard reader", STORE_SCOPE_READ, 0, &ro_row);
        rw = token_create(s, "alice", "ci", STORE_SCOPE_READ_WRITE, USEC_PER_HOUR, &rw_row);
        expires = T0 + AUTH_API_TOKEN_LIFETIME_DEFAULT;
        ASSERT_UEQ(ro_row->expires_at, expires);
        ASSERT_UEQ(rw_row->expires_at, T0 + USEC_PER_HOUR);
        ro_id = hexmem(ro_row->id, AUTH_ID_SIZE);

        CASE("scopes");
        ASSERT_OK(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 1, &p));
        ASSERT_STREQ(p.admin, "alice");
        ASSERT_STREQ(p.actor, "admin:alice");
        ASSERT_STREQ(p.credential_id, ro_id);
        ASSERT_EQ(p.credential, AUTH_CREDENTIAL_API_TOKEN);
        ASSERT_EQ(p.scope, STORE_SCOPE_READ);
        ASSERT_ERROR(auth_api_token_check(s, ro, STORE_SCOPE_READ_WRITE, T0 + 1, &p), EPERM);
        ASSERT_OK(auth_api_token_check(s, rw, STORE_SCOPE_READ_WRITE, T0 + 1, &p));
        ASSERT_OK(auth_api_token_check(s, rw, STORE_SCOPE_READ, T0 + 1, NULL));

        CASE("forged");
        forged = strdup(ro);
        /* The secret's first character, changed: same id, wrong secret. */
        forged[STRLEN("ztna_at_") + 33] = forged[STRLEN("ztna_at_") + 33] == 'A' ? 'B' : 'A';
        ASSERT_ERROR(auth_api_token_check(s, forged, STORE_SCOPE_READ, T0 + 1, &p), EACCES);
        unknown = strdup(ro);
        unknown[STRLEN("ztna_at_")] = unknown[STRLEN("ztna_at_")] == '0' ? '1' : '0';
        ASSERT_ERROR(auth_api_token_check(s, unknown, STORE_SCOPE_READ, T0 + 1, &p), EACCES);
        ASSERT_ERROR(auth_api_token_check(s, "Bearer nonsense", STORE_SCOPE_READ, T0 + 1, &p), EACCES);
        ASSERT_ERROR(auth_api_token_check(s, NULL, STORE_SCOPE_READ, T0 + 1, &p), EACCES);

        CASE("expiry");
        ASSERT_OK(auth_api_token_check(s, rw, STORE_SCOPE_READ, T0 + USEC_PER_HOUR - 1, &p));
        ASSERT_ERROR(auth_api_token_check(s, rw, STORE_SCOPE_READ, T0 + USEC_PER_HOUR, &p), EACCES);

        CASE("last use, at most once a minute");
        ASSERT_OK(store_api_token_get(s, ro_row->id, &again));
        ASSERT_UEQ(again->last_used_at, T0 + 1);
        again = store_api_token_free(again);
        ASSERT_OK(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 30 * USEC_PER_SEC, &p));
        ASSERT_OK(store_api_token_get(s, ro_row->id, &again));
        ASSERT_UEQ(again->last_used_at, T0 + 1);
        again = store_api_token_free(again);
        ASSERT_OK(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 1 + USEC_PER_MINUTE, &p));
        ASSERT_OK(store_api_token_get(s, ro_row->id, &again));
        ASSERT_UEQ(again->last_used_at, T0 + 1 + USEC_PER_MINUTE);
        again = store_api_token_free(again);

        CASE("disabled admin");
        ASSERT_OK(store_admin_set_disabled(s, "alice", T0 + 2));
        ASSERT_ERROR(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 3, &p), EACCES);
        ASSERT_OK(store_admin_set_disabled(s, "alice", 0));
        ASSERT_OK(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 3, &p));

        CASE("revoked");
        ASSERT_ERROR(auth_api_token_revoke(s, "not-an-id", "admin:alice", T0 + 4), EINVAL);
        ASSERT_ERROR(auth_api_token_revoke(s, "00000000000000000000000000000000", "admin:alice", T0 + 4), ENOENT);
        ASSERT_OK(auth_api_token_revoke(s, ro_id, "admin:alice", T0 + 4));
        ASSERT_ERROR(auth_api_token_revoke(s, ro_id, "admin:alice", T0 + 4), EALREADY);
        ASSERT_ERROR(auth_api_token_check(s, ro, STORE_SCOPE_READ, T0 + 5, &p), EACCES);

        CASE("deleted admin");
        ASSERT_OK(auth_admin_delete(s, "alice", "root"));
        ASSERT_ERROR(auth_api_token_check(s, rw, STORE_SCOPE_READ, T0 + 5, &p), EACCES);

        /* Audited with the owner, name, scope and expiry; never the secret. */
        created = audit_dump(s, "api-token-created");
        ASSERT_STRSTR(created, "admin:alice|");
        ASSERT_STRSTR(created, "\"admin\":\"alice\",\"name\":\"dashboard reader\"");
        ASSERT_STRSTR(created, "\"scope\":\"read\"");
        ASSERT_STRSTR(created, "\"scope\":\"read-write\"");
        ASSERT_NULL(strstr(created, ro + STRLEN("ztna_at_") + 33));
        revoked = audit_dump(s, "api-token-revoked");
        expected = ASSERT_NOT_NULL(strjoin("admin:alice|", ro_id, "|{\"admin\":\"alice\"}\n", NULL));
        ASSERT_STREQ(revoked, expected);
}

TEST(api_token_create_refusals) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(erase_and_free_stringp) char *t = NULL;
        char name[STORE_API_TOKEN_NAME_MAX + 2];
        static const struct {
                const char *admin, *name;
                StoreScope scope;
                usec_t lifetime;
                int error;
                const char *reason;
        } cases[] = {
                { "Alice", "ci", STORE_SCOPE_READ, 0, EINVAL, "invalid admin name" },
                { "alice", "", STORE_SCOPE_READ, 0, EINVAL, "invalid token name" },
                { "alice", "tab\there", STORE_SCOPE_READ, 0, EINVAL, "invalid token name" },
                { "alice", "ci", _STORE_SCOPE_MAX, 0, EINVAL, "the scope must be read or read-write" },
                { "alice", "ci", STORE_SCOPE_READ, USEC_PER_SEC, EINVAL, "the token lifetime" },
                { "alice", "ci", STORE_SCOPE_READ, 367 * USEC_PER_DAY, EINVAL, "the token lifetime" },
                { "bob", "ci", STORE_SCOPE_READ, 0, ENOENT, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *reason = NULL;

                CASE("%zu", i);
                ASSERT_ERROR(auth_api_token_create(s,
                                                   &(AuthApiTokenRequest) {
                                                           .admin = cases[i].admin,
                                                           .name = cases[i].name,
                                                           .scope = cases[i].scope,
                                                           .lifetime = cases[i].lifetime,
                                                   },
                                                   "root", T0, &t, NULL, &reason),
                             cases[i].error);
                ASSERT_NULL(t);
                if (cases[i].reason)
                        ASSERT_STRSTR(reason, cases[i].reason);
        }

        CASE("name too long");
        memset(name, 'n', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        ASSERT_ERROR(auth_api_token_create(s, &(AuthApiTokenRequest) { .admin = "alice", .name = name }, "root", T0,
                                           &t, NULL, NULL),
                     EINVAL);

        CASE("duplicate name");
        t = token_create(s, "alice", "ci", STORE_SCOPE_READ, 0, NULL);
        t = erase_and_free_string(t);
        ASSERT_ERROR(auth_api_token_create(s, &(AuthApiTokenRequest) { .admin = "alice", .name = "ci" }, "root", T0,
                                           &t, NULL, NULL),
                     EEXIST);
        ASSERT_EQ(audit_count(s, "api-token-created"), 1U);
}

/* Sessions */

static void login_ok(AuthLimiter *l, Store *s, const char *name, const char *password, usec_t now,
                     AuthSessionSecrets *ret) {
        AuthLoginFailure failure = _AUTH_LOGIN_FAILURE_MAX;

        ASSERT_OK(auth_login(l, s,
                             &(AuthLogin) {
                                     .name = name,
                                     .password = password,
                                     .address = "192.0.2.7",
                                     .user_agent = "Mozilla/5.0 (X11; Linux x86_64)\x01\xc3\xa9",
                             },
                             now, ret, &failure));
        ASSERT_EQ(failure, AUTH_LOGIN_OK);
}

TEST(session_login_and_csrf) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets secrets = {};
        _cleanup_(store_session_freep) StoreSession *row = NULL;
        _cleanup_(store_admin_freep) StoreAdmin *a = NULL;
        _cleanup_free_ char *logins = NULL, *wrong_csrf = NULL, *session_field = NULL;
        uint8_t id[AUTH_ID_SIZE];
        AuthPrincipal p;

        ASSERT_OK(auth_limiter_new(&l));
        login_ok(l, s, "alice", PASSWORD, T0, &secrets);
        ASSERT_EQ(strlen(secrets.cookie), (size_t) AUTH_SESSION_STRING_LEN);
        ASSERT_NOT_NULL(startswith(secrets.cookie, "ztna_s_"));
        ASSERT_EQ(strlen(secrets.csrf), (size_t) AUTH_CSRF_STRING_LEN);
        ASSERT_UEQ(secrets.expires_at, T0 + 12 * USEC_PER_HOUR);
        ASSERT_NOT_NULL(startswith(secrets.cookie + STRLEN("ztna_s_"), secrets.id));

        /* What was stored: hashes, the client's address, its User-Agent made printable. */
        for (size_t i = 0; i < AUTH_ID_SIZE; i++)
                id[i] = (uint8_t) (unhexchar(secrets.id[2 * i]) << 4 | unhexchar(secrets.id[2 * i + 1]));
        ASSERT_OK(store_session_get(s, id, &row));
        ASSERT_STREQ(row->admin, "alice");
        ASSERT_STREQ(row->address, "192.0.2.7");
        ASSERT_STREQ(row->user_agent, "Mozilla/5.0 (X11; Linux x86_64)???");
        ASSERT_UEQ(row->created_at, T0);
        ASSERT_UEQ(row->last_seen_at, T0);
        ASSERT_OK(store_admin_get(s, "alice", &a));
        ASSERT_UEQ(a->last_login_at, T0);

        CASE("reading needs no CSRF token");
        ASSERT_OK(auth_session_check(s, secrets.cookie, false, NULL, T0 + 1, &p));
        ASSERT_STREQ(p.admin, "alice");
        ASSERT_STREQ(p.actor, "admin:alice");
        ASSERT_STREQ(p.credential_id, secrets.id);
        ASSERT_EQ(p.credential, AUTH_CREDENTIAL_SESSION);
        ASSERT_EQ(p.scope, STORE_SCOPE_READ_WRITE);

        CASE("writing does");
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, true, NULL, T0 + 1, &p), EPERM);
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, true, "", T0 + 1, &p), EPERM);
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, true, "not base64url!", T0 + 1, &p), EPERM);
        wrong_csrf = strdup(secrets.csrf);
        wrong_csrf[0] = wrong_csrf[0] == 'A' ? 'B' : 'A';
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, true, wrong_csrf, T0 + 1, &p), EPERM);
        /* The session's secret is not its CSRF token. */
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, true, secrets.cookie + STRLEN("ztna_s_") + 33, T0 + 1,
                                        &p),
                     EPERM);
        ASSERT_OK(auth_session_check(s, secrets.cookie, true, secrets.csrf, T0 + 1, &p));

        CASE("forged cookies");
        {
                _cleanup_free_ char *forged = strdup(secrets.cookie);

                forged[STRLEN("ztna_s_") + 33] = forged[STRLEN("ztna_s_") + 33] == 'A' ? 'B' : 'A';
                ASSERT_ERROR(auth_session_check(s, forged, false, NULL, T0 + 1, &p), EACCES);
                ASSERT_ERROR(auth_session_check(s, "", false, NULL, T0 + 1, &p), EACCES);
                ASSERT_ERROR(auth_session_check(s, NULL, false, NULL, T0 + 1, &p), EACCES);
                ASSERT_ERROR(auth_session_logout(s, forged), EACCES);
        }

        CASE("logout");
        ASSERT_OK(auth_session_logout(s, secrets.cookie));
        ASSERT_ERROR(auth_session_check(s, secrets.cookie, false, NULL, T0 + 2, &p), EACCES);
        ASSERT_ERROR(auth_session_logout(s, secrets.cookie), EACCES);

        logins = audit_dump(s, "login-succeeded");
        ASSERT_STRSTR(logins, "admin:alice|alice|{");
        ASSERT_STRSTR(logins, "\"peer\":\"192.0.2.7\"");
        session_field = ASSERT_NOT_NULL(strjoin("\"session_id\":\"", secrets.id, "\"", NULL));
        ASSERT_STRSTR(logins, session_field);
}

TEST(session_idle_and_absolute_expiry) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets idle = {}, busy = {}, changed = {};
        AuthPrincipal p;
        usec_t t;

        ASSERT_OK(auth_limiter_new(&l));

        CASE("idle");
        login_ok(l, s, "alice", PASSWORD, T0, &idle);
        ASSERT_OK(auth_session_check(s, idle.cookie, false, NULL, T0 + AUTH_SESSION_IDLE_TIMEOUT - 1, &p));
        /* That use moved last_seen_at: another idle period from there. */
        ASSERT_OK(auth_session_check(s, idle.cookie, false, NULL, T0 + 2 * AUTH_SESSION_IDLE_TIMEOUT - 2, &p));
        ASSERT_ERROR(auth_session_check(s, idle.cookie, false, NULL, T0 + 3 * AUTH_SESSION_IDLE_TIMEOUT, &p),
                     EACCES);
        /* An expired session is gone, not just refused. */
        {
                StoreSession **rows = NULL;
                size_t n = 0;

                ASSERT_OK(store_session_list(s, "alice", &rows, &n));
                ASSERT_EQ(n, 0U);
                store_session_array_free(rows, n);
        }

        CASE("absolute");
        login_ok(l, s, "alice", PASSWORD, T0, &busy);
        for (t = T0; t < T0 + AUTH_SESSION_LIFETIME; t += 10 * USEC_PER_MINUTE)
                ASSERT_OK(auth_session_check(s, busy.cookie, false, NULL, t, &p));
        ASSERT_OK(auth_session_check(s, busy.cookie, false, NULL, T0 + AUTH_SESSION_LIFETIME - 1, &p));
        ASSERT_ERROR(auth_session_check(s, busy.cookie, false, NULL, T0 + AUTH_SESSION_LIFETIME, &p), EACCES);

        CASE("password change ends sessions");
        login_ok(l, s, "alice", PASSWORD, T0, &changed);
        ASSERT_OK(auth_session_check(s, changed.cookie, false, NULL, T0 + 1, &p));
        ASSERT_OK(auth_admin_set_password(s, "alice", PASSWORD2, "root", NULL));
        ASSERT_ERROR(auth_session_check(s, changed.cookie, false, NULL, T0 + 2, &p), EACCES);
}

TEST(login_refusals) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets secrets = {};
        _cleanup_free_ char *failed = NULL;
        AuthLoginFailure failure;
        char huge[AUTH_PASSWORD_MAX + 2];

        ASSERT_OK(auth_limiter_new(&l));

        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD2, .address = "::1" }, T0,
                                &secrets, &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_WRONG_PASSWORD);
        /* A password typed into the name field is not recorded anywhere. */
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "correcthorsebatterystaple", .password = PASSWORD,
                                                     .address = "::1" },
                                T0, &secrets, &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_UNKNOWN_ACCOUNT);
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "Not A Name!", .password = PASSWORD }, T0, &secrets,
                                &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_UNKNOWN_ACCOUNT);
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = NULL, .password = NULL }, T0, &secrets, &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_UNKNOWN_ACCOUNT);
        memset(huge, 'x', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = huge }, T0, &secrets, &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_WRONG_PASSWORD);

        ASSERT_OK(store_admin_set_disabled(s, "alice", T0));
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD }, T0, &secrets,
                                &failure),
                     EACCES);
        ASSERT_EQ(failure, AUTH_LOGIN_DISABLED);
        ASSERT_NULL(secrets.cookie);

        failed = audit_dump(s, "login-failed");
        ASSERT_STREQ(failed,
                     "anonymous|alice|{\"peer\":\"::1\",\"reason\":\"wrong password\"}\n"
                     "anonymous|n/a|{\"peer\":\"::1\",\"reason\":\"unknown account\"}\n"
                     "anonymous|n/a|{\"reason\":\"unknown account\"}\n"
                     "anonymous|n/a|{\"reason\":\"unknown account\"}\n"
                     "anonymous|alice|{\"reason\":\"wrong password\"}\n"
                     "anonymous|alice|{\"reason\":\"disabled\"}\n");
        ASSERT_EQ(audit_count(s, "login-succeeded"), 0U);
}

/* The limiter */

TEST(limiter_engages_and_decays) {
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        usec_t t = 10 * USEC_PER_HOUR, step = AUTH_LIMIT_WINDOW / AUTH_LIMIT_ACCOUNT_FAILURES;

        ASSERT_OK(auth_limiter_new(&l));

        CASE("account");
        for (unsigned i = 0; i < AUTH_LIMIT_ACCOUNT_FAILURES; i++) {
                ASSERT_OK(auth_limiter_check(l, NULL, "alice", t));
                ASSERT_OK(auth_limiter_failure(l, NULL, "alice", t));
        }
        ASSERT_ERROR(auth_limiter_check(l, NULL, "alice", t), EBUSY);
        ASSERT_ERROR(auth_limiter_check(l, "192.0.2.1", "alice", t + step - 1), EBUSY);
        /* Other accounts are not affected. */
        ASSERT_OK(auth_limiter_check(l, NULL, "bob", t));
        /* One more try per window/limit. */
        ASSERT_OK(auth_limiter_check(l, NULL, "alice", t + step));
        ASSERT_OK(auth_limiter_failure(l, NULL, "alice", t + step));
        ASSERT_ERROR(auth_limiter_check(l, NULL, "alice", t + step), EBUSY);
        /* A whole window later, a whole burst again. */
        t += step + AUTH_LIMIT_WINDOW;
        for (unsigned i = 0; i < AUTH_LIMIT_ACCOUNT_FAILURES; i++) {
                ASSERT_OK(auth_limiter_check(l, NULL, "alice", t));
                ASSERT_OK(auth_limiter_failure(l, NULL, "alice", t));
        }
        ASSERT_ERROR(auth_limiter_check(l, NULL, "alice", t), EBUSY);
        /* A success clears the account. */
        auth_limiter_success(l, "alice");
        ASSERT_OK(auth_limiter_check(l, NULL, "alice", t));

        CASE("address");
        for (unsigned i = 0; i < AUTH_LIMIT_ADDRESS_FAILURES; i++) {
                char account[32];

                snprintf(account, sizeof(account), "user%u", i);
                ASSERT_OK(auth_limiter_check(l, "198.51.100.9", account, t));
                ASSERT_OK(auth_limiter_failure(l, "198.51.100.9", account, t));
        }
        ASSERT_ERROR(auth_limiter_check(l, "198.51.100.9", "someone", t), EBUSY);
        ASSERT_ERROR(auth_limiter_check(l, "::ffff:198.51.100.9", NULL, t), EBUSY);
        ASSERT_OK(auth_limiter_check(l, "198.51.100.10", "someone", t));
        /* A success does not clear an address. */
        auth_limiter_success(l, "user0");
        ASSERT_ERROR(auth_limiter_check(l, "198.51.100.9", NULL, t), EBUSY);
        ASSERT_OK(auth_limiter_check(l, "198.51.100.9", NULL, t + AUTH_LIMIT_WINDOW / AUTH_LIMIT_ADDRESS_FAILURES));

        CASE("IPv6 counts by /64");
        for (unsigned i = 0; i < AUTH_LIMIT_ADDRESS_FAILURES; i++) {
                char address[64];

                snprintf(address, sizeof(address), "2001:db8:1:2::%x", i + 1);
                ASSERT_OK(auth_limiter_failure(l, address, NULL, t));
        }
        ASSERT_ERROR(auth_limiter_check(l, "2001:db8:1:2:ffff:ffff:ffff:ffff", NULL, t), EBUSY);
        ASSERT_OK(auth_limiter_check(l, "2001:db8:1:3::1", NULL, t));

        CASE("clock going backwards");
        ASSERT_ERROR(auth_limiter_check(l, "2001:db8:1:2::1", NULL, t - USEC_PER_HOUR), EBUSY);
}

TEST(limiter_table_bounded) {
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        usec_t t = 1000 * USEC_PER_SEC;

        ASSERT_OK(auth_limiter_new(&l));

        /* An account under attack… */
        for (unsigned i = 0; i < AUTH_LIMIT_ACCOUNT_FAILURES; i++)
                ASSERT_OK(auth_limiter_failure(l, NULL, "alice", t));
        ASSERT_ERROR(auth_limiter_check(l, NULL, "alice", t), EBUSY);

        /* …stays limited while many more names and addresses than the table holds each fail once. */
        for (unsigned i = 0; i < 2 * AUTH_LIMITER_ENTRIES_MAX; i++) {
                char account[32], address[64];

                snprintf(account, sizeof(account), "spray%u", i);
                snprintf(address, sizeof(address), "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
                ASSERT_OK(auth_limiter_failure(l, address, account, t + i));
                ASSERT_LE(auth_limiter_size(l), 2 * (size_t) AUTH_LIMITER_ENTRIES_MAX);
        }
        ASSERT_EQ(auth_limiter_size(l), 2 * (size_t) AUTH_LIMITER_ENTRIES_MAX);
        ASSERT_ERROR(auth_limiter_check(l, NULL, "alice", t + 2 * AUTH_LIMITER_ENTRIES_MAX), EBUSY);

        /* Once everything has drained, new keys replace drained ones. */
        t += 2 * AUTH_LIMITER_ENTRIES_MAX + 2 * AUTH_LIMIT_WINDOW;
        ASSERT_OK(auth_limiter_failure(l, "192.0.2.1", "newcomer", t));
        ASSERT_LE(auth_limiter_size(l), 2 * (size_t) AUTH_LIMITER_ENTRIES_MAX);
        ASSERT_GE(auth_limiter_size(l), 2U);
}

TEST(login_rate_limited) {
        _cleanup_(store_freep) Store *s = open_store_with_admin("alice");
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets secrets = {};
        _cleanup_free_ char *failed = NULL;
        AuthLoginFailure failure;
        double t;

        ASSERT_OK(auth_limiter_new(&l));
        for (unsigned i = 0; i < AUTH_LIMIT_ACCOUNT_FAILURES; i++) {
                ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD2,
                                                             .address = "203.0.113.5" },
                                        T0, &secrets, &failure),
                             EACCES);
                ASSERT_EQ(failure, AUTH_LOGIN_WRONG_PASSWORD);
        }
        /* Now even the right password is refused, before it is hashed (no argon2 work: milliseconds). */
        t = cpu_seconds();
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD,
                                                     .address = "198.51.100.1" },
                                T0, &secrets, &failure),
                     EACCES);
        ASSERT_TRUE(cpu_seconds() - t < 0.05);
        ASSERT_EQ(failure, AUTH_LOGIN_RATE_LIMITED);
        ASSERT_NULL(secrets.cookie);

        failed = audit_dump(s, "login-failed");
        ASSERT_STRSTR(failed, "anonymous|alice|{\"peer\":\"198.51.100.1\",\"reason\":\"rate limited\"}\n");
        ASSERT_EQ(audit_count(s, "login-failed"), AUTH_LIMIT_ACCOUNT_FAILURES + 1U);

        /* Another account from the same address is still served. */
        ASSERT_OK(auth_admin_create(s, "bob", PASSWORD, "root", NULL));
        login_ok(l, s, "bob", PASSWORD, T0, &secrets);
}

/* Nothing secret at rest or in the log */

static char *read_db_files(const char *path, size_t *ret_size) {
        char *all = NULL;
        size_t n_all = 0;

        for (size_t i = 0; i < 2; i++) {
                _cleanup_free_ char *data = NULL;
                char p[512];
                size_t n = 0;

                snprintf(p, sizeof(p), "%s%s", path, i == 0 ? "" : "-wal");
                if (access(p, F_OK) < 0)
                        continue;
                ASSERT_OK(read_full_file(p, 0, &data, &n));
                all = ASSERT_NOT_NULL(realloc(all, n_all + n + 1));
                memcpy(all + n_all, data, n);
                n_all += n;
        }
        *ret_size = n_all;
        return all;
}

static void assert_absent(const char *haystack, size_t size, const char *needle, const char *what) {
        if (memmem(haystack, size, needle, strlen(needle)))
                test_fail(__FILE__, __LINE__, "Found %s", what);
}

TEST(no_secret_at_rest_or_in_the_log) {
        _cleanup_(store_freep) Store *s = open_store();
        _cleanup_(auth_limiter_freep) AuthLimiter *l = NULL;
        _cleanup_(auth_session_secrets_done) AuthSessionSecrets secrets = {};
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        _cleanup_(store_admin_freep) StoreAdmin *a = NULL;
        _cleanup_free_ char *data = NULL;
        const char *log;
        size_t size = 0;

        ASSERT_OK(auth_limiter_new(&l));
        test_capture_stderr_begin();
        ASSERT_OK(auth_admin_create(s, "alice", PASSWORD, "root", NULL));
        token = token_create(s, "alice", "ci", STORE_SCOPE_READ_WRITE, 0, NULL);
        login_ok(l, s, "alice", PASSWORD, T0, &secrets);
        ASSERT_ERROR(auth_login(l, s, &(AuthLogin) { .name = "alice", .password = PASSWORD2 }, T0, &secrets,
                                NULL),
                     EACCES);
        ASSERT_OK(auth_admin_set_password(s, "alice", PASSWORD2, "root", NULL));
        log = test_capture_stderr_end();
        ASSERT_OK(store_admin_get(s, "alice", &a));

        /* The events are in the log… */
        ASSERT_STRSTR(log, "Administrator alice created.");
        ASSERT_STRSTR(log, "Administrator alice logged in.");
        ASSERT_STRSTR(log, "Login as alice refused.");
        /* …but no password, hash, token, cookie or CSRF token. */
        ASSERT_NULL(strstr(log, PASSWORD));
        ASSERT_NULL(strstr(log, PASSWORD2));
        ASSERT_NULL(strstr(log, "$argon2id$"));
        ASSERT_NULL(strstr(log, token + STRLEN("ztna_at_") + 33));
        ASSERT_NULL(strstr(log, secrets.cookie + STRLEN("ztna_s_") + 33));
        ASSERT_NULL(strstr(log, secrets.csrf));

        /* In the database: the hash, never the password or a secret. */
        data = read_db_files(test_path("auth.db"), &size);
        ASSERT_GT(size, 0U);
        ASSERT_NOT_NULL(memmem(data, size, a->password_hash, strlen(a->password_hash)));
        assert_absent(data, size, PASSWORD, "the first password");
        assert_absent(data, size, PASSWORD2, "the second password");
        assert_absent(data, size, token + STRLEN("ztna_at_") + 33, "the API token's secret");
        assert_absent(data, size, secrets.cookie + STRLEN("ztna_s_") + 33, "the session's secret");
        assert_absent(data, size, secrets.csrf, "the CSRF token");
}

TEST(strings) {
        ASSERT_STREQ(auth_login_failure_to_string(AUTH_LOGIN_UNKNOWN_ACCOUNT), "unknown account");
        ASSERT_STREQ(auth_login_failure_to_string(AUTH_LOGIN_WRONG_PASSWORD), "wrong password");
        ASSERT_STREQ(auth_login_failure_to_string(AUTH_LOGIN_RATE_LIMITED), "rate limited");
        ASSERT_STREQ(auth_login_failure_to_string(AUTH_LOGIN_DISABLED), "disabled");
        ASSERT_NULL(auth_login_failure_to_string(_AUTH_LOGIN_FAILURE_MAX));
        ASSERT_NULL(auth_limiter_free(NULL));
        auth_session_secrets_done(NULL);
        ASSERT_EQ(auth_limiter_size(NULL), 0U);
}
