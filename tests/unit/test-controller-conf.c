/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "controller-conf.h"
#include "log.h"
#include "strv.h"
#include "tests.h"

#define BASE                                   \
        "[Controller]\n"                       \
        "TrustDomain=example.org\n"            \
        "[Network]\n"                          \
        "AdvertisedAddresses=ctl.example.org:8443\n"

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

/* A fresh confdir per call, so that table rows do not see each other's files. */
static const char *confdir_new(void) {
        static unsigned counter;
        char name[64];
        const char *dir;

        snprintf(name, sizeof(name), "etc%u", counter++);
        dir = test_path(name);
        ASSERT_TRUE(mkdir(dir, 0755) == 0);
        return dir;
}

static void put(const char *dir, const char *name, const char *content) {
        char path[1024];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (strchr(name, '/')) {
                char sub[1024];

                snprintf(sub, sizeof(sub), "%s/%.*s", dir, (int) (strchr(name, '/') - name), name);
                (void) mkdir(sub, 0755);
        }
        test_write_file(path, content, strlen(content));
}

static char *join(char **l) {
        static char buf[4096];
        _cleanup_free_ char *s = strv_join(l, ",");

        ASSERT_NOT_NULL(s);
        snprintf(buf, sizeof(buf), "%s", s);
        return buf;
}

static void assert_defaults_except_required(const ControllerConfig *c) {
        ASSERT_STREQ(c->id, "controller-1");
        ASSERT_STREQ(join(c->listen_grpc.addresses), "0.0.0.0:8443");
        ASSERT_STREQ(join(c->listen_admin.addresses), "127.0.0.1:8444");
        ASSERT_UEQ(c->connector_lifetime, USEC_PER_HOUR);
        ASSERT_UEQ(c->tunneler_lifetime, 30 * USEC_PER_MINUTE);
        ASSERT_UEQ(c->server_lifetime, 24 * USEC_PER_HOUR);
        ASSERT_UEQ(c->minimum_lifetime, 5 * USEC_PER_MINUTE);
        ASSERT_UEQ(c->issuing_ca_lifetime, 30 * USEC_PER_DAY);
        ASSERT_UEQ(c->root_ca_lifetime, 10 * USEC_PER_YEAR);
        ASSERT_EQ(c->key_type, KEY_TYPE_ECDSA_P256);
        ASSERT_UEQ(c->token_lifetime, USEC_PER_HOUR);
        ASSERT_STREQ(c->database, "/var/lib/ztna-controller/controller.db");
}

TEST(defaults) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *dir = confdir_new();

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        put(dir, "controller.conf", BASE);
        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");

        ASSERT_STREQ(c.trust_domain, "example.org");
        ASSERT_STREQ(join(c.advertised_addresses.addresses), "ctl.example.org:8443");
        assert_defaults_except_required(&c);
}

/* Under systemd's StateDirectory= (a link into /var/lib/private/ with DynamicUser=) the database and the key
 * file default to the resolved directory; an empty assignment restores that default too. */
TEST(state_directory_from_systemd) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        char real[PATH_MAX], link[PATH_MAX], want[PATH_MAX + 32];
        const char *dir = confdir_new();

        snprintf(real, sizeof(real), "%s/private-ctl", test_tmpdir());
        snprintf(link, sizeof(link), "%s/ztna-controller", test_tmpdir());
        ASSERT_OK(mkdir(real, 0700));
        ASSERT_OK(symlink(real, link));
        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        ASSERT_TRUE(setenv("STATE_DIRECTORY", link, 1) == 0);

        put(dir, "controller.conf", BASE "[Storage]\nDatabase=/elsewhere/db\nDatabase=\n");
        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");
        snprintf(want, sizeof(want), "%s/controller.db", real);
        ASSERT_STREQ(c.database, want);
        snprintf(want, sizeof(want), "%s/kek", real);
        ASSERT_STREQ(c.key_file, want);
        ASSERT_TRUE(unsetenv("STATE_DIRECTORY") == 0);
}

