"""Helpers for the container tests that boot real VMs: bundles, foreground runs, one shared VM.

Two ways to run a container, matching what the tests must show:

- `run_foreground(...)`: the whole OCI path (bundle -> runtime -> VM -> agent -> relay -> exit
  status) in a child process, so a test can feed stdin, capture output, send signals to the
  host process and read its exit status. It uses `cocoon run` when the CLI has that verb and
  otherwise the same runtime call through `python -m tests.vm.container_kit run`.
- `GuestSandbox`: one booted VM that many containers share, driven through the agent API with a
  `SandboxClient`'s typed agent client (create_container, start_container, read_stdout,
  wait_process, ...), so the checks of each OCI setting do not each pay for a VM boot.

Every sandbox directory lives under a private VM root (`COCOON_VM_DIR`), so the framework's
leak check (`tests.framework.leaks.LeakCheck`) can tell what a test left behind without being
confused by other VMs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import empty_pb2

from cocoon.errors import CocoonError, RPCError
from cocoon.guest.assets import ensure_busybox_rootfs
from cocoon.oci import convert
from cocoon.oci.default import default_spec
from cocoon.oci.spec import Mount, parse_spec
from cocoon.runtime.guestspec import guest_spec
from cocoon.sandbox.client import SandboxClient
from cocoon.sandbox.launcher import start_sandbox, stop_sandbox
from cocoon.sandbox.layout import SandboxConfig
from cocoon.sandbox.share import Share
from tests.framework.leaks import LeakCheck

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
COCOON = str(Path(PYTHON).with_name("cocoon"))
RUN_TIMEOUT = 240.0

SpecEdit = Callable[[dict[str, Any]], None]


def short_tmpdir(prefix: str) -> Path:
    """A short directory under /tmp: unix socket paths below it must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def module_sandbox(prefix: str, memory_mib: int = 256,
                   sandbox_id: str = "kit") -> Iterator[GuestSandbox]:
    """One VM for a test module (a module-scoped fixture yields from this), in a private VM
    root that is checked for leaks when the VM stops; `sandbox_id` names it (as a pod's)."""
    vm_root = short_tmpdir(prefix)
    check = LeakCheck(private=[vm_root])
    box = GuestSandbox(vm_root, sandbox_id=sandbox_id, memory_mib=memory_mib)
    try:
        box.start()
        yield box
    finally:
        box.stop()
        left = check.check()
        shutil.rmtree(vm_root, ignore_errors=True)
        assert not left, f"the module left behind: {left}"


def container_spec(args: Sequence[str], edit: SpecEdit | None = None) -> dict[str, Any]:
    """`runc spec`'s config without a terminal, running `args`; `edit` changes it in place."""
    spec = default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    if edit is not None:
        edit(spec)
    return spec


def copy_rootfs(dest: Path) -> Path:
    """A private, writable copy of the cached busybox root."""
    shutil.copytree(ensure_busybox_rootfs(), dest, symlinks=True)
    return dest


def make_bundle(directory: Path, args: Sequence[str], edit: SpecEdit | None = None) -> Path:
    """A bundle (config.json + rootfs) at `directory` that runs `args` from busybox."""
    directory.mkdir(parents=True, exist_ok=True)
    copy_rootfs(directory / "rootfs")
    spec = container_spec(args, edit)
    (directory / "config.json").write_text(json.dumps(spec, indent=1))
    return directory


def without_namespace(kind: str) -> SpecEdit:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                       if n["type"] != kind]
    return edit


# --- the whole OCI path, in a child process ---------------------------------------------------


@dataclass
class Place:
    """Where one foreground-run test keeps its state root, VM directories and bundles."""

    root: Path
    vm_root: Path
    work: Path


def cli_has_run() -> bool:
    return importlib.util.find_spec("cocoon.cli.run") is not None and os.path.exists(COCOON)


def run_command(root: Path, bundle: Path, container_id: str) -> list[str]:
    if cli_has_run():
        return [COCOON, "--root", str(root), "run", "--bundle", str(bundle), container_id]
    return [PYTHON, "-m", "tests.vm.container_kit", "run", "--root", str(root),
            "--bundle", str(bundle), container_id]


