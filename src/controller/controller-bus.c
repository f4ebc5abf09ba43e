/* SPDX-License-Identifier: Apache-2.0 */

/* org.ztna.Controller1: local administration over the system bus. Every method is open to every caller at
 * the sd-bus layer (SD_BUS_VTABLE_UNPRIVILEGED) and to everyone by the bus policy
 * (dbus/org.ztna.Controller1.conf); polkit decides (polkit/org.ztna.controller.policy), root passes without
 * asking. Handlers keep the house order: read → validate → polkit → mutate → reply; polkit re-dispatches
 * the call once it has answered, so everything before the polkit check runs twice. */

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "config.h"
#include "controller-audit.h"
#include "controller-bus.h"
#include "controller-ca.h"
#include "controller-control.h"
#include "controller-token.h"
#include "hexdecoct.h"
#include "log.h"
#include "string-util.h"
#include "strv.h"

#define BUS_ERROR_NO_SUCH_TOKEN CONTROLLER_BUS_INTERFACE ".Error.NoSuchToken"
#define BUS_ERROR_TOKEN_NOT_ACTIVE CONTROLLER_BUS_INTERFACE ".Error.TokenNotActive"
#define BUS_ERROR_NO_SUCH_AGENT CONTROLLER_BUS_INTERFACE ".Error.NoSuchAgent"
#define BUS_ERROR_AGENT_ALREADY_REVOKED CONTROLLER_BUS_INTERFACE ".Error.AgentAlreadyRevoked"
#define BUS_ERROR_AMBIGUOUS_AGENT CONTROLLER_BUS_INTERFACE ".Error.AmbiguousAgent"
#define BUS_ERROR_ROTATION_IN_PROGRESS CONTROLLER_BUS_INTERFACE ".Error.RotationInProgress"

#define POLKIT_ACTION_READ "org.ztna.controller.read"
#define POLKIT_ACTION_MANAGE_TOKENS "org.ztna.controller.manage-tokens"
#define POLKIT_ACTION_MANAGE_AGENTS "org.ztna.controller.manage-agents"
#define POLKIT_ACTION_MANAGE_CA "org.ztna.controller.manage-ca"

/* Longest "uid:<n>" actor string, NUL included. */
#define BUS_ACTOR_MAX (STRLEN("uid:") + 10 + 1)

/* The caller as the audit trail names it: "root" or "uid:<euid>", from what the bus itself knows about the
 * sender (never from arguments). Credentials that sd-bus had to read from /proc are racy and refused. */
static int bus_message_get_actor(sd_bus_message *message, char ret[static BUS_ACTOR_MAX]) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t euid;
        int r;

        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        if (sd_bus_creds_get_augmented_mask(creds) & SD_BUS_CREDS_EUID)
                return -EPERM;
        r = sd_bus_creds_get_euid(creds, &euid);
        if (r < 0)
                return r;

        if (euid == 0)
                snprintf(ret, BUS_ACTOR_MAX, "root");
        else
                snprintf(ret, BUS_ACTOR_MAX, "uid:%" PRIu32, (uint32_t) euid);
        return 0;
}

/* A failure of ours, not of the caller's request: logged here (handlers are the boundary), and the caller
 * gets the errno's generic error, never internal detail. */
static int bus_internal_error(sd_bus_error *error, int r, const char *what) {
        log_error_errno(r, "Failed to %s on behalf of a bus caller: %m", what);
        return sd_bus_error_set_errnof(error, r, "Failed to %s: %m", what);
}

static int bus_check_string(const char *s, const char *what, sd_bus_error *error) {
        if (strlen(s) > STORE_STRING_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s is longer than %u bytes.", what,
                                         (unsigned) STORE_STRING_MAX);
        if (string_has_cc(s, NULL))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s contains control characters.",
                                         what);
        return 0;
}

/* "" or an agent role (connector, tunneler); *ret = _SPIFFE_ROLE_INVALID for "". */
static int bus_parse_agent_role(const char *s, bool allow_empty, SpiffeRole *ret, sd_bus_error *error) {
        SpiffeRole role;

        if (allow_empty && isempty(s)) {
                *ret = _SPIFFE_ROLE_INVALID;
                return 0;
        }

        role = spiffe_role_from_string(s);
        if (role != SPIFFE_ROLE_CONNECTOR && role != SPIFFE_ROLE_TUNNELER) {
                if (strlen(s) > ZTNA_ID_MAX || string_has_cc(s, NULL))
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                "Invalid role: expected connector or tunneler.");
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid role '%s': expected connector or tunneler.", s);
        }

        *ret = role;
        return 0;
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
}

