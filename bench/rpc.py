"""nubes.rpc against oslo.messaging over the local RabbitMQ, measured in the same run.

Each stack gets the same work: an ``echo`` call with one caller, the same
call with 64 in flight, and casts with 64 in flight counted until the server
has handled all of them (the client polls a ``count`` call). Server and client
run in separate processes for both stacks, so neither shares an interpreter
with its peer (the machine has two cores, shared with the broker).

nubes runs asyncio (uvloop when installed) with its versioned RPC client and
server on the rabbit:// transport (aiormq through its public API): calls are
transient with direct reply-to, casts are persistent, in durable queues, and
confirmed by the broker; what one process sends in one loop iteration to one
queue travels as one AMQP message (nubes/rpc/rabbit_batch.py).
oslo.messaging runs its rabbit driver with its defaults (no publisher
confirms, non-durable queues) and the threading executor; the client uses one
thread per call in flight, with a connection pool as large as the thread count
so no thread waits for a pooled connection.

The stacks alternate over ``--rounds`` rounds and each figure is the median.
The last line ends with ``ratio R``: nubes over oslo.messaging, calls/s with
64 in flight. ``--quick`` runs a short version for a CI smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import Any

RABBIT_URL = os.environ.get("NUBES_TEST_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
IN_FLIGHT = 64
DURATION = 4.0
QUICK_DURATION = 0.5
CASTS = 8000
QUICK_CASTS = 640
ROUNDS = 3
QUICK_ROUNDS = 1
WARMUP_CALLS = 300
QUICK_WARMUP_CALLS = 50
SERVER_NAME = "bench-server"
#: Seconds a server may take to come up, and the whole cast phase to drain.
START_TIMEOUT = 60.0
DRAIN_TIMEOUT = 120.0
CALL_TIMEOUT = 30.0
POLL_INTERVAL = 0.005
#: The same request context shape both stacks carry.
CONTEXT = {
    "user_id": "5e1c3b6f0d7a4c0e9f0e8a1b2c3d4e5f",
    "project_id": "7a2b9c8d1e0f4a3b8c7d6e5f4a3b2c1d",
    "roles": ["member", "reader"],
}


# -- nubes ------------------------------------------------------------------


class NubesBenchAPI:
    RPC_API_VERSION = "1.0"

    def __init__(self) -> None:
        self.casts = 0

    async def echo(self, context: Any, x: int) -> int:
        return x

    async def bump(self, context: Any, x: int) -> None:
        self.casts += 1

    async def count(self, context: Any) -> int:
        return self.casts


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


async def _nubes_server(topic: str) -> None:
    from nubes.rpc import RPCServer, get_transport

    transport = get_transport(RABBIT_URL)
    server = RPCServer(transport, topic, SERVER_NAME, endpoints=[NubesBenchAPI()])
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop()
    await transport.close()


async def _nubes_client(topic: str, duration: float, casts: int, warmup: int) -> dict[str, float]:
    from nubes.context import RequestContext
    from nubes.rpc import RPCClient, Target, get_transport

    transport = get_transport(RABBIT_URL)
    await transport.connect()
    client = RPCClient(transport, Target(topic), version="1.0", timeout=CALL_TIMEOUT)
    ctxt = RequestContext(**CONTEXT)  # type: ignore[arg-type]

    for _ in range(warmup):
        await client.call(ctxt, "echo", x=1)

    async def caller(deadline: float) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await client.call(ctxt, "echo", x=done)
            done += 1
        return done

    results: dict[str, float] = {}
    for in_flight in (1, IN_FLIGHT):
        start = time.perf_counter()
        counts = await asyncio.gather(*(caller(start + duration) for _ in range(in_flight)))
        results[f"calls_{in_flight}"] = sum(counts) / (time.perf_counter() - start)

    base = await client.call(ctxt, "count")

    async def caster(n: int) -> None:
        for i in range(n):
            await client.cast(ctxt, "bump", x=i)

    per_task = casts // IN_FLIGHT
    start = time.perf_counter()
    await asyncio.gather(*(caster(per_task) for _ in range(IN_FLIGHT)))
    results["cast_publish_s"] = time.perf_counter() - start
    while await client.call(ctxt, "count") < base + per_task * IN_FLIGHT:
        if time.perf_counter() - start > DRAIN_TIMEOUT:
            raise RuntimeError("nubes server did not handle every cast")
        await asyncio.sleep(POLL_INTERVAL)
    results["casts"] = per_task * IN_FLIGHT / (time.perf_counter() - start)
    await transport.close()
    return results


# -- oslo.messaging -----------------------------------------------------------


def _quiet_oslo() -> None:
    # Deprecation notices (eventlet) and per-message pool/queue warnings say
    # nothing about throughput and would bury the figures.
    warnings.simplefilter("ignore")
    for name in ("oslo_messaging", "oslo.messaging", "amqp", "kombu"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _oslo_transport() -> Any:
    import oslo_messaging
    from oslo_config import cfg

    # oslo.messaging registers some options (tracing) on the global CONF only.
    from oslo_messaging._drivers import impl_rabbit

    cfg.CONF([], project="nubes-bench")
    # One pooled connection per calling thread, so 64 threads do not queue
    # for 30 connections (the default pool) and flood the log about it. The
    # driver registers its options only when loaded, after the pool size is read.
    cfg.CONF.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    cfg.CONF.set_override("rpc_conn_pool_size", IN_FLIGHT, group="oslo_messaging_rabbit")
    return oslo_messaging.get_rpc_transport(cfg.CONF, url=RABBIT_URL)


def _oslo_server(topic: str) -> None:
    _quiet_oslo()
    import oslo_messaging

    class Endpoint:
        def __init__(self) -> None:
            self.casts = 0
            self.lock = threading.Lock()

        def echo(self, ctxt: Any, x: int) -> int:
            return x

        def bump(self, ctxt: Any, x: int) -> None:
            with self.lock:
                self.casts += 1

        def count(self, ctxt: Any) -> int:
            return self.casts

    transport = _oslo_transport()
    server = oslo_messaging.get_rpc_server(
        transport,
        oslo_messaging.Target(topic=topic, server=SERVER_NAME),
        [Endpoint()],
        executor="threading",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop()
    server.wait()
    transport.cleanup()


def _oslo_client(topic: str, duration: float, casts: int, warmup: int) -> dict[str, float]:
    _quiet_oslo()
    import oslo_messaging

    transport = _oslo_transport()
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic), timeout=CALL_TIMEOUT
    )
    for _ in range(warmup):
        client.call(CONTEXT, "echo", x=1)

    def run_threads(n: int, work: Any) -> list[int]:
        counts = [0] * n
        threads = [
            threading.Thread(target=lambda i=i: counts.__setitem__(i, work())) for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    results: dict[str, float] = {}
    for in_flight in (1, IN_FLIGHT):
        start = time.perf_counter()
        deadline = start + duration

        def caller(deadline: float = deadline) -> int:
            done = 0
            while time.perf_counter() < deadline:
                client.call(CONTEXT, "echo", x=done)
                done += 1
            return done

        counts = run_threads(in_flight, caller)
        results[f"calls_{in_flight}"] = sum(counts) / (time.perf_counter() - start)

    base = client.call(CONTEXT, "count")
    per_thread = casts // IN_FLIGHT

    def caster() -> int:
        for i in range(per_thread):
            client.cast(CONTEXT, "bump", x=i)
        return per_thread

    start = time.perf_counter()
    run_threads(IN_FLIGHT, caster)
    results["cast_publish_s"] = time.perf_counter() - start
    while client.call(CONTEXT, "count") < base + per_thread * IN_FLIGHT:
        if time.perf_counter() - start > DRAIN_TIMEOUT:
            raise RuntimeError("oslo.messaging server did not handle every cast")
        time.sleep(POLL_INTERVAL)
    results["casts"] = per_thread * IN_FLIGHT / (time.perf_counter() - start)
    transport.cleanup()
    return results


# -- orchestration ------------------------------------------------------------


def _delete_topology(topic: str) -> None:
    """Drop the bench's queues and fanout exchange so runs do not pile them up."""
    import aiormq

    from nubes.rpc.rabbit_connection import amqp_url
    from nubes.rpc.rabbit_session import fanout_exchange
    from nubes.rpc.transport import TransportURL

    url = TransportURL.parse(RABBIT_URL)

    async def delete() -> None:
        conn = await aiormq.connect(amqp_url(url.hosts[0], url.virtual_host, 0))
        channel = await conn.channel()
        for name in (topic, f"{topic}.{SERVER_NAME}"):
            await channel.queue_delete(name)
        await channel.exchange_delete(fanout_exchange(topic))
        await conn.close()

    try:
        asyncio.run(delete())
    except Exception as exc:  # leftovers are untidy, not a reason to lose the figures
        print(f"warning: could not delete the bench topology of {topic}: {exc!r}", file=sys.stderr)


