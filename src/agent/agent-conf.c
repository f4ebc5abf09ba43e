/* SPDX-License-Identifier: Apache-2.0 */

#include <arpa/inet.h>
#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-conf.h"
#include "fileio.h"
#include "conf-parser.h"
#include "creds-util.h"
#include "log.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"

#define CONTROLLER_CA_CREDENTIAL "CONTROLLER_CA"

const char *agent_config_name(SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                return "connector";
        case SPIFFE_ROLE_TUNNELER:
                return "tunneler";
        default:
                return NULL;
        }
}

static const char *default_health_listen(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR ? AGENT_DEFAULT_HEALTH_LISTEN_CONNECTOR
                                             : AGENT_DEFAULT_HEALTH_LISTEN_TUNNELER;
}

static bool path_is_valid(const char *p) {
        return p && p[0] == '/' && strlen(p) < PATH_MAX && !string_has_cc(p, NULL);
}

/* The directory systemd's StateDirectory= gave us (state_directory_from_environment(): the first entry of
 * $STATE_DIRECTORY, links resolved), else /var/lib/ztna-<role>. */
static char *default_state_directory(SpiffeRole role) {
        char *d = NULL;

        if (state_directory_from_environment(&d) < 0)
                return NULL;
        if (d)
                return d;
        return strjoin("/var/lib/ztna-", agent_config_name(role), NULL);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_agent_id) {
        char **id = data;

        assert(id);

        if (isempty(value)) {
                *id = mfree(*id);
                return 0;
        }
        if (!ztna_id_is_valid(value))
                return -EINVAL;
        return free_and_strdup(id, value) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_trust_domain) {
        char **td = data;
        const char *reason = NULL;

        assert(td);

        if (isempty(value)) {
                *td = mfree(*td);
                return 0;
        }
        if (spiffe_trust_domain_check(value, &reason) < 0) {
                /* The parser's own warning only says "Invalid argument"; this one says which rule. */
                if (filename)
                        log_warning("%s:%u: %s= '%s' is not a valid trust domain: %s.", filename, line, key,
                                    value, reason);
                return -EINVAL;
        }
        return free_and_strdup(td, value) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_ca_file) {
        char **path = data;

        assert(path);

        if (isempty(value)) {
                *path = mfree(*path);
                return 0;
        }
        if (!path_is_valid(value))
                return -EINVAL;
        return free_and_strdup(path, value) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_state_directory) {
        const AgentConfig *c = userdata;
        char **path = data;
        _cleanup_free_ char *d = NULL;

        assert(path);
        assert(c);

        if (!isempty(value)) {
                if (!path_is_valid(value))
                        return -EINVAL;
                return free_and_strdup(path, value) < 0 ? -ENOMEM : 0;
        }
        d = default_state_directory(c->role);
        if (!d)
                return -ENOMEM;
        free(*path);
        *path = TAKE_PTR(d);
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_key_type) {
        KeyType *t = data;
        KeyType k;

        assert(t);

        k = key_type_from_string(value);
        if (k < 0)
                return -EINVAL;
        *t = k;
        return 0;
}

/* What a host:port list holds: controllers are dialed by name or address; resolvers must be address
 * literals (resolving the resolver would be circular). Neither may be the unspecified address. */
typedef struct HostPortList {
        uint16_t default_port;
        bool literal_only;
        unsigned max;           /* entries */
        size_t max_length;      /* of one canonical entry, 0: any */
} HostPortList;

static const HostPortList controller_list = {
        .default_port = AGENT_CONTROLLER_DEFAULT_PORT,
        .max = AGENT_CONTROLLERS_MAX,
        .max_length = TOKEN_ADDRESS_MAX, /* what a token or an identity can carry */
};

static const HostPortList resolver_list = {
        .default_port = 53,
        .literal_only = true,
        .max = AGENT_RESOLVERS_MAX,
};

/* Appends the words of value to *l (or replaces *l with them), canonical and without duplicates, all or
 * nothing: a bad word leaves the list as it was. An empty value empties the list. */
static int host_port_list_parse(const HostPortList *kind, const char *value, const char *separators, bool replace,
                                char ***l) {
        _cleanup_strv_free_ char **words = NULL, **n = NULL;

        assert(kind);
        assert(l);

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }

        words = strv_split(value, separators);
        if (!words)
                return -ENOMEM;
        n = strv_copy(replace ? NULL : *l);
        if (!n)
                return -ENOMEM;

        STRV_FOREACH(w, words) {
                char buf[HOST_PORT_STRING_MAX];
                HostPort hp;
                int r;

                r = parse_host_port(*w, kind->default_port, &hp);
                if (r < 0)
                        return r;
                if (host_is_unspecified(&hp) || (kind->literal_only && hp.family == AF_UNSPEC))
                        return -EINVAL;
                if (!host_port_to_string(&hp, buf, sizeof(buf)) ||
                    (kind->max_length > 0 && strlen(buf) > kind->max_length))
                        return -EINVAL;
                if (strv_contains(n, buf))
                        continue;
                if (strv_length(n) >= kind->max)
                        return -E2BIG;
                if (strv_extend(&n, buf) < 0)
                        return -ENOMEM;
        }

        strv_free(*l);
        *l = strv_length(n) > 0 ? TAKE_PTR(n) : NULL;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_controllers) {
        return host_port_list_parse(&controller_list, value, WHITESPACE, /* replace= */ false, data);
}

