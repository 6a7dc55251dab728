"""Total JSON parsing for everything a sender can post: limits first, then the value.

``json.loads`` alone is not total: a 4301-digit integer raises ``ValueError`` (Python's
int-string limit), a deeply nested body raises ``RecursionError`` or crashes code that walks
it later, ``"\\ud800"`` becomes a lone surrogate that no UTF-8 encoder (SQLite, the log sink)
accepts, ``NaN``/``Infinity`` are not JSON at all and a repeated key silently keeps the last
value. :func:`loads` refuses each of these with a :class:`~bridge.errors.MappingError`
naming the field path (``items[0].sku``) and never raises anything else.

The limits (:class:`JsonLimits`, defaults chosen well above any partner's real payload and
far below what could hurt the daemon):

* nesting depth 32 (the deepest partner body, an Optoro RMA, nests 4 levels);
* integers of at most 32 digits (money is integer cents and ids are at most 20 digits);
  decimal fractions of at most 32 significant digits and an exponent within +-32;
* strings (keys too) of at most 16,384 characters, valid UTF-8, no lone surrogates;
* arrays of at most 5,000 elements (an RMA carries one item per returned unit);
* objects of at most 1,000 keys, each key once;
* ``NaN``, ``Infinity`` and ``-Infinity`` refused.

Fractions are returned as ``Decimal`` (never ``float``), as the mappings read money.
Every pass is linear in the body size (a 1.5 MB body of 500,000 integers parses in about
0.1 s); the slower passes that name a field run only for a body that breaks a limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.errors import MappingError

__all__ = ["DEFAULT_LIMITS", "JsonLimits", "check_text", "field_path", "loads"]


@dataclass(frozen=True)
class JsonLimits:
    """Bounds one inbound JSON body must stay within (see the module docstring)."""

    max_depth: int = 32
    max_digits: int = 32
    max_string: int = 16_384
    max_array: int = 5_000
    max_keys: int = 1_000


DEFAULT_LIMITS = JsonLimits()

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}:,]', re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
"""A string, or an unterminated one up to the end (so a scan never restarts inside it:
linear time on any input)."""
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused:
    """Stands in for a value the parser hooks refused, so the walk can name its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Object(dict[str, Any]):
    """A parsed object, remembering a key that occurred more than once."""

    duplicate: str | None = None


_CHECKED = frozenset({str, list, dict, _Object, _Refused})