TEST(init_alone_lacks_the_required_keys) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *out;

        ASSERT_OK(controller_config_init(&c));
        ASSERT_NULL(c.trust_domain);
        ASSERT_NULL(c.advertised_addresses.addresses);
        assert_defaults_except_required(&c);

        capture_begin();
        ASSERT_ERROR(controller_config_check(&c), EINVAL);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "[Controller] TrustDomain= is not set (nor $TRUST_DOMAIN); it is required.\n");
        ASSERT_STRSTR(out, "[Network] AdvertisedAddresses= is not set; it is required");
        ASSERT_EQ(count_lines(out), 2);

        /* Filling them in is all it takes. */
        c.trust_domain = strdup("example.org");
        ASSERT_OK(strv_extend(&c.advertised_addresses.addresses, "10.0.0.1:8443"));
        ASSERT_OK(controller_config_check(&c));

        controller_config_done(&c);
        controller_config_done(&c);
        ASSERT_NULL(c.id);
}

TEST(every_key) {
        static const char text[] =
                "[Controller]\n"
                "TrustDomain=corp.example\n"
                "Id=ctl-2.eu_west\n"
                "[Network]\n"
                "ListenGRPC=[::]:9443 0.0.0.0:9443\n"
                "ListenAdmin=[0:0::1]:9444\n"
                "AdvertisedAddresses=CTL.Corp.Example:9443 192.0.2.10:9443 [2001:db8::10]:9443\n"
                "[Certificates]\n"
                "ConnectorLifetime=2h\n"
                "TunnelerLifetime=45min\n"
                "ServerLifetime=12h\n"
                "MinimumCertificateLifetime=10min\n"
                "IssuingCALifetime=60d\n"
                "RootCALifetime=1040w\n"
                "KeyType=ed25519\n"
                "[Tokens]\n"
                "DefaultLifetime=2d\n"
                "[Storage]\n"
                "Database=/srv/ztna/state.db\n";
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *dir = confdir_new();

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        put(dir, "controller.conf", text);
        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");

        ASSERT_STREQ(c.trust_domain, "corp.example");
        ASSERT_STREQ(c.id, "ctl-2.eu_west");
        ASSERT_STREQ(join(c.listen_grpc.addresses), "[::]:9443,0.0.0.0:9443");
        ASSERT_STREQ(join(c.listen_admin.addresses), "[::1]:9444");
        /* Canonical spelling: what tokens and SANs will carry. */
        ASSERT_STREQ(join(c.advertised_addresses.addresses),
                     "ctl.corp.example:9443,192.0.2.10:9443,[2001:db8::10]:9443");
        ASSERT_UEQ(c.connector_lifetime, 2 * USEC_PER_HOUR);
        ASSERT_UEQ(c.tunneler_lifetime, 45 * USEC_PER_MINUTE);
        ASSERT_UEQ(c.server_lifetime, 12 * USEC_PER_HOUR);
        ASSERT_UEQ(c.minimum_lifetime, 10 * USEC_PER_MINUTE);
        ASSERT_UEQ(c.issuing_ca_lifetime, 60 * USEC_PER_DAY);
        ASSERT_UEQ(c.root_ca_lifetime, 1040 * USEC_PER_WEEK);
        ASSERT_EQ(c.key_type, KEY_TYPE_ED25519);
        ASSERT_UEQ(c.token_lifetime, 2 * USEC_PER_DAY);
        ASSERT_STREQ(c.database, "/srv/ztna/state.db");
}

TEST(dropins_override_in_lexical_order) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *dir = confdir_new();

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        put(dir, "controller.conf",
            BASE
            "ListenGRPC=[::]:8443\n"
            "[Certificates]\n"
            "ConnectorLifetime=2h\n"
            "KeyType=ed25519\n");
        /* strcmp() order: 10-…, 20-…, 9-…; the last word wins. */
        put(dir, "controller.conf.d/20-second.conf",
            "[Certificates]\nConnectorLifetime=3h\nTunnelerLifetime=20min\n"
            "[Network]\nListenAdmin=\nListenAdmin=[::1]:8444\n");
        put(dir, "controller.conf.d/10-first.conf",
            "[Certificates]\nConnectorLifetime=90min\nTunnelerLifetime=10min\n"
            "[Network]\nListenGRPC=127.0.0.1:9443 [::]:8443\n");
        put(dir, "controller.conf.d/9-last.conf",
            "[Certificates]\nConnectorLifetime=4h\n[Controller]\nId=from-dropin\n");
        put(dir, "controller.conf.d/ignored.txt", "[Controller]\nId=not-a-dropin\n");

        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");

        ASSERT_UEQ(c.connector_lifetime, 4 * USEC_PER_HOUR);
        ASSERT_UEQ(c.tunneler_lifetime, 20 * USEC_PER_MINUTE);
        ASSERT_EQ(c.key_type, KEY_TYPE_ED25519);
        ASSERT_STREQ(c.id, "from-dropin");
        /* The main file's assignment replaced the default; the drop-in appended, without a duplicate. */
        ASSERT_STREQ(join(c.listen_grpc.addresses), "[::]:8443,127.0.0.1:9443");
        /* An empty assignment resets, the next one starts over. */
        ASSERT_STREQ(join(c.listen_admin.addresses), "[::1]:8444");
        ASSERT_STREQ(c.trust_domain, "example.org");
}

