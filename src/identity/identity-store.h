/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The agent's identity at rest (DESIGN.md §7): "<state dir>/identity", an AgentIdentity serialized in the
 * format below and sealed with envelope_seal() under the KEK, with AAD "ztna identity <role>" so that a
 * connector's file never opens as a tunneler's. The version a save replaces is kept as
 * "identity.previous" until identity_store_commit() says the new one is proven.
 *
 * Plaintext format, version 1 (all integers big-endian):
 *
 *     "ZTNAID" (6 bytes) | u8 version (= 1) | fields…
 *     field = u8 tag | u32 length | length bytes of value
 *
 * Fields appear in ascending tag order; only the repeated ones (chain, bundle, controller, group) may
 * appear more than once, and then consecutively, in list order. Optional fields are absent when empty or
 * zero, never present with an empty or zero value. So every identity has exactly one encoding, and
 * identity_parse() → identity_serialize() reproduces an accepted input byte for byte. Strings are bytes
 * without NUL; DER values are one complete DER SEQUENCE (tag 0x30, minimal definite length) and nothing
 * after it; u64 values are exactly 8 bytes. Nothing may follow the last field. */

#include <stddef.h>
#include <stdint.h>

#include "creds-util.h"
#include "crypto-envelope.h"
#include "identity.h"

#define IDENTITY_FORMAT_MAGIC "ZTNAID"
#define IDENTITY_FORMAT_MAGIC_SIZE 6U
#define IDENTITY_FORMAT_VERSION 1U
#define IDENTITY_HEADER_SIZE (IDENTITY_FORMAT_MAGIC_SIZE + 1U)
#define IDENTITY_FIELD_HEADER_SIZE 5U

typedef enum IdentityTag {
        IDENTITY_TAG_ROLE = 1,                 /* "connector" or "tunneler" */
        IDENTITY_TAG_ID = 2,                   /* ztna_id_is_valid() */
        IDENTITY_TAG_SPIFFE_ID = 3,            /* spiffe://<trust domain>/<role>/<id>, matching the fields */
        IDENTITY_TAG_TRUST_DOMAIN = 4,
        IDENTITY_TAG_KEY = 5,                  /* PKCS#8 DER, SECRET */
        IDENTITY_TAG_CHAIN = 6,                /* repeated, 1..IDENTITY_CHAIN_MAX, leaf first */
        IDENTITY_TAG_BUNDLE = 7,               /* repeated, 1..IDENTITY_BUNDLE_MAX */
        IDENTITY_TAG_CONTROLLER = 8,           /* repeated, 1..IDENTITY_CONTROLLERS_MAX, "host:port" */
        IDENTITY_TAG_REMOTE_NETWORK = 9,       /* optional, connectors only */
        IDENTITY_TAG_GROUP = 10,               /* repeated, 0..IDENTITY_GROUPS_MAX, tunnelers only */
        IDENTITY_TAG_HEARTBEAT_INTERVAL = 11,  /* optional u64, µs, 1..IDENTITY_DURATION_MAX */
        IDENTITY_TAG_CERTIFICATE_LIFETIME = 12,/* optional u64, µs, 1..IDENTITY_DURATION_MAX */
        IDENTITY_TAG_NOT_AFTER = 13,           /* optional u64, µs since the epoch, not USEC_INFINITY */
        _IDENTITY_TAG_MAX,
} IdentityTag;

/* Largest DER value (key or certificate); an RSA-4096 PKCS#8 key is about 2.4 KiB. */
#define IDENTITY_DER_MAX (16U * 1024U)
/* Longest controller address ("host:port" as parse_host_port() accepts it without a default port). */
#define IDENTITY_ADDRESS_MAX 255U
/* Largest heartbeat interval or certificate lifetime. */
#define IDENTITY_DURATION_MAX (100U * USEC_PER_YEAR)
/* Largest serialized identity: every field at its maximum fits, with room to spare. */
#define IDENTITY_SERIALIZED_MAX (512U * 1024U)
/* Largest identity file read. */
#define IDENTITY_FILE_MAX (IDENTITY_SERIALIZED_MAX + ENVELOPE_OVERHEAD)

#define IDENTITY_FILE_NAME "identity"
#define IDENTITY_PREVIOUS_FILE_NAME "identity.previous"
#define IDENTITY_FILE_MODE 0600
/* Where IDENTITY_SAVE_FORCE moves an identity file that does not open; a number follows. */
#define IDENTITY_CORRUPT_FILE_PREFIX "identity.corrupt-"
/* Names tried when one is taken (a clash needs two forced saves in the same µs). */
#define IDENTITY_CORRUPT_ATTEMPTS 16U

/* Checks every rule of the format on an identity in memory: role connector or tunneler, id, trust domain
 * and SPIFFE ID valid and consistent, a key, 1..IDENTITY_CHAIN_MAX chain certificates, 1..IDENTITY_BUNDLE_MAX
 * roots, 1..IDENTITY_CONTROLLERS_MAX controllers, remote network only on connectors, groups only on
 * tunnelers, every size and value within its bound. -EINVAL with a static *ret_reason (may be NULL). */
