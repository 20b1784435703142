"""Reaching the real servers the integration tests need.

A test that needs a server asks for it through :func:`require`. When the
server is not reachable the test skips with a message naming the server and
the one command that installs and starts it, except under CI (``CI`` set),
where a missing server is a failure: CI is meant to have them all.
"""

from __future__ import annotations

import os

import pytest

from nubes.testing.servers import (
    MARIADB_URL,
    POSTGRES_URL,
    RABBIT_URL,
    SERVERS,
    reachable,
)

__all__ = ["MARIADB_URL", "POSTGRES_URL", "RABBIT_URL", "SERVERS", "reachable", "require"]


def require(name: str) -> None:
    """Skip (or, under CI, fail) the calling test when server ``name`` is down."""
    if reachable(name):
        return
    host, port, how = SERVERS[name]
    message = f"{name} is not reachable at {host}:{port}; install and start it with: {how}"
    if os.environ.get("CI"):
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)


async def delete_rabbit_topology(url: str, topic: str, servers: tuple[str, ...]) -> None:
    """Delete the durable queues and fanout exchange a test's topic made."""
    import aiormq

    from nubes.rpc.rabbit_connection import amqp_url
    from nubes.rpc.rabbit_session import fanout_exchange
    from nubes.rpc.transport import TransportURL

    parsed = TransportURL.parse(url)
    conn = await aiormq.connect(amqp_url(parsed.hosts[0], parsed.virtual_host, 0))
    try:
        channel = await conn.channel()
        for queue in (topic, *(f"{topic}.{s}" for s in servers)):
            await channel.queue_delete(queue)
        await channel.exchange_delete(fanout_exchange(topic))
    finally:
        await conn.close()
