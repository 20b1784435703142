"""A server's ports: what it asked for, made before its spawn, freed with it.

The compute API resolves a create's ``networks`` and ``security_groups``
(:func:`resolve`) and records one request per NIC in the transaction that
records the server (:func:`record`). The build task then calls, before it
sends the spawn:

- :func:`allocate_for_instance` (idempotent; concurrent builds share one
  transaction): a port per request with an address from IPAM, owned
  ``compute:<zone>`` by the server. A failure (no address left, quota, a network deleted meanwhile)
  fails the build with that message.
- :func:`bind_writes` in the commit that places the server on a host: the
  ports bound to that host (again on each reschedule).

:func:`release_writes` (in the delete's and a failed build's last commit)
deletes the ports nubes made and unbinds the ones the user gave.
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.db.api import network as net_db
from nubes.db.engine import Connection, Database
from nubes.db.group_commit import Write
from nubes.db.transaction_batch import TransactionBatcher
from nubes.network import resources

Writes = Callable[[Connection], Awaitable[None]]
#: Name of the network get-me-a-network makes for a project (Nova's is the same).
AUTO_NETWORK_NAME = "auto_allocated_network"
COMPUTE_OWNER = "compute:"


def _bad(reason: str) -> exception.NetworkRequestInvalid:
    return exception.NetworkRequestInvalid(reason=reason)


# --- the API side: resolve and record --------------------------------------------------------


async def _visible_networks(conn: Connection, ctxt: RequestContext) -> list[dict[str, Any]]:
    """Networks a server of the project may use: its own and shared ones, not external."""
    rows = await net_db.list_rows(
        conn,
        "networks",
        visible=net_db.visible_to(ctxt.project_id, shared=True),
        filters={},
    )
    return [r for r in rows if not r["external"]]


async def _auto_network(service: resources.NetworkService, ctxt: RequestContext) -> str:
    """get-me-a-network: the project's one usable network, or one made for it now."""
    async with service.db.reader() as conn:
        usable = await _visible_networks(conn, ctxt)
        made = await net_db.auto_allocated_network(conn, ctxt.project_id or "")
    if made is not None:
        return str(made["id"])
    if len(usable) == 1:
        return str(usable[0]["id"])
    if usable:
        raise _bad(
            "Unable to automatically allocate a network for project "
            f"{ctxt.project_id}: it has several networks; choose one."
        )
    net = await service.create_network(ctxt, {"name": AUTO_NETWORK_NAME, "_auto_allocated": True})
    await service.create_subnet(
        ctxt,
        {
            "network_id": net["id"],
            "cidr": str(service.conf.api.auto_allocated_cidr),
            "name": AUTO_NETWORK_NAME,
        },
    )
    return str(net["id"])


