"""The launch config: what ``paglets-host`` reads from ``launch.toml`` at start.

The bundled default (the top-level ``launch.toml``, shipped in the wheel as
``paglets/launch.toml``) is copied to the user's config directory on first start
and read from there; ``paglets-host --config PATH`` reads another file. See
docs/operations.md, "The launch config".

- `paglets.launch.model`: the parsed config (`LaunchConfig`, `StartupPaglet`);
- `paglets.launch.parse`: text to config, with ``file:line`` errors;
- `paglets.launch.files`: the bundled default, the user's copy, `load_launch`;
- `paglets.launch.startup`: creating the startup paglets in a host.

This package imports nothing of them itself, so a command's ``--help`` stays fast.
"""
