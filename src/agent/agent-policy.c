/* SPDX-License-Identifier: Apache-2.0 */

/* The policy an agent holds. Resources and memberships are arrays of pointers to immutable heap entries,
 * sorted by key (resource name, tunneler SPIFFE ID; byte order) for lookups by bisection. A delta builds
 * its new arrays aside, sharing the entries it keeps with the held state; the commit only swaps arrays and
 * frees the entries replaced or removed, so nothing can fail once the state starts to change and a refused
 * message leaves it exactly as it was. policy_decide() wants the resources as one contiguous array: `view`
 * is that shallow copy, rebuilt whenever the resources change.
 *
 * Choices the header leaves open:
 *   - pushed ports must already be canonical (sorted, overlapping and adjacent ranges merged, 1..65535
 *     sent as no range at all), like addresses: the controller stores and sends the canonical form, so
 *     anything else is a broken controller, not something to repair;
 *   - duplicate keys (resource names, tunnelers, connectors, a resource's or tunneler's groups) are
 *     refused, and so is a delta that both upserts and removes the same name;
 *   - a delta removing a resource or tunneler not held is fine (nothing to do): a tunneler's controller
 *     may withdraw a grant it never sent, and removals are idempotent anyway;
 *   - SPIFFE IDs must be canonical (as certificates carry them), so that decide() compares bytes;
 *   - a delta cannot empty the connector list (the proto treats an empty list as "unchanged"). */

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-policy.h"
#include "crypto-spiffe.h"
#include "log.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"

/* The common head of the sorted entries: the key they are sorted and found by. */
typedef struct Entry {
        char *key;
} Entry;

typedef struct HeldResource {
        Entry entry;                    /* the resource name; first member */
        char *network;
        char *alias;                    /* canonical FQDN; NULL: none */
        char **groups;                  /* NULL: none */
        PolicyResource resource;        /* .name and .groups borrowed from above */
} HeldResource;

typedef struct Membership {
        Entry entry;                    /* the tunneler's SPIFFE ID; first member */
        char **groups;                  /* NULL: none */
} Membership;

typedef struct HeldConnector {
        char *spiffe_id;
        char *address;
        char *remote_network;
} HeldConnector;

typedef struct PolicyState {
        Entry **resources;              /* HeldResource, sorted by name, unique */
        PolicyResource *view;           /* view[k] == resources[k]->resource */
        size_t n_resources;
        Entry **memberships;            /* Membership, sorted by SPIFFE ID, unique */
        size_t n_memberships;
        HeldConnector *connectors;      /* in the order pushed */
        size_t n_connectors;
} PolicyState;

struct AgentPolicy {
        bool has_snapshot;
        uint64_t revision;
        PolicyState state;
};

/* Entries a message brought: owned until the commit hands them to the state. */
typedef struct EntryList {
        Entry **entries;
        size_t n;
        void (*free_entry)(Entry *e);
} EntryList;

/* ---- entries ------------------------------------------------------------------------------------------ */

