"""The command line's parsers: argparse types over :mod:`smallbig.results.checks`, the options
several commands share, and one-line errors."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from smallbig.bench import CHUNKS
from smallbig.results.checks import count, number
from smallbig.workloads.registry import DEFAULT_SIZES, WORKLOADS


def arg_number(
    minimum: float = 0.0, maximum: float = math.inf, above: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in range (argparse names the option)."""

    def parse(text: str) -> float:
        try:
            return number("it", float(text), minimum, maximum, above)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None

    return parse


def arg_count(minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type=``: a whole number ≥ ``minimum``."""

    def parse(text: str) -> int:
        try:
            return count("it", int(text) if text.lstrip("-").isdigit() else text, minimum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("it ")) from None

    return parse


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: what is wrong, and where help is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backends SPEC...`` and ``--workers N``: every command that starts backends takes them."""
    parser.add_argument(
        "--backends",
        nargs="+",
        metavar="SPEC",
        help="backend names, or NAME@ADDRESS for a running cluster (default: every available one)",
    )
    parser.add_argument(
        "--workers", type=arg_count(), help="workers per backend (default: each one's own)"
    )


def add_counts(parser: argparse.ArgumentParser, *options: tuple[str, int, str]) -> None:
    """Whole-number options, each ``(flag, default, what it counts)``; help names the default."""
    for flag, default, what in options:
        parser.add_argument(
            flag, type=arg_count(), default=default, help=f"{what} (default: {default})"
        )


def add_cpus(parser: argparse.ArgumentParser) -> None:
    """``--cpus C``: the command, and every pool or local cluster it starts, held to C cores."""
    parser.add_argument(
        "--cpus",
        type=arg_number(above=True),
        metavar="C",
        help="run as a laptop of C cores: this command and every local pool or cluster it "
        "starts under one CPU quota (root; a scale model, see docs/clusters.md; default: none)",
    )


def add_run_folder(parser: argparse.ArgumentParser, name: str) -> None:
    """The optional positional ``name``: a run's output folder, by default the last run's."""
    parser.add_argument(
        name, nargs="?", help="output folder of a `smallbig run` (default: the last run's)"
    )


def answers(question: str, page: str) -> str:
    """A command's ``--help`` description: what it answers, in one line, and the page of
    ``docs/`` that explains it."""
    return f"{question} Explained in docs/{page} of smallbig's sources."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``smallbig`` subcommand."""
    parser = Parser(
        prog="smallbig",
        description=answers(
            "When does a thread pool, a process pool, Dask or Ray pay off, and from how many "
            "items?",
            "output.md",
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_backends(sub)
    _add_run(sub)
    _add_overhead(sub)
    _add_advise(sub)
    _add_cluster(sub)
    _add_report(sub)
    _add_make_images(sub)
    _add_serve_api(sub)
    _add_bench(sub)
    return parser


def _add_backends(sub: Any) -> None:
    """``smallbig backends``."""
    p = sub.add_parser(
        "backends",
        help="list backends, their engines and how to install them",
        description=answers(
            "Which backends can run here, and what to install for the others.", "protocol.md"
        ),
    )
    p.set_defaults(func="smallbig.cli.commands:cmd_backends")


def _add_run(sub: Any) -> None:
    """``smallbig run``."""
    p = sub.add_parser(
        "run",
        help="measure workloads × backends × sizes; print the verdict",
        description=answers("Which backend to use for how many items, measured here.", "output.md"),
    )
    p.add_argument(
        "--workloads",
        nargs="+",
        default=list(WORKLOADS),
        metavar="NAME",
        help=f"what to measure (default: {' '.join(WORKLOADS)})",
    )
    add_backend_options(p)
    p.add_argument(
        "--sizes",
        nargs="+",
        type=arg_count(),
        metavar="N",
        help="item counts for every workload (default: 5 sizes per workload, e.g. images "
        + " ".join(map(str, DEFAULT_SIZES["images"]))
        + ")",
    )
    add_counts(p, ("--repeats", 3, "warm repeats per point"))
    p.add_argument(
        "--out",
        type=_folder,
        default="smallbig-results",
        help="output folder (default: smallbig-results)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out: skip points it holds"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run in --out (records, figures)"
    )
    p.add_argument("--images", help="your own image folder (default: a generated dataset)")
    p.add_argument(
        "--ship-bytes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="images: send each file's bytes to the workers, not its path (default: when a "
        "backend is a cluster at an address off this machine's loopback)",
    )
    p.add_argument(
        "--tables",
        "-v",
        action="store_true",
        help="print every table (times, memory, fitted lines, the model's check) after the "
        "answer, not only in report.html",
    )
    _task_options(p)
    add_cpus(p)
    p.set_defaults(func="smallbig.cli.commands:cmd_run")


def _add_overhead(sub: Any) -> None:
    """``smallbig overhead``."""
    p = sub.add_parser(
        "overhead",
        help="measure per-backend overheads; save a calibration",
        description=answers(
            "What each backend costs before any work: start-up, per task, per byte.", "model.md"
        ),
    )
    add_backend_options(p)
    add_counts(
        p,
        ("--items", 20_000, "no-op items for the chunksize='auto' figure"),
        ("--repeats", 3, "timed runs per figure"),
    )
    p.add_argument(
        "--profile",
        help="calibration file to write (default: calibration.json in the cache folder, "
        "$SMALLBIG_CACHE or ~/.cache/smallbig)",
    )
    p.add_argument(
        "--plots",
        type=_folder,
        default=".",
        help="folder for overhead.png and phase_diagram.png (default: the current one)",
    )
    add_cpus(p)
    p.set_defaults(func="smallbig.cli.commands:cmd_overhead")


def _add_advise(sub: Any) -> None:
    """``smallbig advise``."""
    p = sub.add_parser(
        "advise",
        help="rank backends for a task from the calibration",
        description=answers("Which backend a task of this size should use, predicted.", "model.md"),
    )
    p.add_argument("--workload", choices=list(WORKLOADS), help="a built-in workload, measured")
    _task_options(p)
    p.add_argument(
        "--sample",
        type=arg_count(2),
        default=17,
        help="with --task: items of SOURCE profiled, the first one a warm-up (default: 17)",
    )
    p.add_argument("--items", type=arg_count(), required=True, help="how many items to process")
    p.add_argument("--item-ms", type=arg_number(), help="your task's time per item, run alone (ms)")
    p.add_argument(
        "--wait-ms",
        type=arg_number(),
        default=0.0,
        help="of --item-ms, the part spent waiting on I/O (ms, default: 0)",
    )
    p.add_argument("--item-kb", type=arg_number(), help="bytes shipped per item (kB, default: 0)")
    p.add_argument("--releases-gil", action="store_true", help="the task releases the GIL")
    p.add_argument("--coroutine", action="store_true", help="the task has an async version")
    # What the extrapolation to a cluster this machine does not have replaces, and the data.
    for flag, kind, text in (
        ("--workers", arg_count(),
         "extrapolate to a cluster of this many workers (default: as calibrated)"),
        ("--latency-ms", arg_number(),
         "extrapolate: network latency per task (ms, default: as calibrated)"),
        ("--bandwidth-mbps", arg_number(above=True),
         "extrapolate: network bandwidth (Mbit/s, default: as calibrated)"),
        ("--worker-memory-gb", arg_number(above=True),
         "extrapolate: memory of each cluster worker (GB, default: this machine's)"),
        ("--data-gb", arg_number(above=True),
         "the items' size in all (GB; default: --items × the bytes per item, measured or "
         "--item-kb): replaces the bytes per item, shipped and held in memory"),
    ):  # fmt: skip
        p.add_argument(flag, type=kind, help=text)
    p.add_argument(
        "--profile",
        help="calibration file (default: calibration.json in the cache folder; made if absent)",
    )
    add_cpus(p)
    p.set_defaults(func="smallbig.cli.commands:cmd_advise")


def _add_cluster(sub: Any) -> None:
    """``smallbig cluster``."""
    p = sub.add_parser(
        "cluster",
        help="start a multi-node cluster behind shaped links on this machine (root); hold it "
        "until Ctrl-C",
        description=answers(
            "What a cluster's network costs, on nodes emulated here.", "clusters.md"
        ),
    )
    p.add_argument("--engine", choices=["dask", "ray", "spark"], default="dask",
                   help="the engine (default: dask)")  # fmt: skip
    add_counts(
        p,
        ("--nodes", 2, "worker nodes, each a network namespace of its own"),
        ("--workers-per-node", 1, "worker processes per node"),
    )
    p.add_argument(
        "--bandwidth-mbps",
        type=arg_number(),
        help="every link's rate in each direction, the driver's included (default: unshaped)",
    )
    p.add_argument(
        "--cpus-per-node",
        type=arg_number(above=True),
        metavar="C",
        help="hold every node, the scheduler's or head's included, to C cores, each in a CPU "
        "group of its own (a scale model's nodes; default: every node shares every core)",
    )
    p.add_argument(
        "--cut",
        nargs=3,
        type=arg_number(),
        action="append",
        default=[],
        metavar=("NODE", "AFTER", "FOR"),
        help="cut worker node NODE off the network AFTER seconds from the start, for FOR "
        "seconds (0: for good); may be repeated (default: no cut)",
    )
    p.set_defaults(func="smallbig.cli.commands:cmd_cluster")


def _add_report(sub: Any) -> None:
    """``smallbig report``."""
    p = sub.add_parser(
        "report",
        help="draw the figures and write report.html of a run: tables, figures, advice",
        description=answers("What a run measured, as one page to read or share.", "output.md"),
    )
    add_run_folder(p, "directory")
    p.set_defaults(func="smallbig.cli.commands:cmd_report")


def _add_make_images(sub: Any) -> None:
    """``smallbig make-images``."""
    p = sub.add_parser(
        "make-images",
        help="write a realistic image dataset to a folder",
        description=answers(
            "A folder of images of mixed sizes and formats to measure on.", "workloads.md"
        ),
    )
    p.add_argument("directory", type=_folder, help="where to write the images")
    add_counts(p, ("--count", 48, "how many images"))
    p.add_argument(
        "--seed", type=arg_count(0), default=0, help="same seed, same images (default: 0)"
    )
    p.set_defaults(func="smallbig.cli.commands:cmd_make_images")


def _add_serve_api(sub: Any) -> None:
    """``smallbig serve-api``."""
    p = sub.add_parser(
        "serve-api", help="serve the weather API on 127.0.0.1 until Ctrl-C", add_help=False
    )
    p.set_defaults(func=None)


def _folder(text: str) -> str:
    """An argparse ``type=`` for a folder name: not empty (``''`` is not "here")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder (use . for the current one)")
    return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smallbig")
    except PackageNotFoundError:  # run from a checkout without installing it
        return "unknown"


def _task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        metavar="MODULE:FUNCTION",
        help="your own function, e.g. mypkg.jobs:process (the current directory is searched "
        "first); replaces --workloads/--workload",
    )
    p.add_argument(
        "--items-from",
        metavar="SOURCE",
        help="the items for --task: a folder or glob (each file path is an item), a .jsonl or "
        ".csv file (each row is the item, or its keyword arguments), or range:N",
    )