TEST(environment_wins_over_files) {
        _cleanup_(controller_config_done) ControllerConfig c = {}, d = {};
        const char *dir = confdir_new(), *out;

        put(dir, "controller.conf", BASE);
        put(dir, "controller.conf.d/50-td.conf", "[Controller]\nTrustDomain=dropin.example\n");

        CASE("TRUST_DOMAIN set");
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "env.example", 1) == 0);
        ASSERT_OK(controller_config_load(dir, &c));
        ASSERT_STREQ(c.trust_domain, "env.example");

        CASE("TRUST_DOMAIN empty is unset");
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "", 1) == 0);
        ASSERT_OK(controller_config_load(dir, &d));
        ASSERT_STREQ(d.trust_domain, "dropin.example");

        CASE("TRUST_DOMAIN invalid is fatal");
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "Env.Example", 1) == 0);
        capture_begin();
        ASSERT_ERROR(controller_config_load(dir, &d), EINVAL);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "Environment variable TRUST_DOMAIN='Env.Example' is not a valid trust domain: ");
        ASSERT_STREQ(d.trust_domain, "dropin.example");

        CASE("TRUST_DOMAIN supplies a missing TrustDomain=");
        controller_config_done(&d);
        put(dir, "controller.conf.d/60-unset.conf", "[Controller]\nTrustDomain=\n");
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "only-env.example", 1) == 0);
        ASSERT_OK(controller_config_load(dir, &d));
        ASSERT_STREQ(d.trust_domain, "only-env.example");
}

TEST(cross_field_rules_name_the_key) {
        static const struct {
                const char *text;
                const char *error; /* NULL: valid */
        } table[] = {
                { "[Controller]\nTrustDomain=\n", "[Controller] TrustDomain= is not set" },
                { "[Network]\nAdvertisedAddresses=\n", "[Network] AdvertisedAddresses= is not set" },
                { "[Network]\nListenGRPC=\n", "[Network] ListenGRPC= is empty" },
                { "[Network]\nListenAdmin=\n", "[Network] ListenAdmin= is empty" },
                { "[Certificates]\nConnectorLifetime=4min\n",
                  "[Certificates] ConnectorLifetime=4min is shorter than MinimumCertificateLifetime=5min." },
                { "[Certificates]\nTunnelerLifetime=299s\n",
                  "[Certificates] TunnelerLifetime=4min 59s is shorter than MinimumCertificateLifetime=5min." },
                { "[Certificates]\nServerLifetime=1min\n",
                  "[Certificates] ServerLifetime=1min is shorter than MinimumCertificateLifetime=5min." },
                { "[Certificates]\nMinimumCertificateLifetime=2h\n",
                  "[Certificates] ConnectorLifetime=1h is shorter than MinimumCertificateLifetime=2h." },
                { "[Certificates]\nConnectorLifetime=10d\n",
                  "[Certificates] ConnectorLifetime=1w 3d must be shorter than a third of "
                  "IssuingCALifetime=4w 2d." },
                { "[Certificates]\nTunnelerLifetime=240h\n",
                  "[Certificates] TunnelerLifetime=1w 3d must be shorter than a third of " },
                { "[Certificates]\nIssuingCALifetime=3d\n",
                  "[Certificates] ServerLifetime=1d must be shorter than a third of IssuingCALifetime=3d." },
                { "[Certificates]\nRootCALifetime=30d\n",
                  "[Certificates] IssuingCALifetime=4w 2d must be shorter than RootCALifetime=4w 2d." },
                { "[Certificates]\nIssuingCALifetime=3653d\n",
                  "[Certificates] IssuingCALifetime=10y 12h must be shorter than RootCALifetime=10y." },
                /* The boundaries, just inside. */
                { "[Certificates]\nIssuingCALifetime=3d\nServerLifetime=23h 59min 59s\n", NULL },
                { "[Certificates]\nConnectorLifetime=5min\nTunnelerLifetime=5min\n", NULL },
                { "[Certificates]\nMinimumCertificateLifetime=1min\nConnectorLifetime=1min\nTunnelerLifetime=1min\n",
                  NULL },
                { "[Certificates]\nRootCALifetime=30d 1s\n", NULL },
        };

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ControllerConfig c = { .id = (char *) "untouched" };
                char text[1024];
                const char *dir = confdir_new(), *out;
                int r;

                CASE("%s", table[i].text);
                snprintf(text, sizeof(text), "%s%s", BASE, table[i].text);
                put(dir, "controller.conf", text);
                capture_begin();
                r = controller_config_load(dir, &c);
                out = test_capture_stderr_end();
                if (!table[i].error) {
                        ASSERT_EQ(r, 0);
                        ASSERT_STREQ(out, "");
                        controller_config_done(&c);
                        continue;
                }
                ASSERT_ERROR(r, EINVAL);
                ASSERT_STRSTR(out, table[i].error);
                ASSERT_STRSTR(out, "Invalid controller configuration.\n");
                /* ret is untouched on failure. */
                ASSERT_STREQ(c.id, "untouched");
                ASSERT_NULL(c.trust_domain);
        }
}

