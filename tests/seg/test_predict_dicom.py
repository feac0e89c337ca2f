"""``seg predict`` on DICOM series: the labels of the same volume given as NIfTI, on the series'
own grid, whatever its orientation; ``--format dicom-seg`` writing a DICOM Segmentation that
refers to its series and reads back to the same label map."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from tests.deploy.test_bundle import TRAIN
from tests.dicom_series import LPS_FROM_RAS, pydicom_series, quantised, write_series
from tests.seg.test_pipeline import train_toy_run
from tests.seg.test_predict import _ct_volume, _oblique_affine, _save, _write_checkpoint
from visprior.cli import main
from visprior.data.dicom import find_series, read_series
from visprior.data.dicom_seg import read_segmentation
from visprior.seg.predict import load_predictor, predict_files

SLOPE, INTERCEPT = 1e-3, 0.0  # the toy images lie in about 0..3
LABELS = {"background": 0, "cube": 1, "ball": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_toy_run(tmp_path_factory.mktemp("dicom-predict"), TRAIN)


def _oblique(affine: np.ndarray) -> np.ndarray:
    rotation = np.eye(4)
    rotation[:3, :3] = Rotation.from_euler("xyz", [25, -10, 35], degrees=True).as_matrix()
    return rotation @ affine


GEOMETRIES = {
    # RAS-positive axes: the DICOM rows and columns run from left to right, anterior to
    # posterior's opposite, so ImageOrientationPatient is (-1, 0, 0, 0, -1, 0)
    "lps-flipped": lambda affine: affine,
    # slices numbered head to foot: sorting by position reverses the files' order
    "descending": lambda affine: affine @ np.diag([1.0, 1.0, -1.0, 1.0]),
    "oblique": _oblique,
}


def _case_volume(dataset, case: str = "a"):
    image = nib.load(dataset / "imagesTr" / f"{case}_0000.nii.gz")
    return quantised(np.asarray(image.dataobj, np.float32), SLOPE, INTERCEPT), image.affine


def _to_grid(labels: np.ndarray, affine: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``labels`` (on ``affine``) on the voxel order of ``target`` when the two grids differ by
    axis flips only; asserts that they cover the same voxels to 1e-3 mm."""
    flips = [axis for axis in range(3) if affine[:3, axis] @ target[:3, axis] < 0]
    flipped = np.flip(labels, flips) if flips else labels
    moved = affine.copy()
    for axis in flips:
        moved[:3, 3] += affine[:3, axis] * (labels.shape[axis] - 1)
        moved[:3, axis] *= -1
    np.testing.assert_allclose(moved, target, atol=1e-3)
    return flipped


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_a_dicom_series_gets_the_labels_of_the_same_volume_as_nifti(trained, tmp_path, geometry):
    dataset, run = trained
    volume, affine = _case_volume(dataset)
    affine = GEOMETRIES[geometry](affine)
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    nib.save(nib.Nifti1Image(volume, affine), nifti / "a_0000.nii.gz")
    write_series(volume, affine, tmp_path / "dicom" / "a", SLOPE, INTERCEPT)
    (tmp_path / "dicom" / "a" / "notes.txt").write_text("not DICOM: skipped")
    for source in ("nifti", "dicom"):
        command = [
            "seg",
            "predict",
            str(run),
            str(tmp_path / source),
            "-o",
            str(tmp_path / f"{source}-out"),
        ]
        assert main(command) == 0
    from_nifti = nib.load(tmp_path / "nifti-out" / "a.nii.gz")
    from_dicom = nib.load(tmp_path / "dicom-out" / "a.nii.gz")
    [series] = find_series(tmp_path / "dicom" / "a")
    np.testing.assert_allclose(from_dicom.affine, series.affine, atol=1e-4)
    labels = _to_grid(np.asarray(from_dicom.dataobj), from_dicom.affine, from_nifti.affine)
    expected = np.asarray(from_nifti.dataobj)
    assert len(np.unique(expected)) > 1  # a map worth comparing
    np.testing.assert_array_equal(labels, expected)


