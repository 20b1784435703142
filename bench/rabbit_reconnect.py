"""How soon rabbit:// works again after the broker comes back from an outage.

The broker stays up (it is shared): a TCP forwarder in front of it plays the
broker. Taking the forwarder down (closing its listener and every forwarded
connection) is the outage; listening again is the broker's return. A server
and a client transport connect through the forwarder with the default
reconnect settings; after ``--outage`` seconds (long enough for the backoff to
grow to its cap) the forwarder listens again, and the figure is the time from
then until a call through both transports succeeds. Rounds alternate and each
is printed, then the median.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import uuid

from nubes.rpc.transport import IncomingMessage, Target, TransportURL, get_transport

RABBIT_URL = os.environ.get("NUBES_TEST_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
OUTAGE = 15.0
ROUNDS = 3
CALL_TIMEOUT = 1.0


class Forwarder:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server: asyncio.Server | None = None
        self.port = 0
        self._links: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._links):
            writer.transport.abort()
        await self.server.wait_closed()
        self.server = None

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()
                self._links.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def _round(outage: float) -> float:
    parsed = TransportURL.parse(RABBIT_URL)
    host = parsed.hosts[0]
    fwd = Forwarder((host.host or "127.0.0.1", host.port or 5672))
    await fwd.up()
    auth = f"{host.username or 'guest'}:{host.password or 'guest'}"
    url = f"rabbit://{auth}@127.0.0.1:{fwd.port}/{parsed.virtual_host}"
    server, client = get_transport(url), get_transport(url)
    topic = f"bench-reconnect-{uuid.uuid4().hex[:8]}"

    async def echo(msg: IncomingMessage) -> None:
        await msg.reply(msg.body)

    await server.listen(topic, "s", echo)
    await client.connect()
    assert await client.call(Target(topic), b"before", 5.0) == b"before"
    await fwd.down()
    await asyncio.sleep(outage)
    await fwd.up()
    back = time.monotonic()
    while True:
        try:
            await client.call(Target(topic, server="s"), b"after", CALL_TIMEOUT)
            break
        except Exception:  # not back yet: any transport error or timeout
            await asyncio.sleep(0.01)
    took = time.monotonic() - back
    await client.close()
    await server.close()
    await fwd.down()
    return took


async def main(rounds: int, outage: float) -> None:
    figures = []
    for i in range(rounds):
        took = await _round(outage)
        figures.append(took)
        print(f"round {i + 1}: working again {took:.2f} s after the broker returned", flush=True)
    print(
        f"rabbit:// back after a {outage:.0f} s outage: median {statistics.median(figures):.2f} s, "
        f"range {min(figures):.2f}-{max(figures):.2f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--outage", type=float, default=OUTAGE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(args.rounds, args.outage))
