/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* org.ztna.Connector1 / org.ztna.Tunneler1 (dbus/org.ztna.Connector1.xml is the contract): properties of
 * the running agent with PropertiesChanged, and the polkit-gated methods Enroll, RotateCertificate,
 * RotateKey and Reconnect (polkit/org.ztna.policy). */

#include <stdbool.h>

#include "agent-manager.h"

#define AGENT_POLKIT_ACTION_ENROLL "org.ztna.agent.enroll"
#define AGENT_POLKIT_ACTION_ROTATE "org.ztna.agent.rotate"
#define AGENT_POLKIT_ACTION_RECONNECT "org.ztna.agent.reconnect"

/* Errors of the methods, the same for both roles (besides the standard InvalidArgs, AccessDenied,
 * InteractiveAuthorizationRequired and LimitsExceeded from polkit). */
#define AGENT_BUS_ERROR_PREFIX "org.ztna.Agent.Error."
#define AGENT_BUS_ERROR_ALREADY_ENROLLED AGENT_BUS_ERROR_PREFIX "AlreadyEnrolled"     /* Enroll */
#define AGENT_BUS_ERROR_ENROLLMENT_FAILED AGENT_BUS_ERROR_PREFIX "EnrollmentFailed"   /* Enroll */
#define AGENT_BUS_ERROR_NOT_ENROLLED AGENT_BUS_ERROR_PREFIX "NotEnrolled"             /* Rotate*, Reconnect */
#define AGENT_BUS_ERROR_REVOKED AGENT_BUS_ERROR_PREFIX "Revoked"                      /* Rotate*, Reconnect */
#define AGENT_BUS_ERROR_ROTATION_FAILED AGENT_BUS_ERROR_PREFIX "RotationFailed"       /* Rotate* */
#define AGENT_BUS_ERROR_BUSY AGENT_BUS_ERROR_PREFIX "Busy"                            /* any method */

/* Connects to the system bus (the session bus in user mode, or $ZTNA_BUS_ADDRESS), registers the object,
 * takes the name (synchronously: before READY=1), attaches to m->event. Logs its errors. Returns 0 and
 * does nothing when !m->bus_enabled. */
int agent_bus_connect(AgentManager *m);

/* Schedules one PropertiesChanged for every property (coalesced from a defer event source). No-op
 * without a bus. */
void agent_bus_send_changed(AgentManager *m);

/* Emits CertificateRotated(new_key, not_after). No-op without a bus. */
void agent_bus_emit_certificate_rotated(AgentManager *m, bool new_key);

/* Releases the name, drops pending polkit queries, flushes and closes the bus. */
void agent_bus_disconnect(AgentManager *m);
