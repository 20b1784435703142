"""Request validation: JSON bodies against per-microversion schemas, query parameters.

A body that does not fit its schema is refused with 400 and Nova's message,
which names the field: ``Invalid input for field/attribute flavor/ram.
Value: abc. 'abc' is not of type 'integer'``. Nothing reaches the DB layer
unvalidated, so bad input can never become a 500.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from starlette.requests import Request

from nubes import exception
from nubes.api.microversion import APIVersion

#: Largest value an integer column takes everywhere (Nova's db.MAX_INT).
MAX_INT = 2**31 - 1

#: A schema per version range: ((min, max or None), schema), first match wins.
Versioned = Sequence[tuple[tuple[str, str | None], Mapping[str, Any]]]

_FORMAT_CHECKER = jsonschema.FormatChecker()


def _check(instance: Any, schema: Mapping[str, Any]) -> None:
    validator = jsonschema.Draft4Validator(schema, format_checker=_FORMAT_CHECKER)
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return
    path = "/".join(str(p) for p in error.absolute_path)
    if error.validator == "required" or error.validator == "additionalProperties":
        # The message names the field; the path is its parent.
        field = path or "body"
    else:
        field = path or "body"
    value = error.instance
    shown = json.dumps(value) if not isinstance(value, str) else value
    if len(shown) > 200:
        shown = shown[:200] + "..."
    raise exception.SchemaValidationError(field=field, value=shown, reason=error.message)


def validate(
    instance: Any, schema: Mapping[str, Any] | Versioned, version: APIVersion | None = None
) -> None:
    """Check ``instance`` against ``schema``, or the one of ``version`` in a versioned list."""
    if isinstance(schema, Mapping):
        _check(instance, schema)
        return
    assert version is not None
    for (low, high), candidate in schema:
        if version.matches(low, high):
            _check(instance, candidate)
            return
    raise exception.Invalid(reason=f"this request is not supported at version {version}")


#: Largest JSON request body read; a larger one is a 413 before any parsing.
#: Above oslo.middleware's 112 KiB so that what is too deep is told so (a
#: 400 naming the nesting), not merely too large.
MAX_BODY_BYTES = 1024 * 1024

#: Deepest nesting of arrays and objects a JSON body may have: real bodies
#: nest a handful of levels; deeper ones only serve to exhaust the stack of
#: whatever walks them (the parser, the schema validator, the views).
MAX_BODY_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity, which are not JSON (RFC 8259);
    # jsonschema would let them through as numbers and the DB refuse them.
    raise exception.MalformedBody(reason=f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        # 1e999 parses as infinity: the same non-number by another spelling.
        raise exception.MalformedBody(reason="a number is out of range")
    return value


def _check_decoded(value: Any) -> None:
    """Refuse nesting beyond MAX_BODY_DEPTH and strings that are not Unicode
    text (a lone surrogate such as ``"\\ud800"``: no database, log or
    response can encode it). Iterative, so depth costs no stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            strings: list[str] = [item]
        elif isinstance(item, dict):
            if depth > MAX_BODY_DEPTH:
                raise exception.MalformedBody(reason=f"nested deeper than {MAX_BODY_DEPTH} levels")
            strings = list(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > MAX_BODY_DEPTH:
                raise exception.MalformedBody(reason=f"nested deeper than {MAX_BODY_DEPTH} levels")
            strings = []
            stack.extend((v, depth + 1) for v in item)
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Not echoed: the message must itself be encodable.
                raise exception.MalformedBody(
                    reason="a string holds an unpaired surrogate"
                ) from None


def loads(raw: bytes) -> Any:
    """Decode a JSON request body, or raise :class:`MalformedBody` (400).

    The one place every API decodes JSON: strict JSON numbers, bounded depth,
    only encodable text.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise exception.MalformedBody(
            reason=f"nested deeper than {MAX_BODY_DEPTH} levels"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        # MalformedBody is not a ValueError; the parser's messages give a
        # position, never the input.
        raise exception.MalformedBody(reason=str(exc)) from None
    _check_decoded(value)
    return value


async def json_body(request: Request) -> Any:
    """The request's JSON body; 400 when it is absent or not JSON, 413 when too large."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise exception.RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise exception.RequestTooLarge()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise exception.MalformedBody(reason="the request body is empty")
    return loads(raw)


# --- query parameters ---------------------------------------------------------


def query_int(
    request: Request, name: str, *, minimum: int = 0, maximum: int = MAX_INT
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise exception.ValidationError(field=name, reason=f"{raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise exception.ValidationError(
            field=name, reason=f"must be between {minimum} and {maximum}"
        )
    return value


def refuse_unknown_query(request: Request, known: Collection[str]) -> None:
    """Nova's 400 for a query parameter its schema does not name (a query
    schema with ``additionalProperties: False``); the first, in order, is named."""
    unknown = sorted(set(request.query_params.keys()) - set(known))
    if unknown:
        name = unknown[0]
        raise exception.Invalid(
            message=f"Invalid input for query parameters {name}. Value: "
            f"{request.query_params[name]}. Additional properties are not allowed "
            f"('{name}' was unexpected)"
        )


#: A name filter without any of these is a plain substring (matched in SQL).
_REGEX_CHARS = frozenset(".^$*+?{}[]\\|()")


def name_filter(field: str, value: str) -> str | re.Pattern[str]:
    """A ``name`` filter as Nova applies it (its database's REGEXP): the text
    itself when it holds no regular expression syntax (a substring, matched in
    SQL), else the compiled expression; one that does not compile is a 400."""
    if _REGEX_CHARS.isdisjoint(value):
        return value
    try:
        return re.compile(value)
    except re.error:
        raise exception.Invalid(message=f"Invalid filter field: {field} ({value}).") from None


TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


def parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise exception.ValidationError(field=name, reason=f"{raw!r} is not a boolean")


def query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    return None if raw is None else parse_bool(name, raw)


def is_uuid_like(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower().replace("urn:uuid:", "")
    except (ValueError, AttributeError):
        return False


# --- schema building blocks (Nova's parameter_types) ----------------------------

NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^(?! )[\S ]*(?<! )$"}
NAME_WITH_SPACES = {"type": "string", "minLength": 1, "maxLength": 255}
DESCRIPTION = {"type": ["string", "null"], "minLength": 0, "maxLength": 65535}
BOOLEAN = {
    "type": ["boolean", "string"],
    "enum": [True, False, *TRUE_STRINGS, *FALSE_STRINGS, "True", "False", "TRUE", "FALSE"],
}
NON_NEGATIVE_INT = {
    "type": ["integer", "string"],
    "pattern": "^[0-9]+$",
    "minimum": 0,
    "maximum": MAX_INT,
    "minLength": 1,
    "maxLength": 10,
}
POSITIVE_INT = {**NON_NEGATIVE_INT, "pattern": "^0*[1-9][0-9]*$", "minimum": 1}
METADATA = {
    "type": "object",
    "patternProperties": {
        "^[a-zA-Z0-9-_:. ]{1,255}$": {"type": "string", "maxLength": 255},
    },
    "additionalProperties": False,
}


def to_int(name: str, value: Any, minimum: int = 0) -> int:
    """An integer-or-digit-string field as int, within the DB's range."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise exception.ValidationError(field=name, reason="must be an integer") from None
    if not minimum <= number <= MAX_INT:
        raise exception.ValidationError(
            field=name, reason=f"must be between {minimum} and {MAX_INT}"
        )
    return number
