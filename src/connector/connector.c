/* SPDX-License-Identifier: Apache-2.0 */

/* ztna-connector: enroll | run. Everything is shared with the other agent (src/agent/agent-main.c); this file
 * plugs the connector's data plane (connector-dataplane.h) into the running daemon: the policy the controller
 * pushed decides every CONNECT, each flow becomes a journal entry and a FlowEvent for the controller, and
 * tunnelers' heartbeats are forwarded to it. */

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-main.h"
#include "agent-manager.h"
#include "agent-policy.h"
#include "connector-dataplane.h"
#include "log.h"
#include "macro.h"
#include "time-util.h"

/* Journal fields of one flow record. */
#define FLOW_FIELDS_MAX 12U

static int connector_decide(const char *tunneler, const char *host, uint16_t port, const char **ret_resource,
                            void *userdata) {
        AgentManager *m = userdata;
        const PolicyResource *resource = NULL;
        int r;

        r = agent_policy_decide(agent_manager_get_policy(m), tunneler, host, port, RESOURCE_PROTOCOL_TCP,
                                &resource);
        *ret_resource = resource ? resource->name : NULL;
        return r;
}

static void fields_add(char **fields, size_t *n, const char *format, ...) _printf_(3, 4);
static void fields_add(char **fields, size_t *n, const char *format, ...) {
        va_list ap;
        int r;

        assert(*n < FLOW_FIELDS_MAX);
        va_start(ap, format);
        r = vasprintf(&fields[*n], format, ap);
        va_end(ap);
        if (r < 0)
                fields[*n] = NULL; /* left out; the entry goes anyway */
        else
                (*n)++;
}

static void flow_log(const ConnectorFlow *f) {
        const char *result = connector_flow_result_to_string(f->result);
        char *fields[FLOW_FIELDS_MAX] = {};
        char span[64];
        size_t n = 0;
        int level;

        fields_add(fields, &n, "MESSAGE_ID=%s",
                   f->end ? CONNECTOR_FLOW_END_MESSAGE_ID : CONNECTOR_FLOW_START_MESSAGE_ID);
        fields_add(fields, &n, "ZTNA_FLOW_ID=%s", f->flow_id);
        fields_add(fields, &n, "ZTNA_TUNNELER=%s", f->tunneler);
        if (f->resource)
                fields_add(fields, &n, "ZTNA_RESOURCE=%s", f->resource);
        fields_add(fields, &n, "ZTNA_TARGET=%s", f->target);
        fields_add(fields, &n, "ZTNA_RESULT=%s", result);
        if (f->http_status > 0)
                fields_add(fields, &n, "ZTNA_HTTP_STATUS=%u", f->http_status);
        if (f->end) {
                fields_add(fields, &n, "ZTNA_BYTES_UP=%" PRIu64, f->bytes_up);
                fields_add(fields, &n, "ZTNA_BYTES_DOWN=%" PRIu64, f->bytes_down);
                fields_add(fields, &n, "ZTNA_DURATION_MS=%" PRIu64, (uint64_t) (f->duration / USEC_PER_MSEC));
        }

        /* Refusals by policy are what an auditor looks for; the rest is the normal course of things. */
        level = f->result == CONNECTOR_FLOW_DENIED ? LOG_NOTICE : LOG_INFO;

        if (!f->end && f->result == CONNECTOR_FLOW_GRANTED)
                log_struct_errno(level, 0, (const char *const *) fields, n,
                                 "Flow %s: '%s' to %s granted by resource '%s'.", f->flow_id, f->tunneler,
                                 f->target, strna(f->resource));
        else if (!f->end)
                log_struct_errno(level, 0, (const char *const *) fields, n,
                                 "Flow %s: '%s' to %s %s (%u)%s%s%s.", f->flow_id, f->tunneler, f->target,
                                 result, f->http_status, f->resource ? ", resource '" : "",
                                 strempty(f->resource), f->resource ? "'" : "");
        else
                log_struct_errno(level, f->error < 0 ? f->error : 0, (const char *const *) fields, n,
                                 "Flow %s: '%s' to %s ended, %s (%u%s%s): %" PRIu64 " bytes up, %" PRIu64
                                 " bytes down in %s.",
                                 f->flow_id, f->tunneler, f->target, result, f->http_status,
                                 f->error < 0 ? ", " : "", f->error < 0 ? strerror(-f->error) : "",
                                 f->bytes_up, f->bytes_down,
                                 format_timespan(span, sizeof(span), f->duration, USEC_PER_MSEC));

        for (size_t i = 0; i < n; i++)
                free(fields[i]);
}

static void connector_on_flow(const ConnectorFlow *f, void *userdata) {
        AgentManager *m = userdata;
        Ztna__V1__FlowEvent event = ZTNA__V1__FLOW_EVENT__INIT;
        Ztna__V1__AgentMessage msg = ZTNA__V1__AGENT_MESSAGE__INIT;
        int r;

        flow_log(f);

        event.kind = f->end ? ZTNA__V1__FLOW_EVENT__KIND__KIND_END : ZTNA__V1__FLOW_EVENT__KIND__KIND_START;
        event.flow_id = (char *) f->flow_id;
        event.tunneler_spiffe_id = (char *) f->tunneler;
        event.resource = (char *) strempty(f->resource);
        event.target = (char *) f->target;
        event.bytes_up = f->bytes_up;
        event.bytes_down = f->bytes_down;
        event.duration_ms = f->duration / USEC_PER_MSEC;
        event.http_status = f->http_status;
        event.start_unix_ms = f->start / USEC_PER_MSEC;
        event.result = (char *) strempty(connector_flow_result_to_string(f->result));
        msg.body_case = ZTNA__V1__AGENT_MESSAGE__BODY_FLOW;
        msg.flow = &event;

        /* Offline, the journal entry is the record. */
        r = agent_manager_send(m, &msg);
        if (r < 0)
                log_debug_errno(r, "Flow %s not sent to the controller: %m", f->flow_id);
}

