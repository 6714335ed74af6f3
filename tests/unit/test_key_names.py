"""Every Redis key and channel name is built in ``herald/keys.py`` and nowhere else.

Reads the source of every module Herald ships (no Redis, no imports of it) and looks
for a name built by hand: an f-string or a ``+`` that puts ``:`` after a prefix, or a
literal ``herald:...`` key.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("herald", "api", "tasks", "streamer", "herald_bench")
HOME = Path("herald/keys.py")
LITERAL_KEY = re.compile(r"herald:[a-z]")  # the default prefix written out


def shipped_modules() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def _is_prefix(node: ast.expr) -> bool:
    return ast.unparse(node).endswith("prefix")


def _starts_with_colon(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.startswith(":"))


def hand_built_names(tree: ast.AST) -> list[str]:
    """Source of each expression in ``tree`` that builds a prefixed key name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for value, after in itertools.pairwise(parts):
                if (isinstance(value, ast.FormattedValue) and _is_prefix(value.value)
                        and _starts_with_colon(after)):
                    found.append(ast.unparse(node))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if _is_prefix(node.left) and _starts_with_colon(node.right):
                found.append(ast.unparse(node))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and LITERAL_KEY.match(node.value)):
            found.append(repr(node.value))
    return found


def test_the_check_finds_names_built_by_hand():
    tree = ast.parse('a = f"{keys.prefix}:revoked"\nb = self.prefix + ":rate:"\n'
                     'c = "herald:control"\nd = f"{prefix}_{x}"\ne = keys.revoked\n'
                     'f = "herald: an error message"\n')
    assert hand_built_names(tree) == ["f'{keys.prefix}:revoked'", "self.prefix + ':rate:'",
                                      "'herald:control'"]


@pytest.mark.parametrize("path", shipped_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_but_keys_builds_a_key_name(path: Path):
    if path.relative_to(ROOT) == HOME:
        return
    names = hand_built_names(ast.parse(path.read_text(), str(path)))
    assert names == [], f"{path.relative_to(ROOT)} builds key names itself: {names}"