async def _groups(
    conn: Connection,
    service: resources.NetworkService,
    ctxt: RequestContext,
    wanted: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Security group names (or ids) of the project as ids; 400 for one not found."""
    project_id = ctxt.project_id or ""
    out: list[str] = []
    for entry in wanted:
        name = str(entry.get("name") or "")
        if name == resources.DEFAULT_GROUP:
            out.append(await service.ensure_default_group(conn, project_id))
            continue
        found = await net_db.list_rows(
            conn,
            "security_groups",
            visible=net_db.visible_to(project_id),
            filters={"name": [name]},
        )
        if not found:
            found = await net_db.list_rows(
                conn,
                "security_groups",
                visible=net_db.visible_to(project_id),
                filters={"id": [name]},
            )
        if not found:
            raise _bad(f"Security group {name} not found.")
        if len(found) > 1:
            raise exception.Conflict(reason=f"Multiple security groups found matching '{name}'.")
        out.append(str(found[0]["id"]))
    return sorted(set(out))


async def resolve(
    service: resources.NetworkService,
    ctxt: RequestContext,
    requested: Any,
    security_groups: Sequence[Mapping[str, Any]] | None,
    count: int,
) -> list[dict[str, Any]]:
    """A create's ``networks`` as NIC requests (Nova's rules, 400 for what cannot be used).

    ``requested``: ``"none"``, ``"auto"``, a list of ``{uuid, fixed_ip,
    port}``, or None (before 2.37: the project's one network if it has
    exactly one, none if it has none).
    """
    if requested == "none":
        return []
    if requested is None:
        async with service.db.reader() as conn:
            usable = await _visible_networks(conn, ctxt)
        if not usable:
            return []
        if len(usable) > 1:
            raise exception.Conflict(
                reason="Multiple possible networks found, use a Network ID to be more specific."
            )
        requested = [{"uuid": usable[0]["id"]}]
    if requested == "auto":
        requested = [{"uuid": await _auto_network(service, ctxt)}]
    out: list[dict[str, Any]] = []
    async with service.db.writer() as conn:
        groups = await _groups(
            conn, service, ctxt, security_groups or [{"name": resources.DEFAULT_GROUP}]
        )
        seen_ports: set[str] = set()
        for nic in requested:
            port_id = nic.get("port")
            if port_id:
                try:
                    port = await net_db.get(conn, "ports", str(port_id))
                except exception.PortNotFound:
                    raise _bad(f"Port {port_id} could not be found.") from None
                if not resources.is_admin(ctxt) and port["project_id"] != ctxt.project_id:
                    raise _bad(f"Port {port_id} could not be found.")
                if port["device_id"] or port_id in seen_ports:
                    raise exception.PortInUse(port_id=port_id, device_id=port["device_id"])
                seen_ports.add(str(port_id))
                out.append(
                    {
                        "network_id": port["network_id"],
                        "port_id": port["id"],
                        "fixed_ip": None,
                        "security_groups": [],
                        "preexisting": True,
                    }
                )
                continue
            network_id = str(nic.get("uuid") or "")
            try:
                network = await net_db.get(conn, "networks", network_id)
            except exception.NetworkNotFound:
                network = None
            if network is None or not resources.can_see(ctxt, network):
                raise _bad(f"Network {network_id} could not be found.")
            fixed = nic.get("fixed_ip")
            if fixed:
                try:
                    address = ipaddress.ip_address(str(fixed))
                except ValueError:
                    raise _bad(f"Invalid fixed IP address ({fixed})") from None
                inside = [
                    s
                    for s in await net_db.subnets_of(conn, network_id)
                    if address in ipaddress.ip_network(s["cidr"])
                ]
                if not inside:
                    raise _bad(
                        f"Fixed IP address {fixed} is not on any subnet of network {network_id}."
                    )
                fixed = str(address)
                held = await net_db.port_ids_with_address(conn, [fixed], [s["id"] for s in inside])
                if held:
                    raise exception.Conflict(reason=f"Fixed IP address {fixed} is already in use.")
            if not await net_db.subnets_of(conn, network_id):
                raise _bad(f"Network {network_id} requires a subnet in order to boot instances on.")
            out.append(
                {
                    "network_id": network_id,
                    "port_id": None,
                    "fixed_ip": fixed or None,
                    "security_groups": groups if network["port_security_enabled"] else [],
                    "preexisting": False,
                }
            )
    if count > 1 and any(r["port_id"] or r["fixed_ip"] for r in out):
        raise _bad(
            "Unable to launch multiple instances with a single configured port ID or fixed IP."
        )
    return out


async def record(
    conn: Connection, instance_uuids: Sequence[str], requests: Sequence[Mapping[str, Any]]
) -> None:
    """The requests of each new server, in the transaction that creates the servers."""
    rows = [
        {**dict(r), "instance_uuid": uuid, "position": position}
        for uuid in instance_uuids
        for position, r in enumerate(requests)
    ]
    await net_db.add_network_requests(conn, rows)
    for r in requests:
        if r["preexisting"]:
            # Claimed for the server now, so a second boot cannot take it too.
            await net_db.claim_port(
                conn, str(r["port_id"]), instance_uuids[0], COMPUTE_OWNER + "nova"
            )


# --- the conductor side: allocate, bind, release ---------------------------------------------


async def allocate_for_instance(db: Database, conf: Any, instance_uuid: str) -> list[str]:
    """Make the server's missing ports (idempotent: a repeat makes none); their ids.

    Concurrent builds' allocations share a transaction
    (:class:`~nubes.db.transaction_batch.TransactionBatcher`): one lock per
    subnet and one statement per table for the lot. InstanceNotFound if
    the server is gone or being deleted.
    """
    batcher = _BATCHERS.get(db)
    if batcher is None:
        batcher = _BATCHERS[db] = TransactionBatcher(
            db, functools.partial(_allocate, resources.NetworkService(db, conf))
        )
    return await batcher.run(instance_uuid)


#: One batcher per database (the conductor's), made on first use.
_BATCHERS: weakref.WeakKeyDictionary[Database, TransactionBatcher[str, list[str]]] = (
    weakref.WeakKeyDictionary()
)


def allocation_batcher(db: Database) -> TransactionBatcher[str, list[str]] | None:
    """The batcher of ``db``'s builds' allocations, once one ran (for tests and benchmarks)."""
    return _BATCHERS.get(db)


async def _allocate(
    service: resources.NetworkService, conn: Connection, instance_uuids: Sequence[str]
) -> dict[str, list[str] | Exception]:
    """The servers' missing ports, made in ``conn``'s transaction; their ids per server."""
    # Locks the instance rows: a delete recorded meanwhile waits for this
    # commit, and its release then finds (and frees) these ports.
    owners = await net_db.lock_instance_owners(conn, instance_uuids)
    requests = await net_db.network_requests_of(conn, instance_uuids)
    out: dict[str, list[str] | Exception] = {}
    items: list[tuple[RequestContext, dict[str, Any]]] = []
    wanted: list[tuple[str, int]] = []
    for uuid in dict.fromkeys(instance_uuids):  # a server asked for twice gets its ports once
        found = owners.get(uuid)
        if found is None or found["task_state"] == "deleting":
            out[uuid] = exception.InstanceNotFound(instance_id=uuid)
            continue
        ctxt = RequestContext(
            project_id=found["project_id"], user_id=found["user_id"], roles=["member"]
        )
        for request in requests[uuid]:
            if request["port_id"] is not None:
                continue
            item: dict[str, Any] = {
                "network_id": request["network_id"],
                "device_id": uuid,
                "device_owner": COMPUTE_OWNER + "nova",
                "security_groups": list(request["security_groups"]),
            }
            if not request["security_groups"]:
                item["port_security_enabled"] = False
            if request["fixed_ip"]:
                item["fixed_ips"] = [{"ip_address": request["fixed_ip"]}]
            items.append((ctxt, item))
            wanted.append((uuid, request["id"]))
    made = dict(zip(wanted, await service.create_ports_in(conn, items), strict=True))
    await net_db.set_request_ports(conn, {request_id: p for (_, request_id), p in made.items()})
    for uuid in instance_uuids:
        if uuid not in out:
            out[uuid] = [
                r["port_id"] if r["port_id"] is not None else made[(uuid, r["id"])]
                for r in requests[uuid]
            ]
    return out


def bind_writes(instance_uuid: str, host: str) -> Write:
    """The server's ports bound to ``host`` (in the commit that places it there).

    A described write, so the placement commit that carries it is grouped.
    """
    return net_db.bind_ports_write(instance_uuid, host)


def unbind_writes(instance_uuid: str) -> Writes:
    """The server's ports kept but bound to no host (it left its host: shelve offload)."""

    async def unbind(conn: Connection) -> None:
        await net_db.unbind_ports(conn, instance_uuid)

    return unbind


