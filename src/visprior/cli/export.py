"""``visprior export bundle | torchscript | onnx``: a trained segmentation run, deployable.

The parser is light; each command imports the export code (``visprior.deploy``) when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visprior.cli.options import add_force_flag, add_output, dispatch

__all__ = ["add_commands", "run"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export", help="a trained segmentation run as a MONAI bundle, TorchScript or ONNX"
    )
    actions = export.add_subparsers(dest="export_command", required=True)

    bundle = actions.add_parser(
        "bundle",
        help="a MONAI bundle (configs, weights, TorchScript, docs) that `python -m monai.bundle "
        "run` executes",
    )
    bundle.add_argument("run", type=Path, help="run folder or checkpoint of `seg train`")
    add_output(bundle, "bundle folder", required=True)
    bundle.add_argument(
        "--zip", action="store_true", help="also write OUTPUT.zip, the folder as one archive"
    )
    add_force_flag(bundle, "replace an existing bundle folder or zip file")

    for name, suffix in (("torchscript", ".ts / .pt"), ("onnx", ".onnx")):
        command = actions.add_parser(
            name,
            help=f"the fused network as {'TorchScript' if name == 'torchscript' else 'ONNX'}, "
            "traced at the run's window size",
        )
        command.add_argument("run", type=Path, help="run folder or checkpoint of `seg train`")
        add_output(command, f"file ({suffix})", required=True)
        add_force_flag(command, "replace an existing file")


def run(args: argparse.Namespace) -> int:
    handlers = {"bundle": _bundle, "torchscript": _network, "onnx": _network}
    return dispatch("export", args.export_command, handlers, args)


def _bundle(args: argparse.Namespace) -> int:
    from visprior.deploy.bundle import export_bundle

    written = export_bundle(args.run, args.output, overwrite=args.overwrite, zip_file=args.zip)
    print(f"wrote {written}")
    return 0


def _network(args: argparse.Namespace) -> int:
    from visprior.deploy.runs import export_run_network

    example = export_run_network(args.run, args.output, args.export_command, args.overwrite)
    shape = " x ".join(map(str, example))
    print(f"wrote {args.output} (input image {shape}, output logits, one channel per class)")
    return 0