static bool label_key_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '/' || c == '-';
}

static int label_check(const char *label) {
        const char *eq = strchr(label, '=');

        if (strlen(label) > AGENT_LABEL_MAX)
                return -E2BIG;
        if (!eq || eq == label || eq[1] == '\0')
                return -EINVAL;
        for (const char *p = label; p < eq; p++)
                if (!label_key_char(*p))
                        return -EINVAL;
        /* The words arrive split at whitespace, so only control characters and non-ASCII remain. */
        if (!string_is_printable_ascii(eq + 1))
                return -EINVAL;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_labels) {
        _cleanup_strv_free_ char **words = NULL, **n = NULL;
        char ***l = data;

        assert(l);

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }

        words = strv_split(value, WHITESPACE);
        n = strv_copy(*l);
        if (!words || !n)
                return -ENOMEM;

        STRV_FOREACH(w, words) {
                size_t klen = strcspn(*w, "=") + 1; /* the key and its '=' */
                bool replaced = false;
                int r;

                r = label_check(*w);
                if (r < 0)
                        return r;
                /* A later label with the same key wins, so a drop-in can change one label. */
                for (char **i = n; *i; i++)
                        if (strneq(*i, *w, klen)) {
                                r = free_and_strdup(i, *w);
                                if (r < 0)
                                        return r;
                                replaced = true;
                                break;
                        }
                if (replaced)
                        continue;
                if (strv_length(n) >= AGENT_LABELS_MAX)
                        return -E2BIG;
                if (strv_extend(&n, *w) < 0)
                        return -ENOMEM;
        }

        strv_free(*l);
        *l = strv_length(n) > 0 ? TAKE_PTR(n) : NULL;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_private_ip) {
        char **ip = data;
        char buf[INET6_ADDRSTRLEN];
        struct in6_addr a;
        int family;

        assert(ip);

        if (isempty(value)) {
                *ip = mfree(*ip);
                return 0;
        }
        if (strlen(value) >= INET6_ADDRSTRLEN)
                return -EINVAL;
        family = strchr(value, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(family, value, &a) != 1 || !inet_ntop(family, &a, buf, sizeof(buf)))
                return -EINVAL;
        return free_and_strdup(ip, buf) < 0 ? -ENOMEM : 0;
}

typedef enum AddressKind {
        ADDRESS_LISTEN,    /* an address literal to bind */
        ADDRESS_LOOPBACK,  /* the same, on loopback only */
        ADDRESS_ADVERTISE, /* a name or address others dial */
} AddressKind;

