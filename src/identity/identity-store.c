/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "identity-store.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"

/* ---- validation shared by the serializer and the parser ---- */

static bool role_is_agent(SpiffeRole role) {
        return role == SPIFFE_ROLE_CONNECTOR || role == SPIFFE_ROLE_TUNNELER;
}

static bool der_is_one_sequence(const uint8_t *d, size_t size) {
        size_t len, hdr;

        /* One DER SEQUENCE with a minimal definite length covering exactly the rest: nothing can hide
         * after it and a value has one encoding. What is inside is OpenSSL's business when it is used. */
        if (!d || size < 2 || d[0] != 0x30)
                return false;
        if (d[1] < 0x80) {
                len = d[1];
                hdr = 2;
        } else {
                size_t n = d[1] & 0x7f;

                if (n == 0 || n > 3 || size < 2 + n || d[2] == 0)
                        return false;
                len = 0;
                for (size_t k = 0; k < n; k++)
                        len = (len << 8) | d[2 + k];
                if (len < 0x80)
                        return false;
                hdr = 2 + n;
        }
        return hdr + len == size;
}

static int check_der(const DerBlob *b, const char *what_bad, const char **ret_reason) {
        if (!b->data || b->size == 0 || b->size > IDENTITY_DER_MAX || !der_is_one_sequence(b->data, b->size))
                return *ret_reason = what_bad, -EINVAL;
        return 0;
}

static bool controller_is_valid(const char *s) {
        HostPort hp;

        return s && strlen(s) <= IDENTITY_ADDRESS_MAX && parse_host_port(s, 0, &hp) >= 0;
}

static int check_strv(char *const *l, size_t max, bool (*valid)(const char *), const char *too_many,
                      const char *invalid, const char **ret_reason) {
        size_t n = 0;

        for (char *const *p = l; p && *p; p++) {
                if (++n > max)
                        return *ret_reason = too_many, -EINVAL;
                if (!valid(*p))
                        return *ret_reason = invalid, -EINVAL;
        }
        return (int) n;
}

static int identity_check_internal(const AgentIdentity *i, const char **ret_reason) {
        _cleanup_(spiffe_id_freep) SpiffeId *sid = NULL;
        int r;

        assert(i);
        assert(ret_reason);

        if (!role_is_agent(i->role))
                return *ret_reason = "role is not connector or tunneler", -EINVAL;
        if (!i->id || !ztna_id_is_valid(i->id))
                return *ret_reason = "missing or invalid agent id", -EINVAL;
        if (!i->trust_domain || !spiffe_trust_domain_is_valid(i->trust_domain))
                return *ret_reason = "missing or invalid trust domain", -EINVAL;
        if (!i->spiffe_id || strlen(i->spiffe_id) > SPIFFE_ID_MAX ||
            spiffe_id_from_string_ztna(i->spiffe_id, &sid, NULL) < 0)
                return *ret_reason = "missing or invalid SPIFFE ID", -EINVAL;
        if (sid->role != i->role || !streq(sid->name, i->id) || !streq(sid->trust_domain, i->trust_domain) ||
            !streq(sid->uri, i->spiffe_id))
                return *ret_reason = "SPIFFE ID does not match role, id and trust domain", -EINVAL;

        r = check_der(&i->key, "missing or invalid private key (not one DER sequence within the size limit)",
                      ret_reason);
        if (r < 0)
                return r;

        if (i->n_chain == 0)
                return *ret_reason = "no certificate chain", -EINVAL;
        if (i->n_chain > IDENTITY_CHAIN_MAX)
                return *ret_reason = "too many certificates in the chain", -EINVAL;
        for (size_t k = 0; k < i->n_chain; k++) {
                r = check_der(&i->chain[k],
                              "invalid chain certificate (not one DER sequence within the limit)",
                              ret_reason);
                if (r < 0)
                        return r;
        }

        if (i->n_bundle == 0)
                return *ret_reason = "no trust bundle root", -EINVAL;
        if (i->n_bundle > IDENTITY_BUNDLE_MAX)
                return *ret_reason = "too many roots in the trust bundle", -EINVAL;
        for (size_t k = 0; k < i->n_bundle; k++) {
                r = check_der(&i->bundle[k],
                              "invalid trust bundle root (not one DER sequence within the limit)",
                              ret_reason);
                if (r < 0)
                        return r;
        }

        r = check_strv(i->controllers, IDENTITY_CONTROLLERS_MAX, controller_is_valid, "too many controllers",
                       "invalid controller address (host:port)", ret_reason);
        if (r < 0)
                return r;
        if (r == 0)
                return *ret_reason = "no controller address", -EINVAL;

        if (i->remote_network) {
                if (i->role != SPIFFE_ROLE_CONNECTOR)
                        return *ret_reason = "a remote network applies to connectors only", -EINVAL;
                if (!ztna_id_is_valid(i->remote_network))
                        return *ret_reason = "invalid remote network name", -EINVAL;
        }

        r = check_strv(i->groups, IDENTITY_GROUPS_MAX, ztna_id_is_valid, "too many groups",
                       "invalid group name", ret_reason);
        if (r < 0)
                return r;
        if (r > 0 && i->role != SPIFFE_ROLE_TUNNELER)
                return *ret_reason = "groups apply to tunnelers only", -EINVAL;

        if (i->heartbeat_interval > IDENTITY_DURATION_MAX)
                return *ret_reason = "heartbeat interval out of range", -EINVAL;
        if (i->certificate_lifetime > IDENTITY_DURATION_MAX)
                return *ret_reason = "certificate lifetime out of range", -EINVAL;
        if (i->not_after == USEC_INFINITY)
                return *ret_reason = "certificate expiry out of range", -EINVAL;

        return 0;
}

