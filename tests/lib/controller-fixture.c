/* SPDX-License-Identifier: Apache-2.0 */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "controller-fixture.h"
#include "controller-store.h"
#include "crypto-token.h"
#include "hexdecoct.h"
#include "macro.h"
#include "tests.h"
#include "time-util.h"

uint16_t controller_fixture_free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &sa, sizeof(sa)));
        ASSERT_OK(getsockname(fd, (struct sockaddr *) &sa, &len));
        close(fd);
        return ntohs(sa.sin_port);
}

void controller_fixture_init(ControllerFixture *c, const char *extra) {
        const char *build = getenv("ZTNA_BUILD_DIR");
        char conf[3 * PATH_MAX + 512], *out, *pin_line;
        size_t n = 0;

        ASSERT_NOT_NULL(build);
        snprintf(c->binary, sizeof(c->binary), "%s/src/controller/ztna-controller", build);
        ASSERT_OK(access(c->binary, X_OK));
        snprintf(c->confdir, sizeof(c->confdir), "%s", test_path("etc"));
        snprintf(c->db, sizeof(c->db), "%s", test_path("controller.db"));
        ASSERT_OK(mkdir(c->confdir, 0700));
        c->port = controller_fixture_free_port();
        snprintf(c->address, sizeof(c->address), "127.0.0.1:%u", c->port);
        c->pid = 0;

        ASSERT_LT(strlen(extra ?: ""), 256);
        snprintf(conf, sizeof(conf),
                 "[Controller]\nTrustDomain=" CONTROLLER_FIXTURE_TRUST_DOMAIN "\nId=ctl-1\n\n"
                 "[Network]\nListenGRPC=%s\nAdvertisedAddresses=%s\nListenAdmin=127.0.0.1:%u\n\n"
                 "[Certificates]\nMinimumCertificateLifetime=10s\n%s\n"
                 "[Storage]\nDatabase=%s\nKeyFile=%s\n",
                 c->address, c->address, controller_fixture_free_port(), extra ?: "", c->db, test_path("kek"));
        char *path = test_path("etc/controller.conf");
        test_write_file(path, conf, strlen(conf));

        unsetenv("NOTIFY_SOCKET");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("CREDENTIALS_DIRECTORY");
        unsetenv("TRUST_DOMAIN");
        char confdir_arg[PATH_MAX + 16];
        snprintf(confdir_arg, sizeof(confdir_arg), "--confdir=%s", c->confdir);
        ASSERT_EQ(TEST_RUN(&out, c->binary, confdir_arg, "init"), 0);

        pin_line = strstr(out, "Root CA SPKI pin: ");
        ASSERT_NOT_NULL(pin_line);
        pin_line += strlen("Root CA SPKI pin: ");
        pin_line[strcspn(pin_line, "\n")] = '\0';
        _cleanup_free_ void *pin = NULL;
        ASSERT_OK(unhexmem(pin_line, strlen(pin_line), &pin, &n));
        ASSERT_EQ(n, 32);
        memcpy(c->pin, pin, 32);
}

void controller_fixture_start(ControllerFixture *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char confdir_arg[PATH_MAX + 16], buf[4096];
        const char *notify = test_path("notify.socket");
        usec_t deadline;
        int fd, status;

        ASSERT_LT(strlen(notify), sizeof(sa.sun_path));
        strcpy(sa.sun_path, notify);
        (void) unlink(notify);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_OK(bind(fd, (struct sockaddr *) &sa, sizeof(sa)));
        snprintf(confdir_arg, sizeof(confdir_arg), "--confdir=%s", c->confdir);

        c->pid = fork();
        ASSERT_TRUE(c->pid >= 0);
        if (c->pid == 0) {
                int log_fd = open(test_path("controller.log"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

                /* A failing case must not leave its controller behind. */
                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (log_fd < 0 || null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
                        _exit(127);
                setenv("ZTNA_NO_BUS", "1", 1);
                setenv("NOTIFY_SOCKET", notify, 1);
                execl(c->binary, c->binary, confdir_arg, "run", (char *) NULL);
                _exit(127);
        }

        deadline = now(CLOCK_MONOTONIC) + CONTROLLER_FIXTURE_READY_TIMEOUT_MS * USEC_PER_MSEC;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t k;

                ASSERT_EQ(waitpid(c->pid, &status, WNOHANG), 0);
                ASSERT_LT(now(CLOCK_MONOTONIC), deadline);
                if (poll(&p, 1, 200) <= 0)
                        continue;
                k = recv(fd, buf, sizeof(buf) - 1, 0);
                ASSERT_TRUE(k >= 0);
                buf[k] = '\0';
                if (strstr(buf, "READY=1"))
                        break;
        }
        close(fd);
}

void controller_fixture_stop(ControllerFixture *c) {
        controller_fixture_stop_in(c, NULL);
}

void controller_fixture_stop_in(ControllerFixture *c, sd_event *e) {
        usec_t deadline = now(CLOCK_MONOTONIC) + CONTROLLER_FIXTURE_STOP_TIMEOUT_MS * USEC_PER_MSEC;
        int status = 0;
        pid_t p;

        ASSERT_TRUE(c->pid > 0);
        ASSERT_OK(kill(c->pid, SIGTERM));
        while ((p = waitpid(c->pid, &status, WNOHANG)) == 0) {
                if (now(CLOCK_MONOTONIC) > deadline) {
                        (void) kill(c->pid, SIGKILL);
                        test_fail(__FILE__, __LINE__, "controller did not exit within 15 s of SIGTERM");
                }
                if (e)
                        ASSERT_OK(sd_event_run(e, 20 * USEC_PER_MSEC));
                else
                        usleep(20 * 1000);
        }
        ASSERT_EQ(p, c->pid);
        c->pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                test_fail(__FILE__, __LINE__, "controller exited with status %i: %s", status,
                          test_read_file(test_path("controller.log"), NULL));
}

void controller_fixture_add_token(ControllerFixture *c, SpiffeRole role, char **ret, char **ret_wrong_pin) {
        controller_fixture_add_token_bound(c, role, NULL, ret, ret_wrong_pin);
}

void controller_fixture_add_token_bound(ControllerFixture *c, SpiffeRole role, const char *bound_id, char **ret,
                                        char **ret_wrong_pin) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(token_freep) EnrollmentToken *t = NULL;
        StoreToken st = {
                .role = role,
                .bound_id = (char *) bound_id,
                .created_by = (char *) "test",
                .created_at = now(CLOCK_REALTIME),
                .expires_at = now(CLOCK_REALTIME) + USEC_PER_HOUR,
        };

        ASSERT_OK(token_generate(c->pin, (char *[]) { c->address, NULL }, &t));
        memcpy(st.id, t->id, sizeof(st.id));
        ASSERT_OK(token_secret_hash(t->secret, st.secret_hash));
        ASSERT_OK(store_open_sqlite(c->db, &s));
        ASSERT_OK(store_token_create(s, &st));
        ASSERT_OK(token_to_string(t, ret));
        if (ret_wrong_pin) {
                t->ca_pin[0] ^= 0xff;
                ASSERT_OK(token_to_string(t, ret_wrong_pin));
        }
}
