"""Each OCI setting of a container is honoured in the guest, as runc honours it on a host.

One VM serves the whole module: every test creates its own container in it through the agent
API (what the runtime sends, with paths rewritten for the guest by `guest_spec`), reads what the
container printed about itself and checks it. The spec is `runc spec`'s default unless a test
changes it, so the defaults (read-only root, masked paths, three capabilities) are under test
too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from cocoon.errors import RPCError
from cocoon.oci import convert
from cocoon.oci.spec import LinuxResources, Process
from cocoon.protocols.gen import agent_pb2
from cocoon.ttrpc.status import StatusCode
from tests.vm.container_kit import GuestSandbox, container_spec, module_sandbox

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def sandbox() -> Iterator[GuestSandbox]:
    """One VM for the module, in a private VM root that is checked for leaks at the end."""
    yield from module_sandbox("cks")


def facts(text: str) -> dict[str, str]:
    """`key=value` lines printed by a container, as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def sh(script: str, edit: Any = None) -> dict[str, Any]:
    return container_spec(["sh", "-c", script], edit)


# --- process ------------------------------------------------------------------------------------


def test_user_groups_and_umask(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"] = {"uid": 1234, "gid": 567, "additionalGids": [10, 20],
                                   "umask": 0o027}
        spec["root"]["readonly"] = False

    result = sandbox.run_sync("user", sh(
        "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); echo umask=$(umask); "
        "touch /tmp/made; echo mode=$(stat -c %a /tmp/made); "
        "echo status_groups=$(grep ^Groups: /proc/self/status | cut -f2)", edit))
    assert result.status == 0, result
    got = facts(result.out)
    assert got["uid"] == "1234"
    assert got["gid"] == "567"
    assert sorted(got["groups"].split()) == ["10", "20", "567"]
    assert got["umask"] == "0027"
    assert got["mode"] == "640"  # 0666 & ~027
    assert got["status_groups"].split() == ["10", "20"]


