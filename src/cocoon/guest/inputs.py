"""Everything a guest image is built from, and the content digest that names it.

The digest covers every input that can change the image's bytes: the Debian packages (name,
version, .deb SHA256), each agent and protobuf file copied in (path and content), the builder's
own source, the kernel and the module list, the init script and the compression. Computing it
only hashes files, so `find_guest_image` can tell cheaply whether the cached image is current.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocoon.errors import AssetError
from cocoon.guest.apt import Package

# Bump when the image layout changes in a way the builder's source hash would not show.
FORMAT = 1
# The cocoon package's paths that the guest runs (whatever of them exists at build time).
AGENT_PATHS: tuple[str, ...] = ("__init__.py", "errors.py", "log.py", "ttrpc", "protocols",
                                "agent", "linux", "oci")
# What of site-packages/google the agent needs: protobuf and its upb C extension.
PROTOBUF_PATHS: tuple[str, ...] = ("protobuf", "_upb")
_SKIP_SUFFIXES = (".pyc", ".pyi", ".proto")


@dataclass(frozen=True)
class Sources:
    """Where the Python code copied into the image comes from."""

    cocoon_dir: Path  # the `cocoon` package directory
    google_dir: Path  # site-packages/google of the protobuf the host uses

    @classmethod
    def installed(cls) -> Sources:
        """The cocoon package and protobuf this process runs."""
        import google.protobuf

        import cocoon

        return cls(cocoon_dir=Path(cocoon.__file__).resolve().parent,
                   google_dir=Path(google.protobuf.__file__).resolve().parent.parent)

    def agent_files(self) -> dict[str, Path]:
        """Image-relative name (`cocoon/agent/main.py`) -> source file, for the agent code."""
        return _collect(self.cocoon_dir, "cocoon", AGENT_PATHS)

    def protobuf_files(self) -> dict[str, Path]:
        return _collect(self.google_dir, "google", PROTOBUF_PATHS)

    def builder_files(self) -> dict[str, Path]:
        guest = self.cocoon_dir / "guest"
        return {f"cocoon/guest/{p.name}": p for p in sorted(guest.glob("*.py"))}


def _collect(base: Path, prefix: str, names: Sequence[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for name in names:
        root = base / name
        if root.is_file():
            files[f"{prefix}/{name}"] = root
        elif root.is_dir():
            for path in _walk(root):
                files[f"{prefix}/{path.relative_to(base).as_posix()}"] = path
    return dict(sorted(files.items()))


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file() or path.suffix in _SKIP_SUFFIXES:
            continue
        yield path


def _hash_files(files: Mapping[str, Path]) -> dict[str, str]:
    hashed: dict[str, str] = {}
    for name, path in files.items():
        try:
            hashed[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise AssetError(f"cannot read image input {path}: {err.strerror}",
                             path=str(path)) from err
    return hashed


def compute_inputs(sources: Sources, packages: Sequence[Package], kernel_release: str,
                   kernel_version: str, modules: Sequence[str], init: bytes,
                   compression: str, extra_files: Mapping[str, bytes] | None = None,
                   ) -> dict[str, Any]:
    """The canonical description of an image's inputs (what the manifest records)."""
    extra = {name: hashlib.sha256(data).hexdigest()
             for name, data in sorted((extra_files or {}).items())}
    return {
        "format": FORMAT,
        "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256}
                     for p in sorted(packages, key=lambda p: p.name)],
        "kernel": {"release": kernel_release, "package_version": kernel_version},
        "modules": list(modules),
        "agent": _hash_files(sources.agent_files()),
        "protobuf": _hash_files(sources.protobuf_files()),
        "builder": _hash_files(sources.builder_files()),
        "init": hashlib.sha256(init).hexdigest(),
        "extra_files": extra,
        "compression": compression,
    }


def digest_of(inputs: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of `inputs`."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()
