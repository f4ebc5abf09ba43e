/* SPDX-License-Identifier: Apache-2.0 */

/* The store's conformance suite. Every generic case runs against each backend in `backends`; the cases
 * named sqlite_* check what only a file-backed SQLite database has (modes, bytes at rest, corruption). */

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "controller-store-internal.h"
#include "crypto-token.h"
#include "crypto-util.h"
#include "fileio.h"
#include "hexdecoct.h"
#include "policy.h"
#include "string-util.h"
#include "strv.h"
#include "tests.h"

#define ALL_MIGRATIONS ((unsigned) -1)
/* The migration that added the policy model. */
#define MIGRATION_POLICY 3U
/* The migration that added admins, API tokens and sessions. */
#define MIGRATION_AUTH 4U
#define T0 ((usec_t) 1700000000 * USEC_PER_SEC)
#define TD "spiffe://example.org"
/* A NULL-terminated list literal. */
#define STRV_MAKE(...) ((char **) ((const char *[]) { __VA_ARGS__, NULL }))

/* Backends */

typedef struct Backend {
        const char *name;
        /* Opens (creating when needed) the store called name, private to the current case, as if the code
         * knew only the first n_migrations migrations (ALL_MIGRATIONS: all). A backend that needs a server
         * skips the case with test_skip() when none is reachable. */
        int (*open)(const char *name, unsigned n_migrations, Store **ret);
        unsigned (*migrations_count)(void);
} Backend;

static const char *sqlite_path(const char *name) {
        char file[128];

        snprintf(file, sizeof(file), "%s.db", name);
        return test_path(file);
}

static int sqlite_open(const char *name, unsigned n_migrations, Store **ret) {
        return store_open_sqlite_migrations(sqlite_path(name), n_migrations, ret);
}

/* Adding a backend (PostgreSQL) is one line here. */
static const Backend backends[] = {
        { "sqlite", sqlite_open, store_sqlite_migrations_count },
};

#define FOREACH_BACKEND(b) for (const Backend *b = backends; b < backends + ELEMENTSOF(backends); b++)

static Store *open_store(const Backend *b, const char *name) {
        Store *s = NULL;

        ASSERT_OK(b->open(name, ALL_MIGRATIONS, &s));
        return ASSERT_NOT_NULL(s);
}

/* Assertions for the store's types */

#define ASSERT_STREQ_PTR(a, b)                                                                              \
        do {                                                                                                \
                const char *_x = (a), *_y = (b);                                                            \
                if (!streq_ptr(_x, _y))                                                                     \
                        test_fail(__FILE__, __LINE__, "Expected %s == %s: \"%s\" vs \"%s\"", #a, #b,        \
                                  _x ?: "(null)", _y ?: "(null)");                                          \
        } while (0)

#define ASSERT_STRV_EQ(a, b)                                                                                \
        do {                                                                                                \
                if (!strv_equal((a), (b)))                                                                  \
                        test_fail(__FILE__, __LINE__, "Expected equal lists: %s vs %s (%zu vs %zu entries)", \
                                  #a, #b, strv_length(a), strv_length(b));                                  \
        } while (0)

static void assert_token_eq(const StoreToken *a, const StoreToken *b) {
        ASSERT_MEMEQ(a->id, b->id, TOKEN_ID_SIZE);
        ASSERT_MEMEQ(a->secret_hash, b->secret_hash, TOKEN_HASH_SIZE);
        ASSERT_EQ(a->role, b->role);
        ASSERT_STREQ_PTR(a->bound_id, b->bound_id);
        ASSERT_STREQ_PTR(a->remote_network, b->remote_network);
        ASSERT_STRV_EQ(a->groups, b->groups);
        ASSERT_STREQ_PTR(a->created_by, b->created_by);
        ASSERT_UEQ(a->created_at, b->created_at);
        ASSERT_UEQ(a->expires_at, b->expires_at);
        ASSERT_UEQ(a->used_at, b->used_at);
        ASSERT_STREQ_PTR(a->used_by, b->used_by);
        ASSERT_UEQ(a->revoked_at, b->revoked_at);
}

static void assert_ca_eq(const StoreCa *a, const StoreCa *b) {
        ASSERT_MEMEQ(a->fingerprint, b->fingerprint, 32);
        ASSERT_EQ(a->kind, b->kind);
        ASSERT_EQ(a->state, b->state);
        ASSERT_UEQ(a->certificate_size, b->certificate_size);
        ASSERT_MEMEQ(a->certificate, b->certificate, a->certificate_size);
        ASSERT_UEQ(a->sealed_key_size, b->sealed_key_size);
        ASSERT_TRUE(!a->sealed_key == !b->sealed_key);
        if (a->sealed_key)
                ASSERT_MEMEQ(a->sealed_key, b->sealed_key, a->sealed_key_size);
        ASSERT_MEMEQ(a->parent, b->parent, 32);
        ASSERT_UEQ(a->not_before, b->not_before);
        ASSERT_UEQ(a->not_after, b->not_after);
        ASSERT_UEQ(a->created_at, b->created_at);
}

static void dump_strv(FILE *f, const char *name, char *const *l) {
        fprintf(f, " %s=[", name);
        STRV_FOREACH(i, l)
                fprintf(f, "'%s',", *i);
        fputc(']', f);
}

/* Every token and agent field as text, so "nothing changed" is one string comparison. */
static char *dump_store(Store *s) {
        StoreToken **tokens = NULL;
        StoreAgent **agents = NULL;
        size_t n_tokens = 0, n_agents = 0, size = 0;
        char *buf = NULL;
        FILE *f;

        ASSERT_OK(store_token_list(s, &tokens, &n_tokens));
        ASSERT_OK(store_agent_list(s, _SPIFFE_ROLE_INVALID, &agents, &n_agents));
        f = ASSERT_NOT_NULL(open_memstream(&buf, &size));
        for (size_t i = 0; i < n_tokens; i++) {
                const StoreToken *t = tokens[i];
                _cleanup_free_ char *id = hexmem(t->id, TOKEN_ID_SIZE),
                                    *h = hexmem(t->secret_hash, TOKEN_HASH_SIZE);

                fprintf(f, "token %s %s %d %s %s %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %s %" PRIu64, id, h,
                        t->role, strna(t->bound_id), strna(t->remote_network), strna(t->created_by),
                        t->created_at, t->expires_at, t->used_at, strna(t->used_by), t->revoked_at);
                dump_strv(f, "groups", t->groups);
                fputc('\n', f);
        }
        for (size_t i = 0; i < n_agents; i++) {
                const StoreAgent *a = agents[i];
                _cleanup_free_ char *key = hexmem(a->public_key, a->public_key_size),
                                    *tid = hexmem(a->token_id, TOKEN_ID_SIZE);

                fprintf(f, "agent %s %d %s %s %s %s %s %s %s %s", a->spiffe_id, a->role, a->id, key,
                        strna(a->version), strna(a->private_ip), strna(a->remote_network), strna(a->via), tid,
                        strna(a->cert_serial));
                fprintf(f, " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %s", a->cert_not_after,
                        a->enrolled_at, a->last_seen, a->revoked_at, strna(a->revocation_reason));
                dump_strv(f, "groups", a->groups);
                dump_strv(f, "labels", a->labels);
                fputc('\n', f);
        }
        ASSERT_EQ(fclose(f), 0);
        store_token_array_free(tokens, n_tokens);
        store_agent_array_free(agents, n_agents);
        return buf;
}

/* Every policy row and the revision as text. */
static char *dump_policy(Store *s) {
        StoreNetwork **networks = NULL;
        StoreResource **resources = NULL;
        StoreGroup **groups = NULL;
        StorePolicy *policies = NULL;
        size_t n_networks = 0, n_resources = 0, n_groups = 0, n_policies = 0, size = 0;
        uint64_t revision = 0;
        char *buf = NULL;
        FILE *f;

        ASSERT_OK(store_network_list(s, &networks, &n_networks));
        ASSERT_OK(store_resource_list(s, NULL, &resources, &n_resources));
        ASSERT_OK(store_group_list(s, &groups, &n_groups));
        ASSERT_OK(store_policy_list(s, &policies, &n_policies));
        ASSERT_OK(store_policy_revision(s, &revision));
        f = ASSERT_NOT_NULL(open_memstream(&buf, &size));
        fprintf(f, "revision %" PRIu64 "\n", revision);
        for (size_t i = 0; i < n_networks; i++)
                fprintf(f, "network '%s' '%s' %" PRIu64 "\n", networks[i]->name,
                        strna(networks[i]->description), networks[i]->created_at);
        for (size_t i = 0; i < n_resources; i++) {
                const StoreResource *r = resources[i];

                fprintf(f, "resource '%s' %s %s %s '%s' %s %" PRIu64 " %" PRIu64, r->name, r->address,
                        r->protocol, r->ports, r->remote_network, strna(r->alias), r->created_at,
                        r->updated_at);
                dump_strv(f, "groups", r->groups);
                fputc('\n', f);
        }
        for (size_t i = 0; i < n_groups; i++) {
                fprintf(f, "group '%s' '%s' %" PRIu64, groups[i]->name, strna(groups[i]->description),
                        groups[i]->created_at);
                dump_strv(f, "members", groups[i]->members);
                dump_strv(f, "resources", groups[i]->resources);
                fputc('\n', f);
        }
        for (size_t i = 0; i < n_policies; i++)
                fprintf(f, "policy '%s' '%s' %" PRIu64 "\n", policies[i].group, policies[i].resource,
                        policies[i].created_at);
        ASSERT_EQ(fclose(f), 0);
        store_network_array_free(networks, n_networks);
        store_resource_array_free(resources, n_resources);
        store_group_array_free(groups, n_groups);
        store_policy_array_free(policies, n_policies);
        return buf;
}

/* Fixtures */

typedef struct TestToken {
        StoreToken t; /* strings borrowed */
        uint8_t secret[TOKEN_SECRET_SIZE];
} TestToken;

static void test_token_init(TestToken *tt, SpiffeRole role) {
        *tt = (TestToken) {
                .t.role = role,
                .t.created_by = (char *) "admin:alice",
                .t.created_at = T0,
                .t.expires_at = T0 + USEC_PER_HOUR,
        };
        ASSERT_OK(crypto_random_bytes(tt->t.id, TOKEN_ID_SIZE));
        ASSERT_OK(crypto_random_bytes(tt->secret, TOKEN_SECRET_SIZE));
        ASSERT_OK(token_secret_hash(tt->secret, tt->t.secret_hash));
}

static void test_token_create(Store *s, TestToken *tt, SpiffeRole role) {
        test_token_init(tt, role);
        ASSERT_OK(store_token_create(s, &tt->t));
}

typedef struct TestAgent {
        StoreAgent a; /* strings borrowed; do not copy a TestAgent */
        char spiffe_id[256];
        char id[ZTNA_ID_MAX + 1];
        uint8_t key[91];
} TestAgent;

static char *test_labels[] = { (char *) "os=linux", (char *) "site=b=c", (char *) "émoji=🚀", NULL };

static void test_agent_init(TestAgent *ta, SpiffeRole role, const char *id) {
        *ta = (TestAgent) {};
        snprintf(ta->id, sizeof(ta->id), "%s", id);
        snprintf(ta->spiffe_id, sizeof(ta->spiffe_id), TD "/%s/%s", spiffe_role_to_string(role), id);
        for (size_t i = 0; i < sizeof(ta->key); i++)
                ta->key[i] = (uint8_t) (i * 7 + (uint8_t) id[0]);
        ta->a = (StoreAgent) {
                .spiffe_id = ta->spiffe_id,
                .role = role,
                .id = ta->id,
                .public_key = ta->key,
                .public_key_size = sizeof(ta->key),
                .version = (char *) "0.1.0",
                .private_ip = (char *) "192.168.1.10",
                .labels = test_labels,
                .cert_serial = (char *) "0a1b2c3d",
                .cert_not_after = T0 + 2 * USEC_PER_HOUR,
        };
}

static void test_enroll(Store *s, const TestToken *tt, const TestAgent *ta, usec_t now) {
        ASSERT_EQ(store_enroll(s, tt->t.id, tt->t.secret_hash, &ta->a, now, NULL, NULL), 0);
}

static StoreAgent *agent_get(Store *s, const char *spiffe_id) {
        StoreAgent *a = NULL;

        ASSERT_OK(store_agent_get(s, spiffe_id, &a));
        return ASSERT_NOT_NULL(a);
}

static StoreToken *token_get(Store *s, const uint8_t id[TOKEN_ID_SIZE]) {
        StoreToken *t = NULL;

        ASSERT_OK(store_token_get(s, id, &t));
        return ASSERT_NOT_NULL(t);
}

static void test_ca_init(StoreCa *ca, uint8_t fp_byte, StoreCaKind kind, StoreCaState state, uint8_t *cert,
                         size_t cert_size) {
        *ca = (StoreCa) {
                .kind = kind,
                .state = state,
                .certificate = cert,
                .certificate_size = cert_size,
                .not_before = T0,
                .not_after = T0 + 365 * USEC_PER_DAY,
                .created_at = T0 + fp_byte,
        };
        memset(ca->fingerprint, fp_byte, sizeof(ca->fingerprint));
        if (kind == STORE_CA_ISSUING)
                memset(ca->parent, 0x01, sizeof(ca->parent));
}

/* Representative rows of every kind, written through the API: *consumed is enrolled, *fresh is not. */
static void populate(Store *s, TestToken *consumed, TestToken *fresh) {
        static uint8_t cert[] = { 0x30, 0x82, 0x01, 0x0a, 0x00, 0xff };
        static uint8_t sealed[] = { 0xde, 0xad, 0xbe, 0xef };
        static char *groups[] = { (char *) "eng", (char *) "ops", NULL };
        StoreAuditEvent e = { .time = T0, .event = (char *) "token-created", .actor = (char *) "root" };
        StoreCa root;
        TestAgent ta;

        test_token_init(consumed, SPIFFE_ROLE_TUNNELER);
        consumed->t.groups = groups;
        ASSERT_OK(store_token_create(s, &consumed->t));
        test_token_init(fresh, SPIFFE_ROLE_CONNECTOR);
        fresh->t.remote_network = (char *) "lab";
        fresh->t.bound_id = (char *) "conn-1";
        ASSERT_OK(store_token_create(s, &fresh->t));
        test_agent_init(&ta, SPIFFE_ROLE_TUNNELER, "laptop-1");
        test_enroll(s, consumed, &ta, T0 + USEC_PER_MINUTE);
        test_ca_init(&root, 0x01, STORE_CA_ROOT, STORE_CA_ACTIVE, cert, sizeof(cert));
        root.sealed_key = sealed;
        root.sealed_key_size = sizeof(sealed);
        ASSERT_OK(store_ca_put(s, &root));
        ASSERT_OK(store_audit_append(s, &e, NULL));
        ASSERT_OK(store_meta_set(s, "trust_domain", "example.org"));

        /* The policy model, where the schema has it. */
        {
                StoreResource web = {
                        .name = (char *) "web",
                        .address = (char *) "192.168.1.100",
                        .protocol = (char *) "tcp",
                        .ports = (char *) "443,8006",
                        .remote_network = (char *) "lab",
                        .alias = (char *) "web.lab",
                };
                unsigned v = 0;

                ASSERT_OK(store_get_schema_version(s, &v));
                if (v < MIGRATION_POLICY)
                        return;
                ASSERT_OK(store_network_create(s, "lab", "the lab", T0));
                ASSERT_OK(store_resource_create(s, &web, T0));
                ASSERT_OK(store_group_create(s, "eng", NULL, T0));
                ASSERT_OK(store_policy_create(s, "eng", "web", T0));
        }
}

/* Migrations */

TEST(migrations_from_empty) {
        FOREACH_BACKEND(b) {
                unsigned latest = b->migrations_count(), v = 0;
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_free_ char *value = NULL;

                CASE("%s", b->name);
                ASSERT_GE(latest, 2);
                s = open_store(b, "empty");
                ASSERT_OK(store_get_schema_version(s, &v));
                ASSERT_UEQ(v, latest);
                ASSERT_ERROR(store_meta_get(s, "trust_domain", &value), ENOENT);
                s = store_free(s);

                /* Reopening applies nothing and loses nothing. */
                s = open_store(b, "empty");
                ASSERT_OK(store_get_schema_version(s, &v));
                ASSERT_UEQ(v, latest);

                /* Each prefix of the migrations gives exactly its version. */
                for (unsigned k = 0; k <= latest; k++) {
                        _cleanup_(store_freep) Store *p = NULL;
                        char name[32];

                        CASE("%s: first %u", b->name, k);
                        snprintf(name, sizeof(name), "prefix-%u", k);
                        ASSERT_OK(b->open(name, k, &p));
                        ASSERT_OK(store_get_schema_version(p, &v));
                        ASSERT_UEQ(v, k);
                }
        }
}

TEST(migrations_from_each_older_version) {
        FOREACH_BACKEND(b) {
                for (unsigned k = 1; k < b->migrations_count(); k++) {
                        _cleanup_(store_freep) Store *s = NULL;
                        _cleanup_free_ char *before = NULL, *after = NULL, *td = NULL, *before_policy = NULL,
                                            *after_policy = NULL;
                        StoreCa **cas = NULL;
                        StoreAuditEvent **events = NULL;
                        size_t n_cas = 0, n_events = 0;
                        TestToken consumed, fresh;
                        char name[32];
                        unsigned v = 0;

                        CASE("%s: from version %u", b->name, k);
                        snprintf(name, sizeof(name), "v%u", k);
                        ASSERT_OK(b->open(name, k, &s));
                        ASSERT_OK(store_get_schema_version(s, &v));
                        ASSERT_UEQ(v, k);
                        populate(s, &consumed, &fresh);
                        before = dump_store(s);
                        if (k >= MIGRATION_POLICY)
                                before_policy = dump_policy(s);
                        s = store_free(s);

                        s = open_store(b, name);
                        ASSERT_OK(store_get_schema_version(s, &v));
                        ASSERT_UEQ(v, b->migrations_count());
                        after = dump_store(s);
                        ASSERT_STREQ(before, after);
                        after_policy = dump_policy(s);
                        /* The policy model starts empty at revision 0, or is carried over. */
                        ASSERT_STREQ(after_policy, before_policy ?: "revision 0\n");
                        ASSERT_STRSTR(after, "laptop-1");
                        ASSERT_OK(store_ca_list(s, &cas, &n_cas));
                        ASSERT_UEQ(n_cas, 1);
                        ASSERT_EQ(cas[0]->state, STORE_CA_ACTIVE);
                        ASSERT_UEQ(cas[0]->sealed_key_size, 4);
                        store_ca_array_free(cas, n_cas);
                        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = 10 }, &events,
                                                   &n_events));
                        ASSERT_UEQ(n_events, 1);
                        ASSERT_STREQ(events[0]->event, "token-created");
                        store_audit_event_array_free(events, n_events);
                        ASSERT_OK(store_meta_get(s, "trust_domain", &td));
                        ASSERT_STREQ(td, "example.org");
                }
        }
}

TEST(migrations_newer_database_refused) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                unsigned v = 0;

                CASE("%s", b->name);
                s = open_store(b, "newer");
                s = store_free(s);
                /* Code that knows fewer migrations than the database has refuses it. */
                for (unsigned k = 0; k < b->migrations_count(); k++) {
                        ASSERT_ERROR(b->open("newer", k, &s), EPROTONOSUPPORT);
                        ASSERT_NULL(s);
                }
                s = open_store(b, "newer");
                ASSERT_OK(store_get_schema_version(s, &v));
                ASSERT_UEQ(v, b->migrations_count());
        }
}

static void sqlite_exec_raw(const char *path, const char *sql) {
        sqlite3 *db = NULL;

        ASSERT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
                test_fail(__FILE__, __LINE__, "'%s': %s", sql, sqlite3_errmsg(db));
        ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
}

