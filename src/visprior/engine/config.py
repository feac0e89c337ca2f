"""One configuration object per task: dataclasses read from YAML, overridden on the command
line with ``key=value`` (values parsed as YAML), and saved beside every run.

Example:
    >>> cfg = load_config(SegTrainConfig, "my.yaml", ["lr=3e-4", "roi_size=[64,64,64]"])
    >>> save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from visprior.fileio import atomic_path

__all__ = ["ConfigError", "config_to_dict", "config_from_dict", "load_config", "save_config"]

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used; the message names it."""


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists, paths as strings) that YAML and ``weights_only`` accept."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value

    return plain(config)


def config_from_dict(cls: type[ConfigT], values: dict[str, Any], source: str = "config") -> ConfigT:
    """Build ``cls`` from ``values``, checking names and converting lists back to tuples."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: expected a mapping of option names, got {type(values).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{source}: option {name!r}")
    return cls(**kwargs)


def load_config(
    cls: type[ConfigT],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    **values: Any,
) -> ConfigT:
    """Defaults of ``cls``, then the YAML file ``path``, then ``values``, then ``overrides``."""
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_read_yaml(Path(path)))
    merged.update({k: v for k, v in values.items() if v is not None})
    for text in overrides:
        key, value = _parse_override(text)
        _set_dotted(merged, key, value, text)
    return config_from_dict(cls, merged, source=str(path) if path else "config")


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return values or {}


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {error}") from None


def _set_dotted(values: dict[str, Any], key: str, value: Any, text: str) -> None:
    """``preprocessing.spacing=...`` sets one field of a nested section."""
    *parents, leaf = key.split(".")
    for name in parents:
        section = values.setdefault(name, {})
        if dataclasses.is_dataclass(section):
            section = values[name] = config_to_dict(section)
        if not isinstance(section, dict):
            raise ConfigError(f"override {text!r}: {name!r} is not a section")
        values = section
    values[leaf] = value


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint; lists become tuples where tuples are due."""
    if dataclasses.is_dataclass(hint):
        if dataclasses.is_dataclass(value):
            return value
        return config_from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and type(value) is not hint:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
