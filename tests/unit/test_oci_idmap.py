"""User namespace mappings: the kernel's rules for a uid_map, and runc's for a config."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cocoon.oci import idmap
from cocoon.oci.default import default_spec
from cocoon.oci.spec import LinuxIDMapping, parse_spec

MAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def m(container: int, host: int, size: int) -> LinuxIDMapping:
    return LinuxIDMapping(container_id=container, host_id=host, size=size)


def test_disjoint_mappings_pass_and_are_written_one_per_line() -> None:
    mappings = (m(0, 100000, 1000), m(1000, 0, 1), m(1001, 101001, 64535))
    idmap.check_mappings("linux.uidMappings", mappings)
    assert idmap.map_text(mappings) == "0 100000 1000\n1000 0 1\n1001 101001 64535\n"


@pytest.mark.parametrize(("mappings", "message"), [
    ((m(0, 100000, 0),), "linux.uidMappings[0]: size is 0"),
    ((m(0, 100000, 10), m(5, 200000, 10)),
     "linux.uidMappings[1]: its containerID range overlaps that of linux.uidMappings[0]"),
    ((m(0, 100000, 10), m(100, 100009, 10)),
     "linux.uidMappings[1]: its hostID range overlaps that of linux.uidMappings[0]"),
    ((m(100, 100000, 10), m(0, 100005, 10)),
     "linux.uidMappings[1]: its hostID range overlaps that of linux.uidMappings[0]"),
    ((m(2**32 - 2, 0, 2),), "containerID 4294967294 + size 2 runs past the largest id"),
    ((m(0, 2**32 - 1, 1),), "hostID 4294967295 + size 1 runs past the largest id"),
    (tuple(m(i, 1000 + i, 1) for i in range(341)), "341 mappings, the kernel takes at most 340"),
])
def test_what_the_kernel_would_refuse_is_named(mappings: tuple[LinuxIDMapping, ...],
                                               message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        idmap.check_mappings("linux.uidMappings", mappings)


def test_the_largest_id_can_be_mapped() -> None:
    idmap.check_mappings("linux.uidMappings", (m(2**32 - 2, 2**32 - 2, 1),))


def test_is_mapped_covers_each_range_and_nothing_past_it() -> None:
    mappings = (m(0, 100000, 10), m(20, 5, 1))
    assert [i for i in range(25) if idmap.is_mapped(mappings, i)] == [*range(10), 20]


def _spec(edit: Any) -> Any:
    data = default_spec()
    data["linux"]["namespaces"].append({"type": "user"})
    data["linux"]["uidMappings"] = [dict(entry) for entry in MAP]
    data["linux"]["gidMappings"] = [dict(entry) for entry in MAP]
    edit(data)
    return parse_spec(data)


def test_a_config_with_a_mapped_user_namespace_passes() -> None:
    idmap.check_user_namespace(_spec(lambda data: None))


def test_a_joined_user_namespace_needs_no_mappings() -> None:
    def edit(data: dict[str, Any]) -> None:
        data["linux"]["namespaces"][-1]["path"] = "container:pause"
        del data["linux"]["uidMappings"], data["linux"]["gidMappings"]

    idmap.check_user_namespace(_spec(edit))


def _drop_user(data: dict[str, Any]) -> None:
    data["linux"]["namespaces"] = data["linux"]["namespaces"][:-1]


@pytest.mark.parametrize(("edit", "message"), [
    (_drop_user, "linux.uidMappings: mappings need a user namespace"),
    (lambda data: data["linux"].pop("uidMappings"),
     "linux.uidMappings: a new user namespace needs both"),
    (lambda data: data["linux"].pop("gidMappings"),
     "linux.gidMappings: a new user namespace needs both"),
    (lambda data: data["process"]["user"].update(uid=70000),
     "process.user.uid: 70000 is not mapped by linux.uidMappings"),
    (lambda data: data["process"]["user"].update(additionalGids=[5, 65536]),
     "process.user.additionalGids: 65536 is not mapped by linux.gidMappings"),
    (lambda data: data["linux"]["gidMappings"][0].update(size=0),
     r"linux.gidMappings\[0\]: size is 0"),
])
def test_a_config_runc_would_refuse_is_named(edit: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        idmap.check_user_namespace(_spec(edit))
