/* SPDX-License-Identifier: Apache-2.0 */

/* ztnactl: local administration of the controller over org.ztna.Controller1 on the system bus (or
 * $ZTNA_BUS_ADDRESS), and the state of the agents on this host (org.ztna.Connector1, org.ztna.Tunneler1;
 * the session bus with --user). One function per verb, a verb table to dispatch, human tables or --json.
 *
 * Exit status: 0 success, 1 the operation failed (the controller's error message is printed), 2 usage;
 * status: 3 when an agent asked about is not running; health: 1 when one is not online. */

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "agent-conf.h"
#include "ask-password.h"
#include "bus-util.h"
#include "config.h"
#include "fileio.h"
#include "hexdecoct.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"
#include "time-util.h"

#define BUS_NAME "org.ztna.Controller1"
#define BUS_PATH "/org/ztna/Controller1"
#define BUS_INTERFACE "org.ztna.Controller1"

#define EXIT_USAGE 2

/* --group given at most this often (the controller's own limit is the same: STORE_GROUPS_MAX). */
#define ARG_GROUPS_MAX 64U
/* Cells one table holds; a reply bigger than this is refused rather than buffered. */
#define TABLE_CELLS_MAX (1024U * 1024U)
/* Longest "2026-11-21 22:30:00 UTC" or "in 1y 2w" we write, NUL included. */
#define TIME_STRING_MAX 64

/* Options that belong to one verb or another; each verb lists those it takes. */
typedef enum VerbOption {
        OPT_ROLE = 1 << 0,
        OPT_ID = 1 << 1,
        OPT_NETWORK = 1 << 2,
        OPT_GROUP = 1 << 3,
        OPT_TTL = 1 << 4,
        OPT_OUTPUT = 1 << 5,
        OPT_REASON = 1 << 6,
        OPT_DESCRIPTION = 1 << 7,
        OPT_ADDRESS = 1 << 8,
        OPT_PORTS = 1 << 9,
        OPT_PROTOCOL = 1 << 10,
        OPT_ALIAS = 1 << 11,
        OPT_TOKEN_FILE = 1 << 12,
} VerbOption;

static bool arg_json = false;
static bool arg_legend = true;
static bool arg_ask_password = true;
static bool arg_user = false;
static const char *arg_role = NULL;
static const char *arg_id = NULL;
static const char *arg_network = NULL;
static char **arg_groups = NULL;
static usec_t arg_ttl = 0;
static const char *arg_output = NULL;
static const char *arg_reason = NULL;
static const char *arg_description = NULL;
static const char *arg_address = NULL;
static const char *arg_ports = NULL;
static const char *arg_protocol = NULL;
static const char *arg_alias = NULL;
static const char *arg_token_file = NULL;
static unsigned arg_given = 0; /* VerbOption mask */

/* --- output helpers --- */

static const char *empty_or_null(const char *s) {
        return isempty(s) ? NULL : s;
}

static const char *bus_error_message(const sd_bus_error *e, int r) {
        if (e && e->message)
                return e->message;
        return strerror(ERRNO_VALUE(r));
}

