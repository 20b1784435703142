"""A tiny TCP forwarder: ``python -m nubes.testing.tcpforward LISTEN_ADDR PORT TARGET_ADDR PORT``.

The machine's services (RabbitMQ, the image API of a test) listen on
127.0.0.1, which a network namespace cannot reach: its loopback is its own.
Rather than change how a shared service listens, a namespaced-hosts harness
(nubes.testing.netns) runs one of these in the root namespace on the
root-side address of its hosts' subnet. It prints ``listening`` once bound,
and ends on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def serve(listen: str, port: int, target: str, target_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("listening", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> None:
    listen, port, target, target_port = argv
    asyncio.run(serve(listen, int(port), target, int(target_port)))


if __name__ == "__main__":
    main(sys.argv[1:])
