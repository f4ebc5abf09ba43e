/* SPDX-License-Identifier: Apache-2.0 */

/* Views are maps of packed messages. To send one, the entries are unpacked, assembled into a
 * ControllerMessage with borrowed pointers, packed, and unpacked once more into a single tree the caller
 * frees with one call: policy changes are rare, simplicity wins over copies. */

#include <assert.h>
#include <string.h>

#include "controller-policy.h"
#include "net-proto.h"
#include "policy.h"
#include "string-util.h"
#include "strv.h"

typedef enum EntryKind {
        ENTRY_RESOURCE,
        ENTRY_MEMBERSHIP,
        ENTRY_CONNECTOR,
        _ENTRY_KIND_MAX,
} EntryKind;

struct PolicyView {
        Hashmap *entries[_ENTRY_KIND_MAX];      /* key → ByteBuffer* (packed message) */
};

int policy_inputs_load(Store *store, const PolicyConnector *connectors, size_t n_connectors, PolicyInputs *ret) {
        PolicyInputs in = { .connectors = connectors, .n_connectors = n_connectors };
        int r;

        assert(store);
        assert(ret);

        r = store_resource_list(store, NULL, &in.resources, &in.n_resources);
        if (r < 0)
                return r;
        r = store_agent_list(store, SPIFFE_ROLE_TUNNELER, &in.tunnelers, &in.n_tunnelers);
        if (r >= 0)
                r = store_policy_revision(store, &in.revision);
        if (r < 0) {
                policy_inputs_done(&in);
                return r;
        }
        *ret = in;
        return 0;
}

void policy_inputs_done(PolicyInputs *in) {
        store_resource_array_free(in->resources, in->n_resources);
        store_agent_array_free(in->tunnelers, in->n_tunnelers);
        *in = (PolicyInputs) {};
}

static void entries_free(Hashmap *h) {
        ByteBuffer *b;
        const char *k;

        HASHMAP_FOREACH_KEY(b, k, h) {
                free(b->data);
                free(b);
        }
        hashmap_free(h);
}

PolicyView *policy_view_free(PolicyView *v) {
        if (!v)
                return NULL;
        for (size_t k = 0; k < _ENTRY_KIND_MAX; k++)
                entries_free(v->entries[k]);
        return mfree(v);
}

static int view_add(PolicyView *v, EntryKind kind, const char *key, const ProtobufCMessage *msg) {
        _cleanup_free_ ByteBuffer *b = NULL;
        int r;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->size = protobuf_c_message_get_packed_size(msg);
        b->data = malloc(MAX(b->size, 1U));
        if (!b->data)
                return -ENOMEM;
        (void) protobuf_c_message_pack(msg, b->data);

        r = hashmap_put(v->entries[kind], key, b);
        if (r < 0) {
                free(b->data);
                return r;
        }
        TAKE_PTR(b);
        return 0;
}

/* The resource as pushed; groups: the ones to list (all, or the tunneler's share). */
static int view_add_resource(PolicyView *v, const StoreResource *res, char **groups) {
        Ztna__V1__Resource msg = ZTNA__V1__RESOURCE__INIT;
        Ztna__V1__PortRange ranges[POLICY_PORT_RANGES_MAX], *range_ptrs[POLICY_PORT_RANGES_MAX];
        ResourceProtocol protocol;
        PortSet ports;
        int r;

        r = port_set_parse(res->ports, &ports, NULL);
        if (r < 0)
                return -EBADMSG;
        protocol = resource_protocol_from_string(res->protocol);
        if (protocol < 0)
                return -EBADMSG;

        for (size_t k = 0; k < ports.n_ranges; k++) {
                ranges[k] = (Ztna__V1__PortRange) ZTNA__V1__PORT_RANGE__INIT;
                ranges[k].first = ports.ranges[k].first;
                ranges[k].last = ports.ranges[k].last;
                range_ptrs[k] = &ranges[k];
        }
        msg.name = res->name;
        msg.address = res->address;
        msg.protocol = protocol == RESOURCE_PROTOCOL_TCP ? ZTNA__V1__PROTOCOL__PROTOCOL_TCP :
                       protocol == RESOURCE_PROTOCOL_UDP ? ZTNA__V1__PROTOCOL__PROTOCOL_UDP :
                                                           ZTNA__V1__PROTOCOL__PROTOCOL_ANY;
        msg.n_ports = ports.n_ranges;
        msg.ports = ports.n_ranges > 0 ? range_ptrs : NULL;
        msg.remote_network = res->remote_network;
        msg.alias = (char *) strempty(res->alias);
        msg.n_groups = strv_length(groups);
        msg.groups = groups;
        return view_add(v, ENTRY_RESOURCE, res->name, &msg.base);
}

