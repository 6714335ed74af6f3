"""Time-ordered ids (pure functions)."""

from __future__ import annotations

from herald.ids import new_id, valid_id


def test_ids_sort_in_creation_order_even_within_a_millisecond():
    ids = [new_id("n", now=1_700_000_000.0) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    later = new_id("n", now=1_700_000_001.0)
    assert later > ids[-1]


def test_valid_id():
    assert valid_id(new_id("n"), "n")
    assert not valid_id(new_id("j"), "n")
    assert not valid_id("n_" + "I" * 26, "n")
    assert not valid_id("n_short", "n")
