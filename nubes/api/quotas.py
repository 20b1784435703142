"""Quotas: which limit applies, what a project uses, and what a request may add.

The one home of the quota rules (Nova's counting quotas). A limit comes from
the first level that sets it: the user's row in a project (``os-quota-sets/
{project}?user_id=``), the project's row, the quota class ``default``
(``os-quota-class-sets/default``), then the ``[quota]`` option. ``-1`` is
unlimited.

Image quotas are Glance's unified limits (``image_count_total``...), per
project, set like the network service's (a project row over the class
``default`` over the ``[quota]`` option) and enforced as Glance does
(:func:`check_images`).

Usage is counted, never stored: live instances, their vCPUs and RAM (a
resize in progress counts the larger flavor), server groups, and the members
of one server group. Every check that lets a request add usage runs in the
caller's write transaction after :func:`nubes.db.api.quotas.lock_project`, so
the count, the check and the caller's insert are one atomic step: concurrent
requests of a project never overshoot.

A project's limit caps the project's total; a user's limit (set only where an
operator asked for one) also caps that user's own usage, as Nova's
``check_deltas`` does for instances, cores, ram, key_pairs, server_groups and
server_group_members. ``metadata_items`` and the injected-file limits
(personality, until 2.56) are per request, not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from oslo_config import cfg

from nubes import exception
from nubes.db.api import images as images_db
from nubes.db.api import quotas as quotas_db
from nubes.db.engine import Connection

UNLIMITED = -1
#: The quota class whose limits are every project's defaults (Nova uses no other).
DEFAULT_CLASS = "default"

#: Every compute quota, in the order Nova lists them.
RESOURCES = (
    "instances",
    "cores",
    "ram",
    "metadata_items",
    "key_pairs",
    "server_groups",
    "server_group_members",
    "injected_files",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
)
#: ``[quota]`` option names that differ from the resource (Nova's too).
_OPTION = {"injected_file_path_bytes": "injected_file_path_length"}
#: Network quotas shown before 2.36 (Nova's proxies to the network service).
NETWORK_RESOURCES = ("fixed_ips", "floating_ips", "security_groups", "security_group_rules")
#: Those of them that are the network service's own limits, under its names:
#: reading or setting one through the compute API reads or sets the network's.
NETWORK_PROXIED = {
    # A fixed IP lives on a port, and the network service limits ports (as
    # Neutron does): Nova's fixed-IP quota is that limit, so the value a
    # client sets is kept, shown and enforced, not silently dropped.
    "fixed_ips": "port",
    "floating_ips": "floatingip",
    "security_groups": "security_group",
    "security_group_rules": "security_group_rule",
}
#: Quotas of personality files, which 2.57 removed.
INJECTED_RESOURCES = ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes")


# --- limits --------------------------------------------------------------------------------


def config_defaults(conf: cfg.ConfigOpts) -> dict[str, int]:
    return {name: int(getattr(conf.quota, _OPTION.get(name, name))) for name in RESOURCES}


async def class_limits(
    conn: Connection, conf: cfg.ConfigOpts, class_name: str = DEFAULT_CLASS
) -> dict[str, int]:
    """A quota class's limits over the ``[quota]`` options (for ``default``: the defaults)."""
    return {**config_defaults(conf), **await quotas_db.class_get(conn, class_name)}


async def _limits(
    conn: Connection, conf: cfg.ConfigOpts, project_id: str, user_id: str | None
) -> tuple[dict[str, int], dict[str, int]]:
    """The project's limits (its rows over the class ``default`` over the
    options) and the rows set for ``user_id`` alone, read in one statement."""
    default, project, own = await quotas_db.limit_levels(conn, DEFAULT_CLASS, project_id, user_id)
    return {**config_defaults(conf), **default, **project}, own


async def project_limits(conn: Connection, conf: cfg.ConfigOpts, project_id: str) -> dict[str, int]:
    return (await _limits(conn, conf, project_id, None))[0]


