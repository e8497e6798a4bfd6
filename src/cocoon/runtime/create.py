"""Creating and starting a container: the bundle checked, the VM started (a clone, a pooled
clone or a cold boot, through the launcher), the rootfs and volumes exposed in the share,
CreateContainer, the per-process shim forked, the hooks run; then StartContainer.

A `create` that fails part way undoes everything it did (an ExitStack released on success), so a
bad bundle or a VM that will not boot leaves no process, mount or directory behind. The shim
helpers here serve `exec --detach` too: a process added to a container gets a shim like its init.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from cocoon.config import current as settings
from cocoon.errors import ConfigError, ContainerStateError, SandboxError
from cocoon.metrics import labels as metric_labels
from cocoon.oci import convert
from cocoon.oci.bundle import Bundle, load_bundle
from cocoon.oci.spec import Spec
from cocoon.oci.state import (
    ContainerState,
    StateStore,
    Status,
    now_rfc3339,
    process_start_time,
    require,
    validate_id,
)
from cocoon.runtime import (
    checkpoint,
    console,
    control,
    guestspec,
    hooks,
    hostcgroups,
    joins,
    sharing,
    shim,
    teardown,
)
from cocoon.runtime.control import call_agent
from cocoon.runtime.options import CreateOptions
from cocoon.runtime.sizing import vm_memory_mib
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.launcher import start_sandbox
from cocoon.sandbox.layout import DEBUG_CONSOLE, Layout, SandboxConfig, vm_dir_for
from cocoon.sandbox.share import Share


def netns_of(spec: Spec) -> str | None:
    """The container's network namespace: a path to join, "new", or None for none at all."""
    if spec.linux is None:
        return None
    namespace = spec.linux.namespace("network")
    if namespace is None:
        return None
    return namespace.path or "new"


def shim_log(layout: Layout) -> Path:
    """Where a shim logs: its sandbox directory, or $COCOON_SHIM_LOG (kept after teardown)."""
    return settings().runtime.shim_log or layout.root / "shim.log"


def write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(pid))
    os.replace(tmp, path)


def spawn_shim(layout: Layout, container_id: str, rootfs: str, exec_id: str,
               netns: str | None, console_socket: str | None = None) -> int:
    """Fork the per-process shim of one guest process; its pid, once it has attached to the
    monitor (which kills the guest process if the shim goes away later). A shim that dies or
    fails before then is a SandboxError, and the guest process is the caller's to end. With
    `console_socket` the process has a terminal: a host pty whose master goes to that socket,
    whose slave the shim takes as its stdio."""
    slave = None
    if console_socket is not None:
        master, slave = console.open_pty()
        console.send_console(console_socket, master, os.ttyname(slave))
        os.close(master)
    try:
        pid, report = shim.spawn(shim.ShimSpec(layout.shim_socket, container_id, rootfs,
                                               exec_id, console=slave, netns=netns,
                                               log_path=shim_log(layout)))
    finally:
        if slave is not None:
            os.close(slave)
    start = process_start_time(pid) or 0  # our unreaped child: it has one
    problem = shim.wait_attached(report)
    if problem is not None:
        # nobody but us knows of it: its guest process is the caller's to kill
        teardown.kill_quietly(pid, start)
        process = f"exec {exec_id} of container {container_id}" if exec_id else \
            f"container {container_id}"
        raise SandboxError(f"the shim of {process} (pid {pid}) failed: {problem}",
                           id=container_id, exec_id=exec_id)
    return pid


def create(store: StateStore, container_id: str, options: CreateOptions,
           debug: bool = False) -> ContainerState:
    validate_id(container_id)
    bundle = load_bundle(options.bundle)
    spec = bundle.spec
    if spec.process is None:
        raise ConfigError(f"{bundle.config_path}: process: a container needs a process")
    if spec.process.terminal and not options.console_socket and not options.foreground:
        raise ConfigError("process.terminal is true but no --console-socket was given "
                          "(a detached container needs one for its terminal)")
    state = ContainerState(
        id=container_id, bundle=str(bundle.path), rootfs=str(bundle.rootfs),
        created=now_rfc3339(), annotations=dict(spec.annotations),
        vm_dir=str(vm_dir_for(str(store.root), container_id)))
    # the id's lock is held from its first state on: a `delete --force` or `state` of the id
    # meanwhile waits for the create to end, whichever way it ends
    with store.creating(state), contextlib.ExitStack() as undo:
        undo.callback(store.remove, container_id)
        store.save_config(container_id, spec.to_dict())  # what later verbs read, not the bundle
        _create_locked(store, state, bundle, options, undo, debug)
        undo.pop_all()
    return state


