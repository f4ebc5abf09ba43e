/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* Our own CODE_FILE/CODE_LINE/CODE_FUNC are the caller's; without this, sd_journal_sendv() is a macro that
 * adds log.c's as well, and every entry carries two of each. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "log.h"

/* Longest formatted message; longer ones are cut, never refused. */
#define LOG_MESSAGE_MAX 4096
/* Most extra structured fields one entry may carry. */
#define LOG_FIELDS_MAX 32

static int max_level = LOG_INFO;
static int target_journal = -1; /* -1: decide from JOURNAL_STREAM on first use */

void log_set_max_level(int level) {
        max_level = CLAMP(level, LOG_EMERG, LOG_DEBUG);
}

int log_get_max_level(void) {
        return max_level;
}

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",  [LOG_ALERT] = "alert", [LOG_CRIT] = "crit", [LOG_ERR] = "err",
        [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

int log_level_from_string(const char *s) {
        if (isempty(s))
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (streq(s, level_names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        return -EINVAL;
}

void log_parse_environment(void) {
        const char *e = getenv("ZTNA_LOG_LEVEL") ?: getenv("SYSTEMD_LOG_LEVEL");
        int l;

        if (e) {
                l = log_level_from_string(e);
                if (l < 0)
                        log_warning("Invalid log level '%s' in the environment, ignoring.", e);
                else
                        log_set_max_level(l);
        }

        e = getenv("ZTNA_LOG_TARGET") ?: getenv("SYSTEMD_LOG_TARGET");
        if (e) {
                if (streq(e, "journal"))
                        log_set_target_journal(1);
                else if (streq(e, "console") || streq(e, "stderr"))
                        log_set_target_journal(0);
                else if (streq(e, "auto"))
                        log_set_target_journal(-1);
                else
                        log_warning("Invalid log target '%s' in the environment, ignoring.", e);
        }
}

/* stderr is the journal when JOURNAL_STREAM=<dev>:<ino> names the very file stderr points to. */
static int stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        uintmax_t dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%ju:%ju", &dev, &ino) != 2)
                return 0;
        if (fstat(STDERR_FILENO, &st) < 0)
                return 0;
        return (uintmax_t) st.st_dev == dev && (uintmax_t) st.st_ino == ino;
}

void log_set_target_journal(int journal) {
        target_journal = journal < 0 ? -1 : !!journal;
}

int log_target_is_journal(void) {
        if (target_journal < 0)
                target_journal = stderr_is_journal();
        return target_journal;
}

static int log_dispatch(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, size_t n_fields, const char *message) {
        if (n_fields > LOG_FIELDS_MAX)
                n_fields = LOG_FIELDS_MAX;

        if (log_target_is_journal()) {
                char prio[STRLEN("PRIORITY=") + 4], cline[STRLEN("CODE_LINE=") + 16],
                        errnostr[STRLEN("ERRNO=") + 16];
                _cleanup_free_ char *msg = NULL, *cfile = NULL, *cfunc = NULL;
                struct iovec iov[6 + LOG_FIELDS_MAX];
                size_t n = 0;

                if (asprintf(&msg, "MESSAGE=%s", message) < 0 || asprintf(&cfile, "CODE_FILE=%s", file) < 0 ||
                    asprintf(&cfunc, "CODE_FUNC=%s", func) < 0)
                        goto fallback;
                snprintf(prio, sizeof(prio), "PRIORITY=%i", level);
                snprintf(cline, sizeof(cline), "CODE_LINE=%i", line);

                iov[n++] = (struct iovec) { msg, strlen(msg) };
                iov[n++] = (struct iovec) { prio, strlen(prio) };
                iov[n++] = (struct iovec) { cfile, strlen(cfile) };
                iov[n++] = (struct iovec) { cline, strlen(cline) };
                iov[n++] = (struct iovec) { cfunc, strlen(cfunc) };
                if (error != 0) {
                        snprintf(errnostr, sizeof(errnostr), "ERRNO=%i", ERRNO_VALUE(error));
                        iov[n++] = (struct iovec) { errnostr, strlen(errnostr) };
                }
                for (size_t i = 0; i < n_fields; i++)
                        if (fields[i] && strchr(fields[i], '='))
                                iov[n++] = (struct iovec) { (char *) fields[i], strlen(fields[i]) };

                if (sd_journal_sendv(iov, (int) n) >= 0)
                        return 0;
        }

fallback:
        fputs(message, stderr);
        if (n_fields > 0) {
                fputs(" [", stderr);
                for (size_t i = 0; i < n_fields; i++)
                        fprintf(stderr, "%s%s", i > 0 ? " " : "", strna(fields[i]));
                fputc(']', stderr);
        }
        fputc('\n', stderr);
        return 0;
}

static int log_format_and_dispatch(int level, int error, const char *file, int line, const char *func,
                                   const char *const *fields, size_t n_fields, const char *format, va_list ap) {
        char buf[LOG_MESSAGE_MAX];
        int saved = errno;

        /* So that %m prints the error we were given, not whatever errno happens to hold. */
        errno = ERRNO_VALUE(error);
        (void) vsnprintf(buf, sizeof(buf), format, ap);
        (void) log_dispatch(level, error, file, line, func, fields, n_fields, buf);
        errno = saved;

        return -ERRNO_VALUE(error ?: EIO);
}

int log_internalv(int level, int error, const char *file, int line, const char *func, const char *format,
                  va_list ap) {
        if (level > max_level)
                return -ERRNO_VALUE(error ?: EIO);
        return log_format_and_dispatch(level, error, file, line, func, NULL, 0, format, ap);
}

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...) {
        va_list ap;
        int r;

        va_start(ap, format);
        r = log_internalv(level, error, file, line, func, format, ap);
        va_end(ap);
        return r;
}

int log_struct_internal(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, size_t n_fields, const char *format, ...) {
        va_list ap;
        int r;

        if (level > max_level)
                return -ERRNO_VALUE(error ?: EIO);

        va_start(ap, format);
        r = log_format_and_dispatch(level, error, file, line, func, fields, n_fields, format, ap);
        va_end(ap);
        return r;
}
