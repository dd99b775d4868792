"""CPython's own asyncio test suite on aloop.

Runs every test.test_asyncio module of the running interpreter through the
runner in tests/cpython/ (each module in its own subprocess, aloop
substituted for asyncio's loop, a per-test timeout; see
tests/cpython/__main__.py) and requires its verdict: no unexpected failure
and no unexpected pass against tests/cpython/expected_failures/<version>.txt.
A failing test is re-run there on stock asyncio, so the suite's own
comparison is against the stdlib.  The same command by hand, with the
per-module table:

    python3 -m tests.cpython -j 2 --table
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The suite's real-loop tests, as counted on 3.11-3.13 (1124..1290): far
# fewer means the substitution stopped reaching the suite.
MIN_RAN_ON_ALOOP = 1000


@pytest.mark.timeout(1800)
def test_cpython_asyncio_suite_passes_on_aloop(tmp_path):
    out = tmp_path / "records.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cpython", "-j", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stdout[-30000:] + proc.stderr[-3000:]
    records = json.loads(out.read_text())["records"]
    ran = [r for r in records if r["aloop_loops"] > 0]
    assert len(ran) >= MIN_RAN_ON_ALOOP, (len(ran), proc.stdout[-3000:])
