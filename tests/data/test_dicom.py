"""DICOM series: found, checked from their headers, read in position order with their rescale and
their grid; real series from pydicom's test data and series written from known volumes."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pydicom
import pytest
from monai.data import PydicomReader
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLosslessSV1, generate_uid

from tests.dicom_series import compress_jpeg_lossless, pydicom_series, quantised, write_series
from visprior.data.dicom import (
    DicomSeriesError,
    dicom_cases,
    find_series,
    match_channels,
    read_series,
)
from visprior.data.dicom_seg import ABNORMAL_STRUCTURES, ANATOMICAL_STRUCTURES, property_codes
from visprior.seg.transforms import LoadVolumesd

AFFINE = np.array(
    [[0.8, 0.0, 0.0, -10.0], [0.0, 0.9, 0.0, 20.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1.0]]
)


def _volume(shape=(6, 5, 4), seed=0):
    return np.random.default_rng(seed).normal(0, 200, shape).astype(np.float32)


def _monai_read(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(reader=PydicomReader(), image_only=True)(str(folder))


def test_a_real_ct_series_reads_in_position_order_with_its_rescale():
    """pydicom's CT5N: five axial slices numbered head to foot, stored with intercept -1024."""
    [series] = find_series(pydicom_series("CT5N"))
    assert series.description == "SmartScore - Gated 0.5 sec"
    assert series.shape == (16, 16, 5)
    positions = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in series.files]
    assert positions == sorted(positions)  # foot to head: along the normal (0, 0, 1)
    np.testing.assert_allclose(np.diag(series.affine)[:3], [-0.488281, -0.488281, 2.5], rtol=1e-5)
    volume = read_series(series)
    first = pydicom.dcmread(series.files[0])
    expected = first.pixel_array.T.astype(np.float32) * float(first.RescaleSlope)
    np.testing.assert_array_equal(volume[:, :, 0], expected + float(first.RescaleIntercept))
    # MONAI's PydicomReader stacks by InstanceNumber: the same voxels and grid, slices reversed
    theirs = _monai_read(pydicom_series("CT5N"))
    np.testing.assert_array_equal(np.asarray(theirs)[:, :, ::-1], volume)
    flipped = np.asarray(theirs.affine) @ np.diag([1.0, 1.0, -1.0, 1.0])
    flipped[:3, 3] += np.asarray(theirs.affine)[:3, 2] * 4
    np.testing.assert_allclose(flipped, series.affine, atol=1e-4)


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("CT2", "161 missing slice(s) between 17106 and 17136 (202.5 mm apart, 1.25 mm elsewhere)"),
        ("CT2N", "mixed series, slices in different orientations"),
        ("MR700", "mixed series, slices in different orientations"),
    ],
)
def test_real_broken_series_are_refused_naming_the_series(folder, message):
    with pytest.raises(DicomSeriesError) as error:
        find_series(pydicom_series(folder))
    text = str(error.value)
    assert message in text
    assert text.startswith("series '") and str(pydicom_series(folder)) in text
    assert "\n" not in text


