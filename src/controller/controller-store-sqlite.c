/* SPDX-License-Identifier: Apache-2.0 */

/* The SQLite backend: one database file (0600, WAL, synchronous=FULL, foreign keys on), numbered
 * migrations applied at open, prepared statements with bound parameters only, and every write that reads
 * before it writes inside BEGIN IMMEDIATE, so that two processes racing on one token serialize on the
 * database's write lock instead of both seeing it unused. A busy database makes a call wait up to
 * BUSY_TIMEOUT_MSEC for the lock (SQLite's busy handler) before it fails with -EBUSY.
 *
 * The SQL sticks to what PostgreSQL also understands where that costs nothing: INTEGER/TEXT/BLOB columns,
 * times as INTEGER µs with NULL for "never", ON CONFLICT upserts, RETURNING, partial indexes. Lists of
 * strings live in child tables (token_groups, agent_groups, agent_labels) with a position column, so they
 * come back in the order they were given and can be queried. Token ids are stored as lower-case hex (what
 * listings show), hashes, keys and certificates as BLOBs. The policy model (networks, resources,
 * policy_groups, policies) is held together by foreign keys; its revision is a one-row counter bumped by
 * every write that changes who may reach what, inside that write's transaction. Admins own their API tokens
 * and sessions through ON DELETE CASCADE; their ids are lower-case hex like token ids. */

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "controller-store-internal.h"
#include "hexdecoct.h"
#include "log.h"
#include "string-util.h"
#include "strv.h"

/* How long a call waits for another connection's write transaction before failing with -EBUSY. */
#define BUSY_TIMEOUT_MSEC 5000
/* Longest audit query text built from fixed fragments. */
#define AUDIT_SQL_MAX 512
/* Integrity problems logged (at debug) before the rest are only counted. */
#define INTEGRITY_LOG_MAX 10

typedef struct SqliteStore {
        Store store;
        sqlite3 *db;
        unsigned n_migrations; /* the migrations this code applies and accepts */
} SqliteStore;

_Static_assert(offsetof(SqliteStore, store) == 0, "Store must come first");

static SqliteStore *SQLITE_STORE(Store *s) {
        return (SqliteStore *) s;
}

/* Numbered schema migrations: entry i takes the schema from version i to i + 1. Never edit a released
 * entry; append a new one. */
static const char *const migrations[] = {
        /* 1: everything controller-store.h needs. */
        "CREATE TABLE schema_migrations ("
        "        version INTEGER PRIMARY KEY NOT NULL,"
        "        applied_at INTEGER NOT NULL"
        ");"
        "CREATE TABLE meta ("
        "        key TEXT PRIMARY KEY NOT NULL,"
        "        value TEXT NOT NULL"
        ");"
        "CREATE TABLE tokens ("
        "        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),"
        "        secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),"
        "        role TEXT NOT NULL CHECK (role IN ('connector', 'tunneler')),"
        "        bound_id TEXT,"
        "        remote_network TEXT,"
        "        created_by TEXT NOT NULL,"
        "        created_at INTEGER NOT NULL,"
        "        expires_at INTEGER NOT NULL,"
        "        used_at INTEGER,"
        "        used_by TEXT,"
        "        revoked_at INTEGER"
        ");"
        "CREATE TABLE token_groups ("
        "        token_id TEXT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,"
        "        position INTEGER NOT NULL,"
        "        name TEXT NOT NULL,"
        "        PRIMARY KEY (token_id, position),"
        "        UNIQUE (token_id, name)"
        ");"
        "CREATE TABLE agents ("
        "        spiffe_id TEXT PRIMARY KEY NOT NULL,"
        "        role TEXT NOT NULL CHECK (role IN ('connector', 'tunneler')),"
        "        id TEXT NOT NULL,"
        "        public_key BLOB NOT NULL,"
        "        version TEXT,"
        "        private_ip TEXT,"
        "        remote_network TEXT,"
        "        via TEXT,"
        "        token_id TEXT NOT NULL REFERENCES tokens (id),"
        "        cert_serial TEXT,"
        "        cert_not_after INTEGER,"
        "        enrolled_at INTEGER NOT NULL,"
        "        last_seen INTEGER,"
        "        revoked_at INTEGER,"
        "        revocation_reason TEXT"
        ");"
        "CREATE TABLE agent_groups ("
        "        agent TEXT NOT NULL REFERENCES agents (spiffe_id) ON DELETE CASCADE,"
        "        position INTEGER NOT NULL,"
        "        name TEXT NOT NULL,"
        "        PRIMARY KEY (agent, position),"
        "        UNIQUE (agent, name)"
        ");"
        "CREATE TABLE agent_labels ("
        "        agent TEXT NOT NULL REFERENCES agents (spiffe_id) ON DELETE CASCADE,"
        "        position INTEGER NOT NULL,"
        "        key TEXT NOT NULL,"
        "        value TEXT NOT NULL,"
        "        PRIMARY KEY (agent, position),"
        "        UNIQUE (agent, key)"
        ");"
        "CREATE TABLE cas ("
        "        fingerprint BLOB PRIMARY KEY NOT NULL CHECK (length(fingerprint) = 32),"
        "        kind TEXT NOT NULL CHECK (kind IN ('root', 'issuing')),"
        "        state TEXT NOT NULL CHECK (state IN ('staged', 'active', 'retiring', 'retired')),"
        "        certificate BLOB NOT NULL,"
        "        sealed_key BLOB,"
        "        parent BLOB CHECK (parent IS NULL OR length(parent) = 32),"
        "        not_before INTEGER NOT NULL,"
        "        not_after INTEGER NOT NULL,"
        "        created_at INTEGER NOT NULL"
        ");"
        /* One active issuing CA at a time (controller-store.h), kept by the database itself. */
        "CREATE UNIQUE INDEX cas_one_active_issuing ON cas (kind) "
        "        WHERE kind = 'issuing' AND state = 'active';"
        "CREATE TABLE audit ("
        "        seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "        time INTEGER NOT NULL,"
        "        event TEXT NOT NULL,"
        "        actor TEXT NOT NULL,"
        "        subject TEXT,"
        "        detail TEXT"
        ");",

        /* 2: the dashboard's queries: audit by time range and by subject, agents by role. */
        "CREATE INDEX audit_time ON audit (time);"
        "CREATE INDEX audit_subject ON audit (subject, seq);"
        "CREATE INDEX agents_role ON agents (role, spiffe_id);",

        /* 3: the policy model (networks, resources, groups, policies) and its revision counter. Agents keep
         * their groups in agent_groups; a group row is what policies and membership edits refer to. */
        "CREATE TABLE policy_revision ("
        "        id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),"
        "        revision INTEGER NOT NULL CHECK (revision >= 0)"
        ");"
        "INSERT INTO policy_revision (id, revision) VALUES (1, 0);"
        "CREATE TABLE networks ("
        "        name TEXT PRIMARY KEY NOT NULL,"
        "        description TEXT,"
        "        created_at INTEGER NOT NULL"
        ");"
        "CREATE TABLE resources ("
        "        name TEXT PRIMARY KEY NOT NULL,"
        "        address TEXT NOT NULL,"
        "        protocol TEXT NOT NULL CHECK (protocol IN ('any', 'tcp', 'udp')),"
        "        ports TEXT NOT NULL,"
        "        remote_network TEXT NOT NULL REFERENCES networks (name),"
        "        alias TEXT,"
        "        created_at INTEGER NOT NULL,"
        "        updated_at INTEGER NOT NULL"
        ");"
        "CREATE INDEX resources_network ON resources (remote_network, name);"
        "CREATE TABLE policy_groups ("
        "        name TEXT PRIMARY KEY NOT NULL,"
        "        description TEXT,"
        "        created_at INTEGER NOT NULL"
        ");"
        "CREATE TABLE policies ("
        "        group_name TEXT NOT NULL REFERENCES policy_groups (name) ON DELETE CASCADE,"
        "        resource TEXT NOT NULL REFERENCES resources (name) ON DELETE CASCADE,"
        "        created_at INTEGER NOT NULL,"
        "        PRIMARY KEY (group_name, resource)"
        ");"
        "CREATE INDEX policies_resource ON policies (resource, group_name);"
        /* Members of a group, and connectors of a network, are looked up by value. */
        "CREATE INDEX agent_groups_name ON agent_groups (name, agent);"
        "CREATE INDEX agents_remote_network ON agents (remote_network) WHERE role = 'connector';",

        /* 4: administrators, their API tokens and their sessions. Only verifiers are stored: the argon2id
         * encoded string of a password, SHA-256 of token, session and CSRF secrets. An admin's tokens and
         * sessions go with it. A revoked token frees its name for a new one. */
        "CREATE TABLE admins ("
        "        name TEXT PRIMARY KEY NOT NULL,"
        "        password_hash TEXT NOT NULL CHECK (password_hash LIKE '$argon2id$%'),"
        "        created_by TEXT NOT NULL,"
        "        created_at INTEGER NOT NULL,"
        "        password_changed_at INTEGER NOT NULL,"
        "        disabled_at INTEGER,"
        "        last_login_at INTEGER"
        ");"
        "CREATE TABLE api_tokens ("
        "        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),"
        "        name TEXT NOT NULL,"
        "        admin TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE,"
        "        scope TEXT NOT NULL CHECK (scope IN ('read', 'read-write')),"
        "        secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),"
        "        created_at INTEGER NOT NULL,"
        "        expires_at INTEGER NOT NULL,"
        "        last_used_at INTEGER,"
        "        revoked_at INTEGER"
        ");"
        "CREATE INDEX api_tokens_admin ON api_tokens (admin, created_at);"
        "CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (admin, name) WHERE revoked_at IS NULL;"
        "CREATE TABLE sessions ("
        "        id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32),"
        "        admin TEXT NOT NULL REFERENCES admins (name) ON DELETE CASCADE,"
        "        secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),"
        "        csrf_hash BLOB NOT NULL CHECK (length(csrf_hash) = 32),"
        "        created_at INTEGER NOT NULL,"
        "        expires_at INTEGER NOT NULL,"
        "        last_seen_at INTEGER NOT NULL,"
        "        address TEXT,"
        "        user_agent TEXT"
        ");"
        "CREATE INDEX sessions_admin ON sessions (admin, last_seen_at);"
        "CREATE INDEX sessions_expires ON sessions (expires_at);",
};

unsigned store_sqlite_migrations_count(void) {
        return ELEMENTSOF(migrations);
}

/* Errors */

static int sqlite_errno(int rc, int sys_errno) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_CONSTRAINT:
                /* Validation runs before any SQL, so only a unique key can legitimately refuse a row. */
                if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
                        return -EEXIST;
                return -EINVAL;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CANTOPEN:
#ifdef SQLITE_CANTOPEN_SYMLINK
                if (rc == SQLITE_CANTOPEN_SYMLINK)
                        return -ELOOP;
#endif
                return sys_errno > 0 ? -sys_errno : -EIO;
        default:
                return -EIO;
        }
}

/* Maps an SQLite result code to a negative errno, logging SQLite's message at debug level. */
static int sqlite_error(SqliteStore *s, int rc, const char *what) {
        int sys_errno = sqlite3_system_errno(s->db);

        return log_debug_errno(sqlite_errno(rc, sys_errno), "SQLite: %s: %s (%d, errno %d)", what,
                               sqlite3_errmsg(s->db), rc, sys_errno);
}

static int sqlite_bind_error(SqliteStore *s) {
        return sqlite_error(s, sqlite3_extended_errcode(s->db), "binding parameters");
}

static int corrupt(sqlite3_stmt *st, int column) {
        return log_debug_errno(EUCLEAN, "SQLite: column '%s' holds an unexpected value.",
                               strna(sqlite3_column_name(st, column)));
}

/* Statements and transactions */

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize);

static int prepare(SqliteStore *s, const char *sql, sqlite3_stmt **ret) {
        int rc;

        rc = sqlite3_prepare_v2(s->db, sql, -1, ret, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, sql);
        return 0;
}