/* "2026-11-21 22:30:00 UTC"; "-" for 0 (never happened / no such time). */
static const char *format_time_absolute(char buf[static TIME_STRING_MAX], usec_t t) {
        struct tm tm;
        time_t sec;

        if (t == 0 || t == USEC_INFINITY || t / USEC_PER_SEC > (usec_t) INT64_MAX)
                return "-";
        sec = (time_t) (t / USEC_PER_SEC);
        if (!gmtime_r(&sec, &tm) || strftime(buf, TIME_STRING_MAX, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                return "-";
        return buf;
}

/* "in 29min", "3s ago", "1d 2h ago", "now": minutes once it is a minute or more, hours once a day or more. */
static const char *format_time_relative(char buf[static TIME_STRING_MAX], usec_t t, usec_t n) {
        char span[FORMAT_TIMESPAN_MAX];
        usec_t d, accuracy;

        if (t == 0 || t == USEC_INFINITY)
                return "-";

        d = t > n ? t - n : n - t;
        if (d < USEC_PER_SEC)
                return "now";
        accuracy = d >= USEC_PER_DAY ? USEC_PER_HOUR : d >= USEC_PER_MINUTE ? USEC_PER_MINUTE : USEC_PER_SEC;
        format_timespan(span, sizeof(span), d, accuracy);
        snprintf(buf, TIME_STRING_MAX, t > n ? "in %s" : "%s ago", span);
        return buf;
}

/* A copy safe to print on a terminal: values come from remote agents (version, labels), so control
 * characters become '?'. */
static char *sanitize_cell(const char *s) {
        char *c = strdup(isempty(s) ? "-" : s);

        if (!c)
                return NULL;
        for (char *p = c; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        return c;
}

/* Display width of UTF-8 text, counting code points (the tables hold no wide characters). */
static size_t utf8_width(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        n++;
        return n;
}

typedef struct Table {
        size_t n_columns;
        char **cells; /* row-major, the header row first */
        size_t n_cells;
} Table;

static void table_done(Table *t) {
        t->cells = strv_free(t->cells);
        t->n_cells = 0;
}

static int table_add(Table *t, const char *value) {
        char *c;

        if (t->n_cells >= TABLE_CELLS_MAX)
                return -E2BIG;
        c = sanitize_cell(value);
        if (!c)
                return -ENOMEM;
        if (strv_consume(&t->cells, c) < 0)
                return -ENOMEM;
        t->n_cells++;
        return 0;
}

static int table_new(Table *t, const char *const *header) {
        int r;

        *t = (Table) { .n_columns = strv_length((char *const *) header) };
        STRV_FOREACH(h, (char *const *) header) {
                r = table_add(t, *h);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int table_add_cells(Table *t, const char *const *cells, size_t n) {
        int r;

        /* A row is all of its columns, or the table is misbuilt. */
        assert(n == t->n_columns);

        for (size_t i = 0; i < n; i++) {
                r = table_add(t, cells[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* table_add_row(t, "a", "b", …): one row, as many cells as columns (sizeof evaluates nothing). */
#define table_add_row(t, ...)                                                              \
        table_add_cells((t), (const char *const[]) { __VA_ARGS__ },                        \
                        ELEMENTSOF(((const char *const[]) { __VA_ARGS__ })))

static size_t table_n_rows(const Table *t) {
        return t->n_cells / t->n_columns - 1;
}

/* Left-aligned columns separated by two spaces; the last column is not padded. */
static void table_print(const Table *t, const char *noun_singular, const char *noun_plural) {
        size_t widths[16] = {};
        size_t n_rows = table_n_rows(t);

        assert(t->n_columns > 0 && t->n_columns <= ELEMENTSOF(widths));

        for (size_t i = arg_legend ? 0 : t->n_columns; i < t->n_cells; i++)
                widths[i % t->n_columns] = MAX(widths[i % t->n_columns], utf8_width(t->cells[i]));

        for (size_t i = arg_legend ? 0 : t->n_columns; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;

                fputs(t->cells[i], stdout);
                if (col + 1 == t->n_columns)
                        fputc('\n', stdout);
                else
                        printf("%*s", (int) (widths[col] - utf8_width(t->cells[i]) + 2), "");
        }

        if (arg_legend)
                printf("\n%zu %s listed.\n", n_rows, n_rows == 1 ? noun_singular : noun_plural);
}

static int json_set(json_t *o, const char *key, json_t *value) {
        /* json_object_set_new() takes the reference even when it fails, and fails on a NULL value. */
        return json_object_set_new(o, key, value) < 0 ? -ENOMEM : 0;
}

static int json_set_string(json_t *o, const char *key, const char *value) {
        return json_set(o, key, value ? json_string(value) : json_null());
}

/* "key": ISO 8601 UTC or null for 0, and "key_usec": µs since the epoch (0: none). */
static int json_set_time(json_t *o, const char *key, usec_t t) {
        char buf[FORMAT_TIMESTAMP_MAX], key_usec[64];
        int r;

        r = json_set(o, key,
                     t > 0 && format_timestamp(buf, sizeof(buf), t) ? json_string(buf) : json_null());
        if (r < 0)
                return r;
        snprintf(key_usec, sizeof(key_usec), "%s_usec", key);
        return json_set(o, key_usec, json_integer((json_int_t) MIN(t, (usec_t) INT64_MAX)));
}

static int json_set_strv(json_t *o, const char *key, char *const *l) {
        json_t *a = json_array();

        if (!a)
                return -ENOMEM;
        STRV_FOREACH(s, l)
                if (json_array_append_new(a, json_string(*s)) < 0) {
                        json_decref(a);
                        return -ENOMEM;
                }
        return json_set(o, key, a);
}

static int json_print(json_t *j) {
        if (json_dumpf(j, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0)
                return log_error_errno(EIO, "Failed to write JSON to stdout.");
        return 0;
}

/* jansson may hold the token's secret: wipe every block it frees. */
static void json_free_erase(void *p) {
        if (p)
                explicit_bzero(p, malloc_usable_size(p));
        free(p);
}

/* --- the bus --- */

static int bus_connect(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        r = bus_open_ztna(arg_user, &bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to %s: %m", bus_ztna_description(arg_user));

        /* polkit may then ask for a password instead of refusing outright. */
        r = sd_bus_set_allow_interactive_authorization(bus, arg_ask_password);
        if (r < 0)
                return log_error_errno(r, "Failed to set up interactive authorization: %m");

        *ret = TAKE_PTR(bus);
        return 0;
}

static int bus_new_call(sd_bus *bus, const char *member, sd_bus_message **ret) {
        int r;

        r = sd_bus_message_new_method_call(bus, ret, BUS_NAME, BUS_PATH, BUS_INTERFACE, member);
        if (r < 0)
                return log_error_errno(r, "Failed to create a %s call: %m", member);
        return 0;
}

/* Sends the call; on failure prints "<what>: <the controller's message>". */
static int bus_call(sd_bus *bus, sd_bus_message *call, const char *what, sd_bus_message **ret_reply) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call(bus, call, 0, &error, ret_reply);
        if (r < 0)
                return log_error_errno(r, "Failed to %s: %s", what, bus_error_message(&error, r));
        return 0;
}

static int bus_parse_error(int r) {
        return log_error_errno(r, "Failed to parse the controller's reply: %m");
}

/* --- token --- */

static int token_write_file(const char *path, const char *token) {
        _cleanup_erase_free_ char *content = NULL;

        content = strjoin(token, "\n", NULL);
        if (!content)
                return -ENOMEM;
        return write_file_atomic_full(path, content, strlen(content), 0600, WRITE_FILE_NOREPLACE);
}

/* The file could not be written: the token exists but nobody has it. Revoke it rather than leave a
 * credential nobody knows about. */
static void token_revoke_orphan(sd_bus *bus, const char *id) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;

        if (bus_new_call(bus, "RevokeToken", &call) < 0 || sd_bus_message_append(call, "s", id) < 0 ||
            bus_call(bus, call, "revoke the unsaved token", NULL) < 0)
                log_error("Token %s could not be revoked: revoke it with 'ztnactl token revoke %s'.", id, id);
        else
                log_error("Token %s was revoked.", id);
}

static int verb_token_create(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        const char *token, *id;
        char buf[TIME_STRING_MAX], rel[TIME_STRING_MAX];
        uint64_t expires;
        struct stat st;
        int r;

        /* Refuse early: a token created for a file that cannot be written would be wasted. The write
         * itself is create-only, so this check is a courtesy, not the safeguard. */
        if (arg_output && lstat(arg_output, &st) == 0)
                return log_error_errno(EEXIST, "Refusing to overwrite '%s': it exists.", arg_output);

        r = bus_new_call(bus, "CreateToken", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "sss", arg_role, strempty(arg_id), strempty(arg_network));
        if (r < 0)
                return log_oom();
        r = sd_bus_message_append_strv(call, arg_groups);
        if (r < 0)
                return log_oom();
        r = sd_bus_message_append(call, "t", (uint64_t) arg_ttl);
        if (r < 0)
                return log_oom();

        r = bus_call(bus, call, "create token", &reply);
        if (r < 0)
                return r;
        /* The reply holds the secret: its buffers are wiped when it is freed. */
        (void) sd_bus_message_sensitive(reply);

        r = sd_bus_message_read(reply, "sst", &token, &id, &expires);
        if (r < 0)
                return bus_parse_error(r);

        if (arg_output) {
                r = token_write_file(arg_output, token);
                if (r < 0) {
                        log_error_errno(r, "Failed to write the token to '%s': %m", arg_output);
                        token_revoke_orphan(bus, id);
                        return r;
                }
        }

        if (arg_json) {
                json_auto_t *j = json_object();

                if (!j)
                        return log_oom();
                if ((!arg_output && json_set_string(j, "token", token) < 0) ||
                    json_set_string(j, "id", id) < 0 ||
                    json_set_time(j, "expires", expires) < 0 ||
                    (arg_output && json_set_string(j, "file", arg_output) < 0))
                        return log_oom();
                r = json_print(j);
        } else if (arg_output) {
                printf("Token %s written to '%s', expires %s (%s).\n", id, arg_output,
                       format_time_absolute(buf, expires), format_time_relative(rel, expires, now(CLOCK_REALTIME)));
                r = 0;
        } else {
                /* Only the token on stdout, so that it can be captured; the rest is a hint for humans. */
                printf("%s\n", token);
                if (arg_legend)
                        fprintf(stderr, "Token %s expires %s (%s). It is shown only once.\n", id,
                                format_time_absolute(buf, expires),
                                format_time_relative(rel, expires, now(CLOCK_REALTIME)));
                r = 0;
        }
        if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to stdout: %m");
        return r;
}

typedef struct TokenRow {
        const char *id, *role, *state, *bound_id, *remote_network, *created_by, *used_by;
        char **groups;
        uint64_t created_at, expires_at, used_at, revoked_at;
} TokenRow;

static void token_row_done(TokenRow *row) {
        row->groups = strv_free(row->groups);
}

static int token_row_read(sd_bus_message *reply, TokenRow *row) {
        int r;

        *row = (TokenRow) {};
        r = sd_bus_message_enter_container(reply, 'r', "sssssasstttst");
        if (r <= 0)
                return r;
        r = sd_bus_message_read(reply, "sssss", &row->id, &row->role, &row->state, &row->bound_id,
                                &row->remote_network);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &row->groups);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "stttst", &row->created_by, &row->created_at, &row->expires_at,
                                &row->used_at, &row->used_by, &row->revoked_at);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        return 1;
}

static int token_row_to_json(const TokenRow *row, json_t *array) {
        json_t *o = json_object();

        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "id", row->id) < 0 ||
            json_set_string(o, "role", row->role) < 0 ||
            json_set_string(o, "state", row->state) < 0 ||
            json_set_string(o, "bound_id", empty_or_null(row->bound_id)) < 0 ||
            json_set_string(o, "remote_network", empty_or_null(row->remote_network)) < 0 ||
            json_set_strv(o, "groups", row->groups) < 0 ||
            json_set_string(o, "created_by", empty_or_null(row->created_by)) < 0 ||
            json_set_time(o, "created_at", row->created_at) < 0 ||
            json_set_time(o, "expires_at", row->expires_at) < 0 ||
            json_set_time(o, "used_at", row->used_at) < 0 ||
            json_set_string(o, "used_by", empty_or_null(row->used_by)) < 0 ||
            json_set_time(o, "revoked_at", row->revoked_at) < 0)
                return -ENOMEM;
        return 0;
}

static int token_row_to_table(const TokenRow *row, Table *t, usec_t n) {
        _cleanup_free_ char *groups = NULL;
        char created[TIME_STRING_MAX], expires[TIME_STRING_MAX];

        groups = strv_join(row->groups, ",");
        if (!groups)
                return -ENOMEM;

        return table_add_row(t, row->id, row->role, row->state, row->bound_id, row->remote_network, groups,
                             row->created_by, format_time_absolute(created, row->created_at),
                             format_time_relative(expires, row->expires_at, n), row->used_by);
}

static int verb_token_list(sd_bus *bus, char **args) {
        static const char *const header[] = {
                "ID", "ROLE", "STATE", "BOUND-ID", "NETWORK", "GROUPS", "CREATED-BY", "CREATED", "EXPIRES",
                "USED-BY", NULL,
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(table_done) Table table = {};
        json_auto_t *array = NULL;
        usec_t n = now(CLOCK_REALTIME);
        int r;

        r = bus_new_call(bus, "ListTokens", &call);
        if (r < 0)
                return r;
        r = bus_call(bus, call, "list tokens", &reply);
        if (r < 0)
                return r;

        if (arg_json) {
                array = json_array();
                if (!array)
                        return log_oom();
        } else {
                r = table_new(&table, header);
                if (r < 0)
                        return log_oom();
        }

        r = sd_bus_message_enter_container(reply, 'a', "(sssssasstttst)");
        if (r < 0)
                return bus_parse_error(r);
        for (;;) {
                _cleanup_(token_row_done) TokenRow row = {};

                r = token_row_read(reply, &row);
                if (r < 0)
                        return bus_parse_error(r);
                if (r == 0)
                        break;

                r = arg_json ? token_row_to_json(&row, array) : token_row_to_table(&row, &table, n);
                if (r < 0)
                        return log_error_errno(r, "Failed to format the token list: %m");
        }

        if (arg_json)
                return json_print(array);
        table_print(&table, "token", "tokens");
        return 0;
}

static int verb_token_revoke(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = bus_new_call(bus, "RevokeToken", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "s", args[0]);
        if (r < 0)
                return log_oom();

        return bus_call(bus, call, "revoke token", NULL);
}

/* --- agents --- */

typedef struct AgentRow {
        const char *spiffe_id, *role, *id, *status, *version, *private_ip, *remote_network, *via;
        char **labels, **groups;
        uint64_t last_seen, cert_not_after, enrolled_at, revoked_at;
} AgentRow;

static void agent_row_done(AgentRow *row) {
        row->labels = strv_free(row->labels);
        row->groups = strv_free(row->groups);
}

static int agent_row_read(sd_bus_message *reply, AgentRow *row) {
        int r;

        *row = (AgentRow) {};
        r = sd_bus_message_enter_container(reply, 'r', "ssssssassasstttt");
        if (r <= 0)
                return r;
        r = sd_bus_message_read(reply, "ssssss", &row->spiffe_id, &row->role, &row->id, &row->status,
                                &row->version, &row->private_ip);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &row->labels);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &row->remote_network);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &row->groups);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "stttt", &row->via, &row->last_seen, &row->cert_not_after,
                                &row->enrolled_at, &row->revoked_at);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        return 1;
}

static int agent_row_to_json(const AgentRow *row, json_t *array) {
        json_t *o = json_object();

        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "spiffe_id", row->spiffe_id) < 0 ||
            json_set_string(o, "role", row->role) < 0 ||
            json_set_string(o, "id", row->id) < 0 ||
            json_set_string(o, "status", row->status) < 0 ||
            json_set_string(o, "version", empty_or_null(row->version)) < 0 ||
            json_set_string(o, "private_ip", empty_or_null(row->private_ip)) < 0 ||
            json_set_strv(o, "labels", row->labels) < 0 ||
            json_set_string(o, "remote_network", empty_or_null(row->remote_network)) < 0 ||
            json_set_strv(o, "groups", row->groups) < 0 ||
            json_set_string(o, "via", empty_or_null(row->via)) < 0 ||
            json_set_time(o, "last_seen", row->last_seen) < 0 ||
            json_set_time(o, "cert_not_after", row->cert_not_after) < 0 ||
            json_set_time(o, "enrolled_at", row->enrolled_at) < 0 ||
            json_set_time(o, "revoked_at", row->revoked_at) < 0)
                return -ENOMEM;
        return 0;
}

