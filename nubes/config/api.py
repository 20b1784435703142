"""Options of the HTTP faces: the compute API, the dashboard and remote consoles."""

from __future__ import annotations

from oslo_config import cfg

api_opts: list[cfg.Opt] = [
    cfg.HostAddressOpt(
        "bind_host", default="127.0.0.1", help="Address the API (all three services) listens on."
    ),
    cfg.PortOpt(
        "bind_port",
        default=8774,
        help="Port of the API: identity at /identity, compute at /compute/v2.1, "
        "image at /image, network at /networking, all on this one port unless the "
        "*_port options split them.",
    ),
    cfg.PortOpt("identity_port", default=0, help="Serve identity alone on this port too (0: no)."),
    cfg.PortOpt("compute_port", default=0, help="Serve compute alone on this port too (0: no)."),
    cfg.PortOpt("image_port", default=0, help="Serve image alone on this port too (0: no)."),
    cfg.PortOpt("network_port", default=0, help="Serve network alone on this port too (0: no)."),
    cfg.IntOpt(
        "network_mtu",
        default=1450,
        min=68,
        max=9000,
        help="MTU of a new network (1450: a 1500-byte underlay less the VXLAN overhead).",
    ),
    cfg.StrOpt(
        "default_floating_pool",
        default="public",
        help="The external network (name or id) a floating IP comes from when a compute "
        "API client (os-floating-ips, before 2.36) names no pool; Nova's [neutron] "
        "default_floating_pool.",
    ),
    cfg.StrOpt(
        "external_physical_network",
        default="physnet1",
        help="The physical network of an external network created without "
        "provider:physical_network (a flat network; each compute host maps it to an "
        "interface with [network] physical_interface_mappings).",
    ),
    cfg.StrOpt(
        "auto_allocated_cidr",
        default="10.0.0.0/24",
        help="Subnet of the network get-me-a-network (--nic auto) creates for a project.",
    ),
    cfg.StrOpt(
        "public_endpoint",
        help="Base URL clients reach the API at (e.g. https://cloud.example.net:8774); "
        "the catalog and links are built from it. Default: http://bind_host:bind_port.",
    ),
    cfg.StrOpt("region_name", default="RegionOne", help="Region named in the catalog."),
    cfg.IntOpt(
        "token_expiration",
        default=3600,
        min=60,
        help="Seconds a token stays valid after it was issued.",
    ),
    cfg.StrOpt(
        "image_dir",
        help="Directory image data is stored in (default: state_path/images).",
    ),
    cfg.IntOpt(
        "image_size_cap",
        default=1024**4,
        min=1,
        help="Largest image (bytes) an upload may store.",
    ),
    cfg.ListOpt(
        "image_import_allowed_hosts",
        default=[],
        help="Hosts the web-download import method may fetch image data from (names or "
        "addresses, as in the URL). Empty: any host. Only http and https URLs are taken.",
    ),
    cfg.IntOpt(
        "max_limit",
        default=1000,
        min=1,
        help="Most items one page of a listing returns, whatever limit the request asks.",
    ),
    cfg.StrOpt(
        "default_availability_zone",
        default="nova",
        help="Availability zone of compute hosts not in an aggregate that names one.",
    ),
    cfg.StrOpt(
        "internal_service_availability_zone",
        default="internal",
        help="Availability zone shown for the controller services (conductor, scheduler).",
    ),
]

#: Keystone's ``[credential]``: where the keys that encrypt stored credential
#: blobs live.
credential_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "key_repository",
        help="Directory of the Fernet keys that encrypt /v3/credentials blobs at rest (files "
        "named 0, 1, 2...: the highest number encrypts, every one decrypts, as Keystone's "
        "credential key repository). Every API server must see the same keys. Unset: "
        "<state_path>/credential-keys, where a first key is made when the directory has "
        "none (an all-in-one cloud needs no setup step).",
    ),
]

dashboard_opts: list[cfg.Opt] = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Serve the web dashboard at /dashboard on the API port.",
    ),
    cfg.PortOpt(
        "port",
        default=0,
        help="Serve the dashboard alone on this port too, at / (0: no).",
    ),
    cfg.StrOpt(
        "session_key",
        secret=True,
        help="Fernet key (urlsafe base64 of 32 bytes) sealing the session cookie; every API "
        "process serving the dashboard needs the same one. Unset: a key made at start, "
        "so a restart logs everybody out.",
    ),
    cfg.IntOpt(
        "session_ttl",
        default=3600,
        min=60,
        help="Seconds a dashboard session lasts after login (the token may expire first).",
    ),
    cfg.FloatOpt(
        "refresh_interval",
        default=2.0,
        min=0.5,
        help="Seconds between the live updates of the server list and the admin views.",
    ),
]

vnc_opts: list[cfg.Opt] = [
    cfg.BoolOpt(
        "enabled",
        default=True,
        help="Give guests a VNC console (libvirt: a VNC graphics device listening on "
        "server_listen) and hand out noVNC console URLs for them.",
    ),
    cfg.StrOpt(
        "server_listen",
        default="127.0.0.1",
        help="Address a guest's VNC server listens on, on its host. Only the host's "
        "console relay connects to it, so the loopback address is enough.",
    ),
    cfg.StrOpt(
        "novncproxy_base_url",
        default="http://127.0.0.1:6080/vnc_auto.html",
        help="Base of the console URLs users get (the console proxy's address as the "
        "browser reaches it); the token is added as ?path=%3Ftoken%3D<token>.",
    ),
    cfg.StrOpt(
        "novncproxy_host", default="127.0.0.1", help="Address the console proxy listens on."
    ),
    cfg.StrOpt(
        "web",
        default="/usr/share/novnc",
        help="Directory of the noVNC client the console proxy serves (Debian's novnc "
        "package puts it here); absent: the proxy serves websockets only.",
    ),
    cfg.PortOpt(
        "novncproxy_port",
        default=6080,
        help="Port the console proxy (nubes console-proxy) listens on (0: any free port).",
    ),
    cfg.StrOpt(
        "relay_host",
        default="127.0.0.1",
        help="Address each compute host's console relay listens on: the console proxy "
        "connects there, and the relay connects on to one of the host's own guests after "
        "the conductor accepted the console token for it.",
    ),
    cfg.PortOpt(
        "relay_port",
        default=0,
        help="Port of the compute host's console relay (0: any free port; the API learns "
        "it from the host when it hands out a console).",
    ),
]

consoleauth_opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "token_ttl",
        default=600,
        min=1,
        help="Seconds a console token stays valid; it is also spent by its first use.",
    ),
]
