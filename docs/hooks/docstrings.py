"""An mkdocs hook: every public name of the Python API, and every public method of its
classes, must have a docstring. A missing one is a warning, which `mkdocs build --strict`
turns into a failed build (mkdocstrings itself renders an undocumented member silently)."""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

log = logging.getLogger("mkdocs.hooks.docstrings")

MODULES = ("cocoon.api", "cocoon.errors")


def _missing(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items()
        if not n.startswith("_") and inspect.isclass(v) and v.__module__ == module_name]
    missing = [] if module.__doc__ else [module_name]
    for name in names:
        obj: Any = getattr(module, name)
        if not inspect.getdoc(obj):
            missing.append(f"{module_name}.{name}")
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not (inspect.isfunction(value)
                                            or isinstance(value, property)):
                continue
            if not (value.__doc__ or "").strip():
                missing.append(f"{module_name}.{name}.{attr}")
    return missing


def on_pre_build(config: Any) -> None:
    for module_name in MODULES:
        for name in _missing(module_name):
            log.warning("%s has no docstring", name)