def test_env_cwd_and_hostname(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["env"] += ["GREETING=hello world", "EMPTY="]
        spec["process"]["cwd"] = "/etc"
        spec["hostname"] = "box-17"

    result = sandbox.run_sync("envcwd", sh(
        'echo greeting="$GREETING"; echo empty="[$EMPTY]"; echo path="$PATH"; '
        "echo cwd=$(pwd); echo hostname=$(hostname); echo uts=$(cat /proc/sys/kernel/hostname)",
        edit))
    assert result.status == 0, result
    got = facts(result.out)
    assert got["greeting"] == "hello world"
    assert got["empty"] == "[]"
    assert got["path"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert got["cwd"] == "/etc"
    assert got["hostname"] == "box-17"
    assert got["uts"] == "box-17"


def test_rlimits(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 333, "hard": 444},
            {"type": "RLIMIT_NPROC", "soft": 55, "hard": 66},
        ]

    result = sandbox.run_sync("rlimit", sh(
        "echo nofile_soft=$(ulimit -n); echo nofile_hard=$(ulimit -Hn); "
        "echo nproc=$(ulimit -u)", edit))
    assert result.status == 0, result
    got = facts(result.out)
    assert (got["nofile_soft"], got["nofile_hard"], got["nproc"]) == ("333", "444", "55")


def _caps(status_text: str) -> dict[str, int]:
    return {key: int(value, 16) for key, value in
            re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", status_text, re.MULTILINE)}


def test_capabilities_default_and_custom(sandbox: GuestSandbox) -> None:
    default = sandbox.run_sync("capdef", sh("grep ^Cap /proc/self/status"))
    assert default.status == 0, default
    # runc's defaults: CAP_AUDIT_WRITE (29), CAP_KILL (5), CAP_NET_BIND_SERVICE (10)
    want = (1 << 29) | (1 << 5) | (1 << 10)
    caps = _caps(default.out)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == want, default.out
    assert caps["CapInh"] == caps["CapAmb"] == 0

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["user"] = {"uid": 1000, "gid": 1000}
        spec["process"]["noNewPrivileges"] = False
        names = ["CAP_CHOWN", "CAP_NET_RAW"]
        spec["process"]["capabilities"] = {
            "bounding": [*names, "CAP_SYS_ADMIN"], "effective": names, "permitted": names,
            "inheritable": names, "ambient": ["CAP_NET_RAW"]}

    custom = sandbox.run_sync("capset", sh("grep ^Cap /proc/self/status", edit))
    assert custom.status == 0, custom
    caps = _caps(custom.out)
    chown, net_raw, sys_admin = 1 << 0, 1 << 13, 1 << 21
    # a non-root user keeps exactly its capabilities through exec by way of the ambient set
    assert caps["CapBnd"] == chown | net_raw | sys_admin, custom.out
    assert caps["CapInh"] == chown | net_raw
    assert caps["CapAmb"] == net_raw
    assert caps["CapPrm"] == caps["CapEff"] == net_raw


def test_no_new_privileges_and_oom_score_adj(sandbox: GuestSandbox) -> None:
    script = ("echo nnp=$(grep ^NoNewPrivs: /proc/self/status | cut -f2); "
              "echo adj=$(cat /proc/self/oom_score_adj)")

    def on(spec: dict[str, Any]) -> None:
        spec["process"]["noNewPrivileges"] = True
        spec["process"]["oomScoreAdj"] = 123

    def off(spec: dict[str, Any]) -> None:
        spec["process"]["noNewPrivileges"] = False
        spec["process"]["oomScoreAdj"] = -321

    first = facts(sandbox.run_sync("nnp-on", sh(script, on)).out)
    second = facts(sandbox.run_sync("nnp-off", sh(script, off)).out)
    assert (first["nnp"], first["adj"]) == ("1", "123")
    assert (second["nnp"], second["adj"]) == ("0", "-321")


# --- root, mounts, paths --------------------------------------------------------------------------


def test_readonly_rootfs_refuses_writes(sandbox: GuestSandbox) -> None:
    result = sandbox.run_sync("rofs", sh(
        "touch /new-file 2>&1; echo touch=$?; mkdir /new-dir 2>&1; echo mkdir=$?; "
        "echo x > /dev/shm/ok && echo shm=ok"))
    assert facts(result.out)["touch"] != "0", result.out
    assert facts(result.out)["mkdir"] != "0", result.out
    assert "Read-only file system" in result.out
    assert "shm=ok" in result.out  # mounts on top of a read-only root stay writable

    def writable(spec: dict[str, Any]) -> None:
        spec["root"]["readonly"] = False

    rootfs = sandbox.rootfs("rwfs")
    ok = sandbox.run_sync("rwfs", sh("echo written > /new-file && echo touch=0", writable),
                          rootfs=rootfs)
    assert facts(ok.out)["touch"] == "0", ok
    assert (rootfs / "new-file").read_text() == "written\n"  # through virtio-fs to the host


def test_masked_and_readonly_paths(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["maskedPaths"] += ["/proc/cpuinfo", "/etc/secret-dir"]
        spec["root"]["readonly"] = False

    rootfs = sandbox.rootfs("mask")
    (rootfs / "etc" / "secret-dir").mkdir()
    (rootfs / "etc" / "secret-dir" / "key").write_text("hunter2\n")
    result = sandbox.run_sync("mask", sh(
        "echo cpuinfo_bytes=$(cat /proc/cpuinfo | wc -c); "
        "echo secret=[$(ls /etc/secret-dir)]; "
        "echo kcore_bytes=$(cat /proc/kcore 2>/dev/null | wc -c); "
        "echo unmasked_bytes=$(cat /proc/version | wc -c); "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null; echo sysctl_write=$?; "
        "touch /etc/secret-dir/x 2>/dev/null; echo secret_write=$?", edit), rootfs=rootfs)
    assert result.status == 0, result
    got = facts(result.out)
    assert got["cpuinfo_bytes"] == "0"
    assert got["kcore_bytes"] == "0"
    assert got["secret"] == "[]"
    assert int(got["unmasked_bytes"]) > 0
    assert got["sysctl_write"] != "0"  # /proc/sys is in readonlyPaths
    assert got["secret_write"] != "0"  # a masked directory is an empty read-only tmpfs


def test_tmpfs_mount(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "size=2m", "mode=1770"]})

    result = sandbox.run_sync("tmpfs", sh(
        "grep ' /scratch ' /proc/mounts; echo data > /scratch/f && echo wrote=$(cat /scratch/f); "
        "echo mode=$(stat -c %a /scratch); echo size_kb=$(df -k /scratch | tail -1 | "
        "awk '{print $2}')", edit))
    assert result.status == 0, result
    assert re.search(r"^tmpfs /scratch tmpfs rw,nosuid,nodev", result.out, re.MULTILINE), \
        result.out
    got = facts(result.out)
    assert got["wrote"] == "data"
    assert got["mode"] == "1770"
    assert got["size_kb"] == "2048"


def test_bind_volumes_reach_the_host(sandbox: GuestSandbox) -> None:
    volume = sandbox.workdir / "volume"
    volume.mkdir()
    (volume / "from-host").write_text("host says hi\n")
    readonly = sandbox.workdir / "ro-volume"
    readonly.mkdir()
    (readonly / "file").write_text("read only\n")

    def edit(spec: dict[str, Any]) -> None:
        spec["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(volume),
             "options": ["rbind", "rw"]},
            {"destination": "/ro", "type": "bind", "source": str(readonly),
             "options": ["rbind", "ro"]},
        ]

    result = sandbox.run_sync("bind", sh(
        "echo read=$(cat /data/from-host); echo guest wrote this > /data/from-guest; "
        "echo wrote=$?; echo ro=$(cat /ro/file); echo nope > /ro/new 2>/dev/null; "
        "echo ro_write=$?", edit))
    assert result.status == 0, result
    got = facts(result.out)
    assert got["read"] == "host says hi"
    assert got["wrote"] == "0"
    assert (volume / "from-guest").read_text() == "guest wrote this\n"
    assert got["ro"] == "read only"
    assert got["ro_write"] != "0"
    assert not (readonly / "new").exists()


