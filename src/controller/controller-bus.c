/* SPDX-License-Identifier: Apache-2.0 */

/* org.ztna.Controller1: local administration over the system bus. Every method is open to every caller at
 * the sd-bus layer (SD_BUS_VTABLE_UNPRIVILEGED) and to everyone by the bus policy
 * (dbus/org.ztna.Controller1.conf); polkit decides (polkit/org.ztna.controller.policy), root passes without
 * asking. Handlers keep the house order: read → validate → polkit → mutate → reply; polkit re-dispatches
 * the call once it has answered, so everything before the polkit check runs twice. Methods that receive a
 * password (CreateAdmin, SetAdminPassword) are SD_BUS_VTABLE_SENSITIVE and mark the call sensitive
 * themselves, so its buffers are wiped when it is freed; the expensive hash runs after polkit, once. */

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "bus-util.h"
#include "config.h"
#include "controller-audit.h"
#include "controller-auth.h"
#include "controller-bus.h"
#include "controller-ca.h"
#include "controller-control.h"
#include "controller-token.h"
#include "hexdecoct.h"
#include "log.h"
#include "policy.h"
#include "string-util.h"
#include "strv.h"

#define BUS_ERROR_NO_SUCH_TOKEN CONTROLLER_BUS_INTERFACE ".Error.NoSuchToken"
#define BUS_ERROR_TOKEN_NOT_ACTIVE CONTROLLER_BUS_INTERFACE ".Error.TokenNotActive"
#define BUS_ERROR_NO_SUCH_AGENT CONTROLLER_BUS_INTERFACE ".Error.NoSuchAgent"
#define BUS_ERROR_AGENT_ALREADY_REVOKED CONTROLLER_BUS_INTERFACE ".Error.AgentAlreadyRevoked"
#define BUS_ERROR_AMBIGUOUS_AGENT CONTROLLER_BUS_INTERFACE ".Error.AmbiguousAgent"
#define BUS_ERROR_ROTATION_IN_PROGRESS CONTROLLER_BUS_INTERFACE ".Error.RotationInProgress"
#define BUS_ERROR_NO_SUCH_NETWORK CONTROLLER_BUS_INTERFACE ".Error.NoSuchNetwork"
#define BUS_ERROR_NO_SUCH_RESOURCE CONTROLLER_BUS_INTERFACE ".Error.NoSuchResource"
#define BUS_ERROR_NO_SUCH_GROUP CONTROLLER_BUS_INTERFACE ".Error.NoSuchGroup"
#define BUS_ERROR_NO_SUCH_POLICY CONTROLLER_BUS_INTERFACE ".Error.NoSuchPolicy"
#define BUS_ERROR_NETWORK_IN_USE CONTROLLER_BUS_INTERFACE ".Error.NetworkInUse"
#define BUS_ERROR_ALREADY_EXISTS CONTROLLER_BUS_INTERFACE ".Error.AlreadyExists"
#define BUS_ERROR_NOT_A_TUNNELER CONTROLLER_BUS_INTERFACE ".Error.NotATunneler"
#define BUS_ERROR_ALREADY_MEMBER CONTROLLER_BUS_INTERFACE ".Error.AlreadyMember"
#define BUS_ERROR_NOT_A_MEMBER CONTROLLER_BUS_INTERFACE ".Error.NotAMember"
#define BUS_ERROR_TOO_MANY_GROUPS CONTROLLER_BUS_INTERFACE ".Error.TooManyGroups"
#define BUS_ERROR_NO_SUCH_ADMIN CONTROLLER_BUS_INTERFACE ".Error.NoSuchAdmin"

#define POLKIT_ACTION_READ "org.ztna.controller.read"
#define POLKIT_ACTION_MANAGE_TOKENS "org.ztna.controller.manage-tokens"
#define POLKIT_ACTION_MANAGE_AGENTS "org.ztna.controller.manage-agents"
#define POLKIT_ACTION_MANAGE_CA "org.ztna.controller.manage-ca"
#define POLKIT_ACTION_MANAGE_POLICY "org.ztna.controller.manage-policy"
#define POLKIT_ACTION_MANAGE_ADMINS "org.ztna.controller.manage-admins"

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

/* PolicyRevision moved (a policy mutation, a revocation). One signal per call: each call is one store
 * transaction, so there is nothing to coalesce. */
