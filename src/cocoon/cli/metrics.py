"""`cocoon metrics serve|show`: the sandboxes of this host in Prometheus' text format."""

from __future__ import annotations

import argparse
from typing import Any

from cocoon.cli.context import Context
from cocoon.errors import CocoonError

DEFAULT_LISTEN = "127.0.0.1:9910"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "metrics", help="expose the host's sandboxes to Prometheus")
    verbs = parser.add_subparsers(dest="metrics_verb", metavar="ACTION", required=True)
    serve = verbs.add_parser("serve", help="serve /metrics over HTTP until stopped")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"address to listen on (default: {DEFAULT_LISTEN})")
    serve.set_defaults(func=run_serve)
    show = verbs.add_parser("show", help="print one reading in the text format and exit")
    show.set_defaults(func=run_show)


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise CocoonError(f"--listen {text!r}: expected HOST:PORT with a port from 1 to 65535")
    return host.strip("[]") or "0.0.0.0", int(port)


def run_serve(args: argparse.Namespace, ctx: Context) -> int:
    import signal
    import threading

    from prometheus_client import start_http_server

    from cocoon.metrics.exposition import registry_for
    from cocoon.sandbox.layout import vm_root

    host, port = listen_address(args.listen)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry_for(vm_root()))
    except OSError as err:
        raise CocoonError(f"cannot listen on {args.listen}: {err.strerror}") from err
    print(f"cocoon metrics: serving http://{args.listen}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0


def run_show(args: argparse.Namespace, ctx: Context) -> int:
    from prometheus_client import generate_latest

    from cocoon.metrics.exposition import registry_for
    from cocoon.sandbox.layout import vm_root

    print(generate_latest(registry_for(vm_root())).decode(), end="")
    return 0
