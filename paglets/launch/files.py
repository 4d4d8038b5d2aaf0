"""Where launch files are: the bundled default, the user's copy, ``--config PATH``.

The bundled default is ``paglets/launch.toml`` in an installed wheel (hatch
force-includes the top-level ``launch.toml`` there), or the top-level file
itself in a checkout. On first start it is copied to the user's config
directory (``$XDG_CONFIG_HOME/paglets/launch.toml``, by default
``~/.config/paglets/launch.toml`` on Linux), without ever replacing a file
someone else wrote there first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import platformdirs

from paglets.core.errors import ConfigurationError
from paglets.launch.parse import parse_launch

if TYPE_CHECKING:
    from paglets.launch.model import LaunchConfig

log = logging.getLogger(__name__)

LAUNCH_FILE: Final = "launch.toml"
MAX_LAUNCH_FILE: Final = 1 << 20  # bytes; a launch file is a page of settings


def user_config_path() -> Path:
    """The user's launch file: ``launch.toml`` in the platform's user config directory."""
    return Path(platformdirs.user_config_dir("paglets")) / LAUNCH_FILE


def bundled_text() -> str:
    """The text of the bundled default launch file (wheel, else checkout)."""
    import importlib.resources  # noqa: PLC0415 - on a first start only, not on every one

    resource = importlib.resources.files("paglets").joinpath(LAUNCH_FILE)
    if resource.is_file():
        return resource.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / LAUNCH_FILE
    return checkout.read_text(encoding="utf-8")


def install_default(path: Path) -> bool:
    """Copy the bundled default to ``path`` unless a file is there; whether it copied.

    The copy is written aside and linked into place, so a reader never sees half
    of it and two hosts starting at once never overwrite each other (or the user).
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(bundled_text(), encoding="utf-8")
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    return True


def load_launch(path: Path | None = None) -> LaunchConfig:
    """Read the launch file at ``path``, or the user's (made from the default first).

    Raises:
        ConfigurationError: the file cannot be read or (the user's) written, or is
            not a valid launch file (the message names the file and line, and the fix).
    """
    if path is None:
        path = user_config_path()
        try:
            installed = install_default(path)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the default launch config to {path}: {exc.strerror or exc}; "
                "fix: pass --config PATH, or set XDG_CONFIG_HOME to a writable directory"
            ) from None
        if installed:
            log.warning("wrote the default launch config to %s; edit it to configure hosts", path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_LAUNCH_FILE + 1)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read launch config {path}: {exc.strerror or exc}; fix: check --config"
        ) from None
    if len(data) > MAX_LAUNCH_FILE:
        raise ConfigurationError(f"{path}:1: launch config is larger than 1 MiB; fix: trim it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}:1: launch config is not UTF-8 text") from None
    return parse_launch(text, path)
