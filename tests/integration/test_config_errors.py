"""A bad setting stops every service at start-up with one line naming it, no traceback.

The services are started with the command lines ``herald run`` uses (gunicorn for the
API, ``celery -A tasks.app`` for both workers and Flower, ``python -m streamer``).
"""

from __future__ import annotations

import subprocess

import pytest

from herald.config import Config
from herald.stack import free_port
from herald.stack import services as stack
from tests.conftest import ROOT

BAD = {"HERALD_RETRY_MS": "5"}
RULE = "HERALD_RETRY_MS='5' must be an integer from 100 to 600000"


def _command(config: Config, name: str) -> list[str]:
    port = free_port()
    cfg = config.replace(api_port=port, flower_port=port, streamer_port=port)
    command = next(s.command for s in stack(cfg) if s.name == name)
    return [*command, "--port", str(port)] if name == "streamer" else command


@pytest.mark.parametrize("name", ["api", "worker", "outbound", "flower", "streamer"])
def test_a_bad_setting_stops_the_service_with_one_line_naming_it(config, child_env, name):
    done = subprocess.run(_command(config, name), env={**child_env, **BAD}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    named = [line for line in output.splitlines() if "HERALD_RETRY_MS" in line]
    assert len(named) == 1 and RULE in named[0], output
    assert "Traceback" not in output
