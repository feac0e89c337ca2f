"""Run the benchmark studies; write each study's results and report, and the index RESULTS.md.

python -m benchmarks                  # every study (many hours on 2 cores)
python -m benchmarks --only NAME      # one part (the parts are listed below)
python -m benchmarks --only NAME --status   # how much of a resumable grid is done
python -m benchmarks --report         # regenerate every report from the results files
python -m benchmarks --quick          # small sizes, a smoke test (CI runs it)

Each study lives in benchmarks/<study>/ (study.py, results.json, figure.png, analysis.md and
the generated RESULTS.md). A part adds its rows to its study's results file; the grids of
kernel-scaling, kernel-scaling-upkern and ggcam-ct write each finished unit at once, and a run
stopped part-way continues from the last checkpoint of the unit in progress.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.record import ResultsFile
from benchmarks.report import log, write_index, write_study_report
from benchmarks.studies import PARTS, STUDIES, RunContext, Study
from benchmarks.timing import isolate


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parts = "\n".join(f"  {part:24} {study.label} {study.title}" for part, study in PARTS.items())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog=f"parts:\n{parts}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up")
    parser.add_argument("--only", choices=tuple(PARTS), metavar="PART", help="run one part")
    parser.add_argument(
        "--status", action="store_true", help="with --only: how much of its grid is done"
    )
    parser.add_argument(
        "--report", action="store_true", help="only regenerate the reports from results files"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="SEED", help="(d2), (d3), (g2): these seeds"
    )
    parser.add_argument("--criteria", nargs="+", metavar="NAME", help="(g2): these criteria")
    parser.add_argument(
        "--kernels", nargs="+", type=int, metavar="K", help="(d2): these kernel sizes"
    )
    parser.add_argument(
        "--rhos", nargs="+", type=float, metavar="RHO", help="(e2): these shortcut strengths"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        help="training budget per network in (d) (default 10) and (d3) (default 5), and per "
        "precision in (j) (default 5)",
    )
    parser.add_argument("--models", nargs="+", metavar="NAME", help="(d), (d3): these networks")
    parser.add_argument(
        "--tasks", nargs="+", choices=("brain", "chest"), help="(k): these tasks (default both)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent,
        help="folder holding the study folders and the index (default: benchmarks/)",
    )
    args = parser.parse_args(argv)
    if args.status and not args.only:
        parser.error("--status: name the part with --only")
    return args


def run_part(study: Study, part: str, args: argparse.Namespace) -> None:
    folder = args.out / study.name
    store = ResultsFile(folder / "results.json", study.name, args.quick)
    with tempfile.TemporaryDirectory(prefix=f"visprior-{study.name}-") as workdir:
        data = study.run(part, RunContext(args, store, Path(workdir), log))
    store.save(data, part, args.repeats if study.records_repeats else None)
    if study.figure is not None:
        study.figure(data, folder / "figure.png")
    log(f"{part} done: {write_study_report(study, store.content, folder)}")


def print_status(study: Study, args: argparse.Namespace) -> None:
    from benchmarks.grid import grid_status

    folder = args.out / study.name
    content = ResultsFile(folder / "results.json", study.name, args.quick).content
    if study.grids is None:
        state = "has results" if content["data"] is not None else "has not run"
        print(f"{args.only}: not a resumable grid; {study.name} {state}")
        return
    for part, within, grid in study.grids(args):
        data = (content["data"] or {}).get(within) if within else content["data"]
        print(f"{part}:")
        print("\n".join(grid_status(grid, data, folder / ".work")))


def write_reports(out: Path) -> None:
    contents = {}
    for study in STUDIES:
        path = out / study.name / "results.json"
        if path.is_file():
            contents[study.name] = json.loads(path.read_text())
            write_study_report(study, contents[study.name], path.parent)
    print(f"wrote {write_index(STUDIES, contents, out)}")


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.status:
        print_status(PARTS[args.only], args)
        return
    if not args.report:
        isolate(not args.quick)
        if args.only:
            run_part(PARTS[args.only], args.only, args)
        else:
            for study in STUDIES:
                for part in study.full_run or study.parts[:1]:
                    run_part(study, part, args)
    write_reports(args.out)


if __name__ == "__main__":
    main()
