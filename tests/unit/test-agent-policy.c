/* SPDX-License-Identifier: Apache-2.0 */

/* The policy an agent holds: snapshots and deltas as the controller pushes them (built here from the
 * protobuf-c structs), what is refused (always as a whole, the state left as it was), and the answers the
 * connector (decide) and the tunneler (find_resource, connectors) rely on. */

#include <stdarg.h>

#include "agent-policy.h"
#include "strv.h"
#include "tests.h"

#define TUN(x) "spiffe://lab.example/tunneler/" x
#define CON(x) "spiffe://lab.example/connector/" x

/* ---- message building: every allocation lives in an arena freed at the end of the case ---------------- */

static void **arena;
static size_t n_arena, arena_size;

static void *gc(void *p) {
        ASSERT_NOT_NULL(p);
        if (n_arena == arena_size) {
                arena_size = arena_size ? arena_size * 2 : 1024;
                arena = realloc(arena, arena_size * sizeof(void *));
                ASSERT_NOT_NULL(arena);
        }
        arena[n_arena++] = p;
        return p;
}

static void arena_free(void) {
        for (size_t k = 0; k < n_arena; k++)
                free(arena[k]);
        arena = mfree(arena);
        n_arena = arena_size = 0;
}

static char *gc_printf(const char *format, ...) _printf_(1, 2);
static char *gc_printf(const char *format, ...) {
        va_list ap;
        char *s;

        va_start(ap, format);
        ASSERT_TRUE(vasprintf(&s, format, ap) >= 0);
        va_end(ap);
        return gc(s);
}

/* "a,b" → { "a", "b" } (n = 2); "" → none. */
static char **split(const char *s, size_t *ret_n) {
        char **l;
        size_t n = 0;

        l = gc(calloc(strlen(s) + 1, sizeof(char *)));
        for (const char *p = s; *p;) {
                size_t len = strcspn(p, ",");

                l[n++] = gc(strndup(p, len));
                p += len;
                if (*p == ',')
                        p++;
        }
        *ret_n = n;
        return n > 0 ? l : NULL;
}

/* Wire ports exactly as written ("22,80-90", "" for none): canonical or not, on purpose. */
static void set_ports(Ztna__V1__Resource *r, const char *ports) {
        size_t n;
        char **items = split(ports, &n);

        r->n_ports = n;
        r->ports = n > 0 ? gc(calloc(n, sizeof(Ztna__V1__PortRange *))) : NULL;
        for (size_t k = 0; k < n; k++) {
                Ztna__V1__PortRange *pr = gc(malloc(sizeof(Ztna__V1__PortRange)));
                char *dash = strchr(items[k], '-');

                *pr = (Ztna__V1__PortRange) ZTNA__V1__PORT_RANGE__INIT;
                pr->first = (uint32_t) strtoul(items[k], NULL, 10);
                pr->last = dash ? (uint32_t) strtoul(dash + 1, NULL, 10) : pr->first;
                r->ports[k] = pr;
        }
}

static Ztna__V1__Resource *res(const char *name, const char *address, Ztna__V1__Protocol protocol,
                               const char *ports, const char *network, const char *alias,
                               const char *groups) {
        Ztna__V1__Resource *r = gc(malloc(sizeof(Ztna__V1__Resource)));

        *r = (Ztna__V1__Resource) ZTNA__V1__RESOURCE__INIT;
        r->name = (char *) name;
        r->address = (char *) address;
        r->protocol = protocol;
        set_ports(r, ports);
        r->remote_network = (char *) network;
        r->alias = (char *) alias;
        r->groups = split(groups, &r->n_groups);
        return r;
}

#define ANY ZTNA__V1__PROTOCOL__PROTOCOL_ANY
#define TCP ZTNA__V1__PROTOCOL__PROTOCOL_TCP
#define UDP ZTNA__V1__PROTOCOL__PROTOCOL_UDP

