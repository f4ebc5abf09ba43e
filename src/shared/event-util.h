/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What every ztna daemon does to its event loop at start. */

#include <systemd/sd-event.h>

#include "time-util.h"

/* Ignores SIGPIPE (writing to a peer that closed must be an error, not a signal), blocks SIGTERM and
 * SIGINT and calls handler for them from the loop. Does not log. Errors of sigprocmask() and
 * sd_event_add_signal(). */
int event_add_stop_signals(sd_event *e, sd_event_signal_handler_t handler, void *userdata);

/* Gives freed heap memory back to the kernel (malloc_trim()) delay from now, from a oneshot timer kept in
 * *source (created on first use, re-armed by later calls). For daemons whose traffic comes in bursts: after a
 * burst of large buffers, glibc keeps the freed memory in its arenas and the RSS stays at its peak. Does
 * not log; errors of sd-event. Free *source with sd_event_source_disable_unref(). */
int event_schedule_malloc_trim(sd_event *e, sd_event_source **source, usec_t delay);
