"""The serving side of remotable methods, and an in-process double of it.

The conductor runs :func:`serve_object_action`, :func:`serve_object_class_action`
and :func:`backport_primitive` for the hosts that call it; they run only
methods marked remotable, refuse arguments that do not fit the method before
it starts, and run the body here even if this process has an indirection API
installed itself (an all-in-one process has).

:class:`LoopbackIndirectionAPI` is the test double hosts can install instead
of a conductor client: every call really crosses msgpack both ways, and the
method runs on the copy that came out of the bytes, so a test sees exactly
the field changes a real round trip would bring back.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nubes import exception
from nubes.context import RequestContext
from nubes.objects import codec
from nubes.objects.base import (
    VersionedObject,
    bind_remotable,
    remotable_methods,
    run_locally,
)
from nubes.objects.fields import UNSET
from nubes.objects.registry import CHANGES_KEY, DATA_KEY, NAME_KEY, REGISTRY, ObjectRegistry


def _bound_remotable(target: Any, objname: str, method: str, kind: str) -> Any:
    found = remotable_methods(target if isinstance(target, type) else type(target)).get(method)
    if found is None or found[0] != kind:
        raise exception.ObjectActionError(
            action=f"{objname}.{method}", reason=f"not a remotable {kind} method"
        )
    return getattr(target, method)


def _check_arguments(
    cls: type[VersionedObject], method: str, action: str, args: Any, kwargs: Any
) -> tuple[Any, ...]:
    if type(args) not in (list, tuple) or type(kwargs) is not dict:
        raise exception.InvalidArguments(method=action, reason="args must be a list, kwargs a dict")
    if not all(type(key) is str for key in kwargs):
        raise exception.InvalidArguments(method=action, reason="keyword names must be strings")
    args = tuple(args)
    try:
        bind_remotable(cls, method, args, kwargs)
    except TypeError as bad:
        raise exception.InvalidArguments(method=action, reason=str(bad)) from None
    return args


async def serve_object_action(
    context: RequestContext,
    objinst: VersionedObject,
    objmethod: str,
    args: Any,
    kwargs: Any,
    target_version: str | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run a remotable instance method for a caller; returns ``(updates, result)``
    as :meth:`IndirectionAPI.object_action` describes.

    ``target_version`` is the version of the object the caller sent, when
    older than ours: updates then leave out fields it does not have and carry
    the others as that version holds them (see ``obj_make_compatible``).
    Nested objects in the updates stay objects; encode the reply at the
    caller's versions (:func:`~nubes.objects.codec.encode` with
    ``object_versions``) to backport them.
    """
    action = f"{objinst.obj_name()}.{objmethod}"
    bound = _bound_remotable(objinst, objinst.obj_name(), objmethod, "instance")
    args = _check_arguments(type(objinst), objmethod, action, args, kwargs)
    before = objinst.obj_clone()
    with run_locally():
        result = await bound(context, *args, **kwargs)
    updates: dict[str, Any] = {}
    children = set(objinst._obj_children)
    # The storage structs hold the fields in obj_fields' order: one C-level
    # unpacking of each instead of two attribute reads per field per call.
    for name, value, was in zip(
        objinst.obj_fields,
        msgspec.structs.astuple(objinst._data),
        msgspec.structs.astuple(before._data),
        strict=True,
    ):
        # Nested objects always go back: the caller's copies cannot be
        # compared with ours, and their own changes travel with them.
        if value is not UNSET and (name in children or was != value):
            updates[name] = value
    changes = sorted(objinst.obj_what_changed())
    if target_version is not None and target_version != objinst.VERSION:
        older = objinst.obj_to_primitive(target_version)[DATA_KEY]
        updates = {
            name: value if name in children else older[name]
            for name, value in updates.items()
            if name in older
        }
        changes = [name for name in changes if name in older]
    updates[CHANGES_KEY] = changes
    return updates, result


