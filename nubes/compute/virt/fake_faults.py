"""What fake drivers get wrong, and how slow they are: the fault registry a
fleet of :class:`~nubes.compute.virt.fake.FakeDriver` shares (see that
module), and the delay every fake operation waits."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any


async def delay(seconds: float) -> None:
    """Wait a configured delay (none for 0)."""
    if seconds > 0:
        await asyncio.sleep(seconds)


@dataclasses.dataclass
class FakeFaults:
    """What fake drivers should get wrong, and how slow they should be.

    Host sets name hosts (a driver's ``host``); the booleans apply to every
    driver using this registry. Delays are seconds.
    """

    fail_spawn: bool = False
    fail_spawn_hosts: set[str] = dataclasses.field(default_factory=set)
    fail_destroy_hosts: set[str] = dataclasses.field(default_factory=set)
    fail_power_hosts: set[str] = dataclasses.field(default_factory=set)
    fail_reboot_hosts: set[str] = dataclasses.field(default_factory=set)
    fail_live_migration: bool = False
    #: Source hosts whose live migrations fail at 50 %.
    fail_live_migration_hosts: set[str] = dataclasses.field(default_factory=set)
    #: Driver method name -> hosts (``"*"``: every host) where that call fails.
    fail_calls: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    #: Driver method name -> how many of its next calls fail (on any host);
    #: each failure counts one down ("fail each driver call once").
    fail_next: dict[str, int] = dataclasses.field(default_factory=dict)
    spawn_delay: float = 0.0
    power_delay: float = 0.0
    migration_delay: float = 0.0

    def injected(self, method: str, host: str) -> bool:
        """Whether this call of ``method`` on ``host`` is to fail (and count it)."""
        hosts = self.fail_calls.get(method)
        if hosts is not None and ("*" in hosts or host in hosts):
            return True
        left = self.fail_next.get(method, 0)
        if left > 0:
            self.fail_next[method] = left - 1
            return True
        return False

    def reset(self) -> None:
        fresh = FakeFaults()
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    @classmethod
    def from_options(cls, opts: Any) -> FakeFaults:
        """A registry with the ``[fake_driver]`` delays and failures of a config."""
        return cls(
            spawn_delay=opts.spawn_delay,
            power_delay=opts.power_delay,
            migration_delay=opts.migration_delay,
            fail_spawn_hosts=set(opts.fail_spawn_hosts),
            fail_live_migration_hosts=set(opts.fail_live_migration_hosts),
        )