static char *file_contents(const char *path, size_t *ret_size) {
        char *data = NULL;

        ASSERT_OK(read_full_file(path, 0, &data, ret_size));
        return data;
}

static int count_indexes(const char *path) {
        sqlite3_stmt *st = NULL;
        sqlite3 *db = NULL;
        int n;

        ASSERT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_prepare_v2(db,
                                     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                                     "('audit_time', 'audit_subject', 'agents_role')",
                                     -1, &st, NULL),
                  SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
        return n;
}

TEST(sqlite_migration_2_adds_indexes) {
        _cleanup_(store_freep) Store *s = NULL;

        ASSERT_OK(store_open_sqlite_migrations(sqlite_path("idx"), 1, &s));
        s = store_free(s);
        ASSERT_EQ(count_indexes(sqlite_path("idx")), 0);
        ASSERT_OK(store_open_sqlite(sqlite_path("idx"), &s));
        s = store_free(s);
        ASSERT_EQ(count_indexes(sqlite_path("idx")), 3);
        /* Bounds of the test-only opener. */
        ASSERT_ERROR(store_open_sqlite_migrations(sqlite_path("idx2"), store_sqlite_migrations_count() + 1,
                                                  &s),
                     EINVAL);
}

TEST(sqlite_newer_database_left_byte_identical) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *before = NULL, *after = NULL, *sql = NULL;
        const char *path = sqlite_path("future");
        size_t n_before, n_after;
        struct stat st_before, st_after;

        s = ASSERT_NOT_NULL(open_store(&backends[0], "future"));
        s = store_free(s);
        ASSERT_TRUE(asprintf(&sql, "INSERT INTO schema_migrations (version, applied_at) VALUES (%u, 1)",
                             store_sqlite_migrations_count() + 1) > 0);
        sqlite_exec_raw(path, sql);

        before = file_contents(path, &n_before);
        ASSERT_EQ(stat(path, &st_before), 0);
        ASSERT_ERROR(store_open_sqlite(path, &s), EPROTONOSUPPORT);
        ASSERT_NULL(s);
        after = file_contents(path, &n_after);
        ASSERT_EQ(stat(path, &st_after), 0);
        ASSERT_UEQ(n_before, n_after);
        ASSERT_MEMEQ(before, after, n_before);
        ASSERT_EQ(st_before.st_mtim.tv_sec, st_after.st_mtim.tv_sec);
        ASSERT_EQ(st_before.st_mtim.tv_nsec, st_after.st_mtim.tv_nsec);
}

TEST(sqlite_file_is_private) {
        _cleanup_(store_freep) Store *s = NULL;
        const char *path = sqlite_path("private");
        const char *suffixes[] = { "", "-wal", "-shm" };
        TestToken tt;
        struct stat st;

        /* Whatever the umask says. */
        umask(0);
        s = open_store(&backends[0], "private");
        test_token_create(s, &tt, SPIFFE_ROLE_CONNECTOR);
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                char p[512];

                CASE("'%s'", suffixes[i]);
                snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
                ASSERT_EQ(stat(p, &st), 0);
                ASSERT_EQ(st.st_mode & 07777, 0600);
        }
}

TEST(sqlite_refuses_symlinks_and_foreign_files) {
        _cleanup_(store_freep) Store *s = NULL;
        const char *target = sqlite_path("target"), *link = sqlite_path("link");
        const char *garbage = sqlite_path("garbage");
        char junk[8192];
        struct stat st;

        test_write_file(target, "", 0);
        ASSERT_EQ(symlink(target, link), 0);
        ASSERT_ERROR(store_open_sqlite(link, &s), ELOOP);
        ASSERT_NULL(s);
        ASSERT_EQ(stat(target, &st), 0);
        ASSERT_EQ(st.st_size, 0);

        /* A dangling link is not followed to create a file either. */
        ASSERT_EQ(unlink(target), 0);
        ASSERT_ERROR(store_open_sqlite(link, &s), ELOOP);
        ASSERT_EQ(stat(target, &st), -1);
        ASSERT_EQ(errno, ENOENT);

        memset(junk, 'x', sizeof(junk));
        test_write_file(garbage, junk, sizeof(junk));
        ASSERT_ERROR(store_open_sqlite(garbage, &s), EUCLEAN);
        ASSERT_NULL(s);

        ASSERT_ERROR(store_open_sqlite(sqlite_path("no-such-dir/x"), &s), ENOENT);
        ASSERT_ERROR(store_open_sqlite("", &s), EINVAL);
}

/* Metadata */

TEST(meta) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_free_ char *v1 = NULL, *v2 = NULL, *absent = NULL;

                CASE("%s", b->name);
                s = open_store(b, "meta");
                ASSERT_ERROR(store_meta_get(s, "trust_domain", &absent), ENOENT);
                ASSERT_NULL(absent);
                ASSERT_OK(store_meta_set(s, "trust_domain", "example.org"));
                ASSERT_OK(store_meta_get(s, "trust_domain", &v1));
                ASSERT_STREQ(v1, "example.org");
                ASSERT_OK(store_meta_set(s, "trust_domain", "x' OR '1'='1"));
                ASSERT_OK(store_meta_get(s, "trust_domain", &v2));
                ASSERT_STREQ(v2, "x' OR '1'='1");
                ASSERT_ERROR(store_meta_set(s, "", "x"), EINVAL);
                ASSERT_ERROR(store_meta_set(s, "k", ""), EINVAL);
                ASSERT_ERROR(store_meta_set(s, "k", NULL), EINVAL);
                ASSERT_ERROR(store_meta_set(s, "k", "\xff"), EINVAL);
        }
}

/* Tokens */

TEST(tokens_round_trip) {
        static char *groups[] = {
                (char *) "zeta",           (char *) "'; DROP TABLE tokens; --", (char *) "100%_like",
                (char *) "グループ",       (char *) "tab\there\nnewline",       (char *) "a",
                NULL,
        };
        char *many[STORE_GROUPS_MAX + 1] = {};
        char names[STORE_GROUPS_MAX][8], longest[STORE_STRING_MAX + 1];

        for (size_t i = 0; i < STORE_GROUPS_MAX; i++) {
                /* Reverse order: the store keeps the given order, it does not sort. */
                snprintf(names[i], sizeof(names[i]), "g%02zu", STORE_GROUPS_MAX - i);
                many[i] = names[i];
        }
        memset(longest, 'L', STORE_STRING_MAX);
        longest[STORE_STRING_MAX] = '\0';

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                TestToken tt[4];
                StoreToken **list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "tokens");

                /* Tunneler: groups with SQL metacharacters and UTF-8. */
                test_token_init(&tt[0], SPIFFE_ROLE_TUNNELER);
                tt[0].t.groups = groups;
                tt[0].t.created_by = (char *) "admin:o'brien\"; DELETE FROM tokens; -- ü";
                tt[0].t.created_at = T0 + 3;
                /* Connector: network and bound id, longest strings. */
                test_token_init(&tt[1], SPIFFE_ROLE_CONNECTOR);
                tt[1].t.remote_network = longest;
                tt[1].t.bound_id = (char *) "conn.A-1_b";
                tt[1].t.created_at = T0 + 1;
                /* Everything optional left NULL. */
                test_token_init(&tt[2], SPIFFE_ROLE_TUNNELER);
                tt[2].t.created_by = longest;
                tt[2].t.created_at = T0 + 2;
                /* The most groups allowed. */
                test_token_init(&tt[3], SPIFFE_ROLE_TUNNELER);
                tt[3].t.groups = many;
                tt[3].t.created_at = T0 + 4;

                for (size_t i = 0; i < ELEMENTSOF(tt); i++) {
                        _cleanup_(store_token_freep) StoreToken *got = NULL;

                        CASE("%s: token %zu", b->name, i);
                        ASSERT_OK(store_token_create(s, &tt[i].t));
                        got = token_get(s, tt[i].t.id);
                        assert_token_eq(got, &tt[i].t);
                }

                /* Ordered by creation time. */
                CASE("%s: list", b->name);
                ASSERT_OK(store_token_list(s, &list, &n));
                ASSERT_UEQ(n, 4);
                assert_token_eq(list[0], &tt[1].t);
                assert_token_eq(list[1], &tt[2].t);
                assert_token_eq(list[2], &tt[0].t);
                assert_token_eq(list[3], &tt[3].t);
                store_token_array_free(list, n);

                /* A duplicate id is refused and leaves the original alone. */
                CASE("%s: duplicate", b->name);
                {
                        TestToken dup;
                        _cleanup_(store_token_freep) StoreToken *got = NULL;

                        test_token_init(&dup, SPIFFE_ROLE_CONNECTOR);
                        memcpy(dup.t.id, tt[0].t.id, TOKEN_ID_SIZE);
                        ASSERT_ERROR(store_token_create(s, &dup.t), EEXIST);
                        got = token_get(s, tt[0].t.id);
                        assert_token_eq(got, &tt[0].t);
                }

                /* Unknown id. */
                {
                        uint8_t unknown[TOKEN_ID_SIZE] = { 0x42 };
                        StoreToken *got = NULL;

                        ASSERT_ERROR(store_token_get(s, unknown, &got), ENOENT);
                        ASSERT_NULL(got);
                }
        }
}

static void mutate_role_controller(TestToken *t) {
        t->t.role = SPIFFE_ROLE_CONTROLLER;
}
static void mutate_role_relay(TestToken *t) {
        t->t.role = SPIFFE_ROLE_RELAY;
}
static void mutate_role_invalid(TestToken *t) {
        t->t.role = _SPIFFE_ROLE_INVALID;
}
static void mutate_zero_id(TestToken *t) {
        memset(t->t.id, 0, TOKEN_ID_SIZE);
}
static void mutate_zero_hash(TestToken *t) {
        memset(t->t.secret_hash, 0, TOKEN_HASH_SIZE);
}
static void mutate_bound_bad(TestToken *t) {
        t->t.bound_id = (char *) "no spaces";
}
static void mutate_bound_empty(TestToken *t) {
        t->t.bound_id = (char *) "";
}
static void mutate_network_on_tunneler(TestToken *t) {
        t->t.remote_network = (char *) "lab";
}
static void mutate_groups_on_connector(TestToken *t) {
        static char *g[] = { (char *) "eng", NULL };
        t->t.role = SPIFFE_ROLE_CONNECTOR;
        t->t.groups = g;
}
static void mutate_too_many_groups(TestToken *t) {
        static char names[STORE_GROUPS_MAX + 1][8];
        static char *g[STORE_GROUPS_MAX + 2];
        for (size_t i = 0; i <= STORE_GROUPS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "g%zu", i);
                g[i] = names[i];
        }
        t->t.groups = g;
}
static void mutate_group_empty(TestToken *t) {
        static char *g[] = { (char *) "eng", (char *) "", NULL };
        t->t.groups = g;
}
static void mutate_group_duplicate(TestToken *t) {
        static char *g[] = { (char *) "eng", (char *) "ops", (char *) "eng", NULL };
        t->t.groups = g;
}
static void mutate_group_bad_utf8(TestToken *t) {
        static char *g[] = { (char *) "\xc3\x28", NULL };
        t->t.groups = g;
}
static void mutate_group_overlong_utf8(TestToken *t) {
        static char *g[] = { (char *) "\xc0\xaf", NULL };
        t->t.groups = g;
}
static void mutate_group_surrogate(TestToken *t) {
        static char *g[] = { (char *) "\xed\xa0\x80", NULL };
        t->t.groups = g;
}
static void mutate_group_truncated_utf8(TestToken *t) {
        static char *g[] = { (char *) "ab\xe2\x82", NULL };
        t->t.groups = g;
}
static void mutate_group_above_unicode(TestToken *t) {
        static char *g[] = { (char *) "\xf4\x90\x80\x80", NULL };
        t->t.groups = g;
}
static void mutate_creator_missing(TestToken *t) {
        t->t.created_by = NULL;
}
static void mutate_creator_too_long(TestToken *t) {
        static char s[STORE_STRING_MAX + 2];
        memset(s, 'x', STORE_STRING_MAX + 1);
        t->t.created_by = s;
}
static void mutate_created_zero(TestToken *t) {
        t->t.created_at = 0;
}
static void mutate_expires_zero(TestToken *t) {
        t->t.expires_at = 0;
}
static void mutate_expires_before(TestToken *t) {
        t->t.expires_at = t->t.created_at;
}
static void mutate_expires_out_of_range(TestToken *t) {
        t->t.expires_at = (usec_t) INT64_MAX + 1;
}
static void mutate_used(TestToken *t) {
        t->t.used_at = T0 + 1;
}
static void mutate_used_by(TestToken *t) {
        t->t.used_by = (char *) TD "/tunneler/x";
}
static void mutate_revoked(TestToken *t) {
        t->t.revoked_at = T0 + 1;
}

TEST(tokens_invalid) {
        static const struct {
                const char *name;
                void (*mutate)(TestToken *t);
                int error;
        } cases[] = {
                { "role controller", mutate_role_controller, EINVAL },
                { "role relay", mutate_role_relay, EINVAL },
                { "role invalid", mutate_role_invalid, EINVAL },
                { "zero id", mutate_zero_id, EINVAL },
                { "zero secret hash", mutate_zero_hash, EINVAL },
                { "bound id with a space", mutate_bound_bad, EINVAL },
                { "bound id empty", mutate_bound_empty, EINVAL },
                { "remote network on a tunneler token", mutate_network_on_tunneler, EINVAL },
                { "groups on a connector token", mutate_groups_on_connector, EINVAL },
                { "65 groups", mutate_too_many_groups, E2BIG },
                { "empty group", mutate_group_empty, EINVAL },
                { "duplicate group", mutate_group_duplicate, EINVAL },
                { "invalid UTF-8", mutate_group_bad_utf8, EINVAL },
                { "overlong UTF-8", mutate_group_overlong_utf8, EINVAL },
                { "UTF-8 surrogate", mutate_group_surrogate, EINVAL },
                { "truncated UTF-8", mutate_group_truncated_utf8, EINVAL },
                { "above U+10FFFF", mutate_group_above_unicode, EINVAL },
                { "creator missing", mutate_creator_missing, EINVAL },
                { "creator 1025 bytes", mutate_creator_too_long, E2BIG },
                { "created_at zero", mutate_created_zero, EINVAL },
                { "expires_at zero", mutate_expires_zero, EINVAL },
                { "expires_at == created_at", mutate_expires_before, EINVAL },
                { "expires_at beyond INT64_MAX", mutate_expires_out_of_range, EINVAL },
                { "already used", mutate_used, EINVAL },
                { "used_by set", mutate_used_by, EINVAL },
                { "already revoked", mutate_revoked, EINVAL },
        };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreToken **list = NULL;
                size_t n = 0;

                s = open_store(b, "invalid");
                for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                        TestToken tt;

                        CASE("%s: %s", b->name, cases[i].name);
                        test_token_init(&tt, SPIFFE_ROLE_TUNNELER);
                        cases[i].mutate(&tt);
                        ASSERT_ERROR(store_token_create(s, &tt.t), cases[i].error);
                }
                CASE("%s: nothing written", b->name);
                ASSERT_OK(store_token_list(s, &list, &n));
                ASSERT_UEQ(n, 0);
                ASSERT_NULL(list);
        }
}

TEST(tokens_revoke) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_(store_token_freep) StoreToken *got = NULL, *got2 = NULL;
                uint8_t unknown[TOKEN_ID_SIZE] = { 0x42 };
                TestToken fresh, used;
                TestAgent ta;

                CASE("%s", b->name);
                s = open_store(b, "revoke");
                test_token_create(s, &fresh, SPIFFE_ROLE_CONNECTOR);
                test_token_create(s, &used, SPIFFE_ROLE_CONNECTOR);
                test_agent_init(&ta, SPIFFE_ROLE_CONNECTOR, "c1");
                test_enroll(s, &used, &ta, T0 + 1);

                ASSERT_ERROR(store_token_revoke(s, unknown, T0 + 5), ENOENT);
                ASSERT_ERROR(store_token_revoke(s, fresh.t.id, 0), EINVAL);
                ASSERT_OK(store_token_revoke(s, fresh.t.id, T0 + 5));
                got = token_get(s, fresh.t.id);
                ASSERT_UEQ(got->revoked_at, T0 + 5);
                ASSERT_UEQ(got->used_at, 0);
                /* Once is enough, and the first time stands. */
                ASSERT_ERROR(store_token_revoke(s, fresh.t.id, T0 + 6), EALREADY);
                /* A used token cannot be revoked: it has done its work. */
                ASSERT_ERROR(store_token_revoke(s, used.t.id, T0 + 6), EALREADY);
                got2 = token_get(s, used.t.id);
                ASSERT_UEQ(got2->revoked_at, 0);
                ASSERT_UEQ(got2->used_at, T0 + 1);
        }
}

/* Enrollment */

TEST(enroll_success) {
        static char *groups[] = { (char *) "eng", (char *) "on-call", NULL };
        static char *agent_groups[] = { (char *) "admins", NULL };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                TestToken tun, con;
                TestAgent ta, ca;

                CASE("%s", b->name);
                s = open_store(b, "enroll");
                test_token_init(&tun, SPIFFE_ROLE_TUNNELER);
                tun.t.groups = groups;
                tun.t.bound_id = (char *) "laptop-1";
                ASSERT_OK(store_token_create(s, &tun.t));
                test_token_init(&con, SPIFFE_ROLE_CONNECTOR);
                con.t.remote_network = (char *) "lab";
                ASSERT_OK(store_token_create(s, &con.t));

                /* Tunneler: groups from the token, whatever the request claimed. */
                {
                        _cleanup_(store_token_freep) StoreToken *ret = NULL, *after = NULL;
                        _cleanup_(store_agent_freep) StoreAgent *a = NULL;
                        const char *reason = "untouched";

                        test_agent_init(&ta, SPIFFE_ROLE_TUNNELER, "laptop-1");
                        ta.a.groups = agent_groups;
                        ta.a.remote_network = (char *) "sneaky";
                        ta.a.revoked_at = 5;
                        ta.a.last_seen = 5;
                        ASSERT_EQ(store_enroll(s, tun.t.id, tun.t.secret_hash, &ta.a, T0 + 10, &ret, &reason),
                                  0);
                        ASSERT_STREQ(reason, "untouched");
                        /* The token as it was before it was consumed. */
                        assert_token_eq(ret, &tun.t);

                        a = agent_get(s, ta.spiffe_id);
                        ASSERT_STREQ(a->spiffe_id, TD "/tunneler/laptop-1");
                        ASSERT_EQ(a->role, SPIFFE_ROLE_TUNNELER);
                        ASSERT_STREQ(a->id, "laptop-1");
                        ASSERT_UEQ(a->public_key_size, sizeof(ta.key));
                        ASSERT_MEMEQ(a->public_key, ta.key, sizeof(ta.key));
                        ASSERT_STREQ(a->version, "0.1.0");
                        ASSERT_STREQ(a->private_ip, "192.168.1.10");
                        ASSERT_STRV_EQ(a->labels, test_labels);
                        ASSERT_NULL(a->remote_network);
                        ASSERT_STRV_EQ(a->groups, groups);
                        ASSERT_NULL(a->via);
                        ASSERT_MEMEQ(a->token_id, tun.t.id, TOKEN_ID_SIZE);
                        ASSERT_STREQ(a->cert_serial, "0a1b2c3d");
                        ASSERT_UEQ(a->cert_not_after, T0 + 2 * USEC_PER_HOUR);
                        ASSERT_UEQ(a->enrolled_at, T0 + 10);
                        ASSERT_UEQ(a->last_seen, 0);
                        ASSERT_UEQ(a->revoked_at, 0);
                        ASSERT_NULL(a->revocation_reason);

                        after = token_get(s, tun.t.id);
                        ASSERT_UEQ(after->used_at, T0 + 10);
                        ASSERT_STREQ(after->used_by, ta.spiffe_id);
                }

                /* Connector: its network from the token; NULL reason and token pointers are fine. */
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = NULL;

                        test_agent_init(&ca, SPIFFE_ROLE_CONNECTOR, "conn-1");
                        ca.a.labels = NULL;
                        ca.a.version = ca.a.private_ip = ca.a.cert_serial = NULL;
                        ca.a.cert_not_after = 0;
                        ca.a.private_ip = (char *) "fd00::1";
                        ASSERT_EQ(store_enroll(s, con.t.id, con.t.secret_hash, &ca.a, T0 + 20, NULL, NULL),
                                  0);
                        a = agent_get(s, ca.spiffe_id);
                        ASSERT_STREQ(a->remote_network, "lab");
                        ASSERT_NULL(a->groups);
                        ASSERT_NULL(a->labels);
                        ASSERT_NULL(a->version);
                        ASSERT_NULL(a->cert_serial);
                        ASSERT_UEQ(a->cert_not_after, 0);
                        ASSERT_STREQ(a->private_ip, "fd00::1");
                }
        }
}