/* Steps once: 1 for a row, 0 when done. */
static int step(SqliteStore *s, sqlite3_stmt *st) {
        int rc;

        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return sqlite_error(s, rc, sqlite3_sql(st));
}

/* Runs a statement to completion, expecting no rows. */
static int step_done(SqliteStore *s, sqlite3_stmt *st) {
        int r;

        r = step(s, st);
        if (r < 0)
                return r;
        if (r > 0)
                return log_debug_errno(EIO, "SQLite: unexpected row from '%s'.", sqlite3_sql(st));
        return 0;
}

/* Steps to the one row a lookup expects: -ENOENT when there is none. */
static int step_row(SqliteStore *s, sqlite3_stmt *st) {
        int r;

        r = step(s, st);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        return 0;
}

/* Only for fixed SQL text without values (pragmas, transaction control, migration scripts). */
static int exec(SqliteStore *s, const char *sql) {
        int rc;

        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, sql);
        return 0;
}

/* A transaction guard: _cleanup_(tx_rollbackp) SqliteStore *tx = NULL; tx_begin(s, true, &tx); …
 * tx_commit(&tx). Leaving the scope without a commit rolls back. */
static void tx_rollbackp(SqliteStore **tx) {
        if (!*tx)
                return;
        /* SQLite may have rolled back already (e.g. after SQLITE_FULL or an I/O error). */
        if (!sqlite3_get_autocommit((*tx)->db))
                (void) exec(*tx, "ROLLBACK");
        *tx = NULL;
}

/* write: BEGIN IMMEDIATE, which takes the write lock now (waiting for it up to the busy timeout), so the
 * rows read inside cannot change before the transaction writes. Otherwise a deferred read transaction:
 * one consistent snapshot across several SELECTs. */
static int tx_begin(SqliteStore *s, bool write, SqliteStore **ret_tx) {
        int r;

        r = exec(s, write ? "BEGIN IMMEDIATE" : "BEGIN");
        if (r < 0)
                return r;
        *ret_tx = s;
        return 0;
}

static int tx_commit(SqliteStore **tx) {
        int r;

        r = exec(*tx, "COMMIT");
        if (r < 0)
                return r; /* the guard rolls back */
        *tx = NULL;
        return 0;
}

/* The last statement of a write transaction: runs it to completion, then commits. */
static int step_done_commit(SqliteStore *s, sqlite3_stmt *st, SqliteStore **tx) {
        int r;

        r = step_done(s, st);
        if (r < 0)
                return r;
        return tx_commit(tx);
}

/* Parameters. Bound values must outlive the step that uses them; every caller steps before returning. */

static int bind_text(sqlite3_stmt *st, int i, const char *s) {
        return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n) {
        assert(n <= INT_MAX);
        return p ? sqlite3_bind_blob(st, i, p, (int) n, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_time(sqlite3_stmt *st, int i, usec_t t) {
        return sqlite3_bind_int64(st, i, (sqlite3_int64) t);
}

/* Optional times: 0 ("never") is stored as NULL. */
static int bind_time_or_null(sqlite3_stmt *st, int i, usec_t t) {
        return t != 0 ? bind_time(st, i, t) : sqlite3_bind_null(st, i);
}

/* Prepares sql, whose only parameter ?1 is the text key (the common lookup by name or id). */
static int prepare_text(SqliteStore *s, const char *sql, const char *key, sqlite3_stmt **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, key) != SQLITE_OK)
                return sqlite_bind_error(s);
        *ret = TAKE_PTR(st);
        return 0;
}

/* Token ids are stored as lower-case hex. */
#define TOKEN_ID_HEX_SIZE (TOKEN_ID_SIZE * 2 + 1)

static const char *token_id_hex(const uint8_t id[TOKEN_ID_SIZE], char buf[static TOKEN_ID_HEX_SIZE]) {
        for (size_t i = 0; i < TOKEN_ID_SIZE; i++) {
                buf[i * 2] = hexchar(id[i] >> 4);
                buf[i * 2 + 1] = hexchar(id[i] & 0xf);
        }
        buf[TOKEN_ID_SIZE * 2] = '\0';
        return buf;
}

/* Columns. A value of the wrong type or shape means the file was altered behind our back: -EUCLEAN. */

static int column_text(sqlite3_stmt *st, int i, bool required, char **ret) {
        const unsigned char *p;
        char *t;
        int n;

        switch (sqlite3_column_type(st, i)) {
        case SQLITE_NULL:
                if (required)
                        return corrupt(st, i);
                *ret = NULL;
                return 0;
        case SQLITE_TEXT:
                break;
        default:
                return corrupt(st, i);
        }
        p = sqlite3_column_text(st, i);
        if (!p)
                return -ENOMEM;
        n = sqlite3_column_bytes(st, i);
        if (n <= 0 || n > STORE_STRING_MAX || memchr(p, 0, (size_t) n))
                return corrupt(st, i);
        t = strndup((const char *) p, (size_t) n);
        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

/* A BLOB of exactly size bytes; NULL gives zeroes when nullable. */
static int column_blob_fixed(sqlite3_stmt *st, int i, bool nullable, void *ret, size_t size) {
        const void *p;

        if (nullable && sqlite3_column_type(st, i) == SQLITE_NULL) {
                memset(ret, 0, size);
                return 0;
        }
        if (sqlite3_column_type(st, i) != SQLITE_BLOB)
                return corrupt(st, i);
        p = sqlite3_column_blob(st, i);
        if (!p || (size_t) sqlite3_column_bytes(st, i) != size)
                return corrupt(st, i);
        memcpy(ret, p, size);
        return 0;
}

static int column_blob(sqlite3_stmt *st, int i, bool required, uint8_t **ret, size_t *ret_size) {
        const void *p;
        uint8_t *b;
        int n;

        if (!required && sqlite3_column_type(st, i) == SQLITE_NULL) {
                *ret = NULL;
                *ret_size = 0;
                return 0;
        }
        if (sqlite3_column_type(st, i) != SQLITE_BLOB)
                return corrupt(st, i);
        p = sqlite3_column_blob(st, i);
        n = sqlite3_column_bytes(st, i);
        if (!p || n <= 0 || n > STORE_BLOB_MAX)
                return corrupt(st, i);
        b = malloc((size_t) n);
        if (!b)
                return -ENOMEM;
        memcpy(b, p, (size_t) n);
        *ret = b;
        *ret_size = (size_t) n;
        return 0;
}

/* NULL reads as 0 ("never") for optional times. */
static int column_time(sqlite3_stmt *st, int i, bool required, usec_t *ret) {
        sqlite3_int64 v;

        if (!required && sqlite3_column_type(st, i) == SQLITE_NULL) {
                *ret = 0;
                return 0;
        }
        if (sqlite3_column_type(st, i) != SQLITE_INTEGER)
                return corrupt(st, i);
        v = sqlite3_column_int64(st, i);
        if (v < 0)
                return corrupt(st, i);
        *ret = (usec_t) v;
        return 0;
}

static int column_role(sqlite3_stmt *st, int i, SpiffeRole *ret) {
        const char *p;
        SpiffeRole role;

        if (sqlite3_column_type(st, i) != SQLITE_TEXT)
                return corrupt(st, i);
        p = (const char *) sqlite3_column_text(st, i);
        if (!p)
                return -ENOMEM;
        role = spiffe_role_from_string(p);
        if (role != SPIFFE_ROLE_CONNECTOR && role != SPIFFE_ROLE_TUNNELER)
                return corrupt(st, i);
        *ret = role;
        return 0;
}

static int column_token_id(sqlite3_stmt *st, int i, uint8_t ret[TOKEN_ID_SIZE]) {
        uint8_t id[TOKEN_ID_SIZE];
        const char *p;

        if (sqlite3_column_type(st, i) != SQLITE_TEXT)
                return corrupt(st, i);
        p = (const char *) sqlite3_column_text(st, i);
        if (!p)
                return -ENOMEM;
        if (sqlite3_column_bytes(st, i) != TOKEN_ID_SIZE * 2)
                return corrupt(st, i);
        for (size_t k = 0; k < TOKEN_ID_SIZE; k++) {
                int hi = unhexchar(p[k * 2]), lo = unhexchar(p[k * 2 + 1]);

                if (hi < 0 || lo < 0)
                        return corrupt(st, i);
                id[k] = (uint8_t) (hi << 4 | lo);
        }
        memcpy(ret, id, TOKEN_ID_SIZE);
        return 0;
}

static int column_enum(sqlite3_stmt *st, int i, int (*from_string)(const char *s), int *ret) {
        const char *p;
        int v;

        if (sqlite3_column_type(st, i) != SQLITE_TEXT)
                return corrupt(st, i);
        p = (const char *) sqlite3_column_text(st, i);
        if (!p)
                return -ENOMEM;
        v = from_string(p);
        if (v < 0)
                return corrupt(st, i);
        *ret = v;
        return 0;
}

static int ca_kind_from_string(const char *s) {
        return store_ca_kind_from_string(s);
}

static int ca_state_from_string(const char *s) {
        return store_ca_state_from_string(s);
}

/* Opening and migrations */

/* The schema version: the highest applied migration, 0 for an empty database. Only reads. */
static int read_version(SqliteStore *s, unsigned *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *st2 = NULL;
        sqlite3_int64 v;
        int r;

        r = prepare(s,
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                    &st);
        if (r < 0)
                return r;
        r = step(s, st);
        if (r < 0)
                return r;
        if (r == 0)
                return -EIO;
        if (sqlite3_column_int64(st, 0) == 0) {
                *ret = 0;
                return 0;
        }

        r = prepare(s, "SELECT MAX(version) FROM schema_migrations", &st2);
        if (r < 0)
                return r;
        r = step(s, st2);
        if (r < 0)
                return r;
        if (r == 0)
                return -EIO;
        if (sqlite3_column_type(st2, 0) == SQLITE_NULL) {
                *ret = 0;
                return 0;
        }
        v = sqlite3_column_int64(st2, 0);
        if (sqlite3_column_type(st2, 0) != SQLITE_INTEGER || v < 0 || v > UINT_MAX)
                return corrupt(st2, 0);
        *ret = (unsigned) v;
        return 0;
}

static int migrate(SqliteStore *s, unsigned from) {
        int r;

        for (unsigned v = from + 1; v <= s->n_migrations; v++) {
                _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
                _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
                unsigned current;

                r = tx_begin(s, true, &tx);
                if (r < 0)
                        return r;
                /* Another process may have migrated while we waited for the lock. */
                r = read_version(s, &current);
                if (r < 0)
                        return r;
                if (current > s->n_migrations)
                        return log_debug_errno(EPROTONOSUPPORT,
                                               "SQLite: schema version %u is newer than this code (%u).",
                                               current, s->n_migrations);
                if (current >= v) {
                        r = tx_commit(&tx);
                        if (r < 0)
                                return r;
                        continue;
                }

                r = exec(s, migrations[v - 1]);
                if (r < 0)
                        return log_debug_errno(r, "SQLite: migration %u failed: %m", v);
                r = prepare(s, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", &st);
                if (r < 0)
                        return r;
                if (sqlite3_bind_int64(st, 1, v) != SQLITE_OK ||
                    bind_time(st, 2, now(CLOCK_REALTIME)) != SQLITE_OK)
                        return sqlite_bind_error(s);
                r = step_done(s, st);
                if (r < 0)
                        return r;
                r = tx_commit(&tx);
                if (r < 0)
                        return r;
                log_debug("SQLite: applied schema migration %u.", v);
        }
        return 0;
}

/* Creates the file 0600 before SQLite sees it, so it never exists with a wider mode (SQLite gives the
 * -wal and -shm files the mode of the database). An existing file is left as it is. */
static int file_create(const char *path) {
        _cleanup_close_ int fd = -EBADF;

        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0) {
                if (errno == EEXIST)
                        return 0;
                return log_debug_errno(errno, "SQLite: failed to create '%s': %m", path);
        }
        return 1;
}

static int set_journal_mode_wal(SqliteStore *s) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        const char *mode;
        int r;

        r = prepare(s, "PRAGMA journal_mode = WAL", &st);
        if (r < 0)
                return r;
        r = step(s, st);
        if (r < 0)
                return r;
        mode = r > 0 ? (const char *) sqlite3_column_text(st, 0) : NULL;
        if (!mode || strcasecmp(mode, "wal") != 0)
                return log_debug_errno(EOPNOTSUPP, "SQLite: cannot switch to WAL mode (got '%s').",
                                       strna(mode));
        return 0;
}

