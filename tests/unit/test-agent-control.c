/* SPDX-License-Identifier: Apache-2.0 */

/* The control stream client. Parameter checks and unreachable controllers use an identity made with the
 * test PKI; everything else runs against the real `ztna-controller` (tests/lib/controller-fixture.h),
 * enrolled through agent_enroll_sync(), with short backoff settings so outages take seconds. */

#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-conf.h"
#include "agent-control.h"
#include "agent-enroll.h"
#include "agent-policy.h"
#include "controller-fixture.h"
#include "controller-store.h"
#include "crypto-bundle.h"
#include "crypto-ca.h"
#include "crypto-key.h"
#include "crypto-util.h"
#include "crypto-x509.h"
#include "net-fixture.h"
#include "net-grpc.h"
#include "ztna.pb-c.h"
#include "strv.h"
#include "tests.h"

#define TD CONTROLLER_FIXTURE_TRUST_DOMAIN
#define EVENTS_MAX 64

typedef struct Recorder {
        AgentControl *control;
        sd_event *event;
        AgentControlEvent events[EVENTS_MAX];
        char controllers[EVENTS_MAX][64];
        char reasons[EVENTS_MAX][256];
        size_t n_events;
        size_t n_config, n_bundle, n_revocation, n_renew_now, n_counters;
        char revoked_id[256], revoked_reason[256];
        bool revoked_self;
        AgentControlConfig config;
        char config_id[64], config_spiffe_id[256];
        DerBlob bundle[IDENTITY_BUNDLE_MAX];
        size_t n_roots;
        AgentPolicy *policy;                    /* what the policy callbacks apply pushes to */
        size_t n_snapshot, n_delta;
        /* Frees the control from inside this callback ("state:<name>", "config", "bundle"). */
        const char *free_in;
        bool freed;
} Recorder;

static void recorder_done(Recorder *r) {
        r->control = agent_control_free(r->control);
        for (size_t k = 0; k < r->n_roots; k++)
                free(r->bundle[k].data);
        r->n_roots = 0;
        r->policy = agent_policy_free(r->policy);
}

static void maybe_free(Recorder *r, const char *where) {
        if (r->free_in && streq(r->free_in, where)) {
                r->control = agent_control_free(r->control);
                r->freed = true;
        }
}

static void on_state(AgentControl *c, const AgentControlEvent *ev, void *userdata) {
        Recorder *r = userdata;
        char where[64];

        ASSERT_TRUE(c == r->control);
        ASSERT_LT(r->n_events, EVENTS_MAX);
        r->events[r->n_events] = *ev;
        snprintf(r->controllers[r->n_events], sizeof(r->controllers[0]), "%s", strempty(ev->controller));
        snprintf(r->reasons[r->n_events], sizeof(r->reasons[0]), "%s", strempty(ev->reason));
        /* Borrowed strings must not be kept. */
        r->events[r->n_events].controller = r->events[r->n_events].reason = NULL;
        ASSERT_TRUE((ev->error < 0) == (ev->reason != NULL));
        ASSERT_EQ(agent_control_get_state(c), ev->state);
        r->n_events++;
        snprintf(where, sizeof(where), "state:%s", agent_control_state_to_string(ev->state));
        maybe_free(r, where);
}

static void on_config(AgentControl *c, const AgentControlConfig *config, void *userdata) {
        Recorder *r = userdata;

        r->n_config++;
        r->config = *config;
        snprintf(r->config_id, sizeof(r->config_id), "%s", config->id);
        snprintf(r->config_spiffe_id, sizeof(r->config_spiffe_id), "%s", config->spiffe_id);
        r->config.id = r->config.spiffe_id = r->config.remote_network = NULL;
        r->config.groups = NULL;
        maybe_free(r, "config");
}

static void on_trust_bundle(AgentControl *c, const DerBlob *roots, size_t n, void *userdata) {
        Recorder *r = userdata;

        r->n_bundle++;
        for (size_t k = 0; k < r->n_roots; k++)
                free(r->bundle[k].data);
        ASSERT_LE(n, IDENTITY_BUNDLE_MAX);
        for (size_t k = 0; k < n; k++) {
                r->bundle[k].data = malloc(roots[k].size);
                ASSERT_NOT_NULL(r->bundle[k].data);
                memcpy(r->bundle[k].data, roots[k].data, roots[k].size);
                r->bundle[k].size = roots[k].size;
        }
        r->n_roots = n;
        maybe_free(r, "bundle");
}

static void on_revocation(AgentControl *c, const char *spiffe_id, const char *reason, bool self, void *userdata) {
        Recorder *r = userdata;

        r->n_revocation++;
        snprintf(r->revoked_id, sizeof(r->revoked_id), "%s", spiffe_id);
        snprintf(r->revoked_reason, sizeof(r->revoked_reason), "%s", reason);
        r->revoked_self = self;
}

static void on_renew_now(AgentControl *c, void *userdata) {
        Recorder *r = userdata;

        r->n_renew_now++;
}

static int on_policy_snapshot(AgentControl *c, const Ztna__V1__PolicySnapshot *s, void *userdata) {
        Recorder *r = userdata;
        int k;

        r->n_snapshot++;
        k = agent_policy_apply_snapshot(r->policy, s, NULL);
        maybe_free(r, "snapshot");
        return k;
}

static int on_policy_delta(AgentControl *c, const Ztna__V1__PolicyDelta *d, void *userdata) {
        Recorder *r = userdata;

        r->n_delta++;
        return agent_policy_apply_delta(r->policy, d, NULL);
}

static void get_counters(AgentControl *c, AgentControlCounters *ret, void *userdata) {
        Recorder *r = userdata;

        r->n_counters++;
        ret->streams_total = r->n_counters;
}

static const AgentControlCallbacks recorder_callbacks = {
        .on_state = on_state,
        .on_config = on_config,
        .on_trust_bundle = on_trust_bundle,
        .on_revocation = on_revocation,
        .on_renew_now = on_renew_now,
        .get_counters = get_counters,
};

static size_t count_state(const Recorder *r, AgentControlState s) {
        size_t n = 0;

        for (size_t k = 0; k < r->n_events; k++)
                n += r->events[k].state == s;
        return n;
}

typedef struct Wait {
        Recorder *r;
        AgentControlState state;
        size_t n;
} Wait;

static bool wait_done(void *userdata) {
        Wait *w = userdata;

        return count_state(w->r, w->state) >= w->n;
}

/* Runs the loop until n events of state have been seen in all. */
static void run_until_state(Recorder *r, AgentControlState state, size_t n, usec_t timeout) {
        Wait w = { .r = r, .state = state, .n = n };

        if (!fixture_run_until_func(r->event, wait_done, &w, timeout))
                test_fail(__FILE__, __LINE__, "no %zu× '%s' within the time (state '%s', %zu events, last reason '%s')",
                          n, agent_control_state_to_string(state),
                          r->control ? agent_control_state_to_string(agent_control_get_state(r->control)) : "freed",
                          r->n_events, r->n_events > 0 ? r->reasons[r->n_events - 1] : "");
}

