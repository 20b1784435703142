"""No private name crosses a module boundary (docs/architecture.md, "Layers").

A leading underscore says "only this module relies on it"; a second module
that imports it (``from nubes.x import _helper``) or reaches it through the
module (``x._helper``) turns an internal detail into an interface nobody
reviews as one. A private *module* (``nubes.db.api._common``) may be used by
its own package only. The walk reads the source, so it needs no import of
the code under test and takes well under a second.
"""

from __future__ import annotations

import ast
import pathlib

import nubes

ROOT = pathlib.Path(nubes.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_module_outside(target: str, importer: str) -> bool:
    """``target`` has a private part whose package ``importer`` is not in."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            package = ".".join(parts[:i])
            return not (importer == package or importer.startswith(package + "."))
    return False


def _is_nubes_module(name: str) -> bool:
    return (ROOT.parent / pathlib.Path(*name.split("."))).with_suffix(".py").exists() or (
        ROOT.parent / pathlib.Path(*name.split(".")) / "__init__.py"
    ).exists()


def violations(path: pathlib.Path, here: str | None = None) -> list[str]:
    """Every crossing of a private name in one source file (of module ``here``)."""
    here = here or _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    modules: dict[str, str] = {}  # local name -> nubes module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nubes."):
                    if _private_module_outside(alias.name, here):
                        found.append(f"{path}:{node.lineno}: import {alias.name}")
                    if alias.asname:
                        modules[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not (node.module == "nubes" or node.module.startswith("nubes.")):
                continue
            if _private_module_outside(node.module, here):
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_nubes_module(full):
                    if _private_module_outside(full, here):
                        found.append(
                            f"{path}:{node.lineno}: from {node.module} import {alias.name}"
                        )
                    modules[alias.asname or alias.name] = full
                elif _private(alias.name) and node.module != here:
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and _private(node.attr)
            and modules[node.value.id] != here
        ):
            found.append(f"{path}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
    return found


def test_the_walk_catches_each_kind_of_crossing(tmp_path: pathlib.Path) -> None:
    # The walk itself, on a file read as if it were nubes.api.probe: each kind is caught,
    # and public names, private names of its own module and modules are not.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from nubes.api.servers import _helper\n"
        "from nubes.db.api._common import Row\n"
        "from nubes.api import servers\n"
        "servers._password\n"
        "from nubes.db.api import tasks\n"
        "tasks.create\n"
        "from nubes.api.probe import _mine\n"
    )
    found = violations(probe, "nubes.api.probe")
    assert [f.split(": ", 1)[1] for f in found] == [
        "from nubes.api.servers import _helper",
        "from nubes.db.api._common import ...",
        "nubes.api.servers._password",
    ]


def test_no_private_name_is_imported_across_modules() -> None:
    found = [v for path in sorted(ROOT.rglob("*.py")) for v in violations(path)]
    assert not found, "private names used outside their module:\n" + "\n".join(found)