static void bus_emit_policy_revision(sd_bus *bus) {
        int r;

        r = sd_bus_emit_properties_changed(bus, CONTROLLER_BUS_PATH, CONTROLLER_BUS_INTERFACE,
                                           "PolicyRevision", NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to emit PropertiesChanged for PolicyRevision, ignoring: %m");
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

        /* A revoked tunneler holds no groups any more: the store moved the policy revision. */
        bus_emit_policy_revision(sd_bus_message_get_bus(message));
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

/* --- the access policy: networks, resources, groups, memberships, policies --- */

/* AuditRecord.fields for policy-changed: key, value, … */
#define AUDIT_FIELDS(...) ((const char *const[]) { __VA_ARGS__, NULL })

/* How much of a value that failed validation is quoted back in the error, and the buffer holding it. */
#define BUS_QUOTE_MAX 64U
#define BUS_QUOTE_SIZE (BUS_QUOTE_MAX + STRLEN("…") + 1)

/* A caller's rejected value, fit to be quoted in an error message that may reach a terminal or a log: at
 * most BUS_QUOTE_MAX bytes (cut at a character boundary, "…" appended), control characters as '?'. */
static const char *bus_quote(const char *s, char buf[static BUS_QUOTE_SIZE]) {
        size_t n = strlen(s);
        bool cut = n > BUS_QUOTE_MAX;

        if (cut) {
                n = BUS_QUOTE_MAX;
                /* Never split a UTF-8 sequence (the bus only carries valid UTF-8). */
                while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
                        n--;
        }
        memcpy(buf, s, n);
        buf[n] = '\0';
        for (char *p = buf; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = '?';
        if (cut)
                strcpy(buf + n, "…");
        return buf;
}

static int bus_invalid(sd_bus_error *error, const char *what, const char *value, const char *why) {
        char q[BUS_QUOTE_SIZE];

        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid %s '%s': %s.", what,
                                 bus_quote(value, q), why);
}

/* A network, resource or group name (policy.h): which rule it breaks, for the message. */
static int bus_check_policy_name(const char *s, const char *what, sd_bus_error *error) {
        char why[64];

        if (policy_name_is_valid(s))
                return 0;

        if (isempty(s))
                snprintf(why, sizeof(why), "empty");
        else if (strlen(s) > POLICY_NAME_MAX)
                snprintf(why, sizeof(why), "longer than %u bytes", POLICY_NAME_MAX);
        else if (string_has_cc(s, NULL))
                snprintf(why, sizeof(why), "contains control characters");
        else if (strchr(WHITESPACE, s[0]) || strchr(WHITESPACE, s[strlen(s) - 1]))
                snprintf(why, sizeof(why), "starts or ends with whitespace");
        else
                snprintf(why, sizeof(why), "not valid text");
        return bus_invalid(error, what, s, why);
}

/* A resource as the caller gave it, checked and in the canonical text the store keeps. */
typedef struct ResourceInput {
        const char *name;
        const char *network;
        const char *protocol;                           /* static: "any", "tcp", "udp" */
        char address[POLICY_ADDRESS_STRING_MAX];
        char ports[POLICY_PORTS_STRING_MAX];
        char alias[POLICY_ADDRESS_STRING_MAX];          /* "" for none */
} ResourceInput;

static int bus_read_resource(sd_bus_message *message, ResourceInput *ret, sd_bus_error *error) {
        ResourceInput in = {};
        const char *name, *address, *protocol, *ports, *network, *alias, *why = NULL;
        ResourceAddress a;
        ResourceProtocol p;
        PortSet set;
        int r;

        r = sd_bus_message_read(message, "ssssss", &name, &address, &protocol, &ports, &network, &alias);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "resource name", error);
        if (r < 0)
                return r;

        if (resource_address_parse(address, &a, &why) < 0)
                return bus_invalid(error, "address", address,
                                   why ?: "not a host name, wildcard, address or CIDR");
        resource_address_to_string(&a, in.address);

        /* Case does not matter to a protocol name ("TCP"); anything long is not one anyway. */
        if (isempty(protocol))
                p = RESOURCE_PROTOCOL_ANY;
        else {
                char lower[8] = {};

                if (strlen(protocol) < sizeof(lower))
                        ascii_strlower(strcpy(lower, protocol));
                p = resource_protocol_from_string(lower);
                if (p < 0)
                        return bus_invalid(error, "protocol", protocol, "expected tcp, udp or any");
        }
        in.protocol = resource_protocol_to_string(p);

        if (port_set_parse(ports, &set, &why) < 0)
                return bus_invalid(error, "ports", ports,
                                   why ?: "expected any, or ports and ranges like 22,80-90");
        port_set_to_string(&set, in.ports);

        r = bus_check_policy_name(network, "network name", error);
        if (r < 0)
                return r;

        if (!isempty(alias)) {
                if (resource_address_parse(alias, &a, &why) < 0)
                        return bus_invalid(error, "alias", alias, why ?: "not a host name");
                if (a.kind != RESOURCE_ADDRESS_FQDN)
                        return bus_invalid(error, "alias", alias,
                                           "expected a host name such as db.lab.example");
                resource_address_to_string(&a, in.alias);
        }

        in.name = name;
        in.network = network;
        *ret = in;
        return 0;
}

static StoreResource resource_input_to_store(ResourceInput *in) {
        return (StoreResource) {
                .name = (char *) in->name,
                .address = in->address,
                .protocol = (char *) in->protocol,
                .ports = in->ports,
                .remote_network = (char *) in->network,
                .alias = isempty(in->alias) ? NULL : in->alias,
        };
}

/* Mutations of the policy need manage-policy; details name the object for polkit's message and rules. */
static int bus_verify_manage_policy(Manager *m, sd_bus_message *message, const char *key1, const char *value1,
                                    const char *key2, const char *value2, sd_bus_error *error) {
        const char *details[5] = { key1, value1, key2, value2, NULL };

        return bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_POLICY, details, &m->polkit_registry,
                                       error);
}

