"""The host's network agent: makes the data plane match what the conductor says.

Every ``sync_interval`` seconds (and at once before a guest is spawned) it
asks the conductor for this host's view (``get_host_network``) and the
tunnel peers of its networks (``get_network_peers``), and when anything
changed since the last pass it converges: bridges and VXLAN devices with
their flood lists, then the whole nftables ruleset in one transaction,
then the DHCP servers; then it removes what no port needs any more.
Floating IPs of its ports go on the bridge of their external network, on
the interface ``[network] physical_interface_mappings`` names for it, with
their NAT in the same ruleset (``firewall.py``).

Why polling rather than a cast from the API when a rule changes: the API
(not the conductor) writes rule changes, and compute hosts take commands
from the conductor only; a missed cast (a host restarting, the bus
reconnecting) would leave a host on old rules until the next change, while
a poll converges by itself. The cost is one read of a few small rows per
host and interval, and a change takes at most one interval (2 s by
default) to reach the hosts. The fingerprint of the view makes an
unchanged poll touch nothing on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nubes import exception, hostnet
from nubes.compute.network import dhcp, firewall, linux, names
from nubes.conductor.rpcapi import ConductorAPI
from nubes.context import RequestContext

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Vif:
    """A guest's network interface as the virt driver plugs it."""

    port_id: str
    mac_address: str
    bridge: str
    tap: str
    mtu: int


class MetadataListeners(Protocol):
    """The host's metadata proxy as the agent uses it (``nubes/metadata/proxy.py``):
    one listener per network, so the proxy knows a request's network."""

    async def listen(
        self, host: str, port: int, network_id: str | None = None
    ) -> tuple[str, int]: ...

    async def close(self, network_id: str) -> None: ...


