/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <dirent.h>
#include <limits.h>
#include <ini.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "config.h"
#include "conf-parser.h"
#include "fileio.h"
#include "log.h"
#include "parse-util.h"
#include "string-util.h"
#include "strv.h"

/* What counts as whitespace around lines, keys and values: the same set inih strips (isspace()). */
#define CONFIG_WHITESPACE " \t\n\r\v\f"

typedef struct ConfigParser {
        const char *filename;
        const char *buf;
        size_t size, pos;
        unsigned line;

        char section[CONFIG_SECTION_MAX + 1];
        bool section_valid; /* false after a bad header: its settings are skipped */

        const ConfigTableItem *table;
        void *base;
        void *userdata;

        unsigned n_ignored;
        int error; /* fatal (-ENOMEM): the reader reports EOF so that inih stops */
} ConfigParser;

static bool is_ws(char c) {
        return c != '\0' && strchr(CONFIG_WHITESPACE, c);
}

static void trim(const char **s, size_t *n) {
        while (*n > 0 && is_ws(**s)) {
                (*s)++;
                (*n)--;
        }
        while (*n > 0 && is_ws((*s)[*n - 1]))
                (*n)--;
}

static bool key_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("_.-", c));
}

static bool has_control(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];

                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return true;
        }
        return false;
}

static void parser_ignore(ConfigParser *p) {
        if (p->n_ignored < UINT_MAX)
                p->n_ignored++;
}

/* "[Name]": sets the current section, or marks it invalid so that its settings are skipped (they cannot be
 * meant for whichever section came before). */
static void parse_section(ConfigParser *p, const char *s, size_t n) {
        const char *name = s + 1;
        size_t k = n - 1;

        if (k > 0 && s[n - 1] == ']') {
                k--;
                trim(&name, &k);
                if (k > 0 && k <= CONFIG_SECTION_MAX && !memchr(name, '[', k) && !memchr(name, ']', k)) {
                        memcpy(p->section, name, k);
                        p->section[k] = '\0';
                        p->section_valid = true;
                        return;
                }
        }

        log_warning("%s:%u: Invalid section header, ignoring the section.", p->filename, p->line);
        parser_ignore(p);
        p->section[0] = '\0';
        p->section_valid = false;
}

/* Classifies one line (without its newline) and, for a valid setting, writes "Key=Value\n" into str for
 * inih. Anything else becomes an empty line, so that inih's line count stays ours. */
static void prepare_line(ConfigParser *p, const char *s, size_t n, char *str, int num) {
        const char *eq, *key, *value;
        size_t klen, vlen, need;

        strcpy(str, "\n");

        if (p->line == 1 && n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
                s += 3;
                n -= 3;
        }
        trim(&s, &n);
        if (n == 0 || s[0] == '#' || s[0] == ';')
                return;

        if (has_control(s, n)) {
                log_warning("%s:%u: Line contains control characters or NUL bytes, ignoring.", p->filename,
                            p->line);
                parser_ignore(p);
                return;
        }

        if (s[0] == '[') {
                parse_section(p, s, n);
                return;
        }

        eq = memchr(s, '=', n);
        if (!eq) {
                log_warning("%s:%u: Line is not a [Section] or Key=Value, ignoring.", p->filename, p->line);
                parser_ignore(p);
                return;
        }

        key = s;
        klen = (size_t) (eq - s);
        trim(&key, &klen);
        for (size_t i = 0; i < klen; i++)
                if (!key_char(key[i])) {
                        klen = 0;
                        break;
                }
        if (klen == 0) {
                log_warning("%s:%u: Missing or invalid key name before '=', ignoring.", p->filename,
                            p->line);
                parser_ignore(p);
                return;
        }

        if (!p->section_valid)
                return; /* already warned about at the header */

        value = eq + 1;
        vlen = n - (size_t) (value - s);
        /* Inline comment: ';' after whitespace, as inih would cut it; done here so the result does not
         * depend on how inih was built. */
        for (size_t i = 1; i < vlen; i++)
                if (value[i] == ';' && is_ws(value[i - 1])) {
                        vlen = i;
                        break;
                }
        trim(&value, &vlen);

        need = klen + 1 + vlen + 2; /* '=', '\n', NUL */
        if (need > (size_t) num) {
                log_warning("%s:%u: Line too long (%zu bytes of Key=Value, at most %i), ignoring.",
                            p->filename, p->line, klen + 1 + vlen, num - 2);
                parser_ignore(p);
                return;
        }

        memcpy(str, key, klen);
        str[klen] = '=';
        memcpy(str + klen + 1, value, vlen);
        str[klen + 1 + vlen] = '\n';
        str[klen + 1 + vlen + 1] = '\0';
}

