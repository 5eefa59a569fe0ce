"""The ``smallbig`` command line."""

from __future__ import annotations

import _thread
import argparse
import faulthandler
import importlib.util
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backends import BACKENDS, available, backend_class, default_backends
from backends.base import engine_version
from backends.registry import missing
from compare.checks import (
    Parser,
    add_backend_options,
    add_counts,
    add_cpus,
    add_run_folder,
    answers,
    arg_count,
    arg_number,
)
from compare.fmt import cell, seconds, size
from workloads.registry import DEFAULT_SIZES, WORKLOADS


def cmd_backends(args: argparse.Namespace, console: Console) -> int:
    """List every backend with availability, engine version and the extra that installs it."""
    table = Table(title="smallbig backends")
    for column in ("backend", "available", "engine", "version", "install", "kind"):
        table.add_column(column)
    for name, entry in BACKENDS.items():
        engine = entry.engine or "python"
        try:
            cls = backend_class(name)
        except ImportError:
            installed = entry.engine is None or importlib.util.find_spec(entry.engine)
            lacking = missing(name) if installed else None
            install = escape(lacking or f"pip install 'smallbig[{entry.extra}]'")
            table.add_row(name, "no", engine, "-", install, "")
            continue
        kind = "cluster" if cls.distributed else "in-process" if cls.in_process else "local"
        if not entry.default:
            kind += " (when named)"
        install = escape(f"smallbig[{entry.extra}]") if entry.extra else "(core)"
        table.add_row(name, "yes", engine, engine_version(engine), install, kind)
    console.print(table)
    return 0


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
    p = sub.add_parser(
        "backends",
        help="list backends, their engines and how to install them",
        description=answers(
            "Which backends can run here, and what to install for the others.", "protocol.md"
        ),
    )
    p.set_defaults(func=cmd_backends)
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
    p.set_defaults(func=cmd_run)
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
    p.set_defaults(func=cmd_overhead)
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
    p.set_defaults(func=cmd_advise)
    p = sub.add_parser(
        "cluster",
        help="start a multi-node cluster behind shaped links on this machine (root); hold it "
        "until Ctrl-C",
        description=answers(
            "What a cluster's network costs, on nodes emulated here.", "clusters.md"
        ),
    )
    p.add_argument(
        "--engine", choices=["dask", "ray"], default="dask", help="the engine (default: dask)"
    )
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
    p.set_defaults(func=cmd_cluster)
    p = sub.add_parser(
        "report",
        help="write report.html of a run: tables, figures, advice",
        description=answers("What a run measured, as one page to read or share.", "output.md"),
    )
    add_run_folder(p, "directory")
    p.set_defaults(func=cmd_report)
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
    p.set_defaults(func=cmd_make_images)
    p = sub.add_parser(
        "serve-api", help="serve the weather API on 127.0.0.1 until Ctrl-C", add_help=False
    )
    p.set_defaults(func=None)
    from compare import bench

    bench.add_parser(sub)
    return parser


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


