#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Counts results in meson testlog.json files, one TAP line per case where a test speaks TAP, or in a
pytest JUnit XML file.

Usage: test-summary.py LABEL TESTLOG.json
       test-summary.py --junit LABEL PYTEST.xml PYTEST-EXIT-STATUS
Prints "LABEL: N passed, N failed, N skipped" and the names of failures; writes the three numbers to
stdout's last line as "COUNTS passed failed skipped" for tools/test.sh to add up.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET


def report(label, passed, failed, skipped, failures):
    print(f"{label}: {passed} passed, {failed} failed, {skipped} skipped")
    for x in failures:
        print(f"  FAILED {x}")
    print(f"COUNTS {passed} {failed} {skipped}")
    sys.exit(0)


def junit(label, path, status):
    """One count per testcase; pytest's own exit status is checked too, so that a crash, an interruption
    or "no tests collected" (5) is a failure even when the XML looks clean or is missing."""
    passed = failed = skipped = 0
    failures = []
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        report(label, 0, 1, 0, [f"no usable JUnit XML, pytest exit status {status} ({e})"])
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '?')}::{case.get('name', '?')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            failures.append(name)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    if status == "5":
        failed += 1
        failures.append("pytest collected no tests (exit status 5)")
    elif status not in ("0", "1") or (status == "1" and failed == 0):
        failed += 1
        failures.append(f"pytest exit status {status}")
    elif status == "0" and passed + failed + skipped == 0:
        failed += 1
        failures.append("pytest ran no tests")
    report(label, passed, failed, skipped, failures)


if sys.argv[1] == "--junit":
    junit(sys.argv[2], sys.argv[3], sys.argv[4])

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
