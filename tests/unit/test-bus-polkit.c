/* SPDX-License-Identifier: Apache-2.0 */

/* bus_verify_polkit_async() against a real dbus-daemon and python-dbusmock's polkitd, with the method
 * handler in this process (as root, like the daemons) and the caller in a child that switches to the
 * nobody user first, so that the euid-0 shortcut does not hide polkit. Every helper process is started
 * with PR_SET_PDEATHSIG and stopped by PID; everything lives in test_tmpdir(). */

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "bus-polkit.h"
#include "time-util.h"
#include "tests.h"

#define DBUS_DAEMON "/usr/bin/dbus-daemon"
/* Debian's python3-dbusmock lives in the system python, not in whatever python3 is first on PATH. */
#define PYTHON "/usr/bin/python3"

#define TEST_ACTION "org.ztna.test.mutate"
#define TEST_OTHER_ACTION "org.ztna.test.other"
#define TEST_PATH "/org/ztna/test"
#define TEST_INTERFACE "org.ztna.Test"
#define UID_NOBODY ((uid_t) 65534)

#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define MOCK_INTERFACE "org.freedesktop.DBus.Mock"

#define STARTUP_TIMEOUT_USEC (15 * USEC_PER_SEC)
#define LOOP_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define CLIENT_CALLS_MAX 128U
#define CLIENT_OUTPUT_MAX 32768U

typedef enum MockKind {
        MOCK_NONE,      /* no polkit on the bus */
        MOCK_POLKITD,   /* dbusmock's polkitd template: allows what SetAllowed() lists */
        MOCK_CHALLENGE, /* CheckAuthorization answers "challenge" unless AllowUserInteraction is set */
} MockKind;

typedef struct Fixture {
        char address[512];
        char service_name[128];
        pid_t dbus_pid, mock_pid;

        sd_event *event;
        sd_bus *service; /* the daemon side, attached to the event loop */
        sd_bus *control; /* drives the mock, synchronously */
        sd_bus_slot *object;
        PolkitRegistry *registry;

        /* What the handler asks polkit on the first dispatch and on the re-dispatch. */
        const char *action, *action_again;
        const char **details, **details_again;

        unsigned n_dispatches, n_asked, n_authorized, n_refused;
        int last_error;
        size_t max_queries;
        bool released;
} Fixture;

typedef struct ClientResult {
        char name[128];
        unsigned n_ok, n_errors;
        char errors[CLIENT_CALLS_MAX][128];
} ClientResult;

static int method_mutate(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Fixture *f = userdata;
        bool again = f->n_dispatches > 0;
        int r;

        f->n_dispatches++;

        r = bus_verify_polkit_async(m,
                                    again && f->action_again ? f->action_again : f->action,
                                    again && f->details_again ? f->details_again : f->details,
                                    &f->registry,
                                    error);
        f->max_queries = MAX(f->max_queries, polkit_registry_n_queries(f->registry));
        if (r < 0) {
                f->n_refused++;
                f->last_error = r;
                return r;
        }
        if (r == 0) {
                f->n_asked++;
                return 1;
        }

        f->n_authorized++;
        return sd_bus_reply_method_return(m, NULL);
}

static const sd_bus_vtable test_vtable[] = {
        SD_BUS_VTABLE_START(0),
        /* UNPRIVILEGED: authorization is polkit's job here, not sd-bus's CAP_SYS_ADMIN check. */
        SD_BUS_METHOD("Mutate", NULL, NULL, method_mutate, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static pid_t spawn(const char *const *argv, const char *const *envp, int stdout_fd,
                   const char *stderr_path) {
        pid_t parent = getpid(), pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                int fd;

                /* Dies with the test case, even when an assertion aborts it. */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(126);
                fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
                        _exit(126);
                if (stdout_fd >= 0 && dup2(stdout_fd, STDOUT_FILENO) < 0)
                        _exit(126);
                fd = open(stderr_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
                        _exit(126);
                execve(argv[0], (char *const *) argv, (char *const *) envp);
                _exit(127);
        }
        return pid;
}

static void process_stop(pid_t *pid) {
        if (*pid <= 0)
                return;
        (void) kill(*pid, SIGTERM);
        while (waitpid(*pid, NULL, 0) < 0)
                if (errno != EINTR)
                        break;
        *pid = 0;
}

static bool polkit_has_owner(Fixture *f) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int b = 0;

        ASSERT_OK(sd_bus_call_method(f->control, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "NameHasOwner", NULL, &reply, "s", POLKIT_NAME));
        ASSERT_OK(sd_bus_message_read(reply, "b", &b));
        return b;
}

static void mock_call(Fixture *f, const char *method, const char *types, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;
        int r;

        va_start(ap, types);
        r = sd_bus_call_methodv(f->control, POLKIT_NAME, POLKIT_PATH, MOCK_INTERFACE, method, &error, NULL,
                                types, ap);
        va_end(ap);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "Mock %s() failed: %s", method, strna(error.message));
}