int identity_check(const AgentIdentity *i, const char **ret_reason) {
        const char *reason = NULL;
        int r;

        assert(i);

        r = identity_check_internal(i, &reason);
        if (r < 0 && ret_reason)
                *ret_reason = reason;
        return r;
}

/* ---- serializer ---- */

/* Writes into buf when non-NULL; always counts, so one function computes the size and then fills an
 * exactly sized buffer: the plaintext holds the key, and a growing buffer would leave copies behind. */
typedef struct Writer {
        uint8_t *buf;
        size_t size;
} Writer;

static void put_bytes(Writer *w, const void *p, size_t n) {
        if (w->buf && n > 0)
                memcpy(w->buf + w->size, p, n);
        w->size += n;
}

static void put_field(Writer *w, IdentityTag tag, const void *p, size_t n) {
        uint8_t hdr[IDENTITY_FIELD_HEADER_SIZE] = {
                (uint8_t) tag, (uint8_t) (n >> 24), (uint8_t) (n >> 16), (uint8_t) (n >> 8), (uint8_t) n,
        };

        put_bytes(w, hdr, sizeof(hdr));
        put_bytes(w, p, n);
}

static void put_string(Writer *w, IdentityTag tag, const char *s) {
        put_field(w, tag, s, strlen(s));
}

static void put_u64(Writer *w, IdentityTag tag, uint64_t v) {
        uint8_t b[8];

        for (size_t k = 0; k < 8; k++)
                b[k] = (uint8_t) (v >> (56 - 8 * k));
        put_field(w, tag, b, sizeof(b));
}

static void put_identity(Writer *w, const AgentIdentity *i) {
        uint8_t version = IDENTITY_FORMAT_VERSION;

        put_bytes(w, IDENTITY_FORMAT_MAGIC, IDENTITY_FORMAT_MAGIC_SIZE);
        put_bytes(w, &version, 1);
        put_string(w, IDENTITY_TAG_ROLE, spiffe_role_to_string(i->role));
        put_string(w, IDENTITY_TAG_ID, i->id);
        put_string(w, IDENTITY_TAG_SPIFFE_ID, i->spiffe_id);
        put_string(w, IDENTITY_TAG_TRUST_DOMAIN, i->trust_domain);
        put_field(w, IDENTITY_TAG_KEY, i->key.data, i->key.size);
        for (size_t k = 0; k < i->n_chain; k++)
                put_field(w, IDENTITY_TAG_CHAIN, i->chain[k].data, i->chain[k].size);
        for (size_t k = 0; k < i->n_bundle; k++)
                put_field(w, IDENTITY_TAG_BUNDLE, i->bundle[k].data, i->bundle[k].size);
        STRV_FOREACH(c, i->controllers)
                put_string(w, IDENTITY_TAG_CONTROLLER, *c);
        if (i->remote_network)
                put_string(w, IDENTITY_TAG_REMOTE_NETWORK, i->remote_network);
        STRV_FOREACH(g, i->groups)
                put_string(w, IDENTITY_TAG_GROUP, *g);
        if (i->heartbeat_interval > 0)
                put_u64(w, IDENTITY_TAG_HEARTBEAT_INTERVAL, i->heartbeat_interval);
        if (i->certificate_lifetime > 0)
                put_u64(w, IDENTITY_TAG_CERTIFICATE_LIFETIME, i->certificate_lifetime);
        if (i->not_after > 0)
                put_u64(w, IDENTITY_TAG_NOT_AFTER, i->not_after);
}

