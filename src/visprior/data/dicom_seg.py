"""Label maps as DICOM Segmentation objects (highdicom), and back.

A segmentation is written for the series it was predicted from: frame for frame on its
slices, referring to its images, study and frame of reference, so that a PACS, OHIF or 3D
Slicer shows it over them. It is a ``BINARY`` segmentation, the kind every viewer reads, with
one segment per foreground class of the run. Each segment is labelled with the class name
and coded with SNOMED CT where a concept fits the name (``"liver"``, ``"left kidney"``,
``"tumour"``...; see :func:`property_codes`), else as generic tissue.

Example:
    >>> write_segmentation(labels, series, {"background": 0, "liver": 1}, "case.dcm", "repuxnet")
    >>> np.array_equal(read_segmentation("case.dcm", series, {"background": 0, "liver": 1}), labels)
    True
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from visprior.data.dicom import DicomSeries, DicomSeriesError
from visprior.fileio import atomic_path

__all__ = ["property_codes", "read_segmentation", "segment_values", "write_segmentation"]

# Class-name words to SNOMED CT concepts, by pydicom's keyword. Abnormal structures are tried
# first, so that "liver tumour" is a neoplasm rather than a liver.
ABNORMAL_STRUCTURES = {
    "tumor": "Neoplasm",
    "tumour": "Neoplasm",
    "neoplasm": "Neoplasm",
    "cancer": "Neoplasm",
    "lesion": "Lesion",
    "mass": "Mass",
    "cyst": "Cyst",
    "nodule": "Nodule",
    "edema": "Edema",
    "oedema": "Edema",
    "necrosis": "Necrosis",
}
ANATOMICAL_STRUCTURES = {
    "adrenal gland": "AdrenalGland",
    "aorta": "Aorta",
    "blood vessel": "BloodVessel",
    "vessel": "BloodVessel",
    "bone": "Bone",
    "brain": "Brain",
    "colon": "Colon",
    "duodenum": "Duodenum",
    "esophagus": "Esophagus",
    "oesophagus": "Esophagus",
    "fat": "Fat",
    "gallbladder": "Gallbladder",
    "heart": "Heart",
    "hippocampus": "Hippocampus",
    "kidney": "Kidney",
    "left atrium": "LeftAtrium",
    "liver": "Liver",
    "lung": "Lung",
    "muscle": "Muscle",
    "pancreas": "Pancreas",
    "prostate": "Prostate",
    "spinal cord": "SpinalCord",
    "spleen": "Spleen",
    "stomach": "Stomach",
    "trachea": "Trachea",
    "vertebra": "Vertebra",
}
_CATEGORIES = (
    (ABNORMAL_STRUCTURES, "MorphologicallyAbnormalStructure"),
    (ANATOMICAL_STRUCTURES, "AnatomicalStructure"),
)
_SERIES_NUMBER = 9000  # segmentation series sort after the images in most viewers


def _software_version() -> str:
    try:
        return version("visprior")
    except PackageNotFoundError:  # run from a source tree
        return "unknown"


def property_codes(name: str) -> tuple[pydicom.sr.coding.Code, pydicom.sr.coding.Code]:
    """The SNOMED CT ``(category, type)`` of a class name: the first concept whose words appear
    whole in the name, abnormal structures first; generic ``(Tissue, Tissue)`` otherwise."""
    words = " ".join(re.findall(r"[a-z0-9]+", name.lower()))
    for table, category in _CATEGORIES:
        for phrase, keyword in table.items():
            if re.search(rf"\b{re.escape(phrase)}s?\b", words):
                return getattr(codes.SCT, category), getattr(codes.SCT, keyword)
    return codes.SCT.Tissue, codes.SCT.Tissue


def segment_values(class_labels: Mapping[str, int]) -> dict[int, tuple[int, str]]:
    """Segment number to ``(label value, class name)``: the foreground classes in value order,
    numbered from 1 as DICOM requires."""
    foreground = sorted((value, name) for name, value in class_labels.items() if value > 0)
    return {number: entry for number, entry in enumerate(foreground, start=1)}


def write_segmentation(
    labels: np.ndarray,
    series: DicomSeries,
    class_labels: Mapping[str, int],
    path: str | os.PathLike,
    algorithm: str,
) -> Path:
    """Write ``labels`` (on ``series``' grid, ``series.shape``) as a DICOM Segmentation of the
    series, atomically.

    Args:
        labels: integer label map; its values are those of ``class_labels``.
        series: the source series (its files are read for their headers).
        class_labels: class name to label value, background 0.
        path: the ``.dcm`` file to write.
        algorithm: the network's name, recorded as the segmenting algorithm.

    Raises:
        ValueError: ``labels`` is not on the series' grid, or holds a value no class has.
    """
    if labels.shape != series.shape:
        raise ValueError(
            f"{series.name}: labels of shape {labels.shape} do not fit its grid {series.shape}"
        )
    numbers = segment_values(class_labels)
    lookup = np.zeros(max([int(labels.max()), *class_labels.values()]) + 1, np.uint16)
    for number, (value, _) in numbers.items():
        lookup[value] = number
    declared = {0, *(value for value, _ in numbers.values())}
    unknown = sorted(set(np.unique(labels).tolist()) - declared)
    if unknown:
        raise ValueError(f"{series.name}: label values {unknown} belong to no class")
    sources = [pydicom.dcmread(file, stop_before_pixels=True) for file in series.files]
    identification = hd.AlgorithmIdentificationSequence(
        name=f"visprior {algorithm}",
        family=codes.cid7162.ArtificialIntelligence,
        version=_software_version(),
    )
    descriptions = []
    for number, (_, name) in numbers.items():
        category, kind = property_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
            )
        )
    # (columns, rows, slices) to highdicom's frames: (slices, rows, columns)
    frames = np.ascontiguousarray(lookup[labels].transpose(2, 1, 0))
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="visprior",
        manufacturer_model_name=algorithm[:64],
        software_versions=_software_version(),
        device_serial_number="none",
        series_description=f"visprior {algorithm}"[:64],
    )
    with atomic_path(path) as temporary:
        segmentation.save_as(temporary)
    return Path(path)


def read_segmentation(
    path: str | os.PathLike, series: DicomSeries, class_labels: Mapping[str, int]
) -> np.ndarray:
    """The label map a DICOM Segmentation of ``series`` holds, on the series' grid, in the
    label values of ``class_labels`` (as :func:`write_segmentation` numbered them).

    Raises:
        DicomSeriesError: the file is no segmentation of this series.
    """
    segmentation = hd.seg.segread(path)
    referenced = {
        str(item.SeriesInstanceUID) for item in segmentation.get("ReferencedSeriesSequence", [])
    }
    if series.uid not in referenced:
        raise DicomSeriesError(f"{path}: not a segmentation of {series.name}")
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series.files]
    frames = segmentation.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, dtype=np.uint16
    )
    numbers = segment_values(class_labels)
    values = np.zeros(max([0, *numbers]) + 1, np.uint8)
    for number, (value, _) in numbers.items():
        values[number] = value
    return values[frames].transpose(2, 1, 0)
