/* SPDX-License-Identifier: Apache-2.0 */

/* ztna-tunneler: enroll | run. Everything is shared with the other agent (src/agent/agent-main.c); this file
 * plugs the tunneler's data plane (sessions to connectors) and its local front-ends (forwards, SOCKS5, HTTP
 * CONNECT) into the running daemon. */

#include <stdlib.h>

#include "agent-main.h"
#include "agent-manager.h"
#include "config.h"
#include "log.h"
#include "tunneler-dataplane.h"
#include "tunneler-frontend.h"

typedef struct Tunneler {
        TunnelerDataPlane *dataplane;
        TunnelerFrontends *frontends;
} Tunneler;

static const char *tunneler_private_ip(const AgentManager *m) {
        return m->config.private_ip ?: m->private_ip;
}

static void tunneler_stop(AgentManager *m) {
        Tunneler *t = m->role_data;

        if (!t)
                return;
        /* Listeners first: nothing new reaches a data plane that is going. */
        t->frontends = tunneler_frontends_free(t->frontends);
        t->dataplane = tunneler_dataplane_free(t->dataplane);
}

static int tunneler_start(AgentManager *m) {
        _cleanup_(agent_identity_done) AgentIdentity identity = {};
        Tunneler *t = m->role_data;
        int r;

        if (!t) {
                t = calloc(1, sizeof(*t));
                if (!t)
                        return log_oom();
                m->role_data = t;
        }
        if (t->dataplane)
                return 0;

        r = agent_manager_get_identity(m, &identity);
        if (r < 0)
                return log_error_errno(r, "Failed to read the identity from the keyring: %m");

        TunnelerDataPlaneSettings settings = {
                .connect_timeout = m->config.connect_timeout,
                .idle_timeout = m->config.idle_timeout,
                .heartbeat_interval = identity.heartbeat_interval,
                .version = PROJECT_VERSION,
                .private_ip = tunneler_private_ip(m),
                .resolvers = m->config.resolvers,
        };
        r = tunneler_dataplane_new(m->event, &identity, agent_manager_get_policy(m), &settings, &t->dataplane);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the data plane: %m");

        TunnelerFrontendSettings frontend_settings = {
                .forwards = m->config.forwards,
                .socks_listen = m->config.socks_listen,
                .http_proxy_listen = m->config.http_proxy_listen,
        };
        r = tunneler_frontends_new(m->event, t->dataplane, &frontend_settings, &t->frontends);
        if (r < 0) {
                t->dataplane = tunneler_dataplane_free(t->dataplane);
                return log_error_errno(r, "Failed to set up the local listeners (Forward=, SocksListen=, "
                                       "HttpProxyListen=): %m");
        }

        log_debug("Tunneler data plane started.");
        return 0;
}

static void tunneler_identity_changed(AgentManager *m) {
        _cleanup_(agent_identity_done) AgentIdentity identity = {};
        Tunneler *t = m->role_data;
        int r;

        if (!t || !t->dataplane)
                return;
        r = agent_manager_get_identity(m, &identity);
        if (r >= 0)
                r = tunneler_dataplane_set_identity(t->dataplane, &identity);
        if (r < 0)
                log_warning_errno(r, "Failed to use the new identity for connections to connectors, keeping "
                                  "the previous one: %m");
}

static void tunneler_policy_changed(AgentManager *m) {
        Tunneler *t = m->role_data;

        if (!t || !t->dataplane)
                return;
        /* The private IP is detected once the control stream dials, after the data plane started. */
        (void) tunneler_dataplane_set_private_ip(t->dataplane, tunneler_private_ip(m));
        tunneler_dataplane_policy_changed(t->dataplane);
}

static void tunneler_peer_revoked(AgentManager *m, const char *spiffe_id) {
        Tunneler *t = m->role_data;
        unsigned n;

        if (!t || !t->dataplane)
                return;
        n = tunneler_dataplane_close_connector(t->dataplane, spiffe_id);
        if (n > 0)
                log_info("Closed %u stream%s through revoked connector '%s'.", n, n == 1 ? "" : "s", spiffe_id);
}

static void tunneler_get_counters(AgentManager *m, AgentControlCounters *ret) {
        Tunneler *t = m->role_data;

        if (!t || !t->dataplane) {
                *ret = (AgentControlCounters) {};
                return;
        }
        tunneler_dataplane_get_counters(t->dataplane, ret);
}

static bool tunneler_is_ready(AgentManager *m, const char **ret_reason) {
        Tunneler *t = m->role_data;

        if (t && t->dataplane)
                return true;
        if (ret_reason)
                *ret_reason = "data plane not started";
        return false;
}

static void tunneler_free(AgentManager *m) {
        tunneler_stop(m);
        m->role_data = mfree(m->role_data);
}

static const AgentRoleOps tunneler_role_ops = {
        .start = tunneler_start,
        .identity_changed = tunneler_identity_changed,
        .policy_changed = tunneler_policy_changed,
        .peer_revoked = tunneler_peer_revoked,
        .stop = tunneler_stop,
        .get_counters = tunneler_get_counters,
        .is_ready = tunneler_is_ready,
        .free = tunneler_free,
};

int main(int argc, char *argv[]) {
        return agent_main(SPIFFE_ROLE_TUNNELER, &tunneler_role_ops, argc, argv);
}
