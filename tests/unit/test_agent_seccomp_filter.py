"""The OCI seccomp profile as a real libseccomp filter, loaded in a forked child.

The guest image carries Debian's python3-seccomp; the host's copy of the same package is
loaded here (the venv's interpreter is the same CPython 3.11 ABI). Without it the filter
cannot be built at all, and these tests are skipped with that reason.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.agent import seccomp_filter

DEBIAN_MODULE = Path("/usr/lib/python3/dist-packages/seccomp.cpython-311-x86_64-linux-gnu.so")


@pytest.fixture(autouse=True)
def seccomp_module() -> Iterator[None]:
    if "seccomp" in sys.modules:
        yield
        return
    if not DEBIAN_MODULE.exists():
        pytest.skip(f"python3-seccomp is not installed ({DEBIAN_MODULE})")
    spec = importlib.util.spec_from_file_location("seccomp", DEBIAN_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["seccomp"] = module
    try:
        yield
    finally:
        del sys.modules["seccomp"]


def _in_child(profile: dict[str, Any], directory: Path) -> int:
    """Load the filter in a child, try mkdir and a file write; return a bit mask of results."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            seccomp_filter.apply(profile)
            try:
                os.mkdir(directory / "made")
            except PermissionError:
                code |= 1
            except OSError as err:
                code |= 2 if err.errno == errno.ENOSYS else 4
            (directory / "file").write_text("written")
        except BaseException:
            code |= 8
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_denied_syscall_fails_with_the_profiles_errno(tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [
                   {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                    "errnoRet": errno.EPERM},
                   {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"},
                   {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},  # = default: skipped
               ]}
    assert _in_child(profile, tmp_path) == 1
    assert not (tmp_path / "made").exists()
    assert (tmp_path / "file").read_text() == "written"


def test_argument_conditions_are_honoured(tmp_path: Path) -> None:
    # deny a directory's creation only when its mode is exactly 0o777 (Python's default)
    def rule(name: str, index: int, mode: int) -> dict[str, Any]:
        return {"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS,
                "args": [{"index": index, "value": mode, "op": "SCMP_CMP_EQ"}]}

    matching = {"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [rule("mkdir", 1, 0o777), rule("mkdirat", 2, 0o777)]}
    assert _in_child(matching, tmp_path) == 2
    other = {"defaultAction": "SCMP_ACT_ALLOW",
             "syscalls": [rule("mkdir", 1, 0o700), rule("mkdirat", 2, 0o700)]}
    assert _in_child(other, tmp_path) == 0
    assert (tmp_path / "made").is_dir()


def test_what_cannot_be_applied_is_refused_by_name() -> None:
    with pytest.raises(seccomp_filter.SeccompError, match=r"syscalls\[0\].*SCMP_ACT_NOTIFY"):
        seccomp_filter.build({"defaultAction": "SCMP_ACT_ALLOW",
                              "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]})
    with pytest.raises(seccomp_filter.SeccompError, match=r"args\[0\].*SCMP_CMP_BOGUS"):
        seccomp_filter.build({"defaultAction": "SCMP_ACT_ALLOW",
                              "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                            "args": [{"index": 0, "op": "SCMP_CMP_BOGUS"}]}]})
    with pytest.raises(seccomp_filter.SeccompError, match="defaultAction"):
        seccomp_filter.build({"defaultAction": "SCMP_ACT_BOGUS"})
