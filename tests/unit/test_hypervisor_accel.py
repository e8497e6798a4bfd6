"""Acceleration decision without booting: env override, the probe cache, the KVM device check."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from cocoon.errors import HypervisorError, SettingsError
from cocoon.hypervisor import accel
from cocoon.hypervisor.accel import AccelDecision, ProbeKey
from cocoon.hypervisor.config import Accel

KEY = ProbeKey(host_kernel="6.18.0", qemu_version="7.2.22", guest_kernel="6.1.0-56-cloud-amd64")
NOWHERE = Path("/nonexistent/cocoon-test")


def probed(key: ProbeKey = KEY, accel_name: Accel = "tcg") -> AccelDecision:
    return AccelDecision(accel_name, "qemu64,+rdrand", "KVM probe VM did not boot within 10 s",
                         "probe", verified=True, kvm_usable=False,
                         kvm_detail="/dev/kvm opens (KVM API 12), but ...", boot_seconds=1.93,
                         key=key, probed_at=1_700_000_000.0)


@pytest.fixture(autouse=True)
def no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accel.ENV_ACCEL, raising=False)


def test_env_unset_means_probe() -> None:
    assert accel.from_env() is None


@pytest.mark.parametrize(("value", "cpu"), [("kvm", "host"), ("TCG", "qemu64,+rdrand"),
                                            (" tcg ", "qemu64,+rdrand")])
def test_env_forces(monkeypatch: pytest.MonkeyPatch, value: str, cpu: str) -> None:
    monkeypatch.setenv(accel.ENV_ACCEL, value)
    decision = accel.from_env()
    assert decision is not None
    assert decision.accel == value.strip().lower()
    assert (decision.cpu_model, decision.source, decision.verified) == (cpu, "env", False)
    assert "COCOON_ACCEL" in decision.reason


def test_env_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(accel.ENV_ACCEL, "hvf")
    with pytest.raises(SettingsError, match="COCOON_ACCEL: must be one of auto, kvm, tcg, "
                       "not 'hvf'") as info:
        accel.from_env()
    assert info.value.evidence["variable"] == "COCOON_ACCEL"


def test_env_override_skips_cache_and_probe(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv(accel.ENV_ACCEL, "kvm")
    decision = asyncio.run(accel.decide(kernel=NOWHERE, kernel_release="x",
                                        floor_initrd=NOWHERE, cache_dir=tmp_path,
                                        qemu_binary="/nonexistent/qemu"))
    assert (decision.accel, decision.source) == ("kvm", "env")
    assert list(tmp_path.iterdir()) == []


def test_cache_round_trip(tmp_path: Path) -> None:
    decision = probed()
    accel.save_cached(tmp_path, decision)
    loaded = accel.load_cached(tmp_path, KEY)
    assert loaded == dataclasses.replace(decision, source="cache")


def test_cache_is_keyed(tmp_path: Path) -> None:
    accel.save_cached(tmp_path, probed())
    for changed in (dataclasses.replace(KEY, host_kernel="6.19.0"),
                    dataclasses.replace(KEY, qemu_version="8.0.0"),
                    dataclasses.replace(KEY, guest_kernel="6.1.0-57-cloud-amd64")):
        assert accel.load_cached(tmp_path, changed) is None


def test_cache_keeps_other_keys_and_replaces_same_key(tmp_path: Path) -> None:
    other = dataclasses.replace(KEY, guest_kernel="6.1.0-57-cloud-amd64")
    accel.save_cached(tmp_path, probed())
    accel.save_cached(tmp_path, probed(other, "kvm"))
    accel.save_cached(tmp_path, dataclasses.replace(probed(), boot_seconds=2.5))
    data = json.loads((tmp_path / accel.CACHE_FILE).read_text())
    assert len(data["entries"]) == 2
    first = accel.load_cached(tmp_path, KEY)
    assert first is not None and first.boot_seconds == 2.5
    second = accel.load_cached(tmp_path, other)
    assert second is not None and second.accel == "kvm"


@pytest.mark.parametrize("content", [
    "not json", "[]", json.dumps({"version": 99, "entries": []}),
    json.dumps({"version": 1, "entries": [{"key": dataclasses.asdict(KEY), "accel": "hvf"}]}),
    json.dumps({"version": 1, "entries": [{"key": dataclasses.asdict(KEY)}]}),
])
def test_damaged_cache_means_probe_again(tmp_path: Path, content: str) -> None:
    (tmp_path / accel.CACHE_FILE).write_text(content)
    assert accel.load_cached(tmp_path, KEY) is None


def test_only_probed_decisions_are_cached(tmp_path: Path) -> None:
    with pytest.raises(HypervisorError):
        accel.save_cached(tmp_path, dataclasses.replace(probed(), key=None))


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_cached_decision_is_used_without_booting(tmp_path: Path) -> None:
    key = accel.probe_key("guest-release")
    accel.save_cached(tmp_path, probed(key, "kvm"))
    # kernel and initrd do not exist: any probe would fail, so this answer comes from the cache
    decision = asyncio.run(accel.decide(kernel=NOWHERE, kernel_release="guest-release",
                                        floor_initrd=NOWHERE, cache_dir=tmp_path))
    assert (decision.accel, decision.source) == ("kvm", "cache")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")
def test_qemu_version_is_read_from_the_binary() -> None:
    assert accel.qemu_version() == accel.probe_key("g").qemu_version
    assert accel.qemu_version()[0].isdigit()


def test_qemu_version_of_a_missing_binary() -> None:
    with pytest.raises(HypervisorError, match="cannot run"):
        accel.qemu_version("/nonexistent/qemu-system-x86_64")


def test_kvm_device_missing() -> None:
    usable, detail = accel.kvm_device(NOWHERE)
    assert not usable
    assert detail == f"{NOWHERE} does not exist"


def test_kvm_device_that_is_not_kvm() -> None:
    # /dev/null opens but knows no KVM ioctl (ENOTTY)
    usable, detail = accel.kvm_device(Path("/dev/null"))
    assert not usable
    assert "refuses KVM_GET_API_VERSION" in detail