static int agent_row_to_table(const AgentRow *row, Table *t, usec_t n) {
        _cleanup_free_ char *groups = NULL;
        char seen[TIME_STRING_MAX], expires[TIME_STRING_MAX];

        groups = strv_join(row->groups, ",");
        if (!groups)
                return -ENOMEM;

        /* A tunneler is reached through the connector that forwards its heartbeats: show that one's id. */
        const char *via = row->via ? strrchr(row->via, '/') : NULL;

        return table_add_row(t, row->spiffe_id, row->status, row->version, row->private_ip, row->remote_network,
                             groups, via ? via + 1 : "", row->last_seen > 0 ? format_time_relative(seen, row->last_seen, n) : "never",
                             row->revoked_at > 0 ? "-" : format_time_relative(expires, row->cert_not_after, n));
}

static int verb_agents_list(sd_bus *bus, char **args) {
        static const char *const header[] = {
                "SPIFFE-ID", "STATUS", "VERSION", "ADDRESS", "NETWORK", "GROUPS", "VIA", "LAST-SEEN",
                "CERT-EXPIRES", NULL,
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(table_done) Table table = {};
        json_auto_t *array = NULL;
        usec_t n = now(CLOCK_REALTIME);
        int r;

        r = bus_new_call(bus, "ListAgents", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "s", strempty(arg_role));
        if (r < 0)
                return log_oom();
        r = bus_call(bus, call, "list agents", &reply);
        if (r < 0)
                return r;

        if (arg_json) {
                array = json_array();
                if (!array)
                        return log_oom();
        } else {
                r = table_new(&table, header);
                if (r < 0)
                        return log_oom();
        }

        r = sd_bus_message_enter_container(reply, 'a', "(ssssssassasstttt)");
        if (r < 0)
                return bus_parse_error(r);
        for (;;) {
                _cleanup_(agent_row_done) AgentRow row = {};

                r = agent_row_read(reply, &row);
                if (r < 0)
                        return bus_parse_error(r);
                if (r == 0)
                        break;

                r = arg_json ? agent_row_to_json(&row, array) : agent_row_to_table(&row, &table, n);
                if (r < 0)
                        return log_error_errno(r, "Failed to format the agent list: %m");
        }

        if (arg_json)
                return json_print(array);
        table_print(&table, "agent", "agents");
        return 0;
}

static int verb_agents_revoke(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = bus_new_call(bus, "RevokeAgent", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "ss", args[0], strempty(arg_reason));
        if (r < 0)
                return log_oom();

        return bus_call(bus, call, "revoke agent", NULL);
}

static int verb_agents_renew(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        uint32_t n;
        int r;

        r = bus_new_call(bus, "RequestRenewal", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "s", args[0]);
        if (r < 0)
                return log_oom();
        r = bus_call(bus, call, "request a renewal", &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "u", &n);
        if (r < 0)
                return bus_parse_error(r);

        if (arg_json) {
                _cleanup_(json_decrefp) json_t *j = json_pack("{s:I}", "streams_told", (json_int_t) n);

                if (!j)
                        return log_oom();
                return json_print(j);
        }
        if (n == 0)
                printf("'%s' has no live control stream: it renews on its own schedule.\n", args[0]);
        else
                printf("Asked '%s' to renew its certificate now.\n", args[0]);
        return 0;
}

/* --- ca --- */

typedef struct CaRow {
        const char *fingerprint, *kind, *state, *parent;
        uint64_t not_before, not_after;
        const void *certificate;
        size_t certificate_size;
} CaRow;

static int ca_row_read(sd_bus_message *reply, CaRow *row) {
        int r;

        *row = (CaRow) {};
        r = sd_bus_message_enter_container(reply, 'r', "ssssttay");
        if (r <= 0)
                return r;
        r = sd_bus_message_read(reply, "sssstt", &row->fingerprint, &row->kind, &row->state, &row->parent,
                                &row->not_before, &row->not_after);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(reply, 'y', &row->certificate, &row->certificate_size);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        return 1;
}

static int ca_row_to_json(const CaRow *row, json_t *array) {
        _cleanup_free_ char *der = NULL;
        json_t *o;

        if (base64_encode(row->certificate, row->certificate_size, &der) < 0)
                return -ENOMEM;

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "fingerprint", row->fingerprint) < 0 ||
            json_set_string(o, "kind", row->kind) < 0 ||
            json_set_string(o, "state", row->state) < 0 ||
            json_set_string(o, "parent", empty_or_null(row->parent)) < 0 ||
            json_set_time(o, "not_before", row->not_before) < 0 ||
            json_set_time(o, "not_after", row->not_after) < 0 ||
            json_set_string(o, "certificate", der) < 0)
                return -ENOMEM;
        return 0;
}

static int ca_row_to_table(const CaRow *row, Table *t) {
        char parent[17], not_after[TIME_STRING_MAX];

        /* A prefix is enough to tell which root an issuing CA belongs to; the full value is in --json. */
        snprintf(parent, sizeof(parent), "%s", row->parent);

        return table_add_row(t, row->kind, row->state, row->fingerprint, parent,
                             format_time_absolute(not_after, row->not_after));
}

typedef struct ControllerInfo {
        char *trust_domain, *controller_id, *version, *root_fingerprint;
        char **addresses;
        uint32_t control_streams;
} ControllerInfo;

static void controller_info_done(ControllerInfo *i) {
        free(i->trust_domain);
        free(i->controller_id);
        free(i->version);
        free(i->root_fingerprint);
        strv_free(i->addresses);
        *i = (ControllerInfo) {};
}

static int controller_info_get(sd_bus *bus, ControllerInfo *ret) {
        _cleanup_(controller_info_done) ControllerInfo i = {};
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        const struct {
                const char *name;
                char **value;
        } strings[] = {
                { "TrustDomain", &i.trust_domain },
                { "ControllerId", &i.controller_id },
                { "Version", &i.version },
                { "RootFingerprint", &i.root_fingerprint },
        };
        int r;

        for (size_t k = 0; k < ELEMENTSOF(strings); k++) {
                r = sd_bus_get_property_string(bus, BUS_NAME, BUS_PATH, BUS_INTERFACE, strings[k].name, &error,
                                               strings[k].value);
                if (r < 0)
                        return log_error_errno(r, "Failed to read the controller's %s: %s", strings[k].name,
                                               bus_error_message(&error, r));
        }
        r = sd_bus_get_property_strv(bus, BUS_NAME, BUS_PATH, BUS_INTERFACE, "AdvertisedAddresses", &error,
                                     &i.addresses);
        if (r < 0)
                return log_error_errno(r, "Failed to read the controller's AdvertisedAddresses: %s",
                                       bus_error_message(&error, r));
        r = sd_bus_get_property_trivial(bus, BUS_NAME, BUS_PATH, BUS_INTERFACE, "ControlStreams", &error, 'u',
                                        &i.control_streams);
        if (r < 0)
                return log_error_errno(r, "Failed to read the controller's ControlStreams: %s",
                                       bus_error_message(&error, r));

        *ret = i;
        i = (ControllerInfo) {};
        return 0;
}

static int verb_ca_status(sd_bus *bus, char **args) {
        static const char *const header[] = { "KIND", "STATE", "FINGERPRINT", "PARENT", "NOT-AFTER", NULL };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(controller_info_done) ControllerInfo info = {};
        _cleanup_(table_done) Table table = {};
        _cleanup_free_ char *addresses = NULL;
        json_auto_t *array = NULL, *j = NULL;
        bool rotating = false;
        int r;

        r = controller_info_get(bus, &info);
        if (r < 0)
                return r;

        r = bus_new_call(bus, "ListCAs", &call);
        if (r < 0)
                return r;
        r = bus_call(bus, call, "list certificate authorities", &reply);
        if (r < 0)
                return r;

        if (arg_json) {
                array = json_array();
                if (!array)
                        return log_oom();
        } else {
                r = table_new(&table, header);
                if (r < 0)
                        return log_oom();
        }

        r = sd_bus_message_enter_container(reply, 'a', "(ssssttay)");
        if (r < 0)
                return bus_parse_error(r);
        for (;;) {
                CaRow row;

                r = ca_row_read(reply, &row);
                if (r < 0)
                        return bus_parse_error(r);
                if (r == 0)
                        break;

                /* A staged root (step 1) or a retiring one (step 2) is a rotation under way. */
                if (streq(row.kind, "root") && (streq(row.state, "staged") || streq(row.state, "retiring")))
                        rotating = true;

                r = arg_json ? ca_row_to_json(&row, array) : ca_row_to_table(&row, &table);
                if (r < 0)
                        return log_error_errno(r, "Failed to format the CA list: %m");
        }

        if (arg_json) {
                j = json_object();
                if (!j)
                        return log_oom();
                if (json_set_string(j, "trust_domain", info.trust_domain) < 0 ||
                    json_set_string(j, "controller_id", info.controller_id) < 0 ||
                    json_set_string(j, "version", info.version) < 0 ||
                    json_set_strv(j, "advertised_addresses", info.addresses) < 0 ||
                    json_set_string(j, "root_fingerprint", info.root_fingerprint) < 0 ||
                    json_set(j, "control_streams", json_integer(info.control_streams)) < 0 ||
                    json_set(j, "rotation_in_progress", json_boolean(rotating)) < 0 ||
                    json_set(j, "cas", json_incref(array)) < 0)
                        return log_oom();
                return json_print(j);
        }

        addresses = strv_join(info.addresses, " ");
        if (!addresses)
                return log_oom();

        if (arg_legend) {
                printf("    Trust domain: %s\n"
                       "      Controller: %s (version %s)\n"
                       "       Addresses: %s\n"
                       "Root fingerprint: %s\n"
                       " Control streams: %" PRIu32 "\n"
                       "   Root rotation: %s\n\n",
                       info.trust_domain, info.controller_id, info.version, addresses, info.root_fingerprint,
                       info.control_streams, rotating ? "in progress" : "none");
        }
        table_print(&table, "certificate authority", "certificate authorities");
        return 0;
}

static int verb_ca_rotate(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        int r;

        r = bus_new_call(bus, "RotateRootCA", &call);
        if (r < 0)
                return r;
        r = bus_call(bus, call, "start a root CA rotation", NULL);
        if (r < 0)
                return r;

        if (arg_legend && !arg_json)
                printf("Root CA rotation started: the new root is in the trust bundle and takes over once every "
                       "agent has renewed.\n");
        return 0;
}

