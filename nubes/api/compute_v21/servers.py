"""Servers: create, list, detail, show, update, delete, and the server actions.

Handlers are thin: they validate (schemas of :mod:`server_schemas`), check
policy, and call :class:`nubes.api.servers.ServersAPI`, which owns every
state change. A server of another project is 404 to non-admins (as in Nova,
its existence is not revealed); readers may only read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nubes import exception
from nubes.api import images as images_api
from nubes.api import instance_rules
from nubes.api import validation as v
from nubes.api.compute_v21 import common, hosts, server_params
from nubes.api.compute_v21 import server_schemas as schemas
from nubes.api.compute_v21 import server_views as views
from nubes.api.compute_v21.server_views import ServerContext
from nubes.api.policy import Rule
from nubes.api.servers import ServersAPI
from nubes.db.api import ReadDeleted
from nubes.db.api import compute_nodes as compute_nodes_db
from nubes.db.api import groups as groups_db
from nubes.db.api import instances as instances_db
from nubes.db.api import tags as tags_db
from nubes.network import ports
from nubes.network.resources import NetworkService

#: List filters every project member may use (Nova's _get_server_search_options).
USER_FILTERS = ("reservation_id", "name", "status", "image", "flavor", "ip", "changes-since")
#: What later microversions let every member filter by, too.
USER_FILTERS_FROM = {
    "2.5": ("ip6",),
    "2.66": ("changes-before",),
    "2.73": ("locked",),
    # 2.83: more of the admin filters, for members too.
    "2.83": (
        "availability_zone",
        "config_drive",
        "key_name",
        "created_at",
        "launched_at",
        "terminated_at",
        "power_state",
        "task_state",
        "vm_state",
        "progress",
        "user_id",
    ),
}
#: Every query parameter Nova's list schema knows (servers.py query_params_v21);
#: from 2.75 any other is refused. Known ones nubes cannot filter by are
#: ignored, as Nova ignores them (its schema lists them for old clients).
KNOWN_QUERY = frozenset(
    {
        *USER_FILTERS,
        *(name for names in USER_FILTERS_FROM.values() for name in names),
        "user_id",
        "project_id",
        "tenant_id",
        "launch_index",
        "image_ref",
        "kernel_id",
        "ramdisk_id",
        "hostname",
        "key_name",
        "power_state",
        "vm_state",
        "task_state",
        "host",
        "node",
        "display_name",
        "description",
        "display_description",
        "locked_by",
        "uuid",
        "root_device_name",
        "access_ip_v4",
        "access_ip_v6",
        "auto_disk_config",
        "soft_deleted",
        "deleted",
        "block_device_mapping",
        "services",
        "metadata",
        "system_metadata",
        "info_cache",
        "security_groups",
        "pci_devices",
        "limit",
        "marker",
        "sort_key",
        "sort_dir",
        "all_tenants",
        "tags",
        "tags-any",
        "not-tags",
        "not-tags-any",
    }
)
#: Query parameters that are not filters.
_NOT_FILTERS = ("limit", "marker", "sort_key", "sort_dir", "all_tenants")
#: Admin filters mapped straight onto instance columns.
_ADMIN_EXACT = {
    "host": "host",
    "node": "node",
    "user_id": "user_id",
    "availability_zone": "availability_zone",
    "vm_state": "vm_state",
    "task_state": "task_state",
    "power_state": "power_state",
    "key_name": "key_name",
    "hostname": "hostname",
    "uuid": "uuid",
}
#: Filters Nova matches as a regular expression against the column's text
#: (its database's REGEXP on a number or a time), done here in Python.
_REGEX_COLUMNS = ("progress", "created_at", "launched_at", "terminated_at")


def _api(request: Request) -> ServersAPI:
    api: ServersAPI = common.state(request).servers_api()
    return api


# --- reading -----------------------------------------------------------------------------


async def get_server(
    request: Request, server_id: str, *, read_deleted: ReadDeleted = "no"
) -> dict[str, Any]:
    """The instance if the caller may see it; InstanceNotFound otherwise (never 403)."""
    async with common.state(request).db.reader() as conn:
        row = await instances_db.get_by_uuid(conn, server_id, read_deleted=read_deleted)
    if not common.is_admin(request) and row["project_id"] != common.ctx(request).project_id:
        raise exception.InstanceNotFound(instance_id=server_id)
    return row


def body_mode(request: Request) -> str:
    """The view of a PUT or rebuild answer: short before 2.75, a full show from it."""
    return "show" if common.version(request).at_least("2.75") else "update"


async def server_context(
    request: Request, rows: list[dict[str, Any]], mode: str = "show", *, one: bool = False
) -> ServerContext:
    """Faults, zones and host states the views of ``rows`` need (one read).

    ``one``: the body of a single server (show, update, rebuild), which
    from 2.71 names the server's group.
    """
    admin = common.is_admin(request)
    x = ServerContext(request, admin, common.state(request).conf, mode)
    version = common.version(request)
    if rows:
        async with common.state(request).db.reader(allow_stale=True) as conn:
            if one and version.at_least("2.71"):
                x.server_groups = {r["uuid"]: await _group_of(conn, r["uuid"]) for r in rows}
            if version.at_least("2.26"):
                x.tags = await tags_db.get_by_instances(conn, [r["uuid"] for r in rows])
            x.addresses = await ports.addresses(conn, [r["uuid"] for r in rows])
            x.groups = await ports.group_names(conn, [r["uuid"] for r in rows])
    if mode != "show" and not any(r["vm_state"] in ("error", "deleted") for r in rows):
        return x
    async with common.state(request).db.reader(allow_stale=True) as conn:
        faulty = [
            r["uuid"]
            for r in rows
            if views.status_from_state(r["vm_state"], r["task_state"]) in views.FAULT_STATUSES
        ]
        if faulty:
            found = await instances_db.faults_get_by_instance_uuids(conn, faulty, latest=True)
            x.faults = {uuid: faults[0] for uuid, faults in found.items() if faults}
        if mode == "show":
            x.zones = await hosts.host_zones(conn)
        if mode == "show" and admin and version.at_least("2.16"):
            services = await hosts.all_services(conn, binary="compute")
            x.host_status = {s["host"]: _host_status(s, x) for s in services}
    return x


async def _group_of(conn: Any, instance_uuid: str) -> list[str]:
    try:
        return [(await groups_db.group_get_by_instance(conn, instance_uuid))["uuid"]]
    except exception.InstanceGroupNotFound:
        return []


def _host_status(service: Mapping[str, Any], x: ServerContext) -> str:
    if service.get("forced_down"):
        return "DOWN"
    if service.get("disabled"):
        return "MAINTENANCE"
    return "UP" if hosts.is_up(dict(service), x.conf) else "UNKNOWN"


async def show(request: Request) -> Response:
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:show", Rule.PROJECT_READER, row["project_id"])
    x = await server_context(request, [row], one=True)
    return common.json({"server": views.render(views.SERVER, row, x)})


# --- listing -----------------------------------------------------------------------------


def _all_tenants(request: Request) -> bool:
    raw = request.query_params.get("all_tenants")
    if raw is None:
        return False
    if raw == "":
        return True
    try:
        return v.parse_bool("all_tenants", raw)
    except exception.ValidationError:
        raise common.bad_request(f"Invalid value '{raw}' for all_tenants parameter") from None


def _filters(request: Request, is_detail: bool) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(SQL filters, Python filters, read_deleted) from the query string, as Nova reads it."""
    params = request.query_params
    admin = common.is_admin(request)
    version = common.version(request)
    ctxt = common.ctx(request)
    sql: dict[str, Any] = {}
    python: dict[str, Any] = {}
    read_deleted = "no"
    if _all_tenants(request):
        which = "detail" if is_detail else "index"
        common.authorize(request, f"servers:{which}:get_all_tenants", Rule.ADMIN)
        tenant = params.get("project_id") or params.get("tenant_id")
        if tenant:
            sql["project_id"] = tenant
    else:
        sql["project_id"] = ctxt.project_id
    allowed = set(USER_FILTERS)
    for since, names in USER_FILTERS_FROM.items():
        if version.at_least(since):
            allowed |= set(names)
    if version.at_least("2.26"):
        allowed |= set(tags_db.FILTERS)
    if version.at_least("2.75"):
        v.refuse_unknown_query(request, KNOWN_QUERY)
    for key in set(params.keys()) - set(_NOT_FILTERS):
        values = params.getlist(key)
        value = values[-1]
        if not admin and key not in allowed:
            continue  # Nova drops the filters a user may not use
        if key == "status":
            vm_states, task_states = views.states_from_status(values)
            if not vm_states:
                if version.at_least("2.38"):
                    raise common.bad_request("Invalid status value")
                python["nothing"] = True
                continue
            if vm_states == ["deleted"]:
                if not admin:
                    raise exception.Forbidden(
                        message="Only administrators may list deleted instances"
                    )
                read_deleted = "only"
            sql["vm_state"] = vm_states
            if "default" not in task_states:
                sql["task_state"] = task_states
        elif key == "name":
            wanted = v.name_filter(key, value)
            if isinstance(wanted, str):
                sql["name"] = wanted
            else:
                python["name"] = wanted
        elif key == "image":
            sql["image_ref"] = value.rstrip("/").rsplit("/", 1)[-1]
        elif key == "flavor":
            sql["flavorid"] = value.rstrip("/").rsplit("/", 1)[-1]
        elif key == "reservation_id":
            sql["reservation_id"] = value
        elif key in ("ip", "ip6"):
            # Nova matches a regular expression against the server's addresses.
            try:
                python[key] = re.compile(value)
            except re.error:
                raise common.bad_request(f"Invalid filter field: {key} ({value}).") from None
        elif key == "changes-since":
            sql["changes_since"] = common.parse_time(key, value)
            if read_deleted == "no":
                read_deleted = "yes"  # changes include deletions
        elif key == "changes-before":
            if not version.at_least("2.66"):
                continue
            sql["changes_before"] = common.parse_time(key, value)
            if read_deleted == "no":
                read_deleted = "yes"
        elif key == "locked":
            if not version.at_least("2.73"):
                continue
            sql["locked"] = _bool_filter(key, value)
        elif key == "config_drive":
            python["config_drive"] = _bool_filter(key, value)
        elif key in _REGEX_COLUMNS:
            try:
                python.setdefault("columns", {})[key] = re.compile(value)
            except re.error:
                raise common.bad_request(f"Invalid filter field: {key} ({value}).") from None
        elif key in tags_db.FILTERS:
            if not version.at_least("2.26"):
                continue  # unknown before 2.26: Nova ignores it
            # Comma-separated; as for Nova's other single-valued filters, the
            # last one given counts.
            sql[key] = sorted(set(value.split(",")))
        elif key == "deleted" and admin:
            if v.parse_bool("deleted", value):
                read_deleted = "only"
        elif key in _ADMIN_EXACT:
            if key == "power_state":
                try:
                    states = [int(x) for x in values if x.isascii()]
                except ValueError:
                    states = []
                # Only what fits the column: a bigger number is no state
                # (and the driver could not even send it).
                if len(states) != len(values) or any(abs(n) > v.MAX_INT for n in states):
                    raise common.bad_request(f"Invalid filter field: {key}.")
                sql[key] = states
            else:
                sql[_ADMIN_EXACT[key]] = values if len(values) > 1 else value
    common.check_changes_window(sql.get("changes_since"), sql.get("changes_before"))
    return sql, python, read_deleted


