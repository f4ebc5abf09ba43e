/* SPDX-License-Identifier: Apache-2.0 */

#include "controller-metrics.h"
#include "crypto-token.h"
#include "macro.h"
#include "crypto-util.h"
#include "tests.h"

#define TD "spiffe://ztna.test"
#define T0 ((usec_t) 1763700000000000)

/* With $ZTNA_METRICS_DUMP_DIR, writes text there (for tests/integration/test_metrics.py and promtool). */
static void dump(const char *name, const char *text) {
        const char *dir = getenv("ZTNA_METRICS_DUMP_DIR");
        char path[4096];

        if (!dir)
                return;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        test_write_file(path, text, strlen(text));
}

static void token_add(Store *s, SpiffeRole role, usec_t expires_at, StoreToken *ret) {
        *ret = (StoreToken) {
                .role = role,
                .created_by = (char *) "admin:alice",
                .created_at = T0 - USEC_PER_HOUR,
                .expires_at = expires_at,
        };
        ASSERT_OK(crypto_random_bytes(ret->id, TOKEN_ID_SIZE));
        ASSERT_OK(crypto_random_bytes(ret->secret_hash, TOKEN_HASH_SIZE));
        ASSERT_OK(store_token_create(s, ret));
}

static void agent_add(Store *s, SpiffeRole role, const char *id) {
        char spiffe_id[256];
        uint8_t key[91];
        StoreToken t;

        token_add(s, role, T0 + USEC_PER_HOUR, &t);
        snprintf(spiffe_id, sizeof(spiffe_id), TD "/%s/%s", spiffe_role_to_string(role), id);
        memset(key, id[0], sizeof(key));
        StoreAgent a = {
                .spiffe_id = spiffe_id,
                .role = role,
                .id = (char *) id,
                .public_key = key,
                .public_key_size = sizeof(key),
                .version = (char *) "0.1.0",
                .cert_serial = (char *) "0a",
                .cert_not_after = T0 + USEC_PER_HOUR,
        };
        ASSERT_EQ(store_enroll(s, t.id, t.secret_hash, &a, T0, NULL, NULL), 0);
}

TEST(state_names) {
        ASSERT_STREQ(controller_agent_state_to_string(CONTROLLER_AGENT_ONLINE), "online");
        ASSERT_STREQ(controller_agent_state_to_string(CONTROLLER_AGENT_REVOKED), "revoked");
        ASSERT_NULL(controller_agent_state_to_string(_CONTROLLER_AGENT_STATE_MAX));
        ASSERT_STREQ(controller_token_state_to_string(CONTROLLER_TOKEN_ACTIVE), "active");
        ASSERT_STREQ(controller_token_state_to_string(CONTROLLER_TOKEN_EXPIRED), "expired");
        ASSERT_NULL(controller_token_state_to_string(_CONTROLLER_TOKEN_STATE_INVALID));
}

TEST(collect) {
        _cleanup_(store_freep) Store *store = NULL;
        _cleanup_free_ char *text = NULL;
        ControllerMetrics s;
        StoreToken t;

        ASSERT_OK(store_open_sqlite(test_path("store.db"), &store));
        /* Three connectors (one revoked), two tunnelers: every token used. */
        agent_add(store, SPIFFE_ROLE_CONNECTOR, "c-1");
        agent_add(store, SPIFFE_ROLE_CONNECTOR, "c-2");
        agent_add(store, SPIFFE_ROLE_CONNECTOR, "c-3");
        agent_add(store, SPIFFE_ROLE_TUNNELER, "t-1");
        agent_add(store, SPIFFE_ROLE_TUNNELER, "t-2");
        ASSERT_OK(store_agent_revoke(store, TD "/connector/c-2", "test", T0));
        /* Tokens: two active, one expired, one revoked. */
        token_add(store, SPIFFE_ROLE_CONNECTOR, T0 + USEC_PER_HOUR, &t);
        token_add(store, SPIFFE_ROLE_TUNNELER, T0 + USEC_PER_HOUR, &t);
        token_add(store, SPIFFE_ROLE_TUNNELER, T0 - 1, &t);
        token_add(store, SPIFFE_ROLE_TUNNELER, T0 + USEC_PER_HOUR, &t);
        ASSERT_OK(store_token_revoke(store, t.id, T0));

        /* No control registry: nobody is online. */
        Manager m = {
                .store = store,
                .counters = { .enrollments = 5, .renewals = 7, .flows = 11, .denials = 2 },
        };
        ASSERT_OK(controller_metrics_collect(&m, T0 + USEC_PER_MINUTE, &s));
        ASSERT_UEQ(s.agents[SPIFFE_ROLE_CONNECTOR][CONTROLLER_AGENT_ONLINE], 0);
        ASSERT_UEQ(s.agents[SPIFFE_ROLE_CONNECTOR][CONTROLLER_AGENT_OFFLINE], 2);
        ASSERT_UEQ(s.agents[SPIFFE_ROLE_CONNECTOR][CONTROLLER_AGENT_REVOKED], 1);
        ASSERT_UEQ(s.agents[SPIFFE_ROLE_TUNNELER][CONTROLLER_AGENT_OFFLINE], 2);
        ASSERT_UEQ(s.tokens[CONTROLLER_TOKEN_ACTIVE], 2);
        ASSERT_UEQ(s.tokens[CONTROLLER_TOKEN_USED], 5);
        ASSERT_UEQ(s.tokens[CONTROLLER_TOKEN_EXPIRED], 1);
        ASSERT_UEQ(s.tokens[CONTROLLER_TOKEN_REVOKED], 1);
        ASSERT_UEQ(s.control_streams, 0);
        ASSERT_UEQ(s.heartbeat_age_max, USEC_INFINITY);
        ASSERT_UEQ(s.counters.flows, 11);

        text = ASSERT_NOT_NULL(controller_metrics_format(&m));
        dump("controller-store.prom", text);
        ASSERT_STRSTR(text, "ztna_agents{role=\"connector\",state=\"offline\"} 2\n");
        ASSERT_STRSTR(text, "ztna_agents{role=\"connector\",state=\"revoked\"} 1\n");
        ASSERT_STRSTR(text, "ztna_agents{role=\"tunneler\",state=\"online\"} 0\n");
        ASSERT_STRSTR(text, "ztna_tokens{state=\"used\"} 5\n");
        /* Nobody online: no age. */
        ASSERT_STRSTR(text, "# TYPE ztna_heartbeat_age_seconds gauge\n# HELP ");
        ASSERT_STRSTR(text, "\nztna_enrollments_total 5\n");
        ASSERT_STRSTR(text, "\nztna_renewals_total 7\n");
        ASSERT_STRSTR(text, "\nztna_flows_total 11\n");
        ASSERT_STRSTR(text, "\nztna_denials_total 2\n");
}

