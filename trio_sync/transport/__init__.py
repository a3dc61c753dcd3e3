"""Transports: the Connection interface, WebSockets for real use, memory for simulation."""

from ._base import Connection, ConnectionHandler, Connector
from ._memory import MemoryConnection, MemoryNetwork
from ._websocket import WebSocketConnection, connect_websocket, serve_websocket

__all__ = [
    "Connection",
    "ConnectionHandler",
    "Connector",
    "MemoryConnection",
    "MemoryNetwork",
    "WebSocketConnection",
    "connect_websocket",
    "serve_websocket",
]