static bool strv_overlap(char *const *a, char *const *b) {
        STRV_FOREACH(x, a)
                if (strv_contains(b, *x))
                        return true;
        return false;
}

int policy_view_build(const PolicyInputs *in, SpiffeRole role, const char *remote_network, char *const *groups,
                      PolicyView **ret) {
        _cleanup_(policy_view_freep) PolicyView *v = NULL;
        _cleanup_strv_free_ char **networks = NULL;
        int r;

        assert(in);
        assert(ret);

        if (role != SPIFFE_ROLE_CONNECTOR && role != SPIFFE_ROLE_TUNNELER)
                return -EINVAL;

        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t k = 0; k < _ENTRY_KIND_MAX; k++) {
                r = hashmap_new(&v->entries[k]);
                if (r < 0)
                        return r;
        }

        if (role == SPIFFE_ROLE_CONNECTOR) {
                for (size_t k = 0; remote_network && k < in->n_resources; k++) {
                        if (!streq_ptr(in->resources[k]->remote_network, remote_network))
                                continue;
                        r = view_add_resource(v, in->resources[k], in->resources[k]->groups);
                        if (r < 0)
                                return r;
                }
                for (size_t k = 0; remote_network && k < in->n_tunnelers; k++) {
                        const StoreAgent *t = in->tunnelers[k];
                        Ztna__V1__TunnelerGroups tg = ZTNA__V1__TUNNELER_GROUPS__INIT;

                        if (t->revoked_at != 0 || strv_length(t->groups) == 0)
                                continue;
                        tg.n_groups = strv_length(t->groups);
                        tg.groups = t->groups;
                        r = view_add(v, ENTRY_MEMBERSHIP, t->spiffe_id, &tg.base);
                        if (r < 0)
                                return r;
                }
        } else {
                for (size_t k = 0; k < in->n_resources; k++) {
                        const StoreResource *res = in->resources[k];
                        _cleanup_strv_free_ char **mine = NULL;

                        if (!strv_overlap(res->groups, groups))
                                continue;
                        /* A tunneler learns which of its own groups grant a resource, not who else has it. */
                        STRV_FOREACH(g, res->groups)
                                if (strv_contains(groups, *g) && strv_extend(&mine, *g) < 0)
                                        return -ENOMEM;
                        r = view_add_resource(v, res, mine);
                        if (r < 0)
                                return r;
                        if (!strv_contains(networks, res->remote_network) &&
                            strv_extend(&networks, res->remote_network) < 0)
                                return -ENOMEM;
                }
                for (size_t k = 0; k < in->n_connectors; k++) {
                        const PolicyConnector *c = &in->connectors[k];
                        Ztna__V1__ConnectorEndpoint ep = ZTNA__V1__CONNECTOR_ENDPOINT__INIT;

                        if (!c->address || !strv_contains(networks, c->remote_network))
                                continue;
                        ep.id = (char *) c->spiffe_id;
                        ep.address = (char *) c->address;
                        ep.remote_network = (char *) c->remote_network;
                        r = view_add(v, ENTRY_CONNECTOR, c->spiffe_id, &ep.base);
                        if (r < 0)
                                return r;
                }
        }

        *ret = TAKE_PTR(v);
        return 0;
}

static bool entry_equal(const ByteBuffer *a, const ByteBuffer *b) {
        return a && b && a->size == b->size && memcmp(a->data, b->data, a->size) == 0;
}

static bool entries_equal(Hashmap *a, Hashmap *b) {
        ByteBuffer *x;
        const char *k;

        if (hashmap_size(a) != hashmap_size(b))
                return false;
        HASHMAP_FOREACH_KEY(x, k, a)
                if (!entry_equal(x, hashmap_get(b, k)))
                        return false;
        return true;
}

/* The messages being assembled: unpacked entries (owned) and the arrays pointing at them. */
typedef struct Assembly {
        Ztna__V1__Resource **resources;
        size_t n_resources;
        Ztna__V1__TunnelerGroups **groups;
        char **group_keys;                      /* borrowed from the view */
        size_t n_groups;
        Ztna__V1__ConnectorEndpoint **connectors;
        size_t n_connectors;
        char **removed_resources, **removed_tunnelers;   /* borrowed from the view */
        size_t n_removed_resources, n_removed_tunnelers;
} Assembly;

