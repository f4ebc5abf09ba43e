/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "controller-audit.h"
#include "controller-token.h"
#include "hexdecoct.h"
#include "log.h"
#include "string-util.h"
#include "strv.h"

static int token_request_check(const Manager *m, const TokenRequest *req, usec_t *ret_lifetime,
                               const char **ret_reason) {
        size_t n_groups;

        if (req->role != SPIFFE_ROLE_CONNECTOR && req->role != SPIFFE_ROLE_TUNNELER)
                return *ret_reason = "role must be connector or tunneler", -EINVAL;
        if (!isempty(req->bound_id) && !ztna_id_is_valid(req->bound_id))
                return *ret_reason = "invalid agent id (1-128 characters of A-Z a-z 0-9 . _ -)", -EINVAL;
        if (!isempty(req->remote_network)) {
                if (req->role != SPIFFE_ROLE_CONNECTOR)
                        return *ret_reason = "a remote network applies to connector tokens only", -EINVAL;
                if (!ztna_id_is_valid(req->remote_network))
                        return *ret_reason = "invalid remote network name (1-128 characters of A-Z a-z 0-9 . _ -)",
                               -EINVAL;
        }
        n_groups = strv_length(req->groups);
        if (n_groups > 0 && req->role != SPIFFE_ROLE_TUNNELER)
                return *ret_reason = "groups apply to tunneler tokens only", -EINVAL;
        if (n_groups > STORE_GROUPS_MAX)
                return *ret_reason = "too many groups", -EINVAL;
        STRV_FOREACH(g, req->groups)
                if (!ztna_id_is_valid(*g))
                        return *ret_reason = "invalid group name (1-128 characters of A-Z a-z 0-9 . _ -)", -EINVAL;

        usec_t lifetime = req->lifetime > 0 ? req->lifetime : m->config.token_lifetime;
        if (lifetime < CONTROLLER_TOKEN_LIFETIME_MIN || lifetime > CONTROLLER_TOKEN_LIFETIME_MAX)
                return *ret_reason = "token lifetime must be between 1min and 30d", -EINVAL;

        *ret_lifetime = lifetime;
        return 0;
}

int controller_token_create(Manager *m, const TokenRequest *req, const char *actor, char **ret_string,
                            StoreToken **ret_token, const char **ret_reason) {
        _cleanup_(token_freep) EnrollmentToken *token = NULL;
        _cleanup_(store_token_freep) StoreToken *row = NULL;
        _cleanup_free_ char *id = NULL;
        const char *reason = NULL;
        uint8_t pin[TOKEN_PIN_SIZE];
        char *s = NULL;
        usec_t lifetime, n;
        int r;

        assert(m);
        assert(req);
        assert(actor);
        assert(ret_string);

        r = token_request_check(m, req, &lifetime, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }

        controller_ca_get_root_pin(m->ca, pin);
        r = token_generate(pin, m->config.advertised_addresses.addresses, &token);
        if (r < 0)
                return r;

        n = now(CLOCK_REALTIME);
        row = calloc(1, sizeof(StoreToken));
        if (!row)
                return -ENOMEM;
        memcpy(row->id, token->id, TOKEN_ID_SIZE);
        r = token_secret_hash(token->secret, row->secret_hash);
        if (r < 0)
                return r;
        row->role = req->role;
        if ((!isempty(req->bound_id) && !(row->bound_id = strdup(req->bound_id))) ||
            (!isempty(req->remote_network) && !(row->remote_network = strdup(req->remote_network))) ||
            (req->groups && !(row->groups = strv_copy(req->groups))) ||
            !(row->created_by = strdup(actor)))
                return -ENOMEM;
        row->created_at = n;
        row->expires_at = n + lifetime;

        r = store_token_create(m->store, row);
        if (r < 0)
                return r;

        r = token_to_string(token, &s);
        if (r < 0)
                return r;

        id = token_id_to_string(token->id);
        if (!id) {
                erase_and_free(s, strlen(s));
                return -ENOMEM;
        }
        (void) audit_log(m->store, AUDIT_TOKEN_CREATED,
                         &(const AuditRecord) {
                                 .actor = actor,
                                 .subject = id,
                                 .role = req->role,
                                 .token_id = id,
                                 .not_after = row->expires_at,
                         });

        *ret_string = s;
        if (ret_token)
                *ret_token = TAKE_PTR(row);
        return 0;
}

int controller_token_revoke(Manager *m, const char *id, const char *actor) {
        _cleanup_free_ void *raw = NULL;
        size_t size;
        int r;

        assert(m);
        assert(id);
        assert(actor);

        if (strlen(id) != 2 * TOKEN_ID_SIZE)
                return -EINVAL;
        r = unhexmem(id, strlen(id), &raw, &size);
        if (r < 0 || size != TOKEN_ID_SIZE)
                return -EINVAL;

        r = store_token_revoke(m->store, raw, now(CLOCK_REALTIME));
        if (r < 0)
                return r;

        (void) audit_log(m->store, AUDIT_TOKEN_REVOKED,
                         &(const AuditRecord) { .actor = actor, .subject = id, .role = _SPIFFE_ROLE_INVALID,
                                                .token_id = id });
        return 0;
}

const char *controller_token_state(const StoreToken *t, usec_t n) {
        assert(t);

        if (t->revoked_at > 0)
                return "revoked";
        if (t->used_at > 0)
                return "used";
        if (n >= t->expires_at)
                return "expired";
        return "active";
}
