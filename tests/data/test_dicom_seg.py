"""DICOM Segmentation objects written for a series and read back, without a network."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from tests.data.test_dicom import AFFINE, _volume
from tests.dicom_series import write_series
from visprior.data.dicom import find_series
from visprior.data.dicom_seg import read_segmentation, segment_values, write_segmentation

CLASSES = {"background": 0, "liver": 1, "liver tumour": 3}  # value 2 declared by no class


@pytest.fixture
def series(tmp_path):
    write_series(_volume((7, 5, 4)), AFFINE, tmp_path / "ct")
    [found] = find_series(tmp_path / "ct")
    return found


def test_label_values_with_a_gap_become_consecutive_segments_and_come_back(series, tmp_path):
    assert segment_values(CLASSES) == {1: (1, "liver"), 2: (3, "liver tumour")}
    labels = np.random.default_rng(0).choice([0, 1, 3], size=series.shape).astype(np.uint8)
    labels[:, :, 1] = 0  # an empty slice: no frame is written for it
    path = write_segmentation(labels, series, CLASSES, tmp_path / "out" / "seg.dcm", "repuxnet")
    np.testing.assert_array_equal(read_segmentation(path, series, CLASSES), labels)
    segmentation = hd.seg.segread(path)
    described = [
        (item.SegmentNumber, item.SegmentLabel, item.SegmentedPropertyTypeCodeSequence[0].CodeValue)
        for item in segmentation.SegmentSequence
    ]
    assert described == [(1, "liver", "10200004"), (2, "liver tumour", "108369006")]
    assert segmentation.SegmentSequence[0].SegmentAlgorithmName == "visprior repuxnet"
    assert list((tmp_path / "out").iterdir()) == [path]  # no temporary file left


def test_labels_off_the_grid_or_of_no_class_are_refused(series, tmp_path):
    with pytest.raises(ValueError, match=r"labels of shape \(7, 5, 3\) do not fit its grid"):
        write_segmentation(np.zeros((7, 5, 3), np.uint8), series, CLASSES, tmp_path / "a.dcm", "u")
    labels = np.full(series.shape, 2, np.uint8)
    with pytest.raises(ValueError, match=r"label values \[2\] belong to no class"):
        write_segmentation(labels, series, CLASSES, tmp_path / "b.dcm", "u")
    assert not list(tmp_path.glob("*.dcm"))