static void assembly_done(Assembly *a) {
        for (size_t k = 0; k < a->n_resources; k++)
                ztna__v1__resource__free_unpacked(a->resources[k], NULL);
        for (size_t k = 0; k < a->n_groups; k++)
                ztna__v1__tunneler_groups__free_unpacked(a->groups[k], NULL);
        for (size_t k = 0; k < a->n_connectors; k++)
                ztna__v1__connector_endpoint__free_unpacked(a->connectors[k], NULL);
        free(a->resources);
        free(a->groups);
        free(a->group_keys);
        free(a->connectors);
        free(a->removed_resources);
        free(a->removed_tunnelers);
        *a = (Assembly) {};
}

/* Unpacks the entries of kind in `new` that differ from `old` (all of them when old is NULL); with
 * ret_removed, lists the keys of old that new lacks. */
static int assembly_collect(Assembly *a, EntryKind kind, const PolicyView *old, const PolicyView *new) {
        size_t n = hashmap_size(new->entries[kind]);
        ByteBuffer *b;
        const char *k;

        void **items = calloc(MAX(n, 1U), sizeof(void *));
        if (!items)
                return -ENOMEM;
        if (kind == ENTRY_RESOURCE)
                a->resources = (Ztna__V1__Resource **) items;
        else if (kind == ENTRY_MEMBERSHIP) {
                a->groups = (Ztna__V1__TunnelerGroups **) items;
                a->group_keys = calloc(MAX(n, 1U), sizeof(char *));
                if (!a->group_keys)
                        return -ENOMEM;
        } else
                a->connectors = (Ztna__V1__ConnectorEndpoint **) items;

        HASHMAP_FOREACH_KEY(b, k, new->entries[kind]) {
                if (old && kind != ENTRY_CONNECTOR && entry_equal(b, hashmap_get(old->entries[kind], k)))
                        continue;
                if (kind == ENTRY_RESOURCE) {
                        a->resources[a->n_resources] = ztna__v1__resource__unpack(NULL, b->size, b->data);
                        if (!a->resources[a->n_resources])
                                return -ENOMEM;
                        a->n_resources++;
                } else if (kind == ENTRY_MEMBERSHIP) {
                        a->groups[a->n_groups] = ztna__v1__tunneler_groups__unpack(NULL, b->size, b->data);
                        if (!a->groups[a->n_groups])
                                return -ENOMEM;
                        a->group_keys[a->n_groups++] = (char *) k;
                } else {
                        a->connectors[a->n_connectors] =
                                ztna__v1__connector_endpoint__unpack(NULL, b->size, b->data);
                        if (!a->connectors[a->n_connectors])
                                return -ENOMEM;
                        a->n_connectors++;
                }
        }

        if (old && kind != ENTRY_CONNECTOR) {
                size_t m = hashmap_size(old->entries[kind]), *count;
                char ***removed;

                if (kind == ENTRY_RESOURCE) {
                        removed = &a->removed_resources;
                        count = &a->n_removed_resources;
                } else {
                        removed = &a->removed_tunnelers;
                        count = &a->n_removed_tunnelers;
                }
                *removed = calloc(MAX(m, 1U), sizeof(char *));
                if (!*removed)
                        return -ENOMEM;
                HASHMAP_FOREACH_KEY(b, k, old->entries[kind])
                        if (!hashmap_get(new->entries[kind], k))
                                (*removed)[(*count)++] = (char *) k;
        }
        return 0;
}

/* Packs msg and unpacks it again: one tree owned by the caller. */
static int message_own(const Ztna__V1__ControllerMessage *msg, Ztna__V1__ControllerMessage **ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;

        size = ztna__v1__controller_message__get_packed_size(msg);
        buf = malloc(MAX(size, 1U));
        if (!buf)
                return -ENOMEM;
        (void) ztna__v1__controller_message__pack(msg, buf);
        *ret = ztna__v1__controller_message__unpack(NULL, size, buf);
        return *ret ? 0 : -ENOMEM;
}

