"""Cocoon's Python API: run untrusted code in a throwaway VM from your own program.

    from cocoon import Sandbox

    with Sandbox(memory_mib=64, timeout=30) as sandbox:
        sandbox.write_file("/job.sh", "echo hello from $(hostname)")
        print(sandbox.run(["sh", "/job.sh"], check=True).stdout)

A `Sandbox` (or, under asyncio, an `AsyncSandbox`) is one VM with one container in it, started
by the same code the `cocoon` CLI and the containerd shim use: a pooled clone, a clone of a
template, or a cold boot, whichever the host has (`docs/templates.md`). Processes run in the
container through the agent's calls, as `cocoon exec` runs them; files are moved by the
sandbox's own busybox, in the container, so the host never resolves a path the sandbox could
have made a symlink. Errors are `cocoon.errors` exceptions, each naming what was at fault.
"""

from cocoon.api.core import AsyncSandbox
from cocoon.api.process import AsyncProcess, CompletedProcess
from cocoon.api.spec import Mount
from cocoon.api.streams import Stream
from cocoon.api.sync import OutputStream, Process, Sandbox

__all__ = ["AsyncProcess", "AsyncSandbox", "CompletedProcess", "Mount", "OutputStream",
           "Process", "Sandbox", "Stream"]
