"""OCI hooks that run on the host, with the container's state JSON on stdin.

prestart and createRuntime run after the VM and the container exist and before `create`
returns; poststart after `start`; poststop after `delete`. A failing prestart or createRuntime
hook fails the operation (its error names the hook); a failing poststart or poststop hook is
logged, as the runtime spec asks.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterable
from typing import Any

from cocoon.errors import ConfigError
from cocoon.oci.spec import Hook

logger = logging.getLogger("cocoon.runtime.hooks")

DEFAULT_TIMEOUT = 60.0


def run_hooks(kind: str, hooks: Iterable[Hook], state: dict[str, Any], *,
              fatal: bool = True) -> None:
    payload = json.dumps(state).encode()
    for index, hook in enumerate(hooks):
        args = list(hook.args) or [hook.path]
        env = dict(item.split("=", 1) for item in hook.env if "=" in item)
        timeout = float(hook.timeout) if hook.timeout else DEFAULT_TIMEOUT
        where = f"hooks.{kind}[{index}] ({hook.path})"
        try:
            result = subprocess.run(args, executable=hook.path, input=payload, env=env,
                                    capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            message = f"{where}: {err}"
            if fatal:
                raise ConfigError(message, hook=hook.path) from err
            logger.warning("%s", message)
            continue
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).decode(errors="replace").strip()
            message = f"{where} exited {result.returncode}" + (f": {detail[-300:]}"
                                                              if detail else "")
            if fatal:
                raise ConfigError(message, hook=hook.path)
            logger.warning("%s", message)
