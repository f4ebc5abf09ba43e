/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf-parser.h"
#include "log.h"
#include "parse-util.h"
#include "strv.h"
#include "tests.h"

/* The pattern a daemon follows: a struct with defaults, a table, parsing, then cross-field checks. */
typedef struct Sample {
        char *name;
        bool enabled;
        int log_level;
        char **groups;
        HostPort controller;
        uint16_t port;
        uint16_t mtu;
        usec_t timeout;
        uint64_t max_size;
        unsigned workers;
} Sample;

static const ConfigTableItem sample_table[] = {
        { "Main", "Name", config_parse_string, offsetof(Sample, name) },
        { "Main", "Enabled", config_parse_bool, offsetof(Sample, enabled) },
        { "Main", "LogLevel", config_parse_log_level, offsetof(Sample, log_level) },
        { "Main", "Groups", config_parse_strv, offsetof(Sample, groups) },
        { "Network", "Controller", config_parse_host_port, offsetof(Sample, controller) },
        { "Network", "Port", config_parse_port, offsetof(Sample, port) },
        { "Network", "MTU", config_parse_uint16, offsetof(Sample, mtu) },
        { "Network", "Timeout", config_parse_sec, offsetof(Sample, timeout) },
        { "Limits", "MaxSize", config_parse_size, offsetof(Sample, max_size) },
        { "Limits", "Workers", config_parse_unsigned, offsetof(Sample, workers) },
        {}
};

static void sample_init(Sample *s) {
        *s = (Sample) {
                .enabled = true,
                .log_level = LOG_INFO,
                .port = 443,
                .mtu = 1400,
                .timeout = 30 * USEC_PER_SEC,
                .max_size = 1024 * 1024,
                .workers = 4,
        };
}

static void sample_done(Sample *s) {
        free(s->name);
        strv_free(s->groups);
}

/* Cross-field rules: only checkable once every file has been read. */
static int sample_check(const Sample *s) {
        if (s->enabled && s->controller.host[0] == '\0')
                return -ENOTCONN; /* Enabled=yes needs Controller= */
        if (s->timeout < USEC_PER_SEC || s->timeout == USEC_INFINITY)
                return -ERANGE;
        if (s->mtu < 576)
                return -ERANGE;
        if (s->workers == 0 || s->workers > 64)
                return -ERANGE;
        return 0;
}

static void capture_begin(void) {
        log_set_target_journal(0);
        log_set_max_level(LOG_INFO);
        test_capture_stderr_begin();
}