# --- isolation ------------------------------------------------------------------------------------


def test_pid1_is_the_container_process_and_the_agent_is_invisible(
        sandbox: GuestSandbox) -> None:
    result = sandbox.run_sync("iso", sh(
        "echo self=$$; echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); "
        "for p in /proc/[0-9]*; do echo proc=$(cat $p/cmdline | tr '\\0' ' '); done; "
        "echo python=$(ls /usr/bin/python3* /usr/lib/cocoon /run/cocoon 2>/dev/null | wc -l); "
        "while read src dst type rest; do echo mount=$dst $type; done < /proc/mounts"))
    assert result.status == 0, result
    got = facts(result.out)
    assert got["self"] == "1"
    assert got["pid1"].startswith("sh -c echo self")
    procs = [line.split("=", 1)[1] for line in result.out.splitlines()
             if line.startswith("proc=") and not line.startswith("proc=sh -c echo self")]
    # besides the script itself only the loop's own subshells and cat show up: no agent
    assert all("python" not in p and "cocoon" not in p for p in procs), procs
    assert len(procs) <= 3, procs
    assert got["python"] == "0"
    # the only virtio-fs mount is the container's own root: the share and the guest's root
    # (the agent's initramfs) are not reachable
    mounts = [line.split("=", 1)[1].split() for line in result.out.splitlines()
              if line.startswith("mount=")]
    assert [dst for dst, kind in mounts if kind == "virtiofs"] == ["/"], mounts
    assert not [dst for dst, kind in mounts if "cocoon" in dst or kind == "rootfs"], mounts


def test_seccomp_denies_a_syscall(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["root"]["readonly"] = False
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}],
        }

    result = sandbox.run_sync("seccomp", sh(
        "mkdir /tmp/denied 2>&1; echo mkdir=$?; touch /tmp/allowed; echo touch=$?; "
        "echo seccomp=$(grep ^Seccomp: /proc/self/status | cut -f2)", edit))
    got = facts(result.out)
    assert got["mkdir"] != "0", result.out
    assert "Operation not permitted" in result.out
    assert got["touch"] == "0"
    assert got["seccomp"] == "2"  # SECCOMP_MODE_FILTER


