"""The module allow-list and importing classes by path."""

from __future__ import annotations

import sys

import pytest

from paglets.core.errors import (
    ClassNotAllowedError,
    ClassNotFoundError,
    ConfigurationError,
    PagletError,
    RequestError,
)
from paglets.core.state import PagletState
from paglets.wire.modules import (
    ALLOW_MODULES_ENV,
    DEFAULT_ALLOWED_PREFIXES,
    ModulePolicy,
    import_class,
    parse_class_path,
)

# This test module, as the import system knows it, and its top-level package.
HERE = __name__
HERE_TOP = __name__.partition(".")[0]


class Outer:
    class Inner:
        pass


NOT_A_CLASS = 42


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pkg.mod:Name", ("pkg.mod", "Name")),
        ("pkg.mod:Qual.Name", ("pkg.mod", "Qual.Name")),
        ("mod:Name", ("mod", "Name")),
        ("pkg.mod.Name", ("pkg.mod", "Name")),
        ("examples.counter.Counter", ("examples.counter", "Counter")),
        ("_private._mod:_Cls", ("_private._mod", "_Cls")),
    ],
)
def test_parse_class_path(path: str, expected: tuple[str, str]) -> None:
    assert parse_class_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        ":",
        "Name",
        "mod:",
        ":Name",
        ".mod:Name",
        "..mod.Name",
        "pkg..mod:Name",
        "mod :Name",
        "mod: Name",
        " mod:Name",
        "mod:Name ",
        "pkg.mod:Qual..Name",
        "pkg.mod:Name.",
        "a:b:c",
        "1mod:Name",
        "mod:1Name",
        "mod-x:Name",
        "mod:Na-me",
        "class:Name",
        "mod:f.<locals>.Name",
        "pkg.mod/Name",
    ],
)
def test_parse_rejects_malformed_paths_with_the_expected_form(path: str) -> None:
    with pytest.raises(RequestError, match="expected the form module:ClassName") as info:
        parse_class_path(path)
    assert repr(path) in str(info.value)


def test_default_policy() -> None:
    assert DEFAULT_ALLOWED_PREFIXES == ("paglets", "examples")
    assert ModulePolicy().prefixes == DEFAULT_ALLOWED_PREFIXES


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("examples", True),
        ("examples.counter", True),
        ("examples.counter.deep", True),
        ("paglets.core.state", True),
        ("examples_evil", False),
        ("examplesx.counter", False),
        ("paglets2", False),
        ("example", False),
        ("evil.examples", False),
        ("os", False),
        ("", False),
    ],
)
def test_prefixes_match_on_dotted_boundaries(module: str, allowed: bool) -> None:
    assert ModulePolicy().allows(module) is allowed


def test_a_dotted_prefix_allows_only_its_subtree() -> None:
    policy = ModulePolicy(("myapp.agents",))
    assert policy.allows("myapp.agents")
    assert policy.allows("myapp.agents.worker")
    assert not policy.allows("myapp")
    assert not policy.allows("myapp.agents_old")
    assert not policy.allows("myapp.other")


def test_from_sources_merges_defaults_cli_and_env_in_order_without_duplicates() -> None:
    policy = ModulePolicy.from_sources(
        cli=["myapp", " other.pkg ", "a,b"], env=" envmod, ,myapp,,x.y ,"
    )
    assert policy.prefixes == (
        "paglets",
        "examples",
        "myapp",
        "other.pkg",
        "a",
        "b",
        "envmod",
        "x.y",
    )


def test_from_sources_without_extras_is_the_default() -> None:
    assert ModulePolicy.from_sources() == ModulePolicy()
    assert ModulePolicy.from_sources(env="") == ModulePolicy()
    assert ModulePolicy.from_sources(cli=[""], env=" , ") == ModulePolicy()


@pytest.mark.parametrize("bad", ["my app", "my-app", ".myapp", "myapp.", "a..b", "1abc", "import"])
def test_from_sources_rejects_bad_env_prefixes(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=ALLOW_MODULES_ENV) as info:
        ModulePolicy.from_sources(env=f"good,{bad}")
    assert repr(bad.strip()) in str(info.value)


@pytest.mark.parametrize("bad", ["my app", "my-app", ".myapp", "a..b"])
def test_from_sources_rejects_bad_cli_prefixes(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="--allow-module"):
        ModulePolicy.from_sources(cli=[bad])


def test_constructor_validates_prefixes() -> None:
    with pytest.raises(ConfigurationError, match="invalid module prefix 'bad name'"):
        ModulePolicy(("ok", "bad name"))
    with pytest.raises(ConfigurationError, match="must be a tuple, not str"):
        ModulePolicy("myapp")  # type: ignore[arg-type]


