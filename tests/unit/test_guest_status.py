"""`cocoon assets show`: what the cache holds and whether it is current."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cocoon.cli.main import main
from cocoon.errors import AssetError
from cocoon.guest import apt, image, status
from cocoon.guest import cache as cachemod

RELEASE = "6.1.0-99-cloud-amd64"


def _fake_cache(root: Path) -> Path:
    tree = root / "kernel" / RELEASE
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / f"vmlinuz-{RELEASE}").write_bytes(b"k" * 1000)
    cachemod.write_json_atomic(tree / "kernel.json", {
        "release": RELEASE, "package": f"linux-image-{RELEASE}", "package_version": "1-1"})
    for digest, init in (("a" * 64, image.AGENT_INIT), ("b" * 64, b"#!/test\n")):
        d = root / "images" / digest[:16]
        d.mkdir(parents=True)
        (d / "initrd.img").write_bytes(b"i" * 2000)
        cachemod.write_json_atomic(d / "manifest.json", {
            "digest": digest, "compression": "none", "kernel": {"release": RELEASE},
            "inputs": {"init": hashlib.sha256(init).hexdigest(), "extra_files": {}},
            "sizes": {"initrd": 2000, "uncompressed": 2000, "files": 3},
            "built_at": "2026-01-01T00:00:00+00:00", "build_seconds": 1.0})
    return root


def test_describe_lists_kernels_and_images_and_records_problems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_apt(*_: object) -> dict[str, apt.Package]:
        raise AssetError("apt cannot find linux-image-cloud-amd64")

    monkeypatch.setattr(apt, "resolve", no_apt)
    info = status.describe(_fake_cache(tmp_path))
    assert [k["release"] for k in info["kernels"]] == [RELEASE]
    assert info["kernels"][0]["vmlinuz_bytes"] == 1000
    variants = {i["digest"][:1]: i["variant"] for i in info["images"]}
    assert variants == {"a": "agent", "b": "custom init"}
    assert info["current_image"] is None
    assert info["problems"] == ["apt cannot find linux-image-cloud-amd64"]
    text = status.render(info)
    assert f"kernel: {RELEASE}" in text
    assert "guest image: aaaaaaaaaaaaaaaa" in text and "[stale]" in text
    assert "[test variant]" in text
    assert "none is current" in text
    assert "problem: apt cannot find" in text


def test_empty_cache_renders() -> None:
    text = status.render({"cache_dir": "/x", "kernels": [], "images": [], "current_image": None,
                          "floor_initrds": [], "busybox_rootfs": [], "problems": []})
    assert "kernel: none cached" in text and "guest image: none cached" in text


@pytest.mark.skipif(shutil.which("apt-cache") is None or not any(apt.APT_LISTS.glob("*Packages*")),
                    reason="no apt package lists on this host")
def test_cli_show_json_on_an_empty_cache(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assets", "show", "--cache", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kernels"] == [] and info["images"] == []
    assert info["current_kernel_release"].endswith("-cloud-amd64")
    assert not list((tmp_path).glob("debs/*.deb")), "show must not download anything"