/* inih's fgets()-style reader: exactly one physical line per call. */
static char *config_reader(char *str, int num, void *stream) {
        ConfigParser *p = stream;
        const char *s, *nl;
        size_t n;

        if (p->error < 0 || p->pos >= p->size)
                return NULL;
        if (num < 2) {
                p->error = -ENOBUFS;
                return NULL;
        }

        s = p->buf + p->pos;
        nl = memchr(s, '\n', p->size - p->pos);
        n = nl ? (size_t) (nl - s) : p->size - p->pos;
        p->pos += n + (nl ? 1 : 0);
        if (p->line < UINT_MAX)
                p->line++;

        prepare_line(p, s, n, str, num);
        return str;
}

static const ConfigTableItem *table_find(const ConfigTableItem *table, const char *section,
                                         const char *key) {
        for (const ConfigTableItem *t = table; t->key; t++)
                if (streq(t->section, section) && streq(t->key, key))
                        return t;
        return NULL;
}

static int config_handler(void *user, const char *section_ignored, const char *key, const char *value) {
        ConfigParser *p = user;
        const ConfigTableItem *t;
        int r;

        /* inih never sees our section headers; the section is tracked in prepare_line(). */
        t = table_find(p->table, p->section, key);
        if (!t) {
                log_warning("%s:%u: Unknown key '%s' in section [%s], ignoring.", p->filename, p->line, key,
                            p->section);
                parser_ignore(p);
                return 1;
        }

        r = t->parse(p->filename, p->line, p->section, key, value, (uint8_t *) p->base + t->offset,
                     p->userdata);
        if (r == -ENOMEM) {
                p->error = r;
                return 1;
        }
        if (r < 0) {
                log_warning_errno(r, "%s:%u: Failed to parse %s= value '%s', ignoring: %m", p->filename,
                                  p->line, key, value);
                parser_ignore(p);
        }
        return 1;
}

int config_parse_buffer(const char *filename, const char *buf, size_t size, const ConfigTableItem *table,
                        void *base, void *userdata) {
        ConfigParser p = {
                .filename = filename ?: "(buffer)",
                .buf = buf,
                .size = size,
                .section_valid = true,
                .table = table,
                .base = base,
                .userdata = userdata,
        };
        int r;

        assert(buf || size == 0);
        assert(table);
        assert(base);

        if (size > CONFIG_FILE_SIZE_MAX)
                return log_error_errno(EFBIG, "%s: Configuration larger than %u bytes, refusing.",
                                       p.filename, CONFIG_FILE_SIZE_MAX);

        r = ini_parse_stream(config_reader, &p, config_handler, &p);
        if (p.error == -ENOMEM || r == -2)
                return log_oom();
        if (p.error < 0)
                return log_error_errno(p.error, "%s: Failed to parse configuration: %m", p.filename);
        if (r < 0)
                return log_error_errno(EIO, "%s: Failed to parse configuration.", p.filename);
        if (r > 0) {
                /* Not reached with the lines we hand over; kept so that a different inih cannot make an
                 * error pass silently. */
                log_warning("%s:%i: Syntax error, ignoring line.", p.filename, r);
                parser_ignore(&p);
        }
        return (int) MIN(p.n_ignored, (unsigned) INT_MAX);
}

static int config_parse_file_internal(const char *path, bool missing_ok, const ConfigTableItem *table,
                                      void *base, void *userdata) {
        _cleanup_free_ char *buf = NULL;
        size_t size;
        int r;

        assert(path);

        r = read_full_file(path, CONFIG_FILE_SIZE_MAX, &buf, &size);
        if (r == -ENOENT && missing_ok) {
                log_debug("Configuration file '%s' does not exist, skipping.", path);
                return 0;
        }
        if (r == -EFBIG)
                return log_error_errno(r, "Configuration file '%s' is larger than %u bytes, refusing.", path,
                                       CONFIG_FILE_SIZE_MAX);
        if (r < 0)
                return log_error_errno(r, "Failed to read configuration file '%s': %m", path);

        log_debug("Parsing configuration file '%s'.", path);
        return config_parse_buffer(path, buf, size, table, base, userdata);
}

int config_parse_file(const char *path, const ConfigTableItem *table, void *base, void *userdata) {
        return config_parse_file_internal(path, false, table, base, userdata);
}

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* The drop-in names in dir, sorted; an empty list if dir does not exist. */
static int dropins_list(const char *dir, char ***ret) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_strv_free_ char **names = NULL;
        size_t n = 0;

        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT) {
                        *ret = NULL;
                        return 0;
                }
                return log_error_errno(errno, "Failed to open drop-in directory '%s': %m", dir);
        }

        for (;;) {
                struct dirent *de;
                struct stat st;
                int r;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return log_error_errno(errno, "Failed to read drop-in directory '%s': %m",
                                                       dir);
                        break;
                }
                if (de->d_name[0] == '.' || !endswith(de->d_name, ".conf"))
                        continue;

                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
                        if (errno == ENOENT) { /* dangling symlink, or removed meanwhile */
                                log_debug("Drop-in '%s/%s' vanished or dangles, skipping.", dir, de->d_name);
                                continue;
                        }
                        return log_error_errno(errno, "Failed to stat drop-in '%s/%s': %m", dir, de->d_name);
                }
                if (!S_ISREG(st.st_mode)) {
                        log_debug("Drop-in '%s/%s' is not a regular file, skipping.", dir, de->d_name);
                        continue;
                }

                if (n >= CONFIG_DROPINS_MAX)
                        return log_error_errno(E2BIG, "More than %u drop-ins in '%s', refusing.",
                                               CONFIG_DROPINS_MAX, dir);
                r = strv_extend(&names, de->d_name);
                if (r < 0)
                        return log_oom();
                n++;
        }

        *ret = strv_sort(TAKE_PTR(names));
        return 0;
}

