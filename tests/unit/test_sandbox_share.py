"""The share's host-side propagation for a volume: pure mapping from its options."""

from __future__ import annotations

from cocoon.linux import syscalls as sc
from cocoon.sandbox.share import SLAVE, host_propagation


def test_a_volume_is_a_slave_of_its_source_whatever_it_shares() -> None:
    assert host_propagation(["rbind"]) == (SLAVE,)
    assert host_propagation(["rbind", "rshared"]) == (SLAVE, sc.MS_SLAVE | sc.MS_REC)
    assert host_propagation(["bind", "slave", "ro"]) == (SLAVE, sc.MS_SLAVE)


def test_private_and_unbindable_cut_the_volume_from_its_source() -> None:
    assert host_propagation(["rbind", "rprivate"]) == (SLAVE, sc.MS_PRIVATE | sc.MS_REC)
    assert host_propagation(["private"]) == (SLAVE, sc.MS_PRIVATE)
    assert host_propagation(["runbindable"]) == (SLAVE, sc.MS_PRIVATE | sc.MS_REC)
    assert host_propagation(["unbindable"]) == (SLAVE, sc.MS_PRIVATE)


def test_options_apply_in_order() -> None:
    assert host_propagation(["rprivate", "rshared"]) == (
        SLAVE, sc.MS_PRIVATE | sc.MS_REC, sc.MS_SLAVE | sc.MS_REC)
