"""``python -m benchmarks.device_check OUT_DIR [--wheels DIR] [--dry]``: the short GPU check.

It runs on a bare machine: Python and torch, nothing to download. So it finds visprior's
source beside itself, and takes the few other packages the networks need (numpy, MONAI, einops)
from wheel files in ``--wheels`` (``make device-wheels`` fetches them, 64 MiB at most), each
only where it is not installed already. See ``check.py`` for what it measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check")
    parser.add_argument("out_dir", type=Path, help="folder for device_check.json")
    parser.add_argument(
        "--wheels", type=Path, help="folder of wheel files for what is not installed"
    )
    parser.add_argument(
        "--dry", action="store_true", help="the tiny-size version even where CUDA exists"
    )
    parser.add_argument(
        "--seconds", type=float, default=270.0, help="time allowed in all (default 270)"
    )
    args = parser.parse_args(argv)
    if args.wheels is not None and not args.wheels.is_dir():
        parser.error(f"--wheels {args.wheels}: no such folder")
    from benchmarks.device_check.wheels import add_wheels

    added = add_wheels(args.wheels, args.out_dir / "deps") if args.wheels else []
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))
    from benchmarks.device_check.check import run_check

    report = run_check(args.out_dir, dry=args.dry, seconds=args.seconds, wheels=added)
    print(f"device check: {report['path']} ({report['summary']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