/* --- the access policy: network, resource, group, policy --- */

/* A call whose reply carries nothing: member(args…) and the error, if any, printed as "Failed to <what>: …".
 * Quiet on success, as the other verbs that change something. */
static int policy_call(sd_bus *bus, const char *member, const char *what, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        va_list ap;
        int r;

        r = bus_new_call(bus, member, &call);
        if (r < 0)
                return r;
        va_start(ap, types);
        r = sd_bus_message_appendv(call, types, ap);
        va_end(ap);
        if (r < 0)
                return log_oom();

        return bus_call(bus, call, what, NULL);
}

/* Lists one kind of object: call member (with network as its argument when not NULL), read each row with
 * read_row into a table or JSON. Rows are read by the caller's callback so each keeps its own types. */
typedef int (*ListRowFunc)(sd_bus_message *reply, Table *t, json_t *array);

static int policy_list(sd_bus *bus, const char *member, const char *network, const char *what,
                       const char *row_signature, const char *const *header, ListRowFunc read_row,
                       const char *noun_singular, const char *noun_plural) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(table_done) Table table = {};
        json_auto_t *array = NULL;
        char container[32];
        int r;

        r = bus_new_call(bus, member, &call);
        if (r < 0)
                return r;
        if (network) {
                r = sd_bus_message_append(call, "s", network);
                if (r < 0)
                        return log_oom();
        }
        r = bus_call(bus, call, what, &reply);
        if (r < 0)
                return r;

        if (arg_json) {
                array = json_array();
                if (!array)
                        return log_oom();
        } else {
                r = table_new(&table, header);
                if (r < 0)
                        return log_oom();
        }

        snprintf(container, sizeof(container), "(%s)", row_signature);
        r = sd_bus_message_enter_container(reply, 'a', container);
        if (r < 0)
                return bus_parse_error(r);
        for (;;) {
                r = sd_bus_message_enter_container(reply, 'r', row_signature);
                if (r < 0)
                        return bus_parse_error(r);
                if (r == 0)
                        break;
                r = read_row(reply, arg_json ? NULL : &table, array);
                if (r == -ENOMEM || r == -E2BIG)
                        return log_error_errno(r, "Failed to format the list: %m");
                if (r < 0)
                        return bus_parse_error(r);
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return bus_parse_error(r);
        }

        if (arg_json)
                return json_print(array);
        table_print(&table, noun_singular, noun_plural);
        return 0;
}

/* network */

static int verb_network_create(sd_bus *bus, char **args) {
        return policy_call(bus, "CreateNetwork", "create network", "ss", args[0], strempty(arg_description));
}

static int verb_network_delete(sd_bus *bus, char **args) {
        return policy_call(bus, "DeleteNetwork", "delete network", "s", args[0]);
}

static int network_row(sd_bus_message *reply, Table *t, json_t *array) {
        const char *name, *description;
        char created[TIME_STRING_MAX];
        uint64_t created_at;
        json_t *o;
        int r;

        r = sd_bus_message_read(reply, "sst", &name, &description, &created_at);
        if (r < 0)
                return r;

        if (t)
                return table_add_row(t, name, description, format_time_absolute(created, created_at));

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "name", name) < 0 ||
            json_set_string(o, "description", empty_or_null(description)) < 0 ||
            json_set_time(o, "created_at", created_at) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_network_list(sd_bus *bus, char **args) {
        static const char *const header[] = { "NAME", "DESCRIPTION", "CREATED", NULL };

        return policy_list(bus, "ListNetworks", NULL, "list networks", "sst", header, network_row, "network",
                           "networks");
}

/* resource */

static int verb_resource_create(sd_bus *bus, char **args) {
        return policy_call(bus, "CreateResource", "create resource", "ssssss", args[0], arg_address,
                           strempty(arg_protocol), strempty(arg_ports), arg_network, strempty(arg_alias));
}

typedef struct ResourceRow {
        const char *name, *address, *protocol, *ports, *network, *alias;
        char **groups;
} ResourceRow;

static int resource_row_read(sd_bus_message *reply, ResourceRow *row) {
        int r;

        r = sd_bus_message_read(reply, "ssssss", &row->name, &row->address, &row->protocol, &row->ports,
                                &row->network, &row->alias);
        if (r < 0)
                return r;
        return sd_bus_message_read_strv(reply, &row->groups);
}

/* The resource as the controller has it now; NULL *ret_reply when there is none. Strings point into the
 * reply. */
static int resource_get(sd_bus *bus, const char *name, sd_bus_message **ret_reply, ResourceRow *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        int r;

        r = bus_new_call(bus, "ListResources", &call);
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "s", "");
        if (r < 0)
                return log_oom();
        r = bus_call(bus, call, "read the resource", &reply);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "(ssssssas)");
        if (r < 0)
                return bus_parse_error(r);
        for (;;) {
                ResourceRow row = {};

                r = sd_bus_message_enter_container(reply, 'r', "ssssssas");
                if (r < 0)
                        return bus_parse_error(r);
                if (r == 0)
                        break;
                r = resource_row_read(reply, &row);
                if (r < 0)
                        return bus_parse_error(r);
                row.groups = strv_free(row.groups);
                if (streq(row.name, name)) {
                        *ret = row;
                        *ret_reply = TAKE_PTR(reply);
                        return 0;
                }
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return bus_parse_error(r);
        }

        *ret = (ResourceRow) {};
        *ret_reply = NULL;
        return 0;
}

/* Only what is given changes: the rest is read from the controller first (so this needs the read action
 * too, and a concurrent change of another field between the read and the update is overwritten). */
static int verb_resource_update(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *current_reply = NULL;
        ResourceRow current;
        int r;

        r = resource_get(bus, args[0], &current_reply, &current);
        if (r < 0)
                return r;
        if (!current_reply)
                return log_error_errno(ENOENT, "Failed to update resource: No resource '%s'.", args[0]);

        return policy_call(bus, "UpdateResource", "update resource", "ssssss", args[0],
                           arg_given & OPT_ADDRESS ? arg_address : current.address,
                           arg_given & OPT_PROTOCOL ? arg_protocol : current.protocol,
                           arg_given & OPT_PORTS ? arg_ports : current.ports,
                           arg_given & OPT_NETWORK ? arg_network : current.network,
                           arg_given & OPT_ALIAS ? arg_alias : current.alias);
}

static int verb_resource_delete(sd_bus *bus, char **args) {
        return policy_call(bus, "DeleteResource", "delete resource", "s", args[0]);
}

static void resource_row_done(ResourceRow *row) {
        row->groups = strv_free(row->groups);
}

static int resource_row(sd_bus_message *reply, Table *t, json_t *array) {
        _cleanup_(resource_row_done) ResourceRow row = {};
        _cleanup_free_ char *groups = NULL;
        json_t *o;
        int r;

        r = resource_row_read(reply, &row);
        if (r < 0)
                return r;

        if (t) {
                groups = strv_join(row.groups, ",");
                if (!groups)
                        return -ENOMEM;
                return table_add_row(t, row.name, row.address, row.protocol, row.ports, row.network,
                                     row.alias, groups);
        }

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "name", row.name) < 0 ||
            json_set_string(o, "address", row.address) < 0 ||
            json_set_string(o, "protocol", row.protocol) < 0 ||
            json_set_string(o, "ports", row.ports) < 0 ||
            json_set_string(o, "network", row.network) < 0 ||
            json_set_string(o, "alias", empty_or_null(row.alias)) < 0 ||
            json_set_strv(o, "groups", row.groups) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_resource_list(sd_bus *bus, char **args) {
        static const char *const header[] = {
                "NAME", "ADDRESS", "PROTOCOL", "PORTS", "NETWORK", "ALIAS", "GROUPS", NULL,
        };

        return policy_list(bus, "ListResources", strempty(arg_network), "list resources", "ssssssas", header,
                           resource_row, "resource", "resources");
}

/* group */

static int verb_group_create(sd_bus *bus, char **args) {
        return policy_call(bus, "CreateGroup", "create group", "ss", args[0], strempty(arg_description));
}

static int verb_group_delete(sd_bus *bus, char **args) {
        return policy_call(bus, "DeleteGroup", "delete group", "s", args[0]);
}

static int verb_group_add_member(sd_bus *bus, char **args) {
        return policy_call(bus, "AddGroupMember", "add group member", "ss", args[0], args[1]);
}

static int verb_group_remove_member(sd_bus *bus, char **args) {
        return policy_call(bus, "RemoveGroupMember", "remove group member", "ss", args[0], args[1]);
}

static int group_row(sd_bus_message *reply, Table *t, json_t *array) {
        _cleanup_strv_free_ char **members = NULL, **resources = NULL;
        _cleanup_free_ char *m = NULL, *res = NULL;
        const char *name, *description;
        json_t *o;
        int r;

        r = sd_bus_message_read(reply, "ss", &name, &description);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &members);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &resources);
        if (r < 0)
                return r;

        if (t) {
                m = strv_join(members, ",");
                res = strv_join(resources, ",");
                if (!m || !res)
                        return -ENOMEM;
                return table_add_row(t, name, description, m, res);
        }

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "name", name) < 0 ||
            json_set_string(o, "description", empty_or_null(description)) < 0 ||
            json_set_strv(o, "members", members) < 0 ||
            json_set_strv(o, "resources", resources) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_group_list(sd_bus *bus, char **args) {
        static const char *const header[] = { "NAME", "DESCRIPTION", "MEMBERS", "RESOURCES", NULL };

        return policy_list(bus, "ListGroups", NULL, "list groups", "ssasas", header, group_row, "group",
                           "groups");
}

/* policy */

static int verb_policy_create(sd_bus *bus, char **args) {
        return policy_call(bus, "CreatePolicy", "create policy", "ss", args[0], args[1]);
}

static int verb_policy_delete(sd_bus *bus, char **args) {
        return policy_call(bus, "DeletePolicy", "delete policy", "ss", args[0], args[1]);
}