async def effective_limits(
    conn: Connection, conf: cfg.ConfigOpts, project_id: str, user_id: str | None = None
) -> dict[str, int]:
    """The limits of a project, or of one user in it (the user's rows over the project's)."""
    project, own = await _limits(conn, conf, project_id, user_id)
    return {**project, **own}


async def usage(conn: Connection, project_id: str, user_id: str | None = None) -> dict[str, int]:
    """What a project (or one user in it) uses of each quota; 0 for the per-request ones."""
    counted = await quotas_db.usage(conn, project_id, user_id)
    return {name: counted.get(name, 0) for name in RESOURCES}


# --- checks --------------------------------------------------------------------------------


#: Counts usage in a connection, for one user (or, given None, the whole project).
Counter = Callable[[Connection, str | None], Awaitable[dict[str, int]]]


@dataclasses.dataclass(frozen=True)
class _Level:
    """The limits and usage one check compares against (the project's, or a user's)."""

    limits: Mapping[str, int]
    used: Mapping[str, int]

    def headroom(self, resource: str) -> int | None:
        """How much more fits (None: unlimited)."""
        limit = self.limits[resource]
        return None if limit == UNLIMITED else max(0, limit - self.used.get(resource, 0))

    def overs(self, deltas: Mapping[str, int]) -> list[str]:
        return sorted(
            name
            for name, delta in deltas.items()
            if delta > 0
            and self.limits[name] != UNLIMITED
            and self.used.get(name, 0) + delta > self.limits[name]
        )


async def _levels(
    conn: Connection,
    conf: cfg.ConfigOpts,
    project_id: str,
    user_id: str | None,
    resources: Sequence[str],
    counts: Counter | None = None,
) -> list[_Level]:
    """The project's level, then the user's when an operator set user limits.

    Without user rows a user's limits are the project's and its usage is a
    part of the project's, so the project's check decides alone. A level
    where ``resources`` are all unlimited is not counted. ``counts``
    (``(conn, user_id) -> usage``) replaces the project usage count.
    """

    def project_usage(c: Connection, user: str | None) -> Awaitable[dict[str, int]]:
        return quotas_db.usage(c, project_id, user)

    async def level(limits: dict[str, int], user: str | None) -> _Level:
        if all(limits[name] == UNLIMITED for name in resources):
            return _Level(limits, {})
        return _Level(limits, await (counts or project_usage)(conn, user))

    project, own = await _limits(conn, conf, project_id, user_id)
    levels = [await level(project, None)]
    if own:
        levels.append(await level({**project, **own}, user_id))
    return levels


def _over_quota(
    level: _Level, overs: list[str], requested: Mapping[str, Any]
) -> exception.TooManyInstances:
    """Nova's exception.TooManyInstances text, each over resource listed in every part."""
    return exception.TooManyInstances(
        overs=", ".join(overs),
        req=", ".join(str(requested[name]) for name in overs),
        used=", ".join(str(level.used.get(name, 0)) for name in overs),
        allowed=", ".join(str(level.limits[name]) for name in overs),
    )


