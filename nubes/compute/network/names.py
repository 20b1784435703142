"""Device names of the data plane, made from ids (Linux allows 15 bytes).

Everything the agent makes is named with one of these prefixes, so it
finds its own devices again after a restart and touches nothing else.
"""

from __future__ import annotations

BRIDGE_PREFIX = "nbr-"
VXLAN_PREFIX = "nvx-"
#: Nova's and Neutron's tap names: ``tap`` and the port id's first 11 characters.
TAP_PREFIX = "tap"
_ID_CHARS = 11


def bridge(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:_ID_CHARS]


def vxlan(network_id: str) -> str:
    return VXLAN_PREFIX + network_id[:_ID_CHARS]


def tap(port_id: str) -> str:
    return TAP_PREFIX + port_id[:_ID_CHARS]
