"""Cocoon: every container (or pod) in its own lightweight virtual machine."""

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (shims import this file)
if TYPE_CHECKING:  # for type checkers; at run time `__getattr__` imports them when asked for
    from cocoon.api import (
        AsyncProcess,
        AsyncSandbox,
        CompletedProcess,
        Mount,
        OutputStream,
        Process,
        Sandbox,
        Stream,
    )

# what `cocoon.api` exports, importable from `cocoon` itself (kept in step by a unit test)
__all__ = ["AsyncProcess", "AsyncSandbox", "CompletedProcess", "Mount", "OutputStream",
           "Process", "Sandbox", "Stream"]
API = frozenset(__all__)


def __getattr__(name: str) -> object:
    """`cocoon.Sandbox` and the rest of `cocoon.api`, imported when first asked for: the CLI
    and the guest's agent import `cocoon` and do not pay for the API (the guest has none)."""
    if name not in API:
        raise AttributeError(f"module 'cocoon' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("cocoon.api"), name)
