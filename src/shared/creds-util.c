/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "creds-util.h"
#include "fileio.h"
#include "hexdecoct.h"
#include "log.h"
#include "random-util.h"
#include "string-util.h"

static bool credential_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
}

bool credential_name_is_valid(const char *name) {
        size_t n = 0;

        if (isempty(name) || streq(name, ".") || streq(name, ".."))
                return false;
        for (const char *p = name; *p; p++) {
                if (!credential_char(*p) || ++n > CREDS_NAME_MAX)
                        return false;
        }
        return true;
}

static int creds_dir(const char **ret) {
        const char *e;

        /* secure_getenv(): a setuid helper must not be pointed at a directory of the caller's choosing. */
        e = secure_getenv("CREDENTIALS_DIRECTORY");
        if (isempty(e))
                return -ENXIO;
        if (e[0] != '/' || strlen(e) >= PATH_MAX)
                return -EINVAL;
        *ret = e;
        return 0;
}

int creds_path(const char *name, char **ret) {
        _cleanup_free_ char *p = NULL;
        const char *dir;
        int r;

        assert(ret);

        if (!credential_name_is_valid(name))
                return -EINVAL;
        r = creds_dir(&dir);
        if (r < 0)
                return r;

        p = strjoin(dir, "/", name, NULL);
        if (!p)
                return -ENOMEM;
        if (access(p, F_OK) < 0)
                return -errno;

        *ret = TAKE_PTR(p);
        return 0;
}

int creds_read(const char *name, size_t max, bool secret, ByteBuffer *ret) {
        _cleanup_free_ char *path = NULL;
        char *data = NULL;
        size_t size;
        int r;

        assert(ret);

        r = creds_path(name, &path);
        if (r < 0)
                return r;
        if (secret)
                r = read_full_file_secret(path, max, &data, &size);
        else
                r = read_full_file(path, max, &data, &size);
        if (r < 0)
                return log_debug_errno(r, "Failed to read credential '%s': %m", name);

        *ret = (ByteBuffer) { .data = (uint8_t *) data, .size = size };
        return 0;
}

/* The two accepted spellings of a KEK; anything else is refused rather than guessed at. */
static int kek_parse(const uint8_t *data, size_t size, uint8_t ret[static KEK_SIZE]) {
        uint8_t key[KEK_SIZE];

        if (size == KEK_SIZE) {
                memcpy(ret, data, KEK_SIZE);
                return 0;
        }
        if (size == 2 * KEK_SIZE + 1 && data[2 * KEK_SIZE] == '\n')
                size--;
        if (size != 2 * KEK_SIZE)
                return -EBADMSG;

        /* Decoded by hand into a stack buffer: unhexmem() would leave a heap copy to wipe. */
        for (size_t i = 0; i < KEK_SIZE; i++) {
                int hi = unhexchar((char) data[2 * i]), lo = unhexchar((char) data[2 * i + 1]);

                if (hi < 0 || lo < 0) {
                        explicit_bzero(key, sizeof(key));
                        return -EBADMSG;
                }
                key[i] = (uint8_t) (hi << 4 | lo);
        }
        memcpy(ret, key, KEK_SIZE);
        explicit_bzero(key, sizeof(key));
        return 0;
}

static int kek_load_credential(const char *name, uint8_t ret[static KEK_SIZE], const char **ret_reason) {
        _cleanup_(erase_and_freep) ByteBuffer b = {};
        int r;

        r = creds_read(name, KEK_FILE_MAX, /* secret= */ true, &b);
        if (r == -EFBIG) {
                *ret_reason = "key credential is larger than a key";
                return -EBADMSG;
        }
        if (r < 0) {
                *ret_reason = "cannot read the key credential";
                return r;
        }
        r = kek_parse(b.data, b.size, ret);
        if (r < 0)
                *ret_reason = "key credential is neither 32 raw bytes nor 64 hex digits";
        return r;
}

/* The file's properties are checked on the opened fd, and the same fd is read, so a file swapped in
 * after the check is never used. */
static int kek_load_file(const char *path, uint8_t ret[static KEK_SIZE], const char **ret_reason) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t buf[KEK_FILE_MAX + 1];
        size_t used = 0;
        struct stat st;
        int r;

        /* O_NONBLOCK: a FIFO must not hang us before fstat() refuses it. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) {
                if (errno == ELOOP) {
                        *ret_reason = "key file is a symbolic link";
                        return -EPERM;
                }
                r = -errno;
                *ret_reason = r == -ENOENT ? "no key credential and no key file" :
                                             "cannot open the key file";
                return r;
        }
        if (fstat(fd, &st) < 0) {
                *ret_reason = "cannot stat the key file";
                return -errno;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_reason = "key file is not a regular file";
                return -EPERM;
        }
        if (st.st_uid != geteuid()) {
                *ret_reason = "key file is owned by another user";
                return -EPERM;
        }
        if ((st.st_mode & 0077) != 0) {
                *ret_reason = "key file is accessible to group or others";
                return -EPERM;
        }

        /* One byte more than the longest valid content, to tell "too long" apart. */
        while (used < sizeof(buf)) {
                ssize_t k;

                k = read(fd, buf + used, sizeof(buf) - used);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        explicit_bzero(buf, sizeof(buf));
                        *ret_reason = "cannot read the key file";
                        return r;
                }
                if (k == 0)
                        break;
                used += (size_t) k;
        }

        r = used > KEK_FILE_MAX ? -EBADMSG : kek_parse(buf, used, ret);
        explicit_bzero(buf, sizeof(buf));
        if (r < 0)
                *ret_reason = "key file is neither 32 raw bytes nor 64 hex digits";
        return r;
}

int kek_load(const char *cred_name, const char *fallback_path, uint8_t ret[static KEK_SIZE],
             bool *ret_from_credential, const char **ret_reason) {
        uint8_t key[KEK_SIZE];
        const char *reason = NULL;
        bool from_credential;
        int r;

        assert(ret);

        r = kek_load_credential(cred_name ?: KEK_CREDENTIAL_NAME, key, &reason);
        if (r >= 0)
                from_credential = true;
        else if (r == -ENXIO || r == -ENOENT) {
                log_debug("No key credential '%s', trying the key file.", cred_name ?: KEK_CREDENTIAL_NAME);
                if (!fallback_path) {
                        reason = "no key credential and no key file configured";
                        r = -ENOENT;
                } else
                        r = kek_load_file(fallback_path, key, &reason);
                from_credential = false;
        } else if (r == -EINVAL)
                reason = "invalid key credential name or credentials directory";

        if (r < 0) {
                explicit_bzero(key, sizeof(key));
                if (ret_reason)
                        *ret_reason = reason;
                return log_debug_errno(r, "Failed to load the key-encryption key: %s", reason);
        }

        memcpy(ret, key, KEK_SIZE);
        explicit_bzero(key, sizeof(key));
        if (ret_from_credential)
                *ret_from_credential = from_credential;
        return 0;
}

int kek_generate_file(const char *path) {
        uint8_t key[KEK_SIZE];
        int r;

        assert(path);

        /* Create-only, decided by the kernel at the moment of linking: a key already there (even as a
         * dangling symlink), or one a racing generator just wrote, is never replaced — identities may already
         * be sealed with it. */
        r = random_bytes(key, sizeof(key));
        if (r >= 0)
                r = write_file_atomic_full(path, key, sizeof(key), 0600, WRITE_FILE_NOREPLACE);
        explicit_bzero(key, sizeof(key));
        if (r < 0)
                return log_debug_errno(r, "Failed to create key file '%s': %m", path);
        return 0;
}
