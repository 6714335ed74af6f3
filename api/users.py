"""A user's profile and preferences: ``/api/users/<user>/profile`` and ``.../preferences``.

Who may do what:

- the profile (``email``, ``name``, ``locale``) is read with an API key or the user's
  own token, and written with an API key only. The address is the publisher's data:
  Herald does not prove that a user owns an address, so a token (which lives in a
  browser) that could set it could send that user's mail anywhere. A publisher that lets
  users change their address verifies it, then ``PUT``s it;
- preferences are read and written with an API key or the user's own token: they are
  the user's own choice, and the one-click unsubscribe changes them with no credential
  but its signed link (``api.unsubscribe``).

Another user's token is answered 403. Both ``PUT`` s replace what was stored and answer
what is stored now; a body that breaks a rule is answered 400 naming the field
(``email``, ``locale``, ``email.promo``) and nothing is stored.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api import auth
from api.context import services
from api.schemas import PreferencesIn, ProfileIn, parse
from herald.errors import invalid
from herald.event import USER_RULE, valid_user
from herald.preferences import Preferences, effective

bp = Blueprint("users", __name__, url_prefix="/api/users/<user>")


@bp.get("/profile")
def get_profile(user: str) -> Response:
    """The profile: ``email``, ``name``, ``locale``, each null when unset."""
    _check_user(user)
    auth.publisher_or_user(user)
    return jsonify(services().profiles.get(user))


@bp.put("/profile")
def put_profile(user: str) -> Response:
    """Replace the profile (API key only); answer it as stored."""
    _check_user(user)
    auth.publisher()
    body = parse(request, ProfileIn)
    return jsonify(services().profiles.put(user, body.model_dump()))


@bp.get("/preferences")
def get_preferences(user: str) -> Response:
    """Every channel with every category of the deployment: on unless turned off."""
    _check_user(user)
    auth.publisher_or_user(user)
    return jsonify(_answer(services().preferences.get(user)))


@bp.put("/preferences")
def put_preferences(user: str) -> Response:
    """Replace the preferences; answer them as ``GET`` does."""
    _check_user(user)
    auth.publisher_or_user(user)
    chosen = parse(request, PreferencesIn).model_dump()
    _check_categories(chosen)
    return jsonify(_answer(services().preferences.put(user, chosen)))


def _answer(stored: Preferences) -> Preferences:
    return effective(stored, services().config.categories)


def _check_categories(chosen: Preferences) -> None:
    categories = services().config.categories
    for channel, switches in chosen.items():
        for category in switches:
            if category not in categories:
                raise invalid(f"{channel}.{category}",
                              f"unknown category; one of {', '.join(categories)}")


def _check_user(user: str) -> None:
    if not valid_user(user):
        raise invalid("user", f"must match {USER_RULE}")