static int bus_connect(const char *address, sd_bus **ret) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        r = sd_bus_set_address(bus, address);
        if (r < 0)
                return r;
        r = sd_bus_set_bus_client(bus, true);
        if (r < 0)
                return r;
        r = sd_bus_start(bus);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(bus);
        return 0;
}

static void require_tools(void) {
        if (access(DBUS_DAEMON, X_OK) < 0)
                test_skip("%s is not installed", DBUS_DAEMON);
        if (TEST_RUN(NULL, PYTHON, "-c", "import dbusmock") != 0)
                test_skip("python3-dbusmock is not installed for %s", PYTHON);
}

static void dbus_start(Fixture *f) {
        const char *argv[] = { DBUS_DAEMON, "--nofork", "--print-address", NULL, NULL };
        const char *envp[] = { "PATH=/usr/bin:/bin", NULL };
        char config[2048], arg[600];
        usec_t deadline = now(CLOCK_MONOTONIC) + STARTUP_TIMEOUT_USEC;
        size_t n = 0;
        int pipefd[2];

        /* The caller runs as nobody: the directory must be searchable and the socket writable for it.
         * dbus-daemon creates the socket world-writable; the directory is ours to open up. */
        ASSERT_OK(chmod(test_tmpdir(), 0755));

        /* Open to everyone: the dbus policy layer is tested with the daemons' own files; here only polkit
         * may decide. EXTERNAL auth is what carries the caller's uid to the bus. */
        snprintf(config, sizeof(config),
                 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                 " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                 "<busconfig>\n"
                 "  <listen>unix:path=%s</listen>\n"
                 "  <auth>EXTERNAL</auth>\n"
                 "  <policy context=\"default\">\n"
                 "    <allow user=\"*\"/>\n"
                 "    <allow own=\"*\"/>\n"
                 "    <allow send_destination=\"*\"/>\n"
                 "    <allow receive_sender=\"*\"/>\n"
                 "  </policy>\n"
                 "</busconfig>\n",
                 test_path("bus"));
        test_write_file(test_path("bus.conf"), config, strlen(config));
        snprintf(arg, sizeof(arg), "--config-file=%s", test_path("bus.conf"));
        argv[3] = arg;

        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        f->dbus_pid = spawn(argv, envp, pipefd[1], test_path("dbus-daemon.log"));
        close(pipefd[1]);

        /* The address line tells us the socket is listening. */
        while (!memchr(f->address, '\n', n)) {
                struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
                usec_t t = now(CLOCK_MONOTONIC);
                ssize_t k;

                if (t >= deadline || n >= sizeof(f->address) - 1)
                        test_fail(__FILE__, __LINE__, "dbus-daemon did not print its address");
                ASSERT_OK(poll(&p, 1, (int) ((deadline - t) / USEC_PER_MSEC) + 1));
                if (p.revents == 0)
                        continue;
                k = read(pipefd[0], f->address + n, sizeof(f->address) - 1 - n);
                if (k <= 0)
                        test_fail(__FILE__, __LINE__, "dbus-daemon exited: %s",
                                  test_read_file(test_path("dbus-daemon.log"), NULL));
                n += (size_t) k;
        }
        close(pipefd[0]);
        *strchr(f->address, '\n') = '\0';

        ASSERT_OK(bus_connect(f->address, &f->control));
}

