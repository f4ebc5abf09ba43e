/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdlib.h>

#include "agent-metrics.h"
#include "config.h"
#include "metrics.h"

static int agent_metrics_write(MetricsWriter *w, AgentManager *m) {
        AgentControlCounters data = m->counters.data;
        int r;

        /* The bus shows what the last heartbeat carried; a scrape asks the data plane now. */
        if (m->role_started && m->role_ops && m->role_ops->get_counters) {
                data = (AgentControlCounters) {};
                m->role_ops->get_counters(m, &data);
        }

        r = metrics_family(w, "ztna_agent_info", METRIC_GAUGE, "The agent's role, version and SPIFFE ID.");
        if (r < 0)
                return r;
        r = metrics_sample_u64(w,
                               METRICS_LABELS("role", spiffe_role_to_string(m->role),
                                              "version", PROJECT_VERSION,
                                              "spiffe_id", m->info.spiffe_id),
                               1);
        if (r < 0)
                return r;

        r = metrics_family(w, "ztna_agent_state", METRIC_GAUGE,
                           "1 for the agent's current state, 0 for the others.");
        if (r < 0)
                return r;
        for (AgentState s = 0; s < _AGENT_STATE_MAX; s++) {
                r = metrics_sample_u64(w, METRICS_LABELS("state", agent_state_to_string(s)), m->state == s);
                if (r < 0)
                        return r;
        }

        r = metrics_family_u64(w, "ztna_agent_online", METRIC_GAUGE,
                               "1 while the control stream to the controller is up.",
                               m->state == AGENT_STATE_ONLINE);
        if (r < 0)
                return r;

        /* Times that are not known yet have no sample. */
        r = metrics_family(w, "ztna_certificate_expiry_timestamp_seconds", METRIC_GAUGE,
                           "When the agent's certificate expires (notAfter), in seconds since the epoch.");
        if (r < 0)
                return r;
        if (m->info.not_after > 0) {
                r = metrics_sample_usec(w, NULL, m->info.not_after);
                if (r < 0)
                        return r;
        }

        r = metrics_family(w, "ztna_last_heartbeat_timestamp_seconds", METRIC_GAUGE,
                           "When the last heartbeat (or the hello) went to the controller, in seconds since "
                           "the epoch.");
        if (r < 0)
                return r;
        if (m->last_heartbeat > 0) {
                r = metrics_sample_usec(w, NULL, m->last_heartbeat);
                if (r < 0)
                        return r;
        }

        const struct {
                const char *name;
                MetricType type;
                const char *help;
                uint64_t value;
        } table[] = {
                { "ztna_renewals_total", METRIC_COUNTER,
                  "Successful certificate renewals and re-authentications.", m->counters.renewals },
                { "ztna_renewal_failures_total", METRIC_COUNTER,
                  "Failed certificate renewals.", m->counters.renewal_failures },
                { "ztna_reconnects_total", METRIC_COUNTER,
                  "Control connections accepted after the first.", m->counters.reconnects },
                { "ztna_streams_active", METRIC_GAUGE,
                  "Data-plane streams open now.", data.streams_active },
                { "ztna_streams_total", METRIC_COUNTER,
                  "Data-plane streams opened.", data.streams_total },
                { "ztna_denials_total", METRIC_COUNTER,
                  "Data-plane streams refused by policy.", data.denials },
                { "ztna_peers", METRIC_GAUGE, "Data-plane peers connected now.", data.peers },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                r = metrics_family_u64(w, table[i].name, table[i].type, table[i].help, table[i].value);
                if (r < 0)
                        return r;
        }

        r = metrics_family(w, "ztna_bytes_total", METRIC_COUNTER,
                           "Data-plane payload bytes by direction (the BytesIn and BytesOut bus "
                           "properties).");
        if (r < 0)
                return r;
        r = metrics_sample_u64(w, METRICS_LABELS("direction", "in"), data.bytes_in);
        if (r < 0)
                return r;
        return metrics_sample_u64(w, METRICS_LABELS("direction", "out"), data.bytes_out);
}

char *agent_metrics_format(AgentManager *m) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        char *text;
        int r;

        assert(m);

        r = metrics_writer_new(0, &w);
        if (r < 0)
                return NULL;
        /* Our names are valid and the bound is far above what an agent writes: only OOM is left. */
        r = agent_metrics_write(w, m);
        if (r < 0)
                return NULL;
        r = metrics_writer_finish(w, &text);
        if (r < 0)
                return NULL;
        return text;
}
