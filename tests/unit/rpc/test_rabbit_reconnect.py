"""Reconnecting promptly: a backoff ends as soon as an unreachable broker
listens again; only an unreachable broker cuts a backoff short."""

from __future__ import annotations

import asyncio
import socket

import aiormq.exceptions

from nubes.rpc.rabbit_connection import BrokerConnection, is_unreachable
from nubes.rpc.transport import TransportURL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _refused(port: int) -> aiormq.exceptions.AMQPConnectionError:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        err = aiormq.exceptions.AMQPConnectionError(*exc.args)
        err.__cause__ = exc
        return err
    raise AssertionError("port unexpectedly open")


async def test_backoff_ends_when_the_broker_listens_again() -> None:
    port = _free_port()
    refused = _refused(port)
    assert is_unreachable(refused)
    # A backoff far longer than the test's timeout: only the probe can end it.
    conn: BrokerConnection[object] = BrokerConnection(
        TransportURL.parse(f"rabbit://u:p@127.0.0.1:{port}/"),
        setup=None,  # type: ignore[arg-type]
        lost=None,  # type: ignore[arg-type]
        backoff_min=600,
        backoff_max=600,
    )
    pause = asyncio.ensure_future(conn._pause(1, refused))
    await asyncio.sleep(0.3)
    assert not pause.done()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        await asyncio.wait_for(pause, 30)
    finally:
        server.close()
        await server.wait_closed()


def test_only_an_unreachable_broker_cuts_the_backoff_short() -> None:
    assert not is_unreachable(aiormq.exceptions.ProbableAuthenticationError("refused"))
    assert not is_unreachable(aiormq.exceptions.ChannelAccessRefused(None))  # type: ignore[arg-type]
    assert is_unreachable(ConnectionRefusedError(111, "refused"))


def test_a_reset_connection_is_not_unreachable() -> None:
    reset = aiormq.exceptions.AMQPConnectionError("reset")
    reset.__cause__ = ConnectionResetError(104, "reset")
    assert not is_unreachable(reset)
