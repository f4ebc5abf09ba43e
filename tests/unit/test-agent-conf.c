/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent-conf.h"
#include "log.h"
#include "strv.h"
#include "tests.h"

/* Every variable the loader or the token reader looks at: cleared so that the caller's environment never
 * leaks into a case. */
static void env_clear(void) {
        static const char *const vars[] = {
                "CONNECTOR_ID", "TUNNELER_ID", "CONTROLLER_ADDR", "TRUST_DOMAIN", "CONTROLLER_CA_PATH",
                "CONNECTOR_ADDR", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "ENROLLMENT_TOKEN",
        };

        for (size_t i = 0; i < ELEMENTSOF(vars); i++)
                ASSERT_TRUE(unsetenv(vars[i]) == 0);
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

/* A fresh directory per call, so that table rows do not see each other's files. */
static const char *dir_new(void) {
        static unsigned counter;
        char name[64];
        const char *dir;

        snprintf(name, sizeof(name), "d%u", counter++);
        dir = test_path(name);
        ASSERT_TRUE(mkdir(dir, 0755) == 0);
        return dir;
}

/* Returns the path, in one of a few rotating buffers. */
static const char *put(const char *dir, const char *name, const char *content, size_t size) {
        static char paths[4][1024];
        static unsigned n;
        char *path = paths[n++ % ELEMENTSOF(paths)];

        if (strchr(name, '/')) {
                char sub[1024];

                snprintf(sub, sizeof(sub), "%s/%.*s", dir, (int) (strchr(name, '/') - name), name);
                (void) mkdir(sub, 0755);
        }
        snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
        test_write_file(path, content, size);
        return path;
}

static void put_str(const char *dir, const char *name, const char *content) {
        put(dir, name, content, strlen(content));
}

static char *join(char **l) {
        static char buf[8192];
        _cleanup_free_ char *s = strv_join(l, ",");

        ASSERT_NOT_NULL(s);
        snprintf(buf, sizeof(buf), "%s", s);
        return buf;
}

static void assert_defaults(const AgentConfig *c, SpiffeRole role) {
        ASSERT_EQ(c->role, role);
        ASSERT_NULL(c->id);
        ASSERT_NULL(c->controllers);
        ASSERT_NULL(c->trust_domain);
        ASSERT_NULL(c->controller_ca_file);
        ASSERT_EQ(c->key_type, KEY_TYPE_ECDSA_P256);
        ASSERT_NULL(c->labels);
        ASSERT_NULL(c->private_ip);
        ASSERT_NULL(c->data_plane_address);
        if (role == SPIFFE_ROLE_CONNECTOR) {
                ASSERT_STREQ(c->state_directory, "/var/lib/ztna-connector");
                ASSERT_STREQ(c->data_plane_listen, "0.0.0.0:8447");
                ASSERT_STREQ(c->health_listen, "127.0.0.1:8445");
        } else {
                ASSERT_STREQ(c->state_directory, "/var/lib/ztna-tunneler");
                ASSERT_NULL(c->data_plane_listen);
                ASSERT_STREQ(c->health_listen, "127.0.0.1:8446");
        }
        ASSERT_UEQ(c->renew_at_percent, 30);
        ASSERT_UEQ(c->renew_jitter_percent, 10);
        ASSERT_UEQ(c->backoff_base, USEC_PER_SEC);
        ASSERT_UEQ(c->backoff_cap, 60 * USEC_PER_SEC);
        ASSERT_UEQ(c->healthy_after, 60 * USEC_PER_SEC);
}

TEST(defaults) {
        static const SpiffeRole roles[] = { SPIFFE_ROLE_CONNECTOR, SPIFFE_ROLE_TUNNELER };

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(roles); i++) {
                _cleanup_(agent_config_done) AgentConfig c = {};

                CASE("%s", agent_config_name(roles[i]));
                /* No file at all is a valid configuration: everything has a default or is optional. */
                capture_begin();
                ASSERT_EQ(agent_config_load(roles[i], test_path("nonexistent"), &c), 0);
                ASSERT_STREQ(test_capture_stderr_end(), "");
                assert_defaults(&c, roles[i]);

                agent_config_done(&c);
                agent_config_done(&c);
                ASSERT_NULL(c.state_directory);
        }
}

TEST(tunneler_front_ends) {
        static const char text[] =
                "[Tunneler]\n"
                "Forward=127.0.0.1:15432=DB.Lab.Example:5432 [::1]:2222=10.0.0.5:22\n"
                "Forward=127.0.0.1:15432=db2.lab.example:5432\n"
                "SocksListen=127.0.0.1:1080\n"
                "HttpProxyListen=[::1]:3128\n"
                "IdleTimeout=1h\n";
        static const struct {
                const char *key, *value;
        } bad[] = {
                { "Forward", "0.0.0.0:15432=db.lab:5432" },      /* not loopback: the LAN would reach it */
                { "Forward", "127.0.0.1:15432" },                /* no target */
                { "Forward", "127.0.0.1:15432=db.lab" },          /* no target port */
                { "Forward", "127.0.0.1:15432=0.0.0.0:5432" },
                { "SocksListen", "192.0.2.1:1080" },
                { "HttpProxyListen", "0.0.0.0:3128" },
        };
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new();

        env_clear();
        put_str(dir, "tunneler.conf", text);
        capture_begin();
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");
        /* Canonical, and the later Forward= for the same listener replaced the first. */
        ASSERT_STREQ(join(c.forwards), "127.0.0.1:15432=db2.lab.example:5432,[::1]:2222=10.0.0.5:22");
        ASSERT_STREQ(c.socks_listen, "127.0.0.1:1080");
        ASSERT_STREQ(c.http_proxy_listen, "[::1]:3128");
        ASSERT_UEQ(c.idle_timeout, USEC_PER_HOUR);

        for (size_t k = 0; k < ELEMENTSOF(bad); k++) {
                CASE("%s=%s", bad[k].key, bad[k].value);
                ASSERT_FAIL(agent_config_set(&c, "Tunneler", bad[k].key, bad[k].value));
        }
        /* The failures left the values as they were. */
        ASSERT_STREQ(c.socks_listen, "127.0.0.1:1080");
        ASSERT_EQ(strv_length(c.forwards), 2);
}

TEST(roles_without_configuration) {
        AgentConfig c = { .id = (char *) "untouched" };
        char *t = NULL;

        env_clear();
        ASSERT_STREQ(agent_config_name(SPIFFE_ROLE_CONNECTOR), "connector");
        ASSERT_STREQ(agent_config_name(SPIFFE_ROLE_TUNNELER), "tunneler");
        ASSERT_NULL(agent_config_name(SPIFFE_ROLE_CONTROLLER));
        ASSERT_NULL(agent_config_name(SPIFFE_ROLE_RELAY));

        ASSERT_ERROR(agent_config_init(SPIFFE_ROLE_CONTROLLER, &c), EINVAL);
        ASSERT_ERROR(agent_config_init(_SPIFFE_ROLE_INVALID, &c), EINVAL);
        capture_begin();
        ASSERT_ERROR(agent_config_load(SPIFFE_ROLE_RELAY, NULL, &c), EINVAL);
        ASSERT_STRSTR(test_capture_stderr_end(), "Role 'relay' has no agent configuration.");
        ASSERT_STREQ(c.id, "untouched");

        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", "ztna1-x", 1) == 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONTROLLER, NULL, &t, NULL), EINVAL);
        ASSERT_NULL(t);
        /* Refused before any source was touched. */
        ASSERT_STREQ(getenv("ENROLLMENT_TOKEN"), "ztna1-x");
}

