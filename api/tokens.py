"""POST /api/tokens: mint a subscriber token for the streamer."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.schemas import RevokeIn, TokenIn, parse
from herald import access
from herald.event import user_topic
from herald.times import iso

bp = Blueprint("tokens", __name__, url_prefix="/api/tokens")


@bp.post("")
def mint() -> tuple[Response, int]:
    """A token for ``user`` with extra ``topics`` (exact or ``prefix*``) for ``ttl`` s."""
    auth.publisher()
    body = parse(request, TokenIn)
    cfg = services().config
    token, grant = access.issue(cfg, body.user, body.topics, body.ttl)
    topics = [user_topic(body.user), *(t for t in body.topics if not t.endswith("*"))]
    query = urlencode({"topics": ",".join(dict.fromkeys(topics)), "token": token})
    return jsonify(token=token, token_id=grant.token_id, user=grant.user,
                   topics=list(grant.topics), expires_at=iso(grant.expires_at * 1000),
                   stream_url=f"{cfg.streamer_url}/events?{query}"), 201


@bp.post("/revoke")
def revoke() -> Response:
    """Deny a token by its id: new connections are refused, open ones closed."""
    auth.publisher()
    body = parse(request, RevokeIn)
    cfg = services().config
    services().revocations.revoke(body.token_id, time.time() + cfg.token_max_ttl)
    return jsonify(token_id=body.token_id, revoked=True)
