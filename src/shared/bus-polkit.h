/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Asynchronous polkit authorization for sd-bus method handlers.
 *
 * A handler follows the house order (read → validate → no-op short-circuit → polkit → mutate → reply):
 *
 *         r = bus_verify_polkit_async(m, "org.ztna.foo.set", NULL, &manager->polkit_registry, error);
 *         if (r < 0)
 *                 return r;
 *         if (r == 0)
 *                 return 1; // polkit is being asked; this handler runs again with the same message
 *
 * On the first call the function sends CheckAuthorization to polkit and returns 0. When polkit answers,
 * the method call is queued again on its bus, so the handler (and its validation) runs a second time;
 * this time bus_verify_polkit_async() returns the stored answer: 1 when authorized, a negative errno with
 * `error` set otherwise. The answer only applies to the same action and details: anything else is
 * refused. Callers with effective UID 0 (as reported by the bus, never from message content) are
 * authorized without asking polkit. No polkit on the bus means denied.
 *
 * The bus must be attached to an sd-event loop: answers are cleaned up from an idle event source. */

#include <stddef.h>
#include <systemd/sd-bus.h>

#include "macro.h"

/* Queries a registry holds at once (asked, or answered and waiting for the re-dispatch). Beyond: -EBUSY
 * with SD_BUS_ERROR_LIMITS_EXCEEDED, so a flood of calls cannot grow memory or load polkit unboundedly. */
#define POLKIT_QUERIES_MAX 64U
/* …of which one caller (unique bus name) may hold at most this many. */
#define POLKIT_QUERIES_PER_SENDER_MAX 16U
/* Key/value pairs in `details`. */
#define POLKIT_DETAILS_MAX 32U
/* Longest polkit action id ("org.ztna.controller.revoke-agent"). */
#define POLKIT_ACTION_MAX 255U

/* Custom error polkit itself uses for a denial; accepted as a synonym of SD_BUS_ERROR_ACCESS_DENIED. */
#define POLKIT_ERROR_NOT_AUTHORIZED "org.freedesktop.PolicyKit1.Error.NotAuthorized"

/* The queries of one daemon (or one object): keep it in the manager, and free it before the bus. */
typedef struct PolkitRegistry PolkitRegistry;

/* Cancels every pending query (their replies are dropped, no handler is called again) and frees the
 * registry. Accepts NULL; returns NULL. */
PolkitRegistry *polkit_registry_free(PolkitRegistry *registry);
DEFINE_TRIVIAL_CLEANUP_FUNC(PolkitRegistry *, polkit_registry_free);

/* Queries currently held (pending or answered but not yet cleaned up). 0 for NULL. */
size_t polkit_registry_n_queries(const PolkitRegistry *registry) _pure_;

/* call: the method call being handled. action: a polkit action id ([a-z0-9.-], at most POLKIT_ACTION_MAX).
 * details: NULL, or a NULL-terminated list of key, value, key, value… (at most POLKIT_DETAILS_MAX pairs),
 * passed to polkit for its message and rules. *registry is allocated on first use.
 *
 * Returns 1 when authorized, 0 when polkit was asked (return 1 from the handler), or a negative errno
 * with error set (error may be NULL):
 *   -EACCES   SD_BUS_ERROR_ACCESS_DENIED: polkit said no, polkit is not on the bus, the caller has no
 *             unique name, or the action/details differ from what polkit was asked;
 *   -EACCES   SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED: polkit needs a challenge but the caller
 *             did not set the allow-interactive-authorization flag;
 *   -EBUSY    SD_BUS_ERROR_LIMITS_EXCEEDED: POLKIT_QUERIES_MAX queries are in flight;
 *   -EINVAL   SD_BUS_ERROR_INVALID_ARGS: invalid action or details;
 *   other     polkit's own error is passed on (never treated as authorized). */
int bus_verify_polkit_async(
                sd_bus_message *call,
                const char *action,
                const char **details,
                PolkitRegistry **registry,
                sd_bus_error *error);
