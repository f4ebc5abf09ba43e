/* SPDX-License-Identifier: Apache-2.0 */

#include "controller-policy.h"
#include "strv.h"
#include "tests.h"

static StoreResource resource(const char *name, const char *address, const char *ports, const char *network,
                              char **groups) {
        return (StoreResource) {
                .name = (char *) name,
                .address = (char *) address,
                .protocol = (char *) "tcp",
                .ports = (char *) ports,
                .remote_network = (char *) network,
                .groups = groups,
        };
}

static char *eng[] = { (char *) "eng", NULL };
static char *ops[] = { (char *) "ops", NULL };
static char *eng_ops[] = { (char *) "eng", (char *) "ops", NULL };

/* Three resources in two networks, two tunnelers (one revoked), one connector per network. */
static StoreResource r_web, r_db, r_wiki;
static StoreResource *resources[3];
static StoreAgent t_alice, t_bob;
static StoreAgent *tunnelers[2];
static const PolicyConnector connectors[] = {
        { "spiffe://td/connector/lab-1", "lab", "10.0.0.2:8447" },
        { "spiffe://td/connector/office-1", "office", "10.1.0.2:8447" },
};

static PolicyInputs inputs(void) {
        r_web = resource("web", "10.0.0.0/24", "80,443", "lab", eng);
        r_db = resource("db", "db.lab.example", "5432", "lab", eng_ops);
        r_wiki = resource("wiki", "wiki.office.example", "any", "office", ops);
        resources[0] = &r_web;
        resources[1] = &r_db;
        resources[2] = &r_wiki;
        t_alice = (StoreAgent) { .spiffe_id = (char *) "spiffe://td/tunneler/alice", .groups = eng };
        t_bob = (StoreAgent) { .spiffe_id = (char *) "spiffe://td/tunneler/bob", .groups = ops,
                               .revoked_at = 1 };
        tunnelers[0] = &t_alice;
        tunnelers[1] = &t_bob;
        return (PolicyInputs) {
                .resources = resources, .n_resources = 3,
                .tunnelers = tunnelers, .n_tunnelers = 2,
                .connectors = connectors, .n_connectors = 2,
                .revision = 7,
        };
}

static Ztna__V1__Resource *find(Ztna__V1__Resource **a, size_t n, const char *name) {
        for (size_t k = 0; k < n; k++)
                if (streq(a[k]->name, name))
                        return a[k];
        return NULL;
}

TEST(connector_sees_its_network_and_live_memberships) {
        _cleanup_(policy_view_freep) PolicyView *v = NULL;
        _cleanup_(policy_message_freep) Ztna__V1__ControllerMessage *m = NULL;
        PolicyInputs in = inputs();
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__Resource *db;

        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, "lab", NULL, &v));
        ASSERT_OK(policy_view_snapshot(v, 7, &m));
        ASSERT_EQ(m->body_case, ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT);
        s = m->policy_snapshot;
        ASSERT_EQ(s->revision, 7);
        ASSERT_EQ(s->n_resources, 2);
        ASSERT_NULL(find(s->resources, s->n_resources, "wiki"));
        db = find(s->resources, s->n_resources, "db");
        ASSERT_NOT_NULL(db);
        ASSERT_EQ(db->n_groups, 2);             /* a connector sees every group granted */
        ASSERT_EQ(db->n_ports, 1);
        ASSERT_EQ(db->ports[0]->first, 5432);
        ASSERT_EQ(db->protocol, ZTNA__V1__PROTOCOL__PROTOCOL_TCP);
        ASSERT_EQ(s->n_memberships, 1);         /* bob is revoked */
        ASSERT_STREQ(s->memberships[0]->key, "spiffe://td/tunneler/alice");
        ASSERT_EQ(s->n_connectors, 0);
}

TEST(connector_without_network_sees_nothing) {
        _cleanup_(policy_view_freep) PolicyView *v = NULL;
        _cleanup_(policy_message_freep) Ztna__V1__ControllerMessage *m = NULL;
        PolicyInputs in = inputs();

        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, NULL, NULL, &v));
        ASSERT_OK(policy_view_snapshot(v, 1, &m));
        ASSERT_EQ(m->policy_snapshot->n_resources, 0);
        ASSERT_EQ(m->policy_snapshot->n_memberships, 0);
        ASSERT_ERROR(policy_view_build(&in, SPIFFE_ROLE_CONTROLLER, NULL, NULL, &v), EINVAL);
}

