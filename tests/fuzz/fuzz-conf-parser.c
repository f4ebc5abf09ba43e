/* SPDX-License-Identifier: Apache-2.0 */

/* Any bytes into config_parse_buffer() with a table that uses every stock callback, then everything is
 * freed: the parser must neither crash, read out of bounds, nor leak, whatever the input. */

#include <stdbool.h>
#include <stddef.h>

#include "conf-parser.h"
#include "fuzz.h"
#include "log.h"
#include "parse-util.h"
#include "strv.h"

typedef struct FuzzConfig {
        char *string;
        bool boolean;
        usec_t sec;
        uint64_t size;
        unsigned number;
        uint16_t u16;
        uint16_t port;
        HostPort host_port;
        char **list;
        int log_level;
} FuzzConfig;

static const ConfigTableItem fuzz_table[] = {
        { "Main", "String", config_parse_string, offsetof(FuzzConfig, string) },
        { "Main", "Bool", config_parse_bool, offsetof(FuzzConfig, boolean) },
        { "Main", "LogLevel", config_parse_log_level, offsetof(FuzzConfig, log_level) },
        { "Main", "List", config_parse_strv, offsetof(FuzzConfig, list) },
        { "Network", "HostPort", config_parse_host_port, offsetof(FuzzConfig, host_port) },
        { "Network", "Port", config_parse_port, offsetof(FuzzConfig, port) },
        { "Network", "UInt16", config_parse_uint16, offsetof(FuzzConfig, u16) },
        { "Network", "Sec", config_parse_sec, offsetof(FuzzConfig, sec) },
        { "Limits", "Size", config_parse_size, offsetof(FuzzConfig, size) },
        { "Limits", "Unsigned", config_parse_unsigned, offsetof(FuzzConfig, number) },
        /* The same callback under a second name and section, so that overrides and appends mix. */
        { "Other", "List", config_parse_strv, offsetof(FuzzConfig, list) },
        { "", "String", config_parse_string, offsetof(FuzzConfig, string) },
        {}
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FuzzConfig c = {};
        char buf[HOST_PORT_STRING_MAX];

        log_set_max_level(LOG_CRIT);

        (void) config_parse_buffer("fuzz.conf", (const char *) data, size, fuzz_table, &c, NULL);

        /* Whatever was accepted must be usable. */
        if (c.string)
                (void) strlen(c.string);
        (void) host_port_to_string(&c.host_port, buf, sizeof(buf));
        (void) strv_length(c.list);

        free(c.string);
        strv_free(c.list);
        return 0;
}
