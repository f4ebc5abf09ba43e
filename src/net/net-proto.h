/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Our types as the control-plane contract (src/proto/ztna.proto) spells them. */

#include "crypto-spiffe.h"
#include "macro.h"
#include "ztna.pb-c.h"

/* The wire role of a SPIFFE role; ROLE_UNSPECIFIED for anything else. */
Ztna__V1__Role proto_role_from_spiffe(SpiffeRole role) _const_;