static int property_get_advertised_addresses(sd_bus *bus, const char *path, const char *interface,
                                             const char *property, sd_bus_message *reply, void *userdata,
                                             sd_bus_error *error) {
        Manager *m = userdata;

        assert(m);

        return sd_bus_message_append_strv(reply, m->config.advertised_addresses.addresses);
}

static int property_get_root_fingerprint(sd_bus *bus, const char *path, const char *interface,
                                         const char *property, sd_bus_message *reply, void *userdata,
                                         sd_bus_error *error) {
        _cleanup_free_ char *hex = NULL;
        Manager *m = userdata;
        uint8_t pin[32];

        assert(m);

        if (!m->ca)
                return sd_bus_message_append(reply, "s", "");

        controller_ca_get_root_pin(m->ca, pin);
        hex = hexmem(pin, sizeof(pin));
        if (!hex)
                return -ENOMEM;

        return sd_bus_message_append(reply, "s", hex);
}

static int property_get_control_streams(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Manager *m = userdata;
        size_t n;

        assert(m);

        n = m->control ? control_registry_n_sessions(m->control) : 0;
        return sd_bus_message_append(reply, "u", (uint32_t) MIN(n, (size_t) UINT32_MAX));
}

static int method_create_token(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(store_token_freep) StoreToken *token = NULL;
        _cleanup_erase_free_ char *token_string = NULL;
        _cleanup_strv_free_ char **groups = NULL;
        _cleanup_free_ char *token_id = NULL;
        const char *role_name, *bound_id, *remote_network, *reason = NULL;
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        uint64_t lifetime;
        SpiffeRole role = _SPIFFE_ROLE_INVALID;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "sss", &role_name, &bound_id, &remote_network);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(message, &groups);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "t", &lifetime);
        if (r < 0)
                return r;

        /* Shape and bounds here; the rules (id syntax, network vs groups per role, lifetime range) are
         * controller_token_create()'s, which answers with its reason. */
        r = bus_parse_agent_role(role_name, false, &role, error);
        if (r < 0)
                return r;
        r = bus_check_string(bound_id, "Bound id", error);
        if (r < 0)
                return r;
        r = bus_check_string(remote_network, "Remote network", error);
        if (r < 0)
                return r;
        if (strv_length(groups) > STORE_GROUPS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "More than %u groups.",
                                         (unsigned) STORE_GROUPS_MAX);
        STRV_FOREACH(g, groups) {
                r = bus_check_string(*g, "Group", error);
                if (r < 0)
                        return r;
        }

        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_TOKENS, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = controller_token_create(m,
                                    &(TokenRequest) {
                                            .role = role,
                                            .bound_id = isempty(bound_id) ? NULL : bound_id,
                                            .remote_network = isempty(remote_network) ? NULL : remote_network,
                                            .groups = strv_length(groups) == 0 ? NULL : groups,
                                            .lifetime = lifetime,
                                    },
                                    actor,
                                    &token_string,
                                    &token,
                                    &reason);
        if (r == -EINVAL)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, reason ?: "Invalid token request.");
        if (r < 0)
                return bus_internal_error(error, r, "create an enrollment token");
        assert(token);

        token_id = token_id_to_string(token->id);
        if (!token_id)
                return -ENOMEM;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        /* Before anything is appended: the reply carries the secret, its buffers are wiped when freed. */
        r = sd_bus_message_sensitive(reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "sst", token_string, token_id, (uint64_t) token->expires_at);
        if (r < 0)
                return r;

        return sd_bus_send(NULL, reply, NULL);
}

