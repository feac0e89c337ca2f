"""A study's results file: its data, and for each part the machine, date, repeats and command
that produced it. Every write is atomic, so a run stopped at any moment leaves the last
complete file.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path


def machine_description() -> dict:
    """CPU model and its bf16-relevant flags, threads, torch and Python versions."""
    import torch

    from visprior.cpu_info import cpu_bf16_support, cpu_flags, cpu_model_name

    return {
        "cpu": cpu_model_name(),
        "cpu_flags": cpu_flags(),
        "cpu_bf16": cpu_bf16_support(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def command_line() -> str:
    """How this process was started, as one could type it again."""
    return shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])


def write_json_atomically(path: Path, content: object) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(content, out, indent=1)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsFile:
    """``<study folder>/results.json``: ``{"study", "quick", "parts": {part: provenance},
    "data"}``."""

    def __init__(self, path: Path, study: str, quick: bool):
        self.path = path
        self.study = study
        self.content = {"study": study, "quick": quick, "parts": {}, "data": None}
        if path.is_file():
            try:
                self.content = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}: not a readable results file ({error})") from error
            if self.content.get("quick", False) != quick:
                mode = "quick" if self.content.get("quick") else "full"
                raise SystemExit(
                    f"{path} holds a {mode}-mode run; run the other mode with another --out"
                )

    @property
    def data(self):
        return self.content["data"]

    @property
    def parts(self) -> dict:
        return self.content["parts"]

    def save(self, data, part: str, repeats: int | None = None) -> None:
        """Store ``data`` and record ``part``'s provenance (this machine, today, this command)."""
        self.content["data"] = data
        self.content["parts"][part] = {
            "machine": machine_description(),
            "date": time.strftime("%Y-%m-%d"),
            "repeats": repeats,
            "command": command_line(),
        }
        write_json_atomically(self.path, self.content)