static int address_parse(const char *value, AddressKind kind, const char *default_value, char **ret) {
        char buf[HOST_PORT_STRING_MAX];
        HostPort hp;
        int r;

        assert(ret);

        if (isempty(value)) {
                if (!default_value) {
                        *ret = mfree(*ret);
                        return 0;
                }
                value = default_value;
        }

        r = parse_host_port(value, 0, &hp);
        if (r < 0)
                return r;
        /* Binding by name would make start-up depend on DNS; dialing 0.0.0.0 reaches nothing. */
        switch (kind) {
        case ADDRESS_LISTEN:
                if (hp.family == AF_UNSPEC)
                        return -EINVAL;
                break;
        case ADDRESS_LOOPBACK:
                if (!host_is_loopback(&hp))
                        return -EINVAL;
                break;
        case ADDRESS_ADVERTISE:
                if (host_is_unspecified(&hp))
                        return -EINVAL;
                break;
        }
        if (!host_port_to_string(&hp, buf, sizeof(buf)) || strlen(buf) > TOKEN_ADDRESS_MAX)
                return -EINVAL;
        return free_and_strdup(ret, buf) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_data_plane_listen) {
        return address_parse(value, ADDRESS_LISTEN, AGENT_DEFAULT_DATA_PLANE_LISTEN, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_data_plane_address) {
        return address_parse(value, ADDRESS_ADVERTISE, NULL, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_health_listen) {
        const AgentConfig *c = userdata;

        assert(c);

        return address_parse(value, ADDRESS_LOOPBACK, default_health_listen(c->role), data);
}

/* "N%", N an integer in min..max. */
static int percent_parse(const char *value, unsigned min, unsigned max, unsigned *ret) {
        char buf[16];
        size_t n;
        unsigned u;
        int r;

        n = strlen(value);
        if (n < 2 || n >= sizeof(buf) || value[n - 1] != '%')
                return -EINVAL;
        memcpy(buf, value, n - 1);
        buf[n - 1] = '\0';
        r = safe_atou(buf, &u);
        if (r < 0)
                return r;
        if (u < min || u > max)
                return -ERANGE;
        *ret = u;
        return 0;
}

/* Resolvers=: address literals, port 53 by default; a list that appends, "" empties it. */
static CONFIG_PARSER_PROTOTYPE(config_parse_resolvers) {
        return host_port_list_parse(&resolver_list, value, WHITESPACE, /* replace= */ false, data);
}

/* Forward=LISTEN=TARGET: a loopback IP:port the tunneler listens on, and the host:port it reaches through a
 * connector. Appends; "" empties the list; a second entry for the same LISTEN replaces the first. */
static CONFIG_PARSER_PROTOTYPE(config_parse_forwards) {
        _cleanup_strv_free_ char **words = NULL, **n = NULL;
        char ***l = data;

        assert(l);

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }
        words = strv_split(value, WHITESPACE);
        n = strv_copy(*l);
        if (!words || !n)
                return -ENOMEM;
        STRV_FOREACH(w, words) {
                char lbuf[HOST_PORT_STRING_MAX], tbuf[HOST_PORT_STRING_MAX];
                _cleanup_free_ char *listen = NULL, *entry = NULL;
                const char *eq = strchr(*w, '=');
                HostPort lhp, thp;
                bool replaced = false;
                int r;

                if (!eq)
                        return -EINVAL;
                listen = strndup(*w, eq - *w);
                if (!listen)
                        return -ENOMEM;
                r = parse_host_port(listen, 0, &lhp);
                if (r < 0)
                        return r;
                /* Resources are exposed to this host only, never to its network. */
                if (!host_is_loopback(&lhp))
                        return -EINVAL;
                r = parse_host_port(eq + 1, 0, &thp);
                if (r < 0)
                        return r;
                if (host_is_unspecified(&thp) || !host_port_to_string(&lhp, lbuf, sizeof(lbuf)) ||
                    !host_port_to_string(&thp, tbuf, sizeof(tbuf)))
                        return -EINVAL;
                entry = strjoin(lbuf, "=", tbuf, NULL);
                if (!entry)
                        return -ENOMEM;
                for (char **i = n; *i; i++)
                        if (startswith(*i, lbuf) && (*i)[strlen(lbuf)] == '=') {
                                free(*i);
                                *i = TAKE_PTR(entry);
                                replaced = true;
                                break;
                        }
                if (replaced)
                        continue;
                if (strv_length(n) >= AGENT_FORWARDS_MAX)
                        return -E2BIG;
                if (strv_consume(&n, TAKE_PTR(entry)) < 0)
                        return -ENOMEM;
        }
        strv_free(*l);
        *l = strv_length(n) > 0 ? TAKE_PTR(n) : NULL;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_optional_loopback) {
        return address_parse(value, ADDRESS_LOOPBACK, NULL, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_stream_limit) {
        unsigned *ret = data, u;
        int r;

        assert(ret);

        r = safe_atou(value, &u);
        if (r < 0)
                return r;
        if (u < 1 || u > AGENT_STREAMS_MAX)
                return -ERANGE;
        *ret = u;
        return 0;
}

/* IdleTimeout=: "0" or "infinity" for none. */
static CONFIG_PARSER_PROTOTYPE(config_parse_idle_timeout) {
        usec_t *ret = data, u;
        int r;

        assert(ret);

        r = parse_sec(value, &u);
        if (r < 0)
                return r;
        *ret = u == 0 ? USEC_INFINITY : u;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_connect_timeout) {
        usec_t *ret = data, u;
        int r;

        assert(ret);

        r = parse_sec(value, &u);
        if (r < 0)
                return r;
        if (u < USEC_PER_MSEC || u > AGENT_CONNECT_TIMEOUT_MAX)
                return -ERANGE;
        *ret = u;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_renew_at) {
        return percent_parse(value, 1, 99, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_renew_jitter) {
        return percent_parse(value, 0, 99, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_reconnect_sec) {
        usec_t *ret = data, u;
        int r;

        assert(ret);

        r = parse_sec(value, &u);
        if (r < 0)
                return r;
        if (u == 0 || u > AGENT_RECONNECT_MAX)
                return -ERANGE;
        *ret = u;
        return 0;
}

#define FIELD(f) offsetof(AgentConfig, f)
#define AGENT_COMMON_ITEMS                                                                                  \
        { "Agent", "Id", config_parse_agent_id, FIELD(id) },                                                \
        { "Agent", "Controller", config_parse_controllers, FIELD(controllers) },                            \
        { "Agent", "TrustDomain", config_parse_trust_domain, FIELD(trust_domain) },                         \
        { "Agent", "ControllerCAFile", config_parse_ca_file, FIELD(controller_ca_file) },                   \
        { "Agent", "KeyType", config_parse_key_type, FIELD(key_type) },                                     \
        { "Agent", "StateDirectory", config_parse_state_directory, FIELD(state_directory) },                \
        { "Agent", "Labels", config_parse_labels, FIELD(labels) },                                          \
        { "Agent", "PrivateIP", config_parse_private_ip, FIELD(private_ip) },                               \
        { "Health", "Listen", config_parse_health_listen, FIELD(health_listen) },                           \
        { "Renewal", "RenewAt", config_parse_renew_at, FIELD(renew_at_percent) },                           \
        { "Renewal", "Jitter", config_parse_renew_jitter, FIELD(renew_jitter_percent) },                    \
        { "Reconnect", "BackoffBase", config_parse_reconnect_sec, FIELD(backoff_base) },                    \
        { "Reconnect", "BackoffCap", config_parse_reconnect_sec, FIELD(backoff_cap) },                      \
        { "Reconnect", "HealthyAfter", config_parse_reconnect_sec, FIELD(healthy_after) }

static const ConfigTableItem connector_config_table[] = {
        AGENT_COMMON_ITEMS,
        { "Connector", "DataPlaneListen", config_parse_data_plane_listen, FIELD(data_plane_listen) },
        { "Connector", "DataPlaneAddress", config_parse_data_plane_address, FIELD(data_plane_address) },
        { "Connector", "Resolvers", config_parse_resolvers, FIELD(resolvers) },
        { "Connector", "MaxStreams", config_parse_stream_limit, FIELD(max_streams) },
        { "Connector", "MaxStreamsPerTunneler", config_parse_stream_limit, FIELD(max_streams_per_tunneler) },
        { "Connector", "IdleTimeout", config_parse_idle_timeout, FIELD(idle_timeout) },
        { "Connector", "ConnectTimeout", config_parse_connect_timeout, FIELD(connect_timeout) },
        {}
};

static const ConfigTableItem tunneler_config_table[] = {
        AGENT_COMMON_ITEMS,
        { "Tunneler", "Forward", config_parse_forwards, FIELD(forwards) },
        { "Tunneler", "SocksListen", config_parse_optional_loopback, FIELD(socks_listen) },
        { "Tunneler", "HttpProxyListen", config_parse_optional_loopback, FIELD(http_proxy_listen) },
        { "Tunneler", "IdleTimeout", config_parse_idle_timeout, FIELD(idle_timeout) },
        { "Tunneler", "ConnectTimeout", config_parse_connect_timeout, FIELD(connect_timeout) },
        {}
};
#undef AGENT_COMMON_ITEMS
#undef FIELD

static const ConfigTableItem *config_table(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR ? connector_config_table : tunneler_config_table;
}

static bool role_is_agent(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR || role == SPIFFE_ROLE_TUNNELER;
}

int agent_config_init(SpiffeRole role, AgentConfig *ret) {
        _cleanup_(agent_config_done) AgentConfig c = {
                .role = role,
                .key_type = AGENT_DEFAULT_KEY_TYPE,
                .renew_at_percent = AGENT_DEFAULT_RENEW_AT_PERCENT,
                .renew_jitter_percent = AGENT_DEFAULT_RENEW_JITTER_PERCENT,
                .backoff_base = AGENT_DEFAULT_BACKOFF_BASE,
                .backoff_cap = AGENT_DEFAULT_BACKOFF_CAP,
                .healthy_after = AGENT_DEFAULT_HEALTHY_AFTER,
                .max_streams = AGENT_DEFAULT_MAX_STREAMS,
                .max_streams_per_tunneler = AGENT_DEFAULT_MAX_STREAMS_PER_TUNNELER,
                .idle_timeout = AGENT_DEFAULT_IDLE_TIMEOUT,
                .connect_timeout = AGENT_DEFAULT_CONNECT_TIMEOUT,
        };

        assert(ret);

        if (!role_is_agent(role))
                return -EINVAL;

        c.state_directory = default_state_directory(role);
        c.health_listen = strdup(default_health_listen(role));
        if (!c.state_directory || !c.health_listen)
                return -ENOMEM;
        if (role == SPIFFE_ROLE_CONNECTOR) {
                c.data_plane_listen = strdup(AGENT_DEFAULT_DATA_PLANE_LISTEN);
                if (!c.data_plane_listen)
                        return -ENOMEM;
        }

        *ret = c;
        c = (AgentConfig) {};
        return 0;
}

int agent_config_set(AgentConfig *c, const char *section, const char *key, const char *value) {
        assert(c);
        assert(section);
        assert(key);

        if (!role_is_agent(c->role))
                return -EINVAL;
        for (const ConfigTableItem *i = config_table(c->role); i->key; i++)
                if (streq(i->section, section) && streq(i->key, key))
                        return i->parse(NULL, 0, section, key, strempty(value), (uint8_t *) c + i->offset,
                                        c);
        return log_debug_errno(ENOENT, "No setting [%s] %s= for the %s.", section, key,
                               agent_config_name(c->role));
}

/* One variable onto one setting. Returns 1 when it was set, 0 when unset or empty, -EINVAL logged. */
static int apply_variable(AgentConfig *c, const char *variable, const char *section, const char *key) {
        const char *e = getenv(variable);
        int r;

        if (isempty(e))
                return 0;
        r = agent_config_set(c, section, key, e);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0) {
                log_error_errno(r, "Environment variable %s='%s' is not a valid %s= value: %m", variable, e,
                                key);
                return -EINVAL;
        }
        log_debug("$%s overrides [%s] %s=.", variable, section, key);
        return 1;
}

int agent_config_apply_environment(AgentConfig *c) {
        _cleanup_free_ char *ca = NULL;
        const char *e, *reason = NULL;
        int r;

        assert(c);

        if (!role_is_agent(c->role))
                return -EINVAL;

        r = apply_variable(c, c->role == SPIFFE_ROLE_CONNECTOR ? "CONNECTOR_ID" : "TUNNELER_ID", "Agent",
                           "Id");
        if (r < 0)
                return r;

        e = getenv("TRUST_DOMAIN");
        if (!isempty(e) && spiffe_trust_domain_check(e, &reason) < 0)
                return log_error_errno(EINVAL, "Environment variable TRUST_DOMAIN='%s' is not a valid trust "
                                       "domain: %s.", e, reason);
        r = apply_variable(c, "TRUST_DOMAIN", "Agent", "TrustDomain");
        if (r < 0)
                return r;

        /* The variable replaces the list rather than adding to the file's; comma-separated too, as the
         * predecessor's single address may have been given as a list. */
        e = getenv("CONTROLLER_ADDR");
        if (!isempty(e)) {
                r = host_port_list_parse(&controller_list, e, "," WHITESPACE, /* replace= */ true, &c->controllers);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0) {
                        log_error_errno(r, "Environment variable CONTROLLER_ADDR='%s' is not a valid list "
                                        "of controller addresses: %m", e);
                        return -EINVAL;
                }
                if (!c->controllers)
                        return log_error_errno(EINVAL, "Environment variable CONTROLLER_ADDR='%s' lists no "
                                               "address.", e);
                log_debug("$CONTROLLER_ADDR overrides [Agent] Controller=.");
        }

        /* The credential comes first (DESIGN.md §1): it is what the unit file asked for explicitly. */
        r = creds_path(CONTROLLER_CA_CREDENTIAL, &ca);
        if (r >= 0) {
                if (!path_is_valid(ca))
                        return log_error_errno(EINVAL, "Credential path '%s' is not a valid path.", ca);
                free(c->controller_ca_file);
                c->controller_ca_file = TAKE_PTR(ca);
                log_debug("Credential %s overrides [Agent] ControllerCAFile=.", CONTROLLER_CA_CREDENTIAL);
        } else if (r == -ENOMEM)
                return log_oom();
        else if (r != -ENXIO && r != -ENOENT)
                return log_error_errno(r, "Failed to look up credential %s: %m", CONTROLLER_CA_CREDENTIAL);
        else {
                r = apply_variable(c, "CONTROLLER_CA_PATH", "Agent", "ControllerCAFile");
                if (r < 0)
                        return r;
        }

        if (c->role == SPIFFE_ROLE_CONNECTOR) {
                r = apply_variable(c, "CONNECTOR_ADDR", "Connector", "DataPlaneAddress");
                if (r < 0)
                        return r;
        }

        return 0;
}

static bool check_address(const char *section, const char *key, const char *value, AddressKind kind,
                          bool required) {
        _cleanup_free_ char *copy = NULL;

        if (!value) {
                if (!required)
                        return true;
                log_error("[%s] %s= is not set.", section, key);
                return false;
        }
        if (address_parse(value, kind, NULL, &copy) < 0) {
                log_error("[%s] %s='%s' is not a valid %s.", section, key, value,
                          kind == ADDRESS_LOOPBACK ? "loopback IP:port" :
                          kind == ADDRESS_LISTEN   ? "IP:port" : "host:port");
                return false;
        }
        return true;
}

static bool check_reconnect(const char *key, usec_t u) {
        char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX];

        if (u > 0 && u <= AGENT_RECONNECT_MAX)
                return true;
        log_error("[Reconnect] %s=%s is outside 1us..%s.", key, format_timespan(a, sizeof(a), u, 1),
                  format_timespan(b, sizeof(b), AGENT_RECONNECT_MAX, USEC_PER_SEC));
        return false;
}

int agent_config_check(const AgentConfig *c) {
        char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX];
        const char *reason = NULL;
        bool ok = true;

        assert(c);

        if (!role_is_agent(c->role)) {
                log_error("Role '%s' has no agent configuration.", strna(spiffe_role_to_string(c->role)));
                return -EINVAL;
        }

        if (c->id && !ztna_id_is_valid(c->id)) {
                log_error("[Agent] Id='%s' is not a valid id.", c->id);
                ok = false;
        }
        if (strv_length(c->controllers) > AGENT_CONTROLLERS_MAX) {
                log_error("[Agent] Controller= lists more than %u addresses.", AGENT_CONTROLLERS_MAX);
                ok = false;
        }
        if (c->trust_domain && spiffe_trust_domain_check(c->trust_domain, &reason) < 0) {
                log_error("[Agent] TrustDomain='%s' is not a valid trust domain: %s.", c->trust_domain,
                          reason);
                ok = false;
        }
        if (c->controller_ca_file && !path_is_valid(c->controller_ca_file)) {
                log_error("[Agent] ControllerCAFile='%s' is not an absolute path.", c->controller_ca_file);
                ok = false;
        }
        if (!key_type_to_string(c->key_type)) {
                log_error("[Agent] KeyType= is not a known key type.");
                ok = false;
        }
        if (!path_is_valid(c->state_directory)) {
                log_error("[Agent] StateDirectory='%s' is not an absolute path.", strna(c->state_directory));
                ok = false;
        }
        if (strv_length(c->labels) > AGENT_LABELS_MAX) {
                log_error("[Agent] Labels= lists more than %u labels.", AGENT_LABELS_MAX);
                ok = false;
        }

        if (c->role == SPIFFE_ROLE_CONNECTOR) {
                ok = check_address("Connector", "DataPlaneListen", c->data_plane_listen, ADDRESS_LISTEN,
                                   /* required= */ true) && ok;
                ok = check_address("Connector", "DataPlaneAddress", c->data_plane_address,
                                   ADDRESS_ADVERTISE, /* required= */ false) && ok;
        }
        ok = check_address("Health", "Listen", c->health_listen, ADDRESS_LOOPBACK, /* required= */ true) &&
             ok;
        if (c->role == SPIFFE_ROLE_TUNNELER) {
                ok = check_address("Tunneler", "SocksListen", c->socks_listen, ADDRESS_LOOPBACK,
                                   /* required= */ false) && ok;
                ok = check_address("Tunneler", "HttpProxyListen", c->http_proxy_listen, ADDRESS_LOOPBACK,
                                   /* required= */ false) && ok;
        }
        if (c->max_streams < 1 || c->max_streams > AGENT_STREAMS_MAX ||
            c->max_streams_per_tunneler < 1 || c->max_streams_per_tunneler > c->max_streams) {
                log_error("[Connector] MaxStreamsPerTunneler=%u must be between 1 and MaxStreams=%u (at most %u).",
                          c->max_streams_per_tunneler, c->max_streams, AGENT_STREAMS_MAX);
                ok = false;
        }
        if (c->connect_timeout < USEC_PER_MSEC || c->connect_timeout > AGENT_CONNECT_TIMEOUT_MAX) {
                log_error("ConnectTimeout= must be between 1ms and 5min.");
                ok = false;
        }

        if (c->renew_at_percent < 1 || c->renew_at_percent > 99) {
                log_error("[Renewal] RenewAt=%u%% is outside 1%%..99%%.", c->renew_at_percent);
                ok = false;
        } else if (c->renew_jitter_percent >= c->renew_at_percent) {
                /* Else the earliest draw would renew at or after expiry. */
                log_error("[Renewal] Jitter=%u%% must be less than RenewAt=%u%%, or renewal could come "
                          "too late.", c->renew_jitter_percent, c->renew_at_percent);
                ok = false;
        } else if (c->renew_at_percent + c->renew_jitter_percent >= 100) {
                /* Renewing with the whole lifetime left would renew again at once, forever. */
                log_error("[Renewal] RenewAt=%u%% plus Jitter=%u%% must be below 100%%.",
                          c->renew_at_percent, c->renew_jitter_percent);
                ok = false;
        }

        ok = check_reconnect("BackoffBase", c->backoff_base) && ok;
        ok = check_reconnect("BackoffCap", c->backoff_cap) && ok;
        ok = check_reconnect("HealthyAfter", c->healthy_after) && ok;
        if (c->backoff_cap < c->backoff_base) {
                log_error("[Reconnect] BackoffCap=%s must not be shorter than BackoffBase=%s.",
                          format_timespan(a, sizeof(a), c->backoff_cap, 1),
                          format_timespan(b, sizeof(b), c->backoff_base, 1));
                ok = false;
        }

        return ok ? 0 : -EINVAL;
}

