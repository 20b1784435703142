"""Networks, subnets, ports, IPAM, security groups and their rules.

Rows are hard-deleted (see :mod:`nubes.db.models.network`). Listing takes
Neutron's filters as ``{column: [values]}`` (any of the values), a
:class:`Visible` the caller builds from the request's project (None: every
row, for an admin), a marker and a limit, sorted by id as Neutron pages by
default. Callers name a table by its :data:`Kind`; the tables themselves
stay in this layer.

The one write path for addresses is :func:`allocate_addresses` (for one
port or a batch): it locks each subnet row (one conditional UPDATE), reads
what is taken, picks and inserts, so concurrent allocators on a subnet run
one after another and the (subnet, address) primary key is only a safety
net.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from nubes import exception, ipam
from nubes.db import group_commit
from nubes.db.models import (
    default_security_groups,
    floatingips,
    instance_network_requests,
    instances,
    ip_allocations,
    networks,
    port_security_groups,
    ports,
    routers,
    security_group_rules,
    security_groups,
    subnets,
)
from nubes.db.types import utcnow

Row = dict[str, Any]

#: The resources callers name by kind (each is the table of that name).
Kind = Literal[
    "networks",
    "subnets",
    "ports",
    "security_groups",
    "security_group_rules",
    "routers",
    "floatingips",
]
_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        networks,
        subnets,
        ports,
        security_groups,
        security_group_rules,
        routers,
        floatingips,
    )
}
#: ``device_owner`` of the ports a router and a floating IP hold (Neutron's names).
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATING_IP = "network:floatingip"


@dataclasses.dataclass(frozen=True)
class Visible:
    """Which rows a non-admin caller sees: its project's, and maybe more.

    ``shared``: networks marked shared, and external ones (every project
    sees those, as in Neutron, to pick a floating IP pool or a router
    gateway), too. ``network_ids``: rows (subnets) of these networks too
    (the shared and external networks' subnets).
    """

    project_id: str
    shared: bool = False
    network_ids: Sequence[str] = ()


def _clause(table: Table, visible: Visible) -> ColumnElement[bool]:
    clause: ColumnElement[bool] = table.c.project_id == visible.project_id
    if visible.shared:
        clause = or_(clause, table.c.shared.is_(True), table.c.external.is_(True))
    if visible.network_ids:
        clause = or_(clause, table.c.network_id.in_(list(visible.network_ids)))
    return clause


_NOT_FOUND: dict[str, tuple[type[exception.NotFound], str]] = {
    "networks": (exception.NetworkNotFound, "net_id"),
    "subnets": (exception.SubnetNotFound, "subnet_id"),
    "ports": (exception.PortNotFound, "port_id"),
    "security_groups": (exception.SecurityGroupNotFound, "id"),
    "security_group_rules": (exception.SecurityGroupRuleNotFound, "id"),
    "routers": (exception.RouterNotFound, "router_id"),
    "floatingips": (exception.FloatingIPNotFound, "floatingip_id"),
}


def _not_found(table: Table, row_id: str) -> exception.NotFound:
    cls, key = _NOT_FOUND[table.name]
    return cls(**{key: row_id})


# --- generic rows --------------------------------------------------------------------------


async def create(conn: AsyncConnection, kind: Kind, values: Mapping[str, Any]) -> None:
    await create_many(conn, kind, [values])


async def create_many(conn: AsyncConnection, kind: Kind, rows: Sequence[Mapping[str, Any]]) -> None:
    """Several rows of ``kind`` in one statement.

    Each row is a microsecond younger than the one before it, so listings
    (by creation time) keep the order given, as rows created one by one.
    """
    if not rows:
        return
    table = _TABLES[kind]
    now = utcnow()
    values = [dict(r) for r in rows]
    if "created_at" in table.c:
        for n, row in enumerate(values):
            stamp = now + dt.timedelta(microseconds=n)
            row.setdefault("created_at", stamp)
            row.setdefault("updated_at", stamp)
    await conn.execute(insert(table), values)


async def get(conn: AsyncConnection, kind: Kind, row_id: str) -> Row:
    table = _TABLES[kind]
    found = (await conn.execute(select(table).where(table.c.id == row_id))).mappings().first()
    if found is None:
        raise _not_found(table, row_id)
    return dict(found)


async def get_many(conn: AsyncConnection, kind: Kind, ids: Iterable[str]) -> list[Row]:
    table = _TABLES[kind]
    wanted = sorted(set(ids))
    if not wanted:
        return []
    stmt = select(table).where(table.c.id.in_(wanted))
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def update_row(
    conn: AsyncConnection, kind: Kind, row_id: str, values: Mapping[str, Any]
) -> None:
    table = _TABLES[kind]
    stmt = (
        update(table)
        .where(table.c.id == row_id)
        .values(
            **values,
            updated_at=utcnow(),
            revision_number=table.c.revision_number + 1,
        )
    )
    if (await conn.execute(stmt)).rowcount != 1:
        raise _not_found(table, row_id)


async def delete_row(conn: AsyncConnection, kind: Kind, row_id: str) -> None:
    table = _TABLES[kind]
    if (await conn.execute(delete(table).where(table.c.id == row_id))).rowcount != 1:
        raise _not_found(table, row_id)


async def list_rows(
    conn: AsyncConnection,
    kind: Kind,
    *,
    visible: Visible | None,
    filters: Mapping[str, Sequence[Any]],
    limit: int | None = None,
    marker: str | None = None,
    descending: bool = False,
) -> list[Row]:
    table = _TABLES[kind]
    stmt = select(table)
    if visible is not None:
        stmt = stmt.where(_clause(table, visible))
    for column, values in filters.items():
        stmt = stmt.where(table.c[column].in_(list(values)))
    if marker is not None:
        stmt = stmt.where(table.c.id < marker if descending else table.c.id > marker)
    stmt = stmt.order_by(table.c.id.desc() if descending else table.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def count_by_project(conn: AsyncConnection, kind: Kind, project_id: str) -> int:
    table = _TABLES[kind]
    stmt = select(func.count()).select_from(table).where(table.c.project_id == project_id)
    return int((await conn.execute(stmt)).scalar_one())


# --- networks and subnets ------------------------------------------------------------------


async def _ids_by(
    conn: AsyncConnection,
    key: ColumnElement[Any],
    value: ColumnElement[Any],
    keys: Sequence[str],
    *order: ColumnElement[Any],
) -> dict[str, list[str]]:
    """``value`` of the rows whose ``key`` is one of ``keys``, per key (every key listed)."""
    found: dict[str, list[str]] = {k: [] for k in keys}
    if not keys:
        return found
    stmt = select(key, value).where(key.in_(list(set(keys)))).order_by(*order)
    for owner, item in await conn.execute(stmt):
        found.setdefault(owner, []).append(item)
    return found


async def subnet_ids_by_network(
    conn: AsyncConnection, network_ids: Sequence[str]
) -> dict[str, list[str]]:
    return await _ids_by(
        conn, subnets.c.network_id, subnets.c.id, network_ids, subnets.c.created_at, subnets.c.id
    )


async def subnets_of(conn: AsyncConnection, network_id: str) -> list[Row]:
    stmt = (
        select(subnets)
        .where(subnets.c.network_id == network_id)
        .order_by(subnets.c.created_at, subnets.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def port_count(conn: AsyncConnection, *, network_id: str) -> int:
    stmt = select(func.count()).select_from(ports).where(ports.c.network_id == network_id)
    return int((await conn.execute(stmt)).scalar_one())


async def allocation_count(conn: AsyncConnection, *, subnet_id: str) -> int:
    stmt = (
        select(func.count())
        .select_from(ip_allocations)
        .where(ip_allocations.c.subnet_id == subnet_id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def auto_allocated_network(conn: AsyncConnection, project_id: str) -> Row | None:
    stmt = (
        select(networks)
        .where(networks.c.project_id == project_id, networks.c.auto_allocated.is_(True))
        .order_by(networks.c.created_at)
    )
    found = (await conn.execute(stmt)).mappings().first()
    return dict(found) if found is not None else None


# --- ports and IPAM ------------------------------------------------------------------------


async def fixed_ips_by_port(
    conn: AsyncConnection, port_ids: Sequence[str]
) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {p: [] for p in port_ids}
    if not port_ids:
        return found
    stmt = select(
        ip_allocations.c.port_id, ip_allocations.c.subnet_id, ip_allocations.c.ip_address
    ).where(ip_allocations.c.port_id.in_(list(set(port_ids))))
    for port_id, subnet_id, address in await conn.execute(stmt):
        found.setdefault(port_id, []).append({"subnet_id": subnet_id, "ip_address": address})
    return found


async def port_ids_with_address(
    conn: AsyncConnection, addresses: Sequence[str], subnet_ids: Sequence[str] | None = None
) -> list[str]:
    stmt = select(ip_allocations.c.port_id).where(ip_allocations.c.ip_address.in_(addresses))
    if subnet_ids is not None:
        stmt = stmt.where(ip_allocations.c.subnet_id.in_(list(subnet_ids)))
    return sorted({r[0] for r in await conn.execute(stmt)})


async def port_ids_in_subnets(conn: AsyncConnection, subnet_ids: Sequence[str]) -> list[str]:
    stmt = select(ip_allocations.c.port_id).where(ip_allocations.c.subnet_id.in_(list(subnet_ids)))
    return sorted({r[0] for r in await conn.execute(stmt)})


async def _lock_subnet(conn: AsyncConnection, subnet_id: str) -> Row:
    bump = (
        update(subnets)
        .where(subnets.c.id == subnet_id)
        .values(ipam_generation=subnets.c.ipam_generation + 1)
    )
    if (await conn.execute(bump)).rowcount != 1:
        raise exception.SubnetNotFound(subnet_id=subnet_id)
    return await get(conn, "subnets", subnet_id)


async def _used(conn: AsyncConnection, subnet_id: str) -> set[str]:
    stmt = select(ip_allocations.c.ip_address).where(ip_allocations.c.subnet_id == subnet_id)
    return {r[0] for r in await conn.execute(stmt)}


@dataclasses.dataclass(frozen=True)
class AddressRequest:
    """The addresses one port is to get (see :func:`allocate_addresses`)."""

    port_id: str
    network_id: str
    #: Neutron's ``fixed_ips`` items; None: one address from each of the network's subnets.
    fixed_ips: Sequence[Mapping[str, Any]] | None = None
    #: The port may hold its subnet's gateway address (a router interface).
    gateway_ok: bool = False


def _wanted(
    request: AddressRequest, network_subnets: Sequence[Row]
) -> list[tuple[str, str | None]]:
    """(subnet id, address or None for any) per address the port asks for."""
    by_id = {s["id"]: s for s in network_subnets}
    if request.fixed_ips is None:
        return [(s["id"], None) for s in network_subnets]
    wanted: list[tuple[str, str | None]] = []
    for item in request.fixed_ips:
        subnet_id: str | None = item.get("subnet_id")
        address: str | None = item.get("ip_address")
        if subnet_id is None and address is not None:
            parsed = ipam.parse_address(address, "fixed_ips")
            matching = [
                s["id"]
                for s in network_subnets
                if parsed in ipam.parse_cidr(s["cidr"]) and s["ip_version"] == parsed.version
            ]
            if not matching:
                raise exception.NetworkInvalid(
                    reason=f"IP address {address} is not a valid IP for any of the subnets "
                    "on the specified network."
                )
            subnet_id = matching[0]
        if subnet_id is None or subnet_id not in by_id:
            raise exception.NetworkInvalid(
                reason=f"Failed to create port on network {request.network_id}, because "
                f"fixed_ips included invalid subnet {subnet_id}."
            )
        wanted.append((subnet_id, address))
    return wanted


def _asked(subnet: Row, address: str, used: set[str], gateway_ok: bool = False) -> str:
    """A specific address of the subnet, if it may be given (else why not).

    ``gateway_ok``: the subnet's gateway address too (a router's interface holds it).
    """
    parsed = ipam.parse_address(address, "fixed_ips")
    net = ipam.parse_cidr(subnet["cidr"])
    if parsed not in net or parsed in (net.network_address, net.broadcast_address):
        raise exception.NetworkInvalid(
            reason=f"IP address {address} is not a valid IP for the specified subnet."
        )
    chosen = str(parsed)
    if (chosen == subnet["gateway_ip"] and not gateway_ok) or chosen in used:
        raise exception.IpAddressAlreadyAllocated(ip=chosen, subnet_id=subnet["id"])
    return chosen


async def allocate_addresses(
    conn: AsyncConnection, requests: Sequence[AddressRequest]
) -> dict[str, list[dict[str, str]]]:
    """Give each port its addresses, atomically, in the caller's transaction.

    Each subnet involved is locked once (in id order, so that concurrent
    allocators cannot deadlock), what it has taken read once, and every
    address inserted in one statement: a batch of ports costs about what
    one does. Specific addresses are checked first, then the others are
    picked around them. A subnet with no free address left raises
    IpAddressGenerationFailure; an address held by another port raises
    IpAddressAlreadyAllocated. Returns each port's ``fixed_ips``.
    """
    network_ids = sorted({r.network_id for r in requests})
    network_subnets: dict[str, list[Row]] = {}
    if network_ids:
        stmt = (
            select(subnets)
            .where(subnets.c.network_id.in_(network_ids))
            .order_by(subnets.c.created_at, subnets.c.id)
        )
        for row in (await conn.execute(stmt)).mappings():
            network_subnets.setdefault(row["network_id"], []).append(dict(row))
    plans = [
        (r, subnet_id, address)
        for r in requests
        for subnet_id, address in _wanted(r, network_subnets.get(r.network_id, []))
    ]
    locked: dict[str, tuple[Row, set[str]]] = {}
    for subnet_id in sorted({subnet_id for _, subnet_id, _ in plans}):
        locked[subnet_id] = (await _lock_subnet(conn, subnet_id), await _used(conn, subnet_id))
    chosen: dict[int, str] = {}
    for index, (request, subnet_id, address) in enumerate(plans):
        if address is not None:
            subnet, used = locked[subnet_id]
            chosen[index] = _asked(subnet, address, used, request.gateway_ok)
            used.add(chosen[index])
    free = {s: ipam.free_addresses(subnet, used) for s, (subnet, used) in locked.items()}
    for index, (request, subnet_id, _) in enumerate(plans):
        if index not in chosen:
            picked = next(free[subnet_id], None)
            if picked is None:
                raise exception.IpAddressGenerationFailure(net_id=request.network_id)
            locked[subnet_id][1].add(picked)
            chosen[index] = picked
    out: dict[str, list[dict[str, str]]] = {r.port_id: [] for r in requests}
    rows = []
    for index, (request, subnet_id, _) in enumerate(plans):
        rows.append(
            {
                "subnet_id": subnet_id,
                "ip_address": chosen[index],
                "port_id": request.port_id,
                "network_id": request.network_id,
            }
        )
        out[request.port_id].append({"subnet_id": subnet_id, "ip_address": chosen[index]})
    if rows:
        await conn.execute(insert(ip_allocations), rows)
    return out


async def release_addresses(conn: AsyncConnection, port_id: str) -> None:
    await conn.execute(delete(ip_allocations).where(ip_allocations.c.port_id == port_id))


async def delete_port(conn: AsyncConnection, port_id: str) -> None:
    """The port, its addresses and its group memberships, in one transaction.

    A floating IP mapped to the port is disassociated in the same
    transaction (Neutron's behaviour: the floating IP stays the project's).
    """
    await disassociate_floating_ips(conn, port_id)
    await release_addresses(conn, port_id)
    await conn.execute(
        delete(port_security_groups).where(port_security_groups.c.port_id == port_id)
    )
    await delete_row(conn, "ports", port_id)


async def ports_of_devices(conn: AsyncConnection, device_ids: Sequence[str]) -> list[Row]:
    if not device_ids:
        return []
    stmt = (
        select(ports)
        .where(ports.c.device_id.in_(list(set(device_ids))))
        .order_by(ports.c.created_at, ports.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


# --- security groups -----------------------------------------------------------------------


async def groups_by_port(conn: AsyncConnection, port_ids: Sequence[str]) -> dict[str, list[str]]:
    column = port_security_groups.c
    return await _ids_by(
        conn, column.port_id, column.security_group_id, port_ids, column.security_group_id
    )


async def add_port_groups(conn: AsyncConnection, groups: Mapping[str, Sequence[str]]) -> None:
    """New ports' security groups (port id -> group ids), in one statement."""
    rows = [
        {"port_id": port_id, "security_group_id": g}
        for port_id, group_ids in groups.items()
        for g in sorted(set(group_ids))
    ]
    if rows:
        await conn.execute(insert(port_security_groups), rows)


