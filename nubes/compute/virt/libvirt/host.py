"""The connection to libvirtd: blocking calls in a thread pool, lifecycle events.

libvirt's Python binding blocks, so every call goes through :meth:`Host.call`,
which runs it in this host's own thread pool (a slow libvirtd must not stall
the event loop, nor take the default executor other code uses).

Events: libvirt accepts one event-loop implementation per process, once, and
``libvirtaio`` binds it to the asyncio loop running at that moment. A process
that runs several loops one after the other (the test suite; an all-in-one
that stops and starts) would then lose its events and its connections'
keepalives with the first loop. So the process runs libvirt's own event loop
(``virEventRunDefaultImpl``) in one daemon thread, and each :class:`Host`
hands the domain events it registers for to its own asyncio loop with
``call_soon_threadsafe``, in the context it was opened in (so the listener's
object calls go through the right conductor).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from nubes import exception
from nubes.objects.states import PowerState

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

_event_thread: threading.Thread | None = None
_event_lock = threading.Lock()


def import_libvirt() -> Any:
    """The ``libvirt`` module, or ConfigError saying how to get it."""
    try:
        import libvirt
    except ImportError:
        raise exception.ConfigError(
            reason="compute_driver libvirt needs the libvirt python binding: "
            "pip install 'nubes[libvirt]' (builds against libvirt-dev and pkg-config)"
        ) from None
    return libvirt


def _ensure_event_thread(libvirt: Any) -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _event_thread
    with _event_lock:
        if _event_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        # Every failure reaches us as a libvirtError; libvirt's own handler
        # would also print each one (even an expected "no such domain") on stderr.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive: one bad callback must not end events
                    LOG.exception("libvirt event loop iteration failed")

        _event_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _event_thread.start()


#: Domain lifecycle callback: (domain uuid, libvirt event, detail).
DomainEventHandler = Callable[[str, int, int], None]


class Host:
    """One libvirt connection, its thread pool and its event registration."""

    def __init__(self, uri: str, *, workers: int = 8) -> None:
        self.uri = uri
        self.libvirt = import_libvirt()
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: Any = None
        self._callback_id: int | None = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise exception.ConfigError(reason=f"libvirt connection {self.uri} is not open")
        return self._conn

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in this connection's thread pool."""
        if self._pool is None:
            raise exception.ConfigError(reason=f"libvirt connection {self.uri} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def open(self, on_domain_event: DomainEventHandler | None = None) -> None:
        """Connect; with ``on_domain_event``, have it called in this loop for
        every domain lifecycle event."""
        libvirt = self.libvirt
        _ensure_event_thread(libvirt)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix="libvirt"
            )
        try:
            self._conn = await self.call(libvirt.open, self.uri)
        except libvirt.libvirtError as exc:
            raise exception.ConfigError(
                reason=f"cannot connect to libvirt at {self.uri}: {exc}"
            ) from None
        if on_domain_event is None:
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()

        def callback(conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
            # In the libvirt event thread: only hand over.
            uuid = dom.UUIDString()
            try:
                loop.call_soon_threadsafe(on_domain_event, uuid, event, detail, context=context)
            except RuntimeError:  # the loop closed under us
                pass

        self._callback_id = await self.call(
            self._conn.domainEventRegisterAny,
            None,
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            callback,
            None,
        )
        # Without keepalives a dead libvirtd is noticed only at the next call.
        await self.call(self._conn.setKeepAlive, 5, 3)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        libvirt = self.libvirt
        if self._callback_id is not None:
            try:
                await self.call(conn.domainEventDeregisterAny, self._callback_id)
            except libvirt.libvirtError as exc:
                LOG.debug("deregistering libvirt events failed: %s", exc)
            self._callback_id = None
        try:
            await self.call(conn.close)
        except libvirt.libvirtError as exc:
            LOG.debug("closing the libvirt connection failed: %s", exc)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def power_state(libvirt: Any, state: int) -> PowerState:
    """Our power state for a libvirt domain state."""
    table = {
        libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
        libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
        libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
        libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
        libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
        libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
    }
    return table.get(state, PowerState.NOSTATE)