static bool have_bundle(void *userdata) {
        return ((Recorder *) userdata)->n_bundle > 0;
}

static void run_for(sd_event *e, usec_t t) {
        bool never = false;

        (void) fixture_run_until(e, &never, t);
}

static void setup(void) {
        (void) signal(SIGPIPE, SIG_IGN);
}

static int enroll(const char *token, SpiffeRole role, const char *id, AgentIdentity *ret) {
        _cleanup_free_ char *reason = NULL;
        int r;

        r = agent_enroll_sync(&(AgentEnrollParams) { .token = token, .role = role, .id = id,
                                                     .version = "1.0.0", .key_type = KEY_TYPE_ECDSA_P256 },
                              ret, &reason);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "enrollment failed: %s", strna(reason));
        return r;
}

/* A controller with one enrolled agent of role/id. */
static void controller_with_agent(ControllerFixture *c, SpiffeRole role, const char *id, AgentIdentity *ret) {
        _cleanup_(erase_and_free_stringp) char *token = NULL;

        controller_fixture_init(c, NULL);
        controller_fixture_add_token(c, role, &token, NULL);
        controller_fixture_start(c);
        ASSERT_OK(enroll(token, role, id, ret));
}

static void blob_from_x509(X509 *cert, DerBlob *ret) {
        ASSERT_OK(crypto_x509_to_der(cert, &ret->data, &ret->size));
}

/* An identity of the test PKI (never accepted by a real controller) dialling controllers. */
static void pki_identity(Pki *pki, char **controllers, AgentIdentity *ret) {
        Identity id;
        usec_t not_after;

        pki_issue(pki, SPIFFE_ROLE_CONNECTOR, "conn-1", 0, USEC_PER_HOUR, &id);
        *ret = (AgentIdentity) {
                .role = SPIFFE_ROLE_CONNECTOR,
                .id = strdup("conn-1"),
                .spiffe_id = strdup("spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1"),
                .trust_domain = strdup(FIXTURE_TRUST_DOMAIN),
                .controllers = strv_copy(controllers),
                .remote_network = strdup("lab"),
                .heartbeat_interval = 10 * USEC_PER_SEC,
                .certificate_lifetime = USEC_PER_HOUR,
        };
        ASSERT_NOT_NULL(ret->id);
        ASSERT_NOT_NULL(ret->controllers);
        ASSERT_OK(crypto_key_to_pkcs8_der(id.key, &ret->key.data, &ret->key.size));
        blob_from_x509(id.cert, &ret->chain[0]);
        blob_from_x509(ca_get_certificate(pki->issuing), &ret->chain[1]);
        ret->n_chain = 2;
        blob_from_x509(ca_get_certificate(pki->root), &ret->bundle[0]);
        ret->n_bundle = 1;
        ASSERT_OK(crypto_x509_get_validity(id.cert, NULL, &not_after));
        ret->not_after = not_after;
        identity_done(&id);
}

static char *unused_address(void) {
        static char buf[4][32];
        static unsigned i;
        char *p = buf[i++ % 4];

        snprintf(p, sizeof(buf[0]), "127.0.0.1:%u", controller_fixture_free_port());
        return p;
}

/* ---- without a controller -------------------------------------------------------------------------------- */

TEST(state_names) {
        static const char *const names[] = { "stopped", "connecting", "connected", "backing-off", "revoked" };

        for (AgentControlState s = 0; s < _AGENT_CONTROL_STATE_MAX; s++) {
                CASE("%i", (int) s);
                ASSERT_STREQ(agent_control_state_to_string(s), names[s]);
        }
        ASSERT_NULL(agent_control_state_to_string(_AGENT_CONTROL_STATE_MAX));
        ASSERT_NULL(agent_control_state_to_string(_AGENT_CONTROL_STATE_INVALID));
}

TEST(invalid_parameters) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_identity_done) AgentIdentity i = {}, broken = {};
        static char *dup_labels[] = { (char *) "a=1", (char *) "a=2", NULL };
        static char *bad_label[] = { (char *) "novalue", NULL };
        static char *empty_key[] = { (char *) "=v", NULL };
        char *many[AGENT_CONTROL_LABELS_MAX + 2] = {}, buf[AGENT_CONTROL_LABELS_MAX + 1][16];
        char long_text[AGENT_CONTROL_STRING_MAX + 2];
        AgentControl *c = NULL;
        Pki pki;

        for (size_t k = 0; k <= AGENT_CONTROL_LABELS_MAX; k++) {
                snprintf(buf[k], sizeof(buf[k]), "k%zu=v", k);
                many[k] = buf[k];
        }
        memset(long_text, 'x', sizeof(long_text) - 1);
        long_text[sizeof(long_text) - 1] = '\0';

        const struct {
                const char *name;
                AgentControlSettings s;
        } table[] = {
                { "cap below base", { .backoff_base = 2 * USEC_PER_SEC, .backoff_cap = USEC_PER_SEC } },
                { "base above maximum", { .backoff_base = AGENT_RECONNECT_MAX + 1, .backoff_cap = AGENT_RECONNECT_MAX + 1 } },
                { "healthy_after above maximum", { .healthy_after = AGENT_RECONNECT_MAX + 1 } },
                { "heartbeat above maximum", { .heartbeat_interval = (AGENT_HEARTBEAT_INTERVAL_MAX + 1) * USEC_PER_SEC } },
                { "version with newline", { .version = "1.0\n" } },
                { "version too long", { .version = long_text } },
                { "private IP with escape", { .private_ip = "10.0.0.1\033" } },
                { "bad data-plane address", { .data_plane_address = "no port" } },
                { "duplicate label", { .labels = dup_labels } },
                { "label without '='", { .labels = bad_label } },
                { "label without key", { .labels = empty_key } },
                { "too many labels", { .labels = many } },
        };

        setup();
        ASSERT_OK(sd_event_new(&e));
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_identity(&pki, (char *[]) { (char *) "127.0.0.1:1", NULL }, &i);

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                CASE("%s", table[k].name);
                ASSERT_ERROR(agent_control_new(e, &i, &table[k].s, NULL, NULL, &c), EINVAL);
                ASSERT_NULL(c);
        }

        CASE("incomplete identity");
        ASSERT_ERROR(agent_control_new(e, &broken, NULL, NULL, NULL, &c), EINVAL);
        CASE("no controllers");
        ASSERT_OK(agent_control_new(e, &i, NULL, NULL, NULL, &c));
        pki_identity(&pki, (char *[]) { (char *) "127.0.0.1:1", NULL }, &broken);
        broken.controllers = strv_free(broken.controllers);
        ASSERT_ERROR(agent_control_new(e, &broken, NULL, NULL, NULL, &(AgentControl *) { NULL }), EINVAL);

        CASE("set_identity for another agent");
        free(broken.spiffe_id);
        broken.spiffe_id = strdup("spiffe://" FIXTURE_TRUST_DOMAIN "/connector/other");
        broken.controllers = strv_copy(i.controllers);
        ASSERT_ERROR(agent_control_set_identity(c, &broken), EINVAL);

        CASE("defaults");
        ASSERT_EQ(agent_control_get_state(c), AGENT_CONTROL_STOPPED);
        ASSERT_NULL(agent_control_get_controller(c));
        ASSERT_EQ(agent_control_get_heartbeat_interval(c), 10 * USEC_PER_SEC); /* the identity's */
        ASSERT_EQ(agent_control_get_last_heartbeat(c), 0);
        c = agent_control_free(c);
        pki_done(&pki);
}

