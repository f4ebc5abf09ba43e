/* SPDX-License-Identifier: Apache-2.0 */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crypto-key.h"
#include "crypto-util.h"
#include "identity-store.h"
#include "macro.h"
#include "strv.h"
#include "tests.h"

static const uint8_t kek_a[KEK_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
static const uint8_t kek_b[KEK_SIZE] = { 32, 31, 30 };

/* A DER SEQUENCE of exactly total bytes, its content filled with fill. */
static DerBlob make_der(size_t total, uint8_t fill) {
        DerBlob b = { .data = malloc(total), .size = total };
        size_t hdr = total - 2 < 0x80 ? 2 : total - 3 < 0x100 ? 3 : 4, len = total - hdr;

        ASSERT_NOT_NULL(b.data);
        ASSERT_TRUE(total >= 4);
        memset(b.data, fill, total);
        b.data[0] = 0x30;
        if (hdr == 2)
                b.data[1] = (uint8_t) len;
        else if (hdr == 3) {
                b.data[1] = 0x81;
                b.data[2] = (uint8_t) len;
        } else {
                b.data[1] = 0x82;
                b.data[2] = (uint8_t) (len >> 8);
                b.data[3] = (uint8_t) len;
        }
        return b;
}

static void make_key(DerBlob *ret) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;

        ASSERT_OK(crypto_key_generate(KEY_TYPE_ECDSA_P256, &k));
        ASSERT_OK(crypto_key_to_pkcs8_der(k, &ret->data, &ret->size));
}

/* A complete identity; big adds the optional fields and several entries in every list. */
static void make_identity(AgentIdentity *i, SpiffeRole role, bool big) {
        *i = (AgentIdentity) { .role = role };
        ASSERT_NOT_NULL(i->id = strdup(role == SPIFFE_ROLE_CONNECTOR ? "conn-1" : "laptop.alice"));
        ASSERT_NOT_NULL(i->trust_domain = strdup("corp.example"));
        ASSERT_TRUE(asprintf(&i->spiffe_id, "spiffe://corp.example/%s/%s", spiffe_role_to_string(role),
                             i->id) > 0);
        make_key(&i->key);
        i->chain[i->n_chain++] = make_der(300, 0xc1);
        i->bundle[i->n_bundle++] = make_der(200, 0xb1);
        ASSERT_OK(strv_extend(&i->controllers, "controller.corp.example:8443"));
        if (!big)
                return;
        i->chain[i->n_chain++] = make_der(290, 0xc2);
        i->bundle[i->n_bundle++] = make_der(210, 0xb2);
        i->bundle[i->n_bundle++] = make_der(5, 0xb3);
        ASSERT_OK(strv_extend(&i->controllers, "[2001:db8::1]:443"));
        ASSERT_OK(strv_extend(&i->controllers, "192.0.2.7:9000"));
        if (role == SPIFFE_ROLE_CONNECTOR)
                ASSERT_NOT_NULL(i->remote_network = strdup("office-lan"));
        else {
                ASSERT_OK(strv_extend(&i->groups, "engineering"));
                ASSERT_OK(strv_extend(&i->groups, "ops"));
        }
        i->heartbeat_interval = 10 * USEC_PER_SEC;
        i->certificate_lifetime = 30 * USEC_PER_MINUTE;
        i->not_after = 1767225600ULL * USEC_PER_SEC;
}

static void assert_blob_eq(const DerBlob *a, const DerBlob *b) {
        ASSERT_UEQ(a->size, b->size);
        ASSERT_MEMEQ(a->data, b->data, a->size);
}

static void assert_identity_eq(const AgentIdentity *a, const AgentIdentity *b) {
        ASSERT_EQ(a->role, b->role);
        ASSERT_STREQ(a->id, b->id);
        ASSERT_STREQ(a->spiffe_id, b->spiffe_id);
        ASSERT_STREQ(a->trust_domain, b->trust_domain);
        assert_blob_eq(&a->key, &b->key);
        ASSERT_UEQ(a->n_chain, b->n_chain);
        for (size_t k = 0; k < a->n_chain; k++)
                assert_blob_eq(&a->chain[k], &b->chain[k]);
        ASSERT_UEQ(a->n_bundle, b->n_bundle);
        for (size_t k = 0; k < a->n_bundle; k++)
                assert_blob_eq(&a->bundle[k], &b->bundle[k]);
        ASSERT_TRUE(strv_equal(a->controllers, b->controllers));
        ASSERT_TRUE((!a->remote_network && !b->remote_network) || streq(a->remote_network, b->remote_network));
        ASSERT_UEQ(strv_length(a->groups), strv_length(b->groups));
        ASSERT_TRUE(strv_equal(a->groups, b->groups));
        ASSERT_UEQ(a->heartbeat_interval, b->heartbeat_interval);
        ASSERT_UEQ(a->certificate_lifetime, b->certificate_lifetime);
        ASSERT_UEQ(a->not_after, b->not_after);
}

static char *state_dir(void) {
        static char d[512];

        snprintf(d, sizeof(d), "%s", test_path("state"));
        ASSERT_OK(mkdir(d, 0700));
        return d;
}

static char *join(const char *dir, const char *name) {
        static char buf[4][512];
        static unsigned n;
        char *p = buf[n++ % ELEMENTSOF(buf)];

        snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
        return p;
}

static bool exists(const char *path) {
        struct stat st;

        return lstat(path, &st) >= 0;
}

/* ---- the format ---- */

TEST(serialize_roundtrip) {
        static const SpiffeRole roles[] = { SPIFFE_ROLE_CONNECTOR, SPIFFE_ROLE_TUNNELER };

        for (size_t r = 0; r < ELEMENTSOF(roles); r++)
                for (int big = 0; big <= 1; big++) {
                        _cleanup_(agent_identity_done) AgentIdentity a = {}, b = {};
                        uint8_t *s1 = NULL, *s2 = NULL;
                        size_t n1 = 0, n2 = 0;

                        CASE("%s big=%d", spiffe_role_to_string(roles[r]), big);
                        make_identity(&a, roles[r], big);
                        ASSERT_OK(identity_serialize(&a, &s1, &n1, NULL));
                        ASSERT_MEMEQ(s1, IDENTITY_FORMAT_MAGIC "\x01", IDENTITY_HEADER_SIZE);
                        ASSERT_OK(identity_parse(s1, n1, &b, NULL));
                        assert_identity_eq(&a, &b);
                        /* Canonical: what was read is written back byte for byte. */
                        ASSERT_OK(identity_serialize(&b, &s2, &n2, NULL));
                        ASSERT_UEQ(n1, n2);
                        ASSERT_MEMEQ(s1, s2, n1);
                        erase_and_free(s1, n1);
                        erase_and_free(s2, n2);
                }
}

/* A test-side encoder, independent of the one under test, to build every malformed input. */
typedef struct Buf {
        uint8_t data[160 * 1024];
        size_t size;
} Buf;

static void buf_put(Buf *b, const void *p, size_t n) {
        ASSERT_TRUE(b->size + n <= sizeof(b->data));
        memcpy(b->data + b->size, p, n);
        b->size += n;
}

