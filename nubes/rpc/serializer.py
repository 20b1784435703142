"""How call arguments and results become msgpack values and back.

The RPC client encodes with the serializer's ``enc_hook`` (msgspec calls it
for any value it cannot encode itself, such as a versioned object) and the
receiving side hands the decoded builtins to :meth:`Serializer.deserialize`,
which may need the network (asking the conductor to backport an object this
process cannot read), hence ``async``.
"""

from __future__ import annotations

from typing import Any

from nubes.context import RequestContext


class Serializer:
    """Passes msgpack-native values through; refuses anything else."""

    def enc_hook(self, value: Any) -> Any:
        raise TypeError(f"cannot send a {type(value).__name__} over RPC")

    async def deserialize(self, ctxt: RequestContext, value: Any) -> Any:
        return value


NoOpSerializer = Serializer