def release_writes(instance_uuid: str) -> Writes:
    """Ports nubes made for the server deleted, ports the user gave unbound, requests gone."""

    async def release(conn: Connection) -> None:
        given = {
            r["port_id"]
            for r in await net_db.network_requests(conn, instance_uuid)
            if r["preexisting"]
        }
        for port in await net_db.ports_of_devices(conn, [instance_uuid]):
            if port["id"] in given:
                await net_db.unbind_port(conn, port["id"])
            else:
                await net_db.delete_port(conn, port["id"])
        await net_db.delete_network_requests(conn, instance_uuid)

    return release


# --- what the compute API shows --------------------------------------------------------------


async def group_names(conn: Connection, instance_uuids: Sequence[str]) -> dict[str, list[str]]:
    """Per server, the names of its ports' security groups, sorted."""
    rows = await net_db.ports_of_devices(conn, list(instance_uuids))
    held = await net_db.groups_by_port(conn, [p["id"] for p in rows])
    ids = {g for groups in held.values() for g in groups}
    names = {g["id"]: g["name"] for g in await net_db.get_many(conn, "security_groups", ids)}
    found: dict[str, set[str]] = {}
    for port in rows:
        for group_id in held[port["id"]]:
            found.setdefault(port["device_id"], set()).add(names.get(group_id, group_id))
    return {uuid: sorted(groups) for uuid, groups in found.items()}


