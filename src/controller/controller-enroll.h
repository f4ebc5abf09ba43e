/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The Enrollment service (src/proto/ztna.proto): Enroll (token + CSR, no client certificate), Renew (mTLS)
 * and Reauthenticate (bidirectional: challenge signed with the recorded key, for agents whose certificate
 * expired). The agent's identity always comes from the token's binding plus the requested id (Enroll), the
 * verified client certificate (Renew) or the recorded key's signature (Reauthenticate) — never from a
 * request field alone. Every outcome is audited; refusals are PERMISSION_DENIED (or INVALID_ARGUMENT for a
 * malformed request) with a reason the agent can print. The method handlers' userdata is the Manager. */

#include <stddef.h>

#include "net-grpc.h"

/* Largest Enroll/Reauthenticate message: reachable without a certificate, so small. */
#define ENROLL_MESSAGE_MAX (64U * 1024U)
/* Challenges outstanding at once (all callers); more Reauthenticate calls get RESOURCE_EXHAUSTED. */
#define ENROLL_CHALLENGES_MAX 1024U
/* …of which one source address may hold this many (an address cannot lock everybody else out). */
#define ENROLL_CHALLENGES_PER_SOURCE_MAX 256U
/* How long a re-authentication challenge may be answered. */
#define ENROLL_CHALLENGE_TIMEOUT (30 * USEC_PER_SEC)
/* Domain separation of what a re-authenticating agent signs:
 *   "ztna-reauth-v1\0" | nonce (32) | u16 BE length | SPIFFE ID | SHA-256 of the CSR's SubjectPublicKeyInfo */
#define ENROLL_REAUTH_CONTEXT "ztna-reauth-v1"
#define ENROLL_NONCE_SIZE 32U

extern const GrpcMethod controller_enroll_methods[];
extern const size_t controller_enroll_n_methods;