int identity_serialize(const AgentIdentity *i, uint8_t **ret, size_t *ret_size, const char **ret_reason) {
        const char *reason = NULL;
        Writer w = {};
        int r;

        assert(i);
        assert(ret);
        assert(ret_size);

        r = identity_check_internal(i, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }

        put_identity(&w, i);
        /* Cannot happen with the bounds above; checked so the parser can always read what we write. */
        if (w.size > IDENTITY_SERIALIZED_MAX) {
                if (ret_reason)
                        *ret_reason = "identity too large";
                return -EFBIG;
        }

        w.buf = malloc(w.size);
        if (!w.buf)
                return -ENOMEM;
        w.size = 0;
        put_identity(&w, i);

        *ret = w.buf;
        *ret_size = w.size;
        return 0;
}

/* ---- parser ---- */

#define STRING_FIELD_BAD "empty, overlong or NUL-containing string field"

static int take_string(const uint8_t *v, size_t n, size_t max, char **ret) {
        char *s;

        if (n == 0 || n > max || memchr(v, '\0', n))
                return -EBADMSG;
        s = malloc(n + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, v, n);
        s[n] = '\0';
        *ret = s;
        return 0;
}

static int take_der(const uint8_t *v, size_t n, DerBlob *ret) {
        uint8_t *d;

        if (n == 0 || n > IDENTITY_DER_MAX || !der_is_one_sequence(v, n))
                return -EBADMSG;
        d = malloc(n);
        if (!d)
                return -ENOMEM;
        memcpy(d, v, n);
        *ret = (DerBlob) { .data = d, .size = n };
        return 0;
}

static int take_u64(const uint8_t *v, size_t n, uint64_t *ret) {
        uint64_t x = 0;

        if (n != 8)
                return -EBADMSG;
        for (size_t k = 0; k < 8; k++)
                x = (x << 8) | v[k];
        /* Zero is written by leaving the field out: one encoding per value. */
        if (x == 0)
                return -EBADMSG;
        *ret = x;
        return 0;
}

static bool tag_is_repeated(IdentityTag t) {
        return t == IDENTITY_TAG_CHAIN || t == IDENTITY_TAG_BUNDLE || t == IDENTITY_TAG_CONTROLLER ||
               t == IDENTITY_TAG_GROUP;
}

static size_t tag_max_length(IdentityTag t) {
        switch (t) {
        case IDENTITY_TAG_ROLE:
                return 16;
        case IDENTITY_TAG_ID:
        case IDENTITY_TAG_REMOTE_NETWORK:
        case IDENTITY_TAG_GROUP:
                return ZTNA_ID_MAX;
        case IDENTITY_TAG_SPIFFE_ID:
                return SPIFFE_ID_MAX;
        case IDENTITY_TAG_TRUST_DOMAIN:
                return SPIFFE_TRUST_DOMAIN_MAX;
        case IDENTITY_TAG_KEY:
        case IDENTITY_TAG_CHAIN:
        case IDENTITY_TAG_BUNDLE:
                return IDENTITY_DER_MAX;
        case IDENTITY_TAG_CONTROLLER:
                return IDENTITY_ADDRESS_MAX;
        case IDENTITY_TAG_HEARTBEAT_INTERVAL:
        case IDENTITY_TAG_CERTIFICATE_LIFETIME:
        case IDENTITY_TAG_NOT_AFTER:
                return 8;
        default:
                return 0;
        }
}

