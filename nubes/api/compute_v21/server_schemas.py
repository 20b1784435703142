"""JSON schemas of the servers API per microversion (Nova's schemas/servers.py and friends).

Create: ``description`` from 2.19, a ``tag`` on networks from 2.32,
``networks`` required (a list, or ``"none"``/``"auto"``) from 2.37, ``tags``
from 2.52, ``personality`` gone from 2.57. Update: ``description`` from 2.19.
"""

from __future__ import annotations

import copy
from typing import Any

from nubes.api import validation as v

_UUID = {"type": "string", "format": "uuid"}
_DESCRIPTION = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
#: A tag (of a server, a port or a disk), as Nova validates it.
TAG = {"type": "string", "minLength": 1, "maxLength": 60, "pattern": "^[^,/]*$"}
_HOST = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[a-zA-Z0-9-._]*$"}
_HOST_OR_NULL = {**_HOST, "type": ["string", "null"]}
_IPV4 = {"type": "string", "format": "ipv4"}
_IPV6 = {"type": "string", "format": "ipv6"}
_DISK_CONFIG = {"type": "string", "enum": ["AUTO", "MANUAL"]}

HINTS = {
    "type": "object",
    "properties": {
        "group": _UUID,
        "different_host": {"oneOf": [_UUID, {"type": "array", "items": _UUID}]},
        "same_host": {"oneOf": [_UUID, {"type": "array", "items": _UUID}]},
        "query": {"type": ["string", "object"]},
        "target_cell": v.NAME,
        "different_cell": {"type": ["string", "array"], "items": {"type": "string"}},
        "build_near_host_ip": {"type": "string", "oneOf": [_IPV4, _IPV6]},
        "cidr": {"type": "string", "pattern": "^/[0-9a-f.:]+$"},
    },
    "additionalProperties": True,
}

_NETWORK = {
    "type": "object",
    "properties": {
        "fixed_ip": {"type": "string", "oneOf": [_IPV4, _IPV6]},
        "port": {"oneOf": [_UUID, {"type": "null"}]},
        "uuid": {"type": "string"},
    },
    "additionalProperties": False,
}

_LEGACY_BDM: dict[str, Any] = {
    "virtual_name": {"type": "string", "maxLength": 255},
    "volume_id": _UUID,
    "snapshot_id": _UUID,
    "volume_size": {
        "type": ["integer", "string"],
        "pattern": "^[0-9]+$",
        "minimum": 1,
        "maximum": v.MAX_INT,
    },
    "delete_on_termination": v.BOOLEAN,
    "device_name": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[a-zA-Z0-9._/-]*$",
    },
    "no_device": {},
    "connection_info": {"type": "string", "maxLength": 16777215},
}
_BDM_V2: dict[str, Any] = {
    **_LEGACY_BDM,
    "source_type": {"type": "string", "enum": ["volume", "image", "snapshot", "blank"]},
    "uuid": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[a-zA-Z0-9._-]*$"},
    "image_id": _UUID,
    "destination_type": {"type": "string", "enum": ["local", "volume"]},
    "guest_format": {"type": "string", "maxLength": 255},
    "device_type": {"type": "string", "maxLength": 255},
    "disk_bus": {"type": "string", "maxLength": 255},
    "boot_index": {"type": ["integer", "string", "null"], "pattern": "^-?[0-9]+$"},
}