def run_env(vm_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["COCOON_VM_DIR"] = str(vm_root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def start_foreground(root: Path, vm_root: Path, bundle: Path, container_id: str,
                     **popen: Any) -> subprocess.Popen[bytes]:
    """Start a foreground run; the caller owns the Popen (and must wait for it)."""
    return subprocess.Popen(run_command(root, bundle, container_id), cwd=REPO,
                            env=run_env(vm_root), **popen)


def run_foreground(root: Path, vm_root: Path, bundle: Path, container_id: str,
                   stdin: bytes = b"", timeout: float = RUN_TIMEOUT
                   ) -> subprocess.CompletedProcess[bytes]:
    proc = start_foreground(root, vm_root, bundle, container_id, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run_main(argv: Sequence[str]) -> int:
    """What `cocoon run --bundle DIR ID` does, for as long as the CLI lacks the verb."""
    from cocoon.runtime.operations import CreateOptions, Runtime

    parser = argparse.ArgumentParser(prog="container_kit run")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("id")
    args = parser.parse_args(argv)
    try:
        return Runtime(args.root).run_foreground(args.id, CreateOptions(bundle=args.bundle))
    except CocoonError as err:
        print(f"cocoon: {err}", file=sys.stderr)
        return 1


# --- one VM, many containers, through the agent API -------------------------------------------


@dataclass
class Result:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class GuestSandbox:
    """One booted VM for many containers; each call opens its own agent connection."""

    def __init__(self, vm_root: Path, sandbox_id: str = "kit", memory_mib: int = 256,
                 **overrides: Any) -> None:
        self.vm_root = vm_root
        self.config = SandboxConfig(sandbox_id=sandbox_id,
                                    vm_dir=str(vm_root / sandbox_id),
                                    memory_mib=memory_mib, **overrides)
        self.layout = self.config.layout
        self.share = Share(self.layout.shared)
        self.workdir = short_tmpdir("ckw")
        self.info: dict[str, Any] = {}  # what the monitor said when the sandbox was ready

    def start(self) -> None:
        self.layout.root.mkdir(parents=True, mode=0o700)
        self.share.create()
        self.info = start_sandbox(self.config).info

    def stop(self) -> None:
        stop_sandbox(self.layout, grace=1.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def connect(self) -> SandboxClient:
        return await SandboxClient.connect(self.layout.monitor_socket, timeout=10.0)

    def rootfs(self, container_id: str) -> Path:
        """A fresh copy of the busybox root for `container_id` (replacing an older one)."""
        dest = self.workdir / container_id / "rootfs"
        shutil.rmtree(dest, ignore_errors=True)
        return copy_rootfs(dest)

    async def create(self, client: SandboxClient, container_id: str, spec: Mapping[str, Any],
                     rootfs: Path | None = None,
                     guest_binds: Sequence[tuple[str, str]] = ()) -> None:
        """CreateContainer with the spec rewritten for the guest, as the runtime does;
        `guest_binds` (guest path, container path) are added after the rewriting, so their
        sources are the guest's own paths (no runtime makes such a mount: tests look with it
        at the guest); their mount points are made in the rootfs here."""
        parsed = parse_spec(dict(spec), source=f"{container_id} test spec")
        root = rootfs if rootfs is not None else self.rootfs(container_id)
        for _, target in guest_binds:
            # the runtime makes the mount points of a read-only rootfs on the host (the
            # share's bind of it is read-only to virtiofsd too); these it never sees
            (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        try:
            gspec = guest_spec(parsed, root, self.share, container_id)
            if guest_binds:
                gspec = dataclasses.replace(gspec, mounts=(*gspec.mounts, *(
                    Mount(destination=target, type="bind", source=source,
                          options=("rbind", "ro")) for source, target in guest_binds)))
            await client.agent.create_container(container_id, convert.spec_to_proto(gspec),
                                                timeout=30.0)
        except BaseException:
            self.share.remove_container(container_id)  # as the runtime undoes a failed create
            raise

    async def call(self, client: SandboxClient, method: str, request: Any,
                   response_type: Any = empty_pb2.Empty, timeout: float = 60.0) -> Any:
        """Any agent method with a request the test built (`AgentClient.call`)."""
        return await client.agent.call(method, request, response_type, timeout=timeout)

    async def collect(self, client: SandboxClient, container_id: str, exec_id: str = "",
                      stderr: bool = False, into: bytearray | None = None) -> bytes:
        """Everything the process writes to one stream, until end of stream.

        A test that watches a stream live passes `into` and looks at it as it grows (rather
        than cancelling reads: the agent would answer a cancelled read, and that data is lost).
        """
        read = client.agent.read_stderr if stderr else client.agent.read_stdout
        data = into if into is not None else bytearray()
        while True:
            chunk = await read(container_id, exec_id, 1 << 20, timeout=None)
            if not chunk:
                return bytes(data)
            data += chunk

    async def wait(self, client: SandboxClient, container_id: str, exec_id: str = "",
                   timeout: float = 120.0) -> int:
        return await client.agent.wait_process(container_id, exec_id, timeout=timeout)

    async def output_of(self, client: SandboxClient, container_id: str, exec_id: str = "",
                        stdin: bytes | None = None) -> Result:
        """Output and exit status of a process that was created (the caller starts it)."""
        out = asyncio.create_task(self.collect(client, container_id, exec_id))
        err = asyncio.create_task(self.collect(client, container_id, exec_id, stderr=True))
        if stdin is not None:
            if stdin:
                await client.agent.write_stdin(container_id, exec_id, stdin, timeout=30.0)
            await client.agent.close_stdin(container_id, exec_id)
        status = await self.wait(client, container_id, exec_id)
        return Result(status, await out, await err)

    async def remove(self, client: SandboxClient, container_id: str) -> None:
        with contextlib.suppress(RPCError):
            await client.agent.remove_container(container_id, stop_timeout=5, timeout=30.0)
        self.share.remove_container(container_id)

    async def run(self, container_id: str, spec: Mapping[str, Any],
                  rootfs: Path | None = None, stdin: bytes | None = None,
                  guest_binds: Sequence[tuple[str, str]] = ()) -> Result:
        """Create, start, collect and remove one container; return what it printed."""
        client = await self.connect()
        try:
            await self.create(client, container_id, spec, rootfs, guest_binds)
            try:
                pending = asyncio.create_task(
                    self.output_of(client, container_id, stdin=stdin))
                await asyncio.sleep(0)
                await client.agent.start_container(container_id, timeout=30.0)
                return await pending
            finally:
                await self.remove(client, container_id)
        finally:
            await client.close()

    def run_sync(self, container_id: str, spec: Mapping[str, Any],
                 rootfs: Path | None = None, stdin: bytes | None = None,
                 guest_binds: Sequence[tuple[str, str]] = ()) -> Result:
        return asyncio.run(self.run(container_id, spec, rootfs, stdin, guest_binds))


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] != "run":
        print("usage: python -m tests.vm.container_kit run --root R --bundle B ID",
              file=sys.stderr)
        return 2
    return _run_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
