"""The long-running shim of one pod: serves `containerd.task.v2.Task` on the socket `start` bound.

`start` binds the socket before it returns the address to containerd (so containerd can connect
at once) and hands it over as an inherited descriptor:

    python -m cocoon.shim.daemon --fd N --socket PATH --namespace NS --address ADDR --pod ID

The daemon lives in its own session, so containerd can restart without taking it along, and
exits when containerd asks it to (Shutdown, once no container is left) or on SIGTERM; either
way it stops the pod's VM, unmounts what it mounted and removes its socket before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from cocoon import log
from cocoon.config import current as settings
from cocoon.protocols.gen import containerd_task_pb2
from cocoon.shim.address import vm_dir
from cocoon.shim.events import Publisher
from cocoon.shim.logfifo import FifoHandler
from cocoon.shim.pod import Pod
from cocoon.shim.task import TaskService
from cocoon.ttrpc.server import Server

logger = logging.getLogger("cocoon.shim.daemon")

TASK_SERVICE = containerd_task_pb2.DESCRIPTOR.services_by_name["Task"]
SHUTDOWN_GRACE = 1.0


def setup_logging(debug: bool) -> None:
    """Log to containerd's `log` fifo in the working directory (and `runtime.shim_log`)."""
    # without runtime.shim_log the first handler writes to stderr, which is /dev/null
    shim_log = settings().runtime.shim_log
    root = log.setup("DEBUG" if debug else "INFO", path=str(shim_log) if shim_log else None)
    fifo = FifoHandler(Path("log").absolute())
    fifo.setFormatter(log.TextFormatter())
    root.addHandler(fifo)


def _remove_socket(path: Path, inode: int) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_ino == inode:
            path.unlink()


async def serve(sock: socket.socket, socket_path: Path, namespace: str, address: str,
                pod_id: str, debug: bool) -> None:
    inode = socket_path.stat().st_ino
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = Publisher(os.environ.get("TTRPC_ADDRESS", ""), namespace)
    publisher.start()
    pod = Pod(pod_id, vm_dir(address, namespace, pod_id), debug=debug)
    service = TaskService(pod, publisher, stop.set)
    server = Server()
    server.register_service(TASK_SERVICE, service)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.serve_connection(reader, writer, peer=f"containerd via {socket_path}")

    listener = await asyncio.start_unix_server(accept, sock=sock)
    logger.info("shim for pod %s serving %s (pid %d)", pod_id, socket_path, os.getpid())
    try:
        await stop.wait()
    finally:
        logger.info("shim for pod %s shutting down", pod_id)
        listener.close()
        _remove_socket(socket_path, inode)
        await service.close()
        await publisher.flush(timeout=3.0)
        await server.close(grace=SHUTDOWN_GRACE)
        await publisher.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cocoon-shim-daemon")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    sock = socket.socket(fileno=args.fd)
    code = 0
    try:
        asyncio.run(serve(sock, args.socket, args.namespace, args.address, args.pod, args.debug))
    except BaseException:
        logger.exception("the shim failed")
        code = 1
    finally:
        logging.shutdown()
    # relay threads blocked on a fifo nobody reads must not keep the process alive
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
