/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The command line of ztna-connector and ztna-tunneler: `enroll` and `run` (see their man pages and
 * `--help`). */

#include "crypto-spiffe.h"

/* Returns the process exit status. */
int agent_main(SpiffeRole role, int argc, char *argv[]);
