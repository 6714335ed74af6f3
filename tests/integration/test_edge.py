"""The compose edge: Debian's nginx with ``deploy/nginx.conf`` in front of a real API and
streamer, and clients that only talk to nginx.

The test renders the file itself, with only the Docker addresses replaced (the DNS
names of the API and streamer services, the listening port), so what is tested is what
compose mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from herald.stack import free_port
from tests.conftest import ROOT, Process, wait_until

CONF = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx not installed (.ci/run installs it)"),
    pytest.mark.usefixtures("clean"),
]
# nginx.conf of the test: the edge's file is included in `http` as compose mounts it
# into conf.d; every path nginx writes is in the test's directory.
MAIN = """
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/edge.conf;
}}
"""


def render(tmp: Path, port: int, api: str, streamer: str) -> Path:
    """deploy/nginx.conf with compose's addresses replaced by local ones; the main conf."""
    text = CONF.read_text()
    local = {"listen 8080;": f"listen 127.0.0.1:{port};", "http://api:8000": api,
             "http://streamer:8001": streamer}
    for compose, here in local.items():
        assert compose in text, f"{CONF} no longer has {compose!r}: update this test"
        text = text.replace(compose, here)
    (tmp / "edge.conf").write_text(text)
    main = tmp / "nginx.conf"
    main.write_text(MAIN.format(tmp=tmp))
    return main


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def edge(api_url: str, streamer: str) -> Iterator[str]:
    """Base URL of nginx running the edge config in front of the API and streamer."""
    tmp = Path(tempfile.mkdtemp(prefix="herald-edge-"))
    port = free_port()
    main = render(tmp, port, api_url, streamer)
    # One process, no user switch, nothing outside tmp: runs as any user.
    command = [NGINX, "-p", f"{tmp}/", "-e", f"{tmp}/error.log", "-c", str(main), "-g",
               f"daemon off; master_process off; pid {tmp}/nginx.pid;"]
    nginx = Process("nginx", command, dict(os.environ))

    def up() -> bool:
        assert nginx.popen.poll() is None, nginx.log() + _read(tmp / "error.log")
        return _accepts(port)

    try:
        wait_until(up, 10, what="nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        nginx.stop()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _publish(edge: str, api_key: str, n: int) -> str:
    answer = httpx.post(f"{edge}/api/events", headers={"Authorization": f"Bearer {api_key}"},
                        json={"topic": "user:alice", "type": "note", "data": {"n": n}})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_websocket_upgrades_through_the_edge_and_receives_events(edge, api_key, mint):
    url = edge.replace("http://", "ws://") + "/ws?" + urlencode({"token": mint("alice")})
    with connect(url, open_timeout=5) as ws:
        ready = json.loads(ws.recv(timeout=5))
        assert ready["reply"] == "ready", ready
        sent = _publish(edge, api_key, 1)
        event = json.loads(ws.recv(timeout=5))
        assert (event["id"], event["type"], event["data"]) == (sent, "note", {"n": 1})
        ws.send(json.dumps({"op": "ping", "ref": "p"}))
        assert json.loads(ws.recv(timeout=5))["reply"] == "pong"


def test_sse_streams_through_the_edge(edge, api_key, mint):
    with httpx.Client(timeout=5) as http, connect_sse(
            http, "GET", f"{edge}/events", params={"token": mint("alice")}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = source.iter_sse()
        assert next(e for e in events if e.data).event == "ready"
        sent = _publish(edge, api_key, 2)
        note = next(e for e in events if e.event == "note")
        assert note.id == sent and note.json()["data"] == {"n": 2}
