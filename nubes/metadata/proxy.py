"""The metadata proxy on each compute host: guests read their metadata here.

A guest asks ``http://169.254.169.254/<path>``; the host's data plane makes
that reach one of this proxy's listeners. The proxy names the guest by the
request's source address and the network it arrived on, and asks the
conductor for that instance's metadata under the host's verified identity
(:meth:`InstanceMetadata.get_by_address`): the conductor answers only for
an instance on this host whose port, bound here, holds that address on that
network. So a guest cannot read another's metadata by claiming an address
(the data plane's anti-spoofing keeps its source address honest), and a
compromised host cannot read another host's instances' metadata.

How the network is known (the contract with the data plane, see
``docs/metadata.md``):

- **one listener per network** (:meth:`MetadataProxy.listen` with
  ``network_id``): the data plane redirects 169.254.169.254:80 arriving on
  that network's bridge to that listener (DNAT to a per-network port, or a
  per-bridge address). The TCP peer is the guest; headers are ignored.
- **a local forwarder**: a connection from a loopback address is a trusted
  forwarder on this host (a guest's packets never come from loopback), so
  its ``X-Forwarded-For`` names the guest and ``X-Nubes-Network-Id`` the
  network (or the listener's own network when it has one). ``[metadata]
  listen`` opens such a listener, normally on 127.0.0.1.

Answers: the file or directory listing (``nubes/metadata/content.py``);
404 for an unknown path, or an address no instance of this host holds; 400
for a request the proxy cannot attribute; 405 for a method other than GET
or HEAD; 503 while the conductor cannot be reached. A host caches each
guest's metadata for ``[metadata] cache_expiration`` seconds, as Nova's
service does, since a guest's boot reads dozens of paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nubes import exception
from nubes.context import RequestContext, get_admin_context
from nubes.metadata import content
from nubes.objects.base import IndirectionAPI, current_indirection_api, use_indirection_api
from nubes.objects.instance_metadata import InstanceMetadata

LOG = logging.getLogger(__name__)

NETWORK_HEADER = "x-nubes-network-id"
FORWARDED_HEADER = "x-forwarded-for"
#: Longest request head read (request line and headers).
MAX_HEAD = 16 * 1024
#: Seconds a client has to send its request.
READ_TIMEOUT = 10.0

#: Status, body, content type.
Answer = tuple[int, bytes, str]
Fetch = Callable[[RequestContext, str, str], Awaitable[InstanceMetadata]]
#: Stores a guest's posted password: (context, network id, address, password) -> stored.
Store = Callable[[RequestContext, str, str, str], Awaitable[bool]]
Present = Callable[[str], Awaitable[bool]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    503: "Service Unavailable",
}


def parse_listen(value: str) -> tuple[str, int]:
    """``[metadata] listen`` as (host, port): ``127.0.0.1:8775``, ``[::1]:8775``."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise exception.ConfigError(reason=f"[metadata] listen {value!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _fetch(ctxt: RequestContext, network_id: str, address: str) -> InstanceMetadata:
    return await InstanceMetadata.get_by_address(ctxt, network_id, address)


async def _store(ctxt: RequestContext, network_id: str, address: str, password: str) -> bool:
    return await InstanceMetadata.set_password(ctxt, network_id, address, password)


@dataclass
class Listener:
    network_id: str | None
    server: asyncio.Server
    address: tuple[str, int] = field(default=("", 0))


class MetadataProxy:
    """The HTTP listeners of one host's metadata proxy (a service hook)."""

    def __init__(
        self,
        listen: str = "",
        *,
        cache_expiration: float = 15.0,
        fetch: Fetch = _fetch,
        present: Present | None = None,
        store: Store = _store,
    ) -> None:
        self.configured = listen
        self.cache_expiration = cache_expiration
        self.fetch = fetch
        self.store = store
        #: Whether this host still runs a guest (by instance uuid): a cached
        #: answer for a guest that is gone is dropped, since its address may
        #: already be another instance's (IPAM reuses a freed address).
        self.present = present
        self.listeners: list[Listener] = []
        self._cache: dict[tuple[str, str], tuple[float, InstanceMetadata]] = {}
        #: The host's conductor client, caught at start: a listener opened
        #: later (by the data plane) still asks as this host.
        self._indirection: IndirectionAPI | None = None

    # -- the service hook ------------------------------------------------------------------

    async def start(self) -> None:
        self._indirection = current_indirection_api()
        if self.configured:
            await self.listen(*parse_listen(self.configured))

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.server.close()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await listener.server.wait_closed()
        self.listeners.clear()

    # -- the data plane's side -------------------------------------------------------------

    async def listen(self, host: str, port: int, network_id: str | None = None) -> tuple[str, int]:
        """Serve on ``host:port`` (0: any free port); requests from non-loopback
        peers are attributed to ``network_id``. Returns the bound address."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, network_id)

        try:
            server = await asyncio.start_server(serve, host, port, limit=MAX_HEAD)
        except OSError as exc:
            raise exception.ConfigError(
                reason=f"metadata proxy cannot listen on {host}:{port}: {exc}"
            ) from exc
        bound = server.sockets[0].getsockname()[:2]
        self.listeners.append(Listener(network_id, server, (bound[0], bound[1])))
        LOG.info("metadata proxy on %s:%d (network %s)", bound[0], bound[1], network_id or "-")
        return bound[0], bound[1]

    async def close(self, network_id: str) -> None:
        """Stop the listeners of ``network_id`` (its last port left this host)."""
        keep = []
        for listener in self.listeners:
            if listener.network_id == network_id:
                listener.server.close()
            else:
                keep.append(listener)
        self.listeners = keep

    # -- one request -------------------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, network_id: str | None
    ) -> None:
        head_only = False
        try:
            head_only, (status, body, ctype) = await self._answer(reader, writer, network_id)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, body, ctype = 400, b"bad request", "text/plain"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + (b"" if head_only else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, network_id: str | None
    ) -> tuple[bool, Answer]:
        """Whether the method was HEAD, and the answer."""
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        lines = raw.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        peer = str(writer.get_extra_info("peername")[0])
        if method == "POST":
            length = headers.get("content-length", "0")
            if not (length.isascii() and length.isdigit()):
                return False, (400, b"bad Content-Length", "text/plain")
            if int(length) > content.MAX_PASSWORD_BYTES:
                return False, (400, b"Request is too large.", "text/plain")
            body = await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)
            return False, await self.post(peer, target, headers, network_id, body)
        if method not in ("GET", "HEAD"):
            return False, (405, b"only GET, HEAD and POST", "text/plain")
        return method == "HEAD", await self.respond(peer, target, headers, network_id)

    @staticmethod
    def _whom(
        peer: str, headers: dict[str, str], network_id: str | None
    ) -> tuple[str, str, Answer | None]:
        """The guest's address and network a request came from, or the 400 to answer."""
        guest, network = peer, network_id or ""
        if ipaddress.ip_address(peer).is_loopback:
            # A forwarder on this host: it says whom and from where.
            guest = headers.get(FORWARDED_HEADER, "").split(",")[0].strip()
            network = headers.get(NETWORK_HEADER) or network_id or ""
        if not guest or not network:
            return guest, network, (400, b"cannot tell which instance asks", "text/plain")
        try:
            ipaddress.ip_address(guest)
        except ValueError:
            return guest, network, (400, b"bad X-Forwarded-For", "text/plain")
        return guest, network, None

    async def respond(
        self, peer: str, target: str, headers: dict[str, str], network_id: str | None
    ) -> Answer:
        """What a GET of ``target`` from ``peer`` gets, on a listener of ``network_id``."""
        guest, network, refused = self._whom(peer, headers, network_id)
        if refused is not None:
            return refused
        try:
            meta = await self._metadata(network, guest)
        except (exception.Forbidden, exception.NotFound):
            return 404, b"not found", "text/plain"
        except exception.TRANSIENT_ERRORS:
            return 503, b"the metadata service is unavailable", "text/plain"
        path = target.split("?", 1)[0]
        if content.is_password_path(path):
            return 200, meta.password.encode(), "text/plain"
        body = content.lookup(meta, path)
        if body is None:
            return 404, b"not found", "text/plain"
        ctype = "application/json" if path.endswith(".json") else "text/plain"
        return 200, body, ctype

    async def post(
        self,
        peer: str,
        target: str,
        headers: dict[str, str],
        network_id: str | None,
        body: bytes,
    ) -> Answer:
        """A guest's POST: only its password (once; 409 when it has one)."""
        if not content.is_password_path(target.split("?", 1)[0]):
            return 405, b"only the password may be posted", "text/plain"
        guest, network, refused = self._whom(peer, headers, network_id)
        if refused is not None:
            return refused
        try:
            password = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, b"the password must be UTF-8 text", "text/plain"
        if self._indirection is not None:
            use_indirection_api(self._indirection)
        try:
            stored = await self.store(get_admin_context(), network, guest, password)
        except (exception.Forbidden, exception.NotFound):
            return 404, b"not found", "text/plain"
        except exception.Invalid:
            return 400, b"Request is too large.", "text/plain"
        except exception.TRANSIENT_ERRORS:
            return 503, b"the metadata service is unavailable", "text/plain"
        # What this host cached for the guest no longer holds.
        self._cache.pop((network, guest), None)
        if not stored:
            return 409, b"Password already set", "text/plain"
        return 200, b"", "text/plain"

    async def _metadata(self, network_id: str, address: str) -> InstanceMetadata:
        key = (network_id, address)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            if self.present is None or await self.present(cached[1].uuid):
                return cached[1]
            del self._cache[key]
        if self._indirection is not None:
            use_indirection_api(self._indirection)
        meta = await self.fetch(get_admin_context(), network_id, address)
        if self.cache_expiration > 0:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self.cache_expiration, meta)
        return meta
