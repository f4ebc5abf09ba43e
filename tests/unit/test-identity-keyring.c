/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <keyutils.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "identity-keyring.h"
#include "macro.h"
#include "tests.h"

static const char secret_text[] = "correct horse battery staple";

/* A kernel-mode secret, or a skipped case when this environment refuses keyctl. */
static KeyringSecret *new_kernel_secret(const char *description, const void *data, size_t size) {
        KeyringSecret *s = NULL;
        int r;

        r = keyring_secret_new(description, data, size, 0, &s);
        ASSERT_OK(r);
        if (r == KEYRING_MODE_MEMORY) {
                int e = keyring_secret_kernel_error(s);

                keyring_secret_free(s);
                test_skip("kernel keyring refused here (%s); memory mode is tested separately",
                          strerror(-e));
        }
        ASSERT_EQ(r, KEYRING_MODE_KERNEL);
        return s;
}

static void assert_reads(const KeyringSecret *s, const void *data, size_t size) {
        uint8_t *buf = NULL;
        size_t n = 0;

        ASSERT_OK(keyring_secret_read(s, &buf, &n));
        ASSERT_UEQ(n, size);
        ASSERT_MEMEQ(buf, data, size);
        ASSERT_EQ(buf[n], 0);
        /* A copy: scribbling on it does not change the secret. */
        memset(buf, 'X', n);
        erase_and_free(buf, n + 1);
        ASSERT_OK(keyring_secret_read(s, &buf, &n));
        ASSERT_MEMEQ(buf, data, size);
        erase_and_free(buf, n + 1);
}

TEST(kernel_roundtrip) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;

        s = new_kernel_secret("ztna-test", secret_text, sizeof(secret_text) - 1);
        ASSERT_TRUE(keyring_secret_in_kernel(s));
        ASSERT_EQ(keyring_secret_kernel_error(s), 0);
        ASSERT_GT(keyring_secret_serial(s), 0);
        ASSERT_UEQ(keyring_secret_size(s), sizeof(secret_text) - 1);
        assert_reads(s, secret_text, sizeof(secret_text) - 1);
}

TEST(kernel_binary_and_largest) {
        static uint8_t big[KEYRING_SECRET_MAX];
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL, *t = NULL;
        uint8_t bin[] = { 0, 1, 0, 255, 0 };

        for (size_t k = 0; k < sizeof(big); k++)
                big[k] = (uint8_t) (k * 7 + 3);
        s = new_kernel_secret("ztna-bin", bin, sizeof(bin));
        assert_reads(s, bin, sizeof(bin));

        /* The largest size is accepted; it may exceed a non-root key quota and land in memory. */
        ASSERT_OK(keyring_secret_new("ztna-big", big, sizeof(big), 0, &t));
        assert_reads(t, big, sizeof(big));
}

TEST(kernel_permissions_possessor_only) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        _cleanup_free_ char *desc = NULL;
        char type[16], name[256];
        unsigned perm;
        int uid, gid;

        s = new_kernel_secret("ztna-perm", secret_text, sizeof(secret_text) - 1);
        ASSERT_GE(keyctl_describe_alloc(keyring_secret_serial(s), &desc), 0);
        /* "type;uid;gid;perm;description" */
        ASSERT_EQ(sscanf(desc, "%15[^;];%d;%d;%x;%255s", type, &uid, &gid, &perm, name), 5);
        ASSERT_STREQ(type, "user");
        ASSERT_EQ(perm, KEY_POS_ALL);
        /* Nothing for user, group or other. */
        ASSERT_EQ(perm & (KEY_USR_ALL | KEY_GRP_ALL | KEY_OTH_ALL), 0);
        ASSERT_TRUE(strncmp(name, "ztna-perm.", 10) == 0);
        ASSERT_UEQ(strlen(name), 10 + 16);
}

TEST(kernel_invalidated_after_free) {
        KeyringSecret *s;
        char buf[64];
        int serial;

        s = new_kernel_secret("ztna-free", secret_text, sizeof(secret_text) - 1);
        serial = keyring_secret_serial(s);
        ASSERT_EQ(keyctl_read(serial, buf, sizeof(buf)), (long) sizeof(secret_text) - 1);
        ASSERT_NULL(keyring_secret_free(s));
        errno = 0;
        ASSERT_TRUE(keyctl_read(serial, buf, sizeof(buf)) < 0);
        /* Invalidated: gone (ENOKEY), or, until the garbage collector runs, no longer possessed and
         * so unreadable under the possessor-only permissions (EACCES). */
        ASSERT_TRUE(errno == ENOKEY || errno == EACCES);
}

