/* SPDX-License-Identifier: Apache-2.0 */

#include <errno.h>
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