/* After a committed mutation: the audit record (with the revision it produced), the push to the agents it
 * concerns, and PolicyRevision's PropertiesChanged. None of these can undo the change, so their failures are
 * logged, not returned. fields: more key/value pairs for the record (see AuditRecord), NULL-terminated. */
static void bus_policy_changed(Manager *m, sd_bus_message *message, const char *actor, const char *change,
                               const char *subject, const char *const *fields) {
        const char *all[2 * AUDIT_FIELDS_MAX + 1] = {};
        char revision_text[STRLEN("18446744073709551615") + 1];
        uint64_t revision;
        size_t n = 0;
        int r;

        all[n++] = "change";
        all[n++] = change;
        for (const char *const *f = fields; f && *f; f += 2) {
                assert(n + 4 < ELEMENTSOF(all));
                all[n++] = f[0];
                all[n++] = f[1];
        }
        r = store_policy_revision(m->store, &revision);
        if (r < 0)
                log_warning_errno(r, "Failed to read the policy revision, ignoring: %m");
        else {
                snprintf(revision_text, sizeof(revision_text), "%" PRIu64, revision);
                all[n++] = "revision";
                all[n++] = revision_text;
        }

        (void) audit_log(m->store, AUDIT_POLICY_CHANGED,
                         &(AuditRecord) {
                                 .actor = actor,
                                 .subject = subject,
                                 .role = _SPIFFE_ROLE_INVALID,
                                 .fields = all,
                         });

        manager_policy_changed(m);

        bus_emit_policy_revision(sd_bus_message_get_bus(message));
}

static int property_get_policy_revision(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        Manager *m = userdata;
        uint64_t revision;
        int r;

        assert(m);

        r = store_policy_revision(m->store, &revision);
        if (r < 0)
                return bus_internal_error(error, r, "read the policy revision");

        return sd_bus_message_append(reply, "t", revision);
}

/* Whether a network exists: 1, 0, or a negative errno. The store has no single-network lookup. */
static int bus_network_exists(Store *store, const char *name) {
        StoreNetwork **networks = NULL;
        size_t n = 0;
        int r;

        r = store_network_list(store, &networks, &n);
        if (r < 0)
                return r;
        r = 0;
        for (size_t i = 0; i < n && r == 0; i++)
                r = streq(networks[i]->name, name);
        store_network_array_free(networks, n);
        return r;
}

static bool bus_group_exists(Store *store, const char *name) {
        _cleanup_(store_group_freep) StoreGroup *g = NULL;

        return store_group_get(store, name, &g) >= 0;
}