async def set_port_groups(conn: AsyncConnection, port_id: str, group_ids: Sequence[str]) -> None:
    await conn.execute(
        delete(port_security_groups).where(port_security_groups.c.port_id == port_id)
    )
    if group_ids:
        await conn.execute(
            insert(port_security_groups),
            [{"port_id": port_id, "security_group_id": g} for g in sorted(set(group_ids))],
        )


async def group_in_use(conn: AsyncConnection, group_id: str) -> bool:
    stmt = select(port_security_groups.c.port_id).where(
        port_security_groups.c.security_group_id == group_id
    )
    return (await conn.execute(stmt.limit(1))).first() is not None


async def rules_by_group(conn: AsyncConnection, group_ids: Sequence[str]) -> dict[str, list[Row]]:
    found: dict[str, list[Row]] = {g: [] for g in group_ids}
    if not group_ids:
        return found
    stmt = (
        select(security_group_rules)
        .where(security_group_rules.c.security_group_id.in_(list(set(group_ids))))
        .order_by(security_group_rules.c.created_at, security_group_rules.c.id)
    )
    for row in (await conn.execute(stmt)).mappings():
        found.setdefault(row["security_group_id"], []).append(dict(row))
    return found


async def delete_rules_of_group(conn: AsyncConnection, group_id: str) -> None:
    """The group's rules, and rules of other groups that name it as their remote."""
    await conn.execute(
        delete(security_group_rules).where(
            or_(
                security_group_rules.c.security_group_id == group_id,
                security_group_rules.c.remote_group_id == group_id,
            )
        )
    )
    await conn.execute(
        delete(default_security_groups).where(
            default_security_groups.c.security_group_id == group_id
        )
    )


