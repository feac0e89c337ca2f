"""SYNTHETIC chest X-rays with gaze, in EGD-CXR's layout: for tests, demos and benchmarks only.

No open chest X-ray set comes with eye tracking, so this module draws one. The images are NOT
radiographs and nothing learned on them says anything about patients. Every image is a cartoon
thorax: a bright body, two dark lung fields, a bright mediastinum and spine, a heart shadow
to the image's right of the midline (the patient's left), faint rib arcs and noise. Classes:

- ``Normal``: nothing added.
- ``CHF``: the heart is enlarged (cardiothoracic ratio above 0.5) and the lung fields near it
  are hazy.
- ``pneumonia``: a soft, bright consolidation at a random place inside one lung.

Each image gets a reading: fixations along a path over both lungs and the heart, plus
clusters of longer fixations on the finding (the consolidation, the heart border), as a
radiologist's gaze would concentrate. Masks of the heart and each lung are written like
EGD-CXR's, so the localisation score can be computed. Everything is a function of the seed.

Written files (read back with :func:`visprior.cxr.data.read_egd_cxr`)::

    <folder>/README.txt                        says that the data is synthetic
    <folder>/master_sheet.csv                  dicom_id, path, Normal, CHF, pneumonia, synthetic
    <folder>/fixations.csv                     DICOM_ID, X_ORIGINAL, Y_ORIGINAL, FPOGD
    <folder>/images/<id>.png                   8-bit grey
    <folder>/audio_segmentation_transcripts/<id>/heart.png, left_lung.png, right_lung.png
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visprior.cxr.data import EGD_CLASSES

__all__ = ["SyntheticCase", "draw_case", "prepare_synthetic_folder", "write_synthetic_egd"]

NOTICE = (
    "SYNTHETIC DATA. These images were drawn by visprior.cxr.synthetic: cartoon thoraxes "
    "with made-up findings and simulated gaze. They are not radiographs and must not be used "
    "to draw any clinical conclusion.\n"
)


@dataclass
class SyntheticCase:
    image: np.ndarray  # float32 (size, size) in [0, 1]
    label: int  # index into EGD_CLASSES
    fixations: np.ndarray  # (N, 2) x, y in pixels
    durations: np.ndarray  # (N,) seconds
    masks: dict[str, np.ndarray]  # heart, left_lung, right_lung (bool)


def draw_case(label: int, size: int, rng: np.random.Generator) -> SyntheticCase:
    """One synthetic image of class ``label`` (0 Normal, 1 CHF, 2 pneumonia) with its gaze."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    jitter = lambda spread: rng.uniform(-spread, spread)  # noqa: E731
    centre = 0.5 + jitter(0.02)
    # lungs: image left = patient's right lung
    lung_r = _ellipse(rows, cols, 0.48 + jitter(0.02), centre - 0.19, 0.30, 0.13)
    lung_l = _ellipse(rows, cols, 0.48 + jitter(0.02), centre + 0.19, 0.30, 0.12)
    body = _ellipse(rows, cols, 0.52, centre, 0.50, 0.44)
    heart_scale = rng.uniform(1.25, 1.45) if label == 1 else rng.uniform(0.85, 1.05)
    heart = _ellipse(
        rows, cols, 0.66 + jitter(0.02), centre + 0.06, 0.12 * heart_scale, 0.11 * heart_scale
    )
    spine = np.abs(cols - centre) < 0.035

    image = 0.15 + 0.45 * _soft(body, rows, cols)
    lungs = lung_r | lung_l
    image = np.where(lungs, image - 0.30 + 0.05 * rows, image)
    for k in range(8):  # rib arcs over the lung fields
        y0 = 0.22 + 0.07 * k + jitter(0.01)
        arc = np.abs(rows - (y0 + 0.25 * (cols - centre) ** 2)) < 0.008
        image = np.where(arc & lungs, image + 0.10, image)
    image = np.where(spine, image + 0.25, image)
    image = np.where(heart, np.maximum(image, 0.62 + jitter(0.03)), image)

    finding: tuple[float, float] | None = None  # (row, col) in [0, 1]
    if label == 1:  # perihilar haze beside the enlarged heart
        haze = np.exp(-(((rows - 0.55) / 0.10) ** 2 + ((cols - centre) / 0.20) ** 2))
        image = image + 0.12 * haze * lungs
        finding = (0.66, centre + 0.06 + 0.11 * heart_scale)  # the heart's left border
    elif label == 2:  # a consolidation inside one lung
        lung = lung_r if rng.random() < 0.5 else lung_l
        candidates = np.argwhere(lung & ~heart)
        r, c = candidates[rng.integers(len(candidates))] / size
        radius = rng.uniform(0.035, 0.06)
        blob = np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * radius**2))
        image = image + rng.uniform(0.18, 0.28) * blob * lung
        finding = (float(r), float(c))
    image = image + rng.normal(0, 0.03, image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)

    points, durations = _reading(rng, centre, finding)
    points = np.clip(points, 0, 0.999) * size
    masks = {"heart": heart, "left_lung": lung_l, "right_lung": lung_r}
    return SyntheticCase(image, label, points[:, ::-1].copy(), durations, masks)


