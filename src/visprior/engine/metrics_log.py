"""Training metrics as a CSV (one row per logged iteration) and, where installed, TensorBoard.

The CSV is rewritten atomically on every log, so it is always complete; a resumed run keeps
the rows up to the iteration it resumes from and drops the rest.
"""

from __future__ import annotations

import csv
from pathlib import Path

from visprior.fileio import atomic_path

__all__ = ["MetricsLog"]


class MetricsLog:
    """Append metrics by iteration to ``run_dir/metrics.csv`` and TensorBoard.

    Args:
        run_dir: the run folder.
        resume_from: keep existing rows with ``iteration <= resume_from`` (``None``: start
            empty).
        tensorboard: also write ``run_dir/tensorboard`` event files (if the package is there).
    """

    def __init__(self, run_dir: str | Path, resume_from: int | None = None, tensorboard=True):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: dict[int, dict[str, float]] = {}
        if resume_from is not None and self.path.is_file():
            self.rows = {i: r for i, r in _read_rows(self.path).items() if i <= resume_from}
        folder = Path(run_dir) / "tensorboard"
        self._writer = _tensorboard_writer(folder, resume_from) if tensorboard else None

    def log(self, iteration: int, **metrics: float) -> None:
        row = self.rows.setdefault(int(iteration), {})
        row.update({k: float(v) for k, v in metrics.items()})
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(name.replace("_", "/", 1), float(value), iteration)
        self._write()

    def as_rows(self) -> list[dict[str, float]]:
        return [{"iteration": i, **self.rows[i]} for i in sorted(self.rows)]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _write(self) -> None:
        rows = self.as_rows()
        columns = ["iteration"] + sorted({k for r in rows for k in r if k != "iteration"})
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)


def _read_rows(path: Path) -> dict[int, dict[str, float]]:
    rows = {}
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            iteration = int(record.pop("iteration"))
            rows[iteration] = {k: float(v) for k, v in record.items() if v not in ("", None)}
    return rows


def _tensorboard_writer(folder: Path, resume_from: int | None):
    try:  # imported here: TensorBoard is optional, and the CSV holds the same numbers
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    # A resumed run redoes the steps after its checkpoint: TensorBoard hides the earlier ones.
    purge = resume_from + 1 if resume_from is not None else None
    return SummaryWriter(log_dir=str(folder), purge_step=purge)