async def default_group_id(conn: AsyncConnection, project_id: str) -> str | None:
    stmt = select(default_security_groups.c.security_group_id).where(
        default_security_groups.c.project_id == project_id
    )
    found = (await conn.execute(stmt)).first()
    return None if found is None else str(found[0])


async def claim_default_group(conn: AsyncConnection, project_id: str, group_id: str) -> None:
    """Mark ``group_id`` as the project's default (DBDuplicateEntry if it has one)."""
    await conn.execute(
        insert(default_security_groups).values(project_id=project_id, security_group_id=group_id)
    )


async def is_default_group(conn: AsyncConnection, group_id: str) -> bool:
    stmt = select(default_security_groups.c.project_id).where(
        default_security_groups.c.security_group_id == group_id
    )
    return (await conn.execute(stmt)).first() is not None


def visible_to(project_id: str | None, *, shared: bool = False) -> Visible:
    """Rows of the project (and, for networks, shared ones)."""
    return Visible(project_id or "", shared=shared)


# --- a server's NIC requests and its ports (nubes.network.ports) ---------------------------


async def network_requests(conn: AsyncConnection, instance_uuid: str) -> list[Row]:
    """The server's NIC requests in the order asked."""
    return (await network_requests_of(conn, [instance_uuid]))[instance_uuid]


