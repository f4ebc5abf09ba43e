/* SPDX-License-Identifier: Apache-2.0 */

#include "crypto-spiffe.h"
#include "tests.h"

/* 2048-byte and 2049-byte IDs: "spiffe://example.org" + "/aaa…" segments. */
static char *make_long_id(size_t total) {
        const char *prefix = "spiffe://example.org";
        char *s = ASSERT_NOT_NULL(malloc(total + 1));
        size_t n = strlen(prefix);

        memcpy(s, prefix, n);
        /* Segments of 63 'a' joined by '/', so no segment rule is hit, only the length. */
        for (size_t i = n; i < total; i++)
                s[i] = (i - n) % 64 == 0 ? '/' : 'a';
        s[total] = '\0';
        return s;
}

static char *make_long_trust_domain_id(size_t td_len) {
        char *s = ASSERT_NOT_NULL(malloc(STRLEN("spiffe://") + td_len + 1));

        memcpy(s, "spiffe://", STRLEN("spiffe://"));
        memset(s + STRLEN("spiffe://"), 'a', td_len);
        s[STRLEN("spiffe://") + td_len] = '\0';
        return s;
}

#define SEGMENT_CHARSET "path segment contains characters other than [A-Za-z0-9._-]"
#define BAD_ROLE "role is not one of controller, connector, tunneler, relay"

TEST(spiffe_id_rules) {
        static const struct {
                const char *s;
                const char *reason; /* NULL: valid */
                const char *trust_domain, *path;
        } table[] = {
                /* Valid. */
                { "spiffe://example.org", NULL, "example.org", "" },
                { "spiffe://example.org/a", NULL, "example.org", "/a" },
                { "spiffe://example.org/Upper/Case_ok/x-y.z", NULL, "example.org", "/Upper/Case_ok/x-y.z" },
                { "spiffe://a-b_c.9/...x/..y/.a", NULL, "a-b_c.9", "/...x/..y/.a" },
                { "spiffe://td/connector/c1", NULL, "td", "/connector/c1" },
                /* Scheme. */
                { "", "SPIFFE ID is empty" },
                { "SPIFFE://example.org/a", "scheme is not \"spiffe://\"" },
                { "Spiffe://example.org/a", "scheme is not \"spiffe://\"" },
                { "https://example.org/a", "scheme is not \"spiffe://\"" },
                { "spiffe:/example.org/a", "scheme is not \"spiffe://\"" },
                { "spiffe:example.org", "scheme is not \"spiffe://\"" },
                { "example.org/a", "scheme is not \"spiffe://\"" },
                { " spiffe://example.org/a", "scheme is not \"spiffe://\"" },
                /* Trust domain. */
                { "spiffe://", "trust domain is empty" },
                { "spiffe:///a", "trust domain is empty" },
                { "spiffe://Example.org/a", "trust domain contains upper-case characters" },
                { "spiffe://EXAMPLE.ORG", "trust domain contains upper-case characters" },
                { "spiffe://example.org:8443/a", "trust domain must not contain a port" },
                { "spiffe://user@example.org/a", "trust domain must not contain userinfo" },
                { "spiffe://user:pw@example.org/a", "trust domain must not contain a port" },
                { "spiffe://exa mple.org/a", "trust domain contains characters other than [a-z0-9._-]" },
                { "spiffe://exämple.org/a", "trust domain contains characters other than [a-z0-9._-]" },
                { "spiffe://example.org?x=1", "SPIFFE ID must not contain a query" },
                { "spiffe://example.org#frag", "SPIFFE ID must not contain a fragment" },
                { "spiffe://ex%41mple.org", "SPIFFE ID must not contain percent-encoding" },
                /* Path. */
                { "spiffe://example.org/", "path must not end with '/'" },
                { "spiffe://example.org/a/", "path must not end with '/'" },
                { "spiffe://example.org//a", "path must not contain empty segments" },
                { "spiffe://example.org/a//b", "path must not contain empty segments" },
                { "spiffe://example.org/.", "path must not contain '.' or '..' segments" },
                { "spiffe://example.org/..", "path must not contain '.' or '..' segments" },
                { "spiffe://example.org/a/./b", "path must not contain '.' or '..' segments" },
                { "spiffe://example.org/a/../b", "path must not contain '.' or '..' segments" },
                { "spiffe://example.org/a%2Fb", "SPIFFE ID must not contain percent-encoding" },
                { "spiffe://example.org/a?x=1", "SPIFFE ID must not contain a query" },
                { "spiffe://example.org/a#frag", "SPIFFE ID must not contain a fragment" },
                { "spiffe://example.org/a b", SEGMENT_CHARSET },
                { "spiffe://example.org/a:b", SEGMENT_CHARSET },
                { "spiffe://example.org/a@b", SEGMENT_CHARSET },
                { "spiffe://example.org/a\\b", SEGMENT_CHARSET },
                { "spiffe://example.org/\xc3\xa4", SEGMENT_CHARSET },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                const char *reason = NULL;

                CASE("%s", table[i].s);
                if (!table[i].reason) {
                        ASSERT_OK(spiffe_id_from_string(table[i].s, &id, &reason));
                        ASSERT_NULL(reason);
                        ASSERT_STREQ(id->trust_domain, table[i].trust_domain);
                        ASSERT_STREQ(id->path, table[i].path);
                        ASSERT_STREQ(id->uri, table[i].s);
                        ASSERT_STREQ(spiffe_id_to_string(id), table[i].s);
                        ASSERT_EQ(spiffe_id_is_trust_domain(id), isempty(table[i].path));
                        ASSERT_TRUE(spiffe_id_member_of(id, table[i].trust_domain));
                        /* Validation-only mode agrees. */
                        ASSERT_OK(spiffe_id_from_string(table[i].s, NULL, NULL));
                } else {
                        ASSERT_ERROR(spiffe_id_from_string(table[i].s, &id, &reason), EINVAL);
                        ASSERT_NULL(id); /* untouched on failure */
                        ASSERT_STREQ(reason, table[i].reason);
                        /* The ztna layer refuses it for the same reason. */
                        reason = NULL;
                        ASSERT_ERROR(spiffe_id_from_string_ztna(table[i].s, &id, &reason), EINVAL);
                        ASSERT_STREQ(reason, table[i].reason);
                        ASSERT_ERROR(spiffe_id_from_string(table[i].s, NULL, NULL), EINVAL);
                }
        }
        ASSERT_ERROR(spiffe_id_from_string(NULL, NULL, NULL), EINVAL);
}

