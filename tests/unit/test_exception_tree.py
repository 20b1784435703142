"""The error tree drawn in nubes/exception.py's docstring is the one the code has.

Every error class is drawn, and each under its real base class, so the
drawing a reader trusts cannot drift from the classes.
"""

from __future__ import annotations

import inspect
import re

from nubes import exception

_NAME = re.compile(r"\b([A-Z][A-Za-z]+)\b")


def _classes() -> dict[str, type[exception.NubesError]]:
    return {
        name: cls
        for name, cls in vars(exception).items()
        if inspect.isclass(cls)
        and issubclass(cls, exception.NubesError)
        and cls.__module__ == exception.__name__
    }


def _drawn() -> list[tuple[str, str]]:
    """(class, the class it is drawn under) for every class in the drawing."""
    classes = _classes()
    doc = exception.__doc__ or ""
    start = doc.index("NubesError (")
    base = start - (doc.rindex("\n", 0, start) + 1)  # the drawing's indentation
    lines = doc[start:].splitlines()
    parents: dict[int, str] = {0: "NubesError"}  # depth -> class drawn there last
    found: list[tuple[str, str]] = []
    under = "NubesError"
    for line in lines[1:]:
        if not line.strip() or ("──" not in line and "│" not in line):
            break
        marker = re.search(r"[├└]── ", line)
        if marker:
            depth = (marker.start() - base) // 4 + 1
            text = line[marker.end() :]
        else:
            text = line.replace("│", " ").strip()
        # Names before the description (two spaces) are the classes drawn on the line.
        head = re.split(r"\s{2,}", text.strip(), maxsplit=1)[0]
        names = [n for n in _NAME.findall(head) if n in classes]
        if not marker:  # a continuation: more classes beside the line above's
            found += [(n, under) for n in names]
            continue
        under = parents[depth - 1]
        if names and head.split()[0].rstrip(",") == names[0]:
            found += [(n, under) for n in names]
            parents[depth] = names[0]
        else:
            parents[depth] = under  # a heading: what follows is under its parent
    return found


def test_every_error_class_is_drawn_under_its_base() -> None:
    classes = _classes()
    drawn = _drawn()
    assert {name for name, _ in drawn} | {"NubesError"} == set(classes), (
        "drawn but missing, or defined but not drawn"
    )
    wrong = [(n, p) for n, p in drawn if not issubclass(classes[n], classes[p])]
    assert not wrong, f"drawn under a class they do not derive from: {wrong}"
