"""The one config system: typed, frozen dataclass sections read from YAML, strict about keys and types.

Every stage's settings (training's sections, and generate / audit / evaluate / export) are built by `build`: an
unknown key is refused naming the known ones, a wrong type naming the key; `--set section.key=value` overrides are
parsed as YAML and applied to the raw mapping before it is built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from medsynth.errors import MedsynthError, first_line

BUNDLED = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(MedsynthError):
    """A config file or override that does not fit the schema."""


def plain(value: Any) -> Any:
    """Tuples to lists, recursively: what YAML and JSON write."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def as_dict(section: Any) -> dict[str, Any]:
    """A section (or a whole config) as a plain mapping, in field order."""
    return plain(dataclasses.asdict(section))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a field's annotation, converting lists to tuples and ints to floats."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{where} must have {len(items)} entries, got {len(value)}.")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, items)))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 2e-4 as a string
        except ValueError:
            pass
    if annotation is str and isinstance(value, Path):
        return str(value)
    if annotation in (int, bool, str) and type(value) is annotation:
        return value
    raise ConfigError(f"{where} must be {getattr(annotation, '__name__', annotation)}, got {value!r}.")


def build(cls: type, values: Any, where: str = "") -> Any:
    """An instance of the dataclass `cls` from a mapping, nested sections included; `where` names it in errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key {where + '.' if where else ''}{unknown[0]}; "
                          f"known keys{' in ' + where if where else ''}: {', '.join(sorted(known))}.")
    kwargs = {}
    for name, value in values.items():
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = build(hints[name], value, key)
        else:
            kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` (or `section.sub.key=value`) overrides, values parsed as YAML, to a raw mapping."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=1e-4.")
        node = values
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(raw)
    return values


def read_yaml(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A YAML mapping from a path, or from the file of that name in the bundled configs/ folder."""
    path = Path(path)
    if not path.is_file() and (BUNDLED / path.name).is_file() and path.name == str(path):
        path = BUNDLED / path.name
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist; see configs/ for examples.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({first_line(err)}).") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of sections to keys, e.g. `train:` then `  lr: 1e-4`.")
    return path, values


def located(where: str, err: ConfigError) -> ConfigError:
    """The same error, prefixed with the file it came from."""
    return ConfigError(f"{where}: {err}" if where else str(err))
