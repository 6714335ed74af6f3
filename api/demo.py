"""The demo page, in development only: ``/demo/`` and its ``/demo/config``.

The page (``web/demo``, bundled into ``web/dist`` by ``npm run build``) needs to send
notifications and start jobs like a backend would, so ``/demo/config`` hands it the dev
API key. That is why this blueprint is never registered with ``HERALD_ENV=production``.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, jsonify, redirect, request, send_from_directory

from api.context import services
from api.errors import ApiError

bp = Blueprint("demo", __name__, url_prefix="/demo")

WEB = Path(__file__).resolve().parent.parent / "web"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@bp.get("")
def index_redirect() -> Response:
    return redirect("/demo/", code=308)


@bp.get("/")
def index() -> Response:
    return _file(WEB / "demo", "index.html")


@bp.get("/config")
def config() -> Response:
    """The demo's settings, dev API key included: for this machine's browsers only."""
    if request.remote_addr not in LOOPBACK:
        raise ApiError(403, "forbidden", "the demo configuration is served to this "
                       "machine only", "remote_addr")
    cfg = services().config
    return jsonify(api_url=request.host_url.rstrip("/"), streamer_url=cfg.streamer_url,
                   api_key=cfg.api_key)


@bp.get("/<path:name>")
def asset(name: str) -> Response:
    if name.startswith("dist/"):
        return _file(WEB / "dist", name.removeprefix("dist/"))
    return _file(WEB / "demo", name)


def _file(folder: Path, name: str) -> Response:
    if not (folder / name).is_file():
        raise ApiError(404, "not_found", f"no demo file {name!r} (build the page: cd web && "
                       "npm ci && npm run build)", "path")
    return send_from_directory(folder, name, max_age=0)