typedef struct RefusalCase {
        const char *name;
        int error;
        const char *reason;
        SpiffeRole token_role;
        const char *bound_id;
        bool unknown_id, wrong_secret, revoke, use_first, enroll_same_agent_first;
        usec_t now_offset;         /* from T0 (default 2 µs); the token expires at T0 + 1 h */
        SpiffeRole agent_role;
        const char *agent_id;
        void (*mutate_agent)(TestAgent *a);
} RefusalCase;

static void agent_id_mismatch(TestAgent *a) {
        a->a.id = (char *) "someone-else";
}
static void agent_spiffe_upper(TestAgent *a) {
        a->a.spiffe_id = (char *) "spiffe://Example.org/tunneler/laptop";
}
static void agent_spiffe_role_mismatch(TestAgent *a) {
        a->a.spiffe_id = (char *) TD "/connector/laptop";
}
static void agent_spiffe_not_ztna(TestAgent *a) {
        a->a.spiffe_id = (char *) TD "/tunneler/laptop/extra";
}
static void agent_no_key(TestAgent *a) {
        a->a.public_key = NULL;
        a->a.public_key_size = 0;
}
static void agent_key_size_mismatch(TestAgent *a) {
        a->a.public_key_size = 0;
}
static void agent_key_too_big(TestAgent *a) {
        a->a.public_key_size = STORE_BLOB_MAX + 1;
}
static void agent_bad_ip(TestAgent *a) {
        a->a.private_ip = (char *) "10.0.0.256";
}
static void agent_label_no_equals(TestAgent *a) {
        static char *l[] = { (char *) "novalue", NULL };
        a->a.labels = l;
}
static void agent_label_empty_key(TestAgent *a) {
        static char *l[] = { (char *) "=value", NULL };
        a->a.labels = l;
}
static void agent_label_duplicate_key(TestAgent *a) {
        static char *l[] = { (char *) "os=linux", (char *) "os=bsd", NULL };
        a->a.labels = l;
}
static void agent_too_many_labels(TestAgent *a) {
        static char names[STORE_LABELS_MAX + 1][16];
        static char *l[STORE_LABELS_MAX + 2];
        for (size_t i = 0; i <= STORE_LABELS_MAX; i++) {
                snprintf(names[i], sizeof(names[i]), "k%zu=v", i);
                l[i] = names[i];
        }
        a->a.labels = l;
}
static void agent_via_tunneler(TestAgent *a) {
        a->a.via = (char *) TD "/tunneler/other";
}
static void agent_bad_serial(TestAgent *a) {
        a->a.cert_serial = (char *) "xyz";
}
static void agent_version_too_long(TestAgent *a) {
        static char v[STORE_STRING_MAX + 2];
        memset(v, '1', STORE_STRING_MAX + 1);
        a->a.version = v;
}

#define INVALID(n, m) { n, EINVAL, "invalid enrollment request", .mutate_agent = m }

static const RefusalCase refusal_cases[] = {
        { "unknown id", ENOENT, "invalid token", .unknown_id = true },
        { "wrong secret", ENOENT, "invalid token", .wrong_secret = true },
        /* The secret comes first: without it the caller learns nothing about the token. */
        { "wrong secret, revoked", ENOENT, "invalid token", .wrong_secret = true, .revoke = true },
        { "wrong secret, used", ENOENT, "invalid token", .wrong_secret = true, .use_first = true },
        { "wrong secret, expired", ENOENT, "invalid token", .wrong_secret = true,
          .now_offset = 2 * USEC_PER_HOUR },
        { "wrong secret, wrong role", ENOENT, "invalid token", .wrong_secret = true,
          .agent_role = SPIFFE_ROLE_CONNECTOR },
        { "expired", EKEYEXPIRED, "token expired", .now_offset = 2 * USEC_PER_HOUR },
        { "expired at the exact expiry", EKEYEXPIRED, "token expired", .now_offset = USEC_PER_HOUR },
        { "revoked", EKEYREVOKED, "token revoked", .revoke = true },
        { "revoked and expired", EKEYREVOKED, "token revoked", .revoke = true,
          .now_offset = 2 * USEC_PER_HOUR },
        { "used", EALREADY, "token already used", .use_first = true },
        { "used and expired", EKEYEXPIRED, "token expired", .use_first = true,
          .now_offset = 2 * USEC_PER_HOUR },
        { "wrong role", EPERM, "token is for another role", .agent_role = SPIFFE_ROLE_CONNECTOR },
        { "connector token, tunneler agent", EPERM, "token is for another role",
          .token_role = SPIFFE_ROLE_CONNECTOR },
        { "bound to another id", EPERM, "token is bound to another id", .bound_id = "other-laptop" },
        { "bound id differs only in case", EPERM, "token is bound to another id", .bound_id = "Laptop" },
        { "agent already enrolled", EEXIST, "an agent with this id is already enrolled",
          .enroll_same_agent_first = true },
        INVALID("agent id differs from SPIFFE ID", agent_id_mismatch),
        INVALID("SPIFFE ID with upper-case trust domain", agent_spiffe_upper),
        INVALID("SPIFFE ID with another role", agent_spiffe_role_mismatch),
        INVALID("SPIFFE ID not /role/id", agent_spiffe_not_ztna),
        INVALID("no public key", agent_no_key),
        INVALID("public key pointer without size", agent_key_size_mismatch),
        { "public key too big", E2BIG, "invalid enrollment request", .mutate_agent = agent_key_too_big },
        INVALID("private IP not an address", agent_bad_ip),
        INVALID("label without '='", agent_label_no_equals),
        INVALID("label with empty key", agent_label_empty_key),
        INVALID("labels with duplicate key", agent_label_duplicate_key),
        { "33 labels", E2BIG, "invalid enrollment request", .mutate_agent = agent_too_many_labels },
        INVALID("via a tunneler", agent_via_tunneler),
        INVALID("serial not hex", agent_bad_serial),
        { "version too long", E2BIG, "invalid enrollment request", .mutate_agent = agent_version_too_long },
};

TEST(enroll_refusals) {
        FOREACH_BACKEND(b) {
                for (size_t i = 0; i < ELEMENTSOF(refusal_cases); i++) {
                        const RefusalCase *c = refusal_cases + i;
                        _cleanup_(store_freep) Store *s = NULL;
                        _cleanup_(store_token_freep) StoreToken *after = NULL;
                        _cleanup_free_ char *before_dump = NULL, *after_dump = NULL;
                        StoreToken *ret = (StoreToken *) 0x1;
                        StoreAgent *absent = NULL;
                        uint8_t id[TOKEN_ID_SIZE], hash[TOKEN_HASH_SIZE];
                        const char *reason = NULL;
                        TestToken tt, other;
                        TestAgent ta, first;
                        usec_t used_at, now;
                        char name[32];

                        CASE("%s: %s", b->name, c->name);
                        snprintf(name, sizeof(name), "refusal-%zu", i);
                        s = open_store(b, name);

                        test_token_init(&tt, c->token_role ?: SPIFFE_ROLE_TUNNELER);
                        tt.t.bound_id = (char *) c->bound_id;
                        ASSERT_OK(store_token_create(s, &tt.t));
                        if (c->revoke)
                                ASSERT_OK(store_token_revoke(s, tt.t.id, T0 + 1));
                        if (c->use_first) {
                                test_agent_init(&first, tt.t.role, "first");
                                test_enroll(s, &tt, &first, T0 + 1);
                        }
                        if (c->enroll_same_agent_first) {
                                test_token_create(s, &other, SPIFFE_ROLE_TUNNELER);
                                test_agent_init(&first, SPIFFE_ROLE_TUNNELER, "laptop");
                                test_enroll(s, &other, &first, T0 + 1);
                        }

                        test_agent_init(&ta, c->agent_role ?: SPIFFE_ROLE_TUNNELER, c->agent_id ?: "laptop");
                        if (c->mutate_agent)
                                c->mutate_agent(&ta);
                        memcpy(id, tt.t.id, sizeof(id));
                        memcpy(hash, tt.t.secret_hash, sizeof(hash));
                        if (c->unknown_id)
                                id[0] ^= 0x01;
                        if (c->wrong_secret)
                                hash[TOKEN_HASH_SIZE - 1] ^= 0x80;

                        before_dump = dump_store(s);
                        now = T0 + (c->now_offset ?: 2);
                        ASSERT_ERROR(store_enroll(s, id, hash, &ta.a, now, &ret, &reason), c->error);
                        ASSERT_STREQ(reason, c->reason);
                        ASSERT_TRUE(ret == (StoreToken *) 0x1);

                        /* Nothing changed: the token is as it was and no agent row appeared. */
                        after_dump = dump_store(s);
                        ASSERT_STREQ(before_dump, after_dump);
                        after = token_get(s, tt.t.id);
                        used_at = c->use_first ? T0 + 1 : 0;
                        ASSERT_UEQ(after->used_at, used_at);
                        if (!c->use_first)
                                ASSERT_NULL(after->used_by);
                        if (!c->enroll_same_agent_first && !c->mutate_agent) {
                                ASSERT_ERROR(store_agent_get(s, ta.spiffe_id, &absent), ENOENT);
                                ASSERT_NULL(absent);
                        }
                }
        }
}

TEST(enroll_replaces_revoked_agent) {
        static char *g1[] = { (char *) "old", NULL }, *g2[] = { (char *) "new", (char *) "newer", NULL };
        static char *l2[] = { (char *) "gen=2", NULL };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_(store_agent_freep) StoreAgent *a = NULL;
                StoreAgent **list = NULL;
                size_t n = 0;
                TestToken t1, t2, t3;
                TestAgent first, second;
                const char *reason = NULL;

                CASE("%s", b->name);
                s = open_store(b, "replace");
                test_token_init(&t1, SPIFFE_ROLE_TUNNELER);
                t1.t.groups = g1;
                ASSERT_OK(store_token_create(s, &t1.t));
                test_token_init(&t2, SPIFFE_ROLE_TUNNELER);
                t2.t.groups = g2;
                ASSERT_OK(store_token_create(s, &t2.t));
                test_token_create(s, &t3, SPIFFE_ROLE_TUNNELER);

                test_agent_init(&first, SPIFFE_ROLE_TUNNELER, "laptop");
                test_enroll(s, &t1, &first, T0 + 1);
                ASSERT_OK(store_agent_revoke(s, first.spiffe_id, "stolen", T0 + 2));

                test_agent_init(&second, SPIFFE_ROLE_TUNNELER, "laptop");
                memset(second.key, 0x77, sizeof(second.key));
                second.a.labels = l2;
                second.a.version = (char *) "0.2.0";
                /* 1: a revoked agent was replaced. */
                ASSERT_EQ(store_enroll(s, t2.t.id, t2.t.secret_hash, &second.a, T0 + 3, NULL, &reason), 1);

                a = agent_get(s, second.spiffe_id);
                ASSERT_UEQ(a->revoked_at, 0);
                ASSERT_NULL(a->revocation_reason);
                ASSERT_MEMEQ(a->public_key, second.key, sizeof(second.key));
                ASSERT_MEMEQ(a->token_id, t2.t.id, TOKEN_ID_SIZE);
                ASSERT_STRV_EQ(a->groups, g2);
                ASSERT_STRV_EQ(a->labels, l2);
                ASSERT_STREQ(a->version, "0.2.0");
                ASSERT_UEQ(a->enrolled_at, T0 + 3);
                ASSERT_OK(store_agent_list(s, _SPIFFE_ROLE_INVALID, &list, &n));
                ASSERT_UEQ(n, 1);
                store_agent_array_free(list, n);

                /* The replacement is live: a third enrollment is refused. */
                ASSERT_ERROR(store_enroll(s, t3.t.id, t3.t.secret_hash, &second.a, T0 + 4, NULL, &reason),
                             EEXIST);
                ASSERT_STREQ(reason, "an agent with this id is already enrolled");
        }
}

#define RACERS 50

TEST(enroll_race) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_(store_token_freep) StoreToken *after = NULL;
                StoreAgent **list = NULL;
                size_t n = 0;
                int ready[2], go[2], winners = 0, already = 0, other = 0, winner = -1;
                pid_t pids[RACERS];
                TestToken tt;
                char buf[RACERS];
                char expected[64];

                CASE("%s", b->name);
                s = open_store(b, "race");
                test_token_create(s, &tt, SPIFFE_ROLE_TUNNELER);
                /* Nobody carries a connection across fork(). */
                s = store_free(s);

                ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
                ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
                for (int i = 0; i < RACERS; i++) {
                        pids[i] = fork();
                        ASSERT_TRUE(pids[i] >= 0);
                        if (pids[i] == 0) {
                                Store *c = NULL;
                                TestAgent ta;
                                char id[16], byte;
                                int r;

                                close(ready[0]);
                                close(go[1]);
                                snprintf(id, sizeof(id), "racer-%d", i);
                                test_agent_init(&ta, SPIFFE_ROLE_TUNNELER, id);
                                r = b->open("race", ALL_MIGRATIONS, &c);
                                if (r < 0)
                                        _exit(200);
                                if (write(ready[1], "x", 1) != 1)
                                        _exit(201);
                                /* The start barrier: blocks until the parent closes its end. */
                                if (read(go[0], &byte, 1) != 0)
                                        _exit(202);
                                r = store_enroll(c, tt.t.id, tt.t.secret_hash, &ta.a, T0 + 1, NULL, NULL);
                                store_free(c);
                                _exit(r == 0 ? 0 : r < 0 && -r < 200 ? -r : 203);
                        }
                }
                close(ready[1]);
                close(go[0]);
                /* Everyone has opened its own connection… */
                for (size_t got = 0; got < RACERS;) {
                        ssize_t k = read(ready[0], buf, sizeof(buf));

                        ASSERT_TRUE(k > 0);
                        got += (size_t) k;
                }
                /* …and now all go at once. */
                close(go[1]);
                close(ready[0]);

                for (int i = 0; i < RACERS; i++) {
                        int status;

                        ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
                        ASSERT_TRUE(WIFEXITED(status));
                        if (WEXITSTATUS(status) == 0) {
                                winners++;
                                winner = i;
                        } else if (WEXITSTATUS(status) == EALREADY)
                                already++;
                        else {
                                fprintf(stderr, "# racer %d: exit status %d\n", i, WEXITSTATUS(status));
                                other++;
                        }
                }
                ASSERT_EQ(winners, 1);
                ASSERT_EQ(already, RACERS - 1);
                ASSERT_EQ(other, 0);

                s = open_store(b, "race");
                ASSERT_OK(store_agent_list(s, _SPIFFE_ROLE_INVALID, &list, &n));
                ASSERT_UEQ(n, 1);
                snprintf(expected, sizeof(expected), TD "/tunneler/racer-%d", winner);
                ASSERT_STREQ(list[0]->spiffe_id, expected);
                store_agent_array_free(list, n);
                after = token_get(s, tt.t.id);
                ASSERT_STREQ(after->used_by, expected);
        }
}

/* Agents */

TEST(agents_get_list_update_revoke) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreAgent **list = NULL, *none = NULL;
                size_t n = 0;
                TestToken tokens[4];
                TestAgent agents[4];
                static const struct {
                        SpiffeRole role;
                        const char *id;
                } rows[] = {
                        { SPIFFE_ROLE_TUNNELER, "zulu" },
                        { SPIFFE_ROLE_CONNECTOR, "conn-b" },
                        { SPIFFE_ROLE_TUNNELER, "alpha" },
                        { SPIFFE_ROLE_CONNECTOR, "conn-a" },
                };
                uint8_t new_key[64];

                CASE("%s", b->name);
                s = open_store(b, "agents");
                for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                        test_token_create(s, &tokens[i], rows[i].role);
                        test_agent_init(&agents[i], rows[i].role, rows[i].id);
                        test_enroll(s, &tokens[i], &agents[i], T0 + i);
                }

                /* Lists are ordered by SPIFFE ID, filtered by role. */
                ASSERT_OK(store_agent_list(s, _SPIFFE_ROLE_INVALID, &list, &n));
                ASSERT_UEQ(n, 4);
                ASSERT_STREQ(list[0]->spiffe_id, TD "/connector/conn-a");
                ASSERT_STREQ(list[1]->spiffe_id, TD "/connector/conn-b");
                ASSERT_STREQ(list[2]->spiffe_id, TD "/tunneler/alpha");
                ASSERT_STREQ(list[3]->spiffe_id, TD "/tunneler/zulu");
                ASSERT_STRV_EQ(list[3]->labels, test_labels);
                store_agent_array_free(list, n);
                ASSERT_OK(store_agent_list(s, SPIFFE_ROLE_TUNNELER, &list, &n));
                ASSERT_UEQ(n, 2);
                ASSERT_STREQ(list[0]->id, "alpha");
                ASSERT_STREQ(list[1]->id, "zulu");
                store_agent_array_free(list, n);
                ASSERT_OK(store_agent_list(s, SPIFFE_ROLE_CONNECTOR, &list, &n));
                ASSERT_UEQ(n, 2);
                ASSERT_EQ(list[0]->role, SPIFFE_ROLE_CONNECTOR);
                store_agent_array_free(list, n);
                ASSERT_ERROR(store_agent_list(s, SPIFFE_ROLE_CONTROLLER, &list, &n), EINVAL);
                ASSERT_ERROR(store_agent_list(s, SPIFFE_ROLE_RELAY, &list, &n), EINVAL);

                ASSERT_ERROR(store_agent_get(s, TD "/tunneler/nobody", &none), ENOENT);
                ASSERT_ERROR(store_agent_get(s, "not a spiffe id", &none), EINVAL);
                ASSERT_ERROR(store_agent_get(s, TD "/controller/x", &none), EINVAL);
                ASSERT_NULL(none);

                /* Certificate update after a renewal. */
                memset(new_key, 0x5a, sizeof(new_key));
                ASSERT_OK(store_agent_update_certificate(s, agents[2].spiffe_id, new_key, sizeof(new_key),
                                                         "ABCDEF0123", T0 + 99 * USEC_PER_HOUR));
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, agents[2].spiffe_id);

                        ASSERT_UEQ(a->public_key_size, sizeof(new_key));
                        ASSERT_MEMEQ(a->public_key, new_key, sizeof(new_key));
                        ASSERT_STREQ(a->cert_serial, "ABCDEF0123");
                        ASSERT_UEQ(a->cert_not_after, T0 + 99 * USEC_PER_HOUR);
                        /* Nothing else moved. */
                        ASSERT_STREQ(a->version, "0.1.0");
                        ASSERT_UEQ(a->enrolled_at, T0 + 2);
                }
                {
                        static const struct {
                                const char *name, *spiffe_id, *serial;
                                bool no_key;
                                usec_t not_after;
                                int error;
                        } bad[] = {
                                { "unknown agent", TD "/tunneler/nobody", "01", false, T0 + 1, ENOENT },
                                { "no key", TD "/tunneler/alpha", "01", true, T0 + 1, EINVAL },
                                { "serial with 0x", TD "/tunneler/alpha", "0x1", false, T0 + 1, EINVAL },
                                { "serial of 41 digits", TD "/tunneler/alpha",
                                  "01234567890123456789012345678901234567890", false, T0 + 1, EINVAL },
                                { "no serial", TD "/tunneler/alpha", NULL, false, T0 + 1, EINVAL },
                                { "no expiry", TD "/tunneler/alpha", "01", false, 0, EINVAL },
                        };

                        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                                const uint8_t *key = bad[i].no_key ? NULL : new_key;
                                size_t key_size = bad[i].no_key ? 0 : sizeof(new_key);
                                int r;

                                CASE("%s: update certificate, %s", b->name, bad[i].name);
                                r = store_agent_update_certificate(s, bad[i].spiffe_id, key, key_size,
                                                                   bad[i].serial, bad[i].not_after);
                                ASSERT_ERROR(r, bad[i].error);
                        }
                }

                /* Revocation: once, with a reason; afterwards no certificate is recorded for it. */
                ASSERT_ERROR(store_agent_revoke(s, TD "/tunneler/nobody", "x", T0 + 5), ENOENT);
                ASSERT_ERROR(store_agent_revoke(s, agents[0].spiffe_id, "x", 0), EINVAL);
                ASSERT_OK(store_agent_revoke(s, agents[0].spiffe_id, "laptop lost", T0 + 5));
                ASSERT_ERROR(store_agent_revoke(s, agents[0].spiffe_id, "again", T0 + 6), EALREADY);
                ASSERT_OK(store_agent_revoke(s, agents[1].spiffe_id, NULL, T0 + 7));
                ASSERT_ERROR(store_agent_update_certificate(s, agents[0].spiffe_id, new_key, sizeof(new_key),
                                                            "02", T0 + 1),
                             EKEYREVOKED);
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, agents[0].spiffe_id),
                                                                *c = agent_get(s, agents[1].spiffe_id);

                        ASSERT_UEQ(a->revoked_at, T0 + 5);
                        ASSERT_STREQ(a->revocation_reason, "laptop lost");
                        ASSERT_MEMEQ(a->public_key, agents[0].key, sizeof(agents[0].key));
                        ASSERT_STREQ(a->cert_serial, "0a1b2c3d");
                        ASSERT_UEQ(c->revoked_at, T0 + 7);
                        ASSERT_NULL(c->revocation_reason);
                }
        }
}

