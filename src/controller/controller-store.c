/* SPDX-License-Identifier: Apache-2.0 */

/* The backend-independent half of the store: argument validation at the boundary of every function, the
 * dispatch to the backend's vtable, destructors, enum string tables and the enrollment decision. Keeping
 * the validation and the enrollment rules here means a second backend cannot get them wrong. */

#include <arpa/inet.h>
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "controller-store-internal.h"
#include "log.h"
#include "policy.h"
#include "string-util.h"
#include "strv.h"

/* RFC 5280 §4.1.2.2: serial numbers are at most 20 octets. */
#define CERT_SERIAL_HEX_MAX 40
/* Times are stored as signed 64-bit integers (SQL BIGINT). */
#define STORE_TIME_MAX ((usec_t) INT64_MAX)

static const char *const ca_kind_table[_STORE_CA_KIND_MAX] = {
        [STORE_CA_ROOT] = "root",
        [STORE_CA_ISSUING] = "issuing",
};

static const char *const ca_state_table[_STORE_CA_STATE_MAX] = {
        [STORE_CA_STAGED] = "staged",
        [STORE_CA_ACTIVE] = "active",
        [STORE_CA_RETIRING] = "retiring",
        [STORE_CA_RETIRED] = "retired",
};

const char *store_ca_kind_to_string(StoreCaKind k) {
        if (k < 0 || k >= _STORE_CA_KIND_MAX)
                return NULL;
        return ca_kind_table[k];
}

StoreCaKind store_ca_kind_from_string(const char *s) {
        if (!s)
                return _STORE_CA_KIND_INVALID;
        for (StoreCaKind k = 0; k < _STORE_CA_KIND_MAX; k++)
                if (streq(s, ca_kind_table[k]))
                        return k;
        return _STORE_CA_KIND_INVALID;
}

const char *store_ca_state_to_string(StoreCaState s) {
        if (s < 0 || s >= _STORE_CA_STATE_MAX)
                return NULL;
        return ca_state_table[s];
}

StoreCaState store_ca_state_from_string(const char *s) {
        if (!s)
                return _STORE_CA_STATE_INVALID;
        for (StoreCaState t = 0; t < _STORE_CA_STATE_MAX; t++)
                if (streq(s, ca_state_table[t]))
                        return t;
        return _STORE_CA_STATE_INVALID;
}

static const char *const scope_table[_STORE_SCOPE_MAX] = {
        [STORE_SCOPE_READ] = "read",
        [STORE_SCOPE_READ_WRITE] = "read-write",
};

const char *store_scope_to_string(StoreScope s) {
        if (s < 0 || s >= _STORE_SCOPE_MAX)
                return NULL;
        return scope_table[s];
}

StoreScope store_scope_from_string(const char *s) {
        if (!s)
                return _STORE_SCOPE_INVALID;
        for (StoreScope t = 0; t < _STORE_SCOPE_MAX; t++)
                if (streq(s, scope_table[t]))
                        return t;
        return _STORE_SCOPE_INVALID;
}

bool store_admin_name_is_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strnlen(name, STORE_ADMIN_NAME_MAX + 1);
        if (n == 0 || n > STORE_ADMIN_NAME_MAX)
                return false;
        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789", name[0]))
                return false;
        return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._@-") == n;
}

bool store_ca_state_transition_is_valid(StoreCaState from, StoreCaState to) {
        if (from < 0 || from >= _STORE_CA_STATE_MAX || to < 0 || to >= _STORE_CA_STATE_MAX)
                return false;
        /* The enum is declared in lifecycle order. */
        return to >= from;
}

/* Destructors */

StoreToken *store_token_free(StoreToken *t) {
        if (!t)
                return NULL;
        free(t->bound_id);
        free(t->remote_network);
        strv_free(t->groups);
        free(t->created_by);
        free(t->used_by);
        return mfree(t);
}

void store_token_array_free(StoreToken **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_token_free(a[i]);
        free(a);
}

StoreAgent *store_agent_free(StoreAgent *a) {
        if (!a)
                return NULL;
        free(a->spiffe_id);
        free(a->id);
        free(a->public_key);
        free(a->version);
        free(a->private_ip);
        strv_free(a->labels);
        free(a->remote_network);
        strv_free(a->groups);
        free(a->via);
        free(a->cert_serial);
        free(a->revocation_reason);
        return mfree(a);
}

void store_agent_array_free(StoreAgent **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_agent_free(a[i]);
        free(a);
}

StoreCa *store_ca_free(StoreCa *c) {
        if (!c)
                return NULL;
        free(c->certificate);
        /* Sealed, but there is no reason to leave even ciphertext of a CA key lying around. */
        erase_and_free(c->sealed_key, c->sealed_key_size);
        return mfree(c);
}

void store_ca_array_free(StoreCa **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_ca_free(a[i]);
        free(a);
}

StoreAuditEvent *store_audit_event_free(StoreAuditEvent *e) {
        if (!e)
                return NULL;
        free(e->event);
        free(e->actor);
        free(e->subject);
        free(e->detail);
        return mfree(e);
}

void store_audit_event_array_free(StoreAuditEvent **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_audit_event_free(a[i]);
        free(a);
}

StoreNetwork *store_network_free(StoreNetwork *n) {
        if (!n)
                return NULL;
        free(n->name);
        free(n->description);
        return mfree(n);
}

void store_network_array_free(StoreNetwork **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_network_free(a[i]);
        free(a);
}

StoreResource *store_resource_free(StoreResource *r) {
        if (!r)
                return NULL;
        free(r->name);
        free(r->address);
        free(r->protocol);
        free(r->ports);
        free(r->remote_network);
        free(r->alias);
        strv_free(r->groups);
        return mfree(r);
}

void store_resource_array_free(StoreResource **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_resource_free(a[i]);
        free(a);
}

