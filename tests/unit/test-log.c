/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "tests.h"

/* Redirects stderr into a file for the duration of a case and returns what was written. */
TEST(errno_is_returned_negative) {
        log_set_target_journal(0);
        ASSERT_EQ(log_error_errno(ENOENT, "x"), -ENOENT);
        ASSERT_EQ(log_error_errno(-ENOENT, "x"), -ENOENT);
        /* 0 is not an error: callers that pass it still get a failure, never "success". */
        ASSERT_EQ(log_error_errno(0, "x"), -EIO);
        /* Filtered-out levels return the same value. */
        log_set_max_level(LOG_ERR);
        ASSERT_EQ(log_debug_errno(EACCES, "x"), -EACCES);
}

TEST(percent_m_prints_the_given_error) {
        const char *out;

        log_set_target_journal(0);
        log_set_max_level(LOG_DEBUG);
        errno = EPERM;
        test_capture_stderr_begin();
        (void) log_error_errno(ENOENT, "Failed to load identity '%s': %m", "/x");
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "Failed to load identity '/x': No such file or directory\n");
        /* errno is preserved for the caller. */
        ASSERT_EQ(errno, EPERM);
}

TEST(max_level_filters) {
        const char *out;

        log_set_target_journal(0);
        log_set_max_level(LOG_WARNING);
        test_capture_stderr_begin();
        log_info("hidden-info");
        log_debug("hidden-debug");
        log_warning("shown-warning");
        out = test_capture_stderr_end();
        ASSERT_TRUE(strstr(out, "hidden") == NULL);
        ASSERT_STRSTR(out, "shown-warning");
}

TEST(structured_fields_on_stderr) {
        const char *fields[] = { "MESSAGE_ID=4f1bd2b8c1e04a2a9c6f7d6e0b1a2c3d", "ZTNA_AGENT=conn-1" };
        const char *out;

        log_set_target_journal(0);
        log_set_max_level(LOG_INFO);
        test_capture_stderr_begin();
        ASSERT_EQ(log_struct_errno(LOG_NOTICE, 0, fields, ELEMENTSOF(fields), "Enrolled '%s'", "conn-1"), -EIO);
        out = test_capture_stderr_end();
        ASSERT_STREQ(out, "Enrolled 'conn-1' [MESSAGE_ID=4f1bd2b8c1e04a2a9c6f7d6e0b1a2c3d ZTNA_AGENT=conn-1]\n");
}

TEST(long_messages_are_cut_not_refused) {
        char big[10000];
        const char *out;

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        log_set_target_journal(0);
        log_set_max_level(LOG_INFO);
        test_capture_stderr_begin();
        log_error("%s", big);
        out = test_capture_stderr_end();
        ASSERT_GT(strlen(out), 1000);
        ASSERT_LT(strlen(out), 5000);
}

TEST(level_from_string) {
        static const struct {
                const char *s;
                int level;
        } table[] = {
                { "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "notice", LOG_NOTICE },
                { "warning", LOG_WARNING }, { "err", LOG_ERR }, { "error", LOG_ERR },
                { "crit", LOG_CRIT }, { "7", LOG_DEBUG }, { "0", LOG_EMERG },
                { "", -EINVAL }, { "8", -EINVAL }, { "verbose", -EINVAL }, { "66", -EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                CASE("%s", table[i].s);
                ASSERT_EQ(log_level_from_string(table[i].s), table[i].level);
        }
        ASSERT_EQ(log_level_from_string(NULL), -EINVAL);
}

TEST(environment_level) {
        log_set_max_level(LOG_INFO);
        setenv("ZTNA_LOG_LEVEL", "debug", 1);
        log_parse_environment();
        ASSERT_EQ(log_get_max_level(), LOG_DEBUG);
        setenv("ZTNA_LOG_LEVEL", "bogus", 1);
        log_set_target_journal(0);
        test_capture_stderr_begin();
        log_parse_environment();
        ASSERT_STRSTR(test_capture_stderr_end(), "Invalid log level 'bogus'");
        ASSERT_EQ(log_get_max_level(), LOG_DEBUG);
}

TEST(journal_stream_detection) {
        char path[512], env[64];
        struct stat st;
        int fd;

        /* stderr is the journal only when JOURNAL_STREAM names the file stderr really is. */
        snprintf(path, sizeof(path), "%s/fake-journal", test_tmpdir());
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(dup2(fd, STDERR_FILENO) >= 0);
        ASSERT_TRUE(fstat(fd, &st) == 0);

        snprintf(env, sizeof(env), "%ju:%ju", (uintmax_t) st.st_dev, (uintmax_t) st.st_ino);
        setenv("JOURNAL_STREAM", env, 1);
        log_set_target_journal(-1);
        ASSERT_TRUE(log_target_is_journal());

        snprintf(env, sizeof(env), "%ju:%ju", (uintmax_t) st.st_dev, (uintmax_t) st.st_ino + 1);
        setenv("JOURNAL_STREAM", env, 1);
        log_set_target_journal(-1);
        ASSERT_FALSE(log_target_is_journal());

        setenv("JOURNAL_STREAM", "garbage", 1);
        log_set_target_journal(-1);
        ASSERT_FALSE(log_target_is_journal());
        close(fd);
}

TEST(environment_target) {
        unsetenv("ZTNA_LOG_LEVEL");
        unsetenv("JOURNAL_STREAM");
        setenv("ZTNA_LOG_TARGET", "journal", 1);
        log_parse_environment();
        ASSERT_TRUE(log_target_is_journal());
        setenv("ZTNA_LOG_TARGET", "console", 1);
        log_parse_environment();
        ASSERT_FALSE(log_target_is_journal());
        setenv("ZTNA_LOG_TARGET", "journal", 1);
        log_parse_environment();
        setenv("ZTNA_LOG_TARGET", "auto", 1); /* back to JOURNAL_STREAM, which is unset: stderr */
        log_parse_environment();
        ASSERT_FALSE(log_target_is_journal());

        setenv("ZTNA_LOG_TARGET", "syslog", 1);
        test_capture_stderr_begin();
        log_parse_environment();
        ASSERT_STRSTR(test_capture_stderr_end(), "Invalid log target 'syslog'");
        ASSERT_FALSE(log_target_is_journal());
}