static HeldResource *held_resource_free(HeldResource *h) {
        if (!h)
                return NULL;
        free(h->entry.key);
        free(h->network);
        free(h->alias);
        strv_free(h->groups);
        return mfree(h);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(HeldResource *, held_resource_free);

static void held_resource_entry_free(Entry *e) {
        held_resource_free((HeldResource *) e);
}

static Membership *membership_free(Membership *m) {
        if (!m)
                return NULL;
        free(m->entry.key);
        strv_free(m->groups);
        return mfree(m);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Membership *, membership_free);

static void membership_entry_free(Entry *e) {
        membership_free((Membership *) e);
}

static void entry_list_done(EntryList *l) {
        for (size_t k = 0; k < l->n; k++)
                l->free_entry(l->entries[k]);
        l->entries = mfree(l->entries);
        l->n = 0;
}

/* The commit took the entries: only the array goes. */
static void entry_list_disarm(EntryList *l) {
        l->entries = mfree(l->entries);
        l->n = 0;
}

static void connectors_free(HeldConnector *c, size_t n) {
        for (size_t k = 0; k < n; k++) {
                free(c[k].spiffe_id);
                free(c[k].address);
                free(c[k].remote_network);
        }
        free(c);
}

static void policy_state_done(PolicyState *s) {
        for (size_t k = 0; k < s->n_resources; k++)
                held_resource_entry_free(s->resources[k]);
        free(s->resources);
        free(s->view);
        for (size_t k = 0; k < s->n_memberships; k++)
                membership_entry_free(s->memberships[k]);
        free(s->memberships);
        connectors_free(s->connectors, s->n_connectors);
        *s = (PolicyState) {};
}

static int entry_compare(const void *a, const void *b) {
        return strcmp((*(Entry *const *) a)->key, (*(Entry *const *) b)->key);
}

static int key_compare(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static Entry *entries_find(Entry *const *a, size_t n, const char *key) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(key, a[mid]->key);

                if (c == 0)
                        return a[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

/* Sorts l by key; -EBADMSG when a key appears twice. */
static int entry_list_sort_unique(EntryList *l) {
        if (l->n > 1)
                qsort(l->entries, l->n, sizeof(Entry *), entry_compare);
        for (size_t k = 1; k < l->n; k++)
                if (streq(l->entries[k - 1]->key, l->entries[k]->key))
                        return -EBADMSG;
        return 0;
}

/* The sorted array (old minus removed) with added upserted into it, and the old entries left out of it
 * (removed or replaced). Only arrays are allocated; entries are shared. */
static int entries_merge(Entry *const *old, size_t n_old, Entry *const *added, size_t n_added,
                         const char *const *removed, size_t n_removed, Entry ***ret, size_t *ret_n,
                         Entry ***ret_dropped, size_t *ret_n_dropped) {
        _cleanup_free_ Entry **out = NULL, **dropped = NULL;
        size_t i = 0, j = 0, n = 0, nd = 0;

        out = calloc(MAX(n_old + n_added, 1U), sizeof(Entry *));
        dropped = calloc(MAX(n_old, 1U), sizeof(Entry *));
        if (!out || !dropped)
                return -ENOMEM;

        while (i < n_old || j < n_added) {
                int c = i >= n_old ? 1 : j >= n_added ? -1 : strcmp(old[i]->key, added[j]->key);

                if (c < 0) {
                        bool gone = n_removed > 0 &&
                                    bsearch(&old[i]->key, removed, n_removed, sizeof(char *), key_compare);

                        if (gone)
                                dropped[nd++] = old[i];
                        else
                                out[n++] = old[i];
                        i++;
                        continue;
                }
                if (c == 0)
                        dropped[nd++] = old[i++];
                out[n++] = added[j++];
        }

        *ret = TAKE_PTR(out);
        *ret_n = n;
        *ret_dropped = TAKE_PTR(dropped);
        *ret_n_dropped = nd;
        return 0;
}

static int view_build(Entry *const *resources, size_t n, PolicyResource **ret) {
        PolicyResource *v = NULL;

        if (n > 0) {
                v = calloc(n, sizeof(PolicyResource));
                if (!v)
                        return -ENOMEM;
        }
        for (size_t k = 0; k < n; k++)
                v[k] = ((const HeldResource *) resources[k])->resource;
        *ret = v;
        return 0;
}

/* ---- validation --------------------------------------------------------------------------------------- */

static int refuse(const char **reason, const char *why) {
        *reason = why;
        return -EBADMSG;
}

static bool name_is_valid(const char *s) {
        return s && policy_name_is_valid(s);
}

/* A canonical spiffe://<td>/<role>/<id>: the form certificates carry, so lookups can compare bytes. */
static bool spiffe_id_is_canonical(const char *s, SpiffeRole role) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;

        if (!s || spiffe_id_from_string_ztna(s, &id, NULL) < 0)
                return false;
        return id->role == role && streq(id->uri, s);
}

static int groups_parse(char *const *groups, size_t n, char ***ret, const char **reason) {
        _cleanup_strv_free_ char **l = NULL;
        int r;

        if (n > AGENT_POLICY_GROUPS_MAX)
                return refuse(reason, "too many groups");
        for (size_t k = 0; k < n; k++) {
                if (!name_is_valid(groups[k]))
                        return refuse(reason, "invalid group name");
                if (strv_contains(l, groups[k]))
                        return refuse(reason, "duplicate group");
                r = strv_extend(&l, groups[k]);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Ranges exactly as port_set_parse() would store them: sorted, overlapping and adjacent ones merged, and
 * the whole range sent as none at all ("any"). */
static int ports_parse(Ztna__V1__PortRange *const *ranges, size_t n, PortSet *ret, const char **reason) {
        PortSet set = {};

        if (n > POLICY_PORT_RANGES_MAX)
                return refuse(reason, "too many port ranges");
        for (size_t k = 0; k < n; k++) {
                const Ztna__V1__PortRange *pr = ranges[k];

                if (!pr || pr->first < 1 || pr->first > UINT16_MAX || pr->last < 1 || pr->last > UINT16_MAX)
                        return refuse(reason, "port out of range");
                if (pr->first > pr->last)
                        return refuse(reason, "port range with first above last");
                if (k > 0 && pr->first <= (uint32_t) set.ranges[k - 1].last + 1)
                        return refuse(reason, "port ranges not in canonical form");
                set.ranges[k] = (PolicyPortRange) { .first = pr->first, .last = pr->last };
        }
        set.n_ranges = n;
        if (n == 1 && set.ranges[0].first == 1 && set.ranges[0].last == UINT16_MAX)
                return refuse(reason, "port ranges not in canonical form");
        *ret = set;
        return 0;
}

static int protocol_from_proto(Ztna__V1__Protocol p, ResourceProtocol *ret) {
        switch (p) {
        case ZTNA__V1__PROTOCOL__PROTOCOL_ANY:
                *ret = RESOURCE_PROTOCOL_ANY;
                return 0;
        case ZTNA__V1__PROTOCOL__PROTOCOL_TCP:
                *ret = RESOURCE_PROTOCOL_TCP;
                return 0;
        case ZTNA__V1__PROTOCOL__PROTOCOL_UDP:
                *ret = RESOURCE_PROTOCOL_UDP;
                return 0;
        default:
                return -EBADMSG;
        }
}

static int resource_parse(const Ztna__V1__Resource *m, Entry **ret, const char **reason) {
        _cleanup_(held_resource_freep) HeldResource *h = NULL;
        _cleanup_strv_free_ char **groups = NULL;
        char buf[POLICY_ADDRESS_STRING_MAX];
        ResourceAddress address;
        ResourceProtocol protocol;
        PortSet ports;
        const char *why = NULL;
        int r;

        if (!m)
                return refuse(reason, "empty resource");
        if (!name_is_valid(m->name))
                return refuse(reason, "invalid resource name");
        if (!m->address || resource_address_parse(m->address, &address, &why) < 0)
                return refuse(reason, why ?: "invalid resource address");
        if (!streq(resource_address_to_string(&address, buf), m->address))
                return refuse(reason, "resource address not in canonical form");
        if (protocol_from_proto(m->protocol, &protocol) < 0)
                return refuse(reason, "unknown resource protocol");
        r = ports_parse(m->ports, m->n_ports, &ports, reason);
        if (r < 0)
                return r;
        if (!name_is_valid(m->remote_network))
                return refuse(reason, "invalid remote network name");
        if (!isempty(m->alias)) {
                ResourceAddress alias;

                if (resource_address_parse(m->alias, &alias, NULL) < 0 ||
                    alias.kind != RESOURCE_ADDRESS_FQDN || !streq(alias.name, m->alias))
                        return refuse(reason, "resource alias not a canonical FQDN");
        }
        r = groups_parse(m->groups, m->n_groups, &groups, reason);
        if (r < 0)
                return r;

        h = calloc(1, sizeof(HeldResource));
        if (!h)
                return -ENOMEM;
        h->groups = TAKE_PTR(groups);
        h->entry.key = strdup(m->name);
        h->network = strdup(m->remote_network);
        h->alias = isempty(m->alias) ? NULL : strdup(m->alias);
        if (!h->entry.key || !h->network || (!isempty(m->alias) && !h->alias))
                return -ENOMEM;
        h->resource = (PolicyResource) {
                .name = h->entry.key,
                .address = address,
                .protocol = protocol,
                .ports = ports,
                .groups = h->groups,
        };
        *ret = &TAKE_PTR(h)->entry;
        return 0;
}

static int membership_parse(const char *spiffe_id, const Ztna__V1__TunnelerGroups *g, Entry **ret,
                            const char **reason) {
        _cleanup_(membership_freep) Membership *m = NULL;
        _cleanup_strv_free_ char **groups = NULL;
        int r;

        if (!spiffe_id_is_canonical(spiffe_id, SPIFFE_ROLE_TUNNELER))
                return refuse(reason, "invalid tunneler SPIFFE ID");
        if (g) {
                r = groups_parse(g->groups, g->n_groups, &groups, reason);
                if (r < 0)
                        return r;
        }

        m = calloc(1, sizeof(Membership));
        if (!m)
                return -ENOMEM;
        m->groups = TAKE_PTR(groups);
        m->entry.key = strdup(spiffe_id);
        if (!m->entry.key)
                return -ENOMEM;
        *ret = &TAKE_PTR(m)->entry;
        return 0;
}

static int resources_parse(Ztna__V1__Resource *const *resources, size_t n, EntryList *ret,
                           const char **reason) {
        int r;

        if (n > AGENT_POLICY_RESOURCES_MAX)
                return refuse(reason, "too many resources");
        ret->free_entry = held_resource_entry_free;
        if (n == 0)
                return 0;
        ret->entries = calloc(n, sizeof(Entry *));
        if (!ret->entries)
                return -ENOMEM;
        for (; ret->n < n; ret->n++) {
                r = resource_parse(resources[ret->n], &ret->entries[ret->n], reason);
                if (r < 0)
                        return r;
        }
        if (entry_list_sort_unique(ret) < 0)
                return refuse(reason, "duplicate resource name");
        return 0;
}

/* The snapshot's and the delta's map entries are distinct types of the same shape. */
static int memberships_parse(size_t n, const char *(*key)(const void *m, size_t k),
                             const Ztna__V1__TunnelerGroups *(*value)(const void *m, size_t k),
                             const void *msg, EntryList *ret, const char **reason) {
        int r;

        if (n > AGENT_POLICY_TUNNELERS_MAX)
                return refuse(reason, "too many tunnelers");
        ret->free_entry = membership_entry_free;
        if (n == 0)
                return 0;
        ret->entries = calloc(n, sizeof(Entry *));
        if (!ret->entries)
                return -ENOMEM;
        for (; ret->n < n; ret->n++) {
                const char *k = key(msg, ret->n);

                if (!k)
                        return refuse(reason, "empty membership");
                r = membership_parse(k, value(msg, ret->n), &ret->entries[ret->n], reason);
                if (r < 0)
                        return r;
        }
        if (entry_list_sort_unique(ret) < 0)
                return refuse(reason, "duplicate tunneler");
        return 0;
}

static const char *snapshot_key(const void *m, size_t k) {
        const Ztna__V1__PolicySnapshot__MembershipsEntry *e =
                ((const Ztna__V1__PolicySnapshot *) m)->memberships[k];

        return e ? e->key : NULL;
}

static const Ztna__V1__TunnelerGroups *snapshot_value(const void *m, size_t k) {
        return ((const Ztna__V1__PolicySnapshot *) m)->memberships[k]->value;
}

static const char *delta_key(const void *m, size_t k) {
        const Ztna__V1__PolicyDelta__UpsertMembershipsEntry *e =
                ((const Ztna__V1__PolicyDelta *) m)->upsert_memberships[k];

        return e ? e->key : NULL;
}

static const Ztna__V1__TunnelerGroups *delta_value(const void *m, size_t k) {
        return ((const Ztna__V1__PolicyDelta *) m)->upsert_memberships[k]->value;
}

static int connectors_parse(Ztna__V1__ConnectorEndpoint *const *endpoints, size_t n, HeldConnector **ret,
                            size_t *ret_n, const char **reason) {
        HeldConnector *c = NULL;

        if (n > AGENT_POLICY_CONNECTORS_MAX)
                return refuse(reason, "too many connectors");
        for (size_t k = 0; k < n; k++) {
                const Ztna__V1__ConnectorEndpoint *e = endpoints[k];
                HostPort hp;

                if (!e)
                        return refuse(reason, "empty connector");
                if (!spiffe_id_is_canonical(e->id, SPIFFE_ROLE_CONNECTOR))
                        return refuse(reason, "invalid connector SPIFFE ID");
                if (!e->address || strnlen(e->address, HOST_PORT_STRING_MAX) >= HOST_PORT_STRING_MAX ||
                    parse_host_port(e->address, 0, &hp) < 0)
                        return refuse(reason, "invalid connector address");
                if (!name_is_valid(e->remote_network))
                        return refuse(reason, "invalid connector remote network name");
                /* At most CONNECTORS_MAX² / 2 comparisons, on a rare message. */
                for (size_t j = 0; j < k; j++)
                        if (streq(endpoints[j]->id, e->id))
                                return refuse(reason, "duplicate connector");
        }

        if (n > 0) {
                c = calloc(n, sizeof(HeldConnector));
                if (!c)
                        return -ENOMEM;
        }
        for (size_t k = 0; k < n; k++) {
                c[k] = (HeldConnector) {
                        .spiffe_id = strdup(endpoints[k]->id),
                        .address = strdup(endpoints[k]->address),
                        .remote_network = strdup(endpoints[k]->remote_network),
                };
                if (!c[k].spiffe_id || !c[k].address || !c[k].remote_network) {
                        connectors_free(c, n); /* calloc()ed: the rest is NULL */
                        return -ENOMEM;
                }
        }
        *ret = c;
        *ret_n = n;
        return 0;
}

/* Names to remove, sorted for bisection (borrowed from the message); each must be valid. */
static int removals_parse(char *const *names, size_t n, size_t max, bool tunnelers, const char ***ret,
                          const char **reason) {
        _cleanup_free_ const char **sorted = NULL;

        if (n > max)
                return refuse(reason, tunnelers ? "too many removed tunnelers"
                                                : "too many removed resources");
        for (size_t k = 0; k < n; k++) {
                if (tunnelers && !spiffe_id_is_canonical(names[k], SPIFFE_ROLE_TUNNELER))
                        return refuse(reason, "invalid removed tunneler");
                if (!tunnelers && !name_is_valid(names[k]))
                        return refuse(reason, "invalid removed resource name");
        }
        if (n > 0) {
                sorted = calloc(n, sizeof(char *));
                if (!sorted)
                        return -ENOMEM;
                memcpy(sorted, names, n * sizeof(char *));
                qsort(sorted, n, sizeof(char *), key_compare);
        }
        *ret = TAKE_PTR(sorted);
        return 0;
}

static bool list_intersects(const EntryList *l, const char *const *sorted, size_t n) {
        if (n == 0)
                return false;
        for (size_t k = 0; k < l->n; k++)
                if (bsearch(&l->entries[k]->key, sorted, n, sizeof(char *), key_compare))
                        return true;
        return false;
}

/* ---- the object --------------------------------------------------------------------------------------- */

int agent_policy_new(AgentPolicy **ret) {
        AgentPolicy *p;

        assert(ret);

        p = calloc(1, sizeof(AgentPolicy));
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

AgentPolicy *agent_policy_free(AgentPolicy *p) {
        if (!p)
                return NULL;
        policy_state_done(&p->state);
        return mfree(p);
}

static int apply_snapshot(AgentPolicy *p, const Ztna__V1__PolicySnapshot *s, const char **reason) {
        _cleanup_(entry_list_done) EntryList resources = {}, memberships = {};
        _cleanup_(policy_state_done) PolicyState next = {};
        int r;

        if (!s)
                return refuse(reason, "empty policy snapshot");
        r = resources_parse(s->resources, s->n_resources, &resources, reason);
        if (r < 0)
                return r;
        r = memberships_parse(s->n_memberships, snapshot_key, snapshot_value, s, &memberships, reason);
        if (r < 0)
                return r;
        r = connectors_parse(s->connectors, s->n_connectors, &next.connectors, &next.n_connectors, reason);
        if (r < 0)
                return r;
        r = view_build(resources.entries, resources.n, &next.view);
        if (r < 0)
                return r;

        next.resources = TAKE_PTR(resources.entries);
        next.n_resources = resources.n;
        resources.n = 0;
        next.memberships = TAKE_PTR(memberships.entries);
        next.n_memberships = memberships.n;
        memberships.n = 0;

        policy_state_done(&p->state);
        p->state = next;
        next = (PolicyState) {};
        p->revision = s->revision;
        p->has_snapshot = true;
        return 0;
}

int agent_policy_apply_snapshot(AgentPolicy *p, const Ztna__V1__PolicySnapshot *s, const char **ret_reason) {
        const char *reason = NULL;
        int r;

        assert(p);

        r = apply_snapshot(p, s, &reason);
        if (r < 0) {
                log_debug("Refusing policy snapshot: %s", r == -EBADMSG ? reason : strerror(-r));
                if (ret_reason)
                        *ret_reason = r == -EBADMSG ? reason : NULL;
                return r;
        }
        log_debug("Policy snapshot of revision %" PRIu64 ": %zu resources, %zu tunnelers, %zu connectors.",
                  p->revision, p->state.n_resources, p->state.n_memberships, p->state.n_connectors);
        return 0;
}

static int apply_delta(AgentPolicy *p, const Ztna__V1__PolicyDelta *d, const char **reason) {
        _cleanup_(entry_list_done) EntryList resources = {}, memberships = {};
        _cleanup_free_ const char **removed_resources = NULL, **removed_tunnelers = NULL;
        _cleanup_free_ Entry **merged_resources = NULL, **dropped_resources = NULL;
        _cleanup_free_ Entry **merged_memberships = NULL, **dropped_memberships = NULL;
        size_t n_merged_resources = 0, n_dropped_resources = 0, n_merged_memberships = 0,
               n_dropped_memberships = 0, n_connectors = 0;
        _cleanup_free_ PolicyResource *view = NULL;
        HeldConnector *connectors = NULL;
        bool change_resources, change_memberships;
        int r;

        if (!d)
                return refuse(reason, "empty policy delta");
        if (!p->has_snapshot || p->revision == UINT64_MAX || d->revision != p->revision + 1) {
                *reason = "policy delta does not follow the revision held";
                return -ESTALE;
        }

        r = resources_parse(d->upsert_resources, d->n_upsert_resources, &resources, reason);
        if (r < 0)
                return r;
        r = removals_parse(d->removed_resources, d->n_removed_resources, AGENT_POLICY_RESOURCES_MAX, false,
                           &removed_resources, reason);
        if (r < 0)
                return r;
        if (list_intersects(&resources, removed_resources, d->n_removed_resources))
                return refuse(reason, "resource both upserted and removed");
        r = memberships_parse(d->n_upsert_memberships, delta_key, delta_value, d, &memberships, reason);
        if (r < 0)
                return r;
        r = removals_parse(d->removed_tunnelers, d->n_removed_tunnelers, AGENT_POLICY_TUNNELERS_MAX, true,
                           &removed_tunnelers, reason);
        if (r < 0)
                return r;
        if (list_intersects(&memberships, removed_tunnelers, d->n_removed_tunnelers))
                return refuse(reason, "tunneler both upserted and removed");

        change_resources = resources.n > 0 || d->n_removed_resources > 0;
        if (change_resources) {
                r = entries_merge(p->state.resources, p->state.n_resources, resources.entries, resources.n,
                                  removed_resources, d->n_removed_resources, &merged_resources,
                                  &n_merged_resources, &dropped_resources, &n_dropped_resources);
                if (r < 0)
                        return r;
                if (n_merged_resources > AGENT_POLICY_RESOURCES_MAX)
                        return refuse(reason, "too many resources");
                r = view_build(merged_resources, n_merged_resources, &view);
                if (r < 0)
                        return r;
        }
        change_memberships = memberships.n > 0 || d->n_removed_tunnelers > 0;
        if (change_memberships) {
                r = entries_merge(p->state.memberships, p->state.n_memberships, memberships.entries,
                                  memberships.n, removed_tunnelers, d->n_removed_tunnelers,
                                  &merged_memberships, &n_merged_memberships, &dropped_memberships,
                                  &n_dropped_memberships);
                if (r < 0)
                        return r;
                if (n_merged_memberships > AGENT_POLICY_TUNNELERS_MAX)
                        return refuse(reason, "too many tunnelers");
        }
        /* Last: nothing after it can fail, so the new list never needs to be freed here. */
        if (d->n_connectors > 0) {
                r = connectors_parse(d->connectors, d->n_connectors, &connectors, &n_connectors, reason);
                if (r < 0)
                        return r;
        }

        /* Commit. */
        if (change_resources) {
                for (size_t k = 0; k < n_dropped_resources; k++)
                        held_resource_entry_free(dropped_resources[k]);
                free(p->state.resources);
                p->state.resources = TAKE_PTR(merged_resources);
                p->state.n_resources = n_merged_resources;
                free(p->state.view);
                p->state.view = TAKE_PTR(view);
                entry_list_disarm(&resources);
        }
        if (change_memberships) {
                for (size_t k = 0; k < n_dropped_memberships; k++)
                        membership_entry_free(dropped_memberships[k]);
                free(p->state.memberships);
                p->state.memberships = TAKE_PTR(merged_memberships);
                p->state.n_memberships = n_merged_memberships;
                entry_list_disarm(&memberships);
        }
        if (d->n_connectors > 0) {
                connectors_free(p->state.connectors, p->state.n_connectors);
                p->state.connectors = connectors;
                p->state.n_connectors = n_connectors;
        }
        p->revision = d->revision;
        return 0;
}

int agent_policy_apply_delta(AgentPolicy *p, const Ztna__V1__PolicyDelta *d, const char **ret_reason) {
        const char *reason = NULL;
        int r;

        assert(p);

        r = apply_delta(p, d, &reason);
        if (r < 0) {
                log_debug("Refusing policy delta: %s", reason ?: strerror(-r));
                if (ret_reason)
                        *ret_reason = r == -ENOMEM ? NULL : reason;
                return r;
        }
        log_debug("Policy delta to revision %" PRIu64 ": %zu resources, %zu tunnelers, %zu connectors.",
                  p->revision, p->state.n_resources, p->state.n_memberships, p->state.n_connectors);
        return 0;
}

uint64_t agent_policy_revision(const AgentPolicy *p) {
        assert(p);
        return p->revision;
}

bool agent_policy_has_snapshot(const AgentPolicy *p) {
        assert(p);
        return p->has_snapshot;
}

size_t agent_policy_n_resources(const AgentPolicy *p) {
        assert(p);
        return p->state.n_resources;
}

int agent_policy_decide(const AgentPolicy *p, const char *tunneler_spiffe_id, const char *host,
                        uint16_t port, ResourceProtocol protocol, const PolicyResource **ret_resource) {
        const Membership *m = NULL;

        assert(p);
        assert(host);

        if (tunneler_spiffe_id)
                m = (const Membership *) entries_find(p->state.memberships, p->state.n_memberships,
                                                      tunneler_spiffe_id);
        return policy_decide(p->state.view, p->state.n_resources, host, port, protocol, m ? m->groups : NULL,
                             ret_resource);
}

static bool resource_covers(const PolicyResource *r, uint16_t port, ResourceProtocol protocol) {
        return (r->protocol == RESOURCE_PROTOCOL_ANY || r->protocol == protocol) &&
                port_set_contains(&r->ports, port);
}

/* Like policy_decide() without groups (a tunneler holds only what it is granted): only the most specific
 * address matches count, so the tunneler never dials for a resource a more specific one shadows on the
 * connector. An alias names one resource exactly and is looked at first. */
const PolicyResource *agent_policy_find_resource(const AgentPolicy *p, const char *host, uint16_t port,
                                                 ResourceProtocol protocol) {
        const PolicyResource *best = NULL;
        int best_specificity = 0;
        ResourceAddress name;
        bool alias_seen = false;

        assert(p);
        assert(host);

        if (resource_address_parse(host, &name, NULL) >= 0 && name.kind == RESOURCE_ADDRESS_FQDN)
                for (size_t k = 0; k < p->state.n_resources; k++) {
                        const HeldResource *h = (const HeldResource *) p->state.resources[k];

                        if (!h->alias || !streq(h->alias, name.name))
                                continue;
                        if (resource_covers(&p->state.view[k], port, protocol))
                                return &p->state.view[k];
                        alias_seen = true;
                }
        if (alias_seen)
                return NULL;

        for (size_t k = 0; k < p->state.n_resources; k++) {
                const PolicyResource *r = &p->state.view[k];
                int s;

                s = resource_address_match(&r->address, host);
                if (s < 0)
                        return NULL;
                if (s == 0 || s < best_specificity)
                        continue;
                if (s > best_specificity) {
                        best_specificity = s;
                        best = NULL;
                }
                if (!best && resource_covers(r, port, protocol))
                        best = r;
        }
        return best;
}

const char *agent_policy_resource_network(const AgentPolicy *p, const char *resource_name) {
        const HeldResource *h;

        assert(p);

        if (!resource_name)
                return NULL;
        h = (const HeldResource *) entries_find(p->state.resources, p->state.n_resources, resource_name);
        return h ? h->network : NULL;
}

size_t agent_policy_connectors(const AgentPolicy *p, const char *network, AgentPolicyConnector *ret,
                               size_t max) {
        size_t n = 0;

        assert(p);
        assert(ret || max == 0);

        if (!network)
                return 0;
        for (size_t k = 0; k < p->state.n_connectors && n < max; k++) {
                const HeldConnector *c = &p->state.connectors[k];

                if (!streq(c->remote_network, network))
                        continue;
                ret[n++] = (AgentPolicyConnector) {
                        .spiffe_id = c->spiffe_id,
                        .address = c->address,
                        .remote_network = c->remote_network,
                };
        }
        return n;
}