def _user_task(args: argparse.Namespace) -> tuple[Any, list[Any]] | None:
    """The ``--task`` function and its ``--items-from`` items, or ``None`` without ``--task``."""
    if args.task is None:
        if args.items_from is not None:
            raise ValueError("--items-from gives the items of --task MODULE:FUNCTION")
        return None
    if args.items_from is None:
        raise ValueError("--task needs --items-from SOURCE: the items to map it over")
    from workloads.user import load_task, read_items

    items = read_items(args.items_from)  # first: a bad SOURCE fails before any import
    return load_task(args.task), items


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the matrix, then print the tables, thresholds, advice and the model's check."""
    from compare import plots
    from compare.fits import baseline_item_s
    from compare.records import add_outputs
    from compare.report import (
        print_answer,
        print_failures,
        print_memory_band,
        print_model_check,
        print_report,
    )
    from compare.report_html import write_report
    from compare.runner import run

    user = _user_task(args)
    result = run(
        args.workloads,
        args.backends,
        args.sizes,
        args.repeats,
        args.out,
        args.workers,
        args.resume,
        args.images,
        progress=True,
        overwrite=args.overwrite,
        task=user and user[0],
        items=user and user[1],
        ship_bytes=args.ship_bytes,
    )
    records, meta, profile, out = (
        result.records,
        result.metadata,
        result.calibration,
        result.out_dir,
    )
    if args.tables:
        print_report(records, result.startup, console, meta.get("backends", {}))
        if profile is not None:
            print_model_check(records, profile, meta.get("workloads", {}), console)
            print_memory_band(records, profile, meta.get("workloads", {}), console)
    else:
        print_failures(records, console)  # never hidden: wrong or unmeasured points
    print_answer(result.answer(), console)
    drawn = [
        plots.scaling(records, workload, out / f"{workload}_scaling.png")
        for workload in sorted(records["workload"].unique())
    ]
    if profile is not None:  # measured winners on top of the predicted regions
        item_s = baseline_item_s(records)
        known = records[records["backend"].isin(profile["backends"])]
        winners = plots.measured_winners(known, item_s.to_dict())
        # Three of the four workloads release the GIL (the no-ops take too little to matter).
        # One workload: its data per item gives the diagram its data axis and memory boundary.
        workloads = meta.get("workloads", {})
        data = (
            workloads[next(iter(workloads))].get("data_bytes_per_item", 0)
            if len(workloads) == 1
            else 0
        )
        drawn.append(
            plots.phase_diagram(
                profile,
                out / "phase_diagram.png",
                winners,
                True,
                cluster=plots.Cluster(),
                item_bytes=int(data or 0),
            )
        )
    add_outputs(out, drawn)  # what the next run into --out replaces
    report = write_report(out)
    add_outputs(out, [report])
    console.print(
        f"every table and figure: {report.resolve()}"
        + ("" if args.tables else " (--tables prints them here)")
    )
    measured = records[records["failure"] == ""]
    hopeless = sorted(
        w for w, group in measured.groupby("workload") if (group["errors"] == group["size"]).all()
    )
    if hopeless:
        # Timing a task that raised on every item measures nothing about the task.
        console.print(
            f"[bold red]nothing could be processed[/bold red] in {', '.join(hopeless)}: every "
            "item raised an error on every backend (a folder of corrupt files, a server that "
            "is down?); the times above are of failing, not of working"
        )
        return 1
    return 0


def cmd_overhead(args: argparse.Namespace, console: Console) -> int:
    """Measure overhead terms per backend and save the calibration profile."""
    from compare.calibrate import overhead

    profile = overhead(args.backends, args.workers, args.items, args.repeats, args.profile)
    table = Table(title="overhead per backend (medians)")
    cols = [
        "backend",
        "workers",
        "startup_s",
        "reuse_s",
        "task_overhead_s",
        "auto_overhead_s",
        "alpha_value_s",
        "beta_value_Bps",
        "fit_error_value",
        "alpha_put_s",
        "beta_put_Bps",
        "fit_error_put",
    ]
    for col in cols:
        table.add_column(col.replace("_", " "), justify="right")
    for row in profile["backends"].values():
        table.add_row(*(cell(c, row.get(c)) for c in cols))
    console.print(table)
    console.print(
        "startup s: a first start (a script run once); reuse s: a pool got back running by "
        "a second call in the same session (a reusable pool: joblib's; '-': not reusable)"
    )
    from pathlib import Path

    from compare import plots

    folder = Path(args.plots)
    drawn = [
        plots.overhead_breakdown(profile, folder / "overhead.png"),
        plots.phase_diagram(profile, folder / "phase_diagram.png", cluster=plots.Cluster()),
    ]
    console.print(f"calibration saved to {profile['path']}; plots: {', '.join(map(str, drawn))}")
    return 0


