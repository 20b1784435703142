"""Networking, the controller side: networks, subnets, ports, IPAM, security groups.

:mod:`nubes.network.resources` holds the rules (validation, visibility,
defaults, quotas) that both the network API (``nubes/api/network``) and the
compute API's server create (ports of a server) go through;
:mod:`nubes.network.ports` a server's ports; the address arithmetic is
:mod:`nubes.ipam` (below the database layer, which uses it too). The data plane on the
hosts (bridges, VXLAN, nftables, DHCP) is :mod:`nubes.compute.network`.
"""
