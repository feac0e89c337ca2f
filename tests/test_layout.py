"""The package's layering, read from the source: no import circle, no arrow up from the lower
layers, the registry importing no network, no import hidden inside a function outside the
command line, and the command line alone parsing arguments, in short functions. A fresh
interpreter that imports ``visprior`` sees every network and loads no task."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SOURCE / "visprior"

# Layers from the bottom up; a module may import its own layer and those below it.
LAYERS = [
    {"errors", "fileio", "checkpoint_io", "cpu_info", "layers", "metrics", "viz", "data", "nets"},
    {"reparam", "engine"},
    {"seg", "cxr"},
    {"simplify", "deploy"},
    {"cli", "__init__"},
]

# The command line imports a command's work when the command runs, so that the parser is built
# without loading training code; nothing else hides an import inside a function.
LAZY_IMPORTS_ALLOWED = "visprior.cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool, int, str]]:
    """(imported visprior module, inside a function?, line, source line) of every import."""
    text = path.read_text()
    lines = text.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                # "from visprior.nets import ggcam" imports the submodule; the package's own
                # names come from the package
                submodules = [f"{child.module}.{alias.name}" for alias in child.names]
                names = [name for name in submodules if _exists(name)]
                if len(names) < len(submodules):
                    names.append(child.module)
            for name in names:
                if name.startswith("visprior") and _exists(name):
                    found.append((name, in_function, child.lineno, lines[child.lineno - 1]))
            visit(child, nested)

    visit(ast.parse(text), False)
    return found


def _exists(name: str) -> bool:
    relative = Path(*name.split("."))
    return (SOURCE / relative).with_suffix(".py").is_file() or (SOURCE / relative).is_dir()


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _in_cli(module: str) -> bool:
    return module == LAZY_IMPORTS_ALLOWED or module.startswith(LAZY_IMPORTS_ALLOWED + ".")


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module}: its package {top!r} is in no layer of this test")


def test_no_arrow_runs_up_the_layers():
    offenders = [
        f"{module}:{line} imports {target}"
        for module, found in IMPORTS.items()
        for target, _, line, _ in found
        if _layer(target) > _layer(module)
    ]
    assert not offenders, offenders


def test_only_the_command_line_parses_arguments():
    """``argparse`` belongs to ``visprior.cli``; the task packages are plain libraries."""
    parsers = [
        name
        for name, path in MODULES.items()
        if not _in_cli(name)
        and re.search(r"^\s*(import argparse|from argparse )", path.read_text(), re.M)
    ]
    assert parsers == []


def test_the_registry_imports_no_network_and_the_engine_no_task():
    registry = [target for target, *_ in IMPORTS["visprior.nets.registry"]]
    assert registry == []
    readers = (
        "visprior.cxr.io",
        "visprior.cxr.gaze",
        "visprior.cxr.data",
        "visprior.seg.transforms",
    )
    for module, found in IMPORTS.items():
        if module.startswith(("visprior.nets", "visprior.data", "visprior.layers", *readers)):
            assert not [t for t, *_ in found if t.startswith("visprior.engine")], module


def test_the_import_graph_has_no_circle():
    graph = {
        module: {target for target, *_ in found if target in MODULES and target != module}
        for module, found in IMPORTS.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circle = path[path.index(target) :] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])


def test_imports_inside_functions_have_a_reason():
    hidden = [
        f"{module}:{line}: {text.strip()}"
        for module, found in IMPORTS.items()
        if not _in_cli(module)
        for _, in_function, line, text in found
        if in_function
    ]
    assert not hidden, hidden


def test_a_fresh_interpreter_lists_every_network_and_loads_no_task():
    script = (
        "import sys, visprior\n"
        "print(','.join(visprior.list_models()))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('visprior'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    networks, loaded = (line.split(",") for line in result.stdout.strip().splitlines())
    assert {"ggcam_resnet18", "ggcam_resnet50", "ggcam_efficientnet_v2_s", "mtunet"} <= set(
        networks
    )
    assert {"repuxnet", "uxnet", "swinunetr", "unetr", "unet"} <= set(networks)
    tasks = ("visprior.cxr", "visprior.seg", "visprior.simplify", "visprior.engine")
    assert [m for m in loaded if m.startswith(tasks)] == []


# The command line stays a thin layer: a command's declaration or run fits on one screen.
LONGEST_CLI_FUNCTION = 60


def test_command_line_functions_are_short():
    long_functions = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, path in MODULES.items()
        if _in_cli(name)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LONGEST_CLI_FUNCTION
    ]
    assert long_functions == []
