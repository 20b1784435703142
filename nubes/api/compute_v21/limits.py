"""``limits``: the project's quotas (:mod:`nubes.api.quotas`) and what it uses of them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api import quotas
from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import Field, View


def _q(name: str) -> Any:
    return lambda r, _: r["quota"][name]


def _u(name: str) -> Any:
    return lambda r, _: r["used"][name]


ABSOLUTE = View(
    Field("maxImageMeta", _q("metadata_items"), max="2.38"),
    Field("maxPersonality", _q("injected_files"), max="2.56"),
    Field("maxPersonalitySize", _q("injected_file_content_bytes"), max="2.56"),
    Field("maxSecurityGroupRules", lambda r, _: -1, max="2.35"),
    Field("maxSecurityGroups", lambda r, _: -1, max="2.35"),
    Field("maxServerGroupMembers", _q("server_group_members")),
    Field("maxServerGroups", _q("server_groups")),
    Field("maxServerMeta", _q("metadata_items")),
    Field("maxTotalCores", _q("cores")),
    Field("maxTotalFloatingIps", lambda r, _: -1, max="2.35"),
    Field("maxTotalInstances", _q("instances")),
    Field("maxTotalKeypairs", _q("key_pairs")),
    Field("maxTotalRAMSize", _q("ram")),
    Field("totalCoresUsed", _u("cores")),
    Field("totalFloatingIpsUsed", lambda r, _: 0, max="2.35"),
    Field("totalInstancesUsed", _u("instances")),
    Field("totalRAMUsed", _u("ram")),
    Field("totalSecurityGroupsUsed", lambda r, _: 0, max="2.35"),
    Field("totalServerGroupsUsed", _u("server_groups")),
)


async def index(request: Request) -> Response:
    ctxt = common.ctx(request)
    common.authorize(request, "limits", Rule.ANY)
    project_id = ctxt.project_id
    tenant = request.query_params.get("tenant_id")
    if tenant is not None and tenant != project_id:
        common.authorize(request, "limits:other_project", Rule.ADMIN)
        project_id = tenant
    state = common.state(request)
    # The project's limits and usage, as os-quota-sets shows them (Nova's
    # limits view is per project, whoever in it asks).
    async with state.db.reader() as conn:
        record = {
            "quota": await quotas.project_limits(conn, state.conf, project_id or ""),
            "used": await quotas.usage(conn, project_id or ""),
        }
    absolute = ABSOLUTE.render(record, common.version(request))
    return common.json({"limits": {"rate": [], "absolute": absolute}})


ROUTES = [Route("/limits", common.known_query(index, {"2.75": ("tenant_id",)}), methods=["GET"])]
