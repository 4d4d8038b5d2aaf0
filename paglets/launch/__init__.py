"""The launch config: what ``paglets-host`` reads from ``launch.toml`` at start.

The bundled default (the top-level ``launch.toml``, shipped in the wheel as
``paglets/launch.toml``) is copied to the user's config directory on first start
and read from there; ``paglets-host --config PATH`` reads another file. See
docs/operations.md, "The launch config".
"""

from __future__ import annotations

from paglets.launch.files import bundled_text, load_launch, user_config_path
from paglets.launch.model import LaunchConfig, StartupPaglet

__all__ = ["LaunchConfig", "StartupPaglet", "bundled_text", "load_launch", "user_config_path"]