def _create_locked(store: StateStore, state: ContainerState, bundle: Bundle,
                   options: CreateOptions, undo: contextlib.ExitStack, debug: bool) -> None:
    spec = bundle.spec
    assert spec.process is not None
    layout = Layout(Path(state.vm_dir))
    if layout.root.exists():
        teardown.stop_quietly(layout)  # left by a crash under the same id: stop it
    guestspec.check(spec, bundle.rootfs)  # a bad bundle fails before a VM starts for it
    joined = joins.resolve(store, spec)
    if joined.sandbox is not None:
        layout = _join_sandbox(store, state, joined.sandbox, spec)
        undo.callback(Share(layout.shared).remove_container, state.id)
        cgroup = hostcgroups.make(spec, state.id, SandboxConfig.load(layout.config).memory_mib,
                                  options.systemd_cgroup)
        undo.callback(cgroup.remove)
        state.host_cgroup = cgroup.to_json()
    else:
        if settings().hypervisor.kernel is not None or settings().hypervisor.image is not None:
            # a kernel or image the VM could not boot fails before it starts, naming the setting
            from cocoon.guest.kernel import check_configured_kernel
            check_configured_kernel()
        cgroup = hostcgroups.make(spec, state.id, vm_memory_mib(spec), options.systemd_cgroup)
        undo.callback(cgroup.remove)
        state.host_cgroup = cgroup.to_json()
        config = SandboxConfig(sandbox_id=state.id, vm_dir=str(layout.root),
                               memory_mib=vm_memory_mib(spec), hostname=spec.hostname or "",
                               netns=netns_of(spec), host_network=guestspec.on_host_network(spec),
                               debug=debug, cgroup_procs=cgroup.procs_files,
                               extra={"labels": metric_labels.from_annotations(spec.annotations),
                                      DEBUG_CONSOLE: settings().agent.debug_console})

        def record_vm_dir(path: Path) -> None:
            state.vm_dir = str(path)
            store.save(state)

        handle = start_sandbox(config, on_vm_dir=record_vm_dir)
        # a sandbox from the warm pool lives in the pool member's directory
        if handle.layout.root != layout.root:
            hostcgroups.adopt_sandbox(cgroup, handle.layout)
        layout = handle.layout
        state.vm_dir = str(layout.root)
        undo.callback(teardown.stop_quietly, layout)
        state.monitor_pid = handle.monitor_pid
        state.boot_id = str(handle.info.get("boot_id", ""))
        state.kernel_release = str(handle.info.get("kernel_release", ""))
    with sharing.locked(layout):
        sharing.add(layout, state.id)
    undo.callback(sharing.remove, layout, state.id)
    gspec = guestspec.guest_spec(joined.spec, bundle.rootfs, Share(layout.shared), state.id)
    oci = convert.spec_to_proto(gspec)
    if options.restore is None:
        asyncio.run(call_agent(state, lambda agent: agent.create_container(state.id, oci)))
    else:
        checkpoint.restore_processes(state, layout, oci, options.restore)
    if joined.sandbox is not None:
        undo.callback(lambda: asyncio.run(call_agent(
            state, lambda agent: agent.remove_container(state.id))))
    state.status = Status.CREATED if options.restore is None else Status.RUNNING
    if not options.foreground:
        if spec.process.terminal:
            assert options.console_socket is not None
        pid = spawn_shim(layout, state.id, state.rootfs, "", netns_of(spec),
                         options.console_socket if spec.process.terminal else None)
        state.pid = pid
        state.pid_start = process_start_time(pid) or 0  # our unreaped child: it has one
        undo.callback(teardown.kill_quietly, pid, state.pid_start)
        cgroup.enter([pid])
        _wait_for_network_namespace(pid, netns_of(spec))
    if spec.hooks is not None:
        hooks.run_hooks("prestart", spec.hooks.prestart, state.oci_state())
        hooks.run_hooks("createRuntime", spec.hooks.create_runtime, state.oci_state())
    if netns_of(spec) == "new" and state.pid and joined.sandbox is None:
        # the container's namespace is the shim's: an engine's prestart hook (Docker's) may
        # have moved interfaces into it just now, after the VM started
        netns = f"/proc/{state.pid}/ns/net"
        asyncio.run(control.call_monitor(state, lambda client: client.attach_network(netns)))
    store.save(state)
    if options.pid_file is not None and state.pid:
        write_pid_file(options.pid_file, state.pid)


