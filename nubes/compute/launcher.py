"""Building compute services from configuration: one host, or a fleet of fake ones.

``nubes compute`` runs :func:`compute_service` for ``[DEFAULT] host``;
``nubes compute --fake-hosts N`` runs :func:`fake_fleet`: N hosts in one
process, each with its own bus identity (``compute.<prefix><i>``), fake
driver, manager and compute-node record. On memory:// they share the bus
with whatever else runs in the process (all-in-one uses the same builder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oslo_config import cfg

from nubes import access, exception
from nubes.compute.console_relay import ConsoleRelay
from nubes.compute.host import ComputeHost
from nubes.compute.network.agent import NetworkAgent, interface_mappings
from nubes.compute.snapshots import ImageUploader
from nubes.compute.virt import load_driver
from nubes.compute.virt.driver import ComputeDriver
from nubes.compute.virt.fake import FakeFaults
from nubes.conductor.rpcapi import ConductorAPI
from nubes.metadata.proxy import MetadataProxy, parse_listen
from nubes.notifications.notifier import Notifier
from nubes.rpc.transport import Transport
from nubes.service import Service, open_transport

DEFAULT_FAKE_PREFIX = "fake-"


def _driver_options(conf: cfg.ConfigOpts, faults: FakeFaults | None) -> dict[str, Any]:
    if conf.compute_driver == "libvirt":
        return libvirt_options(conf)
    if conf.compute_driver != "fake":
        return {}
    opts = conf.fake_driver
    return {
        "vcpus": opts.vcpus,
        "memory_mb": opts.memory_mb,
        "local_gb": opts.local_gb,
        "state_dir": opts.state_path,
        # The hosts of one process share the [fake_driver] faults of its config.
        "faults": faults if faults is not None else FakeFaults.from_options(opts),
    }


def libvirt_options(conf: cfg.ConfigOpts) -> dict[str, Any]:
    """The libvirt driver's arguments from ``[libvirt]`` (paths defaulted under
    ``state_path`` as the image API and the docs say)."""
    from nubes.compute.virt.libvirt.imagecache import (
        DirectoryImageSource,
        HttpImageSource,
        ImageSource,
    )

    opts = conf.libvirt
    state = Path(conf.state_path)
    source: ImageSource
    if opts.image_source == "directory":
        source = DirectoryImageSource(
            opts.image_source_dir or conf.api.image_dir or state / "images"
        )
    elif not opts.image_api_endpoint:
        raise exception.ConfigError(
            reason="[libvirt] image_source = http needs [libvirt] image_api_endpoint "
            "(the image API's URL)"
        )
    else:
        source = HttpImageSource(opts.image_api_endpoint, conf.host)
    return {
        "connection_uri": opts.connection_uri,
        "virt_type": opts.virt_type,
        "instances_path": opts.instances_path or state / "instances",
        "image_source": source,
        "soft_reboot_wait": opts.soft_reboot_wait,
        "migration_address": opts.live_migration_inbound_addr,
        "migration_bandwidth": opts.live_migration_bandwidth,
        "disk_server_port": opts.disk_server_port,
        "vnc_listen": conf.vnc.server_listen if conf.vnc.enabled else None,
        "ephemeral_format": conf.default_ephemeral_format,
    }


def compute_host(
    conf: cfg.ConfigOpts,
    host: str,
    transport: Transport,
    conductor: ConductorAPI,
    driver: ComputeDriver | None = None,
    faults: FakeFaults | None = None,
) -> ComputeHost:
    """The compute host ``host``: driver, manager, tracker, repair. A fake driver
    made here takes ``faults`` (by default, a registry from ``[fake_driver]``)."""
    if driver is None:
        driver = load_driver(conf.compute_driver, host, **_driver_options(conf, faults))
    network = network_agent(conf, host, conductor) if driver.has_data_plane else None
    if network is not None:
        driver.use_network(network)
    notes = conf.notifications
    notifier = Notifier(
        transport,
        f"compute:{host}",
        topic=notes.topic,
        enabled=notes.driver == "messaging",
        # Only controllers publish notifications: the conductor does it for us.
        relay=conductor,
    )
    return ComputeHost(
        host,
        driver,
        conductor,
        notifier,
        resource_update_interval=conf.compute.resource_update_interval,
        notify_on_state_change=notes.notify_on_state_change,
        steps_kept=conf.compute.completed_steps_kept,
        upgrade_levels=conf.upgrade_levels,
        force_config_drive=conf.force_config_drive,
        network=network,
        host_ip=conf.network.local_ip,
        uploader=(
            ImageUploader(conf.compute.image_api_endpoint, host)
            if conf.compute.image_api_endpoint
            else None
        ),
    )


def network_agent(conf: cfg.ConfigOpts, host: str, conductor: ConductorAPI) -> NetworkAgent:
    """A libvirt host's data plane agent from ``[network]``."""
    opts = conf.network
    return NetworkAgent(
        host,
        conductor,
        state_dir=Path(opts.state_dir or Path(conf.state_path) / "network"),
        local_ip=opts.local_ip,
        sync_interval=opts.sync_interval,
        physical_interfaces=interface_mappings(opts.physical_interface_mappings),
    )