async def serve_object_class_action(
    context: RequestContext,
    objname: str,
    objmethod: str,
    args: Any,
    kwargs: Any,
    registry: ObjectRegistry = REGISTRY,
) -> Any:
    """Run a remotable class method for a caller. Encode objects in the
    result with :func:`~nubes.objects.codec.versioned_enc_hook` and the
    caller's ``object_versions``."""
    cls = registry.get(objname)
    action = f"{objname}.{objmethod}"
    bound = _bound_remotable(cls, objname, objmethod, "class")
    args = _check_arguments(cls, objmethod, action, args, kwargs)
    with run_locally():
        return await bound(context, *args, **kwargs)


def backport_primitive(
    primitive: Any, object_versions: Any, registry: ObjectRegistry = REGISTRY
) -> dict[str, Any]:
    """Decode a primitive and encode it again at the version ``object_versions``
    names for it; nested objects follow their parent's version."""
    if type(object_versions) is not dict:
        raise exception.MalformedObject(reason="object_versions must be a dict")
    obj = registry.obj_from_primitive(primitive)
    target = object_versions.get(obj.obj_name())
    if type(target) is not str:
        raise exception.MalformedObject(
            reason=f"object_versions names no version for {obj.obj_name()}"
        )
    return obj.obj_to_primitive(target_version=target)


class LoopbackIndirectionAPI:
    """An :class:`~nubes.objects.base.IndirectionAPI` serving in this process.

    Install it with ``VersionedObject.indirection_api = LoopbackIndirectionAPI()``.
    Requests are encoded as the caller runs its objects and decoded with
    ``serving_registry`` (the caller's ``registry`` by default); replies go
    back at the caller's object versions. So a test can put an older caller
    in front of a newer conductor by giving two registries. ``calls``
    records ``(operation, object name, method)`` for each call.
    """

    def __init__(
        self, registry: ObjectRegistry = REGISTRY, serving_registry: ObjectRegistry | None = None
    ) -> None:
        self.registry = registry
        self.serving_registry = registry if serving_registry is None else serving_registry
        self.calls: list[tuple[str, str, str]] = []

    def _request(self, value: Any) -> Any:
        return codec.decode(codec.encode(value), self.serving_registry)

    def _reply(self, value: Any, object_versions: dict[str, str]) -> Any:
        return codec.decode(codec.encode(value, object_versions), self.registry)

    async def object_action(
        self,
        context: RequestContext,
        objinst: VersionedObject,
        objmethod: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        self.calls.append(("object_action", objinst.obj_name(), objmethod))
        versions = objinst.obj_tree_versions()
        ctx, obj, method, args, kwargs = self._request(
            [context.to_dict(), objinst, objmethod, list(args), kwargs]
        )
        updates, result = await serve_object_action(
            RequestContext.from_dict(ctx), obj, method, args, kwargs, versions[obj.obj_name()]
        )
        updates, result = self._reply([updates, result], versions)
        return updates, result

    async def object_class_action_versions(
        self,
        context: RequestContext,
        objname: str,
        objmethod: str,
        object_versions: dict[str, str],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        self.calls.append(("object_class_action_versions", objname, objmethod))
        ctx, objname, method, versions, args, kwargs = self._request(
            [context.to_dict(), objname, objmethod, object_versions, list(args), kwargs]
        )
        result = await serve_object_class_action(
            RequestContext.from_dict(ctx), objname, method, args, kwargs, self.serving_registry
        )
        return self._reply(result, versions)

    async def object_backport_versions(
        self,
        context: RequestContext,
        primitive: dict[str, Any],
        object_versions: dict[str, str],
    ) -> dict[str, Any]:
        name = primitive.get(NAME_KEY) if type(primitive) is dict else None
        self.calls.append(("object_backport_versions", str(name), ""))
        # The caller cannot decode the primitive, so it travels as builtins.
        _, primitive, versions = codec.decode_builtins(
            codec.encode([context.to_dict(), primitive, object_versions])
        )
        backported = backport_primitive(primitive, versions, self.serving_registry)
        return codec.decode_builtins(codec.encode(backported))
