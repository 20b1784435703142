"""The RPC serializer for values that may hold versioned objects.

Outgoing, objects become envelopes through msgspec's ``enc_hook`` — at their
current version, or backported to the versions a capped peer runs. Incoming,
envelopes become objects again, every field validated. An object newer than
this process knows (a newer minor from an upgraded service) is not refused:
the process asks the conductor, through the installed indirection API, to
backport it to the versions this process runs (``object_backport_versions``)
and carries on with the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nubes import exception
from nubes.context import RequestContext
from nubes.objects import codec
from nubes.objects.base import current_indirection_api
from nubes.objects.registry import NAME_KEY, REGISTRY, ObjectRegistry
from nubes.rpc.serializer import Serializer


class ObjectSerializer(Serializer):
    def __init__(
        self,
        object_versions: Mapping[str, str] | None = None,
        registry: ObjectRegistry = REGISTRY,
    ) -> None:
        self.registry = registry
        self._hook = (
            codec.versioned_enc_hook(dict(object_versions)) if object_versions else codec.enc_hook
        )

    def enc_hook(self, value: Any) -> Any:
        return self._hook(value)

    async def deserialize(self, ctxt: RequestContext, value: Any) -> Any:
        try:
            return codec.decode_entity(value, self.registry)
        except exception.IncompatibleObjectVersion:
            if current_indirection_api() is None:
                raise
        return await self._backporting(ctxt, value, codec.MAX_NESTING)

    async def _backporting(self, ctxt: RequestContext, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is dict and NAME_KEY in value:
            try:
                return self.registry.obj_from_primitive(value)
            except exception.IncompatibleObjectVersion:
                api = current_indirection_api()
                if api is None:
                    raise
                older = await api.object_backport_versions(ctxt, value, self.registry.versions())
                return self.registry.obj_from_primitive(older)
        if depth <= 0 and kind in (dict, list):
            raise exception.MalformedMessage(reason="nested too deeply")
        if kind is dict:
            return {k: await self._backporting(ctxt, v, depth - 1) for k, v in value.items()}
        if kind is list:
            return [await self._backporting(ctxt, v, depth - 1) for v in value]
        return value
