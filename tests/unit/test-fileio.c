/* SPDX-License-Identifier: Apache-2.0 */

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "macro.h"
#include "tests.h"

static char *tmp_path(const char *name) {
        static char buf[4][512];
        static unsigned i;
        char *p = buf[i++ % ELEMENTSOF(buf)];

        snprintf(p, sizeof(buf[0]), "%s/%s", test_tmpdir(), name);
        return p;
}

static void put(const char *path, const void *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, data, size), (ssize_t) size);
        close(fd);
}

/* Names in dir other than "." and "..", joined with ','. */
static const char *dir_listing(const char *dir) {
        static char buf[1024];
        struct dirent **list;
        int n;

        buf[0] = '\0';
        n = scandir(dir, &list, NULL, alphasort);
        ASSERT_TRUE(n >= 0);
        for (int i = 0; i < n; i++) {
                if (!streq(list[i]->d_name, ".") && !streq(list[i]->d_name, "..")) {
                        if (buf[0])
                                strncat(buf, ",", sizeof(buf) - strlen(buf) - 1);
                        strncat(buf, list[i]->d_name, sizeof(buf) - strlen(buf) - 1);
                }
                free(list[i]);
        }
        free(list);
        return buf;
}

typedef int (*reader_t)(const char *path, size_t max_size, char **ret, size_t *ret_size);
static const struct {
        const char *name;
        reader_t read;
} readers[] = {
        { "read_full_file", read_full_file },
        { "read_full_file_secret", read_full_file_secret },
};

TEST(read_content_and_size) {
        const char *p = tmp_path("f");

        put(p, "hello\nworld", 11);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                _cleanup_free_ char *s = NULL, *t = NULL;
                size_t n = 99;

                CASE("%s", readers[i].name);
                ASSERT_OK(readers[i].read(p, 100, &s, &n));
                ASSERT_EQ(n, 11);
                ASSERT_STREQ(s, "hello\nworld");
                /* Without ret_size the result is a plain string. */
                ASSERT_OK(readers[i].read(p, 100, &t, NULL));
                ASSERT_STREQ(t, "hello\nworld");
        }
}

TEST(read_empty_file) {
        const char *p = tmp_path("empty");

        put(p, "", 0);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                _cleanup_free_ char *s = NULL;
                size_t n = 99;

                CASE("%s", readers[i].name);
                ASSERT_OK(readers[i].read(p, 1, &s, &n));
                ASSERT_EQ(n, 0);
                ASSERT_STREQ(s, "");
        }
}

TEST(read_size_limit) {
        const char *p = tmp_path("ten");

        put(p, "0123456789", 10);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                _cleanup_free_ char *s = NULL;
                char *untouched = (char *) "x";
                size_t n = 99;

                CASE("%s", readers[i].name);
                ASSERT_OK(readers[i].read(p, 10, &s, &n));
                ASSERT_EQ(n, 10);
                ASSERT_ERROR(readers[i].read(p, 9, &untouched, &n), EFBIG);
                ASSERT_STREQ(untouched, "x");
                ASSERT_EQ(n, 10);
                ASSERT_ERROR(readers[i].read(p, READ_FULL_FILE_SIZE_MAX + 1, &untouched, NULL), EINVAL);
        }
}

TEST(read_zero_max_means_default) {
        _cleanup_free_ char *s = NULL;
        const char *p = tmp_path("f");

        put(p, "abc", 3);
        ASSERT_OK(read_full_file(p, 0, &s, NULL));
        ASSERT_STREQ(s, "abc");
}

TEST(read_refuses_non_regular) {
        const char *fifo = tmp_path("fifo");
        char *s = NULL;

        ASSERT_TRUE(mkfifo(fifo, 0600) == 0);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                CASE("%s", readers[i].name);
                ASSERT_ERROR(readers[i].read(test_tmpdir(), 100, &s, NULL), EISDIR);
                /* Must not block waiting for a writer. */
                ASSERT_ERROR(readers[i].read(fifo, 100, &s, NULL), EBADFD);
                ASSERT_ERROR(readers[i].read("/dev/null", 100, &s, NULL), EBADFD);
                ASSERT_ERROR(readers[i].read(tmp_path("missing"), 100, &s, NULL), ENOENT);
        }
        ASSERT_NULL(s);
}