TEST(tunneler_sees_its_grants_and_their_connectors) {
        _cleanup_(policy_view_freep) PolicyView *v = NULL;
        _cleanup_(policy_message_freep) Ztna__V1__ControllerMessage *m = NULL;
        PolicyInputs in = inputs();
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__Resource *db;

        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_TUNNELER, NULL, eng, &v));
        ASSERT_OK(policy_view_snapshot(v, 3, &m));
        s = m->policy_snapshot;
        ASSERT_EQ(s->n_resources, 2);           /* web, db; not wiki (ops only) */
        db = find(s->resources, s->n_resources, "db");
        ASSERT_NOT_NULL(db);
        ASSERT_EQ(db->n_groups, 1);             /* only its own group, not who else has it */
        ASSERT_STREQ(db->groups[0], "eng");
        ASSERT_EQ(s->n_memberships, 0);
        ASSERT_EQ(s->n_connectors, 1);          /* only the lab's */
        ASSERT_STREQ(s->connectors[0]->id, "spiffe://td/connector/lab-1");
        ASSERT_STREQ(s->connectors[0]->remote_network, "lab");
        ASSERT_STREQ(s->connectors[0]->address, "10.0.0.2:8447");
}

TEST(delta_carries_only_changes) {
        _cleanup_(policy_view_freep) PolicyView *a = NULL, *b = NULL, *c = NULL;
        _cleanup_(policy_message_freep) Ztna__V1__ControllerMessage *none = NULL, *m = NULL, *snap = NULL;
        PolicyInputs in = inputs();
        Ztna__V1__PolicyDelta *d;

        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, "lab", NULL, &a));
        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, "lab", NULL, &b));
        ASSERT_OK(policy_view_delta(a, b, 8, &none));
        ASSERT_NULL(none);

        /* web's ports change, db goes, bob is back with ops. */
        r_web.ports = (char *) "443";
        in.resources = (StoreResource *[]) { &r_web, &r_wiki };
        in.n_resources = 2;
        t_bob.revoked_at = 0;
        policy_view_free(b);
        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, "lab", NULL, &b));
        ASSERT_OK(policy_view_delta(a, b, 8, &m));
        ASSERT_EQ(m->body_case, ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_DELTA);
        d = m->policy_delta;
        ASSERT_EQ(d->revision, 8);
        ASSERT_EQ(d->n_upsert_resources, 1);
        ASSERT_STREQ(d->upsert_resources[0]->name, "web");
        ASSERT_EQ(d->upsert_resources[0]->ports[0]->first, 443);
        ASSERT_EQ(d->n_removed_resources, 1);
        ASSERT_STREQ(d->removed_resources[0], "db");
        ASSERT_EQ(d->n_upsert_memberships, 1);
        ASSERT_STREQ(d->upsert_memberships[0]->key, "spiffe://td/tunneler/bob");
        ASSERT_EQ(d->n_removed_tunnelers, 0);
        ASSERT_EQ(d->n_connectors, 0);

        /* A tunneler whose network lost its last connector gets a snapshot: a delta cannot say "none". */
        in = inputs();
        b = policy_view_free(b);
        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_TUNNELER, NULL, eng, &b));
        in.n_connectors = 0;
        ASSERT_OK(policy_view_build(&in, SPIFFE_ROLE_TUNNELER, NULL, eng, &c));
        ASSERT_OK(policy_view_delta(b, c, 9, &snap));
        ASSERT_EQ(snap->body_case, ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT);
        ASSERT_EQ(snap->policy_snapshot->n_connectors, 0);
        ASSERT_EQ(snap->policy_snapshot->n_resources, 2);
}

TEST(stored_values_that_do_not_parse) {
        _cleanup_(policy_view_freep) PolicyView *v = NULL;
        PolicyInputs in = inputs();

        r_web.ports = (char *) "0";
        ASSERT_ERROR(policy_view_build(&in, SPIFFE_ROLE_CONNECTOR, "lab", NULL, &v), EBADMSG);
        ASSERT_NULL(v);
}