StoreGroup *store_group_free(StoreGroup *g) {
        if (!g)
                return NULL;
        free(g->name);
        free(g->description);
        strv_free(g->members);
        strv_free(g->resources);
        return mfree(g);
}

void store_group_array_free(StoreGroup **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_group_free(a[i]);
        free(a);
}

void store_policy_array_free(StorePolicy *a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++) {
                free(a[i].group);
                free(a[i].resource);
        }
        free(a);
}

StoreAdmin *store_admin_free(StoreAdmin *a) {
        if (!a)
                return NULL;
        free(a->name);
        /* A verifier, not the password; wiped all the same, as nobody needs it once freed. */
        erase_and_free_string(a->password_hash);
        free(a->created_by);
        return mfree(a);
}

void store_admin_array_free(StoreAdmin **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_admin_free(a[i]);
        free(a);
}

StoreApiToken *store_api_token_free(StoreApiToken *t) {
        if (!t)
                return NULL;
        free(t->name);
        free(t->admin);
        return mfree(t);
}

void store_api_token_array_free(StoreApiToken **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_api_token_free(a[i]);
        free(a);
}

StoreSession *store_session_free(StoreSession *s) {
        if (!s)
                return NULL;
        free(s->admin);
        free(s->address);
        free(s->user_agent);
        return mfree(s);
}

void store_session_array_free(StoreSession **a, size_t n) {
        if (!a)
                return;
        for (size_t i = 0; i < n; i++)
                store_session_free(a[i]);
        free(a);
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        s->vtable->free(s);
        return NULL;
}

int store_array_grow(void **array, size_t *allocated, size_t n, size_t element_size) {
        size_t k;
        void *p;

        assert(array);
        assert(allocated);
        assert(element_size > 0);

        if (n < *allocated)
                return 0;
        if (n >= STORE_LIST_MAX)
                return -E2BIG;
        k = MIN(MAX(n * 2, (size_t) 16), (size_t) STORE_LIST_MAX);
        p = reallocarray(*array, k, element_size);
        if (!p)
                return -ENOMEM;
        *array = p;
        *allocated = k;
        return 0;
}

/* Validation */

/* A text field: NULL (when optional) or 1..STORE_STRING_MAX bytes of UTF-8. */
static int text_validate(const char *field, const char *s, bool required) {
        size_t n;

        if (!s) {
                if (required)
                        return log_debug_errno(EINVAL, "Store: %s is required.", field);
                return 0;
        }
        n = strnlen(s, STORE_STRING_MAX + 1);
        if (n == 0)
                return log_debug_errno(EINVAL, "Store: %s is empty.", field);
        if (n > STORE_STRING_MAX)
                return log_debug_errno(E2BIG, "Store: %s is longer than %d bytes.", field, STORE_STRING_MAX);
        if (!utf8_is_valid(s, n))
                return log_debug_errno(EINVAL, "Store: %s is not valid UTF-8.", field);
        return 0;
}

/* groups (plain names) or labels ("key=value", unique keys): at most max entries, each a text field,
 * no duplicates. */
static int strv_validate(const char *field, char *const *l, size_t max, bool labels) {
        size_t n = 0;
        int r;

        STRV_FOREACH(i, l) {
                if (n >= max)
                        return log_debug_errno(E2BIG, "Store: more than %zu %s.", max, field);
                r = text_validate(field, *i, true);
                if (r < 0)
                        return r;
                if (labels) {
                        const char *eq = strchr(*i, '=');

                        if (!eq || eq == *i)
                                return log_debug_errno(EINVAL, "Store: %s entry is not key=value.", field);
                        for (char *const *j = l; j < i; j++)
                                if (strneq(*j, *i, (size_t) (eq - *i) + 1))
                                        return log_debug_errno(EINVAL, "Store: duplicate key in %s.", field);
                } else
                        for (char *const *j = l; j < i; j++)
                                if (streq(*j, *i))
                                        return log_debug_errno(EINVAL, "Store: duplicate entry in %s.",
                                                               field);
                n++;
        }
        return 0;
}

static int time_validate(const char *field, usec_t t, bool required) {
        if (required && t == 0)
                return log_debug_errno(EINVAL, "Store: %s is required.", field);
        if (t > STORE_TIME_MAX)
                return log_debug_errno(EINVAL, "Store: %s is out of range.", field);
        return 0;
}

static int blob_validate(const char *field, const uint8_t *p, size_t size, bool required) {
        if (!p != (size == 0))
                return log_debug_errno(EINVAL, "Store: %s has an inconsistent size.", field);
        if (required && !p)
                return log_debug_errno(EINVAL, "Store: %s is required.", field);
        if (size > STORE_BLOB_MAX)
                return log_debug_errno(E2BIG, "Store: %s is larger than %d bytes.", field, STORE_BLOB_MAX);
        return 0;
}

static bool memory_is_zero(const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                if (b[i] != 0)
                        return false;
        return true;
}

static bool role_is_agent(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR || role == SPIFFE_ROLE_TUNNELER;
}

/* A ztna SPIFFE ID in canonical spelling (lookups are exact string matches). want_role
 * _SPIFFE_ROLE_INVALID: any agent role. want_name NULL: any. */
static int spiffe_validate(const char *field, const char *s, bool required, SpiffeRole want_role,
                           const char *want_name) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        const char *reason = NULL;
        int r;

        r = text_validate(field, s, required);
        if (r < 0 || !s)
                return r;
        r = spiffe_id_from_string_ztna(s, &id, &reason);
        if (r < 0)
                return log_debug_errno(r, "Store: %s is not a ztna SPIFFE ID: %s", field, strna(reason));
        if (!streq(spiffe_id_to_string(id), s))
                return log_debug_errno(EINVAL, "Store: %s is not in canonical form.", field);
        if (want_role >= 0 ? id->role != want_role : !role_is_agent(id->role))
                return log_debug_errno(EINVAL, "Store: %s has the wrong role.", field);
        if (want_name && !streq(id->name, want_name))
                return log_debug_errno(EINVAL, "Store: %s does not match the agent id.", field);
        return 0;
}

