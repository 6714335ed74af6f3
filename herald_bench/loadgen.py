"""Python side of the C SSE load generator (``herald_bench/loadgen.c``).

``build()`` compiles the generator on demand; ``LoadGen`` runs one instance: it writes the
request targets to a file, starts the binary in its own process group, follows its stdout
protocol (``READY`` once every connection has its response head or failed, ``PROGRESS``
every 0.5 s, ``DONE`` after the result file is written) and returns the result JSON.

Typical use::

    gen = LoadGen(port, [f"/events?topics=bench&token={t}" for t in tokens], conns=2000,
                  expect=100, fanout=True)
    gen.start()
    gen.wait_ready(60)
    ...  # publish
    result = gen.wait(120)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("loadgen.c")
BINARY = Path(__file__).with_name("build") / "loadgen"
COMPILER = "gcc"
CFLAGS = ("-O2", "-Wall", "-Wextra")


def build(force: bool = False, source: Path = SOURCE, binary: Path = BINARY) -> Path:
    """Compile ``source`` (``loadgen.c``) to ``binary`` unless it exists and is newer.

    Raises ``RuntimeError`` when gcc is missing or the compilation fails.
    """
    if (not force and binary.exists()
            and binary.stat().st_mtime >= source.stat().st_mtime):
        return binary
    cc = shutil.which(COMPILER)
    if cc is None:
        raise RuntimeError(f"cannot build {source.name}: C compiler {COMPILER!r} not found "
                           "on PATH (Debian: apt-get install gcc)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private name and rename, so a concurrent build never runs a half-written
    # binary.
    tmp = binary.with_name(f".{binary.name}.{os.getpid()}.tmp")
    proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(source)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{COMPILER} failed to build {source}:\n{proc.stderr}")
    tmp.replace(binary)
    return binary


def _fields(line: str) -> dict[str, str]:
    """``KEY a=1 b=2`` -> {"a": "1", "b": "2"}."""
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


class LoadGen:
    """One run of the C load generator against ``host:port``.

    ``paths`` are request targets (connection ``i`` uses ``paths[i % len(paths)]``);
    ``expect`` events per connection end the run (0: only ``timeout`` or ``stop()`` do);
    the first ``stall`` connections stop reading after their response head (they write a
    CRLF every ``stall_probe`` seconds so a server-side close becomes visible, see
    loadgen.c); ``rcvbuf`` sets SO_RCVBUF on the stalled sockets; ``fanout`` says every connection
    gets the same stream, which makes ``incomplete_events`` meaningful; ``per_seq`` says
    every event carries a seq of its own (a notification), counted per seq in any order
    (the result's ``per_seq``: arrivals and largest latency of each).
    """

    def __init__(self, port: int, paths: list[str], conns: int, expect: int, *,
                 host: str = "127.0.0.1", timeout: float = 60.0,
                 connect_timeout: float = 30.0, stall: int = 0, rcvbuf: int | None = None,
                 fanout: bool = False, concurrency: int = 1000, stall_probe: float = 0.5,
                 workdir: Path | None = None, per_seq: bool = False) -> None:
        if not paths:
            raise ValueError("paths must not be empty")
        if any("\n" in p or "\r" in p for p in paths):
            raise ValueError("a request target must not contain a line break")
        self.port = port
        self.paths = list(paths)
        self.conns = conns
        self.expect = expect
        self.host = host
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.stall = stall
        self.rcvbuf = rcvbuf
        self.fanout = fanout
        self.per_seq = per_seq
        self.concurrency = concurrency
        self.stall_probe = stall_probe
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.result: dict[str, Any] | None = None
        #: Process id (and process group id) of the generator; 0 until ``start``.
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None
        self._ready: dict[str, Any] | None = None
        self._ready_event = threading.Event()
        self._done_event = threading.Event()
        self._events = 0
        self._conns_done = 0
        self._stderr: deque[str] = deque(maxlen=200)
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def out_path(self) -> Path:
        """Where the generator writes its result JSON."""
        if self.workdir is None:
            raise RuntimeError("LoadGen not started")
        return self.workdir / "result.json"

    def command(self) -> list[str]:
        """The command line ``start`` runs (the paths file lives in ``workdir``)."""
        if self.workdir is None:
            raise RuntimeError("LoadGen not started")
        cmd = [str(BINARY), "--host", self.host, "--port", str(self.port),
               "--paths", str(self.workdir / "paths.txt"), "--conns", str(self.conns),
               "--expect", str(self.expect), "--timeout", str(self.timeout),
               "--connect-timeout", str(self.connect_timeout), "--stall", str(self.stall),
               "--stall-probe", str(self.stall_probe), "--concurrency", str(self.concurrency),
               "--out", str(self.out_path)]
        if self.rcvbuf:
            cmd += ["--rcvbuf", str(self.rcvbuf)]
        if self.fanout:
            cmd.append("--fanout")
        if self.per_seq:
            cmd.append("--per-seq")
        return cmd

    def start(self) -> None:
        """Write the paths file and start the generator in its own process group."""
        if self._proc is not None:
            raise RuntimeError("LoadGen already started")
        build()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="herald-loadgen-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "paths.txt").write_text("".join(p + "\n" for p in self.paths))
        self.out_path.unlink(missing_ok=True)
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, bufsize=1, process_group=0)
        self.pid = self._proc.pid
        self._threads = [
            threading.Thread(target=self._read_stdout, name="loadgen-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="loadgen-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Block until READY; returns {"conns", "ok", "failed", "seconds"}.

        Raises ``RuntimeError`` (with the generator's stderr) if it exits first and
        ``TimeoutError`` if READY does not come within ``timeout`` seconds.
        """
        proc = self._started()
        deadline = time.monotonic() + timeout
        while not self._ready_event.wait(0.05):
            if proc.poll() is not None:
                self._join_readers(2.0)
                if self._ready is not None:
                    break
                raise RuntimeError(f"loadgen exited with status {proc.returncode} before "
                                   f"READY:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"loadgen not READY after {timeout} s:\n{self.stderr()}")
        assert self._ready is not None
        return dict(self._ready)

    def progress(self) -> int:
        """Events received so far, as of the latest PROGRESS line."""
        return self._events

    def conns_done(self) -> int:
        """Connections that had all their expected events, as of the latest PROGRESS line."""
        return self._conns_done

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the generator to finish and return its result JSON.

        Raises ``TimeoutError`` if it is still running after ``timeout`` seconds (it keeps
        running: call ``stop()``), ``RuntimeError`` if it failed.
        """
        proc = self._started()
        if self.result is not None:
            return self.result
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"loadgen still running after {timeout} s") from None
        self._join_readers(5.0)
        if proc.returncode != 0 or not self._done_event.is_set():
            raise RuntimeError(f"loadgen failed (exit status {proc.returncode}):\n"
                               f"{self.stderr()}")
        try:
            self.result = json.loads(self.out_path.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"loadgen result {self.out_path} unreadable: {exc}") from exc
        self._cleanup_workdir()
        return self.result

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM the generator (it writes its result) and return the result JSON."""
        proc = self._started()
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the generator's process group if it still runs; no result."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5.0)

    def close(self) -> None:
        """Kill the generator if it still runs and remove a temporary workdir."""
        self.kill()
        self._join_readers(1.0)
        self._cleanup_workdir()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stderr(self) -> str:
        """The last lines the generator wrote to stderr."""
        return "".join(self._stderr)

    # ------------------------------------------------------------------ internals

    def _started(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise RuntimeError("LoadGen not started")
        return self._proc

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("PROGRESS"):
                fields = _fields(line)
                self._events = int(fields.get("events", self._events))
                self._conns_done = int(fields.get("conns_done", self._conns_done))
            elif line.startswith("READY"):
                fields = _fields(line)
                self._ready = {"conns": int(fields["conns"]), "ok": int(fields["ok"]),
                               "failed": int(fields["failed"]),
                               "seconds": float(fields["seconds"])}
                self._ready_event.set()
            elif line.startswith("DONE"):
                self._done_event.set()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def _join_readers(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
