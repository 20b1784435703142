"""Virt drivers: what a compute host runs instances with.

:mod:`.driver` is the interface every driver implements; :mod:`.fake` keeps
instances in memory for tests and scale runs; :mod:`.libvirt` runs real
guests through libvirtd. :func:`load_driver` picks one
by the name ``[DEFAULT] compute_driver`` gives.
"""

from __future__ import annotations

from typing import Any

from nubes import exception
from nubes.compute.virt.driver import ComputeDriver


def load_driver(name: str, host: str, **options: Any) -> ComputeDriver:
    """The driver ``name`` for ``host``; ConfigError for an unknown name."""
    if name == "fake":
        from nubes.compute.virt.fake import FakeDriver

        return FakeDriver(host, **options)
    if name == "libvirt":
        from nubes.compute.virt.libvirt.driver import LibvirtDriver

        return LibvirtDriver(host, **options)
    raise exception.ConfigError(reason=f"compute_driver {name!r} is not a known virt driver")
