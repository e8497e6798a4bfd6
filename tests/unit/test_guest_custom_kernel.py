"""`hypervisor.kernel` and `hypervisor.kernel_modules`: the kernel a user names instead of
Debian's, checked before anything boots. A bzImage's setup header says its release; the
module tree must be that release's, indexed by depmod; each failure names the setting."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest.kernel import CUSTOM, bzimage_release, check_configured_kernel, custom_kernel

RELEASE = "6.1.0-99-test-amd64"


def fake_bzimage(path: Path, version: str | None = RELEASE) -> Path:
    """A file with an x86 setup header whose kernel_version points at `version`."""
    image = bytearray(0x4000)
    image[0x202:0x206] = b"HdrS"
    if version is not None:
        text = f"{version} (builder@example) #1 SMP".encode() + b"\0"
        image[0x3000:0x3000 + len(text)] = text
        struct.pack_into("<H", image, 0x20E, 0x3000 - 0x200)
    path.write_bytes(bytes(image))
    return path


def modules_tree(root: Path, release: str = RELEASE) -> Path:
    tree = root / "lib" / "modules" / release
    tree.mkdir(parents=True)
    (tree / "modules.dep").write_text("kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\n")
    return tree


def test_a_bzimage_says_its_release(tmp_path: Path) -> None:
    assert bzimage_release(fake_bzimage(tmp_path / "vmlinuz")) == RELEASE


def test_a_file_without_a_setup_header_has_no_release(tmp_path: Path) -> None:
    plain = tmp_path / "vmlinux"
    plain.write_bytes(b"\x7fELF" + bytes(0x400))
    assert bzimage_release(plain) is None
    assert bzimage_release(fake_bzimage(tmp_path / "empty", version=None)) is None


def test_a_kernel_with_its_modules_is_identified_by_its_digest(tmp_path: Path) -> None:
    vmlinuz = fake_bzimage(tmp_path / "vmlinuz")
    tree = modules_tree(tmp_path)
    kernel = custom_kernel(vmlinuz, tree)
    assert (kernel.release, kernel.package, kernel.modules_dir) == (RELEASE, CUSTOM, tree)
    assert kernel.package_version == "sha256:" + hashlib.sha256(vmlinuz.read_bytes()).hexdigest()


def test_a_kernel_without_modules_has_its_drivers_built_in(tmp_path: Path) -> None:
    kernel = custom_kernel(fake_bzimage(tmp_path / "vmlinuz"), None)
    assert kernel.modules_dir is None and kernel.release == RELEASE


def test_a_missing_kernel_is_named(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=rf"^hypervisor.kernel: {tmp_path}/nope is not a file"):
        custom_kernel(tmp_path / "nope", None)


def test_modules_of_another_release_are_refused(tmp_path: Path) -> None:
    tree = modules_tree(tmp_path, "6.1.0-1-other-amd64")
    with pytest.raises(AssetError, match=r"^hypervisor.kernel_modules: .* holds modules of "
                                         r"6.1.0-1-other-amd64, not of the kernel's release "
                                         rf"{RELEASE}$"):
        custom_kernel(fake_bzimage(tmp_path / "vmlinuz"), tree)


def test_a_module_tree_depmod_never_indexed_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / RELEASE
    tree.mkdir()
    with pytest.raises(AssetError, match=r"^hypervisor.kernel_modules: .* has no modules.dep"):
        custom_kernel(fake_bzimage(tmp_path / "vmlinuz"), tree)


def test_without_a_header_the_module_tree_names_the_release(tmp_path: Path) -> None:
    plain = tmp_path / "vmlinux"
    plain.write_bytes(bytes(0x1000))
    assert custom_kernel(plain, modules_tree(tmp_path)).release == RELEASE


def test_the_configured_kernel_and_image_are_checked_from_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `create` checks before any VM starts: nothing when nothing is set; a missing image
    or kernel named by its setting; a fitting kernel returned."""
    config = tmp_path / "config.toml"
    monkeypatch.setenv("COCOON_CONFIG", str(config))
    config.write_text("")
    assert check_configured_kernel() is None
    config.write_text(f'[hypervisor]\nimage = "{tmp_path}/initrd.img"\n')
    with pytest.raises(AssetError, match=rf"^hypervisor.image: {tmp_path}/initrd.img is not"):
        check_configured_kernel()
    vmlinuz = fake_bzimage(tmp_path / "vmlinuz")
    config.write_text(f'[hypervisor]\nkernel = "{vmlinuz}"\n'
                      f'kernel_modules = "{modules_tree(tmp_path)}"\n')
    kernel = check_configured_kernel()
    assert kernel is not None and kernel.vmlinuz == vmlinuz


def test_a_check_alone_computes_no_digest(tmp_path: Path) -> None:
    """`create` and `cocoon check` only check (no digest, which the monitor computes)."""
    kernel = custom_kernel(fake_bzimage(tmp_path / "vmlinuz"), None, identify=False)
    assert (kernel.release, kernel.package_version) == (RELEASE, "")
