"""Batching for the rabbit transport: several RPC messages in one AMQP message.

Every AMQP message costs the client library a fixed amount of work on each
side (frames marshalled, parsed and queued one by one, a task per delivery),
whatever its size; under load that, not RabbitMQ, bounds throughput. So the
messages a process sends in one event-loop iteration to the same address,
with the same properties, travel together: one AMQP message whose body is a
:func:`pack` of them and whose ``x-nubes-batch`` header counts them. One
confirm covers every cast of a batch; the receiver runs each message as if it
had come alone and acknowledges the batch when all of them are done.

A message that is alone in its iteration goes out as it is (no header, no
envelope), so the batching costs a lone caller nothing.

The envelope is ours, not AMQP's: per message a short id (the call's
correlation id, or empty) and the body, each length-prefixed. Whatever the
sender, it is read defensively (:func:`unpack` refuses a malformed or
oversized batch): the broker vouches for the sender (``user_id``), not for
the body.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from nubes.rpc.transport import MAX_MESSAGE_BYTES

#: The AMQP header that marks a batch; its value is the number of messages.
BATCH_HEADER = "x-nubes-batch"
#: Messages one batch carries at most. Kept moderate: a batch goes to one
#: server of a shared queue, so larger batches would spread load worse.
MAX_BATCH = 32
#: A message at least this large goes alone (batching saves nothing on it).
MAX_BATCHED_BODY = 64 * 1024
#: Messages a receiver accepts in one batch (what any sender may put in one).
MAX_RECEIVED_BATCH = 256

_ID_LEN = struct.Struct(">B")
_BODY_LEN = struct.Struct(">I")


def pack(parts: list[tuple[str, bytes]]) -> bytes:
    """The envelope of ``(id, body)`` pairs; ids are at most 255 bytes."""
    out: list[bytes] = []
    for ident, body in parts:
        raw = ident.encode()
        if len(raw) > 255:
            raise ValueError(f"batch id longer than 255 bytes: {ident[:40]!r}...")
        out += [_ID_LEN.pack(len(raw)), raw, _BODY_LEN.pack(len(body)), body]
    return b"".join(out)


def unpack(data: bytes, count: object) -> list[tuple[str, bytes]]:
    """The ``(id, body)`` pairs of a batch of ``count`` messages.

    Raises ValueError when the envelope does not hold exactly ``count`` well
    formed messages, or more than the receiver accepts.
    """
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_RECEIVED_BATCH:
        raise ValueError(f"bad batch count {count!r}")
    view = memoryview(data)
    parts: list[tuple[str, bytes]] = []
    at = 0
    try:
        for _ in range(count):
            (n,) = _ID_LEN.unpack_from(view, at)
            at += 1
            ident = bytes(view[at : at + n]).decode()
            at += n
            (size,) = _BODY_LEN.unpack_from(view, at)
            at += 4
            if size > MAX_MESSAGE_BYTES or at + size > len(view):
                raise ValueError("batched message overruns the batch")
            parts.append((ident, bytes(view[at : at + size])))
            at += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed batch: {exc}") from exc
    if at != len(view):
        raise ValueError("bytes left over after the batch")
    return parts


K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Pending:
    ident: str
    body: bytes
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Group:
    items: list[_Pending] = field(default_factory=list)
    size: int = 0


#: ``send(key, parts)`` publishes one message (``len(parts) == 1``, sent as
#: it is) or one batch; it returns when the publish is done (queued, or
#: confirmed by the broker).
Send = Callable[[K, list[tuple[str, bytes]]], Awaitable[None]]


class Batcher(Generic[K]):
    """Groups what is sent in one loop iteration by ``key`` and sends each group.

    :meth:`send` returns (or raises) when the group its message went out in
    was sent, so a caller sees exactly the outcome it would have alone.
    """

    def __init__(self, send: Send[K]) -> None:
        self._send = send
        self._groups: dict[K, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, key: K, ident: str, body: bytes, *, alone: bool = False) -> None:
        """Send one message; ``alone``: never in a batch (a plain consumer reads it)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if alone or len(body) >= MAX_BATCHED_BODY:
            await self._send(key, [(ident, body)])
            return
        if not self._groups:
            loop.call_soon(self._flush)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        group.items.append(_Pending(ident, body, done))
        group.size += len(body)
        if len(group.items) >= MAX_BATCH or group.size >= MAX_BATCHED_BODY:
            # Full: send it now; later messages to the key start a new group.
            del self._groups[key]
            self._start(key, group.items)
        await done

    def _flush(self) -> None:
        groups, self._groups = self._groups, {}
        for key, group in groups.items():
            self._start(key, group.items)

    def _start(self, key: K, items: list[_Pending]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(key, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: K, items: list[_Pending]) -> None:
        live = [item for item in items if not item.done.done()]  # a caller may have given up
        if not live:
            return
        try:
            await self._send(key, [(item.ident, item.body) for item in live])
        except BaseException as exc:
            for item in live:
                if not item.done.done():
                    if isinstance(exc, asyncio.CancelledError):
                        item.done.cancel()
                    else:
                        item.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for item in live:
            if not item.done.done():
                item.done.set_result(None)