/* Nothing listens: each attempt takes the next address (every round visits each once), the backoff grows
 * with jitter, and nothing runs inside start(). */
TEST(unreachable_addresses_in_turn) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        char a[32], b[32];
        Recorder r = {};
        Pki pki;

        setup();
        ASSERT_OK(sd_event_new(&e));
        r.event = e;
        snprintf(a, sizeof(a), "%s", unused_address());
        snprintf(b, sizeof(b), "%s", unused_address());
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_identity(&pki, (char *[]) { a, b, NULL }, &i);

        ASSERT_OK(agent_control_new(e, &i,
                                    &(AgentControlSettings) { .backoff_base = 10 * USEC_PER_MSEC,
                                                              .backoff_cap = 80 * USEC_PER_MSEC },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        ASSERT_OK(agent_control_start(r.control)); /* already running: no-op */
        ASSERT_EQ(r.n_events, 0);
        run_until_state(&r, AGENT_CONTROL_BACKING_OFF, 12, 5 * USEC_PER_SEC);

        size_t n = 0;
        for (size_t k = 0; k < r.n_events; k++) {
                if (r.events[k].state != AGENT_CONTROL_BACKING_OFF)
                        continue;
                CASE("event %zu", k);
                ASSERT_EQ(r.events[k].error, -EHOSTUNREACH);
                ASSERT_STRSTR(r.reasons[k], "unreachable");
                ASSERT_STRSTR(r.reasons[k], r.controllers[k]);
                ASSERT_EQ(r.events[k].attempt, n + 1);
                usec_t ceiling = MIN(80 * USEC_PER_MSEC, (10 * USEC_PER_MSEC) << MIN(n, 10U));
                ASSERT_LE(r.events[k].delay, ceiling);
                n++;
        }
        /* Rounds of two: both addresses once each. */
        size_t seen = 0;
        const char *prev = NULL;
        for (size_t k = 0; k < r.n_events; k++) {
                if (r.events[k].state != AGENT_CONTROL_BACKING_OFF)
                        continue;
                CASE("round position %zu", seen);
                ASSERT_TRUE(streq(r.controllers[k], a) || streq(r.controllers[k], b));
                if (seen % 2 == 1)
                        ASSERT_FALSE(streq(prev, r.controllers[k]));
                prev = r.controllers[k];
                seen++;
        }

        /* Jittered: the last attempts' delays (ceiling 80 ms) are not all one value. */
        bool differ = false;
        for (size_t k = 1; k < r.n_events; k++)
                if (r.events[k].state == AGENT_CONTROL_BACKING_OFF && r.events[k].attempt >= 4 &&
                    r.events[k].delay != r.events[k - 1].delay)
                        differ = true;
        ASSERT_TRUE(differ);

        CASE("stop");
        size_t before = r.n_events;
        ASSERT_OK(agent_control_stop(r.control));
        ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_STOPPED);
        run_for(e, 300 * USEC_PER_MSEC);
        ASSERT_EQ(r.n_events, before);

        recorder_done(&r);
        pki_done(&pki);
}

/* Freed from its own on_state while backing off (no controller): nothing touches it afterwards. */
TEST(free_from_backing_off) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        Recorder r = { .free_in = "state:backing-off" };
        Pki pki;

        setup();
        ASSERT_OK(sd_event_new(&e));
        r.event = e;
        pki_init(&pki, FIXTURE_TRUST_DOMAIN);
        pki_identity(&pki, (char *[]) { unused_address(), NULL }, &i);
        ASSERT_OK(agent_control_new(e, &i, NULL, &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        ASSERT_TRUE(fixture_run_until(e, &r.freed, 5 * USEC_PER_SEC));
        size_t n = r.n_events;
        run_for(e, 200 * USEC_PER_MSEC);
        ASSERT_EQ(r.n_events, n);
        ASSERT_EQ(r.events[n - 1].state, AGENT_CONTROL_BACKING_OFF);
        ASSERT_NULL(r.control);
        pki_done(&pki);
}

/* ---- against the controller ---------------------------------------------------------------------------- */

static void assert_connected_once(Recorder *r, const char *address) {
        ASSERT_GE(r->n_events, 2);
        ASSERT_EQ(r->events[0].state, AGENT_CONTROL_CONNECTING);
        ASSERT_STREQ(r->controllers[0], address);
        ASSERT_EQ(r->events[1].state, AGENT_CONTROL_CONNECTED);
        ASSERT_STREQ(r->controllers[1], address);
        ASSERT_EQ(r->events[1].error, 0);
}

TEST(connected_config_bundle_heartbeats) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        const char *sid = "spiffe://" TD "/connector/conn-1";
        ControllerFixture ctl;
        Recorder r = {};
        usec_t hello;

        setup();
        controller_with_agent(&ctl, SPIFFE_ROLE_CONNECTOR, "conn-1", &i);
        ASSERT_OK(sd_event_new(&e));
        r.event = e;

        ASSERT_OK(agent_control_new(e, &i,
                                    &(AgentControlSettings) {
                                            .heartbeat_interval = 500 * USEC_PER_MSEC,
                                            .version = "2.0.0",
                                            .private_ip = "10.9.8.7",
                                            .data_plane_address = "conn-1.lab:8444",
                                            .labels = (char *[]) { (char *) "site=lab", NULL },
                                    },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);
        assert_connected_once(&r, ctl.address);
        ASSERT_STREQ(agent_control_get_controller(r.control), ctl.address);
        hello = agent_control_get_last_heartbeat(r.control);
        ASSERT_GT(hello, 0);

        /* The controller sends its configuration, then the trust bundle. */
        ASSERT_TRUE(fixture_run_until_func(e, have_bundle, &r, 5 * USEC_PER_SEC));
        ASSERT_EQ(r.n_config, 1);
        ASSERT_EQ(r.config.role, SPIFFE_ROLE_CONNECTOR);
        ASSERT_STREQ(r.config_id, "conn-1");
        ASSERT_STREQ(r.config_spiffe_id, sid);
        ASSERT_EQ(r.config.heartbeat_interval, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.config.certificate_lifetime, USEC_PER_HOUR);
        ASSERT_EQ(r.n_bundle, 1);
        ASSERT_EQ(r.n_roots, i.n_bundle);
        ASSERT_EQ(r.bundle[0].size, i.bundle[0].size);
        ASSERT_MEMEQ(r.bundle[0].data, i.bundle[0].data, i.bundle[0].size);
        ASSERT_GT(agent_control_get_last_received(r.control), 0);
        /* Our setting wins over the controller's 10 s. */
        ASSERT_EQ(agent_control_get_heartbeat_interval(r.control), 500 * USEC_PER_MSEC);

        /* Heartbeats, not just the hello, reach the store: its last_seen passes the hello by seconds once
         * the controller has flushed (every 5 s). */
        usec_t deadline = now(CLOCK_MONOTONIC) + 12 * USEC_PER_SEC;
        usec_t last_seen = 0;
        for (;;) {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_(store_agent_freep) StoreAgent *a = NULL;

                run_for(e, 500 * USEC_PER_MSEC);
                ASSERT_OK(store_open_sqlite(ctl.db, &s));
                ASSERT_OK(store_agent_get(s, sid, &a));
                last_seen = a->last_seen;
                if (last_seen >= hello + 2 * USEC_PER_SEC) {
                        ASSERT_STREQ(a->version, "2.0.0");
                        ASSERT_STREQ(a->private_ip, "10.9.8.7");
                        break;
                }
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
        }
        ASSERT_GE(r.n_counters, 4);
        ASSERT_GT(agent_control_get_last_heartbeat(r.control), hello + 2 * USEC_PER_SEC);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_CONNECTED), 1);
        ASSERT_EQ(r.n_revocation, 0);

        recorder_done(&r);
        controller_fixture_stop(&ctl);
}

