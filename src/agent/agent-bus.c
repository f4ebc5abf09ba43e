/* SPDX-License-Identifier: Apache-2.0 */

/* org.ztna.Connector1 / org.ztna.Tunneler1: the running agent's state as properties, and the methods that
 * change it. Reading is open to everyone (the bus policy allows Get/GetAll, dbus/org.ztna.Connector1.conf);
 * every method is open at the sd-bus layer (SD_BUS_VTABLE_UNPRIVILEGED) and by the bus policy, and polkit
 * decides (polkit/org.ztna.policy), root passes without asking. Handlers keep the house order: read →
 * validate → polkit → mutate → reply; polkit re-dispatches the call once it has answered, so everything
 * before the polkit check runs twice.
 *
 * Enroll and the rotations take network round trips: the handler keeps a reference on the call and replies
 * from the manager's done callback. */

#include <assert.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "agent-bus.h"
#include "bus-util.h"
#include "config.h"
#include "crypto-token.h"
#include "log.h"
#include "string-util.h"

const char *agent_bus_name(SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                return "org.ztna.Connector1";
        case SPIFFE_ROLE_TUNNELER:
                return "org.ztna.Tunneler1";
        default:
                return NULL;
        }
}

const char *agent_bus_path(SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                return "/org/ztna/Connector1";
        case SPIFFE_ROLE_TUNNELER:
                return "/org/ztna/Tunneler1";
        default:
                return NULL;
        }
}

const char *agent_bus_interface(SpiffeRole role) {
        return agent_bus_name(role);
}

/* "ztna-connector", "ztna-tunneler": how the administrator knows the daemon, for messages. */
static const char *agent_daemon_name(SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONNECTOR:
                return "ztna-connector";
        case SPIFFE_ROLE_TUNNELER:
                return "ztna-tunneler";
        default:
                return "ztna agent";
        }
}

/* A token as the user could have pasted it: the checks that need no parsing, so that nothing obviously not a
 * token (a file name, a multi-line paste) reaches polkit's prompt or the manager. The manager parses it. */
static int bus_check_token(const char *token, sd_bus_error *error) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) token; *p; p++, n++) {
                if (n >= TOKEN_STRING_MAX)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid enrollment token: longer than %u characters.",
                                                 (unsigned) TOKEN_STRING_MAX);
                /* Printable ASCII without the space: whitespace and control characters are refused too. */
                if (*p <= ' ' || *p >= 0x7f)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                                "Invalid enrollment token: it may only contain printable ASCII "
                                                "characters, without whitespace.");
        }
        if (n == 0)
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid enrollment token: empty.");
        return 0;
}

/* The errors the manager returns before anything starts, as the caller sees them. Failures of ours are
 * logged here (handlers are the boundary) and passed on as the errno's generic error. */
static int bus_map_manager_error(int r, const char *what, sd_bus_error *error) {
        switch (r) {
        case -EALREADY:
                return sd_bus_error_set(error, AGENT_BUS_ERROR_ALREADY_ENROLLED,
                                        "This agent is already enrolled.");
        case -EBUSY:
                return sd_bus_error_set(error, AGENT_BUS_ERROR_BUSY,
                                        "An enrollment or a renewal is already in progress.");
        case -ENOTCONN:
                return sd_bus_error_set(error, AGENT_BUS_ERROR_NOT_ENROLLED,
                                        "This agent is not enrolled: enroll it first.");
        case -EKEYREVOKED:
                return sd_bus_error_set(error, AGENT_BUS_ERROR_REVOKED,
                                        "This agent was revoked by its controller: enroll it again with a new "
                                        "identity.");
        default:
                log_error_errno(r, "Failed to %s on behalf of a bus caller: %m", what);
                return sd_bus_error_set_errnof(error, r, "Failed to %s: %m", what);
        }
}

/* The state checks the manager makes again, answered before polkit: nobody should be asked for a password
 * only to hear "already enrolled". The state is public (a property) so this tells the caller nothing new. */
static int bus_check_state(AgentManager *m, bool enroll, sd_bus_error *error) {
        if (enroll) {
                if (m->request || m->state == AGENT_STATE_ENROLLING)
                        return bus_map_manager_error(-EBUSY, "enroll", error);
                if (m->state != AGENT_STATE_UNENROLLED)
                        return bus_map_manager_error(-EALREADY, "enroll", error);
                return 0;
        }
        if (m->state == AGENT_STATE_REVOKED)
                return bus_map_manager_error(-EKEYREVOKED, "rotate", error);
        if (!m->identity)
                return bus_map_manager_error(-ENOTCONN, "rotate", error);
        return 0;
}

/* The ends of Enroll and the rotations: the reply to the call we kept (the done callback owns its reference).
 * Nothing is sent when the manager is going away (-ECANCELED: the bus may be gone already, the caller sees
 * the disconnect). */
static bool bus_done_can_reply(AgentManager *m, int error) {
        assert(m);

        return error != -ECANCELED && m->bus;
}