int agent_config_load(SpiffeRole role, const char *confdir, AgentConfig *ret) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        int r, n_ignored;

        assert(ret);

        if (!role_is_agent(role))
                return log_error_errno(EINVAL, "Role '%s' has no agent configuration.",
                                       strna(spiffe_role_to_string(role)));

        r = agent_config_init(role, &c);
        if (r < 0)
                return log_oom();

        n_ignored = config_parse_standard(confdir, agent_config_name(role), config_table(role), &c, &c);
        if (n_ignored < 0)
                return n_ignored;

        r = agent_config_apply_environment(&c);
        if (r < 0)
                return r;

        r = agent_config_check(&c);
        if (r < 0)
                return log_error_errno(r, "Invalid %s configuration.", agent_config_name(role));

        *ret = c;
        c = (AgentConfig) {};
        return n_ignored;
}

void agent_config_done(AgentConfig *c) {
        if (!c)
                return;

        free(c->id);
        strv_free(c->controllers);
        free(c->trust_domain);
        free(c->controller_ca_file);
        free(c->state_directory);
        strv_free(c->labels);
        free(c->private_ip);
        free(c->data_plane_listen);
        free(c->data_plane_address);
        strv_free(c->resolvers);
        strv_free(c->forwards);
        free(c->socks_listen);
        free(c->http_proxy_listen);
        free(c->health_listen);
        *c = (AgentConfig) {};
}