TEST(kernel_same_description_twice) {
        _cleanup_(keyring_secret_freep) KeyringSecret *a = NULL, *b = NULL;

        /* add_key() with an existing description would update that key; each secret keeps its own. */
        a = new_kernel_secret("ztna-twice", "first", 5);
        b = new_kernel_secret("ztna-twice", "second", 6);
        ASSERT_NE(keyring_secret_serial(a), keyring_secret_serial(b));
        assert_reads(a, "first", 5);
        assert_reads(b, "second", 6);
}

/* ASan turns mlock() into a no-op, so under it only the "dd" flag can be checked. */
#if defined(__SANITIZE_ADDRESS__)
#  define LOCK_FLAG ""
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define LOCK_FLAG ""
#  endif
#endif
#ifndef LOCK_FLAG
#  define LOCK_FLAG " lo"
#endif

/* Pages in mappings both locked ("lo") and excluded from core dumps ("dd"), per /proc/self/smaps
 * (adjacent such mappings merge, so pages are counted, not mappings). */
static unsigned locked_dontdump_mappings(void) {
        _cleanup_free_ char *line = NULL;
        unsigned long kb = 0, total = 0;
        size_t n = 0;
        FILE *f;

        f = fopen("/proc/self/smaps", "re");
        ASSERT_NOT_NULL(f);
        while (getline(&line, &n, f) > 0) {
                if (strncmp(line, "Size:", 5) == 0)
                        ASSERT_EQ(sscanf(line, "Size: %lu kB", &kb), 1);
                else if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, LOCK_FLAG) && strstr(line, " dd"))
                        total += kb;
        }
        fclose(f);
        return (unsigned) (total * 1024 / (unsigned long) sysconf(_SC_PAGESIZE));
}

TEST(memory_roundtrip) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        unsigned before = locked_dontdump_mappings();
        KeyringSecret *t = NULL;

        ASSERT_EQ(keyring_secret_new("ztna-mem", secret_text, sizeof(secret_text) - 1, KEYRING_FORCE_MEMORY,
                                     &s),
                  KEYRING_MODE_MEMORY);
        ASSERT_FALSE(keyring_secret_in_kernel(s));
        ASSERT_EQ(keyring_secret_kernel_error(s), 0);
        ASSERT_EQ(keyring_secret_lock_error(s), 0);
        ASSERT_EQ(keyring_secret_serial(s), -ENXIO);
        ASSERT_UEQ(keyring_secret_size(s), sizeof(secret_text) - 1);
        assert_reads(s, secret_text, sizeof(secret_text) - 1);

        /* The secret's page is locked and non-dumpable, and unmapped when freed. */
        ASSERT_EQ(locked_dontdump_mappings(), before + 1);
        ASSERT_EQ(keyring_secret_new("ztna-mem2", "x", 1, KEYRING_FORCE_MEMORY, &t), KEYRING_MODE_MEMORY);
        ASSERT_EQ(locked_dontdump_mappings(), before + 2);
        ASSERT_NULL(keyring_secret_free(t));
        ASSERT_EQ(locked_dontdump_mappings(), before + 1);
}

/* Where mlock() is refused (RLIMIT_MEMLOCK 0 for an unprivileged user here; a container's seccomp filter in
 * nspawn), the secret is still kept — non-dumpable, readable, unlocked — and the refusal is reported for the
 * caller's warning. (ASan makes mlock() a no-op that never fails: nothing to check there.) */
TEST(memory_unlockable) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        struct rlimit none = { 0, 0 };

        if (strcmp(LOCK_FLAG, "") == 0)
                test_skip("mlock() is a no-op under ASan");
        if (geteuid() == 0) {
                /* Root's CAP_IPC_LOCK ignores RLIMIT_MEMLOCK: be nobody (this case runs in its own child). */
                ASSERT_OK(setgroups(0, NULL));
                ASSERT_OK(setresgid(65534, 65534, 65534));
                ASSERT_OK(setresuid(65534, 65534, 65534));
        }
        ASSERT_OK(setrlimit(RLIMIT_MEMLOCK, &none));

        ASSERT_EQ(keyring_secret_new("ztna-unlocked", secret_text, sizeof(secret_text) - 1, KEYRING_FORCE_MEMORY,
                                     &s),
                  KEYRING_MODE_MEMORY);
        ASSERT_TRUE(keyring_secret_lock_error(s) == -EPERM || keyring_secret_lock_error(s) == -ENOMEM);
        assert_reads(s, secret_text, sizeof(secret_text) - 1);
}

