"""The versioned RPC server.

A server listens on ``topic`` (shared with other servers of the topic),
``topic.server`` and the topic's fanout, and dispatches each message to an
endpoint method. Whatever arrives, the server keeps serving: an undecodable
body, an unknown method, a version it does not implement, bad arguments or a
sender whose identity does not match what it claims all get a typed error
back (for calls) or one log line (for casts), and never reach the method.

The caller's identity is the one the transport verified; the request context
the method receives carries it as ``context.caller``.

A cast whose method fails for a transient reason (the database or the bus is
away: :data:`nubes.exception.TRANSIENT_ERRORS`) is not done, so it is not
acknowledged: the server runs the method again after a backoff
(:data:`CAST_RETRY_MIN` doubling up to :data:`CAST_RETRY_MAX`) until it
succeeds or fails for good, holding the message meanwhile. A server stopped
in between gives it back to the bus (the transports requeue a message whose
handler did not finish), so another server handles it. Methods that may be
cast must therefore be idempotent; a call's caller gets the error instead
and decides itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nubes import access, exception, metrics
from nubes.context import RequestContext, current_request_id
from nubes.rpc import dispatcher, message
from nubes.rpc.serializer import Serializer
from nubes.rpc.transport import (
    DEFAULT_MAX_CONCURRENCY,
    IncomingMessage,
    Listener,
    Transport,
    check_size,
)

LOG = logging.getLogger(__name__)


class BaseAPI:
    """Methods every server answers, whatever its service: liveness and identity."""

    RPC_API_VERSION = "1.0"
    RPC_NAMESPACE = dispatcher.BASE_NAMESPACE

    def __init__(self, server: RPCServer) -> None:
        self._server = server

    async def ping(self, context: RequestContext, arg: Any = None) -> Any:
        return arg

    async def whoami(self, context: RequestContext) -> dict[str, Any]:
        """The caller's identity as this server sees it, and the server's own."""
        return {
            "caller": context.caller,
            "server": self._server.server,
            "topic": self._server.topic,
            "identity": self._server.transport.identity,
        }


#: Seconds before a cast that failed for a transient reason is run again
#: (doubling each time up to CAST_RETRY_MAX): an outage is not spun on.
CAST_RETRY_MIN = 0.5
CAST_RETRY_MAX = 10.0
#: Seconds between two "Refused" log lines about the same caller.
REFUSAL_LOG_INTERVAL = 10.0
#: Callers whose refusals are counted at once; the oldest is forgotten first.
_MAX_TRACKED_CALLERS = 4096
#: How much of a method name (the caller's choice) a log line quotes.
_MAX_LOGGED_NAME = 80


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_LOGGED_NAME else text[: _MAX_LOGGED_NAME - 3] + "..."


class RefusalLog:
    """Rate limit for the log of refused messages: per caller at most one
    line every ``interval`` seconds, the next one saying how many it left out."""

    def __init__(
        self,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        # caller -> (when its last line was written, refusals not logged since)
        self._callers: OrderedDict[str | None, tuple[float, int]] = OrderedDict()

    def admit(self, caller: str | None) -> int | None:
        """None if this refusal is not to be logged; otherwise how many were not."""
        now = self._clock()
        last = self._callers.get(caller)
        if last is not None and now - last[0] < self.interval:
            self._callers[caller] = (last[0], last[1] + 1)
            return None
        self._callers[caller] = (now, 0)
        self._callers.move_to_end(caller)
        if len(self._callers) > _MAX_TRACKED_CALLERS:
            self._callers.popitem(last=False)
        return last[1] if last is not None else 0


class RPCServer:
    def __init__(
        self,
        transport: Transport,
        topic: str,
        server: str,
        endpoints: list[object],
        *,
        serializer: Serializer | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rules: access.MethodRules | None = None,
        cast_retry_min: float | None = None,
        cast_retry_max: float | None = None,
    ) -> None:
        self.transport = transport
        #: The service's deny-by-default table of who may call what
        #: (nubes/access.py); None only for transport-level tests.
        self.rules = rules
        self.topic = topic
        self.server = server
        self.serializer = serializer or Serializer()
        self._dispatcher = dispatcher.Dispatcher([*endpoints, BaseAPI(self)], topic)
        self._max_concurrency = max_concurrency
        self._listener: Listener | None = None
        self._refusals = RefusalLog()
        #: Backoff between two runs of a cast that failed for a transient reason.
        self.cast_retry_min = CAST_RETRY_MIN if cast_retry_min is None else cast_retry_min
        self.cast_retry_max = CAST_RETRY_MAX if cast_retry_max is None else cast_retry_max

    async def start(self) -> None:
        if self._listener is None:
            self._listener = await self.transport.listen(
                self.topic, self.server, self._on_message, max_concurrency=self._max_concurrency
            )

    async def stop(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.stop()

    async def _on_message(self, msg: IncomingMessage) -> None:
        # Metrics name only a method the dispatcher found: a caller's made-up
        # name must not become a label value.
        found: list[str] = []
        outcome = metrics.REFUSED
        start = time.perf_counter()
        metrics.rpc_in_flight.add(self.topic, 1)
        try:
            outcome = await self._handle(msg, found)
        finally:
            metrics.rpc_in_flight.add(self.topic, -1)
            metrics.rpc_server_seconds.labels(
                self.topic,
                found[0] if found else "?",
                "call" if msg.expects_reply else "cast",
                outcome,
            ).observe(time.perf_counter() - start)

    async def _handle(self, msg: IncomingMessage, found: list[str]) -> str:
        """Serve one message; what became of it (a ``metrics`` outcome)."""
        method = "?"
        expected: tuple[type[BaseException], ...] = ()
        delay = self.cast_retry_min
        while True:
            try:
                check_size(msg.body, "the request")
                req = message.decode_request(msg.body)
                method = req.m
                ctxt, m = self._resolve(msg, req)
                found[:] = [m.name]
                # Log lines of the handler carry the request id of the API request.
                token = current_request_id.set(ctxt.request_id)
                try:
                    expected = m.expected
                    args = await self.serializer.deserialize(ctxt, req.a) if req.a else {}
                    dispatcher.check_arguments(m, args)
                    result = await m.func(ctxt, **args)
                finally:
                    current_request_id.reset(token)
            except exception.TRANSIENT_ERRORS as exc:
                if msg.expects_reply:
                    self._log_failure(msg, method, exc, expected)
                    await msg.reply(message.encode_error(exc))
                    return metrics.ERROR
                # Not done, so not acknowledged: held and run again (see the
                # module's docstring), never dropped.
                LOG.warning(
                    "cast %s.%s from %s not handled now (%s); tried again in %.1f s",
                    self.topic,
                    _bounded(method),
                    msg.caller,
                    exc,
                    delay,
                )
                # Counted (no duration): the run that ends it is observed too.
                metrics.rpc_server_seconds.labels(
                    self.topic, found[0] if found else "?", "cast", metrics.RETRIED
                ).observe(0)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cast_retry_max)
                continue
            except Exception as exc:
                self._log_failure(msg, method, exc, expected)
                if msg.expects_reply:
                    await msg.reply(message.encode_error(exc))
                return metrics.ERROR if found else metrics.REFUSED
            break
        if msg.expects_reply:
            try:
                body = message.encode_result(result, self.serializer.enc_hook)
            except (TypeError, ValueError) as exc:
                LOG.exception("Cannot encode the result of %s.%s", self.topic, method)
                body = message.encode_error(exc)
            await msg.reply(body)
        return metrics.OK

    def _resolve(
        self, msg: IncomingMessage, req: message.Request
    ) -> tuple[RequestContext, dispatcher.Method]:
        if msg.caller is None:
            raise exception.Forbidden(reason="the sender's identity could not be verified")
        try:
            ctxt = RequestContext.from_dict(req.c)
        except (TypeError, ValueError) as exc:
            raise exception.MalformedMessage(reason=f"context: {exc}") from None
        if ctxt.caller is not None and ctxt.caller != msg.caller:
            raise exception.IdentityMismatch(claimed=ctxt.caller, actual=msg.caller)
        ctxt.caller = msg.caller
        found = self._dispatcher.find(req.ns, req.v, req.m)
        if self.rules is not None:
            self.rules.check(msg.caller, req.ns, found.name)
        return ctxt, found

    def _log_failure(
        self,
        msg: IncomingMessage,
        method: str,
        exc: Exception,
        expected: tuple[type[BaseException], ...],
    ) -> None:
        kind = "call" if msg.expects_reply else "cast"
        if isinstance(exc, message.FRAMEWORK_ERRORS):
            # The caller sent something we refuse; it gets told (calls) and we
            # keep a line for the operator, never a traceback. A peer that
            # keeps sending junk gets one line per window, not a log flood.
            suppressed = self._refusals.admit(msg.caller)
            if suppressed is not None:
                LOG.warning(
                    "Refused %s %s.%s from %s: %s%s",
                    kind,
                    self.topic,
                    _bounded(method),
                    msg.caller,
                    exc,
                    f" ({suppressed} more refused since the last line)" if suppressed else "",
                )
        elif isinstance(exc, expected):
            LOG.debug("%s %s.%s raised %s", kind, self.topic, method, exc)
        else:
            LOG.error(
                "Unexpected error in %s %s.%s from %s",
                kind,
                self.topic,
                method,
                msg.caller,
                exc_info=exc,
            )
