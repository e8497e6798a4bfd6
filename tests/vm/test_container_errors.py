"""Bad input to a run: one line naming the field or path at fault, a non-zero exit, no debris.

The first three cases are caught on the host before a VM starts; a missing cwd or program is
only known inside the container's root, so those two boot a VM, and the error comes back from
the agent's setup of the container through the runtime. Either way nothing may be left: no
process, mount or directory under the run's VM directory and no container state.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.framework.leaks import LeakCheck
from tests.vm.container_kit import Place, make_bundle, run_foreground, without_namespace

pytestmark = pytest.mark.vm


@pytest.fixture
def place(state_root: Path, vm_root: Path, tmp_path: Path) -> Place:
    """The framework's private roots: its leak check fails the test if anything is left."""
    return Place(state_root, vm_root, tmp_path)


def _fails(place: Place, leak_check: LeakCheck, bundle: Path, *needles: str) -> str:
    """Run `bundle`; it must fail with one line on stderr containing every needle."""
    result = run_foreground(place.root, place.vm_root, bundle, "bad")
    message = result.stderr.decode(errors="replace").strip()
    assert result.returncode != 0, result
    assert result.stdout == b""
    assert len(message.splitlines()) == 1, message
    for needle in needles:
        assert needle in message, message
    left = leak_check.check()
    assert not left, f"the failed run left behind: {left}"
    return message


def test_missing_rootfs(place: Place, leak_check: LeakCheck) -> None:
    bundle = make_bundle(place.work / "b", ["true"])
    shutil.rmtree(bundle / "rootfs")
    _fails(place, leak_check, bundle, "root.path", str(bundle / "rootfs"))


def test_config_that_is_not_json(place: Place, leak_check: LeakCheck) -> None:
    bundle = make_bundle(place.work / "b", ["true"])
    (bundle / "config.json").write_text('{"ociVersion": "1.1.0", "process": ')
    _fails(place, leak_check, bundle, str(bundle / "config.json"), "JSON")


@pytest.mark.parametrize(("field", "value", "named"), [
    ("uid", "root", "process.user.uid"),
    ("args", "echo hi", "process.args"),
])
def test_config_with_wrong_types(place: Place, leak_check: LeakCheck, field: str, value: Any,
                                 named: str) -> None:
    def edit(spec: dict[str, Any]) -> None:
        if field == "uid":
            spec["process"]["user"]["uid"] = value
        else:
            spec["process"][field] = value

    bundle = make_bundle(place.work / "b", ["true"], edit)
    _fails(place, leak_check, bundle, named, str(bundle / "config.json"))


def test_cwd_missing_in_the_rootfs(place: Place, leak_check: LeakCheck) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["cwd"] = "/no/such/dir"

    bundle = make_bundle(place.work / "b", ["true"], edit)
    _fails(place, leak_check, bundle, "process.cwd", "/no/such/dir")


def test_program_missing_in_the_rootfs(place: Place, leak_check: LeakCheck) -> None:
    bundle = make_bundle(place.work / "b", ["/opt/app/server", "--port", "80"])
    _fails(place, leak_check, bundle, "/opt/app/server", "not found")



@pytest.mark.parametrize(("kind", "setting"), [("pid", "hostPID"), ("ipc", "hostIPC")])
def test_the_hosts_pid_or_ipc_namespace_is_refused(place: Place, leak_check: LeakCheck,
                                                    kind: str, setting: str) -> None:
    """No pid (ipc) namespace means the host's (--pid host, hostPID): refused before a VM."""
    bundle = make_bundle(place.work / "b", ["true"], without_namespace(kind))
    _fails(place, leak_check, bundle, "linux.namespaces", f"no {kind} namespace", setting)


def test_a_namespace_path_of_the_wrong_type_is_refused(place: Place,
                                                       leak_check: LeakCheck) -> None:
    def edit(spec: dict[str, Any]) -> None:
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] == "ipc":
                namespace["path"] = "/proc/self/ns/uts"

    bundle = make_bundle(place.work / "b", ["true"], edit)
    _fails(place, leak_check, bundle, "linux.namespaces", "/proc/self/ns/uts is a uts namespace, "
                                                          "not ipc")


def test_a_host_process_namespace_is_refused(place: Place, leak_check: LeakCheck) -> None:
    host = subprocess.Popen(["sleep", "60"])
    try:
        def edit(spec: dict[str, Any]) -> None:
            for namespace in spec["linux"]["namespaces"]:
                if namespace["type"] == "uts":
                    namespace["path"] = f"/proc/{host.pid}/ns/uts"

        bundle = make_bundle(place.work / "b", ["true"], edit)
        _fails(place, leak_check, bundle, f"/proc/{host.pid}/ns/uts",
               f"host process {host.pid} (sleep)", "cannot join a host namespace")
    finally:
        host.kill()
        host.wait()
