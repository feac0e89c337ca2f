"""``visprior seg``: check, train, resume, fine-tune, predict and evaluate, end to end on a
tiny generated nnU-Net dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from visprior import get_model
from visprior.cli import main
from visprior.engine.checkpoint import load_checkpoint

SHAPE = (24, 24, 20)


def _write(array: np.ndarray, path: Path, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def make_dataset(root: Path, cases=("a", "b", "c"), labels=None) -> Path:
    """Bright cubes (label 1) and dim balls (label 2) on a noisy background."""
    labels = labels or {"background": 0, "cube": 1, "ball": 2}
    folder = root / "Dataset009_Toy"
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    grid = np.indices(SHAPE)
    for i, case in enumerate(cases):
        label = np.zeros(SHAPE, dtype=np.uint8)
        start = 4 + i
        label[start : start + 7, start : start + 7, 4:11] = 1
        centre = np.array([17, 16, 13])[:, None, None, None]
        label[((grid - centre) ** 2).sum(0) <= 9] = 2
        image = rng.normal(0, 0.1, SHAPE) + 1.0 + np.array([0.0, 1.5, -0.6])[label]
        _write(image.astype(np.float32), folder / "imagesTr" / f"{case}_0000.nii.gz", affine)
        _write(label, folder / "labelsTr" / f"{case}.nii.gz", affine)
    description = {
        "channel_names": {"0": "MRI"},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


TRAIN = [
    "--model", "unet", "--roi", "32", "32", "32", "--iterations", "4",
    "--set", "model_kwargs={feature_size: 4, num_res_units: 1}",
    "--set", "val_every=2", "--set", "num_workers=0", "--set", "folds=3",
    "--set", "lr=1e-3", "--set", "rotate_range=0.2",
]  # fmt: skip


def train_toy_run(root: Path, train_args: list[str] = TRAIN) -> tuple[Path, Path]:
    """The toy dataset in ``root`` and a run trained on it with ``train_args``."""
    dataset = make_dataset(root)
    run = root / "run"
    assert main(["seg", "train", str(dataset), "-o", str(run), *train_args]) == 0
    return dataset, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_toy_run(tmp_path_factory.mktemp("pipeline"))


def test_check_reports_a_clean_dataset(tmp_path, capsys):
    dataset = make_dataset(tmp_path)
    assert main(["seg", "check", str(dataset)]) == 0
    assert "no problems found in 3 cases" in capsys.readouterr().out


def test_check_fails_on_a_broken_dataset(tmp_path, capsys):
    dataset = make_dataset(tmp_path)
    (dataset / "labelsTr" / "b.nii.gz").unlink()
    assert main(["seg", "check", str(dataset)]) == 1
    assert "b" in capsys.readouterr().out


def test_training_writes_the_run_folder(trained):
    _, run = trained
    for name in ("config.yaml", "splits.json", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["iteration"] == 4
    assert last["labels"] == {"background": 0, "cube": 1, "ball": 2}
    assert last["preprocessing"]["intensity"] == "mri"  # resolved from the channel name
    splits = json.loads((run / "splits.json").read_text())
    assert sorted(sum((fold["val"] for fold in splits), [])) == ["a", "b", "c"]
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"val_mean_dice", "val_dice_cube", "val_dice_ball"} <= set(rows[0])


def test_an_existing_run_is_never_overwritten(trained, capsys):
    dataset, run = trained
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert main(["seg", "train", str(dataset), "-o", str(run), *TRAIN]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_continues_to_the_new_iteration_count(trained, tmp_path):
    dataset, run = trained
    copy = tmp_path / "run"
    _copy_tree(run, copy)
    assert main(["seg", "train", "--resume", str(copy), "--iterations", "6"]) == 0
    assert load_checkpoint(copy / "checkpoints" / "last.pt")["iteration"] == 6
    with open(copy / "metrics.csv") as handle:
        iterations = [int(r["iteration"]) for r in csv.DictReader(handle)]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 6


def test_fine_tuning_replaces_the_head_for_a_new_label_set(trained, tmp_path, capsys):
    _, run = trained
    labels = {"background": 0, "cube": 1, "ball": 2, "extra": 3}
    dataset = make_dataset(tmp_path, labels=labels)
    init = str(run / "checkpoints" / "last.pt")
    args = ["seg", "train", str(dataset), "-o", str(tmp_path / "ft"), *TRAIN, "--init", init]
    assert main(args) == 0
    out = capsys.readouterr().out
    replaced = out.split("; new: ")[1].splitlines()[0].split(", ")
    # Exactly the weights whose shape depends on the number of classes start fresh.
    kwargs = {"in_channels": 1, "feature_size": 4, "num_res_units": 1}
    old = get_model("unet", out_channels=3, **kwargs).state_dict()
    new = get_model("unet", out_channels=4, **kwargs).state_dict()
    assert sorted(replaced) == sorted(k for k in new if new[k].shape != old[k].shape)
    tuned = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert tuned["model"]["kwargs"]["out_channels"] == 4


def test_predict_and_evaluate(trained, tmp_path, capsys):
    dataset, run = trained
    out = tmp_path / "pred"
    images = dataset / "imagesTr"
    assert main(["seg", "predict", str(run), str(images), "-o", str(out), "--probabilities"]) == 0
    for case in ("a", "b", "c"):
        prediction = nib.load(out / f"{case}.nii.gz")
        source = nib.load(images / f"{case}_0000.nii.gz")
        assert prediction.shape == source.shape
        np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-6)
        assert prediction.get_data_dtype() == np.uint8
    assert main(["seg", "predict", str(run), str(images), "-o", str(out)]) == 2
    assert "a.nii.gz exists; pass --force to replace it" in capsys.readouterr().err
    assert main(["seg", "predict", str(run), str(images), "-o", str(out), "--force"]) == 0

    report = tmp_path / "eval"
    labels = dataset / "labelsTr"
    args = ["seg", "evaluate", str(out), str(labels), "--dataset", str(dataset), "-o", str(report)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "cube" in table and "ball" in table and "mean foreground" in table
    summary = json.loads((report / "summary.json").read_text())
    assert 0.0 <= summary["mean_foreground_dice"] <= 1.0
    assert main(args) == 2  # an earlier evaluation is replaced only with --force
    assert "per_case.csv exists; pass --force" in capsys.readouterr().err
    (report / "summary.json").write_text("{}")
    assert main([*args, "--force"]) == 0
    assert json.loads((report / "summary.json").read_text()) == summary


def test_bad_arguments_are_named(tmp_path, capsys):
    assert main(["seg", "train"]) == 2
    assert "give a dataset folder" in capsys.readouterr().err
    assert main(["seg", "train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "config file not found" in capsys.readouterr().err
    dataset = make_dataset(tmp_path)
    args = ["seg", "train", str(dataset), "-o", str(tmp_path / "r"), "--model", "repuxnet"]
    assert main([*args, "--roi", "40", "40", "40"]) == 2
    assert "roi_size (40, 40, 40) must be divisible by 16" in capsys.readouterr().err


def _copy_tree(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source, target)


def test_a_cut_short_file_stops_training_before_anything_is_written(tmp_path, capsys):
    dataset = make_dataset(tmp_path)
    label = dataset / "labelsTr" / "b.nii.gz"
    label.write_bytes(label.read_bytes()[:60])
    run = tmp_path / "run"
    assert main(["seg", "train", str(dataset), "-o", str(run), *TRAIN]) == 2
    error = capsys.readouterr().err
    assert "b: cannot read labelsTr/b.nii.gz" in error
    assert not run.exists()


def test_two_arms_with_one_seed_draw_identical_crops(tmp_path):
    """Studies pair arms by seed: the networks' different draws at initialisation must not
    shift the data order, the crops or the augmentation."""
    import torch

    def crops_seen(arm: str, model_kwargs: str, seed: int = 0) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        def record(module, inputs):
            if type(module).__name__ == "UNet" and module.training:
                seen.append(inputs[0].detach().clone())

        handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
        try:
            args = [*TRAIN, "--set", f"seed={seed}"]
            args[args.index("model_kwargs={feature_size: 4, num_res_units: 1}")] = model_kwargs
            train_toy_run(tmp_path / arm, args)
        finally:
            handle.remove()
        return seen

    narrow = crops_seen("narrow", "model_kwargs={feature_size: 4, num_res_units: 1}")
    wide = crops_seen("wide", "model_kwargs={feature_size: 8, num_res_units: 2}")
    assert len(narrow) == len(wide) == 4  # one batch per iteration
    for a, b in zip(narrow, wide, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the control: another seed draws other crops, so the equality above is not vacuous
    other_seed = crops_seen("other-seed", "model_kwargs={feature_size: 4, num_res_units: 1}", 1)
    assert not torch.equal(narrow[0], other_seed[0])