static int parse_field(AgentIdentity *i, IdentityTag tag, const uint8_t *v, size_t n, const char **ret_reason) {
        _cleanup_free_ char *s = NULL;
        int r;

        switch (tag) {
        case IDENTITY_TAG_ROLE:
                r = take_string(v, n, tag_max_length(tag), &s);
                if (r < 0)
                        return r == -ENOMEM ? r : (*ret_reason = "invalid role field", r);
                i->role = spiffe_role_from_string(s);
                if (!role_is_agent(i->role))
                        return *ret_reason = "role is not connector or tunneler", -EBADMSG;
                return 0;

        case IDENTITY_TAG_ID:
        case IDENTITY_TAG_SPIFFE_ID:
        case IDENTITY_TAG_TRUST_DOMAIN:
        case IDENTITY_TAG_REMOTE_NETWORK: {
                char **dst = tag == IDENTITY_TAG_ID ? &i->id :
                             tag == IDENTITY_TAG_SPIFFE_ID ? &i->spiffe_id :
                             tag == IDENTITY_TAG_TRUST_DOMAIN ? &i->trust_domain : &i->remote_network;

                r = take_string(v, n, tag_max_length(tag), dst);
                if (r < 0)
                        return r == -ENOMEM ? r : (*ret_reason = STRING_FIELD_BAD, r);
                return 0;
        }

        case IDENTITY_TAG_KEY:
                r = take_der(v, n, &i->key);
                if (r < 0)
                        return r == -ENOMEM ? r : (*ret_reason = "private key is not one DER sequence", r);
                return 0;

        case IDENTITY_TAG_CHAIN:
                if (i->n_chain >= IDENTITY_CHAIN_MAX)
                        return *ret_reason = "too many certificates in the chain", -EBADMSG;
                r = take_der(v, n, &i->chain[i->n_chain]);
                if (r < 0)
                        return r == -ENOMEM ? r :
                                              (*ret_reason = "chain certificate is not one DER sequence", r);
                i->n_chain++;
                return 0;

        case IDENTITY_TAG_BUNDLE:
                if (i->n_bundle >= IDENTITY_BUNDLE_MAX)
                        return *ret_reason = "too many roots in the trust bundle", -EBADMSG;
                r = take_der(v, n, &i->bundle[i->n_bundle]);
                if (r < 0)
                        return r == -ENOMEM ? r :
                                              (*ret_reason = "trust bundle root is not one DER sequence", r);
                i->n_bundle++;
                return 0;

        case IDENTITY_TAG_CONTROLLER:
        case IDENTITY_TAG_GROUP: {
                char ***l = tag == IDENTITY_TAG_CONTROLLER ? &i->controllers : &i->groups;
                size_t max = tag == IDENTITY_TAG_CONTROLLER ? IDENTITY_CONTROLLERS_MAX : IDENTITY_GROUPS_MAX;

                if (strv_length(*l) >= max)
                        return *ret_reason = tag == IDENTITY_TAG_CONTROLLER ? "too many controllers" :
                                                                               "too many groups",
                               -EBADMSG;
                r = take_string(v, n, tag_max_length(tag), &s);
                if (r < 0)
                        return r == -ENOMEM ? r : (*ret_reason = STRING_FIELD_BAD, r);
                return strv_consume(l, TAKE_PTR(s));
        }

        case IDENTITY_TAG_HEARTBEAT_INTERVAL:
        case IDENTITY_TAG_CERTIFICATE_LIFETIME:
        case IDENTITY_TAG_NOT_AFTER: {
                usec_t *dst = tag == IDENTITY_TAG_HEARTBEAT_INTERVAL ? &i->heartbeat_interval :
                              tag == IDENTITY_TAG_CERTIFICATE_LIFETIME ? &i->certificate_lifetime :
                                                                         &i->not_after;

                r = take_u64(v, n, dst);
                if (r < 0)
                        return *ret_reason = "time field is not a non-zero 8-byte integer", r;
                return 0;
        }

        default:
                return *ret_reason = "unknown field", -EBADMSG;
        }
}

static int identity_parse_internal(const uint8_t *d, size_t size, AgentIdentity *ret, const char **ret_reason) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        size_t off = IDENTITY_HEADER_SIZE;
        unsigned last = 0;
        int r;

        if (size > IDENTITY_SERIALIZED_MAX)
                return *ret_reason = "identity too large", -EBADMSG;
        if (size < IDENTITY_HEADER_SIZE || memcmp(d, IDENTITY_FORMAT_MAGIC, IDENTITY_FORMAT_MAGIC_SIZE) != 0)
                return *ret_reason = "not an identity (bad magic)", -EBADMSG;
        if (d[IDENTITY_FORMAT_MAGIC_SIZE] > IDENTITY_FORMAT_VERSION)
                return *ret_reason = "identity format is newer than this version understands", -EPROTONOSUPPORT;
        if (d[IDENTITY_FORMAT_MAGIC_SIZE] != IDENTITY_FORMAT_VERSION)
                return *ret_reason = "invalid identity format version", -EBADMSG;

        i.role = _SPIFFE_ROLE_INVALID;

        while (off < size) {
                IdentityTag tag;
                size_t n;

                if (size - off < IDENTITY_FIELD_HEADER_SIZE)
                        return *ret_reason = "truncated field header", -EBADMSG;
                tag = d[off];
                n = (size_t) d[off + 1] << 24 | (size_t) d[off + 2] << 16 | (size_t) d[off + 3] << 8 |
                    (size_t) d[off + 4];
                off += IDENTITY_FIELD_HEADER_SIZE;

                if (tag == 0 || tag >= _IDENTITY_TAG_MAX)
                        return *ret_reason = "unknown field", -EBADMSG;
                if (tag == last && !tag_is_repeated(tag))
                        return *ret_reason = "duplicate field", -EBADMSG;
                if (tag < last)
                        return *ret_reason = "fields out of order", -EBADMSG;
                if (n > tag_max_length(tag))
                        return *ret_reason = "field longer than its limit", -EBADMSG;
                if (n > size - off)
                        return *ret_reason = "truncated field", -EBADMSG;

                r = parse_field(&i, tag, d + off, n, ret_reason);
                if (r < 0)
                        return r;
                off += n;
                last = tag;
        }

        /* Every semantic rule (required fields, consistency) in one place, shared with the serializer. */
        if (i.role < 0)
                return *ret_reason = "missing role", -EBADMSG;
        r = identity_check_internal(&i, ret_reason);
        if (r < 0)
                return -EBADMSG;

        *ret = i;
        i = (AgentIdentity) {};
        return 0;
}