def _add_bench(sub: Any) -> None:
    """Register ``smallbig bench ...`` on the CLI's subparsers."""
    bench = sub.add_parser(
        "bench",
        help="benchmarks that print figures",
        description=answers(
            "How far the adapters and the model can be trusted, in figures.", "evidence.md"
        ),
    )
    kinds = bench.add_subparsers(dest="bench", required=True)
    _add_bench_overhead(kinds)
    _add_bench_kernels(kinds)
    _add_bench_api(kinds)
    _add_bench_tasks(kinds)
    _add_bench_cluster(kinds)
    _add_bench_memory(kinds)
    _add_bench_advice(kinds)
    for p in kinds.choices.values():
        # advice reads records: it starts nothing
        if p.get_default("func") != "smallbig.bench.overhead:cmd_advice":
            add_cpus(p)


def _add_bench_overhead(kinds: Any) -> None:
    """Register ``smallbig bench overhead``."""
    p = kinds.add_parser(
        "overhead",
        help="per-item cost of map on each backend",
        description=answers("What the adapter costs over each engine's own API.", "evidence.md"),
    )
    add_backend_options(p)
    add_counts(
        p,
        ("--items", 100_000, "no-op items for chunksize='auto'"),
        (
            "--single-items",
            2_000,
            "items for chunksize=1 on cluster backends; local ones use --items",
        ),
        ("--tasks", 2_000, "no-op tasks for submit vs the engine's own API"),
        ("--repeats", 3, "timed runs per figure"),
    )
    p.add_argument(
        "--sweep",
        type=arg_count(0),
        default=25,
        metavar="N",
        help="on cluster backends, N waits of 10 ms per worker through every chunksize of "
        f"{' '.join(map(str, CHUNKS))} and 'auto' (default: 25; 0: skip)",
    )
    p.set_defaults(func="smallbig.bench.overhead:cmd_adapter_overhead")