TEST(agents_touch) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                TestToken tokens[3];
                TestAgent agents[3];
                const char *ids[] = { "live-a", "live-b", "revoked" };
                _cleanup_free_ char *before = NULL, *after = NULL;

                CASE("%s", b->name);
                s = open_store(b, "touch");
                for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                        test_token_create(s, &tokens[i], SPIFFE_ROLE_TUNNELER);
                        test_agent_init(&agents[i], SPIFFE_ROLE_TUNNELER, ids[i]);
                        test_enroll(s, &tokens[i], &agents[i], T0);
                }
                ASSERT_OK(store_agent_revoke(s, agents[2].spiffe_id, "gone", T0 + 1));

                StoreHeartbeat batch[] = {
                        { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 10 },
                        { .spiffe_id = TD "/tunneler/unknown", .last_seen = T0 + 10 },
                        { .spiffe_id = agents[2].spiffe_id, .last_seen = T0 + 10, .version = "9.9" },
                        { .spiffe_id = agents[1].spiffe_id, .last_seen = T0 + 11, .version = "0.3.0",
                          .private_ip = "10.1.2.3", .via = TD "/connector/conn-a" },
                };
                /* Unknown and revoked agents are skipped and not counted. */
                ASSERT_EQ(store_agents_touch(s, batch, ELEMENTSOF(batch)), 2);
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, agents[0].spiffe_id),
                                                                *c = agent_get(s, agents[1].spiffe_id),
                                                                *r = agent_get(s, agents[2].spiffe_id);

                        ASSERT_UEQ(a->last_seen, T0 + 10);
                        /* NULL means unchanged. */
                        ASSERT_STREQ(a->version, "0.1.0");
                        ASSERT_STREQ(a->private_ip, "192.168.1.10");
                        ASSERT_NULL(a->via);
                        ASSERT_UEQ(c->last_seen, T0 + 11);
                        ASSERT_STREQ(c->version, "0.3.0");
                        ASSERT_STREQ(c->private_ip, "10.1.2.3");
                        ASSERT_STREQ(c->via, TD "/connector/conn-a");
                        ASSERT_UEQ(r->last_seen, 0);
                        ASSERT_STREQ(r->version, "0.1.0");
                }
                ASSERT_EQ(store_agents_touch(s, batch, 0), 0);
                ASSERT_EQ(store_agents_touch(s, NULL, 0), 0);

                /* One bad heartbeat refuses the whole batch before anything is written. */
                before = dump_store(s);
                StoreHeartbeat bad[][2] = {
                        { { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 50 },
                          { .spiffe_id = "spiffe://example.org/tunneler", .last_seen = T0 + 50 } },
                        { { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 50 },
                          { .spiffe_id = agents[1].spiffe_id, .last_seen = 0 } },
                        { { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 50 },
                          { .spiffe_id = agents[1].spiffe_id, .last_seen = T0 + 50, .private_ip = "x" } },
                        { { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 50 },
                          { .spiffe_id = agents[1].spiffe_id, .last_seen = T0 + 50,
                            .via = agents[0].spiffe_id } },
                        { { .spiffe_id = agents[0].spiffe_id, .last_seen = T0 + 50 },
                          { .spiffe_id = agents[1].spiffe_id, .last_seen = T0 + 50, .version = "" } },
                };
                for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                        CASE("%s: bad batch %zu", b->name, i);
                        ASSERT_ERROR(store_agents_touch(s, bad[i], 2), EINVAL);
                }
                after = dump_store(s);
                ASSERT_STREQ(before, after);

                {
                        _cleanup_free_ StoreHeartbeat *big = calloc(STORE_TOUCH_BATCH_MAX + 1, sizeof(*big));

                        ASSERT_NOT_NULL(big);
                        for (size_t i = 0; i <= STORE_TOUCH_BATCH_MAX; i++)
                                big[i] = (StoreHeartbeat) {
                                        .spiffe_id = agents[0].spiffe_id,
                                        .last_seen = T0 + 60,
                                };
                        ASSERT_ERROR(store_agents_touch(s, big, STORE_TOUCH_BATCH_MAX + 1), E2BIG);
                        /* The largest batch is one call; duplicates count each time. */
                        ASSERT_EQ(store_agents_touch(s, big, STORE_TOUCH_BATCH_MAX), STORE_TOUCH_BATCH_MAX);
                }
        }
}

static off_t file_size(const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return 0;
        return st.st_size;
}

TEST(sqlite_touch_is_one_transaction) {
        _cleanup_(store_freep) Store *s = NULL;
        enum { AGENTS = 4, ROUNDS = 50 };
        StoreHeartbeat hb[AGENTS * ROUNDS];
        TestToken tokens[AGENTS];
        TestAgent agents[AGENTS];
        char wal[512];
        off_t before, after;

        s = open_store(&backends[0], "batch");
        for (size_t i = 0; i < AGENTS; i++) {
                char id[16];

                snprintf(id, sizeof(id), "agent-%zu", i);
                test_token_create(s, &tokens[i], SPIFFE_ROLE_TUNNELER);
                test_agent_init(&agents[i], SPIFFE_ROLE_TUNNELER, id);
                test_enroll(s, &tokens[i], &agents[i], T0);
        }
        for (size_t i = 0; i < ELEMENTSOF(hb); i++)
                hb[i] = (StoreHeartbeat) { .spiffe_id = agents[i % AGENTS].spiffe_id, .last_seen = T0 + i };

        /* Every commit appends the pages it changed to the WAL; one transaction appends them once. */
        snprintf(wal, sizeof(wal), "%s-wal", sqlite_path("batch"));
        before = file_size(wal);
        ASSERT_GT(before, 0);
        ASSERT_EQ(store_agents_touch(s, hb, ELEMENTSOF(hb)), (int) ELEMENTSOF(hb));
        after = file_size(wal);
        /* 200 updates as separate commits would add >= 200 frames of 4 KiB. */
        ASSERT_LT(after - before, 16 * 4120);
        {
                _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, agents[AGENTS - 1].spiffe_id);

                ASSERT_UEQ(a->last_seen, T0 + ELEMENTSOF(hb) - 1);
        }
}

/* CA material */

TEST(ca_round_trip) {
        static uint8_t cert1[] = { 0x30, 0x82, 0x01, 0x00, 0x01 };
        static uint8_t cert2[] = { 0x30, 0x03, 0x02, 0x01, 0x00, 0x00 };
        static uint8_t cert3[] = { 0x30, 0x00 };
        static uint8_t sealed[] = { 'e', 'n', 'v', 0x00, 0x01 };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreCa root, issuing, issuing2, bad;
                StoreCa **list = NULL;
                size_t n = 0;
                uint8_t unknown[32] = { 0x99 };

                CASE("%s", b->name);
                s = open_store(b, "ca");
                test_ca_init(&root, 0x01, STORE_CA_ROOT, STORE_CA_STAGED, cert1, sizeof(cert1));
                test_ca_init(&issuing, 0x02, STORE_CA_ISSUING, STORE_CA_ACTIVE, cert2, sizeof(cert2));
                issuing.sealed_key = sealed;
                issuing.sealed_key_size = sizeof(sealed);
                ASSERT_OK(store_ca_put(s, &issuing));
                ASSERT_OK(store_ca_put(s, &root));

                /* Ordered by creation time; an imported root without a key has no sealed key. */
                ASSERT_OK(store_ca_list(s, &list, &n));
                ASSERT_UEQ(n, 2);
                assert_ca_eq(list[0], &root);
                assert_ca_eq(list[1], &issuing);
                ASSERT_NULL(list[0]->sealed_key);
                store_ca_array_free(list, n);

                /* put replaces by fingerprint. */
                root.certificate = cert3;
                root.certificate_size = sizeof(cert3);
                root.state = STORE_CA_ACTIVE;
                ASSERT_OK(store_ca_put(s, &root));
                ASSERT_OK(store_ca_list(s, &list, &n));
                ASSERT_UEQ(n, 2);
                assert_ca_eq(list[0], &root);
                store_ca_array_free(list, n);

                /* One active issuing CA at a time. */
                test_ca_init(&issuing2, 0x03, STORE_CA_ISSUING, STORE_CA_ACTIVE, cert2, sizeof(cert2));
                ASSERT_ERROR(store_ca_put(s, &issuing2), EEXIST);
                issuing2.state = STORE_CA_STAGED;
                ASSERT_OK(store_ca_put(s, &issuing2));
                ASSERT_ERROR(store_ca_set_state(s, issuing2.fingerprint, STORE_CA_ACTIVE), EEXIST);
                /* Rotation: retire the old one, then activate the new one. */
                ASSERT_OK(store_ca_set_state(s, issuing.fingerprint, STORE_CA_RETIRING));
                ASSERT_OK(store_ca_set_state(s, issuing2.fingerprint, STORE_CA_ACTIVE));
                ASSERT_OK(store_ca_set_state(s, issuing2.fingerprint, STORE_CA_ACTIVE));
                ASSERT_OK(store_ca_set_state(s, issuing.fingerprint, STORE_CA_RETIRED));

                /* States only move forwards. */
                ASSERT_ERROR(store_ca_set_state(s, issuing.fingerprint, STORE_CA_ACTIVE), EINVAL);
                ASSERT_ERROR(store_ca_set_state(s, issuing2.fingerprint, STORE_CA_STAGED), EINVAL);
                issuing.state = STORE_CA_ACTIVE;
                ASSERT_ERROR(store_ca_put(s, &issuing), EINVAL);
                ASSERT_ERROR(store_ca_set_state(s, unknown, STORE_CA_RETIRED), ENOENT);
                ASSERT_ERROR(store_ca_set_state(s, root.fingerprint, _STORE_CA_STATE_MAX), EINVAL);
                ASSERT_ERROR(store_ca_set_state(s, root.fingerprint, _STORE_CA_STATE_INVALID), EINVAL);

                ASSERT_OK(store_ca_list(s, &list, &n));
                ASSERT_UEQ(n, 3);
                ASSERT_EQ(list[0]->state, STORE_CA_ACTIVE);
                ASSERT_EQ(list[1]->state, STORE_CA_RETIRED);
                ASSERT_EQ(list[2]->state, STORE_CA_ACTIVE);
                ASSERT_EQ(list[2]->kind, STORE_CA_ISSUING);
                store_ca_array_free(list, n);

                /* Validation. */
                static const struct {
                        const char *name;
                        int error;
                } invalid[] = {
                        { "zero fingerprint", EINVAL }, { "root with parent", EINVAL },
                        { "issuing without parent", EINVAL }, { "no certificate", EINVAL },
                        { "certificate too big", E2BIG }, { "empty validity", EINVAL },
                        { "bad kind", EINVAL }, { "bad state", EINVAL },
                        { "sealed key without size", EINVAL }, { "no creation time", EINVAL },
                };
                for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
                        CASE("%s: %s", b->name, invalid[i].name);
                        test_ca_init(&bad, 0x10, i == 2 ? STORE_CA_ISSUING : STORE_CA_ROOT, STORE_CA_STAGED,
                                     cert1, sizeof(cert1));
                        switch (i) {
                        case 0:
                                memset(bad.fingerprint, 0, 32);
                                break;
                        case 1:
                                memset(bad.parent, 0x01, 32);
                                break;
                        case 2:
                                memset(bad.parent, 0, 32);
                                break;
                        case 3:
                                bad.certificate = NULL;
                                bad.certificate_size = 0;
                                break;
                        case 4:
                                bad.certificate_size = STORE_BLOB_MAX + 1;
                                break;
                        case 5:
                                bad.not_after = bad.not_before;
                                break;
                        case 6:
                                bad.kind = _STORE_CA_KIND_MAX;
                                break;
                        case 7:
                                bad.state = (StoreCaState) 17;
                                break;
                        case 8:
                                bad.sealed_key = sealed;
                                break;
                        case 9:
                                bad.created_at = 0;
                                break;
                        }
                        ASSERT_ERROR(store_ca_put(s, &bad), invalid[i].error);
                }
                ASSERT_OK(store_ca_list(s, &list, &n));
                ASSERT_UEQ(n, 3);
                store_ca_array_free(list, n);
        }
}

TEST(ca_strings) {
        ASSERT_STREQ(store_ca_kind_to_string(STORE_CA_ROOT), "root");
        ASSERT_STREQ(store_ca_kind_to_string(STORE_CA_ISSUING), "issuing");
        ASSERT_NULL(store_ca_kind_to_string(_STORE_CA_KIND_MAX));
        ASSERT_NULL(store_ca_kind_to_string(_STORE_CA_KIND_INVALID));
        ASSERT_EQ(store_ca_kind_from_string("issuing"), STORE_CA_ISSUING);
        ASSERT_EQ(store_ca_kind_from_string("Root"), _STORE_CA_KIND_INVALID);
        ASSERT_EQ(store_ca_kind_from_string(NULL), _STORE_CA_KIND_INVALID);
        for (StoreCaState st = 0; st < _STORE_CA_STATE_MAX; st++) {
                CASE("%d", st);
                ASSERT_EQ(store_ca_state_from_string(store_ca_state_to_string(st)), st);
        }
        ASSERT_STREQ(store_ca_state_to_string(STORE_CA_RETIRING), "retiring");
        ASSERT_EQ(store_ca_state_from_string("retire"), _STORE_CA_STATE_INVALID);
        ASSERT_NULL(store_ca_state_to_string(_STORE_CA_STATE_MAX));
}

/* Audit */

static const char *const audit_events[] = { "token-created", "token-consumed", "agent-revoked" };
static const char *const audit_actors[] = { "root", "admin:alice" };