static const char *const token_source_table[_AGENT_TOKEN_SOURCE_MAX] = {
        [AGENT_TOKEN_SOURCE_FILE] = "file",
        [AGENT_TOKEN_SOURCE_STDIN] = "stdin",
        [AGENT_TOKEN_SOURCE_CREDENTIAL] = "credential",
        [AGENT_TOKEN_SOURCE_ENVIRONMENT] = "environment",
};

const char *agent_token_source_to_string(AgentTokenSource s) {
        if (s < 0 || s >= _AGENT_TOKEN_SOURCE_MAX)
                return NULL;
        return token_source_table[s];
}

/* Strips and checks the raw bytes of a source and returns the token in a new, exactly sized buffer. The
 * raw buffer stays the caller's to wipe. */
static int token_extract(const char *raw, size_t size, char **ret) {
        const char *p = raw, *e = raw + size;
        char *t;

        if (memchr(raw, '\0', size))
                return -EBADMSG;
        /* One trailing newline (what editors and `echo` add), then any surrounding whitespace. */
        if (e > p && e[-1] == '\n')
                e--;
        while (p < e && strchr(WHITESPACE, *p))
                p++;
        while (e > p && strchr(WHITESPACE, e[-1]))
                e--;
        if (p == e)
                return -ENODATA;
        if ((size_t) (e - p) > TOKEN_STRING_MAX)
                return -EMSGSIZE;
        /* A token is printable ASCII without spaces; anything else would only fail later, less clearly. */
        for (const char *q = p; q < e; q++)
                if (*q <= ' ' || *q >= 0x7f)
                        return -EBADMSG;

        t = malloc((size_t) (e - p) + 1);
        if (!t)
                return -ENOMEM;
        memcpy(t, p, (size_t) (e - p));
        t[e - p] = '\0';
        *ret = t;
        return 0;
}

