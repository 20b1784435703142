"""Views of hosts fed by hand (no database) and requests, for filter/weigher tests."""

from __future__ import annotations

import itertools
import types
from typing import Any

from nubes.objects.flavor import Flavor
from nubes.objects.request_spec import RequestSpec
from nubes.scheduler.host_state import HostState, HostStateView
from nubes.scheduler.request import SchedulingRequest

_ids = itertools.count(1)


def node_row(host: str, **values: Any) -> types.SimpleNamespace:
    row: dict[str, Any] = {
        "id": next(_ids),
        "uuid": f"00000000-0000-0000-0000-{next(_ids):012d}",
        "host": host,
        "hypervisor_hostname": host,
        "hypervisor_type": "fake",
        "hypervisor_version": 1000,
        "vcpus": 8,
        "memory_mb": 8192,
        "local_gb": 100,
        "vcpus_used": 0,
        "memory_mb_used": 0,
        "local_gb_used": 0,
        "cpu_allocation_ratio": 1.0,
        "ram_allocation_ratio": 1.0,
        "disk_allocation_ratio": 1.0,
        "metrics": None,
        "generation": 1,
        "deleted": 0,
        "num_instances": 0,
    }
    row.update(values)
    return types.SimpleNamespace(**row)


def make_view(
    hosts: dict[str, dict[str, Any]],
    *,
    aggregates: list[dict[str, Any]] = (),  # type: ignore[assignment]
    down: set[str] = frozenset(),  # type: ignore[assignment]
    disabled: set[str] = frozenset(),  # type: ignore[assignment]
    no_service: set[str] = frozenset(),  # type: ignore[assignment]
) -> HostStateView:
    """A view of ``hosts`` (name -> node column overrides), all up unless told."""
    view = HostStateView()
    view.apply_nodes([node_row(h, **v) for h, v in hosts.items()])
    view.set_aggregates(
        [
            {
                "id": i + 1,
                "name": a.get("name", f"agg{i}"),
                "hosts": a["hosts"],
                "metadata": a.get("metadata", {}),
            }
            for i, a in enumerate(aggregates)
        ]
    )
    services = {h: (h in disabled, False) for h in hosts if h not in no_service}
    view.set_services(services, set(down))
    return view


def flavor(vcpus: int = 1, memory_mb: int = 1024, root_gb: int = 10, **extra: Any) -> Flavor:
    return Flavor(
        id=1,
        flavorid="f1",
        name="f1",
        vcpus=vcpus,
        memory_mb=memory_mb,
        root_gb=root_gb,
        extra_specs=extra.pop("extra_specs", {}),
        **extra,
    )


def request(**values: Any) -> SchedulingRequest:
    fl = values.pop("flavor", None) or flavor()
    hints = values.pop("scheduler_hints", None)
    spec = RequestSpec.from_components(flavor=fl, scheduler_hints=hints, **values)
    return SchedulingRequest.from_spec(spec)


def host(view: HostStateView, name: str) -> HostState:
    return view.hosts[view.by_host[name][0]]


def passing(view: HostStateView, flt: Any, req: SchedulingRequest) -> set[str]:
    """Hosts passing ``flt``, by host_passes; also checks the vector form agrees."""
    by_host = {hs.host for hs in view.hosts if flt.host_passes(hs, req)}
    mask = flt.mask(view, req)
    if mask is not None and flt.mask_is_exact:
        by_mask = {view.hosts[i].host for i in range(len(view)) if mask[i]}
        assert by_mask == by_host, (by_mask, by_host)
    return by_host