TEST(audit) {
        enum { N = 30 };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreAuditEvent **list = NULL;
                size_t n = 0;
                int64_t seqs[N], last = 0;

                CASE("%s", b->name);
                s = open_store(b, "audit");
                for (int i = 0; i < N; i++) {
                        char subject[32], detail[64];
                        StoreAuditEvent e = {
                                .time = T0 + (usec_t) i * USEC_PER_SEC,
                                .event = (char *) audit_events[i % 3],
                                .actor = (char *) audit_actors[i % 2],
                                .subject = i % 5 == 0 ? NULL : subject,
                                .detail = i % 4 == 0 ? NULL : detail,
                        };

                        snprintf(subject, sizeof(subject), "subject-%d", i % 3);
                        snprintf(detail, sizeof(detail), "{\"i\":%d,\"q\":\"'\\\"\"}", i);
                        ASSERT_OK(store_audit_append(s, &e, &seqs[i]));
                        ASSERT_GT(seqs[i], last);
                        last = seqs[i];
                }

                /* Everything, newest first, every field. */
                ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = STORE_AUDIT_PAGE_MAX }, &list,
                                           &n));
                ASSERT_UEQ(n, N);
                for (int i = 0; i < N; i++) {
                        const StoreAuditEvent *e = list[N - 1 - i];
                        char detail[64];

                        CASE("%s: row %d", b->name, i);
                        ASSERT_EQ(e->seq, seqs[i]);
                        ASSERT_UEQ(e->time, T0 + (usec_t) i * USEC_PER_SEC);
                        ASSERT_STREQ(e->event, audit_events[i % 3]);
                        ASSERT_STREQ(e->actor, audit_actors[i % 2]);
                        if (i % 5 == 0)
                                ASSERT_NULL(e->subject);
                        else
                                ASSERT_STRSTR(e->subject, "subject-");
                        snprintf(detail, sizeof(detail), "{\"i\":%d,\"q\":\"'\\\"\"}", i);
                        if (i % 4 == 0)
                                ASSERT_NULL(e->detail);
                        else
                                ASSERT_STREQ(e->detail, detail);
                }
                store_audit_event_array_free(list, n);

                /* Filters. */
                static const struct {
                        const char *name;
                        StoreAuditFilter f;
                        size_t expected;
                } filters[] = {
                        { "event", { .event = "token-consumed", .limit = 100 }, 10 },
                        { "actor", { .actor = "admin:alice", .limit = 100 }, 15 },
                        { "event and actor", { .event = "token-created", .actor = "root", .limit = 100 }, 5 },
                        { "subject", { .subject = "subject-1", .limit = 100 }, 8 },
                        { "since", { .since = T0 + 20 * USEC_PER_SEC, .limit = 100 }, 10 },
                        { "until (exclusive)", { .until = T0 + 20 * USEC_PER_SEC, .limit = 100 }, 20 },
                        { "range",
                          { .since = T0 + 5 * USEC_PER_SEC, .until = T0 + 8 * USEC_PER_SEC, .limit = 100 },
                          3 },
                        { "limit", { .limit = 4 }, 4 },
                        { "SQL in a value matches literally", { .event = "x' OR '1'='1", .limit = 100 }, 0 },
                        { "LIKE wildcards match literally", { .actor = "%", .limit = 100 }, 0 },
                        { "nothing", { .event = "login", .limit = 100 }, 0 },
                };
                for (size_t i = 0; i < ELEMENTSOF(filters); i++) {
                        CASE("%s: filter %s", b->name, filters[i].name);
                        ASSERT_OK(store_audit_list(s, &filters[i].f, &list, &n));
                        ASSERT_UEQ(n, filters[i].expected);
                        for (size_t j = 0; j < n; j++) {
                                if (j > 0)
                                        ASSERT_LT(list[j]->seq, list[j - 1]->seq);
                                if (filters[i].f.event)
                                        ASSERT_STREQ(list[j]->event, filters[i].f.event);
                                if (filters[i].f.actor)
                                        ASSERT_STREQ(list[j]->actor, filters[i].f.actor);
                                if (filters[i].f.subject)
                                        ASSERT_STREQ(list[j]->subject, filters[i].f.subject);
                                if (filters[i].f.since)
                                        ASSERT_UCMP(list[j]->time, >=, filters[i].f.since);
                                if (filters[i].f.until)
                                        ASSERT_UCMP(list[j]->time, <, filters[i].f.until);
                        }
                        if (n > 0 && !filters[i].f.since && !filters[i].f.until && !filters[i].f.event &&
                            !filters[i].f.actor && !filters[i].f.subject)
                                ASSERT_EQ(list[0]->seq, seqs[N - 1]);
                        store_audit_event_array_free(list, n);
                }

                /* Pagination with before_seq walks every row exactly once, newest first. */
                {
                        StoreAuditFilter f = { .limit = 7 };
                        size_t seen = 0, pages = 0;

                        for (;;) {
                                ASSERT_OK(store_audit_list(s, &f, &list, &n));
                                if (n == 0)
                                        break;
                                pages++;
                                for (size_t j = 0; j < n; j++)
                                        ASSERT_EQ(list[j]->seq, seqs[N - 1 - seen - j]);
                                seen += n;
                                f.before_seq = list[n - 1]->seq;
                                store_audit_event_array_free(list, n);
                        }
                        ASSERT_UEQ(seen, N);
                        ASSERT_UEQ(pages, 5);
                }
                /* Pagination combined with a filter. */
                {
                        StoreAuditFilter f = { .actor = "root", .before_seq = seqs[10], .limit = 100 };

                        ASSERT_OK(store_audit_list(s, &f, &list, &n));
                        ASSERT_UEQ(n, 5); /* 0, 2, 4, 6, 8 */
                        ASSERT_EQ(list[0]->seq, seqs[8]);
                        ASSERT_EQ(list[4]->seq, seqs[0]);
                        store_audit_event_array_free(list, n);
                }

                /* Bounds. */
                {
                        static const struct {
                                const char *name;
                                StoreAuditFilter f;
                                int error;
                        } bad[] = {
                                { "limit 0", { .limit = 0 }, EINVAL },
                                { "limit above the maximum", { .limit = STORE_AUDIT_PAGE_MAX + 1 }, E2BIG },
                                { "empty time range", { .since = T0 + 2, .until = T0 + 2, .limit = 1 },
                                  EINVAL },
                                { "negative before_seq", { .before_seq = -1, .limit = 1 }, EINVAL },
                                { "empty event", { .event = "", .limit = 1 }, EINVAL },
                                { "invalid UTF-8 subject", { .subject = "\xfe", .limit = 1 }, EINVAL },
                        };

                        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                                CASE("%s: %s", b->name, bad[i].name);
                                list = NULL;
                                ASSERT_ERROR(store_audit_list(s, &bad[i].f, &list, &n), bad[i].error);
                                ASSERT_NULL(list);
                        }
                        CASE("%s: the largest page", b->name);
                        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = STORE_AUDIT_PAGE_MAX },
                                                   &list, &n));
                        store_audit_event_array_free(list, n);
                }
                {
                        static const struct {
                                const char *name;
                                StoreAuditEvent e;
                                int error;
                        } bad[] = {
                                { "no event", { .time = T0, .actor = (char *) "root" }, EINVAL },
                                { "no actor", { .time = T0, .event = (char *) "x" }, EINVAL },
                                { "no time", { .event = (char *) "x", .actor = (char *) "root" }, EINVAL },
                                { "invalid UTF-8 detail",
                                  { .time = T0, .event = (char *) "x", .actor = (char *) "root",
                                    .detail = (char *) "\xff" },
                                  EINVAL },
                                { "empty subject",
                                  { .time = T0, .event = (char *) "x", .actor = (char *) "root",
                                    .subject = (char *) "" },
                                  EINVAL },
                        };
                        int64_t seq = -1;

                        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                                CASE("%s: append, %s", b->name, bad[i].name);
                                ASSERT_ERROR(store_audit_append(s, &bad[i].e, &seq), bad[i].error);
                                ASSERT_EQ(seq, -1);
                        }
                        /* Nothing was appended, and ret_seq may be NULL. */
                        CASE("%s: append without ret_seq", b->name);
                        ASSERT_OK(store_audit_append(s,
                                                     &(StoreAuditEvent) { .time = T0,
                                                                          .event = (char *) "x",
                                                                          .actor = (char *) "root" },
                                                     NULL));
                        ASSERT_OK(store_audit_list(s, &(StoreAuditFilter) { .limit = 2 }, &list, &n));
                        ASSERT_UEQ(n, 2);
                        ASSERT_EQ(list[0]->seq, seqs[N - 1] + 1);
                        store_audit_event_array_free(list, n);
                }
        }
}

/* Policy */

static uint64_t revision(Store *s) {
        uint64_t v = UINT64_MAX;

        ASSERT_OK(store_policy_revision(s, &v));
        return v;
}

/* A successful mutation moves the revision on by exactly one. */
#define ASSERT_BUMPS(s, expr)                                     \
        do {                                                      \
                uint64_t _before = revision(s);                   \
                ASSERT_OK(expr);                                  \
                ASSERT_UEQ(revision(s), _before + 1);             \
        } while (0)

/* A refused one fails with exactly err and leaves the revision alone. */
#define ASSERT_REFUSED(s, expr, err)                              \
        do {                                                      \
                uint64_t _before = revision(s);                   \
                ASSERT_ERROR(expr, err);                          \
                ASSERT_UEQ(revision(s), _before);                 \
        } while (0)

#define EVIL "x'); DROP TABLE agents;--"

/* Enrolls a fresh agent through a token carrying network and groups. */
static void enroll_agent(Store *s, TestAgent *ta, SpiffeRole role, const char *id, const char *network,
                         char **groups) {
        TestToken tt;

        test_token_init(&tt, role);
        tt.t.remote_network = (char *) network;
        tt.t.groups = groups;
        ASSERT_OK(store_token_create(s, &tt.t));
        test_agent_init(ta, role, id);
        test_enroll(s, &tt, ta, T0 + 1);
}

static StoreResource test_resource(const char *name, const char *address, const char *network) {
        return (StoreResource) {
                .name = (char *) name,
                .address = (char *) address,
                .protocol = (char *) "tcp",
                .ports = (char *) "22,80-90",
                .remote_network = (char *) network,
        };
}

static void assert_resource_eq(const StoreResource *got, const StoreResource *want) {
        ASSERT_STREQ(got->name, want->name);
        ASSERT_STREQ(got->address, want->address);
        ASSERT_STREQ(got->protocol, want->protocol);
        ASSERT_STREQ(got->ports, want->ports);
        ASSERT_STREQ(got->remote_network, want->remote_network);
        ASSERT_STREQ_PTR(got->alias, want->alias);
}

static StoreResource *resource_get(Store *s, const char *name) {
        StoreResource *r = NULL;

        ASSERT_OK(store_resource_get(s, name, &r));
        return ASSERT_NOT_NULL(r);
}

static StoreGroup *group_get(Store *s, const char *name) {
        StoreGroup *g = NULL;

        ASSERT_OK(store_group_get(s, name, &g));
        return ASSERT_NOT_NULL(g);
}

/* Names every policy function refuses: empty, control characters, surrounding whitespace, too long, not
 * UTF-8. */
static const char *const bad_names[] = {
        "", "a\nb", "tab\there", "\x7f", " lead", "trail ", "\xff", "\xc0\xaf",
        ("nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
         "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"), /* 129 bytes */
};

TEST(policy_networks) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreNetwork **list = NULL;
                StoreResource web = test_resource("web", "192.168.1.100", "lab");
                TestAgent conn, laptop;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "networks");
                ASSERT_UEQ(strlen(bad_names[ELEMENTSOF(bad_names) - 1]), POLICY_NAME_MAX + 1);
                ASSERT_UEQ(revision(s), 0);

                ASSERT_BUMPS(s, store_network_create(s, "lab", "The lab, 3rd floor", T0 + 2));
                ASSERT_BUMPS(s, store_network_create(s, "dmz", NULL, T0 + 1));
                ASSERT_BUMPS(s, store_network_create(s, EVIL, "it's \"quoted\"; --", T0 + 3));
                ASSERT_BUMPS(s, store_network_create(s, "Lab", NULL, T0 + 4)); /* names are case-sensitive */
                ASSERT_UEQ(revision(s), 4);

                CASE("%s: refusals", b->name);
                ASSERT_REFUSED(s, store_network_create(s, "lab", NULL, T0), EEXIST);
                ASSERT_REFUSED(s, store_network_create(s, NULL, NULL, T0), EINVAL);
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        CASE("%s: bad name %zu", b->name, i);
                        ASSERT_REFUSED(s, store_network_create(s, bad_names[i], NULL, T0), EINVAL);
                        ASSERT_REFUSED(s, store_network_delete(s, bad_names[i]), EINVAL);
                }
                CASE("%s: bad descriptions and times", b->name);
                ASSERT_REFUSED(s, store_network_create(s, "new", "two\nlines", T0), EINVAL);
                ASSERT_REFUSED(s, store_network_create(s, "new", "", T0), EINVAL);
                ASSERT_REFUSED(s, store_network_create(s, "new", "\xc3\x28", T0), EINVAL);
                ASSERT_REFUSED(s, store_network_create(s, "new", NULL, 0), EINVAL);
                ASSERT_REFUSED(s, store_network_create(s, "new", NULL, (usec_t) INT64_MAX + 1), EINVAL);

                /* Ordered by name (bytes), fields verbatim. */
                CASE("%s: list", b->name);
                ASSERT_OK(store_network_list(s, &list, &n));
                ASSERT_UEQ(n, 4);
                ASSERT_STREQ(list[0]->name, "Lab");
                ASSERT_STREQ(list[1]->name, "dmz");
                ASSERT_NULL(list[1]->description);
                ASSERT_UEQ(list[1]->created_at, T0 + 1);
                ASSERT_STREQ(list[2]->name, "lab");
                ASSERT_STREQ(list[2]->description, "The lab, 3rd floor");
                ASSERT_UEQ(list[2]->created_at, T0 + 2);
                ASSERT_STREQ(list[3]->name, EVIL);
                ASSERT_STREQ(list[3]->description, "it's \"quoted\"; --");
                store_network_array_free(list, n);

                /* Busy while a resource or a live connector belongs to it. */
                CASE("%s: delete", b->name);
                ASSERT_REFUSED(s, store_network_delete(s, "nowhere"), ENOENT);
                ASSERT_BUMPS(s, store_resource_create(s, &web, T0));
                ASSERT_REFUSED(s, store_network_delete(s, "lab"), EBUSY);
                ASSERT_BUMPS(s, store_resource_delete(s, "web"));
                enroll_agent(s, &conn, SPIFFE_ROLE_CONNECTOR, "conn-1", "lab", NULL);
                /* A tunneler never belongs to a network; it does not hold one up. */
                enroll_agent(s, &laptop, SPIFFE_ROLE_TUNNELER, "laptop", NULL, NULL);
                ASSERT_REFUSED(s, store_network_delete(s, "lab"), EBUSY);
                ASSERT_BUMPS(s, store_agent_revoke(s, conn.spiffe_id, "decommissioned", T0 + 5));
                ASSERT_BUMPS(s, store_network_delete(s, "lab"));
                ASSERT_REFUSED(s, store_network_delete(s, "lab"), ENOENT);
                ASSERT_BUMPS(s, store_network_delete(s, EVIL));
                ASSERT_BUMPS(s, store_network_delete(s, "dmz"));

                ASSERT_OK(store_network_list(s, &list, &n));
                ASSERT_UEQ(n, 1);
                ASSERT_STREQ(list[0]->name, "Lab");
                store_network_array_free(list, n);
                /* The metacharacters did nothing. */
                {
                        StoreAgent **agents = NULL;

                        ASSERT_OK(store_agent_list(s, _SPIFFE_ROLE_INVALID, &agents, &n));
                        ASSERT_UEQ(n, 2);
                        store_agent_array_free(agents, n);
                }
                ASSERT_OK(store_check_integrity(s));
        }
}

/* One field of a resource replaced by a bad value. */
typedef struct ResourceRefusal {
        const char *what;
        const char *field; /* "name", "address", "protocol", "ports", "network", "alias" */
        const char *value;
        int error;
} ResourceRefusal;

static const ResourceRefusal resource_refusals[] = {
        { "name missing", "name", NULL, EINVAL },
        { "name with newline", "name", "we\nb", EINVAL },
        { "name with leading space", "name", " web", EINVAL },
        { "address missing", "address", NULL, EINVAL },
        { "address empty", "address", "", EINVAL },
        { "host bits set", "address", "10.0.0.1/24", EINVAL },
        { "octal-looking IPv4", "address", "010.0.0.1", EINVAL },
        { "prefix too long", "address", "10.0.0.0/33", EINVAL },
        { "upper-case name", "address", "DB.lab.example", EINVAL },
        { "trailing dot", "address", "db.lab.example.", EINVAL },
        { "upper-case IPv6", "address", "FD00::5", EINVAL },
        { "long IPv6", "address", "fd00:0:0:0:0:0:0:5", EINVAL },
        { "/32 spelled out", "address", "10.0.0.5/32", EINVAL },
        { "bare star", "address", "*", EINVAL },
        { "SQL in address", "address", EVIL, EINVAL },
        { "protocol missing", "protocol", NULL, EINVAL },
        { "protocol upper-case", "protocol", "TCP", EINVAL },
        { "protocol icmp", "protocol", "icmp", EINVAL },
        { "protocol empty", "protocol", "", EINVAL },
        { "ports missing", "ports", NULL, EINVAL },
        { "port 0", "ports", "0", EINVAL },
        { "port 65536", "ports", "65536", EINVAL },
        { "range backwards", "ports", "90-80", EINVAL },
        { "ports unsorted", "ports", "80,22", EINVAL },
        { "ports with spaces", "ports", "22, 80", EINVAL },
        { "every port spelled out", "ports", "1-65535", EINVAL },
        { "ports star", "ports", "*", EINVAL },
        { "ports empty", "ports", "", EINVAL },
        { "network missing", "network", NULL, EINVAL },
        { "network with tab", "network", "l\tab", EINVAL },
        { "unknown network", "network", "nowhere", ENOENT },
        { "alias empty", "alias", "", EINVAL },
        { "alias wildcard", "alias", "*.lab.example", EINVAL },
        { "alias address", "alias", "10.0.0.1", EINVAL },
        { "alias upper-case", "alias", "Web.Lab", EINVAL },
        { "alias with space", "alias", "web lab", EINVAL },
};

static void resource_set(StoreResource *r, const char *field, const char *value) {
        char **p = streq(field, "name")      ? &r->name :
                   streq(field, "address")   ? &r->address :
                   streq(field, "protocol")  ? &r->protocol :
                   streq(field, "ports")     ? &r->ports :
                   streq(field, "network")   ? &r->remote_network :
                   streq(field, "alias")     ? &r->alias :
                                               NULL;

        *ASSERT_NOT_NULL(p) = (char *) value;
}

