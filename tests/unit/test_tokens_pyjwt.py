"""``herald.tokens.verify`` against PyJWT: the same answer for every token.

The reference is what ``verify`` was before it was hand-written: PyJWT's ``decode`` with
our options (the configured algorithms; ``sub``, ``exp`` and ``jti`` required), then
Herald's grant rules. For each token both must accept with the same ``Grant`` or refuse
with the same message ("token expired", or "token invalid: " and PyJWT's reason). Both
read the same instant: PyJWT's clock is frozen at the ``now`` given to ``verify``.

Tokens come from three sources: hypothesis builds them from generated headers, claims,
signatures and spellings; a valid token is mutated one character at a time (every
position, every character class); and hand-picked edge cases.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import jwt
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from herald import tokens
from herald.errors import TokenError
from herald.event import USER_RE
from herald.tokens import Grant

SECRET = "s" * 64
OTHER_SECRET = "o" * 64
NOW = 1_800_000_000.25  # exactly representable: PyJWT's clock reads the same float
NOWS = (NOW, float(int(NOW)))  # between two seconds, and on one (exp == now)
HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
ALGORITHM_SETS = [("HS256",), ("HS384",), ("HS512",), ("HS256", "HS512"), ("HS512", "HS256"),
                  ("HS256", "HS384", "HS512")]
MUTATION_CHARACTERS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                       ".=+/ ~%\x00\n\té€\U0001f600")

Verdict = Grant | str
_ABSENT = object()  # a claim left out


@contextlib.contextmanager
def pyjwt_clock(now: float) -> Iterator[None]:
    """PyJWT reads ``datetime.now(tz=timezone.utc)``: make it ``now``."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return dt.datetime.fromtimestamp(now, tz)

    with mock.patch.object(jwt.api_jwt, "datetime", Frozen):
        yield


def reference(token: str, algorithms: tuple[str, ...], now: float = NOW) -> Verdict:
    """What ``verify`` answered when it was PyJWT's ``decode`` plus the grant rules."""
    decoder = jwt.PyJWT(options={"require": ["sub", "exp", "jti"]})
    try:
        with pyjwt_clock(now):
            claims = decoder.decode(token, SECRET, algorithms=list(algorithms))
    except jwt.ExpiredSignatureError:
        return "token expired"
    except jwt.InvalidTokenError as exc:
        return f"token invalid: {exc}"
    user, topics = claims.get("sub"), claims.get("topics", [])
    if not isinstance(user, str) or USER_RE.fullmatch(user) is None:
        return "token invalid: bad sub claim"
    if not isinstance(topics, list) or not all(tokens.valid_grant(t) for t in topics):
        return "token invalid: bad topics claim"
    return Grant(user, tuple(topics), int(claims["exp"]), str(claims["jti"]))


def ours(token: str, algorithms: tuple[str, ...], now: float = NOW) -> Verdict:
    try:
        return tokens.verify(SECRET, token, algorithms, now=now)
    except TokenError as exc:
        return str(exc)


def assert_same(token: str, algorithms: tuple[str, ...], now: float = NOW) -> Verdict:
    expected = reference(token, algorithms, now)
    assert ours(token, algorithms, now) == expected, token
    return expected


