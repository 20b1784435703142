"""A caller process of bench/scale.py's saves: compute hosts writing their own instances.

    python bench/host_saves.py URL_TEMPLATE IN_FLIGHT HOST [HOST ...]

Each ``HOST`` logs in to the broker as itself (``URL_TEMPLATE`` with
``{identity}`` for ``compute.<host>``, as a compute process does), loads the
instances placed on it through the conductor (``Instance.get_by_host``, a
host's power-state sync reads them so) and, on the bench's word, saves them
through the conductor over and over: ``power_state`` flipping between
running and paused, the field a host's sync writes: one save in flight per
instance, on ``IN_FLIGHT`` instances at most (taken from each host in
turn). The conductor authorises each save for its host as
it would any compute process's.

The bench and this process speak one line at a time: this prints ``ready N``
(its instances, after a warm-up) and waits for ``go SECONDS`` on stdin, runs
that long, and prints ``done SAVES SECONDS CPU`` (saves finished, the
seconds from go to the last reply, its own CPU seconds over them) and exits.
Errors go to stderr and make it exit non-zero.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nubes.context import RequestContext
from nubes.objects.instance import Instance
from nubes.objects.states import PowerState
from nubes.testing.cloud import Host, connect_host

#: Seconds of saves before ``ready``: connections, caches, the conductors' pools.
WARM_UP = 1.0


async def load(host: Host) -> list[Instance]:
    return await host.run(Instance.get_by_host, RequestContext(), host.name)


async def hammer(host: Host, objs: list[Instance], stop_at: float) -> int:
    """Saves of ``objs`` as ``host`` until ``stop_at``; how many finished."""
    done = 0
    ctxt = RequestContext()

    async def caller(inst: Instance) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            running = inst.power_state == PowerState.RUNNING
            inst.power_state = PowerState.PAUSED if running else PowerState.RUNNING
            await inst.save(ctxt)
            done += 1

    async def run_all() -> None:
        await asyncio.gather(*(caller(o) for o in objs))

    await host.run(run_all)
    return done


def take(loaded: list[list[Instance]], limit: int) -> list[list[Instance]]:
    """At most ``limit`` instances, one from each host in turn (so every host calls)."""
    taken: list[list[Instance]] = [[] for _ in loaded]
    left, depth = limit, 0
    while left and any(depth < len(objs) for objs in loaded):
        for objs, mine in zip(loaded, taken, strict=True):
            if left and depth < len(objs):
                mine.append(objs[depth])
                left -= 1
        depth += 1
    return taken


async def main(template: str, in_flight: int, names: list[str]) -> int:
    hosts = [
        await connect_host(name, template.format(identity=f"compute.{name}"), timeout=120)
        for name in names
    ]
    try:
        objs = take([await load(h) for h in hosts], in_flight)
        stop_at = time.monotonic() + WARM_UP
        await asyncio.gather(*(hammer(h, o, stop_at) for h, o in zip(hosts, objs, strict=True)))
        print(f"ready {sum(len(o) for o in objs)}", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        word, _, seconds = line.partition(" ")
        if word != "go":
            return 1
        cpu0, start = time.process_time(), time.monotonic()
        stop_at = start + float(seconds)
        counts = await asyncio.gather(
            *(hammer(h, o, stop_at) for h, o in zip(hosts, objs, strict=True))
        )
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
        print(f"done {sum(counts)} {elapsed:.4f} {cpu:.4f}", flush=True)
        return 0
    finally:
        for h in hosts:
            await h.transport.close()


def run() -> int:
    template, in_flight, *names = sys.argv[1:]
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(main(template, int(in_flight), names))


if __name__ == "__main__":
    sys.exit(run())
