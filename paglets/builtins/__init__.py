"""The built-in resident services, declared in the bundled ``launch.toml``.

- `paglets.builtins.serverinfo`: ``server-info.v1``, this host's disks, load,
  CPU, memory and processes (``paglets-sysinfo``).
"""
