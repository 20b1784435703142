"""Host filters: small classes that each say whether a host can take a request.

Every filter answers :meth:`BaseFilter.host_passes` for one host; that is
its meaning and what its unit tests pin. A filter may also answer
:meth:`BaseFilter.mask` for all hosts at once (a numpy boolean array over
the view); when it does and ``mask_is_exact`` is true, the scheduler uses
only the mask, otherwise it also runs ``host_passes`` on the candidates it
walks, best weighed first. Filters are looked up by class name from
``[filter_scheduler] enabled_filters`` (or a policy's list).

A filter lists the scheduler hints it reads (:class:`HintSpec`); the
scheduler publishes the hints of its enabled filters and weighers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

from nubes import exception

if TYPE_CHECKING:
    from nubes.scheduler.host_state import BoolArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest


@dataclasses.dataclass(frozen=True, slots=True)
class HintSpec:
    """A scheduler hint a filter or weigher reads, as the API lists it."""

    name: str
    #: "uuid", "list of uuids", "string" ...: what the value must be.
    type: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "description": self.description}


class BaseFilter:
    #: Hints this filter reads.
    hints: ClassVar[tuple[HintSpec, ...]] = ()
    #: True when :meth:`mask` says exactly what :meth:`host_passes` would.
    mask_is_exact: ClassVar[bool] = False

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def applies(self, req: SchedulingRequest) -> bool:
        """Whether this request uses the filter at all (cheap; False skips it)."""
        return True

    def host_passes(self, host: HostState, req: SchedulingRequest) -> bool:
        raise NotImplementedError

    def mask(self, view: HostStateView, req: SchedulingRequest) -> BoolArray | None:
        """Hosts of ``view`` that may pass, as one array; None if there is no vector form."""
        return None


_REGISTRY: dict[str, type[BaseFilter]] = {}


def register(cls: type[BaseFilter]) -> type[BaseFilter]:
    _REGISTRY[cls.name()] = cls
    return cls


def filter_classes() -> dict[str, type[BaseFilter]]:
    """Every known filter by name."""
    # Imported here: the modules register themselves on import.
    from nubes.scheduler.filters import affinity, aggregates, compute  # noqa: F401

    return dict(_REGISTRY)


def load_filters(names: list[str]) -> list[BaseFilter]:
    """Instances of the named filters, in order; ConfigError for an unknown name."""
    known = filter_classes()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise exception.ConfigError(
            reason=f"unknown scheduler filters {unknown}; known: {sorted(known)}"
        )
    return [known[n]() for n in names]
