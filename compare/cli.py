"""The ``smallbig`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backends import BACKENDS, backend_class
from backends.base import engine_version
from compare.runner import WORKLOADS


def cmd_backends(args: argparse.Namespace, console: Console) -> int:
    """List every backend with availability, engine version and the extra that installs it."""
    table = Table(title="smallbig backends")
    for column in ("backend", "available", "engine", "version", "install", "kind"):
        table.add_column(column)
    for name, (_module, _cls, engine, extra) in BACKENDS.items():
        try:
            cls = backend_class(name)
        except ImportError:
            install = escape(f"pip install 'smallbig[{extra}]'")
            table.add_row(name, "no", engine or "", "-", install, "")
            continue
        kind = "cluster" if cls.distributed else "in-process" if cls.in_process else "local"
        install = escape(f"smallbig[{extra}]") if extra else "(core)"
        table.add_row(name, "yes", cls.engine, engine_version(cls.engine), install, kind)
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``smallbig`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="smallbig",
        description="When does a thread pool, a process pool, Dask or Ray pay off?",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backends", help="list backends, their engines and how to install them")
    p.set_defaults(func=cmd_backends)
    p = sub.add_parser("run", help="measure workloads × backends × sizes; print the verdict")
    p.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        metavar="NAME",
        help=f"default: {' '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--backends",
        nargs="+",
        metavar="SPEC",
        help="names or dask@ADDRESS / ray@ADDRESS (default: every available one)",
    )
    p.add_argument("--sizes", nargs="+", type=int, help="item counts for every workload")
    p.add_argument("--repeats", type=int, default=3, help="warm repeats per point")
    p.add_argument("--workers", type=int, help="workers per backend (default: each one's own)")
    p.add_argument("--out", default="smallbig-results", help="output directory")
    p.add_argument("--resume", action="store_true", help="skip points already measured")
    p.add_argument("--images", help="your own image folder (default: a generated dataset)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("make-images", help="write a realistic image dataset to a folder")
    p.add_argument("directory")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_images)
    p = sub.add_parser(
        "serve-api", help="serve the weather API on 127.0.0.1 until Ctrl-C", add_help=False
    )
    p.set_defaults(func=None)
    from compare import bench

    bench.add_parser(sub)
    return parser


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the matrix, then print the tables, thresholds and advice."""
    import json
    from pathlib import Path

    from compare.report import print_report
    from compare.runner import run

    records = run(
        args.workloads,
        args.backends,
        args.sizes,
        args.repeats,
        args.out,
        args.workers,
        args.resume,
        args.images,
        progress=True,
    )
    meta = json.loads((Path(args.out) / "run.json").read_text())
    startup = {b: i.get("startup_s", 0.0) for b, i in meta.get("backends", {}).items()}
    print_report(records, startup, console)
    console.print(f"records: {Path(args.out).resolve() / 'records.csv'}")
    return 0


def cmd_make_images(args: argparse.Namespace, console: Console) -> int:
    """Write ``--count`` generated images into DIRECTORY."""
    from workloads.imagegen import make_images

    paths = make_images(args.directory, args.count, args.seed)
    size = sum(p.stat().st_size for p in paths)
    console.print(f"{len(paths)} images, {size / 1e6:.1f} MB in {args.directory}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smallbig`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-api"]:
        # The server owns its options (and its --help).
        from workloads.weather_server import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    # A pipe or CI log is not a terminal: give tables room instead of 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return args.func(args, console)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except (ValueError, TypeError, ImportError, ConnectionError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
