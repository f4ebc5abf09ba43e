/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The configuration of ztna-connector and ztna-tunneler: <confdir>/<role>.conf ("connector.conf",
 * "tunneler.conf"), then <role>.conf.d/ *.conf in strcmp() order (conf-parser.h for the syntax and for how
 * bad lines are reported), then the compatibility environment and credentials (DESIGN.md §1), then the
 * cross-field checks. The caller applies command-line options last (agent_config_set()) and runs
 * agent_config_check() again: files < environment < command line.
 *
 * [Agent]
 *   Id=               unset. The agent id in spiffe://<td>/<role>/<id> (ztna_id_is_valid()). Unset: the id
 *                     the token is bound to, or whatever the caller picks. $CONNECTOR_ID / $TUNNELER_ID.
 *   Controller=       empty. host:port list (a name or an address; the port defaults to 8443; not
 *                     0.0.0.0/::) of controllers to dial, at most AGENT_CONTROLLERS_MAX. Used when the
 *                     identity has no controller list, or to override it. $CONTROLLER_ADDR (whitespace-
 *                     or comma-separated) replaces the list.
 *   TrustDomain=      unset. When set, the token's and the identity's trust domain must be this one.
 *                     $TRUST_DOMAIN.
 *   ControllerCAFile= unset. Absolute path of a PEM root to trust instead of the token's CA pin. The
 *                     credential CONTROLLER_CA (its path in $CREDENTIALS_DIRECTORY) and then
 *                     $CONTROLLER_CA_PATH replace it.
 *   KeyType=          ecdsa-p256. Type of the key the agent generates (ecdsa-p256|ed25519).
 *   StateDirectory=   the first path of $STATE_DIRECTORY (set by systemd's StateDirectory=), else
 *                     /var/lib/ztna-<role>. Absolute. This is a default, not an override: the file wins.
 *   Labels=           empty. key=value list sent at enrollment, at most AGENT_LABELS_MAX; keys
 *                     [A-Za-z0-9._/-], values printable ASCII without whitespace, each label at most
 *                     AGENT_LABEL_MAX bytes. A label whose key is already listed replaces it.
 *   PrivateIP=        unset (detected later). An IPv4 or IPv6 address, stored in canonical form.
 * [Connector] (connector.conf only)
 *   DataPlaneListen=  0.0.0.0:8447. IP:port (an address literal, IPv6 in brackets) tunnelers connect to.
 *   DataPlaneAddress= unset. host:port advertised to tunnelers (not 0.0.0.0/::). $CONNECTOR_ADDR.
 *   Resolvers=        empty: the nameservers of /etc/resolv.conf. IP or IP:port list (port 53 by default), at
 *                     most AGENT_RESOLVERS_MAX, that resolve the names of resources.
 *   MaxStreams=       4096. Relayed streams at once, 1..AGENT_STREAMS_MAX.
 *   MaxStreamsPerTunneler= 256. Of which one tunneler may hold, 1..MaxStreams=.
 *   IdleTimeout=      10min. A relayed stream with no byte either way for this long is closed; 0 or
 *                     "infinity": never. (Also in [Tunneler], for its local connections.)
 *   ConnectTimeout=   10s. TCP connect to a resource (1ms..5min); then 504. (Also in [Tunneler]: the TLS
 *                     connection to a connector.)
 * [Tunneler] (tunneler.conf only)
 *   Forward=          empty. LISTEN=TARGET list: a loopback IP:port to listen on and the host:port of a
 *                     resource it leads to ("127.0.0.1:15432=db.lab.example:5432"), at most
 *                     AGENT_FORWARDS_MAX; a later entry for the same LISTEN replaces the earlier one.
 *   SocksListen=      unset. Loopback IP:port of a SOCKS5 server (RFC 1928, CONNECT, no authentication).
 *   HttpProxyListen=  unset. Loopback IP:port of an HTTP CONNECT proxy.
 * [Health]
 *   Listen=           127.0.0.1:8445 (connector), 127.0.0.1:8446 (tunneler). A loopback IP:port
 *                     (127.0.0.0/8 or [::1]) for /healthz and /readyz; anything else is refused.
 * [Renewal] (percentages of the certificate's lifetime, "N%", integers)
 *   RenewAt=          30%. Renew when this much of the lifetime remains, 1%..99%.
 *   Jitter=           10%. Plus or minus this many percentage points, chosen at random each time: the
 *                     defaults renew when between 20% and 40% remains. 0%..99%.
 * [Reconnect] (parse_sec() durations; 0 and "infinity" are refused, as is anything above
 *   AGENT_RECONNECT_MAX; see backoff.h)
 *   BackoffBase=      1s.
 *   BackoffCap=       60s.
 *   HealthyAfter=     60s. A connection that lasted this long resets the backoff.
 *
 * For lists (Controller=, Labels=, Resolvers=, Forward=) an assignment appends, an empty assignment empties the list; a bad
 * word leaves the list as it was. For the other strings an empty assignment restores the default.
 * Entries are stored in canonical spelling (host_port_to_string(), inet_ntop()).
 *
 * Environment: an empty variable counts as unset; an invalid one is a fatal error naming the variable
 * (falling back to the file would run with a setting other than the one just asked for).
 *
 * Cross-field rules (agent_config_check()), each logged as an error naming the key:
 *   - RenewAt= > Jitter= (renewal always happens before expiry), RenewAt= + Jitter= < 100%;
 *   - BackoffCap= >= BackoffBase=;
 *   - the values a parser enforces (ranges, formats) still hold, for fields set directly. */

#include <stdbool.h>

#include "crypto-key.h"
#include "crypto-spiffe.h"
#include "crypto-token.h"
#include "time-util.h"

/* Controllers an agent is told to dial; a token carries at most as many. */
#define AGENT_CONTROLLERS_MAX 8U
#define AGENT_CONTROLLER_DEFAULT_PORT 8443
/* Labels on one agent, as many as the controller stores; the longest "key=value". */
#define AGENT_LABELS_MAX 32U
#define AGENT_LABEL_MAX 255U
/* Longest reconnect duration that can be configured. */
#define AGENT_RECONNECT_MAX USEC_PER_DAY

#define AGENT_DEFAULT_KEY_TYPE KEY_TYPE_ECDSA_P256
/* 8443 and 8444 are the controller's gRPC and admin ports, 8445 and 8446 the agents' health listeners. */
#define AGENT_DEFAULT_DATA_PLANE_LISTEN "0.0.0.0:8447"
#define AGENT_DEFAULT_HEALTH_LISTEN_CONNECTOR "127.0.0.1:8445"
#define AGENT_DEFAULT_HEALTH_LISTEN_TUNNELER "127.0.0.1:8446"
#define AGENT_DEFAULT_RENEW_AT_PERCENT 30U
#define AGENT_DEFAULT_RENEW_JITTER_PERCENT 10U
#define AGENT_DEFAULT_BACKOFF_BASE USEC_PER_SEC
#define AGENT_DEFAULT_BACKOFF_CAP (60 * USEC_PER_SEC)
#define AGENT_DEFAULT_HEALTHY_AFTER (60 * USEC_PER_SEC)
/* Data plane. */
#define AGENT_RESOLVERS_MAX 8U
#define AGENT_FORWARDS_MAX 64U
#define AGENT_STREAMS_MAX 65536U
#define AGENT_CONNECT_TIMEOUT_MAX (5 * USEC_PER_MINUTE)
#define AGENT_DEFAULT_MAX_STREAMS 4096U
#define AGENT_DEFAULT_MAX_STREAMS_PER_TUNNELER 256U
#define AGENT_DEFAULT_IDLE_TIMEOUT (10 * USEC_PER_MINUTE)
#define AGENT_DEFAULT_CONNECT_TIMEOUT (10 * USEC_PER_SEC)

typedef struct AgentConfig {
        SpiffeRole role;          /* SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER */

        /* [Agent] */
        char *id;                 /* NULL: unset */
        char **controllers;       /* canonical "host:port" strv; NULL when empty */
        char *trust_domain;       /* NULL: not checked */
        char *controller_ca_file; /* NULL: the token's pin */
        KeyType key_type;
        char *state_directory;
        char **labels;            /* "key=value" strv, unique keys; NULL when empty */
        char *private_ip;         /* NULL: detect */

        /* [Connector] */
        char *data_plane_listen;  /* canonical "IP:port"; NULL for the tunneler */
        char *data_plane_address; /* canonical "host:port", NULL: unset */
        char **resolvers;         /* canonical "IP:port" strv; NULL: /etc/resolv.conf */
        unsigned max_streams;
        unsigned max_streams_per_tunneler;

        /* [Connector] and [Tunneler] */
        usec_t idle_timeout;      /* a relayed stream idle this long is closed; USEC_INFINITY: never */
        usec_t connect_timeout;   /* connector: to a resource; tunneler: to a connector */

        /* [Tunneler] */
        char **forwards;          /* canonical "LISTEN=TARGET" strv ("127.0.0.1:15432=db.lab:5432") */
        char *socks_listen;       /* loopback "IP:port", NULL: no SOCKS5 server */
        char *http_proxy_listen;  /* loopback "IP:port", NULL: no HTTP CONNECT proxy */

        /* [Health] */
        char *health_listen;      /* canonical loopback "IP:port" */

        /* [Renewal] */
        unsigned renew_at_percent;
        unsigned renew_jitter_percent;

        /* [Reconnect] */
        usec_t backoff_base;
        usec_t backoff_cap;
        usec_t healthy_after;
} AgentConfig;

/* "connector" or "tunneler": the configuration file's name (without ".conf"); NULL for other roles. */
const char *agent_config_name(SpiffeRole role);

/* Fills ret with the defaults for role (SPIFFE_ROLE_CONNECTOR or SPIFFE_ROLE_TUNNELER, else -EINVAL),
 * reading only $STATE_DIRECTORY. 0, -EINVAL or -ENOMEM; ret is written on success only. */
int agent_config_init(SpiffeRole role, AgentConfig *ret);

/* Defaults, files from confdir (NULL: ZTNA_CONFDIR), environment, agent_config_check(). Bad lines and
 * values are warnings (file:line) and leave the earlier value; a missing <role>.conf is fine. Returns the
 * number of ignored lines (>= 0), or a negative errno, already logged: -EINVAL when the environment or the
 * cross-field checks fail (or for a role without agent configuration), the errors of
 * config_parse_standard(), -ENOMEM. ret is written on success only; release it with agent_config_done(). */
int agent_config_load(SpiffeRole role, const char *confdir, AgentConfig *ret);

/* Applies the credential CONTROLLER_CA and the variables CONTROLLER_ADDR, <ROLE>_ID, TRUST_DOMAIN,
 * CONTROLLER_CA_PATH and (connector) CONNECTOR_ADDR to c, each one replacing the file's value. Logs and
 * returns -EINVAL when one is invalid (c may then hold the ones applied before it), -ENOMEM. */
int agent_config_apply_environment(AgentConfig *c);

/* Sets one key as a configuration line "[section] key=value" would, for command-line options: the same
 * parsers, the same semantics (lists append, "" empties or restores the default). Does not log beyond
 * debug. -ENOENT when section/key is not a key of c's role, the parser's error (-EINVAL, -ERANGE, -E2BIG)
 * with c unchanged, -ENOMEM. */
int agent_config_set(AgentConfig *c, const char *section, const char *key, const char *value);

/* The cross-field rules above. Logs an error for every rule broken, naming the key, and returns -EINVAL;
 * 0 when all hold. */
int agent_config_check(const AgentConfig *c);

/* Frees what c holds and resets it to zeroes. Accepts a zeroed config. */
void agent_config_done(AgentConfig *c);

/* Enrollment token sources, in the order agent_token_read() tries them. */
typedef enum AgentTokenSource {
        AGENT_TOKEN_SOURCE_FILE,        /* --token-file PATH */
        AGENT_TOKEN_SOURCE_STDIN,       /* --token-file - */
        AGENT_TOKEN_SOURCE_CREDENTIAL,  /* $CREDENTIALS_DIRECTORY/ENROLLMENT_TOKEN */
        AGENT_TOKEN_SOURCE_ENVIRONMENT, /* $ENROLLMENT_TOKEN */
        _AGENT_TOKEN_SOURCE_MAX,
        _AGENT_TOKEN_SOURCE_INVALID = -EINVAL,
} AgentTokenSource;

/* "file", "stdin", "credential", "environment"; NULL for anything else. */
const char *agent_token_source_to_string(AgentTokenSource s);

#define AGENT_TOKEN_CREDENTIAL "ENROLLMENT_TOKEN"
#define AGENT_TOKEN_ENVIRONMENT "ENROLLMENT_TOKEN"
/* Most bytes read from any source, surrounding whitespace included; the token itself is at most
 * TOKEN_STRING_MAX. */
#define AGENT_TOKEN_INPUT_MAX (TOKEN_STRING_MAX + 1024U)

/* agent_token_read() returns this (> 0) when the token came from a regular file (path, or stdin
 * redirected from a file) that group or others may access, or that another user owns: the caller warns, as
 * anyone who can read it can enroll, and anyone who can write it can point the agent at a controller of
 * their choosing. */
#define AGENT_TOKEN_FILE_ACCESSIBLE 1

/* Reads the enrollment token for role (connector or tunneler), from the first source that has one:
 *   1. token_file, when non-NULL: a regular file, or "-" for stdin (read to EOF: a pipe, a file, a
 *      terminal); an explicit file that fails is an error, the other sources are not tried;
 *   2. the credential ENROLLMENT_TOKEN (absent or no $CREDENTIALS_DIRECTORY: the next source);
 *   3. the variable ENROLLMENT_TOKEN (empty counts as unset). It is then overwritten in place and unset:
 *      unsetenv() alone would leave the bytes readable in /proc/<pid>/environ. The caller warns that the
 *      token was visible there.
 * One trailing newline and any surrounding whitespace are stripped. The result is read as a secret (one
 * buffer, wiped on every path) and must be released with erase_and_free_string(). There is deliberately
 * no way to pass the token itself on the command line.
 * Returns 0, or AGENT_TOKEN_FILE_ACCESSIBLE (see above); ret and ret_source (may be NULL) are written on
 * success only. Errors (not logged):
 *   -ENOENT    no source has a token (or token_file does not exist)
 *   -ENODATA   the source is empty (or whitespace only)
 *   -EFBIG     the source holds more than AGENT_TOKEN_INPUT_MAX bytes
 *   -EMSGSIZE  the token is longer than TOKEN_STRING_MAX
 *   -EBADMSG   the token contains whitespace, control characters, NUL bytes or non-ASCII bytes
 *   -EISDIR, -EBADFD (token_file is not a regular file), -EINVAL (bad role, relative
 *   $CREDENTIALS_DIRECTORY), -ENOMEM, errors of open() and read(). */
int agent_token_read(SpiffeRole role, const char *token_file, char **ret, AgentTokenSource *ret_source);

/* What an error of agent_token_read() means to the person who gave the token ("the token file is not a
 * regular file"), without a trailing period; NULL for errors that %m describes well enough. */
const char *agent_token_error_message(int r);