int identity_parse(const void *data, size_t size, AgentIdentity *ret, const char **ret_reason) {
        const char *reason = NULL;
        int r;

        assert(data || size == 0);
        assert(ret);

        if (!data)
                data = "";
        r = identity_parse_internal(data, size, ret, &reason);
        if (r < 0 && ret_reason)
                *ret_reason = reason ?: "out of memory";
        return r;
}

/* ---- the state directory ---- */

static int reason_ret(const char **ret_reason, const char *reason, int r) {
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

/* Opens the state directory, refusing a symbolic link, one owned by another user and one writable by
 * anybody but its owner: whoever could write there could swap the identity for their own. Everything
 * below works relative to the returned fd, so the path is resolved once. */
static int open_state_dir(const char *dir, const char **ret_reason) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        assert(dir);

        if (isempty(dir))
                return reason_ret(ret_reason, "no state directory given", -EINVAL);

        fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                int e = errno;

                if ((e == ENOTDIR || e == ELOOP) && lstat(dir, &st) >= 0 && S_ISLNK(st.st_mode))
                        return reason_ret(ret_reason, "state directory is a symbolic link", -EPERM);
                if (e == ENOENT)
                        return reason_ret(ret_reason, "state directory does not exist", -ENOENT);
                if (e == ENOTDIR)
                        return reason_ret(ret_reason, "state directory is not a directory", -ENOTDIR);
                return reason_ret(ret_reason, "cannot open the state directory", -e);
        }
        if (fstat(fd, &st) < 0)
                return reason_ret(ret_reason, "cannot stat the state directory", -errno);
        /* Its owner could replace the identity, or the directory, at will. As root the directory must be
         * root's: one owned by an unprivileged user must not decide what root loads. */
        if (st.st_uid != geteuid())
                return reason_ret(ret_reason, "state directory is owned by another user", -EPERM);
        if (st.st_mode & (S_IWGRP | S_IWOTH))
                return reason_ret(ret_reason, "state directory is writable by group or others", -EPERM);

        return TAKE_FD(fd);
}

/* 1 when name is a regular file, 0 when absent; -EPERM for a symbolic link or anything else. */
static int check_identity_file(int dfd, const char *name, const char **ret_reason) {
        struct stat st;

        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return reason_ret(ret_reason, "cannot stat the identity file", -errno);
        }
        if (S_ISLNK(st.st_mode))
                return reason_ret(ret_reason, "identity file is a symbolic link", -EPERM);
        if (!S_ISREG(st.st_mode))
                return reason_ret(ret_reason, "identity file is not a regular file", -EPERM);
        return 1;
}

