"""Users' profiles: the ``email``, ``name`` and ``locale`` the outbound channels use.

A profile is a Redis hash per user. ``put`` replaces the whole profile (a field left
out is removed); ``emails`` reads many users' addresses in one round trip. Profiles do
not expire: they are the publisher's data, removed with ``delete``.

The rules of each field live here, for every surface that takes a profile:
``email_address`` (an address as the ``email-validator`` library checks its syntax, no
DNS look-up, answered normalised), ``display_name`` (at most ``NAME_MAX`` characters, no
control characters: a name goes into mail headers) and ``locale_tag`` (a BCP 47
language tag such as ``en`` or ``fr-CA``, answered in its conventional case). Each
raises ``ValueError`` stating the rule.
"""

from __future__ import annotations

import re
import unicodedata

import redis
from email_validator import EmailNotValidError, validate_email

from herald.keys import Keys

FIELDS = ("email", "name", "locale")
EMAIL_MAX = 254  # RFC 5321's limit on a forward path, less its angle brackets
NAME_MAX = 200
# Categories refused in a name: controls (CR and LF would split a mail header),
# surrogates, and the line and paragraph separators.
NAME_REFUSED = frozenset({"Cc", "Cs", "Zl", "Zp"})
# RFC 5646 (BCP 47) language tags: language[-extlang][-script][-region][-variant...]
# [-extension...][-privateuse], or a private-use tag alone. Grandfathered tags are not
# taken (they are deprecated), nor the 4-8 letter languages the registry reserves and
# has never assigned; a tag is at most 35 characters in practice.
_LANGUAGE = r"[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}"
_PRIVATE = r"[Xx](?:-[A-Za-z0-9]{1,8})+"
LOCALE_RULE = (rf"(?:{_LANGUAGE}(?:-[A-Za-z]{{4}})?(?:-(?:[A-Za-z]{{2}}|[0-9]{{3}}))?"
               rf"(?:-(?:[A-Za-z0-9]{{5,8}}|[0-9][A-Za-z0-9]{{3}}))*"
               rf"(?:-[A-WYZa-wyz0-9](?:-[A-Za-z0-9]{{2,8}})+)*(?:-{_PRIVATE})?|{_PRIVATE})")
LOCALE_RE = re.compile(LOCALE_RULE, re.ASCII)
LOCALE_MAX = 35


def email_address(value: str) -> str:
    """``value`` as a normalised e-mail address (domain lower-cased, Unicode NFC);
    ``ValueError`` when its syntax is not that of a deliverable address."""
    if len(value) > EMAIL_MAX:
        raise ValueError(f"must be an e-mail address of at most {EMAIL_MAX} characters")
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"must be an e-mail address ({exc})") from None


def display_name(value: str) -> str:
    """``value`` when it is 1 to ``NAME_MAX`` characters without control characters."""
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(f"must be 1 to {NAME_MAX} characters")
    if any(unicodedata.category(char) in NAME_REFUSED for char in value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def locale_tag(value: str) -> str:
    """``value`` as a BCP 47 language tag in its conventional case (``fr-CA``,
    ``zh-Hant-TW``); ``ValueError`` when it is not one."""
    if len(value) > LOCALE_MAX or not LOCALE_RE.fullmatch(value):
        raise ValueError("must be a BCP 47 language tag, such as en, fr-CA or zh-Hant-TW")
    return "-".join(_cased(value.split("-")))


def _cased(subtags: list[str]) -> list[str]:
    """Language lower, script title, region upper; after a singleton, all lower."""
    out, extension = [subtags[0].lower()], len(subtags[0]) == 1
    for subtag in subtags[1:]:
        extension = extension or len(subtag) == 1
        if not extension and len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())
        elif not extension and len(subtag) == 2:
            out.append(subtag.upper())
        else:
            out.append(subtag.lower())
    return out


class ProfileStore:
    """Reads and writes users' profiles."""

    def __init__(self, redis_client: redis.Redis, keys: Keys) -> None:
        self.redis = redis_client
        self.keys = keys

    def get(self, user: str) -> dict[str, str | None]:
        """The profile of ``user``: every field of ``FIELDS``, None where unset."""
        stored = self.redis.hgetall(self.keys.profile(user))
        return {name: stored.get(name) or None for name in FIELDS}

    def put(self, user: str, profile: dict[str, str | None]) -> dict[str, str | None]:
        """Replace the profile of ``user`` with the fields of ``profile`` that are set."""
        given = {name: value for name, value in profile.items() if name in FIELDS and value}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.profile(user))
        if given:
            pipe.hset(self.keys.profile(user), mapping=given)
        pipe.execute()
        return {name: given.get(name) for name in FIELDS}

    def delete(self, user: str) -> None:
        self.redis.delete(self.keys.profile(user))

    def emails(self, users: list[str]) -> dict[str, str | None]:
        """User -> e-mail address (None when the profile has none)."""
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.hget(self.keys.profile(user), "email")
        return dict(zip(users, pipe.execute(), strict=True))
