/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>

#include "conf-parser.h"
#include "controller-conf.h"
#include "fileio.h"
#include "crypto-spiffe.h"
#include "log.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"

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
                log_warning("%s:%u: %s= '%s' is not a valid trust domain: %s.", filename, line, key, value,
                            reason);
                return -EINVAL;
        }
        return free_and_strdup(td, value) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_controller_id) {
        char **id = data;

        assert(id);

        if (!ztna_id_is_valid(isempty(value) ? CONTROLLER_DEFAULT_ID : value))
                return -EINVAL;
        return free_and_strdup(id, isempty(value) ? CONTROLLER_DEFAULT_ID : value) < 0 ? -ENOMEM : 0;
}

/* The default of Database= or KeyFile=: name in the directory systemd's StateDirectory= gave us (links
 * resolved: under DynamicUser= it is a link, and the database is opened with SQLITE_OPEN_NOFOLLOW), else
 * the built-in path. */
static char *default_state_path(const char *name, const char *builtin) {
        _cleanup_free_ char *d = NULL;

        if (state_directory_from_environment(&d) < 0)
                return NULL;
        if (!d)
                return strdup(builtin);
        return strjoin(d, "/", name, NULL);
}

static int path_parse(const char *value, const char *name, const char *builtin, char **path) {
        if (isempty(value)) {
                char *d = default_state_path(name, builtin);

                if (!d)
                        return -ENOMEM;
                free(*path);
                *path = d;
                return 0;
        }

        assert(path);

        if (value[0] != '/' || strlen(value) >= PATH_MAX || string_has_cc(value, NULL))
                return -EINVAL;
        return free_and_strdup(path, value) < 0 ? -ENOMEM : 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_database) {
        return path_parse(value, "controller.db", CONTROLLER_DEFAULT_DATABASE, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_key_file) {
        return path_parse(value, "kek", CONTROLLER_DEFAULT_KEY_FILE, data);
}

static int lifetime_parse(const char *value, usec_t min, usec_t max, usec_t *ret) {
        usec_t u;
        int r;

        r = parse_sec(value, &u);
        if (r < 0)
                return r;
        if (u == 0 || u < min || u > max)
                return -ERANGE;
        *ret = u;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_lifetime) {
        return lifetime_parse(value, 1, CONTROLLER_LIFETIME_MAX, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_minimum_lifetime) {
        return lifetime_parse(value, CONTROLLER_MINIMUM_LIFETIME_FLOOR, CONTROLLER_LIFETIME_MAX, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_token_lifetime) {
        return lifetime_parse(value, CONTROLLER_TOKEN_LIFETIME_MIN, CONTROLLER_TOKEN_LIFETIME_MAX, data);
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

/* Appends the words of value to l, all or nothing: a bad word leaves the list as it was. */
static int address_list_parse(const char *value, bool listen, size_t max, AddressList *l) {
        _cleanup_strv_free_ char **words = NULL, **n = NULL;

        assert(l);

        if (isempty(value)) {
                l->addresses = strv_free(l->addresses);
                l->is_default = false;
                return 0;
        }

        words = strv_split(value, WHITESPACE);
        if (!words)
                return -ENOMEM;

        /* The first assignment replaces the built-in default rather than adding to it. */
        n = l->is_default ? strv_copy(NULL) : strv_copy(l->addresses);
        if (!n)
                return -ENOMEM;

        STRV_FOREACH(w, words) {
                char buf[HOST_PORT_STRING_MAX];
                HostPort hp;
                int r;

                r = parse_host_port(*w, 0, &hp);
                if (r < 0)
                        return r;
                /* Binding by name would make start-up depend on DNS; dialing 0.0.0.0 reaches nothing. */
                if (listen ? hp.family == AF_UNSPEC : host_is_unspecified(&hp))
                        return -EINVAL;
                if (!host_port_to_string(&hp, buf, sizeof(buf)) || strlen(buf) > TOKEN_ADDRESS_MAX)
                        return -EINVAL;
                if (strv_contains(n, buf))
                        continue;
                if (strv_length(n) >= max)
                        return -E2BIG;
                if (strv_extend(&n, buf) < 0)
                        return -ENOMEM;
        }

        strv_free(l->addresses);
        l->addresses = TAKE_PTR(n);
        l->is_default = false;
        return 0;
}

static CONFIG_PARSER_PROTOTYPE(config_parse_listen_addresses) {
        return address_list_parse(value, /* listen= */ true, CONTROLLER_LISTEN_MAX, data);
}

static CONFIG_PARSER_PROTOTYPE(config_parse_advertised_addresses) {
        return address_list_parse(value, /* listen= */ false, CONTROLLER_ADVERTISED_MAX, data);
}

#define FIELD(f) offsetof(ControllerConfig, f)
static const ConfigTableItem controller_config_table[] = {
        { "Controller", "TrustDomain", config_parse_trust_domain, FIELD(trust_domain) },
        { "Controller", "Id", config_parse_controller_id, FIELD(id) },
        { "Network", "ListenGRPC", config_parse_listen_addresses, FIELD(listen_grpc) },
        { "Network", "ListenAdmin", config_parse_listen_addresses, FIELD(listen_admin) },
        { "Network", "AdvertisedAddresses", config_parse_advertised_addresses, FIELD(advertised_addresses) },
        { "Certificates", "ConnectorLifetime", config_parse_lifetime, FIELD(connector_lifetime) },
        { "Certificates", "TunnelerLifetime", config_parse_lifetime, FIELD(tunneler_lifetime) },
        { "Certificates", "ServerLifetime", config_parse_lifetime, FIELD(server_lifetime) },
        { "Certificates", "MinimumCertificateLifetime", config_parse_minimum_lifetime, FIELD(minimum_lifetime) },
        { "Certificates", "IssuingCALifetime", config_parse_lifetime, FIELD(issuing_ca_lifetime) },
        { "Certificates", "RootCALifetime", config_parse_lifetime, FIELD(root_ca_lifetime) },
        { "Certificates", "KeyType", config_parse_key_type, FIELD(key_type) },
        { "Tokens", "DefaultLifetime", config_parse_token_lifetime, FIELD(token_lifetime) },
        { "Storage", "Database", config_parse_database, FIELD(database) },
        { "Storage", "KeyFile", config_parse_key_file, FIELD(key_file) },
        {}
};
#undef FIELD

static int address_list_init(AddressList *l, const char *address) {
        *l = (AddressList) { .is_default = true };
        return strv_extend(&l->addresses, address);
}

int controller_config_init(ControllerConfig *ret) {
        _cleanup_(controller_config_done) ControllerConfig c = {
                .connector_lifetime = USEC_PER_HOUR,
                .tunneler_lifetime = 30 * USEC_PER_MINUTE,
                .server_lifetime = 24 * USEC_PER_HOUR,
                .minimum_lifetime = 5 * USEC_PER_MINUTE,
                .issuing_ca_lifetime = 30 * USEC_PER_DAY,
                .root_ca_lifetime = 10 * USEC_PER_YEAR,
                .key_type = KEY_TYPE_ECDSA_P256,
                .token_lifetime = USEC_PER_HOUR,
        };

        assert(ret);

        c.id = strdup(CONTROLLER_DEFAULT_ID);
        c.database = default_state_path("controller.db", CONTROLLER_DEFAULT_DATABASE);
        c.key_file = default_state_path("kek", CONTROLLER_DEFAULT_KEY_FILE);
        if (!c.id || !c.database || !c.key_file)
                return -ENOMEM;
        if (address_list_init(&c.listen_grpc, CONTROLLER_DEFAULT_LISTEN_GRPC) < 0 ||
            address_list_init(&c.listen_admin, CONTROLLER_DEFAULT_LISTEN_ADMIN) < 0)
                return -ENOMEM;
        /* Required: there is no address every agent could reach. */
        c.advertised_addresses = (AddressList) { .is_default = true };

        *ret = c;
        c = (ControllerConfig) {};
        return 0;
}

int controller_config_apply_environment(ControllerConfig *c) {
        const char *e, *reason = NULL;

        assert(c);

        e = getenv("TRUST_DOMAIN");
        if (isempty(e))
                return 0;
        /* Fatal rather than ignored: falling back to the file would run the controller in a trust domain
         * other than the one the operator just asked for. */
        if (spiffe_trust_domain_check(e, &reason) < 0)
                return log_error_errno(EINVAL, "Environment variable TRUST_DOMAIN='%s' is not a valid trust "
                                       "domain: %s.", e, reason);
        if (free_and_strdup(&c->trust_domain, e) < 0)
                return log_oom();
        log_debug("Trust domain '%s' from $TRUST_DOMAIN overrides TrustDomain=.", e);
        return 0;
}

static bool check_leaf(const char *key, usec_t lifetime, const ControllerConfig *c) {
        char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX];
        bool ok = true;

        if (lifetime < c->minimum_lifetime) {
                log_error("[Certificates] %s=%s is shorter than MinimumCertificateLifetime=%s.", key,
                          format_timespan(a, sizeof(a), lifetime, USEC_PER_SEC),
                          format_timespan(b, sizeof(b), c->minimum_lifetime, USEC_PER_SEC));
                ok = false;
        }
        /* A leaf cannot outlive the issuing CA that signed it, so the controller rotates that CA while
         * more than a leaf lifetime of it is left. Keeping leaves under a third of the CA's life leaves a
         * full leaf lifetime of overlap after rotation plus as much again for a controller that was down
         * or retrying when rotation was due, without agents ever holding a truncated certificate. */
        if (lifetime >= c->issuing_ca_lifetime / 3) {
                log_error("[Certificates] %s=%s must be shorter than a third of IssuingCALifetime=%s.", key,
                          format_timespan(a, sizeof(a), lifetime, USEC_PER_SEC),
                          format_timespan(b, sizeof(b), c->issuing_ca_lifetime, USEC_PER_SEC));
                ok = false;
        }
        return ok;
}

int controller_config_check(const ControllerConfig *c) {
        char a[FORMAT_TIMESPAN_MAX], b[FORMAT_TIMESPAN_MAX];
        const char *reason = NULL;
        bool ok = true;

        assert(c);

        if (!c->trust_domain) {
                log_error("[Controller] TrustDomain= is not set (nor $TRUST_DOMAIN); it is required.");
                ok = false;
        } else if (spiffe_trust_domain_check(c->trust_domain, &reason) < 0) {
                log_error("[Controller] TrustDomain='%s' is not a valid trust domain: %s.", c->trust_domain,
                          reason);
                ok = false;
        }
        if (!c->id || !ztna_id_is_valid(c->id)) {
                log_error("[Controller] Id='%s' is not a valid id.", strna(c->id));
                ok = false;
        }

        if (strv_length(c->listen_grpc.addresses) == 0) {
                log_error("[Network] ListenGRPC= is empty; the controller needs an address for gRPC.");
                ok = false;
        }
        if (strv_length(c->listen_admin.addresses) == 0) {
                log_error("[Network] ListenAdmin= is empty; the controller needs an address for its admin "
                          "API.");
                ok = false;
        }
        if (strv_length(c->advertised_addresses.addresses) == 0) {
                log_error("[Network] AdvertisedAddresses= is not set; it is required (agents dial these "
                          "addresses, and tokens and the server certificate carry them).");
                ok = false;
        }
        if (strv_length(c->advertised_addresses.addresses) > CONTROLLER_ADVERTISED_MAX) {
                log_error("[Network] AdvertisedAddresses= lists more than %u addresses.",
                          CONTROLLER_ADVERTISED_MAX);
                ok = false;
        }

        if (c->minimum_lifetime < CONTROLLER_MINIMUM_LIFETIME_FLOOR) {
                log_error("[Certificates] MinimumCertificateLifetime=%s is below %s.",
                          format_timespan(a, sizeof(a), c->minimum_lifetime, USEC_PER_SEC),
                          format_timespan(b, sizeof(b), CONTROLLER_MINIMUM_LIFETIME_FLOOR, USEC_PER_SEC));
                ok = false;
        }
        ok = check_leaf("ConnectorLifetime", c->connector_lifetime, c) && ok;
        ok = check_leaf("TunnelerLifetime", c->tunneler_lifetime, c) && ok;
        ok = check_leaf("ServerLifetime", c->server_lifetime, c) && ok;
        /* The root signs every issuing CA: an issuing CA as long-lived as its root would be cut short. */
        if (c->issuing_ca_lifetime >= c->root_ca_lifetime) {
                log_error("[Certificates] IssuingCALifetime=%s must be shorter than RootCALifetime=%s.",
                          format_timespan(a, sizeof(a), c->issuing_ca_lifetime, USEC_PER_SEC),
                          format_timespan(b, sizeof(b), c->root_ca_lifetime, USEC_PER_SEC));
                ok = false;
        }
        if (c->root_ca_lifetime > CONTROLLER_LIFETIME_MAX) {
                log_error("[Certificates] RootCALifetime=%s is longer than %s.",
                          format_timespan(a, sizeof(a), c->root_ca_lifetime, USEC_PER_SEC),
                          format_timespan(b, sizeof(b), CONTROLLER_LIFETIME_MAX, USEC_PER_SEC));
                ok = false;
        }
        if (!key_type_to_string(c->key_type)) {
                log_error("[Certificates] KeyType= is not a known key type.");
                ok = false;
        }

        if (c->token_lifetime < CONTROLLER_TOKEN_LIFETIME_MIN ||
            c->token_lifetime > CONTROLLER_TOKEN_LIFETIME_MAX) {
                log_error("[Tokens] DefaultLifetime=%s is outside %s..%s.",
                          format_timespan(a, sizeof(a), c->token_lifetime, USEC_PER_SEC), "1min", "30d");
                ok = false;
        }

        if (!c->database || c->database[0] != '/') {
                log_error("[Storage] Database='%s' is not an absolute path.", strna(c->database));
                ok = false;
        }

        return ok ? 0 : -EINVAL;
}

int controller_config_load(const char *confdir, ControllerConfig *ret) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        int r, n_ignored;

        assert(ret);

        r = controller_config_init(&c);
        if (r < 0)
                return log_oom();

        n_ignored = config_parse_standard(confdir, CONTROLLER_CONF_NAME, controller_config_table, &c, NULL);
        if (n_ignored < 0)
                return n_ignored;

        r = controller_config_apply_environment(&c);
        if (r < 0)
                return r;

        r = controller_config_check(&c);
        if (r < 0)
                return log_error_errno(r, "Invalid controller configuration.");

        *ret = c;
        c = (ControllerConfig) {};
        return n_ignored;
}

void controller_config_done(ControllerConfig *c) {
        if (!c)
                return;

        free(c->trust_domain);
        free(c->id);
        strv_free(c->listen_grpc.addresses);
        strv_free(c->listen_admin.addresses);
        strv_free(c->advertised_addresses.addresses);
        free(c->database);
        free(c->key_file);
        *c = (ControllerConfig) {};
}