def _add_bench_kernels(kinds: Any) -> None:
    """Register ``smallbig bench kernels``."""
    p = kinds.add_parser(
        "kernels",
        help="the four pixel kernels: first call and steady state",
        description=answers(
            "What a JIT buys: pure Python, NumPy and numba kernels.", "evidence.md"
        ),
    )
    add_counts(
        p,
        ("--side", 2000, "image side in pixels: side × side"),
        ("--repeats", 5, "steady-state calls"),
    )
    p.set_defaults(func="smallbig.bench.overhead:cmd_kernels")


def _add_bench_api(kinds: Any) -> None:
    """Register ``smallbig bench api``."""
    p = kinds.add_parser(
        "api",
        help="HTTP throughput of threads and asyncio vs the ideal",
        description=answers(
            "How many requests a second threads and asyncio reach here.", "evidence.md"
        ),
    )
    p.add_argument(
        "--concurrency",
        type=arg_count(),
        nargs="+",
        default=[1, 8, 64, 256],
        help="requests in flight (default: 1 8 64 256)",
    )
    p.add_argument(
        "--latency-ms",
        type=arg_number(),
        default=50.0,
        help="the server's latency per request (ms, default: 50)",
    )
    add_counts(p, ("--rounds", 20, "requests per unit of concurrency"))
    p.set_defaults(func="smallbig.bench.overhead:cmd_api")