static int reply_tokens(sd_bus_message *message, StoreToken *const *tokens, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        usec_t t = now(CLOCK_REALTIME);
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sssssasstttst)");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                const StoreToken *k = tokens[i];
                _cleanup_free_ char *id = NULL;

                id = token_id_to_string(k->id);
                if (!id)
                        return -ENOMEM;

                r = sd_bus_message_open_container(reply, 'r', "sssssasstttst");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "sssss",
                                          id,
                                          strempty(spiffe_role_to_string(k->role)),
                                          controller_token_state(k, t),
                                          strempty(k->bound_id),
                                          strempty(k->remote_network));
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, k->groups);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "stttst",
                                          strempty(k->created_by),
                                          (uint64_t) k->created_at,
                                          (uint64_t) k->expires_at,
                                          (uint64_t) k->used_at,
                                          strempty(k->used_by),
                                          (uint64_t) k->revoked_at);
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;

        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_tokens(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreToken **tokens = NULL;
        Manager *m = userdata;
        size_t n = 0;
        int r;

        assert(message);
        assert(m);

        r = bus_verify_polkit_async(message, POLKIT_ACTION_READ, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = store_token_list(m->store, &tokens, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list enrollment tokens");

        r = reply_tokens(message, tokens, n);
        store_token_array_free(tokens, n);
        return r;
}

static bool token_id_is_valid(const char *s) {
        if (strlen(s) != 2 * TOKEN_ID_SIZE)
                return false;
        for (const char *p = s; *p; p++)
                if (unhexchar(*p) < 0)
                        return false;
        return true;
}

static int method_revoke_token(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *token_id, *details[3] = {};
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &token_id);
        if (r < 0)
                return r;

        if (!token_id_is_valid(token_id))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid token id: expected %u hex digits.", 2U * TOKEN_ID_SIZE);

        details[0] = "token_id";
        details[1] = token_id;
        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_TOKENS, details, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = controller_token_revoke(m, token_id, actor);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_TOKEN, "No token with id '%s'.", token_id);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, BUS_ERROR_TOKEN_NOT_ACTIVE,
                                         "Token '%s' was already used or revoked.", token_id);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid token id '%s'.", token_id);
        if (r < 0)
                return bus_internal_error(error, r, "revoke an enrollment token");

        return sd_bus_reply_method_return(message, NULL);
}

static int reply_agents(Manager *m, sd_bus_message *message, StoreAgent *const *agents, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        usec_t t = now(CLOCK_REALTIME);
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssssssassasstttt)");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                const StoreAgent *a = agents[i];
                usec_t last_seen = 0;
                const char *status;

                if (a->revoked_at > 0)
                        status = "revoked";
                else if (m->control && control_registry_is_online(m->control, a->spiffe_id, t, &last_seen))
                        status = "online";
                else
                        status = "offline";
                /* Heartbeats reach the store in batches: memory may be newer, the store may be the only
                 * record (after a restart). */
                last_seen = MAX(last_seen, a->last_seen);

                r = sd_bus_message_open_container(reply, 'r', "ssssssassasstttt");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "ssssss",
                                          a->spiffe_id,
                                          strempty(spiffe_role_to_string(a->role)),
                                          strempty(a->id),
                                          status,
                                          strempty(a->version),
                                          strempty(a->private_ip));
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, a->labels);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "s", strempty(a->remote_network));
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, a->groups);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "stttt",
                                          strempty(a->via),
                                          (uint64_t) last_seen,
                                          (uint64_t) a->cert_not_after,
                                          (uint64_t) a->enrolled_at,
                                          (uint64_t) a->revoked_at);
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;

        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_agents(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreAgent **agents = NULL;
        Manager *m = userdata;
        const char *role_name;
        SpiffeRole role = _SPIFFE_ROLE_INVALID;
        size_t n = 0;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &role_name);
        if (r < 0)
                return r;

        r = bus_parse_agent_role(role_name, true, &role, error);
        if (r < 0)
                return r;

        r = bus_verify_polkit_async(message, POLKIT_ACTION_READ, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = store_agent_list(m->store, role, &agents, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list agents");

        r = reply_agents(m, message, agents, n);
        store_agent_array_free(agents, n);
        return r;
}

/* An agent argument: a ztna SPIFFE ID or a bare agent id. */
static int bus_check_agent(const char *agent, sd_bus_error *error) {
        if (startswith(agent, "spiffe://")) {
                const char *why = NULL;

                if (strlen(agent) > SPIFFE_ID_MAX || spiffe_id_from_string_ztna(agent, NULL, &why) < 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid SPIFFE ID: %s.",
                                                 strna(why));
        } else if (!ztna_id_is_valid(agent))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Invalid agent: expected a SPIFFE ID or an agent id.");
        return 0;
}

static int method_revoke_agent(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *agent, *reason, *details[3] = {};
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "ss", &agent, &reason);
        if (r < 0)
                return r;

        r = bus_check_agent(agent, error);
        if (r < 0)
                return r;
        r = bus_check_string(reason, "Reason", error);
        if (r < 0)
                return r;

        details[0] = "agent";
        details[1] = agent;
        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_AGENTS, details, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = manager_revoke_agent(m, agent, isempty(reason) ? NULL : reason, actor);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_AGENT, "No agent '%s'.", agent);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, BUS_ERROR_AGENT_ALREADY_REVOKED, "Agent '%s' is already revoked.",
                                         agent);
        if (r == -ENOTUNIQ)
                return sd_bus_error_setf(error, BUS_ERROR_AMBIGUOUS_AGENT,
                                         "More than one agent has the id '%s': use its SPIFFE ID.", agent);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid agent '%s'.", agent);
        if (r < 0)
                return bus_internal_error(error, r, "revoke an agent");

        return sd_bus_reply_method_return(message, NULL);
}