TEST(policy_resources) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreResource want[] = {
                        test_resource("web", "192.168.1.100", "lab"),
                        test_resource("db", "db.lab.example", "lab"),
                        test_resource("all-lab", "*.lab.example", "lab"),
                        test_resource("subnet", "10.0.0.0/24", "dmz"),
                        test_resource("v6", "fd00::/64", "dmz"),
                        test_resource(EVIL, "fd00::5", "dmz"),
                };
                StoreResource **list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "resources");
                ASSERT_OK(store_network_create(s, "lab", NULL, T0));
                ASSERT_OK(store_network_create(s, "dmz", NULL, T0));
                want[0].ports = (char *) "443,8006";
                want[0].alias = (char *) "web.lab";
                want[2].protocol = (char *) "any";
                want[2].ports = (char *) "any";
                want[3].protocol = (char *) "udp";
                want[3].ports = (char *) "53,1000-2000";
                want[4].alias = (char *) "v6.dmz.example";
                /* groups, created_at and updated_at are the store's: what a caller puts there is ignored. */
                want[5].created_at = T0 + 999;
                want[5].groups = STRV_MAKE("ignored");

                for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                        _cleanup_(store_resource_freep) StoreResource *got = NULL;

                        CASE("%s: create '%s'", b->name, want[i].name);
                        ASSERT_BUMPS(s, store_resource_create(s, &want[i], T0 + 10 + i));
                        got = resource_get(s, want[i].name);
                        assert_resource_eq(got, &want[i]);
                        ASSERT_NULL(got->groups);
                        ASSERT_UEQ(got->created_at, T0 + 10 + i);
                        ASSERT_UEQ(got->updated_at, T0 + 10 + i);
                }

                CASE("%s: list", b->name);
                ASSERT_OK(store_resource_list(s, NULL, &list, &n));
                ASSERT_UEQ(n, 6);
                assert_resource_eq(list[0], &want[2]); /* all-lab */
                assert_resource_eq(list[1], &want[1]); /* db */
                assert_resource_eq(list[2], &want[3]); /* subnet */
                assert_resource_eq(list[3], &want[4]); /* v6 */
                assert_resource_eq(list[4], &want[0]); /* web */
                assert_resource_eq(list[5], &want[5]); /* x'); … */
                store_resource_array_free(list, n);
                ASSERT_OK(store_resource_list(s, "lab", &list, &n));
                ASSERT_UEQ(n, 3);
                ASSERT_STREQ(list[0]->name, "all-lab");
                ASSERT_STREQ(list[1]->name, "db");
                ASSERT_STREQ(list[2]->name, "web");
                store_resource_array_free(list, n);
                ASSERT_OK(store_resource_list(s, "dmz", &list, &n));
                ASSERT_UEQ(n, 3);
                ASSERT_STREQ(list[2]->name, EVIL);
                store_resource_array_free(list, n);
                list = NULL;
                ASSERT_OK(store_resource_list(s, "nowhere", &list, &n));
                ASSERT_UEQ(n, 0);
                free(list);
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        CASE("%s: list, bad network %zu", b->name, i);
                        ASSERT_ERROR(store_resource_list(s, bad_names[i], &list, &n), EINVAL);
                }

                /* Every bad field is refused by create and update alike, and changes nothing. */
                for (size_t i = 0; i < ELEMENTSOF(resource_refusals); i++) {
                        const ResourceRefusal *c = resource_refusals + i;
                        StoreResource fresh = test_resource("fresh", "172.16.0.1", "lab"),
                                      upd = test_resource("web", "172.16.0.1", "dmz");
                        StoreResource *none = NULL;

                        CASE("%s: refused, %s", b->name, c->what);
                        resource_set(&fresh, c->field, c->value);
                        ASSERT_REFUSED(s, store_resource_create(s, &fresh, T0 + 50), c->error);
                        ASSERT_ERROR(store_resource_get(s, "fresh", &none), ENOENT);
                        ASSERT_NULL(none);
                        if (streq(c->field, "name"))
                                continue;
                        resource_set(&upd, c->field, c->value);
                        ASSERT_REFUSED(s, store_resource_update(s, &upd, T0 + 50), c->error);
                }
                CASE("%s: refused, times", b->name);
                {
                        StoreResource fresh = test_resource("fresh", "172.16.0.1", "lab");

                        ASSERT_REFUSED(s, store_resource_create(s, &fresh, 0), EINVAL);
                        ASSERT_REFUSED(s, store_resource_update(s, &want[0], 0), EINVAL);
                        ASSERT_REFUSED(s, store_resource_update(s, &want[0], (usec_t) INT64_MAX + 1), EINVAL);
                }
                CASE("%s: refused, duplicate", b->name);
                {
                        StoreResource dup = test_resource("web", "172.16.0.1", "dmz");

                        ASSERT_REFUSED(s, store_resource_create(s, &dup, T0 + 50), EEXIST);
                        /* Even when its network is unknown too: the name is the first thing. */
                        dup.remote_network = (char *) "nowhere";
                        ASSERT_REFUSED(s, store_resource_create(s, &dup, T0 + 50), EEXIST);
                }
                CASE("%s: refused, unknown resource", b->name);
                {
                        StoreResource nope = test_resource("nope", "172.16.0.1", "dmz");

                        ASSERT_REFUSED(s, store_resource_update(s, &nope, T0 + 50), ENOENT);
                        ASSERT_REFUSED(s, store_resource_delete(s, "nope"), ENOENT);
                }
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        StoreResource *none = NULL;

                        CASE("%s: bad name %zu", b->name, i);
                        ASSERT_REFUSED(s, store_resource_delete(s, bad_names[i]), EINVAL);
                        ASSERT_ERROR(store_resource_get(s, bad_names[i], &none), EINVAL);
                        ASSERT_NULL(none);
                }
                /* Nothing of the above touched web. */
                {
                        _cleanup_(store_resource_freep) StoreResource *got = resource_get(s, "web");

                        assert_resource_eq(got, &want[0]);
                        ASSERT_UEQ(got->updated_at, T0 + 10);
                }

                /* Update replaces the values, keeps the name, creation time and policies. */
                CASE("%s: update", b->name);
                ASSERT_OK(store_group_create(s, "eng", NULL, T0));
                ASSERT_OK(store_policy_create(s, "eng", "web", T0));
                {
                        StoreResource upd = {
                                .name = (char *) "web",
                                .address = (char *) "192.168.1.0/24",
                                .protocol = (char *) "any",
                                .ports = (char *) "any",
                                .remote_network = (char *) "dmz",
                                .alias = NULL,
                        };
                        _cleanup_(store_resource_freep) StoreResource *got = NULL;

                        ASSERT_BUMPS(s, store_resource_update(s, &upd, T0 + 100));
                        got = resource_get(s, "web");
                        assert_resource_eq(got, &upd);
                        ASSERT_UEQ(got->created_at, T0 + 10);
                        ASSERT_UEQ(got->updated_at, T0 + 100);
                        ASSERT_STRV_EQ(got->groups, STRV_MAKE("eng"));
                }

                /* Delete takes the resource's policies along. */
                CASE("%s: delete", b->name);
                ASSERT_BUMPS(s, store_resource_delete(s, "web"));
                ASSERT_REFUSED(s, store_resource_delete(s, "web"), ENOENT);
                {
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");
                        StorePolicy *policies = NULL;
                        StoreResource *none = NULL;

                        ASSERT_NULL(g->resources);
                        ASSERT_OK(store_policy_list(s, &policies, &n));
                        ASSERT_UEQ(n, 0);
                        store_policy_array_free(policies, n);
                        ASSERT_ERROR(store_resource_get(s, "web", &none), ENOENT);
                        ASSERT_NULL(none);
                }
                ASSERT_BUMPS(s, store_resource_delete(s, EVIL));
                ASSERT_OK(store_resource_list(s, NULL, &list, &n));
                ASSERT_UEQ(n, 4);
                store_resource_array_free(list, n);
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(policy_groups) {
        static char *ops_only[] = { (char *) "ops", NULL }, *eng_only[] = { (char *) "eng", NULL };

        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreResource web = test_resource("web", "192.168.1.100", "lab");
                TestAgent alpha, zulu, conn, gone;
                StoreGroup **list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "groups");
                ASSERT_BUMPS(s, store_group_create(s, "eng", "Engineering", T0 + 1));
                ASSERT_BUMPS(s, store_group_create(s, "ops", NULL, T0 + 2));
                ASSERT_BUMPS(s, store_group_create(s, EVIL, "o'brien's", T0 + 3));

                CASE("%s: create refused", b->name);
                ASSERT_REFUSED(s, store_group_create(s, "eng", NULL, T0), EEXIST);
                ASSERT_REFUSED(s, store_group_create(s, NULL, NULL, T0), EINVAL);
                ASSERT_REFUSED(s, store_group_create(s, "new", "bell\a", T0), EINVAL);
                ASSERT_REFUSED(s, store_group_create(s, "new", NULL, 0), EINVAL);
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        StoreGroup *none = NULL;

                        CASE("%s: bad name %zu", b->name, i);
                        ASSERT_REFUSED(s, store_group_create(s, bad_names[i], NULL, T0), EINVAL);
                        ASSERT_REFUSED(s, store_group_delete(s, bad_names[i]), EINVAL);
                        ASSERT_ERROR(store_group_get(s, bad_names[i], &none), EINVAL);
                        ASSERT_NULL(none);
                }

                /* Enrolling a tunneler changes who holds which groups; a connector does not. */
                CASE("%s: enroll", b->name);
                {
                        uint64_t before = revision(s);

                        enroll_agent(s, &alpha, SPIFFE_ROLE_TUNNELER, "alpha", NULL, ops_only);
                        ASSERT_UEQ(revision(s), before + 1);
                        enroll_agent(s, &zulu, SPIFFE_ROLE_TUNNELER, "zulu", NULL, NULL);
                        ASSERT_UEQ(revision(s), before + 2);
                        enroll_agent(s, &conn, SPIFFE_ROLE_CONNECTOR, "conn", "lab", NULL);
                        ASSERT_UEQ(revision(s), before + 2);
                        enroll_agent(s, &gone, SPIFFE_ROLE_TUNNELER, "gone", NULL, eng_only);
                        ASSERT_BUMPS(s, store_agent_revoke(s, gone.spiffe_id, "lost", T0 + 2));
                }

                CASE("%s: add", b->name);
                ASSERT_BUMPS(s, store_group_add_member(s, "eng", zulu.spiffe_id));
                ASSERT_BUMPS(s, store_group_add_member(s, "eng", alpha.spiffe_id));
                ASSERT_BUMPS(s, store_group_add_member(s, EVIL, alpha.spiffe_id));
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, alpha.spiffe_id);
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");

                        /* Appended, in the order given. */
                        ASSERT_STRV_EQ(a->groups, STRV_MAKE("ops", "eng", EVIL));
                        ASSERT_STREQ(g->name, "eng");
                        ASSERT_STREQ(g->description, "Engineering");
                        ASSERT_UEQ(g->created_at, T0 + 1);
                        /* Ordered; the revoked agent's row still names eng but it holds nothing. */
                        ASSERT_STRV_EQ(g->members, STRV_MAKE(alpha.spiffe_id, zulu.spiffe_id));
                        ASSERT_NULL(g->resources);
                }

                CASE("%s: add and remove refused", b->name);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", zulu.spiffe_id), EALREADY);
                ASSERT_REFUSED(s, store_group_add_member(s, "ops", alpha.spiffe_id), EALREADY);
                ASSERT_REFUSED(s, store_group_remove_member(s, "ops", zulu.spiffe_id), EALREADY);
                ASSERT_REFUSED(s, store_group_add_member(s, "nope", zulu.spiffe_id), ENOENT);
                ASSERT_REFUSED(s, store_group_remove_member(s, "nope", alpha.spiffe_id), ENOENT);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", TD "/tunneler/nobody"), ENOENT);
                ASSERT_REFUSED(s, store_group_remove_member(s, "eng", TD "/tunneler/nobody"), ENOENT);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", conn.spiffe_id), EINVAL);
                ASSERT_REFUSED(s, store_group_remove_member(s, "eng", conn.spiffe_id), EINVAL);
                ASSERT_REFUSED(s, store_group_add_member(s, "ops", gone.spiffe_id), EKEYREVOKED);
                ASSERT_REFUSED(s, store_group_remove_member(s, "eng", gone.spiffe_id), EKEYREVOKED);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", "not a spiffe id"), EINVAL);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", TD "/controller/x"), EINVAL);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", "spiffe://EXAMPLE.org/tunneler/zulu"),
                               EINVAL);
                ASSERT_REFUSED(s, store_group_add_member(s, "eng", NULL), EINVAL);
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        CASE("%s: membership, bad name %zu", b->name, i);
                        ASSERT_REFUSED(s, store_group_add_member(s, bad_names[i], zulu.spiffe_id), EINVAL);
                        ASSERT_REFUSED(s, store_group_remove_member(s, bad_names[i], zulu.spiffe_id), EINVAL);
                }

                /* At most STORE_GROUPS_MAX groups per agent: zulu has eng, and room for 63 more. */
                CASE("%s: too many groups", b->name);
                for (unsigned i = 0; i < STORE_GROUPS_MAX; i++) {
                        char name[8];

                        snprintf(name, sizeof(name), "g%02u", i);
                        ASSERT_OK(store_group_create(s, name, NULL, T0 + 10));
                        if (i + 1 < STORE_GROUPS_MAX)
                                ASSERT_BUMPS(s, store_group_add_member(s, name, zulu.spiffe_id));
                        else
                                ASSERT_REFUSED(s, store_group_add_member(s, name, zulu.spiffe_id), E2BIG);
                }
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, zulu.spiffe_id);

                        ASSERT_UEQ(strv_length(a->groups), STORE_GROUPS_MAX);
                        ASSERT_STREQ(a->groups[0], "eng");
                        ASSERT_STREQ(a->groups[STORE_GROUPS_MAX - 1], "g62");
                }

                CASE("%s: remove", b->name);
                ASSERT_BUMPS(s, store_group_remove_member(s, "eng", alpha.spiffe_id));
                ASSERT_REFUSED(s, store_group_remove_member(s, "eng", alpha.spiffe_id), EALREADY);
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, alpha.spiffe_id);
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");

                        ASSERT_STRV_EQ(a->groups, STRV_MAKE("ops", EVIL));
                        ASSERT_STRV_EQ(g->members, STRV_MAKE(zulu.spiffe_id));
                }
                /* Re-adding goes to the end again. */
                ASSERT_BUMPS(s, store_group_add_member(s, "eng", alpha.spiffe_id));
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, alpha.spiffe_id);

                        ASSERT_STRV_EQ(a->groups, STRV_MAKE("ops", EVIL, "eng"));
                }

                /* Resources granted, from the policies. */
                CASE("%s: resources", b->name);
                ASSERT_OK(store_network_create(s, "lab", NULL, T0));
                ASSERT_OK(store_resource_create(s, &web, T0));
                web.name = (char *) "db";
                ASSERT_OK(store_resource_create(s, &web, T0));
                ASSERT_OK(store_policy_create(s, "eng", "web", T0));
                ASSERT_OK(store_policy_create(s, "eng", "db", T0));
                ASSERT_OK(store_policy_create(s, "ops", "web", T0));
                {
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");

                        ASSERT_STRV_EQ(g->resources, STRV_MAKE("db", "web"));
                }

                CASE("%s: list", b->name);
                ASSERT_OK(store_group_list(s, &list, &n));
                ASSERT_UEQ(n, 3 + STORE_GROUPS_MAX);
                ASSERT_STREQ(list[0]->name, "eng");
                ASSERT_STRV_EQ(list[0]->members, STRV_MAKE(alpha.spiffe_id, zulu.spiffe_id));
                ASSERT_STRV_EQ(list[0]->resources, STRV_MAKE("db", "web"));
                ASSERT_STREQ(list[1]->name, "g00");
                ASSERT_STRV_EQ(list[1]->members, STRV_MAKE(zulu.spiffe_id));
                ASSERT_STREQ(list[n - 2]->name, "ops");
                ASSERT_STRV_EQ(list[n - 2]->members, STRV_MAKE(alpha.spiffe_id));
                ASSERT_STRV_EQ(list[n - 2]->resources, STRV_MAKE("web"));
                ASSERT_STREQ(list[n - 1]->name, EVIL);
                ASSERT_STREQ(list[n - 1]->description, "o'brien's");
                ASSERT_STRV_EQ(list[n - 1]->members, STRV_MAKE(alpha.spiffe_id));
                store_group_array_free(list, n);

                /* Delete: its policies go, and every agent (revoked ones too) loses it, at once. */
                CASE("%s: delete", b->name);
                ASSERT_REFUSED(s, store_group_delete(s, "nope"), ENOENT);
                ASSERT_BUMPS(s, store_group_delete(s, "eng"));
                ASSERT_REFUSED(s, store_group_delete(s, "eng"), ENOENT);
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, alpha.spiffe_id),
                                                                *z = agent_get(s, zulu.spiffe_id),
                                                                *g = agent_get(s, gone.spiffe_id);
                        _cleanup_(store_resource_freep) StoreResource *w = resource_get(s, "web"),
                                                                      *d = resource_get(s, "db");
                        StoreGroup *none = NULL;

                        ASSERT_STRV_EQ(a->groups, STRV_MAKE("ops", EVIL));
                        ASSERT_UEQ(strv_length(z->groups), STORE_GROUPS_MAX - 1);
                        ASSERT_STREQ(z->groups[0], "g00");
                        ASSERT_NULL(g->groups);
                        ASSERT_STRV_EQ(w->groups, STRV_MAKE("ops"));
                        ASSERT_NULL(d->groups);
                        ASSERT_ERROR(store_group_get(s, "eng", &none), ENOENT);
                        ASSERT_NULL(none);
                }
                /* A group of the same name starts empty. */
                ASSERT_BUMPS(s, store_group_create(s, "eng", NULL, T0 + 20));
                {
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");

                        ASSERT_NULL(g->members);
                        ASSERT_NULL(g->resources);
                        ASSERT_NULL(g->description);
                }
                ASSERT_BUMPS(s, store_group_delete(s, EVIL));
                {
                        _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, alpha.spiffe_id);

                        ASSERT_STRV_EQ(a->groups, STRV_MAKE("ops"));
                }
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(policy_policies) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreResource r = test_resource("a", "10.1.0.0/16", "lab");
                StorePolicy *list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "policies");
                ASSERT_OK(store_network_create(s, "lab", NULL, T0));
                ASSERT_OK(store_resource_create(s, &r, T0));
                r.name = (char *) "b";
                ASSERT_OK(store_resource_create(s, &r, T0));
                r.name = (char *) EVIL;
                ASSERT_OK(store_resource_create(s, &r, T0));
                ASSERT_OK(store_group_create(s, "g1", NULL, T0));
                ASSERT_OK(store_group_create(s, "g2", NULL, T0));
                ASSERT_OK(store_group_create(s, EVIL, NULL, T0));

                ASSERT_BUMPS(s, store_policy_create(s, "g2", "b", T0 + 1));
                ASSERT_BUMPS(s, store_policy_create(s, "g1", "b", T0 + 2));
                ASSERT_BUMPS(s, store_policy_create(s, "g1", "a", T0 + 3));
                ASSERT_BUMPS(s, store_policy_create(s, "g2", "a", T0 + 4));
                ASSERT_BUMPS(s, store_policy_create(s, EVIL, EVIL, T0 + 5));

                CASE("%s: refused", b->name);
                ASSERT_REFUSED(s, store_policy_create(s, "g1", "a", T0), EEXIST);
                ASSERT_REFUSED(s, store_policy_create(s, "nope", "a", T0), ENOENT);
                ASSERT_REFUSED(s, store_policy_create(s, "g1", "nope", T0), ENOENT);
                ASSERT_REFUSED(s, store_policy_create(s, "g1", EVIL, 0), EINVAL);
                ASSERT_REFUSED(s, store_policy_create(s, NULL, "a", T0), EINVAL);
                ASSERT_REFUSED(s, store_policy_create(s, "g1", NULL, T0), EINVAL);
                ASSERT_REFUSED(s, store_policy_delete(s, "g1", "nope"), ENOENT);
                ASSERT_REFUSED(s, store_policy_delete(s, "nope", "a"), ENOENT);
                ASSERT_REFUSED(s, store_policy_delete(s, EVIL, "a"), ENOENT);
                for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                        CASE("%s: bad name %zu", b->name, i);
                        ASSERT_REFUSED(s, store_policy_create(s, bad_names[i], "a", T0), EINVAL);
                        ASSERT_REFUSED(s, store_policy_create(s, "g1", bad_names[i], T0), EINVAL);
                        ASSERT_REFUSED(s, store_policy_delete(s, bad_names[i], "a"), EINVAL);
                        ASSERT_REFUSED(s, store_policy_delete(s, "g1", bad_names[i]), EINVAL);
                }

                /* Ordered by group, then resource. */
                CASE("%s: list", b->name);
                ASSERT_OK(store_policy_list(s, &list, &n));
                ASSERT_UEQ(n, 5);
                ASSERT_STREQ(list[0].group, "g1");
                ASSERT_STREQ(list[0].resource, "a");
                ASSERT_UEQ(list[0].created_at, T0 + 3);
                ASSERT_STREQ(list[1].group, "g1");
                ASSERT_STREQ(list[1].resource, "b");
                ASSERT_UEQ(list[1].created_at, T0 + 2);
                ASSERT_STREQ(list[2].group, "g2");
                ASSERT_STREQ(list[2].resource, "a");
                ASSERT_STREQ(list[3].group, "g2");
                ASSERT_STREQ(list[3].resource, "b");
                ASSERT_STREQ(list[4].group, EVIL);
                ASSERT_STREQ(list[4].resource, EVIL);
                store_policy_array_free(list, n);
                {
                        _cleanup_(store_resource_freep) StoreResource *got = resource_get(s, "b");

                        ASSERT_STRV_EQ(got->groups, STRV_MAKE("g1", "g2"));
                }

                CASE("%s: delete", b->name);
                ASSERT_BUMPS(s, store_policy_delete(s, "g1", "a"));
                ASSERT_REFUSED(s, store_policy_delete(s, "g1", "a"), ENOENT);
                ASSERT_BUMPS(s, store_policy_delete(s, EVIL, EVIL));
                ASSERT_OK(store_policy_list(s, &list, &n));
                ASSERT_UEQ(n, 3);
                ASSERT_STREQ(list[0].group, "g1");
                ASSERT_STREQ(list[0].resource, "b");
                store_policy_array_free(list, n);
                {
                        _cleanup_(store_resource_freep) StoreResource *got = resource_get(s, "a");
                        _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "g1");

                        ASSERT_STRV_EQ(got->groups, STRV_MAKE("g2"));
                        ASSERT_STRV_EQ(g->resources, STRV_MAKE("b"));
                }
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(policy_revision) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_free_ char *before = NULL, *after = NULL;
                TestToken tt;
                TestAgent laptop, conn, again;

                CASE("%s", b->name);
                s = open_store(b, "revision");
                ASSERT_UEQ(revision(s), 0);

                /* Enrollment: a tunneler bumps, a connector does not, a refused one does not. */
                enroll_agent(s, &laptop, SPIFFE_ROLE_TUNNELER, "laptop", NULL, NULL);
                ASSERT_UEQ(revision(s), 1);
                enroll_agent(s, &conn, SPIFFE_ROLE_CONNECTOR, "conn", "lab", NULL);
                ASSERT_UEQ(revision(s), 1);
                test_token_create(s, &tt, SPIFFE_ROLE_TUNNELER);
                test_agent_init(&again, SPIFFE_ROLE_TUNNELER, "laptop");
                ASSERT_REFUSED(s, store_enroll(s, tt.t.id, tt.t.secret_hash, &again.a, T0 + 2, NULL, NULL),
                               EEXIST);
                ASSERT_REFUSED(s, store_enroll(s, tt.t.id, conn.key, &again.a, T0 + 2, NULL, NULL), ENOENT);

                /* What does not change access leaves it alone. */
                ASSERT_OK(store_meta_set(s, "k", "v"));
                ASSERT_OK(store_agents_touch(s, &(StoreHeartbeat) { .spiffe_id = laptop.spiffe_id,
                                                                     .last_seen = T0 + 3 },
                                             1));
                ASSERT_OK(store_token_revoke(s, tt.t.id, T0 + 3));
                ASSERT_OK(store_agent_update_certificate(s, laptop.spiffe_id, laptop.key, sizeof(laptop.key),
                                                         "01", T0 + USEC_PER_DAY));
                ASSERT_UEQ(revision(s), 1);

                /* Revocation: any agent, once. */
                ASSERT_BUMPS(s, store_agent_revoke(s, laptop.spiffe_id, NULL, T0 + 4));
                ASSERT_REFUSED(s, store_agent_revoke(s, laptop.spiffe_id, NULL, T0 + 5), EALREADY);
                ASSERT_REFUSED(s, store_agent_revoke(s, TD "/tunneler/nobody", NULL, T0 + 5), ENOENT);
                ASSERT_BUMPS(s, store_agent_revoke(s, conn.spiffe_id, NULL, T0 + 4));
                ASSERT_UEQ(revision(s), 3);

                /* A refused mutation leaves every row as it was, too. */
                ASSERT_OK(store_network_create(s, "lab", NULL, T0));
                ASSERT_OK(store_group_create(s, "eng", NULL, T0));
                before = dump_policy(s);
                {
                        StoreResource bad = test_resource("web", "10.0.0.1/24", "lab");

                        ASSERT_REFUSED(s, store_resource_create(s, &bad, T0), EINVAL);
                        ASSERT_REFUSED(s, store_network_create(s, "lab", "other", T0 + 9), EEXIST);
                        ASSERT_REFUSED(s, store_group_create(s, "eng", "other", T0 + 9), EEXIST);
                        ASSERT_REFUSED(s, store_policy_create(s, "eng", "web", T0), ENOENT);
                }
                after = dump_policy(s);
                ASSERT_STREQ(before, after);
                ASSERT_STRSTR(after, "revision 5\n");

                /* Kept across a reopen. */
                s = store_free(s);
                s = open_store(b, "revision");
                ASSERT_UEQ(revision(s), 5);
        }
}