static size_t count(const void *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

/* A copy of a NULL-terminated array: the builders' arguments are compound literals, which die with the
 * block that made them. */
static void *copy_list(const void *const *l, size_t *ret_n) {
        size_t n = count(l);
        void **c;

        *ret_n = n;
        if (n == 0)
                return NULL;
        c = gc(calloc(n + 1, sizeof(void *)));
        memcpy(c, l, n * sizeof(void *));
        return c;
}

static Ztna__V1__TunnelerGroups *tgroups(const char *groups) {
        Ztna__V1__TunnelerGroups *g = gc(malloc(sizeof(Ztna__V1__TunnelerGroups)));

        *g = (Ztna__V1__TunnelerGroups) ZTNA__V1__TUNNELER_GROUPS__INIT;
        g->groups = split(groups, &g->n_groups);
        return g;
}

/* connectors: { id, address, network, id, … NULL }. */
static Ztna__V1__ConnectorEndpoint **endpoints(const char *const *c, size_t *ret_n) {
        size_t n = count((const void *const *) c) / 3;
        Ztna__V1__ConnectorEndpoint **l = NULL;

        if (n > 0)
                l = gc(calloc(n, sizeof(Ztna__V1__ConnectorEndpoint *)));

        for (size_t k = 0; k < n; k++) {
                l[k] = gc(malloc(sizeof(Ztna__V1__ConnectorEndpoint)));
                *l[k] = (Ztna__V1__ConnectorEndpoint) ZTNA__V1__CONNECTOR_ENDPOINT__INIT;
                l[k]->id = (char *) c[3 * k];
                l[k]->address = (char *) c[3 * k + 1];
                l[k]->remote_network = (char *) c[3 * k + 2];
        }
        *ret_n = n;
        return l;
}

/* resources: NULL-terminated; memberships: { spiffe id, "g1,g2", … NULL }; connectors as above. */
static Ztna__V1__PolicySnapshot *snapshot(uint64_t revision, Ztna__V1__Resource *const *resources,
                                          const char *const *memberships, const char *const *connectors) {
        Ztna__V1__PolicySnapshot *s = gc(malloc(sizeof(Ztna__V1__PolicySnapshot)));
        size_t n;

        *s = (Ztna__V1__PolicySnapshot) ZTNA__V1__POLICY_SNAPSHOT__INIT;
        s->revision = revision;
        s->resources = copy_list((const void *const *) resources, &s->n_resources);
        n = count((const void *const *) memberships) / 2;
        s->n_memberships = n;
        s->memberships = n > 0 ? gc(calloc(n, sizeof(Ztna__V1__PolicySnapshot__MembershipsEntry *))) : NULL;
        for (size_t k = 0; k < n; k++) {
                Ztna__V1__PolicySnapshot__MembershipsEntry *e = gc(malloc(sizeof(*e)));

                *e = (Ztna__V1__PolicySnapshot__MembershipsEntry)
                        ZTNA__V1__POLICY_SNAPSHOT__MEMBERSHIPS_ENTRY__INIT;
                e->key = (char *) memberships[2 * k];
                e->value = tgroups(memberships[2 * k + 1]);
                s->memberships[k] = e;
        }
        s->connectors = endpoints(connectors, &s->n_connectors);
        return s;
}

static Ztna__V1__PolicyDelta *delta(uint64_t revision, Ztna__V1__Resource *const *upserts,
                                    const char *const *removed, const char *const *memberships,
                                    const char *const *removed_tunnelers, const char *const *connectors) {
        Ztna__V1__PolicyDelta *d = gc(malloc(sizeof(Ztna__V1__PolicyDelta)));
        size_t n;

        *d = (Ztna__V1__PolicyDelta) ZTNA__V1__POLICY_DELTA__INIT;
        d->revision = revision;
        d->upsert_resources = copy_list((const void *const *) upserts, &d->n_upsert_resources);
        d->removed_resources = copy_list((const void *const *) removed, &d->n_removed_resources);
        n = count((const void *const *) memberships) / 2;
        d->n_upsert_memberships = n;
        if (n > 0)
                d->upsert_memberships = gc(calloc(n, sizeof(*d->upsert_memberships)));
        for (size_t k = 0; k < n; k++) {
                Ztna__V1__PolicyDelta__UpsertMembershipsEntry *e = gc(malloc(sizeof(*e)));

                *e = (Ztna__V1__PolicyDelta__UpsertMembershipsEntry)
                        ZTNA__V1__POLICY_DELTA__UPSERT_MEMBERSHIPS_ENTRY__INIT;
                e->key = (char *) memberships[2 * k];
                e->value = tgroups(memberships[2 * k + 1]);
                d->upsert_memberships[k] = e;
        }
        d->removed_tunnelers = copy_list((const void *const *) removed_tunnelers, &d->n_removed_tunnelers);
        d->connectors = endpoints(connectors, &d->n_connectors);
        return d;
}

#define RESOURCES(...) ((Ztna__V1__Resource *[]) { __VA_ARGS__, NULL })
#define STRV(...) ((const char *[]) { __VA_ARGS__, NULL })

/* A resource "new" on TCP in network lab, for the cases that break one rule. */
static Ztna__V1__Resource *new_res(const char *address, const char *ports, const char *network,
                                   const char *alias, const char *groups) {
        return res("new", address, TCP, ports, network, alias, groups);
}

static int apply_snapshot(AgentPolicy *p, const Ztna__V1__PolicySnapshot *s) {
        return agent_policy_apply_snapshot(p, s, NULL);
}

static int apply_delta(AgentPolicy *p, const Ztna__V1__PolicyDelta *d) {
        return agent_policy_apply_delta(p, d, NULL);
}

/* ---- checking answers --------------------------------------------------------------------------------- */

/* decide() must return expect and name resource (NULL: none matched the host). */
static void assert_decision(const AgentPolicy *p, const char *tunneler, const char *host, uint16_t port,
                            ResourceProtocol protocol, int expect, const char *resource) {
        const PolicyResource *r = (const PolicyResource *) 0x1;

        CASE("%s → %s:%u/%s", strna(tunneler), host, port, resource_protocol_to_string(protocol));
        ASSERT_EQ(agent_policy_decide(p, tunneler, host, port, protocol, &r), expect);
        if (resource)
                ASSERT_STREQ(ASSERT_NOT_NULL(r)->name, resource);
        else
                ASSERT_NULL(r);
        /* ret_resource is optional. */
        ASSERT_EQ(agent_policy_decide(p, tunneler, host, port, protocol, NULL), expect);
}

static void assert_found(const AgentPolicy *p, const char *host, uint16_t port, ResourceProtocol protocol,
                         const char *resource) {
        const PolicyResource *r;

        CASE("find %s:%u/%s", host, port, resource_protocol_to_string(protocol));
        r = agent_policy_find_resource(p, host, port, protocol);
        if (resource)
                ASSERT_STREQ(ASSERT_NOT_NULL(r)->name, resource);
        else
                ASSERT_NULL(r);
}

/* The connectors serving network, as "id@address" joined by spaces. */
static const char *connectors_string(const AgentPolicy *p, const char *network, size_t max) {
        static char buf[4096];
        AgentPolicyConnector c[16];
        size_t n, o = 0;

        ASSERT_LE(max, ELEMENTSOF(c));
        n = agent_policy_connectors(p, network, c, max);
        ASSERT_LE(n, max);
        buf[0] = 0;
        for (size_t k = 0; k < n; k++) {
                ASSERT_STREQ(c[k].remote_network, network);
                o += snprintf(buf + o, sizeof(buf) - o, "%s%s@%s", k > 0 ? " " : "", c[k].spiffe_id,
                              c[k].address);
        }
        return buf;
}

/* ---- a connector's policy ----------------------------------------------------------------------------- */

static Ztna__V1__PolicySnapshot *lab_snapshot(uint64_t revision) {
        return snapshot(revision,
                        RESOURCES(res("db", "10.0.0.5", TCP, "5432", "lab", "", "dba"),
                                  res("lan", "10.0.0.0/24", ANY, "", "lab", "", "staff"),
                                  res("web", "*.lab.example", TCP, "80,443", "lab", "", "staff,guests"),
                                  res("nas", "nas.lab.example", ANY, "", "lab", "", "")),
                        STRV(TUN("alice"), "staff,dba", TUN("bob"), "staff", TUN("eve"), ""),
                        NULL);
}

TEST(new_policy_is_empty) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_FALSE(agent_policy_has_snapshot(p));
        ASSERT_UEQ(agent_policy_revision(p), 0);
        ASSERT_EQ(agent_policy_n_resources(p), 0);
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 0, NULL);
        assert_found(p, "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, NULL);
        ASSERT_NULL(agent_policy_resource_network(p, "db"));
        ASSERT_STREQ(connectors_string(p, "lab", 4), "");
        ASSERT_NULL(agent_policy_free(NULL));
}