static int read_identity_file(int dfd, const char *name, uint8_t **ret, size_t *ret_size,
                              const char **ret_reason) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        size_t n = 0;

        /* O_NONBLOCK: a FIFO put there must not hang us before fstat() refuses it. */
        fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ELOOP)
                        return reason_ret(ret_reason, "identity file is a symbolic link", -EPERM);
                if (errno == ENOENT)
                        return reason_ret(ret_reason, "no identity (not enrolled)", -ENOENT);
                return reason_ret(ret_reason, "cannot open the identity file", -errno);
        }
        if (fstat(fd, &st) < 0)
                return reason_ret(ret_reason, "cannot stat the identity file", -errno);
        if (!S_ISREG(st.st_mode))
                return reason_ret(ret_reason, "identity file is not a regular file", -EPERM);
        if (st.st_size > (off_t) IDENTITY_FILE_MAX)
                return reason_ret(ret_reason, "identity file is too large", -EFBIG);

        /* One byte more than the limit tells a file that grew meanwhile. */
        buf = malloc(IDENTITY_FILE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read(fd, buf + n, IDENTITY_FILE_MAX + 1 - n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return reason_ret(ret_reason, "cannot read the identity file", -errno);
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > IDENTITY_FILE_MAX)
                        return reason_ret(ret_reason, "identity file is too large", -EFBIG);
        }

        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static int identity_aad(SpiffeRole role, char *buf, size_t size) {
        int k;

        k = snprintf(buf, size, "ztna identity %s", spiffe_role_to_string(role));
        if (k < 0 || (size_t) k >= size)
                return -EINVAL;
        return k;
}

static int load_at(int dfd, const char *name, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                   AgentIdentity *ret, const char **ret_reason) {
        _cleanup_(agent_identity_done) AgentIdentity i = {};
        _cleanup_free_ uint8_t *sealed = NULL;
        uint8_t *plain = NULL;
        size_t sealed_size = 0, plain_size = 0;
        const char *reason = NULL;
        char aad[64];
        int aad_size, r;

        assert(dfd >= 0);
        assert(name);
        assert(kek);
        assert(ret);

        aad_size = identity_aad(role, aad, sizeof(aad));
        if (aad_size < 0)
                return aad_size;

        r = read_identity_file(dfd, name, &sealed, &sealed_size, ret_reason);
        if (r < 0)
                return r;

        if (!envelope_is_sealed(sealed, sealed_size) || sealed_size < ENVELOPE_OVERHEAD)
                return reason_ret(ret_reason, "not a sealed identity file", -EBADMSG);

        r = envelope_open(kek, aad, (size_t) aad_size, sealed, sealed_size, &plain, &plain_size);
        if (r == -EKEYREJECTED)
                return reason_ret(ret_reason,
                                  "identity file does not open: wrong key-encryption key, sealed for another "
                                  "role, or altered", r);
        if (r == -EPROTONOSUPPORT) {
                uint8_t version = sealed[ENVELOPE_MAGIC_SIZE], algorithm = sealed[ENVELOPE_MAGIC_SIZE + 1];

                /* Only a higher number can come from a newer release; anything else is damage. */
                if (version > ENVELOPE_VERSION ||
                    (version == ENVELOPE_VERSION && algorithm > ENVELOPE_ALGORITHM_AES_256_GCM))
                        return reason_ret(ret_reason, "identity file was sealed by a newer version", r);
                return reason_ret(ret_reason, "identity file has a damaged envelope header", -EBADMSG);
        }
        if (r < 0)
                return reason_ret(ret_reason, "identity file is not a valid envelope",
                                  r == -ENOMEM ? r : -EBADMSG);

        r = identity_parse(plain, plain_size, &i, &reason);
        plain = erase_and_free(plain, plain_size + 1);
        if (r < 0)
                return reason_ret(ret_reason, reason, r);
        if (i.role != role)
                return reason_ret(ret_reason, "identity file names another role than it was sealed for",
                                  -EBADMSG);

        *ret = i;
        i = (AgentIdentity) {};
        return 0;
}

static int load_one(const char *dir, const char *name, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                    AgentIdentity *ret, const char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;

        assert(dir);
        assert(kek);
        assert(ret);

        if (!role_is_agent(role))
                return reason_ret(ret_reason, "role is not connector or tunneler", -EINVAL);
        dfd = open_state_dir(dir, ret_reason);
        if (dfd < 0)
                return dfd;
        return load_at(dfd, name, role, kek, ret, ret_reason);
}

int identity_store_load(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                        AgentIdentity *ret, const char **ret_reason) {
        return load_one(dir, IDENTITY_FILE_NAME, role, kek, ret, ret_reason);
}

int identity_store_load_previous(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                                 AgentIdentity *ret, const char **ret_reason) {
        int r;

        r = load_one(dir, IDENTITY_PREVIOUS_FILE_NAME, role, kek, ret, ret_reason);
        if (r == -ENOENT && ret_reason && *ret_reason && streq(*ret_reason, "no identity (not enrolled)"))
                *ret_reason = "no previous identity";
        return r;
}