int policy_view_snapshot(const PolicyView *v, uint64_t revision, Ztna__V1__ControllerMessage **ret) {
        _cleanup_(assembly_done) Assembly a = {};
        _cleanup_free_ Ztna__V1__PolicySnapshot__MembershipsEntry *entries = NULL, **entry_ptrs = NULL;
        Ztna__V1__PolicySnapshot snapshot = ZTNA__V1__POLICY_SNAPSHOT__INIT;
        Ztna__V1__ControllerMessage msg = ZTNA__V1__CONTROLLER_MESSAGE__INIT;
        int r;

        assert(v);
        assert(ret);

        for (EntryKind k = 0; k < _ENTRY_KIND_MAX; k++) {
                r = assembly_collect(&a, k, NULL, v);
                if (r < 0)
                        return r;
        }
        entries = calloc(MAX(a.n_groups, 1U), sizeof(*entries));
        entry_ptrs = calloc(MAX(a.n_groups, 1U), sizeof(*entry_ptrs));
        if (!entries || !entry_ptrs)
                return -ENOMEM;
        for (size_t k = 0; k < a.n_groups; k++) {
                entries[k] = (Ztna__V1__PolicySnapshot__MembershipsEntry)
                        ZTNA__V1__POLICY_SNAPSHOT__MEMBERSHIPS_ENTRY__INIT;
                entries[k].key = a.group_keys[k];
                entries[k].value = a.groups[k];
                entry_ptrs[k] = &entries[k];
        }

        snapshot.revision = revision;
        snapshot.n_resources = a.n_resources;
        snapshot.resources = a.resources;
        snapshot.n_memberships = a.n_groups;
        snapshot.memberships = entry_ptrs;
        snapshot.n_connectors = a.n_connectors;
        snapshot.connectors = a.connectors;
        msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_SNAPSHOT;
        msg.policy_snapshot = &snapshot;
        return message_own(&msg, ret);
}

int policy_view_delta(const PolicyView *old, const PolicyView *new, uint64_t revision,
                      Ztna__V1__ControllerMessage **ret) {
        _cleanup_(assembly_done) Assembly a = {};
        _cleanup_free_ Ztna__V1__PolicyDelta__UpsertMembershipsEntry *entries = NULL, **entry_ptrs = NULL;
        Ztna__V1__PolicyDelta delta = ZTNA__V1__POLICY_DELTA__INIT;
        Ztna__V1__ControllerMessage msg = ZTNA__V1__CONTROLLER_MESSAGE__INIT;
        bool connectors_changed;
        int r;

        assert(old);
        assert(new);
        assert(ret);

        connectors_changed = !entries_equal(old->entries[ENTRY_CONNECTOR], new->entries[ENTRY_CONNECTOR]);
        if (connectors_changed && hashmap_isempty(new->entries[ENTRY_CONNECTOR]))
                return policy_view_snapshot(new, revision, ret);

        r = assembly_collect(&a, ENTRY_RESOURCE, old, new);
        if (r >= 0)
                r = assembly_collect(&a, ENTRY_MEMBERSHIP, old, new);
        if (r >= 0 && connectors_changed)
                r = assembly_collect(&a, ENTRY_CONNECTOR, NULL, new);
        if (r < 0)
                return r;

        if (a.n_resources == 0 && a.n_removed_resources == 0 && a.n_groups == 0 && a.n_removed_tunnelers == 0 &&
            a.n_connectors == 0) {
                *ret = NULL;
                return 0;
        }

        entries = calloc(MAX(a.n_groups, 1U), sizeof(*entries));
        entry_ptrs = calloc(MAX(a.n_groups, 1U), sizeof(*entry_ptrs));
        if (!entries || !entry_ptrs)
                return -ENOMEM;
        for (size_t k = 0; k < a.n_groups; k++) {
                entries[k] = (Ztna__V1__PolicyDelta__UpsertMembershipsEntry)
                        ZTNA__V1__POLICY_DELTA__UPSERT_MEMBERSHIPS_ENTRY__INIT;
                entries[k].key = a.group_keys[k];
                entries[k].value = a.groups[k];
                entry_ptrs[k] = &entries[k];
        }

        delta.revision = revision;
        delta.n_upsert_resources = a.n_resources;
        delta.upsert_resources = a.resources;
        delta.n_removed_resources = a.n_removed_resources;
        delta.removed_resources = a.removed_resources;
        delta.n_upsert_memberships = a.n_groups;
        delta.upsert_memberships = entry_ptrs;
        delta.n_removed_tunnelers = a.n_removed_tunnelers;
        delta.removed_tunnelers = a.removed_tunnelers;
        delta.n_connectors = a.n_connectors;
        delta.connectors = a.connectors;
        msg.body_case = ZTNA__V1__CONTROLLER_MESSAGE__BODY_POLICY_DELTA;
        msg.policy_delta = &delta;
        return message_own(&msg, ret);
}

void policy_message_free(Ztna__V1__ControllerMessage *m) {
        if (m)
                ztna__v1__controller_message__free_unpacked(m, NULL);
}