int identity_check(const AgentIdentity *i, const char **ret_reason);

/* Serializes i (which must pass identity_check(): -EINVAL and *ret_reason otherwise). The result holds
 * the private key: wipe it with erase_and_free(*ret, *ret_size). */
int identity_serialize(const AgentIdentity *i, uint8_t **ret, size_t *ret_size, const char **ret_reason);

/* Parses the format strictly. Errors, with a static *ret_reason (may be NULL) naming the problem:
 *   -EBADMSG           bad magic, version 0, truncated, unknown tag, duplicate or misordered field, a
 *                      length or count above its bound, a missing required field, an invalid value,
 *                      trailing bytes
 *   -EPROTONOSUPPORT   a format version newer than IDENTITY_FORMAT_VERSION
 *   -ENOMEM
 * On success *ret (which the caller releases with agent_identity_done()) is filled; untouched on failure,
 * and any partly parsed key material is wiped. */
int identity_parse(const void *data, size_t size, AgentIdentity *ret, const char **ret_reason);

typedef enum IdentitySaveFlags {
        /* A current identity file that does not open with this KEK and role is moved aside to
         * IDENTITY_CORRUPT_FILE_PREFIX "<µs since the epoch>" (never deleted) and the save goes on. For an
         * explicit operator decision ("re-enroll over a damaged or foreign identity"), never a default. */
        IDENTITY_SAVE_FORCE = 1 << 0,
} IdentitySaveFlags;

/* Seals i for role under kek and writes it to "<dir>/identity" atomically with mode 0600, through the
 * directory's fd (write_file_atomic_at()), so the path is resolved once. When an "identity" exists, it must
 * first open with this KEK and role: it is never kept as "identity.previous" nor replaced otherwise (see
 * IDENTITY_SAVE_FORCE). When it opens and no "identity.previous" exists, it is hard-linked (or, where links
 * are refused, copied atomically) to "identity.previous" and the directory synced, so a crash at any point
 * leaves "identity" holding the old or the new version and, once the new one is in place,
 * "identity.previous" holding the old. When "identity.previous" already exists, the current file is not yet
 * proven and is replaced; the previous one stays the last proven. The plaintext is wiped. Errors (static
 * *ret_reason, may be NULL, set on failure):
 *   -EINVAL   role is not connector/tunneler, i->role differs from role, i breaks a rule, unknown flags
 *   -EPERM    dir is a symbolic link, owned by another user than the effective uid, or writable by group or
 *             others, or an identity file is a symbolic link or not a regular file
 *   -ENOENT, -ENOTDIR   dir does not exist or is not a directory
 *   -EKEYREJECTED, -EBADMSG, -EPROTONOSUPPORT, -EFBIG
 *             without IDENTITY_SAVE_FORCE: the current "identity" does not open with this KEK and role
 *             (wrong KEK, other role, altered), is damaged or no identity, is from a newer version, or
 *             is too large (as identity_store_load() would say); nothing was changed
 *   other negative errnos from the file system or the envelope. */
int identity_store_save(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                        const AgentIdentity *i, IdentitySaveFlags flags, const char **ret_reason);

/* Loads and opens "<dir>/identity". Never modifies or deletes anything. Errors, each with a static
 * *ret_reason (may be NULL, set on failure; never holds key material):
 *   -ENOENT            no identity (not enrolled), or dir does not exist
 *   -EKEYREJECTED      the file does not open: wrong KEK, sealed for the other role, or altered
 *   -EBADMSG           not a sealed identity (magic), a damaged envelope header, or a plaintext that
 *                      does not parse (see identity_parse())
 *   -EPROTONOSUPPORT   written by a newer version (envelope or identity format)
 *   -EFBIG             larger than IDENTITY_FILE_MAX
 *   -EPERM             dir is a symbolic link, owned by another user than the effective uid, or
 *                      writable by group or others; the file is a symbolic link or not a regular file
 *   -ENOTDIR           dir is not a directory
 * On success *ret (release with agent_identity_done()) is filled; untouched on failure. */
int identity_store_load(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                        AgentIdentity *ret, const char **ret_reason);
/* The same for "<dir>/identity.previous" (-ENOENT when there is none), to offer a rollback. */
int identity_store_load_previous(const char *dir, SpiffeRole role, const uint8_t kek[static KEK_SIZE],
                                 AgentIdentity *ret, const char **ret_reason);

/* The current identity is proven (the agent connected with it): removes "identity.previous" and syncs
 * the directory. Returns 1 when it removed one, 0 when there was none. Refuses with -ENOENT when there is
 * no "identity" (removing the previous would leave nothing), -EPERM as identity_store_save(). */
int identity_store_commit(const char *dir, const char **ret_reason);

/* Makes "identity.previous" the current identity again (one atomic rename, then a directory sync); the
 * unproven version is gone. -ENOENT when there is no previous identity, -EPERM as identity_store_save(). */
int identity_store_rollback(const char *dir, const char **ret_reason);
