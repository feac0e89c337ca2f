"""MedNeXt and SegResNet through ``seg train`` / ``seg predict``, and ``seg train --upkern``."""

from __future__ import annotations

import nibabel as nib
import pytest

from tests.seg.test_pipeline import make_dataset
from visprior.cli import main
from visprior.engine.checkpoint import load_checkpoint

COMMON = [
    "--roi", "32", "32", "32", "--iterations", "2", "--set", "val_every=2",
    "--set", "num_workers=0", "--set", "folds=3",
]  # fmt: skip


def _train(dataset, run, model: str, kwargs: str, *extra: str) -> int:
    args = ["seg", "train", str(dataset), "-o", str(run), "--model", model, *COMMON]
    return main([*args, "--set", f"model_kwargs={{{kwargs}}}", *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("new-networks"))


@pytest.fixture(scope="module")
def mednext_k3(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("mednext") / "k3"
    assert _train(dataset, run, "mednext_s", "feature_size: 4, kernel_size: 3") == 0
    return run


@pytest.mark.parametrize(
    "model, kwargs", [("segresnet", "feature_size: 8"), ("mednext_s", "feature_size: 4")]
)
def test_train_and_predict(dataset, tmp_path, model, kwargs):
    run = tmp_path / "run"
    assert _train(dataset, run, model, kwargs) == 0
    out = tmp_path / "pred"
    assert main(["seg", "predict", str(run), str(dataset / "imagesTr"), "-o", str(out)]) == 0
    for case in ("a", "b", "c"):
        assert nib.load(out / f"{case}.nii.gz").shape == (24, 24, 20)


def test_upkern_starts_k5_from_the_k3_run(dataset, mednext_k3, tmp_path, capsys):
    init = mednext_k3 / "checkpoints" / "last.pt"
    run = tmp_path / "k5"
    kwargs = "feature_size: 4, kernel_size: 5"
    assert _train(dataset, run, "mednext_s", kwargs, "--init", str(init), "--upkern") == 0
    out = capsys.readouterr().out
    assert f"initialised from {init}; new: none" in out
    assert "UpKern: 26 depth-wise kernels resampled" in out
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["model"]["kwargs"]["kernel_size"] == 5
    assert state["state_dict"]["enc_stages.0.0.conv1.weight"].shape[-1] == 5
    out = tmp_path / "pred"
    assert main(["seg", "predict", str(run), str(dataset / "imagesTr"), "-o", str(out)]) == 0


def test_without_upkern_other_kernel_sizes_start_fresh(dataset, mednext_k3, tmp_path, capsys):
    init = mednext_k3 / "checkpoints" / "last.pt"
    run = tmp_path / "k5"
    assert (
        _train(dataset, run, "mednext_s", "feature_size: 4, kernel_size: 5", "--init", str(init))
        == 0
    )
    assert "26 depth-wise kernels of another size start fresh; --upkern resamples them" in (
        capsys.readouterr().out
    )


def test_init_and_upkern_refusals_come_before_the_run_folder(dataset, mednext_k3, tmp_path, capsys):
    run = tmp_path / "r"
    assert _train(dataset, run, "mednext_s", "feature_size: 4", "--upkern") == 2
    assert "--upkern needs --init CHECKPOINT" in capsys.readouterr().err
    assert _train(dataset, run, "mednext_s", "feature_size: 4", "--init", str(mednext_k3)) == 2
    err = capsys.readouterr().err
    assert f"--init takes a checkpoint file, and {mednext_k3} is a folder" in err
    assert str(mednext_k3 / "checkpoints" / "best.pt") in err
    assert (
        _train(dataset, run, "mednext_s", "feature_size: 4", "--init", str(tmp_path / "x.pt")) == 2
    )
    assert "--init: checkpoint not found" in capsys.readouterr().err
    assert not run.exists()


def test_a_kernel_size_for_segresnet_is_refused_by_name(dataset, tmp_path, capsys):
    assert _train(dataset, tmp_path / "r", "segresnet", "kernel_size: 5") == 2
    assert "'segresnet' takes no kernel_size" in capsys.readouterr().err
