"""Options every nubes service reads: identity and bus, database, RabbitMQ, RPC
caps during upgrades, notifications and metrics."""

from __future__ import annotations

import socket

from oslo_config import cfg, types

from nubes import versions

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
    cfg.StrOpt(
        "default_ephemeral_format",
        choices=["ext2", "ext3", "ext4", "xfs", "vfat", "ntfs"],
        help="Filesystem a libvirt compute host formats a flavor's ephemeral disk "
        "with (labelled ephemeral0; the host needs that mkfs). Unset: as Nova, by the "
        "image's os_type: ext4 for linux, ntfs for windows, vfat otherwise.",
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