static bool config_name_is_valid(const char *name) {
        return !isempty(name) && name[0] != '.' && !strchr(name, '/') && string_is_printable_ascii(name) &&
               strlen(name) <= 128;
}

int config_parse_standard(const char *confdir, const char *name, const ConfigTableItem *table, void *base,
                          void *userdata) {
        _cleanup_free_ char *main_path = NULL, *dropin_dir = NULL;
        _cleanup_strv_free_ char **dropins = NULL;
        unsigned total = 0;
        int r;

        assert(table);
        assert(base);

        if (!confdir)
                confdir = ZTNA_CONFDIR;
        if (!config_name_is_valid(name))
                return log_error_errno(EINVAL, "Invalid configuration name '%s'.", strna(name));

        main_path = strjoin(confdir, "/", name, ".conf", NULL);
        dropin_dir = strjoin(confdir, "/", name, ".conf.d", NULL);
        if (!main_path || !dropin_dir)
                return log_oom();

        r = config_parse_file_internal(main_path, true, table, base, userdata);
        if (r < 0)
                return r;
        total += (unsigned) r;

        r = dropins_list(dropin_dir, &dropins);
        if (r < 0)
                return r;

        STRV_FOREACH(f, dropins) {
                _cleanup_free_ char *path = NULL;

                path = strjoin(dropin_dir, "/", *f, NULL);
                if (!path)
                        return log_oom();
                r = config_parse_file_internal(path, true, table, base, userdata);
                if (r < 0)
                        return r;
                total += (unsigned) r;
        }

        return (int) MIN(total, (unsigned) INT_MAX);
}

CONFIG_PARSER_PROTOTYPE(config_parse_string) {
        char **s = data;

        assert(s);
        assert(value);

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        if (string_has_cc(value, NULL))
                return -EINVAL;
        return free_and_strdup(s, value) < 0 ? -ENOMEM : 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_bool) {
        bool *b = data;
        int r;

        assert(b);

        r = parse_boolean(value);
        if (r < 0)
                return r;
        *b = r;
        return 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_sec) {
        assert(data);

        return parse_sec(value, data);
}

CONFIG_PARSER_PROTOTYPE(config_parse_size) {
        assert(data);

        return parse_size(value, data);
}

CONFIG_PARSER_PROTOTYPE(config_parse_unsigned) {
        assert(data);

        return safe_atou(value, data);
}

CONFIG_PARSER_PROTOTYPE(config_parse_uint16) {
        uint16_t *u = data;
        unsigned v;
        int r;

        assert(u);

        r = safe_atou(value, &v);
        if (r < 0)
                return r;
        if (v > UINT16_MAX)
                return -ERANGE;
        *u = (uint16_t) v;
        return 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_port) {
        assert(data);

        return parse_port(value, data);
}

CONFIG_PARSER_PROTOTYPE(config_parse_host_port) {
        HostPort *hp = data;

        assert(hp);

        if (isempty(value)) {
                *hp = (HostPort) { .family = AF_UNSPEC };
                return 0;
        }
        return parse_host_port(value, 0, hp);
}

CONFIG_PARSER_PROTOTYPE(config_parse_strv) {
        _cleanup_strv_free_ char **words = NULL;
        char ***l = data;
        size_t n_old, n_new;
        char **c;

        assert(l);
        assert(value);

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }
        if (string_has_cc(value, "\t"))
                return -EINVAL;

        words = strv_split(value, CONFIG_WHITESPACE);
        if (!words)
                return -ENOMEM;
        n_old = strv_length(*l);
        n_new = strv_length(words);
        if (n_new > CONFIG_STRV_MAX || n_old > CONFIG_STRV_MAX - n_new)
                return -E2BIG;

        /* One allocation, then move the words over: a failure leaves the old list as it was. */
        c = realloc(*l, sizeof(char *) * (n_old + n_new + 1));
        if (!c)
                return -ENOMEM;
        memcpy(c + n_old, words, sizeof(char *) * (n_new + 1));
        *l = c;
        words = mfree(words);
        return 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_log_level) {
        int *level = data;
        int r;

        assert(level);

        r = log_level_from_string(value);
        if (r < 0)
                return r;
        *level = r;
        return 0;
}
