"""The unit tests need no Redis: loading the suite's fixtures starts nothing, connects
nowhere and leaves the environment as it was."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

LOAD = """
import os, sys
before = dict(os.environ)
import tests.conftest
changed = {k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k)}
sys.exit(f"the environment changed: {sorted(changed)}" if changed else 0)
"""


def test_loading_the_fixtures_needs_no_redis_and_leaves_the_environment_alone():
    nothing_listens = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-c", LOAD], cwd=ROOT, env=nothing_listens,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "embedded" not in done.stdout + done.stderr