async def add_network_requests(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(instance_network_requests), [dict(r) for r in rows])


async def delete_network_requests(
    conn: AsyncConnection, instance_uuid: str, port_id: str | None = None
) -> None:
    """The server's NIC requests (only the one for ``port_id`` if given) removed."""
    stmt = delete(instance_network_requests).where(
        instance_network_requests.c.instance_uuid == instance_uuid
    )
    if port_id is not None:
        stmt = stmt.where(instance_network_requests.c.port_id == port_id)
    await conn.execute(stmt)


async def lock_instance_owners(
    conn: AsyncConnection, instance_uuids: Sequence[str]
) -> dict[str, Row]:
    """Per live instance: its project, user and task state, its row locked until commit.

    A delete recorded meanwhile waits for the caller's commit, and its release
    then finds (and frees) the ports made in it. Rows are locked in uuid order.
    """
    if not instance_uuids:
        return {}
    stmt = (
        select(
            instances.c.uuid, instances.c.project_id, instances.c.user_id, instances.c.task_state
        )
        .where(instances.c.uuid.in_(sorted(set(instance_uuids))), instances.c.deleted == 0)
        .order_by(instances.c.uuid)
        .with_for_update()
    )
    return {r["uuid"]: dict(r) for r in (await conn.execute(stmt)).mappings()}


