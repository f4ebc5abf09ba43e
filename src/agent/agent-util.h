/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small decisions the agent's controller clients (agent-enroll, agent-control) share. */

#include <stdbool.h>

#include "macro.h"
#include "net-grpc-status.h"

/* Failures that mean "nobody usable answered at that address": try the next one. */
bool agent_error_is_unreachable(int error) _const_;
/* Statuses by which the controller answers us ("token already used") rather than fails: the message is
 * meant for the user. */
bool agent_status_is_refusal(GrpcStatus s) _const_;

/* The local address this host would use to reach controller ("host:port"): a UDP socket is connect()ed to
 * it (nothing is sent) and getsockname() read, so it is the address of the route the control stream
 * takes. A host name is resolved with getaddrinfo() (blocking). Canonical text in *ret. Errors: -EINVAL
 * for a bad address, getaddrinfo() failures as -EHOSTUNREACH, socket errors (-ENETUNREACH: no route). */
int agent_detect_private_ip(const char *controller, char **ret);