static size_t count_lines(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

static int parse_string(const char *text, Sample *s) {
        return config_parse_buffer("test.conf", text, strlen(text), sample_table, s, NULL);
}

static char *path_in(const char *name) {
        static char buf[4][512];
        static unsigned i;
        char *p = buf[i++ % ELEMENTSOF(buf)];

        snprintf(p, sizeof(buf[0]), "%s/%s", test_tmpdir(), name);
        return p;
}

static void put(const char *name, const char *content) {
        int fd = open(path_in(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        ASSERT_TRUE(fd >= 0);
        ASSERT_EQ(write(fd, content, strlen(content)), (ssize_t) strlen(content));
        close(fd);
}

TEST(every_stock_callback) {
        static const char text[] =
                "# A full configuration\n"
                "[Main]\n"
                "Name=gateway-1\n"
                "Enabled=no\n"
                "LogLevel=debug\n"
                "Groups=ops dev\n"
                "Groups=\tsre \n"
                "\n"
                "[Network]\n"
                "Controller=[2001:db8::1]:8443\n"
                "Port=9443\n"
                "MTU=1280\n"
                "Timeout=1min 30s\n"
                "[Limits]\n"
                "MaxSize=1.5M\n"
                "Workers=16\n";
        _cleanup_free_ char *groups = NULL;
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 0);
        out = test_capture_stderr_end();
        ASSERT_STREQ(out, "");

        ASSERT_STREQ(s.name, "gateway-1");
        ASSERT_FALSE(s.enabled);
        ASSERT_EQ(s.log_level, LOG_DEBUG);
        groups = strv_join(s.groups, ",");
        ASSERT_STREQ(groups, "ops,dev,sre");
        ASSERT_STREQ(s.controller.host, "2001:db8::1");
        ASSERT_EQ(s.controller.port, 8443);
        ASSERT_EQ(s.controller.family, AF_INET6);
        ASSERT_EQ(s.port, 9443);
        ASSERT_EQ(s.mtu, 1280);
        ASSERT_UEQ(s.timeout, 90 * USEC_PER_SEC);
        ASSERT_UEQ(s.max_size, 1572864);
        ASSERT_EQ(s.workers, 16);
        ASSERT_OK(sample_check(&s));
        sample_done(&s);
}

TEST(defaults_stay) {
        Sample s;

        sample_init(&s);
        ASSERT_EQ(parse_string("[Main]\n# nothing set\n", &s), 0);
        ASSERT_NULL(s.name);
        ASSERT_TRUE(s.enabled);
        ASSERT_EQ(s.port, 443);
        ASSERT_UEQ(s.timeout, 30 * USEC_PER_SEC);
        ASSERT_EQ(s.workers, 4);
        ASSERT_EQ(config_parse_buffer("empty", NULL, 0, sample_table, &s, NULL), 0);
        /* Defaults alone fail the cross-field check: Enabled=yes needs a controller. */
        ASSERT_ERROR(sample_check(&s), ENOTCONN);
        sample_done(&s);
}

TEST(unknown_keys_and_sections_warn_with_file_and_line) {
        static const char text[] =
                "[Main]\n"
                "Name=a\n"
                "Colour=blue\n"     /* 3 */
                "name=lower\n"      /* 4: keys are case-sensitive */
                "[Nowhere]\n"
                "Name=b\n"          /* 6 */
                "[main]\n"
                "Name=c\n"          /* 8: sections too */
                "[Main]\n"
                "Enabled=off\n";
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 4);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "test.conf:3: Unknown key 'Colour' in section [Main], ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:4: Unknown key 'name' in section [Main], ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:6: Unknown key 'Name' in section [Nowhere], ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:8: Unknown key 'Name' in section [main], ignoring.\n");
        ASSERT_EQ(count_lines(out), 4);
        /* Parsing went on past every one of them. */
        ASSERT_STREQ(s.name, "a");
        ASSERT_FALSE(s.enabled);
        sample_done(&s);
}

TEST(keys_before_any_section) {
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string("Name=x\n[Main]\nName=y\n", &s), 1);
        out = test_capture_stderr_end();
        ASSERT_STREQ(out, "test.conf:1: Unknown key 'Name' in section [], ignoring.\n");
        ASSERT_STREQ(s.name, "y");
        sample_done(&s);
}

