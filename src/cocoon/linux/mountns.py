"""Work done in another process's mount namespace, by a forked child that joins it.

setns(CLONE_NEWNS) is refused to a process that shares its filesystem attributes with other
threads, and would change the caller's whole view of the tree: a child forked for the purpose
joins the namespace, does the work and exits, and its `OSError` is raised in the caller. The
child runs only the given function (no logging, no locks another thread may hold).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from cocoon.linux import syscalls as sc

_REPORT_MAX = 4096


def same_namespace(fd: int) -> bool:
    """Whether the namespace open at `fd` is this process's own mount namespace."""
    mine, other = os.stat("/proc/self/ns/mnt"), os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (other.st_dev, other.st_ino)


def call_in(ns_fd: int, work: Callable[[], None]) -> None:
    """Run `work` in the mount namespace open at `ns_fd`; its OSError is raised here."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's status and report are checked below
        code = 0
        try:
            os.close(read_end)
            sc.setns(ns_fd, sc.CLONE_NEWNS)
            os.chdir("/")
            work()
        except OSError as err:
            code = 1
            _report(write_end, err.errno or 0, err.strerror or str(err), err.filename)
        except BaseException as err:
            code = 2
            _report(write_end, 0, f"{type(err).__name__}: {err}", None)
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, _REPORT_MAX):
            chunks.append(chunk)
            if sum(map(len, chunks)) > _REPORT_MAX:
                break
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if status == 0:
        return
    try:
        report = json.loads(b"".join(chunks)[:_REPORT_MAX])
        raise OSError(int(report["errno"]), str(report["message"]), report.get("filename"))
    except (ValueError, KeyError, TypeError):
        raise OSError(0, f"the child in the other mount namespace failed (status {status:#x})"
                      ) from None


def _report(fd: int, number: int, message: str, filename: object) -> None:
    data = json.dumps({"errno": number, "message": message,
                       "filename": None if filename is None else str(filename)})
    os.write(fd, data.encode()[:_REPORT_MAX])
