"""The versioned RPC client.

Each service's ``rpcapi.py`` wraps one :class:`RPCClient`: it names the
version a method needs when it sends it, and a ``version_cap`` (from
``[upgrade_levels]`` or the oldest service running) keeps it from sending
anything an older receiver could not handle — the rpcapi checks
:meth:`RPCClient.can_send_version` and falls back to an older form of the
message. Sending a version above the cap is refused locally, before anything
leaves the process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from nubes import exception, metrics
from nubes.context import RequestContext
from nubes.rpc import message
from nubes.rpc.serializer import Serializer
from nubes.rpc.transport import DEFAULT_CALL_TIMEOUT, Target, Transport, check_size

_DEFAULT_SERIALIZER = Serializer()


@dataclass(frozen=True, slots=True)
class _CallOptions:
    target: Target
    version: str
    namespace: str | None
    timeout: float


class RPCClient:
    def __init__(
        self,
        transport: Transport,
        target: Target,
        *,
        version: str = "1.0",
        version_cap: str | None = None,
        namespace: str | None = None,
        serializer: Serializer | None = None,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        expected_errors: Iterable[type[exception.NubesError]] = (),
    ) -> None:
        self.transport = transport
        self.version_cap = version_cap
        self.serializer = serializer or _DEFAULT_SERIALIZER
        self._cap = message.parse_version(version_cap) if version_cap else None
        self._opts = _CallOptions(target, version, namespace, timeout)
        self._errors = message.error_table(expected_errors)
        message.parse_version(version)

    @property
    def target(self) -> Target:
        return self._opts.target

    @property
    def version(self) -> str:
        """The API version this client's messages say they need."""
        return self._opts.version

    def prepare(
        self,
        *,
        server: str | None = None,
        fanout: bool | None = None,
        version: str | None = None,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> RPCClient:
        """A copy of this client aimed differently; cheap, shares the transport."""
        target = self._opts.target
        if server is not None or fanout is not None:
            target = Target(
                target.topic,
                server=server if server is not None else target.server,
                fanout=bool(fanout) if fanout is not None else target.fanout,
            )
        if version is not None:
            message.parse_version(version)
        clone = object.__new__(RPCClient)
        clone.transport = self.transport
        clone.version_cap = self.version_cap
        clone.serializer = self.serializer
        clone._cap = self._cap
        clone._errors = self._errors
        clone._opts = replace(
            self._opts,
            target=target,
            version=version or self._opts.version,
            namespace=namespace if namespace is not None else self._opts.namespace,
            timeout=timeout if timeout is not None else self._opts.timeout,
        )
        return clone

    def set_version_cap(self, version_cap: str | None) -> None:
        """Change the cap (``[upgrade_levels] auto`` follows the services running).

        Clients already made with :meth:`prepare` keep the cap they had.
        """
        self._cap = message.parse_version(version_cap) if version_cap else None
        self.version_cap = version_cap

    def can_send_version(self, version: str) -> bool:
        if self._cap is None:
            return True
        major, minor = message.parse_version(version)
        return major == self._cap[0] and minor <= self._cap[1]

    def _encode(self, ctxt: RequestContext, method: str, kwargs: dict[str, Any]) -> bytes:
        opts = self._opts
        if not self.can_send_version(opts.version):
            raise exception.UnsupportedVersion(
                topic=str(opts.target), version=opts.version, implemented=f"cap {self.version_cap}"
            )
        req = message.Request(
            m=method, v=opts.version, ns=opts.namespace, a=kwargs, c=ctxt.to_dict()
        )
        body = message.encode_request(req, self.serializer.enc_hook)
        check_size(body, f"{opts.target}.{method}")
        return body

    async def call(self, ctxt: RequestContext, method: str, **kwargs: Any) -> Any:
        """Run ``method`` on one server of the target and return its result."""
        body = self._encode(ctxt, method, kwargs)
        label = f"{self._opts.target}.{method}"
        start = time.perf_counter()
        outcome = metrics.ERROR
        try:
            reply = await self.transport.call(
                self._opts.target, body, self._opts.timeout, label=label
            )
            outcome = metrics.OK
        except exception.MessagingTimeout:
            outcome = metrics.TIMEOUT
            raise
        finally:
            metrics.rpc_client_seconds.labels(
                self._opts.target.topic, method, "call", outcome
            ).observe(time.perf_counter() - start)
        check_size(reply, f"the reply to {label}")
        result = message.decode_reply(reply, self._errors, label)
        if result is None:
            return None
        return await self.serializer.deserialize(ctxt, result)

    async def cast(self, ctxt: RequestContext, method: str, **kwargs: Any) -> None:
        """Send ``method`` without waiting for it to run; returns once the bus holds it."""
        body = self._encode(ctxt, method, kwargs)
        start = time.perf_counter()
        outcome = metrics.ERROR
        try:
            await self.transport.cast(
                self._opts.target, body, label=f"{self._opts.target}.{method}"
            )
            outcome = metrics.OK
        finally:
            metrics.rpc_client_seconds.labels(
                self._opts.target.topic, method, "cast", outcome
            ).observe(time.perf_counter() - start)
