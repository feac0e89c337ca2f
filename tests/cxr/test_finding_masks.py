"""Finding masks (finding.png): read, resized for the network, scored by ``cxr evaluate``; and
the training gaze sources (shuffled maps, masks as gaze)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cxr.configs import small_cxr_config
from visprior.cli import main
from visprior.cxr import train as train_module
from visprior.cxr.config import CXRTrainConfig
from visprior.cxr.data import GazeDataError, read_egd_cxr
from visprior.cxr.dataset import GazeImageDataset, derangement, mask_heatmap
from visprior.cxr.evaluate import evaluate_run, evaluate_seeds, finding_scores, format_report
from visprior.cxr.synthetic import write_synthetic_egd
from visprior.cxr.train import train_cxr, train_seeds
from visprior.engine.config import ConfigError, load_config

SIZE = 64  # pixels of the synthetic images
GRID = (8, 8)  # a cell is 8 x 8 original pixels
SIGMA = 4.0


def _finding_box(index: int) -> tuple[slice, slice]:
    """Each abnormal case's finding: an 8 x 8 block that fills one grid cell, placed by index."""
    row, col = 1 + index % 3, 2 + index % 4
    return slice(8 * row, 8 * row + 8), slice(8 * col, 8 * col + 8)


def _write_mask(path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


@pytest.fixture(scope="module")
def egd(tmp_path_factory):
    """A synthetic set whose CHF and pneumonia cases have a finding.png; Normal ones none."""
    folder = tmp_path_factory.mktemp("findings") / "egd"
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        write_synthetic_egd(folder, cases_per_class=10, size=SIZE, seed=0)
    for index, case in enumerate(read_egd_cxr(folder).cases):
        path = folder / "audio_segmentation_transcripts" / case.case_id / "finding.png"
        if case.label == 0:
            path.unlink(missing_ok=True)
            continue
        mask = np.zeros((SIZE, SIZE), bool)
        mask[_finding_box(index)] = True
        _write_mask(path, mask)
    return folder


def _dataset(cases, classes, **options) -> GazeImageDataset:
    return GazeImageDataset(cases, classes, 32, GRID, SIGMA, **options)


# -- reading -------------------------------------------------------------------------------------


def test_reader_lists_finding_masks_only_where_they_exist(egd):
    data = read_egd_cxr(egd)
    for case in data.cases:
        if case.label == 0:
            assert "finding" not in case.masks
        else:
            assert [p.name for p in case.masks["finding"]] == ["finding.png"]
        assert len(case.masks["lungs"]) == 2  # the anatomy masks are read as before


def test_finding_is_the_area_averaged_mask_at_the_input_size(egd, tmp_path):
    data = read_egd_cxr(egd)
    case = next(c for c in data.cases if c.label == 2)
    mask = np.zeros((SIZE, SIZE), bool)
    # at half size: rows 5-9 of column 0 whole; row 10 and column 1 half covered (they
    # count); their corner (10, 1) a quarter (it does not)
    mask[10:21, 0:3] = True
    _write_mask(tmp_path / "finding.png", mask)
    case = dataclasses.replace(case, masks={**case.masks, "finding": [tmp_path / "finding.png"]})
    (item,) = _dataset([case], data.classes).items
    expected = np.zeros((32, 32), bool)
    expected[5:11, 0:2] = True
    expected[10, 1] = False
    assert item["has_finding"] is True
    assert item["finding"].dtype == torch.bool and item["finding"].shape == (32, 32)
    np.testing.assert_array_equal(item["finding"].numpy(), expected)


def test_a_case_without_finding_file_has_an_empty_finding(egd, tmp_path):
    data = read_egd_cxr(egd)
    normal = next(c for c in data.cases if c.label == 0)
    # an all-zero file marks no finding either
    _write_mask(tmp_path / "empty.png", np.zeros((SIZE, SIZE), bool))
    blank = dataclasses.replace(normal, masks={**normal.masks, "finding": [tmp_path / "empty.png"]})
    for item in _dataset([normal, blank], data.classes).items:
        assert item["has_finding"] is False
        assert item["finding"].dtype == torch.bool and not item["finding"].any()


# -- gaze sources --------------------------------------------------------------------------------


def test_shuffled_gaze_is_a_reproducible_derangement(egd):
    data = read_egd_cxr(egd)
    cases = list(data.cases[:9])
    cases[4] = dataclasses.replace(cases[4], fixations=None, durations=None, lines=None)
    own = _dataset(cases, data.classes)
    first = _dataset(cases, data.classes, gaze_source="shuffled", shuffle_seed=0)
    again = _dataset(cases, data.classes, gaze_source="shuffled", shuffle_seed=0)
    other = _dataset(cases, data.classes, gaze_source="shuffled", shuffle_seed=1)
    with_gaze = [i for i in range(9) if i != 4]
    donors = [first.gaze_from[i] for i in with_gaze]
    assert sorted(donors) == with_gaze  # every map dealt out once, among the cases with gaze
    assert all(donor != i for i, donor in zip(with_gaze, donors, strict=True))
    for i in with_gaze:
        np.testing.assert_array_equal(first[i]["gaze"], own[first.gaze_from[i]]["gaze"])
        assert not torch.equal(first[i]["gaze"], own[i]["gaze"])
    # the case without fixations takes no part
    assert first.gaze_from[4] == -1 and not first[4]["has_gaze"] and not first[4]["gaze"].any()
    assert again.gaze_from == first.gaze_from
    assert other.gaze_from != first.gaze_from
    assert own.gaze_from == [*range(4), -1, *range(5, 9)]


@pytest.mark.parametrize("n", [2, 3, 7])
def test_derangement_moves_every_element(n):
    for seed in range(20):
        order = derangement(n, np.random.default_rng(seed))
        assert sorted(order.tolist()) == list(range(n))
        assert (order != np.arange(n)).all()


def test_mask_gaze_peaks_inside_the_finding_and_is_not_cached(egd, tmp_path):
    data = read_egd_cxr(egd)
    abnormal = [(i, c) for i, c in enumerate(data.cases) if c.label != 0][:6]
    cache = tmp_path / "cache"
    dataset = _dataset([c for _, c in abnormal], data.classes, cache_dir=cache, gaze_source="mask")
    for (index, _), item in zip(abnormal, dataset.items, strict=True):
        rows, cols = _finding_box(index)
        gaze = item["gaze"].numpy()
        assert item["has_gaze"] and gaze.max() == pytest.approx(1.0, rel=1e-6)
        assert np.unravel_index(gaze.argmax(), gaze.shape) == (rows.start // 8, cols.start // 8)
    assert dataset.gaze_from == [-1] * len(abnormal)
    assert not list(cache.glob("*.npy"))


def test_mask_gaze_of_a_normal_case_covers_its_lungs(egd):
    data = read_egd_cxr(egd)
    normal = next(c for c in data.cases if c.label == 0)
    (item,) = _dataset([normal], data.classes, gaze_source="mask").items
    lungs = np.zeros((SIZE, SIZE), bool)
    for path in normal.masks["lungs"]:
        lungs |= np.asarray(Image.open(path).convert("L")) > 0
    expected = mask_heatmap(lungs, GRID, SIGMA, (SIZE, SIZE))
    np.testing.assert_allclose(item["gaze"].numpy(), expected, rtol=1e-6, atol=1e-7)
    heart = np.asarray(Image.open(normal.masks["heart"][0]).convert("L")) > 0
    assert not np.allclose(expected, mask_heatmap(heart, GRID, SIGMA, (SIZE, SIZE)), atol=0.1)
    # the map's mass lies over the lungs: its peak cell holds lung pixels
    peak = np.unravel_index(expected.argmax(), GRID)
    assert lungs[8 * peak[0] : 8 * peak[0] + 8, 8 * peak[1] : 8 * peak[1] + 8].any()


def test_mask_gaze_names_a_case_without_masks(egd):
    data = read_egd_cxr(egd)
    bare = dataclasses.replace(data.cases[0], masks={})
    with pytest.raises(GazeDataError, match=rf"case {bare.case_id} .*gaze_source=mask needs"):
        _dataset([bare], data.classes, gaze_source="mask")
    with pytest.raises(ValueError, match="gaze_source must be one of"):
        _dataset([bare], data.classes, gaze_source="masks")


def test_mask_heatmap_blurs_by_sigma_in_original_pixels():
    mask = np.zeros((64, 64), bool)
    mask[24:32, 24:32] = True  # grid cell (3, 3)
    sharp = mask_heatmap(mask, GRID, 0.8, (64, 64))  # 0.1 cells: no spill at all
    np.testing.assert_allclose(sharp[3, 3], 1.0, rtol=1e-6)
    assert sharp[3, 4] < 1e-6
    # 8 original pixels are one cell: a neighbour gets exp(-1/2) of the peak
    wide = mask_heatmap(mask, GRID, 8.0, (64, 64))
    assert wide[3, 4] / wide[3, 3] == pytest.approx(np.exp(-0.5), rel=0.02)
    # the same sigma on an image twice the size is half as many cells
    half = mask_heatmap(mask, GRID, 8.0, (128, 128))
    assert half[3, 4] / half[3, 3] == pytest.approx(np.exp(-2.0), rel=0.05)
    assert not mask_heatmap(np.zeros((64, 64)), GRID, 8.0, (64, 64)).any()


# -- training ------------------------------------------------------------------------------------


def _config(dataset, output, **changes):
    return small_cxr_config(dataset, output, gaze_sigma_px=SIGMA, epochs=1, **changes)


def test_gaze_source_is_a_config_option():
    config = load_config(CXRTrainConfig, overrides=["gaze_source=shuffled"])
    assert config.gaze_source == "shuffled"
    assert CXRTrainConfig().gaze_source == "fixations"
    with pytest.raises(ConfigError, match="'fixations', 'shuffled', 'mask'"):
        load_config(CXRTrainConfig, overrides=["gaze_source=random"])


@pytest.mark.parametrize("source", ["shuffled", "mask"])
def test_only_the_training_part_gets_the_other_gaze(egd, tmp_path, monkeypatch, source):
    built: list[GazeImageDataset] = []

    class Recorded(GazeImageDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(train_module, "GazeImageDataset", Recorded)
    train_cxr(_config(egd, tmp_path / "run", gaze_source=source, seed=3))
    training, validation = built
    assert validation.gaze_from == list(range(len(validation)))  # its own fixations
    if source == "mask":
        assert set(training.gaze_from) == {-1} and all(i["has_gaze"] for i in training.items)
    else:
        assert sorted(training.gaze_from) == list(range(len(training)))
        assert all(d != i for i, d in enumerate(training.gaze_from))
        redrawn = _dataset(training.cases, ["Normal", "CHF", "pneumonia"], gaze_source=source)
        assert redrawn.gaze_from != training.gaze_from  # drawn from the run's seed (3), not 0


def test_gaze_source_without_gaze_training_is_refused(egd, tmp_path):
    with pytest.raises(ValueError, match="gaze_source=mask .* does not train on gaze"):
        train_cxr(_config(egd, tmp_path / "run", gaze_source="mask", use_gaze=False))


# -- evaluation ----------------------------------------------------------------------------------


def _item(finding: np.ndarray | None) -> dict:
    has = finding is not None
    return {
        "has_finding": has,
        "finding": torch.from_numpy(finding if has else np.zeros((16, 16), bool)),
    }


def test_finding_scores_on_known_cams():
    # 4 x 4 CAMs, 16 px input: a cell is 4 px, the pointing tolerance
    left_half = np.zeros((4, 4))
    left_half[:, :2] = 1.0  # upsampled and thresholded: exactly columns 0-7
    peak_11 = np.zeros((4, 4))
    peak_11[1, 1] = 1.0  # upsampled peak at pixel (5, 5)
    masks = [np.zeros((16, 16), bool) for _ in range(5)]
    masks[0][:, :8] = True  # the CAM's half: IoU 1, peak (0, 0) inside
    masks[1][:, 12:] = True  # the other side: IoU 0, 12 px from the peak
    masks[2][:, :4] = True  # a constant CAM marks and points at nothing
    masks[3][0:2, 5:7] = True  # 4 px above the peak: within one cell
    masks[4][0:1, 6:8] = True  # sqrt(26) px from the peak: beyond it
    cams = np.zeros((6, 2, 4, 4))
    cams[0, 1], cams[1, 1], cams[2, 0] = left_half, left_half, 0.5
    cams[3, 0], cams[4, 0] = peak_11, peak_11
    cams[0, 0] = peak_11  # another class's CAM: not scored
    labels = np.array([1, 1, 0, 0, 0, 1])
    tensors = [*(_item(m) for m in masks), _item(None)]
    scores = finding_scores(tensors, cams, labels, ["a", "b"])
    assert scores["finding_cases"] == 5
    assert scores["finding_hits_per_class"] == {"b": [1, 2], "a": [1, 3]}
    assert scores["finding_hit_rate"] == pytest.approx(2 / 5)
    # IoU: 1, 0, 0, and twice 0: the peak's blob over half its range is rows and columns 4-7,
    # clear of the masks in rows 0-1
    assert scores["finding_iou"] == pytest.approx(1 / 5)
    assert finding_scores([_item(None)], cams[:1], labels[:1], ["a", "b"]) == {}


def test_evaluate_scores_findings_where_the_masks_are(egd, tmp_path, capsys):
    parent = tmp_path / "seeds"
    train_seeds(_config(egd, parent), 2)
    metrics = evaluate_run(parent / "seed_0", overlays=0)
    split = json.loads((parent / "seed_0" / "split.json").read_text())
    labels = {c.case_id: c.label for c in read_egd_cxr(egd).cases}
    abnormal = sum(labels[i] != 0 for i in split["test"])
    assert metrics["finding_cases"] == abnormal
    assert sum(n for _, n in metrics["finding_hits_per_class"].values()) == abnormal
    assert set(metrics["finding_hits_per_class"]) <= {"CHF", "pneumonia"}
    assert 0 <= metrics["finding_hit_rate"] <= 1 and 0 <= metrics["finding_iou"] <= 1
    assert metrics["worst_class_auc"] == min(metrics["auc_per_class"].values())
    report = format_report(metrics)
    assert "finding masks" in report and "worst class" in report

    summary = evaluate_seeds(parent, overwrite=True, overlays=0)
    for key in ("median_finding_iou", "median_finding_hit_rate", "median_worst_class_auc"):
        assert 0 <= summary[key] <= 1, key
    assert "median_finding_iou" in json.loads((parent / "seeds_test.json").read_text())

    # the same run on data without finding.png: scored as before, no finding keys
    plain = tmp_path / "plain"
    shutil.copytree(egd, plain)
    for path in plain.glob("audio_segmentation_transcripts/*/finding.png"):
        path.unlink()
    without = evaluate_run(parent / "seed_0", dataset=str(plain), overlays=0, overwrite=True)
    assert not any(key.startswith("finding") for key in without)
    assert without["auc"] == pytest.approx(metrics["auc"])
    assert "finding masks" not in format_report(without)

    # the command line: the seeds on another set, scored into a folder of their own
    earlier = (parent / "seeds_test.json").read_text()
    out = tmp_path / "elsewhere"
    assert main(["cxr", "evaluate", str(parent), "--dataset", str(egd), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "worst-class AUC" in printed and "median on the finding masks: pointing" in printed
    assert (out / "seed_0" / "metrics.json").is_file() and (out / "seeds_test.json").is_file()
    assert (parent / "seeds_test.json").read_text() == earlier