static int ip_validate(const char *field, const char *s) {
        uint8_t buf[sizeof(struct in6_addr)];
        int r;

        r = text_validate(field, s, false);
        if (r < 0 || !s)
                return r;
        if (inet_pton(AF_INET, s, buf) != 1 && inet_pton(AF_INET6, s, buf) != 1)
                return log_debug_errno(EINVAL, "Store: %s is not an IP address.", field);
        return 0;
}

static int serial_validate(const char *field, const char *s, bool required) {
        size_t n;

        if (!s)
                return required ? log_debug_errno(EINVAL, "Store: %s is required.", field) : 0;
        n = strnlen(s, CERT_SERIAL_HEX_MAX + 1);
        if (n == 0 || n > CERT_SERIAL_HEX_MAX || strspn(s, "0123456789abcdefABCDEF") != n)
                return log_debug_errno(EINVAL, "Store: %s is not 1..%d hex digits.", field,
                                       CERT_SERIAL_HEX_MAX);
        return 0;
}

/* A network, resource or group name (policy.h): stored verbatim, so quotes and the like are fine. */
static int name_validate(const char *field, const char *s) {
        int r;

        r = text_validate(field, s, true);
        if (r < 0)
                return r;
        if (!policy_name_is_valid(s))
                return log_debug_errno(EINVAL,
                                       "Store: %s is not a valid name (1..%u bytes of text, no control "
                                       "characters, no surrounding whitespace).",
                                       field, POLICY_NAME_MAX);
        return 0;
}

/* Optional free text shown in listings: no control characters. */
static int description_validate(const char *field, const char *s) {
        int r;

        r = text_validate(field, s, false);
        if (r < 0 || !s)
                return r;
        if (!string_is_valid_text(s, STORE_STRING_MAX))
                return log_debug_errno(EINVAL, "Store: %s contains control characters.", field);
        return 0;
}

/* A resource address in the canonical text policy.h produces; want_kind _RESOURCE_ADDRESS_KIND_INVALID:
 * any kind. The store keeps only canonical text so that equal addresses compare equal everywhere. */
static int address_validate(const char *field, const char *s, bool required, ResourceAddressKind want_kind) {
        char buf[POLICY_ADDRESS_STRING_MAX];
        const char *reason = NULL;
        ResourceAddress a;
        int r;

        r = text_validate(field, s, required);
        if (r < 0 || !s)
                return r;
        r = resource_address_parse(s, &a, &reason);
        if (r < 0)
                return log_debug_errno(r, "Store: %s '%s' is invalid: %s", field, s, strna(reason));
        if (want_kind >= 0 && a.kind != want_kind)
                return log_debug_errno(EINVAL, "Store: %s '%s' is not a plain DNS name.", field, s);
        if (!streq(resource_address_to_string(&a, buf), s))
                return log_debug_errno(EINVAL, "Store: %s '%s' is not in canonical form ('%s').", field, s,
                                       buf);
        return 0;
}

static int ports_validate(const char *field, const char *s) {
        char buf[POLICY_PORTS_STRING_MAX];
        const char *reason = NULL;
        PortSet p;
        int r;

        r = text_validate(field, s, true);
        if (r < 0)
                return r;
        r = port_set_parse(s, &p, &reason);
        if (r < 0)
                return log_debug_errno(r, "Store: %s '%s' is invalid: %s", field, s, strna(reason));
        if (!streq(port_set_to_string(&p, buf), s))
                return log_debug_errno(EINVAL, "Store: %s '%s' is not in canonical form ('%s').", field, s,
                                       buf);
        return 0;
}

static int protocol_validate(const char *field, const char *s) {
        int r;

        r = text_validate(field, s, true);
        if (r < 0)
                return r;
        if (!streq_ptr(resource_protocol_to_string(resource_protocol_from_string(s)), s))
                return log_debug_errno(EINVAL, "Store: %s '%s' is not one of any, tcp, udp.", field, s);
        return 0;
}

/* A resource as create and update receive it. groups and the times are the store's to fill. */
static int resource_validate(const StoreResource *res) {
        int r;

        r = name_validate("resource name", res->name);
        if (r < 0)
                return r;
        r = address_validate("resource address", res->address, true, _RESOURCE_ADDRESS_KIND_INVALID);
        if (r < 0)
                return r;
        r = protocol_validate("resource protocol", res->protocol);
        if (r < 0)
                return r;
        r = ports_validate("resource ports", res->ports);
        if (r < 0)
                return r;
        r = name_validate("resource remote network", res->remote_network);
        if (r < 0)
                return r;
        return address_validate("resource alias", res->alias, false, RESOURCE_ADDRESS_FQDN);
}