static bool bus_resource_exists(Store *store, const char *name) {
        _cleanup_(store_resource_freep) StoreResource *res = NULL;

        return store_resource_get(store, name, &res) >= 0;
}

static int method_create_network(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *name, *description;
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "ss", &name, &description);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "network name", error);
        if (r < 0)
                return r;
        r = bus_check_string(description, "Description", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "network", name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = store_network_create(m->store, name, isempty(description) ? NULL : description,
                                 now(CLOCK_REALTIME));
        if (r == -EEXIST)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_EXISTS, "Network '%s' already exists.",
                                         name);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid network '%s'.", name);
        if (r < 0)
                return bus_internal_error(error, r, "create a network");

        bus_policy_changed(m, message, actor, "network-created", name, AUDIT_FIELDS("name", name));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_delete_network(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreResource **resources = NULL;
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        const char *name;
        size_t n = 0;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "network name", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "network", name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = store_network_delete(m->store, name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_NETWORK, "No network '%s'.", name);
        if (r == -EBUSY) {
                /* Say what is in the way: resources can be deleted, connectors must be revoked. */
                if (store_resource_list(m->store, name, &resources, &n) >= 0 && n > 0) {
                        store_resource_array_free(resources, n);
                        return sd_bus_error_setf(error, BUS_ERROR_NETWORK_IN_USE,
                                                 "Network '%s' still has %zu resource%s: delete %s first.",
                                                 name, n, n == 1 ? "" : "s", n == 1 ? "it" : "them");
                }
                return sd_bus_error_setf(error, BUS_ERROR_NETWORK_IN_USE,
                                         "Network '%s' still has connectors: revoke them first.", name);
        }
        if (r < 0)
                return bus_internal_error(error, r, "delete a network");

        bus_policy_changed(m, message, actor, "network-deleted", name, AUDIT_FIELDS("name", name));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_list_networks(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StoreNetwork **networks = NULL;
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

        r = store_network_list(m->store, &networks, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list networks");

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                goto finish;
        r = sd_bus_message_open_container(reply, 'a', "(sst)");
        if (r < 0)
                goto finish;
        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_append(reply, "(sst)", networks[i]->name,
                                          strempty(networks[i]->description),
                                          (uint64_t) networks[i]->created_at);
                if (r < 0)
                        goto finish;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                goto finish;
        r = sd_bus_send(NULL, reply, NULL);

finish:
        store_network_array_free(networks, n);
        return r;
}

/* The store said -ENOENT to a resource mutation: the resource or its network. */
static int bus_resource_enoent(Manager *m, const ResourceInput *in, bool resource_must_exist,
                               sd_bus_error *error) {
        if (resource_must_exist && !bus_resource_exists(m->store, in->name))
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_RESOURCE, "No resource '%s'.", in->name);
        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_NETWORK, "No network '%s'.", in->network);
}

static bool resource_equal(const StoreResource *a, const StoreResource *b) {
        return streq(a->address, b->address) && streq(a->protocol, b->protocol) &&
               streq(a->ports, b->ports) && streq(a->remote_network, b->remote_network) &&
               streq_ptr(a->alias, b->alias);
}

static int resource_create_or_update(sd_bus_message *message, Manager *m, bool update, sd_bus_error *error) {
        _cleanup_(store_resource_freep) StoreResource *current = NULL;
        char actor[BUS_ACTOR_MAX];
        ResourceInput in;
        StoreResource res;
        int r;

        r = bus_read_resource(message, &in, error);
        if (r < 0)
                return r;
        res = resource_input_to_store(&in);

        r = bus_verify_manage_policy(m, message, "resource", in.name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        if (update) {
                /* After polkit: whether a resource exists is itself policy to be read. An update that changes
                 * nothing is not a new revision: agents would be sent a delta for nothing. */
                r = store_resource_get(m->store, in.name, &current);
                if (r == -ENOENT)
                        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_RESOURCE, "No resource '%s'.",
                                                 in.name);
                if (r < 0)
                        return bus_internal_error(error, r, "read a resource");
                if (resource_equal(current, &res))
                        return sd_bus_reply_method_return(message, NULL);

                r = store_resource_update(m->store, &res, now(CLOCK_REALTIME));
        } else
                r = store_resource_create(m->store, &res, now(CLOCK_REALTIME));
        if (r == -EEXIST)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_EXISTS, "Resource '%s' already exists.",
                                         in.name);
        if (r == -ENOENT)
                return bus_resource_enoent(m, &in, update, error);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid resource '%s'.", in.name);
        if (r < 0)
                return bus_internal_error(error, r, update ? "update a resource" : "create a resource");

        bus_policy_changed(m, message, actor, update ? "resource-updated" : "resource-created", in.name,
                           AUDIT_FIELDS("name", in.name,
                                           "network", in.network,
                                           "address", in.address,
                                           "protocol", in.protocol,
                                           "ports", in.ports,
                                           "alias", isempty(in.alias) ? NULL : in.alias));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_create_resource(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return resource_create_or_update(message, userdata, /* update= */ false, error);
}