TEST(state_directory_default) {
        static const struct {
                const char *env, *expected;
        } table[] = {
                { "/var/lib/private/ztna-connector", "/var/lib/private/ztna-connector" },
                /* StateDirectory=a b gives "a:b"; the first is ours. */
                { "/var/lib/ztna-connector:/var/lib/other", "/var/lib/ztna-connector" },
                { "relative/dir", "/var/lib/ztna-connector" },
                { ":/var/lib/second", "/var/lib/ztna-connector" },
                { "", "/var/lib/ztna-connector" },
        };
        const char *dir;

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(agent_config_done) AgentConfig c = {};

                CASE("STATE_DIRECTORY=%s", table[i].env);
                ASSERT_TRUE(setenv("STATE_DIRECTORY", table[i].env, 1) == 0);
                ASSERT_OK(agent_config_init(SPIFFE_ROLE_CONNECTOR, &c));
                ASSERT_STREQ(c.state_directory, table[i].expected);
        }

        CASE("the file wins over $STATE_DIRECTORY, an empty assignment restores it");
        {
                _cleanup_(agent_config_done) AgentConfig c = {}, d = {};

                ASSERT_TRUE(setenv("STATE_DIRECTORY", "/run/state", 1) == 0);
                dir = dir_new();
                put_str(dir, "tunneler.conf", "[Agent]\nStateDirectory=/srv/ztna\n");
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 0);
                ASSERT_STREQ(c.state_directory, "/srv/ztna");

                put_str(dir, "tunneler.conf.d/50-reset.conf", "[Agent]\nStateDirectory=\n");
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &d), 0);
                ASSERT_STREQ(d.state_directory, "/run/state");
        }
}

TEST(every_key) {
        static const char text[] =
                "[Agent]\n"
                "Id=conn-1.eu_west\n"
                "Controller=CTL.Example.ORG:9443 192.0.2.1 [2001:db8::1]:8443\n"
                "TrustDomain=corp.example\n"
                "ControllerCAFile=/etc/ztna/ca.pem\n"
                "KeyType=ed25519\n"
                "StateDirectory=/srv/ztna-connector\n"
                "Labels=site=paris rack=r12 k8s.io/zone=eu-west-1a\n"
                "PrivateIP=2001:DB8:0::5\n"
                "[Connector]\n"
                "DataPlaneListen=[::]:9444\n"
                "DataPlaneAddress=Conn1.Example.ORG:9444\n"
                "Resolvers=192.0.2.53 [2001:DB8::53]:5353\n"
                "MaxStreams=100\n"
                "MaxStreamsPerTunneler=10\n"
                "IdleTimeout=0\n"
                "ConnectTimeout=3s\n"
                "[Health]\n"
                "Listen=[0::1]:9000\n"
                "[Renewal]\n"
                "RenewAt=50%\n"
                "Jitter=0%\n"
                "[Reconnect]\n"
                "BackoffBase=250ms\n"
                "BackoffCap=5min\n"
                "HealthyAfter=2min 30s\n";
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new();

        env_clear();
        put_str(dir, "connector.conf", text);
        capture_begin();
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");

        ASSERT_STREQ(c.id, "conn-1.eu_west");
        /* Canonical spelling, the default port filled in. */
        ASSERT_STREQ(join(c.controllers), "ctl.example.org:9443,192.0.2.1:8443,[2001:db8::1]:8443");
        ASSERT_STREQ(c.trust_domain, "corp.example");
        ASSERT_STREQ(c.controller_ca_file, "/etc/ztna/ca.pem");
        ASSERT_EQ(c.key_type, KEY_TYPE_ED25519);
        ASSERT_STREQ(c.state_directory, "/srv/ztna-connector");
        ASSERT_STREQ(join(c.labels), "site=paris,rack=r12,k8s.io/zone=eu-west-1a");
        ASSERT_STREQ(c.private_ip, "2001:db8::5");
        ASSERT_STREQ(c.data_plane_listen, "[::]:9444");
        ASSERT_STREQ(c.data_plane_address, "conn1.example.org:9444");
        ASSERT_STREQ(join(c.resolvers), "192.0.2.53:53,[2001:db8::53]:5353");
        ASSERT_UEQ(c.max_streams, 100);
        ASSERT_UEQ(c.max_streams_per_tunneler, 10);
        ASSERT_UEQ(c.idle_timeout, USEC_INFINITY);
        ASSERT_UEQ(c.connect_timeout, 3 * USEC_PER_SEC);
        ASSERT_STREQ(c.health_listen, "[::1]:9000");
        ASSERT_UEQ(c.renew_at_percent, 50);
        ASSERT_UEQ(c.renew_jitter_percent, 0);
        ASSERT_UEQ(c.backoff_base, 250 * USEC_PER_MSEC);
        ASSERT_UEQ(c.backoff_cap, 5 * USEC_PER_MINUTE);
        ASSERT_UEQ(c.healthy_after, 150 * USEC_PER_SEC);
}