TEST(read_embedded_nul) {
        const char *p = tmp_path("nul");
        _cleanup_free_ char *s = NULL;
        char *untouched = NULL;
        size_t n;

        put(p, "a\0b", 3);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                CASE("%s", readers[i].name);
                /* As a string it would silently read as "a". */
                ASSERT_ERROR(readers[i].read(p, 100, &untouched, NULL), EBADMSG);
                ASSERT_NULL(untouched);
        }
        ASSERT_OK(read_full_file(p, 100, &s, &n));
        ASSERT_EQ(n, 3);
        ASSERT_MEMEQ(s, "a\0b", 4);
}

TEST(read_file_without_size_grows) {
        /* /proc files report st_size 0: the buffer must grow while reading, past the first chunk. */
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                _cleanup_free_ char *s = NULL;
                char *untouched = NULL;
                size_t n;

                CASE("%s", readers[i].name);
                ASSERT_OK(readers[i].read("/proc/self/smaps", 0, &s, &n));
                ASSERT_GT(n, 8192);
                ASSERT_EQ(strlen(s), n);
                ASSERT_STRSTR(s, "Size:");
                /* The limit also holds when the size is only learnt by reading. */
                ASSERT_ERROR(readers[i].read("/proc/self/smaps", 5000, &untouched, &n), EFBIG);
                ASSERT_NULL(untouched);
        }
}

TEST(read_large_file_exact) {
        const size_t size = 3 * 65536 + 17;
        _cleanup_free_ char *data = NULL;
        const char *p = tmp_path("big");

        data = ASSERT_NOT_NULL(malloc(size));
        for (size_t i = 0; i < size; i++)
                data[i] = (char) ('a' + i % 26);
        put(p, data, size);
        for (size_t i = 0; i < ELEMENTSOF(readers); i++) {
                _cleanup_free_ char *s = NULL;
                size_t n;

                CASE("%s", readers[i].name);
                ASSERT_OK(readers[i].read(p, size, &s, &n));
                ASSERT_EQ(n, size);
                ASSERT_MEMEQ(s, data, size);
                ASSERT_EQ(s[size], '\0');
        }
}

static void assert_file(const char *path, const char *content, mode_t mode) {
        _cleanup_free_ char *s = NULL;
        struct stat st;

        ASSERT_OK(read_full_file(path, 0, &s, NULL));
        ASSERT_STREQ(s, content);
        ASSERT_TRUE(stat(path, &st) == 0);
        ASSERT_EQ(st.st_mode & 07777, mode);
}

TEST(write_creates_with_exact_mode) {
        const char *p = tmp_path("out");

        /* The mode is exact whatever the umask: tighter and looser. */
        umask(0077);
        ASSERT_OK(write_file_atomic(p, "one", 3, 0644));
        assert_file(p, "one", 0644);
        umask(0);
        ASSERT_OK(write_file_atomic(p, "two", 3, 0600));
        assert_file(p, "two", 0600);
        ASSERT_STREQ(dir_listing(test_tmpdir()), "out");
}

TEST(write_mode_zero_still_writes) {
        const char *p = tmp_path("secret");
        struct stat st;
        char buf[8] = {};
        int fd;

        /* fchmod() happens on the open fd, so even mode 0 gets its data (read back as root only). */
        ASSERT_OK(write_file_atomic(p, "key", 3, 0));
        ASSERT_TRUE(stat(p, &st) == 0);
        ASSERT_EQ(st.st_mode & 07777, 0);
        ASSERT_EQ(st.st_size, 3);
        if (geteuid() == 0) {
                fd = open(p, O_RDONLY | O_CLOEXEC);
                ASSERT_TRUE(fd >= 0);
                ASSERT_EQ(read(fd, buf, sizeof(buf)), 3);
                ASSERT_STREQ(buf, "key");
                close(fd);
        }
}

