"""The shim's command line, as containerd writes it (Go `flag` syntax).

containerd runs `containerd-shim-cocoon-v2 -namespace NS -address ADDR -publish-binary BIN
-id ID [-debug] [-bundle DIR] start|delete`. Go's flag package accepts `-name value`,
`-name=value` and the same with two dashes, so this parser does too; the first argument that is
not a flag is the action and parsing stops there.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocoon.errors import ConfigError

VALUE_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket"}
BOOL_FLAGS = {"debug", "v"}
TRUE = {"1", "t", "T", "TRUE", "true", "True"}
FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True)
class ShimFlags:
    namespace: str = ""
    address: str = ""
    publish_binary: str = ""
    id: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    action: str = ""


def _bool(name: str, value: str) -> bool:
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"invalid boolean value {value!r} for flag -{name}", flag=name)


def parse_flags(argv: list[str]) -> ShimFlags:
    """Parse `argv` (without the program name) like Go's flag.Parse; ConfigError on a bad flag."""
    values: dict[str, str] = {}
    switches: dict[str, bool] = {}
    action = ""
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            action = argv[i] if i < len(argv) else ""
            break
        if not arg.startswith("-") or arg == "-":
            action = arg
            break
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            switches[name] = _bool(name, value) if has_value else True
        elif name in VALUE_FLAGS:
            if not has_value:
                if i >= len(argv):
                    raise ConfigError(f"flag needs an argument: -{name}", flag=name)
                value = argv[i]
                i += 1
            values[name] = value
        else:
            raise ConfigError(f"flag provided but not defined: -{name}", flag=name)
    return ShimFlags(
        namespace=values.get("namespace", ""), address=values.get("address", ""),
        publish_binary=values.get("publish-binary", ""), id=values.get("id", ""),
        bundle=values.get("bundle", ""), socket=values.get("socket", ""),
        debug=switches.get("debug", False), version=switches.get("v", False), action=action)
