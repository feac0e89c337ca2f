"""One configuration object per task: dataclasses read from YAML, overridden on the command
line with ``key=value`` (values parsed as YAML), and saved beside every run.

Example:
    >>> cfg = load_config(SegTrainConfig, "my.yaml", ["lr=3e-4", "roi_size=[64,64,64]"])
    >>> save_config(cfg, run_dir / "config.yaml")
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from visprior.errors import brief, error_text, one_line
from visprior.fileio import atomic_path, decode_utf8

__all__ = [
    "ConfigError",
    "RunConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]

ConfigT = TypeVar("ConfigT")

# A configuration is a few kilobytes of YAML. These bounds refuse hostile ones before anything
# walks them: a YAML alias bomb expands a few lines into billions of values, and an alias can
# make a list contain itself.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used; the message names it."""


@dataclasses.dataclass
class RunConfig:
    """The options every training command shares; each task's config extends it (and may give
    a field another default). Keys stay flat in YAML: ``lr: 3e-4``, not ``run: {lr: ...}``.

    How long a run trains is the task's own: ``iterations`` for segmentation, ``epochs`` for
    CXR classification.
    """

    dataset: str = ""
    output: str = "runs/run"
    model: str = ""
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    time_limit_minutes: float = math.inf  # summed over resumed sessions
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 0
    deterministic: bool = False
    # "32", "bf16", "16-mixed" (float16 autocast + gradient scaler), or "auto": what the older
    # ``amp`` key says (true: bf16 on CUDA, float32 on the CPU)
    precision: Literal["auto", "32", "bf16", "16-mixed"] = "auto"
    amp: bool = True
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm over the global batch
    device: str = "auto"
    num_workers: int = 0


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


def config_from_dict(
    cls: type[ConfigT],
    values: dict[str, Any],
    source: str = "config",
    origins: dict[str, str] | None = None,
) -> ConfigT:
    """Build ``cls`` from ``values``, checking names and converting lists back to tuples.

    ``origins`` names where an option came from when not from ``source`` (an override), so
    that an error points at what the user wrote.
    """
    origins = origins or {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: expected a mapping of option names, got {type(values).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown_keys = [key for key in values if key not in fields]
    if unknown_keys:
        unknown = sorted(_name(key) for key in unknown_keys)
        listed = ", ".join(unknown[:5]) + (f" (and {len(unknown) - 5} more)" if unknown[5:] else "")
        where = origins.get(unknown_keys[0], source)
        raise ConfigError(
            f"{where}: unknown option(s) {listed}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        where = origins.get(name, source)
        kwargs[name] = _coerce(hints[name], value, f"{where}: option {name!r}")
    return cls(**kwargs)


def load_config(
    cls: type[ConfigT],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
    **values: Any,
) -> ConfigT:
    """Defaults of ``cls``, then ``base`` (e.g. a dataset's plan), then the YAML file ``path``,
    then ``values``, then ``overrides``. A section (``preprocessing: {...}``) given in the file
    sets only the keys it names over ``base``'s.

    Raises:
        ConfigError: a file that is missing, unreadable, larger than ``MAX_CONFIG_BYTES``, not
            YAML (or YAML that would build Python objects), not a mapping, or holding more than
            ``MAX_CONFIG_VALUES`` values or nesting deeper than ``MAX_CONFIG_DEPTH``; an
            override not of the form ``key=value``; an unknown option or a value of the wrong
            type (the file or override and the option named).
    """
    merged: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in (base or {}).items()
    }
    if path is not None:
        for key, value in _read_yaml(Path(path)).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    merged.update({k: v for k, v in values.items() if v is not None})
    origins = {}
    for text in overrides:
        key, value = _parse_override(text)
        _set_dotted(merged, key, value, text)
        origins[key.split(".")[0]] = f"override {_short(text)}"
    return config_from_dict(cls, merged, str(path) if path else "config", origins)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes; a configuration file may have at most {MAX_CONFIG_BYTES}"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    text = decode_utf8(data, path, ConfigError)
    values = _parse_yaml(text, f"{path}: not valid YAML")
    _check_plain(values, str(path))
    if values is None:  # an empty file
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: expected a mapping of option names, got {type(values).__name__}"
        )
    return values


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {_short(text)} is not of the form key=value")
    where = f"override {_short(text)}"
    value = _parse_yaml(raw, f"{where}: value is not valid YAML")
    _check_plain(value, where)
    return key.strip(), value


class _SafeUniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML would keep
    the last one silently, so a typo'd second ``lr:`` would win unnoticed)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<": merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: refused later as not text
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_short(key)} is given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, failure: str) -> Any:
    """``yaml.safe_load`` (no Python object is ever built), every failure a ``ConfigError``."""
    try:
        return yaml.load(text, Loader=_SafeUniqueKeyLoader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = ", ".join(part for part in (error.context, error.problem) if part)
        raise ConfigError(f"{failure}{at}: {one_line(problem or str(error))}") from None
    except RecursionError:
        raise ConfigError(f"{failure}: nested too deeply") from None
    # PyYAML's constructors raise ValueError, KeyError, AttributeError... on malformed tagged
    # scalars (a 13th month, "!!bool x").
    except Exception as error:
        raise ConfigError(f"{failure}: {error_text(error)}") from None


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that are not plain YAML data (str, numbers, bools, null, lists, mappings
    with text keys), nest deeper than ``MAX_CONFIG_DEPTH`` (or contain themselves), or
    count more than ``MAX_CONFIG_VALUES`` with every alias expanded. Walks without recursion,
    stopping at the first bound."""
    pending = [(value, 0)]
    seen = 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{where}: more than {MAX_CONFIG_VALUES} values (YAML aliases expanding?)"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{where}: nested deeper than {MAX_CONFIG_DEPTH} levels (or contains itself)"
            )
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise ConfigError(f"{where}: key {_short(key)} is not text")
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend((v, depth + 1) for v in item)
        elif not isinstance(item, _PLAIN_SCALARS):
            kind = "a date" if isinstance(item, datetime.date) else type(item).__name__
            raise ConfigError(
                f"{where}: {_short(item)} is {kind}, not text, a number, a bool or null"
            )


def _short(value: Any) -> str:
    """A value quoted in a message, cut short so that every message stays one line."""
    return brief(value, width=60, depth=3)


def _name(key: Any) -> str:
    """An option name as written, or quoted when it would not read as one."""
    return key if isinstance(key, str) and key.isidentifier() else _short(key)


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
        if isinstance(value, hint):
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
        raise ConfigError(errors[0] if errors else f"{where}: bad value {_short(value)}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if isinstance(value, int) and not isinstance(value, bool) and str(value) in choices:
            value = str(value)  # "precision: 32" is read by YAML as a number
        if value not in choices:
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {_short(value)} is not one of {choices}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
        _check_plain(value, where)  # what it holds is passed on as keyword arguments
        return dict(value)
    if hint is float:
        return _float(value, where)
    if hint in (int, str, bool) and type(value) is not hint:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {_short(value)}")
    return value


def _float(value: Any, where: str) -> float:
    """A number as float; YAML 1.1 reads "3e-4" (no dot) as text, which is taken too. NaN is
    refused (no option means anything by it); infinity is kept (``time_limit_minutes``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {_short(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {_short(value)}") from None
    except OverflowError:
        raise ConfigError(f"{where}: {_short(value)} is too large for a number") from None
    if number != number:
        raise ConfigError(f"{where}: expected a number, got NaN")
    return number
