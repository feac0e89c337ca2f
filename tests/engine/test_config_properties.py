"""Property tests of the configuration reader: whatever the YAML file or the ``key=value``
overrides hold, ``load_config`` returns a config whose fields have their declared types, or
raises a one-line ``ConfigError`` naming the file or the option; nothing else escapes."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from visprior.cxr.config import CXRTrainConfig
from visprior.engine.config import ConfigError, load_config, save_config
from visprior.seg.config import SegTrainConfig

CONFIG_CLASSES = [SegTrainConfig, CXRTrainConfig]


def _option_names(cls: type) -> list[str]:
    """Every option of ``cls``, nested ones dotted (``preprocessing.spacing``)."""
    hints = typing.get_type_hints(cls)
    names = []
    for field in dataclasses.fields(cls):
        names.append(field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            names += [f"{field.name}.{inner}" for inner in _option_names(hints[field.name])]
    return names


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)  # too large for a float
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["ct", "egd", "both", "val_auc", "3e-4", "1e400", ".nan", "2001-01-01"])
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Text made mostly of YAML's punctuation reaches its syntax (anchors, tags, flow collections,
# block scalars) far more often than arbitrary unicode does.
yaml_like_text = st.text(alphabet=st.sampled_from(list(":-[]{},&*!#|>'\"?%@`\n\t .ae1lr0_")))


def _fitting(hint: Any) -> st.SearchStrategy:
    """Values of the declared type ``hint``, as YAML would give them (lists for tuples)."""
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.fixed_dictionaries({}, optional={name: _fitting(h) for name, h in hints.items()})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else _fitting(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            return st.lists(_fitting(args[0]), max_size=4)
        return st.tuples(*map(_fitting, args)).map(list)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), yaml_values, max_size=3)
    return {
        str: st.text(max_size=8),
        int: st.integers(),
        float: st.floats(allow_nan=False) | st.integers(-(10**6), 10**6),
        bool: st.booleans(),
    }[hint]


def _fitting_or_not(hint: Any) -> st.SearchStrategy:
    """Mostly values of the type ``hint``, so that many configs are accepted and checked."""
    return st.one_of(_fitting(hint), _fitting(hint), yaml_values)


def _typed_documents(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    return st.fixed_dictionaries({}, optional={n: _fitting_or_not(h) for n, h in hints.items()})


def _hint(cls: type, dotted: str) -> Any:
    for name in dotted.split("."):
        hint = typing.get_type_hints(cls)[name]
        cls = hint
    return hint


def _matches(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the declared type ``hint`` (tuples item by item, dicts text-keyed)."""
    if hint is Any:
        return True
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and _has_declared_types(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(option, value) for option in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if args and args[-1] is not Ellipsis and len(args) != len(value):
            return False
        return all(_matches(args[0], item) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(key, str) for key in value)
    if hint is type(None):
        return value is None
    return type(value) is hint


def _has_declared_types(config: Any) -> bool:
    hints = typing.get_type_hints(type(config))
    return all(
        _matches(hints[field.name], getattr(config, field.name))
        for field in dataclasses.fields(config)
    )


def _load_or_refuse(cls, path=None, overrides=()) -> tuple[Any, str]:
    """The config, or ``None`` and the one-line message of the ConfigError it raised."""
    try:
        config = load_config(cls, path, list(overrides))
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 1000, message
        return None, message
    assert _has_declared_types(config), config
    return config, ""


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@given(text=st.text(max_size=80) | yaml_like_text)
def test_any_file_text_gives_a_typed_config_or_a_config_error_naming_the_file(tmp_path, cls, text):
    path = tmp_path / "any.yaml"
    path.write_text(text, encoding="utf-8")
    config, message = _load_or_refuse(cls, path)
    assert config is not None or str(path) in message


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_any_yaml_document_gives_a_typed_config_or_a_config_error_naming_the_file(
    tmp_path, cls, data
):
    names = st.sampled_from(_option_names(cls))
    arbitrary = st.dictionaries(names | st.text(max_size=6), yaml_values, max_size=5)
    document = data.draw(st.one_of(_typed_documents(cls), arbitrary, yaml_values))
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    config, message = _load_or_refuse(cls, path)
    assert config is not None or str(path) in message
    if config is not None and "nan" not in repr(config):  # NaN never equals itself
        save_config(config, tmp_path / "saved.yaml")
        assert load_config(cls, tmp_path / "saved.yaml") == config
    if config is not None:
        hints = typing.get_type_hints(cls)
        for name, value in (document or {}).items():  # text, flags, choices kept as written
            if hints[name] in (str, bool) or typing.get_origin(hints[name]) is typing.Literal:
                assert getattr(config, name) == value


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_any_override_gives_a_typed_config_or_a_config_error_naming_the_option(cls, data):
    def flow(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()

    fitting = st.sampled_from(_option_names(cls)).flatmap(
        lambda name: st.tuples(st.just(name), _fitting_or_not(_hint(cls, name)).map(flow))
    )
    arbitrary = st.tuples(st.text(max_size=10), yaml_values.map(flow) | yaml_like_text)
    override = st.one_of(fitting, fitting, arbitrary).map("=".join) | st.text()
    overrides = data.draw(st.lists(override, max_size=3))
    config, message = _load_or_refuse(cls, None, overrides)
    if config is None:
        heads = [text.partition("=")[0].strip().split(".")[0] for text in overrides]
        assert "override" in message or any(
            head in message or repr(head)[1:-1] in message for head in heads
        ), (overrides, message)


@given(value=yaml_values)
def test_an_accepted_option_value_is_kept_with_its_type(value):
    """``dataset`` (text) and ``iterations`` (int) take exactly values of their type."""
    flow = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    for option, kind in (("dataset", str), ("iterations", int)):
        config, message = _load_or_refuse(SegTrainConfig, None, [f"{option}={flow}"])
        if type(value) is kind:
            assert getattr(config, option) == value
        else:
            assert f"option {option!r}: expected {kind.__name__}" in message
