"""Python side of the C POST load generator (``herald_bench/poster.c``).

``post()`` compiles the poster on demand, writes the request bodies to a file, runs it to
the end (every request answered, failed or timed out) and returns what it measured.
A body stamps its send time where ``stamped`` put ``STAMP``: the poster writes the
request's due time there (CLOCK_REALTIME ns), which the event carries to the SSE client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herald_bench.loadgen import build

SOURCE = Path(__file__).with_name("poster.c")
BINARY = Path(__file__).with_name("build") / "poster"
STAMP = "@" * 19  # poster.c replaces it by 19 digits of nanoseconds


def stamped(body: dict[str, Any]) -> str:
    """``body`` as one line of JSON, every string value ``STAMP`` left bare for the poster."""
    return json.dumps(body, separators=(",", ":")).replace(f'"{STAMP}"', STAMP)


@dataclass
class Posted:
    """What one poster run measured: per request [due, sent, answered, status] (ns,
    CLOCK_REALTIME; status 0: no answer), the answers' bodies when asked for, its CPU."""

    requests: list[list[int]]
    answers: dict[int, tuple[int, str]]
    cpu_s: float
    seconds: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_s / max(self.seconds, 1e-9)


def post(port: int, path: str, bodies: list[str], rate: float, *, inflight: int = 32,
         headers: tuple[str, ...] = (), timeout: float = 30.0,
         keep_answers: bool = False) -> Posted:
    """POST ``bodies`` to 127.0.0.1:``port`` ``path`` at ``rate`` requests/s (open loop,
    at most ``inflight`` at once); raises ``RuntimeError`` if the poster fails."""
    binary = build(source=SOURCE, binary=BINARY)
    workdir = Path(tempfile.mkdtemp(prefix="herald-poster-"))
    try:
        (workdir / "bodies").write_text("".join(b + "\n" for b in bodies))
        argv = [str(binary), "--port", str(port), "--path", path, "--bodies",
                str(workdir / "bodies"), "--out", str(workdir / "out.json"), "--rate",
                str(rate), "--inflight", str(inflight), "--timeout", str(timeout)]
        for header in headers:
            argv += ["--header", header]
        if keep_answers:
            argv += ["--answers", str(workdir / "answers")]
        deadline = len(bodies) / max(rate, 1e-9) + timeout + 60
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=deadline,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"poster failed ({proc.returncode}): {proc.stderr[-2000:]}")
        out = json.loads((workdir / "out.json").read_text())
        answers = _answers(workdir / "answers") if keep_answers else {}
        return Posted(out["requests"], answers, out["cpu_user_s"] + out["cpu_sys_s"],
                      out["seconds"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _answers(path: Path) -> dict[int, tuple[int, str]]:
    found = {}
    for line in path.read_text().splitlines():
        index, status, body = line.split("\t", 2)
        found[int(index)] = (int(status), body)
    return found
