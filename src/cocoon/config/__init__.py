"""Cocoon's configuration file (/etc/cocoon/config.toml): definitions in `schema`, reading in
`loader`, the generated reference in `reference`. Code reads `current()`."""

from cocoon.config.loader import DEFAULT_PATH, ENV_CONFIG, Settings, current, load

__all__ = ["DEFAULT_PATH", "ENV_CONFIG", "Settings", "current", "load"]