def test_a_written_series_reads_back_to_its_volume_and_affine(tmp_path):
    volume = _volume()
    write_series(volume, AFFINE, tmp_path / "s", instance_numbers=[3, 1, 4, 2])
    (tmp_path / "s" / "README").write_text("not a DICOM file")
    [series] = find_series(tmp_path)
    assert series.shape == volume.shape
    np.testing.assert_allclose(series.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(read_series(series), quantised(volume))


def test_slices_in_instance_order_read_as_monai_reads_them(tmp_path):
    """Where InstanceNumber follows position, MONAI's own reader gives the same array and grid."""
    volume = _volume()
    write_series(volume, AFFINE, tmp_path / "s")
    [series] = find_series(tmp_path / "s")
    theirs = _monai_read(tmp_path / "s")
    np.testing.assert_array_equal(np.asarray(theirs), read_series(series))
    np.testing.assert_allclose(np.asarray(theirs.affine), series.affine, atol=1e-5)


def test_slope_and_intercept_apply_per_slice(tmp_path):
    volume = _volume((4, 3, 2))
    paths = write_series(volume, AFFINE, tmp_path, slope=1.0, intercept=0.0)
    second = pydicom.dcmread(paths[1])
    second.RescaleSlope, second.RescaleIntercept = "2", "-100"
    second.save_as(paths[1])
    [series] = find_series(tmp_path)
    read = read_series(series)
    np.testing.assert_array_equal(read[:, :, 0], np.round(volume[:, :, 0]))
    np.testing.assert_array_equal(read[:, :, 1], np.round(volume[:, :, 1]) * 2 - 100)


def test_compressed_slices_decode_to_the_stored_values(tmp_path):
    """pydicom's real CT slice in JPEG 2000 equals its uncompressed twin; a written series in
    JPEG Lossless (GDCM decodes it; pydicom alone cannot) reads back unchanged."""
    for name in ("693_J2KR.dcm", "693_UNCR.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(get_testdata_file(name), tmp_path / name)
    [compressed] = find_series(tmp_path / "693_J2KR.dcm")
    [plain] = find_series(tmp_path / "693_UNCR.dcm")
    assert compressed.shape == (512, 512, 1)
    np.testing.assert_array_equal(read_series(compressed), read_series(plain))
    volume = _volume()
    paths = write_series(volume, AFFINE, tmp_path / "jpeg")
    compress_jpeg_lossless(paths)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    [series] = find_series(tmp_path / "jpeg")
    np.testing.assert_array_equal(read_series(series), quantised(volume))


def _move_slice(path, offset_mm):
    dataset = pydicom.dcmread(path)
    x, y, z = (float(v) for v in dataset.ImagePositionPatient)
    dataset.ImagePositionPatient = [x, y, z + offset_mm]
    dataset.save_as(path)


def test_missing_duplicate_and_unequal_slices_are_refused(tmp_path):
    volume = _volume((4, 3, 6))
    paths = write_series(volume, AFFINE, tmp_path / "missing", description="gap")
    paths[2].unlink()
    paths[3].unlink()
    with pytest.raises(DicomSeriesError, match=r"'gap' .*: 2 missing slice\(s\) between "):
        find_series(tmp_path / "missing")

    paths = write_series(volume, AFFINE, tmp_path / "uneven", description="uneven")
    _move_slice(paths[3], 0.8)
    with pytest.raises(
        DicomSeriesError,
        match=r"'uneven' .*: unequal slice spacing, 3.3 mm between slice002.dcm and slice003",
    ):
        find_series(tmp_path / "uneven")

    paths = write_series(volume, AFFINE, tmp_path / "twice", description="two phases")
    _move_slice(paths[3], -2.5)
    with pytest.raises(DicomSeriesError, match=r"'two phases' .*: mixed series, .* one position"):
        find_series(tmp_path / "twice")


def test_a_multiframe_object_and_a_series_without_geometry_are_refused(tmp_path):
    paths = write_series(_volume((4, 3, 2)), AFFINE, tmp_path / "frames", description="mf")
    dataset = pydicom.dcmread(paths[0])
    dataset.NumberOfFrames = 2
    dataset.save_as(paths[0])
    with pytest.raises(DicomSeriesError, match="multi-frame .* of 2 frames"):
        find_series(tmp_path / "frames")
    paths = write_series(_volume((4, 3, 2)), AFFINE, tmp_path / "flat", description="flat")
    dataset = pydicom.dcmread(paths[1])
    del dataset.ImagePositionPatient
    dataset.save_as(paths[1])
    with pytest.raises(DicomSeriesError, match=r"'flat' .*: slice001.dcm lacks a usable"):
        find_series(tmp_path / "flat")


def test_a_damaged_file_is_named(tmp_path):
    paths = write_series(_volume((4, 3, 2)), AFFINE, tmp_path)
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:200])  # the file meta information only
    with pytest.raises(DicomSeriesError, match="slice000.dcm: a DICOM image without an image"):
        find_series(tmp_path)
    paths[0].write_bytes(data[:-10])  # pixel data cut short: found, then refused when read
    [series] = find_series(tmp_path)
    with pytest.raises(DicomSeriesError, match="cannot decode the pixels of slice000.dcm"):
        read_series(series)