@pytest.mark.parametrize("nnp", [False, True])
def test_no_new_privileges_follows_the_config_with_a_seccomp_profile(
        sandbox: GuestSandbox, nnp: bool) -> None:
    """runc's behaviour: the filter does not set no_new_privs; the config does."""
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["noNewPrivileges"] = nnp
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}

    result = sandbox.run_sync(f"nnp-seccomp-{int(nnp)}", sh(
        "echo nnp=$(grep ^NoNewPrivs: /proc/self/status | cut -f2); "
        "echo seccomp=$(grep ^Seccomp: /proc/self/status | cut -f2)", edit))
    assert facts(result.out) == {"nnp": "1" if nnp else "0", "seccomp": "2"}, result.out


def test_ambient_capabilities_without_inheritable_ones_are_skipped_as_runc_does(
        sandbox: GuestSandbox) -> None:
    """buildah's RUN steps ask for ambient capabilities with an empty inheritable set; the
    kernel refuses to raise those, and runc goes on without them."""
    def edit(spec: dict[str, Any]) -> None:
        names = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SETUID"]
        spec["process"]["capabilities"] = {
            "bounding": names, "effective": names, "permitted": names, "ambient": names}

    result = sandbox.run_sync("ambient", sh("grep ^Cap /proc/self/status", edit))
    assert result.status == 0, result.err
    caps = _caps(result.out)
    assert caps["CapAmb"] == caps["CapInh"] == 0
    assert caps["CapEff"] == (1 << 0) | (1 << 13) | (1 << 7)


def test_seccomp_profile_that_cannot_be_applied_is_refused(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}

    with pytest.raises(RPCError) as caught:
        sandbox.run_sync("seccomp-bad", sh("true", edit))
    assert "SCMP_ACT_NOTIFY" in caught.value.status_message
    assert "linux.seccomp" in caught.value.status_message


# --- resources ------------------------------------------------------------------------------------


