"""``smallbig bench memory``: what each backend holds at rest, per worker, and while a dataset
larger than memory streams through it.

Per backend: its idle footprint and memory per worker; then ``map(..., buffersize=N)`` over a
generator of ``--items`` blocks of ``--item-mb`` made on the fly (20,000 × 1 MB = 20 GB by
default, most of this machine's memory), with the resident memory of this process and every
process the backend started sampled throughout: the peak's growth over idle, the throughput,
and the sampler's own CPU. Then the images workload at its largest default size, timed with
and without sampling, alternately (a paired ratio).

Targets: growth ≤ 0.5 GB on every backend; sampling < 1% of a core; images with sampling as
fast as without, within noise.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console

from smallbig.backends import default_backends, get_backend
from smallbig.backends.memory import PeakMemory
from smallbig.results.fmt import print_rows, size
from smallbig.results.timing import paired_ratio
from smallbig.workloads import probes

GROWTH_TARGET_BYTES = 0.5e9
SAMPLER_TARGET = 0.01  # of one core


def stream(
    ex: Any, items: int, item_bytes: int, buffersize: int, chunksize: int | str = 1
) -> dict[str, Any]:
    """Stream ``items`` blocks of ``item_bytes`` through ``ex``; memory and throughput."""
    reader = ex.memory_reader()
    list(ex.map(probes.digest, [probes.block(0, 1024)] * ex.workers))  # every worker up
    with PeakMemory(reader) as idle:
        time.sleep(1.0)
    data = (probes.block(i, item_bytes) for i in range(items))
    start = time.perf_counter()
    with PeakMemory(reader) as peak:
        done = sum(1 for _ in ex.map(probes.digest, data, chunksize=chunksize,
                                     buffersize=buffersize))  # fmt: skip
    wall = time.perf_counter() - start
    if done != items:
        raise RuntimeError(f"{ex.name}: {done} results for {items} items")
    growth = None if peak.bytes is None or idle.bytes is None else peak.bytes - idle.bytes
    return {
        "stream_s": wall,
        "GB_per_s": items * item_bytes / wall / 1e9,
        "peak_bytes": peak.bytes,
        "growth_bytes": growth,
        "sampler_core_pct": 100 * peak.cpu_s / wall,
    }


def images_with_and_without_sampling(backend: str, repeats: int) -> dict[str, Any]:
    """The images workload at its largest default size, timed with sampling and without."""
    from smallbig.workloads.images import images_workload
    from smallbig.workloads.registry import DEFAULT_SIZES

    workload = images_workload()
    items = workload.prepare(max(DEFAULT_SIZES["images"]), 0)
    with get_backend(backend) as ex:
        reader = ex.memory_reader()

        def sampled() -> None:
            with PeakMemory(reader):
                workload.run(ex, items)

        with_s, without_s, ratio = paired_ratio(sampled, lambda: workload.run(ex, items), repeats)
    return {"backend": backend, "items": len(items), "sampled_s": with_s,
            "plain_s": without_s, "ratio": f"{ratio:.3f}"}  # fmt: skip


def cmd_memory(args: argparse.Namespace, console: Console) -> int:
    """Print each backend's footprint and its streaming figures, then the sampling's cost."""
    item_bytes = int(args.item_mb * 1e6)
    rows = []
    for spec in args.backends or default_backends():
        with get_backend(spec, workers=args.workers) as ex:
            at_rest = ex.footprint()
            per_worker = None
            if at_rest["backend"] is not None:
                per_worker = 0 if ex.in_process else at_rest["backend"] // ex.workers
            console.print(f"{spec}: streaming {size(args.items * item_bytes)} ...")
            row = {"backend": spec, "workers": ex.workers, "idle_bytes": at_rest["backend"],
                   "per_worker_bytes": per_worker}  # fmt: skip
            row |= stream(ex, args.items, item_bytes, args.buffersize)
        rows.append(row)
    print_rows(console, f"streaming {args.items:,} items of {size(item_bytes)}, buffersize="
           f"{args.buffersize}: idle = the backend's own processes; peak and growth (over idle) "
           "of this process + them", rows)  # fmt: skip
    images = [images_with_and_without_sampling(b, args.repeats) for b in args.images_backends]
    if images:
        print_rows(console, "images, largest default size: with memory sampling vs without "
               "(paired)", images)  # fmt: skip
    growth = max((r["growth_bytes"] or 0) for r in rows)
    sampler = max(r["sampler_core_pct"] for r in rows) / 100
    slowest = max(float(r["ratio"]) for r in images) if images else float("nan")
    console.print(
        f"targets: peak growth ≤ {size(GROWTH_TARGET_BYTES)}: worst {size(growth)} "
        f"({'met' if growth <= GROWTH_TARGET_BYTES else 'NOT met'}); sampling < "
        f"{SAMPLER_TARGET:.0%} of a core: worst {sampler:.2%} "
        f"({'met' if sampler < SAMPLER_TARGET else 'NOT met'}); images with sampling / without: "
        f"worst {slowest:.3f} (noise on this machine: a few %)"
    )
    return 0