static int token_validate(const StoreToken *t) {
        int r;

        if (memory_is_zero(t->id, sizeof(t->id)) || memory_is_zero(t->secret_hash, sizeof(t->secret_hash)))
                return log_debug_errno(EINVAL, "Store: token id or secret hash is unset.");
        if (!role_is_agent(t->role))
                return log_debug_errno(EINVAL, "Store: token role must be connector or tunneler.");
        if (t->bound_id && !ztna_id_is_valid(t->bound_id))
                return log_debug_errno(EINVAL, "Store: token bound id is not a valid agent id.");
        r = text_validate("token remote network", t->remote_network, false);
        if (r < 0)
                return r;
        r = strv_validate("token groups", t->groups, STORE_GROUPS_MAX, false);
        if (r < 0)
                return r;
        /* Connectors join a network, tunnelers join groups (DESIGN.md §5). */
        if (t->remote_network && t->role != SPIFFE_ROLE_CONNECTOR)
                return log_debug_errno(EINVAL, "Store: only connector tokens carry a remote network.");
        if (strv_length(t->groups) > 0 && t->role != SPIFFE_ROLE_TUNNELER)
                return log_debug_errno(EINVAL, "Store: only tunneler tokens carry groups.");
        r = text_validate("token creator", t->created_by, true);
        if (r < 0)
                return r;
        r = time_validate("token creation time", t->created_at, true);
        if (r < 0)
                return r;
        r = time_validate("token expiry", t->expires_at, true);
        if (r < 0)
                return r;
        if (t->expires_at <= t->created_at)
                return log_debug_errno(EINVAL, "Store: token expires before it is created.");
        /* A token is born unused; only store_enroll() and store_token_revoke() change that. */
        if (t->used_at != 0 || t->used_by || t->revoked_at != 0)
                return log_debug_errno(EINVAL, "Store: a new token cannot be used or revoked already.");
        return 0;
}

/* The agent as store_enroll() receives it: the fields the agent or the issuing code supplies. Fields the
 * store sets itself are not looked at. */
static int agent_validate_for_enroll(const StoreAgent *a) {
        int r;

        if (!role_is_agent(a->role))
                return log_debug_errno(EINVAL, "Store: agent role must be connector or tunneler.");
        if (!a->id || !ztna_id_is_valid(a->id))
                return log_debug_errno(EINVAL, "Store: agent id is not a valid agent id.");
        r = spiffe_validate("agent SPIFFE ID", a->spiffe_id, true, a->role, a->id);
        if (r < 0)
                return r;
        r = blob_validate("agent public key", a->public_key, a->public_key_size, true);
        if (r < 0)
                return r;
        r = text_validate("agent version", a->version, false);
        if (r < 0)
                return r;
        r = ip_validate("agent private IP", a->private_ip);
        if (r < 0)
                return r;
        r = strv_validate("agent labels", a->labels, STORE_LABELS_MAX, true);
        if (r < 0)
                return r;
        r = spiffe_validate("agent via", a->via, false, SPIFFE_ROLE_CONNECTOR, NULL);
        if (r < 0)
                return r;
        r = serial_validate("agent certificate serial", a->cert_serial, false);
        if (r < 0)
                return r;
        return time_validate("agent certificate expiry", a->cert_not_after, false);
}

static int ca_validate(const StoreCa *ca) {
        int r;

        if (memory_is_zero(ca->fingerprint, sizeof(ca->fingerprint)))
                return log_debug_errno(EINVAL, "Store: CA fingerprint is unset.");
        if (!store_ca_kind_to_string(ca->kind) || !store_ca_state_to_string(ca->state))
                return log_debug_errno(EINVAL, "Store: CA kind or state is invalid.");
        r = blob_validate("CA certificate", ca->certificate, ca->certificate_size, true);
        if (r < 0)
                return r;
        r = blob_validate("CA sealed key", ca->sealed_key, ca->sealed_key_size, false);
        if (r < 0)
                return r;
        if ((ca->kind == STORE_CA_ROOT) != memory_is_zero(ca->parent, sizeof(ca->parent)))
                return log_debug_errno(EINVAL, "Store: an issuing CA needs a parent, a root CA has none.");
        r = time_validate("CA notBefore", ca->not_before, false);
        if (r < 0)
                return r;
        r = time_validate("CA notAfter", ca->not_after, true);
        if (r < 0)
                return r;
        if (ca->not_after <= ca->not_before)
                return log_debug_errno(EINVAL, "Store: CA validity period is empty.");
        return time_validate("CA creation time", ca->created_at, true);
}

static int heartbeat_validate(const StoreHeartbeat *hb) {
        int r;

        r = spiffe_validate("heartbeat SPIFFE ID", hb->spiffe_id, true, _SPIFFE_ROLE_INVALID, NULL);
        if (r < 0)
                return r;
        r = time_validate("heartbeat time", hb->last_seen, true);
        if (r < 0)
                return r;
        r = text_validate("heartbeat version", hb->version, false);
        if (r < 0)
                return r;
        r = ip_validate("heartbeat private IP", hb->private_ip);
        if (r < 0)
                return r;
        return spiffe_validate("heartbeat via", hb->via, false, SPIFFE_ROLE_CONNECTOR, NULL);
}

static int audit_event_validate(const StoreAuditEvent *e) {
        int r;

        r = time_validate("audit time", e->time, true);
        if (r < 0)
                return r;
        r = text_validate("audit event", e->event, true);
        if (r < 0)
                return r;
        r = text_validate("audit actor", e->actor, true);
        if (r < 0)
                return r;
        r = text_validate("audit subject", e->subject, false);
        if (r < 0)
                return r;
        return text_validate("audit detail", e->detail, false);
}

static int audit_filter_validate(const StoreAuditFilter *f) {
        int r;

        if (f->limit == 0)
                return log_debug_errno(EINVAL, "Store: audit page size must be at least 1.");
        if (f->limit > STORE_AUDIT_PAGE_MAX)
                return log_debug_errno(E2BIG, "Store: audit page size is larger than %d.",
                                       STORE_AUDIT_PAGE_MAX);
        r = time_validate("audit since", f->since, false);
        if (r < 0)
                return r;
        r = time_validate("audit until", f->until, false);
        if (r < 0)
                return r;
        if (f->since != 0 && f->until != 0 && f->until <= f->since)
                return log_debug_errno(EINVAL, "Store: audit time range is empty.");
        if (f->before_seq < 0)
                return log_debug_errno(EINVAL, "Store: audit before_seq is negative.");
        r = text_validate("audit event filter", f->event, false);
        if (r < 0)
                return r;
        r = text_validate("audit actor filter", f->actor, false);
        if (r < 0)
                return r;
        return text_validate("audit subject filter", f->subject, false);
}

