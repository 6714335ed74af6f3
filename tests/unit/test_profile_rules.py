"""The rules of a profile's fields, the preferences a settings page shows, and the
unsubscribe token (pure logic, no network)."""

from __future__ import annotations

import re

import pytest

from herald import config as herald_config
from herald import profiles, unsubscribe
from herald.errors import Refusal
from herald.preferences import USER_CHANNELS, effective


@pytest.mark.parametrize(("given", "stored"), [
    ("alice@example.com", "alice@example.com"),
    ("Alice@Example.COM", "Alice@example.com"),
    ("a.b+tag@sub.example.co.uk", "a.b+tag@sub.example.co.uk"),
    ("josé@exämple.com", "josé@exämple.com"),
])
def test_addresses_taken_and_normalised(given, stored):
    assert profiles.email_address(given) == stored


@pytest.mark.parametrize("given", ["alice", "alice@", "@example.com", "alice@localhost",
                                   "alice@example", "a b@example.com", "a@b.test",
                                   "alice@example.com\n", "<alice@example.com>",
                                   "Alice <alice@example.com>", "x" * 250 + "@example.com"])
def test_addresses_refused(given):
    with pytest.raises(ValueError, match="e-mail address"):
        profiles.email_address(given)


@pytest.mark.parametrize("given", ["Alice", "Zoë Ünal", "李小龙", "x" * 200,
                                   "O'Brien, \"Pat\"", "a\u200db"])
def test_names_taken(given):
    assert profiles.display_name(given) == given


@pytest.mark.parametrize("given", ["", "x" * 201, "a\rb", "a\nb", "a\tb", "a\x00b",
                                   "a\x7fb", "a\x85b", "a\u2028b", "a\u2029b"])
def test_names_refused(given):
    with pytest.raises(ValueError, match=r"1 to 200|control characters"):
        profiles.display_name(given)


@pytest.mark.parametrize(("given", "canonical"), [
    ("en", "en"), ("fr-CA", "fr-CA"), ("fr-ca", "fr-CA"), ("EN-us", "en-US"),
    ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419"), ("de-CH-1901", "de-CH-1901"),
    ("sl-rozaj-biske", "sl-rozaj-biske"), ("en-US-x-Twain", "en-US-x-twain"),
    ("x-klingon", "x-klingon"), ("en-a-bbb-x-a-ccc", "en-a-bbb-x-a-ccc"),
    ("zh-yue-HK", "zh-yue-HK"), ("en-US-u-ca-gregory", "en-US-u-ca-gregory"),
])
def test_locales_taken_in_their_conventional_case(given, canonical):
    assert profiles.locale_tag(given) == canonical


@pytest.mark.parametrize("given", ["", "e", "english", "en_US", "en-", "-en", "en--US",
                                   "123", "en-US-", "i-klingon", "en-a", "fr-CA\n",
                                   "en-" + "a" * 40, "\uff25\uff2e"])
def test_locales_refused(given):
    with pytest.raises(ValueError, match="BCP 47"):
        profiles.locale_tag(given)


def test_effective_preferences_list_every_channel_and_configured_category_in_order():
    stored = {"email": {"marketing": False, "retired": False}, "inapp": {"general": True}}
    shown = effective(stored, ("general", "marketing"))
    assert shown == {"inapp": {"general": True, "marketing": True},
                     "email": {"general": True, "marketing": False}}
    assert tuple(shown) == USER_CHANNELS


@pytest.fixture
def cfg(tmp_path):
    return herald_config.load({"HERALD_HOME": str(tmp_path), "HERALD_SECRET": "k" * 48,
                               "HERALD_API_URL": "https://herald.example.com/"})


def test_an_unsubscribe_url_is_on_the_api_and_verifies_to_its_pair(cfg):
    url = unsubscribe.url(cfg, "alice", "marketing")
    assert url.startswith("https://herald.example.com/api/unsubscribe/")
    signed = url.rsplit("/", 1)[1]
    assert unsubscribe.verify(cfg, signed) == ("alice", "marketing")
    assert unsubscribe.url(cfg, "alice", "marketing") == url  # stable


@pytest.mark.parametrize("user", ["a", "alice", "a" * 64, "a.b_c-d"])
def test_every_token_follows_the_rule_openapi_states(cfg, user):
    signed = unsubscribe.token(cfg, user, "marketing")
    assert re.fullmatch(unsubscribe.TOKEN_RULE, signed), signed
    assert unsubscribe.verify(cfg, signed) == (user, "marketing")


@pytest.mark.parametrize("signed", ["", "x", "a.b", "alice.marketing"])
def test_a_malformed_token_is_refused(cfg, signed):
    with pytest.raises(Refusal) as refused:
        unsubscribe.verify(cfg, signed)
    assert (refused.value.status, refused.value.field) == (400, "token")


def test_a_token_signed_with_another_secret_or_salt_is_refused(cfg):
    from itsdangerous import URLSafeSerializer

    for signed in (unsubscribe.token(cfg.replace(secret="o" * 48), "alice", "marketing"),
                   URLSafeSerializer(cfg.secret, salt="other").dumps(["alice", "marketing"])):
        with pytest.raises(Refusal) as refused:
            unsubscribe.verify(cfg, signed)
        assert refused.value.status == 400


def test_a_signed_value_that_is_no_pair_is_refused(cfg):
    from itsdangerous import URLSafeSerializer

    signer = URLSafeSerializer(cfg.secret, salt=unsubscribe.SALT)
    for payload in (["alice"], ["Alice!", "marketing"], ["alice", "Marketing"], {"u": 1}):
        with pytest.raises(Refusal) as refused:
            unsubscribe.verify(cfg, signer.dumps(payload))
        assert refused.value.status == 400


def test_the_token_of_a_category_no_longer_configured_is_refused(cfg):
    signed = unsubscribe.token(cfg, "alice", "promo")
    with pytest.raises(Refusal) as refused:
        unsubscribe.verify(cfg, signed)
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    wider = cfg.replace(categories=(*cfg.categories, "promo"))
    assert unsubscribe.verify(wider, signed) == ("alice", "promo")