static int method_request_renewal(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *agent, *details[3] = {};
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &agent);
        if (r < 0)
                return r;
        if (!isempty(agent)) {
                r = bus_check_agent(agent, error);
                if (r < 0)
                        return r;
        }

        details[0] = "agent";
        details[1] = agent;
        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_AGENTS, details, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = manager_request_renewal(m, agent, actor);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_AGENT, "No agent '%s'.", agent);
        if (r == -ENOTUNIQ)
                return sd_bus_error_setf(error, BUS_ERROR_AMBIGUOUS_AGENT,
                                         "More than one agent has the id '%s': use its SPIFFE ID.", agent);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid agent '%s'.", agent);
        if (r < 0)
                return bus_internal_error(error, r, "request a renewal");

        return sd_bus_reply_method_return(message, "u", (uint32_t) r);
}

/* The root that rotate_root() just staged, for the audit record's subject. NULL when not found. */
static char *staged_root_fingerprint(Store *store) {
        StoreCa **cas = NULL;
        char *hex = NULL;
        size_t n = 0;

        if (store_ca_list(store, &cas, &n) < 0)
                return NULL;
        for (size_t i = 0; i < n && !hex; i++)
                if (cas[i]->kind == STORE_CA_ROOT && cas[i]->state == STORE_CA_STAGED)
                        hex = hexmem(cas[i]->fingerprint, sizeof(cas[i]->fingerprint));
        store_ca_array_free(cas, n);
        return hex;
}

static int method_rotate_root_ca(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *fingerprint = NULL;
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_CA, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        if (!m->ca)
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED, "The certificate authority is not loaded.");

        r = controller_ca_rotate_root(m->ca, now(CLOCK_REALTIME));
        if (r == -EBUSY)
                return sd_bus_error_set(error, BUS_ERROR_ROTATION_IN_PROGRESS,
                                        "A root CA rotation is already in progress.");
        if (r < 0)
                return bus_internal_error(error, r, "start a root CA rotation");

        /* Only this side knows who asked; the CA records the rotation itself, not its actor. */
        fingerprint = staged_root_fingerprint(m->store);
        (void) audit_log(m->store, AUDIT_CA_ROOT_ROTATION,
                         &(AuditRecord) {
                                 .actor = actor,
                                 .subject = fingerprint,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .reason = "root rotation started",
                         });

        /* The new root is stored and in the bundle: the rotation has started whatever happens next, and the
         * next CA maintenance pushes the bundle again. So a failed push is the daemon's problem to log, not
         * a failure of this call (a retry would only get RotationInProgress). */
        r = manager_ca_changed(m, CONTROLLER_CA_CHANGED_BUNDLE);
        if (r < 0)
                log_error_errno(r, "Failed to push the trust bundle after starting a root rotation, "
                                "ignoring: %m");

        return sd_bus_reply_method_return(message, NULL);
}

