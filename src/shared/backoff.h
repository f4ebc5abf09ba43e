/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Reconnect delays with exponential growth and full jitter (AWS Architecture Blog, "Exponential Backoff
 * And Jitter"): attempt n sleeps a uniformly random time in [0, min(cap, base * 2^n)], which spreads a
 * crowd of agents that lost the controller at the same moment. The attempt counter goes back to 0 only
 * after a connection stayed up for healthy_after, so a peer that accepts and immediately drops us does
 * not get hammered at the base rate. */

#include <stdint.h>

#include "time-util.h"

typedef struct Backoff {
        usec_t base, cap, healthy_after;
        unsigned attempt;
        usec_t connected_at; /* USEC_INFINITY while not connected */
        /* Uniform in [0, n); defaults to random_u64_range(). Tests inject their own. */
        uint64_t (*random)(uint64_t n, void *userdata);
        void *userdata;
} Backoff;

void backoff_init(Backoff *b, usec_t base, usec_t cap, usec_t healthy_after);
/* The delay before this attempt, uniformly random in [0, backoff_ceiling()]; then attempt++. */
usec_t backoff_next(Backoff *b);
/* min(cap, base * 2^attempt), without overflowing for any attempt. */
usec_t backoff_ceiling(const Backoff *b);
void backoff_connected(Backoff *b, usec_t now);
/* Resets attempt to 0 only if the connection lasted at least healthy_after. */
void backoff_disconnected(Backoff *b, usec_t now);
void backoff_reset(Backoff *b);