/* Reads fd to EOF into one buffer of fixed size, so that no copy of the secret is left behind by a
 * realloc(). */
static int token_read_fd(int fd, char **ret) {
        const size_t alloc = AGENT_TOKEN_INPUT_MAX + 2;
        size_t used = 0;
        char *buf;
        int r;

        buf = malloc(alloc);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t k;

                /* Room for one byte more than allowed, to tell "too big" from "exactly the maximum". */
                k = read(fd, buf + used, AGENT_TOKEN_INPUT_MAX + 1 - used);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                /* A non-blocking descriptor (stdin can be one): wait for data. */
                                struct pollfd pfd = { .fd = fd, .events = POLLIN };

                                if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
                                        r = -errno;
                                        goto finish;
                                }
                                continue;
                        }
                        r = -errno;
                        goto finish;
                }
                if (k == 0)
                        break;
                used += (size_t) k;
                if (used > AGENT_TOKEN_INPUT_MAX) {
                        r = -EFBIG;
                        goto finish;
                }
        }

        r = token_extract(buf, used, ret);
finish:
        erase_and_free(buf, alloc);
        return r;
}

/* AGENT_TOKEN_FILE_ACCESSIBLE for a regular file with group or other permission bits, 0 for anything
 * else (a pipe, a terminal). */
