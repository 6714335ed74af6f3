"""``/demo/config`` hands the dev API key only to the demo page's own fetch on this machine.

A DNS-rebinding page reaches the API from this machine's browser under its own host
name; a page of another origin sends ``Sec-Fetch-Site: cross-site``. Both are refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import start_api

DEV_KEY = "hk_demo0000000_" + "k" * 43


@pytest.fixture(scope="module")
def api_url(child_env):
    """An API (development mode, so the demo is served) that holds a dev API key."""
    process, url = start_api({**child_env, "HERALD_API_KEY": DEV_KEY}, name="api-demo")
    yield url
    process.stop()


def _config(api_url: str, host: str | None, fetch_site: str | None) -> httpx.Response:
    port = urlsplit(api_url).port
    headers = {"Host": host.format(port=port)} if host else {}
    if fetch_site:
        headers["Sec-Fetch-Site"] = fetch_site
    return httpx.get(f"{api_url}/demo/config", headers=headers)


@pytest.mark.parametrize(("host", "fetch_site", "field"), [
    ("rebind.attacker.example:{port}", "same-origin", "Host"),
    ("127.0.0.1.nip.io:{port}", "same-origin", "Host"),
    ("evil.example@127.0.0.1:{port}", "same-origin", "Host"),
    ("127.0.0.1:{port}", None, "Sec-Fetch-Site"),
    ("127.0.0.1:{port}", "cross-site", "Sec-Fetch-Site"),
    ("localhost:{port}", "same-site", "Sec-Fetch-Site"),
    ("localhost:{port}", "none", "Sec-Fetch-Site"),
])
def test_the_dev_key_is_refused_to_other_hosts_and_origins(api_url, host, fetch_site, field):
    answer = _config(api_url, host, fetch_site)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["field"] == field
    assert DEV_KEY not in answer.text


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_the_demo_page_on_a_loopback_host_gets_it(api_url, host):
    answer = _config(api_url, host, "same-origin")
    assert answer.status_code == 200, answer.text
    assert answer.json()["api_key"] == DEV_KEY
