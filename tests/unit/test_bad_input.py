"""Broken config.json files and command lines: each is refused with one line, leaves nothing,
and never shows a traceback.

The corpus: the classics (missing fields, wrong types, huge values, paths that climb out,
duplicates, unknown namespaces, files that are not files) and seeded mutations of a valid
config. Most go through the checks `create` runs before a VM starts (load_bundle, guestspec.check,
joins.resolve); a sample goes through `cocoon create` itself.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cocoon.errors import CocoonError
from cocoon.oci.bundle import load_bundle
from cocoon.oci.default import default_spec
from cocoon.oci.state import StateStore
from cocoon.runtime import guestspec, joins
from tests.framework.cli import Cli

Edit = Callable[[dict[str, Any]], None]


def _mount(**fields: Any) -> dict[str, Any]:
    return {"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind"],
            **fields}


# each refused before a VM starts
CLASSICS: dict[str, Edit] = {
    "no ociVersion": lambda s: s.pop("ociVersion"),
    "no root": lambda s: s.pop("root"),
    "root.path missing": lambda s: s["root"].update(path="no-such-dir"),
    "root.path a number": lambda s: s["root"].update(path=7),
    "process a list": lambda s: s.update(process=[]),
    "args empty": lambda s: s["process"].update(args=[]),
    "uid huge": lambda s: s["process"]["user"].update(uid=2**40),
    "uid negative": lambda s: s["process"]["user"].update(uid=-1),
    "cwd relative": lambda s: s["process"].update(cwd="../../.."),
    "rlimit unknown": lambda s: s["process"].update(
        rlimits=[{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]),
    "hostname huge": lambda s: s.update(hostname="h" * 100_000),
    "memory limit a string": lambda s: s["linux"].update(resources={"memory": {"limit": "1G"}}),
    "integer beyond 64 bits": lambda s: s["linux"].update(resources={"pids": {"limit": 2**70}}),
    "mount source relative, climbing": lambda s: s["mounts"].append(_mount(source="../../etc")),
    "mount source missing": lambda s: s["mounts"].append(_mount(source="/no/such/dir")),
    "mount without destination": lambda s: s["mounts"].append({"type": "tmpfs"}),
    "unknown namespace": lambda s: s["linux"]["namespaces"].append({"type": "bogus"}),
    "duplicate namespace": lambda s: s["linux"]["namespaces"].append({"type": "pid"}),
    "namespace path missing": lambda s: s["linux"]["namespaces"].__setitem__(
        0, {"type": "pid", "path": "/no/such/ns"}),
    "namespace path of another kind": lambda s: s["linux"]["namespaces"].__setitem__(
        0, {"type": "pid", "path": "/proc/self/ns/net"}),
    "createContainer hook": lambda s: s.update(hooks={"createContainer": [{"path": "/bin/true"}]}),
}

# raw file contents, or None for "config.json is something else than a file"
RAW: dict[str, bytes] = {
    "empty": b"", "not JSON": b"{", "a list": b"[]", "null": b"null", "NaN": b'{"x": NaN}',
    "not UTF-8": b'{"ociVersion": "\xff"}', "deep": b"[" * 100_000,
    "huge number": b'{"ociVersion": ' + b"9" * 5000 + b"}",
}

VALUES: list[Any] = [None, True, 0, -1, 2**31, 2**63, 2**64, 0.5, "", "../../..", "/",
                     "a\x00b", [], [None], {}, {"type": "pid"}, "9" * 300]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    items = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def base_spec() -> dict[str, Any]:
    spec = default_spec()
    spec["mounts"].append(_mount(destination="/data", options=["rbind", "ro"]))
    spec["linux"]["resources"] = {"memory": {"limit": 1 << 28}, "pids": {"limit": 100}}
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    return spec


def mutations(seed: int, count: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    base = base_spec()
    for _ in range(count):
        spec = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(list(_paths(spec)))
            parent = spec
            for key in path[:-1]:
                parent = parent[key]
            if rng.random() < 0.3:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        yield spec


def _checked(bundle: Path, store: StateStore) -> str | None:
    """None when create's host-side checks pass; else the error's text."""
    try:
        loaded = load_bundle(bundle)
        guestspec.check(loaded.spec, loaded.rootfs)
        joins.resolve(store, loaded.spec)
    except CocoonError as err:
        return str(err)
    return None


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def write(bundle: Path, spec: dict[str, Any] | bytes) -> None:
    data = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    (bundle / "config.json").write_bytes(data)


def test_the_base_config_passes(bundle: Path) -> None:
    write(bundle, base_spec())
    assert _checked(bundle, StateStore(bundle / "state")) is None


@pytest.mark.parametrize("name", sorted(CLASSICS))
def test_a_classic_broken_config_is_refused_in_one_line(bundle: Path, name: str) -> None:
    spec = base_spec()
    CLASSICS[name](spec)
    write(bundle, spec)
    error = _checked(bundle, StateStore(bundle / "state"))
    assert error is not None and "\n" not in error and len(error) < 2000


@pytest.mark.parametrize("name", sorted(RAW))
def test_a_config_that_is_not_a_config_is_refused_in_one_line(bundle: Path, name: str) -> None:
    write(bundle, RAW[name])
    error = _checked(bundle, StateStore(bundle / "state"))
    assert error is not None and "\n" not in error


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "directory"])
def test_a_config_that_is_not_a_file_is_refused_without_reading_it(bundle: Path,
                                                                    target: str) -> None:
    # regression: /dev/zero was read until memory ran out, and a FIFO blocked forever
    config = bundle / "config.json"
    if target == "fifo":
        os.mkfifo(config)
    elif target == "directory":
        config.mkdir()
    else:
        config.symlink_to(target)
    error = _checked(bundle, StateStore(bundle / "state"))
    assert error is not None and ("not a regular file" in error or "cannot read" in error)


def test_mutated_configs_pass_or_are_refused_in_one_line(bundle: Path) -> None:
    store = StateStore(bundle / "state")
    refused = 0
    for spec in mutations(seed=12, count=400):
        write(bundle, spec)
        error = _checked(bundle, store)  # anything but a CocoonError fails the test here
        if error is not None:
            refused += 1
            assert "\n" not in error, error
    assert refused > 200
    assert not (bundle / "state").exists() or not any((bundle / "state").iterdir())


CLI_SAMPLE = ["no root", "uid huge", "mount source missing", "unknown namespace",
              "namespace path of another kind", "hostname huge"]


def test_cocoon_create_refuses_broken_bundles_leaving_nothing(state_root: Path,
                                                             bundle: Path) -> None:
    cli = Cli(state_root, timeout=60)
    cases: list[dict[str, Any] | bytes] = [RAW["not JSON"], RAW["deep"]]
    for name in CLI_SAMPLE:
        spec = base_spec()
        CLASSICS[name](spec)
        cases.append(spec)
    for index, case in enumerate(cases):
        write(bundle, case)
        result = cli("create", "--bundle", str(bundle), f"bad{index}")
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli.ok("list", "--quiet").strip() == ""


BAD_ARGS = [
    ["create"], ["create", "../x"], ["create", "a/b"], ["create", ""], ["create", "x" * 1000],
    ["create", "--bundle", "/no/such/dir", "x"], ["create", "--bundle", "/etc", "x"],
    ["create", "--pid-file", "/no/such/dir/pid", "--bundle", "/etc", "x"],
    ["kill", "x", "SIGFOO"], ["kill", "x", "99999"], ["kill", "x", "-9"], ["kill"],
    ["update", "--memory", "abc", "x"], ["events", "--interval", "-1", "x"],
    ["list", "--format", "xml"], ["--log-format", "yaml", "state", "x"], ["frobnicate"],
    ["pause", "x", "y"], ["spec", "--bundle", "/no/such/dir"], ["state", "no-such"],
    ["delete", "no-such"], ["exec", "--cwd", "rel", "no-such", "ls"],
    ["assets", "frob"],
]


def test_bad_command_lines_get_one_line(state_root: Path) -> None:
    cli = Cli(state_root, timeout=60)
    for args in BAD_ARGS:
        result = cli(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert not any(state_root.iterdir())