def compute_service(
    conf: cfg.ConfigOpts,
    host: str,
    *,
    transport: Transport | None = None,
    driver: ComputeDriver | None = None,
    faults: FakeFaults | None = None,
    metadata_listen: str | None = None,
    relay_port: int | None = None,
) -> Service:
    """A compute Service for ``host``, talking to the conductor as ``compute.<host>``;
    its metadata proxy listens on ``metadata_listen`` (default ``[metadata] listen``)."""

    if transport is None:
        transport = open_transport(conf, "compute", host)
    conductor = ConductorAPI(transport, timeout=conf.rpc_response_timeout)
    node = compute_host(conf, host, transport, conductor, driver, faults)
    listen = conf.metadata.listen if metadata_listen is None else metadata_listen
    proxy = MetadataProxy(
        listen, cache_expiration=conf.metadata.cache_expiration, present=node.has_guest
    )
    # The console proxy's way to this host's guests ([vnc] relay_host/port).
    relay = ConsoleRelay(
        host,
        node.driver,
        conductor,
        conf.vnc.relay_host,
        conf.vnc.relay_port if relay_port is None else relay_port,
    )
    hooks: list[Any] = [node, proxy]
    if conf.vnc.enabled:
        node.manager.console_relay = relay
        hooks.append(relay)
    # The data plane opens per-network listeners through node.metadata.
    node.metadata = proxy
    if node.network is not None:
        # Guests' 169.254.169.254 reaches the proxy through the agent's redirect.
        node.network.metadata = proxy
    return Service(
        "compute",
        host,
        transport,
        node.manager.endpoints(),
        indirection_api=conductor,
        report_interval=conf.report_interval,
        hooks=hooks,
        rules=access.for_endpoints(node.manager.endpoints()).with_controllers(
            conf.conductor.controller_identities
        ),
    )


def fake_fleet(
    conf: cfg.ConfigOpts, count: int, prefix: str = DEFAULT_FAKE_PREFIX
) -> list[Service]:
    """``count`` fake compute hosts (``<prefix>0`` ...) in this process, sharing
    one fault registry made from ``[fake_driver]``."""
    faults = FakeFaults.from_options(conf.fake_driver)
    return [
        compute_service(
            conf,
            f"{prefix}{i}",
            faults=faults,
            metadata_listen=fleet_listen(conf, i),
            relay_port=conf.vnc.relay_port + i if conf.vnc.relay_port else 0,
        )
        for i in range(count)
    ]


def fleet_listen(conf: cfg.ConfigOpts, index: int) -> str:
    """Where the ``index``-th host of a fleet in one process has its metadata proxy:
    ``[metadata] listen`` with the index added to its port (0 stays 0: any free port)."""
    listen = conf.metadata.listen
    if not listen:
        return ""
    host, port = parse_listen(listen)
    return f"[{host}]:{port + index if port else 0}"
