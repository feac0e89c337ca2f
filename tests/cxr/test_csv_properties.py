"""Property tests of the EGD-CXR / REFLACX sheet readers: whatever a CSV file holds, the reader
returns well-typed rows and cases, or raises one ``GazeDataError`` whose one-line message
starts with the file; no KeyError, ValueError from float(), IndexError or UnicodeError leaks."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from visprior.cxr.data import GazeDataError, _read_csv, read_egd_cxr, read_reflacx

# Text made mostly of what CSV and numbers are made of reaches quoting, ragged rows, blank
# lines and odd numbers far more often than arbitrary unicode does.
csv_like_text = st.text(alphabet=st.sampled_from(list(',"\r\n \t;01.e-+naifxX_\ufeff\xe9')))
odd_numbers = st.sampled_from(
    ["2", "-1", "0.5", "1e3", "nan", "-inf", "inf", "", " ", "x", "1_0", "0x10", "1,5"]
)
hostile_text = odd_numbers | st.floats().map(repr) | st.text(max_size=4)
hostile_ids = st.sampled_from(["", " a ", "../a", "a/b", "..", "a\nb", "a\x00"])
coordinates = st.floats(0, 3000).map(repr)
seconds = st.floats(0, 5).map(repr)
one_hot = st.sampled_from([("1", "0", "0"), ("0", "1", "0"), ("0", "0", "1.0")])


def _spoil(data, rows: list[list[str]]) -> list[list[str]]:
    """``rows``, or (half the time) with one cell made hostile, or one row cut or lengthened."""
    if not rows or not data.draw(st.booleans()):
        return rows
    index = data.draw(st.integers(0, len(rows) - 1))
    row = list(rows[index])
    kind = data.draw(st.sampled_from(["cell", "cell", "id", "short", "long"]))
    if kind in ("cell", "id"):
        column = 0 if kind == "id" else data.draw(st.integers(0, len(row) - 1))
        row[column] = data.draw(hostile_ids if kind == "id" else hostile_text)
    else:
        row = row[:-1] if kind == "short" else [*row, data.draw(st.text(max_size=3))]
    return [*rows[:index], row, *rows[index + 1 :]]


def _csv_text(rows) -> str:
    stream = io.StringIO()
    csv.writer(stream).writerows(rows)
    return stream.getvalue()


def _start_lines(header, rows) -> list[int]:
    """The line each row starts on once written under ``header`` (a field may hold breaks)."""
    written, starts = _csv_text([header]), []
    for row in rows:
        starts.append(len(io.StringIO(written, newline="").readlines()) + 1)
        written += _csv_text([row])
    return starts


def _assert_refusal_names(error: GazeDataError, *files) -> None:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(tuple(str(f) for f in files)), message


@given(
    content=st.binary(max_size=200)
    | st.text().map(str.encode)
    | csv_like_text.map(str.encode)
    | csv_like_text.map(lambda body: ("a,b\n" + body).encode())
)
def test_any_file_gives_rows_with_the_required_columns_or_a_named_error(tmp_path, content):
    path = tmp_path / "any.csv"
    path.write_bytes(content)
    required = ("a", "b")
    try:
        rows = _read_csv(path, required)
    except GazeDataError as error:
        _assert_refusal_names(error, path)
        return
    lines = [line for line, _ in rows]
    assert lines == sorted(set(lines)) and all(type(line) is int and line >= 2 for line in lines)
    for _, row in rows:
        assert set(required) <= set(row)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in row.items())


headers = st.lists(
    st.text(alphabet=st.characters(exclude_characters="\ufeff"), max_size=6).filter(str.strip),
    min_size=1,
    max_size=4,
    unique_by=str.strip,
)


@given(data=st.data())
def test_written_rows_read_back_as_written(tmp_path, data):
    header = data.draw(headers)
    names = [name.strip() for name in header]
    rows = data.draw(
        st.lists(
            st.lists(st.text(max_size=6), min_size=len(header), max_size=len(header)), max_size=5
        )
    )
    path = tmp_path / "table.csv"
    path.write_text(_csv_text([header, *rows]), encoding="utf-8-sig")  # with a byte-order mark
    read = _read_csv(path, names[:1])
    kept = [row for row in rows if any(value.strip() for value in row)]  # blank rows are skipped
    assert [list(row.values()) for _, row in read] == kept
    assert all(list(row) == names for _, row in read)


SHEET_COLUMNS = ["dicom_id", "path", "Normal", "CHF", "pneumonia"]


def _write_egd(tmp_path, sheet_rows, fixation_rows, fixation_header):
    root = tmp_path / "egd"
    root.mkdir(exist_ok=True)
    (root / "master_sheet.csv").write_text(_csv_text([SHEET_COLUMNS, *sheet_rows]))
    (root / "fixations.csv").write_text(_csv_text([fixation_header, *fixation_rows]))
    for name in ("a", "b"):
        if not (root / f"{name}.png").is_file():
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / f"{name}.png")
    return root


FIXATION_HEADERS = [
    ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"],
    ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD"],
    ["DICOM_ID", "Y_ORIGINAL", "X_ORIGINAL", "FPOGD"],
    ["DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "other"],
    ["DICOM_ID", "X_ORIGINAL", "FPOGD"],
]


@given(data=st.data())
def test_egd_reader_gives_well_typed_cases_or_a_named_error(tmp_path, data):
    cases = data.draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, unique=True))
    sheet_rows = _spoil(data, [[case, "", *data.draw(one_hot)] for case in cases])
    fixation_header = data.draw(st.sampled_from(FIXATION_HEADERS))
    fixation_rows = data.draw(
        st.lists(st.tuples(st.sampled_from("ababc"), coordinates, coordinates, seconds), max_size=6)
    )
    fixation_rows = _spoil(data, [list(row[: len(fixation_header)]) for row in fixation_rows])
    root = _write_egd(tmp_path, sheet_rows, fixation_rows, fixation_header)
    try:
        dataset = read_egd_cxr(root)
    except GazeDataError as error:
        _assert_refusal_names(error, root / "master_sheet.csv", root / "fixations.csv")
        return
    assert len({case.case_id for case in dataset.cases}) == len(dataset.cases)
    timed = "FPOGD" in fixation_header
    columns = {name: index for index, name in enumerate(fixation_header)}
    for case in dataset.cases:
        assert type(case.label) is int and 0 <= case.label < 3
        assert case.case_id in ("a", "b") and case.image == root / f"{case.case_id}.png"
        written = [
            (line, row)
            for line, row in zip(
                _start_lines(fixation_header, fixation_rows), fixation_rows, strict=True
            )
            if row and row[0].strip() == case.case_id
        ]
        if not written:
            assert case.fixations is None
            continue
        x, y = columns["X_ORIGINAL"], columns["Y_ORIGINAL"]
        expected = [(float(row[x]), float(row[y])) for _, row in written]
        assert case.fixations.dtype == np.float64 and case.fixations.shape == (len(written), 2)
        np.testing.assert_array_equal(case.fixations, expected)
        assert np.isfinite(case.fixations).all()
        assert case.lines.tolist() == [line for line, _ in written]
        if timed:
            assert case.durations.dtype == np.float64 and (case.durations >= 0).all()
            assert np.isfinite(case.durations).all()
        else:
            assert case.durations is None


REFLACX_COLUMNS = ["timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position"]


@given(data=st.data())
def test_reflacx_reader_gives_well_typed_fixations_or_a_named_error(tmp_path, data):
    starts_and_ends = st.tuples(st.floats(0, 5), st.floats(0, 5)).map(
        lambda times: [repr(time) for time in sorted(times)]
    )
    rows = data.draw(st.lists(st.tuples(starts_and_ends, coordinates, coordinates), max_size=6))
    rows = _spoil(data, [[*times, x, y] for times, x, y in rows])
    grade = data.draw(st.sampled_from(["0", "3", "5"]) | hostile_text)
    main = tmp_path / "reflacx" / "main_data"
    (main / "P1").mkdir(parents=True, exist_ok=True)
    sheet = [["id", "dicom_id", "image", "Edema"], ["P1", "d1", "d1.png", grade]]
    (main / "metadata_phase_1.csv").write_text(_csv_text(sheet))
    (main / "P1" / "fixations.csv").write_text(_csv_text([REFLACX_COLUMNS, *rows]))
    images = tmp_path / "mimic"
    images.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / "d1.png")
    try:
        dataset = read_reflacx(tmp_path / "reflacx", images, classes=["Edema"])
    except GazeDataError as error:
        _assert_refusal_names(error, main / "metadata_phase_1.csv", main / "P1" / "fixations.csv")
        return
    (case,) = dataset.cases
    assert case.label == (0 if float(grade) > 0 else 1)
    kept = [row for row in rows if any(value.strip() for value in row)]
    assert case.fixations.shape == (len(kept), 2) and case.fixations.dtype == np.float64
    expected = [float(row[1]) - float(row[0]) for row in kept]
    np.testing.assert_allclose(case.durations, expected)
    assert (case.durations >= 0).all() and np.isfinite(case.fixations).all()
    assert all(math.isfinite(float(row[0])) and float(row[0]) >= 0 for row in kept)


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_sheet_in_another_encoding_is_named(tmp_path, encoding):
    path = tmp_path / "sheet.csv"
    path.write_bytes("a,b\ncafé,1\n".encode(encoding))
    with pytest.raises(GazeDataError, match=r"sheet.csv: line \d: not UTF-8 text \(byte 0x"):
        _read_csv(path, ("a", "b"))
