"""The demo page, in development only: ``/demo/``, its ``/demo/config`` and ``/demo/mail``.

The page (``web/demo``, bundled into ``web/dist`` by ``npm run build``) needs to send
notifications and start jobs like a backend would, so ``/demo/config`` hands it the dev
API key. That is why this blueprint is never registered with ``HERALD_ENV=production``,
and why ``/demo/config`` answers only a same-origin ``fetch`` from this machine: the
peer must be a loopback address, the ``Host`` a loopback name (a DNS-rebinding page
sends its own name), and ``Sec-Fetch-Site`` must be ``same-origin`` (a page of another
origin, or a request without the browser's fetch metadata, is refused); 403 otherwise.
``/demo/mail?user=<u>`` (a user's newest e-mails as the dev mail sink kept them under
``$HERALD_HOME/mail``, see ``api.devmail``) is protected the same way: mail carries
signed unsubscribe links.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask import Blueprint, Response, jsonify, redirect, request, send_from_directory

from api import devmail
from api.context import services
from herald.errors import Refusal, invalid
from herald.event import USER_RULE, valid_user

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
                   api_key=cfg.api_key, categories=list(cfg.categories))


@bp.get("/mail")
def mail() -> Response:
    """The newest e-mails the dev mail sink kept for ``?user=``'s profile address."""
    _check_same_machine_page()
    user = request.args.get("user", "")
    if not valid_user(user):
        raise invalid("user", f"must match {USER_RULE}")
    svc = services()
    folder = svc.config.home / "mail"
    address = svc.profiles.get(user)["email"]
    items = devmail.newest(folder, address) if address and folder.is_dir() else []
    return jsonify(user=user, address=address, folder=str(folder), items=items)


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
