"""Damaged and hostile CXR inputs: radiographs, CSV sheets and cached gaze maps each get one
named error (or a named warning where the data stays usable), never a crash or a partial
result."""

from __future__ import annotations

import csv
import io
import os
import struct
import zlib

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.cxr.dicom_files import write_dicom
from visprior.cxr.data import GazeDataError, read_egd_cxr, read_reflacx
from visprior.cxr.gaze import GazeCache, gaze_heatmap
from visprior.cxr.io import MAX_CXR_PIXELS, CXRReadError, read_cxr

# -- radiographs ---------------------------------------------------------------------------------


def _png_header_only(path, columns, rows):
    """A valid PNG signature and header declaring ``columns`` x ``rows``, with a few bytes."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", columns, rows, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def test_dicom_without_pixel_data_is_named(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", with_pixels=False)
    with pytest.raises(CXRReadError, match=r"empty.dcm: DICOM file without pixel data"):
        read_cxr(path)


def test_truncated_dicom_is_named(tmp_path):
    whole = write_dicom(tmp_path / "whole.dcm", np.zeros((40, 50), np.uint16)).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:-1000])  # inside the pixel data
    with pytest.raises(CXRReadError, match=r"cut.dcm: not a readable DICOM image \(.*less than"):
        read_cxr(cut)
    cut.write_bytes(whole[:100])  # inside the file meta header
    with pytest.raises(CXRReadError, match=r"cut.dcm: not a readable DICOM file"):
        read_cxr(cut)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")  # pydicom's, on the last
@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n not really", b"\x00" * 128 + b"DICM" + b"\xff" * 40]
)
def test_non_dicom_bytes_named_dcm_are_named(tmp_path, content):
    path = tmp_path / "fake.dcm"
    path.write_bytes(content)
    with pytest.raises(CXRReadError, match=r"fake.dcm: (not a readable DICOM|DICOM file without)"):
        read_cxr(path)


@pytest.mark.parametrize("photometric", ["RGB", "PALETTE COLOR", "YBR_FULL", "ODD", None])
def test_dicom_that_is_not_grey_is_refused(tmp_path, photometric):
    path = write_dicom(tmp_path / "colour.dcm", photometric=photometric)
    with pytest.raises(
        CXRReadError, match=r"colour.dcm: photometric interpretation '.+' is not a grey radiograph"
    ):
        read_cxr(path)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_dicom_with_no_rows_or_columns_is_refused(tmp_path, shape):
    path = write_dicom(tmp_path / "flat.dcm", np.zeros(shape, np.uint16))
    rows, columns = shape
    with pytest.raises(CXRReadError, match=rf"flat.dcm: image of {rows} x {columns} pixels"):
        read_cxr(path)


def test_huge_header_with_little_data_is_refused_before_decoding(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "huge.dcm", Rows=60000, Columns=60000)

    def no_decoding(self):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(no_decoding))
    with pytest.raises(
        CXRReadError,
        match=rf"huge.dcm: image of 60000 x 60000 pixels is larger than the "
        rf"{MAX_CXR_PIXELS} pixels accepted",
    ):
        read_cxr(path)


def test_multi_frame_dicom_is_refused(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((6, 4), np.uint16), Rows=3, NumberOfFrames=2)
    with pytest.raises(CXRReadError, match=r"cine.dcm: 2 frames; expected a single image"):
        read_cxr(path)


@pytest.mark.parametrize(
    "tags",
    [
        {"RescaleSlope": "7.25", "RescaleIntercept": "0"},  # the slope becomes "abcd"
        {"WindowCenter": "7.25", "WindowWidth": "100"},  # the centre becomes "abcd"
        {"WindowCenter": "100", "WindowWidth": "0"},
    ],
)
def test_dicom_with_unusable_rescale_or_window_is_named(tmp_path, tags):
    path = write_dicom(tmp_path / "lut.dcm", **tags)
    # pydicom refuses to write a value that is not a number, so the written file is damaged
    path.write_bytes(path.read_bytes().replace(b"7.25", b"abcd"))
    with pytest.raises(CXRReadError, match=r"lut.dcm: unusable rescale or window values"):
        read_cxr(path)


def test_dicom_with_an_element_of_unknown_kind_is_named(tmp_path):
    path = write_dicom(tmp_path / "vr.dcm", WindowCenter="100", WindowWidth="200")
    window_width = b"\x28\x00\x51\x10DS"  # tag (0028,1051), explicit VR "DS"
    path.write_bytes(path.read_bytes().replace(window_width, window_width[:-1] + b"f"))
    with pytest.raises(CXRReadError, match=r"vr.dcm: not a readable DICOM file \(Unknown Value"):
        read_cxr(path)


def test_truncated_png_and_jpeg_are_named(tmp_path):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    for name, kind in (("cut.png", "PNG"), ("cut.jpg", "JPEG")):
        stream = io.BytesIO()
        picture.save(stream, kind)
        (tmp_path / name).write_bytes(stream.getvalue()[: len(stream.getvalue()) // 2])
        with pytest.raises(CXRReadError, match=rf"{name}: not a readable image \(.*truncated"):
            read_cxr(tmp_path / name)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CXRReadError, match=r"empty.png: not a readable image"):
        read_cxr(tmp_path / "empty.png")


@pytest.mark.parametrize("side", [9000, 100000])  # under and over Pillow's own bomb limit
def test_png_declaring_a_huge_image_is_refused_before_decoding(tmp_path, side):
    path = _png_header_only(tmp_path / "bomb.png", side, side)
    # Pillow refuses the largest itself, on opening; either way nothing is decoded
    refusal = rf"image of {side} x {side} pixels is larger|not a readable image \(Image size"
    with pytest.raises(CXRReadError, match=rf"bomb.png: ({refusal})"):
        read_cxr(path)


def _damage(data: bytes, edits, cut) -> bytes:
    damaged = bytearray(data)
    for position, value in edits:
        damaged[position % len(damaged)] = value
    return bytes(damaged[:cut])


# Most edits land in the first bytes, where the headers are; a few anywhere.
edits = st.lists(
    st.tuples(st.integers(0, 400) | st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1,
    max_size=5,
)
cuts = st.none() | st.integers(0, 10**4)


@pytest.fixture(scope="module")
def sound_files(tmp_path_factory):
    """A windowed, rescaled DICOM, a PNG and a JPEG, as bytes to damage."""
    folder = tmp_path_factory.mktemp("sound")
    pixels = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    tags = {"WindowCenter": "2000", "WindowWidth": "3000", "RescaleSlope": "1"}
    dicom = write_dicom(folder / "a.dcm", pixels, RescaleIntercept="0", **tags)
    files = {".dcm": dicom.read_bytes()}
    picture = Image.fromarray((pixels % 256).astype(np.uint8))
    for suffix, kind in ((".png", "PNG"), (".jpg", "JPEG")):
        stream = io.BytesIO()
        picture.save(stream, kind)
        files[suffix] = stream.getvalue()
    return files


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom and Pillow warn on damaged files
@given(suffix=st.sampled_from([".dcm", ".png", ".jpg"]), edits=edits, cut=cuts)
def test_a_damaged_radiograph_reads_as_an_image_or_gets_a_named_error(
    tmp_path, sound_files, suffix, edits, cut
):
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(_damage(sound_files[suffix], edits, cut))
    try:
        image = read_cxr(path)
    except CXRReadError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        return
    assert image.dtype == np.float32 and image.ndim == 2 and image.size > 0
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1


# -- CSV sheets ----------------------------------------------------------------------------------

SHEET_HEADER = ["dicom_id", "path", "Normal", "CHF", "pneumonia"]
FIXATION_HEADER = ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"]


def _write_rows(path, rows, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = io.StringIO()
    csv.writer(stream).writerows(rows)
    path.write_bytes(stream.getvalue().encode(encoding))
    return path


def _egd(tmp_path, sheet=None, fixations=None):
    """An EGD-CXR folder with two 20 x 30 images, a and b; ``sheet`` / ``fixations`` are raw
    file contents (bytes or text) replacing the defaults."""
    root = tmp_path / "egd"
    _write_rows(
        root / "master_sheet.csv", [SHEET_HEADER, ["a", "a.png", 1, 0, 0], ["b", "b.png", 0, 1, 0]]
    )
    _write_rows(root / "fixations.csv", [FIXATION_HEADER, ["a", 5, 6, 0.25], ["b", 7, 8, 0.5]])
    for name, content in (("master_sheet.csv", sheet), ("fixations.csv", fixations)):
        if content is not None:
            data = content.encode() if isinstance(content, str) else content
            (root / name).write_bytes(data)
    for case in "ab":
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / f"{case}.png")
    return root


def test_the_default_egd_folder_reads(tmp_path):
    data = read_egd_cxr(_egd(tmp_path))
    assert [(c.case_id, c.label) for c in data.cases] == [("a", 0), ("b", 1)]


SHEET = "dicom_id,path,Normal,CHF,pneumonia\r\n"


@pytest.mark.parametrize(
    "sheet, message",
    [
        ("", r"master_sheet.csv: empty file; expected a header with dicom_id, Normal"),
        (SHEET, r"master_sheet.csv: no cases"),
        (
            "dicom_id,path,Normal,CHF\na,a.png,1,0\n",
            r"master_sheet.csv: missing column\(s\) 'pneumonia'",
        ),
        (
            "dicom_id,Normal,CHF,pneumonia,CHF\n",
            r"master_sheet.csv: column\(s\) 'CHF' appear twice",
        ),
        (SHEET + "a,a.png,2,0,0\n", r"row 2 \(dicom_id a\): Normal = '2' is not 0 or 1"),
        (SHEET + "a,a.png,1,-1,0\n", r"row 2 \(dicom_id a\): CHF = '-1' is not 0 or 1"),
        (SHEET + "a,a.png,0.5,0,0\n", r"row 2 \(dicom_id a\): Normal = '0.5' is not 0 or 1"),
        (SHEET + "a,a.png,yes,0,0\n", r"row 2 \(dicom_id a\): Normal = 'yes' is not a number"),
        (SHEET + "a,a.png,0,0,0\n", r"row 2 \(dicom_id a\): expected exactly one class set"),
        (
            SHEET + "a,a.png,1,0,0\n\nb,b.png,0,1,0\na,a.png,0,1,0\n",
            r"row 5 \(dicom_id a\): duplicate dicom_id, also on row 2",
        ),
        (
            SHEET + "a,a.png,1,0,0,extra\n",
            r"master_sheet.csv: row 2: 6 fields, but the header has 5",
        ),
        (SHEET + "a,a.png,1,0\n", r"master_sheet.csv: row 2: 4 fields, but the header has 5"),
        (SHEET + " ,a.png,1,0,0\n", r"master_sheet.csv: row 2: dicom_id is empty"),
        (
            SHEET + '"a\nb",a.png,1,0,0\n',
            r"master_sheet.csv: row 2: dicom_id = 'a\\nb' is not a plain name",
        ),
        (
            SHEET + "../a,a.png,1,0,0\n",
            r"master_sheet.csv: row 2: dicom_id = '../a' is not a plain name",
        ),
        (SHEET + 'a,"a.png\n', r"master_sheet.csv: row 2: 2 fields, but the header has 5"),
        (
            SHEET + 'a,"a\n.png",1,0,0\nb,"b\n\n.png",0,1\n',
            r"master_sheet.csv: row 4: 4 fields, but the header has 5",
        ),
        (
            SHEET.encode() + b"a,a.png,1,0,0\nb,caf\xe9.png,0,1,0\n",
            r"master_sheet.csv: line 3: not UTF-8 text \(byte 0xe9\)",
        ),
        (
            SHEET + "a,a.png," + "1" * 200_000 + ",0,0\n",
            r"master_sheet.csv: row 2: not valid CSV \(field larger",
        ),
    ],
)
def test_bad_master_sheets_are_named_with_their_row(tmp_path, sheet, message):
    with pytest.raises(GazeDataError, match=message):
        read_egd_cxr(_egd(tmp_path, sheet=sheet))


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.png", "x/../../a.png", "C:\\a.png"])
def test_image_paths_leaving_the_image_folder_are_refused(tmp_path, path):
    (tmp_path / "outside.png").write_bytes(b"")
    sheet = SHEET + f"a,{path},1,0,0\nb,b.png,0,1,0\n"
    with pytest.raises(GazeDataError, match=r"row 2 .*leaves the image folder .*it was not read"):
        read_egd_cxr(_egd(tmp_path, sheet=sheet))


def test_a_byte_order_mark_blank_rows_and_trailing_commas_are_accepted(tmp_path):
    sheet = (
        "\ufeff dicom_id ,path,Normal,CHF,pneumonia\r\n"
        "\r\na,a.png,1,0,0,,\r\n,,,,\r\nb,b.png,0,0,1\r\n"
    )
    fixations = "\ufeffDICOM_ID,X_ORIGINAL,Y_ORIGINAL,FPOGD\nb,1,2,0.5\n\na,3,4,0.1\n"
    data = read_egd_cxr(_egd(tmp_path, sheet=sheet.encode(), fixations=fixations.encode()))
    assert [(c.case_id, c.label) for c in data.cases] == [("a", 0), ("b", 2)]
    a, b = data.cases
    np.testing.assert_array_equal(a.fixations, [[3, 4]])
    np.testing.assert_array_equal(a.lines, [4])  # the blank line still counts
    assert a.fixations.dtype == np.float64 and a.durations.dtype == np.float64


FIX = "DICOM_ID,X_ORIGINAL,Y_ORIGINAL,FPOGD\n"


@pytest.mark.parametrize(
    "fixations, message",
    [
        ("", r"fixations.csv: empty file; expected a header with DICOM_ID, X_ORIGINAL"),
        ("DICOM_ID,X_ORIGINAL\n", r"fixations.csv: missing column\(s\) 'Y_ORIGINAL'"),
        (
            FIX + "a,5,6,0.1\na,left,6,0.1\n",
            r"fixations.csv: row 3: X_ORIGINAL = 'left' is not a number",
        ),
        (FIX + "a,5,,0.1\n", r"fixations.csv: row 2: Y_ORIGINAL = '' is not a number"),
        (FIX + "a,nan,6,0.1\n", r"fixations.csv: row 2: X_ORIGINAL = 'nan' is not a finite number"),
        (FIX + "a,5,-inf,0.1\n", r"fixations.csv: row 2: Y_ORIGINAL = '-inf' is not a finite"),
        (FIX + "a,5,6,-0.1\n", r"fixations.csv: row 2: FPOGD = '-0.1' is below 0"),
        (FIX + "a,5,6\n", r"fixations.csv: row 2: 3 fields, but the header has 4"),
        (FIX + ",5,6,0.1\n", r"fixations.csv: row 2: DICOM_ID is empty"),
        (
            FIX.encode() + b"a,5,6,0.1\n\xff\xfe",
            r"fixations.csv: line 3: not UTF-8 text \(byte 0xff\)",
        ),
    ],
)
def test_bad_fixation_tables_are_named_with_their_row(tmp_path, fixations, message):
    with pytest.raises(GazeDataError, match=message):
        read_egd_cxr(_egd(tmp_path, fixations=fixations))


def test_a_fixation_table_with_only_a_header_gives_cases_without_gaze(tmp_path):
    data = read_egd_cxr(_egd(tmp_path, fixations=FIX))
    assert [c.fixations for c in data.cases] == [None, None]


def test_fixations_outside_the_image_are_left_out_naming_file_count_and_row(tmp_path):
    fixations = FIX + "a,5,6,0.1\na,30,6,0.2\na,-1,3,0.3\na,7,8,0.4\n"
    case = read_egd_cxr(_egd(tmp_path, fixations=fixations)).cases[0]
    with pytest.warns(UserWarning) as caught:
        kept = gaze_heatmap(
            case.fixations,
            (20, 30),
            2,
            durations=case.durations,
            source=case.source,
            lines=case.lines,
        )
    message = str(caught[0].message)
    assert message.startswith(str(tmp_path / "egd" / "fixations.csv"))
    assert "2 of 4 fixations lie outside the 30 x 20 image (first: row 3, x=30, y=6)" in message
    inside = gaze_heatmap([[5, 6], [7, 8]], (20, 30), 2, durations=[0.1, 0.4])
    np.testing.assert_array_equal(kept, inside)


def _reflacx(tmp_path, fixations, sheet_rows=(("P1", "d1", "d1.png", "False", 3),)):
    root = tmp_path / "reflacx"
    header = ["id", "dicom_id", "image", "eye_tracking_data_discarded", "Edema"]
    _write_rows(root / "main_data" / "metadata_phase_1.csv", [header, *sheet_rows])
    images = tmp_path / "mimic"
    images.mkdir(exist_ok=True)
    for row in sheet_rows:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / row[2])
        (root / "main_data" / row[0]).mkdir(parents=True, exist_ok=True)
        (root / "main_data" / row[0] / "fixations.csv").write_text(fixations)
    return root, images


REFLACX_FIX = "timestamp_start_fixation,timestamp_end_fixation,x_position,y_position\n"


@pytest.mark.parametrize(
    "fixations, message",
    [
        (
            REFLACX_FIX + "0.5,0.25,1,2\n",
            r"P1/fixations.csv: row 2: timestamp_end_fixation 0.25 is before "
            r"timestamp_start_fixation 0.5",
        ),
        (
            REFLACX_FIX + "-1,0.25,1,2\n",
            r"P1/fixations.csv: row 2: timestamp_start_fixation = '-1' is below 0",
        ),
        (
            REFLACX_FIX + "0,1,1,2\n0,1,inf,2\n",
            r"P1/fixations.csv: row 3: x_position = 'inf' is not a finite number",
        ),
        (
            "x_position,y_position\n",
            r"P1/fixations.csv: missing column\(s\) 'timestamp_start_fixation'",
        ),
    ],
)
def test_bad_reflacx_fixations_are_named_with_their_row(tmp_path, fixations, message):
    root, images = _reflacx(tmp_path, fixations)
    with pytest.raises(GazeDataError, match=message):
        read_reflacx(root, images, classes=["Edema"])


def test_reflacx_duplicate_ids_and_negative_grades_are_named(tmp_path):
    rows = (("P1", "d1", "d1.png", "False", 3), ("P1", "d2", "d2.png", "False", 1))
    root, images = _reflacx(tmp_path, REFLACX_FIX, rows)
    with pytest.raises(
        GazeDataError, match=r"row 3 \(id P1\): duplicate id, also on metadata_phase_1.csv row 2"
    ):
        read_reflacx(root, images, classes=["Edema"])
    root, images = _reflacx(tmp_path / "neg", REFLACX_FIX, (("P1", "d1", "d1.png", "False", -2),))
    with pytest.raises(GazeDataError, match=r"row 2 \(id P1\): Edema = '-2' is below 0"):
        read_reflacx(root, images, classes=["Edema"])
    # a reading with a header-only fixation file has no fixations, and durations match
    root, images = _reflacx(tmp_path / "empty", REFLACX_FIX)
    case = read_reflacx(root, images, classes=["Edema"]).cases[0]
    assert case.fixations.shape == (0, 2) and case.durations.shape == (0,)


# -- the gaze map cache --------------------------------------------------------------------------

POINTS = np.array([[10.0, 12.0], [30.0, 5.0]])


def _cached_file(cache_folder):
    files = list(cache_folder.glob("*.npy"))
    assert len(files) == 1, files
    return files[0]


def _damage_and_reread(tmp_path, write_damage):
    """Fill the cache, damage its file with ``write_damage(path)``, read it back."""
    cache = GazeCache(tmp_path / "cache")
    fresh = cache.heatmap(POINTS, (40, 40), 3, (5, 5))
    path = _cached_file(tmp_path / "cache")
    write_damage(path)
    with pytest.warns(UserWarning, match=rf"{path.name}: .*; rebuilding this gaze map") as caught:
        again = cache.heatmap(POINTS, (40, 40), 3, (5, 5))
    np.testing.assert_array_equal(again, fresh)
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), fresh)  # repaired on disk
    return str(caught[0].message)


def test_a_corrupt_cache_file_is_rebuilt(tmp_path):
    message = _damage_and_reread(tmp_path, lambda path: path.write_bytes(os.urandom(300)))
    assert "not a readable .npy file" in message


def test_a_truncated_cache_file_is_rebuilt(tmp_path):
    message = _damage_and_reread(tmp_path, lambda path: path.write_bytes(path.read_bytes()[:-30]))
    assert "not a readable .npy file" in message


def test_a_cache_file_of_another_shape_or_with_bad_values_is_rebuilt(tmp_path):
    message = _damage_and_reread(tmp_path, lambda path: np.save(path, np.zeros((7, 3), np.float32)))
    assert "holds float32 of shape (7, 3); expected float32 of shape (5, 5)" in message
    message = _damage_and_reread(
        tmp_path / "nan", lambda path: np.save(path, np.full((5, 5), np.nan, np.float32))
    )
    assert "values are not finite numbers in [0, 1]" in message


def test_a_cache_header_claiming_a_huge_array_is_rebuilt_without_reading_it(tmp_path):
    def huge_header(path):
        with open(path, "wb") as stream:
            np.lib.format.write_array_header_1_0(
                stream, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)}
            )

    message = _damage_and_reread(tmp_path, huge_header)
    assert "shape (100000, 100000)" in message


@pytest.mark.filterwarnings("ignore:.*rebuilding this gaze map:UserWarning")
@given(edits=edits, cut=cuts)
def test_any_damage_to_a_cache_file_gives_a_valid_map_never_an_error(tmp_path, edits, cut):
    cache = GazeCache(tmp_path / "cache")
    cache.heatmap(POINTS, (40, 40), 3, (5, 5))  # the file is there (again) after this
    path = _cached_file(tmp_path / "cache")
    path.write_bytes(_damage(path.read_bytes(), edits, cut))
    heatmap = cache.heatmap(POINTS, (40, 40), 3, (5, 5))
    # a damaged file is rebuilt; an edit that leaves a valid map is read (only values moved)
    assert heatmap.shape == (5, 5) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), heatmap)


class _PlantsAFolder:
    """Unpickling this object would create a folder: the sign that a cache file ran code."""

    def __init__(self, where):
        self.where = where

    def __reduce__(self):
        return (os.mkdir, (self.where,))


def test_a_planted_pickle_in_the_cache_is_never_unpickled(tmp_path):
    marker = tmp_path / "it-ran"

    def plant(path):
        with open(path, "wb") as stream:
            np.save(
                stream, np.array([_PlantsAFolder(str(marker))], dtype=object), allow_pickle=True
            )

    message = _damage_and_reread(tmp_path, plant)
    assert "holds object of shape (1,)" in message
    assert not marker.exists()


def test_a_write_killed_midway_leaves_no_cache_file(tmp_path, monkeypatch):
    cache = GazeCache(tmp_path / "cache")
    real_save = np.save

    def save_half_then_die(stream, array, allow_pickle=False):
        stream.write(b"\x93NUMPY\x01\x00")  # the start of a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        cache.heatmap(POINTS, (40, 40), 3, (5, 5))
    assert not list((tmp_path / "cache").iterdir())  # neither a half map nor a temporary
    monkeypatch.setattr(np, "save", real_save)
    np.testing.assert_array_equal(
        cache.heatmap(POINTS, (40, 40), 3, (5, 5)), gaze_heatmap(POINTS, (40, 40), 3, (5, 5))
    )


def test_a_cache_folder_that_cannot_be_written_only_costs_the_caching(tmp_path):
    (tmp_path / "cache").write_text("a file where the folder should be")
    cache = GazeCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"cache/[0-9a-f]+\.npy: gaze map not cached"):
        heatmap = cache.heatmap(POINTS, (40, 40), 3, (5, 5))
    np.testing.assert_array_equal(heatmap, gaze_heatmap(POINTS, (40, 40), 3, (5, 5)))


def test_fixations_off_the_image_give_one_warning_for_the_whole_set(tmp_path):
    from visprior.cxr.train import GazeImageDataset

    fixations = "DICOM_ID,X_ORIGINAL,Y_ORIGINAL,FPOGD\na,5,6,1\na,500,6,1\nb,7,8,1\nb,-1,2,1\n"
    data = read_egd_cxr(_egd(tmp_path, fixations=fixations))
    with pytest.warns(UserWarning) as caught:
        dataset = GazeImageDataset(data.cases, data.classes, 32, (4, 4), 5.0, tmp_path / "cache")
    messages = [str(w.message) for w in caught if "outside" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("2 case(s) have fixations outside")
    assert "fixations.csv: 1 of 2 fixations lie outside the 30 x 20 image" in messages[0]
    assert all(item["has_gaze"] for item in dataset.items)