static void sqlite_store_free(Store *store) {
        SqliteStore *s = SQLITE_STORE(store);

        if (s->db)
                (void) sqlite3_close_v2(s->db);
        free(s);
}

static const StoreVtable sqlite_vtable;

int store_open_sqlite_migrations(const char *path, unsigned n_migrations, Store **ret) {
        _cleanup_(store_freep) Store *store = NULL;
        SqliteStore *s;
        unsigned version;
        int flags, rc, r;

        assert(path);
        assert(ret);

        if (isempty(path))
                return -EINVAL;
        if (n_migrations == STORE_SQLITE_MIGRATIONS_ALL)
                n_migrations = ELEMENTSOF(migrations);
        if (n_migrations > ELEMENTSOF(migrations))
                return -EINVAL;

        r = file_create(path);
        if (r < 0)
                return r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->store.vtable = &sqlite_vtable;
        s->n_migrations = n_migrations;
        store = &s->store;

        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
#ifdef SQLITE_OPEN_NOFOLLOW
        flags |= SQLITE_OPEN_NOFOLLOW;
#endif
        rc = sqlite3_open_v2(path, &s->db, flags, NULL);
        if (!s->db)
                return -ENOMEM;
        (void) sqlite3_extended_result_codes(s->db, 1);
        if (rc != SQLITE_OK)
                return sqlite_error(s, sqlite3_extended_errcode(s->db), "open");

        rc = sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MSEC);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, "busy timeout");
        /* Hardening: no writable_schema tricks, no functions with side effects run from schema objects. */
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, "defensive mode");
#ifdef SQLITE_DBCONFIG_TRUSTED_SCHEMA
        rc = sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
        if (rc != SQLITE_OK)
                return sqlite_error(s, rc, "untrusted schema");
#endif
        r = exec(s, "PRAGMA foreign_keys = ON");
        if (r < 0)
                return r;

        /* Before anything that could write (journal mode, migrations): a newer database stays untouched. */
        r = read_version(s, &version);
        if (r < 0)
                return r;
        if (version > n_migrations)
                return log_debug_errno(EPROTONOSUPPORT,
                                       "SQLite: '%s' has schema version %u, newer than this code (%u).", path,
                                       version, n_migrations);

        r = set_journal_mode_wal(s);
        if (r < 0)
                return r;
        r = exec(s, "PRAGMA synchronous = FULL");
        if (r < 0)
                return r;
        r = migrate(s, version);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(store);
        return 0;
}

int store_open_sqlite(const char *path, Store **ret) {
        return store_open_sqlite_migrations(path, STORE_SQLITE_MIGRATIONS_ALL, ret);
}

static int sqlite_get_schema_version(Store *store, unsigned *ret) {
        return read_version(SQLITE_STORE(store), ret);
}

/* Metadata */

static int sqlite_meta_get(Store *store, const char *key, char **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = prepare_text(s, "SELECT value FROM meta WHERE key = ?1", key, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return column_text(st, 0, true, ret);
}

static int sqlite_meta_set(Store *store, const char *key, const char *value) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = prepare(s,
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, key) != SQLITE_OK || bind_text(st, 2, value) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done(s, st);
}

/* String lists in child tables */

/* Loads the names (or, with two columns, "key=value" pairs) that sql selects for key, in order. */
static int strv_load(SqliteStore *s, const char *sql, const char *key, size_t max, char ***ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_strv_free_ char **l = NULL;
        size_t n = 0;
        int r;

        r = prepare_text(s, sql, key, &st);
        if (r < 0)
                return r;
        for (;;) {
                _cleanup_free_ char *a = NULL, *b = NULL;

                r = step(s, st);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (n >= max)
                        return log_debug_errno(EUCLEAN, "SQLite: more than %zu entries for '%s'.", max, key);
                r = column_text(st, 0, true, &a);
                if (r < 0)
                        return r;
                if (sqlite3_column_count(st) > 1) {
                        r = column_text(st, 1, true, &b);
                        if (r < 0)
                                return r;
                        r = strextend(&a, "=", b, NULL);
                        if (r < 0)
                                return r;
                }
                r = strv_consume(&l, TAKE_PTR(a));
                if (r < 0)
                        return r;
                n++;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Inserts (key, position, entry) for each entry; labels split at the first '='. */
static int strv_store(SqliteStore *s, const char *sql, const char *key, char *const *l, bool labels) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int position = 0, r;

        if (strv_length(l) == 0)
                return 0;
        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        STRV_FOREACH(i, l) {
                const char *eq = labels ? strchr(*i, '=') : NULL;

                assert(!labels || eq);
                if (sqlite3_reset(st) != SQLITE_OK || bind_text(st, 1, key) != SQLITE_OK ||
                    sqlite3_bind_int(st, 2, position++) != SQLITE_OK)
                        return sqlite_bind_error(s);
                if (labels) {
                        if (sqlite3_bind_text(st, 3, *i, (int) (eq - *i), SQLITE_STATIC) != SQLITE_OK ||
                            bind_text(st, 4, eq + 1) != SQLITE_OK)
                                return sqlite_bind_error(s);
                } else if (bind_text(st, 3, *i) != SQLITE_OK)
                        return sqlite_bind_error(s);
                r = step_done(s, st);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Listings */

/* How query_list() makes and frees the elements of one kind of list (an array of pointers). The functions
 * take void pointers so that one loop serves every kind; DEFINE_ROW_LIST() writes the typed adapters, so
 * that nothing is called through a function pointer of another type. */
typedef struct RowList {
        size_t element_size;
        int (*from_row)(SqliteStore *s, sqlite3_stmt *st, void *ret_element);
        void (*array_free)(void *array, size_t n);
} RowList;

#define DEFINE_ROW_LIST(name, type, from_row_func, array_free_func)                                      \
        static int name##_from_row_any(SqliteStore *s, sqlite3_stmt *st, void *ret_element) {           \
                return from_row_func(s, st, (type **) ret_element);                                     \
        }                                                                                               \
        static void name##_array_free_any(void *array, size_t n) {                                      \
                array_free_func((type **) array, n);                                                    \
        }                                                                                               \
        static const RowList name = {                                                                   \
                .element_size = sizeof(type *),                                                         \
                .from_row = name##_from_row_any,                                                        \
                .array_free = name##_array_free_any,                                                    \
        }

/* Steps st to its end, making one element per row; more than max rows is -EIO. With tx, the snapshot the
 * rows were read in is committed before the list is handed out. On failure what was made is freed and
 * *ret is untouched. */
static int query_list(SqliteStore *s, sqlite3_stmt *st, const RowList *kind, size_t max, SqliteStore **tx,
                      void **ret, size_t *ret_n) {
        void *a = NULL;
        size_t n = 0, allocated = 0;
        int r;

        for (;;) {
                r = step(s, st);
                if (r <= 0)
                        break;
                if (n >= max) {
                        r = -EIO;
                        break;
                }
                r = store_array_grow(&a, &allocated, n, kind->element_size);
                if (r < 0)
                        break;
                r = kind->from_row(s, st, (uint8_t *) a + n * kind->element_size);
                if (r < 0)
                        break;
                n++;
        }
        if (r >= 0 && tx) {
                sqlite3_reset(st);
                r = tx_commit(tx);
        }
        if (r < 0) {
                kind->array_free(a, n);
                return r;
        }
        *ret = a;
        *ret_n = n;
        return 0;
}

/* The policy revision */

/* The migration that adds the policy model. A store opened as if by older code (the conformance tests'
 * opener) has no revision to bump. */
#define MIGRATION_POLICY 3U

/* Inside a write transaction: the revision moves on with the change it describes, or not at all. */
static int policy_revision_bump(SqliteStore *s) {
        int r;

        if (s->n_migrations < MIGRATION_POLICY)
                return 0;
        r = exec(s, "UPDATE policy_revision SET revision = revision + 1 WHERE id = 1");
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) != 1)
                return log_debug_errno(EUCLEAN, "SQLite: the policy revision row is missing.");
        return 0;
}

/* Tokens */

#define TOKEN_COLUMNS                                                                                     \
        "id, secret_hash, role, bound_id, remote_network, created_by, created_at, expires_at, used_at, " \
        "used_by, revoked_at"
#define TOKEN_GROUPS_SELECT "SELECT name FROM token_groups WHERE token_id = ?1 ORDER BY position"