static int admin_name_validate(const char *field, const char *s) {
        int r;

        r = text_validate(field, s, true);
        if (r < 0)
                return r;
        if (!store_admin_name_is_valid(s))
                return log_debug_errno(EINVAL,
                                       "Store: %s is not a valid admin name (1..%d bytes of a-z 0-9 . _ @ -, "
                                       "starting with a letter or digit).",
                                       field, STORE_ADMIN_NAME_MAX);
        return 0;
}

/* An argon2id encoded string: the store does not verify it (controller-auth does), but it holds nothing
 * else, so a plaintext password can never be stored by mistake. */
static int password_hash_validate(const char *s) {
        size_t n;

        if (!s)
                return log_debug_errno(EINVAL, "Store: password hash is required.");
        n = strnlen(s, STORE_PASSWORD_HASH_MAX + 1);
        if (n > STORE_PASSWORD_HASH_MAX)
                return log_debug_errno(E2BIG, "Store: password hash is longer than %d bytes.",
                                       STORE_PASSWORD_HASH_MAX);
        if (!startswith(s, "$argon2id$v=19$m=") || !string_is_printable_ascii(s) || strchr(s, ' '))
                return log_debug_errno(EINVAL, "Store: password hash is not an argon2id encoded string.");
        return 0;
}

static int credential_id_validate(const char *field, const uint8_t id[STORE_CREDENTIAL_ID_SIZE],
                                  const uint8_t hash[STORE_SECRET_HASH_SIZE]) {
        if (memory_is_zero(id, STORE_CREDENTIAL_ID_SIZE))
                return log_debug_errno(EINVAL, "Store: %s id is unset.", field);
        if (hash && memory_is_zero(hash, STORE_SECRET_HASH_SIZE))
                return log_debug_errno(EINVAL, "Store: %s secret hash is unset.", field);
        return 0;
}

static int admin_validate(const StoreAdmin *a) {
        int r;

        r = admin_name_validate("admin name", a->name);
        if (r < 0)
                return r;
        r = password_hash_validate(a->password_hash);
        if (r < 0)
                return r;
        r = text_validate("admin creator", a->created_by, true);
        if (r < 0)
                return r;
        r = time_validate("admin creation time", a->created_at, true);
        if (r < 0)
                return r;
        /* Born enabled and without a login; the store sets password_changed_at. */
        if (a->disabled_at != 0 || a->last_login_at != 0)
                return log_debug_errno(EINVAL, "Store: a new admin cannot be disabled or have logged in.");
        return 0;
}

static int api_token_validate(const StoreApiToken *t) {
        int r;

        r = credential_id_validate("API token", t->id, t->secret_hash);
        if (r < 0)
                return r;
        r = text_validate("API token name", t->name, true);
        if (r < 0)
                return r;
        if (!string_is_valid_text(t->name, STORE_API_TOKEN_NAME_MAX))
                return log_debug_errno(EINVAL, "Store: API token name is longer than %d bytes or contains "
                                       "control characters.", STORE_API_TOKEN_NAME_MAX);
        r = admin_name_validate("API token admin", t->admin);
        if (r < 0)
                return r;
        if (!store_scope_to_string(t->scope))
                return log_debug_errno(EINVAL, "Store: API token scope is invalid.");
        r = time_validate("API token creation time", t->created_at, true);
        if (r < 0)
                return r;
        r = time_validate("API token expiry", t->expires_at, true);
        if (r < 0)
                return r;
        if (t->expires_at <= t->created_at)
                return log_debug_errno(EINVAL, "Store: API token expires before it is created.");
        if (t->last_used_at != 0 || t->revoked_at != 0)
                return log_debug_errno(EINVAL, "Store: a new API token cannot be used or revoked already.");
        return 0;
}

static int session_validate(const StoreSession *ses) {
        int r;

        r = credential_id_validate("session", ses->id, ses->secret_hash);
        if (r < 0)
                return r;
        if (memory_is_zero(ses->csrf_hash, sizeof(ses->csrf_hash)))
                return log_debug_errno(EINVAL, "Store: session CSRF hash is unset.");
        r = admin_name_validate("session admin", ses->admin);
        if (r < 0)
                return r;
        r = time_validate("session creation time", ses->created_at, true);
        if (r < 0)
                return r;
        r = time_validate("session expiry", ses->expires_at, true);
        if (r < 0)
                return r;
        r = time_validate("session last seen", ses->last_seen_at, true);
        if (r < 0)
                return r;
        if (ses->expires_at <= ses->created_at || ses->last_seen_at < ses->created_at)
                return log_debug_errno(EINVAL, "Store: session times are inconsistent.");
        r = ip_validate("session address", ses->address);
        if (r < 0)
                return r;
        r = text_validate("session user agent", ses->user_agent, false);
        if (r < 0)
                return r;
        if (ses->user_agent && !string_is_valid_text(ses->user_agent, STORE_USER_AGENT_MAX))
                return log_debug_errno(EINVAL, "Store: session user agent is longer than %d bytes or contains "
                                       "control characters.", STORE_USER_AGENT_MAX);
        return 0;
}

/* The enrollment decision */

static int refuse(int error, const char *reason, const char **ret_reason) {
        assert(error > 0);

        if (ret_reason)
                *ret_reason = reason;
        return -error;
}

