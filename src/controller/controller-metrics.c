/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdlib.h>

#include "controller-control.h"
#include "controller-metrics.h"
#include "log.h"
#include "metrics.h"

static const char *const controller_agent_state_table[_CONTROLLER_AGENT_STATE_MAX] = {
        [CONTROLLER_AGENT_ONLINE] = "online",
        [CONTROLLER_AGENT_OFFLINE] = "offline",
        [CONTROLLER_AGENT_REVOKED] = "revoked",
};

const char *controller_agent_state_to_string(ControllerAgentState s) {
        if (s < 0 || s >= _CONTROLLER_AGENT_STATE_MAX)
                return NULL;
        return controller_agent_state_table[s];
}

static const char *const controller_token_state_table[_CONTROLLER_TOKEN_STATE_MAX] = {
        [CONTROLLER_TOKEN_ACTIVE] = "active",
        [CONTROLLER_TOKEN_USED] = "used",
        [CONTROLLER_TOKEN_EXPIRED] = "expired",
        [CONTROLLER_TOKEN_REVOKED] = "revoked",
};

const char *controller_token_state_to_string(ControllerTokenState s) {
        if (s < 0 || s >= _CONTROLLER_TOKEN_STATE_MAX)
                return NULL;
        return controller_token_state_table[s];
}

static ControllerTokenState token_state(const StoreToken *t, usec_t now_usec) {
        if (t->revoked_at > 0)
                return CONTROLLER_TOKEN_REVOKED;
        if (t->used_at > 0)
                return CONTROLLER_TOKEN_USED;
        if (t->expires_at <= now_usec)
                return CONTROLLER_TOKEN_EXPIRED;
        return CONTROLLER_TOKEN_ACTIVE;
}

int controller_metrics_collect(Manager *m, usec_t t, ControllerMetrics *ret) {
        ControllerMetrics s = { .heartbeat_age_max = USEC_INFINITY };
        StoreAgent **agents = NULL;
        StoreToken **tokens = NULL;
        size_t n_agents = 0, n_tokens = 0;
        int r;

        assert(m);
        assert(ret);

        s.counters = m->counters;
        s.control_streams = control_registry_n_sessions(m->control);

        r = store_agent_list(m->store, _SPIFFE_ROLE_INVALID, &agents, &n_agents);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_agents; i++) {
                const StoreAgent *a = agents[i];
                ControllerAgentState state;
                usec_t last_seen;

                if (!manager_role_is_agent(a->role))
                        continue;

                if (a->revoked_at > 0)
                        state = CONTROLLER_AGENT_REVOKED;
                else if (control_registry_is_online(m->control, a->spiffe_id, t, &last_seen)) {
                        usec_t age = usec_sub(t, last_seen);

                        state = CONTROLLER_AGENT_ONLINE;
                        /* The oldest of the latest: the agent closest to being declared offline. */
                        if (s.heartbeat_age_max == USEC_INFINITY || age > s.heartbeat_age_max)
                                s.heartbeat_age_max = age;
                } else
                        state = CONTROLLER_AGENT_OFFLINE;
                s.agents[a->role][state]++;
        }
        store_agent_array_free(agents, n_agents);

        r = store_token_list(m->store, &tokens, &n_tokens);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_tokens; i++)
                s.tokens[token_state(tokens[i], t)]++;
        store_token_array_free(tokens, n_tokens);

        *ret = s;
        return 0;
}

static int controller_metrics_write_all(MetricsWriter *w, const ControllerMetrics *s) {
        static const SpiffeRole roles[] = { SPIFFE_ROLE_CONNECTOR, SPIFFE_ROLE_TUNNELER };
        int r;

        r = metrics_family(w, "ztna_agents", METRIC_GAUGE, "Enrolled agents by role and state.");
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(roles); i++) {
                for (ControllerAgentState st = 0; st < _CONTROLLER_AGENT_STATE_MAX; st++) {
                        r = metrics_sample_u64(w,
                                               METRICS_LABELS("role", spiffe_role_to_string(roles[i]),
                                                              "state", controller_agent_state_to_string(st)),
                                               s->agents[roles[i]][st]);
                        if (r < 0)
                                return r;
                }
        }

        r = metrics_family(w, "ztna_agents_online", METRIC_GAUGE,
                           "Agents whose latest heartbeat is recent enough, by role.");
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(roles); i++) {
                r = metrics_sample_u64(w, METRICS_LABELS("role", spiffe_role_to_string(roles[i])),
                                       s->agents[roles[i]][CONTROLLER_AGENT_ONLINE]);
                if (r < 0)
                        return r;
        }

        r = metrics_family_u64(w, "ztna_control_streams", METRIC_GAUGE,
                               "Control streams from agents open now.", s->control_streams);
        if (r < 0)
                return r;

        r = metrics_family(w, "ztna_heartbeat_age_seconds", METRIC_GAUGE,
                           "Age of the oldest latest heartbeat among online agents.");
        if (r < 0)
                return r;
        if (s->heartbeat_age_max != USEC_INFINITY) {
                r = metrics_sample_usec(w, NULL, s->heartbeat_age_max);
                if (r < 0)
                        return r;
        }

        r = metrics_family(w, "ztna_tokens", METRIC_GAUGE, "Enrollment tokens by state.");
        if (r < 0)
                return r;
        for (ControllerTokenState st = 0; st < _CONTROLLER_TOKEN_STATE_MAX; st++) {
                r = metrics_sample_u64(w, METRICS_LABELS("state", controller_token_state_to_string(st)),
                                       s->tokens[st]);
                if (r < 0)
                        return r;
        }

        const struct {
                const char *name;
                const char *help;
                uint64_t value;
        } counters[] = {
                { "ztna_enrollments_total",
                  "Agents enrolled since the controller started.", s->counters.enrollments },
                { "ztna_renewals_total",
                  "Certificates renewed or re-issued by re-authentication since the controller started.",
                  s->counters.renewals },
                { "ztna_flows_total",
                  "Flows reported by connectors since the controller started.", s->counters.flows },
                { "ztna_denials_total",
                  "Flows denied by policy, as connectors reported them, since the controller started.",
                  s->counters.denials },
        };
        for (size_t i = 0; i < ELEMENTSOF(counters); i++) {
                r = metrics_family_u64(w, counters[i].name, METRIC_COUNTER, counters[i].help,
                                       counters[i].value);
                if (r < 0)
                        return r;
        }
        return 0;
}

char *controller_metrics_write(const ControllerMetrics *s) {
        _cleanup_(metrics_writer_freep) MetricsWriter *w = NULL;
        char *text;
        int r;

        assert(s);

        r = metrics_writer_new(0, &w);
        if (r < 0)
                return NULL;
        r = controller_metrics_write_all(w, s);
        if (r < 0)
                return NULL;
        r = metrics_writer_finish(w, &text);
        if (r < 0)
                return NULL;
        return text;
}

char *controller_metrics_format(Manager *m) {
        ControllerMetrics s;
        int r;

        assert(m);

        r = controller_metrics_collect(m, now(CLOCK_REALTIME), &s);
        if (r < 0) {
                log_debug_errno(r, "Failed to collect metrics: %m");
                return NULL;
        }
        return controller_metrics_write(&s);
}
