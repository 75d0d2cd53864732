"""Strict loading of TOML config files into frozen dataclasses.

Rules, applied by :func:`from_mapping`:

* Every key must name an ``init`` field of the dataclass; anything else is an
  error that lists the known keys (typos must not be silently ignored).
* A missing key takes the field's default, or the value in ``base`` when one
  is given, so a scenario file can override only a few fields of the defaults.
  A missing key with neither is an error.
* Values are checked against the field's type hint, with no coercion beyond
  int -> float:

  - ``float`` accepts int or float (never bool) and stores a float;
  - ``int`` accepts int only (not bool, not float); ``bool`` and ``str`` exact;
  - ``tuple[T, ...]`` and ``tuple[T1, T2]`` accept a list (stored as a tuple);
  - ``Literal[...]`` accepts one of its values; ``T | None`` accepts a ``T``;
  - a nested dataclass accepts a table and recurses with key ``parent.child``.

* After construction every dataclass instance, nested ones first, has its
  ``validate(self) -> None`` method (if any) called. A ``ValueError`` from it,
  usually raised by :func:`require`, becomes a :class:`ConfigError` naming the
  file and the dotted key.

Config files live under ``configs/<kind>/<name>.toml`` at the repository root
(or under ``$CRASHGYM_CONFIGS``) and carry ``schema_version = 1``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "available",
    "check_schema_version",
    "read_config",
    "configs_root",
    "from_mapping",
    "load_toml",
    "require",
    "resolve_config_path",
    "to_mapping",
]

T = TypeVar("T")

CONFIGS_ENV = "CRASHGYM_CONFIGS"


class ConfigError(ValueError):
    """A config file has an unknown key, a wrong type or an impossible value.

    The message names the file and the dotted key.
    """


class _RequireError(ValueError):
    """Raised by :func:`require`; keeps the key so a parent prefix can be added."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"'{key}' {message}")
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """For ``validate`` methods: raise ``ValueError("'key' message")`` unless ``condition``."""
    if not condition:
        raise _RequireError(key, message)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return f"a table ({tp.__name__})"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str, source: str, base: Any) -> Any:
    """Check ``value`` against type hint ``tp`` and return it in stored form."""

    def wrong() -> ConfigError:
        return ConfigError(
            f"{source}: '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        )

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise wrong()
        return _build(tp, value, source, key, base)
    if tp is float:
        # bool is a subclass of int, so it has to be excluded by hand.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise wrong()
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        if len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(value)
        elif len(value) != len(args):
            raise wrong()
        else:
            elem_types = list(args)
        return tuple(
            _convert(et, v, f"{key}[{i}]", source, None)
            for i, (et, v) in enumerate(zip(elem_types, value))
        )
    if origin is typing.Literal:
        # Compare type too, so that True does not match Literal[1].
        if not any(type(value) is type(a) and value == a for a in args):
            raise wrong()
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for alt in args:
            if alt is type(None):
                continue
            try:
                return _convert(alt, value, key, source, base)
            except ConfigError:
                pass
        raise wrong()
    raise TypeError(f"crashgym.config cannot load field '{key}' of type {tp!r}")


def _build(cls: type[T], data: Mapping[str, Any], source: str, prefix: str, base: T | None) -> T:
    """Construct ``cls`` from ``data`` without validating."""
    if not isinstance(data, Mapping):
        where = f"'{prefix}'" if prefix else "top level"
        raise ConfigError(f"{source}: {where} must be a table, got {data!r}")
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{source}: unknown key '{_join(prefix, str(unknown[0]))}' (known: {known})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            sub_base = getattr(base, name) if base is not None else None
            kwargs[name] = _convert(hints[name], data[name], key, source, sub_base)
        elif base is not None:
            kwargs[name] = getattr(base, name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing key '{key}'")
    return cls(**kwargs)


def _validate(obj: Any, source: str, prefix: str) -> None:
    """Call ``validate`` on ``obj`` and every nested dataclass, innermost first."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, source, key)
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v):
                    _validate(v, source, f"{key}[{i}]")
    validate = getattr(obj, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except _RequireError as e:
        raise ConfigError(f"{source}: '{_join(prefix, e.key)}' {e.message}") from e
    except ValueError as e:
        msg = str(e)
        if isinstance(e, ConfigError) and msg.startswith(f"{source}:"):
            raise
        where = f"in '{prefix}': " if prefix else ""
        raise ConfigError(f"{source}: {where}{msg}") from e


def from_mapping(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    source: str = "<dict>",
    prefix: str = "",
    base: T | None = None,
) -> T:
    """Build dataclass ``cls`` from a (possibly nested) mapping; see the module docstring.

    ``source`` names the file in error messages, ``prefix`` is prepended to keys,
    and missing keys are taken from ``base`` when it is given.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    obj = _build(cls, data, source, prefix, base)
    _validate(obj, source, prefix)
    return obj


def to_mapping(instance: Any) -> dict[str, Any]:
    """Turn a dataclass instance into nested plain dicts (tuples as lists), e.g. for JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    if not (dataclasses.is_dataclass(instance) and not isinstance(instance, type)):
        raise TypeError(f"{instance!r} is not a dataclass instance")
    return plain(instance)


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def configs_root() -> pathlib.Path:
    """The ``configs/`` folder: ``$CRASHGYM_CONFIGS`` if set, else the one at the repository root."""
    env = os.environ.get(CONFIGS_ENV)
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parent.parent / "configs"


def available(kind: str) -> list[str]:
    """Sorted names (file stems) of the TOML files in ``configs/<kind>/``."""
    folder = configs_root() / kind
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml") if p.is_file())


def resolve_config_path(name_or_path: str, kind: str) -> pathlib.Path:
    """Turn a config name (``'oct10'``) or a path into the path of an existing TOML file.

    Anything containing a path separator or ending in ``.toml`` is a path;
    otherwise it names ``configs/<kind>/<name>.toml``.
    """
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in name_or_path for s in seps) or name_or_path.endswith(".toml"):
        path = pathlib.Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        return path
    path = configs_root() / kind / f"{name_or_path}.toml"
    if not path.is_file():
        names = ", ".join(available(kind)) or "none"
        raise ConfigError(
            f"unknown {kind} config '{name_or_path}' in {configs_root() / kind} (available: {names})"
        )
    return path


def check_schema_version(data: Mapping[str, Any], source: str, supported: int = 1) -> None:
    """Require ``data['schema_version'] == supported`` (an int); pops nothing."""
    if "schema_version" not in data:
        raise ConfigError(f"{source}: missing key 'schema_version' (expected {supported})")
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != supported:
        raise ConfigError(
            f"{source}: unsupported schema_version {version!r} (this crashgym reads {supported})"
        )


def read_config(name_or_path: str, kind: str, top_keys: set[str]) -> tuple[str, dict[str, Any]]:
    """Resolve and read a config file, checking its header: ``schema_version``, no keys
    outside ``top_keys``, and ``description`` a string. Returns (source, data)."""
    path = resolve_config_path(name_or_path, kind)
    source = str(path)
    data = load_toml(path)
    check_schema_version(data, source)
    unknown = sorted(set(data) - top_keys)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(sorted(top_keys))})")
    if "description" in data and not isinstance(data["description"], str):
        raise ConfigError(f"{source}: 'description' must be str, got {data['description']!r}")
    return source, data