int store_enroll_check_token(const StoreToken *token, const uint8_t secret_hash[TOKEN_HASH_SIZE],
                             const StoreAgent *agent, usec_t now, const char **ret_reason) {
        static const uint8_t no_token[TOKEN_HASH_SIZE] = {};
        bool match;

        assert(secret_hash);
        assert(agent);

        /* Compare even without a token, so an unknown id costs what a wrong secret costs. */
        match = token_hash_equal(token ? token->secret_hash : no_token, secret_hash);
        if (!token || !match)
                return refuse(ENOENT, STORE_REASON_INVALID_TOKEN, ret_reason);
        /* Past the secret the caller holds the token, so the precise reason is no leak. */
        if (token->revoked_at != 0)
                return refuse(EKEYREVOKED, STORE_REASON_REVOKED, ret_reason);
        if (now >= token->expires_at)
                return refuse(EKEYEXPIRED, STORE_REASON_EXPIRED, ret_reason);
        if (token->used_at != 0)
                return refuse(EALREADY, STORE_REASON_USED, ret_reason);
        if (token->role != agent->role)
                return refuse(EPERM, STORE_REASON_ROLE, ret_reason);
        if (token->bound_id && !streq(token->bound_id, agent->id))
                return refuse(EPERM, STORE_REASON_BOUND, ret_reason);
        return 0;
}

int store_enroll_check_agent(const StoreAgent *existing, const char **ret_reason) {
        if (!existing)
                return 0;
        if (existing->revoked_at == 0)
                return refuse(EEXIST, STORE_REASON_AGENT_EXISTS, ret_reason);
        return 1;
}

/* Dispatch */

int store_get_schema_version(Store *s, unsigned *ret) {
        assert(s);
        assert(ret);

        return s->vtable->get_schema_version(s, ret);
}

int store_meta_get(Store *s, const char *key, char **ret) {
        int r;

        assert(s);
        assert(ret);

        r = text_validate("metadata key", key, true);
        if (r < 0)
                return r;
        return s->vtable->meta_get(s, key, ret);
}

int store_meta_set(Store *s, const char *key, const char *value) {
        int r;

        assert(s);

        r = text_validate("metadata key", key, true);
        if (r < 0)
                return r;
        r = text_validate("metadata value", value, true);
        if (r < 0)
                return r;
        return s->vtable->meta_set(s, key, value);
}

int store_token_create(Store *s, const StoreToken *t) {
        int r;

        assert(s);
        assert(t);

        r = token_validate(t);
        if (r < 0)
                return r;
        return s->vtable->token_create(s, t);
}

int store_token_get(Store *s, const uint8_t id[TOKEN_ID_SIZE], StoreToken **ret) {
        assert(s);
        assert(id);
        assert(ret);

        return s->vtable->token_get(s, id, ret);
}

int store_token_list(Store *s, StoreToken ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->token_list(s, ret, ret_n);
}

