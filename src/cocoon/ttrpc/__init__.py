"""ttrpc (containerd's RPC over a byte stream): a sans-IO core and asyncio client and server.

Layers, bottom up: `frame` (the 10-byte header, encoder and decoder), `connection` (stream
state and validation, events), `status` (gRPC codes and the exception mapping), then the asyncio
`server` and `client`. The wire format is described in docs/agent-protocol.md.
"""

from cocoon.ttrpc.client import Client, ClientStream, Stub
from cocoon.ttrpc.connection import (
    ClientConnection,
    ClientEvent,
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerConnection,
    ServerEvent,
)
from cocoon.ttrpc.frame import (
    HEADER_SIZE,
    MAX_DATA_SIZE,
    Flags,
    Frame,
    FrameDecoder,
    MessageType,
    encode_frame,
    encode_header,
)
from cocoon.ttrpc.server import CallContext, MethodInfo, Server
from cocoon.ttrpc.status import Status, StatusCode, code_name

__all__ = [
    "HEADER_SIZE",
    "MAX_DATA_SIZE",
    "CallContext",
    "Client",
    "ClientConnection",
    "ClientEvent",
    "ClientStream",
    "DataReceived",
    "Event",
    "Flags",
    "Frame",
    "FrameDecoder",
    "MessageType",
    "MethodInfo",
    "RequestReceived",
    "ResponseReceived",
    "Server",
    "ServerConnection",
    "ServerEvent",
    "Status",
    "StatusCode",
    "Stub",
    "code_name",
    "encode_frame",
    "encode_header",
]