static void buf_field(Buf *b, unsigned tag, const void *p, size_t n) {
        uint8_t h[5] = {
                (uint8_t) tag, (uint8_t) (n >> 24), (uint8_t) (n >> 16), (uint8_t) (n >> 8), (uint8_t) n,
        };

        buf_put(b, h, sizeof(h));
        buf_put(b, p, n);
}

static void buf_str(Buf *b, unsigned tag, const char *s) {
        buf_field(b, tag, s, strlen(s));
}

static void buf_der(Buf *b, unsigned tag, size_t total, uint8_t fill) {
        DerBlob d = make_der(total, fill);

        buf_field(b, tag, d.data, d.size);
        free(d.data);
}

static void buf_u64(Buf *b, unsigned tag, uint64_t v) {
        uint8_t x[8];

        for (size_t k = 0; k < 8; k++)
                x[k] = (uint8_t) (v >> (56 - 8 * k));
        buf_field(b, tag, x, 8);
}

static char *repeat(char c, size_t n) {
        static char buf[4][4096];
        static unsigned i;
        char *p = buf[i++ % ELEMENTSOF(buf)];

        ASSERT_TRUE(n < sizeof(buf[0]));
        memset(p, c, n);
        p[n] = '\0';
        return p;
}

/* What a mutation does to the valid tunneler encoding below. */
enum {
        M_NONE,
        M_EMPTY, M_MAGIC, M_VERSION_0, M_VERSION_2, M_HEADER_ONLY,
        M_TAG_0, M_TAG_14, M_TAG_255,
        M_DUP_ID, M_DUP_KEY, M_ORDER, M_TRAILING_BYTE, M_TRAILING_FIELD, M_TRUNC_HEADER, M_TRUNC_VALUE,
        M_NO_ROLE, M_NO_ID, M_NO_SPIFFE, M_NO_TD, M_NO_KEY, M_NO_CHAIN, M_NO_BUNDLE, M_NO_CONTROLLER,
        M_CHAIN_5, M_BUNDLE_17, M_CONTROLLERS_9, M_GROUPS_65,
        M_CHAIN_4, M_BUNDLE_16, M_CONTROLLERS_8, M_GROUPS_64, M_ID_128, M_DER_MAX,
        M_ID_129, M_DER_MAX_1, M_CONTROLLER_256, M_TD_256, M_SPIFFE_LONG, M_ROLE_LONG,
        M_U64_ZERO, M_U64_SHORT, M_U64_MAX_DURATION, M_NOT_AFTER_INF, M_EMPTY_STRING, M_NUL_STRING,
        M_DER_TRAILING, M_DER_NONMINIMAL, M_DER_TAG, M_DER_LONG_FORM_ZERO,
        M_ROLE_CONTROLLER, M_ROLE_BOGUS, M_SPIFFE_MISMATCH, M_SPIFFE_TD_MISMATCH, M_GROUPS_ON_CONNECTOR,
        M_NETWORK_ON_TUNNELER, M_BAD_CONTROLLER, M_BAD_GROUP, M_BAD_TD,
};

static void build(Buf *b, int m) {
        bool connector = m == M_GROUPS_ON_CONNECTOR;
        const char *role = connector ? "connector" : "tunneler";
        const char *id = m == M_ID_128 ? repeat('a', 128) : m == M_ID_129 ? repeat('a', 129) : "bob";
        char spiffe[4096];

        b->size = 0;
        if (m == M_EMPTY)
                return;
        buf_put(b, m == M_MAGIC ? "ZTNAIX" : "ZTNAID", 6);
        buf_put(b, m == M_VERSION_0 ? "\x00" : m == M_VERSION_2 ? "\x02" : "\x01", 1);
        if (m == M_HEADER_ONLY)
                return;
        if (m == M_TAG_0)
                buf_str(b, 0, "x");

        if (m != M_NO_ROLE)
                buf_str(b, 1, m == M_ROLE_CONTROLLER ? "controller" : m == M_ROLE_BOGUS ? "tunnelerx" :
                              m == M_ROLE_LONG ? repeat('t', 17) : role);
        if (m == M_NUL_STRING)
                buf_field(b, 2, "bo\0b", 4);
        else if (m != M_NO_ID && m != M_ORDER)
                buf_str(b, 2, m == M_EMPTY_STRING ? "" : id);
        if (m == M_DUP_ID)
                buf_str(b, 2, id);
        snprintf(spiffe, sizeof(spiffe), "spiffe://%s/%s/%s",
                 m == M_SPIFFE_TD_MISMATCH ? "other.example" : "corp.example",
                 role, m == M_SPIFFE_MISMATCH ? "alice" : id);
        if (m == M_SPIFFE_LONG) {
                snprintf(spiffe, sizeof(spiffe), "spiffe://corp.example/tunneler/%s/%s", repeat('x', 1000),
                         repeat('y', 1100));
        }
        if (m != M_NO_SPIFFE)
                buf_str(b, 3, spiffe);
        if (m == M_ORDER)
                buf_str(b, 2, id);
        if (m != M_NO_TD)
                buf_str(b, 4, m == M_TD_256 ? repeat('d', 256) :
                              m == M_BAD_TD ? "Corp.example" : "corp.example");
        if (m != M_NO_KEY) {
                if (m == M_DER_TRAILING)
                        buf_field(b, 5, "\x30\x01\x00\x00", 4);
                else if (m == M_DER_NONMINIMAL)
                        buf_field(b, 5, "\x30\x81\x02\x00\x00", 5);
                else if (m == M_DER_TAG)
                        buf_field(b, 5, "\x31\x02\x00\x00", 4);
                else if (m == M_DER_LONG_FORM_ZERO)
                        buf_field(b, 5, "\x30\x80\x00\x00", 4);
                else
                        buf_der(b, 5, 138, 0x5a);
        }
        if (m == M_DUP_KEY)
                buf_der(b, 5, 138, 0x5b);
        if (m != M_NO_CHAIN) {
                size_t n = m == M_CHAIN_5 ? 5 : m == M_CHAIN_4 ? 4 : 1;

                for (size_t k = 0; k < n; k++)
                        buf_der(b, 6,
                                m == M_DER_MAX ? IDENTITY_DER_MAX : m == M_DER_MAX_1 ? IDENTITY_DER_MAX + 1 : 400,
                                (uint8_t) k);
        }
        if (m != M_NO_BUNDLE) {
                size_t n = m == M_BUNDLE_17 ? 17 : m == M_BUNDLE_16 ? 16 : 1;

                for (size_t k = 0; k < n; k++)
                        buf_der(b, 7, 300, (uint8_t) k);
        }
        if (m != M_NO_CONTROLLER) {
                size_t n = m == M_CONTROLLERS_9 ? 9 : m == M_CONTROLLERS_8 ? 8 : 1;

                for (size_t k = 0; k < n; k++) {
                        char a[64];

                        snprintf(a, sizeof(a), "c%zu.corp.example:443", k);
                        buf_str(b, 8, a);
                }
        }
        if (m == M_CONTROLLER_256) {
                char a[300];

                snprintf(a, sizeof(a), "%s.example:4430", repeat('h', 243));
                ASSERT_UEQ(strlen(a), 256);
                buf_str(b, 8, a);
        }
        if (m == M_BAD_CONTROLLER)
                buf_str(b, 8, "controller.example");
        if (m == M_NETWORK_ON_TUNNELER)
                buf_str(b, 9, "lan");
        if (m == M_GROUPS_65 || m == M_GROUPS_64 || m == M_GROUPS_ON_CONNECTOR)
                for (size_t k = 0; k < (m == M_GROUPS_65 ? 65u : m == M_GROUPS_64 ? 64u : 1u); k++) {
                        char g[32];

                        snprintf(g, sizeof(g), "group-%zu", k);
                        buf_str(b, 10, g);
                }
        if (m == M_BAD_GROUP)
                buf_str(b, 10, "two words");
        buf_u64(b, 11, m == M_U64_MAX_DURATION ? IDENTITY_DURATION_MAX + 1 : 10 * USEC_PER_SEC);
        if (m == M_U64_ZERO)
                buf_u64(b, 12, 0);
        if (m == M_U64_SHORT)
                buf_field(b, 12, "\x01\x02\x03\x04\x05\x06\x07", 7);
        buf_u64(b, 13, m == M_NOT_AFTER_INF ? USEC_INFINITY : 1767225600ULL * USEC_PER_SEC);
        if (m == M_TAG_14)
                buf_str(b, 14, "x");
        if (m == M_TAG_255)
                buf_str(b, 255, "x");
        if (m == M_TRAILING_BYTE)
                buf_put(b, "\x00", 1);
        if (m == M_TRAILING_FIELD)
                buf_u64(b, 13, 5);
        if (m == M_TRUNC_HEADER)
                buf_put(b, "\x0d\x00\x00\x00", 4);
        if (m == M_TRUNC_VALUE)
                b->size--;
}

