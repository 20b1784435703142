"""A controller's periodic look at the topic queues, for ``/metrics``.

Every ``[metrics] queue_sample_interval`` seconds a controller serving
metrics asks its transport for the depth and consumers of the shared topic
queues (``conductor``, ``scheduler``, ``compute``) and sets the
``nubes_rpc_queue_messages`` / ``nubes_rpc_queue_consumers`` gauges. Any
controller does it, so the depth of the conductor queue is seen while every
conductor is stopped. Compute hosts do not: their broker users may not look
at shared queues (least privilege).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nubes import metrics
from nubes.rpc.transport import Transport

LOG = logging.getLogger(__name__)


class QueueSampler:
    """A service hook (``nubes.service.ServiceHook``): samples while the service runs."""

    def __init__(self, transport: Transport, queues: Sequence[str], interval: float) -> None:
        self.transport = transport
        self.queues = list(queues)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="nubes-queue-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sample(self) -> None:
        found = await self.transport.queue_stats(self.queues)
        for name, stats in found.items():
            metrics.rpc_queue_messages.labels(name).set(stats.messages)
            metrics.rpc_queue_consumers.labels(name).set(stats.consumers)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception as exc:
                # The bus away: the gauges keep their last value until it is back.
                LOG.debug("cannot sample the topic queues now: %s", exc)
            await asyncio.sleep(self.interval)
