"""The README's Python example runs as written."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO_ROOT


def test_readme_python_example(tmp_path):
    text = (REPO_ROOT / "README.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    assert "reparameterize_model" in example and "export_onnx" in example
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(example, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert (tmp_path / "repuxnet.onnx").stat().st_size > 0
