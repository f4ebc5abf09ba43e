/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "log.h"
#include "random-util.h"
#include "string-util.h"

/* First allocation when the file does not tell its size (e.g. st_size == 0 in /proc). */
#define READ_CHUNK 4096U

static int verify_regular(int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        return 0;
}

/* Grows *buf from *alloc to n bytes. For secrets the old buffer is copied and wiped instead of handed to
 * realloc(), which might leave the old contents behind in freed memory. */
static int grow(char **buf, size_t *alloc, size_t used, size_t n, bool secret) {
        char *b;

        if (!secret) {
                b = realloc(*buf, n);
                if (!b)
                        return -ENOMEM;
        } else {
                b = malloc(n);
                if (!b)
                        return -ENOMEM;
                if (*buf)
                        memcpy(b, *buf, used);
                erase_and_free(*buf, *alloc);
        }
        *buf = b;
        *alloc = n;
        return 0;
}

static int read_full_file_internal(const char *path, size_t max_size, bool secret, char **ret,
                                   size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        size_t alloc = 0, used = 0;
        char *buf = NULL;
        struct stat st;
        int r;

        assert(path);
        assert(ret);

        if (max_size == 0)
                max_size = READ_FULL_FILE_SIZE_MAX;
        if (max_size > READ_FULL_FILE_SIZE_MAX)
                return -EINVAL;

        /* O_NONBLOCK so that opening a FIFO does not hang before we get to refuse it; it has no effect
         * on regular files. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        r = verify_regular(fd);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t) st.st_size > max_size)
                return -EFBIG;

        /* One byte beyond the expected size, so that EOF is seen without growing, plus the NUL. */
        r = grow(&buf, &alloc, 0, st.st_size > 0 ? (size_t) st.st_size + 2 : READ_CHUNK, secret);
        if (r < 0)
                return r;

        for (;;) {
                ssize_t k;

                if (used + 1 >= alloc) {
                        size_t n;

                        if (used > max_size) {
                                r = -EFBIG;
                                goto fail;
                        }
                        /* Room for max_size + 1 bytes is enough to tell "too big" apart. */
                        n = MIN(MAX(alloc * 2, (size_t) READ_CHUNK), max_size + 2);
                        r = grow(&buf, &alloc, used, n, secret);
                        if (r < 0)
                                goto fail;
                }

                k = read(fd, buf + used, alloc - used - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                if (k == 0)
                        break;
                used += (size_t) k;
                if (used > max_size) {
                        r = -EFBIG;
                        goto fail;
                }
        }
        buf[used] = '\0';

        if (!ret_size && memchr(buf, '\0', used)) {
                r = -EBADMSG;
                goto fail;
        }

        /* Shrinking would mean another copy for secrets; for other files it saves little. */
        *ret = buf;
        if (ret_size)
                *ret_size = used;
        return 0;

fail:
        if (secret)
                erase_and_free(buf, alloc);
        else
                free(buf);
        return r;
}

int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size) {
        return read_full_file_internal(path, max_size, false, ret, ret_size);
}

int read_full_file_secret(const char *path, size_t max_size, char **ret, size_t *ret_size) {
        return read_full_file_internal(path, max_size, true, ret, ret_size);
}

