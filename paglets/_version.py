"""The package version, read by the build and by ``paglets-host --version``."""

__version__ = "0.1.0"
