"""The exception tree of Cocoon.

One root (`CocoonError`), one base per layer, and every error carries the evidence a user needs
to act on it: what was at fault and what was seen. Process edges (the CLI, the shim, the agent's
ttrpc server) map these to an exit code, a ttrpc status or a one-line message; nothing else
catches them broadly.
"""

from __future__ import annotations

from typing import Any


class CocoonError(Exception):
    """Root of every error Cocoon raises on purpose.

    `evidence` holds the facts behind the message (paths, ids, what came back), so logs can show
    them without parsing the message.
    """

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence: dict[str, Any] = evidence

    def __str__(self) -> str:
        return self.message


# --- ttrpc and protocol layer -------------------------------------------------------------------


class TtrpcError(CocoonError):
    """Base of the ttrpc layer."""


class ProtocolError(TtrpcError):
    """The peer broke the wire protocol (bad frame, bad stream id, oversized message).

    The connection that carried it is closed; other connections are unaffected.
    """


class OversizedMessageError(ProtocolError):
    """A frame announced more data than the 4 MiB cap."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"ttrpc message of {length} bytes exceeds the {limit}-byte limit",
                         length=length, limit=limit)
        self.length = length
        self.limit = limit


class ConnectionLostError(TtrpcError):
    """The connection closed while calls were pending."""


class RPCError(TtrpcError):
    """A call completed with a non-OK gRPC status."""

    def __init__(self, code: int, message: str, **evidence: Any) -> None:
        from cocoon.ttrpc.status import code_name  # local: avoid an import cycle

        super().__init__(f"{code_name(code)}: {message}", code=code, **evidence)
        self.code = code
        self.status_message = message


# --- OCI, bundles and container state -------------------------------------------------------------


class OCIError(CocoonError):
    """Base of the OCI layer (bundles, config.json, container state)."""


class ConfigError(OCIError):
    """config.json or another user input is invalid; the message names the field or path."""


class SettingsError(ConfigError):
    """The configuration file or an environment variable that overrides it is invalid; the
    message names the file, line and key (or the variable)."""


class ContainerNotFoundError(OCIError):
    """No container with that id exists under the state root."""


class ContainerExistsError(OCIError):
    """A container with that id already exists."""


class ContainerStateError(OCIError):
    """The operation is not allowed in the container's current status."""


class StateWriteError(OCIError):
    """The container's state could not be written under the state root (full, read-only)."""


# --- hypervisor, guest assets, sandbox ------------------------------------------------------------


class HypervisorError(CocoonError):
    """Base of the hypervisor layer (QEMU, QMP, acceleration probe)."""


class VMDiedError(HypervisorError):
    """QEMU exited while the VM was expected to run."""


class AssetError(CocoonError):
    """The guest kernel or image could not be fetched, built or found."""


class TemplateError(CocoonError):
    """A VM template could not be built, or one on disk is stale or damaged."""


class SandboxError(CocoonError):
    """Base of the host side of one VM (monitor, proxy, agent client, shims)."""


class AgentError(SandboxError):
    """The agent could not be reached or answered with an error."""


class NetworkError(CocoonError):
    """A network namespace or interface cannot be carried into the VM."""


class HostCheckError(CocoonError):
    """The host cannot run VMs (missing QEMU, no memory, ...)."""


# --- operations ----------------------------------------------------------------------------------


class InstallError(CocoonError):
    """An engine's configuration cannot be merged (or unmerged) as asked; the message names why."""


# --- the Python API (cocoon.Sandbox) -------------------------------------------------------------


class ImageError(AssetError):
    """A sandbox's image (a rootfs directory, an OCI image layout or archive) cannot be used;
    the message names the file and what is wrong with it."""


class SandboxTimeoutError(SandboxError):
    """The sandbox's wall-clock timeout expired: its VM was killed, and every call after
    (or still waiting) fails with this."""


class ProcessError(SandboxError):
    """A process run in a sandbox did not end well; `args`, `returncode`, `stdout` and
    `stderr` hold what is known (`returncode` is None when it did not end on its own)."""

    def __init__(self, message: str, args: list[str], returncode: int | None,
                 stdout: bytes | str | None = None, stderr: bytes | str | None = None) -> None:
        super().__init__(message, args=args, returncode=returncode)
        self.cmd = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class ProcessTimeoutError(ProcessError):
    """`run(..., timeout=)` expired: the process was killed (the sandbox lives on)."""


class CalledProcessError(ProcessError):
    """`run(..., check=True)`: the process exited with a non-zero status."""


class OutOfMemoryError(ProcessError):
    """The process was killed by the guest kernel's OOM killer: it went over the sandbox's
    memory limit (`memory_mib`)."""
