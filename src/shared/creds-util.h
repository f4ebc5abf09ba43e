/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* systemd credentials ($CREDENTIALS_DIRECTORY, filled by LoadCredential=/LoadCredentialEncrypted=/
 * SetCredential=) and the key-encryption key (KEK) that protects private keys at rest (DESIGN.md §7).
 * No OpenSSL here: the controller and the agents share it. Helpers: they log only at debug, and never
 * anything read from a credential or key file. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* Longest credential name, as systemd allows (NAME_MAX). */
#define CREDS_NAME_MAX 255U

/* Size of a key-encryption key (AES-256). */
#define KEK_SIZE 32U
/* A KEK file or credential is either KEK_SIZE raw bytes or 2 * KEK_SIZE hex digits plus an optional
 * trailing newline; nothing longer is ever read. */
#define KEK_FILE_MAX (2U * KEK_SIZE + 1U)
/* The credential name the controller and the agents look for first. */
#define KEK_CREDENTIAL_NAME "ztna.kek"

/* A credential name: 1..CREDS_NAME_MAX characters of [A-Za-z0-9._-], not "." or "..". */
bool credential_name_is_valid(const char *name) _pure_;

/* "$CREDENTIALS_DIRECTORY/<name>" in a new string. Errors:
 *   -EINVAL  name is not valid, or $CREDENTIALS_DIRECTORY is not an absolute path
 *   -ENXIO   $CREDENTIALS_DIRECTORY is not set (or empty): we were not started with credentials
 *   -ENOENT  the directory is set but holds no credential called name
 *   -ENOMEM */
int creds_path(const char *name, char **ret);

/* Reads the credential name completely. max is the largest size accepted (0: READ_FULL_FILE_SIZE_MAX);
 * a larger credential gives -EFBIG. With secret, the read never leaves an unwiped copy on the heap
 * (read_full_file_secret()). On success ret->data holds ret->size bytes followed by a NUL (not counted),
 * so text credentials can be used as strings; release it with erase_and_freep() either way. Errors as
 * creds_path(), plus those of read_full_file(): -EISDIR, -EBADFD (not a regular file), -EFBIG. */
int creds_read(const char *name, size_t max, bool secret, ByteBuffer *ret);

/* Loads the KEK. First the credential cred_name (NULL: KEK_CREDENTIAL_NAME); when we were started
 * without credentials or without that one, the key file fallback_path (may be NULL: no fallback). The
 * key file is less safe than a sealed credential; the caller logs a warning when *ret_from_credential
 * is false.
 *
 * The fallback must be a regular file (not a symbolic link, which is not followed), owned by our
 * effective uid, with no group or other permission bits (mode & 077 == 0).
 *
 * The content, credential and file alike, is exactly KEK_SIZE raw bytes, or 2 * KEK_SIZE hex digits
 * (either case) optionally followed by one "\n" (what `systemd-creds encrypt` of a hex file gives).
 * Every intermediate copy is wiped.
 *
 * Errors:
 *   -ENOENT   neither the credential nor the fallback file exists (or fallback_path is NULL)
 *   -EPERM    the fallback is unsafe: a symbolic link, not a regular file, owned by another user, or
 *             accessible to group or others
 *   -EBADMSG  the credential or file does not hold a key in one of the two formats (a credential that
 *             is present but bad is an error: the fallback is not tried then)
 *   -EINVAL   cred_name is not a valid credential name, $CREDENTIALS_DIRECTORY is relative
 *   other negative errnos from open()/read()
 * ret_reason (may be NULL) is set on failure only, to a static sentence that names the broken rule and
 * never any key material (e.g. "key file is accessible to group or others"). ret and
 * ret_from_credential (may be NULL) are written on success only. */
int kek_load(const char *cred_name, const char *fallback_path, uint8_t ret[static KEK_SIZE],
             bool *ret_from_credential, const char **ret_reason);

/* Creates a key file for kek_load(): KEK_SIZE random bytes (random_bytes()), raw, mode 0600, written
 * atomically (write_file_atomic()), so a crash never leaves a partial key. Refuses with -EEXIST when
 * anything (a file, a dangling symlink) already exists at path: an existing key may protect existing
 * data. The check and the write are not one atomic step; creating the same key file from two places
 * at once is not supported. */
int kek_generate_file(const char *path);
