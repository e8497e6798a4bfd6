"""deploy/: the RuntimeClass and the DaemonSet are valid, agree with each other, with the
installer and with the measured pod overhead documented in docs/containerd.md."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cocoon.install import containerd

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(documents) == 1
    document: dict[str, Any] = documents[0]
    return document


def test_the_runtime_class_names_the_installers_handler_and_the_documented_overhead() -> None:
    runtime_class = load("runtimeclass.yaml")
    assert runtime_class["kind"] == "RuntimeClass"
    assert runtime_class["handler"] == containerd.HANDLER
    overhead = runtime_class["overhead"]["podFixed"]
    doc = (ROOT / "docs" / "containerd.md").read_text()
    assert f'memory: "{overhead["memory"]}"' in doc and f'cpu: "{overhead["cpu"]}"' in doc
    # the figure the CRI overhead test holds a pod to
    cri_test = (ROOT / "tests" / "integration" / "test_cri.py").read_text()
    mib = int(re.search(r"POD_OVERHEAD_MIB = (\d+)", cri_test).group(1))  # type: ignore[union-attr]
    assert overhead["memory"] == f"{mib}Mi"
    node_selector = runtime_class["scheduling"]["nodeSelector"]
    daemon_set = load("cocoon-deploy.yaml")
    assert daemon_set["spec"]["template"]["spec"]["nodeSelector"] == node_selector


def test_the_daemon_set_runs_the_script_that_installs_and_uninstalls() -> None:
    daemon_set = load("cocoon-deploy.yaml")
    assert daemon_set["kind"] == "DaemonSet"
    pod = daemon_set["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    script = container["command"][0].replace("/cocoon-src/", "")
    assert (ROOT / script).is_file() and os.access(ROOT / script, os.X_OK)
    assert container["args"] == ["install"]
    assert container["lifecycle"]["preStop"]["exec"]["command"][1:] == ["uninstall"]
    text = (ROOT / script).read_text()
    assert "cocoon\" install containerd" in text and "cocoon\" uninstall containerd" in text
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert "COPY . /cocoon-src" in containerfile