static void mock_start(Fixture *f, MockKind kind) {
        const char *polkitd[] = { PYTHON, "-m", "dbusmock", "--template", "polkitd",
                                  "-l", test_path("mock.log"), NULL };
        const char *challenge[] = { PYTHON, "-m", "dbusmock", "--system", "-l", test_path("mock.log"),
                                    POLKIT_NAME, POLKIT_PATH, POLKIT_INTERFACE, NULL };
        char env_address[600];
        const char *envp[] = { "PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8", env_address, NULL };
        usec_t deadline = now(CLOCK_MONOTONIC) + STARTUP_TIMEOUT_USEC;

        if (kind == MOCK_NONE)
                return;

        snprintf(env_address, sizeof(env_address), "DBUS_SYSTEM_BUS_ADDRESS=%s", f->address);
        f->mock_pid = spawn(kind == MOCK_POLKITD ? polkitd : challenge, envp, -1, test_path("mock.stderr"));

        while (!polkit_has_owner(f)) {
                if (waitpid(f->mock_pid, NULL, WNOHANG) == f->mock_pid) {
                        f->mock_pid = 0;
                        test_fail(__FILE__, __LINE__, "dbusmock exited: %s",
                                  test_read_file(test_path("mock.stderr"), NULL));
                }
                if (now(CLOCK_MONOTONIC) >= deadline)
                        test_fail(__FILE__, __LINE__, "dbusmock did not claim %s", POLKIT_NAME);
                (void) usleep(20 * USEC_PER_MSEC);
        }

        if (kind == MOCK_CHALLENGE)
                /* Like polkitd for an auth_admin action with no agent: a challenge, unless the caller
                 * allowed interaction (args[3] is the flags), in which case the agent "succeeded". */
                mock_call(f, "AddMethod", "sssss", POLKIT_INTERFACE, "CheckAuthorization", "(sa{sv})sa{ss}us",
                          "(bba{ss})", "ret = (args[3] == 1, args[3] != 1, {})");
}

static void fixture_start(Fixture *f, MockKind kind) {
        const char *name;

        require_tools();
        *f = (Fixture) { .action = TEST_ACTION };

        dbus_start(f);
        mock_start(f, kind);

        ASSERT_OK(sd_event_new(&f->event));
        ASSERT_OK(bus_connect(f->address, &f->service));
        ASSERT_OK(sd_bus_attach_event(f->service, f->event, SD_EVENT_PRIORITY_NORMAL));
        ASSERT_OK(sd_bus_add_object_vtable(f->service, &f->object, TEST_PATH, TEST_INTERFACE, test_vtable, f));
        ASSERT_OK(sd_bus_get_unique_name(f->service, &name));
        snprintf(f->service_name, sizeof(f->service_name), "%s", name);
}

static void fixture_reset_counters(Fixture *f) {
        f->n_dispatches = f->n_asked = f->n_authorized = f->n_refused = 0;
        f->last_error = 0;
        f->max_queries = 0;
}

static void fixture_done(Fixture *f) {
        /* Before the bus: the registry's queries hold slots on it. */
        f->registry = polkit_registry_free(f->registry);
        f->object = sd_bus_slot_unref(f->object);
        f->service = sd_bus_flush_close_unref(f->service);
        f->control = sd_bus_flush_close_unref(f->control);
        f->event = sd_event_unref(f->event);
        process_stop(&f->mock_pid);
        process_stop(&f->dbus_pid);
}

/* --- the caller, in a child process --- */

typedef struct ClientState {
        int out_fd;
        unsigned n_replies;
} ClientState;

static int client_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        ClientState *c = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        c->n_replies++;
        if (e)
                dprintf(c->out_fd, "err %s\n", e->name);
        else
                dprintf(c->out_fd, "ok\n");
        return 0;
}