def start(store: StateStore, container_id: str) -> ContainerState:
    """Let the created container's process exec; then the poststart hooks."""
    return asyncio.run(start_async(store, container_id))


async def start_async(store: StateStore, container_id: str,
                      agent: AgentClient | None = None) -> ContainerState:
    """`start`, for a caller with a loop (and perhaps a client) of its own: the foreground
    `run` starts its container through here too, after its relay is reading."""
    state = store.load(validate_id(container_id))
    with store.lock(state.id):
        state = store.load(state.id)
        status = state.current_status()
        if status is Status.RUNNING or status is Status.PAUSED:
            raise ContainerStateError(f"cannot start container {state.id}: it is already "
                                      f"{status}", id=state.id)
        require(status, status.can_start(), state.id, "start")
        state.status = Status.RUNNING
        with store.staged(state):  # a state that cannot be written fails before the start
            if agent is None:
                await call_agent(state, lambda client: client.start_container(state.id))
            else:
                await agent.start_container(state.id)
    spec = store.config(state.id)
    if spec.hooks is not None:
        hooks.run_hooks("poststart", spec.hooks.poststart, state.oci_state(), fatal=False)
    return state


def _wait_for_network_namespace(pid: int, netns: str | None, timeout: float = 10.0) -> None:
    """Until the shim is in the container's network namespace: hooks look at it through the
    shim's pid (Docker's moves its veth into /proc/<pid>/ns/net), and before the shim has left
    the host's namespace, that is the host's."""
    if netns is None:
        return
    host = os.stat("/proc/self/ns/net").st_ino
    wanted = None if netns == "new" else os.stat(netns).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            current = os.stat(f"/proc/{pid}/ns/net").st_ino
        except FileNotFoundError:
            raise SandboxError(f"the shim (pid {pid}) exited before it entered the container's "
                               "network namespace") from None
        if (wanted is None and current != host) or current == wanted:
            return
        time.sleep(0.002)
    raise SandboxError(f"the shim (pid {pid}) did not enter the container's network namespace "
                       f"within {timeout:.0f} s")


def _join_sandbox(store: StateStore, state: ContainerState, owner: ContainerState,
                  spec: Spec) -> Layout:
    """Run in `owner`'s VM (the new container joins some of its namespaces): it must be up,
    and the new container must use the network that VM carries."""
    layout = Layout(Path(owner.vm_dir))
    if not layout.monitor_socket.exists() or owner.current_status() not in (
            Status.CREATED, Status.RUNNING, Status.PAUSED):
        raise ContainerStateError(f"container {state.id} joins the namespaces of container "
                                  f"{owner.id}, which is not running", id=state.id)
    netns = netns_of(spec)
    if netns not in (None, "new") and os.stat(netns).st_ino != \
            os.stat(f"/proc/{owner.pid}/ns/net").st_ino:
        raise ConfigError(f"config.json: linux.namespaces: container {state.id} joins "
                          f"namespaces of container {owner.id} but has a network namespace of "
                          f"its own ({netns}): one VM carries one network; share "
                          f"{owner.id}'s network too", field="linux.namespaces")
    state.vm_dir = owner.vm_dir
    state.monitor_pid = owner.monitor_pid
    state.boot_id = owner.boot_id
    state.kernel_release = owner.kernel_release
    return layout
