"""Host weighers: each turns hosts into numbers; higher is better.

Like Nova, each weigher's raw values over the candidate hosts are
normalised to 0..1 (all equal -> all 0) and multiplied by the weigher's
multiplier from config; the host's weight is the sum. Weighers work on
arrays over the candidates (:meth:`BaseWeigher.raw`) and also answer for a
single host (:meth:`BaseWeigher.host_value`), which is what the vector form
must agree with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from nubes import exception

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from nubes.scheduler.filters import HintSpec
    from nubes.scheduler.host_state import FloatArray, HostState, HostStateView
    from nubes.scheduler.request import SchedulingRequest


class BaseWeigher:
    #: ``[filter_scheduler]`` option holding the default multiplier.
    multiplier_option: ClassVar[str] = ""
    hints: ClassVar[tuple[HintSpec, ...]] = ()

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def applies(self, req: SchedulingRequest) -> bool:
        return True

    def host_value(self, host: HostState, req: SchedulingRequest) -> float:
        raise NotImplementedError

    def raw(self, view: HostStateView, idx: NDArray[np.intp], req: SchedulingRequest) -> FloatArray:
        """Raw values of the hosts at ``idx``."""
        return np.fromiter((self.host_value(view.hosts[i], req) for i in idx), dtype=float)


def normalize(values: FloatArray) -> FloatArray:
    """Scale to 0..1 (Nova's rule: all equal gives all 0)."""
    if len(values) == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(len(values))
    return (values - low) / (high - low)


def combined_weights(
    weighers: list[tuple[BaseWeigher, float]],
    view: HostStateView,
    idx: NDArray[np.intp],
    req: SchedulingRequest,
) -> FloatArray:
    """Sum of multiplier × normalised value over ``weighers``, for hosts ``idx``."""
    total = np.zeros(len(idx))
    for weigher, multiplier in weighers:
        if multiplier == 0.0 or not weigher.applies(req):
            continue
        total += multiplier * normalize(weigher.raw(view, idx, req))
    return total


_REGISTRY: dict[str, type[BaseWeigher]] = {}


def register(cls: type[BaseWeigher]) -> type[BaseWeigher]:
    _REGISTRY[cls.name()] = cls
    return cls


def weigher_classes() -> dict[str, type[BaseWeigher]]:
    from nubes.scheduler.weighers import affinity, resources  # noqa: F401  (they register)

    return dict(_REGISTRY)


def load_weighers(multipliers: dict[str, float]) -> list[tuple[BaseWeigher, float]]:
    """Every weigher with its multiplier (``multipliers`` by option name)."""
    out = []
    for cls in weigher_classes().values():
        if cls.multiplier_option not in multipliers:
            raise exception.ConfigError(reason=f"no multiplier {cls.multiplier_option} given")
        out.append((cls(), float(multipliers[cls.multiplier_option])))
    return out
