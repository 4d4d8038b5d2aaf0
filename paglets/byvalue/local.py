"""What this process lets its own hosts run: code it registered, and where those hosts are.

A client in the same process as an embedded `Host` does not send a class's code
over the network: it registers the code here (`register_in_process`), and every
host of this process may run it (the code already runs in this process). So does
a host for the code one of its paglets creates a paglet of (its process already
runs code on this machine, as the same user). Hosts note the URLs they answer on
(`register_local_host`), so a client can tell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from paglets.core.errors import PayloadTooLargeError

if TYPE_CHECKING:
    from paglets.byvalue.refs import CodeRef

__all__ = [
    "forget_local_host",
    "in_process",
    "is_local_host",
    "register_in_process",
    "register_local_host",
]

_IN_PROCESS: Final[dict[str, bytes]] = {}
_LOCAL_HOSTS: Final[set[str]] = set()
MAX_IN_PROCESS: Final = 256 << 20
"""The most bytes of code one process registers, all classes together."""


def register_local_host(url: str) -> None:
    """Note that the host answering at ``url`` runs in this process."""
    _LOCAL_HOSTS.add(url.rstrip("/"))


def forget_local_host(url: str) -> None:
    """Note that the host at ``url`` stopped."""
    _LOCAL_HOSTS.discard(url.rstrip("/"))


def is_local_host(url: str) -> bool:
    """Whether the host answering at ``url`` runs in this process."""
    return url.rstrip("/") in _LOCAL_HOSTS


def register_in_process(ref: CodeRef, code: bytes) -> None:
    """Let every host of this process run ``code`` (a class this process defined).

    Raises:
        RequestError: ``code`` is not ``ref``'s.
        PayloadTooLargeError: this process registered `MAX_IN_PROCESS` bytes already.
    """
    ref.check(code)
    if ref.sha256 in _IN_PROCESS:
        return
    if sum(map(len, _IN_PROCESS.values())) + len(code) > MAX_IN_PROCESS:
        raise PayloadTooLargeError(
            f"this process registered {MAX_IN_PROCESS} bytes of code by value already; "
            "restart it, or move the classes into an importable module"
        )
    _IN_PROCESS[ref.sha256] = code


def in_process(sha256: str) -> bytes | None:
    """The code of that hash, if this process registered it."""
    return _IN_PROCESS.get(sha256)