async def network_requests_of(
    conn: AsyncConnection, instance_uuids: Sequence[str]
) -> dict[str, list[Row]]:
    """Per server, its NIC requests in the order asked (every server listed)."""
    found: dict[str, list[Row]] = {u: [] for u in instance_uuids}
    if not instance_uuids:
        return found
    column = instance_network_requests.c
    stmt = (
        select(instance_network_requests)
        .where(column.instance_uuid.in_(sorted(set(instance_uuids))))
        .order_by(column.instance_uuid, column.position)
    )
    for row in (await conn.execute(stmt)).mappings():
        found.setdefault(row["instance_uuid"], []).append(dict(row))
    return found


async def set_request_ports(conn: AsyncConnection, ports_by_request: Mapping[int, str]) -> None:
    """Each NIC request given the port made for it."""
    if not ports_by_request:
        return
    column = instance_network_requests.c
    await conn.execute(
        update(instance_network_requests)
        .where(column.id == bindparam("_request"))
        .values(port_id=bindparam("_port")),
        [{"_request": r, "_port": p} for r, p in ports_by_request.items()],
    )


async def claim_port(conn: AsyncConnection, port_id: str, device_id: str, owner: str) -> None:
    """The port given to a server (device and owner set)."""
    await conn.execute(
        update(ports).where(ports.c.id == port_id).values(device_id=device_id, device_owner=owner)
    )


