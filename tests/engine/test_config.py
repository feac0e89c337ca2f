"""Task configurations: YAML, key=value overrides, type checks with named errors."""

from __future__ import annotations

import math

import pytest

from visprior.engine.config import ConfigError, load_config, save_config
from visprior.seg.config import Preprocessing, SegTrainConfig


def test_defaults_follow_the_papers_recipe():
    config = SegTrainConfig()
    assert config.lr == 1e-4 and config.roi_size == (96, 96, 96)
    assert config.crops_per_volume == 2 and config.val_every == 500
    assert config.preprocessing.ct_window == (-125.0, 275.0)
    assert config.rotate_range == pytest.approx(math.pi / 30)


def test_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.001\nmodel: uxnet\niterations: 10\n")
    config = load_config(
        SegTrainConfig,
        path,
        ["lr=3e-4", "preprocessing.spacing=[1.5, 1.5, 2]", "model_kwargs={feature_size: 16}"],
        iterations=20,
        model=None,  # an unset flag keeps the file's value
    )
    assert config.model == "uxnet" and config.iterations == 20
    assert config.lr == pytest.approx(3e-4)  # YAML reads 3e-4 as text; it becomes a number
    assert config.preprocessing == Preprocessing(spacing=(1.5, 1.5, 2.0))
    assert config.model_kwargs == {"feature_size": 16}


def test_save_and_load_round_trip(tmp_path):
    config = SegTrainConfig(dataset="d", roi_size=(64, 64, 32), flip_axes=(0, 1))
    save_config(config, tmp_path / "config.yaml")
    assert load_config(SegTrainConfig, tmp_path / "config.yaml") == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("lr=abc", "option 'lr': expected a number, got 'abc'"),
        ("nope=1", "unknown option(s) nope"),
        ("roi_size=[1,2]", "option 'roi_size': expected 3 values, got 2"),
        ("preprocessing.intensity=xx", "'xx' is not one of 'auto', 'ct', 'mri', 'none'"),
        ("fold=1.5", "option 'fold': expected int, got 1.5"),
        ("lr", "override 'lr' is not of the form key=value"),
        ("lr.x=1", "option 'lr': expected a number, got {'x': 1}"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(SegTrainConfig, None, [override])
    assert message in str(error.value)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(SegTrainConfig, path)
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(SegTrainConfig, tmp_path / "missing.yaml")
