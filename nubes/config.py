"""Every nubes option, grouped the way nova.conf groups them.

Options are declared with oslo.config (typed, with defaults and help) and read
from INI files given with ``--config-file`` (repeatable; later files win).
:func:`load` parses the command line and files and then reads every option
once, so a malformed value stops the service at start with a message naming
the option and the file, instead of failing later in the middle of work.

``nubes-manage config sample`` prints a sample file generated from these
definitions (:func:`sample`).
"""

from __future__ import annotations

import configparser
import socket
import textwrap
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg, types

from nubes import exception, versions

DEFAULT_TRANSPORT_URL = "memory://"
DEFAULT_DB_CONNECTION = "sqlite:///nubes.sqlite"

default_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "transport_url",
        default=DEFAULT_TRANSPORT_URL,
        secret=True,
        help="Message bus URL: memory:// (in-process) or "
        "rabbit://user:pass@host:port/vhost (RabbitMQ; several hosts comma-separated).",
    ),
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this host: the compute host name and the RPC server name.",
    ),
    cfg.FloatOpt(
        "rpc_response_timeout",
        default=60.0,
        min=0.1,
        help="Seconds an RPC call waits for its reply.",
    ),
    cfg.StrOpt(
        "image_grant_secret",
        secret=True,
        help="Key the conductor signs image grants with and the image API checks them "
        "with (nubes/grants.py): set on the controllers only, never on a compute host. "
        "Unset: no grants, and hosts fetching images over HTTP cannot fetch.",
    ),
    cfg.FloatOpt(
        "image_grant_ttl",
        default=900.0,
        min=1.0,
        help="Seconds an image grant stays valid after the conductor sends the build.",
    ),
    cfg.IntOpt(
        "report_interval",
        default=10,
        min=1,
        help="Seconds between service heartbeats.",
    ),
    cfg.IntOpt(
        "service_down_time",
        default=60,
        min=1,
        help="A service not seen for this many seconds is considered down.",
    ),
    # Nova's names and place; read by the controllers (the scheduler's capacity
    # math, os-hypervisors), never reported by a host.
    cfg.IntOpt(
        "reserved_host_cpus",
        default=0,
        min=0,
        help="vCPUs kept back on every compute node for the host itself: capacity is "
        "(vcpus - reserved) x cpu_allocation_ratio. Read by the scheduler.",
    ),
    cfg.IntOpt(
        "reserved_host_memory_mb",
        default=0,
        min=0,
        help="Memory (MB) kept back on every compute node for the host itself: capacity "
        "is (memory_mb - reserved) x ram_allocation_ratio; os-hypervisors counts it as "
        "used, as Nova does. Read by the scheduler and the API.",
    ),
    cfg.IntOpt(
        "reserved_host_disk_mb",
        default=0,
        min=0,
        help="Disk (MB, taken as whole GB rounded up) kept back on every compute node; "
        "os-hypervisors counts it as used. Read by the scheduler and the API.",
    ),
    cfg.IntOpt(
        "resize_confirm_window",
        default=0,
        min=0,
        help="Confirm a resize or cold migration left unconfirmed (VERIFY_RESIZE) "
        "for this many seconds; 0 never confirms on its own.",
    ),
    cfg.IntOpt(
        "reclaim_instance_interval",
        default=0,
        min=0,
        help="When above 0, deleting a server that has run only soft-deletes it "
        "(SOFT_DELETED: its guest off, its resources kept, ``restore`` brings it "
        "back, ``forceDelete`` deletes it now), and the conductors delete for good "
        "the servers soft-deleted longer than this many seconds ago.",
    ),
    cfg.IntOpt(
        "shelved_offload_time",
        default=0,
        min=-1,
        help="Seconds a shelved server keeps its guest and host resources before "
        "the conductors offload it (SHELVED_OFFLOADED: no guest, no host, no claim); "
        "0 offloads it as part of the shelve, -1 never offloads on its own.",
    ),
    cfg.BoolOpt(
        "allow_resize_to_same_host",
        default=False,
        help="Let a resize choose the instance's own host (cold migrations never do).",
    ),
    cfg.StrOpt("state_path", default="/var/lib/nubes", help="Where nubes keeps local state."),
    cfg.BoolOpt(
        "force_config_drive",
        default=False,
        help="Give every guest built on this compute host a config drive, asked for "
        "or not (docs/metadata.md).",
    ),
    cfg.BoolOpt("debug", default=False, help="Log at debug level."),
    cfg.StrOpt(
        "compute_driver",
        default="fake",
        choices=["fake", "libvirt"],
        help="Virt driver a compute host runs its instances with (fake: in memory, for "
        "tests; libvirt: real guests through libvirtd, see [libvirt]).",
    ),
]

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
]