TEST(spiffe_id_lengths) {
        static const struct {
                size_t len;
                bool td; /* a trust-domain ID of len bytes of trust domain */
                const char *reason;
        } table[] = {
                { 2048, false, NULL },
                { 2049, false, "SPIFFE ID is longer than 2048 bytes" },
                { 100000, false, "SPIFFE ID is longer than 2048 bytes" },
                { 255, true, NULL },
                { 256, true, "trust domain is longer than 255 bytes" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ char *s = table[i].td ? make_long_trust_domain_id(table[i].len)
                                                     : make_long_id(table[i].len);
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                const char *reason = NULL;

                CASE("%s %zu", table[i].td ? "trust domain" : "id", table[i].len);
                if (!table[i].reason) {
                        ASSERT_OK(spiffe_id_from_string(s, &id, &reason));
                        ASSERT_STREQ(id->uri, s);
                } else {
                        ASSERT_ERROR(spiffe_id_from_string(s, &id, &reason), EINVAL);
                        ASSERT_STREQ(reason, table[i].reason);
                }
        }
}

TEST(ztna_id_rules) {
        _cleanup_free_ char *id128 = NULL, *id129 = NULL;
        char buf[256];

        id128 = ASSERT_NOT_NULL(malloc(129));
        memset(id128, 'x', 128);
        id128[128] = '\0';
        id129 = ASSERT_NOT_NULL(malloc(130));
        memset(id129, 'x', 129);
        id129[129] = '\0';

        const struct {
                const char *s;
                const char *reason;
                SpiffeRole role;
                const char *name;
        } table[] = {
                { "spiffe://example.org/controller/ctl-1", NULL, SPIFFE_ROLE_CONTROLLER, "ctl-1" },
                { "spiffe://example.org/connector/Conn_1.a-b", NULL, SPIFFE_ROLE_CONNECTOR, "Conn_1.a-b" },
                { "spiffe://example.org/tunneler/t", NULL, SPIFFE_ROLE_TUNNELER, "t" },
                { "spiffe://example.org/relay/r9", NULL, SPIFFE_ROLE_RELAY, "r9" },
                { "spiffe://example.org/admin/x", BAD_ROLE },
                { "spiffe://example.org/Connector/x", BAD_ROLE },
                { "spiffe://example.org/connectors/x", BAD_ROLE },
                { "spiffe://example.org/connector/a/b", "path is not /<role>/<id>" },
                { "spiffe://example.org/connector", "path is not /<role>/<id>" },
                { "spiffe://example.org", "path is not /<role>/<id>" },
                { "spiffe://example.org/connector/", "path must not end with '/'" },
                { "spiffe://example.org/connector/a%2Fb", "SPIFFE ID must not contain percent-encoding" },
                { "spiffe://example.org/connector/a%b", "SPIFFE ID must not contain percent-encoding" },
                { "spiffe://example.org/connector/..", "path must not contain '.' or '..' segments" },
                { NULL, NULL, SPIFFE_ROLE_CONNECTOR, id128 },
                { NULL, "id is longer than 128 bytes" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;
                const char *s = table[i].s, *reason = NULL;

                if (!s) {
                        snprintf(buf, sizeof(buf), "spiffe://example.org/connector/%s",
                                 table[i].reason ? id129 : id128);
                        s = buf;
                }
                CASE("%s", s);
                if (!table[i].reason) {
                        ASSERT_OK(spiffe_id_from_string_ztna(s, &id, &reason));
                        ASSERT_EQ(id->role, table[i].role);
                        ASSERT_STREQ(id->name, table[i].name);
                        spiffe_id_free(TAKE_PTR(id));
                        /* The generic parser recognises the ztna shape too. */
                        ASSERT_OK(spiffe_id_from_string(s, &id, &reason));
                        ASSERT_EQ(id->role, table[i].role);
                        ASSERT_STREQ(id->name, table[i].name);
                } else {
                        ASSERT_ERROR(spiffe_id_from_string_ztna(s, &id, &reason), EINVAL);
                        ASSERT_NULL(id);
                        ASSERT_STREQ(reason, table[i].reason);
                }
        }
}

TEST(generic_id_without_ztna_shape_has_no_role) {
        static const char *const table[] = {
                "spiffe://example.org",
                "spiffe://example.org/connector",
                "spiffe://example.org/admin/x",
                "spiffe://example.org/connector/a/b",
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;

                CASE("%s", table[i]);
                ASSERT_OK(spiffe_id_from_string(table[i], &id, NULL));
                ASSERT_EQ(id->role, _SPIFFE_ROLE_INVALID);
                ASSERT_NULL(id->name);
        }
}

TEST(roles) {
        static const char *const names[] = { "controller", "connector", "tunneler", "relay" };

        ASSERT_EQ(ELEMENTSOF(names), (size_t) _SPIFFE_ROLE_MAX);
        for (SpiffeRole r = 0; r < _SPIFFE_ROLE_MAX; r++) {
                CASE("%s", names[r]);
                ASSERT_STREQ(spiffe_role_to_string(r), names[r]);
                ASSERT_EQ(spiffe_role_from_string(names[r]), r);
        }
        ASSERT_NULL(spiffe_role_to_string(_SPIFFE_ROLE_MAX));
        ASSERT_NULL(spiffe_role_to_string(_SPIFFE_ROLE_INVALID));
        ASSERT_EQ(spiffe_role_from_string("Relay"), _SPIFFE_ROLE_INVALID);
        ASSERT_EQ(spiffe_role_from_string(""), _SPIFFE_ROLE_INVALID);
        ASSERT_EQ(spiffe_role_from_string(NULL), _SPIFFE_ROLE_INVALID);
}

TEST(new_ztna) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL, *copy = NULL, *other = NULL;
        _cleanup_free_ char *id129 = ASSERT_NOT_NULL(calloc(1, 130));

        memset(id129, 'a', 129);
        ASSERT_OK(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_TUNNELER, "laptop-7", &id));
        ASSERT_STREQ(id->uri, "spiffe://example.org/tunneler/laptop-7");
        ASSERT_STREQ(id->trust_domain, "example.org");
        ASSERT_STREQ(id->path, "/tunneler/laptop-7");
        ASSERT_EQ(id->role, SPIFFE_ROLE_TUNNELER);
        ASSERT_STREQ(id->name, "laptop-7");

        ASSERT_OK(spiffe_id_dup(id, &copy));
        ASSERT_TRUE(copy != id);
        ASSERT_TRUE(spiffe_id_equal(id, copy));
        ASSERT_EQ(copy->role, SPIFFE_ROLE_TUNNELER);
        ASSERT_STREQ(copy->name, "laptop-7");

        ASSERT_OK(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, "laptop-7", &other));
        ASSERT_FALSE(spiffe_id_equal(id, other));
        ASSERT_FALSE(spiffe_id_equal(id, NULL));
        ASSERT_TRUE(spiffe_id_equal(NULL, NULL));
        ASSERT_FALSE(spiffe_id_member_of(id, "example.com"));
        ASSERT_FALSE(spiffe_id_member_of(id, "Example.org"));
        spiffe_id_free(TAKE_PTR(other));

        ASSERT_ERROR(spiffe_id_new_ztna("Example.org", SPIFFE_ROLE_CONNECTOR, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org:1", SPIFFE_ROLE_CONNECTOR, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("", SPIFFE_ROLE_CONNECTOR, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna(NULL, SPIFFE_ROLE_CONNECTOR, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", _SPIFFE_ROLE_MAX, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", _SPIFFE_ROLE_INVALID, "a", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, "", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, "a/b", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, "a%20", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, "..", &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, id129, &other), EINVAL);
        ASSERT_ERROR(spiffe_id_new_ztna("example.org", SPIFFE_ROLE_CONNECTOR, NULL, &other), EINVAL);
        ASSERT_NULL(other);
}

TEST(new_trust_domain) {
        _cleanup_(spiffe_id_freep) SpiffeId *id = NULL;

        ASSERT_OK(spiffe_id_new_trust_domain("corp.example", &id));
        ASSERT_STREQ(id->uri, "spiffe://corp.example");
        ASSERT_STREQ(id->path, "");
        ASSERT_EQ(id->role, _SPIFFE_ROLE_INVALID);
        ASSERT_NULL(id->name);
        ASSERT_TRUE(spiffe_id_is_trust_domain(id));
        spiffe_id_free(TAKE_PTR(id));

        ASSERT_ERROR(spiffe_id_new_trust_domain("corp.example/x", &id), EINVAL);
        ASSERT_ERROR(spiffe_id_new_trust_domain("CORP", &id), EINVAL);
        ASSERT_ERROR(spiffe_id_new_trust_domain("", &id), EINVAL);
        ASSERT_NULL(id);
}

TEST(trust_domain_and_id_checks) {
        static const struct {
                const char *td;
                const char *reason;
        } tds[] = {
                { "example.org", NULL },
                { "a", NULL },
                { "x_y-z.0", NULL },
                { "", "trust domain is empty" },
                { "Example.org", "trust domain contains upper-case characters" },
                { "example.org:443", "trust domain must not contain a port" },
                { "u@example.org", "trust domain must not contain userinfo" },
                { "example.org/a", "trust domain contains characters other than [a-z0-9._-]" },
        };
        static const struct {
                const char *id;
                bool valid;
        } ids[] = {
                { "a", true },  { "A.b_c-9", true }, { ".x", true },  { "", false }, { ".", false },
                { "..", false }, { "a/b", false },    { "a%b", false }, { "a b", false }, { "ä", false },
        };
        const char *reason;

        for (size_t i = 0; i < ELEMENTSOF(tds); i++) {
                CASE("%s", tds[i].td);
                reason = NULL;
                if (!tds[i].reason) {
                        ASSERT_OK(spiffe_trust_domain_check(tds[i].td, &reason));
                        ASSERT_TRUE(spiffe_trust_domain_is_valid(tds[i].td));
                } else {
                        ASSERT_ERROR(spiffe_trust_domain_check(tds[i].td, &reason), EINVAL);
                        ASSERT_STREQ(reason, tds[i].reason);
                        ASSERT_FALSE(spiffe_trust_domain_is_valid(tds[i].td));
                }
        }
        ASSERT_FALSE(spiffe_trust_domain_is_valid(NULL));

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                CASE("%s", ids[i].id);
                ASSERT_EQ(ztna_id_is_valid(ids[i].id), ids[i].valid);
        }
        ASSERT_FALSE(ztna_id_is_valid(NULL));
}