static int policy_row(sd_bus_message *reply, Table *t, json_t *array) {
        const char *group, *resource;
        char created[TIME_STRING_MAX];
        uint64_t created_at;
        json_t *o;
        int r;

        r = sd_bus_message_read(reply, "sst", &group, &resource, &created_at);
        if (r < 0)
                return r;

        if (t)
                return table_add_row(t, group, resource, format_time_absolute(created, created_at));

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "group", group) < 0 ||
            json_set_string(o, "resource", resource) < 0 ||
            json_set_time(o, "created_at", created_at) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_policy_list(sd_bus *bus, char **args) {
        static const char *const header[] = { "GROUP", "RESOURCE", "CREATED", NULL };

        return policy_list(bus, "ListPolicies", NULL, "list policies", "sst", header, policy_row, "policy",
                           "policies");
}

/* --- administrators of the controller's API and dashboard --- */

/* The new password for admin `name` (ask_new_password(): typed twice at the terminal without echo when
 * stdin is one, else read from stdin — never from the command line). The controller judges it and says
 * which rule it breaks. *ret must be released with erase_and_free_string(). */
static int admin_password_get(const char *name, char **ret) {
        _cleanup_free_ char *prompt = NULL;

        prompt = strjoin("New password for admin '", name, "': ", NULL);
        if (!prompt)
                return log_oom();
        return ask_new_password(prompt, ret);
}

/* CreateAdmin or SetAdminPassword: the password travels in a message marked sensitive, which sd-bus wipes
 * when it is freed. */
static int admin_set_password(sd_bus *bus, const char *member, const char *name, const char *what) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_(erase_and_free_stringp) char *password = NULL;
        int r;

        r = admin_password_get(name, &password);
        if (r < 0)
                return r;

        r = bus_new_call(bus, member, &call);
        if (r < 0)
                return r;
        r = sd_bus_message_sensitive(call);
        if (r < 0)
                return log_error_errno(r, "Failed to mark the %s call sensitive: %m", member);
        r = sd_bus_message_append(call, "ss", name, password);
        if (r < 0)
                return log_oom();
        password = erase_and_free_string(password);

        return bus_call(bus, call, what, NULL);
}

static int verb_admin_create(sd_bus *bus, char **args) {
        return admin_set_password(bus, "CreateAdmin", args[0], "create admin");
}

static int verb_admin_passwd(sd_bus *bus, char **args) {
        return admin_set_password(bus, "SetAdminPassword", args[0], "set the password");
}

static int verb_admin_delete(sd_bus *bus, char **args) {
        return policy_call(bus, "DeleteAdmin", "delete admin", "s", args[0]);
}

