"""What the debug console's two ends agree on (the guest's `cocoon.agent.debugconsole` and the
host's `cocoon.sandbox.debugconsole`): the port's name and the end-of-session mark."""

from __future__ import annotations

PORT_NAME = "cocoon.debug"
# sent by the guest when its shell exited: an OSC sequence, which terminals ignore
END = b"\x1b]cocoon-debug-console;end\x07"
