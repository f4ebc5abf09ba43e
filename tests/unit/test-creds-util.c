/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "creds-util.h"
#include "fileio.h"
#include "log.h"
#include "tests.h"

#define NOBODY_UID 65534

/* A key whose hex spelling is easy to search for in logs and reasons. */
static const uint8_t sample_key[KEK_SIZE] = {
        0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98,
        0x76, 0x54, 0x32, 0x10, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4,
};
#define SAMPLE_HEX "deadbeef0123456789abcdeffedcba9876543210" "0f1e2d3c4b5a69788796a5b4"
#define SAMPLE_HEX_UPPER "DEADBEEF0123456789ABCDEFFEDCBA9876543210" "0F1E2D3C4B5A69788796A5B4"

static void capture_begin(void) {
        log_set_target_journal(0);
        log_set_max_level(LOG_DEBUG);
        test_capture_stderr_begin();
}

/* A credentials directory inside the case's tmpdir, exported like systemd does. */
static const char *creds_setup(void) {
        const char *dir = test_path("creds");

        ASSERT_TRUE(mkdir(dir, 0700) == 0);
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", dir, 1) == 0);
        return dir;
}

static void put(const char *path, const void *data, size_t size, mode_t mode) {
        test_write_file(path, data, size);
        ASSERT_TRUE(chmod(path, mode) == 0);
}

static void put_credential(const char *dir, const char *name, const void *data, size_t size) {
        char path[512];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        put(path, data, size, 0400);
}