static void assert_delays_in_ceiling(const Recorder *r, size_t from, usec_t base, usec_t cap) {
        for (size_t k = from; k < r->n_events; k++) {
                const AgentControlEvent *ev = &r->events[k];

                if (ev->state != AGENT_CONTROL_BACKING_OFF)
                        continue;
                CASE("event %zu, attempt %u", k, ev->attempt);
                ASSERT_GE(ev->attempt, 1);
                ASSERT_LE(ev->delay, MIN(cap, base << MIN(ev->attempt - 1, 20U)));
        }
}

/* Outage: growing, jittered delays; a short reconnection does not reset them, a healthy one does. */
TEST(backoff_grows_and_resets) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        const usec_t base = 50 * USEC_PER_MSEC, cap = 400 * USEC_PER_MSEC;
        ControllerFixture ctl;
        Recorder r = {};
        size_t first, n;

        setup();
        controller_with_agent(&ctl, SPIFFE_ROLE_TUNNELER, "tun-1", &i);
        ASSERT_OK(sd_event_new(&e));
        r.event = e;
        ASSERT_OK(agent_control_new(e, &i,
                                    &(AgentControlSettings) { .backoff_base = base, .backoff_cap = cap,
                                                              .healthy_after = USEC_PER_SEC },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);

        /* The controller goes away: it says so, then nobody answers. */
        first = r.n_events;
        controller_fixture_stop_in(&ctl, e);
        run_until_state(&r, AGENT_CONTROL_BACKING_OFF, 10, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.events[first].state, AGENT_CONTROL_BACKING_OFF);
        ASSERT_STRSTR(r.reasons[first], "shutting down");
        ASSERT_EQ(r.events[first].attempt, 1);
        ASSERT_EQ(r.events[r.n_events - 1].state, AGENT_CONTROL_BACKING_OFF);
        ASSERT_EQ(r.events[r.n_events - 1].error, -EHOSTUNREACH);
        assert_delays_in_ceiling(&r, first, base, cap);
        /* They grow: attempts 5..10 (ceiling 400 ms) are not all within attempt 1..2's 100 ms. */
        usec_t late_max = 0;
        unsigned last_attempt = 0;
        for (size_t k = first; k < r.n_events; k++)
                if (r.events[k].state == AGENT_CONTROL_BACKING_OFF) {
                        ASSERT_EQ(r.events[k].attempt, last_attempt + 1);
                        last_attempt = r.events[k].attempt;
                        if (r.events[k].attempt >= 5)
                                late_max = MAX(late_max, r.events[k].delay);
                }
        ASSERT_GT(late_max, 2 * base);

        /* Back, but only briefly: the count goes on. */
        controller_fixture_start(&ctl);
        n = count_state(&r, AGENT_CONTROL_CONNECTED);
        run_until_state(&r, AGENT_CONTROL_CONNECTED, n + 1, 10 * USEC_PER_SEC);
        last_attempt = r.events[r.n_events - 3].attempt; /* the wait before this success */
        ASSERT_EQ(r.events[r.n_events - 3].state, AGENT_CONTROL_BACKING_OFF);
        n = count_state(&r, AGENT_CONTROL_BACKING_OFF);
        first = r.n_events;
        controller_fixture_stop_in(&ctl, e);
        run_until_state(&r, AGENT_CONTROL_BACKING_OFF, n + 1, 5 * USEC_PER_SEC);
        CASE("short connection");
        ASSERT_EQ(r.events[first].state, AGENT_CONTROL_BACKING_OFF);
        ASSERT_EQ(r.events[first].attempt, last_attempt + 1);

        /* Back for longer than healthy_after: the next outage starts over from the base. */
        controller_fixture_start(&ctl);
        n = count_state(&r, AGENT_CONTROL_CONNECTED);
        run_until_state(&r, AGENT_CONTROL_CONNECTED, n + 1, 10 * USEC_PER_SEC);
        run_for(e, USEC_PER_SEC + 300 * USEC_PER_MSEC);
        ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_CONNECTED);
        n = count_state(&r, AGENT_CONTROL_BACKING_OFF);
        first = r.n_events;
        controller_fixture_stop_in(&ctl, e);
        run_until_state(&r, AGENT_CONTROL_BACKING_OFF, n + 1, 5 * USEC_PER_SEC);
        CASE("healthy connection");
        ASSERT_EQ(r.events[first].state, AGENT_CONTROL_BACKING_OFF);
        ASSERT_EQ(r.events[first].attempt, 1);
        ASSERT_LE(r.events[first].delay, base);

        recorder_done(&r);
}

/* Revoked while the controller was down: refused once, then silence. */
TEST(revoked_stops_retrying) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        ControllerFixture ctl;
        Recorder r = {};

        setup();
        controller_with_agent(&ctl, SPIFFE_ROLE_CONNECTOR, "conn-1", &i);
        controller_fixture_stop(&ctl);
        {
                _cleanup_(store_freep) Store *s = NULL;

                ASSERT_OK(store_open_sqlite(ctl.db, &s));
                ASSERT_OK(store_agent_revoke(s, i.spiffe_id, "test", now(CLOCK_REALTIME)));
        }
        controller_fixture_start(&ctl);

        ASSERT_OK(sd_event_new(&e));
        r.event = e;
        ASSERT_OK(agent_control_new(e, &i,
                                    &(AgentControlSettings) { .backoff_base = 10 * USEC_PER_MSEC,
                                                              .backoff_cap = 50 * USEC_PER_MSEC },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_REVOKED, 1, 10 * USEC_PER_SEC);
        ASSERT_EQ(r.events[r.n_events - 1].error, -EKEYREVOKED);
        ASSERT_STREQ(r.reasons[r.n_events - 1], "agent revoked");
        ASSERT_STREQ(r.controllers[r.n_events - 1], ctl.address);

        /* At a 50 ms cap a retrying client would have made dozens of attempts by now. */
        run_for(e, 2 * USEC_PER_SEC);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_CONNECTING), 1);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_CONNECTED), 0);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_BACKING_OFF), 0);
        ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_REVOKED);
        ASSERT_ERROR(agent_control_start(r.control), EKEYREVOKED);
        ASSERT_ERROR(agent_control_reconnect(r.control), EKEYREVOKED);
        ASSERT_OK(agent_control_stop(r.control));
        ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_REVOKED);

        recorder_done(&r);
        controller_fixture_stop(&ctl);
}

