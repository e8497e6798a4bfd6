"""Cocoon: every container (or pod) in its own lightweight virtual machine."""

__version__ = "0.1.0"
