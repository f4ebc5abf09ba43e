/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
#include <malloc.h>
#include <signal.h>

#include "event-util.h"

int event_add_stop_signals(sd_event *e, sd_event_signal_handler_t handler, void *userdata) {
        sigset_t mask;
        int r;

        (void) signal(SIGPIPE, SIG_IGN);

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;

        r = sd_event_add_signal(e, NULL, SIGTERM, handler, userdata);
        if (r < 0)
                return r;
        return sd_event_add_signal(e, NULL, SIGINT, handler, userdata);
}

static int on_malloc_trim(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) malloc_trim(0);
        return 0;
}

int event_schedule_malloc_trim(sd_event *e, sd_event_source **source, usec_t delay) {
        int r;

        if (*source) {
                r = sd_event_source_set_time_relative(*source, delay);
                if (r < 0)
                        return r;
                return sd_event_source_set_enabled(*source, SD_EVENT_ONESHOT);
        }
        r = sd_event_add_time_relative(e, source, CLOCK_MONOTONIC, delay, 0, on_malloc_trim, NULL);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(*source, "malloc-trim");
        return 0;
}