static int admin_row(sd_bus_message *reply, Table *t, json_t *array) {
        const char *name, *created_by;
        uint64_t created_at, password_changed_at, last_login_at, disabled_at;
        char created[TIME_STRING_MAX], changed[TIME_STRING_MAX], login[TIME_STRING_MAX];
        const char *state;
        json_t *o;
        int r;

        r = sd_bus_message_read(reply, "sstttt", &name, &created_by, &created_at, &password_changed_at,
                                &last_login_at, &disabled_at);
        if (r < 0)
                return r;
        state = disabled_at > 0 ? "disabled" : "active";

        if (t)
                return table_add_row(t, name, state, created_by, format_time_absolute(created, created_at),
                                     format_time_absolute(changed, password_changed_at),
                                     format_time_absolute(login, last_login_at));

        o = json_object();
        if (!o || json_array_append_new(array, o) < 0)
                return -ENOMEM;
        if (json_set_string(o, "name", name) < 0 ||
            json_set_string(o, "state", state) < 0 ||
            json_set_string(o, "created_by", empty_or_null(created_by)) < 0 ||
            json_set_time(o, "created_at", created_at) < 0 ||
            json_set_time(o, "password_changed_at", password_changed_at) < 0 ||
            json_set_time(o, "last_login_at", last_login_at) < 0 ||
            json_set_time(o, "disabled_at", disabled_at) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_admin_list(sd_bus *bus, char **args) {
        static const char *const header[] = {
                "NAME", "STATE", "CREATED-BY", "CREATED", "PASSWORD-CHANGED", "LAST-LOGIN", NULL,
        };

        return policy_list(bus, "ListAdmins", NULL, "list admins", "sstttt", header, admin_row, "admin",
                           "admins");
}

/* --- the agents on this host (status, health) --- */

/* Read-only: GetAll is open to everyone by the agents' bus policy, so no polkit and no password. */

typedef struct AgentDaemon {
        const char *role;       /* the command-line argument and the JSON key */
        const char *unit;       /* how the administrator knows it */
        const char *bus_name;   /* = its interface */
        const char *bus_path;
} AgentDaemon;

static const AgentDaemon agent_daemons[] = {
        { "connector", "ztna-connector", "org.ztna.Connector1", "/org/ztna/Connector1" },
        { "tunneler", "ztna-tunneler", "org.ztna.Tunneler1", "/org/ztna/Tunneler1" },
};

/* systemctl status's exit status for "not running" (LSB: program is not running). */
#define EXIT_NOT_RUNNING 3

/* What GetAll said. Strings point into the reply, which outlives the struct. */
typedef struct AgentStatus {
        const char *state, *id, *spiffe_id, *trust_domain, *remote_network, *controller, *last_error, *version;
        char **groups, **controllers;
        uint64_t not_before, not_after, last_heartbeat;
        uint64_t renewals, renewal_failures, reconnects, streams_active, streams_total, bytes_in, bytes_out,
                denials;
        uint32_t peers;
} AgentStatus;

static void agent_status_done(AgentStatus *s) {
        strv_free(s->groups);
        strv_free(s->controllers);
        *s = (AgentStatus) {};
}

/* The properties we show, by D-Bus type; others (a newer daemon's) are skipped. */
static const struct {
        const char *name;
        char type;
        size_t offset;
} agent_status_properties[] = {
        { "State", 's', offsetof(AgentStatus, state) },
        { "Id", 's', offsetof(AgentStatus, id) },
        { "SpiffeId", 's', offsetof(AgentStatus, spiffe_id) },
        { "TrustDomain", 's', offsetof(AgentStatus, trust_domain) },
        { "RemoteNetwork", 's', offsetof(AgentStatus, remote_network) },
        { "Groups", 'a', offsetof(AgentStatus, groups) },
        { "Controllers", 'a', offsetof(AgentStatus, controllers) },
        { "Controller", 's', offsetof(AgentStatus, controller) },
        { "CertificateNotBefore", 't', offsetof(AgentStatus, not_before) },
        { "CertificateNotAfter", 't', offsetof(AgentStatus, not_after) },
        { "LastHeartbeat", 't', offsetof(AgentStatus, last_heartbeat) },
        { "LastError", 's', offsetof(AgentStatus, last_error) },
        { "Version", 's', offsetof(AgentStatus, version) },
        { "Renewals", 't', offsetof(AgentStatus, renewals) },
        { "RenewalFailures", 't', offsetof(AgentStatus, renewal_failures) },
        { "Reconnects", 't', offsetof(AgentStatus, reconnects) },
        { "StreamsActive", 't', offsetof(AgentStatus, streams_active) },
        { "StreamsTotal", 't', offsetof(AgentStatus, streams_total) },
        { "BytesIn", 't', offsetof(AgentStatus, bytes_in) },
        { "BytesOut", 't', offsetof(AgentStatus, bytes_out) },
        { "Denials", 't', offsetof(AgentStatus, denials) },
        { "Peers", 'u', offsetof(AgentStatus, peers) },
};

static int agent_status_read_property(sd_bus_message *reply, AgentStatus *s) {
        const char *name;
        int r;

        r = sd_bus_message_read(reply, "s", &name);
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(agent_status_properties); i++) {
                void *p = (uint8_t *) s + agent_status_properties[i].offset;
                char type = agent_status_properties[i].type;

                if (!streq(agent_status_properties[i].name, name))
                        continue;

                /* A property of another type is an error (-ENXIO), not something to guess about. */
                r = sd_bus_message_enter_container(reply, 'v', type == 'a' ? "as" : (char[]) { type, 0 });
                if (r < 0)
                        return r;
                if (type == 'a') {
                        *(char ***) p = strv_free(*(char ***) p);
                        r = sd_bus_message_read_strv(reply, (char ***) p);
                } else
                        r = sd_bus_message_read_basic(reply, type, p);
                if (r < 0)
                        return r;
                return sd_bus_message_exit_container(reply);
        }

        return sd_bus_message_skip(reply, "v");
}

static int agent_status_parse(sd_bus_message *reply, AgentStatus *s) {
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = agent_status_read_property(reply, s);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(reply);
}

/* *ret_reply = NULL (and 0) when the daemon is not on the bus. The daemon is never started for this. */
static int agent_status_get(sd_bus *bus, const AgentDaemon *d, sd_bus_message **ret_reply, AgentStatus *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(agent_status_done) AgentStatus s = {};
        int r;

        r = sd_bus_message_new_method_call(bus, &call, d->bus_name, d->bus_path, "org.freedesktop.DBus.Properties",
                                           "GetAll");
        if (r < 0)
                return log_error_errno(r, "Failed to create a GetAll call: %m");
        r = sd_bus_message_append(call, "s", d->bus_name);
        if (r < 0)
                return log_oom();
        r = sd_bus_message_set_auto_start(call, false);
        if (r < 0)
                return log_error_errno(r, "Failed to create a GetAll call: %m");

        r = sd_bus_call(bus, call, 0, &error, &reply);
        if (r < 0) {
                if (sd_bus_error_has_names(&error, SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_SERVICE_UNKNOWN)) {
                        *ret_reply = NULL;
                        *ret = (AgentStatus) {};
                        return 0;
                }
                return log_error_errno(r, "Failed to read the state of %s: %s", d->unit,
                                       bus_error_message(&error, r));
        }

        r = agent_status_parse(reply, &s);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the state of %s: %m", d->unit);

        *ret_reply = TAKE_PTR(reply);
        *ret = s;
        s = (AgentStatus) {};
        return 1;
}

/* "Sat 2026-11-21 22:30:00 CET", local time as systemctl shows it; "-" for 0. */
static const char *format_time_local(char buf[static TIME_STRING_MAX], usec_t t) {
        struct tm tm;
        time_t sec;

        if (t == 0 || t == USEC_INFINITY || t / USEC_PER_SEC > (usec_t) INT64_MAX)
                return "-";
        sec = (time_t) (t / USEC_PER_SEC);
        if (!localtime_r(&sec, &tm) || strftime(buf, TIME_STRING_MAX, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                return "-";
        return buf;
}

/* "  Label: value", the value made safe for a terminal (the daemon relays the controller's words). */
static void agent_status_print_field(const char *label, const char *value) {
        _cleanup_free_ char *v = sanitize_cell(value);

        printf("%16s: %s\n", label, v ?: "-");
}

static int agent_status_print(const AgentDaemon *d, const AgentStatus *s) {
        char when[TIME_STRING_MAX], rel[TIME_STRING_MAX], line[2 * TIME_STRING_MAX + 64];
        _cleanup_free_ char *list = NULL;
        usec_t n = now(CLOCK_REALTIME);

        printf("%s (%s)\n", d->unit, d->bus_name);
        agent_status_print_field("State", s->state);
        agent_status_print_field("Id", s->id);
        agent_status_print_field("SPIFFE ID", s->spiffe_id);
        if (!isempty(s->remote_network))
                agent_status_print_field("Remote network", s->remote_network);
        if (strv_length(s->groups) > 0) {
                list = strv_join(s->groups, ", ");
                if (!list)
                        return log_oom();
                agent_status_print_field("Groups", list);
        }
        agent_status_print_field("Controller", s->controller);

        if (s->not_after == 0)
                snprintf(line, sizeof(line), "none");
        else
                snprintf(line, sizeof(line), "%s %s (%s)", s->not_after > n ? "valid until" : "expired",
                         format_time_local(when, s->not_after), format_time_relative(rel, s->not_after, n));
        agent_status_print_field("Certificate", line);

        agent_status_print_field("Last heartbeat",
                                 s->last_heartbeat == 0 ? "never" : format_time_relative(rel, s->last_heartbeat, n));

        snprintf(line, sizeof(line), "%" PRIu64 " (%" PRIu64 " failed)", s->renewals, s->renewal_failures);
        agent_status_print_field("Renewals", line);
        snprintf(line, sizeof(line), "%" PRIu64, s->reconnects);
        agent_status_print_field("Reconnects", line);
        snprintf(line, sizeof(line), "%" PRIu64 " active, %" PRIu64 " total", s->streams_active,
                 s->streams_total);
        agent_status_print_field("Streams", line);
        agent_status_print_field("Version", s->version);
        agent_status_print_field("Last error", s->last_error);
        return 0;
}

static int json_set_counter(json_t *o, const char *key, uint64_t value) {
        return json_set(o, key, json_integer((json_int_t) MIN(value, (uint64_t) INT64_MAX)));
}

static json_t *agent_status_to_json(const AgentStatus *s) {
        json_auto_t *j = json_object();

        if (!j)
                return NULL;
        if (json_set_string(j, "state", empty_or_null(s->state)) < 0 ||
            json_set_string(j, "id", empty_or_null(s->id)) < 0 ||
            json_set_string(j, "spiffe_id", empty_or_null(s->spiffe_id)) < 0 ||
            json_set_string(j, "trust_domain", empty_or_null(s->trust_domain)) < 0 ||
            json_set_string(j, "remote_network", empty_or_null(s->remote_network)) < 0 ||
            json_set_strv(j, "groups", s->groups) < 0 ||
            json_set_strv(j, "controllers", s->controllers) < 0 ||
            json_set_string(j, "controller", empty_or_null(s->controller)) < 0 ||
            json_set_time(j, "certificate_not_before", s->not_before) < 0 ||
            json_set_time(j, "certificate_not_after", s->not_after) < 0 ||
            json_set_time(j, "last_heartbeat", s->last_heartbeat) < 0 ||
            json_set_string(j, "last_error", empty_or_null(s->last_error)) < 0 ||
            json_set_string(j, "version", empty_or_null(s->version)) < 0 ||
            json_set_counter(j, "renewals", s->renewals) < 0 ||
            json_set_counter(j, "renewal_failures", s->renewal_failures) < 0 ||
            json_set_counter(j, "reconnects", s->reconnects) < 0 ||
            json_set_counter(j, "streams_active", s->streams_active) < 0 ||
            json_set_counter(j, "streams_total", s->streams_total) < 0 ||
            json_set_counter(j, "bytes_in", s->bytes_in) < 0 ||
            json_set_counter(j, "bytes_out", s->bytes_out) < 0 ||
            json_set_counter(j, "denials", s->denials) < 0 ||
            json_set_counter(j, "peers", s->peers) < 0)
                return NULL;
        return TAKE_PTR(j);
}

/* The daemons a status or health command asks about: the one named, or both. */
static int agent_daemons_select(char **args, const AgentDaemon **ret_first, size_t *ret_n) {
        if (strv_length(args) == 0) {
                *ret_first = agent_daemons;
                *ret_n = ELEMENTSOF(agent_daemons);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(agent_daemons); i++)
                if (streq(args[0], agent_daemons[i].role)) {
                        *ret_first = &agent_daemons[i];
                        *ret_n = 1;
                        return 0;
                }
        return -EINVAL;
}

/* Exit status: 0 when every daemon asked for runs (without an argument: at least one), else 3. */
static int verb_status(sd_bus *bus, char **args) {
        json_auto_t *j = NULL;
        const AgentDaemon *daemons;
        size_t n, n_running = 0;
        int r;

        r = agent_daemons_select(args, &daemons, &n);
        assert(r >= 0);

        if (arg_json) {
                j = json_object();
                if (!j)
                        return log_oom();
        }

        for (size_t i = 0; i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(agent_status_done) AgentStatus s = {};
                const AgentDaemon *d = &daemons[i];

                r = agent_status_get(bus, d, &reply, &s);
                if (r < 0)
                        return r;
                if (r > 0)
                        n_running++;

                if (arg_json) {
                        json_t *o = NULL;

                        if (r > 0) {
                                o = agent_status_to_json(&s);
                                if (!o)
                                        return log_oom();
                        }
                        if (json_set(j, d->role, o ?: json_null()) < 0)
                                return log_oom();
                        continue;
                }

                if (i > 0)
                        putchar('\n');
                if (r == 0) {
                        printf("%s: not running\n", d->unit);
                        continue;
                }
                r = agent_status_print(d, &s);
                if (r < 0)
                        return r;
        }

        if (arg_json) {
                r = json_print(j);
                if (r < 0)
                        return r;
        } else if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to stdout: %m");

        if (n_running == n || (strv_length(args) == 0 && n_running > 0))
                return EXIT_SUCCESS;
        return EXIT_NOT_RUNNING;
}

/* Exit status: 0 when every daemon asked for is online (without an argument: every running one, and at
 * least one runs), else 1. */
static int verb_health(sd_bus *bus, char **args) {
        json_auto_t *j = NULL;
        const AgentDaemon *daemons;
        size_t n, n_running = 0, n_online = 0;
        int r;

        r = agent_daemons_select(args, &daemons, &n);
        assert(r >= 0);

        if (arg_json) {
                j = json_object();
                if (!j)
                        return log_oom();
        }

        for (size_t i = 0; i < n; i++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                _cleanup_(agent_status_done) AgentStatus s = {};
                _cleanup_free_ char *state = NULL, *why = NULL;
                const AgentDaemon *d = &daemons[i];
                bool online;

                r = agent_status_get(bus, d, &reply, &s);
                if (r < 0)
                        return r;
                if (r > 0)
                        n_running++;
                online = r > 0 && streq_ptr(s.state, "online");
                if (online)
                        n_online++;

                if (arg_json) {
                        json_t *o = NULL;

                        if (r > 0) {
                                o = json_object();
                                if (!o || json_set_string(o, "state", empty_or_null(s.state)) < 0 ||
                                    json_set(o, "healthy", json_boolean(online)) < 0 ||
                                    json_set_string(o, "last_error", empty_or_null(s.last_error)) < 0) {
                                        json_decref(o);
                                        return log_oom();
                                }
                        }
                        if (json_set(j, d->role, o ?: json_null()) < 0)
                                return log_oom();
                        continue;
                }

                if (r == 0) {
                        printf("%s: not running\n", d->role);
                        continue;
                }
                state = sanitize_cell(s.state);
                if (!state)
                        return log_oom();
                if (online || isempty(s.last_error)) {
                        printf("%s: %s\n", d->role, state);
                        continue;
                }
                why = sanitize_cell(s.last_error);
                if (!why)
                        return log_oom();
                printf("%s: %s (%s)\n", d->role, state, why);
        }

        if (arg_json) {
                r = json_print(j);
                if (r < 0)
                        return r;
        } else if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to stdout: %m");

        if (strv_length(args) == 0 ? n_running > 0 && n_online == n_running : n_online == n)
                return EXIT_SUCCESS;
        return EXIT_FAILURE;
}

/* --- the command line --- */

/* Enrollment takes a round trip to the controller and a key generation: more than sd-bus's 25 s default
 * when the controller is far away, but bounded. */
#define ENROLL_TIMEOUT_USEC (2 * USEC_PER_MINUTE)

/* Hands a token to the agent on this host through its Enroll method (bus activation starts it if its unit
 * is installed but stopped). The token is read the way the daemons read it (agent_token_read(): a 0600
 * file or stdin, never argv) and travels in a message marked sensitive, which sd-bus wipes when freed.
 * Prints the SPIFFE ID the agent enrolled as. */
static int verb_enroll(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(erase_and_free_stringp) char *token = NULL;
        const AgentDaemon *d;
        const char *spiffe_id;
        size_t n;
        int r;

        r = agent_daemons_select(args, &d, &n);
        assert(r >= 0 && n == 1);
        SpiffeRole role = streq(d->role, "connector") ? SPIFFE_ROLE_CONNECTOR : SPIFFE_ROLE_TUNNELER;

        r = agent_token_read(role, arg_token_file, &token, NULL);
        if (r < 0) {
                if (r == -ENOENT && !streq(arg_token_file, "-"))
                        return log_error_errno(r, "Cannot read the enrollment token: the token file '%s' does not "
                                               "exist.", arg_token_file);
                if (agent_token_error_message(r))
                        return log_error_errno(r, "Cannot read the enrollment token: %s.",
                                               agent_token_error_message(r));
                return log_error_errno(r, "Cannot read the enrollment token from '%s': %m", arg_token_file);
        }
        if (r == AGENT_TOKEN_FILE_ACCESSIBLE)
                log_warning("The token file is readable or writable by other users, or owned by another user: "
                            "anyone who can read it can enroll in our place. Keep tokens in 0600 files.");

        r = sd_bus_message_new_method_call(bus, &call, d->bus_name, d->bus_path, d->bus_name, "Enroll");
        if (r < 0)
                return log_error_errno(r, "Failed to create an Enroll call: %m");
        r = sd_bus_message_sensitive(call);
        if (r < 0)
                return log_error_errno(r, "Failed to mark the Enroll call sensitive: %m");
        r = sd_bus_message_append(call, "s", token);
        if (r < 0)
                return log_oom();
        token = erase_and_free_string(token);

        r = sd_bus_call(bus, call, ENROLL_TIMEOUT_USEC, &error, &reply);
        if (r < 0) {
                if (sd_bus_error_has_names(&error, SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_SERVICE_UNKNOWN))
                        return log_error_errno(r, "%s is not running and cannot be started by the bus: start it "
                                               "with 'systemctl %sstart %s' and try again.", d->unit,
                                               arg_user ? "--user " : "", d->unit);
                return log_error_errno(r, "Enrollment of %s failed: %s", d->unit, bus_error_message(&error, r));
        }
        r = sd_bus_message_read(reply, "s", &spiffe_id);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply of %s: %m", d->unit);

        if (arg_json) {
                json_auto_t *j = json_pack("{s:s,s:s}", "agent", d->role, "spiffe_id", spiffe_id);

                if (!j)
                        return log_oom();
                return json_print(j);
        }
        puts(spiffe_id);
        if (fflush(stdout) != 0)
                return log_error_errno(errno, "Failed to write to stdout: %m");
        return 0;
}

typedef struct Verb {
        const char *object;
        const char *name;     /* NULL: a command of one word ("status") */
        unsigned n_args;      /* positional arguments after "<object> <verb>" (exactly, or at most if optional) */
        const char *args_help;
        unsigned options;     /* VerbOption mask it accepts */
        unsigned required;    /* …and requires */
        /* A negative errno (exit status 1), or the exit status. */
        int (*run)(sd_bus *bus, char **args);
        bool args_optional;
        const char *const *arg_choices; /* NULL, or the values the arguments may take */
        unsigned required_any;          /* VerbOption mask of which at least one must be given (0: none) */
} Verb;

static const char *const agent_roles[] = { "connector", "tunneler", NULL };

#define RESOURCE_OPTIONS (OPT_ADDRESS | OPT_NETWORK | OPT_PORTS | OPT_PROTOCOL | OPT_ALIAS)

static const Verb verbs[] = {
        { "token", "create", 0, NULL, OPT_ROLE | OPT_ID | OPT_NETWORK | OPT_GROUP | OPT_TTL | OPT_OUTPUT,
          OPT_ROLE, verb_token_create },
        { "token", "list", 0, NULL, 0, 0, verb_token_list },
        { "token", "revoke", 1, "ID", 0, 0, verb_token_revoke },
        { "agents", "list", 0, NULL, OPT_ROLE, 0, verb_agents_list },
        { "agents", "revoke", 1, "AGENT", OPT_REASON, 0, verb_agents_revoke },
        { "agents", "renew", 1, "AGENT", 0, 0, verb_agents_renew },
        { "ca", "status", 0, NULL, 0, 0, verb_ca_status },
        { "ca", "rotate", 0, NULL, 0, 0, verb_ca_rotate },
        { "network", "create", 1, "NAME", OPT_DESCRIPTION, 0, verb_network_create },
        { "network", "delete", 1, "NAME", 0, 0, verb_network_delete },
        { "network", "list", 0, NULL, 0, 0, verb_network_list },
        { "resource", "create", 1, "NAME", RESOURCE_OPTIONS, OPT_ADDRESS | OPT_NETWORK,
          verb_resource_create },
        { "resource", "update", 1, "NAME", RESOURCE_OPTIONS, 0, verb_resource_update, false, NULL,
          RESOURCE_OPTIONS },
        { "resource", "delete", 1, "NAME", 0, 0, verb_resource_delete },
        { "resource", "list", 0, NULL, OPT_NETWORK, 0, verb_resource_list },
        { "group", "create", 1, "NAME", OPT_DESCRIPTION, 0, verb_group_create },
        { "group", "delete", 1, "NAME", 0, 0, verb_group_delete },
        { "group", "list", 0, NULL, 0, 0, verb_group_list },
        { "group", "add-member", 2, "GROUP and AGENT", 0, 0, verb_group_add_member },
        { "group", "remove-member", 2, "GROUP and AGENT", 0, 0, verb_group_remove_member },
        { "policy", "create", 2, "GROUP and RESOURCE", 0, 0, verb_policy_create },
        { "policy", "delete", 2, "GROUP and RESOURCE", 0, 0, verb_policy_delete },
        { "policy", "list", 0, NULL, 0, 0, verb_policy_list },
        { "admin", "create", 1, "NAME", 0, 0, verb_admin_create },
        { "admin", "delete", 1, "NAME", 0, 0, verb_admin_delete },
        { "admin", "list", 0, NULL, 0, 0, verb_admin_list },
        { "admin", "passwd", 1, "NAME", 0, 0, verb_admin_passwd },
        { "status", NULL, 1, "connector or tunneler", 0, 0, verb_status, true, agent_roles },
        { "health", NULL, 1, "connector or tunneler", 0, 0, verb_health, true, agent_roles },
        { "enroll", NULL, 1, "connector or tunneler", OPT_TOKEN_FILE, OPT_TOKEN_FILE, verb_enroll, false,
          agent_roles },
};

static const struct {
        VerbOption flag;
        const char *name;
} option_names[] = {
        { OPT_ROLE, "--role" },     { OPT_ID, "--id" },         { OPT_NETWORK, "--network" },
        { OPT_GROUP, "--group" },   { OPT_TTL, "--ttl" },       { OPT_OUTPUT, "--output" },
        { OPT_REASON, "--reason" }, { OPT_DESCRIPTION, "--description" }, { OPT_ADDRESS, "--address" },
        { OPT_PORTS, "--ports" },   { OPT_PROTOCOL, "--protocol" }, { OPT_ALIAS, "--alias" },
        { OPT_TOKEN_FILE, "--token-file" },
};

static void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Administer the ztna controller and the agents on this host.\n\n"
               "Enrollment tokens:\n"
               "  token create --role ROLE [--id ID] [--network NET] [--group G]... [--ttl DURATION]\n"
               "               [--output FILE]     Create a one-time enrollment token\n"
               "  token list                       List tokens (never their secrets)\n"
               "  token revoke ID                  Revoke an unused token\n\n"
               "Agents:\n"
               "  agents list [--role ROLE]        List enrolled agents\n"
               "  agents revoke AGENT [--reason TEXT]\n"
               "                                   Revoke an agent (SPIFFE ID or id)\n"
               "  agents renew AGENT               Ask a connected agent to renew its certificate now\n\n"
               "Certificate authority:\n"
               "  ca status                        Show the controller and its CAs\n"
               "  ca rotate                        Start a staged root CA rotation\n\n"
               "Access policy (default deny: a tunneler reaches a resource only through a policy):\n"
               "  network create NAME [--description TEXT]\n"
               "                                   Create a remote network (connectors join one)\n"
               "  network delete NAME              Delete a network without resources or connectors\n"
               "  network list                     List networks\n"
               "  resource create NAME --address ADDR --network NET [--ports PORTS]\n"
               "                  [--protocol PROTO] [--alias FQDN]\n"
               "                                   Create a resource in a network\n"
               "  resource update NAME [--address ADDR] [--network NET] [--ports PORTS]\n"
               "                  [--protocol PROTO] [--alias FQDN]\n"
               "                                   Change the given fields, keep the others\n"
               "  resource delete NAME             Delete a resource and its policies\n"
               "  resource list [--network NET]    List resources and the groups granted each\n"
               "  group create NAME [--description TEXT]\n"
               "                                   Create a group of tunnelers\n"
               "  group delete NAME                Delete a group, its policies and memberships\n"
               "  group list                       List groups, their members and resources\n"
               "  group add-member GROUP AGENT     Add a tunneler (SPIFFE ID or id) to a group\n"
               "  group remove-member GROUP AGENT  Remove a tunneler from a group\n"
               "  policy create GROUP RESOURCE     Grant a group access to a resource\n"
               "  policy delete GROUP RESOURCE     Withdraw it\n"
               "  policy list                      List policies\n\n"
               "Administrators of the controller's API and dashboard (the password is typed twice at\n"
               "the terminal, or read from stdin when it is not a terminal; never an argument):\n"
               "  admin create NAME                Create an administrator\n"
               "  admin passwd NAME                Set an administrator's password (ends its sessions)\n"
               "  admin delete NAME                Delete an administrator, its API tokens and sessions\n"
               "  admin list                       List administrators\n\n"
               "Agents on this host:\n"
               "  status [connector|tunneler]      Show the state of ztna-connector and ztna-tunneler\n"
               "  health [connector|tunneler]      One line each: online, or why not; exit 1 if not\n"
               "  enroll connector|tunneler --token-file FILE\n"
               "                                   Enroll the agent with a token (FILE, or - for stdin);\n"
               "                                   prints the SPIFFE ID it enrolled as\n\n"
               "Options:\n"
               "  -h --help                        Show this help\n"
               "     --version                     Show the version\n"
               "     --json                        Output JSON (times as ISO 8601 UTC and in µs)\n"
               "     --no-legend                   Omit headers, footers and hints\n"
               "     --no-ask-password             Do not ask for a password to authorize\n"
               "     --user                        Talk to the agents of this user's session bus\n"
               "     --role ROLE                   connector or tunneler\n"
               "     --id ID                       Bind the token to this agent id\n"
               "     --network NET                 Remote network a connector joins; a resource's network\n"
               "     --group GROUP                 Group a tunneler joins (repeatable)\n"
               "     --ttl DURATION                Token lifetime, e.g. 30min, 2h (default: the controller's)\n"
               "     --output FILE                 Write the token to FILE (created, mode 0600)\n"
               "     --reason TEXT                 Why the agent is revoked\n"
               "     --description TEXT            What a network or group is for\n"
               "     --address ADDR                A host name (db.lab.example), a wildcard (*.lab.example),\n"
               "                                   an address (192.168.1.10, fd00::5) or a CIDR (10.0.0.0/24)\n"
               "     --ports PORTS                 any (default) or a list such as 22,80,8000-8100\n"
               "     --protocol PROTO              any (default), tcp or udp\n"
               "     --alias FQDN                  Another name tunnelers may use for it (\"\" for none)\n"
               "     --token-file FILE             Read the enrollment token from FILE (mode 0600) or stdin\n\n"
               "The controller and the agents are reached on the system bus (the session bus with --user), or\n"
               "at $ZTNA_BUS_ADDRESS when set.\n",
               program_invocation_short_name);
}

static int usage_error(const char *format, ...) _printf_(1, 2);
static int usage_error(const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, "\nSee '%s --help'.\n", program_invocation_short_name);
        return -EINVAL;
}

