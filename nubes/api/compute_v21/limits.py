"""``limits``: the project's quotas ([quota] options) and what it uses of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes.api.compute_v21 import common
from nubes.api.policy import Rule
from nubes.api.views import Field, View
from nubes.db.models import instance_groups, instances


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

QUOTAS = (
    "instances",
    "cores",
    "ram",
    "metadata_items",
    "key_pairs",
    "server_groups",
    "server_group_members",
    "injected_files",
    "injected_file_content_bytes",
)


async def usage(request: Request, project_id: str | None) -> dict[str, int]:
    async with common.state(request).db.reader(allow_stale=True) as conn:
        row = (
            await conn.execute(
                select(
                    func.count(instances.c.id),
                    func.coalesce(func.sum(instances.c.vcpus), 0),
                    func.coalesce(func.sum(instances.c.memory_mb), 0),
                ).where(instances.c.project_id == project_id, instances.c.deleted == 0)
            )
        ).one()
        group_count = await conn.scalar(
            select(func.count(instance_groups.c.id)).where(
                instance_groups.c.project_id == project_id, instance_groups.c.deleted == 0
            )
        )
    return {
        "instances": int(row[0]),
        "cores": int(row[1]),
        "ram": int(row[2]),
        "server_groups": int(group_count or 0),
    }


async def index(request: Request) -> Response:
    ctxt = common.ctx(request)
    common.authorize(request, "limits", Rule.ANY)
    project_id = ctxt.project_id
    tenant = request.query_params.get("tenant_id")
    if tenant is not None and tenant != project_id:
        common.authorize(request, "limits:other_project", Rule.ADMIN)
        project_id = tenant
    conf = common.state(request).conf
    record = {
        "quota": {name: getattr(conf.quota, name) for name in QUOTAS},
        "used": await usage(request, project_id),
    }
    absolute = ABSOLUTE.render(record, common.version(request))
    return common.json({"limits": {"rate": [], "absolute": absolute}})


ROUTES = [Route("/limits", index, methods=["GET"])]
