/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The real `ztna-controller` as a test peer: init in the case's test_tmpdir() (trust domain
 * CONTROLLER_FIXTURE_TRUST_DOMAIN, a loopback port of its own), run with ZTNA_NO_BUS=1 and READY=1 awaited
 * on a NOTIFY_SOCKET of ours, SIGTERM expecting exit status 0. Its output goes to
 * test_path("controller.log"). Tokens are put straight into its store, before it starts.
 *
 * Needs ZTNA_BUILD_DIR (set by meson). Every helper fails the case on error; a controller left running
 * by a failing case is killed with it (PR_SET_PDEATHSIG). */

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "crypto-spiffe.h"

#define CONTROLLER_FIXTURE_TRUST_DOMAIN "ztna.test"
#define CONTROLLER_FIXTURE_READY_TIMEOUT_MS 30000
#define CONTROLLER_FIXTURE_STOP_TIMEOUT_MS 15000

typedef struct ControllerFixture {
        char binary[PATH_MAX];
        char confdir[PATH_MAX];
        char db[PATH_MAX];
        char address[32];               /* "127.0.0.1:<port>": listen and advertised address */
        uint16_t port;
        uint8_t pin[32];                /* SHA-256 of the root CA's SubjectPublicKeyInfo */
        pid_t pid;                      /* 0 while stopped */
} ControllerFixture;

/* A TCP port on 127.0.0.1 that was free a moment ago. */
uint16_t controller_fixture_free_port(void);

/* Writes controller.conf (extra: more [Certificates] lines, e.g. "TunnelerLifetime=10s\n") and runs
 * `init`, keeping the root pin it prints. MinimumCertificateLifetime is 10s. */
void controller_fixture_init(ControllerFixture *c, const char *extra);
/* Starts `run` and waits for READY=1. */
void controller_fixture_start(ControllerFixture *c);
/* SIGTERM, then waits (at most CONTROLLER_FIXTURE_STOP_TIMEOUT_MS) for exit status 0. */
void controller_fixture_stop(ControllerFixture *c);
/* The same, running e meanwhile: clients in e hear the controller's goodbye and close their streams, so
 * its drain does not wait for them. */
void controller_fixture_stop_in(ControllerFixture *c, sd_event *e);
/* A token for role in the controller's store, valid for an hour, naming c->address and pinning c->pin;
 * *ret_wrong_pin (may be NULL) gets the same token pinning another root. Free both with
 * erase_and_free_string(). */
void controller_fixture_add_token(ControllerFixture *c, SpiffeRole role, char **ret, char **ret_wrong_pin);
/* The same, bound to the agent id bound_id (NULL: unbound). */
void controller_fixture_add_token_bound(ControllerFixture *c, SpiffeRole role, const char *bound_id, char **ret,
                                        char **ret_wrong_pin);