def field_path(parts: list[str | int]) -> str:
    """``["items", 0, "sku"]`` -> ``items[0].sku`` (``body`` for the whole body)."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "body"


def _printable(key: str) -> str:
    """A key as it may appear in a field path: no surrogates, bounded length."""
    safe = _SURROGATE.sub("\ufffd", key)
    return safe if len(safe) <= 64 else safe[:61] + "..."


def _parse_int(limits: JsonLimits) -> Any:
    def parse(text: str) -> int | _Refused:
        digits = len(text) - text.startswith("-")
        if digits > limits.max_digits:
            return _Refused(f"integer of {digits} digits (at most {limits.max_digits})")
        return int(text)

    return parse


def _parse_float(limits: JsonLimits) -> Any:
    def parse(text: str) -> Decimal | _Refused:
        if len(text) > 4 * limits.max_digits:
            return _Refused(f"number of {len(text)} characters")
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the scanner only passes JSON numbers
            return _Refused("not a number")
        digits = len(value.as_tuple().digits)
        if digits > limits.max_digits or abs(value.adjusted()) > limits.max_digits:
            return _Refused(f"number outside {limits.max_digits} significant digits or exponent")
        return value

    return parse


def _refuse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Object(obj)  # a key occurred twice: the walk reports it with its path
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _too_deep(text: str, limits: JsonLimits) -> bool:
    """Fast: does any bracket outside strings nest deeper than ``max_depth``?"""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limits.max_depth:
                return True
        else:
            depth -= 1
    return False


def _check_depth(text: str, limits: JsonLimits) -> None:
    """Refuse nesting deeper than ``max_depth`` before the recursive parser sees it (the
    slower pass that names the field runs only for a body that is too deep)."""
    if not _too_deep(text, limits):
        return
    path: list[str | int] = []  # one part per open container: its current key or index
    expect_key = False
    last_string: str | None = None
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        if lexeme in "[{":
            if len(path) >= limits.max_depth:
                raise MappingError(
                    f"nesting deeper than {limits.max_depth} levels", field=field_path(path)
                )
            if lexeme == "[":
                path.append(0)
                expect_key = False
            else:
                path.append("")
                expect_key = True
        elif lexeme in "]}":
            if path:
                path.pop()
        elif lexeme == ",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
            else:
                expect_key = True
        elif lexeme == ":":
            if path and expect_key and last_string is not None:
                path[-1] = _printable(last_string)
            expect_key = False
        else:
            last_string = lexeme[1:-1] if expect_key else None


def _bad_string(text: str, limits: JsonLimits) -> bool:
    return len(text) > limits.max_string or _SURROGATE.search(text) is not None


def _violates(value: Any, limits: JsonLimits) -> bool:
    """Fast: does any string, array, object or refused number break a limit? (No paths:
    :func:`_walk` finds the field only when this says so.)"""
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is str:
            if _bad_string(item, limits):
                return True
        elif kind is list:
            if len(item) > limits.max_array:
                return True
            todo.extend(v for v in item if type(v) in _CHECKED)
        elif kind is dict:
            if len(item) > limits.max_keys:
                return True
            for key, v in item.items():
                if _bad_string(key, limits):
                    return True
                if type(v) in _CHECKED:
                    todo.append(v)
        elif kind is _Object or kind is _Refused:
            return True
    return False


def _walk(value: Any, limits: JsonLimits) -> None:
    """Check every string, array, object and refused number; raise naming the path."""
    todo: list[tuple[Any, list[str | int]]] = [(value, [])]
    while todo:
        item, path = todo.pop()
        if isinstance(item, str):
            _check_string(item, path, limits)
        elif isinstance(item, _Refused):
            raise MappingError(item.reason, field=field_path(path))
        elif isinstance(item, list):
            if len(item) > limits.max_array:
                raise MappingError(
                    f"array of {len(item)} elements (at most {limits.max_array})",
                    field=field_path(path),
                )
            todo.extend((element, [*path, i]) for i, element in enumerate(item))
        elif isinstance(item, dict):
            if len(item) > limits.max_keys:
                raise MappingError(
                    f"object of {len(item)} keys (at most {limits.max_keys})",
                    field=field_path(path),
                )
            duplicate = getattr(item, "duplicate", None)
            if duplicate is not None:
                raise MappingError(
                    "key occurs more than once", field=field_path([*path, _printable(duplicate)])
                )
            for key, element in item.items():
                _check_string(key, [*path, _printable(key)], limits, what="key")
                todo.append((element, [*path, key]))


def _check_string(
    text: str, path: list[str | int], limits: JsonLimits, what: str = "string"
) -> None:
    if len(text) > limits.max_string:
        raise MappingError(
            f"{what} of {len(text)} characters (at most {limits.max_string})",
            field=field_path(path),
        )
    if _SURROGATE.search(text):
        raise MappingError(f"{what} holds a lone UTF-16 surrogate", field=field_path(path))


def loads(body: bytes | bytearray | str, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """``body`` as JSON within ``limits`` (fractions as ``Decimal``), else ``MappingError``.

    Total: whatever the bytes, the only exception is ``MappingError`` (field ``body`` for
    text that is not JSON at all, the field path for a value that breaks a limit)."""
    if isinstance(body, bytes | bytearray):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MappingError(
                f"body is not UTF-8 (invalid byte at offset {exc.start})", field="body"
            ) from None
    else:
        text = body
    _check_depth(text, limits)
    try:
        value = json.loads(
            text,
            parse_int=_parse_int(limits),
            parse_float=_parse_float(limits),
            parse_constant=_refuse_constant,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as exc:
        raise MappingError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field="body",
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise MappingError(f"body is not valid JSON ({type(exc).__name__})", field="body") from None
    if _violates(value, limits):
        _walk(value, limits)
    return value


def check_text(value: str, field: str, max_length: int = 1024) -> str:
    """A header or query value safe to compare, store and log: no raw (undecodable) bytes,
    no lone surrogates, no control characters, at most ``max_length`` characters.
    Returns it; ``MappingError`` naming ``field`` otherwise (the value is never quoted)."""
    if len(value) > max_length:
        raise MappingError(f"{field} is longer than {max_length} characters", field=field)
    if _SURROGATE.search(value):
        raise MappingError(f"{field} is not valid UTF-8 text", field=field)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise MappingError(f"{field} holds control characters", field=field)
    return value