_BASE_SERVER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": v.NAME,
        "imageRef": {"oneOf": [_UUID, {"type": "string", "maxLength": 0}]},
        "flavorRef": {"type": ["string", "integer"], "minLength": 1},
        "adminPass": {"type": "string"},
        "metadata": v.METADATA,
        "networks": {"type": "array", "items": _NETWORK},
        "OS-DCF:diskConfig": _DISK_CONFIG,
        "accessIPv4": _IPV4,
        "accessIPv6": _IPV6,
        "personality": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "contents": {"type": "string", "format": "base64"},
                },
                "additionalProperties": False,
            },
        },
        "availability_zone": v.NAME,
        "block_device_mapping": {
            "type": "array",
            "items": {"type": "object", "properties": _LEGACY_BDM, "additionalProperties": False},
        },
        "block_device_mapping_v2": {
            "type": "array",
            "items": {"type": "object", "properties": _BDM_V2, "additionalProperties": False},
        },
        "config_drive": v.BOOLEAN,
        "key_name": v.NAME,
        "min_count": v.POSITIVE_INT,
        "max_count": v.POSITIVE_INT,
        "return_reservation_id": v.BOOLEAN,
        "security_groups": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255}},
                "additionalProperties": False,
            },
        },
        "user_data": {"type": "string", "maxLength": 65535},
    },
    "required": ["name", "flavorRef"],
    "additionalProperties": False,
}


def _create(server: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "server": server,
            "os:scheduler_hints": HINTS,
            "OS-SCH-HNT:scheduler_hints": HINTS,
        },
        "required": ["server"],
        "additionalProperties": False,
    }


def _server(
    *, description: bool, tag: bool, named: bool, tags: bool, personality: bool
) -> dict[str, Any]:
    server = copy.deepcopy(_BASE_SERVER)
    props = server["properties"]
    if description:
        props["description"] = _DESCRIPTION
    network = props["networks"]["items"]
    if tag:
        network["properties"]["tag"] = TAG
        props["block_device_mapping_v2"]["items"]["properties"]["tag"] = TAG
    if named:
        props["networks"] = {
            "oneOf": [
                {"type": "array", "items": network},
                {"type": "string", "enum": ["none", "auto"]},
            ]
        }
        server["required"] = ["name", "flavorRef", "networks"]
    if tags:
        props["tags"] = {"type": "array", "items": TAG, "maxItems": 50}
    if not personality:
        del props["personality"]
    return server


#: 2.63: the ids of the certificates an image's signing certificate must chain to.
TRUSTED_CERTS = {
    "type": ["array", "null"],
    "minItems": 1,
    "maxItems": 50,
    "uniqueItems": True,
    "items": {"type": "string", "minLength": 1},
}


#: 2.90: a hostname (a DNS label), 2.94: a fully qualified name.
HOSTNAME = {
    "type": "string",
    "minLength": 2,
    "maxLength": 63,
    "pattern": "^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$",
}
FQDN = {
    "type": "string",
    "minLength": 2,
    "maxLength": 255,
    "pattern": "^[a-zA-Z0-9]+[a-zA-Z0-9-.]*[a-zA-Z0-9]+$",
}