_Noreturn static void client_main(const char *address, const char *service, uid_t uid, unsigned n_calls,
                                   bool interactive, int out_fd) {
        ClientState c = { .out_fd = out_fd };
        usec_t deadline = now(CLOCK_MONOTONIC) + LOOP_TIMEOUT_USEC;
        sd_bus *bus = NULL;
        const char *name;

        /* Never returns into the harness: _exit() keeps LeakSanitizer out of the unprivileged child. */
        if (uid != geteuid() &&
            (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0))
                _exit(10);
        if (bus_connect(address, &bus) < 0)
                _exit(11);
        if (sd_bus_set_allow_interactive_authorization(bus, interactive) < 0)
                _exit(12);
        if (sd_bus_get_unique_name(bus, &name) < 0)
                _exit(13);
        dprintf(out_fd, "name %s\n", name);

        for (unsigned i = 0; i < n_calls; i++)
                if (sd_bus_call_method_async(bus, NULL, service, TEST_PATH, TEST_INTERFACE, "Mutate",
                                             client_reply, &c, NULL) < 0)
                        _exit(14);

        while (c.n_replies < n_calls) {
                usec_t t = now(CLOCK_MONOTONIC);
                int r;

                if (t >= deadline)
                        _exit(15);
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        _exit(16);
                if (r == 0 && sd_bus_wait(bus, deadline - t) < 0)
                        _exit(17);
        }
        _exit(0);
}

typedef struct Client {
        pid_t pid;
        int out_fd;
        int status;
        bool exited;
} Client;

static void client_start(Fixture *f, Client *c, uid_t uid, unsigned n_calls, bool interactive) {
        pid_t parent = getpid();
        int pipefd[2];

        ASSERT_TRUE(n_calls <= CLIENT_CALLS_MAX);
        ASSERT_OK(pipe2(pipefd, O_CLOEXEC));
        fflush(stdout);
        fflush(stderr);
        *c = (Client) { .pid = fork(), .out_fd = pipefd[0] };
        ASSERT_TRUE(c->pid >= 0);
        if (c->pid == 0) {
                close(pipefd[0]);
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(126);
                client_main(f->address, f->service_name, uid, n_calls, interactive, pipefd[1]);
        }
        close(pipefd[1]);
}

static bool client_exited(Fixture *f, void *userdata) {
        Client *c = userdata;

        if (!c->exited && waitpid(c->pid, &c->status, WNOHANG) == c->pid)
                c->exited = true;
        return c->exited;
}

static void client_kill(Client *c) {
        if (!c->exited && c->pid > 0) {
                (void) kill(c->pid, SIGKILL);
                (void) waitpid(c->pid, &c->status, 0);
                c->exited = true;
        }
        c->out_fd = safe_close(c->out_fd);
}

/* Collects what the client printed; the client must have exited successfully. */
static void client_result(Client *c, ClientResult *ret) {
        char buf[CLIENT_OUTPUT_MAX];
        size_t n = 0;
        ssize_t k;

        ASSERT_TRUE(c->exited);
        if (!WIFEXITED(c->status) || WEXITSTATUS(c->status) != 0)
                test_fail(__FILE__, __LINE__, "client failed: status 0x%x", (unsigned) c->status);

        while ((k = read(c->out_fd, buf + n, sizeof(buf) - 1 - n)) > 0)
                n += (size_t) k;
        buf[n] = '\0';
        c->out_fd = safe_close(c->out_fd);

        *ret = (ClientResult) {};
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                if (strneq(line, "name ", 5))
                        snprintf(ret->name, sizeof(ret->name), "%s", line + 5);
                else if (streq(line, "ok"))
                        ret->n_ok++;
                else if (strneq(line, "err ", 4)) {
                        ASSERT_TRUE(ret->n_errors < CLIENT_CALLS_MAX);
                        snprintf(ret->errors[ret->n_errors++], sizeof(ret->errors[0]), "%s", line + 4);
                } else
                        test_fail(__FILE__, __LINE__, "Unexpected client output: %s", line);
        }
}

/* Runs the daemon's event loop until done() says so, time-bounded. */
static void fixture_run(Fixture *f, bool (*done)(Fixture *f, void *userdata), void *userdata) {
        usec_t deadline = now(CLOCK_MONOTONIC) + LOOP_TIMEOUT_USEC;

        while (!done(f, userdata)) {
                if (now(CLOCK_MONOTONIC) >= deadline)
                        test_fail(__FILE__, __LINE__, "Event loop timed out");
                ASSERT_OK(sd_event_run(f->event, 10 * USEC_PER_MSEC));
        }

        /* Let idle sources (the registry's clean-up of answered queries) run. */
        while (ASSERT_OK(sd_event_run(f->event, 0)) > 0)
                ;
}

