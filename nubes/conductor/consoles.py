"""A compute host opening a guest console for the console proxy.

The proxy brings the user's token to the guest's host (its console relay);
the host hands it here. The conductor spends the token only for a host that
may open it: the token must name the calling host, and the instance must be
placed on that host now (it may have moved since the URL was handed out).
Anything else is refused, audited, and leaves the token as it was.
"""

from __future__ import annotations

from typing import Any

from nubes import exception
from nubes.access import Caller, CallerKind
from nubes.conductor.authz import Authorizer
from nubes.db.api import consoles, instances
from nubes.db.engine import Database

_OBJ = "ConsoleAuthToken"


async def open_console(
    db: Database, authz: Authorizer, caller: Caller, token: str
) -> dict[str, Any]:
    """Spend ``token`` for ``caller`` (a compute host); what its relay needs."""
    if caller.kind is not CallerKind.COMPUTE:
        authz.refuse(caller, _OBJ, "open_console", None, "only a compute host opens consoles")
    async with db.writer() as conn:
        row = await consoles.get_valid(conn, token)
        if row is None:
            raise exception.ConsoleTokenNotFound()
        if row["compute_host"] != caller.host:
            authz.refuse(caller, _OBJ, "open_console", None, "the console is another host's")
        try:
            inst = await instances.get_by_uuid(conn, row["instance_uuid"])
        except exception.InstanceNotFound:
            inst = None
        if inst is None or inst["host"] != caller.host:
            authz.refuse(
                caller, _OBJ, "open_console", None, "the instance is not placed on this host"
            )
        if not await consoles.consume(conn, row):
            # Another use of the same token got there first.
            raise exception.ConsoleTokenNotFound()
    return {
        "instance_uuid": row["instance_uuid"],
        "console_type": row["console_type"],
        "internal_access_path": row["internal_access_path"],
    }
