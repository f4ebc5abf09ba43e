/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto-spiffe.h"
#include "log.h"

#define SPIFFE_SCHEME_PREFIX "spiffe://"

static const char *const spiffe_role_table[_SPIFFE_ROLE_MAX] = {
        [SPIFFE_ROLE_CONTROLLER] = "controller",
        [SPIFFE_ROLE_CONNECTOR] = "connector",
        [SPIFFE_ROLE_TUNNELER] = "tunneler",
        [SPIFFE_ROLE_RELAY] = "relay",
};

const char *spiffe_role_to_string(SpiffeRole role) {
        if (role < 0 || role >= _SPIFFE_ROLE_MAX)
                return NULL;
        return spiffe_role_table[role];
}

SpiffeRole spiffe_role_from_string(const char *s) {
        if (!s)
                return _SPIFFE_ROLE_INVALID;
        for (SpiffeRole r = 0; r < _SPIFFE_ROLE_MAX; r++)
                if (streq(s, spiffe_role_table[r]))
                        return r;
        return _SPIFFE_ROLE_INVALID;
}

static bool char_is_lower_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool char_is_upper(char c) {
        return c >= 'A' && c <= 'Z';
}

/* The spec's path segment alphabet, which is also the ztna id alphabet. */
static bool char_is_segment(char c) {
        return char_is_lower_alnum(c) || char_is_upper(c) || c == '.' || c == '_' || c == '-';
}

static bool char_is_trust_domain(char c) {
        return char_is_lower_alnum(c) || c == '.' || c == '_' || c == '-';
}

/* Checks the trust domain, n bytes at td (not NUL-terminated: it is the authority of a URI). The order
 * of the checks picks the most specific reason for characters that are URI syntax. */
static int trust_domain_check(const char *td, size_t n, const char **ret_reason) {
        const char *reason = NULL;

        if (n == 0)
                reason = "trust domain is empty";
        else if (n > SPIFFE_TRUST_DOMAIN_MAX)
                reason = "trust domain is longer than 255 bytes";
        else
                for (size_t i = 0; i < n; i++) {
                        char c = td[i];

                        if (char_is_trust_domain(c))
                                continue;
                        if (char_is_upper(c))
                                reason = "trust domain contains upper-case characters";
                        else if (c == ':')
                                reason = "trust domain must not contain a port";
                        else if (c == '@')
                                reason = "trust domain must not contain userinfo";
                        else if (c == '?')
                                reason = "SPIFFE ID must not contain a query";
                        else if (c == '#')
                                reason = "SPIFFE ID must not contain a fragment";
                        else if (c == '%')
                                reason = "SPIFFE ID must not contain percent-encoding";
                        else
                                reason = "trust domain contains characters other than [a-z0-9._-]";
                        break;
                }

        if (reason) {
                if (ret_reason)
                        *ret_reason = reason;
                return -EINVAL;
        }
        return 0;
}

/* Checks a path: "" or "/seg(/seg)*". */
static int path_check(const char *path, const char **ret_reason) {
        const char *reason = NULL, *p = path;

        if (*p == '\0')
                return 0;
        assert(*p == '/');

        while (*p == '/' && !reason) {
                const char *seg = ++p;
                size_t n;

                while (char_is_segment(*p))
                        p++;
                n = (size_t) (p - seg);

                if (*p != '\0' && *p != '/') {
                        if (*p == '?')
                                reason = "SPIFFE ID must not contain a query";
                        else if (*p == '#')
                                reason = "SPIFFE ID must not contain a fragment";
                        else if (*p == '%')
                                reason = "SPIFFE ID must not contain percent-encoding";
                        else
                                reason = "path segment contains characters other than [A-Za-z0-9._-]";
                } else if (n == 0)
                        reason = *p == '\0' ? "path must not end with '/'"
                                             : "path must not contain empty segments";
                else if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
                        reason = "path must not contain '.' or '..' segments";
        }

        if (reason) {
                if (ret_reason)
                        *ret_reason = reason;
                return -EINVAL;
        }
        return 0;
}

static int ztna_path_split(const char *path, SpiffeRole *ret_role, const char **ret_name,
                           const char **ret_reason) {
        const char *reason = NULL, *name;
        SpiffeRole role = _SPIFFE_ROLE_INVALID;
        char buf[16];
        size_t n;

        /* The path is already valid SPIFFE syntax: "/role/name" with exactly two segments. */
        name = path[0] == '/' ? strchr(path + 1, '/') : NULL;
        if (!name || strchr(name + 1, '/'))
                reason = "path is not /<role>/<id>";
        else {
                n = (size_t) (name - path - 1);
                if (n < sizeof(buf)) {
                        memcpy(buf, path + 1, n);
                        buf[n] = '\0';
                        role = spiffe_role_from_string(buf);
                }
                name++;
                if (role < 0)
                        reason = "role is not one of controller, connector, tunneler, relay";
                else if (!ztna_id_is_valid(name))
                        reason = strlen(name) > ZTNA_ID_MAX ? "id is longer than 128 bytes"
                                                            : "id is not [A-Za-z0-9._-]{1,128}";
        }

        if (reason) {
                if (ret_reason)
                        *ret_reason = reason;
                return -EINVAL;
        }
        *ret_role = role;
        *ret_name = name;
        return 0;
}

SpiffeId *spiffe_id_free(SpiffeId *id) {
        if (!id)
                return NULL;
        free(id->trust_domain);
        free(id->path);
        free(id->name);
        free(id->uri);
        return mfree(id);
}

