"""``POST /os-server-external-events``: events other services send about servers.

Nova's API for a network, volume or accelerator service (a user with the
``service`` role, or an administrator). Each event is answered on its own,
as Nova answers it: 200 accepted; 404 no such server; 422 the server has no
host yet (nothing could act on the event); 400 an event that needs a tag
came without one. The request answers 200 when every event was accepted,
207 (multi-status) when any was not. What an accepted event does:

``power-update`` (2.76; tag ``POWER_ON`` or ``POWER_OFF``)
    The server's power and vm_state follow what the sender saw (a STOPPED
    server powered on is ACTIVE, an ACTIVE one powered off is STOPPED), as
    Nova records it: only while no operation runs on the server (its
    task_state None: an operation records its own outcome), and nothing
    when it is in that state already. nubes' drivers have no hook for it
    (in Nova only Ironic's has), so the guest is not touched.
``network-changed``
    Nova refreshes the server's cached network info from Neutron. nubes
    keeps no such cache: a server's addresses and ports are read from the
    network service's records on every request, so they are current
    already; the event is accepted and logged.
``network-vif-plugged`` / ``-unplugged`` / ``-deleted``
    In Nova these wake a compute step waiting for Neutron to plug a port.
    nubes' own network service binds ports within the operation that needs
    them, so no step waits on an outside service; the events are accepted
    and logged.
``volume-extended`` (2.51), ``accelerator-request-bound`` (2.82),
``volume-reimaged`` (2.93)
    nubes has no volume or accelerator service, so no server has a volume
    or accelerator the tag could name: accepted and logged, as Nova accepts
    events it then finds nothing to do for.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import validation as v
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.db.api import instances as instances_api
from nubes.objects.states import PowerState, VMState, as_state, check_transition

LOG = logging.getLogger(__name__)

LAST = None
POWER_ON = "POWER_ON"
POWER_OFF = "POWER_OFF"
#: Events that mean nothing without a tag (the volume, the power state, the
#: accelerator request), Nova's TAG_REQUIRED.
TAG_REQUIRED = ("volume-extended", "power-update", "accelerator-request-bound")

_NETWORK_EVENTS = [
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
]


def _schema(names: list[str]) -> dict[str, Any]:
    event = {
        "type": "object",
        "properties": {
            "server_uuid": {"type": "string", "format": "uuid"},
            "name": {"type": "string", "enum": names},
            "status": {"type": "string", "enum": ["failed", "completed", "in-progress"]},
            "tag": {"type": "string", "maxLength": 255},
        },
        "required": ["server_uuid", "name"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"events": {"type": "array", "minItems": 1, "items": event}},
        "required": ["events"],
        "additionalProperties": False,
    }


#: The event names each microversion range takes (Nova's schemas).
CREATE: v.Versioned = [
    (("2.1", "2.50"), _schema(_NETWORK_EVENTS)),
    (("2.51", "2.75"), _schema([*_NETWORK_EVENTS, "volume-extended"])),
    (("2.76", "2.81"), _schema([*_NETWORK_EVENTS, "volume-extended", "power-update"])),
    (
        ("2.82", "2.92"),
        _schema([*_NETWORK_EVENTS, "volume-extended", "power-update", "accelerator-request-bound"]),
    ),
    (
        ("2.93", LAST),
        _schema(
            [
                *_NETWORK_EVENTS,
                "volume-extended",
                "power-update",
                "accelerator-request-bound",
                "volume-reimaged",
            ]
        ),
    ),
]

#: power-update: the state a server is found in -> the one its tag leads to.
_POWER_UPDATES = {
    (POWER_ON, VMState.STOPPED): (VMState.ACTIVE, PowerState.RUNNING),
    (POWER_OFF, VMState.ACTIVE): (VMState.STOPPED, PowerState.SHUTDOWN),
}


async def create(request: Request) -> Response:
    common.authorize(request, "os-server-external-events:create", Rule.SERVICE)
    body = await v.json_body(request)
    v.validate(body, CREATE, common.version(request))
    events: list[dict[str, Any]] = [dict(e) for e in body["events"]]
    state = common.state(request)
    result = 200
    async with state.db.writer() as conn:
        found = await instances_api.get_many_by_uuids(
            conn, sorted({e["server_uuid"] for e in events})
        )
        for event in events:
            event.setdefault("status", "completed")
            row = found.get(event["server_uuid"])
            if row is None:
                event.update(status="failed", code=404)
            elif event["name"] in TAG_REQUIRED and event.get("tag") is None:
                event.update(status="failed", code=400)
            elif not row["host"]:
                event.update(status="failed", code=422)
            else:
                event.update(status="completed", code=200)
                LOG.info(
                    "event %s:%s for server %s on %s",
                    event["name"],
                    event.get("tag"),
                    row["uuid"],
                    row["host"],
                )
                if event["name"] == "power-update":
                    updated = await _power_update(conn, row, event["tag"])
                    if updated is not None:
                        found[row["uuid"]] = updated
            if event["code"] != 200:
                result = 207
    return common.json({"events": events}, result)


async def _power_update(conn: Any, row: dict[str, Any], tag: str) -> dict[str, Any] | None:
    """Record the power state another service saw; the new row, or None when
    nothing changed (an operation runs, the state is already so, or the tag is
    neither POWER_ON nor POWER_OFF, which Nova's compute host ignores too)."""
    if row["task_state"] is not None:
        LOG.info("power-update %s for %s ignored: %s runs", tag, row["uuid"], row["task_state"])
        return None
    target = _POWER_UPDATES.get((tag, VMState(row["vm_state"])))
    if target is None:
        return None
    vm_state, power_state = target
    check_transition(as_state(row["vm_state"], None), (vm_state, None), row["uuid"])
    try:
        return await instances_api.update(
            conn,
            row["uuid"],
            {"vm_state": vm_state, "power_state": power_state},
            expected_vm_state=row["vm_state"],
            expected_task_state=None,
        )
    except exception.InstanceUpdateConflict:
        # An operation began meanwhile: it records its own outcome.
        return None


ROUTES = [Route("/os-server-external-events", create, methods=["POST"])]