TEST(bad_values_keep_the_previous_value) {
        static const struct {
                const char *section, *key, *value;
                int error;
        } table[] = {
                { "Network", "Port", "0", ERANGE },
                { "Network", "Port", "https", EINVAL },
                { "Network", "MTU", "65536", ERANGE },
                { "Network", "Timeout", "5 parsecs", EINVAL },
                { "Network", "Controller", "::1:80", EINVAL },
                { "Network", "Controller", "example.org", EINVAL }, /* no default port */
                { "Main", "Enabled", "maybe", EINVAL },
                { "Main", "LogLevel", "loud", EINVAL },
                { "Limits", "MaxSize", "1.5", EINVAL },
                { "Limits", "Workers", "-1", ERANGE },
                { "Limits", "Workers", "", EINVAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char text[256], message[256];
                Sample s;

                CASE("%s=%s", table[i].key, table[i].value);
                snprintf(text, sizeof(text), "[%s]\n%s=%s", table[i].section, table[i].key, table[i].value);
                snprintf(message, sizeof(message),
                         "test.conf:2: Failed to parse %s= value '%s', ignoring: %s\n", table[i].key,
                         table[i].value, strerror(table[i].error));
                sample_init(&s);
                s.controller = (HostPort) { .host = "ctl.example", .port = 1, .family = AF_UNSPEC };
                capture_begin();
                ASSERT_EQ(parse_string(text, &s), 1);
                ASSERT_STREQ(test_capture_stderr_end(), message);
                ASSERT_EQ(s.port, 443);
                ASSERT_EQ(s.mtu, 1400);
                ASSERT_UEQ(s.timeout, 30 * USEC_PER_SEC);
                ASSERT_STREQ(s.controller.host, "ctl.example");
                ASSERT_EQ(s.controller.port, 1);
                ASSERT_TRUE(s.enabled);
                ASSERT_EQ(s.log_level, LOG_INFO);
                ASSERT_UEQ(s.max_size, 1024 * 1024);
                ASSERT_EQ(s.workers, 4);
                sample_done(&s);
        }
}

TEST(syntax_errors_warn_and_continue) {
        static const char text[] =
                "[Main]\n"
                "just some words\n"     /* 2 */
                "Name: colon\n"         /* 3: no "Key: Value" form */
                "=novalue\n"            /* 4 */
                "Bad Key=1\n"           /* 5 */
                "a:b=c\n"               /* 6 */
                "[Network\n"            /* 7: the whole section is skipped */
                "Port=1\n"
                "[]\n"                  /* 9 */
                "Port=2\n"
                "[Network] trailing\n"  /* 11 */
                "Port=3\n"
                "[Network]\n"
                "Port=4\n";
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 8);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "test.conf:2: Line is not a [Section] or Key=Value, ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:3: Line is not a [Section] or Key=Value, ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:4: Missing or invalid key name before '=', ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:5: Missing or invalid key name before '=', ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:6: Missing or invalid key name before '=', ignoring.\n");
        ASSERT_STRSTR(out, "test.conf:7: Invalid section header, ignoring the section.\n");
        ASSERT_STRSTR(out, "test.conf:9: Invalid section header, ignoring the section.\n");
        ASSERT_STRSTR(out, "test.conf:11: Invalid section header, ignoring the section.\n");
        ASSERT_EQ(count_lines(out), 8);
        /* Settings under a bad header are not applied to the section before it, nor anywhere else. */
        ASSERT_EQ(s.port, 4);
        ASSERT_NULL(s.name);
        sample_done(&s);
}

TEST(section_name_length) {
        char text[256];
        Sample s;

        sample_init(&s);
        capture_begin();
        snprintf(text, sizeof(text), "[%064d]\nName=a\n[%065d]\nName=b\n", 0, 0);
        ASSERT_EQ(parse_string(text, &s), 2);
        /* 64 characters are a section (just not ours); 65 are refused. */
        ASSERT_STREQ(test_capture_stderr_end(),
                     "test.conf:2: Unknown key 'Name' in section "
                     "[0000000000000000000000000000000000000000000000000000000000000000], ignoring.\n"
                     "test.conf:3: Invalid section header, ignoring the section.\n");
        ASSERT_NULL(s.name);
        sample_done(&s);
}

TEST(comments_whitespace_and_inline_comments) {
        static const char text[] =
                "\xef\xbb\xbf# BOM, then a comment\n"
                "; another comment\n"
                "   [Main]   \r\n"
                "  Name  =   spaced value   \r\n"
                "\t\tGroups = a#b c;d  ; inline comment\n"
                "Enabled=yes;no\n"
                "[Network]\n"
                "    Port=8443\n" /* indented: a setting of its own, not a continuation */
                "Timeout = 10s ;;\n"
                "MTU=9000 # not a comment\n";
        _cleanup_free_ char *groups = NULL;
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 2);
        out = test_capture_stderr_end();
        ASSERT_STREQ(s.name, "spaced value");
        groups = strv_join(s.groups, "|");
        ASSERT_STREQ(groups, "a#b|c;d");
        ASSERT_EQ(s.port, 8443);
        ASSERT_UEQ(s.timeout, 10 * USEC_PER_SEC);
        /* ';' without whitespace before it and '#' are part of the value. */
        ASSERT_STRSTR(out, "test.conf:6: Failed to parse Enabled= value 'yes;no', ignoring: "
                           "Invalid argument\n");
        ASSERT_STRSTR(out, "test.conf:10: Failed to parse MTU= value '9000 # not a comment', ignoring: "
                           "Invalid argument\n");
        sample_done(&s);
}

