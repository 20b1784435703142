"""Options of a compute host: its manager, metadata, virt drivers and networking."""

from __future__ import annotations

from oslo_config import cfg

compute_opts: list[cfg.Opt] = [
    cfg.FloatOpt(
        "resource_update_interval",
        default=60.0,
        min=0.0,
        help="Seconds between a compute host's capacity and usage reports (0: only at start).",
    ),
    cfg.IntOpt(
        "completed_steps_kept",
        default=4096,
        min=16,
        help="Conductor steps a compute host remembers the outcome of, so that a "
        "repeated message is answered again instead of being run twice.",
    ),
    cfg.StrOpt(
        "image_api_endpoint",
        help="Image API base URL a compute host uploads snapshots (createImage, "
        "createBackup) to, with the conductor's upload grant for each image. Unset: "
        "this host cannot take snapshots (all-in-one sets it to its own image API).",
    ),
]

metadata_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "listen",
        default="",
        help="host:port of the metadata proxy's forwarder listener on each compute host "
        "(normally 127.0.0.1:<port>; a local forwarder names the guest with X-Forwarded-For "
        "and its network with X-Nubes-Network-Id). Empty: none (the data plane opens "
        "per-network listeners itself). See docs/metadata.md.",
    ),
    cfg.FloatOpt(
        "cache_expiration",
        default=15.0,
        min=0.0,
        help="Seconds a compute host keeps a guest's metadata (0: ask the conductor for "
        "each request), as Nova's metadata_cache_expiration.",
    ),
]

fake_driver_opts: list[cfg.Opt] = [
    cfg.FloatOpt("spawn_delay", default=0.0, min=0.0, help="Seconds a fake spawn takes."),
    cfg.FloatOpt(
        "power_delay", default=0.0, min=0.0, help="Seconds a fake power action or reboot takes."
    ),
    cfg.FloatOpt(
        "migration_delay",
        default=0.0,
        min=0.0,
        help="Seconds a fake live migration takes from start to end.",
    ),
    cfg.ListOpt("fail_spawn_hosts", default=[], help="Hosts on which every fake spawn fails."),
    cfg.ListOpt(
        "fail_live_migration_hosts",
        default=[],
        help="Source hosts on which fake live migrations fail halfway.",
    ),
    cfg.IntOpt("vcpus", default=16, min=1, help="vCPUs each fake host reports."),
    cfg.IntOpt("memory_mb", default=65536, min=1, help="Memory (MiB) each fake host reports."),
    cfg.IntOpt("local_gb", default=1000, min=1, help="Disk (GiB) each fake host reports."),
    cfg.StrOpt(
        "state_path",
        help="Directory where each fake host keeps its guests (<host>.json), so they "
        "survive a restart as a hypervisor's do; unset: in memory only. "
        "all-in-one sets it to <state dir>/fake-driver.",
    ),
]

libvirt_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "connection_uri",
        default="qemu:///system",
        help="The libvirtd a libvirt compute host runs its guests through.",
    ),
    cfg.StrOpt(
        "virt_type",
        default="kvm",
        choices=["kvm", "qemu"],
        help="Domain type: kvm on hardware with virtualisation support, qemu (TCG, "
        "emulated and slower) without.",
    ),
    cfg.StrOpt(
        "instances_path",
        help="Where guests' disks, kernels and console logs live, one directory per "
        "instance, and the image cache (_base). Unset: <state_path>/instances.",
    ),
    cfg.StrOpt(
        "image_source",
        default="http",
        choices=["http", "directory"],
        help="http: fetch image bytes from the image API (image_api_endpoint) with the "
        "per-image grant the conductor sends with the build; directory: read them from "
        "image_source_dir (only where the host shares the image API's disk).",
    ),
    cfg.StrOpt(
        "image_api_endpoint",
        help="Image API base URL the host downloads images from with image_source http "
        "(the image service's catalog URL, for example http://controller:8774/image).",
    ),
    cfg.StrOpt(
        "image_source_dir",
        help="With image_source directory: the directory the host reads image bytes from, "
        "by image id (the image API's data directory). Unset: [api] image_dir or "
        "<state_path>/images, as the image API stores them on this machine.",
    ),
    cfg.FloatOpt(
        "soft_reboot_wait",
        default=120.0,
        min=0.0,
        help="Seconds a soft reboot waits for the guest to shut down cleanly before "
        "rebooting it hard.",
    ),
    cfg.HostAddressOpt(
        "live_migration_inbound_addr",
        help="Address other hosts' libvirtd reach this host's libvirtd at (qemu+tcp, "
        "port 16509) and send a live-migrating guest's memory and disk to. Unset: the "
        "host's name ([DEFAULT] host).",
    ),
    cfg.IntOpt(
        "live_migration_bandwidth",
        default=0,
        min=0,
        help="Most MiB/s a live migration from this host may send (0: no limit).",
    ),
    cfg.PortOpt(
        "disk_server_port",
        default=0,
        help="Port this host serves a cold-migrating guest's disk on, at "
        "live_migration_inbound_addr, to the destination holding the conductor's grant "
        "(0: any free port; the destination learns it through the conductor).",
    ),
]

network_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "local_ip",
        help="This compute host's VXLAN tunnel address (reported as its node's host_ip; "
        "the other hosts send their tenant traffic for this host's ports to it). Unset: "
        "no tunnels (a single host).",
    ),
    cfg.FloatOpt(
        "sync_interval",
        default=2.0,
        min=0.1,
        help="Seconds between two polls of the conductor for this host's ports and "
        "security group rules (how long a rule change takes to reach the host, at most).",
    ),
    cfg.StrOpt(
        "state_dir",
        help="Where the network agent keeps the DHCP servers' files. Unset: <state_path>/network.",
    ),
    cfg.ListOpt(
        "physical_interface_mappings",
        default=[],
        help="physical_network:interface pairs, e.g. physnet1:eth1: the interface of this "
        "host on each flat (external) network. The agent puts it on the network's bridge "
        "and answers there for the floating IPs of this host's ports; give it an "
        "interface of its own (an address it holds stops working once it is on the "
        "bridge). A floating IP on a physical network this host does not map is not "
        "applied here (the agent logs it).",
    ),
]
