"""End to end on a tiny synthetic set: train (with and without gaze), resume, evaluate, predict."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.cxr.configs import small_cxr_config
from visprior.cli import main
from visprior.cxr.evaluate import evaluate_run, load_classifier, predict_images
from visprior.cxr.synthetic import write_synthetic_egd
from visprior.cxr.train import train_cxr
from visprior.engine.checkpoint import load_checkpoint
from visprior.metrics.classification import classification_metrics, localisation_hit


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        return write_synthetic_egd(folder / "egd", cases_per_class=10, size=64, seed=0)


_config = small_cxr_config


def test_train_resume_evaluate_predict(synthetic, tmp_path):
    run = tmp_path / "run"
    result = train_cxr(_config(synthetic, run))
    steps_per_epoch = 21 // 8  # 7 training cases per class, drop_last
    assert result.iteration == 2 * steps_per_epoch
    split = json.loads((run / "split.json").read_text())
    assert [len(split[p]) for p in ("train", "val", "test")] == [21, 3, 6]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["task"] == "cxr" and last["classes"] == ["Normal", "CHF", "pneumonia"]
    assert last["map_grid"] == [2, 2]
    assert len(list((run / "cache").glob("*.npy"))) == 24  # train + val gaze maps
    with open(run / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["val_loss"]]
    assert len(rows) == 2 and all(float(r["k"]) > 0 for r in rows)

    # resume two more epochs: continues from the last iteration with the same split
    resumed = train_cxr(_config(synthetic, run, epochs=4), resume=True)
    assert resumed.iteration == 4 * steps_per_epoch
    assert json.loads((run / "split.json").read_text()) == split
    with pytest.raises(ValueError, match="already holds a run"):
        train_cxr(_config(synthetic, run))

    metrics = evaluate_run(run, "test", overlays=2)
    assert metrics["n"] == 6 and 0.0 <= metrics["auc"] <= 1.0
    assert sum(map(sum, metrics["confusion_matrix"])) == 6
    # the test part has 2 CHF (heart) and 2 pneumonia (lungs) cases with regions
    assert sum(n for _, n in metrics["hits_per_class"].values()) == 4
    saved = json.loads((run / "evaluation" / "test" / "metrics.json").read_text())
    assert saved["auc"] == pytest.approx(metrics["auc"])
    assert len(list((run / "evaluation" / "test" / "overlays").glob("*.png"))) == 2
    # a second evaluation replaces the first only when asked to
    before = (run / "evaluation" / "test" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match=r"test/metrics.json exists; pass --force"):
        evaluate_run(run, "test", overlays=2)
    assert (run / "evaluation" / "test" / "metrics.json").read_bytes() == before
    assert evaluate_run(run, "test", overlays=2, overwrite=True)["auc"] == metrics["auc"]

    classifier = load_classifier(run)
    images = sorted((synthetic / "images").glob("*.png"))[:2]
    table = predict_images(classifier, images, tmp_path / "predicted")
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [str(p) for p in images]
    for row in rows:
        total = sum(float(row[f"p_{c}"]) for c in classifier.classes)
        assert total == pytest.approx(1.0, abs=1e-4)
    assert len(list((tmp_path / "predicted").glob("*_cam.png"))) == 2
    with pytest.raises(FileExistsError, match="pass --force"):
        predict_images(classifier, images, tmp_path / "predicted")
    # a.png's overlay would be a_cam.png, itself an input here
    inputs = [tmp_path / "mine" / "a.png", tmp_path / "mine" / "a_cam.png"]
    inputs[0].parent.mkdir()
    for path in inputs:
        path.write_bytes(images[0].read_bytes())
    with pytest.raises(FileExistsError, match="a_cam.png would replace the input .*a_cam.png"):
        predict_images(classifier, inputs, tmp_path / "mine", overwrite=True)
    assert inputs[1].read_bytes() == images[0].read_bytes()


def test_no_gaze_trains_a_plain_cam_classifier(synthetic, tmp_path):
    torch.manual_seed(0)
    result = train_cxr(_config(synthetic, tmp_path / "plain", use_gaze=False, epochs=1))
    state = load_checkpoint(result.last_checkpoint)["state_dict"]
    # the gaze scalars were not in the loss: never updated from their initial values
    for name in ("lg_s_c", "lg_s_d", "lg_k"):
        assert float(state[f"loss_weights.{name}"]) == 0.0


def test_gaze_scalars_learn_when_gaze_is_used(synthetic, tmp_path):
    result = train_cxr(_config(synthetic, tmp_path / "gaze", epochs=1))
    state = load_checkpoint(result.last_checkpoint)["state_dict"]
    for name in ("lg_s_c", "lg_s_d", "lg_k"):
        assert float(state[f"loss_weights.{name}"]) != 0.0, name


def test_cli_predicts_the_real_radiograph(synthetic, tmp_path):
    from pydicom.data import get_testdata_file

    run = tmp_path / "run"
    assert (
        main(
            [
                "cxr",
                "train",
                str(synthetic),
                "-o",
                str(run),
                "--model",
                "ggcam-resnet18",
                "--epochs",
                "1",
                "--set",
                "image_size=64",
                "--set",
                "batch_size=8",
                "--set",
                "gaze_sigma_px=4",
            ]
        )
        == 0
    )
    radiograph = get_testdata_file("RG1_UNCR.dcm")
    assert main(["cxr", "predict", str(run), radiograph, "-o", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "predictions.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["predicted"] in ("Normal", "CHF", "pneumonia")
    assert (tmp_path / "out" / "RG1_UNCR_cam.png").stat().st_size > 0


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["cxr", "train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r")]) == 2
    assert "nowhere/master_sheet.csv: no such file" in capsys.readouterr().err
    assert main(["cxr", "predict", str(tmp_path), "x.png", "-o", str(tmp_path / "o")]) == 2
    assert "no checkpoints/best.pt" in capsys.readouterr().err


def test_classification_metrics_on_a_known_case():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 2, 1])
    scores = classification_metrics(probabilities, labels, ["a", "b", "c"])
    # class a: positives {0.8}, negatives {0.2, 0.3, 0.5} -> AUC 1; b: {0.7, 0.4} vs {0.1, 0.3}
    # -> 1; c: {0.4} vs {0.1, 0.1, 0.1} -> 1
    assert scores["auc_per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert scores["accuracy"] == 0.75
    assert scores["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    flipped = classification_metrics(1 - probabilities, labels, ["a", "b", "c"])
    assert flipped["auc_per_class"]["a"] == 0.0
    missing = classification_metrics(probabilities[:2], labels[:2], ["a", "b", "c"])
    assert missing["auc_skipped"] == ["c"] and missing["auc"] == 1.0


def test_localisation_hit_uses_the_3x3_neighbourhood():
    cam = np.zeros((7, 7))
    cam[3, 3] = 1.0
    region = np.zeros((7, 7), bool)
    region[5, 5] = True
    assert not localisation_hit(cam, region)  # two cells away
    region[4, 4] = True
    assert localisation_hit(cam, region)  # diagonal neighbour
    cam[:] = 0
    cam[0, 0] = 1  # at the border the neighbourhood is cut, not wrapped
    region[:] = False
    region[6, 6] = True
    assert not localisation_hit(cam, region)


@pytest.mark.parametrize("tasks", ["both", "saliency", "classification"])
def test_mtunet_trains_on_the_shared_engine(synthetic, tmp_path, tasks):
    config = _config(
        synthetic,
        tmp_path / tasks,
        model="mtunet",
        model_kwargs={"feature_size": 4},
        tasks=tasks,
        epochs=1,
    )
    result = train_cxr(config)
    state = load_checkpoint(result.last_checkpoint)
    assert state["map_grid"] == [64, 64]  # saliency at the input's resolution
    with open(tmp_path / tasks / "metrics.csv") as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["val_loss"]]
    assert float(row["val_kl"]) > 0
    sigmas = [float(state["state_dict"][f"loss_weights.{n}"]) for n in ("lg_s_c", "lg_s_s")]
    # the uncertainty weights move only when both tasks are in the loss
    assert (sigmas != [0.0, 0.0]) == (tasks == "both")
    if tasks != "both":
        return
    metrics = evaluate_run(tmp_path / tasks, "test", overlays=1)
    saliency = metrics["saliency"]
    assert saliency["images"] == 6
    assert 0 < saliency["sim"]["mean"] <= 1 and 0 <= saliency["auc_judd"]["median"] <= 1
    with open(tmp_path / tasks / "evaluation" / "test" / "saliency_per_image.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    from pydicom.data import get_testdata_file

    classifier = load_classifier(tmp_path / tasks)
    predict_images(classifier, [get_testdata_file("RG1_UNCR.dcm")], tmp_path / "out")
    assert (tmp_path / "out" / "RG1_UNCR_saliency.png").stat().st_size > 0


def test_cli_evaluates_mtunet_seeds_with_saliency_medians(synthetic, tmp_path, capsys):
    from visprior.cxr.train import train_seeds

    config = _config(
        synthetic, tmp_path / "seeds", model="mtunet", model_kwargs={"feature_size": 4}, epochs=1
    )
    train_seeds(config, 2)
    assert main(["cxr", "evaluate", str(tmp_path / "seeds"), "--overlays", "0"]) == 0
    printed = capsys.readouterr().out
    assert "seed_0: macro AUC" in printed and "seed_1: macro AUC" in printed
    assert "median kl:" in printed and "median auc_judd:" in printed
    summary = json.loads((tmp_path / "seeds" / "seeds_test.json").read_text())
    assert set(summary["median_saliency"]) == {"kl", "cc", "sim", "nss", "auc_judd"}
