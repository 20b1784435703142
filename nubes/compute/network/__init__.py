"""A compute host's network data plane (libvirt deployments): bridges, VXLAN,
nftables for security groups, DHCP for the host's own ports. See
``docs/networking.md``; the facts come from the conductor (``nubes.hostnet``)."""