TEST(bad_values_warn_and_keep_defaults) {
        static const struct {
                const char *section, *key, *value, *error;
        } table[] = {
                { "Controller", "Id", "bad/id", "Invalid argument" },
                { "Controller", "Id", "a b", "Invalid argument" },
                { "Network", "ListenGRPC", "ctl.example.org:8443", "Invalid argument" },
                { "Network", "ListenGRPC", "0.0.0.0", "Invalid argument" },
                { "Network", "ListenGRPC", "[::1]:0", "Numerical result out of range" },
                { "Network", "ListenGRPC", "[::1]:8443 bad_host:1", "Invalid argument" },
                { "Network", "ListenAdmin", "::1:8444", "Invalid argument" },
                { "Network", "AdvertisedAddresses", "0.0.0.0:8443", "Invalid argument" },
                { "Network", "AdvertisedAddresses", "[::]:8443", "Invalid argument" },
                { "Network", "AdvertisedAddresses", "ctl.example.org", "Invalid argument" },
                { "Certificates", "ConnectorLifetime", "0", "Numerical result out of range" },
                { "Certificates", "ConnectorLifetime", "infinity", "Numerical result out of range" },
                { "Certificates", "ConnectorLifetime", "forever", "Invalid argument" },
                { "Certificates", "ServerLifetime", "-1h", "Numerical result out of range" },
                { "Certificates", "RootCALifetime", "5300w", "Numerical result out of range" },
                { "Certificates", "MinimumCertificateLifetime", "9s", "Numerical result out of range" },
                { "Certificates", "KeyType", "rsa", "Invalid argument" },
                { "Certificates", "KeyType", "ECDSA-P256", "Invalid argument" },
                { "Tokens", "DefaultLifetime", "59s", "Numerical result out of range" },
                { "Tokens", "DefaultLifetime", "30d 1s", "Numerical result out of range" },
                { "Storage", "Database", "relative/controller.db", "Invalid argument" },
        };

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(controller_config_done) ControllerConfig c = {};
                char text[1024], message[512];
                const char *dir = confdir_new();

                CASE("%s=%s", table[i].key, table[i].value);
                snprintf(text, sizeof(text), BASE "[%s]\n%s=%s\n", table[i].section, table[i].key,
                         table[i].value);
                snprintf(message, sizeof(message),
                         "%s/controller.conf:6: Failed to parse %s= value '%s', ignoring: %s\n", dir,
                         table[i].key, table[i].value, table[i].error);
                put(dir, "controller.conf", text);
                capture_begin();
                ASSERT_EQ(controller_config_load(dir, &c), 1);
                ASSERT_STREQ(test_capture_stderr_end(), message);
                assert_defaults_except_required(&c);
                ASSERT_STREQ(join(c.advertised_addresses.addresses), "ctl.example.org:8443");
        }
}