TEST(snapshot_decisions) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        const char *reason = NULL;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_OK(agent_policy_apply_snapshot(p, lab_snapshot(7), &reason));
        ASSERT_NULL(reason);
        ASSERT_TRUE(agent_policy_has_snapshot(p));
        ASSERT_UEQ(agent_policy_revision(p), 7);
        ASSERT_EQ(agent_policy_n_resources(p), 4);
        ASSERT_STREQ(agent_policy_resource_network(p, "db"), "lab");
        ASSERT_NULL(agent_policy_resource_network(p, "nope"));
        ASSERT_NULL(agent_policy_resource_network(p, NULL));

        /* Groups granted the most specific resource decide. */
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 1, "db");
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_UDP, 0, "db");
        assert_decision(p, TUN("alice"), "10.0.0.5", 22, RESOURCE_PROTOCOL_TCP, 0, "db");
        /* bob is staff, which the /24 grants, but the exact address shadows it. */
        assert_decision(p, TUN("bob"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 0, "db");
        assert_decision(p, TUN("bob"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 1, "lan");
        assert_decision(p, TUN("bob"), "10.0.0.9", 53, RESOURCE_PROTOCOL_UDP, 1, "lan");
        assert_decision(p, TUN("bob"), "www.lab.example", 443, RESOURCE_PROTOCOL_TCP, 1, "web");
        assert_decision(p, TUN("bob"), "WWW.Lab.Example", 80, RESOURCE_PROTOCOL_TCP, 1, "web");
        assert_decision(p, TUN("bob"), "nas.lab.example", 443, RESOURCE_PROTOCOL_TCP, 0, "nas");
        /* Known without groups, unknown, anonymous: denied. */
        assert_decision(p, TUN("eve"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, "lan");
        assert_decision(p, TUN("mallory"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, "lan");
        assert_decision(p, NULL, "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, "lan");
        /* No resource for the host. */
        assert_decision(p, TUN("alice"), "192.168.1.1", 22, RESOURCE_PROTOCOL_TCP, 0, NULL);
        assert_decision(p, TUN("alice"), "lab.example", 80, RESOURCE_PROTOCOL_TCP, 0, NULL);
        CASE("invalid host");
        ASSERT_ERROR(agent_policy_decide(p, TUN("alice"), "bad host", 22, RESOURCE_PROTOCOL_TCP, NULL),
                     EINVAL);
        arena_free();
}

TEST(snapshot_replaces_everything) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        Ztna__V1__PolicySnapshot *s;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_OK(apply_snapshot(p, lab_snapshot(7)));
        /* A snapshot may also go back in revision (another controller, a restored store): it is the
         * truth. */
        s = snapshot(3, RESOURCES(res("ssh", "10.0.0.7", TCP, "22", "lab", "", "ops")),
                     STRV(TUN("bob"), "ops"), STRV(CON("c1"), "192.0.2.1:8443", "lab"));
        ASSERT_OK(apply_snapshot(p, s));
        ASSERT_UEQ(agent_policy_revision(p), 3);
        ASSERT_EQ(agent_policy_n_resources(p), 1);
        ASSERT_NULL(agent_policy_resource_network(p, "db"));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 0, NULL);
        assert_decision(p, TUN("alice"), "10.0.0.7", 22, RESOURCE_PROTOCOL_TCP, 0, "ssh");
        assert_decision(p, TUN("bob"), "10.0.0.7", 22, RESOURCE_PROTOCOL_TCP, 1, "ssh");
        ASSERT_STREQ(connectors_string(p, "lab", 4), CON("c1") "@192.0.2.1:8443");

        /* And an empty one empties. */
        ASSERT_OK(agent_policy_apply_snapshot(p, snapshot(4, NULL, NULL, NULL), NULL));
        ASSERT_EQ(agent_policy_n_resources(p), 0);
        ASSERT_TRUE(agent_policy_has_snapshot(p));
        assert_decision(p, TUN("bob"), "10.0.0.7", 22, RESOURCE_PROTOCOL_TCP, 0, NULL);
        ASSERT_STREQ(connectors_string(p, "lab", 4), "");
        arena_free();
}

TEST(delta_updates) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        Ztna__V1__PolicyDelta *d;
        const char *reason = NULL;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_OK(apply_snapshot(p, lab_snapshot(1)));

        /* Replace db (new ports and network), add ssh, drop nas, ignore a removal of what is not held; bob
         * gains ops, eve goes. */
        d = delta(2,
                  RESOURCES(res("db", "10.0.0.5", TCP, "5432-5433", "lab2", "", "dba"),
                            res("ssh", "10.0.0.7", TCP, "22", "lab", "", "ops")),
                  STRV("nas", "ghost"), STRV(TUN("bob"), "staff,ops"), STRV(TUN("eve")), NULL);
        ASSERT_OK(agent_policy_apply_delta(p, d, &reason));
        ASSERT_NULL(reason);
        ASSERT_UEQ(agent_policy_revision(p), 2);
        ASSERT_EQ(agent_policy_n_resources(p), 4);
        ASSERT_STREQ(agent_policy_resource_network(p, "db"), "lab2");
        ASSERT_STREQ(agent_policy_resource_network(p, "lan"), "lab");
        ASSERT_NULL(agent_policy_resource_network(p, "nas"));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5433, RESOURCE_PROTOCOL_TCP, 1, "db");
        assert_decision(p, TUN("bob"), "10.0.0.7", 22, RESOURCE_PROTOCOL_TCP, 1, "ssh");
        assert_decision(p, TUN("alice"), "10.0.0.7", 22, RESOURCE_PROTOCOL_TCP, 0, "ssh");
        /* Without the exact name, the wildcard covers nas now. */
        assert_decision(p, TUN("bob"), "nas.lab.example", 443, RESOURCE_PROTOCOL_TCP, 1, "web");

        /* A membership change alone flips a decision, and back. */
        ASSERT_OK(apply_delta(p, delta(3, NULL, NULL, STRV(TUN("alice"), "staff"), NULL, NULL)));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 0, "db");
        assert_decision(p, TUN("alice"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 1, "lan");
        ASSERT_OK(apply_delta(p, delta(4, NULL, NULL, STRV(TUN("alice"), "dba"), NULL, NULL)));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 1, "db");
        assert_decision(p, TUN("alice"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, "lan");
        /* A tunneler that is removed has no groups any more. */
        ASSERT_OK(apply_delta(p, delta(5, NULL, NULL, NULL, STRV(TUN("alice")), NULL)));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 0, "db");
        /* A newcomer gets its groups. */
        ASSERT_OK(apply_delta(p, delta(6, NULL, NULL, STRV(TUN("carol"), "guests"), NULL, NULL)));
        assert_decision(p, TUN("carol"), "www.lab.example", 80, RESOURCE_PROTOCOL_TCP, 1, "web");
        /* A grant withdrawn by replacing the resource. */
        d = delta(7, RESOURCES(res("web", "*.lab.example", TCP, "80,443", "lab", "", "staff")), NULL, NULL,
                  NULL, NULL);
        ASSERT_OK(apply_delta(p, d));
        assert_decision(p, TUN("carol"), "www.lab.example", 80, RESOURCE_PROTOCOL_TCP, 0, "web");
        /* An empty delta only moves the revision. */
        ASSERT_OK(apply_delta(p, delta(8, NULL, NULL, NULL, NULL, NULL)));
        ASSERT_UEQ(agent_policy_revision(p), 8);
        ASSERT_EQ(agent_policy_n_resources(p), 4);
        /* Removing everything. */
        ASSERT_OK(apply_delta(p, delta(9, NULL, STRV("db", "lan", "ssh", "web"), NULL, NULL, NULL)));
        ASSERT_EQ(agent_policy_n_resources(p), 0);
        assert_decision(p, TUN("bob"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, NULL);
        arena_free();
}

