"""`cocoon debug-console`: a shell in the guest outside the container, over a port of its own,
only when the configuration enabled it, every session logged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.framework.cli import Cli
from tests.integration.ptydriver import PtySession
from tests.vm.container_kit import make_bundle

pytestmark = [pytest.mark.vm]

COCOON = str(Path(sys.executable).parent / "cocoon")


def test_a_shell_in_the_guest_through_a_pty(tmp_path: Path, state_root: Path, vm_root: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[agent]\ndebug_console = true\n")
    monkeypatch.setenv("COCOON_CONFIG", str(config))
    cli = Cli(state_root)
    cli.ok("run", "--detach", "--bundle",
           str(make_bundle(tmp_path / "b", ["sh", "-c", "hostname inside; exec sleep 600"])),
           "dbg1")
    try:
        session = PtySession([COCOON, "--root", str(state_root), "debug-console", "dbg1"],
                             env=dict(os.environ))
        try:
            session.expect("cocoon-guest#")
            session.send("echo $((6*7))-answer\r")
            session.expect("42-answer")
            # outside the container: the guest's own root, where the agent keeps its files,
            # and the container's sleep seen from its parent pid namespace
            session.send("ps -o args | grep -ac 'sleep 60[0]'; tr '\\0' ' ' </proc/1/cmdline;"
                         " echo; echo done-$((1+1))\r")
            out = session.expect("done-2", timeout=30)
            session.send("exit\r")
            assert session.wait(timeout=30) == 0, session.output[-500:]
        finally:
            session.close()
        # the container's process is seen from outside its pid namespace, and PID 1 is the agent
        after = out.split("42-answer", 1)[1]
        assert "\r\n1\r\n" in after and "python3" in after and "/init" in after, after
        logs = list(vm_root.glob("*/debug-console.log"))
        assert len(logs) == 1
        record = logs[0].read_text()
        assert "session opened" in record and "session closed (shell exited" in record, record
    finally:
        cli("delete", "--force", "dbg1")


def test_off_by_default_with_a_one_line_error(tmp_path: Path, state_root: Path,
                                             vm_root: Path) -> None:
    cli = Cli(state_root)
    cli.ok("run", "--detach", "--bundle", str(make_bundle(tmp_path / "b", ["sleep", "600"])),
           "dbg2")
    try:
        result = cli("debug-console", "dbg2", timeout=30)
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "debug console is off" in result.stderr
        assert not list(vm_root.glob("*/debug-console.log"))
        unknown = cli("debug-console", "nosuch", timeout=30)
        assert unknown.returncode != 0 and "nosuch" in unknown.stderr
    finally:
        cli("delete", "--force", "dbg2")
