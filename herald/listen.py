"""``herald listen``: a terminal SSE client that prints events as they arrive.

It reconnects after a lost connection (waiting the server's ``retry:`` hint) and sends
``Last-Event-ID`` (the last event's id, or the stream's ``ready`` position) so the
streamer resumes where it left off. Each connection gets a fresh token from ``token()``:
when the streamer ends the stream because its token expired (``token-expired``), it
reconnects at once with a new one and misses nothing. A 401 is retried once at once with
a fresh token (a token minted at the end of a clock second may expire before it
arrives); a second 401 in a row, or any other 4xx (topic not granted), is final: it is
printed and the command exits with status 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import TextIO

import httpx
from httpx_sse import SSEError, connect_sse

from herald.event import Event

DEFAULT_RETRY = 3.0


class ListenError(Exception):
    """The streamer refused the subscription for good (4xx)."""


class Unauthorized(ListenError):
    """The streamer refused the token (401)."""


def format_event(event: Event) -> str:
    """One line: local time, topic, type and the data as JSON."""
    moment = datetime.fromtimestamp(event.ts / 1000).strftime("%H:%M:%S.%f")[:-3]
    data = json.dumps(event.data, ensure_ascii=False)
    return f"{moment} {event.topic} {event.type} {data}"


def listen(url: str, token: Callable[[], str], topics: list[str], out: TextIO = sys.stdout,
           err: TextIO = sys.stderr, raw: bool = False,
           stop: Callable[[], bool] = lambda: False) -> None:
    """Print events of ``topics`` until ``stop()`` is true or a 4xx ends it.

    ``token`` returns a fresh subscriber token; it is called for every connection.
    """
    last_id: str | None = None
    delay = DEFAULT_RETRY
    refused = False  # the previous connection's token was refused (401)
    while not stop():
        again = False  # reconnect at once, with a fresh token
        try:
            last_id, delay, again = _stream(url, token(), topics, last_id, delay, out, err,
                                            raw, stop)
            refused = False
        except Unauthorized:
            if refused:
                raise
            refused = again = True
        except (httpx.HTTPError, SSEError) as exc:
            print(f"herald listen: connection lost ({exc}); retrying in {delay:.1f}s",
                  file=err, flush=True)
        if not stop() and not again:
            time.sleep(delay)


def _stream(url: str, token: str, topics: list[str], last_id: str | None, delay: float,
            out: TextIO, err: TextIO, raw: bool,
            stop: Callable[[], bool]) -> tuple[str | None, float, bool]:
    """One connection; returns the position reached, the retry delay, and whether it
    ended because its token expired."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    params = {"topics": ",".join(topics), "token": token}
    timeout = httpx.Timeout(10.0, read=None)
    with httpx.Client(timeout=timeout) as http, connect_sse(
            http, "GET", f"{url}/events", params=params, headers=headers) as source:
        _check(source.response)
        print(f"herald listen: connected to {url}, topics {', '.join(topics)}",
              file=err, flush=True)
        for sse in source.iter_sse():
            if sse.retry:
                delay = sse.retry / 1000
            if sse.id:
                last_id = sse.id
            if sse.event == "ready":
                continue  # the stream's starting position, kept in last_id above
            if sse.event == "token-expired":  # no id: last_id is still our position
                print("herald listen: token expired; reconnecting with a fresh one",
                      file=err, flush=True)
                return last_id, delay, True
            if sse.event == "resumed":
                print(f"herald listen: resumed, {sse.json().get('replayed')} missed events "
                      "replayed", file=err, flush=True)
            elif sse.data:
                print(sse.data if raw else format_event(Event.from_json(sse.data)),
                      file=out, flush=True)
            if stop():
                break
    return last_id, delay, False


def _check(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    body = response.read().decode(errors="replace")
    if response.status_code == 401:
        raise Unauthorized(f"{response.status_code}: {body}")
    if 400 <= response.status_code < 500:
        raise ListenError(f"{response.status_code}: {body}")
    raise httpx.HTTPStatusError(f"{response.status_code}: {body}", request=response.request,
                                response=response)
