"""Package resolution: parsing apt records, reusing a resolution only for the same apt state."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from cocoon.errors import AssetError
from cocoon.guest import apt

RECORD = """\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 and modules for use on cloud platforms.
SHA256: 0123
Size: 1504
"""


def test_record_parsing_keeps_continuations() -> None:
    fields = apt._parse_record(RECORD)
    assert fields["Version"] == "6.1.192-2"
    assert fields["Description"].endswith("cloud platforms.")
    assert fields["Size"] == "1504"


def test_pinned_dependency_of_the_kernel_metapackage() -> None:
    meta = apt.Package("linux-image-cloud-amd64", "6.1.192-2", "amd64", "0", 1,
                       depends=apt._parse_record(RECORD)["Depends"])
    assert apt.pinned_dependency(meta, "linux-image-") == (
        "linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")
    with pytest.raises(AssetError, match="no pinned dependency"):
        apt.pinned_dependency(meta, "linux-headers-")


def test_deb_name_escapes_the_epoch() -> None:
    pkg = apt.Package("busybox-static", "1:1.35.0-4+deb12u1+b1", "amd64", "0", 1)
    assert pkg.deb_name == "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Sequence[str]]:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("1")
    monkeypatch.setattr(apt, "APT_LISTS", lists)
    monkeypatch.setattr(apt, "APT_ETC", tmp_path / "etc-apt")
    calls: list[Sequence[str]] = []

    def show(names: Sequence[str]) -> dict[str, apt.Package]:
        calls.append(list(names))
        return {n: apt.Package(n, "1.0", "amd64", "f" * 64, 10) for n in names}

    monkeypatch.setattr(apt, "_apt_cache_show", show)
    return calls


def test_resolution_is_reused_until_the_apt_state_changes(
        fake_apt: list[Sequence[str]], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert apt.lookup(cache, "guest", ["a", "b"]) is None
    first = apt.resolve(cache, "guest", ["a", "b"])
    assert apt.resolve(cache, "guest", ["a", "b"]) == first
    assert apt.lookup(cache, "guest", ["b", "a"]) == first
    assert len(fake_apt) == 1
    assert apt.lookup(cache, "guest", ["a", "b", "c"]) is None  # another package set
    listing = next(apt.APT_LISTS.iterdir())
    os.utime(listing, ns=(1, 1))  # what apt-get update does to the lists
    assert apt.lookup(cache, "guest", ["a", "b"]) is None
    apt.resolve(cache, "guest", ["a", "b"])
    assert len(fake_apt) == 2


def test_fetch_uses_cached_debs_without_apt(tmp_path: Path) -> None:
    pkg = apt.Package("zlib1g", "1:1.2.13.dfsg-1", "amd64", "0", 1)
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / pkg.deb_name).write_bytes(b"deb")
    assert apt.fetch(tmp_path, [pkg]) == {"zlib1g": tmp_path / "debs" / pkg.deb_name}


def _apt_usable() -> bool:
    lists = [p for p in apt.APT_LISTS.glob("*Packages*")] if apt.APT_LISTS.is_dir() else []
    return shutil.which("apt-cache") is not None and bool(lists)


@pytest.mark.skipif(not _apt_usable(), reason="no apt package lists on this host")
def test_real_apt_cache_resolves_and_names_missing_packages() -> None:
    found = apt._apt_cache_show(["busybox-static"])
    pkg = found["busybox-static"]
    assert pkg.arch == "amd64" and len(pkg.sha256) == 64 and pkg.size > 100_000
    with pytest.raises(AssetError, match="no-such-package-cocoon") as info:
        apt._apt_cache_show(["busybox-static", "no-such-package-cocoon"])
    assert info.value.evidence["missing"] == ["no-such-package-cocoon"]