TEST(overlong_lines_are_refused_not_truncated) {
        char text[1024], value[256];
        const char *out;
        Sample s;

        /* Raw inih would read the first 199 bytes as Name=xxx… and the rest, "Workers=99", as a line
         * of its own: a setting nobody wrote. */
        memset(value, 'x', 194);
        value[194] = '\0';
        snprintf(text, sizeof(text), "[Main]\nName=%sWorkers=99\n[Limits]\nMaxSize=2K\n", value);
        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 1);
        out = test_capture_stderr_end();
        ASSERT_STREQ(out, "test.conf:2: Line too long (209 bytes of Key=Value, at most 198), ignoring.\n");
        ASSERT_NULL(s.name);
        ASSERT_EQ(s.workers, 4);
        ASSERT_UEQ(s.max_size, 2048);
        sample_done(&s);
}

TEST(longest_line_that_fits) {
        char text[1024], value[256];
        Sample s;

        /* Debian's inih: INI_MAX_LINE 200, so "Key=Value" may be 198 bytes (plus '\n' and NUL). */
        memset(value, 'v', 193);
        value[193] = '\0';
        snprintf(text, sizeof(text), "[Main]\nName=%s\n", value);
        ASSERT_EQ(strlen(text) - strlen("[Main]\n") - 1, 198);
        sample_init(&s);
        ASSERT_EQ(parse_string(text, &s), 0);
        ASSERT_STREQ(s.name, value);

        /* Whitespace around the value does not count: it is stripped before inih sees the line. */
        snprintf(text, sizeof(text), "[Main]\nName  =     %s          \n", "short");
        ASSERT_EQ(parse_string(text, &s), 0);
        ASSERT_STREQ(s.name, "short");

        memset(value, 'w', 194);
        value[194] = '\0';
        snprintf(text, sizeof(text), "[Main]\nName=%s\n", value);
        capture_begin();
        ASSERT_EQ(parse_string(text, &s), 1);
        ASSERT_STRSTR(test_capture_stderr_end(), "test.conf:2: Line too long (199 bytes of Key=Value, at most 198)");
        ASSERT_STREQ(s.name, "short");
        sample_done(&s);
}

TEST(control_characters_and_nul) {
        static const char text[] = "[Main]\nName=a\x1b[31mb\nName=ok\nGroups=x\ty\n"
                                   "[Limits]\nWorkers=1\0\nWorkers=2\n";
        _cleanup_free_ char *groups = NULL;
        const char *out;
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(config_parse_buffer("bin.conf", text, sizeof(text) - 1, sample_table, &s, NULL), 2);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "bin.conf:2: Line contains control characters or NUL bytes, ignoring.\n");
        ASSERT_STRSTR(out, "bin.conf:6: Line contains control characters or NUL bytes, ignoring.\n");
        ASSERT_EQ(count_lines(out), 2);
        /* The escape sequence never reaches the log. */
        ASSERT_TRUE(strchr(out, '\x1b') == NULL);
        ASSERT_STREQ(s.name, "ok");
        ASSERT_EQ(s.workers, 2);
        /* A tab is whitespace, not a control character. */
        groups = strv_join(s.groups, ",");
        ASSERT_STREQ(groups, "x,y");
        sample_done(&s);
}