TEST(bad_values_warn_and_keep_defaults) {
        static const struct {
                const char *section, *key, *value, *error;
        } table[] = {
                { "Agent", "Id", "bad/id", "Invalid argument" },
                { "Agent", "Id", "a\"b", "Invalid argument" },
                { "Agent", "Controller", "0.0.0.0:8443", "Invalid argument" },
                { "Agent", "Controller", "[::]", "Invalid argument" },
                { "Agent", "Controller", "::1:8443", "Invalid argument" },
                { "Agent", "Controller", "ctl.example.org:0", "Numerical result out of range" },
                { "Agent", "Controller", "ctl.example.org:8443 bad_host", "Invalid argument" },
                { "Agent", "TrustDomain", "Example.ORG", "Invalid argument" },
                { "Agent", "ControllerCAFile", "ca.pem", "Invalid argument" },
                { "Agent", "KeyType", "rsa", "Invalid argument" },
                { "Agent", "KeyType", "ED25519", "Invalid argument" },
                { "Agent", "StateDirectory", "var/lib/x", "Invalid argument" },
                { "Agent", "Labels", "site", "Invalid argument" },
                { "Agent", "Labels", "=paris", "Invalid argument" },
                { "Agent", "Labels", "site=", "Invalid argument" },
                { "Agent", "Labels", "si te=x", "Invalid argument" },
                { "Agent", "Labels", "sit\xc3\xa9=x", "Invalid argument" },
                { "Agent", "Labels", "site=caf\xc3\xa9", "Invalid argument" },
                { "Agent", "PrivateIP", "10.0.0.256", "Invalid argument" },
                { "Agent", "PrivateIP", "host.example", "Invalid argument" },
                { "Agent", "PrivateIP", "10.0.0.1:80", "Invalid argument" },
                { "Agent", "PrivateIP", "[::1]", "Invalid argument" },
                { "Connector", "DataPlaneListen", "conn.example.org:8444", "Invalid argument" },
                { "Connector", "DataPlaneListen", "0.0.0.0", "Invalid argument" },
                { "Connector", "DataPlaneListen", "0.0.0.0:70000", "Numerical result out of range" },
                { "Connector", "DataPlaneAddress", "0.0.0.0:8444", "Invalid argument" },
                { "Connector", "DataPlaneAddress", "conn.example.org", "Invalid argument" },
                { "Connector", "Resolvers", "dns.example", "Invalid argument" },
                { "Connector", "Resolvers", "0.0.0.0", "Invalid argument" },
                { "Connector", "MaxStreams", "0", "Numerical result out of range" },
                { "Connector", "MaxStreams", "65537", "Numerical result out of range" },
                { "Connector", "ConnectTimeout", "0", "Numerical result out of range" },
                { "Connector", "ConnectTimeout", "6min", "Numerical result out of range" },
                { "Health", "Listen", "0.0.0.0:8445", "Invalid argument" },
                { "Health", "Listen", "192.0.2.1:8445", "Invalid argument" },
                { "Health", "Listen", "[::]:8445", "Invalid argument" },
                { "Health", "Listen", "localhost:8445", "Invalid argument" },
                { "Health", "Listen", "127.0.0.1", "Invalid argument" },
                { "Renewal", "RenewAt", "30", "Invalid argument" },
                { "Renewal", "RenewAt", "0%", "Numerical result out of range" },
                { "Renewal", "RenewAt", "100%", "Numerical result out of range" },
                { "Renewal", "RenewAt", "-5%", "Numerical result out of range" },
                { "Renewal", "RenewAt", "12.5%", "Invalid argument" },
                { "Renewal", "RenewAt", "%", "Invalid argument" },
                { "Renewal", "Jitter", "100%", "Numerical result out of range" },
                { "Renewal", "Jitter", "ten%", "Invalid argument" },
                { "Reconnect", "BackoffBase", "0", "Numerical result out of range" },
                { "Reconnect", "BackoffBase", "soon", "Invalid argument" },
                { "Reconnect", "BackoffCap", "infinity", "Numerical result out of range" },
                { "Reconnect", "BackoffCap", "1d 1us", "Numerical result out of range" },
                { "Reconnect", "HealthyAfter", "-1s", "Numerical result out of range" },
        };

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_(agent_config_done) AgentConfig c = {};
                char text[1024], message[1024];
                const char *dir = dir_new();

                CASE("[%s] %s=%s", table[i].section, table[i].key, table[i].value);
                snprintf(text, sizeof(text), "# comment\n[%s]\n%s=%s\n", table[i].section, table[i].key,
                         table[i].value);
                snprintf(message, sizeof(message),
                         "%s/connector.conf:3: Failed to parse %s= value '%s', ignoring: %s\n", dir,
                         table[i].key, table[i].value, table[i].error);
                put_str(dir, "connector.conf", text);
                capture_begin();
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 1);
                /* Only the trust domain adds why, on its own line before. */
                ASSERT_STRSTR(test_capture_stderr_end(), message);
                assert_defaults(&c, SPIFFE_ROLE_CONNECTOR);
        }
}

TEST(bad_values_keep_the_earlier_value) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new(), *out;

        env_clear();
        put_str(dir, "tunneler.conf",
                "[Agent]\n"
                "TrustDomain=example.org\n"
                "TrustDomain=Example.ORG\n"        /* 3 */
                "Id=tun-1\n"
                "Id=tun/2\n"                       /* 5 */
                "Controller=a.example:1 b.example:2\n"
                "Controller=c.example:3 bad..name:4\n" /* 7: all or nothing */
                "Labels=a=1\n"
                "Labels=b=2 =3\n"                  /* 9 */
                "[Renewal]\n"
                "RenewAt=40%\n"
                "RenewAt=40\n");                   /* 12 */
        capture_begin();
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 5);
        out = test_capture_stderr_end();
        ASSERT_STRSTR(out, "/tunneler.conf:3: TrustDomain= 'Example.ORG' is not a valid trust domain: ");
        ASSERT_STRSTR(out, "/tunneler.conf:3: Failed to parse TrustDomain= value 'Example.ORG', ignoring: "
                           "Invalid argument\n");
        ASSERT_STRSTR(out, "/tunneler.conf:5: Failed to parse Id= value 'tun/2'");
        ASSERT_STRSTR(out, "/tunneler.conf:7: Failed to parse Controller= value 'c.example:3 bad..name:4'");
        ASSERT_STRSTR(out, "/tunneler.conf:9: Failed to parse Labels= value 'b=2 =3'");
        ASSERT_STRSTR(out, "/tunneler.conf:12: Failed to parse RenewAt= value '40'");
        ASSERT_EQ(count_lines(out), 6);

        ASSERT_STREQ(c.trust_domain, "example.org");
        ASSERT_STREQ(c.id, "tun-1");
        ASSERT_STREQ(join(c.controllers), "a.example:1,b.example:2");
        ASSERT_STREQ(join(c.labels), "a=1");
        ASSERT_UEQ(c.renew_at_percent, 40);
}

TEST(sections_per_role) {
        const char *dir, *out;

        env_clear();
        CASE("[Connector] is unknown to the tunneler, an empty [Tunneler] is fine");
        {
                _cleanup_(agent_config_done) AgentConfig c = {};

                dir = dir_new();
                put_str(dir, "tunneler.conf",
                        "[Tunneler]\n"
                        "[Connector]\n"
                        "DataPlaneListen=127.0.0.1:1\n"    /* 3 */
                        "[Agent]\n"
                        "Colour=blue\n"                    /* 5 */
                        "[Tunneler]\n"
                        "Socks=127.0.0.1:1080\n");         /* 7 */
                capture_begin();
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 3);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, "/tunneler.conf:3: Unknown key 'DataPlaneListen' in section [Connector], "
                                   "ignoring.\n");
                ASSERT_STRSTR(out, "/tunneler.conf:5: Unknown key 'Colour' in section [Agent], ignoring.\n");
                ASSERT_STRSTR(out, "/tunneler.conf:7: Unknown key 'Socks' in section [Tunneler], "
                                   "ignoring.\n");
                ASSERT_EQ(count_lines(out), 3);
                assert_defaults(&c, SPIFFE_ROLE_TUNNELER);
        }

        CASE("the connector reads connector.conf only");
        {
                _cleanup_(agent_config_done) AgentConfig c = {};

                dir = dir_new();
                put_str(dir, "tunneler.conf", "[Agent]\nId=from-tunneler-conf\n");
                put_str(dir, "connector.conf", "[Connector]\nDataPlaneAddress=conn.example:8444\n");
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
                ASSERT_NULL(c.id);
                ASSERT_STREQ(c.data_plane_address, "conn.example:8444");
        }
}