static int method_update_resource(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return resource_create_or_update(message, userdata, /* update= */ true, error);
}

static int method_delete_resource(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        const char *name;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "resource name", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "resource", name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = store_resource_delete(m->store, name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_RESOURCE, "No resource '%s'.", name);
        if (r < 0)
                return bus_internal_error(error, r, "delete a resource");

        bus_policy_changed(m, message, actor, "resource-deleted", name, AUDIT_FIELDS("name", name));
        return sd_bus_reply_method_return(message, NULL);
}

static int reply_resources(sd_bus_message *message, StoreResource *const *resources, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssssssas)");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                const StoreResource *res = resources[i];

                r = sd_bus_message_open_container(reply, 'r', "ssssssas");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "ssssss", res->name, res->address, res->protocol, res->ports,
                                          res->remote_network, strempty(res->alias));
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, res->groups);
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

static int method_list_resources(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreResource **resources = NULL;
        Manager *m = userdata;
        const char *network;
        size_t n = 0;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &network);
        if (r < 0)
                return r;
        if (!isempty(network)) {
                r = bus_check_policy_name(network, "network name", error);
                if (r < 0)
                        return r;
        }

        r = bus_verify_polkit_async(message, POLKIT_ACTION_READ, NULL, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = store_resource_list(m->store, isempty(network) ? NULL : network, &resources, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list resources");

        /* An empty list for a network that does not exist would hide a typo. */
        if (n == 0 && !isempty(network)) {
                r = bus_network_exists(m->store, network);
                if (r < 0)
                        return bus_internal_error(error, r, "list networks");
                if (r == 0)
                        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_NETWORK, "No network '%s'.",
                                                 network);
        }

        r = reply_resources(message, resources, n);
        store_resource_array_free(resources, n);
        return r;
}

static int method_create_group(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *name, *description;
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "ss", &name, &description);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "group name", error);
        if (r < 0)
                return r;
        r = bus_check_string(description, "Description", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "group", name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = store_group_create(m->store, name, isempty(description) ? NULL : description,
                               now(CLOCK_REALTIME));
        if (r == -EEXIST)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_EXISTS, "Group '%s' already exists.", name);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid group '%s'.", name);
        if (r < 0)
                return bus_internal_error(error, r, "create a group");

        bus_policy_changed(m, message, actor, "group-created", name, AUDIT_FIELDS("name", name));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_delete_group(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        const char *name;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;

        r = bus_check_policy_name(name, "group name", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "group", name, NULL, NULL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = store_group_delete(m->store, name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_GROUP, "No group '%s'.", name);
        if (r < 0)
                return bus_internal_error(error, r, "delete a group");

        bus_policy_changed(m, message, actor, "group-deleted", name, AUDIT_FIELDS("name", name));
        return sd_bus_reply_method_return(message, NULL);
}

static int reply_groups(sd_bus_message *message, StoreGroup *const *groups, size_t n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssasas)");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_open_container(reply, 'r', "ssasas");
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "ss", groups[i]->name, strempty(groups[i]->description));
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, groups[i]->members);
                if (r < 0)
                        return r;
                r = sd_bus_message_append_strv(reply, groups[i]->resources);
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