TEST(write_replaces_by_rename) {
        const char *p = tmp_path("target");
        struct stat before, after;

        put(p, "old content", 11);
        ASSERT_TRUE(stat(p, &before) == 0);
        ASSERT_OK(write_file_atomic(p, "new", 3, 0640));
        ASSERT_TRUE(stat(p, &after) == 0);
        assert_file(p, "new", 0640);
        /* A new inode: the old file was replaced, never truncated and rewritten in place. */
        ASSERT_TRUE(before.st_ino != after.st_ino);
        ASSERT_STREQ(dir_listing(test_tmpdir()), "target");
}

TEST(write_empty_and_binary) {
        const char *p = tmp_path("bin");
        _cleanup_free_ char *s = NULL;
        size_t n;

        ASSERT_OK(write_file_atomic(p, NULL, 0, 0600));
        assert_file(p, "", 0600);
        ASSERT_OK(write_file_atomic(p, "\0\1\2", 3, 0600));
        ASSERT_OK(read_full_file(p, 0, &s, &n));
        ASSERT_EQ(n, 3);
        ASSERT_MEMEQ(s, "\0\1\2", 3);
}

TEST(write_failed_rename_leaves_target_and_no_temp) {
        const char *dir = tmp_path("target.d"), *inside = tmp_path("target.d/keep");

        /* A non-empty directory cannot be renamed over: the write fails at the very last step. */
        ASSERT_TRUE(mkdir(dir, 0755) == 0);
        put(inside, "kept", 4);
        ASSERT_ERROR(write_file_atomic(dir, "new", 3, 0600), EISDIR);
        assert_file(inside, "kept", 0644);
        ASSERT_STREQ(dir_listing(test_tmpdir()), "target.d");
        ASSERT_STREQ(dir_listing(dir), "keep");
}

TEST(write_failed_data_keeps_old_content) {
        const char *p = tmp_path("config");
        struct rlimit rl = { .rlim_cur = 64, .rlim_max = RLIM_INFINITY };
        char big[4096];

        /* A file size limit makes write() fail half-way (EFBIG, with SIGXFSZ ignored): the old file
         * must survive complete, and the partial temporary file must be gone. */
        put(p, "old content", 11);
        memset(big, 'x', sizeof(big));
        ASSERT_TRUE(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
        ASSERT_TRUE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
        ASSERT_ERROR(write_file_atomic(p, big, sizeof(big), 0600), EFBIG);
        rl.rlim_cur = RLIM_INFINITY;
        ASSERT_TRUE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
        assert_file(p, "old content", 0644);
        ASSERT_STREQ(dir_listing(test_tmpdir()), "config");
}

TEST(write_relative_path) {
        ASSERT_TRUE(chdir(test_tmpdir()) == 0);
        ASSERT_OK(write_file_atomic("rel", "r", 1, 0600));
        assert_file(tmp_path("rel"), "r", 0600);
}

TEST(write_refuses_bad_arguments) {
        char p[600];

        ASSERT_ERROR(write_file_atomic(tmp_path("x/"), "a", 1, 0600), EINVAL);
        ASSERT_ERROR(write_file_atomic(tmp_path(".."), "a", 1, 0600), EINVAL);
        ASSERT_ERROR(write_file_atomic(tmp_path("."), "a", 1, 0600), EINVAL);
        ASSERT_ERROR(write_file_atomic("", "a", 1, 0600), EINVAL);
        ASSERT_ERROR(write_file_atomic(tmp_path("m"), "a", 1, 010000), EINVAL);
        ASSERT_ERROR(write_file_atomic(tmp_path("missing/dir/f"), "a", 1, 0600), ENOENT);
        snprintf(p, sizeof(p), "%s/%0300d", test_tmpdir(), 0);
        ASSERT_ERROR(write_file_atomic(p, "a", 1, 0600), EINVAL);
        ASSERT_STREQ(dir_listing(test_tmpdir()), "");
}

TEST(write_noreplace_creates_only) {
        char path[512], link[512], *c = NULL;
        size_t n = 0;

        snprintf(path, sizeof(path), "%s/key", test_tmpdir());
        ASSERT_OK(write_file_atomic_full(path, "first", 5, 0600, WRITE_FILE_NOREPLACE));
        /* Something is there: refused, and the content is untouched. */
        ASSERT_ERROR(write_file_atomic_full(path, "second", 6, 0600, WRITE_FILE_NOREPLACE), EEXIST);
        ASSERT_OK(read_full_file(path, 0, &c, &n));
        ASSERT_STREQ(c, "first");
        free(c);
        /* A dangling symlink counts as something: never followed, never replaced. */
        snprintf(link, sizeof(link), "%s/dangling", test_tmpdir());
        ASSERT_TRUE(symlink("/nonexistent/target", link) == 0);
        ASSERT_ERROR(write_file_atomic_full(link, "x", 1, 0600, WRITE_FILE_NOREPLACE), EEXIST);
        ASSERT_TRUE(access("/nonexistent/target", F_OK) < 0);
        /* Without the flag the same path is replaced, as before. */
        ASSERT_OK(write_file_atomic(path, "second", 6, 0600));
        ASSERT_OK(read_full_file(path, 0, &c, &n));
        ASSERT_STREQ(c, "second");
        free(c);
}

/* ---- write_file_atomic_at() ---- */

static int open_dir(const char *path) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        ASSERT_TRUE(fd >= 0);
        return fd;
}

