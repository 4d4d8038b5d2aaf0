"""The module allow-list: which classes a host will import by name.

A host imports paglet classes and state classes named in requests only from
module prefixes it allows: ``paglets`` and ``examples`` by default, more with
``--allow-module PREFIX`` or ``PAGLETS_ALLOW_MODULES``. A class path outside the
list is refused before anything is imported.
"""

from __future__ import annotations

import importlib
import keyword
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from paglets.core.errors import (
    ClassNotAllowedError,
    ClassNotFoundError,
    ConfigurationError,
    RequestError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ALLOW_MODULES_ENV",
    "DEFAULT_ALLOWED_PREFIXES",
    "ModulePolicy",
    "import_class",
    "parse_class_path",
]

T = TypeVar("T")

DEFAULT_ALLOWED_PREFIXES: Final = ("paglets", "examples")
"""Module prefixes every host allows."""

ALLOW_MODULES_ENV: Final = "PAGLETS_ALLOW_MODULES"
"""The environment variable holding extra comma-separated prefixes."""

_ALLOW_FLAG: Final = "--allow-module"


def _is_dotted_name(text: str) -> bool:
    parts = text.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)


def parse_class_path(path: str) -> tuple[str, str]:
    """Split a class path into its module and qualified name.

    Args:
        path: ``"pkg.mod:Qual.Name"``, or ``"pkg.mod.Class"`` where the last dot
            separates the module from the class.

    Returns:
        ``(module, qualname)``, e.g. ``("pkg.mod", "Qual.Name")``.

    Raises:
        RequestError: the path is malformed; the message shows the expected form.
    """
    if ":" in path:
        module, _, qualname = path.partition(":")
    else:
        module, _, qualname = path.rpartition(".")
    if not (_is_dotted_name(module) and _is_dotted_name(qualname)):
        raise RequestError(
            f"malformed class path {path!r}: expected the form module:ClassName, "
            "e.g. 'examples.counter:Counter'"
        )
    return module, qualname


def _prefixes_from(values: Iterable[str], source: str) -> list[str]:
    prefixes = []
    for value in values:
        for item in value.split(","):
            prefix = item.strip()
            if prefix and not _is_dotted_name(prefix):
                raise ConfigurationError(
                    f"invalid module prefix {prefix!r} in {source}: expected a dotted "
                    "module name such as 'myapp' or 'myapp.agents'"
                )
            if prefix:
                prefixes.append(prefix)
    return prefixes


@dataclass(frozen=True, slots=True)
class ModulePolicy:
    """The module prefixes a host imports classes from by name.

    A prefix matches on dotted boundaries: ``examples`` allows ``examples`` and
    ``examples.counter`` but not ``examples_evil``.

    Args:
        prefixes: the allowed module prefixes.

    Raises:
        ConfigurationError: a prefix is not a dotted module name.
    """

    prefixes: tuple[str, ...] = DEFAULT_ALLOWED_PREFIXES

    def __post_init__(self) -> None:
        given: object = self.prefixes  # a bare str would allow each of its letters
        if not isinstance(given, tuple):
            raise ConfigurationError(
                f"ModulePolicy prefixes must be a tuple, not {type(given).__name__}"
            )
        _prefixes_from(self.prefixes, "the module allow-list")

    @classmethod
    def from_sources(cls, cli: Iterable[str] = (), env: str | None = None) -> ModulePolicy:
        """Build the policy from the defaults, CLI options and the environment.

        Args:
            cli: values of ``--allow-module``; each may also hold comma-separated
                prefixes.
            env: the value of ``PAGLETS_ALLOW_MODULES`` (comma-separated), if set.

        Returns:
            A policy allowing the defaults plus every given prefix, without duplicates.

        Raises:
            ConfigurationError: a prefix is not a dotted module name.
        """
        merged = [
            *DEFAULT_ALLOWED_PREFIXES,
            *_prefixes_from(cli, _ALLOW_FLAG),
            *_prefixes_from([env or ""], ALLOW_MODULES_ENV),
        ]
        return cls(tuple(dict.fromkeys(merged)))

    def allows(self, module: str) -> bool:
        """Whether classes may be imported from ``module``.

        Args:
            module: a dotted module name.

        Returns:
            True when ``module`` is an allowed prefix or lies below one.
        """
        return any(module == prefix or module.startswith(prefix + ".") for prefix in self.prefixes)

    def check(self, class_path: str) -> tuple[str, str]:
        """Parse a class path and check it against the policy, importing nothing.

        Args:
            class_path: ``"module:ClassName"``.

        Returns:
            ``(module, qualname)``.

        Raises:
            RequestError: the class path is malformed.
            ClassNotAllowedError: the module is outside the allowed prefixes; the
                message names the option that would allow it.
        """
        module, qualname = parse_class_path(class_path)
        if not self.allows(module):
            top = module.partition(".")[0]
            raise ClassNotAllowedError(
                f"module {module!r} of class {module}:{qualname} is not allowed on this host "
                f"(allowed prefixes: {', '.join(self.prefixes) or 'none'}); to allow it, "
                f"start that host with {_ALLOW_FLAG} {top} or set {ALLOW_MODULES_ENV}={top} there"
            )
        return module, qualname


@overload
def import_class(class_path: str, policy: ModulePolicy, *, base: type[T]) -> type[T]: ...
@overload
def import_class(class_path: str, policy: ModulePolicy, *, base: None = None) -> type: ...
def import_class(class_path: str, policy: ModulePolicy, *, base: type | None = None) -> type:
    """Import a class by path, if the policy allows its module.

    Args:
        class_path: ``"module:Qual.Name"``.
        policy: the host's module allow-list, checked before anything is imported.
        base: if given, the class must be a subclass of it.

    Returns:
        The class.

    Raises:
        RequestError: the path is malformed, or names something that is not a
            class or not a subclass of ``base``.
        ClassNotAllowedError: the module is outside the allow-list.
        ClassNotFoundError: the module or the class cannot be imported here.
    """
    module_name, qualname = policy.check(class_path)
    shown = f"{module_name}:{qualname}"
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        reason = f"no module named {exc.name!r}" if exc.name else str(exc)
        raise ClassNotFoundError(_not_importable(shown, reason)) from exc
    except Exception as exc:
        reason = f"importing {module_name} raised {type(exc).__name__}: {exc}"
        raise ClassNotFoundError(_not_importable(shown, reason)) from exc
    parts = qualname.split(".")
    for depth, part in enumerate(parts, start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            reason = f"{module_name} has no attribute {'.'.join(parts[:depth])}"
            raise ClassNotFoundError(_not_importable(shown, reason)) from exc
    if not isinstance(obj, type):
        raise RequestError(f"{shown} is a {type(obj).__name__}, not a class")
    if base is not None and not issubclass(obj, base):
        raise RequestError(
            f"class {shown} is not a subclass of {base.__module__}.{base.__qualname__}"
        )
    return obj


def _not_importable(class_path: str, reason: str) -> str:
    return (
        f"class {class_path} is not importable on this host ({reason}); install the same "
        "code there (a class defined in __main__, a script or a notebook cannot be "
        "imported by other processes: pass the class itself to create() to ship it by "
        "value, or move it into an importable module)"
    )
