"""The metadata a guest reads, as Nova's metadata service serves it.

One tree per instance: ``openstack/<version>/…`` (meta_data.json,
network_data.json, user_data, vendor_data.json, vendor_data2.json) and the
EC2 format ``<version>/meta-data/…`` and ``<version>/user-data``. A path
that names a directory lists its entries, one a line (a sub-directory ends
with ``/``), as Nova does. The same tree is the config drive's contents.

Personality files (:mod:`nubes.injected_files`) are in the tree only when
the caller hands them in, which only the config drive does: as Nova, they
are ``openstack/content/0000``, ``0001`` ... and ``meta_data.json`` lists
them as ``files`` (``path``, ``content_path``); the metadata service, which
never has them, shows neither.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any, Union

from nubes.injected_files import InjectedFiles
from nubes.objects.instance_metadata import InstanceMetadata

#: The OpenStack format's versions Nova lists (all served with today's contents).
OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
)
#: The EC2 format's versions Nova lists.
EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
)
LATEST = "latest"
#: The directory of the personality files' contents, beside the versions (Nova's).
CONTENT_DIR = "content"

#: A directory: name -> entry; a leaf is the bytes served.
Tree = dict[str, Union["Tree", bytes]]


def user_data(meta: InstanceMetadata) -> bytes | None:
    """The decoded user data (the API checked it is base64), None without any."""
    if not meta.user_data:
        return None
    try:
        return base64.b64decode(meta.user_data)
    except (binascii.Error, ValueError):
        return None


def _keys(meta: InstanceMetadata) -> list[dict[str, str]]:
    if not meta.key_name or not meta.public_key:
        return []
    kind = "x509" if meta.public_key.lstrip().startswith("-----BEGIN") else "ssh"
    return [{"name": meta.key_name, "type": kind, "data": meta.public_key}]


def _content_names(files: InjectedFiles | None) -> list[str]:
    """The names the personality files' contents have under :data:`CONTENT_DIR`, in order."""
    return [f"{index:04d}" for index in range(len(files.files) if files else 0)]


def meta_data(meta: InstanceMetadata, files: InjectedFiles | None = None) -> dict[str, Any]:
    """``meta_data.json`` (with ``files``, as Nova's, when there are personality files)."""
    keys = _keys(meta)
    doc: dict[str, Any] = {
        "uuid": meta.uuid,
        "name": meta.name or "",
        "hostname": meta.hostname or "",
        "launch_index": meta.launch_index or 0,
        "availability_zone": meta.availability_zone or "nova",
        "project_id": meta.project_id,
        "meta": dict(meta.meta),
        "public_keys": {k["name"]: k["data"] for k in keys},
        "keys": keys,
        "devices": [],
    }
    if files:
        doc["files"] = [
            {"path": f.path, "content_path": f"/{CONTENT_DIR}/{name}"}
            for f, name in zip(files.files, _content_names(files), strict=True)
        ]
    return doc


def _route(cidr: str, gateway: str) -> dict[str, str]:
    net = ipaddress.ip_network(cidr, strict=False)
    return {"network": str(net.network_address), "netmask": str(net.netmask), "gateway": gateway}


def network_data(meta: InstanceMetadata) -> dict[str, Any]:
    """``network_data.json``: a link per port, a network per address, the DNS servers."""
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    for port in meta.ports:
        link_id = "tap" + port["id"][:11]
        links.append(
            {
                "id": link_id,
                "vif_id": port["id"],
                "type": "bridge",
                "ethernet_mac_address": port["mac_address"],
                "mtu": port["mtu"],
            }
        )
        for ip in port["fixed_ips"]:
            subnet = ip["subnet"]
            cidr = ipaddress.ip_network(subnet["cidr"], strict=False)
            version = "ipv4" if cidr.version == 4 else "ipv6"
            routes = [_route(r["destination"], r["nexthop"]) for r in subnet["host_routes"] or []]
            if subnet["gateway_ip"]:
                default = "0.0.0.0/0" if cidr.version == 4 else "::/0"
                routes.append(_route(default, subnet["gateway_ip"]))
            dns = [{"type": "dns", "address": a} for a in subnet["dns_nameservers"] or []]
            networks.append(
                {
                    "id": f"network{len(networks)}",
                    "type": version,
                    "link": link_id,
                    "ip_address": ip["ip_address"],
                    "netmask": str(cidr.netmask),
                    "routes": routes,
                    "network_id": port["network_id"],
                    "services": dns,
                }
            )
            services.extend(s for s in dns if s not in services)
    return {"links": links, "networks": networks, "services": services}


def local_ipv4(meta: InstanceMetadata) -> str:
    for port in meta.ports:
        for ip in port["fixed_ips"]:
            if ipaddress.ip_address(ip["ip_address"]).version == 4:
                return str(ip["ip_address"])
    return ""


