"""Commands a WebSocket client sends: subscribe, unsubscribe, read, ping.

Each is a JSON text message ``{"op": ..., "ref": ...}``; each gets one reply
``{"reply": op, "ref": ref, "ok": true, ...}`` or, on a refusal, ``"ok": false`` with an
``"error": {"code", "message", "field"}`` like the API's. A malformed message is
refused the same way and never closes the connection.

- ``subscribe`` / ``unsubscribe`` ``{"topics": [...]}``: same grammar, grants and limit
  as the ``topics`` of the handshake; the reply comes once Redis has confirmed new
  subscriptions, so the client receives every event published after it.
- ``read`` ``{"ids": [...]}`` or ``{"all": true}``: marks the user's own inbox entries
  read, and tells the user's other tabs with a ``notification.read`` event, as the API.
- ``ping``: replies ``pong``.
- ``auth`` ``{"token": "..."}``: swaps the connection's token without reconnecting. The
  new token is fully checked (signature, expiry, revocation), must be for the same user
  and must grant every topic the connection follows (unsubscribe first otherwise); the
  reply carries its ``exp``. From then on its expiry and its revocation govern the
  connection. Refused (``unauthorized``, ``forbidden`` or ``invalid_field``, naming the
  ``token`` field), the old token stays in charge.

Once the connection's token has expired every command is refused (``unauthorized``)
and the connection ends as at expiry (``token-expired``, then close code 4001).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import gevent
import redis

from herald.config import Config
from herald.errors import TokenError
from herald.event import TOPIC_RULE, user_topic, valid_topic
from herald.ids import valid_id
from herald.services import Services
from herald.tokens import Grant
from streamer.broker import Broker
from streamer.client import Client
from streamer.expiry import TOKEN_EXPIRED, expired
from streamer.hub import Hub
from streamer.websocket import error_reply, reply

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 5.0
MAX_READ_IDS = 1000


class Refused(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class Commands:
    """Carries out WebSocket commands for the clients of one streamer process."""

    def __init__(self, config: Config, hub: Hub, broker: Broker, services: Services,
                 grant_for: Callable[[str], Grant]) -> None:
        self.config = config
        self.hub = hub
        self.broker = broker
        self.services = services
        self.grant_for = grant_for  # checks a token (``Streamer.grant_for``)

    def handle(self, client: Client, text: str) -> None:
        """Called by the client for each complete text message (in the event loop)."""
        op, ref = "?", None
        try:
            message = json.loads(text)
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                raise Refused("invalid_field", 'a command is {"op": ..., "ref": ...}', "op")
            op, ref = message["op"], message.get("ref")
            if self._expired(client):
                raise Refused("unauthorized", TOKEN_EXPIRED, "token")
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                raise Refused("invalid_field", "op must be subscribe, unsubscribe, read, "
                              "ping or auth", "op")
            handler(client, message, op, ref)
        except json.JSONDecodeError:
            client.send(error_reply(op, ref, "invalid_json", "a command must be JSON"))
        except Refused as exc:
            client.send(error_reply(op, ref, exc.code, exc.message, exc.field))
        if self._expired(client):  # the answer went out; now the stream ends
            self.hub.expire((client,))

    @staticmethod
    def _expired(client: Client) -> bool:
        return client.grant is not None and expired(client.grant.expires_at)

    def op_ping(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        client.send(reply("pong", ref))

    def op_auth(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise Refused("invalid_field", "token must be a subscriber token", "token")
        try:
            grant = self.grant_for(token)
        except TokenError as exc:
            raise Refused("unauthorized", str(exc), "token") from None
        if grant.user != client.user:
            raise Refused("forbidden", f"token is for {grant.user!r}, this connection for "
                          f"{client.user!r}", "token")
        for topic in client.topics:
            if not grant.allows(topic):
                raise Refused("forbidden", f"token does not grant topic {topic!r}, which "
                              "this connection follows (unsubscribe first)", "token")
        self.hub.reauthorize(client, grant)
        client.send(reply(op, ref, exp=grant.expires_at))

    def op_subscribe(self, client: Client, message: dict[str, Any], op: str,
                     ref: Any) -> None:
        topics = self._topics(client, message)
        wanted = tuple(dict.fromkeys((*client.topics, *topics)))
        if len(wanted) > self.config.max_topics:
            raise Refused("invalid_field", f"at most {self.config.max_topics} topics per "
                          "connection", "topics")
        self.hub.retopic(client, wanted)
        gevent.spawn(self._confirm, client, op, ref)

    def op_unsubscribe(self, client: Client, message: dict[str, Any], op: str,
                       ref: Any) -> None:
        topics = set(self._topics(client, message, check_grants=False))
        self.hub.retopic(client, tuple(t for t in client.topics if t not in topics))
        client.send(reply(op, ref, topics=list(client.topics)))

    def op_read(self, client: Client, message: dict[str, Any], op: str, ref: Any) -> None:
        ids, everything = message.get("ids"), message.get("all")
        if everything is True and ids is None:
            gevent.spawn(self._read, client, op, ref, None)
            return
        if (everything is not None or not isinstance(ids, list) or not ids
                or len(ids) > MAX_READ_IDS or not all(valid_id(i, "n") for i in ids)):
            raise Refused("invalid_field", f'give "ids" (1-{MAX_READ_IDS} notification '
                          'ids) or "all": true', "ids")
        gevent.spawn(self._read, client, op, ref, ids)

    def _topics(self, client: Client, message: dict[str, Any],
                check_grants: bool = True) -> tuple[str, ...]:
        topics = message.get("topics")
        if not isinstance(topics, list) or not topics or not all(
                valid_topic(t) for t in topics):
            raise Refused("invalid_field", f"topics must be a list of topics matching "
                          f"{TOPIC_RULE}", "topics")
        if check_grants and client.grant is not None:
            for topic in topics:
                if not client.grant.allows(topic):
                    raise Refused("forbidden", f"token of {client.user!r} does not grant "
                                  f"topic {topic!r}", "topics")
        return tuple(topics)

    def _confirm(self, client: Client, op: str, ref: Any) -> None:
        if self.broker.wait_ready(client.topics, SUBSCRIBE_TIMEOUT):
            client.send(reply(op, ref, topics=list(client.topics)))
        else:
            client.send(error_reply(op, ref, "unavailable", "not subscribed to Redis yet; "
                                    "retry"))

    def _read(self, client: Client, op: str, ref: Any, ids: list[str] | None) -> None:
        inbox, user = self.services.inbox, client.user
        try:
            marked = inbox.mark_all_read(user) if ids is None else inbox.mark_read(user, ids)
            unread = inbox.unread(user)
            if marked:
                self.services.publisher.publish(
                    user_topic(user), {"ids": ids, "all": ids is None, "unread": unread},
                    "notification.read")
        except redis.RedisError:
            log.warning("read command of %s failed", user, exc_info=True)
            client.send(error_reply(op, ref, "unavailable", "Redis unavailable; retry"))
            return
        client.send(reply(op, ref, marked=marked, unread=unread))
