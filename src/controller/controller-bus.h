/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* org.ztna.Controller1 at /org/ztna/Controller1 on the system bus (dbus/org.ztna.Controller1.xml is the
 * contract, dbus/org.ztna.Controller1.conf the bus policy, polkit/org.ztna.controller.policy the actions). */

#include "controller-manager.h"

#define CONTROLLER_BUS_NAME "org.ztna.Controller1"
#define CONTROLLER_BUS_PATH "/org/ztna/Controller1"
#define CONTROLLER_BUS_INTERFACE "org.ztna.Controller1"

/* Connects (system bus, or $ZTNA_BUS_ADDRESS when set — for tests), attaches to m->event, registers the
 * object and requests the name. */
int manager_connect_bus(Manager *m);