static void bus_reply_done_error(sd_bus_message *call, const char *error_name, int error, const char *reason) {
        int r;

        r = sd_bus_reply_method_errorf(call, error_name, "%s", reason ?: strerror(ERRNO_VALUE(error)));
        if (r < 0)
                log_debug_errno(r, "Failed to reply to %s(), ignoring: %m", sd_bus_message_get_member(call));
}

static void enroll_done(AgentManager *m, int error, const char *reason, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = userdata;
        int r;

        if (!bus_done_can_reply(m, error))
                return;
        if (error < 0) {
                bus_reply_done_error(call, AGENT_BUS_ERROR_ENROLLMENT_FAILED, error, reason);
                return;
        }

        r = sd_bus_reply_method_return(call, "s", strempty(m->info.spiffe_id));
        if (r < 0)
                log_debug_errno(r, "Failed to reply to Enroll(), ignoring: %m");
}

static void rotate_done(AgentManager *m, int error, const char *reason, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = userdata;
        int r;

        if (!bus_done_can_reply(m, error))
                return;
        if (error < 0) {
                bus_reply_done_error(call, AGENT_BUS_ERROR_ROTATION_FAILED, error, reason);
                return;
        }

        r = sd_bus_reply_method_return(call, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to reply to %s(), ignoring: %m", sd_bus_message_get_member(call));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        AgentManager *m = userdata;

        assert(m);

        return sd_bus_message_append(reply, "s", strempty(agent_state_to_string(m->state)));
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
}

/* Who may call a mutating method. On the system bus polkit decides (asynchronously: 0 means it was asked).
 * In user mode (the session bus of a desktop tunneler) the agent is the user's own process: the user may
 * manage it, nobody else may, and no polkit is involved (polkit's answer for a session-bus daemon would
 * be about the wrong thing: it only knows system-wide actions). */
static int bus_verify_caller(AgentManager *m, sd_bus_message *message, const char *action, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        if (!m->user_mode)
                return bus_verify_polkit_async(message, action, NULL, &m->polkit_registry, error);

        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0 || uid != getuid())
                return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
                                        "Only the user running this agent may change it.");
        return 1;
}