TEST(parse_table) {
        static const struct {
                int m;
                int error;      /* 0: accepted */
                const char *reason;
        } table[] = {
                { M_NONE, 0, NULL },
                { M_CHAIN_4, 0, NULL },
                { M_BUNDLE_16, 0, NULL },
                { M_CONTROLLERS_8, 0, NULL },
                { M_GROUPS_64, 0, NULL },
                { M_ID_128, 0, NULL },
                { M_DER_MAX, 0, NULL },
                { M_EMPTY, EBADMSG, "bad magic" },
                { M_MAGIC, EBADMSG, "bad magic" },
                { M_VERSION_0, EBADMSG, "format version" },
                { M_VERSION_2, EPROTONOSUPPORT, "newer" },
                { M_HEADER_ONLY, EBADMSG, "missing role" },
                { M_TAG_0, EBADMSG, "unknown field" },
                { M_TAG_14, EBADMSG, "unknown field" },
                { M_TAG_255, EBADMSG, "unknown field" },
                { M_DUP_ID, EBADMSG, "duplicate field" },
                { M_DUP_KEY, EBADMSG, "duplicate field" },
                { M_ORDER, EBADMSG, "out of order" },
                { M_TRAILING_BYTE, EBADMSG, "truncated field header" },
                { M_TRAILING_FIELD, EBADMSG, "duplicate field" },
                { M_TRUNC_HEADER, EBADMSG, "truncated field header" },
                { M_TRUNC_VALUE, EBADMSG, "truncated field" },
                { M_NO_ROLE, EBADMSG, "missing role" },
                { M_NO_ID, EBADMSG, "agent id" },
                { M_NO_SPIFFE, EBADMSG, "SPIFFE ID" },
                { M_NO_TD, EBADMSG, "trust domain" },
                { M_NO_KEY, EBADMSG, "private key" },
                { M_NO_CHAIN, EBADMSG, "no certificate chain" },
                { M_NO_BUNDLE, EBADMSG, "no trust bundle root" },
                { M_NO_CONTROLLER, EBADMSG, "no controller" },
                { M_CHAIN_5, EBADMSG, "too many certificates" },
                { M_BUNDLE_17, EBADMSG, "too many roots" },
                { M_CONTROLLERS_9, EBADMSG, "too many controllers" },
                { M_GROUPS_65, EBADMSG, "too many groups" },
                { M_ID_129, EBADMSG, "longer than its limit" },
                { M_DER_MAX_1, EBADMSG, "longer than its limit" },
                { M_CONTROLLER_256, EBADMSG, "longer than its limit" },
                { M_TD_256, EBADMSG, "longer than its limit" },
                { M_SPIFFE_LONG, EBADMSG, "longer than its limit" },
                { M_ROLE_LONG, EBADMSG, "longer than its limit" },
                { M_U64_ZERO, EBADMSG, "non-zero 8-byte" },
                { M_U64_SHORT, EBADMSG, "non-zero 8-byte" },
                { M_U64_MAX_DURATION, EBADMSG, "heartbeat interval out of range" },
                { M_NOT_AFTER_INF, EBADMSG, "expiry out of range" },
                { M_EMPTY_STRING, EBADMSG, "empty, overlong or NUL" },
                { M_NUL_STRING, EBADMSG, "empty, overlong or NUL" },
                { M_DER_TRAILING, EBADMSG, "private key is not one DER sequence" },
                { M_DER_NONMINIMAL, EBADMSG, "private key is not one DER sequence" },
                { M_DER_TAG, EBADMSG, "private key is not one DER sequence" },
                { M_DER_LONG_FORM_ZERO, EBADMSG, "private key is not one DER sequence" },
                { M_ROLE_CONTROLLER, EBADMSG, "not connector or tunneler" },
                { M_ROLE_BOGUS, EBADMSG, "not connector or tunneler" },
                { M_SPIFFE_MISMATCH, EBADMSG, "does not match" },
                { M_SPIFFE_TD_MISMATCH, EBADMSG, "does not match" },
                { M_GROUPS_ON_CONNECTOR, EBADMSG, "tunnelers only" },
                { M_NETWORK_ON_TUNNELER, EBADMSG, "connectors only" },
                { M_BAD_CONTROLLER, EBADMSG, "invalid controller address" },
                { M_BAD_GROUP, EBADMSG, "invalid group name" },
                { M_BAD_TD, EBADMSG, "trust domain" },
        };
        static Buf b;

        for (size_t t = 0; t < ELEMENTSOF(table); t++) {
                AgentIdentity i = { .id = (char *) "sentinel" };
                const char *reason = NULL;

                CASE("mutation %d", table[t].m);
                build(&b, table[t].m);
                if (table[t].error == 0) {
                        uint8_t *out = NULL;
                        size_t n = 0;

                        ASSERT_OK(identity_parse(b.data, b.size, &i, &reason));
                        ASSERT_NULL(reason);
                        ASSERT_OK(identity_serialize(&i, &out, &n, NULL));
                        ASSERT_UEQ(n, b.size);
                        ASSERT_MEMEQ(out, b.data, n);
                        erase_and_free(out, n);
                        agent_identity_done(&i);
                        continue;
                }
                ASSERT_ERROR(identity_parse(b.data, b.size, &i, &reason), table[t].error);
                ASSERT_STRSTR(reason, table[t].reason);
                /* Untouched on failure. */
                ASSERT_STREQ(i.id, "sentinel");
                ASSERT_NULL(i.key.data);
        }
}