notifications_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "driver",
        default="messaging",
        choices=["messaging", "noop"],
        help="messaging: publish versioned notifications as JSON on the bus; noop: none.",
    ),
    cfg.StrOpt("topic", default="notifications", help="Topic (queue) notifications go to."),
    cfg.StrOpt(
        "notify_on_state_change",
        default="vm_state",
        choices=["none", "vm_state", "vm_and_task_state"],
        help="Send instance.update when an instance's vm_state (or task_state too) changes.",
    ),
]

database_opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "connection",
        default=DEFAULT_DB_CONNECTION,
        secret=True,
        help="SQLAlchemy URL of the main database (sqlite, postgresql or mysql).",
    ),
    cfg.StrOpt(
        "replica_connection",
        secret=True,
        help="SQLAlchemy URL of a read replica, used for reads allowed to be slightly stale.",
    ),
    cfg.IntOpt("max_pool_size", default=10, min=1, help="Connections kept open per process."),
    cfg.IntOpt("max_overflow", default=20, min=0, help="Extra connections allowed under load."),
    cfg.IntOpt("pool_timeout", default=30, min=1, help="Seconds to wait for a pooled connection."),
    cfg.IntOpt(
        "connection_recycle_time",
        default=3600,
        min=-1,
        help="Seconds after which a pooled connection is replaced (-1: never); keeps it "
        "younger than the server's idle timeout.",
    ),
    cfg.FloatOpt(
        "read_after_write_window",
        default=5.0,
        min=0.0,
        help="Seconds after a write during which reads from the same request or task that "
        "allow stale data still go to the primary, so the writer sees its own write.",
    ),
    cfg.IntOpt(
        "sqlite_busy_timeout",
        default=5000,
        min=0,
        help="Milliseconds SQLite waits for a lock held by another process before failing.",
    ),
    cfg.StrOpt(
        "sqlite_synchronous",
        default="NORMAL",
        choices=["OFF", "NORMAL", "FULL"],
        help="SQLite synchronous pragma; NORMAL with WAL loses no committed data on a "
        "process crash, only possibly the last transactions on power loss.",
    ),
]

rabbit_opts: list[cfg.Opt] = [
    cfg.FloatOpt(
        "reconnect_backoff_min",
        default=0.2,
        min=0.01,
        help="First wait (seconds) before reconnecting to the broker; doubles, with jitter.",
    ),
    cfg.FloatOpt(
        "reconnect_backoff_max",
        default=1.0,
        min=0.1,
        help="Longest wait (seconds) between reconnection attempts; it bounds how long "
        "a service takes to notice that the broker answers again.",
    ),
    cfg.IntOpt(
        "heartbeat_timeout",
        default=60,
        min=0,
        help="AMQP heartbeat (seconds); 0 switches heartbeats off.",
    ),
    cfg.IntOpt(
        "prefetch_count",
        default=256,
        min=1,
        help="Messages a server takes from the broker before acknowledging any.",
    ),
    cfg.BoolOpt(
        "rabbit_quorum_queue",
        default=None,
        help="Declare the durable topic queues as quorum queues (x-queue-type: quorum), "
        "replicated across a RabbitMQ cluster so they survive the loss of a node. "
        "Unset: on when transport_url names several brokers, off with one. Every "
        "service of a deployment must agree (the broker refuses a queue declared "
        "with another type); switching an existing deployment means deleting its "
        "queues first.",
    ),
]

