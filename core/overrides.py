"""Dotted ``KEY=VALUE`` overrides, shared by ``recipekit train --set`` and ``recipekit prepare --set``.

:func:`parse_override` splits ``"optim.lr=3e-4"`` into ``(["optim", "lr"], 3e-4)``: the value is
read as a TOML value (numbers, true/false, "strings", [arrays], {inline = tables}) and as a plain
string when it is not one. :func:`check_type` checks a value against a dataclass field's type
hint, and :func:`did_you_mean` suggests the nearest known name for a typo. Errors are
:class:`ConfigError` (a ``ValueError``) with a one-line message naming the key. No torch here.
"""

from __future__ import annotations

import copy
import difflib
import sys
import typing
from collections.abc import Iterable, Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "parse_override", "set_path", "check_type", "closest", "did_you_mean"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the source and the key."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], 3e-4). The value is a TOML value
    (numbers, true/false, "strings", [arrays], {inline = tables}) or else a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE (e.g. optim.lr=3e-4)")
    path = key.split(".")
    if any(not p for p in path):
        raise ConfigError(f"override {text!r}: empty part in key {key!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def set_path(raw: dict, path: list[str], value: Any, text: str) -> None:
    """Set ``raw[path[0]][path[1]]...`` to ``value``, creating the tables on the way."""
    node = raw
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: {part!r} is not a table")
        node = child
    node[path[-1]] = value


def closest(name: str, known: Iterable[str]) -> str | None:
    """The nearest of ``known`` to a typo (difflib, cutoff 0.6), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest of ``known``, or ``""``."""
    near = closest(name, known)
    return f" (did you mean {near!r}?)" if near else ""


def check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field's type hint (bool, int, float, str, list of str, dict, ``X | None``,
    ``tuple[float, ...]``); a float field takes an int. ``where`` names the key in the error."""
    args = typing.get_args(hint)
    if type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is list:  # a list of strings (train.plugins: module names)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return copy.deepcopy(dict(value))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{where}: expected an array of {len(items)} values, got {list(value)!r}")
        return tuple(check_type(v, h, where) for v, h in zip(value, items))
    raise AssertionError(hint)  # pragma: no cover