static int token_from_row(SqliteStore *s, sqlite3_stmt *st, StoreToken **ret) {
        _cleanup_(store_token_freep) StoreToken *t = NULL;
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        if ((r = column_token_id(st, 0, t->id)) < 0 ||
            (r = column_blob_fixed(st, 1, false, t->secret_hash, TOKEN_HASH_SIZE)) < 0 ||
            (r = column_role(st, 2, &t->role)) < 0 ||
            (r = column_text(st, 3, false, &t->bound_id)) < 0 ||
            (r = column_text(st, 4, false, &t->remote_network)) < 0 ||
            (r = column_text(st, 5, true, &t->created_by)) < 0 ||
            (r = column_time(st, 6, true, &t->created_at)) < 0 ||
            (r = column_time(st, 7, true, &t->expires_at)) < 0 ||
            (r = column_time(st, 8, false, &t->used_at)) < 0 ||
            (r = column_text(st, 9, false, &t->used_by)) < 0 ||
            (r = column_time(st, 10, false, &t->revoked_at)) < 0)
                return r;
        r = strv_load(s, TOKEN_GROUPS_SELECT, token_id_hex(t->id, hex), STORE_GROUPS_MAX, &t->groups);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

/* -ENOENT when there is no such token. */
static int token_load(SqliteStore *s, const uint8_t id[TOKEN_ID_SIZE], StoreToken **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = prepare_text(s, "SELECT " TOKEN_COLUMNS " FROM tokens WHERE id = ?1", token_id_hex(id, hex),
                         &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return token_from_row(s, st, ret);
}

static int sqlite_token_create(Store *store, const StoreToken *t) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        token_id_hex(t->id, hex);
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s,
                    "INSERT INTO tokens (id, secret_hash, role, bound_id, remote_network, created_by, "
                    "created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, hex) != SQLITE_OK ||
            bind_blob(st, 2, t->secret_hash, TOKEN_HASH_SIZE) != SQLITE_OK ||
            bind_text(st, 3, spiffe_role_to_string(t->role)) != SQLITE_OK ||
            bind_text(st, 4, t->bound_id) != SQLITE_OK || bind_text(st, 5, t->remote_network) != SQLITE_OK ||
            bind_text(st, 6, t->created_by) != SQLITE_OK || bind_time(st, 7, t->created_at) != SQLITE_OK ||
            bind_time(st, 8, t->expires_at) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_done(s, st);
        if (r < 0)
                return r;
        r = strv_store(s, "INSERT INTO token_groups (token_id, position, name) VALUES (?1, ?2, ?3)", hex,
                       t->groups, false);
        if (r < 0)
                return r;
        return tx_commit(&tx);
}

static int sqlite_token_get(Store *store, const uint8_t id[TOKEN_ID_SIZE], StoreToken **ret) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(store_token_freep) StoreToken *t = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = token_load(s, id, &t);
        if (r < 0)
                return r;
        r = tx_commit(&tx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

DEFINE_ROW_LIST(token_rows, StoreToken, token_from_row, store_token_array_free);

static int sqlite_token_list(Store *store, StoreToken ***ret, size_t *ret_n) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = prepare(s, "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY created_at, id", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &token_rows, SIZE_MAX, &tx, (void **) ret, ret_n);
}

static int sqlite_token_revoke(Store *store, const uint8_t id[TOKEN_ID_SIZE], usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_(store_token_freep) StoreToken *t = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = token_load(s, id, &t);
        if (r < 0)
                return r;
        if (t->used_at != 0 || t->revoked_at != 0)
                return -EALREADY;
        r = prepare(s, "UPDATE tokens SET revoked_at = ?1 WHERE id = ?2", &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK || bind_text(st, 2, token_id_hex(id, hex)) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done_commit(s, st, &tx);
}

/* Agents */

#define AGENT_COLUMNS                                                                                    \
        "spiffe_id, role, id, public_key, version, private_ip, remote_network, via, token_id, "         \
        "cert_serial, cert_not_after, enrolled_at, last_seen, revoked_at, revocation_reason"
#define AGENT_GROUPS_SELECT "SELECT name FROM agent_groups WHERE agent = ?1 ORDER BY position"
#define AGENT_LABELS_SELECT "SELECT key, value FROM agent_labels WHERE agent = ?1 ORDER BY position"

static int agent_from_row(SqliteStore *s, sqlite3_stmt *st, StoreAgent **ret) {
        _cleanup_(store_agent_freep) StoreAgent *a = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        if ((r = column_text(st, 0, true, &a->spiffe_id)) < 0 ||
            (r = column_role(st, 1, &a->role)) < 0 ||
            (r = column_text(st, 2, true, &a->id)) < 0 ||
            (r = column_blob(st, 3, true, &a->public_key, &a->public_key_size)) < 0 ||
            (r = column_text(st, 4, false, &a->version)) < 0 ||
            (r = column_text(st, 5, false, &a->private_ip)) < 0 ||
            (r = column_text(st, 6, false, &a->remote_network)) < 0 ||
            (r = column_text(st, 7, false, &a->via)) < 0 ||
            (r = column_token_id(st, 8, a->token_id)) < 0 ||
            (r = column_text(st, 9, false, &a->cert_serial)) < 0 ||
            (r = column_time(st, 10, false, &a->cert_not_after)) < 0 ||
            (r = column_time(st, 11, true, &a->enrolled_at)) < 0 ||
            (r = column_time(st, 12, false, &a->last_seen)) < 0 ||
            (r = column_time(st, 13, false, &a->revoked_at)) < 0 ||
            (r = column_text(st, 14, false, &a->revocation_reason)) < 0)
                return r;
        r = strv_load(s, AGENT_GROUPS_SELECT, a->spiffe_id, STORE_GROUPS_MAX, &a->groups);
        if (r < 0)
                return r;
        r = strv_load(s, AGENT_LABELS_SELECT, a->spiffe_id, STORE_LABELS_MAX, &a->labels);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

/* -ENOENT when there is no such agent. */
static int agent_load(SqliteStore *s, const char *spiffe_id, StoreAgent **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = prepare_text(s, "SELECT " AGENT_COLUMNS " FROM agents WHERE spiffe_id = ?1", spiffe_id, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return agent_from_row(s, st, ret);
}

/* The revocation state of an agent: -ENOENT, else 0 and *ret_revoked_at (0: not revoked). */
static int agent_revoked_at(SqliteStore *s, const char *spiffe_id, usec_t *ret_revoked_at) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = prepare_text(s, "SELECT revoked_at FROM agents WHERE spiffe_id = ?1", spiffe_id, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return column_time(st, 0, false, ret_revoked_at);
}

static int agent_delete(SqliteStore *s, const char *spiffe_id) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        /* Groups and labels go with it (ON DELETE CASCADE). */
        r = prepare_text(s, "DELETE FROM agents WHERE spiffe_id = ?1", spiffe_id, &st);
        if (r < 0)
                return r;
        return step_done(s, st);
}

/* The new agent row: what the agent supplied, its network and groups from the token. */
static int agent_insert(SqliteStore *s, const StoreAgent *a, const StoreToken *t, usec_t now) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = prepare(s,
                    "INSERT INTO agents (spiffe_id, role, id, public_key, version, private_ip, "
                    "remote_network, via, token_id, cert_serial, cert_not_after, enrolled_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, a->spiffe_id) != SQLITE_OK ||
            bind_text(st, 2, spiffe_role_to_string(a->role)) != SQLITE_OK ||
            bind_text(st, 3, a->id) != SQLITE_OK ||
            bind_blob(st, 4, a->public_key, a->public_key_size) != SQLITE_OK ||
            bind_text(st, 5, a->version) != SQLITE_OK || bind_text(st, 6, a->private_ip) != SQLITE_OK ||
            bind_text(st, 7, t->remote_network) != SQLITE_OK || bind_text(st, 8, a->via) != SQLITE_OK ||
            bind_text(st, 9, token_id_hex(t->id, hex)) != SQLITE_OK ||
            bind_text(st, 10, a->cert_serial) != SQLITE_OK ||
            bind_time_or_null(st, 11, a->cert_not_after) != SQLITE_OK || bind_time(st, 12, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_done(s, st);
        if (r < 0)
                return r;
        r = strv_store(s, "INSERT INTO agent_groups (agent, position, name) VALUES (?1, ?2, ?3)",
                       a->spiffe_id, t->groups, false);
        if (r < 0)
                return r;
        return strv_store(s, "INSERT INTO agent_labels (agent, position, key, value) VALUES (?1, ?2, ?3, ?4)",
                          a->spiffe_id, a->labels, true);
}

static int token_mark_used(SqliteStore *s, const uint8_t id[TOKEN_ID_SIZE], const char *spiffe_id,
                           usec_t now) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        /* The WHERE clause repeats the checks: a second line of defence should the locking ever fail. */
        r = prepare(s,
                    "UPDATE tokens SET used_at = ?1, used_by = ?2 "
                    "WHERE id = ?3 AND used_at IS NULL AND revoked_at IS NULL",
                    &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK || bind_text(st, 2, spiffe_id) != SQLITE_OK ||
            bind_text(st, 3, token_id_hex(id, hex)) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_done(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) != 1)
                return -EALREADY;
        return 0;
}

static int sqlite_enroll(Store *store, const uint8_t token_id[TOKEN_ID_SIZE],
                         const uint8_t secret_hash[TOKEN_HASH_SIZE], const StoreAgent *agent, usec_t now,
                         StoreToken **ret_token, const char **ret_reason) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(store_token_freep) StoreToken *token = NULL;
        _cleanup_(store_agent_freep) StoreAgent *existing = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        bool replace;
        int r;

        /* The write lock first: the token is read, checked and consumed by one writer at a time. */
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;

        r = token_load(s, token_id, &token);
        if (r < 0 && r != -ENOENT)
                return r;
        r = store_enroll_check_token(token, secret_hash, agent, now, ret_reason);
        if (r < 0)
                return r;

        r = agent_load(s, agent->spiffe_id, &existing);
        if (r < 0 && r != -ENOENT)
                return r;
        r = store_enroll_check_agent(existing, ret_reason);
        if (r < 0)
                return r;
        replace = r > 0;

        if (replace) {
                r = agent_delete(s, agent->spiffe_id);
                if (r < 0)
                        return r;
        }
        r = agent_insert(s, agent, token, now);
        if (r < 0)
                return r;
        r = token_mark_used(s, token_id, agent->spiffe_id, now);
        if (r == -EALREADY)
                *ret_reason = STORE_REASON_USED;
        if (r < 0)
                return r;
        /* A tunneler brings its groups, and so access, with it. */
        if (agent->role == SPIFFE_ROLE_TUNNELER) {
                r = policy_revision_bump(s);
                if (r < 0)
                        return r;
        }
        r = tx_commit(&tx);
        if (r < 0)
                return r;

        log_debug("SQLite: token consumed by '%s'%s.", agent->spiffe_id,
                  replace ? ", replacing a revoked agent" : "");
        if (ret_token)
                *ret_token = TAKE_PTR(token);
        return replace;
}

static int sqlite_agent_get(Store *store, const char *spiffe_id, StoreAgent **ret) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(store_agent_freep) StoreAgent *a = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = agent_load(s, spiffe_id, &a);
        if (r < 0)
                return r;
        r = tx_commit(&tx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

DEFINE_ROW_LIST(agent_rows, StoreAgent, agent_from_row, store_agent_array_free);

static int sqlite_agent_list(Store *store, SpiffeRole role, StoreAgent ***ret, size_t *ret_n) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        if (role == _SPIFFE_ROLE_INVALID)
                r = prepare(s, "SELECT " AGENT_COLUMNS " FROM agents ORDER BY spiffe_id", &st);
        else
                r = prepare_text(s,
                                 "SELECT " AGENT_COLUMNS " FROM agents WHERE role = ?1 ORDER BY spiffe_id",
                                 spiffe_role_to_string(role), &st);
        if (r < 0)
                return r;
        return query_list(s, st, &agent_rows, SIZE_MAX, &tx, (void **) ret, ret_n);
}

/* Opens a write transaction in which spiffe_id is known to exist and not be revoked (else -ENOENT, or
 * revoked_error): checked and then written under one write lock, so a revocation cannot slip in between. */
static int tx_begin_live_agent(SqliteStore *s, const char *spiffe_id, int revoked_error, SqliteStore **tx) {
        usec_t revoked_at;
        int r;

        r = tx_begin(s, true, tx);
        if (r < 0)
                return r;
        r = agent_revoked_at(s, spiffe_id, &revoked_at);
        if (r < 0)
                return r;
        return revoked_at != 0 ? revoked_error : 0;
}

static int sqlite_agent_update_certificate(Store *store, const char *spiffe_id, const uint8_t *public_key,
                                           size_t public_key_size, const char *cert_serial,
                                           usec_t cert_not_after) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin_live_agent(s, spiffe_id, -EKEYREVOKED, &tx);
        if (r < 0)
                return r;
        r = prepare(s,
                    "UPDATE agents SET public_key = ?1, cert_serial = ?2, cert_not_after = ?3 "
                    "WHERE spiffe_id = ?4",
                    &st);
        if (r < 0)
                return r;
        if (bind_blob(st, 1, public_key, public_key_size) != SQLITE_OK ||
            bind_text(st, 2, cert_serial) != SQLITE_OK || bind_time(st, 3, cert_not_after) != SQLITE_OK ||
            bind_text(st, 4, spiffe_id) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done_commit(s, st, &tx);
}

static int sqlite_agent_revoke(Store *store, const char *spiffe_id, const char *reason, usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin_live_agent(s, spiffe_id, -EALREADY, &tx);
        if (r < 0)
                return r;
        r = prepare(s, "UPDATE agents SET revoked_at = ?1, revocation_reason = ?2 WHERE spiffe_id = ?3", &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK || bind_text(st, 2, reason) != SQLITE_OK ||
            bind_text(st, 3, spiffe_id) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_done(s, st);
        if (r < 0)
                return r;
        /* A revoked agent loses its access (and a revoked connector its network) in the same snapshot. */
        r = policy_revision_bump(s);
        if (r < 0)
                return r;
        return tx_commit(&tx);
}

static int sqlite_agents_touch(Store *store, const StoreHeartbeat *hb, size_t n) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int updated = 0, r;

        assert(n <= STORE_TOUCH_BATCH_MAX);

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s,
                    "UPDATE agents SET last_seen = ?1, version = COALESCE(?2, version), "
                    "private_ip = COALESCE(?3, private_ip), via = COALESCE(?4, via) "
                    "WHERE spiffe_id = ?5 AND revoked_at IS NULL",
                    &st);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (sqlite3_reset(st) != SQLITE_OK || bind_time(st, 1, hb[i].last_seen) != SQLITE_OK ||
                    bind_text(st, 2, hb[i].version) != SQLITE_OK ||
                    bind_text(st, 3, hb[i].private_ip) != SQLITE_OK ||
                    bind_text(st, 4, hb[i].via) != SQLITE_OK ||
                    bind_text(st, 5, hb[i].spiffe_id) != SQLITE_OK)
                        return sqlite_bind_error(s);
                r = step_done(s, st);
                if (r < 0)
                        return r;
                updated += sqlite3_changes(s->db);
        }
        sqlite3_reset(st);
        r = tx_commit(&tx);
        if (r < 0)
                return r;
        return updated;
}

/* Policy */