TEST(later_settings_win_and_empty_resets) {
        static const char text[] =
                "[Main]\n"
                "Name=first\n"
                "Name=second\n"
                "Groups=a b\n"
                "Groups=\n"
                "Groups=c\n"
                "[Network]\n"
                "Controller=10.0.0.1:80\n"
                "Controller=\n";
        Sample s;

        sample_init(&s);
        ASSERT_EQ(parse_string(text, &s), 0);
        ASSERT_STREQ(s.name, "second");
        ASSERT_EQ(strv_length(s.groups), 1);
        ASSERT_STREQ(s.groups[0], "c");
        ASSERT_STREQ(s.controller.host, "");
        ASSERT_EQ(s.controller.port, 0);
        ASSERT_EQ(s.controller.family, AF_UNSPEC);

        ASSERT_EQ(parse_string("[Main]\nName=\n", &s), 0);
        ASSERT_NULL(s.name);
        sample_done(&s);
}

TEST(strv_maximum) {
        _cleanup_free_ char *line = NULL;
        const char *out;
        unsigned n = 0;
        Sample s;

        /* 256 words in lines of 32, then one more: the last one is refused, the list stays. */
        line = ASSERT_NOT_NULL(strdup("[Main]\n"));
        for (unsigned i = 0; i < CONFIG_STRV_MAX / 32; i++) {
                char words[256] = "Groups=";

                for (unsigned k = 0; k < 32; k++)
                        snprintf(words + strlen(words), sizeof(words) - strlen(words), "g%u ", n++);
                strcat(words, "\n");
                line = ASSERT_NOT_NULL(realloc(line, strlen(line) + strlen(words) + 1));
                strcat(line, words);
        }
        line = ASSERT_NOT_NULL(realloc(line, strlen(line) + 64));
        strcat(line, "Groups=one-too-many\n");

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(parse_string(line, &s), 1);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "test.conf:10: Failed to parse Groups= value 'one-too-many', ignoring: "
                           "Argument list too long\n");
        ASSERT_EQ(strv_length(s.groups), CONFIG_STRV_MAX);
        ASSERT_STREQ(s.groups[CONFIG_STRV_MAX - 1], "g255");
        sample_done(&s);
}

TEST(stock_callbacks_directly) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *str = NULL;
        HostPort hp = { .host = "keep", .port = 9 };
        uint16_t u16 = 7;
        int level = 3;

        ASSERT_OK(config_parse_string("f", 1, "S", "K", "value", &str, NULL));
        ASSERT_STREQ(str, "value");
        /* Control characters would end up in logs and file names: refused, old value kept. */
        ASSERT_ERROR(config_parse_string("f", 1, "S", "K", "a\nb", &str, NULL), EINVAL);
        ASSERT_STREQ(str, "value");
        ASSERT_OK(config_parse_string("f", 1, "S", "K", "", &str, NULL));
        ASSERT_NULL(str);

        ASSERT_OK(config_parse_uint16("f", 1, "S", "K", "0", &u16, NULL));
        ASSERT_EQ(u16, 0);
        ASSERT_OK(config_parse_uint16("f", 1, "S", "K", "65535", &u16, NULL));
        ASSERT_EQ(u16, 65535);
        ASSERT_ERROR(config_parse_port("f", 1, "S", "K", "0", &u16, NULL), ERANGE);
        ASSERT_EQ(u16, 65535);

        ASSERT_ERROR(config_parse_host_port("f", 1, "S", "K", "[fe80::1%eth0]:80", &hp, NULL), EINVAL);
        ASSERT_STREQ(hp.host, "keep");
        ASSERT_OK(config_parse_host_port("f", 1, "S", "K", "Example.ORG:80", &hp, NULL));
        ASSERT_STREQ(hp.host, "example.org");

        ASSERT_OK(config_parse_log_level("f", 1, "S", "K", "warning", &level, NULL));
        ASSERT_EQ(level, LOG_WARNING);
        ASSERT_OK(config_parse_log_level("f", 1, "S", "K", "7", &level, NULL));
        ASSERT_EQ(level, LOG_DEBUG);

        ASSERT_ERROR(config_parse_strv("f", 1, "S", "K", "a\x01", &l, NULL), EINVAL);
        ASSERT_NULL(l);
        ASSERT_OK(config_parse_strv("f", 1, "S", "K", "  a   b ", &l, NULL));
        ASSERT_EQ(strv_length(l), 2);
}

