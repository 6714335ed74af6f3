"""The import layers of setup.cfg's import-linter contracts hold (``lint-imports``).

herald is the bottom layer: it imports nothing of api, tasks, streamer or the
benchmark; the API and the streamer are independent of each other; the streamer
imports no Celery task code. The check reads the source only (nothing is imported).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept():
    command = str(Path(sys.executable).with_name("lint-imports"))
    if not Path(command).exists():
        command = shutil.which("lint-imports") or command
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_benchmark_is_not_installed_as_a_package_named_bench():
    from importlib.metadata import distribution

    installed = distribution("herald").read_text("top_level.txt") or ""
    assert "bench" not in installed.split(), installed
    assert "herald_bench" in installed.split(), installed