def _add_bench_advice(kinds: Any) -> None:
    """Register ``smallbig bench advice``."""
    p = kinds.add_parser(
        "advice",
        help="how often the model picks the measured fastest",
        description=answers(
            "How often the advice for a size not run is the fastest.", "evidence.md"
        ),
    )
    add_run_folder(p, "records")
    p.set_defaults(func="smallbig.bench.overhead:cmd_advice")


def _add_bench_tasks(kinds: Any) -> None:
    """Register ``smallbig bench tasks``."""
    p = kinds.add_parser(
        "tasks",
        help="advice vs every backend measured, on unseen task kinds",
        description=answers(
            "Whether the advice holds on kinds of task it was not built on.", "evidence.md"
        ),
    )
    add_backend_options(p)
    p.add_argument("--tasks", nargs="+", metavar="NAME", help="task kinds (default: all)")
    add_counts(
        p,
        ("--repeats", 3, "warm maps per backend, spread over the rounds of cold starts"),
        ("--colds", 3, "cold starts per backend, each a fresh backend and its first map"),
    )
    p.add_argument(
        "--scale",
        type=arg_number(above=True),
        default=1.0,
        help="multiply every task's item count by this (default: 1)",
    )
    p.add_argument(
        "--uncapped",
        action="store_true",
        help="also measure with inner_threads=None: what oversubscription costs",
    )
    p.add_argument("--out", help="also write the calibration, profiles, times and scores (JSON)")
    p.set_defaults(func="smallbig.bench.tasks:cmd_tasks")


def _add_bench_cluster(kinds: Any) -> None:
    """Register ``smallbig bench cluster``."""
    p = kinds.add_parser(
        "cluster",
        help="the cluster model against clusters of 4–16 workers",
        description=answers(
            "Whether the cluster predictions hold on clusters measured here.", "evidence.md"
        ),
    )
    p.add_argument("--engines", nargs="+", default=["dask", "ray"],
                   choices=["dask", "ray", "spark"],
                   help="cluster engines (default: dask ray; spark when named)")  # fmt: skip
    p.add_argument("--workers", nargs="+", type=arg_count(), default=[4, 8, 16],
                   help="worker counts (default: 4 8 16)")  # fmt: skip
    p.add_argument("--links", action="store_true",
                   help="instead: emulated multi-node clusters behind links of 100 Mbit/s, "
                   "1 Gbit/s and unshaped, 2 and 4 nodes (root: `smallbig cluster`)")  # fmt: skip
    p.add_argument("--scale-model", action="store_true",
                   help="--links as a scale model (with --cpus C): every node held to C cores "
                   "as the laptop is, links scaled by C, CPU-bound cases too")  # fmt: skip
    p.add_argument("--nodes", nargs="+", type=arg_count(),
                   help="with --links: worker nodes (default: 2 4; --scale-model: 2 and the "
                   "most the machine allows)")  # fmt: skip
    p.add_argument("--bandwidths-mbps", nargs="+", type=arg_number(),
                   help="with --links: link rates, 0: unshaped (default: 100 1000 0)")  # fmt: skip
    p.add_argument("--profile",
                   help="predict from this calibration (`smallbig overhead`; it must hold the "
                   "engines) instead of measuring one first (default: measure one)")  # fmt: skip
    p.add_argument("--cases", nargs="+", metavar="NAME",
                   help="only the cases whose name contains one of these, e.g. tiny 'wait 10' "
                   "(default: every case)")  # fmt: skip
    p.add_argument("--out", help="also write the tables' rows (JSON)")
    add_counts(p, ("--repeats", 3, "warm maps per case"))
    p.set_defaults(func="smallbig.bench.cluster_cli:cmd_bench_cluster")


def _add_bench_memory(kinds: Any) -> None:
    """Register ``smallbig bench memory``."""
    p = kinds.add_parser(
        "memory",
        help="footprints, and a dataset larger than memory streamed",
        description=answers(
            "What each backend adds to memory, and streaming past it.", "evidence.md"
        ),
    )
    add_backend_options(p)
    add_counts(p, ("--items", 20_000, "blocks streamed"), ("--buffersize", 8, "tasks in flight"))
    p.add_argument(
        "--item-mb", type=arg_number(above=True), default=1.0, help="MB per block (default: 1)"
    )
    p.add_argument(
        "--images-backends",
        nargs="*",
        default=["threads", "processes"],
        help="backends on which images are timed with and without sampling "
        "(default: threads processes)",
    )
    add_counts(p, ("--repeats", 5, "paired image runs"))
    p.set_defaults(func="smallbig.bench.memory:cmd_memory")
