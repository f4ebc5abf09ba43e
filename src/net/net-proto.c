/* SPDX-License-Identifier: Apache-2.0 */

#include "net-proto.h"

Ztna__V1__Role proto_role_from_spiffe(SpiffeRole role) {
        switch (role) {
        case SPIFFE_ROLE_CONTROLLER:
                return ZTNA__V1__ROLE__ROLE_CONTROLLER;
        case SPIFFE_ROLE_CONNECTOR:
                return ZTNA__V1__ROLE__ROLE_CONNECTOR;
        case SPIFFE_ROLE_TUNNELER:
                return ZTNA__V1__ROLE__ROLE_TUNNELER;
        case SPIFFE_ROLE_RELAY:
                return ZTNA__V1__ROLE__ROLE_RELAY;
        default:
                return ZTNA__V1__ROLE__ROLE_UNSPECIFIED;
        }
}