/* A renewal with a new key: the live stream stays; the next connection uses the new certificate (the old
 * one is refused from now on, which a second client proves: it backs off at the cap with the reason). */
TEST(renewal_keeps_stream) {
        _cleanup_(agent_identity_done) AgentIdentity i = {}, fresh = {};
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *reason = NULL;
        ControllerFixture ctl;
        Recorder r = {}, old = {};
        usec_t hb;

        setup();
        controller_with_agent(&ctl, SPIFFE_ROLE_CONNECTOR, "conn-1", &i);
        ASSERT_OK(sd_event_new(&e));
        r.event = old.event = e;
        ASSERT_OK(agent_control_new(e, &i, &(AgentControlSettings) { .heartbeat_interval = 200 * USEC_PER_MSEC },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);

        if (agent_renew_sync(&i, true, &fresh, &reason) < 0)
                test_fail(__FILE__, __LINE__, "renewal failed: %s", strna(reason));
        ASSERT_OK(agent_control_set_identity(r.control, &fresh));
        hb = agent_control_get_last_heartbeat(r.control);
        run_for(e, USEC_PER_SEC);
        ASSERT_EQ(r.n_events, 2);
        ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_CONNECTED);
        ASSERT_GT(agent_control_get_last_heartbeat(r.control), hb);

        CASE("old certificate");
        ASSERT_OK(agent_control_new(e, &i,
                                    &(AgentControlSettings) { .backoff_base = 10 * USEC_PER_MSEC,
                                                              .backoff_cap = 30 * USEC_PER_SEC },
                                    &recorder_callbacks, &old, &old.control));
        ASSERT_OK(agent_control_start(old.control));
        run_until_state(&old, AGENT_CONTROL_BACKING_OFF, 1, 10 * USEC_PER_SEC);
        ASSERT_EQ(old.events[old.n_events - 1].error, -EACCES);
        ASSERT_STREQ(old.reasons[old.n_events - 1], "certificate superseded by a renewal");
        ASSERT_EQ(old.events[old.n_events - 1].delay, 30 * USEC_PER_SEC);
        ASSERT_EQ(count_state(&old, AGENT_CONTROL_CONNECTED), 0);
        recorder_done(&old);

        CASE("reconnect with the new certificate");
        ASSERT_OK(agent_control_reconnect(r.control));
        ASSERT_EQ(r.n_events, 2); /* from the event loop, not from reconnect() */
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 2, 10 * USEC_PER_SEC);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_BACKING_OFF), 0);

        recorder_done(&r);
        controller_fixture_stop(&ctl);
}

/* Freed from inside each callback in turn (ASan checks that nothing is touched afterwards), with the
 * controller still serving the next client. */
TEST(free_from_callbacks) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        static const char *const where[] = { "state:connecting", "state:connected", "config", "bundle" };
        ControllerFixture ctl;

        setup();
        controller_with_agent(&ctl, SPIFFE_ROLE_TUNNELER, "tun-1", &i);
        ASSERT_OK(sd_event_new(&e));

        for (size_t k = 0; k < ELEMENTSOF(where); k++) {
                Recorder r = { .event = e, .free_in = where[k] };

                CASE("%s", where[k]);
                ASSERT_OK(agent_control_new(e, &i, NULL, &recorder_callbacks, &r, &r.control));
                ASSERT_OK(agent_control_start(r.control));
                ASSERT_TRUE(fixture_run_until(e, &r.freed, 10 * USEC_PER_SEC));
                size_t n = r.n_events, nc = r.n_config, nb = r.n_bundle;
                run_for(e, 300 * USEC_PER_MSEC);
                ASSERT_EQ(r.n_events, n);
                ASSERT_EQ(r.n_config, nc);
                ASSERT_EQ(r.n_bundle, nb);
                recorder_done(&r);
        }

        /* And the controller still works: a last client connects. */
        Recorder r = { .event = e };
        ASSERT_OK(agent_control_new(e, &i, NULL, &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);
        recorder_done(&r);
        controller_fixture_stop(&ctl);
}

/* ---- against a scripted controller ----------------------------------------------------------------------- */

/* A controller of the test PKI that answers the first message of every Control.Connect with the
 * messages of its script, then keeps the stream open. */
#define FAKE_SESSIONS_MAX 8

typedef struct FakeController {
        FixtureEnv env;
        GrpcServer *grpc;
        int listen_fd;
        uint16_t port;
        char address[32];
        sd_event_source *accept_source;
        TlsConnection *handshaking[FAKE_SESSIONS_MAX];
        H2Session *sessions[FAKE_SESSIONS_MAX];
        size_t n_accepted;
        const Ztna__V1__ControllerMessage *const *script;
        size_t n_script;
        size_t n_streams;
        Ztna__V1__AgentMessage *hello;          /* the first message of the last stream */
        size_t n_heartbeats;
        uint64_t not_after_unix, streams_total;
} FakeController;

static FakeController *fake;

static int fake_on_message(GrpcCall *call, ProtobufCMessage *msg, void *userdata) {
        Ztna__V1__AgentMessage *m = (Ztna__V1__AgentMessage *) msg;

        if (grpc_call_get_userdata(call)) {
                if (m->body_case == ZTNA__V1__AGENT_MESSAGE__BODY_HEARTBEAT) {
                        fake->n_heartbeats++;
                        fake->not_after_unix = m->heartbeat->certificate_not_after_unix;
                        fake->streams_total = m->heartbeat->counters ? m->heartbeat->counters->streams_total : 0;
                }
                protobuf_c_message_free_unpacked(msg, NULL);
                return 0;
        }
        if (fake->hello)
                protobuf_c_message_free_unpacked(&fake->hello->base, NULL);
        fake->hello = m;
        grpc_call_set_userdata(call, fake);
        fake->n_streams++;
        for (size_t k = 0; k < fake->n_script; k++)
                ASSERT_OK(grpc_call_send(call, &fake->script[k]->base));
        return 0;
}

static const GrpcMethod fake_methods[] = {
        { .path = "/ztna.v1.Control/Connect", .input = &ztna__v1__agent_message__descriptor,
          .flags = GRPC_METHOD_CLIENT_STREAMING, .on_message = fake_on_message },
};

