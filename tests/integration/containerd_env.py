"""A private containerd for the shim's tests: own root, state, socket and config, and images.

Each `Containerd` lives in one short directory under /tmp (unix socket paths are limited to 107
bytes): `root/`, `state/`, `c.sock` (and `c.sock.ttrpc`), `config.toml`, `cni/`, plus the
shim's socket directory `s/` and the VM directory `vm/` (COCOON_SHIM_SOCKET_DIR and
COCOON_VM_DIR in containerd's environment, which its shims inherit), so a leak check can tell
this containerd's shims, VMs and mounts from anyone else's. Images are built locally (busybox
from the guest assets) and loaded with `ctr image import`: no registry is reachable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cocoon.guest import assets
from cocoon.guest.oci_archive import build_blobs
from cocoon.linux import syscalls as sc
from tests.framework.leaks import LeakCheck, LeakReport, mounts_under

BUSYBOX = "localhost/cocoon-busybox:latest"
PAUSE = "localhost/cocoon-pause:latest"
RUNTIME = "io.containerd.cocoon.v2"
HANDLER = "cocoon"
PAUSE_CMD = ["sleep", "2147483647"]
SHIM_BIN = Path(sys.executable).parent / "containerd-shim-cocoon-v2"

CONFIG = """version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{sock}"

[debug]
  level = "debug"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
      runtime_type = "{runtime}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"""


def write_image(dest: Path, ref: str, cmd: list[str] | None = None) -> Path:
    """An oci-archive of the busybox rootfs named `ref`, with `cmd` as its command."""
    if cmd is None:
        return assets.write_busybox_oci_archive(dest, ref)
    blobs, index = build_blobs(assets.ensure_busybox_rootfs(), ref)
    index_doc = json.loads(index)
    manifest = json.loads(blobs[index_doc["manifests"][0]["digest"]])
    config_doc = json.loads(blobs[manifest["config"]["digest"]])
    config_doc["config"]["Cmd"] = cmd
    config = _canonical(config_doc)
    manifest["config"].update(digest=_sha(config), size=len(config))
    manifest_blob = _canonical(manifest)
    index_doc["manifests"][0].update(digest=_sha(manifest_blob), size=len(manifest_blob))
    layer_digest = manifest["layers"][0]["digest"]
    files = {"index.json": _canonical(index_doc),
             "oci-layout": _canonical({"imageLayoutVersion": "1.0.0"})}
    for blob in (blobs[layer_digest], config, manifest_blob):
        files[f"blobs/sha256/{_sha(blob).split(':')[1]}"] = blob
    with tarfile.open(dest, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def _canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Containerd:
    """One private containerd; `stop()` kills it, `close()` also removes everything it left."""

    def __init__(self, base: Path | None = None, extra_env: dict[str, str] | None = None
                 ) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        self.extra_env = dict(extra_env or {})
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.socket = self.base / "c.sock"
        self.socket_dir = self.base / "s"
        self.vm_dir = self.base / "vm"
        self.log_path = self.base / "containerd.log"
        self.config = self.base / "config.toml"
        self.proc: subprocess.Popen[bytes] | None = None
        for d in (self.root, self.state, self.socket_dir, self.vm_dir, self.base / "cni"):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG.format(
            root=self.root, state=self.state, sock=self.socket, pause=PAUSE, handler=HANDLER,
            runtime=RUNTIME, cni=self.base / "cni"))

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{SHIM_BIN.parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env["COCOON_SHIM_SOCKET_DIR"] = str(self.socket_dir)
        env["COCOON_VM_DIR"] = str(self.vm_dir)
        env["COCOON_SHIM_LOG"] = str(self.base / "shim.log")
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(["containerd", "--config", str(self.config)], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {self.log_tail()}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not answer in {timeout} s: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def ctr_argv(self, *args: str, namespace: str = "default") -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", namespace, *args]

    def ctr(self, *args: str, namespace: str = "default", timeout: float = 180.0,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.ctr_argv(*args, namespace=namespace), capture_output=True,
                                text=True, timeout=timeout, env=self.env, input=input,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stdout}{result.stderr}\n--- containerd:\n"
                                 f"{self.log_tail()}")
        return result

    def write_bridge_network(self, bridge: str, subnet: str) -> None:
        """A CNI network for pods of their own network namespace: a veth per pod on `bridge`
        (made by the plugin), addresses from `subnet`, kept under this containerd's directory.
        No gateway and no masquerade: the host gets no address, route or firewall rule. Write
        it before `start`: containerd reads its CNI configuration when it starts."""
        conflist = {"cniVersion": "0.4.0", "name": "cocoon-test", "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                     "dataDir": str(self.base / "ipam")}}]}
        (self.base / "cni" / "10-cocoon-test.conflist").write_text(json.dumps(conflist))

    def import_image(self, archive: Path, namespace: str = "default") -> None:
        self.ctr("image", "import", str(archive), namespace=namespace)

    def checked(self) -> Iterator[LeakCheck]:
        """A leak check around one test (a fixture yields from this)."""
        check = self.leak_check()
        yield check
        report = check.check()
        assert not report, f"left behind: {report}"

    def leak_check(self) -> LeakCheck:
        return LeakCheck(private=[self.vm_dir, self.socket_dir])

    def close(self) -> LeakReport:
        """Kill containerd, report what the shims left, and remove every trace."""
        self.stop()
        report = self.leak_check_after()
        for target in mounts_under([self.base]):
            with contextlib.suppress(OSError):
                sc.umount2(target, sc.MNT_DETACH)
        shutil.rmtree(self.base, ignore_errors=True)
        return report

    def leak_check_after(self) -> LeakReport:
        check = LeakCheck(private=[self.vm_dir, self.socket_dir])
        check._baseline_procs = set()  # everything tied to our dirs counts, old or new
        return check.check(settle=15.0)


def busybox_containerd() -> Iterator[Containerd]:
    """A started private containerd with the busybox image, for a module (a fixture yields
    from this); everything it left is reported when it closes."""
    c = Containerd()
    c.start()
    c.import_image(write_image(c.base / "busybox.tar", BUSYBOX))
    yield c
    report = c.close()
    assert not report, f"left behind at teardown: {report}"