TEST(dropins_override_in_lexical_order) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new();

        env_clear();
        put_str(dir, "connector.conf",
                "[Agent]\n"
                "Id=main\n"
                "KeyType=ed25519\n"
                "Controller=a.example:1\n"
                "Labels=site=paris tier=1\n"
                "[Renewal]\n"
                "RenewAt=40%\n");
        /* strcmp() order: 10-…, 20-…, 9-…; the last word wins. */
        put_str(dir, "connector.conf.d/20-second.conf",
                "[Agent]\nId=second\nController=\nController=c.example:3\nLabels=site=lyon\n"
                "[Renewal]\nJitter=5%\n");
        put_str(dir, "connector.conf.d/10-first.conf",
                "[Agent]\nId=first\nController=b.example:2 a.example:1\n[Renewal]\nJitter=20%\n");
        put_str(dir, "connector.conf.d/9-last.conf", "[Agent]\nId=last\n");
        put_str(dir, "connector.conf.d/ignored.txt", "[Agent]\nId=not-a-dropin\n");
        put_str(dir, "connector.conf.d/.hidden.conf", "[Agent]\nId=hidden\n");

        capture_begin();
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");

        ASSERT_STREQ(c.id, "last");
        ASSERT_EQ(c.key_type, KEY_TYPE_ED25519);
        /* The drop-in emptied the list, then started over. */
        ASSERT_STREQ(join(c.controllers), "c.example:3");
        /* A later label with the same key replaces it in place. */
        ASSERT_STREQ(join(c.labels), "site=lyon,tier=1");
        ASSERT_UEQ(c.renew_at_percent, 40);
        ASSERT_UEQ(c.renew_jitter_percent, 5);
}

TEST(environment_wins_over_files) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new(), *creds = dir_new();

        env_clear();
        put_str(dir, "connector.conf",
                "[Agent]\n"
                "Id=from-file\n"
                "Controller=file.example:1 file2.example:2\n"
                "TrustDomain=file.example\n"
                "ControllerCAFile=/etc/ztna/file-ca.pem\n"
                "[Connector]\n"
                "DataPlaneAddress=file.example:8444\n");
        put_str(dir, "connector.conf.d/50-dropin.conf", "[Agent]\nId=from-dropin\n");

        ASSERT_TRUE(setenv("CONNECTOR_ID", "from-env", 1) == 0);
        ASSERT_TRUE(setenv("TUNNELER_ID", "not-for-the-connector", 1) == 0);
        ASSERT_TRUE(setenv("CONTROLLER_ADDR", "Env1.Example:8443, env2.example,[::1]:9", 1) == 0);
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "env.example", 1) == 0);
        ASSERT_TRUE(setenv("CONTROLLER_CA_PATH", "/run/env-ca.pem", 1) == 0);
        ASSERT_TRUE(setenv("CONNECTOR_ADDR", "10.1.2.3:8444", 1) == 0);

        CASE("every variable");
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        ASSERT_STREQ(c.id, "from-env");
        /* Replaced, not appended; comma- or space-separated. */
        ASSERT_STREQ(join(c.controllers), "env1.example:8443,env2.example:8443,[::1]:9");
        ASSERT_STREQ(c.trust_domain, "env.example");
        ASSERT_STREQ(c.controller_ca_file, "/run/env-ca.pem");
        ASSERT_STREQ(c.data_plane_address, "10.1.2.3:8444");
        agent_config_done(&c);

        CASE("the credential CONTROLLER_CA wins over CONTROLLER_CA_PATH");
        put_str(creds, "CONTROLLER_CA", "-----BEGIN CERTIFICATE-----\n");
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", creds, 1) == 0);
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        {
                char expected[1024];

                snprintf(expected, sizeof(expected), "%s/CONTROLLER_CA", creds);
                ASSERT_STREQ(c.controller_ca_file, expected);
        }
        agent_config_done(&c);

        CASE("credentials without CONTROLLER_CA");
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", dir_new(), 1) == 0);
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        ASSERT_STREQ(c.controller_ca_file, "/run/env-ca.pem");
        agent_config_done(&c);

        CASE("empty variables count as unset");
        ASSERT_TRUE(setenv("CONNECTOR_ID", "", 1) == 0);
        ASSERT_TRUE(setenv("CONTROLLER_ADDR", "", 1) == 0);
        ASSERT_TRUE(setenv("TRUST_DOMAIN", "", 1) == 0);
        ASSERT_TRUE(setenv("CONTROLLER_CA_PATH", "", 1) == 0);
        ASSERT_TRUE(setenv("CONNECTOR_ADDR", "", 1) == 0);
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);
        ASSERT_STREQ(c.id, "from-dropin");
        ASSERT_STREQ(join(c.controllers), "file.example:1,file2.example:2");
        ASSERT_STREQ(c.trust_domain, "file.example");
        ASSERT_STREQ(c.controller_ca_file, "/etc/ztna/file-ca.pem");
        ASSERT_STREQ(c.data_plane_address, "file.example:8444");
        agent_config_done(&c);
}

TEST(environment_per_role) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new();

        env_clear();
        ASSERT_TRUE(setenv("CONNECTOR_ID", "not-for-the-tunneler", 1) == 0);
        ASSERT_TRUE(setenv("TUNNELER_ID", "laptop-7", 1) == 0);
        /* The tunneler advertises nothing: the connector's variable does not concern it, even invalid. */
        ASSERT_TRUE(setenv("CONNECTOR_ADDR", "0.0.0.0:1", 1) == 0);
        capture_begin();
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 0);
        ASSERT_STREQ(test_capture_stderr_end(), "");
        ASSERT_STREQ(c.id, "laptop-7");
        ASSERT_NULL(c.data_plane_address);
}

