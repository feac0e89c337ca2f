"""Every command that reads a checkpoint reads it without running code in it, and weights that
do not fit their network are refused with the keys and shapes that differ."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.seg.test_pipeline import make_dataset
from visprior.cli import main
from visprior.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_weights,
    read_weights_only,
)
from visprior.engine.config import save_config
from visprior.nets.registry import get_model
from visprior.seg.config import SegTrainConfig


class RunsCode:
    """Unpickling this runs Python: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def write_hostile_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, "task": "segmentation", "payload": RunsCode(marker)}
    torch.save(state, path)
    return path


def test_the_hostile_checkpoint_really_runs_code_when_unpickled(tmp_path):
    """The fixture is not harmless: an unrestricted torch.load would run it."""
    marker = tmp_path / "ran"
    path = write_hostile_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def _segmentation_commands(root: Path, checkpoint: Path) -> dict[str, list[str]]:
    dataset = make_dataset(root)
    image = dataset / "imagesTr" / "a_0000.nii.gz"
    run = root / "seg-run"
    write_hostile_checkpoint(run / "checkpoints" / "last.pt", checkpoint.with_name("ran"))
    save_config(
        SegTrainConfig(
            dataset=str(dataset), output=str(run), model="unet", roi_size=(32,) * 3, folds=3
        ),
        run / "config.yaml",
    )
    tiny = ["--model", "unet", "--roi", "32", "32", "32", "--set", "folds=3"]
    return {
        "seg predict": ["seg", "predict", str(checkpoint), str(image), "-o", str(root / "out")],
        "seg train --init": [
            "seg", "train", str(dataset), "-o", str(root / "fresh"), "--init", str(checkpoint),
            *tiny,
        ],
        "seg train --resume": ["seg", "train", "--resume", str(run)],
    }  # fmt: skip


def _cxr_commands(root: Path, checkpoint: Path) -> dict[str, list[str]]:
    image = root / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(image)
    run = root / "cxr-run"
    write_hostile_checkpoint(run / "checkpoints" / "best.pt", checkpoint.with_name("ran"))
    return {
        "cxr predict": ["cxr", "predict", str(checkpoint), str(image), "-o", str(root / "out")],
        "cxr evaluate": ["cxr", "evaluate", str(run)],
        "simplify measure": ["simplify", "measure", str(checkpoint), str(image)],
        "simplify shrink": ["simplify", "shrink", str(run), "-o", str(root / "smaller")],
    }


@pytest.mark.parametrize(
    "command",
    [
        "seg predict",
        "seg train --init",
        "seg train --resume",
        "cxr predict",
        "cxr evaluate",
        "simplify measure",
        "simplify shrink",
    ],
)
def test_no_command_runs_code_from_a_checkpoint(tmp_path, capsys, command):
    marker = tmp_path / "ran"
    checkpoint = write_hostile_checkpoint(tmp_path / "evil.pt", marker)
    commands = _segmentation_commands(tmp_path, checkpoint) | _cxr_commands(tmp_path, checkpoint)
    assert main(commands[command]) == 2
    error = capsys.readouterr().err
    assert "refused because loading it would run code" in error and ".pt" in error
    assert "global" in error and "exec" in error  # the global it would have called
    assert not marker.exists()


class RunsShellCommand:
    """Unpickling this runs a shell command through ``os.system``: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_blocked_module_is_named_in_the_refusal(tmp_path):
    """torch words an os.system payload differently ("... whose module posix is blocked");
    the refusal still says that loading would run code, and names the global."""
    marker = tmp_path / "ran"
    path = tmp_path / "shell.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": RunsShellCommand(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        read_weights_only(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused because loading it would run code")
    assert "system" in message  # posix.system or os.system, as the platform pickles it
    assert not marker.exists()


def test_another_label_count_names_the_tensors_and_shapes():
    trained = get_model("unet", in_channels=1, out_channels=3, feature_size=4, num_res_units=1)
    more_labels = get_model("unet", in_channels=1, out_channels=4, feature_size=4, num_res_units=1)
    before = {k: v.clone() for k, v in more_labels.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_weights(more_labels, trained.state_dict(), "run/last.pt")
    message = str(caught.value)
    assert message.startswith("run/last.pt: weights do not fit the network (shapes differ: ")
    head = [k for k, v in trained.state_dict().items() if v.shape != before[k].shape]
    assert head and all(name in message for name in head[:4])
    assert f"{tuple(trained.state_dict()[head[0]].shape)} in the checkpoint" in message
    assert f"{tuple(before[head[0]].shape)} in the network" in message
    for name, tensor in more_labels.state_dict().items():  # all or nothing
        assert torch.equal(tensor, before[name])


def test_another_network_names_the_missing_and_unexpected_keys():
    unet = get_model("unet", in_channels=1, out_channels=2, feature_size=4, num_res_units=1)
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))
    with pytest.raises(CheckpointError) as caught:
        load_weights(other, unet.state_dict(), "unet.pt")
    message = str(caught.value)
    assert "missing from the checkpoint: 0.weight, 0.bias" in message
    assert "not in the network: " in message and " more)" in message


def test_resuming_after_the_labels_changed_names_the_head(tmp_path, capsys):
    dataset = make_dataset(tmp_path)
    run = tmp_path / "run"
    train = [
        "--model", "unet", "--roi", "32", "32", "32", "--iterations", "1",
        "--set", "model_kwargs={feature_size: 4, num_res_units: 1}", "--set", "val_every=1",
        "--set", "num_workers=0", "--set", "folds=3",
    ]  # fmt: skip
    assert main(["seg", "train", str(dataset), "-o", str(run), *train]) == 0
    meta = (dataset / "dataset.json").read_text()
    (dataset / "dataset.json").write_text(meta.replace('"ball": 2', '"ball": 2, "rod": 3'))
    label = nib.load(dataset / "labelsTr" / "a.nii.gz")
    assert label.shape  # the dataset is otherwise unchanged
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert main(["seg", "train", "--resume", str(run), "--iterations", "2"]) == 2
    error = capsys.readouterr().err
    assert "last.pt: weights do not fit the network (shapes differ: " in error
    assert "in the checkpoint" in error and "in the network" in error
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