conductor_opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "workers",
        default=1,
        min=1,
        help="Conductor processes `nubes conductor` runs under one parent (needs rabbit://).",
    ),
    cfg.StrOpt("topic", default="conductor", help="RPC topic of the conductor."),
    cfg.ListOpt(
        "controller_identities",
        default=[],
        help="Bus identities (broker users) to treat as controller services besides "
        "those named conductor.*, scheduler.*, api.* and manage.*. Compute hosts are "
        "compute.<host>; any other identity is refused.",
    ),
    cfg.IntOpt(
        "max_node_vcpus",
        default=4096,
        min=0,
        help="Largest vcpus a compute host may report for one of its nodes; a bigger "
        "(or negative) value is refused, so a compromised host cannot draw the "
        "scheduler with a phantom giant node.",
    ),
    cfg.IntOpt(
        "max_node_memory_mb",
        default=64 * 1024 * 1024,
        min=0,
        help="Largest memory_mb a compute host may report for one of its nodes.",
    ),
    cfg.IntOpt(
        "max_node_local_gb",
        default=1024 * 1024,
        min=0,
        help="Largest local_gb a compute host may report for one of its nodes.",
    ),
    cfg.FloatOpt(
        "initial_cpu_allocation_ratio",
        default=16.0,
        min=0.0,
        help="CPU allocation ratio a compute node gets when its host registers it. "
        "The operator's, never the host's: a host that sends one is refused.",
    ),
    cfg.FloatOpt(
        "initial_ram_allocation_ratio",
        default=1.5,
        min=0.0,
        help="RAM allocation ratio a compute node gets when its host registers it.",
    ),
    cfg.FloatOpt(
        "initial_disk_allocation_ratio",
        default=1.0,
        min=0.0,
        help="Disk allocation ratio a compute node gets when its host registers it.",
    ),
    cfg.FloatOpt(
        "task_lease_seconds",
        default=30.0,
        min=1.0,
        help="Lease a conductor takes on a task it works on, renewed while it works; "
        "another conductor resumes the task once the lease runs out.",
    ),
    cfg.FloatOpt(
        "task_poll_interval",
        default=1.0,
        min=0.01,
        help="Seconds between a conductor's looks for tasks it was not told about "
        "(created or reported through another conductor, or whose lease expired).",
    ),
    cfg.FloatOpt(
        "drain_timeout",
        default=10.0,
        min=0.0,
        help="Seconds a conductor stopped by SIGTERM gives the task steps it works on "
        "to end before it hands them over to the other conductors (it takes no new "
        "work meanwhile, and hands steps waiting for a compute host over at once).",
    ),
    cfg.IntOpt(
        "task_concurrency",
        default=512,
        min=1,
        help="Tasks one conductor process drives at the same time.",
    ),
    cfg.FloatOpt(
        "compute_step_timeout",
        default=600.0,
        min=0.1,
        help="Seconds a task waits for a compute host to report a step (a spawn, a "
        "power action) before counting it as that host's failure.",
    ),
    cfg.FloatOpt(
        "build_deadline",
        default=3600.0,
        min=0.1,
        help="Seconds a build may take from request to ACTIVE, reschedules included; "
        "past it the build is rolled back and the instance goes to ERROR with a fault.",
    ),
    cfg.FloatOpt(
        "task_deadline",
        default=1800.0,
        min=0.1,
        help="Seconds a delete, stop, start or reboot may take before it is rolled back "
        "with a fault.",
    ),
]