TEST(invalid_environment_is_fatal) {
        static const struct {
                SpiffeRole role;
                const char *var, *value, *error;
        } table[] = {
                { SPIFFE_ROLE_CONNECTOR, "CONNECTOR_ID", "a/b",
                  "Environment variable CONNECTOR_ID='a/b' is not a valid Id= value: Invalid argument\n" },
                { SPIFFE_ROLE_TUNNELER, "TUNNELER_ID", "has space",
                  "Environment variable TUNNELER_ID='has space' is not a valid Id= value: " },
                { SPIFFE_ROLE_TUNNELER, "TRUST_DOMAIN", "Example.ORG",
                  "Environment variable TRUST_DOMAIN='Example.ORG' is not a valid trust domain: " },
                { SPIFFE_ROLE_TUNNELER, "CONTROLLER_ADDR", "ctl.example:8443,0.0.0.0:1",
                  "Environment variable CONTROLLER_ADDR='ctl.example:8443,0.0.0.0:1' is not a valid list "
                  "of controller addresses: Invalid argument\n" },
                { SPIFFE_ROLE_TUNNELER, "CONTROLLER_ADDR", " , ",
                  "Environment variable CONTROLLER_ADDR=' , ' lists no address.\n" },
                { SPIFFE_ROLE_TUNNELER, "CONTROLLER_ADDR", "a:1 b:1 c:1 d:1 e:1 f:1 g:1 h:1 i:1",
                  "is not a valid list of controller addresses: Argument list too long\n" },
                { SPIFFE_ROLE_CONNECTOR, "CONTROLLER_CA_PATH", "ca.pem",
                  "Environment variable CONTROLLER_CA_PATH='ca.pem' is not a valid ControllerCAFile= "
                  "value: Invalid argument\n" },
                { SPIFFE_ROLE_CONNECTOR, "CONNECTOR_ADDR", "0.0.0.0:8444",
                  "Environment variable CONNECTOR_ADDR='0.0.0.0:8444' is not a valid DataPlaneAddress= " },
                { SPIFFE_ROLE_CONNECTOR, "CREDENTIALS_DIRECTORY", "relative",
                  "Failed to look up credential CONTROLLER_CA: Invalid argument\n" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                AgentConfig c = { .id = (char *) "untouched" };
                const char *out;
                int r;

                CASE("%s=%s", table[i].var, table[i].value);
                env_clear();
                ASSERT_TRUE(setenv(table[i].var, table[i].value, 1) == 0);
                capture_begin();
                r = agent_config_load(table[i].role, dir_new(), &c);
                out = test_capture_stderr_end();
                ASSERT_ERROR(r, EINVAL);
                ASSERT_STRSTR(out, table[i].error);
                ASSERT_EQ(count_lines(out), 1);
                ASSERT_STREQ(c.id, "untouched");
        }
}

TEST(cross_field_rules_name_the_key) {
        static const struct {
                const char *text;
                const char *error; /* NULL: valid */
        } table[] = {
                { "[Renewal]\nJitter=30%\n",
                  "[Renewal] Jitter=30% must be less than RenewAt=30%, or renewal could come too late." },
                { "[Renewal]\nRenewAt=5%\n",
                  "[Renewal] Jitter=10% must be less than RenewAt=5%, or renewal could come too late." },
                { "[Renewal]\nRenewAt=90%\n", "[Renewal] RenewAt=90% plus Jitter=10% must be below 100%." },
                { "[Renewal]\nRenewAt=60%\nJitter=45%\n",
                  "[Renewal] RenewAt=60% plus Jitter=45% must be below 100%." },
                { "[Reconnect]\nBackoffBase=2min\n",
                  "[Reconnect] BackoffCap=1min must not be shorter than BackoffBase=2min." },
                { "[Reconnect]\nBackoffCap=999ms\n",
                  "[Reconnect] BackoffCap=999ms must not be shorter than BackoffBase=1s." },
                /* The boundaries, just inside. */
                { "[Renewal]\nRenewAt=11%\n", NULL },
                { "[Renewal]\nRenewAt=89%\n", NULL },
                { "[Renewal]\nRenewAt=1%\nJitter=0%\n", NULL },
                { "[Renewal]\nRenewAt=99%\nJitter=0%\n", NULL },
                { "[Reconnect]\nBackoffBase=1min\nBackoffCap=1min\n", NULL },
                { "[Reconnect]\nBackoffBase=1us\nBackoffCap=1d\nHealthyAfter=1d\n", NULL },
        };

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                AgentConfig c = { .id = (char *) "untouched" };
                const char *dir = dir_new(), *out;
                int r;

                CASE("%s", table[i].text);
                put_str(dir, "tunneler.conf", table[i].text);
                capture_begin();
                r = agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c);
                out = test_capture_stderr_end();
                if (!table[i].error) {
                        ASSERT_EQ(r, 0);
                        ASSERT_STREQ(out, "");
                        agent_config_done(&c);
                        continue;
                }
                ASSERT_ERROR(r, EINVAL);
                ASSERT_STRSTR(out, table[i].error);
                ASSERT_STRSTR(out, "Invalid tunneler configuration.\n");
                ASSERT_EQ(count_lines(out), 2);
                /* ret is untouched on failure. */
                ASSERT_STREQ(c.id, "untouched");
        }
}

/* Breaks one field of a valid connector configuration, as a caller applying options might. */
static const char *break_field(size_t i, AgentConfig *c) {
        switch (i) {
        case 0:
                free(c->id);
                c->id = strdup("a/b");
                return "[Agent] Id='a/b' is not a valid id.";
        case 1:
                c->trust_domain = strdup("A.B");
                return "[Agent] TrustDomain='A.B' is not a valid trust domain: ";
        case 2:
                c->controller_ca_file = strdup("ca.pem");
                return "[Agent] ControllerCAFile='ca.pem' is not an absolute path.";
        case 3:
                c->key_type = _KEY_TYPE_MAX;
                return "[Agent] KeyType= is not a known key type.";
        case 4:
                c->state_directory = mfree(c->state_directory);
                return "[Agent] StateDirectory='n/a' is not an absolute path.";
        case 5:
                free(c->health_listen);
                c->health_listen = strdup("10.0.0.1:1");
                return "[Health] Listen='10.0.0.1:1' is not a valid loopback IP:port.";
        case 6:
                c->health_listen = mfree(c->health_listen);
                return "[Health] Listen= is not set.";
        case 7:
                free(c->data_plane_listen);
                c->data_plane_listen = strdup("x.example:1");
                return "[Connector] DataPlaneListen='x.example:1' is not a valid IP:port.";
        case 8:
                c->data_plane_address = strdup("[::]:1");
                return "[Connector] DataPlaneAddress='[::]:1' is not a valid host:port.";
        case 9:
                c->renew_at_percent = 0;
                return "[Renewal] RenewAt=0% is outside 1%..99%.";
        case 10:
                c->renew_jitter_percent = 100;
                return "[Renewal] Jitter=100% must be less than RenewAt=30%";
        case 11:
                c->healthy_after = 0;
                return "[Reconnect] HealthyAfter=0 is outside 1us..1d.";
        case 12:
                c->healthy_after = USEC_INFINITY;
                return "[Reconnect] HealthyAfter=infinity is outside 1us..1d.";
        default:
                return NULL;
        }
}

TEST(check_catches_fields_set_directly) {
        const char *error;

        env_clear();
        for (size_t i = 0;; i++) {
                _cleanup_(agent_config_done) AgentConfig c = {};
                const char *out;

                ASSERT_OK(agent_config_init(SPIFFE_ROLE_CONNECTOR, &c));
                ASSERT_OK(agent_config_check(&c));
                error = break_field(i, &c);
                if (!error)
                        break;
                CASE("%s", error);
                capture_begin();
                ASSERT_ERROR(agent_config_check(&c), EINVAL);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, error);
                ASSERT_EQ(count_lines(out), 1);
        }
}