/* 1: run the verb at argv[optind…]; 0: done (help, version); -EINVAL: usage error, already printed. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_JSON,
                ARG_NO_LEGEND,
                ARG_NO_ASK_PASSWORD,
                ARG_USER,
                ARG_ROLE,
                ARG_ID,
                ARG_NETWORK,
                ARG_GROUP,
                ARG_TTL,
                ARG_OUTPUT,
                ARG_REASON,
                ARG_DESCRIPTION,
                ARG_ADDRESS,
                ARG_PORTS,
                ARG_PROTOCOL,
                ARG_ALIAS,
                ARG_TOKEN_FILE,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "json", no_argument, NULL, ARG_JSON },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { "user", no_argument, NULL, ARG_USER },
                { "role", required_argument, NULL, ARG_ROLE },
                { "id", required_argument, NULL, ARG_ID },
                { "network", required_argument, NULL, ARG_NETWORK },
                { "group", required_argument, NULL, ARG_GROUP },
                { "ttl", required_argument, NULL, ARG_TTL },
                { "output", required_argument, NULL, ARG_OUTPUT },
                { "reason", required_argument, NULL, ARG_REASON },
                { "description", required_argument, NULL, ARG_DESCRIPTION },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "ports", required_argument, NULL, ARG_PORTS },
                { "protocol", required_argument, NULL, ARG_PROTOCOL },
                { "alias", required_argument, NULL, ARG_ALIAS },
                { "token-file", required_argument, NULL, ARG_TOKEN_FILE },
                {},
        };
        int c, r;

        /* Errors from getopt are ours to print, in the same shape as the others. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0)
                switch (c) {

                case 'h':
                        help();
                        return 0;

                case ARG_VERSION:
                        printf("ztnactl %s\n", PROJECT_VERSION);
                        return 0;

                case ARG_JSON:
                        arg_json = true;
                        break;

                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;

                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;

                case ARG_USER:
                        arg_user = true;
                        break;

                case ARG_ROLE:
                        arg_role = optarg;
                        arg_given |= OPT_ROLE;
                        break;

                case ARG_ID:
                        arg_id = optarg;
                        arg_given |= OPT_ID;
                        break;

                case ARG_NETWORK:
                        arg_network = optarg;
                        arg_given |= OPT_NETWORK;
                        break;

                case ARG_GROUP:
                        if (strv_length(arg_groups) >= ARG_GROUPS_MAX)
                                return usage_error("Too many --group options (at most %u).", ARG_GROUPS_MAX);
                        if (strv_extend(&arg_groups, optarg) < 0)
                                return log_oom();
                        arg_given |= OPT_GROUP;
                        break;

                case ARG_TTL:
                        r = parse_sec(optarg, &arg_ttl);
                        if (r < 0)
                                return usage_error("Invalid --ttl '%s': expected a duration such as 30min or 2h.",
                                                   optarg);
                        if (arg_ttl == 0 || arg_ttl == USEC_INFINITY)
                                return usage_error("Invalid --ttl '%s': a token needs a finite, non-zero lifetime.",
                                                   optarg);
                        arg_given |= OPT_TTL;
                        break;

                case ARG_OUTPUT:
                        if (isempty(optarg))
                                return usage_error("--output needs a file name.");
                        arg_output = optarg;
                        arg_given |= OPT_OUTPUT;
                        break;

                case ARG_REASON:
                        arg_reason = optarg;
                        arg_given |= OPT_REASON;
                        break;

                /* Values are the controller's to judge: it names the field and the rule in its error. */
                case ARG_DESCRIPTION:
                        arg_description = optarg;
                        arg_given |= OPT_DESCRIPTION;
                        break;

                case ARG_ADDRESS:
                        arg_address = optarg;
                        arg_given |= OPT_ADDRESS;
                        break;

                case ARG_PORTS:
                        arg_ports = optarg;
                        arg_given |= OPT_PORTS;
                        break;

                case ARG_PROTOCOL:
                        arg_protocol = optarg;
                        arg_given |= OPT_PROTOCOL;
                        break;

                case ARG_ALIAS:
                        arg_alias = optarg;
                        arg_given |= OPT_ALIAS;
                        break;

                case ARG_TOKEN_FILE:
                        if (isempty(optarg))
                                return usage_error("--token-file needs a file name, or - for stdin.");
                        arg_token_file = optarg;
                        arg_given |= OPT_TOKEN_FILE;
                        break;

                case ':':
                        return usage_error("Option '%s' needs an argument.", argv[optind - 1]);

                case '?':
                        if (optopt != 0)
                                return usage_error("Unknown option '-%c'.", optopt);
                        return usage_error("Unknown option '%s'.", argv[optind - 1]);

                default:
                        assert(false);
                        return -EINVAL;
                }

        return 1;
}