TEST(memory_largest) {
        static uint8_t big[KEYRING_SECRET_MAX];
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;

        memset(big, 0xa5, sizeof(big));
        big[sizeof(big) - 1] = 0x11;
        ASSERT_EQ(keyring_secret_new("ztna-big", big, sizeof(big), KEYRING_FORCE_MEMORY, &s),
                  KEYRING_MODE_MEMORY);
        assert_reads(s, big, sizeof(big));
}

TEST(limits) {
        static uint8_t big[KEYRING_SECRET_MAX + 1];
        static const KeyringFlags flags[] = { 0, KEYRING_FORCE_MEMORY };
        char longest[KEYRING_DESCRIPTION_MAX + 2];
        static const struct {
                const char *description;
                size_t size;
                int error;
        } table[] = {
                { "ok", 0, EINVAL },
                { "ok", KEYRING_SECRET_MAX + 1, EFBIG },
                { "ok", SIZE_MAX, EFBIG },
                { "", 1, EINVAL },
                { NULL, 1, EINVAL },
                { "two words", 1, EINVAL },
                { "tab\there", 1, EINVAL },
                { "ctl\x01", 1, EINVAL },
                { "high\x80", 1, EINVAL },
                { "<longest+1>", 1, EINVAL },
        };

        memset(longest, 'd', sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';

        for (size_t f = 0; f < ELEMENTSOF(flags); f++)
                for (size_t k = 0; k < ELEMENTSOF(table); k++) {
                        KeyringSecret *s = (KeyringSecret *) 0x1;
                        const char *d = table[k].description;

                        CASE("flags %d, '%s', %zu", (int) flags[f], strna(d), table[k].size);
                        if (d && streq(d, "<longest+1>"))
                                d = longest;
                        ASSERT_ERROR(keyring_secret_new(d, big, table[k].size, flags[f], &s), table[k].error);
                        /* Untouched on failure. */
                        ASSERT_TRUE(s == (KeyringSecret *) 0x1);
                }

        /* The longest description is fine. */
        longest[KEYRING_DESCRIPTION_MAX] = '\0';
        for (size_t f = 0; f < ELEMENTSOF(flags); f++) {
                KeyringSecret *s = NULL;

                CASE("longest description, flags %d", (int) flags[f]);
                ASSERT_OK(keyring_secret_new(longest, "x", 1, flags[f], &s));
                assert_reads(s, "x", 1);
                keyring_secret_free(s);
        }
}

TEST(free_null) {
        ASSERT_NULL(keyring_secret_free(NULL));
        ASSERT_FALSE(keyring_secret_in_kernel(NULL));
        ASSERT_UEQ(keyring_secret_size(NULL), 0);
}

/* ---- lifetime: process keyring and timeout ---- */

static void write_exact(int fd, const void *p, size_t n) {
        ASSERT_EQ(write(fd, p, n), (ssize_t) n);
}

static void read_exact(int fd, void *p, size_t n) {
        ASSERT_EQ(read(fd, p, n), (ssize_t) n);
}

/* keyctl_read() of serial fails; returns its errno. */
static int read_errno(int serial) {
        char buf[64];

        errno = 0;
        ASSERT_TRUE(keyctl_read(serial, buf, sizeof(buf)) < 0);
        return errno;
}

/* A process that dies without freeing its secret leaves nothing in any keyring: the key was linked into
 * its process keyring only. While it lives, another process of the same user (the parent, which shares
 * the session keyring) cannot read it (EACCES: it exists but is not possessed); once it is dead the key is
 * garbage-collected (ENOKEY). A key in the session keyring would be readable by the parent throughout. */
TEST(kernel_key_dies_with_process) {
        int to_parent[2], to_child[2], serial = 0, status, e = 0;
        char go = 'x';
        pid_t pid;

        keyring_secret_free(new_kernel_secret("ztna-probe", "x", 1));
        ASSERT_OK(pipe2(to_parent, O_CLOEXEC));
        ASSERT_OK(pipe2(to_child, O_CLOEXEC));

        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                KeyringSecret *s = NULL;
                int r;

                /* Only the parent's ends stay open there, so either side sees EOF if the other dies. */
                close(to_parent[0]);
                close(to_child[1]);
                r = keyring_secret_new("ztna-crash", secret_text, sizeof(secret_text) - 1, 0, &s);
                serial = r == KEYRING_MODE_KERNEL ? keyring_secret_serial(s) : -1;
                if (write(to_parent[1], &serial, sizeof(serial)) != sizeof(serial))
                        _exit(2);
                /* Hold the key until the parent has looked, then die without freeing it. */
                if (read(to_child[0], &go, 1) != 1)
                        _exit(3);
                _exit(0);
        }

        close(to_parent[1]);
        close(to_child[0]);
        read_exact(to_parent[0], &serial, sizeof(serial));
        ASSERT_GT(serial, 0);
        ASSERT_EQ(read_errno(serial), EACCES);

        write_exact(to_child[1], &go, 1);
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);

        /* The kernel collects the dead process's keyring and its keys asynchronously, promptly. */
        for (unsigned k = 0; k < 500; k++) {
                e = read_errno(serial);
                if (e == ENOKEY)
                        break;
                ASSERT_EQ(e, EACCES);
                (void) usleep(10 * USEC_PER_MSEC);
        }
        ASSERT_EQ(e, ENOKEY);
        close(to_parent[0]);
        close(to_child[1]);
}