scheduler_opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        help="Hosts tried for one instance: the chosen one plus alternates.",
    ),
    cfg.IntOpt(
        "workers",
        default=1,
        min=1,
        help="Scheduler processes `nubes scheduler` runs under one parent (needs rabbit://).",
    ),
    cfg.FloatOpt(
        "host_state_refresh_interval",
        default=1.0,
        min=0.05,
        help="Seconds between incremental refreshes of a scheduler's in-memory view of "
        "the hosts (changed compute nodes, service liveness, aggregates). The view only "
        "guides the choice: every claim is re-checked by the database.",
    ),
    cfg.FloatOpt(
        "host_state_change_margin",
        default=2.0,
        min=0.0,
        help="Seconds before the previous refresh that the next one re-reads changes "
        "from, covering clock skew between writers and transactions that committed late.",
    ),
    cfg.IntOpt(
        "max_claim_attempts",
        default=32,
        min=1,
        help="Hosts one instance tries to claim, best first, before the request fails "
        "with NoValidHost because other schedulers took the room first.",
    ),
    cfg.ListOpt(
        "policies",
        default=[],
        help="Named scheduling policies, tried in order; each is configured in a "
        "[scheduler_policy_NAME] section (enabled_filters, weigher multipliers, match). "
        "The first whose match rule fits a request schedules it.",
    ),
    cfg.StrOpt(
        "default_policy",
        default="default",
        help="Policy used when no policy's match rule fits; 'default' is the one built "
        "from [filter_scheduler], any other name must be listed in policies.",
    ),
]

filter_scheduler_opts: list[cfg.Opt] = [
    cfg.ListOpt(
        "enabled_filters",
        default=[
            "ComputeFilter",
            "AvailabilityZoneFilter",
            "RamFilter",
            "CoreFilter",
            "DiskFilter",
            "AggregateMultiTenancyIsolation",
            "AggregateInstanceExtraSpecsFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
            "SameHostFilter",
            "DifferentHostFilter",
        ],
        help="Filters a host must pass, in the order they run.",
    ),
    cfg.FloatOpt(
        "ram_weight_multiplier",
        default=1.0,
        help="Weight of free RAM; positive spreads instances, negative stacks them.",
    ),
    cfg.FloatOpt(
        "cpu_weight_multiplier",
        default=1.0,
        help="Weight of free vCPUs; positive spreads, negative stacks.",
    ),
    cfg.FloatOpt(
        "disk_weight_multiplier",
        default=1.0,
        help="Weight of free disk; positive spreads, negative stacks.",
    ),
    cfg.FloatOpt(
        "cpu_utilization_weight_multiplier",
        default=-1.0,
        help="Weight of the CPU utilisation hosts report (metrics cpu.percent); "
        "negative prefers idle hosts.",
    ),
    cfg.FloatOpt(
        "num_instances_weight_multiplier",
        default=0.0,
        help="Weight of the number of instances on a host; negative prefers emptier hosts.",
    ),
    cfg.FloatOpt(
        "soft_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="Weight of hosting members of a soft-affinity server group. Above the "
        "sum of the spreading multipliers (RAM, vCPU, disk: 3.0 by default) so that "
        "the policy packs members wherever there is room (Nova's 1.0 is outweighed "
        "by them in a uniform fleet and packs nothing).",
    ),
    cfg.FloatOpt(
        "soft_anti_affinity_weight_multiplier",
        default=10.0,
        min=0.0,
        help="Weight of hosting no members of a soft-anti-affinity server group "
        "(above the resource multipliers, like soft_affinity_weight_multiplier).",
    ),
    cfg.IntOpt(
        "host_subset_size",
        default=1,
        min=1,
        help="Pick the host at random among this many best ones; above 1 it makes "
        "concurrent schedulers collide less on the same host.",
    ),
]


