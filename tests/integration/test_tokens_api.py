"""Tokens minted by the API open exactly the streams they grant."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from tasks.events import publish
from tests.sse import SSEClient

pytestmark = pytest.mark.usefixtures("clean")


def test_minted_token_grants_own_topic_and_patterns(api, streamer):
    asked = int(time.time())
    answer = api.post("/api/tokens",
                        json={"user": "alice", "topics": ["room:*"], "ttl": 120})
    answered = time.time()
    assert answer.status_code == 201
    minted = answer.json()
    assert minted["user"] == "alice" and minted["topics"] == ["room:*"]
    expires = datetime.fromisoformat(minted["expires_at"].replace("Z", "+00:00")).timestamp()
    assert asked + 120 <= expires <= answered + 120  # 120 s from when it was minted

    token = minted["token"]
    with SSEClient(streamer, {"token": token, "topics": "user:alice,room:42"}) as ok:
        assert ok.status == 200
        publish("room:42", "in")
        assert [e.json()["data"] for e in ok.wait_for(1)] == ["in"]
    refused = SSEClient(streamer, {"token": token, "topics": "user:bob"})
    assert refused.status == 403


def test_stream_url_of_a_minted_token_works(api, streamer, config):
    minted = api.post("/api/tokens", json={"user": "bob"}).json()
    assert minted["stream_url"].startswith(config.streamer_url)
    query = minted["stream_url"].split("?", 1)[1]
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    with SSEClient(streamer, {k: httpx.QueryParams(f"v={v}")["v"]
                              for k, v in params.items()}) as stream:
        assert stream.status == 200
