"""In a child: the paglet class an ``Init`` names, imported or rebuilt from its code."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from paglets.byvalue.pickling import load_class
from paglets.byvalue.refs import parse_code_ref
from paglets.core.errors import RequestError
from paglets.core.paglet import Paglet
from paglets.wire.modules import ModulePolicy, import_class

if TYPE_CHECKING:
    from paglets.runtime import ipc

__all__ = ["paglet_class"]


def paglet_class(init: ipc.Init) -> type[Paglet[Any]]:
    """The class of ``init``: imported within the allow-list, or rebuilt from ``init.code``.

    Raises:
        ClassNotAllowedError: an importable class outside the allow-list.
        ClassNotFoundError: it cannot be imported here.
        RequestError: not a `Paglet` subclass; by value, code that is missing or
            is not the class named (`paglets.byvalue.pickling.load_class`).
    """
    ref = parse_code_ref(init.class_path)
    if ref is None:
        return import_class(
            init.class_path, ModulePolicy(tuple(init.allowed_prefixes)), base=Paglet
        )
    if not init.code:
        raise RequestError(f"class {ref.class_path} is shipped by value, and its code is missing")
    return load_class(ref, base64.b64decode(init.code), base=Paglet)
