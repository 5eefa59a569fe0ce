"""``smallbig bench cluster`` on the command line: local clusters of N workers
(:mod:`smallbig.bench.cluster`) or, with ``--links``, emulated multi-node clusters
(:mod:`smallbig.bench.links`)."""

from __future__ import annotations

import argparse

from rich.console import Console

from smallbig.backends import available
from smallbig.bench.cluster import cluster_bench, print_cluster
from smallbig.bench.links import BANDWIDTHS_MBPS, NODES, links_bench, max_nodes, print_links
from smallbig.model.calibrate import load_profile
from smallbig.results.records import write_json


def cmd_bench_cluster(args: argparse.Namespace, console: Console) -> int:
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