/* The state a refused message must leave alone. */
static void assert_lab_state(const AgentPolicy *p, uint64_t revision) {
        ASSERT_TRUE(agent_policy_has_snapshot(p));
        ASSERT_UEQ(agent_policy_revision(p), revision);
        ASSERT_EQ(agent_policy_n_resources(p), 4);
        ASSERT_STREQ(agent_policy_resource_network(p, "db"), "lab");
        ASSERT_STREQ(agent_policy_resource_network(p, "nas"), "lab");
        ASSERT_NULL(agent_policy_resource_network(p, "new"));
        ASSERT_NULL(agent_policy_resource_network(p, "ok"));
        assert_decision(p, TUN("alice"), "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, 1, "db");
        assert_decision(p, TUN("bob"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 1, "lan");
        assert_decision(p, TUN("eve"), "10.0.0.9", 22, RESOURCE_PROTOCOL_TCP, 0, "lan");
        ASSERT_STREQ(connectors_string(p, "lab", 4), CON("c1") "@192.0.2.1:8443");
}

static Ztna__V1__PolicySnapshot *lab_snapshot_with_connector(uint64_t revision) {
        Ztna__V1__PolicySnapshot *s = lab_snapshot(revision);

        s->connectors = endpoints(STRV(CON("c1"), "192.0.2.1:8443", "lab"), &s->n_connectors);
        return s;
}

TEST(delta_revision_gaps) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        const uint64_t wrong[] = { 0, 4, 5, 7, 100, UINT64_MAX };
        const char *reason;

        ASSERT_OK(agent_policy_new(&p));

        /* Nothing to apply a delta to before the first snapshot. */
        reason = NULL;
        ASSERT_ERROR(agent_policy_apply_delta(p, delta(1, NULL, NULL, NULL, NULL, NULL), &reason), ESTALE);
        ASSERT_NOT_NULL(reason);
        ASSERT_FALSE(agent_policy_has_snapshot(p));
        ASSERT_UEQ(agent_policy_revision(p), 0);

        ASSERT_OK(agent_policy_apply_snapshot(p, lab_snapshot_with_connector(5), NULL));
        for (size_t k = 0; k < ELEMENTSOF(wrong); k++) {
                CASE("delta %" PRIu64 " on 5", wrong[k]);
                Ztna__V1__PolicyDelta *d;

                d = delta(wrong[k], RESOURCES(new_res("10.1.0.1", "22", "lab", "", "staff")), STRV("db"),
                          STRV(TUN("eve"), "staff"), NULL, STRV(CON("c2"), "192.0.2.2:8443", "lab"));

                reason = NULL;
                ASSERT_ERROR(agent_policy_apply_delta(p, d, &reason), ESTALE);
                ASSERT_STRSTR(reason, "does not follow");
                assert_lab_state(p, 5);
        }
        /* The right one still applies. */
        ASSERT_OK(apply_delta(p, delta(6, NULL, NULL, NULL, NULL, NULL)));
        assert_lab_state(p, 6);

        /* No wrap-around after the last revision. */
        ASSERT_OK(apply_snapshot(p, lab_snapshot_with_connector(UINT64_MAX)));
        ASSERT_ERROR(apply_delta(p, delta(0, NULL, NULL, NULL, NULL, NULL)), ESTALE);
        assert_lab_state(p, UINT64_MAX);
        arena_free();
}

/* ---- what is refused ---------------------------------------------------------------------------------- */

/* 65 groups, one more than AGENT_POLICY_GROUPS_MAX. */
static const char *many_groups(size_t n) {
        char *s = gc(calloc(n, 8));

        for (size_t k = 0; k < n; k++)
                sprintf(s + strlen(s), "%sg%zu", k > 0 ? "," : "", k);
        return s;
}

/* 65 single ports, one more than POLICY_PORT_RANGES_MAX. */
static const char *many_ports(size_t n) {
        char *s = gc(calloc(n, 8));

        for (size_t k = 0; k < n; k++)
                sprintf(s + strlen(s), "%s%zu", k > 0 ? "," : "", 1000 + 2 * k);
        return s;
}

typedef struct Invalid {
        const char *name;
        Ztna__V1__Resource *resource;           /* added to the lab resources, or */
        const char *member, *groups;            /* a membership added, or */
        const char *connector[3];               /* a connector added */
        const char *reason;                     /* a part of the reason given */
} Invalid;

static Ztna__V1__Resource *with_groups(Ztna__V1__Resource *r, char **groups, size_t n) {
        r->groups = groups;
        r->n_groups = n;
        return r;
}

static Ztna__V1__Resource *with_protocol(Ztna__V1__Resource *r, int protocol) {
        r->protocol = (Ztna__V1__Protocol) protocol;
        return r;
}

static size_t invalid_table(Invalid *t) {
        static char *empty_group[] = { (char *) "" }, *spaced_group[] = { (char *) "ops " };
        size_t n = 0;

#define R(what, r, why) t[n++] = (Invalid) { .name = (what), .resource = (r), .reason = (why) }
#define M(what, id, g, why) \
        t[n++] = (Invalid) { .name = (what), .member = (id), .groups = (g), .reason = (why) }
#define C(what, id, addr, net, why) \
        t[n++] = (Invalid) { .name = (what), .connector = { (id), (addr), (net) }, .reason = (why) }

        R("empty name", res("", "10.1.0.1", TCP, "22", "lab", "", "staff"), "resource name");
        R("name with a newline", res("a\nb", "10.1.0.1", TCP, "22", "lab", "", "staff"), "resource name");
        R("leading space", res(" new", "10.1.0.1", TCP, "22", "lab", "", "staff"), "resource name");
        R("duplicate name", res("db", "10.1.0.1", TCP, "22", "lab", "", "staff"), "duplicate resource");
        R("host bits set", new_res("10.1.0.1/24", "22", "lab", "", "staff"), "");
        R("not an address", new_res("no such thing", "22", "lab", "", "staff"), "");
        R("empty address", new_res("", "22", "lab", "", "staff"), "");
        R("upper-case name", new_res("DB.lab.example", "22", "lab", "", "staff"), "canonical");
        R("trailing dot", new_res("db.lab.example.", "22", "lab", "", "staff"), "canonical");
        R("/32", new_res("10.1.0.1/32", "22", "lab", "", "staff"), "canonical");
        R("long IPv6", new_res("fd00:0:0::5", "22", "lab", "", "staff"), "canonical");
        R("upper-case wildcard", new_res("*.LAB.example", "22", "lab", "", "staff"), "canonical");
        R("protocol 3", with_protocol(new_res("10.1.0.1", "22", "lab", "", "staff"), 3), "protocol");
        R("protocol -1", with_protocol(new_res("10.1.0.1", "22", "lab", "", "staff"), -1), "protocol");
        R("port 0", new_res("10.1.0.1", "0", "lab", "", "staff"), "port");
        R("port 65536", new_res("10.1.0.1", "65536", "lab", "", "staff"), "port");
        R("range to 65536", new_res("10.1.0.1", "80-65536", "lab", "", "staff"), "port");
        R("range backwards", new_res("10.1.0.1", "90-80", "lab", "", "staff"), "first above last");
        R("ports unsorted", new_res("10.1.0.1", "443,80", "lab", "", "staff"), "canonical");
        R("ports overlapping", new_res("10.1.0.1", "80-90,85-100", "lab", "", "staff"), "canonical");
        R("ports repeated", new_res("10.1.0.1", "80,80", "lab", "", "staff"), "canonical");
        R("ports adjacent", new_res("10.1.0.1", "80,81", "lab", "", "staff"), "canonical");
        R("every port as a range", new_res("10.1.0.1", "1-65535", "lab", "", "staff"), "canonical");
        R("65 port ranges", new_res("10.1.0.1", many_ports(POLICY_PORT_RANGES_MAX + 1), "lab", "", "staff"),
          "too many port ranges");
        R("no network", new_res("10.1.0.1", "22", "", "", "staff"), "remote network");
        R("network with a tab", new_res("10.1.0.1", "22", "l\tab", "", "staff"), "remote network");
        R("upper-case alias", new_res("10.1.0.1", "22", "lab", "New.corp.example", "staff"), "alias");
        R("wildcard alias", new_res("10.1.0.1", "22", "lab", "*.corp.example", "staff"), "alias");
        R("address alias", new_res("10.1.0.1", "22", "lab", "10.1.0.2", "staff"), "alias");
        R("alias with a dot", new_res("10.1.0.1", "22", "lab", "new.corp.example.", "staff"), "alias");
        R("empty group", with_groups(new_res("10.1.0.1", "22", "lab", "", ""), empty_group, 1), "group");
        R("spaced group", with_groups(new_res("10.1.0.1", "22", "lab", "", ""), spaced_group, 1), "group");
        R("duplicate group", new_res("10.1.0.1", "22", "lab", "", "staff,ops,staff"), "duplicate group");
        R("65 groups", new_res("10.1.0.1", "22", "lab", "", many_groups(AGENT_POLICY_GROUPS_MAX + 1)),
          "too many groups");

        M("connector as tunneler", CON("c9"), "staff", "tunneler SPIFFE ID");
        M("not a SPIFFE ID", "alice", "staff", "tunneler SPIFFE ID");
        M("empty SPIFFE ID", "", "staff", "tunneler SPIFFE ID");
        M("trust domain ID", "spiffe://lab.example", "staff", "tunneler SPIFFE ID");
        M("upper-case trust domain", "spiffe://LAB.example/tunneler/zoe", "staff", "tunneler SPIFFE ID");
        M("duplicate tunneler", TUN("alice"), "staff", "duplicate tunneler");
        M("duplicate member group", TUN("zoe"), "staff,staff", "duplicate group");
        M("65 member groups", TUN("zoe"), many_groups(AGENT_POLICY_GROUPS_MAX + 1), "too many groups");

        C("tunneler as connector", TUN("c9"), "192.0.2.9:8443", "lab", "connector SPIFFE ID");
        C("duplicate connector", CON("c1"), "192.0.2.9:8443", "lab", "duplicate connector");
        C("address without port", CON("c9"), "192.0.2.9", "lab", "connector address");
        C("port 0", CON("c9"), "192.0.2.9:0", "lab", "connector address");
        C("bare IPv6", CON("c9"), "2001:db8::9:8443", "lab", "connector address");
        C("address with a space", CON("c9"), "c9 .lab.example:8443", "lab", "connector address");
        C("empty address", CON("c9"), "", "lab", "connector address");
        C("no network", CON("c9"), "192.0.2.9:8443", "", "remote network");
#undef R
#undef M
#undef C
        return n;
}

/* The lab snapshot with one rule broken. */
static Ztna__V1__PolicySnapshot *lab_snapshot_breaking(const Invalid *t) {
        Ztna__V1__PolicySnapshot *s = lab_snapshot_with_connector(9);

        if (t->resource) {
                Ztna__V1__Resource **l = gc(calloc(s->n_resources + 1, sizeof(*l)));

                memcpy(l, s->resources, s->n_resources * sizeof(*l));
                l[s->n_resources++] = t->resource;
                s->resources = l;
        } else if (t->member) {
                Ztna__V1__PolicySnapshot__MembershipsEntry **l, *e;

                l = gc(calloc(s->n_memberships + 1, sizeof(*l)));
                e = gc(malloc(sizeof(*e)));
                *e = (Ztna__V1__PolicySnapshot__MembershipsEntry)
                        ZTNA__V1__POLICY_SNAPSHOT__MEMBERSHIPS_ENTRY__INIT;
                e->key = (char *) t->member;
                e->value = tgroups(t->groups);
                memcpy(l, s->memberships, s->n_memberships * sizeof(*l));
                l[s->n_memberships++] = e;
                s->memberships = l;
        } else
                s->connectors = endpoints(STRV(CON("c1"), "192.0.2.1:8443", "lab", t->connector[0],
                                               t->connector[1], t->connector[2]),
                                          &s->n_connectors);
        return s;
}

TEST(snapshot_validation) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        Invalid t[64];
        size_t n;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_OK(apply_snapshot(p, lab_snapshot_with_connector(5)));
        n = invalid_table(t);
        ASSERT_LE(n, ELEMENTSOF(t));

        for (size_t k = 0; k < n; k++) {
                const char *reason = NULL;

                CASE("snapshot with %s", t[k].name);
                ASSERT_ERROR(agent_policy_apply_snapshot(p, lab_snapshot_breaking(&t[k]), &reason), EBADMSG);
                ASSERT_NOT_NULL(reason);
                ASSERT_STRSTR(reason, t[k].reason);
                assert_lab_state(p, 5);
        }

        /* A NULL reason pointer is fine; so is a missing message. */
        ASSERT_ERROR(apply_snapshot(p, snapshot(9, RESOURCES(t[0].resource), NULL, NULL)), EBADMSG);
        ASSERT_ERROR(apply_snapshot(p, NULL), EBADMSG);
        assert_lab_state(p, 5);
        arena_free();
}