async def addresses(
    conn: Connection, instance_uuids: Sequence[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Nova's ``addresses`` per server: network name -> [{version, addr, type, MAC}],
    the fixed addresses of each port and then its floating IPs."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows = await net_db.ports_of_devices(conn, list(instance_uuids))
    if not rows:
        return found
    ips = await net_db.fixed_ips_by_port(conn, [p["id"] for p in rows])
    floating: dict[str, list[str]] = {}
    for fip in await net_db.floating_ips_of_ports(conn, [p["id"] for p in rows]):
        floating.setdefault(fip["fixed_port_id"], []).append(fip["floating_ip_address"])
    nets = {
        n["id"]: n for n in await net_db.get_many(conn, "networks", {p["network_id"] for p in rows})
    }
    for port in rows:
        name = nets[port["network_id"]]["name"] or port["network_id"]
        entries = found.setdefault(port["device_id"], {}).setdefault(name, [])
        for ip in ips[port["id"]]:
            entries.append(
                {
                    "version": ipaddress.ip_address(ip["ip_address"]).version,
                    "addr": ip["ip_address"],
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
        # Nova lists a floating IP after the fixed ones of the port it maps to.
        for address in floating.get(port["id"], []):
            entries.append(
                {
                    "version": ipaddress.ip_address(address).version,
                    "addr": address,
                    "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
    return found


# --- changes to a running server's ports (os-interface, security groups) ---------------------
#
# These change records only: the data plane that would plug a tap or
# update nftables on the host is not built yet (docs/networking.md).


async def _next_position(conn: Connection, instance_uuid: str) -> int:
    held = await net_db.network_requests(conn, instance_uuid)
    return max((r["position"] for r in held), default=-1) + 1


async def attach(
    service: resources.NetworkService,
    ctxt: RequestContext,
    instance: Mapping[str, Any],
    *,
    port_id: str | None,
    network_id: str | None,
    fixed_ip: str | None,
) -> str:
    """A port given (or made on ``network_id``) attached to the server and bound to its host."""
    uuid = str(instance["uuid"])
    async with service.db.writer() as conn:
        position = await _next_position(conn, uuid)
        if port_id is not None:
            try:
                port = await net_db.get(conn, "ports", port_id)
            except exception.PortNotFound:
                port = None
            if port is None or not (
                resources.is_admin(ctxt) or port["project_id"] == ctxt.project_id
            ):
                raise exception.PortNotFound(port_id=port_id)
            if port["device_id"]:
                raise exception.PortInUse(port_id=port_id, device_id=port["device_id"])
            await net_db.claim_port(conn, port_id, uuid, COMPUTE_OWNER + "nova")
            request = {"network_id": port["network_id"], "port_id": port_id, "preexisting": True}
        else:
            network = await net_db.get(conn, "networks", str(network_id))
            if not resources.can_see(ctxt, network):
                raise exception.NetworkNotFound(net_id=network_id)
            item: dict[str, Any] = {
                "network_id": network_id,
                "device_id": uuid,
                "device_owner": COMPUTE_OWNER + "nova",
                "project_id": instance["project_id"],
            }
            if fixed_ip:
                item["fixed_ips"] = [{"ip_address": fixed_ip}]
            port_id = await service.create_port_in(conn, ctxt, item)
            request = {"network_id": network_id, "port_id": port_id, "preexisting": False}
        await net_db.add_network_requests(
            conn, [{"instance_uuid": uuid, "position": position, "security_groups": [], **request}]
        )
        if instance.get("host"):
            await net_db.bind_ports(conn, uuid, str(instance["host"]))
        return port_id


async def detach(db: Database, instance_uuid: str, port_id: str) -> None:
    """The port off the server: deleted if nubes made it, unbound if the user gave it."""
    async with db.writer() as conn:
        port = await net_db.get(conn, "ports", port_id)
        if port["device_id"] != instance_uuid:
            raise exception.PortNotFound(port_id=port_id)
        held = {r["port_id"]: r for r in await net_db.network_requests(conn, instance_uuid)}
        request = held.get(port_id)
        if request is not None and request["preexisting"]:
            await net_db.unbind_port(conn, port_id)
        else:
            await net_db.delete_port(conn, port_id)
        await net_db.delete_network_requests(conn, instance_uuid, port_id)


async def interfaces(conn: Connection, instance_uuid: str) -> list[dict[str, Any]]:
    rows = await net_db.ports_of_devices(conn, [instance_uuid])
    return await resources.port_details(conn, [r["id"] for r in rows])


async def server_groups(conn: Connection, instance_uuid: str) -> list[dict[str, Any]]:
    """The security groups of the server's ports, with their rules."""
    held = await interfaces(conn, instance_uuid)
    ids = sorted({g for p in held for g in p["security_groups"]})
    rows = await net_db.get_many(conn, "security_groups", ids)
    rules = await net_db.rules_by_group(conn, ids)
    for row in rows:
        row["security_group_rules"] = rules[row["id"]]
    return sorted(rows, key=lambda r: (r["name"], r["id"]))


async def change_group(
    service: resources.NetworkService,
    ctxt: RequestContext,
    instance_uuid: str,
    name: str,
    *,
    add: bool,
) -> None:
    """Add the group to (or remove it from) every port of the server with port security."""
    async with service.db.writer() as conn:
        (group_id,) = await _groups(conn, service, ctxt, [{"name": name}])
        held = [p for p in await interfaces(conn, instance_uuid) if p["port_security_enabled"]]
        if not held:
            raise _bad(
                "Network requires port_security_enabled and subnet associated in order to "
                "apply security groups."
            )
        members = [p for p in held if group_id in p["security_groups"]]
        if add and len(members) == len(held):
            raise _bad(f"Security group {name} is already associated with the instance")
        if not add and not members:
            raise _bad(f"Security group {name} not associated with the instance")
        for port in held:
            groups = set(port["security_groups"])
            groups = groups | {group_id} if add else groups - {group_id}
            await net_db.set_port_groups(conn, port["id"], sorted(groups))
