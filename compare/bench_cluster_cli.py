"""``smallbig bench cluster`` on the command line: local clusters of N workers
(:mod:`compare.bench_cluster`) or, with ``--links``, emulated multi-node clusters
(:mod:`compare.bench_links`)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from backends import available
from compare.bench_cluster import cluster_bench, print_cluster
from compare.bench_links import BANDWIDTHS_MBPS, NODES, links_bench, max_nodes, print_links
from compare.calibrate import load_profile
from compare.checks import add_counts, answers, arg_count, arg_number
from compare.records import write_json


def cmd_cluster(args: argparse.Namespace, console: Console) -> int:
    """Measure, print the tables, and write their rows to ``--out`` if given."""
    engines = [e for e in args.engines if e in available()]
    missing = sorted(set(args.engines) - set(engines))
    if missing:
        raise ImportError(f"not installed: {', '.join(missing)} (pip install 'smallbig[all]')")
    inputs: dict = {}
    # A calibration the user already has: the benchmark's first minute saved.
    calibration = load_profile(args.profile) if args.profile else None
    if args.profile and calibration is None:
        raise FileNotFoundError(f"{args.profile}: no calibration there (make one: "
                                f"`smallbig overhead --profile {args.profile}`)")  # fmt: skip
    cpus = None
    if args.scale_model:
        if args.cpus is None:
            raise ValueError("--scale-model holds every node to the laptop's cores: give them "
                             "with --cpus C, e.g. --cpus 0.25")  # fmt: skip
        cpus, args.links = args.cpus, True
    if args.links:
        rates = [b or None for b in args.bandwidths_mbps or BANDWIDTHS_MBPS]
        nodes = args.nodes or (sorted({2, max_nodes(cpus)}) if cpus else NODES)
        rows, crossings = links_bench(rates, nodes, args.repeats, console, engines,
                                      calibration, args.cases, cpus)  # fmt: skip
    else:
        rows, crossings = cluster_bench(engines, args.workers, args.repeats, console, inputs,
                                        calibration, args.cases)  # fmt: skip
    if args.out:
        # With what the predictions were made from: a changed model is scored again on them.
        write_json(args.out, {"rows": rows, "crossings": crossings, **inputs})
    (print_links if args.links else print_cluster)(rows, crossings, console)
    return 0


def add_parser(kinds: Any) -> None:
    """Register ``smallbig bench cluster``."""
    p = kinds.add_parser(
        "cluster",
        help="the cluster model against clusters of 4–16 workers",
        description=answers(
            "Whether the cluster predictions hold on clusters measured here.", "evidence.md"
        ),
    )
    p.add_argument("--engines", nargs="+", default=["dask", "ray"], choices=["dask", "ray"],
                   help="cluster engines (default: dask ray)")  # fmt: skip
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
    p.set_defaults(func=cmd_cluster)
