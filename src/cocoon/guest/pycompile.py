"""Precompiling the guest's Python with the guest's own interpreter, and trying it out.

Under TCG, compiling the standard library's modules at every boot costs more than a second,
and the image cannot keep what it compiles. So the builder compiles everything ahead, with
hash-based .pyc files the interpreter uses without looking at the source (a timestamp check
would fail: the initramfs has no mtimes). The standard library ships as .pyc only (sources
cost 8 MB of guest and host memory and 0.1 s of boot); the agent and protobuf keep their
sources so their tracebacks show code. The image's interpreter runs on the host through the
image's own dynamic loader, so the host's Python version does not matter.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from cocoon.errors import AssetError
from cocoon.guest.rootfs import LIBDIR

PYTHON = "usr/bin/python3.11"
CACHE_TAG = "cpython-311"
_UNCHECKED_HASH = 0b01  # .pyc flags: hash-based, check_source off

_COMPILE = """
import compileall, py_compile, sys
root, sourceless, cached = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
def run(d, legacy):
    return compileall.compile_dir(root + "/" + d, stripdir=root, prependdir="/", quiet=1,
                                  force=True, workers=0, invalidation_mode=mode, legacy=legacy)
ok = all([run(d, True) for d in sourceless if d] + [run(d, False) for d in cached if d])
sys.exit(0 if ok else 1)
"""


def run_tree_python(tree: Path, args: Sequence[str], what: str) -> str:
    """Run the image's interpreter (isolated, no site) on the host; returns its stdout."""
    libdir = tree / LIBDIR
    cmd = [str(libdir / "ld-linux-x86-64.so.2"), "--library-path", str(libdir),
           str(tree / PYTHON), "-I", "-S", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssetError(f"{what} failed in the guest tree: {proc.stderr.strip()[-2000:]}",
                         command=cmd[3:], returncode=proc.returncode)
    return proc.stdout


def compile_tree(tree: Path, sourceless: Sequence[str], cached: Sequence[str]) -> None:
    """Compile `sourceless` dirs to .pyc beside the (then removed) sources, `cached` dirs to
    __pycache__; every module must end up with an unchecked-hash .pyc."""
    # -B: the compiler's own imports must not leave timestamp-checked .pyc files behind
    run_tree_python(tree, ["-B", "-c", _COMPILE, str(tree), ",".join(sourceless),
                           ",".join(cached)], "compiling Python")
    missing: list[str] = []
    for d in sourceless:
        for py in sorted((tree / d).rglob("*.py")):
            if _unchecked(py.with_suffix(".pyc")):
                py.unlink()
            else:
                missing.append(str(py.relative_to(tree)))
    for d in cached:
        missing.extend(str(py.relative_to(tree)) for py in sorted((tree / d).rglob("*.py"))
                       if not _unchecked(py.parent / "__pycache__"
                                         / f"{py.stem}.{CACHE_TAG}.pyc"))
    if missing:
        raise AssetError(f"{len(missing)} modules lack an unchecked-hash .pyc, e.g. "
                         f"{missing[:3]}", modules=missing)


def _unchecked(pyc: Path) -> bool:
    try:
        with pyc.open("rb") as f:
            header = f.read(8)
    except FileNotFoundError:
        return False
    return int.from_bytes(header[4:8], "little") == _UNCHECKED_HASH


def smoke_test(tree: Path, sys_path: Sequence[str], imports: Sequence[str]) -> str:
    """Import `imports` with the image's interpreter; returns protobuf's backend name."""
    paths = [str(tree / p.lstrip("/")) for p in sys_path]
    script = (f"import sys; sys.path[0:0] = {paths!r}\n"
              + "".join(f"import {name}\n" for name in imports)
              + "from google.protobuf.internal import api_implementation\n"
              + "print(api_implementation.Type())\n")
    return run_tree_python(tree, ["-B", "-c", script],
                           "importing the agent's dependencies").strip()
