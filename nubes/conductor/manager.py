"""The conductor's RPC endpoint: the object proxy for hosts without a database.

Every call is authorised for the calling host first (:mod:`.authz`), then the
remotable method runs here against the database, and what goes back is
encoded at the object versions the caller runs, so an older compute host is
never sent a field it does not know.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import msgspec

from nubes import exception
from nubes.conductor import rpcapi
from nubes.conductor.authz import Authorizer
from nubes.context import RequestContext
from nubes.db.engine import Database
from nubes.objects import backend, codec, indirection
from nubes.objects.base import VersionedObject
from nubes.objects.registry import REGISTRY


def _at_versions(value: Any, object_versions: dict[str, str]) -> Any:
    """``value`` with every object in it backported to ``object_versions``."""
    ours = REGISTRY.versions()
    if all(ours.get(name) == version for name, version in object_versions.items()):
        return value  # the common case: the caller runs what we run
    return msgspec.to_builtins(
        value,
        builtin_types=(datetime.datetime,),
        enc_hook=codec.versioned_enc_hook(object_versions),
    )


def _versions(object_versions: Any) -> dict[str, str]:
    if type(object_versions) is not dict or not all(
        type(k) is str and type(v) is str for k, v in object_versions.items()
    ):
        raise exception.InvalidArguments(
            method="object_versions", reason="must map object names to versions"
        )
    return object_versions


class ConductorManager:
    RPC_API_VERSION = rpcapi.VERSION
    RPC_EXPECTED_ERRORS = rpcapi.EXPECTED_ERRORS

    def __init__(self, db: Database, controller_identities: Iterable[str] = ()) -> None:
        self.db = db
        self.authz = Authorizer(db, controller_identities)

    async def object_action(
        self,
        context: RequestContext,
        objinst: VersionedObject,
        objmethod: str,
        args: list[Any],
        kwargs: dict[str, Any],
        object_versions: dict[str, str],
    ) -> Any:
        caller = self.authz.identify(context.caller)
        versions = _versions(object_versions)
        objname = objinst.obj_name()
        scope = await self.authz.authorize(caller, objname, objmethod, objinst, args, kwargs)
        token = backend.placement_scope.set(scope)
        try:
            updates, result = await indirection.serve_object_action(
                context, objinst, objmethod, args, kwargs, versions.get(objname)
            )
        except (exception.InstanceNotOnHost, exception.InstanceNotFound):
            if scope is None:
                raise
            # One answer for both, as for reads: a host cannot probe uuids.
            self.authz.refuse(caller, objname, objmethod, objinst, "instance is not on this host")
        finally:
            backend.placement_scope.reset(token)
        return _at_versions([updates, result], versions)

    async def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> Any:
        caller = self.authz.identify(context.caller)
        versions = _versions(object_versions)
        await self.authz.authorize(caller, objname, objmethod, None, args, kwargs)
        result = await indirection.serve_object_class_action(
            context, objname, objmethod, args, kwargs
        )
        return _at_versions(result, versions)

    async def object_backport_versions(
        self, context: RequestContext, primitive: bytes, object_versions: dict[str, str]
    ) -> bytes:
        # Any known service may ask: it only gets back, older, what it sent.
        self.authz.identify(context.caller)
        older = indirection.backport_primitive(
            codec.decode_builtins(primitive), _versions(object_versions)
        )
        return codec.encode(older)