def cmd_advise(args: argparse.Namespace, console: Console) -> int:
    """Rank backends for a task by predicted time."""
    from compare.calibrate import load_profile, overhead
    from compare.costmodel import predict, startup_note

    task = _task_cost(args)  # first: a bad task description fails before any calibration
    extrapolated = any(
        x is not None
        for x in (args.workers, args.latency_ms, args.bandwidth_mbps, args.worker_memory_gb)
    )
    profile = load_profile(args.profile)
    if profile is None:
        # What a cluster extrapolation scales is a cluster backend's measured overheads.
        names = [b for b in default_backends() if extrapolated or not backend_class(b).distributed]
        console.print(f"no calibration yet: running a quick one ({', '.join(names)})")
        profile = overhead(names, items=5000, repeats=1, path=args.profile)
    clusters = [b for b, row in profile["backends"].items() if row.get("distributed")]
    if extrapolated and not clusters:
        engines = [b for b in available() if backend_class(b).distributed]
        todo = (
            f"run smallbig overhead{f' --profile {args.profile}' if args.profile else ''}: "
            f"it measures every available backend, {' and '.join(engines)} included"
            if engines
            else "pip install 'smallbig[dask]' (or [ray]), then run smallbig overhead"
        )
        console.print(
            "[yellow]cannot extrapolate to a cluster:[/yellow] the calibration holds no "
            f"cluster backend to scale; {escape(todo)}. Ranking the local backends as measured."
        )
        extrapolated = False
    described = isinstance(task, dict)
    ranked = predict(
        profile,
        args.items,
        task["item_s"] if described else None,
        task["item_bytes"] if described else 0,
        task=None if described else task,
        cpu_s=task["cpu_s"] if described else None,
        releases_gil=described and task["releases_gil"],
        coroutine=described and task["coroutine"],
        workers=args.workers,
        latency_s=None if args.latency_ms is None else args.latency_ms / 1e3,
        bandwidth_Bps=None if args.bandwidth_mbps is None else args.bandwidth_mbps * 1e6 / 8,
        data_bytes=None if args.data_gb is None else args.data_gb * 1e9,
        worker_memory_bytes=None if args.worker_memory_gb is None else args.worker_memory_gb * 1e9,
    )
    if not described:
        _print_profile(task, console)
        task = {
            "item_s": task.item_s,
            "cpu_s": task.cpu_s,
            "item_bytes": task.arg_bytes + task.result_bytes,
        }
    if args.data_gb is not None:
        task["item_bytes"] = args.data_gb * 1e9 / args.items
    from backends.cpugroups import current

    quota = current()  # under --cpus: what every figure here rests on
    title = (
        f"{args.items:,} items of {seconds(task['item_s'])} "
        f"({seconds(task['cpu_s'])} CPU), {size(task['item_bytes'])} each: "
        f"PREDICTED{' (extrapolated to a cluster)' if extrapolated else ''}"
        + (f" on a laptop of {quota['cpus']:g} cores (a scale model's quota)" if quota else "")
    )
    table = Table(title=title)
    for col in ("rank", "backend", "workers", "predicted s", "memory: how, peak", "why"):
        table.add_column(col)
    for i, p in enumerate(ranked, 1):
        room = f"{p.memory.describe()}, {size(p.memory.peak_bytes)}"
        table.add_row(str(i), p.backend, str(p.workers), seconds(p.seconds), room, p.reason)
    console.print(table)
    console.print(memory_boundary(ranked, profile))
    note = startup_note(ranked)
    if note:
        console.print(note)
    return 0


def memory_boundary(ranked: list[Any], profile: dict[str, Any]) -> str:
    """One line: whether the data fits in this machine's memory at once, and what then."""
    from compare.memory import AT_ONCE, STREAMING, machine_memory

    here = size(machine_memory(profile))
    if all(p.memory.mode == AT_ONCE for p in ranked):
        return f"  the data fits in memory ({here} here) at once on every backend"
    held = [p.backend for p in ranked if p.memory.mode == AT_ONCE]
    streams = [p.backend for p in ranked if p.memory.mode == STREAMING]
    says = [f"  the data does not fit in this machine's memory ({here}) at once"]
    if held:
        says.append(f"{', '.join(held)} hold it at once")
    if streams:
        says.append(f"{', '.join(streams)} stream it (map(..., buffersize=N), N as shown)")
    lost = [p.backend for p in ranked if not p.memory.fits]
    if lost:
        says.append(f"{', '.join(lost)} cannot run it, even streaming")
    return "; ".join(says)


