"""What the forked child decides before it execs: the program's path, the environment and
the one-line error it reports."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from cocoon.agent import launch


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, mode in (("tool", 0o755), ("data", 0o644)):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(mode)
    (directory / "subdir").mkdir(mode=0o755)
    return directory


def test_lookup_uses_the_containers_path(bin_dir: Path) -> None:
    env = ["HOME=/root", f"PATH=/nonexistent:{bin_dir}"]
    assert launch.lookup_path("tool", env, "/") == f"{bin_dir}/tool"


def test_lookup_skips_files_that_are_not_executable(bin_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'data' not found in \$PATH"):
        launch.lookup_path("data", [f"PATH={bin_dir}"], "/")


def test_lookup_of_a_path_names_it(bin_dir: Path) -> None:
    assert launch.lookup_path(f"{bin_dir}/tool", [], "/") == f"{bin_dir}/tool"
    assert launch.lookup_path("bin/tool", [], str(bin_dir.parent)) == f"{bin_dir.parent}/bin/tool"
    with pytest.raises(FileNotFoundError, match="/opt/app/server"):
        launch.lookup_path("/opt/app/server", [], "/")
    with pytest.raises(PermissionError, match="not an executable"):
        launch.lookup_path(f"{bin_dir}/subdir", [], "/")


def test_environment_later_definitions_win_and_a_path_is_added() -> None:
    plan = launch.ProcessPlan(args=["x"], env=["A=1", "NOEQUALS", "B=x=y", "A=2", "EMPTY="])
    assert launch._environment(plan) == {"A": "2", "B": "x=y", "EMPTY": "",
                                         "PATH": launch.DEFAULT_PATH}


def test_describe_gives_one_line_naming_the_path() -> None:
    err = OSError(errno.ENOENT, "mount proc on /x/proc: No such file or directory", "/x/proc")
    assert launch.describe(err) == "mount proc on /x/proc: No such file or directory"
    err = OSError(errno.EACCES, "Permission denied", "/etc/shadow")
    assert launch.describe(err) == "Permission denied: /etc/shadow"
    assert launch.describe(FileNotFoundError("executable 'x' not found")) == \
        "executable 'x' not found"


def test_describe_an_unexpected_error_says_where() -> None:
    try:
        raise KeyError("missing")
    except KeyError as err:
        text = launch.describe(err)
    assert text.startswith("internal error KeyError: 'missing' (at ")
    assert "test_agent_launch.py" in text
    assert "\n" not in text


def test_rlimit_names_cover_runcs() -> None:
    assert set(launch.RLIMITS) >= {"RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE",
                                   "RLIMIT_MEMLOCK", "RLIMIT_RTTIME", "RLIMIT_LOCKS"}
    assert launch.RLIMITS["RLIMIT_LOCKS"] == 10