/* One caller making n_calls calls; returns what it got. */
static void call_mutate(Fixture *f, uid_t uid, unsigned n_calls, bool interactive, ClientResult *ret) {
        Client c;

        client_start(f, &c, uid, n_calls, interactive);
        fixture_run(f, client_exited, &c);
        client_result(&c, ret);
}

static uid_t unprivileged_uid(void) {
        /* As root, the caller becomes nobody; otherwise it already is unprivileged. */
        return geteuid() == 0 ? UID_NOBODY : geteuid();
}

static const char *mock_log(void) {
        if (access(test_path("mock.log"), F_OK) < 0)
                return "";
        return test_read_file(test_path("mock.log"), NULL);
}

/* --- cases --- */

TEST(polkit_allows) {
        const char *details[] = { "agent", "conn-1", NULL };
        _cleanup_free_ char *subject = NULL;
        Fixture f;
        ClientResult res;

        fixture_start(&f, MOCK_POLKITD);
        mock_call(&f, "SetAllowed", "as", 1, TEST_ACTION);
        f.details = details;

        call_mutate(&f, unprivileged_uid(), 1, false, &res);
        ASSERT_EQ(res.n_ok, 1);
        ASSERT_EQ(res.n_errors, 0);
        /* Asked once, then dispatched a second time with the answer. */
        ASSERT_EQ(f.n_asked, 1);
        ASSERT_EQ(f.n_dispatches, 2);
        ASSERT_EQ(f.n_authorized, 1);
        /* The answer is cleaned up once the re-dispatched call is handled. */
        ASSERT_EQ(polkit_registry_n_queries(f.registry), 0);

        /* Subject is the caller's unique name (from the bus), details and flags as given. */
        ASSERT_TRUE(asprintf(&subject, "dbus.String('system-bus-name'), dbus.Dictionary({dbus.String('name'): "
                                       "dbus.String('%s'",
                             res.name) > 0);
        ASSERT_STRSTR(mock_log(), subject);
        ASSERT_STRSTR(mock_log(), "\"" TEST_ACTION "\" {\"agent\": \"conn-1\"} 0 \"\"");

        fixture_done(&f);
}

TEST(polkit_denies) {
        static const struct {
                const char *allowed;
        } table[] = {
                { NULL },                 /* polkitd's default: nothing allowed */
                { TEST_OTHER_ACTION },    /* only a different action */
        };
        Fixture f;

        fixture_start(&f, MOCK_POLKITD);
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ClientResult res;

                CASE("allowed=%s", strna(table[i].allowed));
                fixture_reset_counters(&f);
                if (table[i].allowed)
                        mock_call(&f, "SetAllowed", "as", 1, table[i].allowed);

                call_mutate(&f, unprivileged_uid(), 1, false, &res);
                ASSERT_EQ(res.n_ok, 0);
                ASSERT_EQ(res.n_errors, 1);
                ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_ACCESS_DENIED);
                ASSERT_EQ(f.last_error, -EACCES);
                ASSERT_EQ(f.n_asked, 1);
                ASSERT_EQ(f.n_authorized, 0);
                ASSERT_EQ(polkit_registry_n_queries(f.registry), 0);
        }
        fixture_done(&f);
}

TEST(no_polkit_denies) {
        Fixture f;
        ClientResult res;

        fixture_start(&f, MOCK_NONE);
        call_mutate(&f, unprivileged_uid(), 1, false, &res);
        /* ServiceUnknown from the bus must become a denial, never an authorization or a bus error. */
        ASSERT_EQ(res.n_ok, 0);
        ASSERT_EQ(res.n_errors, 1);
        ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_ACCESS_DENIED);
        ASSERT_EQ(f.n_asked, 1);
        ASSERT_EQ(f.n_authorized, 0);
        fixture_done(&f);
}

