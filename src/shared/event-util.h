/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What every ztna daemon does to its event loop at start. */

#include <systemd/sd-event.h>

/* Ignores SIGPIPE (writing to a peer that closed must be an error, not a signal), blocks SIGTERM and
 * SIGINT and calls handler for them from the loop. Does not log. Errors of sigprocmask() and
 * sd_event_add_signal(). */
int event_add_stop_signals(sd_event *e, sd_event_signal_handler_t handler, void *userdata);