def test_dicom_seg_refers_to_its_series_and_reads_back_to_the_labels(trained, tmp_path):
    dataset, run = trained
    volume, affine = _case_volume(dataset, "b")
    affine = _oblique(affine)
    write_series(volume, affine, tmp_path / "dicom" / "b", SLOPE, INTERCEPT)
    command = ["seg", "predict", str(run), str(tmp_path / "dicom")]
    assert main([*command, "-o", str(tmp_path / "out")]) == 0
    seg_command = [*command, "-o", str(tmp_path / "seg"), "--format", "dicom-seg"]
    assert main([*seg_command, "--probabilities"]) == 0
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [
        "b.dcm",
        "b_probabilities.nii.gz",
    ]
    [series] = find_series(tmp_path / "dicom" / "b")
    probabilities = nib.load(tmp_path / "seg" / "b_probabilities.nii.gz")
    assert probabilities.shape == (*series.shape, 3)
    np.testing.assert_allclose(probabilities.affine, series.affine, atol=1e-4)
    expected = np.asarray(nib.load(tmp_path / "out" / "b.nii.gz").dataobj)
    np.testing.assert_array_equal(
        read_segmentation(tmp_path / "seg" / "b.dcm", series, LABELS), expected
    )

    segmentation = hd.seg.segread(tmp_path / "seg" / "b.dcm")
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    assert segmentation.StudyInstanceUID == source.StudyInstanceUID
    assert segmentation.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert [item.SegmentLabel for item in segmentation.SegmentSequence] == ["cube", "ball"]
    # geometry: highdicom's own volume (slices, rows, columns; LPS), flipped onto the series'
    # grid, is the label map on the same voxels
    volume = segmentation.get_volume(combine_segments=True)
    lps_affine = (LPS_FROM_RAS @ series.affine)[:, [2, 1, 0, 3]]
    on_grid = _to_grid(volume.array, volume.affine, lps_affine)
    np.testing.assert_array_equal(on_grid.transpose(2, 1, 0), expected)


def test_dicom_seg_refuses_nifti_input_and_writes_nothing(trained, tmp_path, capsys):
    dataset, run = trained
    out = tmp_path / "out"
    command = ["seg", "predict", str(run), str(dataset / "imagesTr"), "-o", str(out)]
    assert main([*command, "--format", "dicom-seg"]) == 2
    error = capsys.readouterr().err
    assert "case 'a': --format dicom-seg needs DICOM input, and a_0000.nii.gz is NIfTI" in error
    assert not out.exists() or not any(out.iterdir())


def test_a_real_ct_series_predicts_on_its_own_grid(trained, tmp_path):
    """pydicom's five-slice CT, numbered head to foot, against the NIfTI made from it."""
    _, run = trained
    folder = pydicom_series("CT5N")
    [series] = find_series(folder)
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    nib.save(nib.Nifti1Image(read_series(series), series.affine), nifti / "ct5n_0000.nii.gz")
    assert main(["seg", "predict", str(run), str(folder), "-o", str(tmp_path / "d")]) == 0
    assert main(["seg", "predict", str(run), str(nifti), "-o", str(tmp_path / "n")]) == 0
    from_dicom = nib.load(tmp_path / "d" / "CT5N.nii.gz")
    from_nifti = nib.load(tmp_path / "n" / "ct5n.nii.gz")
    assert from_dicom.shape == (16, 16, 5)
    np.testing.assert_allclose(from_dicom.affine, series.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))


def test_a_broken_series_is_named_before_any_prediction(trained, tmp_path, capsys):
    _, run = trained
    out = tmp_path / "out"
    assert main(["seg", "predict", str(run), str(pydicom_series("CT2")), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert "series 'Routine Brain'" in error
    assert "161 missing slice(s) between 17106 and 17136" in error
    assert not out.exists()


def test_a_two_channel_run_takes_one_series_per_channel(tmp_path):
    """Series matched to the channels "T2" and "ADC" by description, a localizer left out: the
    labels of the same two channels given as NIfTI files.

    The NIfTI files take the series' affine, which differs from the one written by the
    precision of DICOM's decimal strings (< 1e-5 mm): with resampling, MONAI's ``Spacing``
    places its output grid by an absolute 1e-8 test on the input's corners
    (``compute_shape_offset``), and on this oblique grid such a difference moves the working
    grid by 0.14 mm and changes labels of an untrained network near its class boundaries.
    """
    checkpoint = _write_checkpoint(tmp_path / "model.pt", ("T2", "ADC"), intensity="mri")
    predictor = load_predictor(checkpoint)
    affine = _oblique_affine()
    t2, adc = quantised(_ct_volume(0)), quantised(_ct_volume(1))
    study = tmp_path / "dicom" / "patient1"
    write_series(adc, affine, study / "s2", description="ep2d_diff_ADC")
    write_series(t2, affine, study / "s1", description="t2_tse_tra")
    write_series(t2[:, :, :3], np.eye(4), study / "s0", description="localizer")
    [series] = [s for s in find_series(study) if s.description == "t2_tse_tra"]
    np.testing.assert_allclose(series.affine, affine, atol=1e-5)
    nifti = tmp_path / "nifti"
    for index, volume in enumerate((t2, adc)):
        _save(nifti / f"patient1_{index:04d}.nii.gz", volume, series.affine)
    [from_dicom] = predict_files(predictor, [tmp_path / "dicom"], tmp_path / "d")
    [from_nifti] = predict_files(predictor, [nifti], tmp_path / "n")
    dicom_labels, nifti_labels = nib.load(from_dicom), nib.load(from_nifti)
    np.testing.assert_allclose(dicom_labels.affine, nifti_labels.affine, atol=1e-6)
    expected = np.asarray(nifti_labels.dataobj)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(np.asarray(dicom_labels.dataobj), expected)