TEST(golden) {
        _cleanup_free_ char *text = NULL;
        ControllerMetrics s = {
                .agents = {
                        [SPIFFE_ROLE_CONNECTOR] = { [CONTROLLER_AGENT_ONLINE] = 2,
                                                    [CONTROLLER_AGENT_OFFLINE] = 1 },
                        [SPIFFE_ROLE_TUNNELER] = { [CONTROLLER_AGENT_ONLINE] = 10,
                                                   [CONTROLLER_AGENT_REVOKED] = 3 },
                },
                .tokens = { [CONTROLLER_TOKEN_ACTIVE] = 4, [CONTROLLER_TOKEN_USED] = 13 },
                .control_streams = 12,
                .heartbeat_age_max = 12345678,
                .counters = { .enrollments = 16, .renewals = 30, .flows = 1000, .denials = 17 },
        };

        text = ASSERT_NOT_NULL(controller_metrics_write(&s));
        dump("controller.prom", text);
        ASSERT_STREQ(text,
                     "# HELP ztna_agents Enrolled agents by role and state.\n"
                     "# TYPE ztna_agents gauge\n"
                     "ztna_agents{role=\"connector\",state=\"online\"} 2\n"
                     "ztna_agents{role=\"connector\",state=\"offline\"} 1\n"
                     "ztna_agents{role=\"connector\",state=\"revoked\"} 0\n"
                     "ztna_agents{role=\"tunneler\",state=\"online\"} 10\n"
                     "ztna_agents{role=\"tunneler\",state=\"offline\"} 0\n"
                     "ztna_agents{role=\"tunneler\",state=\"revoked\"} 3\n"
                     "# HELP ztna_agents_online Agents whose latest heartbeat is recent enough, by role.\n"
                     "# TYPE ztna_agents_online gauge\n"
                     "ztna_agents_online{role=\"connector\"} 2\n"
                     "ztna_agents_online{role=\"tunneler\"} 10\n"
                     "# HELP ztna_control_streams Control streams from agents open now.\n"
                     "# TYPE ztna_control_streams gauge\n"
                     "ztna_control_streams 12\n"
                     "# HELP ztna_heartbeat_age_seconds Age of the oldest latest heartbeat among online "
                     "agents.\n"
                     "# TYPE ztna_heartbeat_age_seconds gauge\n"
                     "ztna_heartbeat_age_seconds 12.345678\n"
                     "# HELP ztna_tokens Enrollment tokens by state.\n"
                     "# TYPE ztna_tokens gauge\n"
                     "ztna_tokens{state=\"active\"} 4\n"
                     "ztna_tokens{state=\"used\"} 13\n"
                     "ztna_tokens{state=\"expired\"} 0\n"
                     "ztna_tokens{state=\"revoked\"} 0\n"
                     "# HELP ztna_enrollments_total Agents enrolled since the controller started.\n"
                     "# TYPE ztna_enrollments_total counter\n"
                     "ztna_enrollments_total 16\n"
                     "# HELP ztna_renewals_total Certificates renewed or re-issued by re-authentication "
                     "since the controller started.\n"
                     "# TYPE ztna_renewals_total counter\n"
                     "ztna_renewals_total 30\n"
                     "# HELP ztna_flows_total Flows reported by connectors since the controller started.\n"
                     "# TYPE ztna_flows_total counter\n"
                     "ztna_flows_total 1000\n"
                     "# HELP ztna_denials_total Flows denied by policy, as connectors reported them, since "
                     "the controller started.\n"
                     "# TYPE ztna_denials_total counter\n"
                     "ztna_denials_total 17\n");
}
