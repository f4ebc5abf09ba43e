/* SPDX-License-Identifier: Apache-2.0 */

/* ztna-connector: enroll | run. Everything is shared with the other agent (src/agent/agent-main.c). */

#include "agent-main.h"

int main(int argc, char *argv[]) {
        return agent_main(SPIFFE_ROLE_CONNECTOR, argc, argv);
}
