"""``/os-volumes_boot``: Nova's old alias of ``/servers``, until 2.102.

The alias of the volume-boot extension, never documented: the same list,
create, show, update, delete and actions as ``/servers`` (same policies,
same bodies, links naming ``servers``). 2.103 removes it: from then on every
request to it is 404, as to a path that does not exist.
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api.compute_v21 import common, server_actions, servers

#: The last version that serves the alias.
LAST_VERSION = "2.102"


def _until_removed(handler: common.Handler) -> common.Handler:
    @functools.wraps(handler)
    async def served(request: Request) -> Response:
        if not common.version(request).matches(max_version=LAST_VERSION):
            raise exception.NotFound(message="The resource could not be found.")
        return await handler(request)

    return served


ROUTES = [
    Route("/os-volumes_boot", _until_removed(servers.index), methods=["GET"]),
    Route("/os-volumes_boot", _until_removed(servers.create), methods=["POST"]),
    Route("/os-volumes_boot/detail", _until_removed(servers.detail), methods=["GET"]),
    Route(
        "/os-volumes_boot/{server_id}",
        _until_removed(common.no_query(servers.show)),
        methods=["GET"],
    ),
    Route("/os-volumes_boot/{server_id}", _until_removed(servers.update), methods=["PUT"]),
    Route("/os-volumes_boot/{server_id}", _until_removed(servers.delete), methods=["DELETE"]),
    Route(
        "/os-volumes_boot/{server_id}/action",
        _until_removed(server_actions.action),
        methods=["POST"],
    ),
]
