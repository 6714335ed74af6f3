"""Identifiers that sort by creation time.

``new_id("n")`` gives ``n_`` followed by 26 Crockford base-32 characters: 48 bits of
millisecond time then 80 random bits (the ULID layout). Ids of one prefix compare as
strings in creation order, which lets an inbox be a sorted set ordered by member name:
within one process ids are strictly increasing (in one millisecond the random part is
incremented, as ULID's monotonic mode does); across processes, to the millisecond.
"""

from __future__ import annotations

import re
import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_BODY_RULE = "[0-9A-HJKMNP-TV-Z]{26}"  # what follows the prefix: Crockford base 32
_ID_RE = re.compile(f"[a-z]{{1,8}}_{ID_BODY_RULE}")


_lock = threading.Lock()
_last = 0


def new_id(prefix: str, now: float | None = None) -> str:
    global _last
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        value = (ms << 80) | secrets.randbits(80)
        if value <= _last:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def id_rule(prefix: str) -> str:
    """The rule (a regular expression) of the ids ``new_id(prefix)`` makes."""
    return f"{re.escape(prefix)}_{ID_BODY_RULE}"


def valid_id(value: object, prefix: str) -> bool:
    """True when ``value`` has the shape of an id made by ``new_id(prefix)``."""
    return (isinstance(value, str) and value.startswith(prefix + "_")
            and _ID_RE.fullmatch(value) is not None)