static int method_list_groups(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        StoreGroup **groups = NULL;
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

        r = store_group_list(m->store, &groups, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list groups");

        r = reply_groups(message, groups, n);
        store_group_array_free(groups, n);
        return r;
}

static int bus_not_a_tunneler(sd_bus_error *error, const char *agent) {
        return sd_bus_error_setf(error, BUS_ERROR_NOT_A_TUNNELER,
                                 "Agent '%s' is not a tunneler: only tunnelers belong to groups.", agent);
}

/* A group member, given as a SPIFFE ID or a bare id, as the SPIFFE ID of a tunneler. A bare id names at most
 * one tunneler (SPIFFE IDs are unique per role and id), so a connector with the same id does not make it
 * ambiguous. Sets error: NoSuchAgent, NotATunneler. */
static int bus_resolve_tunneler(Manager *m, const char *agent, char **ret, sd_bus_error *error) {
        StoreAgent **agents = NULL;
        bool other_role = false;
        char *found = NULL;
        size_t n = 0;
        int r;

        if (startswith(agent, "spiffe://")) {
                _cleanup_(store_agent_freep) StoreAgent *a = NULL;

                r = store_agent_get(m->store, agent, &a);
                if (r == -ENOENT)
                        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_AGENT, "No agent '%s'.", agent);
                if (r < 0)
                        return bus_internal_error(error, r, "read an agent");
                if (a->role != SPIFFE_ROLE_TUNNELER)
                        return bus_not_a_tunneler(error, agent);
                found = TAKE_PTR(a->spiffe_id);
        } else {
                r = store_agent_list(m->store, _SPIFFE_ROLE_INVALID, &agents, &n);
                if (r < 0)
                        return bus_internal_error(error, r, "list agents");
                for (size_t i = 0; i < n && !found; i++) {
                        if (!streq(agents[i]->id, agent))
                                continue;
                        if (agents[i]->role == SPIFFE_ROLE_TUNNELER)
                                found = TAKE_PTR(agents[i]->spiffe_id);
                        else
                                other_role = true;
                }
                store_agent_array_free(agents, n);
                if (!found && other_role)
                        return bus_not_a_tunneler(error, agent);
                if (!found)
                        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_AGENT, "No agent '%s'.", agent);
        }

        *ret = found;
        return 0;
}

static int group_change_member(sd_bus_message *message, Manager *m, bool add, sd_bus_error *error) {
        _cleanup_free_ char *spiffe_id = NULL;
        const char *group, *agent;
        char actor[BUS_ACTOR_MAX];
        int r;

        r = sd_bus_message_read(message, "ss", &group, &agent);
        if (r < 0)
                return r;

        r = bus_check_policy_name(group, "group name", error);
        if (r < 0)
                return r;
        r = bus_check_agent(agent, error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "group", group, "agent", agent, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        if (!bus_group_exists(m->store, group))
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_GROUP, "No group '%s'.", group);
        r = bus_resolve_tunneler(m, agent, &spiffe_id, error);
        if (r < 0)
                return r;

        if (add)
                r = store_group_add_member(m->store, group, spiffe_id);
        else
                r = store_group_remove_member(m->store, group, spiffe_id);
        if (r == -EALREADY && add)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_MEMBER,
                                         "'%s' is already a member of group '%s'.", spiffe_id, group);
        if (r == -EALREADY)
                return sd_bus_error_setf(error, BUS_ERROR_NOT_A_MEMBER, "'%s' is not a member of group '%s'.",
                                         spiffe_id, group);
        if (r == -E2BIG)
                return sd_bus_error_setf(error, BUS_ERROR_TOO_MANY_GROUPS, "'%s' is already in %u groups.",
                                         spiffe_id, (unsigned) STORE_GROUPS_MAX);
        if (r == -EINVAL)
                return bus_not_a_tunneler(error, agent);
        if (r == -ENOENT) /* gone since we looked */
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_GROUP, "No group '%s'.", group);
        if (r < 0)
                return bus_internal_error(error, r, add ? "add a group member" : "remove a group member");

        bus_policy_changed(m, message, actor, add ? "group-member-added" : "group-member-removed", spiffe_id,
                           AUDIT_FIELDS("group", group));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_add_group_member(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return group_change_member(message, userdata, /* add= */ true, error);
}

static int method_remove_group_member(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return group_change_member(message, userdata, /* add= */ false, error);
}

/* The store said -ENOENT about a policy: which of the three is missing. */
static int bus_policy_enoent(Manager *m, const char *group, const char *resource, sd_bus_error *error) {
        if (!bus_group_exists(m->store, group))
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_GROUP, "No group '%s'.", group);
        if (!bus_resource_exists(m->store, resource))
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_RESOURCE, "No resource '%s'.", resource);
        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_POLICY, "Group '%s' is not granted resource '%s'.",
                                 group, resource);
}