TEST(parse_truncated_everywhere) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        uint8_t *s = NULL;
        size_t n = 0;

        make_identity(&a, SPIFFE_ROLE_TUNNELER, true);
        ASSERT_OK(identity_serialize(&a, &s, &n, NULL));
        /* Every proper prefix is refused: the last field is optional, so some prefixes end on a field
         * boundary and must still fail on a missing field or a truncated one, never parse. A prefix that
         * ends on a boundary after the required fields is a valid (smaller) identity, which is fine. */
        for (size_t k = 0; k < n; k++) {
                AgentIdentity b = {};
                int r;

                CASE("prefix %zu of %zu", k, n);
                r = identity_parse(s, k, &b, NULL);
                if (r >= 0) {
                        uint8_t *s2 = NULL;
                        size_t n2 = 0;

                        ASSERT_OK(identity_serialize(&b, &s2, &n2, NULL));
                        ASSERT_UEQ(n2, k);
                        ASSERT_MEMEQ(s2, s, k);
                        erase_and_free(s2, n2);
                        agent_identity_done(&b);
                } else
                        ASSERT_EQ(r, -EBADMSG);
        }
        erase_and_free(s, n);
}

TEST(serialize_refuses) {
        static const struct {
                const char *name;
                const char *reason;
        } table[] = {
                { "role controller", "not connector or tunneler" },
                { "no chain", "no certificate chain" },
                { "chain 5", "too many certificates" },
                { "bundle 0", "no trust bundle root" },
                { "bundle 17", "too many roots" },
                { "no key", "private key" },
                { "key not DER", "private key" },
                { "groups on connector", "tunnelers only" },
                { "network on tunneler", "connectors only" },
                { "empty network", "invalid remote network" },
                { "no controllers", "no controller address" },
                { "bad id", "agent id" },
                { "lifetime too long", "certificate lifetime" },
        };

        for (size_t t = 0; t < ELEMENTSOF(table); t++) {
                _cleanup_(agent_identity_done) AgentIdentity a = {};
                const char *n = table[t].name, *reason = NULL;
                uint8_t *out = NULL;
                size_t size = 0;
                SpiffeRole saved_role;
                size_t saved_chain, saved_bundle, saved_key;

                CASE("%s", n);
                make_identity(&a, streq(n, "groups on connector") || streq(n, "empty network") ?
                                  SPIFFE_ROLE_CONNECTOR : SPIFFE_ROLE_TUNNELER, false);
                saved_role = a.role;
                saved_chain = a.n_chain;
                saved_bundle = a.n_bundle;
                saved_key = a.key.size;
                if (streq(n, "role controller"))
                        a.role = SPIFFE_ROLE_CONTROLLER;
                else if (streq(n, "no chain"))
                        a.n_chain = 0;
                else if (streq(n, "chain 5"))
                        a.n_chain = 5;
                else if (streq(n, "bundle 0"))
                        a.n_bundle = 0;
                else if (streq(n, "bundle 17"))
                        a.n_bundle = 17;
                else if (streq(n, "no key"))
                        a.key.size = 0;
                else if (streq(n, "key not DER"))
                        a.key.data[0] = 0x04;
                else if (streq(n, "groups on connector"))
                        ASSERT_OK(strv_extend(&a.groups, "eng"));
                else if (streq(n, "network on tunneler") || streq(n, "empty network"))
                        ASSERT_NOT_NULL(a.remote_network = strdup(streq(n, "empty network") ? "" : "lan"));
                else if (streq(n, "no controllers"))
                        a.controllers = strv_free(a.controllers);
                else if (streq(n, "bad id"))
                        a.id[0] = '/';
                else if (streq(n, "lifetime too long"))
                        a.certificate_lifetime = IDENTITY_DURATION_MAX + 1;

                ASSERT_ERROR(identity_serialize(&a, &out, &size, &reason), EINVAL);
                ASSERT_STRSTR(reason, table[t].reason);
                ASSERT_NULL(out);
                ASSERT_ERROR(identity_check(&a, NULL), EINVAL);

                /* Restore what agent_identity_done() walks so the cleanup frees exactly what exists. */
                a.role = saved_role;
                a.n_chain = saved_chain;
                a.n_bundle = saved_bundle;
                a.key.size = saved_key;
        }
}

/* ---- the store ---- */

static uint8_t *file_bytes(const char *path, size_t *ret_size) {
        size_t n = 0;
        char *p = test_read_file(path, &n);
        uint8_t *copy = malloc(n + 1);

        ASSERT_NOT_NULL(copy);
        memcpy(copy, p, n);
        *ret_size = n;
        return copy;
}

TEST(store_roundtrip) {
        static const SpiffeRole roles[] = { SPIFFE_ROLE_CONNECTOR, SPIFFE_ROLE_TUNNELER };

        for (size_t r = 0; r < ELEMENTSOF(roles); r++) {
                _cleanup_(agent_identity_done) AgentIdentity a = {}, b = {};
                _cleanup_free_ char *dir = NULL;
                struct stat st;

                CASE("%s", spiffe_role_to_string(roles[r]));
                ASSERT_TRUE(asprintf(&dir, "%s/%zu", test_tmpdir(), r) > 0);
                ASSERT_OK(mkdir(dir, 0755));
                make_identity(&a, roles[r], true);
                ASSERT_OK(identity_store_save(dir, roles[r], kek_a, &a, 0, NULL));
                ASSERT_OK(lstat(join(dir, "identity"), &st));
                ASSERT_TRUE(S_ISREG(st.st_mode));
                ASSERT_EQ(st.st_mode & 07777, 0600);
                /* The first save has nothing to keep. */
                ASSERT_FALSE(exists(join(dir, "identity.previous")));
                ASSERT_OK(identity_store_load(dir, roles[r], kek_a, &b, NULL));
                assert_identity_eq(&a, &b);
        }
}

static bool memmem_found(const uint8_t *hay, size_t n, const void *needle, size_t m) {
        return memmem(hay, n, needle, m) != NULL;
}