static int fake_on_request(H2Session *s, H2Stream *st, const H2Headers *h, void *userdata) {
        return grpc_server_handle(fake->grpc, st, h);
}

static void fake_on_session_close(H2Session *s, int error, void *userdata) {
}

static void fake_on_handshake(TlsConnection *tls, int error, void *userdata) {
        size_t k = (size_t) userdata;

        fake->handshaking[k] = NULL;
        if (error < 0) {
                tls_connection_free(tls);
                return;
        }
        ASSERT_OK(h2_session_new(tls, NULL,
                                 &(H2SessionCallbacks) { .on_request = fake_on_request,
                                                         .on_close = fake_on_session_close },
                                 NULL, &fake->sessions[k]));
}

static int fake_on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        size_t k = fake->n_accepted++;
        int cfd;

        ASSERT_LT(k, FAKE_SESSIONS_MAX);
        cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        ASSERT_TRUE(cfd >= 0);
        ASSERT_OK(tls_connection_new(fake->env.server_ctx, fake->env.event, cfd,
                                     &(TlsConnectionCallbacks) { .on_handshake = fake_on_handshake },
                                     (void *) k, &fake->handshaking[k]));
        return 0;
}

static void fake_init(FakeController *f) {
        *f = (FakeController) {};
        fake = f;
        fixture_env_init_with(&f->env, &(const FixtureEnvParams) {
                .server_role = SPIFFE_ROLE_CONTROLLER,
                .server_name = "ctl-1",
                .server_peer_role = SPIFFE_ROLE_CONNECTOR,
                .client_peer_role = SPIFFE_ROLE_CONTROLLER,
        });
        ASSERT_OK(grpc_server_new(fake_methods, ELEMENTSOF(fake_methods), 0, NULL, &f->grpc));
        f->listen_fd = fixture_listen(&f->port);
        snprintf(f->address, sizeof(f->address), "127.0.0.1:%u", f->port);
        ASSERT_OK(sd_event_add_io(f->env.event, &f->accept_source, f->listen_fd, EPOLLIN, fake_on_accept, f));
}

static void fake_done(FakeController *f) {
        f->accept_source = sd_event_source_disable_unref(f->accept_source);
        for (size_t k = 0; k < FAKE_SESSIONS_MAX; k++) {
                tls_connection_free(f->handshaking[k]);
                if (f->sessions[k])
                        h2_session_terminate(f->sessions[k], H2_NO_ERROR);
                h2_session_unref(f->sessions[k]);
        }
        grpc_server_free(f->grpc);
        if (f->hello)
                protobuf_c_message_free_unpacked(&f->hello->base, NULL);
        close(f->listen_fd);
        fixture_env_done(&f->env);
        fake = NULL;
}

static Ztna__V1__AgentConfig config_msg(const char *id, uint32_t interval) {
        Ztna__V1__AgentConfig c = ZTNA__V1__AGENT_CONFIG__INIT;

        c.role = ZTNA__V1__ROLE__ROLE_CONNECTOR;
        c.id = (char *) id;
        c.spiffe_id = (char *) "spiffe://" FIXTURE_TRUST_DOMAIN "/connector/conn-1";
        c.remote_network = (char *) "lab";
        c.heartbeat_interval_seconds = interval;
        c.certificate_lifetime_seconds = 3600;
        return c;
}

/* Every push reaches its callback; a Revocation naming us ends everything, with no retry. */
TEST(pushes_and_revocation_message) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        FakeController f;
        Recorder r = {};

        fake_init(&f);
        pki_identity(&f.env.pki, (char *[]) { f.address, NULL }, &i);
        r.event = f.env.event;

        Ztna__V1__AgentConfig config = config_msg("conn-1", 7);
        ProtobufCBinaryData root = { .data = i.bundle[0].data, .len = i.bundle[0].size };
        Ztna__V1__TrustBundleUpdate bundle = ZTNA__V1__TRUST_BUNDLE_UPDATE__INIT;
        bundle.n_roots = 1;
        bundle.roots = &root;
        Ztna__V1__RenewNow renew = ZTNA__V1__RENEW_NOW__INIT;
        Ztna__V1__Revocation peer = ZTNA__V1__REVOCATION__INIT, self = ZTNA__V1__REVOCATION__INIT;
        peer.spiffe_id = (char *) "spiffe://" FIXTURE_TRUST_DOMAIN "/tunneler/tun-9";
        peer.reason = (char *) "lost laptop";
        self.spiffe_id = i.spiffe_id;
        self.reason = (char *) "decommissioned\n";
        Ztna__V1__ControllerMessage m[5];
        for (size_t k = 0; k < ELEMENTSOF(m); k++)
                m[k] = (Ztna__V1__ControllerMessage) ZTNA__V1__CONTROLLER_MESSAGE__INIT;
        m[0].body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG;
        m[0].config = &config;
        m[1].body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE;
        m[1].trust_bundle = &bundle;
        m[2].body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_RENEW_NOW;
        m[2].renew_now = &renew;
        m[3].body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_REVOCATION;
        m[3].revocation = &peer;
        m[4].body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_REVOCATION;
        m[4].revocation = &self;
        const Ztna__V1__ControllerMessage *script[] = { &m[0], &m[1], &m[2], &m[3], &m[4] };
        f.script = script;
        f.n_script = ELEMENTSOF(script);

        ASSERT_OK(agent_control_new(f.env.event, &i,
                                    &(AgentControlSettings) { .backoff_base = 10 * USEC_PER_MSEC,
                                                              .backoff_cap = 20 * USEC_PER_MSEC },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_REVOKED, 1, 10 * USEC_PER_SEC);
        assert_connected_once(&r, f.address);

        ASSERT_EQ(r.n_config, 1);
        ASSERT_EQ(r.config.heartbeat_interval, 7 * USEC_PER_SEC);
        ASSERT_EQ(agent_control_get_heartbeat_interval(r.control), 7 * USEC_PER_SEC); /* the controller's */
        ASSERT_EQ(r.n_bundle, 1);
        ASSERT_EQ(r.n_renew_now, 1);
        ASSERT_EQ(r.n_revocation, 2);
        ASSERT_TRUE(r.revoked_self);
        ASSERT_STREQ(r.revoked_id, i.spiffe_id);
        ASSERT_STREQ(r.revoked_reason, "decommissioned?"); /* no control characters reach the logs */
        ASSERT_EQ(r.events[r.n_events - 1].error, -EKEYREVOKED);
        ASSERT_STREQ(r.reasons[r.n_events - 1], "decommissioned?");

        run_for(f.env.event, 500 * USEC_PER_MSEC);
        ASSERT_EQ(count_state(&r, AGENT_CONTROL_CONNECTING), 1);
        ASSERT_EQ(f.n_streams, 1);

        recorder_done(&r);
        fake_done(&f);
}