static int token_file_check(int fd, bool must_be_regular) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return must_be_regular ? -EBADFD : 0;
        if ((uint64_t) st.st_size > AGENT_TOKEN_INPUT_MAX)
                return -EFBIG;
        /* Whoever else can write it (another owner, group or other bits) can swap in a token for their own
         * controller. */
        return (st.st_mode & 077) != 0 || st.st_uid != geteuid() ? AGENT_TOKEN_FILE_ACCESSIBLE : 0;
}

static int token_read_file(const char *path, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        int r, flag;

        if (streq(path, "-")) {
                flag = token_file_check(STDIN_FILENO, /* must_be_regular= */ false);
                if (flag < 0)
                        return flag;
                r = token_read_fd(STDIN_FILENO, ret);
                return r < 0 ? r : flag;
        }

        /* O_NONBLOCK: a FIFO must not hang the open() before it is refused. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        flag = token_file_check(fd, /* must_be_regular= */ true);
        if (flag < 0)
                return flag;
        r = token_read_fd(fd, ret);
        return r < 0 ? r : flag;
}

static int token_read_credential(char **ret) {
        _cleanup_(erase_and_freep) ByteBuffer b = {};
        int r;

        r = creds_read(AGENT_TOKEN_CREDENTIAL, AGENT_TOKEN_INPUT_MAX, /* secret= */ true, &b);
        if (r < 0)
                return r;
        return token_extract((const char *) b.data, b.size, ret);
}