TEST(store_no_key_material_in_clear) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
        _cleanup_free_ uint8_t *file = NULL;
        char *pem = NULL, *body;
        const uint8_t *scalar;
        char *dir = state_dir();
        size_t n = 0, pem_size = 0;

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, true);
        ASSERT_OK(crypto_key_from_pkcs8_der(a.key.data, a.key.size, &k));
        ASSERT_OK(crypto_key_to_pkcs8_pem(k, &pem, &pem_size));
        /* The raw P-256 scalar: ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (32) … }. */
        scalar = memmem(a.key.data, a.key.size, "\x02\x01\x01\x04\x20", 5);
        ASSERT_NOT_NULL(scalar);
        scalar += 5;
        ASSERT_TRUE(scalar + 32 <= a.key.data + a.key.size);

        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));
        file = file_bytes(join(dir, "identity"), &n);
        ASSERT_GT(n, a.key.size);

        ASSERT_FALSE(memmem_found(file, n, a.key.data, a.key.size));
        ASSERT_FALSE(memmem_found(file, n, scalar, 32));
        ASSERT_FALSE(memmem_found(file, n, scalar, 8));
        ASSERT_FALSE(memmem_found(file, n, "PRIVATE KEY", STRLEN("PRIVATE KEY")));
        body = strchr(pem, '\n');
        ASSERT_NOT_NULL(body);
        ASSERT_FALSE(memmem_found(file, n, body + 1, 32));
        /* Nor the plaintext format (which would mean the seal was skipped). */
        ASSERT_FALSE(memmem_found(file, n, IDENTITY_FORMAT_MAGIC, IDENTITY_FORMAT_MAGIC_SIZE));
        ASSERT_FALSE(memmem_found(file, n, "conn-1", 6));
        ASSERT_MEMEQ(file, ENVELOPE_MAGIC, ENVELOPE_MAGIC_SIZE);
        crypto_erase_and_free(pem, pem_size);
}

TEST(store_bit_flip_anywhere) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        _cleanup_free_ uint8_t *orig = NULL;
        char *dir = state_dir(), path[512];
        size_t n = 0;

        snprintf(path, sizeof(path), "%s/identity", dir);
        make_identity(&a, SPIFFE_ROLE_TUNNELER, false);
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &a, 0, NULL));
        orig = file_bytes(path, &n);

        for (size_t off = 0; off < n; off++) {
                AgentIdentity b = { .id = (char *) "sentinel" };
                const char *reason = NULL;
                uint8_t *flipped = malloc(n), *after;
                size_t m = 0;
                int r;

                CASE("byte %zu bit %zu of %zu", off, off % 8, n);
                ASSERT_NOT_NULL(flipped);
                memcpy(flipped, orig, n);
                flipped[off] ^= (uint8_t) (1U << (off % 8));
                test_write_file(path, flipped, n);

                r = identity_store_load(dir, SPIFFE_ROLE_TUNNELER, kek_a, &b, &reason);
                if (off == ENVELOPE_MAGIC_SIZE || off == ENVELOPE_MAGIC_SIZE + 1)
                        /* version and algorithm bytes: a higher number may be a newer release */
                        ASSERT_TRUE(r == -EPROTONOSUPPORT || r == -EBADMSG);
                else if (off < ENVELOPE_MAGIC_SIZE)
                        ASSERT_EQ(r, -EBADMSG);
                else
                        ASSERT_EQ(r, -EKEYREJECTED);
                ASSERT_NOT_NULL(reason);
                ASSERT_STREQ(b.id, "sentinel");

                /* Loading never modifies the file and never creates anything. */
                after = file_bytes(path, &m);
                ASSERT_UEQ(m, n);
                ASSERT_MEMEQ(after, flipped, n);
                ASSERT_FALSE(exists(join(dir, "identity.previous")));
                free(after);
                free(flipped);
        }
}

TEST(store_truncated) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        _cleanup_free_ uint8_t *orig = NULL;
        char *dir = state_dir(), path[512];
        size_t n = 0;

        snprintf(path, sizeof(path), "%s/identity", dir);
        make_identity(&a, SPIFFE_ROLE_TUNNELER, false);
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &a, 0, NULL));
        orig = file_bytes(path, &n);
        for (size_t k = 0; k < n; k++) {
                AgentIdentity b = {};
                const char *reason = NULL;

                CASE("length %zu of %zu", k, n);
                test_write_file(path, orig, k);
                if (k < ENVELOPE_OVERHEAD)
                        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_TUNNELER, kek_a, &b, &reason),
                                     EBADMSG);
                else
                        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_TUNNELER, kek_a, &b, &reason),
                                     EKEYREJECTED);
                ASSERT_NOT_NULL(reason);
        }
}

TEST(store_wrong_kek_and_role) {
        _cleanup_(agent_identity_done) AgentIdentity c = {}, t = {};
        char *dir_c, *dir_t;
        static const struct {
                bool connector_file;
                SpiffeRole as;
                const uint8_t *kek;
                int error;
        } table[] = {
                { true, SPIFFE_ROLE_CONNECTOR, kek_b, EKEYREJECTED },
                { true, SPIFFE_ROLE_TUNNELER, kek_a, EKEYREJECTED },
                { false, SPIFFE_ROLE_CONNECTOR, kek_a, EKEYREJECTED },
                { false, SPIFFE_ROLE_TUNNELER, kek_b, EKEYREJECTED },
                { true, SPIFFE_ROLE_CONTROLLER, kek_a, EINVAL },
        };

        dir_c = test_path("c");
        dir_t = test_path("t");
        ASSERT_OK(mkdir(dir_c, 0700));
        ASSERT_OK(mkdir(dir_t, 0700));
        make_identity(&c, SPIFFE_ROLE_CONNECTOR, false);
        make_identity(&t, SPIFFE_ROLE_TUNNELER, false);
        ASSERT_OK(identity_store_save(dir_c, SPIFFE_ROLE_CONNECTOR, kek_a, &c, 0, NULL));
        ASSERT_OK(identity_store_save(dir_t, SPIFFE_ROLE_TUNNELER, kek_a, &t, 0, NULL));

        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                AgentIdentity b = {};
                const char *reason = NULL;

                CASE("%s file as %s", table[k].connector_file ? "connector" : "tunneler",
                     spiffe_role_to_string(table[k].as));
                ASSERT_ERROR(identity_store_load(table[k].connector_file ? dir_c : dir_t, table[k].as,
                                                 table[k].kek, &b, &reason), table[k].error);
                ASSERT_NOT_NULL(reason);
                if (table[k].error == EKEYREJECTED)
                        ASSERT_STRSTR(reason, "wrong key-encryption key");
        }
}

TEST(store_foreign_files) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        char *dir = state_dir(), path[512];
        AgentIdentity b = {};
        const char *reason = NULL;
        uint8_t *plain = NULL, *sealed;
        size_t n = 0;

        snprintf(path, sizeof(path), "%s/identity", dir);
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), ENOENT);
        ASSERT_STRSTR(reason, "not enrolled");
        ASSERT_ERROR(identity_store_load_previous(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), ENOENT);
        ASSERT_STRSTR(reason, "no previous identity");

        test_write_file(path, "-----BEGIN PRIVATE KEY-----\n", 28);
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EBADMSG);
        ASSERT_STRSTR(reason, "not a sealed identity");

        /* An unsealed identity is refused too: plaintext on disk is never accepted. */
        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        ASSERT_OK(identity_serialize(&a, &plain, &n, NULL));
        test_write_file(path, plain, n);
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EBADMSG);
        erase_and_free(plain, n);

        test_write_file(path, "", 0);
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EBADMSG);

        /* A newer envelope version. (The empty file would not be replaced without force.) */
        ASSERT_OK(unlink(path));
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));
        sealed = file_bytes(path, &n);
        sealed[ENVELOPE_MAGIC_SIZE] = ENVELOPE_VERSION + 1;
        test_write_file(path, sealed, n);
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPROTONOSUPPORT);
        ASSERT_STRSTR(reason, "newer version");
        free(sealed);

        /* Oversized. */
        {
                int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);

                ASSERT_TRUE(fd >= 0);
                ASSERT_OK(ftruncate(fd, IDENTITY_FILE_MAX + 1));
                close(fd);
        }
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EFBIG);
}

