"""Concurrent callers of one piece of work share a writer transaction.

:mod:`nubes.db.group_commit` groups writes that are single statements
(:class:`~nubes.db.group_commit.Write`). Some work reads, decides and writes
(IPAM: lock a subnet, read what is taken, pick, insert) and costs mostly
per transaction and per round trip, not per row: a build's ports are one
such piece. A :class:`TransactionBatcher` takes such work written once for
*many* keys, ``work(conn, keys) -> {key: result or exception}``, and runs
the keys of every caller that arrives while a batch is running as the next
batch, in one ``run_in_writer`` transaction (retried on deadlock). A lone
caller waits for nobody; fifty concurrent ones share a transaction and its
locks, taken once.

Per-key semantics are those of running each key alone, which is also the
fallback: ``work`` returns an exception for a key it refused without
writing anything for it (the others commit), and *raises* when something
went wrong after writing (no address left, a quota); the batch is then
rolled back and every key runs again alone, so each caller gets its own
outcome and nothing of a failed key is kept. There is no second copy of
the work: a lone key is a batch of one.

``read_only`` batches run in a ``reader()`` block instead: checks that only
read (is each of these instances on its caller's host?) share one query
and one round trip, where each alone would cost its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from nubes.db.engine import Database

LOG = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

#: The work: per key, its result or the error its caller is told.
Work = Callable[[AsyncConnection, Sequence[K]], Awaitable[Mapping[K, R | Exception]]]

#: Keys in one transaction at most (more wait for the next).
DEFAULT_MAX_BATCH = 64


class TransactionBatcher(Generic[K, R]):
    """Runs ``work`` for the keys of concurrent callers in shared transactions."""

    def __init__(
        self,
        db: Database,
        work: Work[K, R],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        read_only: bool = False,
    ):
        self._db = db
        self._work = work
        self.max_batch = max_batch
        self.read_only = read_only
        self._pending: list[tuple[K, asyncio.Future[R]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        #: Batches and keys run together; for tests and benchmarks.
        self.batches = 0
        self.keys = 0

    async def run(self, key: K) -> R:
        """``work`` for ``key``, in the next batch; its result (or its error raised)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests): what was queued on the old one cannot run.
            self._loop, self._pending, self._runner = loop, [], None
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((key, future))
        if self._runner is None or self._runner.done():
            # A fresh context: the runner must not join a caller's open block.
            self._runner = loop.create_task(
                self._drain(), name="nubes-transaction-batch", context=contextvars.Context()
            )
        return await future

    async def _drain(self) -> None:
        try:
            # Callers that arrive in this loop iteration join the first batch.
            await asyncio.sleep(0)
            while self._pending:
                batch = [(k, f) for k, f in self._pending[: self.max_batch] if not f.done()]
                del self._pending[: self.max_batch]
                if batch:
                    await self._run(batch)
        except asyncio.CancelledError:
            for _, future in self._pending:
                future.cancel()
            self._pending = []
            raise

    async def _run(self, batch: list[tuple[K, asyncio.Future[R]]]) -> None:
        if len(batch) > 1:
            try:
                results = await self._in_transaction([k for k, _ in batch])
            except Exception as exc:
                LOG.debug("batch of %d failed (%s); running each alone", len(batch), exc)
            else:
                self.batches += 1
                self.keys += len(batch)
                for key, future in batch:
                    _settle(future, results[key])
                return
        for key, future in batch:
            try:
                result = (await self._in_transaction([key]))[key]
            except Exception as exc:
                result = exc
            self.batches += 1
            self.keys += 1
            _settle(future, result)

    async def _in_transaction(self, keys: list[K]) -> Mapping[K, R | Exception]:
        if not self.read_only:
            return await self._db.run_in_writer(self._work, keys)
        async with self._db.reader() as conn:
            return await self._work(conn, keys)


def _settle(future: asyncio.Future[R], result: R | Exception) -> None:
    if future.done():
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