/* Whether keyring ring links serial (a keyring reads as its array of serials). */
static bool keyring_links(key_serial_t ring, key_serial_t serial) {
        void *list = NULL;
        bool found = false;
        long n;

        n = keyctl_read_alloc(ring, &list);
        ASSERT_GE(n, 0);
        for (long k = 0; k < n / (long) sizeof(key_serial_t); k++)
                if (((key_serial_t *) list)[k] == serial)
                        found = true;
        free(list);
        return found;
}

/* The key is in the process keyring, not the session keyring. */
TEST(kernel_key_in_process_keyring) {
        _cleanup_(keyring_secret_freep) KeyringSecret *s = NULL;
        key_serial_t process, session;

        s = new_kernel_secret("ztna-where", "x", 1);
        process = keyctl_get_keyring_ID(KEY_SPEC_PROCESS_KEYRING, 0);
        ASSERT_GT(process, 0);
        ASSERT_TRUE(keyring_links(process, keyring_secret_serial(s)));
        session = keyctl_get_keyring_ID(KEY_SPEC_SESSION_KEYRING, 0);
        if (session > 0)
                ASSERT_FALSE(keyring_links(session, keyring_secret_serial(s)));
}

static void sleep_usec(usec_t t) {
        struct timespec ts = { .tv_sec = (time_t) (t / USEC_PER_SEC),
                               .tv_nsec = (long) (t % USEC_PER_SEC) * 1000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

TEST(timeout_expires) {
        static const KeyringFlags flags[] = { 0, KEYRING_FORCE_MEMORY };
        KeyringSecret *s[ELEMENTSOF(flags)] = {};
        _cleanup_(keyring_secret_freep) KeyringSecret *forever = NULL;
        uint8_t *buf = NULL;
        size_t n = 0;

        /* 1 µs rounds up to a whole second: readable at once, expired after it. */
        for (size_t f = 0; f < ELEMENTSOF(flags); f++) {
                CASE("flags %d", (int) flags[f]);
                ASSERT_OK(keyring_secret_new_full("ztna-timeout", secret_text, sizeof(secret_text) - 1, flags[f],
                                                  1, &s[f]));
                assert_reads(s[f], secret_text, sizeof(secret_text) - 1);
        }
        ASSERT_OK(keyring_secret_new_full("ztna-forever", "x", 1, 0, USEC_INFINITY, &forever));

        sleep_usec(2100 * USEC_PER_MSEC);
        for (size_t f = 0; f < ELEMENTSOF(flags); f++) {
                CASE("flags %d, expired", (int) flags[f]);
                buf = (uint8_t *) 0x1;
                ASSERT_ERROR(keyring_secret_read(s[f], &buf, &n), EKEYEXPIRED);
                ASSERT_TRUE(buf == (uint8_t *) 0x1);
                s[f] = keyring_secret_free(s[f]);
        }
        assert_reads(forever, "x", 1);
}

TEST(timeout_limits) {
        static const KeyringFlags flags[] = { 0, KEYRING_FORCE_MEMORY };

        for (size_t f = 0; f < ELEMENTSOF(flags); f++) {
                KeyringSecret *s = (KeyringSecret *) 0x1;

                CASE("flags %d", (int) flags[f]);
                ASSERT_ERROR(keyring_secret_new_full("ztna-t", "x", 1, flags[f], KEYRING_TIMEOUT_MAX + 1, &s),
                             ERANGE);
                ASSERT_ERROR(keyring_secret_new_full("ztna-t", "x", 1, flags[f], USEC_INFINITY - 1, &s),
                             ERANGE);
                ASSERT_TRUE(s == (KeyringSecret *) 0x1);
                ASSERT_OK(keyring_secret_new_full("ztna-t", "x", 1, flags[f], KEYRING_TIMEOUT_MAX, &s));
                assert_reads(s, "x", 1);
                keyring_secret_free(s);
        }
}