/* Whether sql, whose parameters ?1 and (optionally) ?2 are key and key2, returns a row. */
static int row_exists(SqliteStore *s, const char *sql, const char *key, const char *key2) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = prepare_text(s, sql, key, &st);
        if (r < 0)
                return r;
        if (key2 && bind_text(st, 2, key2) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step(s, st);
}

/* -ENOENT unless sql finds key. what names the kind of row, for the debug log. */
static int require_row(SqliteStore *s, const char *sql, const char *key, const char *what) {
        int r;

        r = row_exists(s, sql, key, NULL);
        if (r < 0)
                return r;
        if (r == 0)
                return log_debug_errno(ENOENT, "SQLite: no %s '%s'.", what, key);
        return 0;
}

#define NETWORK_EXISTS "SELECT 1 FROM networks WHERE name = ?1"
#define RESOURCE_EXISTS "SELECT 1 FROM resources WHERE name = ?1"
#define GROUP_EXISTS "SELECT 1 FROM policy_groups WHERE name = ?1"

/* The last statement of a policy mutation: runs it, expects it to have changed a row (else -ENOENT, the
 * row it was meant for is not there), bumps the revision and commits. */
static int step_changed_commit(SqliteStore *s, sqlite3_stmt *st, SqliteStore **tx) {
        int r;

        r = step_done(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return -ENOENT;
        r = policy_revision_bump(s);
        if (r < 0)
                return r;
        return tx_commit(tx);
}

/* A network or a group: the same three columns in their own tables. */
static int named_insert(SqliteStore *s, const char *sql, const char *name, const char *description,
                        usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, name) != SQLITE_OK || bind_text(st, 2, description) != SQLITE_OK ||
            bind_time(st, 3, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        /* A duplicate name is a primary key conflict: -EEXIST. */
        return step_changed_commit(s, st, &tx);
}

static int sqlite_network_create(Store *store, const char *name, const char *description, usec_t now) {
        return named_insert(SQLITE_STORE(store),
                            "INSERT INTO networks (name, description, created_at) VALUES (?1, ?2, ?3)", name,
                            description, now);
}

static int sqlite_network_delete(Store *store, const char *name) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = require_row(s, NETWORK_EXISTS, name, "network");
        if (r < 0)
                return r;
        /* Revoked connectors keep their row (and network) for the record; they serve nothing. */
        r = row_exists(s,
                       "SELECT 1 WHERE EXISTS (SELECT 1 FROM resources WHERE remote_network = ?1) "
                       "OR EXISTS (SELECT 1 FROM agents WHERE role = 'connector' AND remote_network = ?1 "
                       "AND revoked_at IS NULL)",
                       name, NULL);
        if (r < 0)
                return r;
        if (r > 0)
                return log_debug_errno(EBUSY, "SQLite: network '%s' still has resources or connectors.",
                                       name);
        r = prepare_text(s, "DELETE FROM networks WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        return step_changed_commit(s, st, &tx);
}

static int network_from_row(SqliteStore *s, sqlite3_stmt *st, StoreNetwork **ret) {
        _cleanup_(store_network_freep) StoreNetwork *n = NULL;
        int r;

        n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        if ((r = column_text(st, 0, true, &n->name)) < 0 ||
            (r = column_text(st, 1, false, &n->description)) < 0 ||
            (r = column_time(st, 2, true, &n->created_at)) < 0)
                return r;
        *ret = TAKE_PTR(n);
        return 0;
}

DEFINE_ROW_LIST(network_rows, StoreNetwork, network_from_row, store_network_array_free);

static int sqlite_network_list(Store *store, StoreNetwork ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = prepare(s, "SELECT name, description, created_at FROM networks ORDER BY name", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &network_rows, SIZE_MAX, NULL, (void **) ret, ret_n);
}

#define RESOURCE_COLUMNS "name, address, protocol, ports, remote_network, alias, created_at, updated_at"
#define RESOURCE_GROUPS_SELECT "SELECT group_name FROM policies WHERE resource = ?1 ORDER BY group_name"

static int resource_from_row(SqliteStore *s, sqlite3_stmt *st, StoreResource **ret) {
        _cleanup_(store_resource_freep) StoreResource *res = NULL;
        int r;

        res = calloc(1, sizeof(*res));
        if (!res)
                return -ENOMEM;
        if ((r = column_text(st, 0, true, &res->name)) < 0 ||
            (r = column_text(st, 1, true, &res->address)) < 0 ||
            (r = column_text(st, 2, true, &res->protocol)) < 0 ||
            (r = column_text(st, 3, true, &res->ports)) < 0 ||
            (r = column_text(st, 4, true, &res->remote_network)) < 0 ||
            (r = column_text(st, 5, false, &res->alias)) < 0 ||
            (r = column_time(st, 6, true, &res->created_at)) < 0 ||
            (r = column_time(st, 7, true, &res->updated_at)) < 0)
                return r;
        r = strv_load(s, RESOURCE_GROUPS_SELECT, res->name, STORE_LIST_MAX, &res->groups);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(res);
        return 0;
}

/* Binds the columns create and update share: ?1 name … ?6 alias. */
static int resource_bind(SqliteStore *s, sqlite3_stmt *st, const StoreResource *res) {
        if (bind_text(st, 1, res->name) != SQLITE_OK || bind_text(st, 2, res->address) != SQLITE_OK ||
            bind_text(st, 3, res->protocol) != SQLITE_OK || bind_text(st, 4, res->ports) != SQLITE_OK ||
            bind_text(st, 5, res->remote_network) != SQLITE_OK || bind_text(st, 6, res->alias) != SQLITE_OK)
                return sqlite_bind_error(s);
        return 0;
}

static int sqlite_resource_create(Store *store, const StoreResource *res, usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = row_exists(s, RESOURCE_EXISTS, res->name, NULL);
        if (r < 0)
                return r;
        if (r > 0)
                return log_debug_errno(EEXIST, "SQLite: resource '%s' exists already.", res->name);
        r = require_row(s, NETWORK_EXISTS, res->remote_network, "network");
        if (r < 0)
                return r;
        r = prepare(s,
                    "INSERT INTO resources (" RESOURCE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    &st);
        if (r < 0)
                return r;
        r = resource_bind(s, st, res);
        if (r < 0)
                return r;
        if (bind_time(st, 7, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_changed_commit(s, st, &tx);
}

static int sqlite_resource_update(Store *store, const StoreResource *res, usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = require_row(s, RESOURCE_EXISTS, res->name, "resource");
        if (r < 0)
                return r;
        r = require_row(s, NETWORK_EXISTS, res->remote_network, "network");
        if (r < 0)
                return r;
        /* The name, the creation time and the policies stay. */
        r = prepare(s,
                    "UPDATE resources SET address = ?2, protocol = ?3, ports = ?4, remote_network = ?5, "
                    "alias = ?6, updated_at = ?7 WHERE name = ?1",
                    &st);
        if (r < 0)
                return r;
        r = resource_bind(s, st, res);
        if (r < 0)
                return r;
        if (bind_time(st, 7, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_changed_commit(s, st, &tx);
}

static int sqlite_resource_delete(Store *store, const char *name) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        /* Its policies go with it (ON DELETE CASCADE). */
        r = prepare_text(s, "DELETE FROM resources WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        return step_changed_commit(s, st, &tx);
}

static int sqlite_resource_get(Store *store, const char *name, StoreResource **ret) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_(store_resource_freep) StoreResource *res = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s, "SELECT " RESOURCE_COLUMNS " FROM resources WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        r = resource_from_row(s, st, &res);
        if (r < 0)
                return r;
        sqlite3_reset(st);
        r = tx_commit(&tx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(res);
        return 0;
}

DEFINE_ROW_LIST(resource_rows, StoreResource, resource_from_row, store_resource_array_free);

static int sqlite_resource_list(Store *store, const char *network, StoreResource ***ret, size_t *ret_n) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        if (network)
                r = prepare_text(s,
                                 "SELECT " RESOURCE_COLUMNS " FROM resources WHERE remote_network = ?1 "
                                 "ORDER BY name",
                                 network, &st);
        else
                r = prepare(s, "SELECT " RESOURCE_COLUMNS " FROM resources ORDER BY name", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &resource_rows, SIZE_MAX, &tx, (void **) ret, ret_n);
}

static int sqlite_group_create(Store *store, const char *name, const char *description, usec_t now) {
        return named_insert(SQLITE_STORE(store),
                            "INSERT INTO policy_groups (name, description, created_at) VALUES (?1, ?2, ?3)",
                            name, description, now);
}

static int sqlite_group_delete(Store *store, const char *name) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *members = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = require_row(s, GROUP_EXISTS, name, "group");
        if (r < 0)
                return r;
        /* Out of every agent's groups in the same transaction, so no agent keeps a group that is gone. */
        r = prepare_text(s, "DELETE FROM agent_groups WHERE name = ?1", name, &members);
        if (r < 0)
                return r;
        r = step_done(s, members);
        if (r < 0)
                return r;
        /* Its policies go with it (ON DELETE CASCADE). */
        r = prepare_text(s, "DELETE FROM policy_groups WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        return step_changed_commit(s, st, &tx);
}

/* Members: live tunnelers only; a revoked agent holds no access, whatever its row says. */
#define GROUP_MEMBERS_SELECT                                                                               \
        "SELECT agent_groups.agent FROM agent_groups JOIN agents ON agents.spiffe_id = agent_groups.agent " \
        "WHERE agent_groups.name = ?1 AND agents.role = 'tunneler' AND agents.revoked_at IS NULL "        \
        "ORDER BY agent_groups.agent"
#define GROUP_RESOURCES_SELECT "SELECT resource FROM policies WHERE group_name = ?1 ORDER BY resource"

static int group_from_row(SqliteStore *s, sqlite3_stmt *st, StoreGroup **ret) {
        _cleanup_(store_group_freep) StoreGroup *g = NULL;
        int r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        if ((r = column_text(st, 0, true, &g->name)) < 0 ||
            (r = column_text(st, 1, false, &g->description)) < 0 ||
            (r = column_time(st, 2, true, &g->created_at)) < 0)
                return r;
        r = strv_load(s, GROUP_MEMBERS_SELECT, g->name, STORE_LIST_MAX, &g->members);
        if (r < 0)
                return r;
        r = strv_load(s, GROUP_RESOURCES_SELECT, g->name, STORE_LIST_MAX, &g->resources);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(g);
        return 0;
}

static int sqlite_group_get(Store *store, const char *name, StoreGroup **ret) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        _cleanup_(store_group_freep) StoreGroup *g = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s, "SELECT name, description, created_at FROM policy_groups WHERE name = ?1", name,
                         &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        r = group_from_row(s, st, &g);
        if (r < 0)
                return r;
        sqlite3_reset(st);
        r = tx_commit(&tx);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(g);
        return 0;
}

DEFINE_ROW_LIST(group_rows, StoreGroup, group_from_row, store_group_array_free);

static int sqlite_group_list(Store *store, StoreGroup ***ret, size_t *ret_n) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, false, &tx);
        if (r < 0)
                return r;
        r = prepare(s, "SELECT name, description, created_at FROM policy_groups ORDER BY name", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &group_rows, SIZE_MAX, &tx, (void **) ret, ret_n);
}

/* Opens the write transaction of a membership edit: the group exists, the agent exists, is a tunneler
 * and is not revoked (-ENOENT, -EINVAL, -EKEYREVOKED). */
static int tx_begin_membership(SqliteStore *s, const char *group, const char *spiffe_id, SqliteStore **tx) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SpiffeRole role;
        usec_t revoked_at;
        int r;

        r = tx_begin(s, true, tx);
        if (r < 0)
                return r;
        r = require_row(s, GROUP_EXISTS, group, "group");
        if (r < 0)
                return r;
        r = prepare_text(s, "SELECT role, revoked_at FROM agents WHERE spiffe_id = ?1", spiffe_id, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return log_debug_errno(r, "SQLite: no agent '%s'.", spiffe_id);
        if ((r = column_role(st, 0, &role)) < 0 || (r = column_time(st, 1, false, &revoked_at)) < 0)
                return r;
        if (role != SPIFFE_ROLE_TUNNELER)
                return log_debug_errno(EINVAL, "SQLite: '%s' is not a tunneler.", spiffe_id);
        if (revoked_at != 0)
                return log_debug_errno(EKEYREVOKED, "SQLite: '%s' is revoked.", spiffe_id);
        return 0;
}

static int sqlite_group_add_member(Store *store, const char *group, const char *spiffe_id) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *ins = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        sqlite3_int64 count, next;
        int r;

        r = tx_begin_membership(s, group, spiffe_id, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s,
                         "SELECT COUNT(*), COALESCE(MAX(position) + 1, 0), "
                         "EXISTS (SELECT 1 FROM agent_groups WHERE agent = ?1 AND name = ?2) "
                         "FROM agent_groups WHERE agent = ?1",
                         spiffe_id, &st);
        if (r < 0)
                return r;
        if (bind_text(st, 2, group) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_row(s, st);
        if (r < 0)
                return r;
        count = sqlite3_column_int64(st, 0);
        next = sqlite3_column_int64(st, 1);
        if (sqlite3_column_int64(st, 2) != 0)
                return -EALREADY;
        if (count >= STORE_GROUPS_MAX)
                return log_debug_errno(E2BIG, "SQLite: '%s' has %d groups already.", spiffe_id,
                                       STORE_GROUPS_MAX);
        if (next < 0 || next > INT_MAX)
                return corrupt(st, 1);
        sqlite3_reset(st);

        /* At the end: an agent's groups keep the order they were given in. */
        r = prepare(s, "INSERT INTO agent_groups (agent, position, name) VALUES (?1, ?2, ?3)", &ins);
        if (r < 0)
                return r;
        if (bind_text(ins, 1, spiffe_id) != SQLITE_OK || sqlite3_bind_int64(ins, 2, next) != SQLITE_OK ||
            bind_text(ins, 3, group) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_changed_commit(s, ins, &tx);
}

static int sqlite_group_remove_member(Store *store, const char *group, const char *spiffe_id) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin_membership(s, group, spiffe_id, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s, "DELETE FROM agent_groups WHERE agent = ?1 AND name = ?2", spiffe_id, &st);
        if (r < 0)
                return r;
        if (bind_text(st, 2, group) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_changed_commit(s, st, &tx);
        /* Group and agent exist: nothing deleted means it was no member. */
        return r == -ENOENT ? -EALREADY : r;
}

static int sqlite_policy_create(Store *store, const char *group, const char *resource, usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = require_row(s, GROUP_EXISTS, group, "group");
        if (r < 0)
                return r;
        r = require_row(s, RESOURCE_EXISTS, resource, "resource");
        if (r < 0)
                return r;
        r = prepare(s, "INSERT INTO policies (group_name, resource, created_at) VALUES (?1, ?2, ?3)", &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, group) != SQLITE_OK || bind_text(st, 2, resource) != SQLITE_OK ||
            bind_time(st, 3, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        /* The same pair twice is a primary key conflict: -EEXIST. */
        return step_changed_commit(s, st, &tx);
}

static int sqlite_policy_delete(Store *store, const char *group, const char *resource) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s, "DELETE FROM policies WHERE group_name = ?1 AND resource = ?2", group, &st);
        if (r < 0)
                return r;
        if (bind_text(st, 2, resource) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_changed_commit(s, st, &tx);
}

/* Policies come back as an array of structs, not of pointers, so they get their own adapters. */
static int policy_from_row_any(SqliteStore *s, sqlite3_stmt *st, void *ret_element) {
        _cleanup_free_ char *group = NULL, *resource = NULL;
        StorePolicy *p = ret_element;
        usec_t created_at;
        int r;

        if ((r = column_text(st, 0, true, &group)) < 0 || (r = column_text(st, 1, true, &resource)) < 0 ||
            (r = column_time(st, 2, true, &created_at)) < 0)
                return r;
        *p = (StorePolicy) {
                .group = TAKE_PTR(group),
                .resource = TAKE_PTR(resource),
                .created_at = created_at,
        };
        return 0;
}

static void policy_array_free_any(void *array, size_t n) {
        store_policy_array_free(array, n);
}

static const RowList policy_rows = {
        .element_size = sizeof(StorePolicy),
        .from_row = policy_from_row_any,
        .array_free = policy_array_free_any,
};

static int sqlite_policy_list(Store *store, StorePolicy **ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = prepare(s, "SELECT group_name, resource, created_at FROM policies ORDER BY group_name, resource",
                    &st);
        if (r < 0)
                return r;
        return query_list(s, st, &policy_rows, SIZE_MAX, NULL, (void **) ret, ret_n);
}

static int sqlite_policy_revision(Store *store, uint64_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        sqlite3_int64 v;
        int r;

        r = prepare(s, "SELECT revision FROM policy_revision WHERE id = 1", &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r == -ENOENT)
                return log_debug_errno(EUCLEAN, "SQLite: the policy revision row is missing.");
        if (r < 0)
                return r;
        v = sqlite3_column_int64(st, 0);
        if (sqlite3_column_type(st, 0) != SQLITE_INTEGER || v < 0)
                return corrupt(st, 0);
        *ret = (uint64_t) v;
        return 0;
}

/* Admins, API tokens, sessions */

/* The migration that adds them: a store opened as if by older code has no such tables. */
#define MIGRATION_AUTH 4U

_Static_assert(STORE_CREDENTIAL_ID_SIZE == TOKEN_ID_SIZE, "credential ids are stored like token ids");

static int auth_schema_check(SqliteStore *s) {
        if (s->n_migrations < MIGRATION_AUTH)
                return log_debug_errno(EOPNOTSUPP, "SQLite: the schema has no admins (version %u).",
                                       s->n_migrations);
        return 0;
}

/* Runs st, which changes at most one row: -ENOENT when it changed none. */
static int step_one_change(SqliteStore *s, sqlite3_stmt *st) {
        int r;

        r = step_done(s, st);
        if (r < 0)
                return r;
        return sqlite3_changes(s->db) == 0 ? -ENOENT : 0;
}

/* The single integer sql (parameter ?1: key, may be NULL for none) returns. */
static int query_int64(SqliteStore *s, const char *sql, const char *key, int64_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = key ? prepare_text(s, sql, key, &st) : prepare(s, sql, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        if (sqlite3_column_type(st, 0) != SQLITE_INTEGER)
                return corrupt(st, 0);
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

/* Binds a credential id to parameter ?n of st as lower-case hex, written to hex (which outlives the step). */
static int bind_credential_id(SqliteStore *s, sqlite3_stmt *st, int n,
                              const uint8_t id[STORE_CREDENTIAL_ID_SIZE], char hex[static TOKEN_ID_HEX_SIZE]) {
        if (bind_text(st, n, token_id_hex(id, hex)) != SQLITE_OK)
                return sqlite_bind_error(s);
        return 0;
}

static int prepare_credential_id(SqliteStore *s, const char *sql, const uint8_t id[STORE_CREDENTIAL_ID_SIZE],
                                 char hex[static TOKEN_ID_HEX_SIZE], sqlite3_stmt **ret) {
        return prepare_text(s, sql, token_id_hex(id, hex), ret);
}

#define ADMIN_COLUMNS \
        "name, password_hash, created_by, created_at, password_changed_at, disabled_at, last_login_at"
#define ADMIN_EXISTS "SELECT 1 FROM admins WHERE name = ?1"

static int admin_from_row(SqliteStore *s, sqlite3_stmt *st, StoreAdmin **ret) {
        _cleanup_(store_admin_freep) StoreAdmin *a = NULL;
        int r;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        if ((r = column_text(st, 0, true, &a->name)) < 0 ||
            (r = column_text(st, 1, true, &a->password_hash)) < 0 ||
            (r = column_text(st, 2, true, &a->created_by)) < 0 ||
            (r = column_time(st, 3, true, &a->created_at)) < 0 ||
            (r = column_time(st, 4, true, &a->password_changed_at)) < 0 ||
            (r = column_time(st, 5, false, &a->disabled_at)) < 0 ||
            (r = column_time(st, 6, false, &a->last_login_at)) < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

DEFINE_ROW_LIST(admin_rows, StoreAdmin, admin_from_row, store_admin_array_free);

static int sqlite_admin_create(Store *store, const StoreAdmin *a) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int64_t n;
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = query_int64(s, "SELECT COUNT(*) FROM admins", NULL, &n);
        if (r < 0)
                return r;
        if (n >= STORE_ADMINS_MAX)
                return log_debug_errno(E2BIG, "SQLite: already %d admins.", STORE_ADMINS_MAX);
        r = prepare(s,
                    "INSERT INTO admins (name, password_hash, created_by, created_at, password_changed_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?4)",
                    &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, a->name) != SQLITE_OK || bind_text(st, 2, a->password_hash) != SQLITE_OK ||
            bind_text(st, 3, a->created_by) != SQLITE_OK || bind_time(st, 4, a->created_at) != SQLITE_OK)
                return sqlite_bind_error(s);
        /* A duplicate name is a primary key conflict: -EEXIST. */
        return step_done_commit(s, st, &tx);
}

static int sqlite_admin_get(Store *store, const char *name, StoreAdmin **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare_text(s, "SELECT " ADMIN_COLUMNS " FROM admins WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return admin_from_row(s, st, ret);
}

static int sqlite_admin_list(Store *store, StoreAdmin ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare(s, "SELECT " ADMIN_COLUMNS " FROM admins ORDER BY name", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &admin_rows, STORE_ADMINS_MAX, NULL, (void **) ret, ret_n);
}

static int sqlite_admin_delete(Store *store, const char *name) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        /* Its API tokens and sessions go with it (ON DELETE CASCADE), in this transaction. */
        r = prepare_text(s, "DELETE FROM admins WHERE name = ?1", name, &st);
        if (r < 0)
                return r;
        r = step_one_change(s, st);
        if (r < 0)
                return r;
        return tx_commit(&tx);
}

/* Inside a write transaction: ends every session of the admin. */
static int admin_end_sessions(SqliteStore *s, const char *name) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int r;

        r = prepare_text(s, "DELETE FROM sessions WHERE admin = ?1", name, &st);
        if (r < 0)
                return r;
        return step_done(s, st);
}

static int sqlite_admin_set_password(Store *store, const char *name, const char *password_hash, usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s, "UPDATE admins SET password_hash = ?1, password_changed_at = ?2 WHERE name = ?3", &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, password_hash) != SQLITE_OK || bind_time(st, 2, now) != SQLITE_OK ||
            bind_text(st, 3, name) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_one_change(s, st);
        if (r < 0)
                return r;
        /* Whoever knew the old password is logged out with it. */
        r = admin_end_sessions(s, name);
        if (r < 0)
                return r;
        return tx_commit(&tx);
}

static int sqlite_admin_set_disabled(Store *store, const char *name, usec_t disabled_at) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s, "UPDATE admins SET disabled_at = ?1 WHERE name = ?2", &st);
        if (r < 0)
                return r;
        if (bind_time_or_null(st, 1, disabled_at) != SQLITE_OK || bind_text(st, 2, name) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_one_change(s, st);
        if (r < 0)
                return r;
        if (disabled_at != 0) {
                r = admin_end_sessions(s, name);
                if (r < 0)
                        return r;
        }
        return tx_commit(&tx);
}

static int sqlite_admin_touch_login(Store *store, const char *name, usec_t now) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        /* One statement: atomic without a transaction of its own. */
        r = prepare(s, "UPDATE admins SET last_login_at = ?1 WHERE name = ?2", &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK || bind_text(st, 2, name) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_one_change(s, st);
}

/* API tokens */

#define API_TOKEN_COLUMNS \
        "id, name, admin, scope, secret_hash, created_at, expires_at, last_used_at, revoked_at"

static int scope_from_string(const char *s) {
        return store_scope_from_string(s);
}

static int api_token_from_row(SqliteStore *s, sqlite3_stmt *st, StoreApiToken **ret) {
        _cleanup_(store_api_token_freep) StoreApiToken *t = NULL;
        int scope = 0, r;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        if ((r = column_token_id(st, 0, t->id)) < 0 ||
            (r = column_text(st, 1, true, &t->name)) < 0 ||
            (r = column_text(st, 2, true, &t->admin)) < 0 ||
            (r = column_enum(st, 3, scope_from_string, &scope)) < 0 ||
            (r = column_blob_fixed(st, 4, false, t->secret_hash, STORE_SECRET_HASH_SIZE)) < 0 ||
            (r = column_time(st, 5, true, &t->created_at)) < 0 ||
            (r = column_time(st, 6, true, &t->expires_at)) < 0 ||
            (r = column_time(st, 7, false, &t->last_used_at)) < 0 ||
            (r = column_time(st, 8, false, &t->revoked_at)) < 0)
                return r;
        t->scope = scope;
        *ret = TAKE_PTR(t);
        return 0;
}

DEFINE_ROW_LIST(api_token_rows, StoreApiToken, api_token_from_row, store_api_token_array_free);

static int sqlite_api_token_create(Store *store, const StoreApiToken *t) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int64_t n;
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = require_row(s, ADMIN_EXISTS, t->admin, "admin");
        if (r < 0)
                return r;
        r = query_int64(s, "SELECT COUNT(*) FROM api_tokens WHERE admin = ?1", t->admin, &n);
        if (r < 0)
                return r;
        if (n >= STORE_API_TOKENS_PER_ADMIN_MAX)
                return log_debug_errno(E2BIG, "SQLite: admin '%s' already has %d API tokens.", t->admin,
                                       STORE_API_TOKENS_PER_ADMIN_MAX);
        r = prepare(s,
                    "INSERT INTO api_tokens (id, name, admin, scope, secret_hash, created_at, expires_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &st);
        if (r < 0)
                return r;
        r = bind_credential_id(s, st, 1, t->id, hex);
        if (r < 0)
                return r;
        if (bind_text(st, 2, t->name) != SQLITE_OK || bind_text(st, 3, t->admin) != SQLITE_OK ||
            bind_text(st, 4, store_scope_to_string(t->scope)) != SQLITE_OK ||
            bind_blob(st, 5, t->secret_hash, STORE_SECRET_HASH_SIZE) != SQLITE_OK ||
            bind_time(st, 6, t->created_at) != SQLITE_OK || bind_time(st, 7, t->expires_at) != SQLITE_OK)
                return sqlite_bind_error(s);
        /* A duplicate id, or a live token of this admin with this name: a unique key, -EEXIST. */
        return step_done_commit(s, st, &tx);
}

static int sqlite_api_token_get(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE],
                                StoreApiToken **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare_credential_id(s, "SELECT " API_TOKEN_COLUMNS " FROM api_tokens WHERE id = ?1", id, hex,
                                  &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return api_token_from_row(s, st, ret);
}

static int sqlite_api_token_list(Store *store, const char *admin, StoreApiToken ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        if (admin)
                r = prepare_text(s,
                                 "SELECT " API_TOKEN_COLUMNS " FROM api_tokens WHERE admin = ?1 "
                                 "ORDER BY created_at, id",
                                 admin, &st);
        else
                r = prepare(s, "SELECT " API_TOKEN_COLUMNS " FROM api_tokens ORDER BY admin, created_at, id",
                            &st);
        if (r < 0)
                return r;
        return query_list(s, st, &api_token_rows, SIZE_MAX, NULL, (void **) ret, ret_n);
}

static int sqlite_api_token_revoke(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *upd = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        usec_t revoked_at;
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare_credential_id(s, "SELECT revoked_at FROM api_tokens WHERE id = ?1", id, hex, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        r = column_time(st, 0, false, &revoked_at);
        if (r < 0)
                return r;
        sqlite3_reset(st);
        if (revoked_at != 0)
                return -EALREADY;
        r = prepare(s, "UPDATE api_tokens SET revoked_at = ?1 WHERE id = ?2", &upd);
        if (r < 0)
                return r;
        if (bind_time(upd, 1, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = bind_credential_id(s, upd, 2, id, hex);
        if (r < 0)
                return r;
        return step_done_commit(s, upd, &tx);
}

static int sqlite_api_token_delete(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare_credential_id(s, "DELETE FROM api_tokens WHERE id = ?1", id, hex, &st);
        if (r < 0)
                return r;
        return step_one_change(s, st);
}

/* Sets a "last used/seen" time of one row, never moving it backwards: -ENOENT when there is no such row.
 * update changes the row only when the time is newer; exists tells a missing row from an unchanged one. */
static int touch_row(SqliteStore *s, const char *update, const char *exists,
                     const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare(s, update, &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = bind_credential_id(s, st, 2, id, hex);
        if (r < 0)
                return r;
        r = step_done(s, st);
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0) {
                r = require_row(s, exists, hex, "credential");
                if (r < 0)
                        return r;
        }
        return tx_commit(&tx);
}

static int sqlite_api_token_touch(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        return touch_row(SQLITE_STORE(store),
                         "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2 "
                         "AND (last_used_at IS NULL OR last_used_at < ?1)",
                         "SELECT 1 FROM api_tokens WHERE id = ?1", id, now);
}

/* Sessions */

#define SESSION_COLUMNS \
        "id, admin, secret_hash, csrf_hash, created_at, expires_at, last_seen_at, address, user_agent"

static int session_from_row(SqliteStore *s, sqlite3_stmt *st, StoreSession **ret) {
        _cleanup_(store_session_freep) StoreSession *ses = NULL;
        int r;

        ses = calloc(1, sizeof(*ses));
        if (!ses)
                return -ENOMEM;
        if ((r = column_token_id(st, 0, ses->id)) < 0 ||
            (r = column_text(st, 1, true, &ses->admin)) < 0 ||
            (r = column_blob_fixed(st, 2, false, ses->secret_hash, STORE_SECRET_HASH_SIZE)) < 0 ||
            (r = column_blob_fixed(st, 3, false, ses->csrf_hash, STORE_SECRET_HASH_SIZE)) < 0 ||
            (r = column_time(st, 4, true, &ses->created_at)) < 0 ||
            (r = column_time(st, 5, true, &ses->expires_at)) < 0 ||
            (r = column_time(st, 6, true, &ses->last_seen_at)) < 0 ||
            (r = column_text(st, 7, false, &ses->address)) < 0 ||
            (r = column_text(st, 8, false, &ses->user_agent)) < 0)
                return r;
        *ret = TAKE_PTR(ses);
        return 0;
}

DEFINE_ROW_LIST(session_rows, StoreSession, session_from_row, store_session_array_free);

static int sqlite_session_create(Store *store, const StoreSession *ses) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *admin = NULL, *evict = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        usec_t disabled_at;
        int64_t n;
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = prepare_text(s, "SELECT disabled_at FROM admins WHERE name = ?1", ses->admin, &admin);
        if (r < 0)
                return r;
        r = step_row(s, admin);
        if (r < 0)
                return r;
        r = column_time(admin, 0, false, &disabled_at);
        if (r < 0)
                return r;
        sqlite3_reset(admin);
        if (disabled_at != 0)
                return log_debug_errno(EPERM, "SQLite: admin '%s' is disabled.", ses->admin);

        /* Bounded per admin: the least recently seen sessions make room, oldest first. */
        r = query_int64(s, "SELECT COUNT(*) FROM sessions WHERE admin = ?1", ses->admin, &n);
        if (r < 0)
                return r;
        if (n >= STORE_SESSIONS_PER_ADMIN_MAX) {
                r = prepare(s,
                            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE admin = ?1 "
                            "ORDER BY last_seen_at, created_at, id LIMIT ?2)",
                            &evict);
                if (r < 0)
                        return r;
                if (bind_text(evict, 1, ses->admin) != SQLITE_OK ||
                    sqlite3_bind_int64(evict, 2, n - STORE_SESSIONS_PER_ADMIN_MAX + 1) != SQLITE_OK)
                        return sqlite_bind_error(s);
                r = step_done(s, evict);
                if (r < 0)
                        return r;
                log_debug("SQLite: admin '%s' had %" PRIi64 " sessions, ended the least recently seen.",
                          ses->admin, n);
        }

        r = prepare(s,
                    "INSERT INTO sessions (id, admin, secret_hash, csrf_hash, created_at, expires_at, "
                    "last_seen_at, address, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    &st);
        if (r < 0)
                return r;
        r = bind_credential_id(s, st, 1, ses->id, hex);
        if (r < 0)
                return r;
        if (bind_text(st, 2, ses->admin) != SQLITE_OK ||
            bind_blob(st, 3, ses->secret_hash, STORE_SECRET_HASH_SIZE) != SQLITE_OK ||
            bind_blob(st, 4, ses->csrf_hash, STORE_SECRET_HASH_SIZE) != SQLITE_OK ||
            bind_time(st, 5, ses->created_at) != SQLITE_OK || bind_time(st, 6, ses->expires_at) != SQLITE_OK ||
            bind_time(st, 7, ses->last_seen_at) != SQLITE_OK || bind_text(st, 8, ses->address) != SQLITE_OK ||
            bind_text(st, 9, ses->user_agent) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done_commit(s, st, &tx);
}

static int sqlite_session_get(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreSession **ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare_credential_id(s, "SELECT " SESSION_COLUMNS " FROM sessions WHERE id = ?1", id, hex, &st);
        if (r < 0)
                return r;
        r = step_row(s, st);
        if (r < 0)
                return r;
        return session_from_row(s, st, ret);
}

static int sqlite_session_list(Store *store, const char *admin, StoreSession ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        if (admin)
                r = prepare_text(s,
                                 "SELECT " SESSION_COLUMNS " FROM sessions WHERE admin = ?1 "
                                 "ORDER BY created_at, id",
                                 admin, &st);
        else
                r = prepare(s, "SELECT " SESSION_COLUMNS " FROM sessions ORDER BY admin, created_at, id", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &session_rows, SIZE_MAX, NULL, (void **) ret, ret_n);
}

static int sqlite_session_delete(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char hex[TOKEN_ID_HEX_SIZE];
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare_credential_id(s, "DELETE FROM sessions WHERE id = ?1", id, hex, &st);
        if (r < 0)
                return r;
        return step_one_change(s, st);
}

static int sqlite_session_touch(Store *store, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        return touch_row(SQLITE_STORE(store),
                         "UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2 AND last_seen_at < ?1",
                         "SELECT 1 FROM sessions WHERE id = ?1", id, now);
}

static int sqlite_sessions_delete_expired(Store *store, usec_t now, usec_t idle_timeout) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        /* Idle when last_seen_at <= now - idle_timeout; -1 (nothing is) without the rule, or before it can
         * apply. */
        sqlite3_int64 idle_before =
                idle_timeout > 0 && now >= idle_timeout ? (sqlite3_int64) (now - idle_timeout) : -1;
        int r;

        r = auth_schema_check(s);
        if (r < 0)
                return r;
        r = prepare(s, "DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2", &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, now) != SQLITE_OK || sqlite3_bind_int64(st, 2, idle_before) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_done(s, st);
        if (r < 0)
                return r;
        return sqlite3_changes(s->db);
}

/* CA material */

#define CA_COLUMNS \
        "fingerprint, kind, state, certificate, sealed_key, parent, not_before, not_after, created_at"

/* The current state of a CA: -ENOENT when unknown. */
static int ca_state(SqliteStore *s, const uint8_t fingerprint[32], StoreCaState *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int state = 0, r;

        r = prepare(s, "SELECT state FROM cas WHERE fingerprint = ?1", &st);
        if (r < 0)
                return r;
        if (bind_blob(st, 1, fingerprint, 32) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step_row(s, st);
        if (r < 0)
                return r;
        r = column_enum(st, 0, ca_state_from_string, &state);
        if (r < 0)
                return r;
        *ret = state;
        return 0;
}

static int ca_check_transition(StoreCaState current, StoreCaState next) {
        if (!store_ca_state_transition_is_valid(current, next))
                return log_debug_errno(EINVAL, "SQLite: CA state cannot go back from %s to %s.",
                                       store_ca_state_to_string(current), store_ca_state_to_string(next));
        return 0;
}

static int sqlite_ca_put(Store *store, const StoreCa *ca) {
        static const uint8_t zero[32] = {};
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        StoreCaState current;
        bool has_parent;
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = ca_state(s, ca->fingerprint, &current);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0) {
                r = ca_check_transition(current, ca->state);
                if (r < 0)
                        return r;
        }

        r = prepare(s,
                    "INSERT INTO cas (" CA_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                    "ON CONFLICT (fingerprint) DO UPDATE SET kind = excluded.kind, state = excluded.state, "
                    "certificate = excluded.certificate, sealed_key = excluded.sealed_key, "
                    "parent = excluded.parent, not_before = excluded.not_before, "
                    "not_after = excluded.not_after, created_at = excluded.created_at",
                    &st);
        if (r < 0)
                return r;
        has_parent = memcmp(ca->parent, zero, sizeof(zero)) != 0;
        if (bind_blob(st, 1, ca->fingerprint, 32) != SQLITE_OK ||
            bind_text(st, 2, store_ca_kind_to_string(ca->kind)) != SQLITE_OK ||
            bind_text(st, 3, store_ca_state_to_string(ca->state)) != SQLITE_OK ||
            bind_blob(st, 4, ca->certificate, ca->certificate_size) != SQLITE_OK ||
            bind_blob(st, 5, ca->sealed_key, ca->sealed_key_size) != SQLITE_OK ||
            bind_blob(st, 6, has_parent ? ca->parent : NULL, 32) != SQLITE_OK ||
            bind_time(st, 7, ca->not_before) != SQLITE_OK || bind_time(st, 8, ca->not_after) != SQLITE_OK ||
            bind_time(st, 9, ca->created_at) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done_commit(s, st, &tx);
}

static int ca_from_row(SqliteStore *s, sqlite3_stmt *st, StoreCa **ret) {
        _cleanup_(store_ca_freep) StoreCa *c = NULL;
        int kind = 0, state = 0, r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        if ((r = column_blob_fixed(st, 0, false, c->fingerprint, sizeof(c->fingerprint))) < 0 ||
            (r = column_enum(st, 1, ca_kind_from_string, &kind)) < 0 ||
            (r = column_enum(st, 2, ca_state_from_string, &state)) < 0 ||
            (r = column_blob(st, 3, true, &c->certificate, &c->certificate_size)) < 0 ||
            (r = column_blob(st, 4, false, &c->sealed_key, &c->sealed_key_size)) < 0 ||
            (r = column_blob_fixed(st, 5, true, c->parent, sizeof(c->parent))) < 0 ||
            (r = column_time(st, 6, true, &c->not_before)) < 0 ||
            (r = column_time(st, 7, true, &c->not_after)) < 0 ||
            (r = column_time(st, 8, true, &c->created_at)) < 0)
                return r;
        c->kind = kind;
        c->state = state;
        *ret = TAKE_PTR(c);
        return 0;
}

DEFINE_ROW_LIST(ca_rows, StoreCa, ca_from_row, store_ca_array_free);

static int sqlite_ca_list(Store *store, StoreCa ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        int r;

        r = prepare(s, "SELECT " CA_COLUMNS " FROM cas ORDER BY created_at, fingerprint", &st);
        if (r < 0)
                return r;
        return query_list(s, st, &ca_rows, SIZE_MAX, NULL, (void **) ret, ret_n);
}

static int sqlite_ca_set_state(Store *store, const uint8_t fingerprint[32], StoreCaState state) {
        _cleanup_(tx_rollbackp) SqliteStore *tx = NULL;
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        StoreCaState current;
        int r;

        r = tx_begin(s, true, &tx);
        if (r < 0)
                return r;
        r = ca_state(s, fingerprint, &current);
        if (r < 0)
                return r;
        r = ca_check_transition(current, state);
        if (r < 0)
                return r;
        r = prepare(s, "UPDATE cas SET state = ?1 WHERE fingerprint = ?2", &st);
        if (r < 0)
                return r;
        if (bind_text(st, 1, store_ca_state_to_string(state)) != SQLITE_OK ||
            bind_blob(st, 2, fingerprint, 32) != SQLITE_OK)
                return sqlite_bind_error(s);
        return step_done_commit(s, st, &tx);
}

/* Audit */

static int sqlite_audit_append(Store *store, const StoreAuditEvent *e, int64_t *ret_seq) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        sqlite3_int64 seq;
        int r;

        r = prepare(s,
                    "INSERT INTO audit (time, event, actor, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5) "
                    "RETURNING seq",
                    &st);
        if (r < 0)
                return r;
        if (bind_time(st, 1, e->time) != SQLITE_OK || bind_text(st, 2, e->event) != SQLITE_OK ||
            bind_text(st, 3, e->actor) != SQLITE_OK || bind_text(st, 4, e->subject) != SQLITE_OK ||
            bind_text(st, 5, e->detail) != SQLITE_OK)
                return sqlite_bind_error(s);
        r = step(s, st);
        if (r < 0)
                return r;
        if (r == 0 || sqlite3_column_type(st, 0) != SQLITE_INTEGER)
                return -EIO;
        seq = sqlite3_column_int64(st, 0);
        /* Run to completion: the single-statement transaction commits here. */
        r = step_done(s, st);
        if (r < 0)
                return r;
        if (ret_seq)
                *ret_seq = seq;
        return 0;
}

static int audit_from_row(SqliteStore *s, sqlite3_stmt *st, StoreAuditEvent **ret) {
        _cleanup_(store_audit_event_freep) StoreAuditEvent *e = NULL;
        int r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        if (sqlite3_column_type(st, 0) != SQLITE_INTEGER)
                return corrupt(st, 0);
        e->seq = sqlite3_column_int64(st, 0);
        if ((r = column_time(st, 1, true, &e->time)) < 0 ||
            (r = column_text(st, 2, true, &e->event)) < 0 ||
            (r = column_text(st, 3, true, &e->actor)) < 0 ||
            (r = column_text(st, 4, false, &e->subject)) < 0 ||
            (r = column_text(st, 5, false, &e->detail)) < 0)
                return r;
        *ret = TAKE_PTR(e);
        return 0;
}

/* The index of a named parameter; 0 (which every bind refuses) when absent. */
static int param(sqlite3_stmt *st, const char *name) {
        return sqlite3_bind_parameter_index(st, name);
}

DEFINE_ROW_LIST(audit_rows, StoreAuditEvent, audit_from_row, store_audit_event_array_free);

static int sqlite_audit_list(Store *store, const StoreAuditFilter *f, StoreAuditEvent ***ret, size_t *ret_n) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        char sql[AUDIT_SQL_MAX];
        int r;

        /* Built from fixed fragments only, so each filter can use an index; every value is a parameter. */
        r = snprintf(sql, sizeof(sql),
                     "SELECT seq, time, event, actor, subject, detail FROM audit WHERE 1 = 1%s%s%s%s%s%s "
                     "ORDER BY seq DESC LIMIT :limit",
                     f->since != 0 ? " AND time >= :since" : "", f->until != 0 ? " AND time < :until" : "",
                     f->event ? " AND event = :event" : "", f->actor ? " AND actor = :actor" : "",
                     f->subject ? " AND subject = :subject" : "",
                     f->before_seq != 0 ? " AND seq < :before" : "");
        assert(r > 0 && (size_t) r < sizeof(sql));

        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        if ((f->since != 0 && bind_time(st, param(st, ":since"), f->since) != SQLITE_OK) ||
            (f->until != 0 && bind_time(st, param(st, ":until"), f->until) != SQLITE_OK) ||
            (f->event && bind_text(st, param(st, ":event"), f->event) != SQLITE_OK) ||
            (f->actor && bind_text(st, param(st, ":actor"), f->actor) != SQLITE_OK) ||
            (f->subject && bind_text(st, param(st, ":subject"), f->subject) != SQLITE_OK) ||
            (f->before_seq != 0 &&
             sqlite3_bind_int64(st, param(st, ":before"), f->before_seq) != SQLITE_OK) ||
            sqlite3_bind_int64(st, param(st, ":limit"), (sqlite3_int64) f->limit) != SQLITE_OK)
                return sqlite_bind_error(s);

        return query_list(s, st, &audit_rows, f->limit, NULL, (void **) ret, ret_n);
}

/* Integrity */

static int sqlite_check_integrity(Store *store) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL, *fk = NULL;
        SqliteStore *s = SQLITE_STORE(store);
        unsigned problems = 0;
        int r;

        r = prepare(s, "PRAGMA integrity_check", &st);
        if (r < 0)
                return r;
        for (;;) {
                const char *msg;

                r = step(s, st);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                msg = (const char *) sqlite3_column_text(st, 0);
                if (msg && streq(msg, "ok"))
                        continue;
                if (problems++ < INTEGRITY_LOG_MAX)
                        log_debug("SQLite: integrity check: %s", strna(msg));
        }

        r = prepare(s, "PRAGMA foreign_key_check", &fk);
        if (r < 0)
                return r;
        for (;;) {
                r = step(s, fk);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (problems++ < INTEGRITY_LOG_MAX)
                        log_debug("SQLite: integrity check: dangling reference in table '%s'.",
                                  strna((const char *) sqlite3_column_text(fk, 0)));
        }

        if (problems > 0)
                return log_debug_errno(EUCLEAN, "SQLite: database failed its integrity check (%u problems).",
                                       problems);
        return 0;
}

static const StoreVtable sqlite_vtable = {
        .name = "sqlite",
        .free = sqlite_store_free,
        .get_schema_version = sqlite_get_schema_version,
        .meta_get = sqlite_meta_get,
        .meta_set = sqlite_meta_set,
        .token_create = sqlite_token_create,
        .token_get = sqlite_token_get,
        .token_list = sqlite_token_list,
        .token_revoke = sqlite_token_revoke,
        .enroll = sqlite_enroll,
        .agent_get = sqlite_agent_get,
        .agent_list = sqlite_agent_list,
        .agent_update_certificate = sqlite_agent_update_certificate,
        .agent_revoke = sqlite_agent_revoke,
        .agents_touch = sqlite_agents_touch,
        .ca_put = sqlite_ca_put,
        .ca_list = sqlite_ca_list,
        .ca_set_state = sqlite_ca_set_state,
        .network_create = sqlite_network_create,
        .network_delete = sqlite_network_delete,
        .network_list = sqlite_network_list,
        .resource_create = sqlite_resource_create,
        .resource_update = sqlite_resource_update,
        .resource_delete = sqlite_resource_delete,
        .resource_get = sqlite_resource_get,
        .resource_list = sqlite_resource_list,
        .group_create = sqlite_group_create,
        .group_delete = sqlite_group_delete,
        .group_get = sqlite_group_get,
        .group_list = sqlite_group_list,
        .group_add_member = sqlite_group_add_member,
        .group_remove_member = sqlite_group_remove_member,
        .policy_create = sqlite_policy_create,
        .policy_delete = sqlite_policy_delete,
        .policy_list = sqlite_policy_list,
        .policy_revision = sqlite_policy_revision,
        .admin_create = sqlite_admin_create,
        .admin_get = sqlite_admin_get,
        .admin_list = sqlite_admin_list,
        .admin_delete = sqlite_admin_delete,
        .admin_set_password = sqlite_admin_set_password,
        .admin_set_disabled = sqlite_admin_set_disabled,
        .admin_touch_login = sqlite_admin_touch_login,
        .api_token_create = sqlite_api_token_create,
        .api_token_get = sqlite_api_token_get,
        .api_token_list = sqlite_api_token_list,
        .api_token_revoke = sqlite_api_token_revoke,
        .api_token_delete = sqlite_api_token_delete,
        .api_token_touch = sqlite_api_token_touch,
        .session_create = sqlite_session_create,
        .session_get = sqlite_session_get,
        .session_list = sqlite_session_list,
        .session_delete = sqlite_session_delete,
        .session_touch = sqlite_session_touch,
        .sessions_delete_expired = sqlite_sessions_delete_expired,
        .audit_append = sqlite_audit_append,
        .audit_list = sqlite_audit_list,
        .check_integrity = sqlite_check_integrity,
};