static int policy_create_or_delete(sd_bus_message *message, Manager *m, bool create, sd_bus_error *error) {
        const char *group, *resource;
        char actor[BUS_ACTOR_MAX];
        int r;

        r = sd_bus_message_read(message, "ss", &group, &resource);
        if (r < 0)
                return r;

        r = bus_check_policy_name(group, "group name", error);
        if (r < 0)
                return r;
        r = bus_check_policy_name(resource, "resource name", error);
        if (r < 0)
                return r;

        r = bus_verify_manage_policy(m, message, "group", group, "resource", resource, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        if (create)
                r = store_policy_create(m->store, group, resource, now(CLOCK_REALTIME));
        else
                r = store_policy_delete(m->store, group, resource);
        if (r == -EEXIST)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_EXISTS,
                                         "Group '%s' is already granted resource '%s'.", group, resource);
        if (r == -ENOENT)
                return bus_policy_enoent(m, group, resource, error);
        if (r < 0)
                return bus_internal_error(error, r, create ? "create a policy" : "delete a policy");

        bus_policy_changed(m, message, actor, create ? "policy-created" : "policy-deleted", resource,
                           AUDIT_FIELDS("group", group, "resource", resource));
        return sd_bus_reply_method_return(message, NULL);
}

static int method_create_policy(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return policy_create_or_delete(message, userdata, /* create= */ true, error);
}

static int method_delete_policy(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return policy_create_or_delete(message, userdata, /* create= */ false, error);
}

static int method_list_policies(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StorePolicy *policies = NULL;
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

        r = store_policy_list(m->store, &policies, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list policies");

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                goto finish;
        r = sd_bus_message_open_container(reply, 'a', "(sst)");
        if (r < 0)
                goto finish;
        for (size_t i = 0; i < n; i++) {
                r = sd_bus_message_append(reply, "(sst)", policies[i].group, policies[i].resource,
                                          (uint64_t) policies[i].created_at);
                if (r < 0)
                        goto finish;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                goto finish;
        r = sd_bus_send(NULL, reply, NULL);

finish:
        store_policy_array_free(policies, n);
        return r;
}

/* --- administrators of the REST API and the dashboard --- */

static int bus_check_admin_name(const char *name, sd_bus_error *error) {
        if (store_admin_name_is_valid(name))
                return 0;
        return bus_invalid(error, "admin name", name,
                           "expected 1-64 characters of a-z 0-9 . _ @ -, starting with a letter or digit");
}

/* CreateAdmin and SetAdminPassword: (name, password). The password lives in this message only: it is marked
 * sensitive before it is read, so sd-bus wipes its buffers when the message is freed (the caller marks its
 * copy too), and it is never logged or quoted in an error. */
static int admin_set(sd_bus_message *message, Manager *m, bool create, sd_bus_error *error) {
        const char *name, *password, *reason = NULL, *details[3] = {};
        char actor[BUS_ACTOR_MAX];
        int r;

        r = sd_bus_message_sensitive(message);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "ss", &name, &password);
        if (r < 0)
                return r;

        r = bus_check_admin_name(name, error);
        if (r < 0)
                return r;
        r = auth_password_check(password, &reason);
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid password: %s.", reason);

        /* Whether the admin exists is only told to callers polkit allows. */
        details[0] = "admin";
        details[1] = name;
        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_ADMINS, details, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        if (create)
                r = auth_admin_create(m->store, name, password, actor, &reason);
        else
                r = auth_admin_set_password(m->store, name, password, actor, &reason);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid request: %s.",
                                         reason ?: "invalid admin name or password");
        if (r == -EEXIST)
                return sd_bus_error_setf(error, BUS_ERROR_ALREADY_EXISTS, "Admin '%s' already exists.", name);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_ADMIN, "No admin '%s'.", name);
        if (r == -E2BIG)
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED, "There are already %u admins.",
                                         (unsigned) STORE_ADMINS_MAX);
        if (r < 0)
                return bus_internal_error(error, r, create ? "create an admin" : "set an admin's password");

        return sd_bus_reply_method_return(message, NULL);
}

static int method_create_admin(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return admin_set(message, userdata, /* create= */ true, error);
}

static int method_set_admin_password(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        assert(message);
        assert(userdata);

        return admin_set(message, userdata, /* create= */ false, error);
}