TEST(set_for_the_command_line) {
        _cleanup_(agent_config_done) AgentConfig c = {};
        const char *dir = dir_new();

        env_clear();
        put_str(dir, "connector.conf", "[Agent]\nController=file.example:1\n");
        ASSERT_TRUE(setenv("CONNECTOR_ID", "from-env", 1) == 0);
        ASSERT_EQ(agent_config_load(SPIFFE_ROLE_CONNECTOR, dir, &c), 0);

        /* The command line wins over the environment. */
        ASSERT_OK(agent_config_set(&c, "Agent", "Id", "from-argv"));
        ASSERT_STREQ(c.id, "from-argv");
        /* Lists append like a configuration line; "" first replaces. */
        ASSERT_OK(agent_config_set(&c, "Agent", "Controller", "argv.example:2"));
        ASSERT_STREQ(join(c.controllers), "file.example:1,argv.example:2");
        ASSERT_OK(agent_config_set(&c, "Agent", "Controller", ""));
        ASSERT_NULL(c.controllers);
        ASSERT_OK(agent_config_set(&c, "Agent", "Controller", "argv.example"));
        ASSERT_STREQ(join(c.controllers), "argv.example:8443");
        ASSERT_OK(agent_config_set(&c, "Agent", "StateDirectory", "/tmp/ztna"));
        ASSERT_STREQ(c.state_directory, "/tmp/ztna");
        /* NULL is an empty assignment: back to the default. */
        ASSERT_OK(agent_config_set(&c, "Health", "Listen", NULL));
        ASSERT_STREQ(c.health_listen, "127.0.0.1:8445");

        /* A bad value leaves the field as it was, and nothing is logged. */
        capture_begin();
        ASSERT_ERROR(agent_config_set(&c, "Agent", "Id", "a b"), EINVAL);
        ASSERT_ERROR(agent_config_set(&c, "Agent", "TrustDomain", "UPPER.example"), EINVAL);
        ASSERT_ERROR(agent_config_set(&c, "Reconnect", "BackoffCap", "0"), ERANGE);
        ASSERT_ERROR(agent_config_set(&c, "Agent", "Colour", "blue"), ENOENT);
        ASSERT_ERROR(agent_config_set(&c, "Tunneler", "DataPlaneListen", "127.0.0.1:1"), ENOENT);
        ASSERT_STREQ(test_capture_stderr_end(), "");
        ASSERT_STREQ(c.id, "from-argv");
        ASSERT_NULL(c.trust_domain);
        ASSERT_UEQ(c.backoff_cap, 60 * USEC_PER_SEC);

        /* Cross-field rules are checked again after the command line. */
        ASSERT_OK(agent_config_set(&c, "Reconnect", "BackoffBase", "2min"));
        capture_begin();
        ASSERT_ERROR(agent_config_check(&c), EINVAL);
        ASSERT_STRSTR(test_capture_stderr_end(),
                      "BackoffCap=1min must not be shorter than BackoffBase=2min");
}

TEST(list_limits) {
        char text[4096];
        const char *dir, *out;
        size_t n;

        env_clear();
        CASE("controllers: the maximum, duplicates dropped, then one more");
        {
                _cleanup_(agent_config_done) AgentConfig c = {};

                dir = dir_new();
                put_str(dir, "tunneler.conf",
                        "[Agent]\n"
                        "Controller=a:1 b:1 c:1 d:1 e:1 f:1\n"
                        "Controller=g:1 A:1 h\n"           /* 3: 8 in all, a duplicate dropped */
                        "Controller=i:1\n");               /* 4: a 9th */
                capture_begin();
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 1);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, "/tunneler.conf:4: Failed to parse Controller= value 'i:1', ignoring: "
                                   "Argument list too long\n");
                ASSERT_STREQ(join(c.controllers), "a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:8443");
                ASSERT_UEQ(strv_length(c.controllers), AGENT_CONTROLLERS_MAX);
        }

        CASE("labels: the maximum, replacing one is fine, then one more");
        {
                _cleanup_(agent_config_done) AgentConfig c = {};

                dir = dir_new();
                n = (size_t) snprintf(text, sizeof(text), "[Agent]");
                for (unsigned i = 1; i <= AGENT_LABELS_MAX; i++)
                        n += (size_t) snprintf(text + n, sizeof(text) - n, "%sk%u=v", (i - 1) % 8 == 0 ?
                                               "\nLabels=" : " ", i);
                snprintf(text + n, sizeof(text) - n, "\nLabels=k1=new\nLabels=k33=v\n");
                put_str(dir, "tunneler.conf", text);
                capture_begin();
                ASSERT_EQ(agent_config_load(SPIFFE_ROLE_TUNNELER, dir, &c), 1);
                out = test_capture_stderr_end();
                ASSERT_STRSTR(out, "Failed to parse Labels= value 'k33=v', ignoring: Argument list too "
                                   "long\n");
                ASSERT_UEQ(strv_length(c.labels), AGENT_LABELS_MAX);
                ASSERT_STREQ(c.labels[0], "k1=new");
                ASSERT_STREQ(c.labels[AGENT_LABELS_MAX - 1], "k32=v");
        }

        CASE("label length");
        {
                _cleanup_(agent_config_done) AgentConfig c = {};
                char label[AGENT_LABEL_MAX + 2];

                ASSERT_OK(agent_config_init(SPIFFE_ROLE_TUNNELER, &c));
                memset(label, 'x', sizeof(label) - 1);
                label[sizeof(label) - 1] = '\0';
                label[1] = '=';
                /* One byte too long, then exactly the maximum. */
                ASSERT_ERROR(agent_config_set(&c, "Agent", "Labels", label), E2BIG);
                ASSERT_NULL(c.labels);
                label[AGENT_LABEL_MAX] = '\0';
                ASSERT_OK(agent_config_set(&c, "Agent", "Labels", label));
                ASSERT_UEQ(strlen(c.labels[0]), AGENT_LABEL_MAX);
        }
}

/* Tokens. */

#define TOKEN "ztna1-AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8w"

static const char *creds_with_token(const char *content, size_t size) {
        const char *creds = dir_new();

        put(creds, "ENROLLMENT_TOKEN", content, size);
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", creds, 1) == 0);
        return creds;
}

static const char *token_file(const char *content, size_t size, mode_t mode) {
        const char *path = put(dir_new(), "token", content, size);

        ASSERT_TRUE(chmod(path, mode) == 0);
        return path;
}

TEST(token_source_names) {
        ASSERT_STREQ(agent_token_source_to_string(AGENT_TOKEN_SOURCE_FILE), "file");
        ASSERT_STREQ(agent_token_source_to_string(AGENT_TOKEN_SOURCE_STDIN), "stdin");
        ASSERT_STREQ(agent_token_source_to_string(AGENT_TOKEN_SOURCE_CREDENTIAL), "credential");
        ASSERT_STREQ(agent_token_source_to_string(AGENT_TOKEN_SOURCE_ENVIRONMENT), "environment");
        ASSERT_NULL(agent_token_source_to_string(_AGENT_TOKEN_SOURCE_MAX));
        ASSERT_NULL(agent_token_source_to_string(_AGENT_TOKEN_SOURCE_INVALID));
}

