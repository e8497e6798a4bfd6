"""The shim's Go-style command line, as containerd writes it."""

from __future__ import annotations

import pytest

from cocoon.errors import ConfigError
from cocoon.shim.flags import ShimFlags, parse_flags


def test_containerd_start_command_line() -> None:
    flags = parse_flags(["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
                         "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug",
                         "start"])
    assert flags == ShimFlags(namespace="k8s.io", address="/run/containerd/containerd.sock",
                              publish_binary="/usr/bin/containerd", id="abc", debug=True,
                              action="start")


def test_delete_with_bundle_and_equals_and_double_dash_forms() -> None:
    flags = parse_flags(["--namespace=default", "-id=c1", "--bundle", "/b", "delete"])
    assert (flags.namespace, flags.id, flags.bundle, flags.action) == ("default", "c1", "/b",
                                                                       "delete")


def test_version_and_boolean_values() -> None:
    assert parse_flags(["-v"]).version
    assert not parse_flags(["-debug=false", "start"]).debug
    with pytest.raises(ConfigError, match="invalid boolean"):
        parse_flags(["-debug=maybe"])


def test_parsing_stops_at_the_action() -> None:
    flags = parse_flags(["-id", "x", "start", "-namespace", "ignored"])
    assert (flags.action, flags.namespace) == ("start", "")


@pytest.mark.parametrize("argv, message", [
    (["-bogus", "start"], "not defined: -bogus"),
    (["-id"], "needs an argument: -id"),
])
def test_bad_flags_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_flags(argv)