def _bool_filter(key: str, value: str) -> bool:
    try:
        return v.parse_bool(key, value)
    except exception.ValidationError:
        raise common.bad_request(
            f"Unrecognized value '{value}', acceptable values are: "
            "'0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        ) from None


def _sort(request: Request) -> tuple[list[str], list[str]]:
    keys = request.query_params.getlist("sort_key")
    dirs = request.query_params.getlist("sort_dir")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise exception.SchemaValidationError(
                field="sort_dir", value=d, reason=f"'{d}' is not one of ['asc', 'desc']"
            )
    valid = set(schemas.SORT_KEYS)
    if common.version(request).at_least("2.73"):
        valid.add("locked")
    for k in keys:
        if k not in valid:
            raise exception.SchemaValidationError(
                field="sort_key", value=k, reason=f"'{k}' is not a valid sort key"
            )
        if k in schemas.ADMIN_SORT_KEYS and not common.is_admin(request):
            raise exception.Forbidden(message=f"Only administrators can sort servers by {k}")
    if not keys:
        return ["created_at"], list(dirs[:1]) or ["desc"]
    mapped: list[str] = []
    mapped_dirs: list[str] = []
    for i, k in enumerate(keys):
        column = k if k in instances_db.SORT_KEYS else None
        if column is None:
            continue  # Nova ignores keys it cannot sort by
        mapped.append(column)
        mapped_dirs.append(dirs[i] if i < len(dirs) else (dirs[-1] if dirs else "desc"))
    return (mapped or ["created_at"]), (mapped_dirs or ["desc"])


def _matches(
    row: Mapping[str, Any],
    python: Mapping[str, Any],
    addresses: Mapping[str, Mapping[str, list[dict[str, Any]]]],
) -> bool:
    if python.get("nothing"):
        return False
    for key, version in (("ip", 4), ("ip6", 6)):
        wanted = python.get(key)
        if wanted is None:
            continue
        held = [
            a["addr"]
            for entries in addresses.get(row["uuid"], {}).values()
            for a in entries
            if a["version"] == version
        ]
        if not any(wanted.search(addr) for addr in held):
            return False
    wanted_drive = python.get("config_drive")
    if wanted_drive is not None and bool(row.get("config_drive")) != wanted_drive:
        return False
    for key, regex in python.get("columns", {}).items():
        value = row.get(key)
        if value is None:
            return False  # NULL matches no expression
        text = value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else str(value)
        if regex.search(text) is None:
            return False
    pattern = python.get("name")
    return pattern is None or pattern.search(row["display_name"] or "") is not None


async def _page(request: Request, is_detail: bool) -> tuple[list[dict[str, Any]], int]:
    sql, python, read_deleted = _filters(request, is_detail)
    sort_keys, sort_dirs = _sort(request)
    limit = common.limit(request)
    marker = request.query_params.get("marker")
    if python.get("nothing"):
        return [], limit
    found: list[dict[str, Any]] = []
    async with common.state(request).db.reader(allow_stale=True) as conn:
        if marker is not None and not common.is_admin(request):
            # A marker from another project is as unknown as one that never existed.
            try:
                mrow = await instances_db.get_by_uuid(conn, marker, read_deleted="yes")
            except exception.InstanceNotFound:
                mrow = None
            if mrow is None or mrow["project_id"] != common.ctx(request).project_id:
                raise common.bad_request(f"marker [{marker}] not found")
        # Filters done in Python (a name regex) read on until the page is full.
        while True:
            try:
                rows = await instances_db.get_all(
                    conn,
                    filters=sql,
                    sort_keys=sort_keys,
                    sort_dirs=sort_dirs,  # type: ignore[arg-type]
                    limit=limit,
                    marker=marker,
                    read_deleted=read_deleted,  # type: ignore[arg-type]
                )
            except exception.MarkerNotFound:
                raise common.bad_request(f"marker [{marker}] not found") from None
            held = (
                await ports.addresses(conn, [r["uuid"] for r in rows])
                if "ip" in python or "ip6" in python
                else {}
            )
            found += [r for r in rows if _matches(r, python, held)]
            if len(rows) < limit or len(found) >= limit or not rows:
                break
            marker = rows[-1]["uuid"]
    return found[:limit], limit


async def _list(request: Request, is_detail: bool) -> Response:
    which = "detail" if is_detail else "index"
    common.authorize(request, f"servers:{which}", Rule.PROJECT_READER)
    rows, limit = await _page(request, is_detail)
    if is_detail:
        x = await server_context(request, rows)
        servers = [views.render(views.SERVER, r, x) for r in rows]
    else:
        x = ServerContext(request, common.is_admin(request), common.state(request).conf)
        servers = [views.render(views.BRIEF, r, x) for r in rows]
    body: dict[str, Any] = {"servers": servers}
    if rows and len(rows) == limit:
        collection = "servers/detail" if is_detail else "servers"
        body["servers_links"] = common.next_link(request, collection, rows[-1]["uuid"])
    return common.json(body)


async def index(request: Request) -> Response:
    return await _list(request, False)


async def detail(request: Request) -> Response:
    return await _list(request, True)


# --- create ------------------------------------------------------------------------------


async def _flavor(request: Request, ref: Any) -> dict[str, Any]:
    flavorid = str(ref).rstrip("/").rsplit("/", 1)[-1]
    state = common.state(request)
    async with state.db.reader() as conn:
        try:
            # Current as a read of the tables (nubes/api/flavor_cache.py); the
            # checks below run on it every time.
            row = await state.flavor_cache().get_by_flavor_id(conn, flavorid)
        except exception.FlavorNotFound:
            raise common.bad_request("Invalid flavorRef provided.") from None
    visible = common.is_admin(request) or row["is_public"]
    if not visible and common.ctx(request).project_id not in row["projects"]:
        raise common.bad_request("Invalid flavorRef provided.")
    if row["disabled"]:
        raise common.bad_request("Invalid flavorRef provided.")
    return row


async def _image(request: Request, ref: str | None) -> dict[str, Any]:
    if not ref:
        raise common.bad_request("Missing imageRef attribute")
    state = common.state(request)
    try:
        return await images_api.get_active_image(state.db, common.ctx(request), ref)
    except exception.ImageNotFound:
        raise common.bad_request("Can not find requested image") from None


async def check_zone(request: Request, zone: str) -> None:
    conf = common.state(request).conf
    # The primary: a zone an operator just made must be usable at once.
    async with common.state(request).db.reader() as conn:
        zones = set((await hosts.host_zones(conn)).values())
    zones.add(str(conf.api.default_availability_zone))
    if zone not in zones:
        raise common.bad_request("The requested availability zone is not available")


async def check_destination(request: Request, host: str | None, node: str | None) -> None:
    """2.74: the host (and node) must be a compute node's (Nova's 400 otherwise)."""
    async with common.state(request).db.reader() as conn:
        nodes = await compute_nodes_db.get_all(conn, host=host)
    if not nodes:
        raise common.bad_request(f"Compute host {host or node} could not be found.")
    if node and node not in {n["hypervisor_hostname"] for n in nodes}:
        raise common.bad_request(f"Compute host {host or node} could not be found.")


def network_service(request: Request) -> NetworkService:
    found = common.state(request).network_service()
    assert isinstance(found, NetworkService)
    return found


def _image_ref(server: Mapping[str, Any]) -> str | None:
    """The image to boot from: ``imageRef``, or the image a local root disk mapping names.

    No block storage service yet: only mappings of the image onto the local
    root disk (what the CLI sends for ``--image``) are accepted.
    """
    ref = server.get("imageRef") or None
    if server.get("block_device_mapping"):
        raise common.bad_request(
            "Block device mapping is not supported: there is no volume service."
        )
    for bdm in server.get("block_device_mapping_v2") or []:
        if bdm.get("tag") is not None:
            raise common.bad_request(server_params.NO_DEVICE_TAGS)
        if bdm.get("volume_type") is not None:
            # 2.67: a volume type only means something for a volume.
            raise common.bad_request(
                "Specifying a volume_type with destination_type=local is not supported."
            )
        source = bdm.get("source_type", "image" if ref else None)
        local = bdm.get("destination_type", "local") == "local"
        if source == "blank" and local:
            # Nova's block_device_info ephemerals and swap: not built here, so
            # refused rather than accepted and ignored (issue #15).
            raise common.bad_request(
                "Ephemeral and swap block device mappings are not supported: a "
                "server's ephemeral and swap disks are those of its flavor."
            )
        if source != "image" or not local:
            raise common.bad_request(
                "Block device mapping is not supported: there is no volume service."
            )
        image = bdm.get("uuid") or bdm.get("image_id")
        if str(bdm.get("boot_index", 0)) != "0" or (ref and image and image != ref):
            raise common.bad_request("Only the image's own root disk can be mapped.")
        ref = ref or image
    return ref


async def create(request: Request) -> Response:
    ctxt = common.ctx(request)
    common.authorize(request, "servers:create", Rule.PROJECT_MEMBER, ctxt.project_id)
    body = await v.json_body(request)
    version = common.version(request)
    v.validate(body, schemas.CREATE, version)
    server = body["server"]
    min_count = v.to_int("min_count", server.get("min_count", 1), 1)
    max_count = v.to_int("max_count", server.get("max_count", min_count), 1)
    if min_count > max_count:
        raise common.bad_request("min_count must be <= max_count")
    if server.get("hostname") and max_count > 1:
        raise common.bad_request("Cannot specify hostname when requesting more than one server")
    server_params.check_trusted_certs(server)
    key_name = await server_params.key_name_of(request, server.get("key_name"))
    user_data = server_params.user_data(server)
    injected = await server_params.injected_files(request, server, ctxt.project_id or "")
    # One read block for both (they join it): one pooled connection, not two.
    async with common.state(request).db.reader():
        flavor = await _flavor(request, server["flavorRef"])
        image = await _image(request, _image_ref(server))
    instance_rules.check_image_fits(image, flavor)
    zone = server.get("availability_zone")
    if zone:
        await check_zone(request, zone)
    host, node = server.get("host"), server.get("hypervisor_hostname")
    if host or node:
        common.authorize(request, "servers:create:requested_destination", Rule.ADMIN)
        await check_destination(request, host, node)
    nics = await ports.resolve(
        network_service(request),
        ctxt,
        server_params.requested_networks(server),
        server.get("security_groups"),
        max_count,
    )
    hints = dict(body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {})
    group = hints.get("group")
    password = server_params.password(server)
    instances = await _api(request).create_servers(
        ctxt,
        name=server["name"],
        flavor=flavor,
        image={"id": image["id"], "properties": dict(image.get("properties") or {})},
        count=max_count,
        min_count=min_count,
        availability_zone=zone,
        scheduler_hints=hints,
        metadata=server.get("metadata"),
        description=server.get("description"),
        group=str(group) if group else None,
        user_data=user_data,
        injected_files=injected,
        config_drive=v.parse_bool("config_drive", server.get("config_drive", False)),
        system_metadata=instance_rules.with_scheduler_hints(
            instance_rules.with_image_properties(server_params.sysmeta_from(server), image), hints
        ),
        tags=list(server.get("tags") or []),
        key_name=key_name,
        network_requests=nics,
        requested_host=host,
        requested_node=node,
        hostname=server.get("hostname"),
    )
    if v.parse_bool("return_reservation_id", server.get("return_reservation_id", False)):
        return common.json({"reservation_id": instances[0].reservation_id}, 202)
    first = instances[0]
    groups = server.get("security_groups") or [{"name": "default"}]
    links = common.links(request, "servers", first.uuid)
    result = {
        "server": {
            "id": first.uuid,
            "links": links,
            "OS-DCF:diskConfig": server.get("OS-DCF:diskConfig", "MANUAL"),
            "security_groups": groups,
            "adminPass": password,
        }
    }
    response = common.json(result, 202)
    response.headers["Location"] = links[0]["href"]
    return response


# --- update, delete ---------------------------------------------------------------------------


async def update(request: Request) -> Response:
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:update", Rule.PROJECT_MEMBER, row["project_id"])
    body = await v.json_body(request)
    version = common.version(request)
    v.validate(body, schemas.UPDATE, version)
    server = body["server"]
    values: dict[str, Any] = {}
    if "name" in server:
        values["display_name"] = server["name"]
    if "description" in server:
        values["display_description"] = server["description"]
    if "hostname" in server:
        values["hostname"] = server["hostname"]
    sysmeta = server_params.sysmeta_from(server)
    if sysmeta:
        values["system_metadata"] = sysmeta
    pin = None
    if "pinned_availability_zone" in server:  # only in the 2.104 schema
        async with common.state(request).db.reader() as conn:
            zones = await hosts.host_zones(conn)
        current = hosts.instance_zone(row, zones, common.state(request).conf)
        pin = (server["pinned_availability_zone"], current)
    row = await _api(request).update_server(common.ctx(request), row["uuid"], values, pin=pin)
    x = await server_context(request, [row], body_mode(request), one=True)
    return common.json({"server": views.render(views.SERVER, row, x)})


async def delete(request: Request) -> Response:
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "servers:delete", Rule.PROJECT_MEMBER, row["project_id"])
    await _api(request).delete_server(common.ctx(request), row["uuid"])
    return common.empty(204)