def public_ipv4(meta: InstanceMetadata) -> str:
    """The first floating IP mapped to one of the instance's fixed addresses (EC2's
    ``public-ipv4``, as Nova's), "" when none."""
    for port in meta.ports:
        for ip in port["fixed_ips"]:
            for address in ip.get("floating_ips", []):
                return str(address)
    return ""


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _openstack_version(meta: InstanceMetadata, files: InjectedFiles | None) -> Tree:
    tree: Tree = {
        "meta_data.json": _json(meta_data(meta, files)),
        "network_data.json": _json(network_data(meta)),
        "vendor_data.json": b"{}",
        "vendor_data2.json": b"{}",
    }
    data = user_data(meta)
    if data is not None:
        tree["user_data"] = data
    return tree


def _ec2_version(meta: InstanceMetadata) -> Tree:
    hostname = (meta.hostname or "").encode()
    keys = _keys(meta)
    meta_tree: Tree = {
        "ami-id": (meta.image_ref or "").encode(),
        "ami-launch-index": str(meta.launch_index or 0).encode(),
        "hostname": hostname,
        "local-hostname": hostname,
        "public-hostname": hostname,
        # Nova's EC2 ids are numbered; nubes's instances are known by uuid.
        "instance-id": f"i-{meta.uuid[:8]}".encode(),
        "instance-type": (meta.flavor_name or "").encode(),
        "local-ipv4": local_ipv4(meta).encode(),
        "public-ipv4": public_ipv4(meta).encode(),
        "reservation-id": (meta.reservation_id or "").encode(),
        "placement": {"availability-zone": (meta.availability_zone or "nova").encode()},
    }
    if keys:
        meta_tree["public-keys"] = {"0": {"openssh-key": keys[0]["data"].encode()}}
    tree: Tree = {"meta-data": meta_tree}
    data = user_data(meta)
    if data is not None:
        tree["user-data"] = data
    return tree


def ec2_json(meta: InstanceMetadata) -> dict[str, Any]:
    """The EC2 meta-data tree as one JSON object (the config drive's ``meta-data.json``)."""

    def plain(node: Tree | bytes) -> Any:
        if isinstance(node, bytes):
            return node.decode(errors="replace")
        return {k: plain(v) for k, v in node.items()}

    found = _ec2_version(meta)["meta-data"]
    assert isinstance(found, dict)
    return dict(plain(found))


def tree(meta: InstanceMetadata, files: InjectedFiles | None = None) -> Tree:
    """Every path the guest may read (the config drive's files too, with its
    personality ``files``: the config drive passes them, the service never)."""
    version = _openstack_version(meta, files)
    openstack: Tree = {v: version for v in (*OPENSTACK_VERSIONS, LATEST)}
    if files:
        openstack[CONTENT_DIR] = {
            name: f.contents for f, name in zip(files.files, _content_names(files), strict=True)
        }
    ec2 = _ec2_version(meta)
    return {"openstack": openstack, **{v: ec2 for v in (*EC2_VERSIONS, LATEST)}}


def _listing(meta: InstanceMetadata, directory: Tree, parts: list[str]) -> bytes:
    if parts[-1:] == ["public-keys"]:
        # EC2 lists keys as index=name.
        return f"0={meta.key_name}".encode()
    if not parts:
        # The root lists the EC2 versions only, as Nova's.
        return "\n".join(n for n in directory if n != "openstack").encode()
    # Sub-directories end with "/" inside an EC2 version's meta-data.
    deep = len(parts) >= 2 and parts[0] != "openstack"
    names = [n + "/" if deep and isinstance(v, dict) else n for n, v in directory.items()]
    return "\n".join(names).encode()


#: The first OpenStack metadata version with ``password`` (Nova's Grizzly).
PASSWORD_SINCE = "2013-04-04"
#: The most a guest may post as its password (Nova's metadata handler's limit).
MAX_PASSWORD_BYTES = 256


def is_password_path(path: str) -> bool:
    """Whether ``path`` is ``/openstack/<version>/password`` of a version that
    has it. Served by the metadata proxy only (GET and the guest's POST),
    never written to a config drive."""
    parts = [p for p in path.split("/") if p]
    if len(parts) != 3 or parts[0] != "openstack" or parts[2] != "password":
        return False
    return parts[1] == LATEST or (parts[1] in OPENSTACK_VERSIONS and parts[1] >= PASSWORD_SINCE)


def lookup(meta: InstanceMetadata, path: str) -> bytes | None:
    """What ``GET path`` answers (a file, or a directory's listing); None: 404."""
    parts = [p for p in path.split("/") if p]
    node: Tree | bytes = tree(meta)
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bytes):
        return node
    return _listing(meta, node, parts)
