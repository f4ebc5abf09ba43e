/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Which bus ztna's daemons and ztnactl talk on: the system bus, the user's session bus in user mode
 * (desktop tunneler), or the address in $ZTNA_BUS_ADDRESS when set (tests run a private bus daemon). */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#define ZTNA_BUS_ADDRESS_ENV "ZTNA_BUS_ADDRESS"

/* Connects (without attaching to an event loop). Does not log. Errors of sd_bus_open_system(),
 * sd_bus_open_user(), sd_bus_set_address() (-EINVAL for a bad $ZTNA_BUS_ADDRESS) and sd_bus_start(). */
int bus_open_ztna(bool user, sd_bus **ret);

/* "the system bus", "the session bus" or "the bus at $ZTNA_BUS_ADDRESS", for error messages. */
const char *bus_ztna_description(bool user);
