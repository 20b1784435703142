"""The server views: Nova's status mapping and the fields of each microversion.

One :class:`~nubes.api.views.View` for a full server (show, detail, and the
shorter body ``PUT`` answers with before 2.75) and one for the list. Fields
that depend on the record as well as the version (``fault`` only for ERROR
and DELETED servers, ``progress`` only for the statuses that make progress)
return :data:`OMIT` and are dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg
from starlette.requests import Request

from nubes.api import instance_rules
from nubes.api.compute_v21 import common, hosts
from nubes.api.views import Field, View, iso_z, nova_time
from nubes.objects.states import TaskState as T
from nubes.objects.states import VMState as V

#: Returned by a getter to leave the field out of this record's body.
OMIT: Any = object()

_REBOOT: dict[str, str] = {
    T.REBOOTING: "REBOOT",
    T.REBOOT_PENDING: "REBOOT",
    T.REBOOT_STARTED: "REBOOT",
}
_HARD_REBOOT: dict[str, str] = {
    T.REBOOTING_HARD: "HARD_REBOOT",
    T.REBOOT_PENDING_HARD: "HARD_REBOOT",
    T.REBOOT_STARTED_HARD: "HARD_REBOOT",
}
_REBUILD: dict[str, str] = {
    T.REBUILDING: "REBUILD",
    T.REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
    T.REBUILD_SPAWNING: "REBUILD",
}
_RESIZE: dict[str, str] = {
    T.RESIZE_PREP: "RESIZE",
    T.RESIZE_MIGRATING: "RESIZE",
    T.RESIZE_MIGRATED: "RESIZE",
    T.RESIZE_FINISH: "RESIZE",
}

#: vm_state -> {task_state or "default": status}: nova.api.openstack.common._STATE_MAP.
STATE_MAP: dict[str, dict[str, str]] = {
    V.ACTIVE: {
        "default": "ACTIVE",
        **_REBOOT,
        **_HARD_REBOOT,
        T.UPDATING_PASSWORD: "PASSWORD",
        **_REBUILD,
        T.MIGRATING: "MIGRATING",
        **_RESIZE,
    },
    V.BUILDING: {"default": "BUILD"},
    V.STOPPED: {"default": "SHUTOFF", **_RESIZE, **_REBUILD},
    V.RESIZED: {"default": "VERIFY_RESIZE", T.RESIZE_REVERTING: "REVERT_RESIZE"},
    V.PAUSED: {"default": "PAUSED", T.MIGRATING: "MIGRATING"},
    V.SUSPENDED: {"default": "SUSPENDED"},
    V.RESCUED: {"default": "RESCUE"},
    V.ERROR: {"default": "ERROR", **_REBUILD},
    V.DELETED: {"default": "DELETED"},
    V.SOFT_DELETED: {"default": "SOFT_DELETED"},
    V.SHELVED: {"default": "SHELVED"},
    V.SHELVED_OFFLOADED: {"default": "SHELVED_OFFLOADED"},
}

#: Statuses whose body carries ``progress`` and ``fault`` (Nova's view builder).
PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")
FAULT_STATUSES = ("ERROR", "DELETED")


def status_from_state(vm_state: str | None, task_state: str | None) -> str:
    task_map = STATE_MAP.get(vm_state or "", {"default": "UNKNOWN"})
    return task_map.get(task_state or "default", task_map["default"])


def states_from_status(statuses: list[str]) -> tuple[list[str], list[str]]:
    """vm_states and task_states (``default``: any) that show as one of ``statuses``."""
    wanted = {s.lower() for s in statuses}
    vm_states: set[str] = set()
    task_states: set[str] = set()
    for vm_state, task_map in STATE_MAP.items():
        for task_state, status in task_map.items():
            if status.lower() in wanted:
                vm_states.add(str(vm_state))
                task_states.add(str(task_state))
    return sorted(vm_states), sorted(task_states)


@dataclasses.dataclass
class ServerContext:
    """What rendering a server needs besides its row."""

    request: Request
    admin: bool
    conf: cfg.ConfigOpts
    #: "show" (show and detail) or "update" (the PUT response before 2.75).
    mode: str = "show"
    #: instance uuid -> its newest fault.
    faults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    #: host -> availability zone (hosts in a zoned aggregate).
    zones: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: host -> host_status ("UP", "DOWN", "MAINTENANCE", "UNKNOWN").
    host_status: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: instance uuid -> its tags, sorted (read from 2.26, which shows them).
    tags: Mapping[str, list[str]] = dataclasses.field(default_factory=dict)
    #: instance uuid -> Nova's ``addresses`` (network name -> addresses).
    addresses: Mapping[str, Mapping[str, list[dict[str, Any]]]] = dataclasses.field(
        default_factory=dict
    )
    #: instance uuid -> names of its ports' security groups.
    groups: Mapping[str, list[str]] = dataclasses.field(default_factory=dict)
    #: instance uuid -> uuids of its server groups; None where Nova leaves
    #: ``server_groups`` out (lists: only show, update and rebuild carry it).
    server_groups: Mapping[str, list[str]] | None = None

    @property
    def show(self) -> bool:
        return self.mode == "show"


def _status(r: Mapping[str, Any], _: Any) -> str:
    return status_from_state(r["vm_state"], r["task_state"])


def host_id(r: Mapping[str, Any]) -> str:
    if not r.get("host"):
        return ""
    return hashlib.sha224((str(r.get("project_id")) + r["host"]).encode()).hexdigest()


def _bookmark(x: ServerContext, collection: str, item_id: str) -> list[dict[str, str]]:
    links = common.links(x.request, collection, item_id)
    return [link for link in links if link["rel"] == "bookmark"]


def _image(r: Mapping[str, Any], x: ServerContext) -> Any:
    ref = r.get("image_ref")
    if not ref:
        return ""  # volume-backed
    image_id = str(ref).rstrip("/").rsplit("/", 1)[-1]
    body: dict[str, Any] = {"id": image_id, "links": _bookmark(x, "images", image_id)}
    if x.show and common.version(x.request).at_least("2.98"):
        body["properties"] = instance_rules.image_properties(r.get("system_metadata"))
    return body


def _flavor_snapshot(r: Mapping[str, Any]) -> dict[str, Any]:
    flavor: dict[str, Any] = r.get("flavor") or {}
    return flavor


def _flavor_link(r: Mapping[str, Any], x: ServerContext) -> dict[str, Any]:
    flavorid = str(_flavor_snapshot(r).get("flavorid", ""))
    return {"id": flavorid, "links": _bookmark(x, "flavors", flavorid)}


def _flavor_embedded(r: Mapping[str, Any], _: ServerContext) -> dict[str, Any]:
    f = _flavor_snapshot(r)
    return {
        "vcpus": f.get("vcpus", r.get("vcpus")),
        "ram": f.get("memory_mb", r.get("memory_mb")),
        "disk": f.get("root_gb", r.get("root_gb")),
        "ephemeral": f.get("ephemeral_gb", r.get("ephemeral_gb") or 0),
        "swap": f.get("swap", 0),
        "original_name": f.get("name"),
        # Shown when os-flavor-extra-specs:index allows, which is anyone here.
        "extra_specs": dict(f.get("extra_specs") or {}),
    }


def _sysmeta(r: Mapping[str, Any], key: str, default: Any = "") -> Any:
    return (r.get("system_metadata") or {}).get(key, default)


def _fault(r: Mapping[str, Any], x: ServerContext) -> Any:
    if _status(r, x) not in FAULT_STATUSES:
        return OMIT
    fault = x.faults.get(r["uuid"])
    if not fault:
        return OMIT
    body: dict[str, Any] = {
        "code": fault["code"],
        "created": iso_z(fault["created_at"]),
        "message": fault["message"],
    }
    # Nova hides the details (a traceback) of a 500 from non-admins.
    if fault.get("details") and (x.admin or fault["code"] != 500):
        body["details"] = fault["details"]
    return body


def _progress(r: Mapping[str, Any], x: ServerContext) -> Any:
    if _status(r, x) not in PROGRESS_STATUSES:
        return OMIT
    return r.get("progress") or 0


def _az(r: Mapping[str, Any], x: ServerContext) -> str:
    return hosts.instance_zone(r, x.zones, x.conf)


def _config_drive(r: Mapping[str, Any], _: ServerContext) -> str:
    return str(r.get("config_drive") or "")


def _instance_name(r: Mapping[str, Any], _: ServerContext) -> str:
    return f"instance-{r['id']:08x}"


def _host_status(r: Mapping[str, Any], x: ServerContext) -> str:
    # No compute service on record for the host: Nova's HostStatus.NONE too.
    host = r.get("host")
    return x.host_status.get(host, "") if host else ""


def _show(x: ServerContext) -> bool:
    return x.show


def _admin_show(x: ServerContext) -> bool:
    return x.show and x.admin


#: Address keys the short body of an update or rebuild (before 2.75) leaves
#: out, as Nova's (its view without the extended address attributes).
_EXTENDED_ADDRESS = ("OS-EXT-IPS-MAC:mac_addr", "OS-EXT-IPS:type")


def _addresses(r: Mapping[str, Any], x: ServerContext) -> dict[str, Any]:
    found = x.addresses.get(r["uuid"], {})
    if x.show:
        return dict(found)
    return {
        net: [{k: v for k, v in a.items() if k not in _EXTENDED_ADDRESS} for a in addrs]
        for net, addrs in found.items()
    }


def _groups(r: Mapping[str, Any], x: ServerContext) -> Any:
    names = x.groups.get(r["uuid"])
    return [{"name": n} for n in names] if names else OMIT


def _server_groups(r: Mapping[str, Any], x: ServerContext) -> Any:
    if x.server_groups is None:
        return OMIT
    return list(x.server_groups.get(r["uuid"], []))


def _srv(name: str, get: Any, min: str | None = None) -> Field:
    return Field(f"OS-EXT-SRV-ATTR:{name}", get, min=min, when=_admin_show)


SERVER = View(
    Field("id", lambda r, _: r["uuid"]),
    Field("name", lambda r, _: r["display_name"]),
    Field("status", _status),
    Field("tenant_id", lambda r, _: r.get("project_id") or ""),
    Field("user_id", lambda r, _: r.get("user_id") or ""),
    Field("metadata", lambda r, _: dict(r.get("metadata") or {})),
    Field("hostId", lambda r, _: host_id(r)),
    Field("image", _image),
    Field("flavor", _flavor_link, max="2.46"),
    Field("flavor", _flavor_embedded, min="2.47"),
    Field("created", lambda r, _: iso_z(r["created_at"])),
    Field("updated", lambda r, _: iso_z(r.get("updated_at") or r["created_at"])),
    # From the server's ports (nubes/network/ports.py: addresses).
    Field("addresses", lambda r, x: _addresses(r, x)),
    # The groups of the server's ports (left out for a server without any;
    # and, as Nova, from the short body of an update or rebuild before 2.75).
    Field("security_groups", lambda r, x: _groups(r, x), when=_show),
    Field("accessIPv4", lambda r, _: _sysmeta(r, "access_ip_v4")),
    Field("accessIPv6", lambda r, _: _sysmeta(r, "access_ip_v6")),
    Field("links", lambda r, x: common.links(x.request, "servers", r["uuid"])),
    Field("OS-DCF:diskConfig", lambda r, _: _sysmeta(r, "disk_config", "MANUAL")),
    Field("fault", _fault),
    Field("progress", _progress),
    Field("OS-EXT-AZ:availability_zone", _az, when=_show),
    Field("config_drive", _config_drive, when=_show),
    Field("key_name", lambda r, _: r.get("key_name"), when=_show),
    Field("OS-SRV-USG:launched_at", lambda r, _: nova_time(r.get("launched_at")), when=_show),
    Field("OS-SRV-USG:terminated_at", lambda r, _: nova_time(r.get("terminated_at")), when=_show),
    _srv("host", lambda r, _: r.get("host")),
    _srv("hypervisor_hostname", lambda r, _: r.get("node")),
    _srv("instance_name", _instance_name),
    _srv("reservation_id", lambda r, _: r.get("reservation_id"), "2.3"),
    _srv("launch_index", lambda r, _: r.get("launch_index"), "2.3"),
    _srv("hostname", lambda r, _: r.get("hostname"), "2.3"),
    # 2.90: everyone sees the hostname (admins already do, just above).
    Field(
        "OS-EXT-SRV-ATTR:hostname",
        lambda r, _: r.get("hostname"),
        min="2.90",
        when=lambda x: x.show and not x.admin,
    ),
    _srv("kernel_id", lambda r, _: _sysmeta(r, "kernel_id"), "2.3"),
    _srv("ramdisk_id", lambda r, _: _sysmeta(r, "ramdisk_id"), "2.3"),
    _srv("root_device_name", lambda r, _: _sysmeta(r, "root_device_name", None), "2.3"),
    _srv("user_data", lambda r, _: r.get("user_data"), "2.3"),
    Field("OS-EXT-STS:task_state", lambda r, _: r.get("task_state"), when=_show),
    Field("OS-EXT-STS:vm_state", lambda r, _: r.get("vm_state"), when=_show),
    Field("OS-EXT-STS:power_state", lambda r, _: r.get("power_state") or 0, when=_show),
    # No block storage service yet: nothing is ever attached.
    Field("os-extended-volumes:volumes_attached", lambda r, _: [], when=_show),
    Field("host_status", _host_status, min="2.16", when=_admin_show),
    Field("locked", lambda r, _: bool(r.get("locked")), min="2.9"),
    Field("description", lambda r, _: r.get("display_description"), min="2.19"),
    Field("tags", lambda r, x: list(x.tags.get(r["uuid"], [])), min="2.26"),
    # Certificate validation is not offered (a create naming certificates is
    # refused), so no server has trusted certificates.
    Field("trusted_image_certificates", lambda r, _: None, min="2.63"),
    Field("server_groups", _server_groups, min="2.71"),
    Field("locked_reason", lambda r, _: _sysmeta(r, "locked_reason", None), min="2.73"),
    # The zone the create asked for (the server stays in it on moves), else null.
    Field("pinned_availability_zone", lambda r, _: r.get("availability_zone"), min="2.96"),
    Field(
        "scheduler_hints",
        lambda r, _: instance_rules.scheduler_hints(r.get("system_metadata")),
        min="2.100",
        when=_show,
    ),
)

BRIEF = View(
    Field("id", lambda r, _: r["uuid"]),
    Field("name", lambda r, _: r["display_name"]),
    Field("links", lambda r, x: common.links(x.request, "servers", r["uuid"])),
)


def render(view: View, row: Mapping[str, Any], x: ServerContext) -> dict[str, Any]:
    body = view.render(row, common.version(x.request), x)
    return {k: v for k, v in body.items() if v is not OMIT}
