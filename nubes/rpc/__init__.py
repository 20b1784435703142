"""Versioned RPC over a message bus (``memory://`` or ``rabbit://``)."""

from nubes.rpc.client import RPCClient
from nubes.rpc.serializer import Serializer
from nubes.rpc.server import RPCServer
from nubes.rpc.transport import Target, Transport, get_transport

__all__ = ["RPCClient", "RPCServer", "Serializer", "Target", "Transport", "get_transport"]
