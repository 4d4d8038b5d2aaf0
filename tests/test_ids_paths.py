"""The identifier validator and the path helper that every outside input goes through."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from paglets.core.errors import RequestError
from paglets.core.ids import IdKind, check_id, is_valid_id
from paglets.persistence.paths import under

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("value", ["a", "0", "my-counter", "a1.b_c-d", "f" * 128, "A.B"])
def test_good_agent_ids_pass(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "../x",
        "/tmp/x",
        "a/b",
        "-rf",
        ".hidden",
        "a b",
        "a\x00",
        "é",
        "f" * 129,
        7,
        None,
    ],
)
def test_bad_agent_ids_are_refused_with_a_reason(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(RequestError, match="agent id"):
        check_id(value)


def test_each_kind_has_its_own_limit_and_word() -> None:
    assert check_id("h" * 64, IdKind.HOST)
    with pytest.raises(RequestError, match=r"host name .* the limit is 64"):
        check_id("h" * 65, IdKind.HOST)
    with pytest.raises(RequestError, match="transfer id"):
        check_id("../../tmp/v", IdKind.TRANSFER)


def test_under_joins_plain_relative_parts(tmp_path: Path) -> None:
    assert under(tmp_path, "a", "b/c.txt") == tmp_path / "a" / "b" / "c.txt"


@pytest.mark.parametrize("part", ["/etc/passwd", "..", "a/../../x", "a/./b", "", "a\\b", "x\x00"])
def test_under_refuses_parts_that_could_leave_the_root(tmp_path: Path, part: str) -> None:
    with pytest.raises(RequestError):
        under(tmp_path, part)


def test_under_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    (root / "in").symlink_to(root)
    assert under(root, "in", "x") == root / "in" / "x"
    with pytest.raises(RequestError, match="leads out of"):
        under(root, "out", "x")