static int reply_cas(sd_bus_message *message, StoreCa *const *cas, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        static const uint8_t zero[32] = {};
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssssttay)");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                const StoreCa *c = cas[i];
                _cleanup_free_ char *fingerprint = NULL, *parent = NULL;

                fingerprint = hexmem(c->fingerprint, sizeof(c->fingerprint));
                if (!fingerprint)
                        return -ENOMEM;
                if (c->kind == STORE_CA_ISSUING && memcmp(c->parent, zero, sizeof(zero)) != 0) {
                        parent = hexmem(c->parent, sizeof(c->parent));
                        if (!parent)
                                return -ENOMEM;
                }

                r = sd_bus_message_open_container(reply, 'r', "ssssttay");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "sssstt",
                                          fingerprint,
                                          strempty(store_ca_kind_to_string(c->kind)),
                                          strempty(store_ca_state_to_string(c->state)),
                                          strempty(parent),
                                          (uint64_t) c->not_before,
                                          (uint64_t) c->not_after);
                if (r < 0)
                        return r;
                r = sd_bus_message_append_array(reply, 'y', c->certificate, c->certificate_size);
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }

        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;

        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_cas(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreCa **cas = NULL;
        Manager *m = userdata;
        size_t n = 0;
        int r;

        assert(message);
        assert(m);

        r = bus_verify_polkit_async(message, POLKIT_ACTION_READ, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = store_ca_list(m->store, &cas, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list certificate authorities");

        /* Certificates only: sealed keys never leave the store through here. */
        r = reply_cas(message, cas, n);
        store_ca_array_free(cas, n);
        return r;
}

static const sd_bus_vtable controller_vtable[] = {
        SD_BUS_VTABLE_START(0),

        SD_BUS_PROPERTY("TrustDomain", "s", NULL, offsetof(Manager, config.trust_domain),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ControllerId", "s", NULL, offsetof(Manager, config.id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("AdvertisedAddresses", "as", property_get_advertised_addresses, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        /* Changes when a root rotation completes (no signal yet): read it when needed, do not cache it. */
        SD_BUS_PROPERTY("RootFingerprint", "s", property_get_root_fingerprint, 0, 0),
        SD_BUS_PROPERTY("ControlStreams", "u", property_get_control_streams, 0, 0),

        SD_BUS_METHOD_WITH_ARGS("CreateToken",
                                SD_BUS_ARGS("s", role, "s", bound_id, "s", remote_network, "as", groups,
                                            "t", lifetime_usec),
                                SD_BUS_RESULT("s", token, "s", token_id, "t", expires_usec),
                                method_create_token,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListTokens",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sssssasstttst)", tokens),
                                method_list_tokens,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RevokeToken",
                                SD_BUS_ARGS("s", token_id),
                                SD_BUS_NO_RESULT,
                                method_revoke_token,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListAgents",
                                SD_BUS_ARGS("s", role),
                                SD_BUS_RESULT("a(ssssssassasstttt)", agents),
                                method_list_agents,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RevokeAgent",
                                SD_BUS_ARGS("s", agent, "s", reason),
                                SD_BUS_NO_RESULT,
                                method_revoke_agent,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RequestRenewal",
                                SD_BUS_ARGS("s", agent),
                                SD_BUS_RESULT("u", streams),
                                method_request_renewal,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RotateRootCA",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_rotate_root_ca,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListCAs",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssssttay)", cas),
                                method_list_cas,
                                SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_VTABLE_END,
};

int manager_connect_bus(Manager *m) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        assert(m);
        assert(m->event);
        assert(!m->bus);

        r = bus_open_ztna(/* user= */ false, &bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to %s: %m", bus_ztna_description(false));

        (void) sd_bus_set_description(bus, "bus-api-controller");

        r = sd_bus_add_object_vtable(bus, NULL, CONTROLLER_BUS_PATH, CONTROLLER_BUS_INTERFACE, controller_vtable,
                                     m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the %s object: %m", CONTROLLER_BUS_PATH);

        /* Synchronously, before READY=1: a client started right after the daemon reported ready must find
         * the name (we are not bus-activated, so nothing would queue its call). One round trip to the local
         * bus at start. */
        r = sd_bus_request_name(bus, CONTROLLER_BUS_NAME, 0);
        if (r == -EEXIST)
                return log_error_errno(r, "Bus name '%s' is owned by another process: is another controller "
                                       "running?", CONTROLLER_BUS_NAME);
        if (r < 0)
                return log_error_errno(r, "Failed to request bus name '%s': %m", CONTROLLER_BUS_NAME);

        r = sd_bus_attach_event(bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        m->bus = TAKE_PTR(bus);
        return 0;
}