def b64(data: bytes, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if padded else text.rstrip("=")


def build(header: bytes, payload: bytes, *, key: str = SECRET, alg: str = "HS256",
          signature: bytes | None = None) -> str:
    """A compact JWT of raw header and payload bytes, HMAC-signed with ``key`` and
    ``alg`` unless ``signature`` is given."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    if signature is None:
        signature = hmac.new(key.encode(), signing_input.encode(), HASHES[alg]).digest()
    return f"{signing_input}.{b64(signature)}"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def good_claims(**changes: Any) -> dict[str, Any]:
    claims = {"sub": "alice", "topics": ["room:*"], "iat": int(NOW) - 10,
              "exp": int(NOW) + 600, "jti": "t-1"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not _ABSENT}

# ---------------------------------------------------------------- generated tokens

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
instants = st.one_of(
    st.integers(int(NOW) - 3, int(NOW) + 3),  # at and around now
    st.floats(NOW - 3, NOW + 3),
    st.sampled_from([0, -1, int(NOW) + 86400, 2**63, 10**30, True, False]),
    st.sampled_from([str(int(NOW) + 60), f" {int(NOW) + 60} ", str(int(NOW) - 60), "1e12",
                     "soon", "", "\u0661\u0662", "9" * 5000]),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), None, [], {}]),
)
users = st.one_of(st.sampled_from(["alice", "bob", "u1", "Alice", "a b", "", "a" * 200]),
                  st.text(max_size=8), json_scalars)
grant_lists = st.one_of(
    st.lists(st.sampled_from(["room:*", "news", "*", "a b", "room:1", "", "x" * 140]),
             max_size=3),
    json_scalars)
maybe = st.just(_ABSENT)


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for name, values in (("sub", users), ("exp", instants), ("jti", json_scalars),
                         ("iat", instants), ("nbf", instants), ("topics", grant_lists),
                         ("aud", json_scalars), ("iss", json_scalars)):
        usual = {"sub": st.just("alice"), "exp": st.just(int(NOW) + 600),
                 "jti": st.just("t-1"), "iat": st.just(int(NOW) - 5),
                 "topics": st.just(["room:*"])}.get(name, maybe)
        value = draw(st.one_of(usual, usual, usual, maybe, values))  # mostly usual
        if value is not _ABSENT:
            claims[name] = value
    claims.update(draw(st.dictionaries(st.text(max_size=4), json_values, max_size=2)))
    return claims


odd_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.one_of(st.sampled_from(["HS256", "HS384", "HS512", "none", "None", "RS256",
                                          "ES256", "hs256", "", "HS256 "]), json_scalars),
        "typ": st.one_of(st.just("JWT"), json_scalars),
        "kid": st.one_of(st.text(max_size=4), json_scalars),
        "crit": st.one_of(st.sampled_from([["b64"], [], ["exp"], ["b64", "b64"], "b64",
                                           [1], ["b64", "x"]]), json_values),
        "b64": st.one_of(st.booleans(), json_scalars),
        "x5u": json_scalars,
    })
extra_header_fields = st.dictionaries(st.sampled_from(["kid", "cty", "x5t", "typ"]),
                                      st.text(max_size=4), max_size=2)


@st.composite
def json_documents(draw: st.DrawFn, value: dict[str, Any]) -> bytes:
    """``value`` as JSON text, or in an odd encoding, broken, too deep, another JSON
    value than an object, or any bytes."""
    kind = draw(st.sampled_from(["value", "utf16", "bom", "broken", "deep", "bytes",
                                 "spaced"]))
    text = json.dumps(value, separators=(",", ":"))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "utf16":
        return text.encode("utf-16-le")
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if kind == "broken":
        return text.encode()[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "deep":
        return b"[" * 5_000 + b"]" * 5_000
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    return json.dumps(value, indent=1).encode()


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, tuple[str, ...], float]:
    """(token, the algorithms it is verified with, now). Each layer of a valid token
    (header, claims, their JSON, signature, spelling) is off its usual value a third
    of the time, independently: about one token in ten is valid, the others break one
    rule or several at once."""
    algorithms, now = draw(st.sampled_from(ALGORITHM_SETS)), draw(st.sampled_from(NOWS))

    def odd() -> bool:
        return draw(st.sampled_from([False, False, True]))

    header = draw(odd_headers) if odd() else {
        "alg": draw(st.sampled_from(algorithms)), "typ": "JWT", **draw(extra_header_fields)}
    claims = draw(claim_sets()) if odd() else good_claims()
    header_json = draw(json_documents(header)) if odd() else dumps(header)
    payload_json = draw(json_documents(claims)) if odd() else dumps(claims)
    alg = header.get("alg")
    signer = alg if isinstance(alg, str) and alg in HASHES else "HS256"
    signature = None
    if odd():
        signer = draw(st.sampled_from(["HS256", "HS384", "HS512", "other secret", "none",
                                       "bytes"]))
        signature = {"none": b"", "bytes": draw(st.binary(max_size=70))}.get(signer)
    key = OTHER_SECRET if signer == "other secret" else SECRET
    token = build(header_json, payload_json, key=key,
                  alg=signer if signer in HASHES else "HS256", signature=signature)
    return (draw(respelled(token)) if odd() else token), algorithms, now


@st.composite
def respelled(draw: st.DrawFn, token: str) -> str:
    """The token, or one of its segments spelled otherwise: padded (rightly or not),
    another last character, a character PyJWT's alphabet lacks, or more or fewer
    segments."""
    segments = token.split(".")
    how = draw(st.sampled_from(["pad", "pad wrong", "last", "foreign", "segments", "empty"]))
    index = draw(st.integers(0, 2))
    segment = segments[index]
    if how == "pad":
        segment += "=" * (-len(segment) % 4)
    elif how == "pad wrong":
        segment += "=" * draw(st.integers(1, 4))
    elif how == "last" and segment:
        segment = segment[:-1] + draw(st.sampled_from(MUTATION_CHARACTERS[:64]))
    elif how == "foreign":
        at = draw(st.integers(0, len(segment)))
        segment = segment[:at] + draw(st.sampled_from("+/=. \n\x00é")) + segment[at:]
    elif how == "segments":
        return ".".join(segments[: draw(st.integers(0, 2))] + draw(
            st.lists(st.sampled_from(["", "e30", segments[index]]), max_size=2)))
    elif how == "empty":
        segment = ""
    segments[index] = segment
    return ".".join(segments)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
@given(case=cases())
@example(case=(build(dumps({"alg": "none", "typ": "JWT"}), dumps(good_claims()),
                     signature=b""), ("HS256",), NOW))
@example(case=(build(dumps({"alg": "HS512", "typ": "JWT"}), dumps(good_claims()),
                     alg="HS512"), ("HS256",), NOW))
def test_generated_tokens_get_pyjwts_answer(case: tuple[str, tuple[str, ...], float]) -> None:
    verdict = assert_same(*case)
    # --hypothesis-show-statistics: how often each answer came up
    event("accepted" if isinstance(verdict, Grant) else verdict[:40])


@settings(max_examples=400, deadline=None)
@given(claims=claim_sets(), algorithm=st.sampled_from(["HS256", "HS384", "HS512"]),
       extra=st.dictionaries(st.sampled_from(["kid", "typ", "cty", "x5t", "zip"]),
                             st.text(max_size=6), max_size=3))
def test_well_formed_tokens_with_any_claims_get_pyjwts_answer(claims, algorithm, extra):
    """Signed right, header fine: only the claims decide (time, types, presence)."""
    token = build(dumps({"alg": algorithm, "typ": "JWT", **extra}), dumps(claims), alg=algorithm)
    for algorithms in ALGORITHM_SETS:
        for now in NOWS:
            assert_same(token, algorithms, now)


# ---------------------------------------------------------------- one character off

def minted_variants() -> list[str]:
    token = build(dumps({"alg": "HS256", "typ": "JWT"}), dumps(good_claims()))
    odd = build(dumps({"typ": "JWT", "alg": "HS384", "kid": "k"}),
                dumps(good_claims(topics=["news"], nbf=int(NOW) - 1)), alg="HS384")
    return [token, odd]


@pytest.mark.parametrize("token", minted_variants(), ids=["minted", "hs384-with-kid"])
def test_every_one_character_change_gets_pyjwts_answer(token):
    algorithms = ("HS256", "HS384")
    assert isinstance(assert_same(token, algorithms), Grant)
    accepted = []
    for at in range(len(token) + 1):
        edits = [token[:at] + token[at + 1:]] if at < len(token) else []  # deletion
        edits += [token[:at] + c + token[at:] for c in MUTATION_CHARACTERS]  # insertion
        if at < len(token):
            edits += [token[:at] + c + token[at + 1:] for c in MUTATION_CHARACTERS
                      if c != token[at]]  # replacement
        for edited in edits:
            if isinstance(assert_same(edited, algorithms), Grant):
                accepted.append(edited)
    # Only the signature's own padding may be added to a valid token and still verify
    # (HS256: one "=" after its 43 characters; HS384's 64 take none); every other edit
    # breaks it.
    assert accepted == ([token + "="] if len(token.rpartition(".")[2]) % 4 else [])


def test_every_token_segment_swap_and_truncation_gets_pyjwts_answer():
    token = minted_variants()[0]
    header, payload, signature = token.split(".")
    candidates = [token[:n] for n in range(len(token))]
    candidates += [".".join(p) for p in [(header, payload), (header, payload, signature, ""),
                                         (header, payload, signature, signature),
                                         (payload, header, signature), ("", payload, signature),
                                         (header, "", signature), (header, payload, "")]]
    for candidate in candidates:
        assert not isinstance(assert_same(candidate, ("HS256",)), Grant)


# ---------------------------------------------------------------- hand-picked cases

HEADER = {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize(("header", "claims"), [
    (HEADER, good_claims()),
    (HEADER, good_claims(exp=int(NOW))),  # exp == now: expired
    (HEADER, good_claims(exp=int(NOW) + 1)),
    (HEADER, good_claims(exp=NOW + 0.5)),  # truncated to int(NOW): expired
    (HEADER, good_claims(exp=float(int(NOW) + 1))),
    (HEADER, good_claims(exp=str(int(NOW) + 60))),  # PyJWT takes int("...")
    (HEADER, good_claims(exp=True)),
    (HEADER, good_claims(exp=None)),
    (HEADER, good_claims(exp=_ABSENT)),
    (HEADER, good_claims(exp="Infinity")),
    (HEADER, good_claims(iat=int(NOW) + 1)),  # issued in the future: invalid
    (HEADER, good_claims(iat=int(NOW))),
    (HEADER, good_claims(iat=NOW + 0.5)),  # truncated: not in the future
    (HEADER, good_claims(iat=int(NOW) + 1, exp=int(NOW) - 1)),  # iat is checked first
    (HEADER, good_claims(iat=None)),
    (HEADER, good_claims(iat="x")),
    (HEADER, good_claims(nbf=int(NOW) + 1)),
    (HEADER, good_claims(nbf=int(NOW))),
    (HEADER, good_claims(nbf=[1])),
    (HEADER, good_claims(nbf=int(NOW) + 1, exp=int(NOW) - 1)),
    (HEADER, good_claims(aud="x")),
    (HEADER, good_claims(aud="")),
    (HEADER, good_claims(aud=[])),
    (HEADER, good_claims(aud=0)),
    (HEADER, good_claims(iss=5)),
    (HEADER, good_claims(sub=None)),
    (HEADER, good_claims(sub=5)),
    (HEADER, good_claims(sub="Bad User")),
    (HEADER, good_claims(jti=5)),
    (HEADER, good_claims(jti="")),
    (HEADER, good_claims(topics="room:*")),
    (HEADER, good_claims(topics=["*"])),
    (HEADER, good_claims(topics=_ABSENT)),
    (HEADER, good_claims(topics=None)),
    (HEADER, good_claims(topics={})),
    (HEADER, good_claims(topics=[])),
    ({"alg": "HS256"}, good_claims()),
    ({"alg": "HS256", "kid": 1}, good_claims()),
    ({"alg": "HS256", "crit": ["b64"], "b64": True}, good_claims()),  # PyJWT accepts it
    ({"alg": "HS256", "crit": ["b64"]}, good_claims()),
    ({"alg": "HS256", "crit": ["exp"], "exp": 1}, good_claims()),
    ({"alg": "HS256", "crit": []}, good_claims()),
    ({"alg": "HS256", "b64": False}, good_claims()),
    ({"alg": "HS256", "b64": False, "crit": ["b64"]}, good_claims()),
    ({"typ": "JWT"}, good_claims()),
    ({"alg": ["HS256"]}, good_claims()),
    ({"alg": None}, good_claims()),
    ({"alg": "none"}, good_claims()),
    ({"alg": "RS256"}, good_claims()),
])
def test_edge_cases_get_pyjwts_answer(header, claims):
    for now in NOWS:
        assert_same(build(dumps(header), dumps(claims)), ("HS256",), now)


@pytest.mark.parametrize("payload", [
    dumps(good_claims()).replace(b'"alice"', b'"\xed\xa0\x80"'),  # UTF-8 of a lone surrogate
    dumps(good_claims()).replace(b'"alice"', b'"\xff"'),  # no UTF-8
    dumps(good_claims()).replace(b'"alice"', '"\u00e9"'.encode()),
    dumps(good_claims()).replace(b'"alice"', "\"al\u00efce\"".encode()),
    dumps(good_claims()) + b" ",
    dumps(good_claims()) + b"x",
    b" " + dumps(good_claims()),
    b"\xef\xbb\xbf" + dumps(good_claims()),
    json.dumps(good_claims()).encode("utf-16"),
    json.dumps(good_claims()).encode("utf-32-le"),
    b'{"sub":"alice","sub":"bob","exp":%d,"jti":"j"}' % (int(NOW) + 60),
    b'{"sub":"alice","exp":%d.0,"jti":"j","x":NaN}' % (int(NOW) + 60),
])
def test_payload_bytes_are_read_as_pyjwt_reads_them(payload):
    assert_same(build(dumps(HEADER), payload), ("HS256",))


def test_detached_payload_and_odd_spellings_get_pyjwts_answer():
    signed = build(dumps({"alg": "HS256", "b64": False, "crit": ["b64"]}), b"")
    header, _, signature = signed.split(".")
    for token in (signed, f"{header}.e30.{signature}", f"{header}..{signature}",
                  "a.b.c", "..", ".", "", "e30.e30.", "eyJ9.e30.e30", "e30.e30.e30.e30"):
        assert_same(token, ("HS256",))


@pytest.mark.parametrize("token", minted_variants(), ids=["minted", "hs384-with-kid"])
def test_every_padding_of_every_segment_gets_pyjwts_answer(token):
    segments = token.split(".")
    for index in range(3):
        for padding in range(6):
            padded = [*segments]
            padded[index] += "=" * padding
            assert_same(".".join(padded), ("HS256", "HS384"))


def test_a_token_of_another_secret_or_algorithm_set_is_refused_as_pyjwt_does():
    token = jwt.encode(good_claims(), OTHER_SECRET, algorithm="HS256")
    assert assert_same(token, ("HS256",)) == "token invalid: Signature verification failed"
    hs512 = jwt.encode(good_claims(), SECRET, algorithm="HS512")
    assert assert_same(hs512, ("HS256",)) == (
        "token invalid: The specified alg value is not allowed")
    assert isinstance(assert_same(hs512, ("HS256", "HS512")), Grant)