class NetworkAgent:
    """One host's data plane (a service hook of the compute service)."""

    def __init__(
        self,
        host: str,
        conductor: ConductorAPI,
        *,
        state_dir: Path,
        local_ip: str | None = None,
        metadata: MetadataListeners | None = None,
        sync_interval: float = 2.0,
        command_prefix: Sequence[str] = (),
        physical_interfaces: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        #: physical network -> this host's interface on it (flat external networks).
        self.physical_interfaces = dict(physical_interfaces or {})
        self.conductor = conductor
        self.local_ip = local_ip
        #: Where guests' 169.254.169.254 goes (None: nowhere, the redirect is not made).
        self.metadata = metadata
        #: network id -> the (gateway address, port) of its metadata listener.
        self.metadata_listeners: dict[str, tuple[str, int]] = {}
        self.sync_interval = sync_interval
        self.cmd = linux.Commands(tuple(command_prefix))
        self.dhcp = dhcp.DhcpServers(state_dir / "dhcp", self.cmd)
        #: What the data plane was last made from (None: nothing applied yet).
        self.applied: str | None = None
        self.view = hostnet.HostNetwork(host=host)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- the service hook -------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"network-agent-{self.host}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync(RequestContext())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next pass tries again
                LOG.warning("network sync of %s failed: %s", self.host, exc)
            await asyncio.sleep(self.sync_interval)

    # -- converging ---------------------------------------------------------------

    async def sync(self, ctxt: RequestContext, *, force: bool = False) -> bool:
        """One pass; whether anything on the host changed."""
        async with self._lock:
            if not self.conductor.serves_host_network():
                # An older conductor runs: the data plane stays as it is until
                # the upgrade ends (nothing is torn down on a guess).
                LOG.debug("network sync of %s: the conductors do not serve 1.3 yet", self.host)
                return False
            view = await self.conductor.get_host_network(ctxt, self.host)
            network_ids = [n.id for n in view.networks]
            peers = (
                await self.conductor.get_network_peers(ctxt, network_ids)
                if network_ids and self.local_ip
                else hostnet.NetworkPeers()
            )
            fingerprint = f"{view.fingerprint()}:{sorted(peers.peers.items())}"
            if fingerprint == self.applied and not force:
                return False
            complete = await self._apply(view, peers)
            # Incomplete (an interface missing): the next pass applies again
            # though nothing changed, so the interface is used once it appears.
            self.view, self.applied = view, fingerprint if complete else None
            return True

    def floating(self, view: hostnet.HostNetwork) -> list[hostnet.FloatingIP]:
        """The view's floating IPs this host can apply: on an external network it
        maps to an interface, to a fixed address of a port of the view."""
        mapped = {
            n.id for n in view.external_networks if n.physical_network in self.physical_interfaces
        }
        held = {(p.id, f.ip_address) for p in view.ports for f in p.fixed_ips}
        usable = []
        for fip in view.floating_ips:
            if fip.network_id not in mapped:
                LOG.warning(
                    "floating IP %s of port %s: external network %s is on no interface of "
                    "%s ([network] physical_interface_mappings); not applied",
                    fip.floating_ip_address, fip.port_id, fip.network_id, self.host,
                )  # fmt: skip
            elif (fip.port_id, fip.fixed_ip_address) in held:
                usable.append(fip)
        return usable

    async def _apply(self, view: hostnet.HostNetwork, peers: hostnet.NetworkPeers) -> bool:
        """Make the host match ``view``; whether all of it could be (False: a
        floating IP's interface is missing)."""
        links = await self.cmd.links()
        for network in view.networks:
            await linux.ensure_network(
                self.cmd, network, links, self.local_ip, peers.peers.get(network.id, [])
            )
        floating = self.floating(view)
        # An interface that is not there (yet) costs its floating IPs, not the
        # rest of the host's data plane (a raise here would stall every sync).
        present = {
            n.id
            for n in view.external_networks
            if self.physical_interfaces.get(n.physical_network) in links
        }
        for network_id in sorted({f.network_id for f in floating} - present):
            LOG.warning(
                "%s: the interface of external network %s is missing; its floating IPs wait",
                self.host, network_id,
            )  # fmt: skip
        complete = all(f.network_id in present for f in floating)
        floating = [f for f in floating if f.network_id in present]
        externals = {f.network_id for f in floating}
        for external in view.external_networks:
            if external.id in externals:
                await linux.ensure_external(
                    self.cmd,
                    external,
                    links,
                    self.physical_interfaces[external.physical_network],
                    [f for f in floating if f.network_id == external.id],
                )
        if floating:
            await linux.enable_forwarding(self.cmd)
        await linux.set_source_rules(
            self.cmd, {f.fixed_ip_address: linux.route_table(f.network_id) for f in floating}
        )
        await self._metadata_listeners(view)
        if view.ports:
            rules = firewall.ruleset(view, self.metadata_listeners, floating)
            await self.cmd.run("nft", "-f", "-", stdin=rules)
        else:
            await self.cmd.run("nft", "-f", "-", stdin=firewall.removal())
        by_network: dict[str, list[hostnet.Port]] = {}
        for port in view.ports:
            by_network.setdefault(port.network_id, []).append(port)
        for network in view.networks:
            await self.dhcp.ensure(network, by_network.get(network.id, []))
        wanted = {n.id for n in view.networks}
        for network_id in self.dhcp.networks() - wanted:
            await self.dhcp.remove(network_id)
        wanted_bridges = {names.bridge(n) for n in wanted | externals}
        for bridge in linux.our_bridges(links) - wanted_bridges:
            await linux.remove_network(self.cmd, bridge, links)
        return complete

    async def _metadata_listeners(self, view: hostnet.HostNetwork) -> None:
        """A listener of the metadata proxy per network, at the network's gateway
        address on this host (which the bridge holds), opened and closed with it."""
        if self.metadata is None:
            return
        wanted: dict[str, str] = {}
        for network in view.networks:
            gateways = [s.gateway_ip for s in network.subnets if s.ip_version == 4 and s.gateway_ip]
            if gateways:
                wanted[network.id] = gateways[0]
        for network_id in sorted(set(self.metadata_listeners) - set(wanted)):
            await self.metadata.close(network_id)
            del self.metadata_listeners[network_id]
        for network_id, gateway in wanted.items():
            if self.metadata_listeners.get(network_id, ("", 0))[0] != gateway:
                if network_id in self.metadata_listeners:
                    await self.metadata.close(network_id)
                _host, port = await self.metadata.listen(gateway, 0, network_id)
                self.metadata_listeners[network_id] = (gateway, port)

    # -- what the virt driver asks -------------------------------------------------

    async def plug(self, ctxt: RequestContext, instance_uuid: str) -> list[Vif]:
        """The instance's interfaces, once their bridges and rules are in place.

        The ports were bound to this host when the instance was placed, so
        a sync now has them; a port whose network is missing from the view
        is an error the build reports.
        """
        await self.sync(ctxt)
        networks = {n.id: n for n in self.view.networks}
        vifs = []
        for port in self.view.ports:
            if port.device_id != instance_uuid:
                continue
            network = networks.get(port.network_id)
            if network is None:
                raise exception.NetworkPlumbingError(
                    command="plug", reason=f"port {port.id} has no network in the host's view"
                )
            vifs.append(
                Vif(
                    port.id,
                    port.mac_address,
                    names.bridge(port.network_id),
                    names.tap(port.id),
                    network.mtu,
                )
            )
        return vifs


def interface_mappings(pairs: Sequence[str]) -> dict[str, str]:
    """``[network] physical_interface_mappings`` (``physnet:interface`` items) as a dict."""
    found: dict[str, str] = {}
    for pair in pairs:
        physnet, sep, interface = pair.partition(":")
        physnet, interface = physnet.strip(), interface.strip()
        if not sep or not physnet or not interface or physnet in found:
            raise exception.ConfigError(
                reason=f"[network] physical_interface_mappings: {pair!r} is not a "
                "physical_network:interface pair of a physical network named once"
            )
        found[physnet] = interface
    return found
