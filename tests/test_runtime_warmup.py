"""What the zygote runs ahead of its children: resolved state types, a warm envelope path."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import examples.counter
from paglets.core.errors import InvalidStateError
from paglets.core.state import PagletState
from paglets.runtime import warmup
from paglets.runtime.warmup import warm_module, warm_runtime
from paglets.wire import state_json
from paglets.wire.state_json import prepare, state_from_json


@dataclass
class Leaf:
    name: str = ""


@dataclass
class Branch:
    leaves: list[Leaf] = field(default_factory=list)
    best: Leaf | None = None


@dataclass
class Tree(PagletState):
    branches: dict[str, Branch] = field(default_factory=dict)
    trunk: tuple[int, Branch] | None = None


@dataclass
class Broken(PagletState):
    thing: NoSuchType = None  # type: ignore[name-defined]  # noqa: F821 - on purpose


def test_prepare_resolves_every_reachable_dataclass() -> None:
    state_json._hints.cache_clear()
    prepare(Tree)
    assert state_json._hints.cache_info().currsize == 3
    before = state_json._hints.cache_info().misses
    tree = state_from_json(Tree, {"branches": {"a": {"leaves": [{"name": "x"}]}}})
    assert tree.branches["a"].leaves[0].name == "x"
    assert state_json._hints.cache_info().misses == before


def test_prepare_leaves_a_bad_hint_for_decoding_to_report() -> None:
    prepare(Broken)  # no error here
    with pytest.raises(InvalidStateError, match="cannot resolve the type hints"):
        state_from_json(Broken, {})


def test_warm_module_prepares_the_states_of_its_paglet_classes() -> None:
    state_json._hints.cache_clear()
    warm_module(examples.counter)
    assert state_json._hints.cache_info().currsize >= 1
    misses = state_json._hints.cache_info().misses
    state_from_json(examples.counter.Counter.State, {})
    assert state_json._hints.cache_info().misses == misses


def test_warm_runtime_leaves_nothing_behind() -> None:
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("paglets-warm-*"))
    warm_runtime()
    assert set(tmp.glob("paglets-warm-*")) == before


def test_the_records_a_pool_child_primes_with_still_fit_the_protocol() -> None:
    # A pool child swallows a priming failure (only speed is lost), so a sample
    # record that no longer fits its record class would go unnoticed but here.
    warmup._prime_records()
