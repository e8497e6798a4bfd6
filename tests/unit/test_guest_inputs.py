"""The image digest: same inputs give the same digest; any change to an input changes it.

Changes are made to a copy of the package sources in a temporary directory, never to the repo.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cocoon.guest.apt import Package
from cocoon.guest.inputs import Sources, compute_inputs, digest_of

PACKAGES = [
    Package("python3.11-minimal", "3.11.2-6+deb12u9", "amd64", "a" * 64, 1),
    Package("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64", "b" * 64, 2),
]


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    """A private copy of the installed cocoon package and protobuf."""
    real = Sources.installed()
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(real.cocoon_dir, tmp_path / "src" / "cocoon", ignore=ignore)
    shutil.copytree(real.google_dir, tmp_path / "site" / "google", ignore=ignore)
    return Sources(tmp_path / "src" / "cocoon", tmp_path / "site" / "google")


def _digest(sources: Sources, packages: Sequence[Package] = PACKAGES, **over: Any) -> str:
    args: dict[str, Any] = {"kernel_release": "6.1.0-56-cloud-amd64",
                            "kernel_version": "6.1.192-2", "modules": ["virtio_pci", "fuse"],
                            "init": b"#!/init\n", "compression": "none", "extra_files": None}
    args.update(over)
    return digest_of(compute_inputs(sources, packages, **args))


def test_same_inputs_same_digest(sources: Sources) -> None:
    assert _digest(sources) == _digest(sources)
    assert _digest(sources) == _digest(sources, packages=list(reversed(PACKAGES)))
    assert len(_digest(sources)) == 64


def test_changing_an_agent_file_changes_the_digest(sources: Sources) -> None:
    before = _digest(sources)
    errors = sources.cocoon_dir / "errors.py"
    errors.write_text(errors.read_text() + "\n# changed\n")
    assert _digest(sources) != before


def test_adding_an_agent_file_changes_the_digest(sources: Sources) -> None:
    before = _digest(sources)
    (sources.cocoon_dir / "agent").mkdir(exist_ok=True)
    (sources.cocoon_dir / "agent" / "brand_new.py").write_text("X = 1\n")
    assert _digest(sources) != before


def test_builder_and_protobuf_files_are_inputs(sources: Sources) -> None:
    before = _digest(sources)
    builder = sources.cocoon_dir / "guest" / "rootfs.py"
    builder.write_text(builder.read_text() + "\n")
    after_builder = _digest(sources)
    assert after_builder != before
    message = sources.google_dir / "protobuf" / "message.py"
    message.write_text(message.read_text() + "\n")
    assert _digest(sources) != after_builder


def test_files_the_guest_does_not_get_are_not_inputs(sources: Sources) -> None:
    before = _digest(sources)
    (sources.cocoon_dir / "cli" / "unrelated.py").write_text("Y = 2\n")
    cache = sources.cocoon_dir / "agent" / "__pycache__"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "junk.cpython-311.pyc").write_bytes(b"junk")
    assert _digest(sources) == before


def test_packages_kernel_modules_init_and_compression_are_inputs(sources: Sources) -> None:
    base = _digest(sources)
    newer = [PACKAGES[0], Package("busybox-static", "1:1.36", "amd64", "b" * 64, 2)]
    rebuilt = [PACKAGES[0], Package("busybox-static", PACKAGES[1].version, "amd64", "c" * 64,
                                    2)]
    variants = {
        _digest(sources, packages=newer),
        _digest(sources, packages=rebuilt),
        _digest(sources, kernel_release="6.1.0-57-cloud-amd64"),
        _digest(sources, kernel_version="6.1.192-3"),
        _digest(sources, modules=["virtio_pci"]),
        _digest(sources, init=b"#!/other\n"),
        _digest(sources, compression="lz4"),
        _digest(sources, extra_files={"etc/x": b"1"}),
    }
    assert base not in variants and len(variants) == 8


def test_agent_file_names_are_image_paths(sources: Sources) -> None:
    names = set(sources.agent_files())
    assert "cocoon/__init__.py" in names and "cocoon/errors.py" in names
    assert not any(n.startswith("cocoon/cli/") or n.startswith("cocoon/guest/") for n in names)
    assert all(n.startswith("google/protobuf/") or n.startswith("google/_upb/")
               for n in sources.protobuf_files())
    assert any(n.endswith(".so") for n in sources.protobuf_files())