TEST(credential_names) {
        char longest[CREDS_NAME_MAX + 2];
        static const struct {
                const char *name;
                bool valid;
        } table[] = {
                { "ztna.kek", true },
                { "ENROLLMENT_TOKEN", true },
                { "a", true },
                { "a-b_c.d-0", true },
                { "...", true },
                { ".hidden", true },
                { "", false },
                { ".", false },
                { "..", false },
                { "a/b", false },
                { "/abs", false },
                { "../ztna.kek", false },
                { "a b", false },
                { "tab\t", false },
                { "nl\n", false },
                { "a:b", false },
                { "caf\xc3\xa9", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("'%s'", table[i].name);
                ASSERT_EQ(credential_name_is_valid(table[i].name), table[i].valid);
        }

        CASE("length");
        ASSERT_FALSE(credential_name_is_valid(NULL));
        memset(longest, 'k', CREDS_NAME_MAX);
        longest[CREDS_NAME_MAX] = '\0';
        ASSERT_TRUE(credential_name_is_valid(longest));
        longest[CREDS_NAME_MAX] = 'k';
        longest[CREDS_NAME_MAX + 1] = '\0';
        ASSERT_FALSE(credential_name_is_valid(longest));
}

TEST(path_without_credentials_directory) {
        char *p = (char *) "untouched";

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_ERROR(creds_path("ztna.kek", &p), ENXIO);
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", "", 1) == 0);
        ASSERT_ERROR(creds_path("ztna.kek", &p), ENXIO);
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", "relative/dir", 1) == 0);
        ASSERT_ERROR(creds_path("ztna.kek", &p), EINVAL);
        ASSERT_STREQ(p, "untouched");
}

TEST(path_with_credentials_directory) {
        _cleanup_free_ char *p = NULL;
        char expected[512];
        const char *dir;

        dir = creds_setup();
        ASSERT_ERROR(creds_path("ztna.kek", &p), ENOENT);
        ASSERT_NULL(p);
        ASSERT_ERROR(creds_path("../creds/ztna.kek", &p), EINVAL);
        ASSERT_ERROR(creds_path("", &p), EINVAL);

        put_credential(dir, "ztna.kek", "x", 1);
        ASSERT_OK(creds_path("ztna.kek", &p));
        snprintf(expected, sizeof(expected), "%s/ztna.kek", dir);
        ASSERT_STREQ(p, expected);
}

TEST(read_sizes_and_content) {
        static const char content[] = "ztna1-abc\n";
        const size_t n = sizeof(content) - 1;
        const char *dir;

        dir = creds_setup();
        put_credential(dir, "TOKEN", content, n);

        for (int secret = 0; secret <= 1; secret++) {
                _cleanup_(erase_and_freep) ByteBuffer b = {};
                ByteBuffer untouched = { .data = (uint8_t *) "x", .size = 1 };

                CASE("secret=%i", secret);
                ASSERT_OK(creds_read("TOKEN", n, secret, &b));
                ASSERT_UEQ(b.size, n);
                ASSERT_MEMEQ(b.data, content, n);
                ASSERT_EQ(b.data[n], '\0');

                ASSERT_ERROR(creds_read("TOKEN", n - 1, secret, &untouched), EFBIG);
                ASSERT_ERROR(creds_read("MISSING", 0, secret, &untouched), ENOENT);
                ASSERT_ERROR(creds_read("a/b", 0, secret, &untouched), EINVAL);
                ASSERT_UEQ(untouched.size, 1);
                ASSERT_STREQ((char *) untouched.data, "x");
        }
}

TEST(read_empty_and_odd_credentials) {
        _cleanup_(erase_and_freep) ByteBuffer b = {};
        char path[512];
        const char *dir;

        dir = creds_setup();
        put_credential(dir, "EMPTY", "", 0);
        ASSERT_OK(creds_read("EMPTY", 0, true, &b));
        ASSERT_UEQ(b.size, 0);
        ASSERT_NOT_NULL(b.data);

        snprintf(path, sizeof(path), "%s/DIR", dir);
        ASSERT_TRUE(mkdir(path, 0700) == 0);
        ASSERT_ERROR(creds_read("DIR", 0, true, &(ByteBuffer) {}), EISDIR);

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_ERROR(creds_read("EMPTY", 0, true, &(ByteBuffer) {}), ENXIO);
}

static const struct {
        const char *name;
        const char *data;
        size_t size;
        int error;
} kek_formats[] = {
        { "raw", (const char *) sample_key, KEK_SIZE, 0 },
        { "hex", SAMPLE_HEX, 64, 0 },
        { "hex upper-case", SAMPLE_HEX_UPPER, 64, 0 },
        { "hex newline", SAMPLE_HEX "\n", 65, 0 },
        { "empty", "", 0, EBADMSG },
        { "raw short", (const char *) sample_key, KEK_SIZE - 1, EBADMSG },
        { "raw plus newline", "0123456789abcdef0123456789abcdef\n", 33, EBADMSG },
        { "hex short", SAMPLE_HEX, 63, EBADMSG },
        { "hex CRLF", SAMPLE_HEX "\r\n", 66, EBADMSG },
        { "hex two newlines", SAMPLE_HEX "\n\n", 66, EBADMSG },
        { "hex leading space", " " SAMPLE_HEX, 65, EBADMSG },
        { "hex trailing space", SAMPLE_HEX " ", 65, EBADMSG },
        { "hex bad digit", "g" SAMPLE_HEX, 64, EBADMSG },
        { "hex 0x prefix", "0x" SAMPLE_HEX, 66, EBADMSG },
        { "hex too long", SAMPLE_HEX "00", 66, EBADMSG },
        { "far too long", SAMPLE_HEX SAMPLE_HEX SAMPLE_HEX, 192, EBADMSG },
        { "base64", "3q2+7wEjRWeJq83v/ty6mHZUMhAPHi08S1ppeIeWpbQ=", 44, EBADMSG },
};

TEST(kek_formats_from_credential) {
        for (size_t i = 0; i < ELEMENTSOF(kek_formats); i++) {
                uint8_t key[KEK_SIZE];
                const char *dir, *reason = NULL;
                bool from_credential = false;
                char path[512];

                CASE("%s", kek_formats[i].name);
                dir = creds_setup();
                put_credential(dir, "ztna.kek", kek_formats[i].data, kek_formats[i].size);
                memset(key, 0x5a, sizeof(key));
                if (kek_formats[i].error == 0) {
                        ASSERT_OK(kek_load(NULL, NULL, key, &from_credential, &reason));
                        ASSERT_MEMEQ(key, sample_key, KEK_SIZE);
                        ASSERT_TRUE(from_credential);
                        ASSERT_NULL(reason);
                } else {
                        ASSERT_ERROR(kek_load(NULL, NULL, key, &from_credential, &reason),
                                     kek_formats[i].error);
                        ASSERT_STREQ(reason,
                                     kek_formats[i].size > KEK_FILE_MAX ?
                                             "key credential is larger than a key" :
                                             "key credential is neither 32 raw bytes nor 64 hex digits");
                        ASSERT_FALSE(from_credential);
                        for (size_t j = 0; j < KEK_SIZE; j++)
                                ASSERT_EQ(key[j], 0x5a);
                }
                snprintf(path, sizeof(path), "%s/ztna.kek", dir);
                ASSERT_TRUE(unlink(path) == 0);
                ASSERT_TRUE(rmdir(dir) == 0);
        }
}

TEST(kek_formats_from_file) {
        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);

        for (size_t i = 0; i < ELEMENTSOF(kek_formats); i++) {
                const char *path = test_path("kek"), *reason = NULL;
                bool from_credential = true;
                uint8_t key[KEK_SIZE] = {};

                CASE("%s", kek_formats[i].name);
                put(path, kek_formats[i].data, kek_formats[i].size, 0600);
                if (kek_formats[i].error == 0) {
                        ASSERT_OK(kek_load(NULL, path, key, &from_credential, &reason));
                        ASSERT_MEMEQ(key, sample_key, KEK_SIZE);
                        ASSERT_FALSE(from_credential);
                        ASSERT_NULL(reason);
                } else {
                        ASSERT_ERROR(kek_load(NULL, path, key, &from_credential, &reason),
                                     kek_formats[i].error);
                        ASSERT_STREQ(reason, "key file is neither 32 raw bytes nor 64 hex digits");
                        ASSERT_TRUE(from_credential);
                }
                ASSERT_TRUE(unlink(path) == 0);
        }
}

