"""The settings of the semi-real radiographs that ``cxr synth --source ct`` renders: light,
so that the command line can build its parser without loading the renderer."""

from __future__ import annotations

from dataclasses import dataclass

from visprior.cxr.data import EGD_CLASSES

__all__ = ["MARKERS", "FindingSettings", "RenderSettings"]

MARKERS = ("portable", "letter", "none")


@dataclass(frozen=True)
class FindingSettings:
    """How large and dense the simulated findings are; :meth:`at` maps one difficulty knob
    (0 obvious, 1 barely there) onto every range."""

    consolidation_radius_mm: tuple[float, float] = (14.0, 26.0)
    consolidation_density: tuple[float, float] = (0.35, 0.7)  # share of the way to soft tissue
    cardiomegaly_scale: tuple[float, float] = (1.12, 1.3)  # CHF's heart, in the axial plane
    normal_heart_scale: tuple[float, float] = (1.0, 1.06)  # everyone else's
    effusion_height_mm: tuple[float, float] = (12.0, 30.0)
    haze_density: tuple[float, float] = (0.15, 0.35)

    @classmethod
    def at(cls, difficulty: float) -> FindingSettings:
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
        # one scale for every finding: 1 at difficulty 0, down to 0.3 at difficulty 1
        strength = 1.0 - 0.7 * difficulty

        def scaled(low: float, high: float) -> tuple[float, float]:
            return (low * strength, high * strength)

        def heart(low: float, high: float) -> tuple[float, float]:
            return (1 + (low - 1) * strength, 1 + (high - 1) * strength)

        base = cls()
        return cls(
            consolidation_radius_mm=scaled(*base.consolidation_radius_mm),
            consolidation_density=scaled(*base.consolidation_density),
            cardiomegaly_scale=heart(*base.cardiomegaly_scale),
            normal_heart_scale=base.normal_heart_scale,
            effusion_height_mm=scaled(*base.effusion_height_mm),
            haze_density=scaled(*base.haze_density),
        )


@dataclass
class RenderSettings:
    """Everything that shapes a rendered set besides the seed and the number of images."""

    size: int = 256
    spacing_mm: float = 2.0  # the CT's working grid
    # 0 obvious findings, 1 barely visible (FindingSettings.at); at 0.7 a ResNet18 CAM
    # classifier scored a test AUC of 0.83 on 300 images at 128 px, 0.93 at 0.5
    difficulty: float = 0.7
    marker: str = "portable"  # a MARKERS entry
    marker_class: str = "pneumonia"
    rho: float = 0.9  # P(marker | marker_class) in the set; P(marker | other) = 1 - rho
    gaze_noise: float = 0.02  # fixation scatter, as a share of the image side
    marker_gaze_share: float = 0.1  # share of a reading's fixations on a present marker
    photons: tuple[float, float] = (1.5e4, 6e4)  # detector exposure per pixel, low to high

    def check(self) -> None:
        if self.marker not in MARKERS:
            raise ValueError(f"marker must be one of {', '.join(MARKERS)}; got {self.marker!r}")
        if self.marker_class not in EGD_CLASSES:
            raise ValueError(
                f"marker_class must be one of {', '.join(EGD_CLASSES)}; got {self.marker_class!r}"
            )
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must lie in [0, 1], got {self.rho}")
        if not 0.0 <= self.marker_gaze_share < 1.0:
            raise ValueError(f"marker_gaze_share must lie in [0, 1), got {self.marker_gaze_share}")
        if self.gaze_noise < 0:
            raise ValueError(f"gaze_noise must be >= 0, got {self.gaze_noise}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32 px, got {self.size}")
        FindingSettings.at(self.difficulty)
