"""Task configurations: YAML, key=value overrides, type checks with named errors."""

from __future__ import annotations

import math

import pytest

from visprior.cxr.config import CXRTrainConfig
from visprior.engine.config import MAX_CONFIG_BYTES, ConfigError, load_config, save_config
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


def test_yaml_that_would_build_python_objects_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "it-ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f'dataset: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(
        ConfigError,
        match=r"evil.yaml: not valid YAML \(line 1, column 10\): .*python/object/apply:os.system",
    ):
        load_config(SegTrainConfig, path)
    with pytest.raises(ConfigError, match=r"override 'dataset=!!python.*not valid YAML"):
        load_config(
            SegTrainConfig, None, [f'dataset=!!python/object/apply:os.system ["touch {marker}"]']
        )
    assert not marker.exists()


def _alias_bomb(levels: int = 9, fan_out: int = 10) -> str:
    """A YAML "billion laughs": a few lines whose aliases expand to fan_out ** levels values."""
    lines = ["  l0: &l0 [" + ", ".join(["lol"] * fan_out) + "]"]
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * fan_out) + "]")
    return "\n".join(lines)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("model_kwargs:\n" + _alias_bomb() + "\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml: more than 100000 values \(YAML aliases"):
        load_config(CXRTrainConfig, path)
    flow = "{" + _alias_bomb().replace("\n", ",").replace("  ", "") + "}"
    with pytest.raises(ConfigError, match=r"override 'model_kwargs=.*: more than 100000 values"):
        load_config(CXRTrainConfig, None, [f"model_kwargs={flow}"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_kwargs: &a {again: *a}\n", "nested deeper than 32 levels (or contains itself)"),
        ("lr: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML: nested too deeply"),
        ("[[lr, 0.1]]\n", "expected a mapping of option names, got list"),
        ("0\n", "expected a mapping of option names, got int"),
        ("dataset: 2001-13-01\n", "not valid YAML: month must be in 1..12"),
        ("dataset: 2001-01-01\n", "datetime.date(2001, 1, 1) is a date, not text"),
        ("amp: !!bool maybe\n", "not valid YAML: 'maybe'"),
        ("1: 2\n", "key 1 is not text"),
        ("model_kwargs: {1: 2}\n", "key 1 is not text"),
        ("lr: 1" + "0" * 2000 + "\n", "0 is too large for a number"),
        (
            "".join(f"k{i}: 1\n" for i in range(8)),
            "unknown option(s) k0, k1, k2, k3, k4 (and 3 more)",
        ),
        ("lr: .nan\n", "option 'lr': expected a number, got NaN"),
        ("lr: 1\nlr: [1,\n", "not valid YAML (line 3, column 1): while parsing a flow node"),
    ],
)
def test_hostile_yaml_gets_a_one_line_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(CXRTrainConfig, path)
    assert str(error.value).startswith(f"{path}")
    assert message in str(error.value)
    assert "\n" not in str(error.value) and len(str(error.value)) < 1000  # values cut short


def test_infinity_is_a_number():
    assert (
        load_config(CXRTrainConfig, None, ["time_limit_minutes=.inf"]).time_limit_minutes
        == math.inf
    )


def test_unreadable_oversized_and_non_utf8_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: cannot be read"):
        load_config(SegTrainConfig, tmp_path)  # a folder
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: \d+ bytes; a configuration file may have"):
        load_config(SegTrainConfig, big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"lr: 0.1\ndataset: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin.yaml: line 2: not UTF-8 text \(byte 0xe9\)"):
        load_config(SegTrainConfig, latin)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbflr: 0.1\n")
    assert load_config(SegTrainConfig, bom).lr == 0.1


def test_a_key_given_twice_is_named_with_its_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1.0e-3\npreprocessing:\n  spacing: [1, 1, 1]\n  spacing: [2, 2, 2]\n")
    with pytest.raises(ConfigError, match=r"run.yaml: .*line 4.*key 'spacing' is given twice"):
        load_config(SegTrainConfig, path)
    # keys brought in by a YAML merge may be overridden
    values = "model_kwargs:\n  <<: {feature_size: 8, depth: 2}\n  feature_size: 16\n"
    path.write_text(values)
    assert load_config(SegTrainConfig, path).model_kwargs == {"feature_size": 16, "depth": 2}


def test_a_bad_override_is_named_not_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"^override 'lr=abc': option 'lr': expected a number"):
        load_config(SegTrainConfig, path, ["lr=abc"])
    with pytest.raises(ConfigError, match=r"^override 'lrr=1': unknown option\(s\) lrr;"):
        load_config(SegTrainConfig, path, ["lrr=1"])
    path.write_text("lr: abc\n")
    with pytest.raises(ConfigError, match=r"run.yaml: option 'lr': expected a number"):
        load_config(SegTrainConfig, path, ["seed=3"])