TEST(kek_credential_first_then_file) {
        const char *file = test_path("kek.file"), *dir, *reason = NULL;
        static const uint8_t other[KEK_SIZE] = { 1, 2, 3 };
        uint8_t key[KEK_SIZE];
        bool from_credential;
        char path[512];

        put(file, other, sizeof(other), 0600);

        CASE("no credentials directory: the file");
        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_OK(kek_load(NULL, file, key, &from_credential, NULL));
        ASSERT_MEMEQ(key, other, KEK_SIZE);
        ASSERT_FALSE(from_credential);

        CASE("credentials directory without the key: the file");
        dir = creds_setup();
        from_credential = true;
        ASSERT_OK(kek_load(NULL, file, key, &from_credential, NULL));
        ASSERT_MEMEQ(key, other, KEK_SIZE);
        ASSERT_FALSE(from_credential);

        CASE("credential present: the credential wins");
        put_credential(dir, "ztna.kek", SAMPLE_HEX "\n", 65);
        ASSERT_OK(kek_load("ztna.kek", file, key, &from_credential, NULL));
        ASSERT_MEMEQ(key, sample_key, KEK_SIZE);
        ASSERT_TRUE(from_credential);

        CASE("another credential name");
        put_credential(dir, "my.key", other, sizeof(other));
        ASSERT_OK(kek_load("my.key", NULL, key, &from_credential, NULL));
        ASSERT_MEMEQ(key, other, KEK_SIZE);
        ASSERT_TRUE(from_credential);

        CASE("a bad credential is not replaced by the file");
        snprintf(path, sizeof(path), "%s/bad.kek", dir);
        put(path, "junk", 4, 0400);
        ASSERT_ERROR(kek_load("bad.kek", file, key, &from_credential, &reason), EBADMSG);
        ASSERT_STREQ(reason, "key credential is neither 32 raw bytes nor 64 hex digits");

        CASE("a directory as credential is an error, not a fallback");
        snprintf(path, sizeof(path), "%s/dir.kek", dir);
        ASSERT_TRUE(mkdir(path, 0700) == 0);
        ASSERT_ERROR(kek_load("dir.kek", file, key, &from_credential, &reason), EISDIR);

        CASE("invalid credential name");
        ASSERT_ERROR(kek_load("../kek.file", file, key, &from_credential, &reason), EINVAL);
        ASSERT_STREQ(reason, "invalid key credential name or credentials directory");
}

