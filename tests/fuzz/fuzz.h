/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Every fuzz target defines this one entry point. Built with -fsanitize=fuzzer it is driven by
 * libFuzzer; otherwise fuzz-main.c replays corpus files through it, so tools/test.sh runs every corpus
 * as a regression test on any compiler. A target must not leak, must not log above debug, and must
 * accept any bytes: returning is success, a crash or sanitizer report is the failure. */

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