static int parse_oom(const char *filename, unsigned line, const char *section, const char *key,
                     const char *value, void *data, void *userdata) {
        unsigned *calls = userdata;

        (*calls)++;
        return -ENOMEM;
}

static int parse_record(const char *filename, unsigned line, const char *section, const char *key,
                        const char *value, void *data, void *userdata) {
        char *buf = data;

        snprintf(buf, 128, "%s|%u|%s|%s|%s", filename, line, section, key, value);
        return 0;
}

TEST(callback_arguments_and_fatal_errors) {
        static const ConfigTableItem table[] = {
                { "S", "Rec", parse_record, 0 },
                { "S", "Oom", parse_oom, 0 },
                {}
        };
        const char *a = "\n[S]\n  Rec =  v a l  \n", *b = "[S]\nOom=1\nOom=2\nRec=x\n";
        char rec[128] = "";
        unsigned calls = 0;

        ASSERT_EQ(config_parse_buffer("cb.conf", a, strlen(a), table, rec, &calls), 0);
        ASSERT_STREQ(rec, "cb.conf|3|S|Rec|v a l");

        /* Out of memory is not "a bad value": parsing stops and the error is returned. */
        rec[0] = '\0';
        log_set_max_level(LOG_CRIT);
        ASSERT_ERROR(config_parse_buffer("cb.conf", b, strlen(b), table, rec, &calls), ENOMEM);
        ASSERT_EQ(calls, 1);
        ASSERT_STREQ(rec, "");
}

TEST(buffer_size_limit) {
        _cleanup_free_ char *big = NULL;
        Sample s;

        big = ASSERT_NOT_NULL(malloc(CONFIG_FILE_SIZE_MAX + 1));
        memset(big, '\n', CONFIG_FILE_SIZE_MAX + 1);
        sample_init(&s);
        capture_begin();
        ASSERT_ERROR(config_parse_buffer("big.conf", big, CONFIG_FILE_SIZE_MAX + 1, sample_table, &s, NULL),
                     EFBIG);
        ASSERT_STRSTR(test_capture_stderr_end(), "big.conf: Configuration larger than 1048576 bytes, refusing.");
        ASSERT_EQ(config_parse_buffer("big.conf", big, CONFIG_FILE_SIZE_MAX, sample_table, &s, NULL), 0);
        sample_done(&s);
}

TEST(parse_file) {
        const char *out;
        Sample s;

        put("one.conf", "[Main]\nName=from-file\nBogus=1\n");
        sample_init(&s);
        capture_begin();
        ASSERT_EQ(config_parse_file(path_in("one.conf"), sample_table, &s, NULL), 1);
        ASSERT_ERROR(config_parse_file(path_in("missing.conf"), sample_table, &s, NULL), ENOENT);
        out = test_capture_stderr_end();
        ASSERT_STREQ(s.name, "from-file");
        /* Messages name the real path. */
        ASSERT_STRSTR(out, "/one.conf:3: Unknown key 'Bogus' in section [Main], ignoring.\n");
        ASSERT_STRSTR(out, "Failed to read configuration file '");
        ASSERT_STRSTR(out, "/missing.conf': No such file or directory\n");
        sample_done(&s);
}

