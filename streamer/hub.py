"""The hub: which local clients want which topic, and fan-out to them.

Clients that follow the same set of topics over the same transport form a group. Each
batch of events read from Redis is turned, per group, into one payload (the frames of
the batch's events for that group, in publication order), which is then written to
every client of the group. Each event is encoded at most once per transport (see
``streamer.transport``), whatever the number of clients and groups; the hub never asks
which transport a group uses. A client still in its handshake (waiting for its
subscription or receiving its replay) is *joining*: it collects the frames of its
topics, with their positions, until ``activate`` hands it those after its replay and
makes it a member of its group. What it collects is bounded like a live client's queue
(its ``limit``): a joining client past it is closed as too slow.

Guarantees:
- each client receives its events in publication order, each at most once: an event
  at or before the last position dispatched on its topic is dropped (as a gap fill
  after a reconnection overlaps with live events);
- an envelope read from Redis that is not a well-formed event of its topic, or that
  no transport may frame (``transport.check_event``: an id or a type with CR, LF or
  NUL, an envelope of several lines), is dropped and logged, never written, whatever
  Redis holds;
- dispatch never waits on a client: it makes one non-blocking write per client per
  batch, and a client the kernel does not take everything from falls back to its own
  bounded buffer (see ``streamer.client``), so a slow client delays no one;
- the hub asks the broker for a topic when its first local client arrives and lets it
  go when its last one leaves, so a streamer receives from Redis only what its clients
  want;
- a client is forgotten the moment it closes, not at the next event on its topics;
- it counts, in plain integers read by ``streamer.metrics`` when scraped, open streams
  per transport, events received, deliveries and bytes handed out (per group per batch,
  never per client per event), and clients dropped as slow by reason; with metrics on,
  each event's age is observed once per batch, when the batch has been handed out;
- a client's stream ends when its token expires (see ``streamer.expiry``): at its
  ``exp``, after every event dispatched to it before, it is sent ``token-expired`` and
  closed, and it receives nothing after that.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

import gevent
import gevent.event

from herald.event import Event, id_key
from herald.tokens import Grant
from streamer.client import TOO_SLOW, Client
from streamer.expiry import TOKEN_EXPIRED, Deadlines
from streamer.history import Key, Replay, reset_envelope
from streamer.metrics import StreamerMetrics
from streamer.transport import Ending, Transport, check_event

log = logging.getLogger(__name__)

GroupKey = tuple[Transport, tuple[str, ...]]

HEARTBEAT_SLICE = 500  # writes between yields, so a heartbeat pass never holds events up
# (and so does ending the streams of many clients whose tokens expire at once)


class Group:
    """The local clients of one transport that follow exactly the same topics."""

    __slots__ = ("clients", "frames", "key", "last_sent", "topics", "transport")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        self.transport, self.topics = key
        self.clients: set[Client] = set()
        self.frames: list[bytes] = []
        self.last_sent = time.monotonic()


class Frames:
    """One event and its frames, each made once per transport and only when some
    client needs it. The event passed ``check_event`` (see ``decode``)."""

    __slots__ = ("_first", "_frame", "_others", "envelope", "event_id", "key", "ts", "type")

    def __init__(self, key: Key, event_id: str, type: str, envelope: bytes,
                 ts: int = 0) -> None:
        self.key = key
        self.event_id = event_id
        self.type = type
        self.envelope = envelope
        self.ts = ts  # publish time (ms since the epoch), 0 when unknown
        self._first: Transport | None = None  # the transport most events need only
        self._frame = b""
        self._others: dict[Transport, bytes] | None = None

    def for_transport(self, transport: Transport) -> bytes:
        if transport is self._first:
            return self._frame
        if self._first is None:
            self._first = transport
            self._frame = transport.encode_event(self.event_id, self.type, self.envelope)
            return self._frame
        if self._others is None:
            self._others = {}
        frame = self._others.get(transport)
        if frame is None:
            frame = self._others[transport] = transport.encode_event(
                self.event_id, self.type, self.envelope)
        return frame


def _group_key(client: Client) -> GroupKey:
    return client.transport, tuple(sorted(client.topics))


class Hub:
    """Topic -> local clients, for one streamer process."""

    def __init__(self, want: Callable[[str], None], unwant: Callable[[str], None],
                 metrics: StreamerMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else StreamerMetrics(enabled=False)
        self._want = want
        self._unwant = unwant
        self._groups: dict[GroupKey, Group] = {}
        self._by_topic: dict[str, list[Group]] = {}
        self._joining: dict[str, set[Client]] = {}
        self.clients: set[Client] = set()
        self.per_user: dict[str, int] = {}  # open streams (joining or live) per user
        self.positions: dict[str, Key] = {}  # last event dispatched, per topic
        self.starts: dict[str, Key] = {}  # where a topic's subscription began
        # A position every later dispatch is above: the last event dispatched, or a
        # Redis position all earlier events of subscribed topics have been dispatched to.
        self.latest: Key | None = None
        self._position_waiters: dict[str, gevent.event.Event] = {}  # one per topic
        self.expiries: Deadlines[Client] = Deadlines(self.expire)
        self.events_in = 0
        self.deliveries = 0
        self.bytes_out = 0
        self.dropped = 0
        self.connections: dict[str, int] = {}  # open streams (joining or live) per transport

    @property
    def topics(self) -> dict[str, list[Group]]:
        return self._by_topic

    def add(self, client: Client) -> None:
        """Register a client that needs no replay and whose topics are subscribed."""
        self.join(client)
        self.activate(client, None)

    def join(self, client: Client) -> None:
        """Register ``client`` as joining: it collects its topics' frames from now on."""
        self.clients.add(client)
        self.per_user[client.user] = self.per_user.get(client.user, 0) + 1
        name = client.transport.name
        self.connections[name] = self.connections.get(name, 0) + 1
        client.on_close(self.remove)
        client.prelive = []
        if client.grant is not None:
            self.expiries.add(client, client.grant.expires_at)
        for topic in client.topics:
            self._use(topic)
            self._joining.setdefault(topic, set()).add(client)

    def activate(self, client: Client, after: Key | None,
                 marker: tuple[Key, bytes] | None = None) -> None:
        """Queue the frames collected after position ``after``, then go live.

        ``marker`` (a position and its frame, such as the ``ready`` event) is queued in
        order among those frames.
        """
        if client.closed:
            return
        self._leave_joining(client)
        queue = [(key, frame) for key, frame in client.prelive or ()
                 if after is None or key > after]
        if marker is not None:
            queue.append(marker)
            queue.sort(key=lambda item: item[0])
        client.prelive = None
        client.prelive_bytes = 0
        for _, frame in queue:
            if not client.enqueue(frame):
                client.close(TOO_SLOW)
                return
        self._enter_group(client)

    def retopic(self, client: Client, topics: tuple[str, ...]) -> None:
        """Move a live client to other topics (a WebSocket subscribe or unsubscribe)."""
        old = client.topics
        self._leave_group(client)
        client.topics = topics
        for topic in topics:
            self._use(topic)
        self._enter_group(client)
        self._release(old)

    def remove(self, client: Client) -> None:
        """Forget ``client``; topics left without a local client are unsubscribed."""
        if client not in self.clients:
            return
        self.clients.discard(client)
        self.expiries.discard(client)
        left = self.per_user.get(client.user, 1) - 1
        if left:
            self.per_user[client.user] = left
        else:
            self.per_user.pop(client.user, None)
        name = client.transport.name
        self.connections[name] -= 1
        if client.close_reason == TOO_SLOW:
            self.dropped += 1
        self.metrics.dropped(client.close_reason)
        self._leave_joining(client)
        self._leave_group(client)
        self._release(client.topics)

    def _use(self, topic: str) -> None:
        if not self._in_use(topic):
            self._want(topic)

    def _release(self, topics: Iterable[str]) -> None:
        """Unsubscribe those of ``topics`` no local client wants any more."""
        for topic in topics:
            if not self._in_use(topic):
                self.positions.pop(topic, None)
                self.starts.pop(topic, None)
                waiter = self._position_waiters.pop(topic, None)
                if waiter is not None:
                    waiter.set()
                self._unwant(topic)

    def topic_count(self) -> int:
        """Topics some local client (joining or live) follows: those subscribed."""
        return len(self._by_topic.keys() | self._joining.keys())

    def _in_use(self, topic: str) -> bool:
        return topic in self._by_topic or topic in self._joining

    def _leave_joining(self, client: Client) -> None:
        for topic in client.topics:
            joining = self._joining.get(topic)
            if joining is not None:
                joining.discard(client)
                if not joining:
                    del self._joining[topic]

    def _enter_group(self, client: Client) -> None:
        key = _group_key(client)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = Group(key)
            for topic in group.topics:
                self._by_topic.setdefault(topic, []).append(group)
        group.clients.add(client)

    def _leave_group(self, client: Client) -> None:
        group = self._groups.get(_group_key(client))
        if group is None or client not in group.clients:
            return
        group.clients.discard(client)
        if group.clients:
            return
        del self._groups[group.key]
        for topic in group.topics:
            groups = self._by_topic[topic]
            groups.remove(group)
            if not groups:
                del self._by_topic[topic]

    def record_starts(self, topics: list[str], position: Key) -> None:
        """Remember where subscriptions began, for a gap fill before any event came.

        The caller guarantees that every event at or before ``position`` of a subscribed
        topic has been dispatched, so ``position`` is also a valid start for new streams.
        """
        for topic in topics:
            if self._in_use(topic):
                self.starts.setdefault(topic, position)
        if self.latest is None or position > self.latest:
            self.latest = position
        for topic in topics:
            waiter = self._position_waiters.pop(topic, None)
            if waiter is not None:
                waiter.set()

    def wait_positions(self, topics: tuple[str, ...], timeout: float) -> Key | None:
        """Wait until ``topics`` have a known position; then a start for a new stream.

        A topic's position is known once its subscription is confirmed and its start
        recorded (see ``record_starts``), so this also waits for the subscription.
        """
        deadline = time.monotonic() + timeout
        for topic in topics:
            while topic not in self.positions and topic not in self.starts:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                waiter = self._position_waiters.get(topic)
                if waiter is None:
                    waiter = self._position_waiters[topic] = gevent.event.Event()
                waiter.wait(remaining)
        return self.latest

    def gap_positions(self) -> dict[str, Key]:
        """For every subscribed topic, the position a gap fill should start after."""
        out = {}
        for topic in (*self._by_topic, *self._joining):
            position = self.positions.get(topic) or self.starts.get(topic)
            if position is not None:
                out[topic] = position
        return out

    def dispatch(self, batch: Iterable[tuple[str, bytes]]) -> None:
        """Fan out a batch of ``(topic, envelope)`` read from Redis, in order."""
        touched: list[Group] = []
        too_slow: list[Client] = []
        stamps: list[int] = []
        positions = self.positions
        for topic, envelope in batch:
            if not self._in_use(topic):
                continue
            frames = decode(topic, envelope)
            if frames is None:
                continue
            last = positions.get(topic)
            if last is not None and frames.key <= last:
                continue  # already dispatched (a gap fill overlapping live events)
            positions[topic] = frames.key
            self.latest = frames.key
            self.events_in += 1
            stamps.append(frames.ts)
            for client in self._joining.get(topic, ()):
                if not client.hold(frames.key, frames.for_transport(client.transport)):
                    too_slow.append(client)
            for group in self._by_topic.get(topic, ()):
                if not group.frames:
                    touched.append(group)
                group.frames.append(frames.for_transport(group.transport))
        now = time.monotonic()
        for group in touched:
            frames_of_group = group.frames
            payload = (frames_of_group[0] if len(frames_of_group) == 1
                       else b"".join(frames_of_group))
            group.frames = []
            group.last_sent = now
            clients = len(group.clients)
            self.deliveries += len(frames_of_group) * clients
            self.bytes_out += len(payload) * clients
            _write_all(group.clients, payload)
        if stamps and self.metrics.enabled:
            self.metrics.ages.observe(time.time(), stamps)
        for client in too_slow:
            client.close(TOO_SLOW)

    def fill(self, replay: Replay) -> None:
        """Deliver what a lost subscription missed: events, or a reset per topic."""
        self.dispatch((topic, envelope) for _, topic, envelope in replay.events)
        for topic, reason in replay.resets.items():
            log.warning("topic %s: %s; sending reset to its clients", topic, reason)
            envelope = reset_envelope(replay.position, reason, None)
            frames = Frames(id_key(replay.position), replay.position, "reset", envelope)
            for group in self._by_topic.get(topic, ()):
                _write_all(set(group.clients), frames.for_transport(group.transport))
            for client in list(self._joining.get(topic, ())):
                if not client.hold(frames.key, frames.for_transport(client.transport)):
                    client.close(TOO_SLOW)
            self.positions[topic] = frames.key

    def heartbeat(self, idle_for: float = 0.0) -> None:
        """Send a comment to every client of every group idle for ``idle_for`` seconds.

        Keeps proxies from closing quiet streams and finds dead peers. Groups that got
        events meanwhile need none. Yields to the event loop every ``HEARTBEAT_SLICE``
        writes, so events are not held up behind a pass over many clients.
        """
        cutoff = time.monotonic() - idle_for
        written = 0
        for group in list(self._groups.values()):
            if group.last_sent > cutoff or not group.clients:
                continue
            _write_all(set(group.clients), group.transport.heartbeat)
            group.last_sent = time.monotonic()
            written += len(group.clients)
            if written >= HEARTBEAT_SLICE:
                written = 0
                gevent.sleep(0)

    def run_heartbeats(self, interval: float) -> gevent.Greenlet:
        """Every ``interval`` / 2 seconds, heartbeat groups quiet for ``interval`` / 2."""
        def beat() -> None:
            while True:
                gevent.sleep(interval / 2)
                self.heartbeat(idle_for=interval / 2)

        return gevent.spawn(beat)

    def reauthorize(self, client: Client, grant: Grant) -> None:
        """Let ``grant`` govern ``client`` from now on: its expiry and its revocation."""
        client.grant = grant
        client.token_id = grant.token_id
        if client in self.clients:
            self.expiries.add(client, grant.expires_at)

    def expire(self, clients: Iterable[Client]) -> None:
        """End these clients' streams because their tokens expired.

        Live clients leave the fan-out at once, so nothing follows; each then gets
        ``token-expired`` after everything already sent to it, and is closed (a few
        hundred at a time, so a crowd sharing one token does not hold events up). A
        client still joining has no stream yet: it is closed (its handshake answers
        401).
        """
        ending = []
        for client in clients:
            if client.closed or client.ending:
                continue
            if client.prelive is not None:
                client.close(TOKEN_EXPIRED)
                continue
            self.remove(client)
            ending.append(client)
        if len(ending) <= HEARTBEAT_SLICE:
            self._finish(ending)
        else:
            gevent.spawn(self._finish_in_slices, ending)

    def _finish(self, clients: list[Client]) -> None:
        words: dict[tuple[Transport, int], bytes] = {}  # one encoding per transport and exp
        for client in clients:
            transport, exp = client.transport, client.grant.expires_at if client.grant else 0
            last = words.get((transport, exp)) or words.setdefault(
                (transport, exp), transport.expired(exp))
            try:
                client.finish(last, TOKEN_EXPIRED)
            except Exception:  # one failure must not spare the others
                log.exception("could not end the stream of %s of %s", client.peer,
                              client.user)
                client.close(TOKEN_EXPIRED)

    def _finish_in_slices(self, clients: list[Client]) -> None:
        for start in range(0, len(clients), HEARTBEAT_SLICE):
            self._finish(clients[start:start + HEARTBEAT_SLICE])
            gevent.sleep(0)

    def close_tokens(self, token_ids: set[str], reason: str) -> int:
        """End every client whose token id is in ``token_ids`` (``Ending.REVOKED``: a
        WebSocket gets a close frame 1008 with ``reason``); return how many."""
        doomed = [c for c in self.clients if c.token_id in token_ids]
        for client in doomed:
            client.end(reason, Ending.REVOKED)
        return len(doomed)

    def end_all(self, reason: str, ending: Ending) -> None:
        """End every client for ``ending`` (each gets its transport's goodbye)."""
        for client in tuple(self.clients):
            client.end(reason, ending)


