# SPDX-License-Identifier: Apache-2.0
"""The Prometheus expositions of the agent (src/agent/agent-metrics.c) and the controller
(src/controller/controller-metrics.c), checked by `promtool check metrics` (Debian's prometheus package):
it parses the text format 0.0.4 and lints names, units, types and help texts.

The agents serve theirs at GET /metrics on the health listener (checked live below); the controller's will
be served by the admin API. The fixed texts come from the unit tests, which write what they format for their
fake managers into $ZTNA_METRICS_DUMP_DIR."""
import os
import pathlib
import shutil
import http.client
import subprocess

import pytest

from conftest import build_dir, token_file

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK),
                                reason="promtool not installed (Debian package prometheus)")

# Unit-test program → the expositions it writes.
DUMPS = {
    "test-agent-metrics": ["agent-online.prom", "agent-offline.prom", "agent-unenrolled.prom"],
    "test-controller-metrics": ["controller.prom", "controller-store.prom"],
}


def promtool_check(text):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=TIMEOUT)
    return p.returncode, (p.stdout + p.stderr).strip()


@pytest.fixture(scope="module")
def expositions(tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics")
    env = dict(os.environ, ZTNA_METRICS_DUMP_DIR=str(out),
               ZTNA_SOURCE_DIR=str(pathlib.Path(__file__).resolve().parents[2]),
               ZTNA_BUILD_DIR=str(build_dir()))
    for program in DUMPS:
        exe = build_dir() / "tests" / "unit" / program
        if not exe.exists():
            pytest.fail(f"{exe} is not built")
        p = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 0, p.stdout + p.stderr
    return out


@pytest.mark.parametrize("name", [n for names in DUMPS.values() for n in names])
def test_promtool_accepts(expositions, name):
    text = (expositions / name).read_text()
    assert text.startswith("# HELP ztna_")
    rc, output = promtool_check(text)
    assert rc == 0 and output == "", f"promtool check metrics on {name}:\n{output}"


def test_every_family_documented(expositions):
    """Every sample belongs to a family declared right before it with # HELP and # TYPE, and all names are
    ztna_*."""
    for names in DUMPS.values():
        for name in names:
            family = None
            for line in (expositions / name).read_text().splitlines():
                if line.startswith("# HELP "):
                    family = line.split()[2]
                    assert family.startswith("ztna_"), line
                elif line.startswith("# TYPE "):
                    _, _, n, kind = line.split()
                    assert n == family and kind in ("counter", "gauge"), line
                    assert (kind == "counter") == n.endswith("_total"), line
                else:
                    metric = line.split("{")[0].split(" ")[0]
                    assert metric == family, f"{name}: {line}"


def test_promtool_rejects_malformed():
    """promtool does find what the writer must never produce (so that the checks above mean something)."""
    rc, _ = promtool_check('# HELP ztna_x x\n# TYPE ztna_x gauge\nztna_x{a="\n"} 1\n')
    assert rc != 0
    rc, output = promtool_check("# HELP ztna_x x\n# TYPE ztna_x counter\nztna_x 1\n")
    assert rc != 0 and "_total" in output


def test_agent_serves_metrics_on_its_health_listener(controller, agents, tmp_path):
    """A running, enrolled connector answers GET /metrics with the text format promtool accepts, and the
    numbers are the live ones (online, its SPIFFE ID)."""
    controller.init()
    controller.start()
    a = agents("connector", "con-m")
    t = token_file(controller, tmp_path / "t", "connector")
    a.enroll_ok(f"--token-file={t['file']}")
    a.start()
    a.wait_state("online", 15.0)

    c = http.client.HTTPConnection("127.0.0.1", a.health_port, timeout=5)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
        assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    finally:
        c.close()
    rc, out = promtool_check(body)
    assert rc == 0 and out == "", out
    assert "ztna_agent_online 1\n" in body, body
    assert 'ztna_agent_state{state="online"} 1\n' in body, body
    assert f'spiffe_id="{a.spiffe_id()}"' in body, body