TEST(store_previous_commit_rollback) {
        _cleanup_(agent_identity_done) AgentIdentity v1 = {}, v2 = {}, v3 = {};
        char *dir = state_dir();

        make_identity(&v1, SPIFFE_ROLE_TUNNELER, false);
        make_identity(&v2, SPIFFE_ROLE_TUNNELER, true);
        make_identity(&v3, SPIFFE_ROLE_TUNNELER, false);
        v1.not_after = 1;
        v2.not_after = 2;
        v3.not_after = 3;

#define EXPECT(name, loader, v)                                                                     \
        do {                                                                                        \
                _cleanup_(agent_identity_done) AgentIdentity _x = {};                               \
                ASSERT_OK(loader(dir, SPIFFE_ROLE_TUNNELER, kek_a, &_x, NULL));                     \
                assert_identity_eq(&_x, &(v));                                                      \
        } while (0)

        ASSERT_EQ(identity_store_commit(dir, NULL), -ENOENT);
        ASSERT_ERROR(identity_store_rollback(dir, NULL), ENOENT);

        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v1, 0, NULL));
        ASSERT_EQ(ASSERT_OK(identity_store_commit(dir, NULL)), 0);

        /* Save twice: the previous holds the first version. */
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v2, 0, NULL));
        EXPECT("current", identity_store_load, v2);
        EXPECT("previous", identity_store_load_previous, v1);

        /* A third save before the second is proven keeps the last proven one as previous. */
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v3, 0, NULL));
        EXPECT("current", identity_store_load, v3);
        EXPECT("previous", identity_store_load_previous, v1);

        /* Rollback restores it, and there is no previous left. */
        ASSERT_OK(identity_store_rollback(dir, NULL));
        EXPECT("current", identity_store_load, v1);
        ASSERT_FALSE(exists(join(dir, "identity.previous")));
        ASSERT_ERROR(identity_store_rollback(dir, NULL), ENOENT);

        /* Commit removes the previous (1), a second commit has nothing to do (0). */
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v2, 0, NULL));
        ASSERT_TRUE(exists(join(dir, "identity.previous")));
        ASSERT_EQ(ASSERT_OK(identity_store_commit(dir, NULL)), 1);
        ASSERT_FALSE(exists(join(dir, "identity.previous")));
        ASSERT_EQ(ASSERT_OK(identity_store_commit(dir, NULL)), 0);
        EXPECT("current", identity_store_load, v2);
        ASSERT_ERROR(identity_store_load_previous(dir, SPIFFE_ROLE_TUNNELER, kek_a, &(AgentIdentity) {}, NULL),
                     ENOENT);

        /* Commit refuses to leave nothing behind. */
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v3, 0, NULL));
        ASSERT_OK(unlink(join(dir, "identity")));
        ASSERT_ERROR(identity_store_commit(dir, NULL), ENOENT);
        ASSERT_TRUE(exists(join(dir, "identity.previous")));
#undef EXPECT
}

/* A crash (SIGKILL) at any point of a save or commit leaves an identity that loads, and a previous one that
 * loads whenever it exists. */
TEST(store_crash_anywhere) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        char *dir = state_dir();
        unsigned seed = (unsigned) time(NULL);

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        a.not_after = 1;
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));

        for (unsigned round = 0; round < 60; round++) {
                _cleanup_(agent_identity_done) AgentIdentity cur = {}, prev = {};
                int status, r;
                pid_t pid;

                CASE("round %u seed %u", round, seed);
                pid = fork();
                ASSERT_TRUE(pid >= 0);
                if (pid == 0) {
                        for (usec_t v = 2;; v++) {
                                a.not_after = v;
                                if (identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL) < 0)
                                        _exit(1);
                                if (v % 3 == 0 && identity_store_commit(dir, NULL) < 0)
                                        _exit(2);
                                if (v % 7 == 0) {
                                        r = identity_store_rollback(dir, NULL);
                                        if (r < 0 && r != -ENOENT)
                                                _exit(3);
                                }
                        }
                }
                (void) usleep(500 + (unsigned) rand_r(&seed) % 20000);
                ASSERT_OK(kill(pid, SIGKILL));
                ASSERT_EQ(waitpid(pid, &status, 0), pid);
                /* Killed, not an error exit of the loop. */
                ASSERT_TRUE(WIFSIGNALED(status));

                ASSERT_OK(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &cur, NULL));
                ASSERT_STREQ(cur.id, "conn-1");
                r = identity_store_load_previous(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &prev, NULL);
                ASSERT_TRUE(r >= 0 || r == -ENOENT);
        }
}

TEST(store_refuses_unsafe_paths) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        char *dir = state_dir(), *link = test_path("link"), *other = test_path("other");
        AgentIdentity b = {};
        const char *reason = NULL;
        static const mode_t bad_modes[] = { 0777, 0775, 0757, 0722, 0770 };
        static const mode_t good_modes[] = { 0700, 0750, 0755 };

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);

        /* A symlinked state directory. */
        ASSERT_OK(symlink(dir, link));
        ASSERT_ERROR(identity_store_save(link, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EPERM);
        ASSERT_STRSTR(reason, "state directory is a symbolic link");
        ASSERT_FALSE(exists(join(dir, "identity")));
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));
        ASSERT_ERROR(identity_store_load(link, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_STRSTR(reason, "symbolic link");
        ASSERT_ERROR(identity_store_commit(link, &reason), EPERM);
        ASSERT_ERROR(identity_store_rollback(link, &reason), EPERM);

        /* Group- or world-writable directories. */
        for (size_t k = 0; k < ELEMENTSOF(bad_modes); k++) {
                CASE("mode %04o", bad_modes[k]);
                ASSERT_OK(chmod(dir, bad_modes[k]));
                ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
                ASSERT_STRSTR(reason, "writable by group or others");
                ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EPERM);
                ASSERT_FALSE(exists(join(dir, "identity.previous")));
        }
        for (size_t k = 0; k < ELEMENTSOF(good_modes); k++) {
                CASE("mode %04o", good_modes[k]);
                ASSERT_OK(chmod(dir, good_modes[k]));
                ASSERT_OK(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, NULL));
                agent_identity_done(&b);
        }
        CASE("files");

        /* A symlinked identity file, for load, save and rollback. */
        ASSERT_OK(rename(join(dir, "identity"), other));
        ASSERT_OK(symlink(other, join(dir, "identity")));
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_STRSTR(reason, "identity file is a symbolic link");
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EPERM);
        ASSERT_STRSTR(reason, "identity file is a symbolic link");
        ASSERT_ERROR(identity_store_commit(dir, &reason), EPERM);
        ASSERT_OK(unlink(join(dir, "identity")));

        ASSERT_OK(symlink(other, join(dir, "identity.previous")));
        ASSERT_ERROR(identity_store_load_previous(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_ERROR(identity_store_rollback(dir, &reason), EPERM);
        ASSERT_STRSTR(reason, "symbolic link");
        ASSERT_OK(unlink(join(dir, "identity.previous")));

        /* Not regular files: a directory and a FIFO (which must not block the load). */
        ASSERT_OK(mkdir(join(dir, "identity"), 0700));
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_STRSTR(reason, "not a regular file");
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EPERM);
        ASSERT_OK(rmdir(join(dir, "identity")));
        ASSERT_OK(mkfifo(join(dir, "identity"), 0600));
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_STRSTR(reason, "not a regular file");
        ASSERT_OK(unlink(join(dir, "identity")));

        /* Missing directory, and a file where the directory should be. */
        ASSERT_ERROR(identity_store_load(join(dir, "nope"), SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), ENOENT);
        ASSERT_ERROR(identity_store_save(other, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), ENOTDIR);
        ASSERT_STRSTR(reason, "not a directory");
}

