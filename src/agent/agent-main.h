/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The command line of ztna-connector and ztna-tunneler: `enroll` and `run` (see their man pages and
 * `--help`). */

#include "agent-manager.h"
#include "crypto-spiffe.h"

/* ops: the role's data plane (NULL: none). Returns the process exit status. */
int agent_main(SpiffeRole role, const AgentRoleOps *ops, int argc, char *argv[]);