/* Pushes that are not fit to use end the stream (and are not handed on); the agent backs off. */
TEST(malformed_pushes) {
        static uint8_t garbage[] = { 0x30, 0x03, 0x02, 0x01, 0x00 };
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        FakeController f;

        fake_init(&f);
        pki_identity(&f.env.pki, (char *[]) { f.address, NULL }, &i);

        Ztna__V1__AgentConfig other = config_msg("conn-2", 10), zero = config_msg("conn-1", 0);
        ProtobufCBinaryData bad_root = { .data = garbage, .len = sizeof(garbage) };
        ProtobufCBinaryData leaf = { .data = i.chain[0].data, .len = i.chain[0].size };
        Ztna__V1__TrustBundleUpdate empty = ZTNA__V1__TRUST_BUNDLE_UPDATE__INIT, bad = empty, not_root = empty;
        bad.n_roots = 1;
        bad.roots = &bad_root;
        not_root.n_roots = 1;
        not_root.roots = &leaf;
        Ztna__V1__Revocation nobody = ZTNA__V1__REVOCATION__INIT;
        nobody.spiffe_id = (char *) "";

        const struct {
                const char *name;
                int body;
                void *msg;
                const char *reason;
        } table[] = {
                { "config of another agent", ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG, &other, "another agent" },
                { "heartbeat interval 0", ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG, &zero, "heartbeat interval of 0 s" },
                { "empty trust bundle", ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE, &empty, "trust bundle of 0 roots" },
                { "malformed root", ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE, &bad, "invalid trust bundle" },
                { "leaf as root", ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE, &not_root, "invalid trust bundle" },
                { "revocation of nobody", ZTNA__V1__CONTROLLER_MESSAGE__BODY_REVOCATION, &nobody, "invalid revocation" },
        };

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                Ztna__V1__ControllerMessage m = ZTNA__V1__CONTROLLER_MESSAGE__INIT;
                const Ztna__V1__ControllerMessage *script[] = { &m };
                Recorder r = { .event = f.env.event };

                CASE("%s", table[k].name);
                m.body_case = table[k].body;
                if (table[k].body == ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG)
                        m.config = table[k].msg;
                else if (table[k].body == ZTNA__V1__CONTROLLER_MESSAGE__BODY_TRUST_BUNDLE)
                        m.trust_bundle = table[k].msg;
                else
                        m.revocation = table[k].msg;
                f.script = script;
                f.n_script = 1;

                ASSERT_OK(agent_control_new(f.env.event, &i,
                                            &(AgentControlSettings) { .backoff_base = 5 * USEC_PER_SEC,
                                                                      .backoff_cap = 5 * USEC_PER_SEC },
                                            &recorder_callbacks, &r, &r.control));
                ASSERT_OK(agent_control_start(r.control));
                run_until_state(&r, AGENT_CONTROL_BACKING_OFF, 1, 10 * USEC_PER_SEC);
                ASSERT_EQ(r.events[r.n_events - 1].error, -EBADMSG);
                ASSERT_STRSTR(r.reasons[r.n_events - 1], table[k].reason);
                ASSERT_EQ(r.n_config + r.n_bundle + r.n_revocation, 0);
                recorder_done(&r);
        }
        fake_done(&f);
}

/* What goes up: the hello first, with our settings, then heartbeats with counters and our certificate's
 * expiry. */
TEST(hello_and_heartbeat_contents) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        FakeController f;
        Recorder r = {};

        fake_init(&f);
        pki_identity(&f.env.pki, (char *[]) { f.address, NULL }, &i);
        r.event = f.env.event;
        Ztna__V1__AgentConfig config = config_msg("conn-1", 10);
        Ztna__V1__ControllerMessage m = ZTNA__V1__CONTROLLER_MESSAGE__INIT;
        const Ztna__V1__ControllerMessage *script[] = { &m };
        m.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG;
        m.config = &config;
        f.script = script;
        f.n_script = 1;

        ASSERT_OK(agent_control_new(f.env.event, &i,
                                    &(AgentControlSettings) {
                                            .heartbeat_interval = 100 * USEC_PER_MSEC,
                                            .version = "3.1.4",
                                            .private_ip = "192.0.2.7",
                                            .data_plane_address = "[2001:db8::1]:8444",
                                            .labels = (char *[]) { (char *) "site=lab", (char *) "rack=", NULL },
                                    },
                                    &recorder_callbacks, &r, &r.control));
        ASSERT_OK(agent_control_start(r.control));
        run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);
        usec_t deadline = now(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
        while (f.n_heartbeats < 3) {
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                ASSERT_OK(sd_event_run(f.env.event, 50 * USEC_PER_MSEC));
        }

        ASSERT_NOT_NULL(f.hello);
        ASSERT_EQ(f.hello->body_case, ZTNA__V1__AGENT_MESSAGE__BODY_HELLO);
        ASSERT_STREQ(f.hello->hello->version, "3.1.4");
        ASSERT_STREQ(f.hello->hello->private_ip, "192.0.2.7");
        ASSERT_STREQ(f.hello->hello->data_plane_address, "[2001:db8::1]:8444");
        ASSERT_EQ(f.hello->hello->n_labels, 2);
        ASSERT_STREQ(f.hello->hello->labels[0]->key, "site");
        ASSERT_STREQ(f.hello->hello->labels[0]->value, "lab");
        ASSERT_STREQ(f.hello->hello->labels[1]->key, "rack");
        ASSERT_STREQ(f.hello->hello->labels[1]->value, "");
        ASSERT_EQ(f.not_after_unix, i.not_after / USEC_PER_SEC);
        ASSERT_EQ(f.streams_total, r.n_counters); /* from the getter, called for each heartbeat */
        ASSERT_GE(r.n_counters, 3);

        recorder_done(&r);
        fake_done(&f);
}

/* Policy pushes reach their callbacks intact; one they refuse ends the stream with the reason, so that the
 * next connection starts from a snapshot; without the callbacks pushes are ignored. */