/* name NULL: the command of one word. */
static const Verb *verb_find(const char *object, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].object, object) && streq_ptr(verbs[i].name, name))
                        return &verbs[i];
        return NULL;
}

static bool object_is_known(const char *object) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].object, object))
                        return true;
        return false;
}

/* The verb for argv, after checking its arguments and options; NULL after printing a usage error. */
static const Verb *verb_select(int argc, char *argv[]) {
        char command[64];
        const Verb *v;
        unsigned n;

        if (argc < 1) {
                usage_error("Missing command.");
                return NULL;
        }
        if (!object_is_known(argv[0])) {
                usage_error("Unknown command '%s'.", argv[0]);
                return NULL;
        }
        v = verb_find(argv[0], NULL);
        if (!v) {
                if (argc < 2) {
                        usage_error("Missing verb after '%s'.", argv[0]);
                        return NULL;
                }
                v = verb_find(argv[0], argv[1]);
                if (!v) {
                        usage_error("Unknown command '%s %s'.", argv[0], argv[1]);
                        return NULL;
                }
        }
        /* The command's own words, for messages: "token create", "status". */
        snprintf(command, sizeof(command), "%s%s%s", v->object, v->name ? " " : "", strempty(v->name));

        n = (unsigned) argc - (v->name ? 2 : 1);
        if (v->args_optional ? n > v->n_args : n != v->n_args) {
                if (n < v->n_args)
                        usage_error("'%s' needs %s.", command, v->args_help);
                else
                        usage_error("Too many arguments for '%s'.", command);
                return NULL;
        }
        for (unsigned i = 0; v->arg_choices && i < n; i++) {
                const char *a = argv[argc - n + i];

                if (!strv_contains((char *const *) v->arg_choices, a)) {
                        usage_error("Unknown argument '%s' for '%s': expected %s.", a, command, v->args_help);
                        return NULL;
                }
        }

        for (size_t i = 0; i < ELEMENTSOF(option_names); i++) {
                if ((arg_given & option_names[i].flag) && !(v->options & option_names[i].flag)) {
                        usage_error("%s does not apply to '%s'.", option_names[i].name, command);
                        return NULL;
                }
                if ((v->required & option_names[i].flag) && !(arg_given & option_names[i].flag)) {
                        usage_error("'%s' needs %s.", command, option_names[i].name);
                        return NULL;
                }
        }
        if (v->required_any != 0 && !(arg_given & v->required_any)) {
                char names[256] = "";

                for (size_t i = 0; i < ELEMENTSOF(option_names); i++)
                        if (v->required_any & option_names[i].flag) {
                                if (names[0])
                                        strncat(names, " ", sizeof(names) - strlen(names) - 1);
                                strncat(names, option_names[i].name, sizeof(names) - strlen(names) - 1);
                        }
                usage_error("'%s' needs at least one of %s.", command, names);
                return NULL;
        }

        return v;
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *v;
        int r;

        r = parse_argv(argc, argv);
        if (r == -EINVAL)
                return EXIT_USAGE;
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        v = verb_select(argc - optind, argv + optind);
        if (!v)
                return EXIT_USAGE;

        r = bus_connect(&bus);
        if (r < 0)
                return EXIT_FAILURE;

        r = v->run(bus, argv + optind + (v->name ? 2 : 1));
        return r < 0 ? EXIT_FAILURE : r;
}

int main(int argc, char *argv[]) {
        int ret;

        log_parse_environment();
        json_set_alloc_funcs(malloc, json_free_erase);

        ret = run(argc, argv);
        arg_groups = strv_free(arg_groups);
        return ret;
}
