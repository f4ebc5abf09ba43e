/* SPDX-License-Identifier: Apache-2.0 */

#include <assert.h>
#include <stdlib.h>

#include "bus-util.h"
#include "macro.h"
#include "string-util.h"

int bus_open_ztna(bool user, sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const char *address;
        int r;

        assert(ret);

        address = secure_getenv(ZTNA_BUS_ADDRESS_ENV);
        if (isempty(address))
                return user ? sd_bus_open_user(ret) : sd_bus_open_system(ret);

        r = sd_bus_new(&bus);
        if (r < 0)
                return r;
        r = sd_bus_set_address(bus, address);
        if (r < 0)
                return r;
        r = sd_bus_set_bus_client(bus, true);
        if (r < 0)
                return r;
        r = sd_bus_start(bus);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(bus);
        return 0;
}

const char *bus_ztna_description(bool user) {
        if (!isempty(secure_getenv(ZTNA_BUS_ADDRESS_ENV)))
                return "the bus at $" ZTNA_BUS_ADDRESS_ENV;
        return user ? "the session bus" : "the system bus";
}