TEST(polkit_vanishes_while_asked) {
        Fixture f;
        Client c;
        ClientResult res;

        fixture_start(&f, MOCK_POLKITD);
        mock_call(&f, "SetAllowed", "as", 1, TEST_ACTION);
        mock_call(&f, "SimulateHangActions", "as", 1, TEST_ACTION);

        client_start(&f, &c, unprivileged_uid(), 1, false);
        while (f.n_asked == 0)
                ASSERT_OK(sd_event_run(f.event, 10 * USEC_PER_MSEC));
        /* polkit dies with the query in flight: the bus answers NoReply, which must not authorize. */
        process_stop(&f.mock_pid);
        fixture_run(&f, client_exited, &c);
        client_result(&c, &res);

        ASSERT_EQ(res.n_ok, 0);
        ASSERT_EQ(res.n_errors, 1);
        ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_NO_REPLY);
        ASSERT_EQ(f.n_authorized, 0);
        ASSERT_EQ(polkit_registry_n_queries(f.registry), 0);
        fixture_done(&f);
}

TEST(root_is_allowed_without_polkit) {
        static const MockKind table[] = { MOCK_POLKITD, MOCK_NONE };

        if (geteuid() != 0)
                test_skip("needs root to have a caller with euid 0");

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                Fixture f;
                ClientResult res;

                CASE("polkit %s", table[i] == MOCK_NONE ? "absent" : "denying everything");
                fixture_start(&f, table[i]);
                call_mutate(&f, 0, 1, false, &res);
                ASSERT_EQ(res.n_ok, 1);
                ASSERT_EQ(f.n_dispatches, 1);
                ASSERT_EQ(f.n_asked, 0);
                ASSERT_NULL(f.registry);
                ASSERT_TRUE(strstr(mock_log(), "CheckAuthorization") == NULL);
                fixture_done(&f);
        }
}

TEST(interaction_follows_the_message_flag) {
        static const struct {
                bool interactive;
                const char *error;
                const char *logged_flags;
        } table[] = {
                { false, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, "{} 0 \"\"" },
                { true, NULL, "{} 1 \"\"" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                Fixture f;
                ClientResult res;

                CASE("interactive=%s", table[i].interactive ? "yes" : "no");
                fixture_start(&f, MOCK_CHALLENGE);
                call_mutate(&f, unprivileged_uid(), 1, table[i].interactive, &res);
                if (table[i].error) {
                        ASSERT_EQ(res.n_ok, 0);
                        ASSERT_EQ(res.n_errors, 1);
                        ASSERT_STREQ(res.errors[0], table[i].error);
                        ASSERT_EQ(f.last_error, -EACCES);
                        ASSERT_EQ(f.n_authorized, 0);
                } else {
                        ASSERT_EQ(res.n_ok, 1);
                        ASSERT_EQ(f.n_authorized, 1);
                }
                ASSERT_STRSTR(mock_log(), table[i].logged_flags);
                fixture_done(&f);
        }
}

TEST(answer_is_for_the_same_action_and_details) {
        static const char *details[] = { "agent", "conn-1", NULL };
        static const char *other_details[] = { "agent", "conn-2", NULL };
        const struct {
                const char *name;
                const char *action_again;
                const char **details_again;
                bool authorized;
        } table[] = {
                { "same", NULL, NULL, true },
                { "other-action", TEST_OTHER_ACTION, NULL, false },
                { "other-details", NULL, other_details, false },
                { "no-details", NULL, (const char *[]) { NULL }, false },
        };
        Fixture f;

        fixture_start(&f, MOCK_POLKITD);
        /* Both actions are allowed: only the mismatch may cause the denial. */
        mock_call(&f, "SetAllowed", "as", 2, TEST_ACTION, TEST_OTHER_ACTION);
        f.details = details;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ClientResult res;

                CASE("%s", table[i].name);
                fixture_reset_counters(&f);
                f.action_again = table[i].action_again;
                f.details_again = table[i].details_again;

                call_mutate(&f, unprivileged_uid(), 1, false, &res);
                ASSERT_EQ(f.n_dispatches, 2);
                ASSERT_EQ(res.n_ok, table[i].authorized ? 1 : 0);
                ASSERT_EQ(f.n_authorized, table[i].authorized ? 1 : 0);
                if (!table[i].authorized)
                        ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_ACCESS_DENIED);
        }
        fixture_done(&f);
}

