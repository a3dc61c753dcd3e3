"""Transports: the Connection interface, WebSockets for real use, memory for simulation."""

from ._base import CLOSE_GOING_AWAY, CLOSE_NORMAL, Connection, ConnectionHandler, Connector
from ._listener import HttpHandler, HttpRequest, HttpResponse, ListenerConfig, serve_websocket
from ._memory import MemoryConnection, MemoryNetwork
from ._websocket import WebSocketConnection, connect_websocket, describe_close, parse_ws_url

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "Connection",
    "ConnectionHandler",
    "Connector",
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "ListenerConfig",
    "MemoryConnection",
    "MemoryNetwork",
    "WebSocketConnection",
    "connect_websocket",
    "describe_close",
    "parse_ws_url",
    "serve_websocket",
]