TEST(standard_main_and_dropins_in_order) {
        _cleanup_free_ char *groups = NULL;
        const char *out;
        Sample s;

        put("agent.conf", "[Main]\nName=main\nGroups=base\n"
                          "[Network]\nController=ctl.example:443\nPort=1000\nTimeout=1min\n");
        ASSERT_TRUE(mkdir(path_in("agent.conf.d"), 0755) == 0);
        /* strcmp order: "10-" < "20-" < "9-". */
        put("agent.conf.d/9-last.conf", "[Network]\nPort=9999\n");
        put("agent.conf.d/20-mid.conf", "[Main]\nName=mid\nGroups=twenty\n[Network]\nPort=2000\nTypo=1\n");
        put("agent.conf.d/10-first.conf", "[Main]\nName=first\nGroups=ten\n[Network]\nTimeout=5s\n");
        /* Not drop-ins: wrong suffix, hidden, not regular. */
        put("agent.conf.d/30-ignored.conf.bak", "[Main]\nName=bak\n");
        put("agent.conf.d/README", "[Main]\nName=readme\n");
        put("agent.conf.d/.99-hidden.conf", "[Main]\nName=hidden\n");
        ASSERT_TRUE(mkdir(path_in("agent.conf.d/50-dir.conf"), 0755) == 0);
        ASSERT_TRUE(mkfifo(path_in("agent.conf.d/60-fifo.conf"), 0644) == 0);
        ASSERT_TRUE(symlink("/nonexistent/x.conf", path_in("agent.conf.d/70-dangling.conf")) == 0);
        /* A symlink to a regular file counts. */
        put("elsewhere.txt", "[Limits]\nWorkers=12\n");
        ASSERT_TRUE(symlink("../elsewhere.txt", path_in("agent.conf.d/80-link.conf")) == 0);

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), 1);
        out = test_capture_stderr_end();
        ASSERT_STREQ(s.name, "mid");
        ASSERT_EQ(s.port, 9999);
        ASSERT_UEQ(s.timeout, 5 * USEC_PER_SEC);
        ASSERT_EQ(s.workers, 12);
        ASSERT_STREQ(s.controller.host, "ctl.example");
        /* Lists accumulate across files, in the same order. */
        groups = strv_join(s.groups, ",");
        ASSERT_STREQ(groups, "base,ten,twenty");
        ASSERT_STRSTR(out, "/agent.conf.d/20-mid.conf:6: Unknown key 'Typo' in section [Network], "
                           "ignoring.\n");
        ASSERT_EQ(count_lines(out), 1);
        ASSERT_OK(sample_check(&s));
        sample_done(&s);
}

TEST(standard_dropins_without_main_file) {
        Sample s;

        ASSERT_TRUE(mkdir(path_in("agent.conf.d"), 0755) == 0);
        put("agent.conf.d/override.conf", "[Main]\nEnabled=false\n");
        sample_init(&s);
        ASSERT_EQ(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), 0);
        ASSERT_FALSE(s.enabled);
        /* Enabled=false lifts the controller requirement. */
        ASSERT_OK(sample_check(&s));
        sample_done(&s);
}

TEST(standard_nothing_there) {
        Sample s;

        sample_init(&s);
        capture_begin();
        ASSERT_EQ(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), 0);
        ASSERT_EQ(config_parse_standard(path_in("no-such-dir"), "agent", sample_table, &s, NULL), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");
        ASSERT_EQ(s.port, 443);
        ASSERT_NULL(s.name);
        sample_done(&s);
}

TEST(standard_cross_field_check_after_dropin) {
        Sample s;

        /* Each file is fine on its own; together they break a rule that only the caller can see. */
        put("agent.conf", "[Network]\nController=ctl.example:443\nTimeout=10s\n");
        ASSERT_TRUE(mkdir(path_in("agent.conf.d"), 0755) == 0);
        put("agent.conf.d/fast.conf", "[Network]\nTimeout=500ms\n");
        sample_init(&s);
        ASSERT_EQ(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), 0);
        ASSERT_UEQ(s.timeout, 500 * USEC_PER_MSEC);
        ASSERT_ERROR(sample_check(&s), ERANGE);
        sample_done(&s);
}