# --- addresses -----------------------------------------------------------------------------


async def _ips_of(request: Request) -> dict[str, list[dict[str, Any]]]:
    row = await get_server(request, request.path_params["server_id"])
    common.authorize(request, "ips:index", Rule.PROJECT_READER, row["project_id"])
    async with common.state(request).db.reader() as conn:
        held = (await ports.addresses(conn, [row["uuid"]])).get(row["uuid"], {})
    # servers/{id}/ips shows only the version and address of each (as Nova).
    return {
        name: [{"version": a["version"], "addr": a["addr"]} for a in entries]
        for name, entries in held.items()
    }


async def ips(request: Request) -> Response:
    return common.json({"addresses": await _ips_of(request)})


async def ips_of_network(request: Request) -> Response:
    label = request.path_params["network_label"]
    held = await _ips_of(request)
    if label not in held:
        raise common.not_found("Instance is not a member of specified network")
    return common.json({label: held[label]})


ROUTES = [
    Route("/servers", index, methods=["GET"]),
    Route("/servers/{server_id}/ips", common.no_query(ips), methods=["GET"]),
    Route(
        "/servers/{server_id}/ips/{network_label}", common.no_query(ips_of_network), methods=["GET"]
    ),
    Route("/servers", create, methods=["POST"]),
    Route("/servers/detail", detail, methods=["GET"]),
    Route("/servers/{server_id}", common.no_query(show), methods=["GET"]),
    Route("/servers/{server_id}", update, methods=["PUT"]),
    Route("/servers/{server_id}", delete, methods=["DELETE"]),
]