/* A delta with valid changes of every kind and one broken rule: none of it may be applied. */
static Ztna__V1__PolicyDelta *lab_delta_breaking(const Invalid *t) {
        Ztna__V1__Resource *ok = res("ok", "10.1.0.9", TCP, "22", "lab", "", "staff");

        if (t->resource)
                return delta(6, RESOURCES(ok, t->resource), STRV("nas"), STRV(TUN("eve"), "staff"),
                             STRV(TUN("bob")), STRV(CON("c2"), "192.0.2.2:8443", "lab"));
        if (t->member)
                return delta(6, RESOURCES(ok), STRV("nas"), STRV(TUN("eve"), "staff", t->member, t->groups),
                             STRV(TUN("bob")), STRV(CON("c2"), "192.0.2.2:8443", "lab"));
        return delta(6, RESOURCES(ok), STRV("nas"), STRV(TUN("eve"), "staff"), STRV(TUN("bob")),
                     STRV(CON("c1"), "192.0.2.1:8443", "lab", t->connector[0], t->connector[1],
                          t->connector[2]));
}

TEST(delta_validation) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        Invalid t[64];
        size_t n;

        ASSERT_OK(agent_policy_new(&p));
        ASSERT_OK(apply_snapshot(p, lab_snapshot_with_connector(5)));
        n = invalid_table(t);

        for (size_t k = 0; k < n; k++) {
                const char *reason = NULL;

                /* Upserting a held resource or tunneler is what deltas do. */
                if (streq(t[k].reason, "duplicate resource") || streq(t[k].reason, "duplicate tunneler"))
                        continue;
                CASE("delta with %s", t[k].name);
                ASSERT_ERROR(agent_policy_apply_delta(p, lab_delta_breaking(&t[k]), &reason), EBADMSG);
                ASSERT_NOT_NULL(reason);
                ASSERT_STRSTR(reason, t[k].reason);
                assert_lab_state(p, 5);
        }

        /* What only deltas can get wrong. */
        Ztna__V1__Resource *ok = res("ok", "10.1.0.9", TCP, "22", "lab", "", "");
        Ztna__V1__Resource *ok2 = res("ok", "10.1.0.8", TCP, "22", "lab", "", "");
        Ztna__V1__Resource *db = res("db", "10.1.0.9", TCP, "22", "lab", "", "");
        const struct {
                const char *name;
                Ztna__V1__PolicyDelta *delta;
                const char *reason;
        } table[] = {
                { "duplicate upsert", delta(6, RESOURCES(ok, ok2), NULL, NULL, NULL, NULL),
                  "duplicate resource" },
                { "upserted and removed", delta(6, RESOURCES(db), STRV("db"), NULL, NULL, NULL),
                  "both upserted and removed" },
                { "empty removed name", delta(6, NULL, STRV(""), NULL, NULL, NULL),
                  "removed resource name" },
                { "removed name with a newline", delta(6, NULL, STRV("d\nb"), NULL, NULL, NULL),
                  "removed resource name" },
                { "duplicate member upsert",
                  delta(6, NULL, NULL, STRV(TUN("zoe"), "staff", TUN("zoe"), "ops"), NULL, NULL),
                  "duplicate tunneler" },
                { "member upserted and removed",
                  delta(6, NULL, NULL, STRV(TUN("bob"), "ops"), STRV(TUN("bob")), NULL),
                  "both upserted and removed" },
                { "removed tunneler not a SPIFFE ID", delta(6, NULL, NULL, NULL, STRV("bob"), NULL),
                  "removed tunneler" },
                { "removed connector ID", delta(6, NULL, NULL, NULL, STRV(CON("c1")), NULL),
                  "removed tunneler" },
        };

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                const char *reason = NULL;

                CASE("%s", table[k].name);
                ASSERT_ERROR(agent_policy_apply_delta(p, table[k].delta, &reason), EBADMSG);
                ASSERT_STRSTR(reason, table[k].reason);
                assert_lab_state(p, 5);
        }
        ASSERT_ERROR(apply_delta(p, NULL), EBADMSG);
        assert_lab_state(p, 5);

        /* After all that, the next revision still applies. */
        ASSERT_OK(apply_delta(p, delta(6, NULL, STRV("nas"), NULL, NULL, NULL)));
        ASSERT_EQ(agent_policy_n_resources(p), 3);
        arena_free();
}

