"""One-click unsubscribe over HTTP: the page changes nothing, the RFC 8058 POST turns the
category's e-mail off (once, however often it is posted), a bad link changes nothing."""

from __future__ import annotations

import httpx
import pytest

from herald import unsubscribe

pytestmark = pytest.mark.usefixtures("clean")

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
PREFS = "/api/users/alice/preferences"


@pytest.fixture
def link(config, api_url):
    """``link(user, category)``: the unsubscribe URL, on the session's API."""
    here = config.replace(api_url=api_url)
    return lambda user="alice", category="marketing": unsubscribe.url(here, user, category)


def html(answer: httpx.Response) -> str:
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    return answer.text


@pytest.mark.usefixtures("unchanged")
def test_opening_the_link_asks_and_changes_nothing(link):
    answer = httpx.get(link())
    assert answer.status_code == 200, answer.text
    page = html(answer)
    assert "Stop marketing e-mails from Herald?" in page  # HERALD_MAIL_FROM's name
    assert '<form method="post">' in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page


def test_one_click_post_turns_email_of_that_category_off_once(api, link):
    api.put(PREFS, json={"inapp": {"updates": False}})
    answers = [httpx.post(link(), data=ONE_CLICK) for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert "You will get no more marketing e-mails from Herald." in html(answer)
    shown = api.get(PREFS).json()
    assert shown["email"] == {"general": True, "account": True, "security": True,
                              "marketing": False, "updates": True}
    assert shown["inapp"]["updates"] is False  # the rest stays
    assert shown["inapp"]["marketing"] is True
    assert api.get("/api/users/bob/preferences").json()["email"]["marketing"] is True


def test_a_multipart_one_click_post_works_too(api, link):
    answer = httpx.post(link(category="updates"), files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200, answer.text
    assert api.get(PREFS).json()["email"]["updates"] is False


def _tampered(url: str) -> str:
    last = url[-1]
    return url[:-1] + ("A" if last != "A" else "B")


def _swapped(config, api_url: str) -> str:
    """bob's payload under alice's signature."""
    alice, bob = (unsubscribe.token(config, user, "marketing") for user in ("alice", "bob"))
    return f"{api_url}{unsubscribe.PATH}{bob.split('.')[0]}.{alice.split('.')[1]}"


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("how", ["tampered", "cut", "other-secret", "swapped", "gone"])
def test_a_bad_link_is_refused_with_a_page_and_changes_nothing(config, api_url, link,
                                                               method, how):
    url = {
        "tampered": lambda: _tampered(link()),
        "cut": lambda: link()[:-6],
        "other-secret": lambda: unsubscribe.url(
            config.replace(api_url=api_url, secret="s" * 48), "alice", "marketing"),
        "swapped": lambda: _swapped(config, api_url),
        "gone": lambda: unsubscribe.url(
            config.replace(api_url=api_url, categories=(*config.categories, "promo")),
            "alice", "promo"),
    }[how]()
    answer = httpx.request(method, url, data=ONE_CLICK if method == "POST" else None)
    assert answer.status_code == (404 if how == "gone" else 400), answer.text
    page = html(answer)
    assert "This unsubscribe link does not work" in page
    assert "Nothing was changed." in page
    assert "<form" not in page


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("body", [{}, {"List-Unsubscribe": "yes"}])
def test_a_post_without_the_one_click_body_changes_nothing(link, body):
    answer = httpx.post(link(), data=body)
    assert answer.status_code == 400, answer.text
    assert "List-Unsubscribe=One-Click" in html(answer)