static int count_policy_tables(const char *path) {
        sqlite3_stmt *st = NULL;
        sqlite3 *db = NULL;
        int n;

        ASSERT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_prepare_v2(db,
                                     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                     "('policy_revision', 'networks', 'resources', 'policy_groups', "
                                     "'policies')",
                                     -1, &st, NULL),
                  SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
        return n;
}

TEST(sqlite_migration_3_adds_policy) {
        _cleanup_(store_freep) Store *s = NULL;
        TestToken consumed, fresh;
        const char *path = sqlite_path("policy3");

        /* Code that knows only version 2 enrolls and revokes without a revision to bump. */
        ASSERT_OK(store_open_sqlite_migrations(path, MIGRATION_POLICY - 1, &s));
        populate(s, &consumed, &fresh);
        ASSERT_OK(store_agent_revoke(s, TD "/tunneler/laptop-1", NULL, T0 + 1));
        s = store_free(s);
        ASSERT_EQ(count_policy_tables(path), 0);

        ASSERT_OK(store_open_sqlite_migrations(path, MIGRATION_POLICY, &s));
        ASSERT_EQ(count_policy_tables(path), 5);
        ASSERT_UEQ(revision(s), 0);
        /* The agents' groups came through, and a group of that name finds its (revoked) holder not a
         * member. */
        {
                _cleanup_(store_agent_freep) StoreAgent *a = agent_get(s, TD "/tunneler/laptop-1");

                ASSERT_STRV_EQ(a->groups, STRV_MAKE("eng", "ops"));
        }
        ASSERT_BUMPS(s, store_group_create(s, "eng", NULL, T0));
        {
                _cleanup_(store_group_freep) StoreGroup *g = group_get(s, "eng");

                ASSERT_NULL(g->members);
        }
        ASSERT_OK(store_check_integrity(s));
}

/* Admins, API tokens, sessions */

#define HASH_A "$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
#define HASH_B "$argon2id$v=19$m=65536,t=3,p=1$b3RoZXJzYWx0MTIz$b3RoZXJoYXNob3RoZXJoYXNob3RoZXJoYXNob3RoZXI"

static void admin_create(Store *s, const char *name, usec_t now) {
        ASSERT_OK(store_admin_create(s, &(const StoreAdmin) {
                                                .name = (char *) name,
                                                .password_hash = (char *) HASH_A,
                                                .created_by = (char *) "root",
                                                .created_at = now,
                                        }));
}

static StoreAdmin *admin_get(Store *s, const char *name) {
        StoreAdmin *a = NULL;

        ASSERT_OK(store_admin_get(s, name, &a));
        return ASSERT_NOT_NULL(a);
}

/* Credential ids and hashes that differ by their first byte. */
static void credential_bytes(uint8_t *p, size_t n, uint8_t tag) {
        memset(p, 0x5a, n);
        p[0] = tag;
}

static StoreApiToken api_token_make(uint8_t tag, const char *admin, const char *name, StoreScope scope) {
        StoreApiToken t = {
                .name = (char *) name,
                .admin = (char *) admin,
                .scope = scope,
                .created_at = T0,
                .expires_at = T0 + USEC_PER_DAY,
        };

        credential_bytes(t.id, sizeof(t.id), tag);
        credential_bytes(t.secret_hash, sizeof(t.secret_hash), (uint8_t) (tag + 1));
        return t;
}

static StoreSession session_make(uint8_t tag, const char *admin, usec_t created) {
        StoreSession ses = {
                .admin = (char *) admin,
                .created_at = created,
                .expires_at = created + 12 * USEC_PER_HOUR,
                .last_seen_at = created,
                .address = (char *) "2001:db8::7",
                .user_agent = (char *) "curl/7.88.1",
        };

        credential_bytes(ses.id, sizeof(ses.id), tag);
        credential_bytes(ses.secret_hash, sizeof(ses.secret_hash), (uint8_t) (tag + 1));
        credential_bytes(ses.csrf_hash, sizeof(ses.csrf_hash), (uint8_t) (tag + 2));
        return ses;
}

static size_t n_api_tokens(Store *s, const char *admin) {
        StoreApiToken **l = NULL;
        size_t n = 0;

        ASSERT_OK(store_api_token_list(s, admin, &l, &n));
        store_api_token_array_free(l, n);
        return n;
}

static size_t n_sessions(Store *s, const char *admin) {
        StoreSession **l = NULL;
        size_t n = 0;

        ASSERT_OK(store_session_list(s, admin, &l, &n));
        store_session_array_free(l, n);
        return n;
}

TEST(admins_round_trip) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreAdmin **list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "admins");
                admin_create(s, "zoe", T0);
                admin_create(s, "alice", T0 + 1);
                admin_create(s, "bob@example.org", T0 + 2);
                ASSERT_ERROR(store_admin_create(s, &(const StoreAdmin) {
                                                           .name = (char *) "alice",
                                                           .password_hash = (char *) HASH_B,
                                                           .created_by = (char *) "root",
                                                           .created_at = T0 + 3,
                                                   }),
                             EEXIST);

                {
                        _cleanup_(store_admin_freep) StoreAdmin *a = admin_get(s, "alice");

                        ASSERT_STREQ(a->name, "alice");
                        ASSERT_STREQ(a->password_hash, HASH_A);
                        ASSERT_STREQ(a->created_by, "root");
                        ASSERT_UEQ(a->created_at, T0 + 1);
                        ASSERT_UEQ(a->password_changed_at, T0 + 1);
                        ASSERT_UEQ(a->disabled_at, 0);
                        ASSERT_UEQ(a->last_login_at, 0);
                }
                ASSERT_OK(store_admin_list(s, &list, &n));
                ASSERT_EQ(n, 3U);
                ASSERT_STREQ(list[0]->name, "alice");
                ASSERT_STREQ(list[1]->name, "bob@example.org");
                ASSERT_STREQ(list[2]->name, "zoe");
                store_admin_array_free(list, n);

                CASE("%s: set password, disable, login", b->name);
                ASSERT_OK(store_admin_set_password(s, "alice", HASH_B, T0 + 10));
                ASSERT_ERROR(store_admin_set_password(s, "nobody", HASH_B, T0 + 10), ENOENT);
                ASSERT_OK(store_admin_touch_login(s, "alice", T0 + 11));
                ASSERT_ERROR(store_admin_touch_login(s, "nobody", T0 + 11), ENOENT);
                ASSERT_OK(store_admin_set_disabled(s, "alice", T0 + 12));
                ASSERT_ERROR(store_admin_set_disabled(s, "nobody", T0 + 12), ENOENT);
                {
                        _cleanup_(store_admin_freep) StoreAdmin *a = admin_get(s, "alice");

                        ASSERT_STREQ(a->password_hash, HASH_B);
                        ASSERT_UEQ(a->password_changed_at, T0 + 10);
                        ASSERT_UEQ(a->last_login_at, T0 + 11);
                        ASSERT_UEQ(a->disabled_at, T0 + 12);
                        ASSERT_UEQ(a->created_at, T0 + 1);
                }
                ASSERT_OK(store_admin_set_disabled(s, "alice", 0));
                {
                        _cleanup_(store_admin_freep) StoreAdmin *a = admin_get(s, "alice");

                        ASSERT_UEQ(a->disabled_at, 0);
                }

                CASE("%s: delete", b->name);
                ASSERT_OK(store_admin_delete(s, "zoe"));
                ASSERT_ERROR(store_admin_delete(s, "zoe"), ENOENT);
                {
                        StoreAdmin *a = NULL;

                        ASSERT_ERROR(store_admin_get(s, "zoe", &a), ENOENT);
                        ASSERT_NULL(a);
                }
                /* The name is free again. */
                admin_create(s, "zoe", T0 + 20);
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(admins_invalid) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                char long_name[STORE_ADMIN_NAME_MAX + 2];
                static const char *const names[] = { "", "Alice", "_alice", "al ice", "al'ice", "al\"ice",
                                                     "alice;drop", "al\nice", "ålice" };
                static const char *const hashes[] = {
                        "correct horse battery staple",
                        "$argon2i$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA",
                        "$argon2id$v=19$m=65536,t=3,p=1$salt$hash with space",
                        "$argon2id$v=19$m=65536,t=3,p=1$salt$hash\n",
                        "",
                };

                CASE("%s", b->name);
                s = open_store(b, "admins-invalid");
                for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                        StoreAdmin a = { .name = (char *) names[i], .password_hash = (char *) HASH_A,
                                         .created_by = (char *) "root", .created_at = T0 };

                        CASE("%s: name '%s'", b->name, names[i]);
                        ASSERT_FALSE(store_admin_name_is_valid(names[i]));
                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                }
                memset(long_name, 'a', sizeof(long_name) - 1);
                long_name[sizeof(long_name) - 1] = '\0';
                ASSERT_FALSE(store_admin_name_is_valid(long_name));
                ASSERT_FALSE(store_admin_name_is_valid(NULL));
                long_name[STORE_ADMIN_NAME_MAX] = '\0';
                ASSERT_TRUE(store_admin_name_is_valid(long_name));
                ASSERT_TRUE(store_admin_name_is_valid("0ps.team_1@example-corp.org"));

                /* Only argon2id encoded strings: a plaintext password is never stored by mistake. */
                for (size_t i = 0; i < ELEMENTSOF(hashes); i++) {
                        StoreAdmin a = { .name = (char *) "alice", .password_hash = (char *) hashes[i],
                                         .created_by = (char *) "root", .created_at = T0 };

                        CASE("%s: hash '%s'", b->name, hashes[i]);
                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                }

                CASE("%s: fields the store sets", b->name);
                {
                        StoreAdmin a = { .name = (char *) "alice", .password_hash = (char *) HASH_A,
                                         .created_by = (char *) "root", .created_at = T0, .last_login_at = T0 };

                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                        a.last_login_at = 0;
                        a.disabled_at = T0;
                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                        a.disabled_at = 0;
                        a.created_at = 0;
                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                        a.created_at = T0;
                        a.created_by = NULL;
                        ASSERT_ERROR(store_admin_create(s, &a), EINVAL);
                }
                ASSERT_ERROR(store_admin_set_password(s, "alice", "plaintext password!", T0), EINVAL);
                ASSERT_ERROR(store_admin_delete(s, "Alice"), EINVAL);
                {
                        StoreAdmin **list = NULL;
                        size_t n = 0;

                        ASSERT_OK(store_admin_list(s, &list, &n));
                        ASSERT_EQ(n, 0U);
                        store_admin_array_free(list, n);
                }
        }
}

TEST(api_tokens_round_trip) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreApiToken t1 = api_token_make(1, "alice", "ci", STORE_SCOPE_READ_WRITE),
                              t2 = api_token_make(3, "alice", "grafana \"read\"; DROP TABLE api_tokens;--",
                                                  STORE_SCOPE_READ),
                              t3 = api_token_make(5, "bob", "ci", STORE_SCOPE_READ);
                StoreApiToken **list = NULL;
                uint8_t unknown[STORE_CREDENTIAL_ID_SIZE] = { 0x42 };
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "api-tokens");
                ASSERT_ERROR(store_api_token_create(s, &t1), ENOENT);
                admin_create(s, "alice", T0);
                admin_create(s, "bob", T0);
                ASSERT_OK(store_api_token_create(s, &t1));
                t2.created_at = T0 + 1;
                ASSERT_OK(store_api_token_create(s, &t2));
                ASSERT_OK(store_api_token_create(s, &t3));
                /* The id is unique; so is a live name per admin (bob's "ci" is another admin's). */
                ASSERT_ERROR(store_api_token_create(s, &t1), EEXIST);
                {
                        StoreApiToken dup = api_token_make(7, "alice", "ci", STORE_SCOPE_READ);

                        ASSERT_ERROR(store_api_token_create(s, &dup), EEXIST);
                }

                {
                        _cleanup_(store_api_token_freep) StoreApiToken *got = NULL;

                        ASSERT_OK(store_api_token_get(s, t2.id, &got));
                        ASSERT_MEMEQ(got->id, t2.id, sizeof(t2.id));
                        ASSERT_STREQ(got->name, t2.name);
                        ASSERT_STREQ(got->admin, "alice");
                        ASSERT_EQ(got->scope, STORE_SCOPE_READ);
                        ASSERT_MEMEQ(got->secret_hash, t2.secret_hash, sizeof(t2.secret_hash));
                        ASSERT_UEQ(got->created_at, T0 + 1);
                        ASSERT_UEQ(got->expires_at, T0 + USEC_PER_DAY);
                        ASSERT_UEQ(got->last_used_at, 0);
                        ASSERT_UEQ(got->revoked_at, 0);
                        got = store_api_token_free(got);
                        ASSERT_ERROR(store_api_token_get(s, unknown, &got), ENOENT);
                }
                ASSERT_OK(store_api_token_list(s, "alice", &list, &n));
                ASSERT_EQ(n, 2U);
                ASSERT_MEMEQ(list[0]->id, t1.id, sizeof(t1.id));
                ASSERT_MEMEQ(list[1]->id, t2.id, sizeof(t2.id));
                store_api_token_array_free(list, n);
                ASSERT_EQ(n_api_tokens(s, NULL), 3U);
                ASSERT_EQ(n_api_tokens(s, "carol"), 0U);

                CASE("%s: touch", b->name);
                ASSERT_OK(store_api_token_touch(s, t1.id, T0 + 100));
                /* Never backwards (batched writes may arrive out of order). */
                ASSERT_OK(store_api_token_touch(s, t1.id, T0 + 50));
                ASSERT_ERROR(store_api_token_touch(s, unknown, T0 + 50), ENOENT);
                {
                        _cleanup_(store_api_token_freep) StoreApiToken *got = NULL;

                        ASSERT_OK(store_api_token_get(s, t1.id, &got));
                        ASSERT_UEQ(got->last_used_at, T0 + 100);
                }

                CASE("%s: revoke", b->name);
                ASSERT_OK(store_api_token_revoke(s, t1.id, T0 + 200));
                ASSERT_ERROR(store_api_token_revoke(s, t1.id, T0 + 201), EALREADY);
                ASSERT_ERROR(store_api_token_revoke(s, unknown, T0 + 201), ENOENT);
                {
                        _cleanup_(store_api_token_freep) StoreApiToken *got = NULL;
                        /* A revoked token frees its name. */
                        StoreApiToken again = api_token_make(9, "alice", "ci", STORE_SCOPE_READ);

                        ASSERT_OK(store_api_token_get(s, t1.id, &got));
                        ASSERT_UEQ(got->revoked_at, T0 + 200);
                        ASSERT_OK(store_api_token_create(s, &again));
                }

                CASE("%s: delete", b->name);
                ASSERT_OK(store_api_token_delete(s, t1.id));
                ASSERT_ERROR(store_api_token_delete(s, t1.id), ENOENT);
                ASSERT_EQ(n_api_tokens(s, "alice"), 2U);
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(api_tokens_invalid_and_bounded) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                char long_name[STORE_API_TOKEN_NAME_MAX + 2];

                CASE("%s", b->name);
                s = open_store(b, "api-tokens-invalid");
                admin_create(s, "alice", T0);
                {
                        StoreApiToken t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);

                        memset(t.id, 0, sizeof(t.id));
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);
                        memset(t.secret_hash, 0, sizeof(t.secret_hash));
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "", STORE_SCOPE_READ);
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "new\nline", STORE_SCOPE_READ);
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        memset(long_name, 'n', sizeof(long_name) - 1);
                        long_name[sizeof(long_name) - 1] = '\0';
                        t = api_token_make(1, "alice", long_name, STORE_SCOPE_READ);
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "Alice", "ci", STORE_SCOPE_READ);
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "ci", _STORE_SCOPE_MAX);
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);
                        t.expires_at = t.created_at;
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);
                        t.revoked_at = T0;
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                        t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);
                        t.last_used_at = T0;
                        ASSERT_ERROR(store_api_token_create(s, &t), EINVAL);
                }
                ASSERT_EQ(n_api_tokens(s, NULL), 0U);

                CASE("%s: at most %d per admin, revoked ones included", b->name, STORE_API_TOKENS_PER_ADMIN_MAX);
                for (int i = 0; i < STORE_API_TOKENS_PER_ADMIN_MAX; i++) {
                        char name[16];
                        StoreApiToken t;

                        snprintf(name, sizeof(name), "t%d", i);
                        t = api_token_make(1, "alice", name, STORE_SCOPE_READ);
                        t.id[1] = (uint8_t) i;
                        ASSERT_OK(store_api_token_create(s, &t));
                        if (i == 0)
                                ASSERT_OK(store_api_token_revoke(s, t.id, T0 + 1));
                }
                {
                        StoreApiToken t = api_token_make(2, "alice", "one too many", STORE_SCOPE_READ);

                        ASSERT_ERROR(store_api_token_create(s, &t), E2BIG);
                        t.id[1] = 0;
                        t.id[0] = 1;
                        /* Deleting one makes room. */
                        ASSERT_OK(store_api_token_delete(s, t.id));
                        t.id[0] = 2;
                        ASSERT_OK(store_api_token_create(s, &t));
                }
                ASSERT_EQ(n_api_tokens(s, "alice"), (size_t) STORE_API_TOKENS_PER_ADMIN_MAX);
        }
}

