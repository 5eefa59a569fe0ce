"""What each ``smallbig`` command does once its arguments are parsed: call the pipeline and
print (the parsers are in :mod:`smallbig.cli.parsers`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smallbig.backends import BACKENDS, available, backend_class, default_backends
from smallbig.backends.base import engine_version
from smallbig.backends.registry import missing
from smallbig.results.fmt import cell, seconds, size


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


def _user_task(args: argparse.Namespace) -> tuple[Any, list[Any]] | None:
    """The ``--task`` function and its ``--items-from`` items, or ``None`` without ``--task``."""
    if args.task is None:
        if args.items_from is not None:
            raise ValueError("--items-from gives the items of --task MODULE:FUNCTION")
        return None
    if args.items_from is None:
        raise ValueError("--task needs --items-from SOURCE: the items to map it over")
    from smallbig.workloads.user import load_task, read_items

    items = read_items(args.items_from)  # first: a bad SOURCE fails before any import
    return load_task(args.task), items


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the matrix, then print the tables, thresholds, advice and the model's check."""
    from smallbig.present.report import (
        print_answer,
        print_failures,
        print_memory_band,
        print_model_check,
        print_report,
    )
    from smallbig.running.runner import run

    user = _user_task(args)
    result = run(
        args.workloads,
        args.backends,
        sizes=args.sizes,
        repeats=args.repeats,
        out_dir=args.out,
        workers=args.workers,
        resume=args.resume,
        image_dir=args.images,
        overwrite=args.overwrite,
        task=user and user[0],
        items=user and user[1],
        ship_bytes=args.ship_bytes,
    )
    records, meta, profile = result.records, result.metadata, result.calibration
    if args.tables:
        print_report(records, result.startup, console, meta.get("backends", {}))
        if profile is not None:
            print_model_check(records, profile, meta.get("workloads", {}), console)
            print_memory_band(records, profile, meta.get("workloads", {}), console)
    else:
        print_failures(records, console)  # never hidden: wrong or unmeasured points
    print_answer(result.answer(), console)
    console.print(
        f"every table and figure: {(result.out_dir / 'report.html').resolve()}"
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
    from smallbig.model.calibrate import overhead

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

    from smallbig.present import plots

    folder = Path(args.plots)
    drawn = [
        plots.overhead_breakdown(profile, folder / "overhead.png"),
        plots.phase_diagram(profile, folder / "phase_diagram.png", cluster=plots.Cluster()),
    ]
    console.print(f"calibration saved to {profile['path']}; plots: {', '.join(map(str, drawn))}")
    return 0


def cmd_advise(args: argparse.Namespace, console: Console) -> int:
    """Rank backends for a task by predicted time."""
    from smallbig.model.calibrate import load_profile, overhead
    from smallbig.model.costmodel import predict, startup_note

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
    from smallbig.backends.emulation.cpugroups import current

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
    from smallbig.model.footprint import AT_ONCE, STREAMING, machine_memory

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
    """The task the options name: a measured :class:`~smallbig.model.taskprofile.TaskProfile`
    (``--task`` or ``--workload``), or the hand-described costs as a dict."""
    user = _user_task(args)
    if user is not None:
        from smallbig.model.taskprofile import profile_task
        from smallbig.workloads.user import takes_kwargs

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
    from smallbig.model.costmodel import task_cost
    from smallbig.workloads.registry import open_workloads

    with open_workloads([args.workload]) as loaded:
        return task_cost(loaded[args.workload])


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Draw the figures and write ``report.html`` again for an existing run folder."""
    from smallbig.model.calibrate import last_run
    from smallbig.present.outputs import write_outputs

    folder = args.directory or str(last_run())
    path = write_outputs(folder)[-1]
    console.print(f"report: {path.resolve()}")
    return 0


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    """Start an emulated cluster, print its spec, hold it until Ctrl-C or SIGTERM."""
    import time

    from smallbig.backends.emulation.emulated import EmulatedCluster

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
    from smallbig.workloads.imagegen import make_images

    paths = make_images(args.directory, args.count, args.seed)
    size = sum(p.stat().st_size for p in paths)
    console.print(f"{len(paths)} images, {size / 1e6:.1f} MB in {args.directory}")
    return 0