TEST(store_save_refuses_before_touching) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        char *dir = state_dir();
        const char *reason = NULL;

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &a, 0, &reason), EINVAL);
        ASSERT_STRSTR(reason, "another role");
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONTROLLER, kek_a, &a, 0, &reason), EINVAL);
        a.n_bundle = 0;
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EINVAL);
        ASSERT_STRSTR(reason, "no trust bundle root");
        a.n_bundle = 1;
        ASSERT_FALSE(exists(join(dir, "identity")));
        ASSERT_ERROR(identity_store_save("", SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EINVAL);
}

/* ---- an unreadable current file is never replaced or kept as previous silently ---- */

/* Names in dir starting with IDENTITY_CORRUPT_FILE_PREFIX; the first one in *ret_first (static). */
static unsigned corrupt_files(const char *dir, const char **ret_first) {
        static char first[256];
        struct dirent **list;
        unsigned found = 0;
        int n;

        n = scandir(dir, &list, NULL, alphasort);
        ASSERT_TRUE(n >= 0);
        for (int k = 0; k < n; k++) {
                if (strncmp(list[k]->d_name, IDENTITY_CORRUPT_FILE_PREFIX, STRLEN(IDENTITY_CORRUPT_FILE_PREFIX)) ==
                    0 && found++ == 0)
                        snprintf(first, sizeof(first), "%s", list[k]->d_name);
                free(list[k]);
        }
        free(list);
        if (ret_first)
                *ret_first = found > 0 ? first : NULL;
        return found;
}

typedef enum Damage {
        DAMAGE_WRONG_KEK,
        DAMAGE_OTHER_ROLE,
        DAMAGE_BIT_FLIP,
        DAMAGE_TRUNCATED,
        DAMAGE_GARBAGE,
        DAMAGE_EMPTY,
        DAMAGE_PLAINTEXT,
        DAMAGE_NEWER_VERSION,
        DAMAGE_OVERSIZED,
} Damage;

/* Puts a current identity file into dir that does not open as a connector's under kek_a. */
static void damage_current(const char *dir, Damage d) {
        _cleanup_(agent_identity_done) AgentIdentity c = {}, t = {};
        char *path = join(dir, "identity");
        uint8_t *bytes = NULL;
        size_t n = 0;
        int fd;

        make_identity(&c, SPIFFE_ROLE_CONNECTOR, false);
        switch (d) {
        case DAMAGE_WRONG_KEK:
                ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_b, &c, 0, NULL));
                break;
        case DAMAGE_OTHER_ROLE:
                make_identity(&t, SPIFFE_ROLE_TUNNELER, false);
                ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &t, 0, NULL));
                break;
        case DAMAGE_BIT_FLIP:
        case DAMAGE_TRUNCATED:
        case DAMAGE_NEWER_VERSION:
                ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &c, 0, NULL));
                bytes = file_bytes(path, &n);
                if (d == DAMAGE_BIT_FLIP)
                        bytes[n / 2] ^= 0x10;
                else if (d == DAMAGE_TRUNCATED)
                        n -= 1;
                else
                        bytes[ENVELOPE_MAGIC_SIZE] = ENVELOPE_VERSION + 1;
                test_write_file(path, bytes, n);
                free(bytes);
                break;
        case DAMAGE_GARBAGE:
                test_write_file(path, "-----BEGIN PRIVATE KEY-----\n", 28);
                break;
        case DAMAGE_EMPTY:
                test_write_file(path, "", 0);
                break;
        case DAMAGE_PLAINTEXT:
                ASSERT_OK(identity_serialize(&c, &bytes, &n, NULL));
                test_write_file(path, bytes, n);
                erase_and_free(bytes, n);
                break;
        case DAMAGE_OVERSIZED:
                test_write_file(path, "", 0);
                fd = open(path, O_WRONLY | O_CLOEXEC);
                ASSERT_TRUE(fd >= 0);
                ASSERT_OK(ftruncate(fd, IDENTITY_FILE_MAX + 1));
                close(fd);
                break;
        }
        /* Saving above may have kept a previous; each case starts with the damaged file alone. */
        (void) unlink(join(dir, "identity.previous"));
}

#define OPEN_REASON "does not open with this key-encryption key and role"

static const struct {
        const char *name;
        Damage damage;
        int error;
        const char *reason;
} damage_table[] = {
        { "wrong KEK", DAMAGE_WRONG_KEK, EKEYREJECTED, OPEN_REASON },
        { "other role", DAMAGE_OTHER_ROLE, EKEYREJECTED, OPEN_REASON },
        { "bit flip", DAMAGE_BIT_FLIP, EKEYREJECTED, OPEN_REASON },
        { "truncated", DAMAGE_TRUNCATED, EKEYREJECTED, OPEN_REASON },
        { "garbage", DAMAGE_GARBAGE, EBADMSG, "damaged or not an identity" },
        { "empty", DAMAGE_EMPTY, EBADMSG, "damaged or not an identity" },
        { "plaintext", DAMAGE_PLAINTEXT, EBADMSG, "damaged or not an identity" },
        { "newer version", DAMAGE_NEWER_VERSION, EPROTONOSUPPORT, "newer version" },
        { "oversized", DAMAGE_OVERSIZED, EFBIG, "too large" },
};

TEST(store_save_refuses_unreadable_current) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        for (size_t k = 0; k < ELEMENTSOF(damage_table); k++) {
                _cleanup_free_ char *dir = NULL;
                _cleanup_free_ uint8_t *before = NULL, *after = NULL;
                const char *reason = NULL;
                size_t n = 0, m = 0;

                CASE("%s", damage_table[k].name);
                ASSERT_TRUE(asprintf(&dir, "%s/%zu", test_tmpdir(), k) > 0);
                ASSERT_OK(mkdir(dir, 0700));
                damage_current(dir, damage_table[k].damage);
                before = file_bytes(join(dir, "identity"), &n);

                ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason),
                             damage_table[k].error);
                ASSERT_STRSTR(reason, damage_table[k].reason);
                ASSERT_STRSTR(reason, "without force");

                /* Nothing changed: same bytes, nothing kept as previous, nothing moved aside. */
                after = file_bytes(join(dir, "identity"), &m);
                ASSERT_UEQ(m, n);
                ASSERT_MEMEQ(after, before, n);
                ASSERT_FALSE(exists(join(dir, "identity.previous")));
                ASSERT_EQ(corrupt_files(dir, NULL), 0U);
        }
}

