"""The installer's round trip on a private containerd: install, a pod runs in a VM through CRI
with the new handler, uninstall, and the configuration is back byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.containerd_env import (
    BUSYBOX,
    HANDLER,
    PAUSE,
    PAUSE_CMD,
    RUNTIME,
    Containerd,
    write_image,
)
from tests.integration.cri_client import CRIClient, container_config, host_network_pod

pytestmark = [pytest.mark.integration, pytest.mark.vm,
              pytest.mark.skipif(shutil.which("containerd") is None,
                                 reason="containerd is not installed")]

COCOON = str(Path(sys.executable).with_name("cocoon"))
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@pytest.fixture
def leak_check() -> None:
    """This containerd's shims keep everything in its own directories, checked by close()."""


def cocoon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COCOON, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_install_run_a_pod_uninstall(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    ctrd = Containerd(extra_env={"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:"
                                         "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        # the test's containerd config, less the handler the installer is to add
        handler_table = (f'    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.'
                         f'{HANDLER}]\n      runtime_type = "{RUNTIME}"\n')
        original = ctrd.config.read_text()
        assert handler_table in original
        original = original.replace(handler_table, "")
        ctrd.config.write_text(original)

        installed = cocoon("install", "containerd", "--config", str(ctrd.config),
                           "--bin-dir", str(bin_dir))
        assert installed.returncode == 0, installed.stderr
        assert "added" in installed.stdout and (bin_dir / "containerd-shim-cocoon-v2").exists()
        again = cocoon("install", "containerd", "--config", str(ctrd.config),
                       "--bin-dir", str(bin_dir))
        assert again.returncode == 0 and "already installed" in again.stdout

        ctrd.start()
        ctrd.import_image(write_image(ctrd.base / "busybox.tar", BUSYBOX), namespace="k8s.io")
        ctrd.import_image(write_image(ctrd.base / "pause.tar", PAUSE, PAUSE_CMD),
                          namespace="k8s.io")
        client = CRIClient(ctrd.socket)
        logs = ctrd.base / "pod-logs"
        logs.mkdir()
        pod = host_network_pod("installed", "uid-installed-1", logs)
        try:
            pod_id = client.run_pod(pod, HANDLER)
            app = client.create_container(pod_id, container_config(
                "app", BUSYBOX, ["sleep", "1000"], pod), pod)
            client.start_container(app)
            result = client.exec_sync(app, ["cat", BOOT_ID])
            assert result.exit_code == 0
            assert result.stdout.decode().strip() != Path(BOOT_ID).read_text().strip(), \
                "the pod is not in a guest"
            client.stop_pod(pod_id)
            client.remove_pod(pod_id)
        finally:
            client.close()
        ctrd.stop()

        removed = cocoon("uninstall", "containerd", "--config", str(ctrd.config),
                         "--bin-dir", str(bin_dir))
        assert removed.returncode == 0, removed.stderr
        assert ctrd.config.read_text() == original
        assert not (bin_dir / "containerd-shim-cocoon-v2").exists()
        assert not list(ctrd.config.parent.glob("*.cocoon-backup"))
    finally:
        report = ctrd.close()
    assert not report, f"left behind: {report}"


def test_a_config_it_cannot_merge_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("version = 2\n[plugins\n")
    result = cocoon("install", "containerd", "--config", str(config), "--no-link")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{config}:2:" in lines[0], result.stderr
    assert config.read_text() == "version = 2\n[plugins\n"