TEST(policy_pushes) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        FakeController f;

        fake_init(&f);
        pki_identity(&f.env.pki, (char *[]) { f.address, NULL }, &i);

        Ztna__V1__AgentConfig config = config_msg("conn-1", 10);
        Ztna__V1__PortRange pg = ZTNA__V1__PORT_RANGE__INIT, *pgs[] = { &pg };
        pg.first = pg.last = 5432;
        char *dba[] = { (char *) "dba" };
        Ztna__V1__Resource db = ZTNA__V1__RESOURCE__INIT, bad;
        db.name = (char *) "db";
        db.address = (char *) "10.0.0.5";
        db.protocol = ZTNA__V1__PROTOCOL__PROTOCOL_TCP;
        db.n_ports = 1;
        db.ports = pgs;
        db.remote_network = (char *) "lab";
        db.n_groups = 1;
        db.groups = dba;
        bad = db;
        bad.address = (char *) "10.0.0.5/32"; /* not canonical */
        Ztna__V1__Resource *dbs[] = { &db }, *bads[] = { &bad };
        Ztna__V1__TunnelerGroups g = ZTNA__V1__TUNNELER_GROUPS__INIT;
        g.n_groups = 1;
        g.groups = dba;
        Ztna__V1__PolicySnapshot__MembershipsEntry alice =
                ZTNA__V1__POLICY_SNAPSHOT__MEMBERSHIPS_ENTRY__INIT;
        alice.key = (char *) "spiffe://" FIXTURE_TRUST_DOMAIN "/tunneler/alice";
        alice.value = &g;
        Ztna__V1__PolicySnapshot__MembershipsEntry *members[] = { &alice };
        Ztna__V1__PolicyDelta__UpsertMembershipsEntry bob =
                ZTNA__V1__POLICY_DELTA__UPSERT_MEMBERSHIPS_ENTRY__INIT;
        bob.key = (char *) "spiffe://" FIXTURE_TRUST_DOMAIN "/tunneler/bob";
        bob.value = &g;
        Ztna__V1__PolicyDelta__UpsertMembershipsEntry *new_members[] = { &bob };
        Ztna__V1__PolicySnapshot snap = ZTNA__V1__POLICY_SNAPSHOT__INIT, bad_snap = snap;
        snap.revision = 5;
        snap.n_resources = 1;
        snap.resources = dbs;
        snap.n_memberships = 1;
        snap.memberships = members;
        bad_snap.revision = 5;
        bad_snap.n_resources = 1;
        bad_snap.resources = bads;
        Ztna__V1__PolicyDelta d6 = ZTNA__V1__POLICY_DELTA__INIT, d8 = ZTNA__V1__POLICY_DELTA__INIT;
        d6.revision = 6;
        d6.n_upsert_memberships = 1;
        d6.upsert_memberships = new_members;
        d8.revision = 8;

        Ztna__V1__ControllerMessage m_config = ZTNA__V1__CONTROLLER_MESSAGE__INIT, m_snap = m_config,
                                    m_bad = m_config, m_d6 = m_config, m_d8 = m_config;
        m_config.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_CONFIG;
        m_config.config = &config;
        m_snap.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT;
        m_snap.policy_snapshot = &snap;
        m_bad.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT;
        m_bad.policy_snapshot = &bad_snap;
        m_d6.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_DELTA;
        m_d6.policy_delta = &d6;
        m_d8.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_DELTA;
        m_d8.policy_delta = &d8;

        AgentControlCallbacks callbacks = recorder_callbacks;
        callbacks.on_policy_snapshot = on_policy_snapshot;
        callbacks.on_policy_delta = on_policy_delta;

        const struct {
                const char *name;
                const Ztna__V1__ControllerMessage *script[4];
                int error;
                const char *reason;
                size_t n_snapshot, n_delta;
                uint64_t revision;
        } table[] = {
                { "gap", { &m_config, &m_snap, &m_d6, &m_d8 }, -ESTALE,
                  "sent policy delta 8, which does not follow the revision held", 1, 2, 6 },
                { "delta before a snapshot", { &m_config, &m_d6 }, -ESTALE,
                  "sent policy delta 6, which does not follow", 0, 1, 0 },
                { "invalid snapshot", { &m_config, &m_bad, &m_d6 }, -EBADMSG,
                  "sent an invalid policy snapshot (revision 5)", 1, 0, 0 },
        };

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                Recorder r = { .event = f.env.event };

                CASE("%s", table[k].name);
                ASSERT_OK(agent_policy_new(&r.policy));
                f.script = table[k].script;
                f.n_script = 0;
                while (f.n_script < ELEMENTSOF(table[k].script) && table[k].script[f.n_script])
                        f.n_script++;
                ASSERT_OK(agent_control_new(f.env.event, &i,
                                            &(AgentControlSettings) { .backoff_base = 5 * USEC_PER_SEC,
                                                                      .backoff_cap = 5 * USEC_PER_SEC },
                                            &callbacks, &r, &r.control));
                ASSERT_OK(agent_control_start(r.control));
                run_until_state(&r, AGENT_CONTROL_BACKING_OFF, 1, 10 * USEC_PER_SEC);
                ASSERT_EQ(r.events[r.n_events - 1].error, table[k].error);
                ASSERT_STRSTR(r.reasons[r.n_events - 1], table[k].reason);
                ASSERT_EQ(r.n_snapshot, table[k].n_snapshot);
                ASSERT_EQ(r.n_delta, table[k].n_delta);
                ASSERT_UEQ(agent_policy_revision(r.policy), table[k].revision);
                if (table[k].revision == 6) {
                        /* The pushes arrived whole: the snapshot's resource, the delta's member. */
                        ASSERT_EQ(agent_policy_decide(r.policy, bob.key, "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP,
                                                      NULL),
                                  1);
                        ASSERT_EQ(agent_policy_decide(r.policy, bob.key, "10.0.0.5", 22, RESOURCE_PROTOCOL_TCP,
                                                      NULL),
                                  0);
                }
                recorder_done(&r);
        }

        /* Freed from inside the callback, with a refusal: nothing more happens. */
        {
                const Ztna__V1__ControllerMessage *script[] = { &m_config, &m_bad, &m_d6 };
                Recorder r = { .event = f.env.event, .free_in = "snapshot" };

                CASE("freed in the snapshot callback");
                ASSERT_OK(agent_policy_new(&r.policy));
                f.script = script;
                f.n_script = ELEMENTSOF(script);
                ASSERT_OK(agent_control_new(f.env.event, &i, NULL, &callbacks, &r, &r.control));
                ASSERT_OK(agent_control_start(r.control));
                ASSERT_TRUE(fixture_run_until(f.env.event, &r.freed, 10 * USEC_PER_SEC));
                run_for(f.env.event, 300 * USEC_PER_MSEC);
                ASSERT_EQ(count_state(&r, AGENT_CONTROL_BACKING_OFF), 0);
                ASSERT_EQ(r.n_snapshot, 1);
                ASSERT_EQ(r.n_delta, 0);
                recorder_done(&r);
        }

        /* No policy callbacks: pushes are ignored, the stream stays up. */
        {
                const Ztna__V1__ControllerMessage *script[] = { &m_config, &m_bad, &m_d8 };
                Recorder r = { .event = f.env.event };

                CASE("no policy callbacks");
                f.script = script;
                f.n_script = ELEMENTSOF(script);
                ASSERT_OK(agent_control_new(f.env.event, &i, NULL, &recorder_callbacks, &r, &r.control));
                ASSERT_OK(agent_control_start(r.control));
                run_until_state(&r, AGENT_CONTROL_CONNECTED, 1, 10 * USEC_PER_SEC);
                run_for(f.env.event, 300 * USEC_PER_MSEC);
                ASSERT_EQ(agent_control_get_state(r.control), AGENT_CONTROL_CONNECTED);
                ASSERT_EQ(count_state(&r, AGENT_CONTROL_BACKING_OFF), 0);
                ASSERT_EQ(r.n_config, 1);
                recorder_done(&r);
        }
        fake_done(&f);
}