def _study(tmp_path, descriptions, folders=None):
    """One case folder holding a series per description, in ``folders`` when given."""
    case = tmp_path / "patient1"
    for index, description in enumerate(descriptions):
        where = case / (folders[index] if folders else "")
        where.mkdir(parents=True, exist_ok=True)
        write_series(
            _volume((4, 3, 2), seed=index),
            AFFINE,
            where / f"series{index}",
            description=description,
            series_uid=generate_uid(),
        )
    return case


def test_channels_are_matched_by_series_description(tmp_path):
    case = _study(tmp_path, ["ep2d_diff_ADC", "localizer", "t2_tse_tra"])
    cases = dicom_cases(tmp_path, ["T2", "ADC"])
    assert list(cases) == ["patient1"]
    assert [s.description for s in cases["patient1"]] == ["t2_tse_tra", "ep2d_diff_ADC"]
    # the case folder given itself: the same case
    assert [s.description for s in dicom_cases(case, ["T2", "ADC"])["patient1"]] == [
        "t2_tse_tra",
        "ep2d_diff_ADC",
    ]


def test_channels_are_matched_by_folder_name_or_index(tmp_path):
    _study(tmp_path, ["a", "b"], folders=["0001", "0000"])
    [first, second] = dicom_cases(tmp_path, ["T2", "ADC"])["patient1"]
    assert (first.description, second.description) == ("b", "a")


def test_a_channel_matching_no_series_or_several_is_refused(tmp_path):
    _study(tmp_path / "none", ["t2 axial", "diffusion"])
    with pytest.raises(DicomSeriesError) as error:
        dicom_cases(tmp_path / "none", ["T2", "ADC"])
    assert "case 'patient1': channel 1 ('ADC') matches none of its 2 series" in str(error.value)
    assert "'diffusion' in " in str(error.value)
    _study(tmp_path / "two", ["CT soft tissue", "CT bone"])
    with pytest.raises(DicomSeriesError, match=r"channel 0 \('CT'\) matches 2 of its 2 series"):
        dicom_cases(tmp_path / "two", ["CT"])


def test_one_series_per_subfolder_is_one_case_each(tmp_path):
    for name in ("b", "a"):
        write_series(_volume((4, 3, 2)), AFFINE, tmp_path / name / "dicom", description=name)
    cases = dicom_cases(tmp_path, ["CT"])
    assert list(cases) == ["a", "b"]
    assert [s.description for s in cases["a"]] == ["a"]


def test_load_volumes_stacks_channel_series(tmp_path):
    case = _study(tmp_path, ["T2", "ADC"])
    [t2, adc] = match_channels("patient1", find_series(case), ["T2", "ADC"], case)
    loaded = LoadVolumesd(keys="image", ensure_channel_first=True, image_only=True)(
        {"image": [t2, adc], "case": "patient1"}
    )["image"]
    assert tuple(loaded.shape) == (2, *t2.shape)
    np.testing.assert_array_equal(np.asarray(loaded[1]), read_series(adc))
    np.testing.assert_allclose(np.asarray(loaded.affine), t2.affine, atol=1e-6)
    # a folder holding one series loads as well (as in a bundle's datalist)
    one = LoadVolumesd(keys="image", ensure_channel_first=True, image_only=True)(
        {"image": str(t2.folder)}
    )["image"]
    np.testing.assert_array_equal(np.asarray(one[0]), read_series(t2))


def test_every_coded_class_name_resolves_in_snomed():
    for table in (ANATOMICAL_STRUCTURES, ABNORMAL_STRUCTURES):
        for phrase in table:
            category, kind = property_codes(phrase)
            assert category.scheme_designator == kind.scheme_designator == "SCT"
            assert kind.meaning != "Tissue"
    assert [c.meaning for c in property_codes("Left Kidney")] == ["Anatomical Structure", "Kidney"]
    assert property_codes("pancreas_tumour")[1].meaning == "Neoplasm"
    assert property_codes("liver tumors")[1].meaning == "Neoplasm"
    assert [c.meaning for c in property_codes("ball")] == ["Tissue", "Tissue"]
    assert property_codes("heartbeat")[1].meaning == "Tissue"  # whole words only