TEST(token_sources_in_order) {
        _cleanup_erase_free_ char *t = NULL;
        AgentTokenSource source = _AGENT_TOKEN_SOURCE_INVALID;
        const char *file = token_file("ztna1-from-file\n", 16, 0600);

        env_clear();
        creds_with_token("ztna1-from-credential", 21);
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", "ztna1-from-env", 1) == 0);

        CASE("the file wins over everything");
        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, file, &t, &source), 0);
        ASSERT_STREQ(t, "ztna1-from-file");
        ASSERT_EQ(source, AGENT_TOKEN_SOURCE_FILE);
        t = erase_and_free_string(t);

        CASE("then the credential");
        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, &source), 0);
        ASSERT_STREQ(t, "ztna1-from-credential");
        ASSERT_EQ(source, AGENT_TOKEN_SOURCE_CREDENTIAL);
        t = erase_and_free_string(t);
        /* The variable is left alone when it was not used. */
        ASSERT_STREQ(getenv("ENROLLMENT_TOKEN"), "ztna1-from-env");

        CASE("then the variable, when the directory lacks the credential");
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", dir_new(), 1) == 0);
        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_TUNNELER, NULL, &t, &source), 0);
        ASSERT_STREQ(t, "ztna1-from-env");
        ASSERT_EQ(source, AGENT_TOKEN_SOURCE_ENVIRONMENT);
        t = erase_and_free_string(t);
        ASSERT_NULL(getenv("ENROLLMENT_TOKEN"));

        CASE("then nothing");
        source = _AGENT_TOKEN_SOURCE_INVALID;
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, NULL, &t, &source), ENOENT);
        ASSERT_NULL(t);
        ASSERT_EQ(source, _AGENT_TOKEN_SOURCE_INVALID);

        CASE("the variable without any credentials directory; ret_source may be NULL");
        ASSERT_TRUE(unsetenv("CREDENTIALS_DIRECTORY") == 0);
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", " ztna1-from-env2\n", 1) == 0);
        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_TUNNELER, NULL, &t, NULL), 0);
        ASSERT_STREQ(t, "ztna1-from-env2");
        t = erase_and_free_string(t);

        CASE("an empty variable is no token");
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", "", 1) == 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, NULL, &t, NULL), ENOENT);
}

TEST(token_explicit_sources_do_not_fall_through) {
        _cleanup_erase_free_ char *t = NULL;
        AgentTokenSource source = _AGENT_TOKEN_SOURCE_INVALID;

        env_clear();
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", TOKEN, 1) == 0);

        CASE("a missing file");
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, test_path("missing"), &t, &source), ENOENT);
        CASE("a directory");
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, dir_new(), &t, &source), EISDIR);
        CASE("a FIFO");
        ASSERT_TRUE(mkfifo(test_path("fifo"), 0600) == 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, test_path("fifo"), &t, &source), EBADFD);
        CASE("an empty file");
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, token_file("", 0, 0600), &t, &source), ENODATA);
        CASE("an empty credential");
        creds_with_token("\n", 1);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, &source), ENODATA);
        CASE("a relative credentials directory");
        ASSERT_TRUE(setenv("CREDENTIALS_DIRECTORY", "relative", 1) == 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, &source), EINVAL);

        ASSERT_NULL(t);
        ASSERT_EQ(source, _AGENT_TOKEN_SOURCE_INVALID);
        /* None of these got to the variable. */
        ASSERT_STREQ(getenv("ENROLLMENT_TOKEN"), TOKEN);
}

TEST(token_whitespace_and_content) {
        static const struct {
                const char *content;
                const char *expected; /* NULL: error */
                int error;
        } table[] = {
                { TOKEN, TOKEN, 0 },
                { TOKEN "\n", TOKEN, 0 },
                { TOKEN "\r\n", TOKEN, 0 },
                { TOKEN "\n\n", TOKEN, 0 },
                { "  \t" TOKEN " \n", TOKEN, 0 },
                { "\n\n" TOKEN "\n \t\n", TOKEN, 0 },
                { "", NULL, ENODATA },
                { "\n", NULL, ENODATA },
                { " \t\r\n \n", NULL, ENODATA },
                { "ztna1-AQID BAUG\n", NULL, EBADMSG },
                { "ztna1-AQID\tBAUG\n", NULL, EBADMSG },
                { "ztna1-AQID\nBAUG\n", NULL, EBADMSG },
                { "ztna1-AQID\x01" "BAUG", NULL, EBADMSG },
                { "ztna1-AQID\x7f", NULL, EBADMSG },
                { "ztna1-\xc3\xa9t\xc3\xa9", NULL, EBADMSG },
        };

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                static const char *const kinds[] = { "file", "credential", "environment" };

                for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                        _cleanup_erase_free_ char *t = NULL;
                        const char *file = NULL;
                        int r;

                        CASE("%s: '%s'", kinds[k], table[i].content);
                        env_clear();
                        if (k == 0)
                                file = token_file(table[i].content, strlen(table[i].content), 0600);
                        else if (k == 1)
                                creds_with_token(table[i].content, strlen(table[i].content));
                        else if (table[i].content[0] != '\0')
                                ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", table[i].content, 1) == 0);
                        else
                                continue; /* an empty variable is "no token", tested above */

                        r = agent_token_read(SPIFFE_ROLE_CONNECTOR, file, &t, NULL);
                        if (table[i].expected) {
                                ASSERT_EQ(r, 0);
                                ASSERT_STREQ(t, table[i].expected);
                        } else {
                                ASSERT_ERROR(r, table[i].error);
                                ASSERT_NULL(t);
                        }
                        /* Whatever the outcome, the variable does not survive being read. */
                        ASSERT_NULL(getenv("ENROLLMENT_TOKEN"));
                }
        }
}

TEST(token_nul_bytes) {
        static const char content[] = "ztna1-AQID\0BAUG\n";
        _cleanup_erase_free_ char *t = NULL;

        env_clear();
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, token_file(content, sizeof(content) - 1, 0600),
                                      &t, NULL), EBADMSG);
        creds_with_token(content, sizeof(content) - 1);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, NULL), EBADMSG);
        ASSERT_NULL(t);
}

TEST(token_size_limits) {
        _cleanup_free_ char *buf = NULL;
        size_t max = AGENT_TOKEN_INPUT_MAX;

        env_clear();
        buf = ASSERT_NOT_NULL(malloc(max + 2));

        /* The token itself: exactly TOKEN_STRING_MAX, then one more. */
        memset(buf, 'A', TOKEN_STRING_MAX);
        buf[TOKEN_STRING_MAX] = '\n';
        for (int extra = 0; extra <= 1; extra++) {
                _cleanup_erase_free_ char *t = NULL;
                size_t n = TOKEN_STRING_MAX + (size_t) extra;

                CASE("token of %zu bytes", n);
                memset(buf, 'A', n);
                buf[n] = '\n';
                if (extra == 0) {
                        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, token_file(buf, n + 1, 0600), &t,
                                                   NULL), 0);
                        ASSERT_UEQ(strlen(t), TOKEN_STRING_MAX);
                } else
                        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_CONNECTOR, token_file(buf, n + 1, 0600),
                                                      &t, NULL), EMSGSIZE);
        }

        /* The input: surrounding whitespace counts, up to AGENT_TOKEN_INPUT_MAX. */
        memset(buf, ' ', max + 1);
        memcpy(buf, TOKEN, strlen(TOKEN));
        for (int extra = 0; extra <= 1; extra++) {
                static const char *const kinds[] = { "file", "credential", "environment" };

                for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                        _cleanup_erase_free_ char *t = NULL;
                        const char *file = NULL;
                        size_t n = max + (size_t) extra;
                        int r;

                        CASE("%s: input of %zu bytes", kinds[k], n);
                        env_clear();
                        if (k == 0)
                                file = token_file(buf, n, 0600);
                        else if (k == 1)
                                creds_with_token(buf, n);
                        else {
                                buf[n] = '\0';
                                ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", buf, 1) == 0);
                                buf[n] = ' ';
                        }
                        r = agent_token_read(SPIFFE_ROLE_CONNECTOR, file, &t, NULL);
                        if (extra == 0) {
                                ASSERT_EQ(r, 0);
                                ASSERT_STREQ(t, TOKEN);
                        } else
                                ASSERT_ERROR(r, EFBIG);
                }
        }
}

