#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Counts results in meson testlog.json files, one TAP line per case where a test speaks TAP.

Usage: test-summary.py LABEL TESTLOG.json
Prints "LABEL: N passed, N failed, N skipped" and the names of failures; writes the three numbers to
stdout's last line as "COUNTS passed failed skipped" for tools/test.sh to add up.
"""
import json
import re
import sys

label, path = sys.argv[1], sys.argv[2]
passed = failed = skipped = 0
failures = []

try:
    lines = open(path, encoding="utf-8").read().splitlines()
except OSError as e:
    print(f"{label}: no test log ({e})")
    print("COUNTS 0 1 0")
    sys.exit(0)

for line in lines:
    if not line.strip():
        continue
    t = json.loads(line)
    name, result, out = t.get("name", "?"), t.get("result", "?"), t.get("stdout") or ""
    p = f = s = 0
    for l in out.splitlines():
        if re.match(r"^not ok\b", l):
            f += 1
            failures.append(f"{name}: {l}")
        elif re.match(r"^ok\b", l):
            if re.search(r"#\s*SKIP", l, re.I):
                s += 1
            else:
                p += 1
    if p + f + s == 0:
        # Not TAP (or died before printing a plan): the test counts once by its result.
        if result in ("OK", "EXPECTEDFAIL"):
            p = 1
        elif result == "SKIP":
            s = 1
        else:
            f = 1
            failures.append(f"{name}: {result}")
    elif result not in ("OK", "SKIP", "EXPECTEDFAIL") and f == 0:
        # Every case said ok but the program failed (crash after the last case, sanitizer report at exit,
        # timeout, plan mismatch): that is a failure of its own.
        f = 1
        failures.append(f"{name}: {result} after all cases passed")
    passed, failed, skipped = passed + p, failed + f, skipped + s

print(f"{label}: {passed} passed, {failed} failed, {skipped} skipped")
for x in failures:
    print(f"  FAILED {x}")
print(f"COUNTS {passed} {failed} {skipped}")