TEST(write_at_creates_and_replaces) {
        _cleanup_close_ int dfd = open_dir(test_tmpdir());
        struct stat before, after;

        ASSERT_OK(write_file_atomic_at(dfd, "f", "one", 3, 0640, 0));
        assert_file(tmp_path("f"), "one", 0640);
        ASSERT_TRUE(stat(tmp_path("f"), &before) == 0);
        ASSERT_OK(write_file_atomic_at(dfd, "f", "two", 3, 0600, 0));
        assert_file(tmp_path("f"), "two", 0600);
        ASSERT_TRUE(stat(tmp_path("f"), &after) == 0);
        ASSERT_TRUE(before.st_ino != after.st_ino);
        ASSERT_ERROR(write_file_atomic_at(dfd, "f", "three", 5, 0600, WRITE_FILE_NOREPLACE), EEXIST);
        assert_file(tmp_path("f"), "two", 0600);
        ASSERT_OK(write_file_atomic_at(dfd, "g", "new", 3, 0600, WRITE_FILE_NOREPLACE));
        assert_file(tmp_path("g"), "new", 0600);
        /* No temporary file left behind. */
        ASSERT_STREQ(dir_listing(test_tmpdir()), "f,g");
}

/* The directory is the one the fd refers to, whatever its path has become meanwhile: a directory renamed
 * away and another one put in its place does not redirect the write. */
TEST(write_at_follows_the_fd_not_the_path) {
        const char *dir = tmp_path("state"), *moved = tmp_path("moved");
        _cleanup_close_ int dfd = -EBADF;

        ASSERT_TRUE(mkdir(dir, 0700) == 0);
        dfd = open_dir(dir);
        ASSERT_TRUE(rename(dir, moved) == 0);
        ASSERT_TRUE(mkdir(dir, 0700) == 0);

        ASSERT_OK(write_file_atomic_at(dfd, "id", "secret", 6, 0600, 0));
        assert_file(tmp_path("moved/id"), "secret", 0600);
        ASSERT_STREQ(dir_listing(dir), "");
}

/* A symbolic link at the name is replaced itself, never followed: its target keeps its content. */
TEST(write_at_symlink_replaced_not_followed) {
        _cleanup_close_ int dfd = -EBADF;
        const char *dir = tmp_path("d"), *victim = tmp_path("victim");
        struct stat st;
        char link[512];

        ASSERT_TRUE(mkdir(dir, 0700) == 0);
        dfd = open_dir(dir);
        put(victim, "precious", 8);
        snprintf(link, sizeof(link), "%s/name", dir);
        ASSERT_TRUE(symlink(victim, link) == 0);

        /* Create-only counts the link as existing, dangling or not. */
        ASSERT_ERROR(write_file_atomic_at(dfd, "name", "evil", 4, 0600, WRITE_FILE_NOREPLACE), EEXIST);
        ASSERT_TRUE(lstat(link, &st) == 0);
        ASSERT_TRUE(S_ISLNK(st.st_mode));

        ASSERT_OK(write_file_atomic_at(dfd, "name", "new", 3, 0600, 0));
        ASSERT_TRUE(lstat(link, &st) == 0);
        ASSERT_TRUE(S_ISREG(st.st_mode));
        assert_file(link, "new", 0600);
        assert_file(victim, "precious", 0644);
        ASSERT_STREQ(dir_listing(dir), "name");
}