def test_cgroup_limits_are_applied(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"].update({
            "pids": {"limit": 20},
            "cpu": {"quota": 50000, "period": 100000, "shares": 512},
            "memory": {"limit": 64 << 20},
        })

    result = sandbox.run_sync("limits", sh(
        "cd /sys/fs/cgroup; echo cgroup=$(cat /proc/self/cgroup); "
        "echo pids=$(cat pids.max); echo cpu=$(cat cpu.max); echo weight=$(cat cpu.weight); "
        "echo memory=$(cat memory.max)", edit))
    assert result.status == 0, result
    got = facts(result.out)
    assert got["cgroup"] == "0::/"  # its own cgroup namespace
    assert got["pids"] == "20"
    assert got["cpu"] == "50000 100000"
    assert got["weight"] == str(1 + ((512 - 2) * 9999) // 262142)
    assert got["memory"] == str(64 << 20)


def test_pids_limit_stops_forks(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"]["pids"] = {"limit": 5}

    result = sandbox.run_sync("forks", sh(
        "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1; echo started; kill $(jobs -p) "
        "2>/dev/null; true", edit))
    assert "Resource temporarily unavailable" in result.out + result.err, result


def test_memory_limit_oom_kill_is_reported_to_the_host(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"]["memory"] = {"limit": 32 << 20, "swap": 32 << 20}

    async def scenario() -> tuple[int, str, int]:
        client = await sandbox.connect()
        try:
            # dd's 96 MiB buffer is touched by the read: far above the 32 MiB limit
            await sandbox.create(client, "oom", container_spec(
                ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"], edit))
            try:
                waiting = asyncio.create_task(sandbox.output_of(client, "oom"))
                await asyncio.sleep(0)
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="oom"))
                result = await waiting
                event = await sandbox.call(client, "GetOOMEvent", agent_pb2.GetOOMEventRequest(),
                                           agent_pb2.OOMEvent, timeout=10.0)
                stats = await sandbox.call(
                    client, "StatsContainer", agent_pb2.StatsContainerRequest(container_id="oom"),
                    agent_pb2.StatsContainerResponse)
                return (result.status, event.container_id,
                        int(stats.cgroup_stats.memory_stats.stats["oom_kill"]))
            finally:
                await sandbox.remove(client, "oom")
        finally:
            await client.close()

    status, oom_container, kills = asyncio.run(scenario())
    assert status == 137
    assert oom_container == "oom"
    assert kills >= 1


def test_update_container_changes_a_limit(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"]["pids"] = {"limit": 10}

    async def scenario() -> tuple[int, int, str, str]:
        client = await sandbox.connect()
        try:
            await sandbox.create(client, "upd", container_spec(["sleep", "600"], edit))
            try:
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="upd"))
                before = await _stats(sandbox, client, "upd")
                resources = LinuxResources.from_dict(
                    {"pids": {"limit": 42}, "cpu": {"quota": 20000, "period": 100000}},
                    "resources")
                await sandbox.call(client, "UpdateContainer", agent_pb2.UpdateContainerRequest(
                    container_id="upd", resources=convert.resources_to_proto(resources)))
                after = await _stats(sandbox, client, "upd")
                seen = await _exec_output(sandbox, client, "upd", "look", [
                    "sh", "-c", "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max"])
                return (before.pids_stats.limit, after.pids_stats.limit, seen.out, seen.err)
            finally:
                await sandbox.remove(client, "upd")
        finally:
            await client.close()

    before, after, seen, err = asyncio.run(scenario())
    assert (before, after) == (10, 42)
    assert seen.split("\n")[:2] == ["42", "20000 100000"], (seen, err)


async def _stats(sandbox: GuestSandbox, client: Any, cid: str) -> Any:
    response = await sandbox.call(client, "StatsContainer",
                                  agent_pb2.StatsContainerRequest(container_id=cid),
                                  agent_pb2.StatsContainerResponse)
    return response.cgroup_stats


async def _exec_output(sandbox: GuestSandbox, client: Any, cid: str, exec_id: str,
                       args: list[str], terminal: bool = False) -> Any:
    spec = Process.from_dict({"args": args, "cwd": "/", "terminal": terminal,
                              "user": {"uid": 0, "gid": 0},
                              "env": ["PATH=/usr/bin:/bin"]}, "process")
    await sandbox.call(client, "ExecProcess", agent_pb2.ExecProcessRequest(
        container_id=cid, exec_id=exec_id, process=convert.process_to_proto(spec)))
    return await sandbox.output_of(client, cid, exec_id)


def test_pause_and_resume_freeze_the_cgroup(sandbox: GuestSandbox) -> None:
    """A counting loop stops while paused and goes on from where it stopped when resumed."""
    async def scenario() -> tuple[list[int], list[int], list[int], str]:
        client = await sandbox.connect()
        try:
            await sandbox.create(client, "frz", container_spec(
                ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done"]))
            seen = bytearray()
            output = asyncio.create_task(sandbox.collect(client, "frz", into=seen))
            try:
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="frz"))
                await _until(lambda: len(_numbers(seen)) >= 3)
                await sandbox.call(client, "PauseContainer",
                                   agent_pb2.PauseContainerRequest(container_id="frz"))
                await asyncio.sleep(0.5)  # lines printed before the freeze still arrive
                before = _numbers(seen)
                await asyncio.sleep(2.0)
                during = _numbers(seen)
                with pytest.raises(RPCError) as again:
                    await sandbox.call(client, "PauseContainer",
                                       agent_pb2.PauseContainerRequest(container_id="frz"))
                await sandbox.call(client, "ResumeContainer",
                                   agent_pb2.ResumeContainerRequest(container_id="frz"))
                await _until(lambda: len(_numbers(seen)) >= len(during) + 2)
                return before, during, _numbers(seen), again.value.status_message
            finally:
                await sandbox.remove(client, "frz")
                await output
        finally:
            await client.close()

    before, during, after, again = asyncio.run(scenario())
    assert during == before  # frozen: not one line in two seconds
    assert after == list(range(1, len(after) + 1))  # the same process went on counting
    assert "paused" in again


def _numbers(seen: bytearray) -> list[int]:
    return [int(x) for x in bytes(seen).split()]


async def _until(condition: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not reached within {timeout} s"
        await asyncio.sleep(0.05)


def test_exec_runs_in_the_same_namespaces(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["hostname"] = "exec-host"

    probe = ("echo pid=$$; echo one=$(cat /proc/1/cmdline | tr '\\0' ' '); "
             "echo host=$(hostname); for n in pid mnt ipc uts cgroup; do "
             "echo $n=$(readlink /proc/self/ns/$n); done; echo root=$(ls /)")

    async def scenario() -> tuple[Any, Any, Any, int]:
        client = await sandbox.connect()
        try:
            await sandbox.create(client, "exe", container_spec(["sleep", "600"], edit))
            try:
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="exe"))
                first = await _exec_output(sandbox, client, "exe", "e1", ["sh", "-c", probe])
                init_ns = await _exec_output(sandbox, client, "exe", "e2", ["sh", "-c",
                    "for n in pid mnt ipc uts cgroup; do echo $n=$(readlink /proc/1/ns/$n); "
                    "done"])
                tty = await _exec_output(sandbox, client, "exe", "e3", ["tty"], terminal=True)
                with pytest.raises(RPCError) as missing:
                    await _exec_output(sandbox, client, "exe", "e4", ["/no/such/program"])
                return first, init_ns, tty, missing.value.code
            finally:
                await sandbox.remove(client, "exe")
        finally:
            await client.close()

    first, init_ns, tty, missing_code = asyncio.run(scenario())
    assert first.status == 0, first
    got, init = facts(first.out), facts(init_ns.out)
    assert got["one"] == "sleep 600"
    assert got["pid"] != "1"
    assert got["host"] == "exec-host"
    for kind in ("pid", "mnt", "ipc", "uts", "cgroup"):
        assert got[kind] == init[kind], (kind, first.out, init_ns.out)
    assert "bin" in got["root"].split() and "cocoon" not in got["root"]
    assert tty.status == 0 and tty.out.startswith("/dev/pts/"), tty
    assert missing_code in (StatusCode.FAILED_PRECONDITION, StatusCode.NOT_FOUND,
                            StatusCode.INVALID_ARGUMENT)


def test_terminal_in_the_guest(sandbox: GuestSandbox) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["terminal"] = True
        spec["process"]["consoleSize"] = {"height": 33, "width": 101}

    result = sandbox.run_sync("term", sh(
        "echo tty=$(tty); echo size=$(stty size); echo console=$(ls -l /dev/console | "
        "wc -l)", edit))
    assert result.status == 0, result
    got = facts(result.out.replace("\r", ""))
    assert got["tty"].startswith("/dev/pts/")
    assert got["size"] == "33 101"
    assert got["console"] == "1"
    assert result.stderr == b""  # a terminal has one stream


def test_unknown_container_is_not_found(sandbox: GuestSandbox) -> None:
    async def scenario() -> int:
        client = await sandbox.connect()
        try:
            with pytest.raises(RPCError) as caught:
                await sandbox.call(client, "StartContainer",
                                   agent_pb2.StartContainerRequest(container_id="ghost"),
                                   empty_pb2.Empty)
            return caught.value.code
        finally:
            await client.close()

    assert asyncio.run(scenario()) == StatusCode.NOT_FOUND


def test_a_removed_containers_id_can_be_used_again(sandbox: GuestSandbox) -> None:
    """The guest lets go of a removed container's share mounts: the id's next rootfs shows."""
    first = sandbox.rootfs("again")
    (first / "etc" / "generation").write_text("one\n")
    one = sandbox.run_sync("again", sh("cat /etc/generation"), rootfs=first)
    second = sandbox.rootfs("again")
    (second / "etc" / "generation").write_text("two\n")
    two = sandbox.run_sync("again", sh("cat /etc/generation"), rootfs=second)
    assert (one.out, two.out) == ("one\n", "two\n"), (one, two)


def test_sandbox_survives_for_more_containers(sandbox: GuestSandbox) -> None:
    """After every test above, the shared VM still runs a fresh container (nothing wedged)."""
    result = sandbox.run_sync("last", sh("echo still=alive"))
    assert facts(result.out)["still"] == "alive"
    assert not (sandbox.layout.shared / "last").exists()
    workdir: Path = sandbox.workdir
    assert workdir.exists()