TEST(store_save_force_moves_unreadable_aside) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        a.not_after = 42;
        for (size_t k = 0; k < ELEMENTSOF(damage_table); k++) {
                _cleanup_(agent_identity_done) AgentIdentity b = {};
                _cleanup_free_ char *dir = NULL;
                _cleanup_free_ uint8_t *before = NULL, *aside = NULL;
                const char *name = NULL;
                usec_t t0, stamp;
                size_t n = 0, m = 0;

                CASE("%s", damage_table[k].name);
                ASSERT_TRUE(asprintf(&dir, "%s/%zu", test_tmpdir(), k) > 0);
                ASSERT_OK(mkdir(dir, 0700));
                damage_current(dir, damage_table[k].damage);
                before = file_bytes(join(dir, "identity"), &n);

                t0 = now(CLOCK_REALTIME);
                ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, IDENTITY_SAVE_FORCE,
                                              NULL));
                ASSERT_OK(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, NULL));
                assert_identity_eq(&a, &b);

                /* The unreadable file is kept, byte for byte, under a timestamped name, and not as the
                 * previous identity (which a rollback would bring back). */
                ASSERT_EQ(corrupt_files(dir, &name), 1U);
                ASSERT_EQ(sscanf(name + STRLEN(IDENTITY_CORRUPT_FILE_PREFIX), "%" SCNu64, &stamp), 1);
                ASSERT_TRUE(stamp >= t0 && stamp <= now(CLOCK_REALTIME));
                aside = file_bytes(join(dir, name), &m);
                ASSERT_UEQ(m, n);
                ASSERT_MEMEQ(aside, before, n);
                ASSERT_FALSE(exists(join(dir, "identity.previous")));
        }
}

/* Force only acts on a file that does not open: a good current one is kept as previous as always. */
TEST(store_save_force_keeps_good_current) {
        _cleanup_(agent_identity_done) AgentIdentity v1 = {}, v2 = {}, p = {};
        char *dir = state_dir();

        make_identity(&v1, SPIFFE_ROLE_TUNNELER, false);
        make_identity(&v2, SPIFFE_ROLE_TUNNELER, true);
        v1.not_after = 1;
        v2.not_after = 2;
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v1, IDENTITY_SAVE_FORCE, NULL));
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_TUNNELER, kek_a, &v2, IDENTITY_SAVE_FORCE, NULL));
        ASSERT_OK(identity_store_load_previous(dir, SPIFFE_ROLE_TUNNELER, kek_a, &p, NULL));
        assert_identity_eq(&v1, &p);
        ASSERT_EQ(corrupt_files(dir, NULL), 0U);
}

/* An unproven current file that does not open, with a proven previous one: refused likewise; forced, the
 * previous one stays the last proven and the damaged one is moved aside. */
TEST(store_save_unreadable_current_with_previous) {
        _cleanup_(agent_identity_done) AgentIdentity v1 = {}, v2 = {}, v3 = {}, p = {}, c = {};
        _cleanup_free_ uint8_t *bytes = NULL;
        char *dir = state_dir();
        const char *reason = NULL;
        size_t n = 0;

        make_identity(&v1, SPIFFE_ROLE_CONNECTOR, false);
        make_identity(&v2, SPIFFE_ROLE_CONNECTOR, false);
        make_identity(&v3, SPIFFE_ROLE_CONNECTOR, false);
        v1.not_after = 1;
        v2.not_after = 2;
        v3.not_after = 3;
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &v1, 0, NULL));
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &v2, 0, NULL));
        bytes = file_bytes(join(dir, "identity"), &n);
        bytes[n - 1] ^= 1;
        test_write_file(join(dir, "identity"), bytes, n);

        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &v3, 0, &reason), EKEYREJECTED);
        ASSERT_STRSTR(reason, "without force");
        ASSERT_EQ(corrupt_files(dir, NULL), 0U);

        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &v3, IDENTITY_SAVE_FORCE, NULL));
        ASSERT_EQ(corrupt_files(dir, NULL), 1U);
        ASSERT_OK(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &c, NULL));
        assert_identity_eq(&v3, &c);
        ASSERT_OK(identity_store_load_previous(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &p, NULL));
        assert_identity_eq(&v1, &p);
}

TEST(store_save_unknown_flags) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        char *dir = state_dir();
        const char *reason = NULL;

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 1 << 5, &reason), EINVAL);
        ASSERT_STRSTR(reason, "unknown flags");
        ASSERT_FALSE(exists(join(dir, "identity")));
}

/* ---- the state directory must be ours ---- */

TEST(store_dir_owned_by_another_user) {
        _cleanup_(agent_identity_done) AgentIdentity a = {};
        AgentIdentity b = { .id = (char *) "sentinel" };
        char *dir = state_dir();
        const char *reason = NULL;
        struct stat st;

        make_identity(&a, SPIFFE_ROLE_CONNECTOR, false);
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));
        ASSERT_OK(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, NULL));
        ASSERT_TRUE(exists(join(dir, "identity.previous")));

        if (geteuid() != 0) {
                /* Unprivileged, a directory of root's stands in for another user's. */
                ASSERT_OK(stat("/", &st));
                if (st.st_uid == geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)))
                        test_skip("needs root, or a root-owned \"/\" not writable by others");
                ASSERT_ERROR(identity_store_load("/", SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
                ASSERT_STRSTR(reason, "owned by another user");
                ASSERT_ERROR(identity_store_save("/", SPIFFE_ROLE_CONNECTOR, kek_a, &a, 0, &reason), EPERM);
                ASSERT_STRSTR(reason, "owned by another user");
                return;
        }

        /* As root, a directory of nobody's: its owner could have put any identity there. */
        ASSERT_OK(chown(dir, 65534, 65534));
        ASSERT_ERROR(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_STRSTR(reason, "state directory is owned by another user");
        ASSERT_STREQ(b.id, "sentinel");
        ASSERT_ERROR(identity_store_load_previous(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, &reason), EPERM);
        ASSERT_ERROR(identity_store_save(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &a, IDENTITY_SAVE_FORCE, &reason),
                     EPERM);
        ASSERT_STRSTR(reason, "owned by another user");
        ASSERT_ERROR(identity_store_commit(dir, &reason), EPERM);
        ASSERT_ERROR(identity_store_rollback(dir, &reason), EPERM);
        ASSERT_TRUE(exists(join(dir, "identity.previous")));

        /* Its group alone does not matter; owned by us again, all is well. */
        ASSERT_OK(chown(dir, 0, 65534));
        ASSERT_OK(identity_store_load(dir, SPIFFE_ROLE_CONNECTOR, kek_a, &b, NULL));
        agent_identity_done(&b);
        ASSERT_EQ(ASSERT_OK(identity_store_commit(dir, NULL)), 1);
}