static int spiffe_id_parse(const char *s, bool ztna, SpiffeId **ret, const char **ret_reason) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
        SpiffeRole role = _SPIFFE_ROLE_INVALID;
        const char *td, *path, *name = NULL;
        size_t len;
        int r;

        if (!s) {
                if (ret_reason)
                        *ret_reason = "SPIFFE ID is missing";
                return -EINVAL;
        }

        len = strnlen(s, SPIFFE_ID_MAX + 1);
        if (len > SPIFFE_ID_MAX) {
                if (ret_reason)
                        *ret_reason = "SPIFFE ID is longer than 2048 bytes";
                return -EINVAL;
        }
        if (len == 0) {
                if (ret_reason)
                        *ret_reason = "SPIFFE ID is empty";
                return -EINVAL;
        }
        /* The scheme is case-sensitive in SPIFFE, unlike generic URIs. */
        if (!strneq(s, SPIFFE_SCHEME_PREFIX, STRLEN(SPIFFE_SCHEME_PREFIX))) {
                if (ret_reason)
                        *ret_reason = "scheme is not \"spiffe://\"";
                return -EINVAL;
        }

        td = s + STRLEN(SPIFFE_SCHEME_PREFIX);
        path = td + strcspn(td, "/");
        r = trust_domain_check(td, (size_t) (path - td), ret_reason);
        if (r < 0)
                return r;
        r = path_check(path, ret_reason);
        if (r < 0)
                return r;
        if (ztna) {
                r = ztna_path_split(path, &role, &name, ret_reason);
                if (r < 0)
                        return r;
        } else if (path[0] != '\0' && ztna_path_split(path, &role, &name, NULL) < 0) {
                /* Valid SPIFFE ID, but not a ztna workload: no role. */
                role = _SPIFFE_ROLE_INVALID;
                name = NULL;
        }

        if (!ret)
                return 0;

        id = calloc(1, sizeof(*id));
        if (!id)
                return -ENOMEM;
        id->role = role;
        id->trust_domain = strndup(td, (size_t) (path - td));
        id->path = strdup(path);
        id->uri = strdup(s);
        if (!id->trust_domain || !id->path || !id->uri)
                return -ENOMEM;
        if (name) {
                id->name = strdup(name);
                if (!id->name)
                        return -ENOMEM;
        }

        *ret = TAKE_PTR(id);
        return 0;
}

int spiffe_id_from_string(const char *s, SpiffeId **ret, const char **ret_reason) {
        return spiffe_id_parse(s, false, ret, ret_reason);
}

int spiffe_id_from_string_ztna(const char *s, SpiffeId **ret, const char **ret_reason) {
        return spiffe_id_parse(s, true, ret, ret_reason);
}

int spiffe_id_new_ztna(const char *trust_domain, SpiffeRole role, const char *id, SpiffeId **ret) {
        _cleanup_free_ char *s = NULL;
        const char *reason = NULL;
        int r;

        assert(ret);

        if (!spiffe_trust_domain_is_valid(trust_domain) || !spiffe_role_to_string(role) ||
            !ztna_id_is_valid(id))
                return -EINVAL;
        if (asprintf(&s, SPIFFE_SCHEME_PREFIX "%s/%s/%s", trust_domain, spiffe_role_to_string(role), id) < 0)
                return -ENOMEM;
        r = spiffe_id_from_string_ztna(s, ret, &reason);
        if (r < 0)
                return log_debug_errno(r, "Invalid SPIFFE ID '%s': %s", s, strna(reason));
        return 0;
}

int spiffe_id_new_trust_domain(const char *trust_domain, SpiffeId **ret) {
        _cleanup_free_ char *s = NULL;

        assert(ret);

        if (!spiffe_trust_domain_is_valid(trust_domain))
                return -EINVAL;
        if (asprintf(&s, SPIFFE_SCHEME_PREFIX "%s", trust_domain) < 0)
                return -ENOMEM;
        return spiffe_id_from_string(s, ret, NULL);
}

int spiffe_id_dup(const SpiffeId *id, SpiffeId **ret) {
        assert(id);
        assert(ret);

        return spiffe_id_from_string(id->uri, ret, NULL);
}

const char *spiffe_id_to_string(const SpiffeId *id) {
        return id ? id->uri : NULL;
}

bool spiffe_id_is_trust_domain(const SpiffeId *id) {
        return id && isempty(id->path);
}

bool spiffe_id_equal(const SpiffeId *a, const SpiffeId *b) {
        if (a == b)
                return true;
        if (!a || !b)
                return false;
        return streq(a->trust_domain, b->trust_domain) && streq(a->path, b->path);
}

bool spiffe_id_member_of(const SpiffeId *id, const char *trust_domain) {
        return id && trust_domain && streq(id->trust_domain, trust_domain);
}

int spiffe_trust_domain_check(const char *td, const char **ret_reason) {
        if (!td) {
                if (ret_reason)
                        *ret_reason = "trust domain is empty";
                return -EINVAL;
        }
        return trust_domain_check(td, strnlen(td, SPIFFE_TRUST_DOMAIN_MAX + 1), ret_reason);
}

bool spiffe_trust_domain_is_valid(const char *td) {
        return spiffe_trust_domain_check(td, NULL) >= 0;
}

bool ztna_id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strnlen(id, ZTNA_ID_MAX + 1);
        if (n == 0 || n > ZTNA_ID_MAX)
                return false;
        /* "." and ".." are not valid path segments, so they can never be ids either. */
        if (streq(id, ".") || streq(id, ".."))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!char_is_segment(id[i]))
                        return false;
        return true;
}
