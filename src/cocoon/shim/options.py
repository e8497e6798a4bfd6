"""The configuration file a RuntimeClass chooses, from the runtime options containerd passes.

containerd turns a runtime's `options` table (`ConfigPath = "/etc/cocoon/fast.toml"` under
`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cocoon.options]`, or `ctr run
--runtime-config-path`) into a `runtimeoptions.v1.Options` message, as it does for Kata's
`ConfigPath`, and writes it (a protobuf `Any`) to the shim's stdin when it runs `start`. The
shim takes the path as COCOON_CONFIG for itself and its daemon, whose VMs then follow that file;
it is noted in the bundle, so that a `delete` after the daemon died reads the same file (its
socket and VM directories may be set there).

No annotation can name the file: annotations come from the pod's author, and a tenant must not
pick which host file configures its VM.
"""

from __future__ import annotations

import os
import select
import stat
import time
from pathlib import Path

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from cocoon.config import loader
from cocoon.errors import ConfigError
from cocoon.protocols.gen import runtimeoptions_pb2

OPTIONS_TYPE = "runtimeoptions.v1.Options"
BUNDLE_FILE = "cocoon-config-path"  # in a container's bundle
STDIN_TIMEOUT = 5.0


def config_path(data: bytes) -> Path | None:
    """The ConfigPath of marshalled runtime options (an `Any`); None when there is none (no
    options, or another runtime's kind). A path that is not absolute, or a ConfigBody without
    a path (not supported: the shim reads files), is refused."""
    if not data:
        return None
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(data)
    except DecodeError as err:
        raise ConfigError(f"runtime options: not a protobuf Any: {err}") from None
    if wrapper.type_url.rsplit("/", 1)[-1] != OPTIONS_TYPE:
        return None
    options = runtimeoptions_pb2.Options()
    try:
        options.ParseFromString(wrapper.value)
    except DecodeError as err:
        raise ConfigError(f"runtime options: not {OPTIONS_TYPE}: {err}") from None
    if not options.config_path:
        if options.config_body:
            raise ConfigError("runtime options: ConfigBody is not supported; give ConfigPath")
        return None
    if not options.config_path.startswith("/"):
        raise ConfigError(f"runtime options: ConfigPath {options.config_path!r} must be an "
                          "absolute path")
    return Path(options.config_path)


def read_stdin(fd: int = 0, timeout: float = STDIN_TIMEOUT) -> bytes:
    """What containerd wrote to `start`'s stdin: read to its end when stdin is a pipe or a
    file (containerd's), nothing when it is a terminal or /dev/null."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return b""
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return b""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def adopt(path: Path, bundle: Path) -> None:
    """Use `path` in this process and its children (after checking it), noted in `bundle`."""
    environ = {**os.environ, loader.ENV_CONFIG: str(path)}
    loader.load(environ)  # a bad file fails `start` in one line: file, line and key
    os.environ[loader.ENV_CONFIG] = str(path)
    tmp = bundle / f".{BUNDLE_FILE}"
    tmp.write_text(str(path))
    os.replace(tmp, bundle / BUNDLE_FILE)


def readopt(bundle: Path) -> None:
    """In `delete`: the file `start` used for this bundle's container, if it noted one."""
    try:
        path = (bundle / BUNDLE_FILE).read_text().strip()
    except OSError:
        return
    if path:
        os.environ[loader.ENV_CONFIG] = path