async def unbind_port(conn: AsyncConnection, port_id: str) -> None:
    """A port the user gave back to nobody: no device, owner or host, DOWN."""
    await conn.execute(
        update(ports)
        .where(ports.c.id == port_id)
        .values(
            device_id="",
            device_owner="",
            binding_host_id="",
            status="DOWN",
            updated_at=utcnow(),
        )
    )


def bind_ports_write(instance_uuid: str, host: str) -> group_commit.Write:
    """The server's ports bound to ``host`` and ACTIVE, described for a commit.

    Optional (a server with no port matches nothing), so a placement commit
    that carries it stays groupable (:func:`nubes.db.group_commit.commit`).
    """
    return group_commit.Write(
        (__name__, "bind_ports"),
        _bind_ports_statement,
        {"_device_id": instance_uuid, "_host": host, "_now": utcnow()},
    )


def _bind_ports_statement() -> Any:
    return (
        update(ports)
        .where(ports.c.device_id == bindparam("_device_id"))
        .values(
            binding_host_id=bindparam("_host"),
            status=literal_column("'ACTIVE'"),
            updated_at=bindparam("_now"),
            revision_number=ports.c.revision_number + literal_column("1"),
        )
    )


async def unbind_ports(conn: AsyncConnection, instance_uuid: str) -> None:
    """The server's ports bound to no host and DOWN, kept for it (a shelve
    offload: the next host binds them again)."""
    await conn.execute(
        update(ports)
        .where(ports.c.device_id == instance_uuid)
        .values(
            binding_host_id="",
            status="DOWN",
            updated_at=utcnow(),
            revision_number=ports.c.revision_number + literal_column("1"),
        )
    )