class UpgradeLevel(types.String):
    """An ``[upgrade_levels]`` value: a version, a release name or ``auto``
    (checked by :func:`nubes.versions.check_level`)."""

    def __init__(self) -> None:
        super().__init__(type_name="upgrade level")

    def __call__(self, value: str) -> str:
        return versions.check_level(super().__call__(value))


def _upgrade_level(api: str) -> cfg.Opt:
    return cfg.Opt(
        api,
        type=UpgradeLevel(),
        default=versions.AUTO,
        help=f"Cap on the {api} RPC API version this service sends: a version (1.0), "
        f"a release name ({', '.join(versions.RELEASES)}: what that release's {api} "
        f"services serve), or 'auto' (the default: what the oldest {api} service "
        "running serves, so a rolling upgrade needs no setting). Empty: no cap.",
    )


upgrade_levels_opts: list[cfg.Opt] = [
    *(_upgrade_level(api) for api in versions.APIS),
    cfg.FloatOpt(
        "refresh_interval",
        default=versions.REFRESH_INTERVAL,
        min=0.1,
        help="Seconds between two reads of the oldest services running, which 'auto' "
        "caps follow (conductors and API; a compute host reads with its resource report).",
    ),
]

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

quota_opts: list[cfg.Opt] = [
    cfg.IntOpt("instances", default=10, min=-1, help="Servers per project (-1: unlimited)."),
    cfg.IntOpt("cores", default=20, min=-1, help="vCPUs per project (-1: unlimited)."),
    cfg.IntOpt("ram", default=51200, min=-1, help="MiB of RAM per project (-1: unlimited)."),
    cfg.IntOpt("metadata_items", default=128, min=-1, help="Metadata items per server."),
    cfg.IntOpt("key_pairs", default=100, min=-1, help="Key pairs per user."),
    cfg.IntOpt("server_groups", default=10, min=-1, help="Server groups per project."),
    cfg.IntOpt("server_group_members", default=10, min=-1, help="Servers per server group."),
    cfg.IntOpt("injected_files", default=5, min=-1, help="Injected files per server."),
    cfg.IntOpt(
        "injected_file_content_bytes", default=10240, min=-1, help="Bytes per injected file."
    ),
    cfg.IntOpt(
        "injected_file_path_length", default=255, min=-1, help="Length of an injected file path."
    ),
    # Networking quotas, with Neutron's defaults and names.
    cfg.IntOpt("network", default=100, min=-1, help="Networks per project."),
    cfg.IntOpt("subnet", default=100, min=-1, help="Subnets per project."),
    cfg.IntOpt("port", default=500, min=-1, help="Ports per project."),
    cfg.IntOpt("security_group", default=10, min=-1, help="Security groups per project."),
    cfg.IntOpt(
        "security_group_rule", default=100, min=-1, help="Security group rules per project."
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


metrics_opts: list[cfg.Opt] = [
    cfg.PortOpt(
        "port",
        default=0,
        help="Serve Prometheus metrics at http://bind:port/metrics (0: off). A service run "
        "as N workers ([conductor] or [scheduler] workers) serves worker i on port + i; "
        "all-in-one serves every service's metrics on this one port.",
    ),
    cfg.StrOpt("bind", default="127.0.0.1", help="Address the metrics endpoint listens on."),
    cfg.FloatOpt(
        "queue_sample_interval",
        default=15.0,
        min=0.0,
        help="Seconds between two samples of the topic queues' depth and consumers by a "
        "controller serving metrics (nubes_rpc_queue_messages; 0: none).",
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

#: Group name -> options, in the order the sample file shows them.
OPTION_GROUPS: dict[str, list[cfg.Opt]] = {
    "DEFAULT": default_opts,
    "database": database_opts,
    "oslo_messaging_rabbit": rabbit_opts,
    "conductor": conductor_opts,
    "scheduler": scheduler_opts,
    "filter_scheduler": filter_scheduler_opts,
    "upgrade_levels": upgrade_levels_opts,
    "compute": compute_opts,
    "metadata": metadata_opts,
    "fake_driver": fake_driver_opts,
    "libvirt": libvirt_opts,
    "network": network_opts,
    "notifications": notifications_opts,
    "api": api_opts,
    "quota": quota_opts,
    "dashboard": dashboard_opts,
    "metrics": metrics_opts,
    "vnc": vnc_opts,
    "consoleauth": consoleauth_opts,
}


def image_data_dir(conf: cfg.ConfigOpts) -> Path:
    """Where the image API keeps image data (``[api] image_dir``, else under
    ``state_path``): the controllers that store or delete image data share it."""
    configured = conf.api.image_dir
    return Path(configured) if configured else Path(conf.state_path) / "images"


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in OPTION_GROUPS.items():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)


def new_config() -> cfg.ConfigOpts:
    """A fresh ConfigOpts with every nubes option registered (tests make their own)."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    return conf


CONF = new_config()


def _file_setting(conf: cfg.ConfigOpts, group: str, name: str) -> str:
    """The last config file that sets ``[group] name`` (later files win)."""
    for path in reversed(list(conf.config_file or [])):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(path)
        except configparser.Error:
            continue
        section = (
            parser.defaults()
            if group == "DEFAULT"
            else (parser[group] if parser.has_section(group) else {})
        )
        if name in section:
            return path
    return "the command line or environment"


def _check_all(conf: cfg.ConfigOpts) -> None:
    """Read every option once so a bad value fails now, naming option and file."""
    for group, opts in OPTION_GROUPS.items():
        node = conf if group == "DEFAULT" else conf[group]
        for opt in opts:
            try:
                node[opt.dest]
            except (cfg.ConfigFileValueError, ValueError) as exc:
                cause = exc.__cause__ or exc.__context__ or exc
                where = _file_setting(conf, group, opt.name)
                raise exception.ConfigError(
                    reason=f"option [{group}] {opt.name} in {where}: {cause}"
                ) from None


def load(
    argv: Sequence[str] | None = None,
    conf: cfg.ConfigOpts | None = None,
    *,
    default_config_files: Sequence[str] | None = None,
) -> cfg.ConfigOpts:
    """Parse ``--config-file`` arguments and validate every option."""
    conf = conf if conf is not None else CONF
    try:
        conf(
            list(argv or []),
            project="nubes",
            default_config_files=list(default_config_files or []),
            validate_default_values=True,
        )
    except (cfg.ConfigFilesNotFoundError, cfg.ConfigFileParseError) as exc:
        raise exception.ConfigError(reason=str(exc)) from exc
    except cfg.Error as exc:
        raise exception.ConfigError(reason=str(exc)) from exc
    _check_all(conf)
    return conf


def _format_default(opt: cfg.Opt) -> str:
    if opt.sample_default is not None:
        return str(opt.sample_default)
    if opt.default is None:
        return "<None>"
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    if isinstance(opt.default, list):
        return ",".join(str(v) for v in opt.default)
    return str(opt.default)


def sample() -> str:
    """The text of a sample configuration file, every option commented out."""
    out: list[str] = []
    for group, opts in OPTION_GROUPS.items():
        out.append(f"[{group}]\n")
        for opt in opts:
            type_name = getattr(opt.type, "type_name", type(opt.type).__name__)
            for line in textwrap.wrap(opt.help or "", 76):
                out.append(f"# {line}")
            bounds = []
            low, high = getattr(opt.type, "min", None), getattr(opt.type, "max", None)
            if low is not None:
                bounds.append(f"minimum {low}")
            if high is not None:
                bounds.append(f"maximum {high}")
            extra = f" ({', '.join(bounds)})" if bounds else ""
            out.append(f"# ({type_name}){extra}")
            out.append(f"#{opt.dest} = {_format_default(opt)}\n")
    return "\n".join(out)
