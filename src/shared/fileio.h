/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Whole-file reads with a size cap, and atomic replacement of a file. Helpers: they log only at debug. */

#include <stddef.h>
#include <sys/types.h>

/* Largest max_size accepted, and what max_size == 0 means. */
#define READ_FULL_FILE_SIZE_MAX (64U * 1024U * 1024U)

/* Reads a regular file completely into a new NUL-terminated buffer. Refuses a file larger than max_size
 * bytes with -EFBIG (0 means READ_FULL_FILE_SIZE_MAX), a directory with -EISDIR and any other
 * non-regular file (FIFO, socket, device) with -EBADFD, without blocking on them. When ret_size is NULL
 * the caller wants a string, so content with an embedded NUL byte is refused with -EBADMSG. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);

/* The same for secrets: the buffer is sized from the file up front, and if it must grow, the old copy is
 * wiped before it is freed, so no unwiped copy is left on the heap. Free the result with
 * erase_and_free(buf, size) or erase_and_free_string(). */
int read_full_file_secret(const char *path, size_t max_size, char **ret, size_t *ret_size);

typedef enum WriteFileFlags {
        WRITE_FILE_NOREPLACE = 1 << 0, /* create only: -EEXIST if anything (even a dangling symlink) is at path,
                                        * decided atomically by the kernel, never by an earlier check */
} WriteFileFlags;

/* Replaces name (one path component, no '/') in the directory dir_fd (or AT_FDCWD) with data atomically,
 * resolving nothing by path: writes a temporary file in that directory (O_TMPFILE when the file system
 * supports it, else a hidden file created relative to dir_fd), sets mode with fchmod() before any data is
 * written, writes everything, fsync()s, renames it over name and fsync()s dir_fd. A symbolic link at name is
 * never followed: the rename replaces the link itself and its target is left untouched (with
 * WRITE_FILE_NOREPLACE the link counts as existing: -EEXIST). On failure before the rename the temporary
 * file is removed and name is left as it was; only a failure of the final directory fsync() comes after the
 * replacement (name then holds the new content, not yet known to be durable). A crash at any point leaves
 * the old or the new content. -EINVAL for a bad name, mode or flag. */
int write_file_atomic_at(int dir_fd, const char *name, const void *data, size_t size, mode_t mode,
                         WriteFileFlags flags);

/* The same for a path: opens its directory and calls write_file_atomic_at() on its last component. */
int write_file_atomic_full(const char *path, const void *data, size_t size, mode_t mode, WriteFileFlags flags);
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);

/* The state directory systemd's StateDirectory= gave the service: the first entry of $STATE_DIRECTORY ("a:b"
 * when the unit lists several), with symbolic links resolved. Under DynamicUser= systemd makes
 * /var/lib/<name> a link to /var/lib/private/<name> (root's, mode 0700) and passes the link; our opens refuse
 * links (O_NOFOLLOW, SQLITE_OPEN_NOFOLLOW), so the trusted path is resolved here, once. A path given in a
 * configuration file is not resolved: there a link stays refused. *ret is NULL when $STATE_DIRECTORY is
 * unset, empty or its first entry is not absolute; the unresolved entry when it cannot be resolved (the
 * open that follows then reports the real problem). 0 or -ENOMEM. */
int state_directory_from_environment(char **ret);
