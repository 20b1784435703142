"""Address arithmetic of IPAM: subnets, pools, and the next free address.

One home for every layer (as :mod:`nubes.group_policy`): the network service
(:mod:`nubes.network.resources`) checks subnets and pools with it and
``nubes.db.api.network`` picks addresses with it, so the database layer
needs no import of the service above it. Pure functions; the atomic part
(who gets which address) is in :mod:`nubes.db.api.network`
(:func:`allocate_addresses`), which takes :func:`free_addresses` with the
subnet row locked.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Container, Iterator, Mapping, Sequence
from typing import Any

from nubes import exception

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr(cidr: str, ip_version: int | None = None) -> Net:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise exception.NetworkInvalid(reason=f"Invalid input for cidr: '{cidr}'.") from None
    if ip_version is not None and net.version != ip_version:
        raise exception.NetworkInvalid(
            reason=f"Invalid input for cidr: '{cidr}' is not an IPv{ip_version} network."
        )
    if net.num_addresses < (4 if net.version == 4 else 2):
        raise exception.NetworkInvalid(reason=f"Invalid input for cidr: '{cidr}' is too small.")
    return net


def parse_address(value: Any, field: str) -> Address:
    if not isinstance(value, str):
        raise exception.NetworkInvalid(reason=f"Invalid input for {field}: '{value}'.")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise exception.NetworkInvalid(
            reason=f"Invalid input for {field}: '{value}' is not a valid IP address."
        ) from None


def default_gateway(net: Net) -> Address:
    return next(iter(net.hosts())) if net.version == 4 else net.network_address + 1


def _usable(net: Net) -> tuple[int, int]:
    """First and last address a port may hold (not the network, nor v4 broadcast)."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def _text(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def default_pools(net: Net, gateway: Address | None) -> list[dict[str, str]]:
    """Neutron's default pools: the usable range less the gateway."""
    first, last = _usable(net)
    pools: list[tuple[int, int]] = [(first, last)]
    gw = int(gateway) if gateway is not None else None
    if gw is not None and first <= gw <= last:
        pools = []
        if gw > first:
            pools.append((first, gw - 1))
        if gw < last:
            pools.append((gw + 1, last))
    return [{"start": _text(net.version, a), "end": _text(net.version, b)} for a, b in pools]


def check_pools(net: Net, pools: Sequence[Any], gateway: Address | None) -> list[dict[str, str]]:
    """Pools given by a user: inside the subnet, ordered, disjoint, off the gateway."""
    first, last = _usable(net)
    gw = int(gateway) if gateway is not None else None
    ranges: list[tuple[int, int]] = []
    for pool in pools:
        if not isinstance(pool, Mapping):
            raise exception.NetworkInvalid(reason=f"Invalid allocation pool {pool!r}.")
        start_ip = parse_address(pool.get("start"), "allocation_pools")
        end_ip = parse_address(pool.get("end"), "allocation_pools")
        start, end = int(start_ip), int(end_ip)
        if start_ip.version != net.version or end_ip.version != net.version or start > end:
            raise exception.NetworkInvalid(
                reason=f"Invalid allocation pool {start_ip}-{end_ip} for subnet {net}."
            )
        if not (first <= start and end <= last):
            raise exception.NetworkInvalid(
                reason=f"The allocation pool {start_ip}-{end_ip} spans beyond the subnet "
                f"cidr {net}."
            )
        if gw is not None and start <= gw <= end:
            raise exception.NetworkInvalid(
                reason=f"Gateway ip {gateway} conflicts with allocation pool {start_ip}-{end_ip}."
            )
        ranges.append((start, end))
    ranges.sort()
    for (_, end), (start, _) in itertools.pairwise(ranges):
        if start <= end:
            raise exception.NetworkInvalid(reason="Found overlapping allocation pools.")
    return [{"start": _text(net.version, a), "end": _text(net.version, b)} for a, b in ranges]


def _bounds(pool: Mapping[str, str]) -> tuple[int, int, int]:
    start = ipaddress.ip_address(pool["start"])
    return start.version, int(start), int(ipaddress.ip_address(pool["end"]))


def _candidates(pools: Sequence[Mapping[str, str]]) -> Iterator[str]:
    for pool in pools:
        version, address, end = _bounds(pool)
        while address <= end:
            yield _text(version, address)
            address += 1


#: An IPv6 subnet is addressed from a random point of its pools: walking a
#: /64 from its start would hand out guessable, clustered addresses.
V6_RANDOM_TRIES = 64


def free_addresses(
    subnet: Mapping[str, Any], used: Container[str], rng: random.Random | None = None
) -> Iterator[str]:
    """Addresses of the subnet's pools not in ``used``, one after another.

    IPv4: lowest first. IPv6: random ones, as Neutron's IPAM does (falling
    back to the lowest when random picks keep hitting used ones). The
    caller adds each address it takes to ``used`` before asking for the
    next, so a batch of N addresses costs one walk, not N.
    """
    pools = subnet["allocation_pools"]
    walk = _candidates(pools)
    while True:
        if subnet["ip_version"] == 6 and pools:
            rng = rng or random.SystemRandom()
            picked = None
            for _ in range(V6_RANDOM_TRIES):
                _, start, end = _bounds(rng.choice(pools))
                text = _text(6, rng.randint(start, end))
                if text not in used:
                    picked = text
                    break
            if picked is not None:
                yield picked
                continue
        for text in walk:
            if text not in used:
                yield text
                break
        else:
            return