/* ---- bounds ------------------------------------------------------------------------------------------- */

/* r<first>… at 10.<x>.<y>.1, TCP 22, granted to staff. */
static Ztna__V1__Resource **n_resources(size_t n, size_t first) {
        Ztna__V1__Resource **l = gc(calloc(n + 1, sizeof(*l)));

        for (size_t k = first; k < first + n; k++)
                l[k - first] = res(gc_printf("r%zu", k), gc_printf("10.%zu.%zu.1", k / 256, k % 256), TCP,
                                   "22", "lab", "", "staff");
        return l;
}

/* Tunnelers t<first>… in staff. */
static const char **n_members(size_t n, size_t first) {
        const char **l = gc(calloc(2 * n + 1, sizeof(*l)));

        for (size_t k = 0; k < n; k++) {
                l[2 * k] = gc_printf(TUN("t%zu"), first + k);
                l[2 * k + 1] = "staff";
        }
        return l;
}

static const char **n_connectors(size_t n) {
        const char **l = gc(calloc(3 * n + 1, sizeof(*l)));

        for (size_t k = 0; k < n; k++) {
                l[3 * k] = gc_printf(CON("c%zu"), k);
                l[3 * k + 1] = "192.0.2.1:8443";
                l[3 * k + 2] = "lab";
        }
        return l;
}

