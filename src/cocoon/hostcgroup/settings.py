"""A container's `linux.resources` as writes to the host cgroup that holds its VM.

The limits are the ones the spec asks for, as runc writes them, with one change: what bounds a
count of the VM's own (memory and tasks) gets the VM's overhead added, since QEMU, virtiofsd and
the monitor live in the cgroup too and a container's limit would starve them. The memory bound is
the guest's RAM plus the host processes' own (`HOST_MEMORY_OVERHEAD`): the guest enforces the
container's limit exactly inside, the host that the VM as a whole stays within what it was given.

Device rules come first as the spec orders them, then what QEMU itself opens (`QEMU_DEVICES`).
Settings for a controller the host has not mounted (hugetlb, net_cls and net_prio are absent on
some hosts) are skipped by the caller; the guest still applies what it can.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocoon.linux.cgroupv2 import v2_settings
from cocoon.oci.spec import LinuxDeviceCgroup, LinuxResources, LinuxThrottleDevice

MIB = 1 << 20
HOST_MEMORY_OVERHEAD = 256 * MIB  # QEMU (TCG translation cache), virtiofsd, monitor, shims
TASK_OVERHEAD = 256               # their threads: vCPUs, I/O, virtiofsd's pool, the monitor's

# what QEMU opens on the host: /dev/null etc., /dev/kvm, /dev/net/tun, vhost-net, vhost-vsock
QEMU_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
                "c 5:2 rwm", "c 136:* rwm", "c 10:232 rwm", "c 10:200 rwm", "c 10:238 rwm",
                "c 10:241 rwm")


@dataclass(frozen=True)
class Write:
    """One cgroup file write: `value` into `file` of the hierarchy that has `controller`.
    `field` names the part of the spec it comes from, for errors."""

    controller: str
    file: str
    value: str
    field: str
    optional: bool = False  # a file this kernel may lack (skipped when absent)


def host_memory_limit(limit: int, vm_memory: int) -> int:
    """The host bound of a VM of `vm_memory` bytes whose container asked for `limit`."""
    return max(vm_memory, limit) + HOST_MEMORY_OVERHEAD


def _device_rule(rule: LinuxDeviceCgroup) -> str:
    kind = rule.type or "a"
    major = "*" if rule.major is None or rule.major < 0 else str(rule.major)
    minor = "*" if rule.minor is None or rule.minor < 0 else str(rule.minor)
    return f"{kind} {major}:{minor} {rule.access or 'rwm'}"


def _throttles(controller: str, file: str, field: str,
               devices: tuple[LinuxThrottleDevice, ...]) -> list[Write]:
    return [Write(controller, file, f"{d.major}:{d.minor} {d.rate}", field) for d in devices]


def v1_writes(resources: LinuxResources, vm_memory: int) -> list[Write]:
    """The cgroup v1 writes for `resources`, in the order runc makes them."""
    out: list[Write] = []
    memory = resources.memory
    if memory is not None:
        field = "linux.resources.memory"
        if memory.limit is not None and memory.limit != 0:
            value = "-1" if memory.limit < 0 else str(host_memory_limit(memory.limit, vm_memory))
            out.append(Write("memory", "memory.limit_in_bytes", value, f"{field}.limit"))
        if memory.swap is not None and memory.swap != 0:
            value = "-1" if memory.swap < 0 else str(host_memory_limit(memory.swap, vm_memory))
            out.append(Write("memory", "memory.memsw.limit_in_bytes", value, f"{field}.swap",
                             optional=True))
        if memory.reservation is not None and memory.reservation != 0:
            out.append(Write("memory", "memory.soft_limit_in_bytes",
                             "-1" if memory.reservation < 0 else str(memory.reservation),
                             f"{field}.reservation"))
        if memory.swappiness is not None and memory.swappiness <= 100:
            out.append(Write("memory", "memory.swappiness", str(memory.swappiness),
                             f"{field}.swappiness"))
    cpu = resources.cpu
    if cpu is not None:
        field = "linux.resources.cpu"
        if cpu.shares:
            out.append(Write("cpu", "cpu.shares", str(cpu.shares), f"{field}.shares"))
        if cpu.period:
            out.append(Write("cpu", "cpu.cfs_period_us", str(cpu.period), f"{field}.period"))
        if cpu.quota is not None and cpu.quota != 0:
            out.append(Write("cpu", "cpu.cfs_quota_us", str(cpu.quota), f"{field}.quota"))
        if cpu.burst is not None:
            out.append(Write("cpu", "cpu.cfs_burst_us", str(cpu.burst), f"{field}.burst",
                             optional=True))
        if cpu.realtime_period:
            out.append(Write("cpu", "cpu.rt_period_us", str(cpu.realtime_period),
                             f"{field}.realtimePeriod"))
        if cpu.realtime_runtime:
            out.append(Write("cpu", "cpu.rt_runtime_us", str(cpu.realtime_runtime),
                             f"{field}.realtimeRuntime"))
        if cpu.idle is not None:
            out.append(Write("cpu", "cpu.idle", str(cpu.idle), f"{field}.idle", optional=True))
        if cpu.cpus:
            out.append(Write("cpuset", "cpuset.cpus", cpu.cpus, f"{field}.cpus"))
        if cpu.mems:
            out.append(Write("cpuset", "cpuset.mems", cpu.mems, f"{field}.mems"))
    if resources.pids is not None:
        limit = resources.pids.limit
        out.append(Write("pids", "pids.max",
                         "max" if limit <= 0 else str(limit + TASK_OVERHEAD),
                         "linux.resources.pids.limit"))
    out += _blkio(resources)
    for hugepage in resources.hugepage_limits:
        out.append(Write("hugetlb", f"hugetlb.{hugepage.page_size}.limit_in_bytes",
                         str(hugepage.limit), "linux.resources.hugepageLimits"))
    network = resources.network
    if network is not None:
        if network.class_id is not None:
            out.append(Write("net_cls", "net_cls.classid", str(network.class_id),
                             "linux.resources.network.classID"))
        for priority in network.priorities:
            out.append(Write("net_prio", "net_prio.ifpriomap",
                             f"{priority.name} {priority.priority}",
                             "linux.resources.network.priorities"))
    out += device_writes(resources.devices)
    return out


def _blkio(resources: LinuxResources) -> list[Write]:
    block = resources.block_io
    if block is None:
        return []
    field = "linux.resources.blockIO"
    out: list[Write] = []
    # CFQ's blkio.weight is gone from kernels without CFQ; BFQ's blkio.bfq.weight takes the
    # same values (the manager picks the file there is); with neither the weight is skipped
    if block.weight:
        out.append(Write("blkio", "blkio.weight", str(block.weight), f"{field}.weight",
                         optional=True))
    if block.leaf_weight:
        out.append(Write("blkio", "blkio.leaf_weight", str(block.leaf_weight),
                         f"{field}.leafWeight", optional=True))
    for device in block.weight_device:
        if device.weight:
            out.append(Write("blkio", "blkio.weight_device",
                             f"{device.major}:{device.minor} {device.weight}",
                             f"{field}.weightDevice", optional=True))
    out += _throttles("blkio", "blkio.throttle.read_bps_device",
                      f"{field}.throttleReadBpsDevice", block.throttle_read_bps_device)
    out += _throttles("blkio", "blkio.throttle.write_bps_device",
                      f"{field}.throttleWriteBpsDevice", block.throttle_write_bps_device)
    out += _throttles("blkio", "blkio.throttle.read_iops_device",
                      f"{field}.throttleReadIOPSDevice", block.throttle_read_iops_device)
    out += _throttles("blkio", "blkio.throttle.write_iops_device",
                      f"{field}.throttleWriteIOPSDevice", block.throttle_write_iops_device)
    return out


def device_writes(rules: tuple[LinuxDeviceCgroup, ...]) -> list[Write]:
    """The devices controller's rules in order, then QEMU's own devices (only when a rule was
    given: a new cgroup inherits its parent's rules, which already allow them)."""
    if not rules:
        return []
    out = [Write("devices", "devices.allow" if rule.allow else "devices.deny",
                 _device_rule(rule), "linux.resources.devices") for rule in rules]
    out += [Write("devices", "devices.allow", rule, "linux.resources.devices", optional=True)
            for rule in QEMU_DEVICES]
    return out


def v2_writes(resources: LinuxResources, vm_memory: int) -> list[Write]:
    """The cgroup v2 writes for `resources`: runc's conversions (shared with the guest), the VM's
    overhead on memory and tasks, io for blockIO. Device rules need an eBPF program on v2, which
    Cocoon does not load on the host: the guest enforces them."""
    raw = resources.to_dict()
    settings = v2_settings(raw)
    memory = resources.memory
    if memory is not None and memory.limit is not None and memory.limit > 0:
        settings["memory.max"] = str(host_memory_limit(memory.limit, vm_memory))
    if resources.pids is not None and resources.pids.limit > 0:
        settings["pids.max"] = str(resources.pids.limit + TASK_OVERHEAD)
    out = [Write(name.split(".", 1)[0], name, value, "linux.resources")
           for name, value in settings.items()]
    block = resources.block_io
    if block is not None:
        if block.weight:
            # runc's conversion of blkio weight [10, 1000] to io.weight [1, 10000]
            weight = 1 + (block.weight - 10) * 9999 // 990
            out.append(Write("io", "io.weight", f"default {weight}",
                             "linux.resources.blockIO.weight", optional=True))
        for key, devices in (("rbps", block.throttle_read_bps_device),
                             ("wbps", block.throttle_write_bps_device),
                             ("riops", block.throttle_read_iops_device),
                             ("wiops", block.throttle_write_iops_device)):
            for device in devices:
                out.append(Write("io", "io.max", f"{device.major}:{device.minor} "
                                 f"{key}={device.rate}", "linux.resources.blockIO"))
    for hugepage in resources.hugepage_limits:
        out.append(Write("hugetlb", f"hugetlb.{hugepage.page_size}.max", str(hugepage.limit),
                         "linux.resources.hugepageLimits"))
    return out