int store_token_revoke(Store *s, const uint8_t id[TOKEN_ID_SIZE], usec_t now) {
        int r;

        assert(s);
        assert(id);

        r = time_validate("revocation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->token_revoke(s, id, now);
}

int store_enroll(Store *s, const uint8_t token_id[TOKEN_ID_SIZE], const uint8_t secret_hash[TOKEN_HASH_SIZE],
                 const StoreAgent *agent, usec_t now, StoreToken **ret_token, const char **ret_reason) {
        const char *reason = NULL;
        int r;

        assert(s);
        assert(token_id);
        assert(secret_hash);
        assert(agent);

        r = agent_validate_for_enroll(agent);
        if (r >= 0)
                r = time_validate("enrollment time", now, true);
        if (r < 0)
                return refuse(-r, STORE_REASON_INVALID_REQUEST, ret_reason);

        r = s->vtable->enroll(s, token_id, secret_hash, agent, now, ret_token, &reason);
        if (r < 0)
                return refuse(-r, reason ?: STORE_REASON_INTERNAL, ret_reason);
        return r;
}

int store_agent_get(Store *s, const char *spiffe_id, StoreAgent **ret) {
        int r;

        assert(s);
        assert(ret);

        r = spiffe_validate("agent SPIFFE ID", spiffe_id, true, _SPIFFE_ROLE_INVALID, NULL);
        if (r < 0)
                return r;
        return s->vtable->agent_get(s, spiffe_id, ret);
}

int store_agent_list(Store *s, SpiffeRole role, StoreAgent ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        if (role != _SPIFFE_ROLE_INVALID && !role_is_agent(role))
                return log_debug_errno(EINVAL, "Store: agents are connectors or tunnelers.");
        return s->vtable->agent_list(s, role, ret, ret_n);
}

int store_agent_update_certificate(Store *s, const char *spiffe_id, const uint8_t *public_key,
                                   size_t public_key_size, const char *cert_serial, usec_t cert_not_after) {
        int r;

        assert(s);

        r = spiffe_validate("agent SPIFFE ID", spiffe_id, true, _SPIFFE_ROLE_INVALID, NULL);
        if (r < 0)
                return r;
        r = blob_validate("agent public key", public_key, public_key_size, true);
        if (r < 0)
                return r;
        r = serial_validate("certificate serial", cert_serial, true);
        if (r < 0)
                return r;
        r = time_validate("certificate expiry", cert_not_after, true);
        if (r < 0)
                return r;
        return s->vtable->agent_update_certificate(s, spiffe_id, public_key, public_key_size, cert_serial,
                                                   cert_not_after);
}

int store_agent_revoke(Store *s, const char *spiffe_id, const char *reason, usec_t now) {
        int r;

        assert(s);

        r = spiffe_validate("agent SPIFFE ID", spiffe_id, true, _SPIFFE_ROLE_INVALID, NULL);
        if (r < 0)
                return r;
        r = text_validate("revocation reason", reason, false);
        if (r < 0)
                return r;
        r = time_validate("revocation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->agent_revoke(s, spiffe_id, reason, now);
}

int store_agents_touch(Store *s, const StoreHeartbeat *hb, size_t n) {
        int r;

        assert(s);
        assert(hb || n == 0);

        if (n > STORE_TOUCH_BATCH_MAX)
                return log_debug_errno(E2BIG, "Store: more than %d heartbeats in one batch.",
                                       STORE_TOUCH_BATCH_MAX);
        if (n == 0)
                return 0;
        /* All or nothing: one bad entry refuses the batch before anything is written. */
        for (size_t i = 0; i < n; i++) {
                r = heartbeat_validate(hb + i);
                if (r < 0)
                        return r;
        }
        return s->vtable->agents_touch(s, hb, n);
}

int store_ca_put(Store *s, const StoreCa *ca) {
        int r;

        assert(s);
        assert(ca);

        r = ca_validate(ca);
        if (r < 0)
                return r;
        return s->vtable->ca_put(s, ca);
}

int store_ca_list(Store *s, StoreCa ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->ca_list(s, ret, ret_n);
}

int store_ca_set_state(Store *s, const uint8_t fingerprint[32], StoreCaState state) {
        assert(s);
        assert(fingerprint);

        if (!store_ca_state_to_string(state))
                return log_debug_errno(EINVAL, "Store: invalid CA state.");
        return s->vtable->ca_set_state(s, fingerprint, state);
}

int store_network_create(Store *s, const char *name, const char *description, usec_t now) {
        int r;

        assert(s);

        r = name_validate("network name", name);
        if (r < 0)
                return r;
        r = description_validate("network description", description);
        if (r < 0)
                return r;
        r = time_validate("creation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->network_create(s, name, description, now);
}

int store_network_delete(Store *s, const char *name) {
        int r;

        assert(s);

        r = name_validate("network name", name);
        if (r < 0)
                return r;
        return s->vtable->network_delete(s, name);
}

int store_network_list(Store *s, StoreNetwork ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->network_list(s, ret, ret_n);
}

int store_resource_create(Store *s, const StoreResource *res, usec_t now) {
        int r;

        assert(s);
        assert(res);

        r = resource_validate(res);
        if (r < 0)
                return r;
        r = time_validate("creation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->resource_create(s, res, now);
}

int store_resource_update(Store *s, const StoreResource *res, usec_t now) {
        int r;

        assert(s);
        assert(res);

        r = resource_validate(res);
        if (r < 0)
                return r;
        r = time_validate("update time", now, true);
        if (r < 0)
                return r;
        return s->vtable->resource_update(s, res, now);
}

int store_resource_delete(Store *s, const char *name) {
        int r;

        assert(s);

        r = name_validate("resource name", name);
        if (r < 0)
                return r;
        return s->vtable->resource_delete(s, name);
}

int store_resource_get(Store *s, const char *name, StoreResource **ret) {
        int r;

        assert(s);
        assert(ret);

        r = name_validate("resource name", name);
        if (r < 0)
                return r;
        return s->vtable->resource_get(s, name, ret);
}

int store_resource_list(Store *s, const char *network, StoreResource ***ret, size_t *ret_n) {
        int r;

        assert(s);
        assert(ret);
        assert(ret_n);

        if (network) {
                r = name_validate("network name", network);
                if (r < 0)
                        return r;
        }
        return s->vtable->resource_list(s, network, ret, ret_n);
}

int store_group_create(Store *s, const char *name, const char *description, usec_t now) {
        int r;

        assert(s);

        r = name_validate("group name", name);
        if (r < 0)
                return r;
        r = description_validate("group description", description);
        if (r < 0)
                return r;
        r = time_validate("creation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->group_create(s, name, description, now);
}

int store_group_delete(Store *s, const char *name) {
        int r;

        assert(s);

        r = name_validate("group name", name);
        if (r < 0)
                return r;
        return s->vtable->group_delete(s, name);
}

int store_group_get(Store *s, const char *name, StoreGroup **ret) {
        int r;

        assert(s);
        assert(ret);

        r = name_validate("group name", name);
        if (r < 0)
                return r;
        return s->vtable->group_get(s, name, ret);
}

int store_group_list(Store *s, StoreGroup ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->group_list(s, ret, ret_n);
}

/* Only tunnelers hold groups (DESIGN.md §5); the SPIFFE ID says the role, so a connector's ID is refused
 * here whether it is enrolled or not. */
static int membership_validate(const char *group, const char *spiffe_id) {
        int r;

        r = name_validate("group name", group);
        if (r < 0)
                return r;
        return spiffe_validate("group member", spiffe_id, true, SPIFFE_ROLE_TUNNELER, NULL);
}

int store_group_add_member(Store *s, const char *group, const char *spiffe_id) {
        int r;

        assert(s);

        r = membership_validate(group, spiffe_id);
        if (r < 0)
                return r;
        return s->vtable->group_add_member(s, group, spiffe_id);
}

int store_group_remove_member(Store *s, const char *group, const char *spiffe_id) {
        int r;

        assert(s);

        r = membership_validate(group, spiffe_id);
        if (r < 0)
                return r;
        return s->vtable->group_remove_member(s, group, spiffe_id);
}

int store_policy_create(Store *s, const char *group, const char *resource, usec_t now) {
        int r;

        assert(s);

        r = name_validate("policy group", group);
        if (r < 0)
                return r;
        r = name_validate("policy resource", resource);
        if (r < 0)
                return r;
        r = time_validate("creation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->policy_create(s, group, resource, now);
}

int store_policy_delete(Store *s, const char *group, const char *resource) {
        int r;

        assert(s);

        r = name_validate("policy group", group);
        if (r < 0)
                return r;
        r = name_validate("policy resource", resource);
        if (r < 0)
                return r;
        return s->vtable->policy_delete(s, group, resource);
}

int store_policy_list(Store *s, StorePolicy **ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->policy_list(s, ret, ret_n);
}

int store_policy_revision(Store *s, uint64_t *ret) {
        assert(s);
        assert(ret);

        return s->vtable->policy_revision(s, ret);
}

int store_admin_create(Store *s, const StoreAdmin *a) {
        int r;

        assert(s);
        assert(a);

        r = admin_validate(a);
        if (r < 0)
                return r;
        return s->vtable->admin_create(s, a);
}

int store_admin_get(Store *s, const char *name, StoreAdmin **ret) {
        int r;

        assert(s);
        assert(ret);

        r = admin_name_validate("admin name", name);
        if (r < 0)
                return r;
        return s->vtable->admin_get(s, name, ret);
}

int store_admin_list(Store *s, StoreAdmin ***ret, size_t *ret_n) {
        assert(s);
        assert(ret);
        assert(ret_n);

        return s->vtable->admin_list(s, ret, ret_n);
}

int store_admin_delete(Store *s, const char *name) {
        int r;

        assert(s);

        r = admin_name_validate("admin name", name);
        if (r < 0)
                return r;
        return s->vtable->admin_delete(s, name);
}

int store_admin_set_password(Store *s, const char *name, const char *password_hash, usec_t now) {
        int r;

        assert(s);

        r = admin_name_validate("admin name", name);
        if (r < 0)
                return r;
        r = password_hash_validate(password_hash);
        if (r < 0)
                return r;
        r = time_validate("password change time", now, true);
        if (r < 0)
                return r;
        return s->vtable->admin_set_password(s, name, password_hash, now);
}

int store_admin_set_disabled(Store *s, const char *name, usec_t disabled_at) {
        int r;

        assert(s);

        r = admin_name_validate("admin name", name);
        if (r < 0)
                return r;
        r = time_validate("admin disable time", disabled_at, false);
        if (r < 0)
                return r;
        return s->vtable->admin_set_disabled(s, name, disabled_at);
}

int store_admin_touch_login(Store *s, const char *name, usec_t now) {
        int r;

        assert(s);

        r = admin_name_validate("admin name", name);
        if (r < 0)
                return r;
        r = time_validate("login time", now, true);
        if (r < 0)
                return r;
        return s->vtable->admin_touch_login(s, name, now);
}

int store_api_token_create(Store *s, const StoreApiToken *t) {
        int r;

        assert(s);
        assert(t);

        r = api_token_validate(t);
        if (r < 0)
                return r;
        return s->vtable->api_token_create(s, t);
}

int store_api_token_get(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreApiToken **ret) {
        assert(s);
        assert(id);
        assert(ret);

        return s->vtable->api_token_get(s, id, ret);
}

int store_api_token_list(Store *s, const char *admin, StoreApiToken ***ret, size_t *ret_n) {
        int r;

        assert(s);
        assert(ret);
        assert(ret_n);

        if (admin) {
                r = admin_name_validate("admin name", admin);
                if (r < 0)
                        return r;
        }
        return s->vtable->api_token_list(s, admin, ret, ret_n);
}

int store_api_token_revoke(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        int r;

        assert(s);
        assert(id);

        r = time_validate("revocation time", now, true);
        if (r < 0)
                return r;
        return s->vtable->api_token_revoke(s, id, now);
}

int store_api_token_delete(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]) {
        assert(s);
        assert(id);

        return s->vtable->api_token_delete(s, id);
}

int store_api_token_touch(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        int r;

        assert(s);
        assert(id);

        r = time_validate("last use time", now, true);
        if (r < 0)
                return r;
        return s->vtable->api_token_touch(s, id, now);
}

int store_session_create(Store *s, const StoreSession *session) {
        int r;

        assert(s);
        assert(session);

        r = session_validate(session);
        if (r < 0)
                return r;
        return s->vtable->session_create(s, session);
}

int store_session_get(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], StoreSession **ret) {
        assert(s);
        assert(id);
        assert(ret);

        return s->vtable->session_get(s, id, ret);
}

int store_session_list(Store *s, const char *admin, StoreSession ***ret, size_t *ret_n) {
        int r;

        assert(s);
        assert(ret);
        assert(ret_n);

        if (admin) {
                r = admin_name_validate("admin name", admin);
                if (r < 0)
                        return r;
        }
        return s->vtable->session_list(s, admin, ret, ret_n);
}

int store_session_delete(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE]) {
        assert(s);
        assert(id);

        return s->vtable->session_delete(s, id);
}

int store_session_touch(Store *s, const uint8_t id[STORE_CREDENTIAL_ID_SIZE], usec_t now) {
        int r;

        assert(s);
        assert(id);

        r = time_validate("last seen time", now, true);
        if (r < 0)
                return r;
        return s->vtable->session_touch(s, id, now);
}

int store_sessions_delete_expired(Store *s, usec_t now, usec_t idle_timeout) {
        int r;

        assert(s);

        r = time_validate("expiry time", now, true);
        if (r < 0)
                return r;
        r = time_validate("idle timeout", idle_timeout, false);
        if (r < 0)
                return r;
        return s->vtable->sessions_delete_expired(s, now, idle_timeout);
}

int store_audit_append(Store *s, const StoreAuditEvent *e, int64_t *ret_seq) {
        int r;

        assert(s);
        assert(e);

        r = audit_event_validate(e);
        if (r < 0)
                return r;
        return s->vtable->audit_append(s, e, ret_seq);
}

int store_audit_list(Store *s, const StoreAuditFilter *f, StoreAuditEvent ***ret, size_t *ret_n) {
        int r;

        assert(s);
        assert(f);
        assert(ret);
        assert(ret_n);

        r = audit_filter_validate(f);
        if (r < 0)
                return r;
        return s->vtable->audit_list(s, f, ret, ret_n);
}

int store_check_integrity(Store *s) {
        assert(s);

        return s->vtable->check_integrity(s);
}