static int write_all(int fd, const void *data, size_t size) {
        const uint8_t *p = data;

        while (size > 0) {
                ssize_t k;

                k = write(fd, p, size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                p += k;
                size -= (size_t) k;
        }
        return 0;
}

static int fill_file(int fd, const void *data, size_t size, mode_t mode) {
        int r;

        /* Before any byte is written: a secret must never sit in a file with looser permissions. */
        if (fchmod(fd, mode) < 0)
                return -errno;
        r = write_all(fd, data, size);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

/* A name that is not in use yet is not guaranteed, but with 64 random bits a collision is not a
 * practical concern, and linkat() refuses to overwrite anyway (EEXIST). */
static void tmp_name(char *buf, size_t size, const char *base) {
        snprintf(buf, size, ".#%.200s.%016llx", base, (unsigned long long) random_u64());
}

/* O_TMPFILE: the file has no name until it is complete, so a crash never leaves a partial file behind.
 * Returns -EOPNOTSUPP when the file system or kernel cannot do it, so that the caller falls back. */
static int write_tmpfile(int dfd, const char *base, const void *data, size_t size, mode_t mode, bool replace) {
        _cleanup_close_ int fd = -EBADF;
        char tmp[256], proc[64];
        int r;

        fd = openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
        if (fd < 0) {
                /* EISDIR/EINVAL: kernels before 3.11 see O_DIRECTORY|O_WRONLY or an unknown flag. */
                if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
                        return -EOPNOTSUPP;
                return -errno;
        }
        r = fill_file(fd, data, size, mode);
        if (r < 0)
                return r;

        /* Linking by /proc path works without CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH. */
        snprintf(proc, sizeof(proc), "/proc/self/fd/%i", fd);
        if (!replace) {
                /* Straight to the final name: linkat() fails with EEXIST if anything is there, atomically. */
                if (linkat(AT_FDCWD, proc, dfd, base, AT_SYMLINK_FOLLOW) < 0)
                        return errno == ENOENT ? -EOPNOTSUPP : -errno;
                return 0;
        }
        tmp_name(tmp, sizeof(tmp), base);
        if (linkat(AT_FDCWD, proc, dfd, tmp, AT_SYMLINK_FOLLOW) < 0) {
                if (errno == ENOENT) /* no /proc */
                        return -EOPNOTSUPP;
                return -errno;
        }
        if (renameat(dfd, tmp, dfd, base) < 0) {
                r = -errno;
                (void) unlinkat(dfd, tmp, 0);
                return r;
        }
        return 0;
}

/* Fallback without O_TMPFILE: a hidden file created relative to dfd (never by path, so a directory swapped
 * in between cannot redirect it), 0600 until fill_file() sets the final mode, removed on any failure. */
static int write_named_tmp(int dfd, const char *base, const void *data, size_t size, mode_t mode, bool replace) {
        _cleanup_close_ int fd = -EBADF;
        char tmp[256];
        int r;

        for (unsigned attempt = 0;; attempt++) {
                tmp_name(tmp, sizeof(tmp), base);
                fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0)
                        break;
                if (errno != EEXIST || attempt >= 16)
                        return -errno;
        }

        r = fill_file(fd, data, size, mode);
        if (r >= 0 && renameat2(dfd, tmp, dfd, base, replace ? 0 : RENAME_NOREPLACE) < 0)
                r = -errno;
        if (r < 0)
                (void) unlinkat(dfd, tmp, 0);
        return r;
}

static bool file_name_is_valid(const char *name) {
        return !isempty(name) && !strchr(name, '/') && !streq(name, ".") && !streq(name, "..") &&
                strlen(name) <= NAME_MAX;
}

int write_file_atomic_at(int dir_fd, const char *name, const void *data, size_t size, mode_t mode,
                         WriteFileFlags flags) {
        _cleanup_close_ int cwd_fd = -EBADF;
        bool replace = !(flags & WRITE_FILE_NOREPLACE);
        int r;

        assert(dir_fd >= 0 || dir_fd == AT_FDCWD);
        assert(data || size == 0);

        if (!file_name_is_valid(name) || (mode & ~07777) != 0 || (flags & ~WRITE_FILE_NOREPLACE) != 0)
                return -EINVAL;

        /* The directory must be synced below, and AT_FDCWD is no fd to fsync(). */
        if (dir_fd == AT_FDCWD) {
                cwd_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (cwd_fd < 0)
                        return -errno;
                dir_fd = cwd_fd;
        }

        r = write_tmpfile(dir_fd, name, data, size, mode, replace);
        if (r == -EOPNOTSUPP) {
                log_debug("O_TMPFILE not usable for '%s', falling back to a named temporary file.", name);
                r = write_named_tmp(dir_fd, name, data, size, mode, replace);
        }
        if (r < 0)
                return r;

        /* The rename is durable only once the directory entry is on disk. A failure here comes after the
         * replacement: name already holds the new content, it is just not known to survive a power loss. */
        if (fsync(dir_fd) < 0)
                return -errno;
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode) {
        return write_file_atomic_full(path, data, size, mode, 0);
}

int write_file_atomic_full(const char *path, const void *data, size_t size, mode_t mode, WriteFileFlags flags) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dfd = -EBADF;
        const char *base, *slash;

        assert(path);

        /* Bad arguments are refused before the directory is looked up, so they never read as ENOENT. */
        slash = strrchr(path, '/');
        base = slash ? slash + 1 : path;
        if (!file_name_is_valid(base) || (mode & ~07777) != 0)
                return -EINVAL;
        if (!slash)
                dir = strdup(".");
        else if (slash == path)
                dir = strdup("/");
        else
                dir = strndup(path, (size_t) (slash - path));
        if (!dir)
                return -ENOMEM;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;

        return write_file_atomic_at(dfd, base, data, size, mode, flags);
}

int state_directory_from_environment(char **ret) {
        _cleanup_free_ char *first = NULL;
        const char *e = getenv("STATE_DIRECTORY");
        char *resolved;

        assert(ret);

        *ret = NULL;
        if (isempty(e))
                return 0;
        first = strndup(e, strcspn(e, ":"));
        if (!first)
                return -ENOMEM;
        if (first[0] != '/' || strlen(first) >= PATH_MAX) {
                log_debug("Ignoring $STATE_DIRECTORY, its first entry is not an absolute path.");
                return 0;
        }
        resolved = realpath(first, NULL);
        if (!resolved) {
                if (errno == ENOMEM)
                        return -ENOMEM;
                log_debug_errno(errno, "Cannot resolve $STATE_DIRECTORY '%s', using it as it is: %m", first);
                *ret = TAKE_PTR(first);
                return 0;
        }
        *ret = resolved;
        return 0;
}