/* Keeps the current file as identity.previous: a hard link is one atomic step that copies nothing; where
 * the file system refuses links, an atomic copy does as well, since "identity" stays untouched. */
static int keep_previous(int dfd, const char **ret_reason) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t size = 0;
        int r;

        if (linkat(dfd, IDENTITY_FILE_NAME, dfd, IDENTITY_PREVIOUS_FILE_NAME, 0) >= 0)
                return 0;
        if (errno == EEXIST)
                return reason_ret(ret_reason, "previous identity appeared while saving", -EEXIST);
        log_debug_errno(errno, "Cannot hard-link the identity file, copying it: %m");

        r = read_identity_file(dfd, IDENTITY_FILE_NAME, &data, &size, ret_reason);
        if (r < 0)
                return r;
        r = write_file_atomic_at(dfd, IDENTITY_PREVIOUS_FILE_NAME, data, size, IDENTITY_FILE_MODE,
                                 WRITE_FILE_NOREPLACE);
        if (r < 0)
                return reason_ret(ret_reason, "cannot keep the previous identity", r);
        return 0;
}

/* Renames the current file to IDENTITY_CORRUPT_FILE_PREFIX "<µs since the epoch>", never over anything:
 * it may be the only copy of an identity that a different KEK or a newer version would still open. */
static int move_aside(int dfd, const char **ret_reason) {
        usec_t t = now(CLOCK_REALTIME);

        for (unsigned attempt = 0;; attempt++) {
                char name[sizeof(IDENTITY_CORRUPT_FILE_PREFIX) + 20]; /* 20 digits hold any u64 */

                snprintf(name, sizeof(name), IDENTITY_CORRUPT_FILE_PREFIX "%" PRIu64,
                         (uint64_t) (t + attempt));
                if (renameat2(dfd, IDENTITY_FILE_NAME, dfd, name, RENAME_NOREPLACE) >= 0)
                        break;
                if (errno == EINVAL) {
                        /* No RENAME_NOREPLACE on this file system: a link cannot replace anything either. */
                        if (linkat(dfd, IDENTITY_FILE_NAME, dfd, name, 0) >= 0) {
                                if (unlinkat(dfd, IDENTITY_FILE_NAME, 0) < 0)
                                        return reason_ret(ret_reason, "cannot move the unreadable identity "
                                                          "file aside", -errno);
                                break;
                        }
                }
                if (errno != EEXIST || attempt >= IDENTITY_CORRUPT_ATTEMPTS)
                        return reason_ret(ret_reason, "cannot move the unreadable identity file aside",
                                          -errno);
        }
        if (fsync(dfd) < 0)
                return reason_ret(ret_reason, "cannot sync the state directory", -errno);
        return 0;
}

/* Checks that the current file opens with this KEK and role before it is kept as the previous identity or
 * replaced. Returns 0 when it does, 1 when there is no current file (any more: it vanished, or it did not
 * open and IDENTITY_SAVE_FORCE moved it aside). */
static int verify_current(int dfd, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                          IdentitySaveFlags flags, const char **ret_reason) {
        _cleanup_(agent_identity_done) AgentIdentity cur = {};
        const char *reason = NULL;
        int r;

        r = load_at(dfd, IDENTITY_FILE_NAME, role, kek, &cur, &reason);
        if (r >= 0)
                return 0;
        if (r == -ENOENT)
                return 1;
        if (r != -EKEYREJECTED && r != -EBADMSG && r != -EPROTONOSUPPORT && r != -EFBIG)
                return reason_ret(ret_reason, reason, r);

        if (!(flags & IDENTITY_SAVE_FORCE))
                switch (r) {
                case -EKEYREJECTED:
                        return reason_ret(ret_reason, "current identity file does not open with this "
                                          "key-encryption key and role; not replacing it without force", r);
                case -EPROTONOSUPPORT:
                        return reason_ret(ret_reason, "current identity file was written by a newer version; "
                                          "not replacing it without force", r);
                case -EFBIG:
                        return reason_ret(ret_reason, "current identity file is too large; not replacing it "
                                          "without force", r);
                default:
                        return reason_ret(ret_reason, "current identity file is damaged or not an identity; "
                                          "not replacing it without force", r);
                }

        log_debug("Identity file does not open (%s), moving it aside as forced.", reason);
        r = move_aside(dfd, ret_reason);
        if (r < 0)
                return r;
        return 1;
}

