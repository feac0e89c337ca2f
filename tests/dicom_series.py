"""DICOM series written from a volume and its RAS affine, one CT slice per file, for the DICOM
reader and DICOM SEG tests; and the real CT series that pydicom's test data ship."""

from __future__ import annotations

from pathlib import Path

import gdcm
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def pydicom_series(name: str) -> Path:
    """A folder of pydicom's test data holding one real series: ``"CT5N"`` (5 axial CT slices,
    numbered head to foot), ``"CT2"`` (4 slices with 161 missing), ``"CT2N"`` (2 scouts in
    different orientations), ``"MR700"`` (7 projections in different orientations)."""
    folders = {
        "CT5N": "98892001/CT5N",
        "CT2": "77654033/CT2",
        "CT2N": "98892001/CT2N",
        "MR700": "98892003/MR700",
    }
    root = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    return root / folders[name]


def quantised(volume: np.ndarray, slope: float = 0.5, intercept: float = -1024.0) -> np.ndarray:
    """``volume`` as the stored integers of :func:`write_series` give it back: float32."""
    stored = np.clip(np.round((volume - intercept) / slope), -32768, 32767)
    return (stored * slope + intercept).astype(np.float32)


def write_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    slope: float = 0.5,
    intercept: float = -1024.0,
    description: str = "synthetic CT",
    instance_numbers: list[int] | None = None,
    series_uid: str | None = None,
    **tags,
) -> list[Path]:
    """Write ``volume`` (x, y, z, on the RAS ``affine``) as one CT file per z slice, with
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing taken from ``affine``:
    voxel (i, j, k) is column i, row j of slice k. Values are stored as int16 through
    ``slope`` and ``intercept``. ``instance_numbers`` number the slices (1, 2, ... by default);
    ``tags`` set further elements on every file."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_FROM_RAS @ affine
    column_step, row_step = lps[:3, 0], lps[:3, 1]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    stored = np.clip(np.round((volume - intercept) / slope), -32768, 32767).astype(np.int16)
    numbers = instance_numbers or list(range(1, volume.shape[2] + 1))
    paths = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "visprior-test", "Test^Series"
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber = "", "O", ""
        ds.ReferringPhysicianName, ds.StudyID, ds.StudyDate, ds.StudyTime = "", "1", "", ""
        ds.Manufacturer = "visprior-tests"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.SeriesNumber, ds.InstanceNumber = 1, numbers[k]
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        cosines = [*(column_step / np.linalg.norm(column_step))]
        cosines += [*(row_step / np.linalg.norm(row_step))]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in cosines]
        ds.PixelSpacing = [f"{np.linalg.norm(row_step):.6f}", f"{np.linalg.norm(column_step):.6f}"]
        ds.SliceThickness = f"{np.linalg.norm(lps[:3, 2]):.6f}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.RescaleType = "HU"
        ds.KVP, ds.AcquisitionNumber = "120", 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        for key, value in tags.items():
            setattr(ds, key, value)
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def compress_jpeg_lossless(paths: list[Path]) -> None:
    """Rewrite each file in JPEG Lossless (process 14), the compression PACS exports use most,
    with GDCM (pydicom encodes RLE and JPEG-LS, not this)."""
    for path in paths:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        if not reader.Read():
            raise OSError(f"GDCM cannot read {path}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        if not change.Change():
            raise OSError(f"GDCM cannot compress {path}")
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise OSError(f"GDCM cannot write {path}")