async def bind_ports(conn: AsyncConnection, instance_uuid: str, host: str) -> None:
    """The server's ports bound to ``host`` and ACTIVE."""
    await bind_ports_write(instance_uuid, host).run(conn)


# --- routers and floating IPs --------------------------------------------------------------


async def router_ports(conn: AsyncConnection, router_ids: Sequence[str]) -> dict[str, list[Row]]:
    """Per router, its interface ports (every router listed), oldest first."""
    found: dict[str, list[Row]] = {r: [] for r in router_ids}
    if not router_ids:
        return found
    stmt = (
        select(ports)
        .where(
            ports.c.device_owner == ROUTER_INTERFACE,
            ports.c.device_id.in_(sorted(set(router_ids))),
        )
        .order_by(ports.c.created_at, ports.c.id)
    )
    for row in (await conn.execute(stmt)).mappings():
        found.setdefault(row["device_id"], []).append(dict(row))
    return found


async def interface_routers(
    conn: AsyncConnection, subnet_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Subnet id -> the routers with an interface on it (every subnet listed)."""
    found: dict[str, list[str]] = {s: [] for s in subnet_ids}
    if not subnet_ids:
        return found
    stmt = (
        select(ip_allocations.c.subnet_id, ports.c.device_id)
        .join(ports, ports.c.id == ip_allocations.c.port_id)
        .where(
            ports.c.device_owner == ROUTER_INTERFACE,
            ip_allocations.c.subnet_id.in_(sorted(set(subnet_ids))),
        )
        .order_by(ports.c.device_id)
    )
    for subnet_id, router_id in await conn.execute(stmt):
        found.setdefault(subnet_id, []).append(router_id)
    return found


async def floating_ips_via(
    conn: AsyncConnection, router_id: str, subnet_ids: Sequence[str] | None = None
) -> int:
    """How many floating IPs are mapped through the router (to fixed
    addresses of ``subnet_ids`` only, if given)."""
    stmt = (
        select(func.count())
        .select_from(floatingips)
        .where(floatingips.c.router_id == router_id, floatingips.c.fixed_port_id.is_not(None))
    )
    if subnet_ids is not None:
        stmt = stmt.where(
            floatingips.c.fixed_port_id.in_(
                select(ip_allocations.c.port_id).where(
                    ip_allocations.c.subnet_id.in_(list(subnet_ids))
                )
            )
        )
    return int((await conn.execute(stmt)).scalar_one())


async def floating_ips_of_ports(conn: AsyncConnection, port_ids: Sequence[str]) -> list[Row]:
    """The floating IPs mapped to any of the ports."""
    if not port_ids:
        return []
    stmt = (
        select(floatingips)
        .where(floatingips.c.fixed_port_id.in_(sorted(set(port_ids))))
        .order_by(floatingips.c.id)
    )
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def disassociate_floating_ips(
    conn: AsyncConnection, port_id: str, keep: Sequence[str] = ()
) -> None:
    """The floating IPs mapped to the port (but those mapped to an address in
    ``keep``) unmapped (DOWN), kept for their project."""
    stmt = update(floatingips).where(floatingips.c.fixed_port_id == port_id)
    if keep:
        stmt = stmt.where(floatingips.c.fixed_ip_address.not_in(list(keep)))
    await conn.execute(
        stmt.values(
            fixed_port_id=None,
            fixed_ip_address=None,
            router_id=None,
            status="DOWN",
            updated_at=utcnow(),
            revision_number=floatingips.c.revision_number + 1,
        )
    )