TEST(write_at_cwd) {
        ASSERT_TRUE(chdir(test_tmpdir()) == 0);
        ASSERT_OK(write_file_atomic_at(AT_FDCWD, "here", "h", 1, 0600, 0));
        assert_file(tmp_path("here"), "h", 0600);
}

TEST(write_at_refuses_bad_arguments) {
        _cleanup_close_ int dfd = open_dir(test_tmpdir());
        char longest[NAME_MAX + 2];
        static const struct {
                const char *name;
                mode_t mode;
                WriteFileFlags flags;
        } table[] = {
                { "", 0600, 0 },
                { ".", 0600, 0 },
                { "..", 0600, 0 },
                { "sub/file", 0600, 0 },
                { "/abs", 0600, 0 },
                { "trailing/", 0600, 0 },
                { "<too long>", 0600, 0 },
                { "ok", 010000, 0 },
                { "ok", 0600, 1 << 7 },
        };

        memset(longest, 'n', sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';
        ASSERT_TRUE(mkdir(tmp_path("sub"), 0700) == 0);
        for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                const char *name = streq(table[k].name, "<too long>") ? longest : table[k].name;

                CASE("'%s' mode %04o flags %d", table[k].name, (unsigned) table[k].mode,
                     (int) table[k].flags);
                ASSERT_ERROR(write_file_atomic_at(dfd, name, "a", 1, table[k].mode, table[k].flags), EINVAL);
        }
        ASSERT_STREQ(dir_listing(test_tmpdir()), "sub");
        ASSERT_STREQ(dir_listing(tmp_path("sub")), "");

        /* The longest name is fine. */
        longest[NAME_MAX] = '\0';
        ASSERT_OK(write_file_atomic_at(dfd, longest, "a", 1, 0600, 0));

        /* An fd that is not a directory. */
        {
                _cleanup_close_ int fd = open(tmp_path(longest), O_RDONLY | O_CLOEXEC);

                ASSERT_TRUE(fd >= 0);
                ASSERT_ERROR(write_file_atomic_at(fd, "x", "a", 1, 0600, 0), ENOTDIR);
        }
}

/* systemd's StateDirectory= under DynamicUser=: $STATE_DIRECTORY is a link into /var/lib/private/; the
 * resolved directory comes back, so that opens refusing links work. */
TEST(state_directory_from_environment) {
        char real[PATH_MAX], link[PATH_MAX], both[2 * PATH_MAX + 2], *d = NULL;

        snprintf(real, sizeof(real), "%s/private-state", test_tmpdir());
        snprintf(link, sizeof(link), "%s/state-link", test_tmpdir());
        ASSERT_OK(mkdir(real, 0700));
        ASSERT_OK(symlink("private-state", link));

        ASSERT_OK(unsetenv("STATE_DIRECTORY"));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_TRUE(d == NULL);

        ASSERT_OK(setenv("STATE_DIRECTORY", link, 1));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_STREQ(d, real);
        free(d);

        /* Several directories: the first one. */
        snprintf(both, sizeof(both), "%s:%s", link, test_tmpdir());
        ASSERT_OK(setenv("STATE_DIRECTORY", both, 1));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_STREQ(d, real);
        free(d);

        /* Not resolvable: as it is, for the open that follows to report. Relative or empty: none. */
        ASSERT_OK(setenv("STATE_DIRECTORY", "/nonexistent/ztna-state", 1));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_STREQ(d, "/nonexistent/ztna-state");
        free(d);
        ASSERT_OK(setenv("STATE_DIRECTORY", "relative/dir", 1));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_TRUE(d == NULL);
        ASSERT_OK(setenv("STATE_DIRECTORY", "", 1));
        ASSERT_OK(state_directory_from_environment(&d));
        ASSERT_TRUE(d == NULL);
        ASSERT_OK(unsetenv("STATE_DIRECTORY"));
}
