"""Templates on disk: whole or refused with the reason, superseded ones pruned, the policy."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import ConfigError, TemplateError
from cocoon.template import policy, store
from cocoon.template.spec import TemplateSpec


def spec(tmp_path: Path, **changes: object) -> TemplateSpec:
    initrd = tmp_path / "initrd.img"
    initrd.touch()
    base = TemplateSpec(kernel="/k/vmlinuz", kernel_id="6.1.0-57-cloud-amd64 6.1.192-3",
                        initrd=str(initrd), image_digest="a" * 64, memory_mib=64, vcpus=1,
                        machine="q35", accel="tcg", cpu_model="qemu64,+rdrand",
                        kernel_args=(), qemu_version="7.2.22", tb_size_mib=32)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def make(cache: Path, wanted: TemplateSpec, state: bytes = b"device state") -> Path:
    """A template directory as `build` leaves it (without booting anything)."""
    path = store.template_dir(cache, wanted)
    path.mkdir(parents=True)
    with (path / store.RAM).open("wb") as f:
        f.truncate(wanted.memory_mib << 20)
    (path / store.STATE).write_bytes(state)
    meta = {"digest": wanted.digest, "spec": wanted.to_json(), "state_bytes": len(state),
            "state_sha256": hashlib.sha256(state).hexdigest()}
    (path / store.META).write_text(json.dumps(meta))
    return path


@pytest.fixture(autouse=True)
def no_env_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store.ENV_DIR, raising=False)


def test_the_name_follows_every_input_but_the_paths(tmp_path: Path) -> None:
    base = spec(tmp_path)
    assert dataclasses.replace(base, kernel="/elsewhere/vmlinuz").digest == base.digest
    changes: list[dict[str, Any]] = [
        {"image_digest": "b" * 64}, {"memory_mib": 128}, {"vcpus": 2}, {"accel": "kvm"},
        {"kernel_args": ("x=1",)}, {"qemu_version": "8.0"}, {"kernel_id": "other"},
        {"hotplug_ports": 2}, {"stdio_ports": 0}]
    for change in changes:
        assert dataclasses.replace(base, **change).name != base.name, change


def test_a_whole_template_is_found(tmp_path: Path) -> None:
    wanted = spec(tmp_path)
    make(tmp_path, wanted)
    found = store.find(tmp_path, wanted)
    assert found is not None and found.spec == wanted
    assert store.find(tmp_path, spec(tmp_path, memory_mib=128)) is None


@pytest.mark.parametrize(("damage", "words"), [
    (lambda p: os.truncate(p / store.RAM, 4096), "RAM file holds 4096 bytes"),
    (lambda p: (p / store.RAM).unlink(), "ram is missing"),
    (lambda p: (p / store.STATE).unlink(), "state is missing"),
    (lambda p: (p / store.STATE).write_bytes(b"device statX"), "not the one saved"),
    (lambda p: (p / store.STATE).write_bytes(b"short"), "holds 5 bytes"),
    (lambda p: (p / store.META).write_text("{"), "unreadable"),
    (lambda p: (p / store.META).unlink(), "is missing"),
])
def test_a_damaged_template_is_refused_with_the_reason(tmp_path: Path, damage: object,
                                                       words: str) -> None:
    wanted = spec(tmp_path)
    path = make(tmp_path, wanted)
    damage(path)  # type: ignore[operator]
    with pytest.raises(TemplateError, match=words):
        store.find(tmp_path, wanted)


def test_a_template_of_other_inputs_is_stale(tmp_path: Path) -> None:
    old, new = spec(tmp_path), spec(tmp_path, image_digest="b" * 64)
    make(tmp_path, old)
    (tmp_path / store.TEMPLATES / old.name).rename(tmp_path / store.TEMPLATES / new.name)
    with pytest.raises(TemplateError, match="stale"):
        store.find(tmp_path, new)


def test_superseded_templates_are_pruned_but_other_shapes_kept(tmp_path: Path) -> None:
    current = spec(tmp_path)
    old = spec(tmp_path, image_digest="b" * 64)
    recent = spec(tmp_path, image_digest="c" * 64)
    other_size = spec(tmp_path, image_digest="d" * 64, memory_mib=128)
    for each in (current, old, recent, other_size):
        make(tmp_path, each)
    long_ago = time.time() - 2 * store.UNUSED_FOR
    os.utime(store.template_dir(tmp_path, old) / store.META, (long_ago, long_ago))
    os.utime(store.template_dir(tmp_path, other_size) / store.META, (long_ago, long_ago))
    assert store.prune(tmp_path, current) == [old.name]
    left = {p.name for p, _ in store.listing(tmp_path)}
    assert left == {current.name, recent.name, other_size.name}


def test_a_template_whose_image_is_gone_is_pruned_at_once(tmp_path: Path) -> None:
    current = spec(tmp_path)
    gone_image = tmp_path / "gone" / "initrd.img"
    gone = spec(tmp_path, image_digest="b" * 64, initrd=str(gone_image))
    make(tmp_path, current)
    make(tmp_path, gone)
    assert store.prune(tmp_path, current) == [gone.name]


def test_the_directory_can_be_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.ENV_DIR, str(tmp_path / "mine"))
    assert store.template_dir(tmp_path, spec(tmp_path)).parent == tmp_path / "mine"


@pytest.mark.parametrize(("env", "accel", "memory", "use", "build"), [
    ({}, "tcg", 256, True, True),
    ({}, "kvm", 256, False, False),
    ({"COCOON_TEMPLATES": "on"}, "kvm", 256, True, True),
    ({"COCOON_TEMPLATES": "off"}, "tcg", 256, False, False),
    ({}, "tcg", 1152, True, False),
    ({"COCOON_TEMPLATE_MEMORY": "256,1152"}, "tcg", 1152, True, True),
])
def test_policy(env: dict[str, str], accel: str, memory: int, use: bool, build: bool) -> None:
    choice = policy.decide(accel=accel, memory_mib=memory, default_mib=256, environ=env)
    assert (choice.use, choice.build) == (use, build), choice.reason


def test_custom_initrds_are_templated_only_when_asked_and_known() -> None:
    assert not policy.decide(accel="tcg", memory_mib=256, default_mib=256,
                             custom_initrd=True, environ={}).use
    assert policy.decide(accel="tcg", memory_mib=256, default_mib=256, custom_initrd=True,
                         environ={"COCOON_TEMPLATES": "on"}).use
    assert not policy.decide(accel="tcg", memory_mib=256, default_mib=256, custom_initrd=True,
                             known_image=False, environ={"COCOON_TEMPLATES": "on"}).use


def test_only_q35_vms_are_templated(tmp_path: Path) -> None:
    """hypervisor.machine other than q35 boots cold: a template is a q35 VM."""
    choice = policy.decide(accel="tcg", memory_mib=256, default_mib=256, machine="microvm",
                           environ={"COCOON_TEMPLATES": "on"})
    assert (choice.use, choice.build) == (False, False)
    assert "microvm" in choice.reason
    config = tmp_path / "config.toml"
    config.write_text('[templates]\nmode = "off"\nmemory_mib = [512]\n')
    assert policy.mode({"COCOON_CONFIG": str(config)}) == "off"
    assert policy.auto_sizes(256, {"COCOON_CONFIG": str(config)}) == frozenset({512})


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="COCOON_TEMPLATES"):
        policy.mode({"COCOON_TEMPLATES": "maybe"})
    with pytest.raises(ConfigError, match="COCOON_TEMPLATE_MEMORY"):
        policy.auto_sizes(256, {"COCOON_TEMPLATE_MEMORY": "big"})


def test_stale_builds_go_unless_their_template_is_being_built(tmp_path: Path) -> None:
    """A build killed for good leaves `.tmp-<name>-<pid>`: the next build of any template
    removes it, unless that template's lock is held (a build of it runs now)."""
    base = store.templates_dir(tmp_path)
    base.mkdir(parents=True)
    for name in ("mine", "dead", "busy"):
        (base / f"{store.TMP_PREFIX}{name}-123").mkdir()
        store.lock_path(tmp_path, name).touch()
    (base / f"{store.TMP_PREFIX}foreign-9").mkdir()  # no lock file: not a build of ours
    holder = os.open(store.lock_path(tmp_path, "busy"), os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        store.remove_stale_builds(tmp_path, "mine")
    finally:
        os.close(holder)
    assert sorted(p.name for p in base.glob(f"{store.TMP_PREFIX}*")) == [
        f"{store.TMP_PREFIX}busy-123", f"{store.TMP_PREFIX}foreign-9"]
