"""`containerd.task.v2.Task`: containerd's view of the pod's containers, served by the shim.

Every method is a thin translation onto the agent (through the pod's sandbox monitor) plus the
bookkeeping containerd expects: statuses, exit statuses, and the task events in contract order
(create, start, exit, delete; exec-added, exec-started; paused, resumed; oom). The pid reported
for every process is the shim daemon's own: a host process that exists as long as the task does
(the container's processes run in the guest and have no host pid; see docs/containerd.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import empty_pb2

from cocoon import __version__
from cocoon.config import current as settings
from cocoon.errors import AgentError, CocoonError, ConfigError, RPCError
from cocoon.hostcgroup.path import looks_systemd
from cocoon.oci import convert
from cocoon.oci.bundle import load_bundle
from cocoon.oci.jsonmodel import FieldError
from cocoon.oci.spec import LinuxResources, Process
from cocoon.oci.state import validate_id
from cocoon.protocols.gen import containerd_events_pb2 as ev
from cocoon.protocols.gen import containerd_task_pb2 as api
from cocoon.protocols.gen import containerd_types_task_pb2 as types
from cocoon.runtime import hostcgroups
from cocoon.runtime.sizing import vm_memory_mib
from cocoon.sandbox.agentclient import AgentClient
from cocoon.sandbox.relay import ProcessRelay
from cocoon.shim import checkpoint, mounts
from cocoon.shim.address import bundle_annotations, pod_of
from cocoon.shim.events import Publisher, timestamp
from cocoon.shim.metrics import metrics_any
from cocoon.shim.pod import Pod, save_cgroup
from cocoon.shim.process import CREATED, PAUSED, RUNNING, STOPPED, ShimContainer, ShimProcess
from cocoon.shim.stdin import StdinPump
from cocoon.shim.stdio import StdioPaths, open_stdio
from cocoon.ttrpc.server import CallContext
from cocoon.ttrpc.status import StatusCode

logger = logging.getLogger("cocoon.shim.task")

EMPTY = empty_pb2.Empty()
CALL_TIMEOUT = 60.0
LOST_STATUS = 137  # the VM went away: the process is as dead as SIGKILL makes it
KILL_WAIT = 5.0
OOM_LIE_PAUSE = 1.0  # after an OOM event the guest made up, before asking again
TOLERATED = (StatusCode.NOT_FOUND, StatusCode.UNAVAILABLE, StatusCode.FAILED_PRECONDITION)


def _parse_json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except ValueError as err:
        raise ConfigError(f"{what}: not JSON: {err}") from err


class TaskService:
    def __init__(self, pod: Pod, events: Publisher, shutdown: Callable[[], None]) -> None:
        self.pod = pod
        self.events = events
        self.containers: dict[str, ShimContainer] = {}
        self.pid = os.getpid()
        self._shutdown = shutdown
        self._oom_task: asyncio.Task[None] | None = None

    # --- helpers -------------------------------------------------------------------------------

    def _container(self, container_id: str) -> ShimContainer:
        try:
            return self.containers[container_id]
        except KeyError:
            raise RPCError(StatusCode.NOT_FOUND,
                           f"container {container_id} does not exist in this shim") from None

    @property
    def agent(self) -> AgentClient:
        return self.pod.agent

    async def _quietly(self, what: str, call: Callable[[AgentClient], Awaitable[None]]) -> None:
        """An agent call whose failure is logged, not raised (what it acts on may be gone)."""
        try:
            await call(self.agent)
        except RPCError as err:
            if err.code not in TOLERATED:
                logger.warning("%s: %s", what, err)
        except CocoonError as err:
            logger.info("%s: %s", what, err)

    async def _watch(self, container: ShimContainer, process: ShimProcess) -> None:
        """Relay the process's stdio until it exits; record and publish the exit."""
        stdio = process.stdio.relay_stdio()
        try:
            relay = ProcessRelay(self.agent, container.id, process.exec_id, stdio,
                                 lambda k: self.pod.layout.stdio_socket(k))
            status = await relay.run(forward_signals=False)
        except CocoonError as err:
            logger.warning("%s: lost track of the process: %s", process.name, err)
            status = LOST_STATUS
        finally:
            if process.stdin is not None:
                await process.stdin.cancel()
            process.stdio.close()
        async with process.start_lock:  # a start being published goes out first
            process.record_exit(status)
            self.events.publish(ev.TaskExit(
                container_id=container.id, id=process.event_id, pid=self.pid,
                exit_status=status, exited_at=timestamp(process.exited_at)))
        process.exited.set()
        logger.info("%s exited with status %d", process.name, status)

    async def _connect_stdin(self, process: ShimProcess) -> None:
        """Copy containerd's stdin to the process; without one, the process reads end of file."""
        if process.stdio.stdin is not None:
            sockets: Callable[[int], Path] | None = None
            if not process.stdio.paths.terminal and settings().runtime.stdio_ports:
                sockets = lambda k: self.pod.layout.stdio_socket(k)  # noqa: E731
            process.stdin = StdinPump(self.agent, process.container_id, process.exec_id,
                                      process.stdio.stdin, sockets)
            process.stdin.start()
        elif not process.stdio.paths.terminal:
            await self._quietly("CloseStdin", lambda agent: agent.close_stdin(
                process.container_id, process.exec_id, timeout=CALL_TIMEOUT))

    async def _watch_oom(self) -> None:
        while True:
            try:
                container_id = await self.agent.get_oom_event()
            except AgentError as err:  # a guest's lie: refused, and the watch goes on
                logger.warning("OOM watch: %s", err)
                await asyncio.sleep(OOM_LIE_PAUSE)
                continue
            except CocoonError as err:
                logger.debug("OOM watch ends: %s", err)
                return
            if container_id in self.containers:
                logger.info("container %s: out of memory", container_id)
                self.events.publish(ev.TaskOOM(container_id=container_id))

    # --- create, start, delete -----------------------------------------------------------------

    async def Create(self, request: api.CreateTaskRequest,
                     ctx: CallContext) -> api.CreateTaskResponse:
        cid = validate_id(request.id)  # it names directories and cgroups on the host
        if cid in self.containers:
            raise RPCError(StatusCode.ALREADY_EXISTS, f"container {cid} already exists")
        restore_from = Path(request.checkpoint) if request.checkpoint else None
        if restore_from is not None:  # restored at Start, as runc's shim does
            checkpoint.check_restorable(restore_from)
        bundle = Path(request.bundle)
        ref = pod_of(cid, bundle_annotations(bundle))
        if ref.pod_id != self.pod.id:
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"container {cid} belongs to pod {ref.pod_id}, this shim serves "
                           f"pod {self.pod.id}")
        rootfs = bundle / "rootfs" if request.rootfs else None
        async with contextlib.AsyncExitStack() as undo:
            if rootfs is not None:
                mounts.mount_rootfs([mounts.MountSpec(m.type, m.source, tuple(m.options))
                                     for m in request.rootfs], rootfs)
                undo.callback(mounts.unmount_rootfs, rootfs)
            loaded = load_bundle(bundle)
            spec = loaded.spec
            if spec.process is None:
                raise ConfigError(f"{loaded.config_path}: process: a container needs a process")
            cgroup = await asyncio.to_thread(
                hostcgroups.make, spec, cid, self.pod.memory_mib or vm_memory_mib(spec),
                looks_systemd(spec.linux.cgroups_path if spec.linux else ""))
            undo.callback(cgroup.remove)
            save_cgroup(bundle, cgroup)
            if await self.pod.ensure_started(spec, cgroup):
                undo.push_async_callback(self._stop_pod_if_empty)
            gspec = self.pod.guest_spec(cid, spec, loaded.rootfs, ref)
            undo.callback(self.pod.share.remove_container, cid)
            paths = StdioPaths(request.stdin, request.stdout, request.stderr, request.terminal)
            stdio = open_stdio(paths)
            undo.callback(stdio.close)
            oci = convert.spec_to_proto(gspec)
            if restore_from is None:
                await self.agent.create_container(cid, oci)
            undo.push_async_callback(self._quietly, "RemoveContainer",
                                     lambda agent: agent.remove_container(cid, stop_timeout=5))
            undo.pop_all()
        process = ShimProcess(cid, "", stdio)
        container = ShimContainer(cid, bundle, ref, process, rootfs=rootfs, cgroup=cgroup)
        if restore_from is not None:
            container.restore = (restore_from, oci)
        self.containers[cid] = container
        self.events.publish(ev.TaskCreate(
            container_id=cid, bundle=str(bundle), rootfs=request.rootfs,
            io=ev.TaskIO(stdin=request.stdin, stdout=request.stdout, stderr=request.stderr,
                         terminal=request.terminal), checkpoint=request.checkpoint, pid=self.pid))
        if restore_from is None:
            await self._connect_stdin(process)
            process.relay = asyncio.create_task(self._watch(container, process),
                                                name=f"relay {cid}")
        if self._oom_task is None or self._oom_task.done():
            self._oom_task = asyncio.create_task(self._watch_oom(), name="oom-watch")
        logger.info("created container %s in pod %s", cid, self.pod.id)
        return api.CreateTaskResponse(pid=self.pid)

    async def Start(self, request: api.StartRequest, ctx: CallContext) -> api.StartResponse:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        async with process.start_lock:
            process.require((CREATED,), "start")
            if process.exec_id:
                assert process.process_proto is not None  # Exec added it with its Process
                await self.agent.exec_process(container.id, process.exec_id,
                                              process.process_proto)
                process.status = RUNNING
                await self._connect_stdin(process)
                process.relay = asyncio.create_task(self._watch(container, process),
                                                    name=f"relay {process.name}")
                self.events.publish(ev.TaskExecStarted(
                    container_id=container.id, exec_id=process.exec_id, pid=self.pid))
            elif container.restore is not None:
                path, oci = container.restore
                container.restore = None
                try:
                    await checkpoint.restore(self.agent, self.pod.share, container.id, oci,
                                             path)
                except BaseException:  # nothing runs: the task is stopped, for Delete
                    process.record_exit(LOST_STATUS)
                    process.exited.set()
                    raise
                process.status = RUNNING
                await self._connect_stdin(process)
                process.relay = asyncio.create_task(self._watch(container, process),
                                                    name=f"relay {container.id}")
                self.events.publish(ev.TaskStart(container_id=container.id, pid=self.pid))
            else:
                await self.agent.start_container(container.id)
                process.status = RUNNING
                self.events.publish(ev.TaskStart(container_id=container.id, pid=self.pid))
        return api.StartResponse(pid=self.pid)

    async def Delete(self, request: api.DeleteRequest, ctx: CallContext) -> api.DeleteResponse:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        process.require((CREATED, STOPPED), "delete")
        if process.exec_id:
            process.stdio.close()
            container.execs.pop(process.exec_id, None)
            return self._delete_response(process)
        in_guest = container.restore is None  # one to restore at Start is not there yet
        if process.status == CREATED and not in_guest:
            container.restore = None
            process.record_exit(0)  # as runc's shim: nothing ran, nothing to kill
        elif process.status == CREATED:  # as runc: deleting a created container kills it
            await self._quietly("SignalProcess", lambda agent: agent.signal_process(
                container.id, "", signal.SIGKILL, all=True))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await process.exited.wait()
            if process.status != STOPPED:
                process.record_exit(LOST_STATUS)
        for other in container.processes():
            other.stdio.close()
        if in_guest:
            await self._quietly("RemoveContainer", lambda agent: agent.remove_container(
                container.id, stop_timeout=5))
        self.pod.share.remove_container(container.id)
        if container.rootfs is not None:
            mounts.unmount_rootfs(container.rootfs)
        del self.containers[container.id]
        if container.cgroup is not None and container.cgroup is not self.pod.cgroup:
            await asyncio.to_thread(container.cgroup.remove)  # the pod's goes with the VM
        self.events.publish(ev.TaskDelete(
            container_id=container.id, pid=self.pid, exit_status=process.exit_status,
            exited_at=timestamp(process.exited_at)))
        await self._stop_pod_if_empty()
        logger.info("deleted container %s", container.id)
        return self._delete_response(process)

    def _delete_response(self, process: ShimProcess) -> api.DeleteResponse:
        return api.DeleteResponse(pid=self.pid, exit_status=process.exit_status,
                                  exited_at=timestamp(process.exited_at))

    async def _stop_pod_if_empty(self) -> None:
        if self.containers:
            return
        if self._oom_task is not None:
            self._oom_task.cancel()
        await self.pod.stop()

    # --- signals, pause, exec, io ----------------------------------------------------------------

    async def Kill(self, request: api.KillRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        process.require_live("signal")
        await self.agent.signal_process(container.id, process.exec_id, request.signal,
                                        all=request.all)
        return EMPTY

    async def Pause(self, request: api.PauseRequest, ctx: CallContext) -> empty_pb2.Empty:
        process = self._container(request.id).init
        process.require((RUNNING,), "pause")
        await self.agent.pause_container(request.id)
        process.status = PAUSED
        self.events.publish(ev.TaskPaused(container_id=request.id))
        return EMPTY

    async def Resume(self, request: api.ResumeRequest, ctx: CallContext) -> empty_pb2.Empty:
        process = self._container(request.id).init
        process.require((PAUSED,), "resume")
        await self.agent.resume_container(request.id)
        process.status = RUNNING
        self.events.publish(ev.TaskResumed(container_id=request.id))
        return EMPTY

    async def Checkpoint(self, request: api.CheckpointTaskRequest,
                         ctx: CallContext) -> empty_pb2.Empty:
        """CRIU in the guest dumps the task's processes into `request.path`; they keep
        running unless runc's options say `exit`."""
        container = self._container(request.id)
        container.init.require((RUNNING, PAUSED), "checkpoint")  # containerd pauses first
        if container.init.stdio.paths.terminal:
            raise RPCError(StatusCode.UNIMPLEMENTED, f"cannot checkpoint container "
                           f"{container.id}: checkpoint of a terminal is not supported")
        options = checkpoint.parse_options(request.options)
        path = checkpoint.images_of(request.path, options)
        await checkpoint.checkpoint(self.agent, self.pod.share, container.id, path, options)
        logger.info("checkpointed container %s into %s", container.id, path)
        return EMPTY

    async def Exec(self, request: api.ExecProcessRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        if container.init.status == STOPPED:
            raise RPCError(StatusCode.FAILED_PRECONDITION,
                           f"cannot exec in container {container.id}: it is stopped")
        if not request.exec_id or request.exec_id in container.execs:
            raise RPCError(StatusCode.ALREADY_EXISTS if request.exec_id else
                           StatusCode.INVALID_ARGUMENT,
                           f"exec id {request.exec_id!r} is taken or empty")
        try:
            process = Process.from_dict(_parse_json(request.spec.value, "exec spec"), "process")
        except FieldError as err:
            raise ConfigError(f"exec {request.exec_id}: {err}") from err
        stdio = open_stdio(StdioPaths(request.stdin, request.stdout, request.stderr,
                                      request.terminal))
        container.execs[request.exec_id] = ShimProcess(
            container.id, request.exec_id, stdio, process_proto=convert.process_to_proto(process))
        self.events.publish(ev.TaskExecAdded(container_id=container.id, exec_id=request.exec_id))
        return EMPTY

    async def ResizePty(self, request: api.ResizePtyRequest, ctx: CallContext) -> empty_pb2.Empty:
        process = self._container(request.id).process(request.exec_id)
        process.require_live("resize the terminal of")
        await self.agent.tty_win_resize(request.id, request.exec_id, request.height,
                                        request.width, timeout=CALL_TIMEOUT)
        return EMPTY

    async def CloseIO(self, request: api.CloseIORequest, ctx: CallContext) -> empty_pb2.Empty:
        process = self._container(request.id).process(request.exec_id)
        if not request.stdin or process.status == STOPPED:
            return EMPTY
        if process.stdin is not None:
            await process.stdin.close()  # what the client wrote arrives first
        else:
            await self._quietly("CloseStdin", lambda agent: agent.close_stdin(
                request.id, request.exec_id, timeout=CALL_TIMEOUT))
        return EMPTY

    async def Update(self, request: api.UpdateTaskRequest, ctx: CallContext) -> empty_pb2.Empty:
        container = self._container(request.id)
        container.init.require_live("update")
        try:
            resources = LinuxResources.from_dict(
                _parse_json(request.resources.value, "resources"), "resources")
        except FieldError as err:
            raise ConfigError(f"update of {container.id}: {err}") from err
        if container.cgroup is not None:
            await asyncio.to_thread(container.cgroup.apply, resources)
        await self.agent.update_container(container.id, convert.resources_to_proto(resources))
        return EMPTY

    # --- queries -----------------------------------------------------------------------------

    async def State(self, request: api.StateRequest, ctx: CallContext) -> api.StateResponse:
        container = self._container(request.id)
        process = container.process(request.exec_id)
        paths = process.stdio.paths
        response = api.StateResponse(
            id=request.id, bundle=str(container.bundle), pid=self.pid,
            status=process.status,
            stdin=paths.stdin, stdout=paths.stdout, stderr=paths.stderr, terminal=paths.terminal,
            exit_status=process.exit_status, exec_id=request.exec_id)
        if process.exited_at is not None:
            response.exited_at.CopyFrom(timestamp(process.exited_at))
        return response

    async def Pids(self, request: api.PidsRequest, ctx: CallContext) -> api.PidsResponse:
        """The container's processes as guest pids (host pids do not exist for them)."""
        container = self._container(request.id)
        container.init.require_live("list the processes of")
        pids = await self.agent.list_pids(container.id)
        return api.PidsResponse(processes=[types.ProcessInfo(pid=p) for p in pids])

    async def Stats(self, request: api.StatsRequest, ctx: CallContext) -> api.StatsResponse:
        container = self._container(request.id)
        container.init.require_live("get the statistics of")
        response = await self.agent.stats_container(container.id)
        return api.StatsResponse(stats=metrics_any(response))

    async def Wait(self, request: api.WaitRequest, ctx: CallContext) -> api.WaitResponse:
        process = self._container(request.id).process(request.exec_id)
        await process.exited.wait()
        return api.WaitResponse(exit_status=process.exit_status,
                                exited_at=timestamp(process.exited_at))

    async def Connect(self, request: api.ConnectRequest,
                      ctx: CallContext) -> api.ConnectResponse:
        self._container(request.id)  # unknown: containerd cleans the stale bundle up
        return api.ConnectResponse(shim_pid=self.pid, task_pid=self.pid,
                                   version=f"cocoon {__version__}")

    async def Shutdown(self, request: api.ShutdownRequest,
                       ctx: CallContext) -> empty_pb2.Empty:
        """Exit once the pod has no container left (or at once with `now`)."""
        if self.containers and not request.now:
            return EMPTY
        logger.info("shutdown requested (%s)", "now" if request.now else "no containers left")
        self._shutdown()
        return EMPTY

    async def close(self) -> None:
        """Stop everything: relays, the OOM watch, the VM, the rootfs mounts."""
        for container in self.containers.values():
            for process in container.processes():
                if process.stdin is not None:
                    await process.stdin.cancel()
        tasks = [p.relay for c in self.containers.values() for p in c.processes()
                 if p.relay is not None]
        if self._oom_task is not None:
            tasks.append(self._oom_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pod.stop()
        for container in list(self.containers.values()):
            for process in container.processes():
                process.stdio.close()
            if container.rootfs is not None:
                mounts.unmount_rootfs(container.rootfs)
        self.containers.clear()
