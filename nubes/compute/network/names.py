"""Device names of the data plane, made from ids (Linux allows 15 bytes).

Everything the agent makes is named with one of these prefixes, so it
finds its own devices again after a restart. A name alone does not prove a
device is the agent's (an operator's or a test harness's bridge may share
the prefix): a bridge also carries :func:`bridge_alias` as its ``ifalias``,
and the agent removes only bridges that carry it.
"""

from __future__ import annotations

BRIDGE_PREFIX = "nbr-"
VXLAN_PREFIX = "nvx-"
#: Nova's and Neutron's tap names: ``tap`` and the port id's first 11 characters.
TAP_PREFIX = "tap"
#: What an agent's bridge carries as its ``ifalias``, before the network id.
ALIAS_PREFIX = "nubes network "
_ID_CHARS = 11


def bridge(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:_ID_CHARS]


def bridge_alias(network_id: str) -> str:
    """The ``ifalias`` of the agent's bridge of ``network_id`` (its mark of ownership)."""
    return ALIAS_PREFIX + network_id


def vxlan(network_id: str) -> str:
    return VXLAN_PREFIX + network_id[:_ID_CHARS]


def tap(port_id: str) -> str:
    return TAP_PREFIX + port_id[:_ID_CHARS]