def write_synthetic_egd(
    folder: str | Path, cases_per_class: int = 30, size: int = 256, seed: int = 0
) -> Path:
    """Write a synthetic EGD-CXR-layout dataset and return its folder.

    Refuses to write into a non-empty folder that is not an earlier synthetic set (its
    ``README.txt`` says so), so no user data is ever overwritten.
    """
    from PIL import Image

    folder = Path(folder)
    prepare_synthetic_folder(folder, NOTICE, "SYNTHETIC chest X-rays")
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(EGD_CLASSES)), cases_per_class)
    rng.shuffle(labels)
    sheet, fixations = [], []
    for index, label in enumerate(labels.tolist()):
        case_id = f"synthetic-{index:05d}"
        case = draw_case(label, size, rng)
        Image.fromarray(np.round(case.image * 255).astype(np.uint8)).save(
            folder / "images" / f"{case_id}.png"
        )
        mask_dir = folder / "audio_segmentation_transcripts" / case_id
        mask_dir.mkdir(parents=True, exist_ok=True)
        for name, mask in case.masks.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / f"{name}.png")
        one_hot = {name: int(i == label) for i, name in enumerate(EGD_CLASSES)}
        sheet.append({"dicom_id": case_id, "path": f"images/{case_id}.png", **one_hot})
        for (x, y), duration in zip(case.fixations, case.durations, strict=True):
            fixations.append((case_id, f"{x:.1f}", f"{y:.1f}", f"{duration:.3f}"))
    with open(folder / "master_sheet.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["dicom_id", "path", *EGD_CLASSES, "synthetic"])
        writer.writeheader()
        writer.writerows({**row, "synthetic": 1} for row in sheet)
    with open(folder / "fixations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"])
        writer.writerows(fixations)
    return folder


# The first words of every notice a generated set's README.txt starts with.
_GENERATED_SET_PREFIXES = ("SYNTHETIC DATA", "SEMI-SYNTHETIC DATA")


def prepare_synthetic_folder(folder: Path, notice: str, what: str) -> None:
    """Check that ``folder`` is empty or an earlier generated set, warn that ``what`` (not real
    data) is being written, and write the set's ``README.txt``.

    Raises:
        FileExistsError: a non-empty folder that no generator wrote; nothing is touched.
    """
    readme = folder / "README.txt"
    earlier_set = readme.is_file() and readme.read_text().startswith(_GENERATED_SET_PREFIXES)
    if folder.exists() and any(folder.iterdir()) and not earlier_set:
        raise FileExistsError(f"{folder}: not empty and not a synthetic set; use an empty folder")
    warnings.warn(f"{folder}: writing {what} (not real data)", stacklevel=3)
    folder.mkdir(parents=True, exist_ok=True)
    readme.write_text(notice)


def _ellipse(rows, cols, r0, c0, half_height, half_width) -> np.ndarray:
    return ((rows - r0) / half_height) ** 2 + ((cols - c0) / half_width) ** 2 <= 1.0


def _soft(mask: np.ndarray, rows, cols) -> np.ndarray:
    """A mask with a gentle vertical gradient, so the body is not a flat disc."""
    return mask * (0.8 + 0.2 * rows)


def _reading(rng: np.random.Generator, centre: float, finding) -> tuple[np.ndarray, np.ndarray]:
    """Fixations as (row, col) in [0, 1]: a reading path, then clusters on the finding."""
    path = [
        (0.30, centre - 0.2),
        (0.45, centre - 0.22),
        (0.62, centre - 0.2),
        (0.30, centre + 0.2),
        (0.45, centre + 0.22),
        (0.62, centre + 0.2),
        (0.66, centre + 0.06),
        (0.40, centre),
    ]
    points = [np.asarray(p) + rng.normal(0, 0.03, 2) for p in path]
    durations = list(rng.uniform(0.1, 0.35, len(points)))
    if finding is not None:
        n = rng.integers(8, 14)
        points += list(np.asarray(finding) + rng.normal(0, 0.025, (n, 2)))
        durations += list(rng.uniform(0.3, 0.8, n))
    return np.asarray(points, dtype=np.float64), np.asarray(durations)
