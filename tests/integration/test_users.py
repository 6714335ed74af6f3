"""Profiles and preferences over the API: who may read and write them, and every rule a
body must follow (a refused body is answered 400 naming the field and stores nothing)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("clean")

PROFILE = "/api/users/alice/profile"
PREFS = "/api/users/alice/preferences"
CATEGORIES = ["general", "account", "security", "marketing", "updates"]  # the default


def as_user(api_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


def every(on: bool = True) -> dict[str, bool]:
    return dict.fromkeys(CATEGORIES, on)


def test_an_unset_profile_reads_as_nulls(api):
    answer = api.get(PROFILE)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"email": None, "name": None, "locale": None}


def test_the_publisher_puts_a_profile_stored_normalised_and_read_back(api):
    answer = api.put(PROFILE, json={"email": "Alice.Smith@Example.COM", "name": "Alice Smith",
                                    "locale": "fr-ca"})
    assert answer.status_code == 200, answer.text
    stored = {"email": "Alice.Smith@example.com", "name": "Alice Smith", "locale": "fr-CA"}
    assert answer.json() == stored
    assert api.get(PROFILE).json() == stored


def test_put_replaces_the_profile(api):
    api.put(PROFILE, json={"email": "alice@example.com", "name": "Alice", "locale": "en"})
    answer = api.put(PROFILE, json={"email": "alice@example.org"})
    assert answer.json() == {"email": "alice@example.org", "name": None, "locale": None}
    assert api.get(PROFILE).json() == answer.json()


def test_the_users_own_token_reads_the_profile_but_may_not_write_it(api, api_url, mint):
    api.put(PROFILE, json={"email": "alice@example.com"})
    with as_user(api_url, mint("alice")) as alice:
        read = alice.get(PROFILE)
        assert read.status_code == 200, read.text
        assert read.json()["email"] == "alice@example.com"
        written = alice.put(PROFILE, json={"email": "mallory@example.com"})
    assert written.status_code == 403, written.text
    assert written.json()["error"]["field"] == "Authorization"
    assert api.get(PROFILE).json()["email"] == "alice@example.com"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("path", [PROFILE, PREFS])
def test_another_users_token_is_refused(api, api_url, mint, method, path):
    api.put(PROFILE, json={"email": "alice@example.com"})
    api.put(PREFS, json={"email": {"marketing": False}})
    before = (api.get(PROFILE).json(), api.get(PREFS).json())
    body = {} if path == PREFS else {"email": "bob@example.com"}
    with as_user(api_url, mint("bob")) as bob:
        answer = bob.request(method, path, json=body if method == "PUT" else None)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["field"] == "Authorization"
    assert (api.get(PROFILE).json(), api.get(PREFS).json()) == before


def test_without_credentials_401(api_url):
    for method, path in [("GET", PROFILE), ("PUT", PROFILE), ("GET", PREFS), ("PUT", PREFS)]:
        answer = httpx.request(method, f"{api_url}{path}", json={})
        assert answer.status_code == 401, (method, path, answer.text)


def test_unset_preferences_read_as_every_channel_and_category_on(api):
    answer = api.get(PREFS)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"inapp": every(), "email": every()}
    assert list(answer.json()["email"]) == CATEGORIES  # the configured order


def test_the_user_turns_email_marketing_off_with_their_own_token(api, api_url, mint):
    with as_user(api_url, mint("alice")) as alice:
        answer = alice.put(PREFS, json={"email": {"marketing": False}})
        assert answer.status_code == 200, answer.text
        expected = {"inapp": every(), "email": every() | {"marketing": False}}
        assert answer.json() == expected
        assert alice.get(PREFS).json() == expected
    assert api.get(PREFS).json() == expected


def test_the_publisher_puts_preferences_and_put_replaces(api):
    api.put(PREFS, json={"email": {"marketing": False}, "inapp": {"updates": False}})
    answer = api.put(PREFS, json={"inapp": {"marketing": False, "general": True}})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"inapp": every() | {"marketing": False}, "email": every()}


def test_the_answer_of_get_can_be_put_back(api):
    shown = api.get(PREFS).json()
    shown["email"]["updates"] = False
    assert api.put(PREFS, json=shown).json() == shown


R = "/api/users"
BAD = [
    # (method, path, body, field, words in the message)
    ("PUT", PROFILE, {"email": "alice"}, "email", "must be an e-mail address"),
    ("PUT", PROFILE, {"email": "alice@localhost"}, "email", "must be an e-mail address"),
    ("PUT", PROFILE, {"email": "alice@example.com\r\nBcc: x@example.com"}, "email",
     "e-mail address"),
    ("PUT", PROFILE, {"email": f"{'a' * 250}@example.com"}, "email", "at most 254"),
    ("PUT", PROFILE, {"email": 7}, "email", "string"),
    ("PUT", PROFILE, {"email": ""}, "email", "e-mail address"),
    ("PUT", PROFILE, {"name": "x" * 201}, "name", "1 to 200"),
    ("PUT", PROFILE, {"name": ""}, "name", "1 to 200"),
    ("PUT", PROFILE, {"name": "Alice\nBcc: x@example.com"}, "name", "control characters"),
    ("PUT", PROFILE, {"name": "Al\u0000ice"}, "name", "control characters"),
    ("PUT", PROFILE, {"name": "Al\u2028ice"}, "name", "line breaks"),
    ("PUT", PROFILE, {"locale": "en_US"}, "locale", "BCP 47"),
    ("PUT", PROFILE, {"locale": "english"}, "locale", "BCP 47"),
    ("PUT", PROFILE, {"locale": "fr-CA-"}, "locale", "BCP 47"),
    ("PUT", PROFILE, {"locale": "en-" + "a" * 40}, "locale", "BCP 47"),
    ("PUT", PROFILE, {"phone": "+33 1 23 45 67 89"}, "phone", "not permitted"),
    ("PUT", f"{R}/Alice/profile", {"email": "alice@example.com"}, "user", "must match"),
    ("GET", f"{R}/Alice/profile", None, "user", "must match"),
    ("PUT", PREFS, {"email": {"promo": False}}, "email.promo", "unknown category"),
    ("PUT", PREFS, {"inapp": {"General": False}}, "inapp.General", "unknown category"),
    ("PUT", PREFS, {"sms": {"general": False}}, "sms", "not permitted"),
    ("PUT", PREFS, {"webhook": {"general": False}}, "webhook", "not permitted"),
    ("PUT", PREFS, {"email": {"marketing": "false"}}, "email.marketing", "boolean"),
    ("PUT", PREFS, {"email": {"marketing": 0}}, "email.marketing", "boolean"),
    ("PUT", PREFS, {"email": {"marketing": None}}, "email.marketing", "boolean"),
    ("PUT", PREFS, {"email": ["marketing"]}, "email", "an object"),
    ("PUT", PREFS, {"email": None}, "email", "an object"),
    ("PUT", PREFS, ["email"], None, "object"),
    ("PUT", f"{R}/a%20b/preferences", {}, "user", "must match"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("method", "path", "body", "field", "words"), BAD,
                         ids=[f"{c[0]} {c[1]} {c[3]}" for c in BAD])
def test_a_rule_broken_is_400_naming_the_field_and_stores_nothing(api, method, path, body,
                                                                   field, words):
    answer = api.request(method, path, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == field, error
    assert words in error["message"], error


def test_a_refused_put_leaves_what_was_stored(api):
    stored = api.put(PROFILE, json={"email": "alice@example.com", "locale": "en"}).json()
    prefs = api.put(PREFS, json={"email": {"marketing": False}}).json()
    assert api.put(PROFILE, json={"email": "alice@example.com", "locale": "x"}).status_code \
        == 400
    assert api.put(PREFS, json={"email": {"security": False, "promo": False}}).status_code \
        == 400
    assert api.get(PROFILE).json() == stored
    assert api.get(PREFS).json() == prefs


@pytest.mark.usefixtures("unchanged")
def test_a_user_token_put_of_a_profile_stores_nothing(api_url, mint):
    with as_user(api_url, mint("alice")) as alice:
        answer = alice.put(PROFILE, json={"email": "alice@example.com"})
    assert answer.status_code == 403, answer.text