static int token_read_environment(char **ret) {
        char *e = getenv(AGENT_TOKEN_ENVIRONMENT), *copy;
        size_t n;
        int r;

        if (isempty(e))
                return -ENOENT;

        n = strlen(e);
        copy = malloc(n + 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, e, n + 1);
        /* Whatever happens next, the token leaves the environment: wiped in place, because the original
         * block is what /proc/<pid>/environ shows even after unsetenv(), and unset, so that children do
         * not inherit it. */
        explicit_bzero(e, n);
        (void) unsetenv(AGENT_TOKEN_ENVIRONMENT);

        r = n > AGENT_TOKEN_INPUT_MAX ? -EFBIG : token_extract(copy, n, ret);
        erase_and_free(copy, n + 1);
        return r;
}

int agent_token_read(SpiffeRole role, const char *token_file, char **ret, AgentTokenSource *ret_source) {
        AgentTokenSource source;
        char *t = NULL;
        int r, flag = 0;

        assert(ret);

        if (!role_is_agent(role))
                return -EINVAL;

        if (token_file) {
                source = streq(token_file, "-") ? AGENT_TOKEN_SOURCE_STDIN : AGENT_TOKEN_SOURCE_FILE;
                r = token_read_file(token_file, &t);
                if (r < 0)
                        return log_debug_errno(r, "Failed to read the enrollment token from %s: %m",
                                               source == AGENT_TOKEN_SOURCE_STDIN ? "stdin" : token_file);
                flag = r;
        } else {
                source = AGENT_TOKEN_SOURCE_CREDENTIAL;
                r = token_read_credential(&t);
                if (r == -ENXIO || r == -ENOENT) {
                        source = AGENT_TOKEN_SOURCE_ENVIRONMENT;
                        r = token_read_environment(&t);
                }
                if (r == -ENOENT)
                        return log_debug_errno(r, "No enrollment token for the %s: no file, credential %s "
                                               "or $%s.", agent_config_name(role), AGENT_TOKEN_CREDENTIAL,
                                               AGENT_TOKEN_ENVIRONMENT);
                if (r < 0)
                        return log_debug_errno(r, "Failed to read the enrollment token from the %s: %m",
                                               agent_token_source_to_string(source));
        }

        log_debug("Read the %s's enrollment token from the %s.", agent_config_name(role),
                  agent_token_source_to_string(source));
        *ret = t;
        if (ret_source)
                *ret_source = source;
        return flag;
}

const char *agent_token_error_message(int r) {
        switch (r) {
        case -ENOENT:
                return "no enrollment token: pass --token-file=PATH (or --token-file=- for stdin), or provide "
                       "the credential " AGENT_TOKEN_CREDENTIAL;
        case -ENODATA:
                return "the token source is empty";
        case -EFBIG:
        case -EMSGSIZE:
                return "the token source is too large to be a token";
        case -EBADMSG:
                return "the token contains whitespace, control characters or non-ASCII bytes";
        case -EISDIR:
        case -EBADFD:
                return "the token file is not a regular file";
        default:
                return NULL;
        }
}