TEST(invalid_action_or_details) {
        static char long_action[POLKIT_ACTION_MAX + 2], max_action[POLKIT_ACTION_MAX + 1];
        static const char *too_many[2 * (POLKIT_DETAILS_MAX + 1) + 1];
        static const char *max_details[2 * POLKIT_DETAILS_MAX + 1];
        const struct {
                const char *name;
                const char *action;
                const char **details;
                bool valid;
        } table[] = {
                { "empty", "", NULL, false },
                { "upper-case", "org.ztna.Test.mutate", NULL, false },
                { "space", "org.ztna.test mutate", NULL, false },
                { "leading-dot", ".org.ztna.test", NULL, false },
                { "trailing-dot", "org.ztna.test.", NULL, false },
                { "slash", "org/ztna/test", NULL, false },
                { "too-long", long_action, NULL, false },
                { "longest", max_action, NULL, true },
                { "odd-details", TEST_ACTION, (const char *[]) { "agent", NULL }, false },
                { "empty-key", TEST_ACTION, (const char *[]) { "", "v", NULL }, false },
                { "too-many-details", TEST_ACTION, too_many, false },
                { "most-details", TEST_ACTION, max_details, true },
                { "digits-dash", "org.ztna-2.test", (const char *[]) { "k", "", NULL }, true },
        };
        Fixture f;

        memset(long_action, 'a', sizeof(long_action) - 1);
        memset(max_action, 'a', sizeof(max_action) - 1);
        for (size_t i = 0; i < ELEMENTSOF(too_many) - 1; i++)
                too_many[i] = i % 2 == 0 ? "key" : "value";
        for (size_t i = 0; i < ELEMENTSOF(max_details) - 1; i++)
                max_details[i] = i % 2 == 0 ? "key" : "value";

        fixture_start(&f, MOCK_POLKITD);
        /* polkit would allow anything: a rejection can only come from validation. */
        mock_call(&f, "AllowUnknown", "b", 1);

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                ClientResult res;

                CASE("%s", table[i].name);
                fixture_reset_counters(&f);
                f.action = table[i].action;
                f.details = table[i].details;

                call_mutate(&f, unprivileged_uid(), 1, false, &res);
                if (table[i].valid) {
                        ASSERT_EQ(res.n_ok, 1);
                        ASSERT_EQ(f.n_asked, 1);
                } else {
                        ASSERT_EQ(res.n_ok, 0);
                        ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_INVALID_ARGS);
                        ASSERT_EQ(f.last_error, -EINVAL);
                        ASSERT_EQ(f.n_asked, 0);
                }
        }
        fixture_done(&f);
}

/* Several clients (each its own bus connection, so its own unique name) and when to release polkit. */
typedef struct Crowd {
        Client clients[8];
        size_t n;
        unsigned want_asked, want_refused;
} Crowd;

static bool release_when_full(Fixture *f, void *userdata) {
        Crowd *crowd = userdata;
        bool all = true;

        /* Every slot the limits allow is taken and the excess refused: now let polkit answer them all. */
        if (!f->released && f->n_asked == crowd->want_asked && f->n_refused == crowd->want_refused) {
                ASSERT_EQ(polkit_registry_n_queries(f->registry), crowd->want_asked);
                mock_call(f, "ReleaseHangingCalls", "");
                f->released = true;
        }
        for (size_t i = 0; i < crowd->n; i++)
                all = client_exited(f, &crowd->clients[i]) && all;
        return all;
}