def _print_profile(task: Any, console: Console) -> None:
    """One line per measured trait of a profiled task."""
    table = Table(title=f"{task.name}: measured on {task.items} items (after a warm-up)")
    table.add_column("trait")
    table.add_column("value", justify="right")
    rows = task.traits()
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _task_cost(args: argparse.Namespace) -> Any:
    """The task the options name: a measured :class:`~compare.taskprofile.TaskProfile`
    (``--task`` or ``--workload``), or the hand-described costs as a dict."""
    user = _user_task(args)
    if user is not None:
        from compare.taskprofile import profile_task
        from workloads.user import takes_kwargs

        fn, items = user
        step = max(1, len(items) // args.sample)  # spread over SOURCE, not only its head
        sample = items[::step][: args.sample]
        if len(sample) < 2:
            sample = (items * 2)[:2]
        return profile_task(fn, sample, kwargs=takes_kwargs(fn, items))
    if args.workload is None:
        if args.item_ms is None:
            raise ValueError(
                "give --task MODULE:FUNCTION --items-from SOURCE, --workload NAME, or "
                "--item-ms X (and --item-kb Y)"
            )
        if not 0 <= args.wait_ms <= args.item_ms:
            raise ValueError(f"--wait-ms must be between 0 and --item-ms, got {args.wait_ms}")
        return {
            "item_s": args.item_ms / 1e3,
            "cpu_s": (args.item_ms - args.wait_ms) / 1e3,
            "item_bytes": int((args.item_kb or 0) * 1e3),
            "releases_gil": args.releases_gil,
            "coroutine": args.coroutine,
        }
    from compare.costmodel import task_cost
    from workloads.registry import open_workloads

    with open_workloads([args.workload]) as loaded:
        return task_cost(loaded[args.workload])


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Write ``report.html`` for an existing run folder."""
    from compare.calibrate import last_run
    from compare.records import add_outputs
    from compare.report_html import write_report

    folder = args.directory or str(last_run())
    path = write_report(folder)
    add_outputs(folder, [path])
    console.print(f"report: {path.resolve()}")
    return 0


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    """Start an emulated cluster, print its spec, hold it until Ctrl-C or SIGTERM."""
    import time

    from backends.emulated import EmulatedCluster

    cluster = EmulatedCluster(
        args.engine,
        args.nodes,
        args.workers_per_node,
        args.bandwidth_mbps,
        cpus_per_node=args.cpus_per_node,
    )
    with cluster:
        for node, after, length in args.cut:
            if node != int(node):
                raise ValueError(f"--cut NODE must be a whole number, got {node:g}")
            cluster.cut(int(node), after, length or None)
            span = f"for {length:g} s" if length else "for good"
            console.print(f"node {int(node)} will be cut off after {after:g} s, {span}")
        link = f"{args.bandwidth_mbps:g} Mbit/s" if args.bandwidth_mbps else "unshaped"
        cores = (
            f"each node held to {args.cpus_per_node:g} cores"
            if args.cpus_per_node
            else "on this machine's cores"
        )
        console.print(
            f"emulated {args.engine} cluster: {args.nodes} nodes × {args.workers_per_node} "
            f"workers, every link {link}, {cores} (no added latency)"
        )
        console.print(f"--backends {cluster.spec}", soft_wrap=True)
        console.print("holding it until Ctrl-C", highlight=False)
        sys.stdout.flush()
        while True:  # until Ctrl-C or SIGTERM (main() makes sure both raise here)
            time.sleep(3600)


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
    # A pipe or CI log is not a terminal: 100 columns, what the tables are laid out for.
    console = Console(width=None if sys.stdout.isatty() else 100)
    # SIGTERM (timeout, docker stop, Slurm, systemd) stops a command as Ctrl-C does: every
    # `with` and `finally` on the way out stops what it started, and measured rows stay.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # A command started in the background by a script inherits SIGINT ignored (POSIX shells
    # do that to `cmd &`), and Python then never raises KeyboardInterrupt: `kill -INT` left
    # `smallbig cluster` holding its namespaces. Every command stops on it, as it says.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill -USR1 PID` prints where every thread of a command that seems stuck is.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_interrupts
    try:
        from backends.cpugroups import laptop

        # The laptop's quota is taken before the command starts anything: every pool and
        # local cluster it starts is this process's child, and inherits it.
        with laptop(getattr(args, "cpus", None)):
            return args.func(args, console)
    except Terminated:
        console.print("[red]terminated (SIGTERM)[/red]: stopped what it had started")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except (ValueError, TypeError, ImportError, ConnectionError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _redeliver_interrupts(unraisable: Any) -> None:
    """Deliver again a Ctrl-C or SIGTERM that a ``__del__`` or callback swallowed.

    A signal handler raises in whatever frame runs; when that is a finalizer (a Dask
    ``Future.__del__`` releasing its key, say) Python prints "Exception ignored" and goes on,
    and the run would finish as if never stopped. The signal is raised again in the main
    thread a moment later, from a timer thread: raised from this hook, it would be swallowed
    again (the hook runs inside the finalizer's frame).
    """
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        timer = threading.Timer(0.01, _thread.interrupt_main, (signum,))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    sys.exit(main())