TEST(bad_trust_domain_says_why) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *dir = confdir_new(), *out;

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        put(dir, "controller.conf", BASE "[Controller]\nTrustDomain=Example.ORG\n");
        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 1);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "/controller.conf:6: TrustDomain= 'Example.ORG' is not a valid trust domain: ");
        ASSERT_STRSTR(out, "/controller.conf:6: Failed to parse TrustDomain= value 'Example.ORG', ignoring: "
                           "Invalid argument\n");
        ASSERT_EQ(count_lines(out), 2);
        /* The earlier, valid value stays. */
        ASSERT_STREQ(c.trust_domain, "example.org");
}

TEST(unknown_keys_warn_and_are_ignored) {
        _cleanup_(controller_config_done) ControllerConfig c = {};
        const char *dir = confdir_new(), *out;

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        put(dir, "controller.conf",
            BASE
            "Colour=blue\n"                        /* 5 */
            "[Certificates]\n"
            "MinimumLifetime=1min\n"               /* 7: not a key (the key is MinimumCertificateLifetime=) */
            "[Nowhere]\n"
            "Id=elsewhere\n");                     /* 9 */
        capture_begin();
        ASSERT_EQ(controller_config_load(dir, &c), 3);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "/controller.conf:5: Unknown key 'Colour' in section [Network], ignoring.\n");
        ASSERT_STRSTR(out, "/controller.conf:7: Unknown key 'MinimumLifetime' in section "
                           "[Certificates], ignoring.\n");
        ASSERT_STRSTR(out, "/controller.conf:9: Unknown key 'Id' in section [Nowhere], ignoring.\n");
        ASSERT_EQ(count_lines(out), 3);
        assert_defaults_except_required(&c);
}

TEST(address_lists) {
        char text[2048];
        const char *dir, *out;

        ASSERT_TRUE(unsetenv("TRUST_DOMAIN") == 0);
        CASE("the maximum, then one more");
        {
                _cleanup_(controller_config_done) ControllerConfig c = {};

                dir = confdir_new();
                put(dir, "controller.conf",
                    BASE
                    "AdvertisedAddresses=a:1 b:1 c:1 d:1 e:1 f:1\n"
                    "AdvertisedAddresses=g:1 a:1\n"        /* 6: 8 in all, a duplicate dropped */
                    "AdvertisedAddresses=i:1\n");          /* 7: a 9th */
                capture_begin();
                ASSERT_EQ(controller_config_load(dir, &c), 1);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, "/controller.conf:7: Failed to parse AdvertisedAddresses= value 'i:1', "
                                   "ignoring: Argument list too long\n");
                ASSERT_STREQ(join(c.advertised_addresses.addresses),
                             "ctl.example.org:8443,a:1,b:1,c:1,d:1,e:1,f:1,g:1");
        }

        CASE("listen maximum");
        {
                _cleanup_(controller_config_done) ControllerConfig c = {};
                size_t n = 0;

                dir = confdir_new();
                /* Eight to a line: a line holds at most 198 bytes of Key=Value. */
                n = (size_t) snprintf(text, sizeof(text), BASE);
                for (unsigned i = 1; i <= CONTROLLER_LISTEN_MAX + 1; i++)
                        n += (size_t) snprintf(text + n, sizeof(text) - n, "%s127.0.0.%u:1",
                                               (i - 1) % 8 == 0 ? "\nListenGRPC=" : " ", i);
                snprintf(text + n, sizeof(text) - n, "\n");
                put(dir, "controller.conf", text);
                capture_begin();
                ASSERT_EQ(controller_config_load(dir, &c), 1);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, "Failed to parse ListenGRPC= value '127.0.0.17:1', ignoring: Argument list "
                                   "too long\n");
                ASSERT_UEQ(strv_length(c.listen_grpc.addresses), CONTROLLER_LISTEN_MAX);
        }
}

TEST(missing_confdir) {
        ControllerConfig c = {};
        const char *out;

        /* No files at all: only the environment could help, and AdvertisedAddresses= is still missing. */
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "example.org", 1) == 0);
        capture_begin();
        ASSERT_ERROR(controller_config_load(test_path("nonexistent"), &c), EINVAL);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "[Network] AdvertisedAddresses= is not set");
        ASSERT_FALSE(strstr(out, "TrustDomain="));
        ASSERT_NULL(c.trust_domain);
}
