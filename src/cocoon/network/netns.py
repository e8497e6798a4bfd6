"""Running host code inside a container's network namespace.

Network namespaces are per thread: `setns(CLONE_NEWNET)` moves only the calling thread. So the
work is done on a fresh thread that joins the namespace first and ends with the work; the
caller's threads never change namespace, and a netlink socket or a tap opened on that thread
belongs to the namespace for good. The namespace is named by a path (a bind mount under
/run/netns, or /proc/<pid>/ns/net) that must already exist: nothing here creates one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from cocoon.errors import NetworkError
from cocoon.linux import syscalls as sc

T = TypeVar("T")


def open_netns(path: str) -> int:
    """An fd for the namespace at `path`; NetworkError naming the path when it cannot be."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise NetworkError(f"network namespace {path} does not exist", netns=path) from err
    except OSError as err:
        raise NetworkError(f"network namespace {path}: {err.strerror}", netns=path) from err
    return fd


def same_namespace(path: str, other: str = "/proc/self/ns/net") -> bool:
    """Whether `path` is the namespace `other` is in (by device and inode)."""
    a, b = os.stat(path), os.stat(other)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def run_in_netns(path: str, work: Callable[[], T]) -> T:
    """Run `work()` on a thread inside the namespace at `path`; return or raise what it did."""
    fd = open_netns(path)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            except OSError as err:
                raise NetworkError(f"cannot enter network namespace {path}: {err.strerror}",
                                   netns=path) from err
            outcome.append(work())
        except BaseException as err:  # handed to the caller's thread below
            failure.append(err)

    thread = threading.Thread(target=body, name=f"netns:{os.path.basename(path)}", daemon=True)
    try:
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if failure:
        raise failure[0]
    return outcome[0]
