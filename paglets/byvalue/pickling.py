"""Pickling a paglet class by value (client side) and rebuilding it (child side).

`class_reference` decides how a client names a class to a host: by its module
path when another process can import it, else by value, pickled with
cloudpickle (with its ``State`` class and whatever else it refers to that is
not importable). The pickled bytes of one class object are made once and kept
as long as the class lives, so a second create ships nothing new.

`load_class` is the one place paglets unpickles anything. It runs only in a
paglet's child process, and only on code its host let through
(`paglets.byvalue.store`): the host itself never unpickles code.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import weakref
from typing import Any, Final, TypeVar

from paglets.byvalue.refs import CodeRef
from paglets.core.errors import RequestError
from paglets.wire.envelope import class_path_of

__all__ = ["class_reference", "is_importable", "load_class"]

T = TypeVar("T")

_pickled: weakref.WeakKeyDictionary[type, tuple[str, bytes]] = weakref.WeakKeyDictionary()
# In a child: the classes rebuilt so far, by code hash (a checking child becomes the paglet).
_loaded: Final[dict[str, type]] = {}


def is_importable(cls: type) -> bool:
    """Whether another process can import ``cls`` by its ``module:qualname`` path."""
    module_name = cls.__module__
    if module_name == "__main__" or "<locals>" in cls.__qualname__:
        return False
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__spec__", None) is None:
        return False  # a module made in memory (exec'd, a notebook's): nothing to import
    obj: Any = module
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    return obj is cls


def class_reference(cls: type) -> tuple[str, bytes | None]:
    """How to name ``cls`` to a host: ``(class_path, None)`` or ``(by-value path, code)``.

    Raises:
        RequestError: the class cannot be pickled by value (the message says why).
    """
    if is_importable(cls):
        return class_path_of(cls), None
    cached = _pickled.get(cls)
    if cached is None:
        import cloudpickle  # noqa: PLC0415 - only scripts that ship classes pay its import

        try:
            code = cloudpickle.dumps(cls)
        except Exception as exc:
            raise RequestError(
                f"class {class_path_of(cls)} cannot be shipped by value: {exc}; move it "
                "into a module the host can import"
            ) from exc
        cached = (CodeRef.of(class_path_of(cls), code).path, code)
        _pickled[cls] = cached
    return cached


def load_class(ref: CodeRef, code: bytes, *, base: type[T]) -> type[T]:
    """In a child: the class ``code`` holds, checked against ``ref`` and ``base``.

    Raises:
        RequestError: the code is not ``ref``'s (size, hash), is not a class, names
            itself otherwise, or is not a subclass of ``base``.
    """
    known = _loaded.get(ref.sha256)
    if known is None:
        ref.check(code)
        importlib.import_module("cloudpickle")  # what the pickled code is rebuilt with
        try:
            # The code's host trusts it (paglets.byvalue.store); see the module docstring.
            known = pickle.loads(code)  # noqa: S301
        except Exception as exc:
            raise RequestError(
                f"the code of {ref.class_path} cannot be loaded here: {type(exc).__name__}: "
                f"{exc}; the host may run another Python or lack a module the class uses"
            ) from exc
        if not isinstance(known, type):
            raise RequestError(f"the code of {ref.class_path} is a {type(known).__name__}")
        if class_path_of(known) != ref.class_path:
            raise RequestError(
                f"the code of {ref.class_path} holds class {class_path_of(known)} instead"
            )
        _loaded[ref.sha256] = known
        _pickled[known] = (ref.path, code)  # named by the same code if it goes on
    if not issubclass(known, base):
        raise RequestError(
            f"class {ref.class_path} is not a subclass of {base.__module__}.{base.__qualname__}"
        )
    return known
