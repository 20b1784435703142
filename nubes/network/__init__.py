"""Networking, the controller side: networks, subnets, ports, IPAM, security groups.

:mod:`nubes.network.resources` holds the rules (validation, visibility,
defaults, quotas) that both the network API (``nubes/api/network``) and the
compute API's server create (ports of a server) go through;
:mod:`nubes.network.ipam` the address arithmetic. The data plane on the
hosts (bridges, VXLAN, nftables, DHCP) is not built yet.
"""