static void connector_on_heartbeat(const char *tunneler, const Ztna__V1__TunnelerHeartbeat *hb,
                                   void *userdata) {
        AgentManager *m = userdata;
        Ztna__V1__ForwardedHeartbeat forwarded = ZTNA__V1__FORWARDED_HEARTBEAT__INIT;
        Ztna__V1__AgentMessage msg = ZTNA__V1__AGENT_MESSAGE__INIT;
        int r;

        /* The ID is the certificate's; the heartbeat's content is the tunneler's word, checked by the
         * controller. */
        forwarded.tunneler_spiffe_id = (char *) tunneler;
        forwarded.heartbeat = (Ztna__V1__TunnelerHeartbeat *) hb;
        forwarded.received_unix_ms = now(CLOCK_REALTIME) / USEC_PER_MSEC;
        msg.body_case = ZTNA__V1__AGENT_MESSAGE__BODY_FORWARDED_HEARTBEAT;
        msg.forwarded_heartbeat = &forwarded;

        r = agent_manager_send(m, &msg);
        if (r < 0)
                log_debug_errno(r, "Heartbeat of '%s' not forwarded to the controller: %m", tunneler);
}

static const ConnectorDataPlaneCallbacks dataplane_callbacks = {
        .decide = connector_decide,
        .on_flow = connector_on_flow,
        .on_heartbeat = connector_on_heartbeat,
};

static int connector_start(AgentManager *m) {
        _cleanup_(agent_identity_done) AgentIdentity identity = {};
        ConnectorDataPlane *d = NULL;
        int r;

        if (m->role_data)
                return 0;

        r = agent_manager_get_identity(m, &identity);
        if (r < 0)
                return log_error_errno(r, "Failed to read the identity from the keyring: %m");

        ConnectorDataPlaneSettings settings = {
                .listen = m->config.data_plane_listen,
                .resolvers = m->config.resolvers,
                .max_streams = m->config.max_streams,
                .max_streams_per_tunneler = m->config.max_streams_per_tunneler,
                .idle_timeout = m->config.idle_timeout,
                .connect_timeout = m->config.connect_timeout,
        };
        r = connector_dataplane_new(m->event, &identity, &settings, &dataplane_callbacks, m, &d);
        if (r < 0)
                return log_error_errno(r, "Failed to serve tunnelers on %s (DataPlaneListen=): %m",
                                       strna(settings.listen));
        if (!connector_dataplane_can_resolve(d))
                log_warning("No nameserver in Resolvers= or /etc/resolv.conf: resources named by a host name "
                            "cannot be reached, only addresses.");

        m->role_data = d;
        log_info("Serving tunnelers on %s.", settings.listen);
        return 0;
}

static void connector_identity_changed(AgentManager *m) {
        _cleanup_(agent_identity_done) AgentIdentity identity = {};
        ConnectorDataPlane *d = m->role_data;
        int r;

        if (!d)
                return;
        r = agent_manager_get_identity(m, &identity);
        if (r >= 0)
                r = connector_dataplane_set_identity(d, &identity);
        if (r < 0)
                log_warning_errno(r, "Failed to use the new certificate for tunneler sessions, new sessions "
                                  "keep the previous one: %m");
}

static void connector_policy_changed(AgentManager *m) {
        ConnectorDataPlane *d = m->role_data;
        unsigned n;

        if (!d)
                return;
        n = connector_dataplane_recheck(d);
        if (n > 0)
                log_info("Closed %u stream%s the new policy no longer allows.", n, n == 1 ? "" : "s");
}

static void connector_peer_revoked(AgentManager *m, const char *spiffe_id) {
        ConnectorDataPlane *d = m->role_data;
        unsigned n;

        if (!d)
                return;
        n = connector_dataplane_close_peer(d, spiffe_id);
        log_info("Closed the sessions and %u stream%s of revoked tunneler '%s'.", n, n == 1 ? "" : "s",
                 spiffe_id);
}

static void connector_stop(AgentManager *m) {
        m->role_data = connector_dataplane_free(m->role_data);
}

static void connector_get_counters(AgentManager *m, AgentControlCounters *ret) {
        if (m->role_data)
                connector_dataplane_get_counters(m->role_data, ret);
}

static bool connector_is_ready(AgentManager *m, const char **ret_reason) {
        if (!m->role_data) {
                *ret_reason = "data plane not started";
                return false;
        }
        if (!connector_dataplane_is_listening(m->role_data)) {
                *ret_reason = "not accepting tunnelers";
                return false;
        }
        return true;
}

static const AgentRoleOps connector_role_ops = {
        .start = connector_start,
        .identity_changed = connector_identity_changed,
        .policy_changed = connector_policy_changed,
        .peer_revoked = connector_peer_revoked,
        .stop = connector_stop,
        .get_counters = connector_get_counters,
        .is_ready = connector_is_ready,
        .free = connector_stop,
};

int main(int argc, char *argv[]) {
        return agent_main(SPIFFE_ROLE_CONNECTOR, &connector_role_ops, argc, argv);
}