/* One caller cannot hold more than POLKIT_QUERIES_PER_SENDER_MAX queries: the rest are refused at once. */
TEST(one_caller_is_bounded) {
        Crowd crowd = { .n = 1, .want_asked = POLKIT_QUERIES_PER_SENDER_MAX, .want_refused = 1 };
        ClientResult res;
        Fixture f;

        fixture_start(&f, MOCK_POLKITD);
        mock_call(&f, "SetAllowed", "as", 1, TEST_ACTION);
        mock_call(&f, "SimulateHangActions", "as", 1, TEST_ACTION);

        client_start(&f, &crowd.clients[0], unprivileged_uid(), POLKIT_QUERIES_PER_SENDER_MAX + 1, false);
        fixture_run(&f, release_when_full, &crowd);
        client_result(&crowd.clients[0], &res);

        ASSERT_EQ(f.max_queries, POLKIT_QUERIES_PER_SENDER_MAX);
        ASSERT_EQ(res.n_ok, POLKIT_QUERIES_PER_SENDER_MAX);
        ASSERT_EQ(res.n_errors, 1);
        ASSERT_STREQ(res.errors[0], SD_BUS_ERROR_LIMITS_EXCEEDED);
        ASSERT_EQ(f.last_error, -EBUSY);
        ASSERT_EQ(polkit_registry_n_queries(f.registry), 0);
        fixture_done(&f);
}

/* Many callers together are bounded by POLKIT_QUERIES_MAX, and every admitted call is answered. */
TEST(concurrent_calls_are_bounded_and_all_answered) {
        const size_t n = POLKIT_QUERIES_MAX / POLKIT_QUERIES_PER_SENDER_MAX + 1; /* one caller too many */
        Crowd crowd = { .n = n, .want_asked = POLKIT_QUERIES_MAX, .want_refused = POLKIT_QUERIES_PER_SENDER_MAX };
        size_t ok = 0, refused = 0;
        Fixture f;

        ASSERT_LE(n, ELEMENTSOF(crowd.clients));
        fixture_start(&f, MOCK_POLKITD);
        mock_call(&f, "SetAllowed", "as", 1, TEST_ACTION);
        mock_call(&f, "SimulateHangActions", "as", 1, TEST_ACTION);

        for (size_t i = 0; i < n; i++)
                client_start(&f, &crowd.clients[i], unprivileged_uid(), POLKIT_QUERIES_PER_SENDER_MAX, false);
        fixture_run(&f, release_when_full, &crowd);
        for (size_t i = 0; i < n; i++) {
                ClientResult res;

                client_result(&crowd.clients[i], &res);
                ok += res.n_ok;
                refused += res.n_errors;
                for (size_t j = 0; j < res.n_errors; j++)
                        ASSERT_STREQ(res.errors[j], SD_BUS_ERROR_LIMITS_EXCEEDED);
        }
        ASSERT_EQ(f.max_queries, POLKIT_QUERIES_MAX);
        ASSERT_EQ(ok, POLKIT_QUERIES_MAX);
        ASSERT_EQ(refused, POLKIT_QUERIES_PER_SENDER_MAX);
        ASSERT_EQ(f.n_authorized, POLKIT_QUERIES_MAX);
        ASSERT_EQ(polkit_registry_n_queries(f.registry), 0);
        fixture_done(&f);
}

static bool time_passed(Fixture *f, void *userdata) {
        return now(CLOCK_MONOTONIC) >= *(usec_t *) userdata;
}

TEST(registry_freed_with_queries_pending) {
        Fixture f;
        Client c;
        usec_t until;

        fixture_start(&f, MOCK_POLKITD);
        mock_call(&f, "SetAllowed", "as", 1, TEST_ACTION);
        mock_call(&f, "SimulateHangActions", "as", 1, TEST_ACTION);

        client_start(&f, &c, unprivileged_uid(), 3, false);
        while (f.n_asked < 3)
                ASSERT_OK(sd_event_run(f.event, 10 * USEC_PER_MSEC));
        ASSERT_EQ(polkit_registry_n_queries(f.registry), 3);

        /* Freeing cancels the queries; polkit's late answers must not re-dispatch anything. */
        f.registry = polkit_registry_free(f.registry);
        mock_call(&f, "ReleaseHangingCalls", "");
        until = now(CLOCK_MONOTONIC) + 500 * USEC_PER_MSEC;
        fixture_run(&f, time_passed, &until);

        ASSERT_EQ(f.n_dispatches, 3);
        ASSERT_EQ(f.n_authorized, 0);
        ASSERT_NULL(f.registry);
        /* The callers never got an answer (the daemon would be exiting); LeakSanitizer checks the rest. */
        ASSERT_FALSE(client_exited(&f, &c));
        client_kill(&c);
        fixture_done(&f);
}
