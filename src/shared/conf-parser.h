/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* INI configuration with systemd semantics, on top of inih: <confdir>/<name>.conf, then drop-ins
 * <confdir>/<name>.conf.d/<file>.conf in strcmp() order, later settings overriding earlier ones. A table of
 * {section, key, parser, offset} maps each setting to a field of the caller's struct.
 *
 * Syntax. We pre-scan every line and hand inih only plain "Key=Value" lines, so the result does not depend
 * on inih's multi-line, BOM, no-value or stop-on-first-error settings (Debian's libinih 55: INI_MAX_LINE 200
 * on the stack, inline comments with ';', multi-line on, stop-on-first-error off, no line numbers):
 *   - "[Section]" on a line of its own; "Key=Value"; lines starting with '#' or ';' are comments; blank
 *     lines are ignored; whitespace around lines, keys and values is dropped; a UTF-8 BOM is skipped.
 *   - Section and key names are case-sensitive, like systemd. Keys are [A-Za-z0-9_.-]+. Settings before
 *     the first header are in section "" (and warn as unknown unless the table lists that section).
 *   - A ';' preceded by whitespace starts an inline comment ("Port=443 ; TLS" is "443"), as Debian's
 *     inih does (INI_ALLOW_INLINE_COMMENTS=1, prefix ";"); '#' inside a value is kept.
 *   - No "Key: Value" form, no multi-line values (an indented line is just another line), no quoting.
 *   - inih reads lines into a fixed buffer (INI_MAX_LINE, 200 bytes on Debian, truncating silently and
 *     parsing the rest as a new line); we hand it only lines that fit and refuse longer "Key=Value" lines
 *     with a warning instead. A long list can be split over several lines of a config_parse_strv() key.
 *
 * The parser is a boundary and logs itself, always with file:line:
 *   - unknown section or key: "Unknown key 'K' in section [S], ignoring."
 *   - a value its parser refuses (callback < 0): "Failed to parse K= value 'V', ignoring: %m"; the field
 *     keeps its previous value. Callbacks must leave the field untouched when they fail.
 *   - a line that is not a section, setting, comment or blank, a bad section header, an overlong line, a
 *     line with control characters: a warning, and the line (for a bad header: the whole section) is
 *     skipped.
 * Parsing always continues after such errors; only running out of memory stops it (-ENOMEM). Cross-field
 * checks are the caller's job, after parsing. */

#include <stddef.h>
#include <stdint.h>

/* Largest configuration file read, main file and drop-ins alike. */
#define CONFIG_FILE_SIZE_MAX (1024U * 1024U)
/* Most drop-ins in one .conf.d/ directory; more is an error, not silently cut. */
#define CONFIG_DROPINS_MAX 128U
/* Longest section name. */
#define CONFIG_SECTION_MAX 64U
/* Most entries config_parse_strv() collects in one list, across all files. */
#define CONFIG_STRV_MAX 256U

typedef int (*ConfigParserCallback)(const char *filename, unsigned line, const char *section,
                                    const char *key, const char *value, void *data, void *userdata);

/* Tables end with an entry whose key is NULL ({}). data = (uint8_t *) base + offset. */
typedef struct ConfigTableItem {
        const char *section;
        const char *key;
        ConfigParserCallback parse;
        size_t offset;
} ConfigTableItem;

/* Parses size bytes of buf (no NUL needed; NUL bytes inside make their line invalid). filename (NULL:
 * "(buffer)") is used in messages only. Returns the number of lines or settings that were ignored with a
 * warning (0 when everything applied), or a negative errno: -EFBIG above CONFIG_FILE_SIZE_MAX, -ENOMEM. */
int config_parse_buffer(const char *filename, const char *buf, size_t size, const ConfigTableItem *table,
                        void *base, void *userdata);
/* Reads path (a regular file, at most CONFIG_FILE_SIZE_MAX) and parses it. A missing or unreadable file is
 * an error, logged with the path. */
int config_parse_file(const char *path, const ConfigTableItem *table, void *base, void *userdata);
/* <confdir>/<name>.conf, then <confdir>/<name>.conf.d/<file>.conf in strcmp() order (NULL confdir:
 * ZTNA_CONFDIR). A missing main file or drop-in directory is fine; a file that exists but cannot be
 * read, or more than CONFIG_DROPINS_MAX drop-ins (-E2BIG), is an error. Drop-ins whose name starts with
 * '.' or does not end in ".conf", and entries that are not regular files (after following symlinks), are
 * skipped. Returns the total number of ignored lines, or a negative errno (already logged). */
int config_parse_standard(const char *confdir, const char *name, const ConfigTableItem *table, void *base,
                          void *userdata);

#define CONFIG_PARSER_PROTOTYPE(name)                                                                  \
        int name(const char *filename, unsigned line, const char *section, const char *key,           \
                 const char *value, void *data, void *userdata)

/* Stock callbacks. On failure they return a negative errno and leave *data untouched. */
CONFIG_PARSER_PROTOTYPE(config_parse_string);     /* char **: replaces (frees the old one); empty → NULL;
                                                     control characters → -EINVAL */
CONFIG_PARSER_PROTOTYPE(config_parse_bool);       /* bool *: parse_boolean() */
CONFIG_PARSER_PROTOTYPE(config_parse_sec);        /* usec_t *: parse_sec() */
CONFIG_PARSER_PROTOTYPE(config_parse_size);       /* uint64_t *: parse_size() */
CONFIG_PARSER_PROTOTYPE(config_parse_unsigned);   /* unsigned *: safe_atou() */
CONFIG_PARSER_PROTOTYPE(config_parse_uint16);     /* uint16_t *: 0–65535 */
CONFIG_PARSER_PROTOTYPE(config_parse_port);       /* uint16_t *: parse_port(), 1–65535 */
CONFIG_PARSER_PROTOTYPE(config_parse_host_port);  /* HostPort *: parse_host_port() with the port
                                                     required; empty → unset (host "", port 0) */
CONFIG_PARSER_PROTOTYPE(config_parse_strv);       /* char ***: whitespace-separated words appended;
                                                     empty → the list is emptied (NULL); more than
                                                     CONFIG_STRV_MAX in all → -E2BIG */
CONFIG_PARSER_PROTOTYPE(config_parse_log_level);  /* int *: log_level_from_string() */
