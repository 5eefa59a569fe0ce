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
    from compare import bench

    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smallbig`` console script."""
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