TEST(bounds_resources) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        const size_t max = AGENT_POLICY_RESOURCES_MAX;
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__PolicyDelta *d;
        const char *reason = NULL;

        ASSERT_OK(agent_policy_new(&p));
        s = snapshot(1, n_resources(max + 1, 0), NULL, NULL);
        ASSERT_ERROR(agent_policy_apply_snapshot(p, s, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many resources");
        ASSERT_FALSE(agent_policy_has_snapshot(p));

        ASSERT_OK(apply_snapshot(p, snapshot(1, n_resources(max, 0), STRV(TUN("bob"), "staff"), NULL)));
        ASSERT_EQ(agent_policy_n_resources(p), max);
        assert_decision(p, TUN("bob"), "10.15.255.1", 22, RESOURCE_PROTOCOL_TCP, 1, "r4095");

        /* One more through a delta is refused; one more for one fewer is fine. */
        reason = NULL;
        d = delta(2, n_resources(1, max), NULL, NULL, NULL, NULL);
        ASSERT_ERROR(agent_policy_apply_delta(p, d, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many resources");
        ASSERT_UEQ(agent_policy_revision(p), 1);
        ASSERT_NULL(agent_policy_resource_network(p, "r4096"));
        ASSERT_OK(apply_delta(p, delta(2, n_resources(1, max), STRV("r0"), NULL, NULL, NULL)));
        ASSERT_EQ(agent_policy_n_resources(p), max);
        ASSERT_STREQ(agent_policy_resource_network(p, "r4096"), "lab");
        ASSERT_NULL(agent_policy_resource_network(p, "r0"));
        assert_decision(p, TUN("bob"), "10.16.0.1", 22, RESOURCE_PROTOCOL_TCP, 1, "r4096");

        /* Too many in one delta, even when they would all replace held ones. */
        ASSERT_ERROR(apply_delta(p, delta(3, n_resources(max + 1, 0), NULL, NULL, NULL, NULL)), EBADMSG);
        ASSERT_UEQ(agent_policy_revision(p), 2);
        arena_free();
}

TEST(bounds_tunnelers) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        const size_t max = AGENT_POLICY_TUNNELERS_MAX;
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__PolicyDelta *d;
        const char *reason = NULL;

        ASSERT_OK(agent_policy_new(&p));
        s = snapshot(1, n_resources(1, 0), n_members(max + 1, 0), NULL);
        ASSERT_ERROR(agent_policy_apply_snapshot(p, s, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many tunnelers");

        ASSERT_OK(apply_snapshot(p, snapshot(1, n_resources(1, 0), n_members(max, 0), NULL)));
        assert_decision(p, TUN("t65535"), "10.0.0.1", 22, RESOURCE_PROTOCOL_TCP, 1, "r0");
        assert_decision(p, TUN("t0"), "10.0.0.1", 22, RESOURCE_PROTOCOL_TCP, 1, "r0");

        reason = NULL;
        d = delta(2, NULL, NULL, n_members(1, max), NULL, NULL);
        ASSERT_ERROR(agent_policy_apply_delta(p, d, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many tunnelers");
        assert_decision(p, TUN("t65536"), "10.0.0.1", 22, RESOURCE_PROTOCOL_TCP, 0, "r0");
        ASSERT_OK(apply_delta(p, delta(2, NULL, NULL, n_members(1, max), STRV(TUN("t0")), NULL)));
        assert_decision(p, TUN("t65536"), "10.0.0.1", 22, RESOURCE_PROTOCOL_TCP, 1, "r0");
        assert_decision(p, TUN("t0"), "10.0.0.1", 22, RESOURCE_PROTOCOL_TCP, 0, "r0");
        arena_free();
}

TEST(bounds_connectors) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        const size_t max = AGENT_POLICY_CONNECTORS_MAX;
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__PolicyDelta *d;
        const char *reason = NULL;
        AgentPolicyConnector c[4];

        ASSERT_OK(agent_policy_new(&p));
        s = snapshot(1, NULL, NULL, n_connectors(max + 1));
        ASSERT_ERROR(agent_policy_apply_snapshot(p, s, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many connectors");
        ASSERT_OK(apply_snapshot(p, snapshot(1, NULL, NULL, n_connectors(max))));
        ASSERT_EQ(agent_policy_connectors(p, "lab", c, ELEMENTSOF(c)), ELEMENTSOF(c));
        ASSERT_STREQ(c[3].spiffe_id, CON("c3"));
        ASSERT_EQ(agent_policy_connectors(p, "lab", NULL, 0), 0);
        reason = NULL;
        d = delta(2, NULL, NULL, NULL, NULL, n_connectors(max + 1));
        ASSERT_ERROR(agent_policy_apply_delta(p, d, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "too many connectors");
        arena_free();
}

/* ---- a tunneler's policy ------------------------------------------------------------------------------ */

TEST(tunneler_lookups) {
        _cleanup_(agent_policy_freep) AgentPolicy *p = NULL;
        Ztna__V1__PolicySnapshot *s;
        Ztna__V1__PolicyDelta *d;
        const PolicyResource *r;

        ASSERT_OK(agent_policy_new(&p));
        s = snapshot(10,
                     RESOURCES(res("db", "10.0.0.5", TCP, "5432", "lab", "db.corp.example", ""),
                               res("lan", "10.0.0.0/24", ANY, "", "lab", "", ""),
                               res("web", "*.lab.example", TCP, "80,443", "lab", "", ""),
                               res("wiki", "wiki.lab.example", TCP, "443", "lab", "", ""),
                               res("nas", "nas.home.example", ANY, "", "home", "storage.home.example", ""),
                               res("v6", "fd00::/64", TCP, "22", "home", "", ""),
                               res("dns", "10.0.0.53", UDP, "53", "lab", "", "")),
                     NULL,
                     STRV(CON("c1"), "192.0.2.1:8443", "lab",
                          CON("c2"), "[2001:db8::2]:8443", "home",
                          CON("c3"), "c3.lab.example:8443", "lab"));
        ASSERT_OK(apply_snapshot(p, s));

        assert_found(p, "10.0.0.5", 5432, RESOURCE_PROTOCOL_TCP, "db");
        /* The most specific match counts alone, as on the connector: db shadows lan on other ports. */
        assert_found(p, "10.0.0.5", 22, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "10.0.0.6", 22, RESOURCE_PROTOCOL_TCP, "lan");
        assert_found(p, "10.0.0.6", 53, RESOURCE_PROTOCOL_UDP, "lan");
        assert_found(p, "10.0.0.53", 53, RESOURCE_PROTOCOL_UDP, "dns");
        assert_found(p, "10.0.0.53", 53, RESOURCE_PROTOCOL_TCP, NULL);
        /* Aliases name their resource exactly, in any case, with or without the trailing dot. */
        assert_found(p, "db.corp.example", 5432, RESOURCE_PROTOCOL_TCP, "db");
        assert_found(p, "DB.Corp.Example.", 5432, RESOURCE_PROTOCOL_TCP, "db");
        assert_found(p, "db.corp.example", 22, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "x.db.corp.example", 5432, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "storage.home.example", 445, RESOURCE_PROTOCOL_TCP, "nas");
        assert_found(p, "nas.home.example", 445, RESOURCE_PROTOCOL_TCP, "nas");
        /* Names: the exact one shadows the wildcard. */
        assert_found(p, "wiki.lab.example", 443, RESOURCE_PROTOCOL_TCP, "wiki");
        assert_found(p, "wiki.lab.example", 80, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "www.lab.example", 80, RESOURCE_PROTOCOL_TCP, "web");
        assert_found(p, "a.b.lab.example", 443, RESOURCE_PROTOCOL_TCP, "web");
        assert_found(p, "www.lab.example", 80, RESOURCE_PROTOCOL_UDP, NULL);
        assert_found(p, "lab.example", 80, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "fd00::1", 22, RESOURCE_PROTOCOL_TCP, "v6");
        assert_found(p, "[fd00::1]", 22, RESOURCE_PROTOCOL_TCP, "v6");
        assert_found(p, "fd01::1", 22, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "bad host!", 22, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "", 22, RESOURCE_PROTOCOL_TCP, NULL);

        r = agent_policy_find_resource(p, "db.corp.example", 5432, RESOURCE_PROTOCOL_TCP);
        ASSERT_STREQ(agent_policy_resource_network(p, ASSERT_NOT_NULL(r)->name), "lab");
        r = agent_policy_find_resource(p, "storage.home.example", 1, RESOURCE_PROTOCOL_UDP);
        ASSERT_STREQ(agent_policy_resource_network(p, ASSERT_NOT_NULL(r)->name), "home");

        /* Connectors per network, in the order pushed. */
        ASSERT_STREQ(connectors_string(p, "lab", 4),
                     CON("c1") "@192.0.2.1:8443 " CON("c3") "@c3.lab.example:8443");
        ASSERT_STREQ(connectors_string(p, "lab", 1), CON("c1") "@192.0.2.1:8443");
        ASSERT_STREQ(connectors_string(p, "home", 4), CON("c2") "@[2001:db8::2]:8443");
        ASSERT_STREQ(connectors_string(p, "nowhere", 4), "");
        ASSERT_EQ(agent_policy_connectors(p, NULL, NULL, 0), 0);

        /* A delta without connectors keeps them; one with connectors replaces them all. */
        ASSERT_OK(apply_delta(p, delta(11, NULL, STRV("dns"), NULL, NULL, NULL)));
        ASSERT_STREQ(connectors_string(p, "home", 4), CON("c2") "@[2001:db8::2]:8443");
        d = delta(12, RESOURCES(res("db", "10.0.0.5", TCP, "5432", "lab", "pg.corp.example", "")), NULL,
                  NULL, NULL, STRV(CON("c4"), "192.0.2.4:8443", "lab"));
        ASSERT_OK(apply_delta(p, d));
        ASSERT_STREQ(connectors_string(p, "lab", 4), CON("c4") "@192.0.2.4:8443");
        ASSERT_STREQ(connectors_string(p, "home", 4), "");
        /* The alias moved with the replaced resource. */
        assert_found(p, "pg.corp.example", 5432, RESOURCE_PROTOCOL_TCP, "db");
        assert_found(p, "db.corp.example", 5432, RESOURCE_PROTOCOL_TCP, NULL);
        assert_found(p, "10.0.0.53", 53, RESOURCE_PROTOCOL_UDP, "lan");
        arena_free();
}