async def allowed_instances(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    user_id: str | None,
    vcpus: int,
    memory_mb: int,
    min_count: int,
    max_count: int,
) -> int:
    """How many of ``min_count``..``max_count`` servers of a flavor may be created now.

    Nova's rule: as many as fit, up to ``max_count``, when that is at least
    ``min_count``; otherwise the whole request is refused
    (:class:`exception.TooManyInstances`, 403). Takes the project's quota lock: the
    caller inserts the instances in the same transaction.
    """
    await quotas_db.lock_project(conn, project_id)
    per_server = {"instances": 1, "cores": vcpus, "ram": memory_mb}
    levels = await _levels(conn, conf, project_id, user_id, list(per_server))
    allowed = max_count
    for level in levels:
        for name, each in per_server.items():
            room = level.headroom(name)
            if room is not None and each > 0:
                allowed = min(allowed, room // each)
    if allowed >= min_count:
        return allowed
    wanted = {name: each * max_count for name, each in per_server.items()}
    requested: dict[str, Any] = dict(wanted)
    requested["instances"] = (
        str(min_count) if min_count == max_count else f"{min_count}-{max_count}"
    )
    for level in levels:
        overs = level.overs(wanted)
        if overs:
            raise _over_quota(level, overs, requested)
    raise AssertionError("fewer servers fit than asked, yet no quota is over")


async def check_upsize(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    user_id: str | None,
    cores: int,
    ram: int,
) -> None:
    """A resize that adds ``cores`` vCPUs and ``ram`` MiB must fit (Nova's upsize check)."""
    deltas = {name: delta for name, delta in (("cores", cores), ("ram", ram)) if delta > 0}
    if not deltas:
        return
    await quotas_db.lock_project(conn, project_id)
    for level in await _levels(conn, conf, project_id, user_id, list(deltas)):
        overs = level.overs(deltas)
        if overs:
            raise _over_quota(level, overs, deltas)


async def check_server_group(
    conn: Connection, conf: cfg.ConfigOpts, *, project_id: str, user_id: str | None
) -> None:
    """One more server group must fit; takes the project's quota lock."""
    await quotas_db.lock_project(conn, project_id)
    for level in await _levels(conn, conf, project_id, user_id, ["server_groups"]):
        if level.overs({"server_groups": 1}):
            raise exception.ServerGroupLimitExceeded()


async def check_group_members(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    user_id: str | None,
    group_uuid: str,
    count: int,
) -> None:
    """``count`` more servers must fit in the group (``server_group_members``).

    Call it with the project's quota lock held (:func:`allowed_instances`),
    in the transaction that adds the members.
    """

    async def members(c: Connection, user: str | None) -> dict[str, int]:
        return {"server_group_members": await quotas_db.group_member_count(c, group_uuid, user)}

    resources = ["server_group_members"]
    for level in await _levels(conn, conf, project_id, user_id, resources, members):
        if level.overs({"server_group_members": count}):
            raise exception.ServerGroupMembersLimitExceeded()


async def check_key_pairs(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    user_id: str,
    used: int,
    count: int = 1,
) -> None:
    """``count`` more key pairs for a user who has ``used`` must fit.

    Key pairs belong to a user, so Nova counts them per user against the
    user's limit (the project's ``key_pairs`` when no user limit is set).
    The key-pair create calls this with the project's quota lock held, in
    the transaction that inserts the key pair, having counted ``used`` there.
    """
    limit = (await effective_limits(conn, conf, project_id, user_id))["key_pairs"]
    if limit != UNLIMITED and used + count > limit:
        raise exception.KeypairLimitExceeded()


async def check_metadata(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    metadata: Mapping[str, Any] | None,
) -> None:
    """A server's metadata must have at most ``metadata_items`` keys (403 otherwise)."""
    if not metadata:
        return
    limit = (await project_limits(conn, conf, project_id))["metadata_items"]
    if limit != UNLIMITED and len(metadata) > limit:
        raise exception.MetadataLimitExceeded(allowed=limit)


async def check_injected_files(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    files: Sequence[tuple[str, bytes]],
) -> None:
    """A request's personality files (path, decoded contents) must be within the limits."""
    if not files:
        return
    limits = await project_limits(conn, conf, project_id)

    def over(resource: str, value: int) -> bool:
        return limits[resource] != UNLIMITED and value > limits[resource]

    if over("injected_files", len(files)):
        raise exception.OnsetFileLimitExceeded()
    if over("injected_file_path_bytes", max(len(path.encode()) for path, _ in files)):
        raise exception.OnsetFilePathLimitExceeded(allowed=limits["injected_file_path_bytes"])
    if over("injected_file_content_bytes", max(len(data) for _, data in files)):
        raise exception.OnsetFileContentLimitExceeded(allowed=limits["injected_file_content_bytes"])


# --- setting limits --------------------------------------------------------------------------


def _validate_limit(resource: str, limit: int, minimum: int, maximum: int) -> None:
    """Nova's _validate_quota_limit, word for word."""
    if limit < UNLIMITED:
        raise exception.QuotaLimitInvalid(
            message=f"Quota limit {limit} for {resource} must be -1 or greater."
        )
    if limit < minimum and (maximum != UNLIMITED or limit != UNLIMITED):
        raise exception.QuotaLimitInvalid(
            message=f"Quota limit {limit} for {resource} must be greater than or equal to "
            f"already used and reserved {minimum}."
        )
    if maximum != UNLIMITED and limit > maximum:
        raise exception.QuotaLimitInvalid(
            message=f"Quota limit {limit} for {resource} must be less than or equal to {maximum}."
        )


async def set_limits(
    conn: Connection,
    conf: cfg.ConfigOpts,
    project_id: str,
    limits: Mapping[str, int],
    *,
    user_id: str | None = None,
    force: bool = False,
) -> None:
    """Set a project's (or a user's) limits; out of bounds is refused unless ``force``.

    Nova's settable bounds: a project's limit at least what it uses and what
    its users' limits add up to; a user's at least what the user uses and at
    most what the project's limit leaves beside the other users' limits.
    Holds the project's quota lock, so no create slips in between the check
    and the new limit.
    """
    unknown = sorted(set(limits) - set(RESOURCES))
    if unknown:
        raise exception.Invalid(reason=f"unknown quota {', '.join(unknown)}")
    await quotas_db.lock_project(conn, project_id)
    if not force:
        used = await usage(conn, project_id, user_id)
        project = await project_limits(conn, conf, project_id)
        given = await quotas_db.user_limit_sums(conn, project_id)
        own = await quotas_db.limits_get(conn, project_id, user_id) if user_id else {}
        for resource, limit in limits.items():
            if user_id:
                minimum, maximum = used[resource], project[resource]
                if maximum != UNLIMITED:
                    others = given.get(resource, 0) - max(own.get(resource, 0), 0)
                    maximum = max(maximum - others, 0)
            else:
                minimum, maximum = max(used[resource], given.get(resource, 0)), UNLIMITED
            _validate_limit(resource, limit, minimum, maximum)
    await quotas_db.limits_set(conn, project_id, limits, user_id)


async def set_class_limits(conn: Connection, class_name: str, limits: Mapping[str, int]) -> None:
    for resource, limit in limits.items():
        _validate_limit(resource, limit, UNLIMITED, UNLIMITED)
    await quotas_db.class_set(conn, class_name, limits)


async def revert_to_defaults(conn: Connection, project_id: str, user_id: str | None = None) -> None:
    """Forget the limits set for a user, or for a project and all its users."""
    await quotas_db.limits_delete(conn, project_id, user_id)


def filtered(resources: Sequence[str], *, network: bool, injected: bool) -> list[str]:
    """The resources a view shows: network quotas before 2.36, injected files before 2.57."""
    shown = list(resources)
    if network:
        shown += NETWORK_RESOURCES
    if not injected:
        shown = [name for name in shown if name not in INJECTED_RESOURCES]
    return shown


# --- networking ------------------------------------------------------------------------------

#: Networking quotas (Neutron's names; ``[quota]`` options of the same names).
NEUTRON_RESOURCES = (
    "network",
    "subnet",
    "port",
    "security_group",
    "security_group_rule",
    "router",
    "floatingip",
)


async def network_defaults(
    conn: Connection, conf: cfg.ConfigOpts, class_name: str = DEFAULT_CLASS
) -> dict[str, int]:
    """The network service's limits of a quota class (for ``default``: every
    project's defaults): what the class sets through the compute API
    (``os-quota-class-sets``, the proxied quotas), else the ``[quota]`` option."""
    found = await quotas_db.class_get(conn, class_name)
    return {name: found.get(name, int(getattr(conf.quota, name))) for name in NEUTRON_RESOURCES}


async def network_limits(conn: Connection, conf: cfg.ConfigOpts, project_id: str) -> dict[str, int]:
    """The network service's limits of a project: its row, else the defaults."""
    own = await quotas_db.limits_get(conn, project_id)
    defaults = await network_defaults(conn, conf)
    return {name: own.get(name, defaults[name]) for name in NEUTRON_RESOURCES}


async def check_network_resource(
    conn: Connection,
    conf: cfg.ConfigOpts,
    *,
    project_id: str,
    resource: str,
    used: Callable[[Connection], Awaitable[int]],
    count: int = 1,
) -> None:
    """``count`` more of a networking resource must fit in the project's limit.

    Neutron counts per project only. The limit is a project row of that
    resource (``quotas`` table) over the ``[quota]`` option. Takes the
    project's quota lock, so the count and the caller's insert (in the same
    transaction) are one step; an overshoot is Neutron's 409 ``OverQuota``.
    """
    await quotas_db.lock_project(conn, project_id)
    limit = (await network_limits(conn, conf, project_id))[resource]
    if limit != UNLIMITED and await used(conn) + count > limit:
        raise exception.NetworkOverQuota(resource=resource)


# --- images ----------------------------------------------------------------------------------

#: Image quotas, Glance's unified limits (``[quota]`` options of the same
#: names). The sizes are MiB, as Glance's; usage is counted in bytes and
#: shown and compared in whole MiB (rounded down), as Glance does.
IMAGE_RESOURCES = (
    "image_size_total",
    "image_stage_total",
    "image_count_total",
    "image_count_uploading",
)
IMAGE_SIZES = ("image_size_total", "image_stage_total")
_MIB = 1024 * 1024


async def image_defaults(conn: Connection, conf: cfg.ConfigOpts) -> dict[str, int]:
    """Every project's image limits: the quota class ``default``'s, else the option."""
    found = await quotas_db.class_get(conn, DEFAULT_CLASS)
    return {name: found.get(name, int(getattr(conf.quota, name))) for name in IMAGE_RESOURCES}


async def image_limits(conn: Connection, conf: cfg.ConfigOpts, project_id: str) -> dict[str, int]:
    """A project's image limits: its rows (``quotas``), else the defaults."""
    own = await quotas_db.limits_get(conn, project_id)
    defaults = await image_defaults(conn, conf)
    return {name: own.get(name, defaults[name]) for name in IMAGE_RESOURCES}


async def image_usage(conn: Connection, project_id: str) -> dict[str, int]:
    """What a project's images use, sizes in MiB."""
    used = await images_db.usage(conn, project_id)
    return {
        name: used[name] // _MIB if name in IMAGE_SIZES else used[name] for name in IMAGE_RESOURCES
    }


async def check_images(
    conn: Connection, conf: cfg.ConfigOpts, project_id: str, deltas: Mapping[str, int]
) -> None:
    """Glance's enforcement of its unified limits: each quota in ``deltas``
    must stay within its limit once its delta is added to what is used.

    A delta of 0 asks "is the project already over?": Glance cannot know
    how much data an upload brings, so an upload starts while the project
    is within its size quota, and the next one is refused once it is over.
    Takes the project's quota lock: call it in the transaction that makes
    the change it allows (a new image, an image moving into an upload).
    """
    await quotas_db.lock_project(conn, project_id)
    limits = await image_limits(conn, conf, project_id)
    if all(limits[name] == UNLIMITED for name in deltas):
        return
    used = await image_usage(conn, project_id)
    overs = [
        f"Resource {name} is over limit of {limits[name]} due to current usage "
        f"{used[name]} and delta {delta}"
        for name, delta in deltas.items()
        if limits[name] != UNLIMITED and used[name] + delta > limits[name]
    ]
    if overs:
        raise exception.ImageQuotaExceeded(project_id=project_id, overs=", ".join(overs))
