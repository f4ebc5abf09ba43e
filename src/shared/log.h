/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Logging. When stderr is connected to the journal (JOURNAL_STREAM names our stderr) entries go
 * through sd-journal as structured records with PRIORITY, CODE_FILE, CODE_LINE, CODE_FUNC, ERRNO and
 * any extra FIELD=value pairs; otherwise one plain line per message on stderr.
 *
 * What each level means in ztna:
 *   LOG_EMERG, LOG_ALERT  not used.
 *   LOG_CRIT     the daemon cannot continue (e.g. its identity is corrupt) and is exiting.
 *   LOG_ERR      an operation the user or a peer asked for failed; the daemon goes on.
 *   LOG_WARNING  something is degraded or unsafe but works (no keyring, key file without credential).
 *   LOG_NOTICE   a security-relevant event that succeeded (enrollment, revocation, rotation, login).
 *   LOG_INFO     normal state changes (connected, ready, renewed, stopped).
 *   LOG_DEBUG    detail for developers; helpers in src/shared and src/crypto log only here.
 *
 * Functions return the negative errno passed in (or -EIO for 0), so a boundary can write
 *   return log_error_errno(r, "Failed to load identity '%s': %m", path);
 * where %m prints the error given. Secrets are never passed to these functions. */

#include <stdarg.h>
#include <syslog.h>

#include "macro.h"

void log_set_max_level(int level);
int log_get_max_level(void);
/* Parses "debug", "info", …, or a number 0–7; returns the level or -EINVAL. */
int log_level_from_string(const char *s);
/* Reads ZTNA_LOG_LEVEL (or SYSTEMD_LOG_LEVEL) and ZTNA_LOG_TARGET (or SYSTEMD_LOG_TARGET: journal, console,
 * auto) from the environment; bad values are ignored with a warning. */
void log_parse_environment(void);
/* Forces the target: 1 journal, 0 stderr, -1 automatic from JOURNAL_STREAM (the default). */
void log_set_target_journal(int journal);
/* Whether entries currently go to the journal. */
int log_target_is_journal(void);

int log_internal(int level, int error, const char *file, int line, const char *func, const char *format, ...)
        _printf_(6, 7);
int log_internalv(int level, int error, const char *file, int line, const char *func, const char *format,
                  va_list ap) _printf_(6, 0);

/* Structured entry: fields is an array of n "FIELD=value" strings (e.g. MESSAGE_ID=…, ZTNA_AGENT=…)
 * sent alongside MESSAGE. On stderr they are appended to the line in brackets. */
int log_struct_internal(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, size_t n_fields, const char *format, ...) _printf_(8, 9);

#define log_full_errno(level, error, ...)                                                         \
        ({                                                                                        \
                int _level = (level), _e = (error);                                               \
                (log_get_max_level() >= _level)                                                   \
                        ? log_internal(_level, _e, __FILE__, __LINE__, __func__, __VA_ARGS__)     \
                        : -ERRNO_VALUE(_e ?: EIO);                                                \
        })

#define log_full(level, ...) ((void) log_full_errno(level, 0, __VA_ARGS__))

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)
#define log_crit(...) log_full(LOG_CRIT, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_notice_errno(error, ...) log_full_errno(LOG_NOTICE, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, error, __VA_ARGS__)
#define log_crit_errno(error, ...) log_full_errno(LOG_CRIT, error, __VA_ARGS__)

/* log_struct(LOG_NOTICE, 0, fields, n, "Enrolled '%s'", id) */
#define log_struct_errno(level, error, fields, n_fields, ...)                                          \
        log_struct_internal(level, error, __FILE__, __LINE__, __func__, fields, n_fields, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