def test_check_returns_module_and_qualname() -> None:
    assert ModulePolicy().check("examples.counter:Counter") == ("examples.counter", "Counter")
    assert ModulePolicy().check("examples.counter.Counter") == ("examples.counter", "Counter")


def test_check_refusal_names_the_module_and_the_options() -> None:
    with pytest.raises(ClassNotAllowedError) as info:
        ModulePolicy().check("myapp.agents.worker:Worker")
    message = str(info.value)
    assert "'myapp.agents.worker'" in message
    assert "--allow-module myapp " in message
    assert f"{ALLOW_MODULES_ENV}=myapp" in message
    assert "paglets, examples" in message
    assert isinstance(info.value, PermissionError)
    assert isinstance(info.value, RequestError)


def test_check_rejects_lookalike_prefix() -> None:
    with pytest.raises(ClassNotAllowedError, match="--allow-module examples_evil"):
        ModulePolicy().check("examples_evil:Payload")


def test_check_and_refused_import_import_nothing() -> None:
    name = "this"  # the stdlib Zen of Python: harmless, but prints when imported
    if name in sys.modules:
        pytest.skip(f"{name} was already imported by something else")
    with pytest.raises(ClassNotAllowedError):
        ModulePolicy().check(f"{name}:Anything")
    with pytest.raises(ClassNotAllowedError):
        import_class(f"{name}:Anything", ModulePolicy())
    assert ModulePolicy((name,)).check(f"{name}:Anything") == (name, "Anything")
    assert name not in sys.modules


def test_import_class_from_an_allowed_module() -> None:
    cls = import_class("paglets.core.state:PagletState", ModulePolicy(), base=object)
    assert cls is PagletState
    assert import_class("paglets.core.state.PagletState", ModulePolicy()) is PagletState
    assert import_class("paglets.core.state:PagletState", ModulePolicy(), base=PagletState) is (
        PagletState
    )


def test_import_class_walks_a_nested_qualname() -> None:
    policy = ModulePolicy((HERE_TOP,))
    assert import_class(f"{HERE}:Outer.Inner", policy) is Outer.Inner


def test_import_class_refuses_before_importing() -> None:
    with pytest.raises(ClassNotAllowedError, match="--allow-module os"):
        import_class("os:PathLike", ModulePolicy())


def test_missing_module() -> None:
    with pytest.raises(ClassNotFoundError) as info:
        import_class("paglets.no_such_module:Thing", ModulePolicy())
    message = str(info.value)
    assert "class paglets.no_such_module:Thing is not importable on this host" in message
    assert "no module named 'paglets.no_such_module'" in message
    assert "install the same code there" in message
    assert "__main__" in message
    assert "notebook" in message
    assert isinstance(info.value, ImportError)


def test_missing_top_level_package() -> None:
    policy = ModulePolicy(("zz_paglets_absent",))
    with pytest.raises(ClassNotFoundError, match="no module named 'zz_paglets_absent'"):
        import_class("zz_paglets_absent.agents:Agent", policy)


def test_missing_attribute() -> None:
    with pytest.raises(ClassNotFoundError) as info:
        import_class("paglets.core.state:NoSuchState", ModulePolicy())
    message = str(info.value)
    assert "class paglets.core.state:NoSuchState is not importable on this host" in message
    assert "paglets.core.state has no attribute NoSuchState" in message
    assert "install the same code there" in message


def test_missing_nested_attribute_names_the_missing_part() -> None:
    policy = ModulePolicy((HERE_TOP,))
    with pytest.raises(ClassNotFoundError, match=r"has no attribute Outer\.Missing\)"):
        import_class(f"{HERE}:Outer.Missing.Deeper", policy)


def test_not_a_class() -> None:
    with pytest.raises(RequestError, match="is a function, not a class") as info:
        import_class("paglets.core.errors:error_from_wire", ModulePolicy())
    assert not isinstance(info.value, ClassNotFoundError)
    with pytest.raises(RequestError, match="is a int, not a class"):
        import_class(f"{HERE}:NOT_A_CLASS", ModulePolicy((HERE_TOP,)))


def test_wrong_base() -> None:
    with pytest.raises(RequestError) as info:
        import_class("paglets.core.state:PagletState", ModulePolicy(), base=PagletError)
    message = str(info.value)
    assert "paglets.core.state:PagletState is not a subclass of" in message
    assert "paglets.core.errors.PagletError" in message
    assert not isinstance(info.value, ClassNotFoundError | ClassNotAllowedError)