def decode(topic: str, envelope: bytes) -> Frames | None:
    """The event ``envelope`` holds, read from ``topic``'s channel or history, ready to
    be framed; None (logged) when it is not an event of ``topic`` that every transport
    may frame (``check_event``), whatever Redis held."""
    try:
        event = Event.from_json(envelope.decode())  # strict UTF-8: a text frame's rule
        if event.topic != topic:
            raise ValueError(f"its topic is {event.topic!r:.140}")
        key = check_event(event.id, event.type, envelope)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, UnsafeFrame too
        log.warning("dropped an event on topic %s that cannot be sent (%s): %.200r",
                    topic, exc, envelope)
        return None
    ts = event.ts if type(event.ts) is int else 0  # its age is unknown otherwise
    return Frames(key, event.id, event.type, envelope, ts)


def _write_all(clients: set[Client], payload: bytes) -> None:
    """One non-blocking write of ``payload`` to each client (the fan-out hot loop).

    Clients that must be closed are closed after the loop, since closing one removes it
    from ``clients``.
    """
    size = len(payload)
    write = os.write
    failed: list[tuple[Client, str]] = []
    for client in clients:
        if client.pending is not None:
            if not client.enqueue(payload):
                failed.append((client, TOO_SLOW))
            continue
        try:
            written = write(client.fd, payload)
        except BlockingIOError:
            written = 0
        except OSError:
            failed.append((client, "write failed"))
            continue
        if written != size and not client.enqueue(payload[written:]):
            failed.append((client, TOO_SLOW))
    for client, reason in failed:
        client.close(reason)