static int method_delete_admin(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const char *name, *details[3] = {};
        char actor[BUS_ACTOR_MAX];
        Manager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;
        r = bus_check_admin_name(name, error);
        if (r < 0)
                return r;

        details[0] = "admin";
        details[1] = name;
        r = bus_verify_polkit_async(message, POLKIT_ACTION_MANAGE_ADMINS, details, &m->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = bus_message_get_actor(message, actor);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to identify the caller: %m");

        r = auth_admin_delete(m->store, name, actor);
        if (r == -ENOENT)
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_ADMIN, "No admin '%s'.", name);
        if (r < 0)
                return bus_internal_error(error, r, "delete an admin");

        return sd_bus_reply_method_return(message, NULL);
}

static int method_list_admins(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        StoreAdmin **admins = NULL;
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

        r = store_admin_list(m->store, &admins, &n);
        if (r < 0)
                return bus_internal_error(error, r, "list admins");

        /* Never the password hashes. */
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                goto finish;
        r = sd_bus_message_open_container(reply, 'a', "(sstttt)");
        if (r < 0)
                goto finish;
        for (size_t i = 0; i < n; i++) {
                const StoreAdmin *a = admins[i];

                r = sd_bus_message_append(reply, "(sstttt)", a->name, a->created_by, (uint64_t) a->created_at,
                                          (uint64_t) a->password_changed_at, (uint64_t) a->last_login_at,
                                          (uint64_t) a->disabled_at);
                if (r < 0)
                        goto finish;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                goto finish;
        r = sd_bus_send(NULL, reply, NULL);

finish:
        store_admin_array_free(admins, n);
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
        SD_BUS_PROPERTY("PolicyRevision", "t", property_get_policy_revision, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

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
        SD_BUS_METHOD_WITH_ARGS("CreateNetwork",
                                SD_BUS_ARGS("s", name, "s", description),
                                SD_BUS_NO_RESULT,
                                method_create_network,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteNetwork",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_NO_RESULT,
                                method_delete_network,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListNetworks",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sst)", networks),
                                method_list_networks,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateResource",
                                SD_BUS_ARGS("s", name, "s", address, "s", protocol, "s", ports, "s", network,
                                            "s", alias),
                                SD_BUS_NO_RESULT,
                                method_create_resource,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UpdateResource",
                                SD_BUS_ARGS("s", name, "s", address, "s", protocol, "s", ports, "s", network,
                                            "s", alias),
                                SD_BUS_NO_RESULT,
                                method_update_resource,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteResource",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_NO_RESULT,
                                method_delete_resource,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListResources",
                                SD_BUS_ARGS("s", network),
                                SD_BUS_RESULT("a(ssssssas)", resources),
                                method_list_resources,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateGroup",
                                SD_BUS_ARGS("s", name, "s", description),
                                SD_BUS_NO_RESULT,
                                method_create_group,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeleteGroup",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_NO_RESULT,
                                method_delete_group,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListGroups",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssasas)", groups),
                                method_list_groups,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AddGroupMember",
                                SD_BUS_ARGS("s", group, "s", agent),
                                SD_BUS_NO_RESULT,
                                method_add_group_member,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveGroupMember",
                                SD_BUS_ARGS("s", group, "s", agent),
                                SD_BUS_NO_RESULT,
                                method_remove_group_member,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreatePolicy",
                                SD_BUS_ARGS("s", group, "s", resource),
                                SD_BUS_NO_RESULT,
                                method_create_policy,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DeletePolicy",
                                SD_BUS_ARGS("s", group, "s", resource),
                                SD_BUS_NO_RESULT,
                                method_delete_policy,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListPolicies",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sst)", policies),
                                method_list_policies,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateAdmin",
                                SD_BUS_ARGS("s", name, "s", password),
                                SD_BUS_NO_RESULT,
                                method_create_admin,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("SetAdminPassword",
                                SD_BUS_ARGS("s", name, "s", password),
                                SD_BUS_NO_RESULT,
                                method_set_admin_password,
                                SD_BUS_VTABLE_UNPRIVILEGED | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD_WITH_ARGS("DeleteAdmin",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_NO_RESULT,
                                method_delete_admin,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListAdmins",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(sstttt)", admins),
                                method_list_admins,
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