TEST(kek_nothing_there) {
        const char *reason = NULL;
        uint8_t key[KEK_SIZE];

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_ERROR(kek_load(NULL, NULL, key, NULL, &reason), ENOENT);
        ASSERT_STREQ(reason, "no key credential and no key file configured");
        reason = NULL;
        ASSERT_ERROR(kek_load(NULL, test_path("missing"), key, NULL, &reason), ENOENT);
        ASSERT_STREQ(reason, "no key credential and no key file");
        creds_setup();
        ASSERT_ERROR(kek_load(NULL, test_path("missing"), key, NULL, NULL), ENOENT);
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", "not/absolute", 1) == 0);
        ASSERT_ERROR(kek_load(NULL, test_path("missing"), key, NULL, NULL), EINVAL);
}

TEST(kek_file_permissions) {
        static const struct {
                mode_t mode;
                int error;
        } table[] = {
                { 0600, 0 },
                { 0400, 0 },
                { 0700, 0 },
                { 0200, EACCES }, /* unreadable for anyone but root */
                { 0644, EPERM },
                { 0640, EPERM },
                { 0604, EPERM },
                { 0620, EPERM },
                { 0602, EPERM },
                { 0610, EPERM },
                { 0601, EPERM },
                { 0666, EPERM },
        };

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                const char *path = test_path("kek"), *reason = NULL;
                uint8_t key[KEK_SIZE];
                int error = table[i].error;

                CASE("mode %04o", (unsigned) table[i].mode);
                /* root reads files without read permission; the rule is about group and others. */
                if (error == EACCES && geteuid() == 0)
                        error = 0;
                put(path, sample_key, KEK_SIZE, table[i].mode);
                if (error == 0) {
                        ASSERT_OK(kek_load(NULL, path, key, NULL, &reason));
                        ASSERT_MEMEQ(key, sample_key, KEK_SIZE);
                } else if (error == EPERM) {
                        ASSERT_ERROR(kek_load(NULL, path, key, NULL, &reason), EPERM);
                        ASSERT_STREQ(reason, "key file is accessible to group or others");
                } else
                        ASSERT_ERROR(kek_load(NULL, path, key, NULL, &reason), error);
                ASSERT_TRUE(unlink(path) == 0);
        }
}

TEST(kek_file_must_be_ours_and_regular) {
        const char *good = test_path("good"), *link = test_path("link"), *dir = test_path("dir");
        const char *fifo = test_path("fifo"), *theirs = test_path("theirs"), *reason = NULL;
        uint8_t key[KEK_SIZE];

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        put(good, sample_key, KEK_SIZE, 0600);
        ASSERT_OK(kek_load(NULL, good, key, NULL, NULL));

        CASE("symlink to a good file");
        ASSERT_TRUE(symlink(good, link) == 0);
        ASSERT_ERROR(kek_load(NULL, link, key, NULL, &reason), EPERM);
        ASSERT_STREQ(reason, "key file is a symbolic link");

        CASE("directory");
        ASSERT_TRUE(mkdir(dir, 0700) == 0);
        ASSERT_ERROR(kek_load(NULL, dir, key, NULL, &reason), EPERM);
        ASSERT_STREQ(reason, "key file is not a regular file");

        CASE("fifo");
        ASSERT_TRUE(mkfifo(fifo, 0600) == 0);
        ASSERT_ERROR(kek_load(NULL, fifo, key, NULL, &reason), EPERM);
        ASSERT_STREQ(reason, "key file is not a regular file");

        CASE("owned by nobody");
        if (geteuid() != 0)
                test_skip("needs root to chown a file to nobody");
        put(theirs, sample_key, KEK_SIZE, 0600);
        ASSERT_TRUE(chown(theirs, NOBODY_UID, NOBODY_UID) == 0);
        ASSERT_ERROR(kek_load(NULL, theirs, key, NULL, &reason), EPERM);
        ASSERT_STREQ(reason, "key file is owned by another user");
        /* Group ownership does not matter, only the owner and the mode. */
        ASSERT_TRUE(chown(theirs, 0, NOBODY_UID) == 0);
        ASSERT_OK(kek_load(NULL, theirs, key, NULL, NULL));
        ASSERT_MEMEQ(key, sample_key, KEK_SIZE);
}

