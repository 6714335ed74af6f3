"""The one-click unsubscribe pages: ``GET`` and ``POST /api/unsubscribe/<token>``.

The token (``herald.unsubscribe``) is the credential: no API key or user token is
asked for. ``GET`` only shows a page asking "Stop <category> e-mails from <app>?" with
a button, and changes nothing: mail scanners and link previews open every link. ``POST``
is RFC 8058's one-click unsubscribe (the body ``List-Unsubscribe=One-Click``, form
encoded, as mail providers send it; the page's button posts the same): it turns the
user's e-mail off for that category and answers a confirmation page, 200. Posting again
changes nothing more and answers the same. A token that is altered, cut short or of a
category the deployment no longer has is answered with an HTML page, 400 or 404, and
nothing changes. <app> is the display name of ``HERALD_MAIL_FROM``, the sender the
user saw.

Every page is self-contained (no script, no outside resource), may not be framed (a
page of another site cannot trick a click on the button), is not cached and sends no
``Referer`` (the URL is the credential).
"""

from __future__ import annotations

from email.utils import parseaddr

from flask import Blueprint, Response, render_template_string, request

from api.context import services
from herald import unsubscribe
from herald.channels import EMAIL
from herald.config import Config
from herald.errors import Refusal

bp = Blueprint("unsubscribe", __name__, url_prefix="/api/unsubscribe")

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's body, as a form field
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
button{font:inherit;padding:.5rem 1.25rem;cursor:pointer}</style></head>
<body><main id="{{ state }}">
<h1>{{ title }}</h1>
<p id="message">{{ message }}</p>
{% if ask %}<form method="post">
<input type="hidden" name="{{ field }}" value="{{ value }}">
<button type="submit" id="unsubscribe">Unsubscribe</button>
</form>{% endif %}
</main></body></html>
"""


@bp.get("/<token>")
def ask(token: str) -> Response:
    """The question and its button; nothing changes."""
    cfg = services().config
    try:
        _, category = unsubscribe.verify(cfg, token)
    except Refusal as refusal:
        return _refused(refusal)
    return _page(200, "ask", f"Stop {category} e-mails from {sender(cfg)}?",
                 f"You will no longer get {category} e-mails from {sender(cfg)}. Other "
                 "e-mails and your notifications in the app stay as they are.", ask=True)


@bp.post("/<token>")
def confirm(token: str) -> Response:
    """Turn the user's e-mail off for the token's category (again: no change)."""
    svc = services()
    try:
        user, category = unsubscribe.verify(svc.config, token)
    except Refusal as refusal:
        return _refused(refusal)
    if request.form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
        return _refused(Refusal(400, "invalid_field", "send List-Unsubscribe=One-Click "
                                "(form encoded)", ONE_CLICK[0]))
    svc.preferences.turn_off(user, EMAIL, category)
    return _page(200, "done", "You are unsubscribed",
                 f"You will get no more {category} e-mails from {sender(svc.config)}.")


def sender(config: Config) -> str:
    """Who sends the mail, as the user saw it: ``HERALD_MAIL_FROM``'s name or address."""
    name, address = parseaddr(config.mail_from)
    return name or address


def _refused(refusal: Refusal) -> Response:
    return _page(refusal.status, "refused", "This unsubscribe link does not work",
                 f"{refusal.message[:1].upper()}{refusal.message[1:]}. Nothing was changed.")


def _page(status: int, state: str, title: str, message: str, ask: bool = False) -> Response:
    html = render_template_string(PAGE, state=state, title=title, message=message, ask=ask,
                                  field=ONE_CLICK[0], value=ONE_CLICK[1])
    return Response(html, status, headers=HEADERS, mimetype="text/html")