int identity_store_save(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                        const AgentIdentity *i, IdentitySaveFlags flags, const char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;
        _cleanup_free_ uint8_t *sealed = NULL;
        uint8_t *plain = NULL;
        size_t plain_size = 0, sealed_size = 0;
        bool has_previous, has_current;
        char aad[64];
        int aad_size, r;

        assert(dir);
        assert(kek);
        assert(i);

        if ((flags & ~IDENTITY_SAVE_FORCE) != 0)
                return reason_ret(ret_reason, "unknown flags", -EINVAL);
        if (!role_is_agent(role))
                return reason_ret(ret_reason, "role is not connector or tunneler", -EINVAL);
        if (i->role != role)
                return reason_ret(ret_reason, "identity is for another role", -EINVAL);
        aad_size = identity_aad(role, aad, sizeof(aad));
        if (aad_size < 0)
                return aad_size;

        /* Everything that can be refused is refused before the directory is touched. */
        r = identity_serialize(i, &plain, &plain_size, ret_reason);
        if (r < 0)
                return r;
        r = envelope_seal(kek, aad, (size_t) aad_size, plain, plain_size, &sealed, &sealed_size);
        plain = erase_and_free(plain, plain_size);
        if (r < 0)
                return reason_ret(ret_reason, "cannot seal the identity", r);

        dfd = open_state_dir(dir, ret_reason);
        if (dfd < 0)
                return dfd;

        r = check_identity_file(dfd, IDENTITY_PREVIOUS_FILE_NAME, ret_reason);
        if (r < 0)
                return r;
        has_previous = r > 0;
        r = check_identity_file(dfd, IDENTITY_FILE_NAME, ret_reason);
        if (r < 0)
                return r;
        has_current = r > 0;

        /* Neither kept as the previous identity nor replaced unless it is ours: a file that does not open
         * with this KEK and role may be somebody's only copy of an identity. */
        if (has_current) {
                r = verify_current(dfd, role, kek, flags, ret_reason);
                if (r < 0)
                        return r;
                has_current = r == 0;
        }

        /* When a previous one exists, the current file is not yet proven: it is replaced, and the
         * previous one stays the last proven. */
        if (has_current && !has_previous) {
                r = keep_previous(dfd, ret_reason);
                if (r < 0)
                        return r;
                /* The link must be durable before the rename below can be. */
                if (fsync(dfd) < 0)
                        return reason_ret(ret_reason, "cannot sync the state directory", -errno);
        }

        r = write_file_atomic_at(dfd, IDENTITY_FILE_NAME, sealed, sealed_size, IDENTITY_FILE_MODE, 0);
        if (r < 0)
                return reason_ret(ret_reason, "cannot write the identity file", r);
        return 0;
}

int identity_store_commit(const char *dir, const char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;
        int r;

        assert(dir);

        dfd = open_state_dir(dir, ret_reason);
        if (dfd < 0)
                return dfd;
        r = check_identity_file(dfd, IDENTITY_FILE_NAME, ret_reason);
        if (r < 0)
                return r;
        if (r == 0)
                return reason_ret(ret_reason, "no identity to commit", -ENOENT);
        r = check_identity_file(dfd, IDENTITY_PREVIOUS_FILE_NAME, ret_reason);
        if (r <= 0)
                return r;

        if (unlinkat(dfd, IDENTITY_PREVIOUS_FILE_NAME, 0) < 0) {
                if (errno == ENOENT)
                        return 0;
                return reason_ret(ret_reason, "cannot remove the previous identity", -errno);
        }
        if (fsync(dfd) < 0)
                return reason_ret(ret_reason, "cannot sync the state directory", -errno);
        return 1;
}

int identity_store_rollback(const char *dir, const char **ret_reason) {
        _cleanup_close_ int dfd = -EBADF;
        int r;

        assert(dir);

        dfd = open_state_dir(dir, ret_reason);
        if (dfd < 0)
                return dfd;
        r = check_identity_file(dfd, IDENTITY_PREVIOUS_FILE_NAME, ret_reason);
        if (r < 0)
                return r;
        if (r == 0)
                return reason_ret(ret_reason, "no previous identity", -ENOENT);
        r = check_identity_file(dfd, IDENTITY_FILE_NAME, ret_reason);
        if (r < 0)
                return r;

        if (renameat(dfd, IDENTITY_PREVIOUS_FILE_NAME, dfd, IDENTITY_FILE_NAME) < 0)
                return reason_ret(ret_reason, "cannot restore the previous identity", -errno);
        if (fsync(dfd) < 0)
                return reason_ret(ret_reason, "cannot sync the state directory", -errno);
        return 0;
}
