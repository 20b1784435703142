"""Questions the API asks the compute host of one running guest (its console
log, its diagnostics): the one place that finds the host and turns what the
host, or its absence, answers into Nova's HTTP answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request

from nubes import exception
from nubes.api.compute_v21 import common
from nubes.compute.rpcapi import ComputeAPI
from nubes.objects.states import VMState

_T = TypeVar("_T")


async def ask(
    request: Request,
    row: dict[str, Any],
    question: str,
    call: Callable[[ComputeAPI, str], Awaitable[_T]],
) -> _T:
    """``call(compute_api, host)`` for the server ``row``: 409 while it is on
    no host or not active, 501 when its host (an older one, or its driver)
    cannot answer ``question``, 409 when the host finds the guest in a state
    that cannot answer, and ComputeServiceUnavailable when the host is silent."""
    host = row.get("host")
    if not host:
        raise exception.InstanceNotReady(instance_id=row["uuid"], reason="it is on no host")
    if row["vm_state"] != VMState.ACTIVE:
        raise exception.InstanceNotReady(
            instance_id=row["uuid"], reason=f"it is {row['vm_state']}, not running"
        )
    compute = common.state(request).compute_api()
    if compute is None:
        raise exception.ComputeServiceUnavailable(host=host)
    try:
        return await call(compute, host)
    except (exception.UnsupportedVersion, exception.VirtOperationNotSupported) as exc:
        # An older host, or a driver that cannot: Nova's 501.
        raise exception.HostCannotAnswer(host=host, question=question, reason=str(exc)) from None
    except exception.MessagingTimeout:
        raise exception.ComputeServiceUnavailable(host=host) from None