def _later(
    *,
    certs: bool,
    volume_type: bool = False,
    destination: bool = False,
    hostname: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The 2.57 server body with what later versions add to it."""
    server = _server(description=True, tag=True, named=True, tags=True, personality=False)
    props = server["properties"]
    if hostname is not None:
        props["hostname"] = hostname
    if certs:
        props["trusted_image_certificates"] = TRUSTED_CERTS
    if destination:
        props["host"] = _HOST
        props["hypervisor_hostname"] = _HOST
    if volume_type:
        props["block_device_mapping_v2"]["items"]["properties"]["volume_type"] = {
            "type": ["string", "null"],
            "minLength": 0,
            "maxLength": 255,
        }
    return server


CREATE: v.Versioned = [
    (
        ("2.1", "2.18"),
        _create(_server(description=False, tag=False, named=False, tags=False, personality=True)),
    ),
    (
        ("2.19", "2.31"),
        _create(_server(description=True, tag=False, named=False, tags=False, personality=True)),
    ),
    (
        ("2.32", "2.36"),
        _create(_server(description=True, tag=True, named=False, tags=False, personality=True)),
    ),
    (
        ("2.37", "2.51"),
        _create(_server(description=True, tag=True, named=True, tags=False, personality=True)),
    ),
    (
        ("2.52", "2.56"),
        _create(_server(description=True, tag=True, named=True, tags=True, personality=True)),
    ),
    (
        ("2.57", "2.62"),
        _create(_server(description=True, tag=True, named=True, tags=True, personality=False)),
    ),
    (("2.63", "2.66"), _create(_later(certs=True))),
    (("2.67", "2.73"), _create(_later(certs=True, volume_type=True))),
    (("2.74", "2.89"), _create(_later(certs=True, volume_type=True, destination=True))),
    (
        ("2.90", "2.93"),
        _create(_later(certs=True, volume_type=True, destination=True, hostname=HOSTNAME)),
    ),
    (
        ("2.94", None),
        _create(_later(certs=True, volume_type=True, destination=True, hostname=FQDN)),
    ),
]


#: 2.104: the zone to pin the server to, or null to unpin it (Nova's name_or_none).
_PINNED_ZONE = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}]}


def _update(
    description: bool, hostname: dict[str, Any] | None = None, *, pin: bool = False
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": v.NAME,
        "OS-DCF:diskConfig": _DISK_CONFIG,
        "accessIPv4": _IPV4,
        "accessIPv6": _IPV6,
    }
    if description:
        props["description"] = _DESCRIPTION
    if hostname is not None:
        props["hostname"] = hostname
    if pin:
        props["pinned_availability_zone"] = _PINNED_ZONE
    return {
        "type": "object",
        "properties": {
            "server": {"type": "object", "properties": props, "additionalProperties": False}
        },
        "required": ["server"],
        "additionalProperties": False,
    }


UPDATE: v.Versioned = [
    (("2.1", "2.18"), _update(False)),
    (("2.19", "2.89"), _update(True)),
    (("2.90", "2.93"), _update(True, HOSTNAME)),
    (("2.94", "2.103"), _update(True, FQDN)),
    (("2.104", None), _update(True, FQDN, pin=True)),
]

#: 2.73: a lock may say why (Nova's lock_server schema).
LOCK = {
    "type": "object",
    "properties": {
        "lock": {
            "type": ["object", "null"],
            "properties": {"locked_reason": {"type": "string", "minLength": 1, "maxLength": 255}},
            "additionalProperties": False,
        }
    },
    "required": ["lock"],
    "additionalProperties": False,
}

REBOOT = {
    "type": "object",
    "properties": {
        "reboot": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["HARD", "Hard", "hard", "SOFT", "Soft", "soft"]}
            },
            "required": ["type"],
            "additionalProperties": False,
        }
    },
    "required": ["reboot"],
    "additionalProperties": False,
}

RESET_STATE = {
    "type": "object",
    "properties": {
        "os-resetState": {
            "type": "object",
            "properties": {"state": {"type": "string", "enum": ["active", "error"]}},
            "required": ["state"],
            "additionalProperties": False,
        }
    },
    "required": ["os-resetState"],
    "additionalProperties": False,
}

#: ``os-getConsoleOutput``: ``length`` lines from the end, -1 (or none) for all.
#: A string must be a number too ("10"), as Nova takes; its minimum then does
#: not apply, so the pattern itself keeps out other negatives.
GET_CONSOLE_OUTPUT = {
    "type": "object",
    "properties": {
        "os-getConsoleOutput": {
            "type": "object",
            "properties": {
                "length": {
                    "type": ["integer", "string", "null"],
                    "pattern": "^(-1|[0-9]+)$",
                    "minimum": -1,
                }
            },
            "additionalProperties": False,
        }
    },
    "required": ["os-getConsoleOutput"],
    "additionalProperties": False,
}

# --- snapshots (Nova's schemas/servers.py create_image, create_backup.py) ------------------

CREATE_IMAGE = {
    "type": "object",
    "properties": {
        "createImage": {
            "type": "object",
            "properties": {"name": v.NAME, "metadata": v.METADATA},
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "required": ["createImage"],
    "additionalProperties": False,
}

CREATE_BACKUP = {
    "type": "object",
    "properties": {
        "createBackup": {
            "type": "object",
            "properties": {
                "name": v.NAME,
                "backup_type": {"type": "string"},
                "rotation": v.NON_NEGATIVE_INT,
                "metadata": v.METADATA,
            },
            "required": ["name", "backup_type", "rotation"],
            "additionalProperties": False,
        }
    },
    "required": ["createBackup"],
    "additionalProperties": False,
}

# --- moves (Nova's schemas/servers.py, migrate_server.py, evacuate.py) -------------------

#: Nova's parameter_types.fqdn: a host name.


def _action(name: str, body: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"type": "object", "properties": body, "additionalProperties": False}
    if required:
        inner["required"] = required
    return {
        "type": "object",
        "properties": {name: inner},
        "required": [name],
        "additionalProperties": False,
    }


_MIGRATE_256 = _action("migrate", {"host": _HOST_OR_NULL})
_MIGRATE_256["properties"]["migrate"]["type"] = ["object", "null"]
#: ``migrate`` takes a body (a host) from 2.56; before, Nova ignores what follows the key.
MIGRATE: v.Versioned = [(("2.56", None), _MIGRATE_256)]

RESIZE = _action(
    "resize",
    {
        "flavorRef": {"type": ["string", "integer"], "minLength": 1},
        "OS-DCF:diskConfig": _DISK_CONFIG,
    },
    ["flavorRef"],
)

#: A boolean, or "auto" (2.25): let the hosts say whether storage is shared.
_BLOCK_MIGRATION_AUTO = {
    "type": ["boolean", "string"],
    "enum": [
        True,
        False,
        *v.TRUE_STRINGS,
        *v.FALSE_STRINGS,
        "True",
        "False",
        "TRUE",
        "FALSE",
        "auto",
    ],
}

MIGRATE_LIVE: v.Versioned = [
    (
        ("2.1", "2.24"),
        _action(
            "os-migrateLive",
            {"block_migration": v.BOOLEAN, "disk_over_commit": v.BOOLEAN, "host": _HOST_OR_NULL},
            ["block_migration", "disk_over_commit", "host"],
        ),
    ),
    (
        ("2.25", "2.29"),
        _action(
            "os-migrateLive",
            {"block_migration": _BLOCK_MIGRATION_AUTO, "host": _HOST_OR_NULL},
            ["block_migration", "host"],
        ),
    ),
    (
        ("2.30", "2.67"),
        _action(
            "os-migrateLive",
            {"block_migration": _BLOCK_MIGRATION_AUTO, "host": _HOST_OR_NULL, "force": v.BOOLEAN},
            ["block_migration", "host"],
        ),
    ),
    (
        ("2.68", None),
        _action(
            "os-migrateLive",
            {"block_migration": _BLOCK_MIGRATION_AUTO, "host": _HOST_OR_NULL},
            ["block_migration", "host"],
        ),
    ),
]

_ADMIN_PASS = {"type": "string"}

EVACUATE: v.Versioned = [
    (
        ("2.1", "2.13"),
        _action(
            "evacuate",
            {"host": _HOST, "onSharedStorage": v.BOOLEAN, "adminPass": _ADMIN_PASS},
            ["onSharedStorage"],
        ),
    ),
    (("2.14", "2.28"), _action("evacuate", {"host": _HOST, "adminPass": _ADMIN_PASS})),
    (
        ("2.29", "2.67"),
        _action("evacuate", {"host": _HOST, "adminPass": _ADMIN_PASS, "force": v.BOOLEAN}),
    ),
    # 2.68: no more forcing a host past the scheduler.
    (("2.68", None), _action("evacuate", {"host": _HOST, "adminPass": _ADMIN_PASS})),
]


def _rebuild(
    *,
    description: bool,
    key_name: bool,
    user_data: bool,
    certs: bool = False,
    hostname: dict[str, Any] | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": v.NAME,
        "imageRef": _UUID,
        "adminPass": _ADMIN_PASS,
        "metadata": v.METADATA,
        "preserve_ephemeral": v.BOOLEAN,
        "OS-DCF:diskConfig": _DISK_CONFIG,
        "accessIPv4": _IPV4,
        "accessIPv6": _IPV6,
    }
    if description:
        props["description"] = _DESCRIPTION
    if key_name:
        props["key_name"] = {"oneOf": [v.NAME, {"type": "null"}]}
    if user_data:
        props["user_data"] = {"oneOf": [{"type": "string", "format": "base64"}, {"type": "null"}]}
    else:
        props["personality"] = _BASE_SERVER["properties"]["personality"]
    if certs:
        props["trusted_image_certificates"] = TRUSTED_CERTS
    if hostname is not None:
        props["hostname"] = hostname
    return _action("rebuild", props, ["imageRef"])


REBUILD: v.Versioned = [
    (("2.1", "2.18"), _rebuild(description=False, key_name=False, user_data=False)),
    (("2.19", "2.53"), _rebuild(description=True, key_name=False, user_data=False)),
    (("2.54", "2.56"), _rebuild(description=True, key_name=True, user_data=False)),
    (("2.57", "2.62"), _rebuild(description=True, key_name=True, user_data=True)),
    (("2.63", "2.89"), _rebuild(description=True, key_name=True, user_data=True, certs=True)),
    (
        ("2.90", "2.93"),
        _rebuild(description=True, key_name=True, user_data=True, certs=True, hostname=HOSTNAME),
    ),
    (
        ("2.94", None),
        _rebuild(description=True, key_name=True, user_data=True, certs=True, hostname=FQDN),
    ),
]

FORCE_COMPLETE = {
    "type": "object",
    "properties": {"force_complete": {"type": "null"}},
    "required": ["force_complete"],
    "additionalProperties": False,
}

#: Nova's servers list sort keys (schemas/servers.py VALID_SORT_KEYS).
SORT_KEYS = (
    "access_ip_v4",
    "access_ip_v6",
    "auto_disk_config",
    "availability_zone",
    "config_drive",
    "created_at",
    "display_description",
    "display_name",
    "host",
    "hostname",
    "image_ref",
    "instance_type_id",
    "kernel_id",
    "key_name",
    "launch_index",
    "launched_at",
    "locked_by",
    "node",
    "power_state",
    "progress",
    "project_id",
    "ramdisk_id",
    "root_device_name",
    "task_state",
    "terminated_at",
    "updated_at",
    "user_id",
    "uuid",
    "vm_state",
)
#: Sort keys only admins may use (Nova answers 403 to others).
ADMIN_SORT_KEYS = ("host", "node")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (one of :func:`_action`'s) also taking ``{name: null}``."""
    (name,) = schema["properties"]
    schema["properties"][name]["type"] = ["object", "null"]
    return schema


#: Nova's rescue: an optional admin password and rescue image.
RESCUE = _nullable(
    _action(
        "rescue",
        {
            "adminPass": {"type": "string"},
            "rescue_image_ref": {"type": "string", "format": "uuid"},
        },
    )
)
#: Nova's changePassword: the new password, required.
CHANGE_PASSWORD = _action("changePassword", {"adminPass": {"type": "string"}}, ["adminPass"])
#: 2.17: ``{"trigger_crash_dump": null}``, nothing else.
TRIGGER_CRASH_DUMP = {
    "type": "object",
    "properties": {"trigger_crash_dump": {"type": "null"}},
    "required": ["trigger_crash_dump"],
    "additionalProperties": False,
}

#: unshelve before 2.77: the body is not looked at (Nova's ``{"unshelve": null}``).
#: 2.77: an availability zone may be named.
UNSHELVE_277 = _nullable(
    _action("unshelve", {"availability_zone": {"type": "string", "minLength": 1, "maxLength": 255}})
)
#: 2.91: a zone (null: unpinned) and, for admins, a host.
UNSHELVE_291 = _nullable(
    _action(
        "unshelve",
        {
            "availability_zone": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
            "host": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    )
)
