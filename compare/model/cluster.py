"""A cluster to extrapolate to: one object for what a prediction needs to know of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cluster:
    """A cluster this machine does not have, that a prediction extrapolates to: its workers,
    the network between them (latency, bandwidth) and each worker's memory. The defaults are
    the phase diagram's (32 workers of 64 GB on 10 Gbit/s); ``None`` keeps a term as the
    calibration measured it."""

    workers: int | None = 32
    latency_s: float | None = 0.0005
    bandwidth_Bps: float | None = 1.25e9  # 10 Gbit/s
    worker_memory_bytes: float | None = 64e9

    def extrapolation(self) -> dict[str, Any]:
        """:func:`~smallbig.model.costmodel.predict`'s keywords for this cluster."""
        return {
            "workers": self.workers,
            "latency_s": self.latency_s,
            "bandwidth_Bps": self.bandwidth_Bps,
            "worker_memory_bytes": self.worker_memory_bytes,
        }

    def label(self) -> str:
        terms = [f"PREDICTED for a cluster of {self.workers or 'the calibrated'} workers"]
        if self.latency_s is not None:
            terms.append(f"{self.latency_s * 1e3:g} ms")
        if self.bandwidth_Bps is not None:
            terms.append(f"{self.bandwidth_Bps * 8 / 1e9:g} Gbit/s")
        if self.worker_memory_bytes is not None:
            terms.append(f"{self.worker_memory_bytes / 1e9:g} GB each")
        return ", ".join(terms)
