"""Client side of the compute RPC API: what the conductor asks a host to do.

Every method is a cast to one host (``Target("compute", server=host)``) and
carries the identity of the conductor task step it belongs to
(``task_id``, ``step``, ``attempt``): the host reports the outcome back with
``ConductorAPI.step_finished`` and answers a repeated message with the same
outcome instead of doing the work twice.

Version history:

    1.0 - build_and_run_instance, terminate_instance, stop_instance,
          start_instance, reboot_instance
"""

from __future__ import annotations

from typing import Any

from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.serializer import ObjectSerializer
from nubes.rpc.client import RPCClient
from nubes.rpc.transport import Target, Transport

#: The RPC topic compute hosts listen on (each also on ``compute.<host>``).
TOPIC = "compute"
#: The newest version of the API this client knows.
VERSION = "1.0"

REBOOT_TYPES = ("SOFT", "HARD")


class ComputeAPI:
    def __init__(self, transport: Transport, version_cap: str | None = None) -> None:
        self.client = RPCClient(
            transport,
            Target(TOPIC),
            version="1.0",
            version_cap=version_cap,
            serializer=ObjectSerializer(),
        )

    def _host(self, host: str) -> RPCClient:
        return self.client.prepare(server=host, version="1.0")

    async def build_and_run_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        node: str,
        task_id: int,
        step: str,
        attempt: int,
        image: dict[str, Any],
        request: dict[str, Any],
    ) -> None:
        await self._host(host).cast(
            ctxt,
            "build_and_run_instance",
            instance=instance,
            node=node,
            task_id=task_id,
            step=step,
            attempt=attempt,
            image=image,
            request=request,
        )

    async def terminate_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        await self._host(host).cast(
            ctxt,
            "terminate_instance",
            instance=instance,
            task_id=task_id,
            step=step,
            attempt=attempt,
        )

    async def stop_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        await self._host(host).cast(
            ctxt, "stop_instance", instance=instance, task_id=task_id, step=step, attempt=attempt
        )

    async def start_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
    ) -> None:
        await self._host(host).cast(
            ctxt, "start_instance", instance=instance, task_id=task_id, step=step, attempt=attempt
        )

    async def reboot_instance(
        self,
        ctxt: RequestContext,
        host: str,
        instance: Instance,
        task_id: int,
        step: str,
        attempt: int,
        reboot_type: str,
    ) -> None:
        await self._host(host).cast(
            ctxt,
            "reboot_instance",
            instance=instance,
            task_id=task_id,
            step=step,
            attempt=attempt,
            reboot_type=reboot_type,
        )