TEST(kek_generate_file_creates_a_private_key) {
        const char *path = test_path("kek"), *second = test_path("kek2");
        uint8_t key[KEK_SIZE], key2[KEK_SIZE];
        bool from_credential = true;
        struct stat st;
        char *data;
        size_t size;

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        /* The mode is set explicitly, whatever the umask would have allowed. */
        umask(0);
        ASSERT_OK(kek_generate_file(path));
        ASSERT_TRUE(lstat(path, &st) == 0);
        ASSERT_TRUE(S_ISREG(st.st_mode));
        ASSERT_EQ(st.st_mode & 07777, 0600);
        ASSERT_EQ(st.st_uid, geteuid());
        ASSERT_UEQ(st.st_size, KEK_SIZE);

        data = test_read_file(path, &size);
        ASSERT_UEQ(size, KEK_SIZE);
        ASSERT_OK(kek_load(NULL, path, key, &from_credential, NULL));
        ASSERT_FALSE(from_credential);
        ASSERT_MEMEQ(key, data, KEK_SIZE);

        ASSERT_OK(kek_generate_file(second));
        ASSERT_OK(kek_load(NULL, second, key2, NULL, NULL));
        ASSERT_TRUE(memcmp(key, key2, KEK_SIZE) != 0);
}

TEST(kek_generate_file_refuses_to_clobber) {
        const char *path = test_path("kek"), *dangling = test_path("dangling");
        uint8_t before[KEK_SIZE], after[KEK_SIZE];

        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_OK(kek_generate_file(path));
        ASSERT_OK(kek_load(NULL, path, before, NULL, NULL));
        ASSERT_ERROR(kek_generate_file(path), EEXIST);
        ASSERT_OK(kek_load(NULL, path, after, NULL, NULL));
        ASSERT_MEMEQ(before, after, KEK_SIZE);

        CASE("dangling symlink");
        ASSERT_TRUE(symlink(test_path("nowhere"), dangling) == 0);
        ASSERT_ERROR(kek_generate_file(dangling), EEXIST);
        ASSERT_TRUE(access(test_path("nowhere"), F_OK) < 0);

        CASE("directory");
        ASSERT_ERROR(kek_generate_file(test_tmpdir()), EEXIST);

        CASE("missing parent");
        ASSERT_ERROR(kek_generate_file(test_path("no/such/dir/kek")), ENOENT);
}

TEST(no_key_material_in_errors) {
        /* The sample key with one character added or changed: every failure path gets content that is
         * almost a key. */
        static const char *const contents[] = {
                SAMPLE_HEX "x",
                "x" SAMPLE_HEX,
                SAMPLE_HEX "\r\n",
                "deadbeef0123456789abcdeffedcba98765432100f1e2d3c4b5a69788796a5bX",
        };
        const char *dir, *out, *file = test_path("kek");

        dir = creds_setup();
        capture_begin();
        for (size_t i = 0; i < ELEMENTSOF(contents); i++) {
                const char *reason = NULL;
                uint8_t key[KEK_SIZE];

                CASE("'%s'", contents[i]);
                ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", dir, 1) == 0);
                put_credential(dir, "ztna.kek", contents[i], strlen(contents[i]));
                ASSERT_ERROR(kek_load(NULL, NULL, key, NULL, &reason), EBADMSG);
                ASSERT_FALSE(strstr(reason, "dead") || strstr(reason, "DEAD"));

                ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
                put(file, contents[i], strlen(contents[i]), 0644);
                ASSERT_ERROR(kek_load(NULL, file, key, NULL, &reason), EPERM);
                ASSERT_TRUE(chmod(file, 0600) == 0);
                ASSERT_ERROR(kek_load(NULL, file, key, NULL, &reason), EBADMSG);
                ASSERT_FALSE(strstr(reason, "dead") || strstr(reason, "DEAD"));
                ASSERT_TRUE(unlink(file) == 0);
        }
        out = test_capture_stderr_end();
        /* Debug logging was on: the failures were logged, without the key in any spelling. */
        ASSERT_STRSTR(out, "Failed to load the key-encryption key");
        ASSERT_FALSE(strstr(out, "dead") || strstr(out, "DEAD") || memmem(out, strlen(out), sample_key, 4));
}