TEST(sessions_round_trip) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreSession s1 = session_make(1, "alice", T0), s2 = session_make(4, "alice", T0 + 1),
                             s3 = session_make(7, "bob", T0 + 2);
                uint8_t unknown[STORE_CREDENTIAL_ID_SIZE] = { 0x42 };
                StoreSession **list = NULL;
                size_t n = 0;

                CASE("%s", b->name);
                s = open_store(b, "sessions");
                ASSERT_ERROR(store_session_create(s, &s1), ENOENT);
                admin_create(s, "alice", T0);
                admin_create(s, "bob", T0);
                s2.address = NULL;
                s2.user_agent = NULL;
                ASSERT_OK(store_session_create(s, &s1));
                ASSERT_OK(store_session_create(s, &s2));
                ASSERT_OK(store_session_create(s, &s3));
                ASSERT_ERROR(store_session_create(s, &s1), EEXIST);

                {
                        _cleanup_(store_session_freep) StoreSession *got = NULL;

                        ASSERT_OK(store_session_get(s, s1.id, &got));
                        ASSERT_MEMEQ(got->id, s1.id, sizeof(s1.id));
                        ASSERT_STREQ(got->admin, "alice");
                        ASSERT_MEMEQ(got->secret_hash, s1.secret_hash, sizeof(s1.secret_hash));
                        ASSERT_MEMEQ(got->csrf_hash, s1.csrf_hash, sizeof(s1.csrf_hash));
                        ASSERT_UEQ(got->created_at, T0);
                        ASSERT_UEQ(got->expires_at, T0 + 12 * USEC_PER_HOUR);
                        ASSERT_UEQ(got->last_seen_at, T0);
                        ASSERT_STREQ(got->address, "2001:db8::7");
                        ASSERT_STREQ(got->user_agent, "curl/7.88.1");
                        got = store_session_free(got);
                        ASSERT_OK(store_session_get(s, s2.id, &got));
                        ASSERT_NULL(got->address);
                        ASSERT_NULL(got->user_agent);
                        got = store_session_free(got);
                        ASSERT_ERROR(store_session_get(s, unknown, &got), ENOENT);
                }
                ASSERT_OK(store_session_list(s, "alice", &list, &n));
                ASSERT_EQ(n, 2U);
                ASSERT_MEMEQ(list[0]->id, s1.id, sizeof(s1.id));
                ASSERT_MEMEQ(list[1]->id, s2.id, sizeof(s2.id));
                store_session_array_free(list, n);
                ASSERT_EQ(n_sessions(s, NULL), 3U);

                CASE("%s: touch", b->name);
                ASSERT_OK(store_session_touch(s, s1.id, T0 + 60 * USEC_PER_SEC));
                ASSERT_OK(store_session_touch(s, s1.id, T0 + 30 * USEC_PER_SEC));
                ASSERT_ERROR(store_session_touch(s, unknown, T0), ENOENT);
                {
                        _cleanup_(store_session_freep) StoreSession *got = NULL;

                        ASSERT_OK(store_session_get(s, s1.id, &got));
                        ASSERT_UEQ(got->last_seen_at, T0 + 60 * USEC_PER_SEC);
                }

                CASE("%s: delete", b->name);
                ASSERT_OK(store_session_delete(s, s2.id));
                ASSERT_ERROR(store_session_delete(s, s2.id), ENOENT);

                CASE("%s: expiry", b->name);
                /* s1: seen at +60 s; s3: created at +2 µs, never seen since. Idle after 30 min. */
                ASSERT_EQ(store_sessions_delete_expired(s, T0 + 30 * USEC_PER_MINUTE, 30 * USEC_PER_MINUTE), 0);
                ASSERT_EQ(store_sessions_delete_expired(s, T0 + 2 + 30 * USEC_PER_MINUTE, 30 * USEC_PER_MINUTE), 1);
                ASSERT_EQ(n_sessions(s, "bob"), 0U);
                /* Without the idle rule only the absolute end counts. */
                ASSERT_EQ(store_sessions_delete_expired(s, T0 + 12 * USEC_PER_HOUR - 1, 0), 0);
                ASSERT_EQ(store_sessions_delete_expired(s, T0 + 12 * USEC_PER_HOUR, 0), 1);
                ASSERT_EQ(n_sessions(s, NULL), 0U);
                ASSERT_EQ(store_sessions_delete_expired(s, T0 + 12 * USEC_PER_HOUR, 0), 0);
                ASSERT_OK(store_check_integrity(s));
        }
}

TEST(sessions_invalid_and_bounded) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                char ua[STORE_USER_AGENT_MAX + 2];

                CASE("%s", b->name);
                s = open_store(b, "sessions-invalid");
                admin_create(s, "alice", T0);
                {
                        StoreSession ses = session_make(1, "alice", T0);

                        memset(ses.csrf_hash, 0, sizeof(ses.csrf_hash));
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        ses = session_make(1, "alice", T0);
                        memset(ses.secret_hash, 0, sizeof(ses.secret_hash));
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        ses = session_make(1, "alice", T0);
                        ses.address = (char *) "not an address";
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        ses = session_make(1, "alice", T0);
                        ses.user_agent = (char *) "tab\there";
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        memset(ua, 'u', sizeof(ua) - 1);
                        ua[sizeof(ua) - 1] = '\0';
                        ses.user_agent = ua;
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        ses = session_make(1, "alice", T0);
                        ses.expires_at = T0;
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                        ses = session_make(1, "alice", T0);
                        ses.last_seen_at = T0 - 1;
                        ASSERT_ERROR(store_session_create(s, &ses), EINVAL);
                }
                ASSERT_EQ(n_sessions(s, NULL), 0U);

                CASE("%s: disabled admins get none", b->name);
                ASSERT_OK(store_admin_set_disabled(s, "alice", T0));
                {
                        StoreSession ses = session_make(1, "alice", T0);

                        ASSERT_ERROR(store_session_create(s, &ses), EPERM);
                }
                ASSERT_OK(store_admin_set_disabled(s, "alice", 0));

                CASE("%s: at most %d per admin, the least recently seen goes", b->name,
                     STORE_SESSIONS_PER_ADMIN_MAX);
                for (int i = 0; i < STORE_SESSIONS_PER_ADMIN_MAX; i++) {
                        StoreSession ses = session_make(1, "alice", T0 + (usec_t) i);

                        ses.id[1] = (uint8_t) i;
                        /* The first one is the busiest. */
                        if (i == 0)
                                ses.last_seen_at = T0 + USEC_PER_HOUR;
                        ASSERT_OK(store_session_create(s, &ses));
                }
                {
                        StoreSession ses = session_make(1, "alice", T0 + 100);
                        _cleanup_(store_session_freep) StoreSession *got = NULL;

                        ses.id[1] = 0xff;
                        ASSERT_OK(store_session_create(s, &ses));
                        ASSERT_EQ(n_sessions(s, "alice"), (size_t) STORE_SESSIONS_PER_ADMIN_MAX);
                        ASSERT_OK(store_session_get(s, ses.id, &got));
                        got = store_session_free(got);
                        /* Session 1 (seen at T0 + 1) went, session 0 (seen an hour later) stayed. */
                        ses.id[1] = 1;
                        ASSERT_ERROR(store_session_get(s, ses.id, &got), ENOENT);
                        ses.id[1] = 0;
                        ASSERT_OK(store_session_get(s, ses.id, &got));
                }
        }
}

TEST(admin_changes_end_credentials) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                StoreApiToken t = api_token_make(1, "alice", "ci", STORE_SCOPE_READ);
                StoreSession ses;

                CASE("%s", b->name);
                s = open_store(b, "admin-changes");
                admin_create(s, "alice", T0);
                admin_create(s, "bob", T0);
                ASSERT_OK(store_api_token_create(s, &t));
                ses = session_make(10, "alice", T0);
                ASSERT_OK(store_session_create(s, &ses));
                ses = session_make(20, "bob", T0);
                ASSERT_OK(store_session_create(s, &ses));

                /* A new password ends sessions, not API tokens. */
                ASSERT_OK(store_admin_set_password(s, "alice", HASH_B, T0 + 1));
                ASSERT_EQ(n_sessions(s, "alice"), 0U);
                ASSERT_EQ(n_api_tokens(s, "alice"), 1U);
                ses = session_make(30, "alice", T0 + 2);
                ASSERT_OK(store_session_create(s, &ses));

                /* So does disabling. */
                ASSERT_OK(store_admin_set_disabled(s, "alice", T0 + 3));
                ASSERT_EQ(n_sessions(s, "alice"), 0U);
                ASSERT_EQ(n_api_tokens(s, "alice"), 1U);
                ASSERT_OK(store_admin_set_disabled(s, "alice", 0));
                ses = session_make(40, "alice", T0 + 4);
                ASSERT_OK(store_session_create(s, &ses));

                /* Deleting the admin deletes both, in the same transaction; other admins keep theirs. */
                ASSERT_OK(store_admin_delete(s, "alice"));
                ASSERT_EQ(n_sessions(s, "alice"), 0U);
                ASSERT_EQ(n_api_tokens(s, "alice"), 0U);
                ASSERT_EQ(n_sessions(s, "bob"), 1U);
                {
                        _cleanup_(store_api_token_freep) StoreApiToken *got = NULL;

                        ASSERT_ERROR(store_api_token_get(s, t.id, &got), ENOENT);
                }
                ASSERT_OK(store_check_integrity(s));
        }
}

static int count_auth_tables(const char *path) {
        sqlite3_stmt *st = NULL;
        sqlite3 *db = NULL;
        int n;

        ASSERT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ASSERT_EQ(sqlite3_prepare_v2(db,
                                     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                     "('admins', 'api_tokens', 'sessions')",
                                     -1, &st, NULL),
                  SQLITE_OK);
        ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
        n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
        return n;
}

TEST(sqlite_migration_4_adds_auth) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *before = NULL, *after = NULL;
        TestToken consumed, fresh;
        const char *path = sqlite_path("auth4");

        ASSERT_OK(store_open_sqlite_migrations(path, MIGRATION_AUTH - 1, &s));
        populate(s, &consumed, &fresh);
        before = dump_store(s);
        /* Code that knows only version 3 has no admins to offer. */
        {
                StoreAdmin **list = NULL;
                size_t n = 0;

                ASSERT_ERROR(store_admin_list(s, &list, &n), EOPNOTSUPP);
                ASSERT_ERROR(store_admin_create(s, &(const StoreAdmin) { .name = (char *) "alice",
                                                                          .password_hash = (char *) HASH_A,
                                                                          .created_by = (char *) "root",
                                                                          .created_at = T0 }),
                             EOPNOTSUPP);
        }
        s = store_free(s);
        ASSERT_EQ(count_auth_tables(path), 0);

        ASSERT_OK(store_open_sqlite_migrations(path, MIGRATION_AUTH, &s));
        ASSERT_EQ(count_auth_tables(path), 3);
        after = dump_store(s);
        ASSERT_STREQ(before, after);
        ASSERT_EQ(n_sessions(s, NULL), 0U);
        admin_create(s, "alice", T0);
        ASSERT_OK(store_check_integrity(s));
}

TEST(auth_strings) {
        ASSERT_STREQ(store_scope_to_string(STORE_SCOPE_READ), "read");
        ASSERT_STREQ(store_scope_to_string(STORE_SCOPE_READ_WRITE), "read-write");
        ASSERT_NULL(store_scope_to_string(_STORE_SCOPE_MAX));
        ASSERT_EQ(store_scope_from_string("read"), STORE_SCOPE_READ);
        ASSERT_EQ(store_scope_from_string("read-write"), STORE_SCOPE_READ_WRITE);
        ASSERT_EQ(store_scope_from_string("write"), _STORE_SCOPE_INVALID);
        ASSERT_EQ(store_scope_from_string(NULL), _STORE_SCOPE_INVALID);
}

/* Integrity */

TEST(integrity_fresh) {
        FOREACH_BACKEND(b) {
                _cleanup_(store_freep) Store *s = NULL;
                TestToken consumed, fresh;

                CASE("%s", b->name);
                s = open_store(b, "integrity");
                ASSERT_OK(store_check_integrity(s));
                populate(s, &consumed, &fresh);
                ASSERT_EQ(store_check_integrity(s), 0);
        }
}

TEST(sqlite_corrupted_page_detected) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *data = NULL;
        const char *copy = sqlite_path("corrupt");
        char detail[STORE_STRING_MAX + 1];
        size_t size = 0, page = 4096, middle;
        int r;

        /* Enough rows for dozens of pages. */
        s = open_store(&backends[0], "sound");
        memset(detail, 'd', STORE_STRING_MAX);
        detail[STORE_STRING_MAX] = '\0';
        for (int i = 0; i < 200; i++)
                ASSERT_OK(store_audit_append(s,
                                             &(StoreAuditEvent) { .time = T0 + i,
                                                                  .event = (char *) "e",
                                                                  .actor = (char *) "root",
                                                                  .detail = detail },
                                             NULL));
        ASSERT_OK(store_check_integrity(s));
        /* Closing checkpoints the WAL into the file. */
        s = store_free(s);

        data = file_contents(sqlite_path("sound"), &size);
        ASSERT_GT(size, 20 * page);
        middle = size / 2 / page * page;
        /* A page of garbage in the middle of a copy. */
        memset(data + middle, 0xa5, page);
        test_write_file(copy, data, size);

        /* Either the open notices, or the check does; never a silent success. */
        r = store_open_sqlite(copy, &s);
        if (r >= 0)
                ASSERT_ERROR(store_check_integrity(s), EUCLEAN);
        else
                ASSERT_EQ(r, -EUCLEAN);

        /* The original is fine. */
        s = store_free(s);
        s = open_store(&backends[0], "sound");
        ASSERT_OK(store_check_integrity(s));
}

/* No secret at rest */

static void assert_absent(const char *data, size_t size, const void *needle, size_t n, const char *what) {
        if (memmem(data, size, needle, n))
                test_fail(__FILE__, __LINE__, "Found %s in the database files", what);
}

static void assert_secret_absent(const char *data, size_t size, const uint8_t secret[TOKEN_SECRET_SIZE],
                                 const char *token_string) {
        _cleanup_free_ char *hex = NULL, *b64url = NULL, *b64 = NULL;
        char upper[TOKEN_SECRET_SIZE * 2 + 1];

        hex = ASSERT_NOT_NULL(hexmem(secret, TOKEN_SECRET_SIZE));
        for (size_t i = 0; i <= strlen(hex); i++)
                upper[i] = (char) (hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 'a' + 'A' : hex[i]);
        ASSERT_OK(base64url_encode(secret, TOKEN_SECRET_SIZE, &b64url));
        ASSERT_OK(base64_encode(secret, TOKEN_SECRET_SIZE, &b64));

        assert_absent(data, size, secret, TOKEN_SECRET_SIZE, "the raw secret");
        /* Any 8-byte window of the secret, in case it were stored split. */
        for (size_t i = 0; i + 8 <= TOKEN_SECRET_SIZE; i++)
                assert_absent(data, size, secret + i, 8, "part of the raw secret");
        assert_absent(data, size, hex, strlen(hex), "the secret in hex");
        assert_absent(data, size, upper, strlen(upper), "the secret in upper-case hex");
        assert_absent(data, size, b64url, strlen(b64url), "the secret in base64url");
        assert_absent(data, size, b64, strlen(b64), "the secret in base64");
        assert_absent(data, size, token_string + STRLEN(TOKEN_PREFIX), 40, "the token string");
}

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
                data = file_contents(p, &n);
                all = ASSERT_NOT_NULL(realloc(all, n_all + n + 1));
                memcpy(all + n_all, data, n);
                n_all += n;
        }
        *ret_size = n_all;
        return all;
}

TEST(sqlite_no_secret_at_rest) {
        static const uint8_t pin[TOKEN_PIN_SIZE] = { 1, 2, 3 };
        char *addresses[] = { (char *) "ctl.example.org:8443", NULL };
        _cleanup_(store_freep) Store *s = NULL;
        EnrollmentToken *tokens[3] = {};
        char *strings[3] = {};
        uint8_t hashes[3][TOKEN_HASH_SIZE];
        const char *path = sqlite_path("secrets");

        s = open_store(&backends[0], "secrets");
        for (size_t i = 0; i < ELEMENTSOF(tokens); i++) {
                StoreToken t = {
                        .role = SPIFFE_ROLE_TUNNELER,
                        .created_by = (char *) "root",
                        .created_at = T0,
                        .expires_at = T0 + USEC_PER_HOUR,
                };

                ASSERT_OK(token_generate(pin, addresses, &tokens[i]));
                ASSERT_OK(token_to_string(tokens[i], &strings[i]));
                memcpy(t.id, tokens[i]->id, TOKEN_ID_SIZE);
                ASSERT_OK(token_secret_hash(tokens[i]->secret, hashes[i]));
                memcpy(t.secret_hash, hashes[i], TOKEN_HASH_SIZE);
                ASSERT_OK(store_token_create(s, &t));
        }
        {
                TestAgent ta;

                test_agent_init(&ta, SPIFFE_ROLE_TUNNELER, "laptop");
                ASSERT_EQ(store_enroll(s, tokens[0]->id, hashes[0], &ta.a, T0 + 1, NULL, NULL), 0);
        }

        /* While open (the rows are in the WAL) and after close (checkpointed into the file). */
        for (int pass = 0; pass < 2; pass++) {
                _cleanup_free_ char *data = NULL;
                size_t size = 0;

                CASE("%s", pass == 0 ? "open" : "closed");
                if (pass == 1)
                        s = store_free(s);
                data = read_db_files(path, &size);
                ASSERT_GT(size, 0);
                for (size_t i = 0; i < ELEMENTSOF(tokens); i++) {
                        assert_secret_absent(data, size, tokens[i]->secret, strings[i]);
                        /* What is stored instead. */
                        ASSERT_NOT_NULL(memmem(data, size, hashes[i], TOKEN_HASH_SIZE));
                }
        }

        for (size_t i = 0; i < ELEMENTSOF(tokens); i++) {
                token_free(tokens[i]);
                erase_and_free_string(strings[i]);
        }
}

/* Dispatch and helpers shared by backends */

TEST(enroll_check_order) {
        StoreToken t = {
                .role = SPIFFE_ROLE_TUNNELER,
                .expires_at = T0 + 10,
                .bound_id = (char *) "laptop",
        };
        uint8_t hash[TOKEN_HASH_SIZE], zero[TOKEN_HASH_SIZE] = {};
        const char *reason = NULL;
        TestAgent ta;

        memset(hash, 0x42, sizeof(hash));
        memcpy(t.secret_hash, hash, sizeof(hash));
        test_agent_init(&ta, SPIFFE_ROLE_TUNNELER, "laptop");

        ASSERT_EQ(store_enroll_check_token(&t, hash, &ta.a, T0, &reason), 0);
        ASSERT_NULL(reason);
        /* No token: the same answer as a wrong secret, even for the all-zero hash. */
        ASSERT_ERROR(store_enroll_check_token(NULL, zero, &ta.a, T0, &reason), ENOENT);
        ASSERT_STREQ(reason, "invalid token");
        ASSERT_ERROR(store_enroll_check_token(&t, zero, &ta.a, T0, &reason), ENOENT);
        ASSERT_STREQ(reason, "invalid token");
        ASSERT_ERROR(store_enroll_check_token(&t, hash, &ta.a, T0 + 10, &reason), EKEYEXPIRED);
        ASSERT_OK(store_enroll_check_token(&t, hash, &ta.a, T0 + 9, NULL));

        {
                StoreAgent existing = { .revoked_at = 0 };

                ASSERT_EQ(store_enroll_check_agent(NULL, &reason), 0);
                ASSERT_ERROR(store_enroll_check_agent(&existing, &reason), EEXIST);
                existing.revoked_at = T0;
                ASSERT_EQ(store_enroll_check_agent(&existing, &reason), 1);
        }

        ASSERT_TRUE(store_ca_state_transition_is_valid(STORE_CA_STAGED, STORE_CA_RETIRED));
        ASSERT_TRUE(store_ca_state_transition_is_valid(STORE_CA_ACTIVE, STORE_CA_ACTIVE));
        ASSERT_FALSE(store_ca_state_transition_is_valid(STORE_CA_RETIRING, STORE_CA_ACTIVE));
        ASSERT_FALSE(store_ca_state_transition_is_valid(STORE_CA_STAGED, _STORE_CA_STATE_MAX));
}

TEST(free_accepts_null) {
        ASSERT_NULL(store_free(NULL));
        ASSERT_NULL(store_token_free(NULL));
        ASSERT_NULL(store_agent_free(NULL));
        ASSERT_NULL(store_ca_free(NULL));
        ASSERT_NULL(store_audit_event_free(NULL));
        store_token_array_free(NULL, 0);
        store_agent_array_free(NULL, 0);
        store_ca_array_free(NULL, 0);
        store_audit_event_array_free(NULL, 0);
        ASSERT_NULL(store_network_free(NULL));
        ASSERT_NULL(store_resource_free(NULL));
        ASSERT_NULL(store_group_free(NULL));
        store_network_array_free(NULL, 0);
        store_resource_array_free(NULL, 0);
        store_group_array_free(NULL, 0);
        store_policy_array_free(NULL, 0);
        ASSERT_NULL(store_admin_free(NULL));
        ASSERT_NULL(store_api_token_free(NULL));
        ASSERT_NULL(store_session_free(NULL));
        store_admin_array_free(NULL, 0);
        store_api_token_array_free(NULL, 0);
        store_session_array_free(NULL, 0);
}
