"""The browser client's own unit tests (node --test), run as part of the suite."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT

WEB = ROOT / "web"


def test_web_client_unit_tests_pass():
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed for the web client's tests (Node.js 20+)")
    if not (WEB / "node_modules").exists():
        pytest.fail("web/node_modules is missing: cd web && npm ci")
    done = subprocess.run([npm, "test"], cwd=WEB, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