TEST(standard_unreadable_files_are_errors) {
        static const struct {
                const char *what;
                int error;
        } table[] = {
                { "main is a directory", EISDIR },
                { "main is a symlink loop", ELOOP },
                { "drop-in is a symlink loop", ELOOP },
                { "main too big", EFBIG },
                { "drop-in dir is a file", ENOTDIR },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char dir[600], p[700], q[700];
                const char *out;
                Sample s;

                CASE("%s", table[i].what);
                snprintf(dir, sizeof(dir), "%s/case%zu", test_tmpdir(), i);
                ASSERT_TRUE(mkdir(dir, 0755) == 0);
                snprintf(p, sizeof(p), "%s/agent.conf", dir);
                snprintf(q, sizeof(q), "%s/agent.conf.d", dir);
                switch (i) {
                case 0:
                        ASSERT_TRUE(mkdir(p, 0755) == 0);
                        break;
                case 1:
                        ASSERT_TRUE(symlink("agent.conf", p) == 0);
                        break;
                case 2:
                        ASSERT_TRUE(mkdir(q, 0755) == 0);
                        snprintf(q, sizeof(q), "%s/agent.conf.d/loop.conf", dir);
                        ASSERT_TRUE(symlink("loop.conf", q) == 0);
                        break;
                case 3: {
                        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

                        ASSERT_TRUE(fd >= 0);
                        ASSERT_TRUE(ftruncate(fd, CONFIG_FILE_SIZE_MAX + 1) == 0);
                        close(fd);
                        break;
                }
                case 4: {
                        int fd = open(q, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

                        ASSERT_TRUE(fd >= 0);
                        close(fd);
                        break;
                }
                }

                sample_init(&s);
                capture_begin();
                ASSERT_ERROR(config_parse_standard(dir, "agent", sample_table, &s, NULL), table[i].error);
                out = test_capture_stderr_end();
                /* The error names the file. */
                ASSERT_STRSTR(out, dir);
                sample_done(&s);
        }
}

TEST(standard_too_many_dropins) {
        char name[64];
        Sample s;

        ASSERT_TRUE(mkdir(path_in("agent.conf.d"), 0755) == 0);
        for (unsigned i = 0; i < CONFIG_DROPINS_MAX; i++) {
                snprintf(name, sizeof(name), "agent.conf.d/%03u.conf", i);
                put(name, "[Limits]\nWorkers=2\n");
        }
        /* Names that are skipped do not count. */
        put("agent.conf.d/extra.txt", "");
        sample_init(&s);
        ASSERT_EQ(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), 0);
        ASSERT_EQ(s.workers, 2);

        put("agent.conf.d/one-more.conf", "");
        capture_begin();
        ASSERT_ERROR(config_parse_standard(test_tmpdir(), "agent", sample_table, &s, NULL), E2BIG);
        ASSERT_STRSTR(test_capture_stderr_end(), "More than 128 drop-ins in '");
        sample_done(&s);
}

TEST(standard_refuses_bad_names) {
        static const char *const bad[] = { "", ".hidden", "a/b", "../etc", "tab\tname" };
        Sample s;

        sample_init(&s);
        log_set_max_level(LOG_CRIT);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CASE("'%s'", bad[i]);
                ASSERT_ERROR(config_parse_standard(test_tmpdir(), bad[i], sample_table, &s, NULL), EINVAL);
        }
        ASSERT_ERROR(config_parse_standard(test_tmpdir(), NULL, sample_table, &s, NULL), EINVAL);
        sample_done(&s);
}

TEST(standard_default_confdir) {
        Sample s;
        int r;

        /* NULL means ZTNA_CONFDIR; a name nobody installs gives the defaults and no error. */
        sample_init(&s);
        r = config_parse_standard(NULL, "ztna-test-does-not-exist", sample_table, &s, NULL);
        ASSERT_EQ(r, 0);
        ASSERT_EQ(s.port, 443);
        sample_done(&s);
}
