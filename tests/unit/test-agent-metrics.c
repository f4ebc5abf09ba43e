/* SPDX-License-Identifier: Apache-2.0 */

#include "agent-metrics.h"
#include "config.h"
#include "macro.h"
#include "string-util.h"
#include "tests.h"

/* A manager as the bus and the health listener see it, without a loop, secrets or a bus. */
static void fake_manager(AgentManager *m, SpiffeRole role, AgentState state) {
        static char spiffe_id[] = "spiffe://ztna.test/connector/c-1";

        *m = (AgentManager) {
                .role = role,
                .state = state,
                .info.spiffe_id = state == AGENT_STATE_UNENROLLED ? NULL : spiffe_id,
                .info.not_after = state == AGENT_STATE_UNENROLLED ? 0 : 1763790000500000,
                .last_heartbeat = state == AGENT_STATE_ONLINE ? 1763700000000000 : 0,
                .counters = {
                        .renewals = 3,
                        .renewal_failures = 1,
                        .reconnects = 2,
                        .data = { .streams_active = 4, .streams_total = 40, .bytes_in = 1000,
                                  .bytes_out = 2000, .denials = 5, .peers = 6 },
                },
        };
}

static void role_get_counters(AgentManager *m, AgentControlCounters *ret) {
        *ret = (AgentControlCounters) { .streams_active = 7, .streams_total = 70, .bytes_in = 7000,
                                        .bytes_out = 8000, .denials = 9, .peers = 1 };
}

static const AgentRoleOps role_ops = {
        .get_counters = role_get_counters,
};

/* With $ZTNA_METRICS_DUMP_DIR, writes text there (for tests/integration/test_metrics.py and promtool). */
static void dump(const char *name, const char *text) {
        const char *dir = getenv("ZTNA_METRICS_DUMP_DIR");
        char path[4096];

        if (!dir)
                return;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        test_write_file(path, text, strlen(text));
}

TEST(online) {
        _cleanup_free_ char *text = NULL;
        AgentManager m;

        fake_manager(&m, SPIFFE_ROLE_CONNECTOR, AGENT_STATE_ONLINE);
        text = ASSERT_NOT_NULL(agent_metrics_format(&m));
        dump("agent-online.prom", text);

        ASSERT_STRSTR(text, "# TYPE ztna_agent_info gauge\n"
                            "ztna_agent_info{role=\"connector\",version=\"" PROJECT_VERSION
                            "\",spiffe_id=\"spiffe://ztna.test/connector/c-1\"} 1\n");
        ASSERT_STRSTR(text, "\nztna_agent_state{state=\"unenrolled\"} 0\n");
        ASSERT_STRSTR(text, "\nztna_agent_state{state=\"online\"} 1\n");
        ASSERT_STRSTR(text, "\nztna_agent_state{state=\"stopping\"} 0\n");
        ASSERT_STRSTR(text, "\nztna_agent_online 1\n");
        ASSERT_STRSTR(text, "\nztna_certificate_expiry_timestamp_seconds 1763790000.5\n");
        ASSERT_STRSTR(text, "\nztna_last_heartbeat_timestamp_seconds 1763700000\n");
        ASSERT_STRSTR(text, "# TYPE ztna_renewals_total counter\nztna_renewals_total 3\n");
        ASSERT_STRSTR(text, "\nztna_renewal_failures_total 1\n");
        ASSERT_STRSTR(text, "\nztna_reconnects_total 2\n");
        /* Without a started role: what the last heartbeat carried, as on the bus. */
        ASSERT_STRSTR(text, "# TYPE ztna_streams_active gauge\nztna_streams_active 4\n");
        ASSERT_STRSTR(text, "\nztna_streams_total 40\n");
        ASSERT_STRSTR(text, "\nztna_denials_total 5\n");
        ASSERT_STRSTR(text, "# TYPE ztna_peers gauge\nztna_peers 6\n");
        ASSERT_STRSTR(text, "# TYPE ztna_bytes_total counter\n"
                            "ztna_bytes_total{direction=\"in\"} 1000\n"
                            "ztna_bytes_total{direction=\"out\"} 2000\n");

        /* Exactly one state is 1. */
        size_t ones = 0;
        for (const char *p = text; (p = strstr(p, "\nztna_agent_state{")); p++)
                if (startswith(strchr(p, '}'), "} 1\n"))
                        ones++;
        ASSERT_UEQ(ones, 1);
}

TEST(role_counters) {
        _cleanup_free_ char *text = NULL;
        AgentManager m;

        fake_manager(&m, SPIFFE_ROLE_TUNNELER, AGENT_STATE_OFFLINE);
        m.role_ops = &role_ops;
        /* Not started yet: the role is not asked. */
        text = ASSERT_NOT_NULL(agent_metrics_format(&m));
        ASSERT_STRSTR(text, "\nztna_streams_total 40\n");
        free(TAKE_PTR(text));

        m.role_started = true;
        text = ASSERT_NOT_NULL(agent_metrics_format(&m));
        dump("agent-offline.prom", text);
        ASSERT_STRSTR(text, "role=\"tunneler\"");
        ASSERT_STRSTR(text, "\nztna_agent_state{state=\"offline\"} 1\n");
        ASSERT_STRSTR(text, "\nztna_agent_online 0\n");
        ASSERT_STRSTR(text, "\nztna_streams_active 7\n");
        ASSERT_STRSTR(text, "\nztna_streams_total 70\n");
        ASSERT_STRSTR(text, "\nztna_denials_total 9\n");
        ASSERT_STRSTR(text, "\nztna_peers 1\n");
        ASSERT_STRSTR(text, "ztna_bytes_total{direction=\"in\"} 7000\n"
                            "ztna_bytes_total{direction=\"out\"} 8000\n");
        /* The manager's own copy is left alone (the bus shows the heartbeat's). */
        ASSERT_UEQ(m.counters.data.streams_total, 40);
}

TEST(unenrolled) {
        _cleanup_free_ char *text = NULL;
        AgentManager m;

        fake_manager(&m, SPIFFE_ROLE_TUNNELER, AGENT_STATE_UNENROLLED);
        text = ASSERT_NOT_NULL(agent_metrics_format(&m));
        dump("agent-unenrolled.prom", text);
        ASSERT_STRSTR(text, "spiffe_id=\"\"} 1\n");
        ASSERT_STRSTR(text, "\nztna_agent_state{state=\"unenrolled\"} 1\n");
        /* No certificate, no heartbeat: the families are declared, without a sample. */
        ASSERT_STRSTR(text, "# TYPE ztna_certificate_expiry_timestamp_seconds gauge\n# HELP ");
        ASSERT_STRSTR(text, "# TYPE ztna_last_heartbeat_timestamp_seconds gauge\n# HELP ");
}