static int method_enroll(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        AgentManager *m = userdata;
        const char *token;
        int r;

        assert(message);
        assert(m);

        /* Before reading: the call carries the secret, its buffers are wiped when the last reference goes
         * (polkit's re-dispatch and our done callback hold it for a while). */
        r = sd_bus_message_sensitive(message);
        if (r < 0)
                return r;

        r = sd_bus_message_read(message, "s", &token);
        if (r < 0)
                return r;

        r = bus_check_token(token, error);
        if (r < 0)
                return r;
        r = bus_check_state(m, /* enroll= */ true, error);
        if (r < 0)
                return r;

        r = bus_verify_caller(m, message, AGENT_POLKIT_ACTION_ENROLL, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        /* The manager copies the token (and wipes its copy); the done callback owns this reference. */
        r = agent_manager_enroll(m, token, enroll_done, sd_bus_message_ref(message));
        if (r < 0) {
                sd_bus_message_unref(message);
                if (r == -EINVAL)
                        return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid enrollment token.");
                return bus_map_manager_error(r, "start the enrollment", error);
        }

        return 1;
}

static int bus_rotate(sd_bus_message *message, AgentManager *m, bool new_key, sd_bus_error *error) {
        int r;

        assert(message);
        assert(m);

        r = bus_check_state(m, /* enroll= */ false, error);
        if (r < 0)
                return r;
        r = bus_verify_caller(m, message, AGENT_POLKIT_ACTION_ROTATE, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = agent_manager_rotate(m, new_key, rotate_done, sd_bus_message_ref(message));
        if (r < 0) {
                sd_bus_message_unref(message);
                return bus_map_manager_error(r, new_key ? "rotate the key" : "renew the certificate", error);
        }

        return 1;
}

static int method_rotate_certificate(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_rotate(message, userdata, /* new_key= */ false, error);
}

static int method_rotate_key(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return bus_rotate(message, userdata, /* new_key= */ true, error);
}

static int method_reconnect(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        AgentManager *m = userdata;
        int r;

        assert(message);
        assert(m);

        r = bus_check_state(m, /* enroll= */ false, error);
        if (r < 0)
                return r;
        r = bus_verify_caller(m, message, AGENT_POLKIT_ACTION_RECONNECT, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;

        r = agent_manager_reconnect(m);
        if (r < 0)
                return bus_map_manager_error(r, "reconnect", error);

        return sd_bus_reply_method_return(message, NULL);
}

static int on_bus_changed(sd_event_source *s, void *userdata) {
        AgentManager *m = userdata;
        int r;

        assert(m);

        if (!m->bus)
                return 0;

        /* No names: every EMITS_CHANGE property, with its value (Version is constant and left out). */
        r = sd_bus_emit_properties_changed_strv(m->bus, agent_bus_path(m->role), agent_bus_interface(m->role),
                                                NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to emit PropertiesChanged, ignoring: %m");
        return 0;
}

void agent_bus_send_changed(AgentManager *m) {
        int r;

        assert(m);

        if (!m->bus)
                return;

        /* A defer source fires once per loop iteration, after everything that changed in it. */
        if (m->bus_changed) {
                r = sd_event_source_set_enabled(m->bus_changed, SD_EVENT_ONESHOT);
                if (r < 0)
                        log_warning_errno(r, "Failed to schedule PropertiesChanged, ignoring: %m");
                return;
        }

        r = sd_event_add_defer(m->event, &m->bus_changed, on_bus_changed, m);
        if (r < 0) {
                log_warning_errno(r, "Failed to schedule PropertiesChanged, ignoring: %m");
                return;
        }
        (void) sd_event_source_set_description(m->bus_changed, "agent-bus-changed");
}

void agent_bus_emit_certificate_rotated(AgentManager *m, bool new_key) {
        int r;

        assert(m);

        if (!m->bus)
                return;

        r = sd_bus_emit_signal(m->bus, agent_bus_path(m->role), agent_bus_interface(m->role),
                               "CertificateRotated", "bt", new_key, (uint64_t) m->info.not_after);
        if (r < 0)
                log_debug_errno(r, "Failed to emit CertificateRotated, ignoring: %m");
}

static const sd_bus_vtable agent_vtable[] = {
        SD_BUS_VTABLE_START(0),

        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Strings are "" and lists empty while unset (sd-bus's own getters for NULL). */
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(AgentManager, info.id), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SpiffeId", "s", NULL, offsetof(AgentManager, info.spiffe_id),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TrustDomain", "s", NULL, offsetof(AgentManager, info.trust_domain),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("RemoteNetwork", "s", NULL, offsetof(AgentManager, info.remote_network),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Groups", "as", NULL, offsetof(AgentManager, info.groups),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Controllers", "as", NULL, offsetof(AgentManager, info.controllers),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Controller", "s", NULL, offsetof(AgentManager, controller),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* µs since the epoch, 0 when there is no certificate. */
        SD_BUS_PROPERTY("CertificateNotBefore", "t", NULL, offsetof(AgentManager, info.not_before),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CertificateNotAfter", "t", NULL, offsetof(AgentManager, info.not_after),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastHeartbeat", "t", NULL, offsetof(AgentManager, last_heartbeat),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastError", "s", NULL, offsetof(AgentManager, last_error),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Renewals", "t", NULL, offsetof(AgentManager, counters.renewals),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("RenewalFailures", "t", NULL, offsetof(AgentManager, counters.renewal_failures),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Reconnects", "t", NULL, offsetof(AgentManager, counters.reconnects),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StreamsActive", "t", NULL, offsetof(AgentManager, counters.data.streams_active),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StreamsTotal", "t", NULL, offsetof(AgentManager, counters.data.streams_total),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesIn", "t", NULL, offsetof(AgentManager, counters.data.bytes_in),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesOut", "t", NULL, offsetof(AgentManager, counters.data.bytes_out),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Denials", "t", NULL, offsetof(AgentManager, counters.data.denials),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Peers", "u", NULL, offsetof(AgentManager, counters.data.peers),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

        SD_BUS_METHOD_WITH_ARGS("Enroll",
                                SD_BUS_ARGS("s", token),
                                SD_BUS_RESULT("s", spiffe_id),
                                method_enroll,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RotateCertificate",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_rotate_certificate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RotateKey",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_rotate_key,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reconnect",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_reconnect,
                                SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("CertificateRotated",
                                SD_BUS_ARGS("b", new_key, "t", not_after),
                                0),

        SD_BUS_VTABLE_END,
};

int agent_bus_connect(AgentManager *m) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *name, *path;
        int r;

        assert(m);
        assert(m->event);
        assert(!m->bus);

        if (!m->bus_enabled)
                return 0;

        name = agent_bus_name(m->role);
        path = agent_bus_path(m->role);
        assert(name && path);

        r = bus_open_ztna(m->user_mode, &bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to %s: %m", bus_ztna_description(m->user_mode));

        (void) sd_bus_set_description(bus, m->role == SPIFFE_ROLE_CONNECTOR ? "bus-api-connector"
                                                                             : "bus-api-tunneler");

        r = sd_bus_add_object_vtable(bus, NULL, path, agent_bus_interface(m->role), agent_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the %s object: %m", path);

        /* Synchronously, before READY=1: a client started right after the daemon reported ready must find
         * the name (we are not bus-activated, so nothing would queue its call). */
        r = sd_bus_request_name(bus, name, 0);
        if (r == -EEXIST)
                return log_error_errno(r, "Bus name '%s' is owned by another process on %s: is another %s "
                                       "running?", name, bus_ztna_description(m->user_mode),
                                       agent_daemon_name(m->role));
        if (r < 0)
                return log_error_errno(r, "Failed to request bus name '%s': %m", name);

        r = sd_bus_attach_event(bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");

        m->bus = TAKE_PTR(bus);
        return 0;
}

void agent_bus_disconnect(AgentManager *m) {
        assert(m);

        m->bus_changed = sd_event_source_disable_unref(m->bus_changed);
        /* Before the bus: pending queries hold calls on it. */
        m->polkit_registry = polkit_registry_free(m->polkit_registry);
        m->bus = sd_bus_flush_close_unref(m->bus);
}
