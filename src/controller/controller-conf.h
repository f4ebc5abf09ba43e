/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The controller's configuration: <confdir>/controller.conf, then controller.conf.d/ *.conf in strcmp()
 * order (conf-parser.h for the syntax and for how bad lines are reported), then the compatibility
 * environment, then cross-field checks. Later settings override earlier ones; the environment wins over
 * every file (DESIGN.md §1).
 *
 * [Controller]
 *   TrustDomain=          required. The SPIFFE trust domain (spiffe_trust_domain_check(): a lower-case
 *                         DNS-like name). The environment variable TRUST_DOMAIN, when set and non-empty,
 *                         replaces it; an invalid TRUST_DOMAIN is a fatal error, not ignored.
 *   Id=                   "controller-1". This controller's id in spiffe://<td>/controller/<id>
 *                         (ztna_id_is_valid()).
 * [Network]
 *   ListenGRPC=           "0.0.0.0:8443". Whitespace-separated list of IP:port (IPv6 in brackets) the
 *                         gRPC listener binds when not socket-activated. Address literals only: binding
 *                         never depends on DNS.
 *   ListenAdmin=          "127.0.0.1:8444". The same for the admin listener (HTTPS: controller-admin.h).
 *   AdvertisedAddresses=  required. host:port list (names or addresses, not 0.0.0.0/::) that agents dial:
 *                         written into enrollment tokens and into the server certificate's DNS/IP SANs.
 *                         At most CONTROLLER_ADVERTISED_MAX, each at most TOKEN_ADDRESS_MAX bytes.
 *   For the three lists: the first assignment replaces the built-in default, later ones append (a
 *   duplicate is dropped), an empty assignment ("ListenGRPC=") empties the list. Entries are stored in
 *   canonical spelling (host_port_to_string()).
 * [Certificates] (durations in parse_sec() syntax; 0 and "infinity" are refused, as is anything above
 *   CONTROLLER_LIFETIME_MAX)
 *   ConnectorLifetime=    1h. Connector leaf certificates.
 *   TunnelerLifetime=     30min. Tunneler leaf certificates.
 *   ServerLifetime=       24h. The controller's own server certificate.
 *   MinimumCertificateLifetime=      5min, never below CONTROLLER_MINIMUM_LIFETIME_FLOOR (10s; for tests). Every leaf lifetime
 *                         above must be at least this; tests lower it to get short-lived certificates.
 *   IssuingCALifetime=    30d. The intermediate CA the controller rotates by itself.
 *   RootCALifetime=       10y.
 *   KeyType=              ecdsa-p256. Key type of the CA keys and the server key (ecdsa-p256|ed25519).
 * [Tokens]
 *   DefaultLifetime=      1h. Enrollment token TTL when none is asked for; 1min..30d.
 * [Storage]
 *   Database=             $STATE_DIRECTORY/controller.db (links resolved) under systemd's StateDirectory=,
 *                         else /var/lib/ztna-controller/controller.db. Absolute path of the SQLite database
 *                         (no component may be a symbolic link).
 *   KeyFile=              $STATE_DIRECTORY/kek, else /var/lib/ztna-controller/kek. The key-encryption key sealing the CA keys, used only
 *                         when the service has no "ztna.kek" credential (LoadCredentialEncrypted=): 32 bytes,
 *                         owned by the service user, mode 0600. `ztna-controller init` creates it then.
 *   For Id=, Database= and KeyFile= an empty assignment restores the default; for TrustDomain= it unsets it.
 *
 * Cross-field rules (controller_config_check()), each logged as an error naming the key:
 *   - TrustDomain= is set and valid, AdvertisedAddresses=, ListenGRPC= and ListenAdmin= are not empty;
 *   - ConnectorLifetime=, TunnelerLifetime=, ServerLifetime= >= MinimumCertificateLifetime=;
 *   - ConnectorLifetime=, TunnelerLifetime=, ServerLifetime= < IssuingCALifetime= / 3;
 *   - IssuingCALifetime= < RootCALifetime=. */

#include <stdbool.h>

#include "crypto-key.h"
#include "crypto-token.h"
#include "time-util.h"

#define CONTROLLER_CONF_NAME "controller"
/* Addresses in one listen list. */
#define CONTROLLER_LISTEN_MAX 16U
/* Advertised addresses: all of them go into every enrollment token. */
#define CONTROLLER_ADVERTISED_MAX TOKEN_ADDRESSES_MAX
/* Lowest MinimumCertificateLifetime= accepted. Production stays at the 5min default: with renewal at 30 %
 * remaining (DESIGN.md §3), lifetimes of seconds leave little room for a round trip and clock skew. Tests
 * lower it (down to this floor) to watch renewals and expiry happen within a test run. */
#define CONTROLLER_MINIMUM_LIFETIME_FLOOR (10 * USEC_PER_SEC)
/* Longest lifetime of anything; X.509 times end in 9999 and nobody needs a century. */
#define CONTROLLER_LIFETIME_MAX (100 * USEC_PER_YEAR)
#define CONTROLLER_TOKEN_LIFETIME_MIN USEC_PER_MINUTE
#define CONTROLLER_TOKEN_LIFETIME_MAX (30 * USEC_PER_DAY)

#define CONTROLLER_DEFAULT_ID "controller-1"
#define CONTROLLER_DEFAULT_LISTEN_GRPC "0.0.0.0:8443"
#define CONTROLLER_DEFAULT_LISTEN_ADMIN "127.0.0.1:8444"
#define CONTROLLER_DEFAULT_DATABASE "/var/lib/ztna-controller/controller.db"
#define CONTROLLER_DEFAULT_KEY_FILE "/var/lib/ztna-controller/kek"

typedef struct AddressList {
        char **addresses; /* canonical "host:port" strings, NULL-terminated; NULL when empty */
        bool is_default;  /* still the built-in default: the next assignment replaces it */
} AddressList;

typedef struct ControllerConfig {
        char *trust_domain; /* NULL until set */
        char *id;

        AddressList listen_grpc;
        AddressList listen_admin;
        AddressList advertised_addresses;

        usec_t connector_lifetime;
        usec_t tunneler_lifetime;
        usec_t server_lifetime;
        usec_t minimum_lifetime;
        usec_t issuing_ca_lifetime;
        usec_t root_ca_lifetime;
        KeyType key_type;

        usec_t token_lifetime;

        char *database;
        char *key_file;
} ControllerConfig;

/* Fills ret with the defaults above (TrustDomain= and AdvertisedAddresses= unset). 0 or -ENOMEM. */
int controller_config_init(ControllerConfig *ret);

/* Defaults, files from confdir (NULL: ZTNA_CONFDIR), TRUST_DOMAIN, controller_config_check(). Bad lines
 * and values are warnings (file:line) and leave the earlier value; a missing controller.conf is fine.
 * Returns the number of ignored lines (>= 0), or a negative errno, already logged: -EINVAL when the
 * environment or the cross-field checks fail, the errors of config_parse_standard(), -ENOMEM. ret is
 * written on success only; release it with controller_config_done(). */
int controller_config_load(const char *confdir, ControllerConfig *ret);

/* Applies the compatibility environment (TRUST_DOMAIN) to c. -EINVAL (logged) when it is invalid. */
int controller_config_apply_environment(ControllerConfig *c);

/* The cross-field rules above. Logs an error for every rule broken, naming the key, and returns -EINVAL;
 * 0 when all hold. */
int controller_config_check(const ControllerConfig *c);

/* Frees what c holds and resets it to zeroes. Accepts a zeroed config. */
void controller_config_done(ControllerConfig *c);
