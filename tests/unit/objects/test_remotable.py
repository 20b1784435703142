"""Remotable methods: run here, or through the indirection API and back."""

from __future__ import annotations

from typing import Any

import pytest

from nubes import exception
from nubes.context import RequestContext
from nubes.objects import base, indirection
from nubes.objects.registry import CHANGES_KEY
from tests.unit.objects.fakes import NEW, OLD, Gadget, OldGadget, OldPart, Part, gadget


@pytest.fixture
def context() -> RequestContext:
    return RequestContext(user_id="alice", project_id="p1")


@pytest.fixture
def loopback(monkeypatch: pytest.MonkeyPatch) -> indirection.LoopbackIndirectionAPI:
    api = indirection.LoopbackIndirectionAPI(NEW)
    monkeypatch.setattr(Gadget, "indirection_api", api)
    return api


async def test_without_an_indirection_api_methods_run_here(context: RequestContext) -> None:
    assert base.VersionedObject.indirection_api is None
    obj = gadget()
    assert await obj.relabel(context, "new") == "was seven"
    assert obj.label == "new"
    assert obj.obj_what_changed() == {"label"}
    built = await Gadget.build(context, 3)
    assert built.id == 3 and built.main.name == "wheel"


async def test_remote_changes_come_back_and_are_applied(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    obj = gadget()
    main = obj.main
    result = await obj.relabel(context, "new", loud=True)
    assert result == "was seven"
    assert obj.label == "NEW"
    assert loopback.calls == [("object_action", "Gadget", "relabel")]
    # The serving side left label changed (nothing saved it), so it still is.
    assert obj.obj_what_changed() == {"label"}
    assert obj.main is not main, "nested objects come back as the server left them"
    assert obj.main.obj_to_primitive() == main.obj_to_primitive()


async def test_a_remote_save_resets_local_changes(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    obj = gadget()
    obj.label = "edited"
    obj.settings["x"] = "y"
    obj.main.size = 30
    assert obj.obj_what_changed() == {"label", "settings", "main"}
    await obj.save(context)
    assert obj.obj_what_changed() == set()
    assert obj.label == "edited" and obj.settings == {"a": "1", "x": "y"}
    assert obj.main.size == 30 and obj.main.obj_what_changed() == set()


async def test_nested_changes_made_remotely_come_back(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    obj = gadget()
    await obj.grow_main(context)
    assert obj.main.size == 4
    assert obj.main.obj_what_changed() == {"size"}
    assert obj.obj_what_changed() == {"main"}


async def test_the_context_crosses_too(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    assert await gadget().whoami(context) == {
        "user": "alice",
        "request": context.request_id,
    }


async def test_class_methods_go_remote_with_the_caller_versions(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    built = await Gadget.build(context, 5)
    assert type(built) is Gadget and built.id == 5
    assert built.parts[0].colour == "blue"
    assert built.obj_what_changed() == set()
    assert loopback.calls == [("object_class_action_versions", "Gadget", "build")]


async def test_an_older_caller_talks_to_a_newer_conductor(
    context: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = indirection.LoopbackIndirectionAPI(registry=OLD, serving_registry=NEW)
    monkeypatch.setattr(OldGadget, "indirection_api", api)

    async def build(cls: type[OldGadget], context: RequestContext, id: int) -> Any:
        raise AssertionError("runs on the conductor")

    async def relabel(self: OldGadget, context: RequestContext, label: str) -> Any:
        raise AssertionError("runs on the conductor")

    monkeypatch.setattr(OldGadget, "build", base.remotable_classmethod(build), raising=False)
    monkeypatch.setattr(OldGadget, "relabel", base.remotable(relabel), raising=False)

    old = await OldGadget.build(context, 6)  # type: ignore[attr-defined]
    assert type(old) is OldGadget and old.id == 6 and old.main.name == "wheel"
    # The conductor reads 1.0, runs 1.2 code, and answers in 1.0: the label
    # it set is a field the caller does not have, so it is dropped.
    old.main.size = 8
    result = await old.relabel(context, "x")  # type: ignore[attr-defined]
    assert result == "was None"
    assert type(old.main) is OldPart and old.main.size == 8
    assert old.obj_what_changed() == {"main"}


async def test_object_backport_versions(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    primitive = await loopback.object_backport_versions(
        context, gadget().obj_to_primitive(), {"Gadget": "1.0", "Part": "1.0"}
    )
    assert type(OLD.obj_from_primitive(primitive)) is OldGadget


async def test_only_remotable_methods_are_served(context: RequestContext) -> None:
    for method in ("not_remote", "obj_reset_changes", "__init__", "build", "nothing"):
        with pytest.raises(exception.ObjectActionError, match=r"not a remotable instance"):
            await indirection.serve_object_action(context, gadget(), method, [], {})
    with pytest.raises(exception.ObjectActionError, match=r"not a remotable class"):
        await indirection.serve_object_class_action(context, "Gadget", "save", [], {}, NEW)
    with pytest.raises(exception.UnknownObject):
        await indirection.serve_object_class_action(context, "Gear", "build", [], {}, NEW)


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        ([], {}, "missing a required argument"),
        (["a", "b"], {}, "too many positional"),
        (["a"], {"volume": 11}, "unexpected keyword"),
        ("a", {}, "args must be a list"),
        (["a"], {1: True}, "keyword names must be strings"),
    ],
)
async def test_arguments_that_do_not_fit_are_refused_before_running(
    context: RequestContext, args: Any, kwargs: Any, text: str
) -> None:
    obj = gadget()
    with pytest.raises(exception.InvalidArguments, match=text):
        await indirection.serve_object_action(context, obj, "relabel", args, kwargs)
    assert obj.label == "seven"


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("relabel", ("a",), {}),
        ("relabel", (), {"label": "a", "loud": True}),
        ("relabel", ("a",), {"loud": False}),
        ("relabel", (), {}),
        ("relabel", ("a", "b"), {}),
        ("relabel", ("a",), {"label": "b"}),
        ("relabel", ("a",), {"volume": 11}),
        ("relabel", ("a", True), {}),  # loud is keyword-only
        ("build", (3,), {}),
        ("build", (3, False), {}),
        ("build", (), {"with_part": False}),
        ("whoami", (), {}),
        ("whoami", (1,), {}),
    ],
)
def test_bind_remotable_answers_as_signature_bind(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The fast binding and inspect's agree on every call: the arguments, or
    the TypeError and its message."""
    signature = base.remotable_signature(Gadget, method)
    assert signature is not None
    try:
        expected = dict(list(signature.bind(None, None, *args, **kwargs).arguments.items())[2:])
    except TypeError as bad:
        with pytest.raises(TypeError, match=str(bad)):
            base.bind_remotable(Gadget, method, args, kwargs)
        return
    assert base.bind_remotable(Gadget, method, args, kwargs) == expected


def test_bind_remotable_refuses_a_method_that_is_not_remotable() -> None:
    with pytest.raises(TypeError, match="not remotable"):
        base.bind_remotable(Gadget, "obj_clone", (), {})


async def test_run_locally_bypasses_the_indirection_api(
    context: RequestContext, loopback: indirection.LoopbackIndirectionAPI
) -> None:
    with base.run_locally():
        await gadget().relabel(context, "here")
    assert loopback.calls == []


def test_updates_from_the_wire_are_validated() -> None:
    obj = gadget()
    with pytest.raises(exception.ObjectFieldError):
        obj._obj_apply_updates({"id": "not a number"})
    with pytest.raises(exception.UnknownObjectField):
        obj._obj_apply_updates({"wheels": 4})
    with pytest.raises(exception.UnknownObjectField):
        obj._obj_apply_updates({CHANGES_KEY: ["wheels"]})
    with pytest.raises(exception.MalformedObject):
        obj._obj_apply_updates([])
    with pytest.raises(exception.MalformedObject):
        obj._obj_apply_updates({CHANGES_KEY: "id"})


def test_remotable_needs_a_coroutine_function() -> None:
    def plain(self: Any, context: RequestContext) -> None:
        pass

    with pytest.raises(TypeError, match=r"async def"):
        base.remotable(plain)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"async def"):
        base.remotable_classmethod(plain)  # type: ignore[arg-type]


def test_remotable_methods_are_listed() -> None:
    found = base.remotable_methods(Gadget)
    assert {name: kind for name, (kind, _) in found.items()} == {
        "relabel": "instance",
        "save": "instance",
        "grow_main": "instance",
        "whoami": "instance",
        "build": "class",
    }
    assert base.remotable_methods(Part) == {}