def _measure(stack: str, args: argparse.Namespace) -> dict[str, float]:
    topic = f"bench-{stack}-{uuid.uuid4().hex[:8]}"
    me = [sys.executable, os.path.abspath(__file__), "--stack", stack, "--topic", topic]
    server = subprocess.Popen(
        [*me, "--role", "server"], stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{stack} server did not start (exit {server.poll()})")
        out = subprocess.run(
            [
                *me,
                "--role",
                "client",
                "--duration",
                str(args.duration),
                "--casts",
                str(args.casts),
                "--warmup",
                str(args.warmup),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            timeout=START_TIMEOUT + DRAIN_TIMEOUT + 10 * args.duration,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        _delete_topology(topic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run for a CI smoke test")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds per call figure")
    parser.add_argument("--casts", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--stack", choices=["nubes", "oslo"], help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    args.duration = args.duration or (QUICK_DURATION if args.quick else DURATION)
    args.casts = args.casts or (QUICK_CASTS if args.quick else CASTS)
    if args.warmup is None:
        args.warmup = QUICK_WARMUP_CALLS if args.quick else WARMUP_CALLS

    if args.role == "server":
        if args.stack == "nubes":
            _use_uvloop()
            asyncio.run(_nubes_server(args.topic))
        else:
            _oslo_server(args.topic)
        return
    if args.role == "client":
        if args.stack == "nubes":
            _use_uvloop()
            result = asyncio.run(_nubes_client(args.topic, args.duration, args.casts, args.warmup))
        else:
            result = _oslo_client(args.topic, args.duration, args.casts, args.warmup)
        print(json.dumps(result), flush=True)
        return

    runs: dict[str, list[dict[str, float]]] = {"nubes": [], "oslo": []}
    for _ in range(args.rounds):
        for stack in ("nubes", "oslo"):
            runs[stack].append(_measure(stack, args))

    def median(stack: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[stack])

    print(
        f"RPC over RabbitMQ, {args.rounds} round(s), median; "
        f"calls {args.duration:g} s each, {args.casts} casts with {IN_FLIGHT} in flight"
    )
    print(f"{'':16}{'calls/s x1':>12}{'calls/s x64':>13}{'casts/s x64':>13}")
    for stack, name in (("nubes", "nubes.rpc"), ("oslo", "oslo.messaging")):
        print(
            f"{name:16}{median(stack, 'calls_1'):>12.0f}"
            f"{median(stack, f'calls_{IN_FLIGHT}'):>13.0f}{median(stack, 'casts'):>13.0f}"
        )
    calls1 = median("nubes", "calls_1") / median("oslo", "calls_1")
    casts = median("nubes", "casts") / median("oslo", "casts")
    calls = median("nubes", f"calls_{IN_FLIGHT}") / median("oslo", f"calls_{IN_FLIGHT}")
    print(f"casts/s with {IN_FLIGHT} in flight: nubes.rpc over oslo.messaging ratio {casts:.2f}")
    print(f"calls/s with 1 in flight: nubes.rpc over oslo.messaging ratio {calls1:.2f}")
    print(f"calls/s with {IN_FLIGHT} in flight: nubes.rpc over oslo.messaging ratio {calls:.2f}")


if __name__ == "__main__":
    main()