/* Replaces stdin with the read end of a pipe that holds content (written before reading: it fits in the
 * pipe's buffer). */
static void stdin_from_pipe(const char *content, size_t size) {
        int p[2];

        ASSERT_TRUE(pipe(p) == 0);
        ASSERT_TRUE(write(p[1], content, size) == (ssize_t) size);
        ASSERT_TRUE(close(p[1]) == 0);
        ASSERT_TRUE(dup2(p[0], STDIN_FILENO) == STDIN_FILENO);
        ASSERT_TRUE(close(p[0]) == 0);
}

TEST(token_from_stdin) {
        _cleanup_erase_free_ char *t = NULL;
        AgentTokenSource source = _AGENT_TOKEN_SOURCE_INVALID;
        char big[AGENT_TOKEN_INPUT_MAX + 1];

        env_clear();
        /* stdin wins over the credential and the variable, like any explicit file. */
        creds_with_token("ztna1-from-credential", 21);
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", "ztna1-from-env", 1) == 0);

        CASE("a pipe");
        stdin_from_pipe("  " TOKEN "\r\n", strlen(TOKEN) + 4);
        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_TUNNELER, "-", &t, &source), 0);
        ASSERT_STREQ(t, TOKEN);
        ASSERT_EQ(source, AGENT_TOKEN_SOURCE_STDIN);
        t = erase_and_free_string(t);
        ASSERT_STREQ(getenv("ENROLLMENT_TOKEN"), "ztna1-from-env");

        CASE("an empty pipe");
        stdin_from_pipe("", 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, "-", &t, NULL), ENODATA);

        CASE("an oversized pipe");
        memset(big, 'A', sizeof(big));
        stdin_from_pipe(big, sizeof(big));
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, "-", &t, NULL), EFBIG);

        CASE("/dev/null");
        {
                int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

                ASSERT_TRUE(fd >= 0 && dup2(fd, STDIN_FILENO) == STDIN_FILENO);
                close(fd);
                ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, "-", &t, NULL), ENODATA);
        }

        CASE("closed");
        ASSERT_TRUE(close(STDIN_FILENO) == 0);
        ASSERT_ERROR(agent_token_read(SPIFFE_ROLE_TUNNELER, "-", &t, NULL), EBADF);
        ASSERT_NULL(t);
}

TEST(token_from_a_slow_nonblocking_pipe) {
        _cleanup_erase_free_ char *t = NULL;
        int p[2], status;
        pid_t pid;

        env_clear();
        ASSERT_TRUE(pipe2(p, O_NONBLOCK) == 0);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                /* The token arrives in pieces, with a pause in between: the reader must wait for EOF. */
                close(p[0]);
                if (write(p[1], "ztna1-AQID", 10) != 10)
                        _exit(1);
                usleep(100 * 1000);
                if (write(p[1], "BAUG\n", 5) != 5)
                        _exit(1);
                _exit(0);
        }
        ASSERT_TRUE(close(p[1]) == 0);
        ASSERT_TRUE(dup2(p[0], STDIN_FILENO) == STDIN_FILENO);
        ASSERT_TRUE(close(p[0]) == 0);

        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, "-", &t, NULL), 0);
        ASSERT_STREQ(t, "ztna1-AQIDBAUG");
        ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(token_file_permissions) {
        static const struct {
                mode_t mode;
                int expected;
        } table[] = {
                { 0600, 0 },
                { 0400, 0 },
                { 0700, 0 },
                { 0640, AGENT_TOKEN_FILE_ACCESSIBLE },
                { 0604, AGENT_TOKEN_FILE_ACCESSIBLE },
                { 0644, AGENT_TOKEN_FILE_ACCESSIBLE },
                /* Writable by others: anyone could substitute a token naming their own controller. */
                { 0620, AGENT_TOKEN_FILE_ACCESSIBLE },
                { 0602, AGENT_TOKEN_FILE_ACCESSIBLE },
                { 0601, AGENT_TOKEN_FILE_ACCESSIBLE },
        };

        env_clear();
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_erase_free_ char *t = NULL;
                const char *path = token_file(TOKEN "\n", strlen(TOKEN) + 1, table[i].mode);
                int fd;

                CASE("mode %04o", (unsigned) table[i].mode);
                ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, path, &t, NULL), table[i].expected);
                ASSERT_STREQ(t, TOKEN);
                t = erase_and_free_string(t);

                /* The same file redirected to stdin ("< token") gets the same flag. */
                fd = open(path, O_RDONLY | O_CLOEXEC);
                ASSERT_TRUE(fd >= 0 && dup2(fd, STDIN_FILENO) == STDIN_FILENO);
                close(fd);
                ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, "-", &t, NULL), table[i].expected);
                ASSERT_STREQ(t, TOKEN);
        }

        CASE("mode 0600 but owned by another user");
        if (geteuid() == 0) {
                _cleanup_erase_free_ char *t = NULL;
                const char *path = token_file(TOKEN "\n", strlen(TOKEN) + 1, 0600);

                ASSERT_TRUE(chown(path, 65534, 65534) == 0);
                ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, path, &t, NULL), AGENT_TOKEN_FILE_ACCESSIBLE);
                ASSERT_STREQ(t, TOKEN);
        }

        CASE("a credential is never flagged");
        {
                _cleanup_erase_free_ char *t = NULL;
                const char *creds = creds_with_token(TOKEN, strlen(TOKEN));
                char path[1024];

                snprintf(path, sizeof(path), "%s/ENROLLMENT_TOKEN", creds);
                ASSERT_TRUE(chmod(path, 0644) == 0);
                ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, NULL), 0);
        }
}

TEST(token_environment_is_wiped) {
        _cleanup_erase_free_ char *t = NULL;
        char *before;

        env_clear();
        ASSERT_TRUE(setenv("ENROLLMENT_TOKEN", TOKEN, 1) == 0);
        before = getenv("ENROLLMENT_TOKEN");
        ASSERT_NOT_NULL(before);

        ASSERT_EQ(agent_token_read(SPIFFE_ROLE_CONNECTOR, NULL, &t, NULL), 0);
        ASSERT_STREQ(t, TOKEN);
        ASSERT_NULL(getenv("ENROLLMENT_TOKEN"));
        /* glibc keeps setenv() strings alive, so the old bytes can be looked at: they are zeroes, not the
         * token (for a variable inherited at exec, they are what /proc/self/environ shows). */
        for (size_t i = 0; i < strlen(TOKEN); i++)
                ASSERT_EQ(before[i], '\0');
        for (char **e = environ; *e; e++)
                ASSERT_FALSE(strstr(*e, "ztna1-"));
}
