"""The demo page, in development only: ``/demo/`` and its ``/demo/config``.

The page (``web/demo``, bundled into ``web/dist`` by ``npm run build``) needs to send
notifications and start jobs like a backend would, so ``/demo/config`` hands it the dev
API key. That is why this blueprint is never registered with ``HERALD_ENV=production``,
and why ``/demo/config`` answers only a same-origin ``fetch`` from this machine: the
peer must be a loopback address, the ``Host`` a loopback name (a DNS-rebinding page
sends its own name), and ``Sec-Fetch-Site`` must be ``same-origin`` (a page of another
origin, or a request without the browser's fetch metadata, is refused); 403 otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, jsonify, redirect, request, send_from_directory

from api.context import services
from herald.errors import Refusal

bp = Blueprint("demo", __name__, url_prefix="/demo")

WEB = Path(__file__).resolve().parent.parent / "web"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
LOOPBACK_HOST = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE)


@bp.get("")
def index_redirect() -> Response:
    return redirect("/demo/", code=308)


@bp.get("/")
def index() -> Response:
    return _file(WEB / "demo", "index.html")


@bp.get("/config")
def config() -> Response:
    """The demo's settings, dev API key included: for this machine's browsers only."""
    _check_same_machine_page()
    cfg = services().config
    return jsonify(api_url=request.host_url.rstrip("/"), streamer_url=cfg.streamer_url,
                   api_key=cfg.api_key)


def _check_same_machine_page() -> None:
    """Refuse (403) anything but the demo page's own fetch on this machine."""
    if request.remote_addr not in LOOPBACK:
        raise _refused("remote_addr", "the demo configuration is served to this machine "
                       "only")
    if not LOOPBACK_HOST.fullmatch(request.host):
        raise _refused("Host", "must name this machine (127.0.0.1, localhost or [::1], "
                       "with an optional port)")
    if request.headers.get("Sec-Fetch-Site") != "same-origin":
        raise _refused("Sec-Fetch-Site", "must be same-origin: only the demo page itself "
                       "may read its configuration")


def _refused(field: str, rule: str) -> Refusal:
    return Refusal(403, "forbidden", f"{field}: {rule}", field)


@bp.get("/<path:name>")
def asset(name: str) -> Response:
    if name.startswith("dist/"):
        return _file(WEB / "dist", name.removeprefix("dist/"))
    return _file(WEB / "demo", name)


def _file(folder: Path, name: str) -> Response:
    if not (folder / name).is_file():
        raise Refusal(404, "not_found", f"no demo file {name!r} (build the page: cd web && "
                      "npm ci && npm run build)", "path")
    return send_from_directory(folder, name, max_age=0)
