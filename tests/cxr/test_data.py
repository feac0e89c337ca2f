"""CXR reading (DICOM, PNG), gaze heatmaps, the EGD-CXR / REFLACX readers and the synthetic set."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from tests.cxr.dicom_files import write_dicom
from visprior.cxr.data import (
    GazeDataError,
    read_egd_cxr,
    read_reflacx,
    split_per_class,
)
from visprior.cxr.gaze import GazeCache, GazeError, gaze_heatmap
from visprior.cxr.io import CXRReadError, read_cxr
from visprior.cxr.synthetic import write_synthetic_egd


def test_dicom_full_range_of_the_stored_bits(tmp_path):
    pixels = np.array([[0, 1024], [2048, 4095]])
    image = read_cxr(write_dicom(tmp_path / "a.dcm", pixels, bits=12))
    np.testing.assert_allclose(image, pixels / 4095, atol=1e-6)
    assert image.dtype == np.float32


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 1024], [2048, 4095]])
    image = read_cxr(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image, 1 - pixels / 4095, atol=1e-6)


def test_window_from_the_header(tmp_path):
    # window centre 2048, width 1024: values 1536..2560 span the output, outside clip
    pixels = np.array([[1000, 1536], [2048, 3000]])
    image = read_cxr(write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=2048, WindowWidth=1024))
    assert image[0, 0] == 0.0 and image[1, 1] == 1.0
    assert image[1, 0] == pytest.approx(0.5, abs=0.01)
    assert image[0, 1] == pytest.approx(0.0, abs=0.01)


def test_png_8_and_16_bit(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "a.png"), [[0, 1]])
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "b.png"), [[0, 1]])


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(CXRReadError, match="broken.dcm: not a readable DICOM"):
        read_cxr(bad)
    with pytest.raises(CXRReadError, match="missing.png: no such file"):
        read_cxr(tmp_path / "missing.png")
    (tmp_path / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(CXRReadError, match="x.png: not a readable image"):
        read_cxr(tmp_path / "x.png")


def test_real_radiograph_from_pydicom_data():
    from pydicom.data import get_testdata_file

    image = read_cxr(get_testdata_file("RG1_UNCR.dcm"))
    assert image.shape == (1955, 1841)
    # MONOCHROME1, inverted: the lung fields (dark) are darker than the spine (bright)
    lungs = image[700:1100, 300:700].mean()
    spine = image[700:1100, 880:960].mean()
    assert lungs < spine


def test_heatmap_peaks_at_the_fixation_and_sums_durations():
    one = gaze_heatmap([[30, 10]], image_size=(40, 60), sigma=3)
    assert one.shape == (40, 60) and one.max() == 1.0
    assert np.unravel_index(one.argmax(), one.shape) == (10, 30)
    # two fixations, the second three times as long: it dominates
    two = gaze_heatmap([[10, 10], [50, 30]], (40, 60), sigma=3, durations=[1, 3])
    assert two[30, 50] == 1.0 and two[10, 10] == pytest.approx(1 / 3, rel=0.01)


def test_heatmap_on_the_cam_grid_is_area_averaged():
    full = gaze_heatmap([[5, 5], [60, 40]], (64, 64), sigma=4)
    small = gaze_heatmap([[5, 5], [60, 40]], (64, 64), sigma=4, grid=(8, 8))
    pooled = full.reshape(8, 8, 8, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(small, pooled / pooled.max(), atol=1e-5)


def test_heatmap_without_fixations_is_zero():
    assert not gaze_heatmap(np.zeros((0, 2)), (10, 10), sigma=2).any()


def test_fixations_outside_the_image_are_left_out_with_a_warning_naming_file_and_row():
    warning = r"fix.csv: 2 of 3 fixations lie outside the 60 x 40 image \(first: row 7, x=60, y=5\)"
    with pytest.warns(UserWarning, match=warning):
        kept = gaze_heatmap(
            [[10, 10], [60, 5], [-1, 3]], (40, 60), sigma=3, source="fix.csv", lines=[6, 7, 8]
        )
    np.testing.assert_array_equal(kept, gaze_heatmap([[10, 10]], (40, 60), sigma=3))
    # all outside: the coordinates are not this image's pixels, which is an error
    with pytest.raises(GazeError, match=r"fix.csv: 1 of 1 fixations lie outside .* row 4"):
        gaze_heatmap([[60, 5]], (40, 60), source="fix.csv", lines=[4])
    with pytest.raises(GazeError, match=r"fix.csv: row 3: fixation \(x=nan, y=5\) is not finite"):
        gaze_heatmap([[1, 1], [np.nan, 5]], (40, 60), source="fix.csv", lines=[2, 3])
    with pytest.raises(GazeError, match="row 1: duration -1"):
        gaze_heatmap([[1, 1], [2, 2]], (40, 60), durations=[1, -1])


def test_heatmap_cache_reuses_and_separates_keys(tmp_path):
    cache = GazeCache(tmp_path / "cache")
    points = np.array([[10.0, 10.0]])
    first = cache.heatmap(points, (40, 40), 3, (5, 5))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    np.testing.assert_array_equal(cache.heatmap(points, (40, 40), 3, (5, 5)), first)
    cache.heatmap(points, (40, 40), 4, (5, 5))  # another sigma: another file
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))


def _write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_synthetic_set_reads_back_with_the_egd_reader(tmp_path):
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        root = write_synthetic_egd(tmp_path / "synth", cases_per_class=4, size=64, seed=3)
    assert "SYNTHETIC DATA" in (root / "README.txt").read_text()
    data = read_egd_cxr(root)
    assert data.classes == ["Normal", "CHF", "pneumonia"]
    assert data.counts() == {"Normal": 4, "CHF": 4, "pneumonia": 4}
    for case in data.cases:
        assert case.image.is_file() and case.fixations.shape[1] == 2
        assert len(case.durations) == len(case.fixations) == len(case.lines)
        assert set(case.masks) == {"heart", "lungs"} and len(case.masks["lungs"]) == 2
        assert (case.fixations >= 0).all() and (case.fixations < 64).all()
    # same seed, same data
    with pytest.warns(UserWarning, match="SYNTHETIC"):
        again = write_synthetic_egd(tmp_path / "again", cases_per_class=4, size=64, seed=3)
    assert (again / "fixations.csv").read_text() == (root / "fixations.csv").read_text()


def test_synthetic_writer_never_writes_over_other_data(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty and not a synthetic set"):
        write_synthetic_egd(tmp_path, cases_per_class=1, size=32)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def _egd(
    tmp_path, sheet_rows, fixation_rows, header=("dicom_id", "path", "Normal", "CHF", "pneumonia")
):
    root = tmp_path / "egd"
    _write_csv(root / "master_sheet.csv", header, sheet_rows)
    _write_csv(
        root / "fixations.csv", ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"], fixation_rows
    )
    images = tmp_path / "mimic"
    for row in sheet_rows:
        path = images / row[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    return root, images


def test_egd_reader_groups_fixations_and_keeps_their_lines(tmp_path):
    root, images = _egd(
        tmp_path,
        [["a", "p1/a.png", 1, 0, 0], ["b", "p2/b.png", 0, 0, 1]],
        [["b", 1, 2, 0.5], ["a", 3, 4, 0.25], ["b", 5, 6, 1.0]],
    )
    data = read_egd_cxr(root, images_root=images)
    a, b = data.cases
    assert (a.label, b.label) == (0, 2)
    np.testing.assert_array_equal(b.fixations, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(b.durations, [0.5, 1.0])
    np.testing.assert_array_equal(b.lines, [2, 4])
    assert b.image == images / "p2" / "b.png"


def test_egd_reader_errors_name_file_and_row(tmp_path):
    root, images = _egd(tmp_path, [["a", "a.png", 1, 1, 0]], [["a", 1, 2, 0.5]])
    with pytest.raises(
        GazeDataError, match=r"master_sheet.csv: row 2 \(dicom_id a\): expected exactly one class"
    ):
        read_egd_cxr(root, images_root=images)
    root, images = _egd(tmp_path, [["a", "a.png", 1, 0, 0]], [["a", "left", 2, 0.5]])
    with pytest.raises(
        GazeDataError, match=r"fixations.csv: row 2: X_ORIGINAL = 'left' is not a number"
    ):
        read_egd_cxr(root, images_root=images)
    root, images = _egd(
        tmp_path, [["a", "a.png", 1, 0]], [], header=("dicom_id", "path", "Normal", "CHF")
    )
    with pytest.raises(GazeDataError, match=r"master_sheet.csv: missing column\(s\) 'pneumonia'"):
        read_egd_cxr(root, images_root=images)
    root, images = _egd(tmp_path, [["a", "a.png", 1, 0, 0]], [])
    with pytest.raises(GazeDataError, match=r"row 2 \(dicom_id a\): image not found"):
        read_egd_cxr(root, images_root=tmp_path / "elsewhere")


def test_reflacx_reader_labels_by_highest_grade(tmp_path):
    root = tmp_path / "reflacx" / "main_data"
    images = tmp_path / "mimic"
    header = ["id", "dicom_id", "image", "eye_tracking_data_discarded", "Consolidation", "Edema"]
    rows = [
        ["P1", "d1", "d1.png", "False", 4, 2],
        ["P2", "d2", "d2.png", "False", 0, 3],
        ["P3", "d3", "d3.png", "False", 0, 0],
        ["P4", "d4", "d4.png", "True", 5, 0],
    ]
    _write_csv(root / "metadata_phase_1.csv", header, rows)
    for row in rows:
        images.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / row[2])
        _write_csv(
            root / row[0] / "fixations.csv",
            ["timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position"],
            [[0.0, 0.5, 1, 2], [0.5, 1.5, 3, 4]],
        )
    data = read_reflacx(tmp_path / "reflacx", images, classes=["Consolidation", "Edema"])
    assert data.classes == ["Consolidation", "Edema", "Normal"]
    assert [(c.case_id, c.label) for c in data.cases] == [("P1", 0), ("P2", 1), ("P3", 2)]
    np.testing.assert_allclose(data.cases[0].durations, [0.5, 1.0])
    with pytest.raises(GazeDataError, match="no column 'Atelectasis'"):
        read_reflacx(tmp_path / "reflacx", images, classes=["Atelectasis"])


def test_train_fraction_keeps_a_share_of_each_class_and_leaves_the_test_part(tmp_path):
    import dataclasses

    from visprior.cxr.config import CXRTrainConfig
    from visprior.cxr.data import GazeCase, GazeDataset, subsample_per_class
    from visprior.cxr.train import _split

    cases = [GazeCase(f"{k}-{i}", tmp_path, k) for k in range(3) for i in range(20)]
    kept = subsample_per_class(cases, 0.25, seed=3)
    assert [sum(c.label == k for c in kept) for k in range(3)] == [5, 5, 5]
    assert [c.case_id for c in subsample_per_class(cases, 0.25, seed=3)] == [
        c.case_id for c in kept
    ]
    assert {c.case_id for c in subsample_per_class(cases, 0.25, seed=4)} != {
        c.case_id for c in kept
    }
    assert subsample_per_class(cases, 0.01, seed=0) and len(subsample_per_class(cases, 1.0)) == 60
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="train_fraction must lie in"):
            subsample_per_class(cases, bad)
    data = GazeDataset(["a", "b", "c"], cases)
    config = CXRTrainConfig(dataset=str(tmp_path))
    full = _split(config, data, tmp_path / "full")
    (tmp_path / "small").mkdir()
    small = _split(dataclasses.replace(config, train_fraction=0.5), data, tmp_path / "small")
    ids = lambda part: [c.case_id for c in part]  # noqa: E731
    assert len(small["train"]) == 21 and set(ids(small["train"])) <= set(ids(full["train"]))
    assert ids(small["val"]) == ids(full["val"]) and ids(small["test"]) == ids(full["test"])


def test_split_per_class_is_70_10_20_and_deterministic(tmp_path):
    from visprior.cxr.data import GazeCase

    cases = [GazeCase(f"{k}-{i}", tmp_path, k) for k in range(3) for i in range(20)]
    train, val, test = split_per_class(cases, seed=1)
    for part, share in ((train, 14), (val, 2), (test, 4)):
        assert [sum(c.label == k for c in part) for k in range(3)] == [share] * 3
    assert {c.case_id for c in train + val + test} == {c.case_id for c in cases}
    assert [c.case_id for c in split_per_class(cases, seed=1)[2]] == [c.case_id for c in test]
    assert [c.case_id for c in split_per_class(cases, seed=2)[2]] != [c.case_id for c in test]
